"""MODEL_DIR/assets from a t2t SeqIO task: what `t2t recommend / export / serve` need next to the
checkpoints (SentencePiece model, ID table, catalog, decoding settings; `t2t_jax.serving.recommend`).

The gin train entry calls `write_model_assets` for every t2t task, so any MODEL_DIR trained with
`python -m t2t_jax.train` (and so `t2t quickstart` and the studies, which train through it) is
servable as it is.
"""

from __future__ import annotations

from typing import Mapping

import seqio

from t2t_jax import storage
from t2t_jax.serving import assets as assets_lib
from t2t_jax.data import formats
from t2t_jax.data import vocab as t2t_vocab
from t2t_jax.ids.table import IdTable
from tasks import pipeline, t2t_tasks


def write_model_assets(model_dir: str, mixture_or_task_name: str,
                       task_feature_lengths: Mapping[str, int], *, beam_size: int = 20) -> bool:
  """Writes MODEL_DIR/assets (atomically) for a t2t task or mixture; False (nothing written) when
  the name is not backed by a t2t ExampleSource (e.g. a user's own SeqIO task).

  A mixture's tasks share one dataset, ID table and vocabulary (t2t.{dataset}.{ids}.all); its first
  task gives them.
  """
  provider = pipeline._lookup(mixture_or_task_name)  # pylint: disable=protected-access
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  source = t2t_tasks._SOURCES.get(tasks[0].name)  # pylint: disable=protected-access
  if source is None:
    return False
  prompt_field = source.prompt_field if len(tasks) == 1 else "mixed"
  ids_only = isinstance(source.vocab, t2t_vocab.IdOnlyVocab)
  assets_lib.write_assets(
      model_dir, spm_path=source.spm_path, id_table=IdTable.load(source.ids_dir),
      catalog_path=storage.join(source.dataset_dir, formats.CATALOG_FILE),
      inputs_length=int(task_feature_lengths["inputs"]), beam_size=int(beam_size),
      prompt_field=prompt_field, input_tokenizer=source.input_tokenizer,
      output_vocab="ids_only" if ids_only else "text_and_ids",
      max_prompt_chars=source.max_prompt_chars)
  return True
