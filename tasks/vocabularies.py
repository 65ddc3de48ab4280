"""SeqIO vocabulary: a SentencePiece model followed by ID tokens (same layout as t2t_jax.data.vocab).

`TextAndIdVocabulary` counts the ID tokens inside `_base_vocab_size`, so seqio's `decode` does not
turn them into UNK, and `vocab_size` equals `t2t_jax.data.vocab.TextAndIdVocab.vocab_size` (the
model's embedding size).  Python encode/decode delegate to `TextAndIdVocab` (ID tokens as
"<id_l_c>" markup).  TF encode tokenizes text with the TF SentencePiece op (prompts never carry ID
markup); TF decode renders ID tokens through the Python decoder inside `tf.numpy_function`, so it
works in tf.data graphs but is not exportable into a SavedModel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from t2t_jax.data import vocab as t2t_vocab


class TextAndIdVocabulary(seqio.Vocabulary):
  """seqio.Vocabulary over [PAD, EOS, UNK, text pieces..., ID tokens...]."""

  def __init__(self, spm_path: str, id_level_sizes: Sequence[int] = ()):
    self._spm_path = str(spm_path)
    self._id_level_sizes = tuple(int(s) for s in id_level_sizes)
    self._py = t2t_vocab.TextAndIdVocab(self._spm_path, self._id_level_sizes)
    self._text = seqio.SentencePieceVocabulary(self._spm_path)
    super().__init__(extra_ids=0)

  # Pickling (seqio/Beam ship vocabularies to workers): rebuild from the paths.
  def __getstate__(self):
    return {"spm_path": self._spm_path, "id_level_sizes": self._id_level_sizes}

  def __setstate__(self, state):
    self.__init__(state["spm_path"], state["id_level_sizes"])

  @property
  def py_vocab(self) -> t2t_vocab.TextAndIdVocab:
    return self._py

  @property
  def spm_path(self) -> str:
    return self._spm_path

  @property
  def id_level_sizes(self) -> tuple[int, ...]:
    return self._id_level_sizes

  @property
  def id_token_offset(self) -> int:
    return self._py.id_token_offset

  @property
  def text_vocab_size(self) -> int:
    return self._py.text_vocab_size

  @property
  def eos_id(self) -> int:
    return t2t_vocab.EOS_ID

  @property
  def unk_id(self) -> int:
    return t2t_vocab.UNK_ID

  @property
  def _base_vocab_size(self) -> int:
    return self._py.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._py.encode(s)

  def _decode(self, ids) -> str:
    return self._py.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self._text.tf_tokenizer.tokenize(s)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode_np(ids_np):
      if ids_np.ndim == 1:
        return np.asarray(self._py.decode(ids_np.tolist()).encode("utf-8"), dtype=object)
      flat = ids_np.reshape(-1, ids_np.shape[-1])
      out = [self._py.decode(row.tolist()).encode("utf-8") for row in flat]
      return np.asarray(out, dtype=object).reshape(ids_np.shape[:-1])

    out = tf.numpy_function(decode_np, [tf.cast(ids, tf.int32)], tf.string, stateful=False)
    out.set_shape(ids.shape[:-1])
    return out

  def __eq__(self, other) -> bool:
    return (isinstance(other, TextAndIdVocabulary) and self._id_level_sizes == other._id_level_sizes
            and self._text == other._text)

  def __hash__(self) -> int:
    return hash((self._spm_path, self._id_level_sizes))

  def __str__(self) -> str:
    return (f"TextAndIdVocabulary(spm={self._spm_path}, id_level_sizes={self._id_level_sizes}, "
            f"vocab_size={self.vocab_size})")
