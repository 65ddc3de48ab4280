"""Periodic generative evaluation for the gin train entry: Hits@K via constrained beam search.

runs/finetune_hits.gin binds it (T5X's infer-eval with metric_fns, done with our decoder):
  train_script.EvalConfig.fn_factory = @eval_hooks.hits_eval_fn_factory
The trie is `decoding.index.build_table_index`, the one the served model (`t2t_jax.recommend`)
decodes with, so training-time Hits@K and served recommendations search the same IDs.
"""

import numpy as np

from t2t_jax import evaluation
from t2t_jax.data import vocab as vocab_lib
from t2t_jax.decoding import index as index_lib
from t2t_jax.ids.table import IdTable
from tasks import pipeline, t2t_tasks


def hits_eval_fn_factory(*, model_config, mixture_or_task_name: str, task_feature_lengths, partitioner=None,
                         split: str = "validation", max_examples: int = 256, beam_size: int = 20, k: int = 10,
                         batch_size: int = 32):
  """eval_fn(params, step) -> {gen_hits@10, gen_map@10, ...} on `max_examples` held-out playlists."""
  del partitioner  # Decoding runs replicated; its batch is small.
  t2t_tasks.prepare(mixture_or_task_name)
  source = t2t_tasks.task_source(mixture_or_task_name)
  table = IdTable.load(source.ids_dir)
  vocab = vocab_lib.TextAndIdVocab(source.spm_path, table.level_sizes)
  examples = pipeline.get_eval_examples(mixture_or_task_name, split, max_examples=max_examples)
  inputs = evaluation.pad_inputs([ex["inputs"] for ex in examples], task_feature_lengths["inputs"])
  relevant = [np.asarray(ex["relevant_rows"]) for ex in examples]
  index = index_lib.build_table_index(table, vocab.id_token_offset, model_config.output_vocab_size)
  return evaluation.make_generative_eval_fn(model_config, index, inputs, relevant,
                                            beam_size=beam_size, k=k, batch_size=batch_size)
