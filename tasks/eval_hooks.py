"""Periodic generative evaluation for the gin train entry: Hits@K via constrained beam search.

runs/finetune_hits.gin binds it (T5X's infer-eval with metric_fns, done with our decoder):
  train_script.EvalConfig.fn_factory = @eval_hooks.hits_eval_fn_factory
It decodes with a `GenerativeRetriever` over the task's ID table and vocabulary, the one the served
model decodes with, so training-time Hits@K and served recommendations search the same IDs.
"""

import numpy as np

from t2t_jax import evaluation
from t2t_jax.ids.table import IdTable
from t2t_jax.serving import retriever as retriever_lib
from tasks import pipeline, t2t_tasks


def hits_eval_fn_factory(*, model, mixture_or_task_name: str, task_feature_lengths, partitioner=None,
                         split: str = "validation", max_examples: int = 256, beam_size: int = 20, k: int = 10,
                         batch_size: int = 32):
  """eval_fn(params, step) -> {gen_hits@10, gen_map@10, ...} on `max_examples` held-out playlists.

  model: the run's `EncoderDecoderModel` (the train entry passes the one it trains)."""
  del partitioner  # Decoding runs replicated; its batch is small.
  t2t_tasks.prepare(mixture_or_task_name)
  source = t2t_tasks.task_source(mixture_or_task_name)
  examples = pipeline.get_eval_examples(mixture_or_task_name, split, max_examples=max_examples)
  inputs = evaluation.pad_inputs([ex["inputs"] for ex in examples], task_feature_lengths["inputs"])
  relevant = [np.asarray(ex["relevant_rows"]) for ex in examples]
  retriever = retriever_lib.GenerativeRetriever(
      model=model, params=None, id_table=IdTable.load(source.ids_dir), vocab=source.vocab,
      inputs_length=task_feature_lengths["inputs"], beam_size=beam_size)
  return evaluation.make_generative_eval_fn(retriever, inputs, relevant, beam_size=beam_size, k=k,
                                            batch_size=batch_size)
