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
from t2t_jax.data import wordpiece


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


class IdOnlyVocabulary(TextAndIdVocabulary):
  """seqio.Vocabulary over [PAD, EOS, UNK, ID tokens...] (t2t_jax.data.vocab.IdOnlyVocab): the
  output vocabulary of a decoder with its own embedding (bert_t5)."""

  def __init__(self, id_level_sizes: Sequence[int]):  # pylint: disable=super-init-not-called
    self._spm_path = None
    self._id_level_sizes = tuple(int(s) for s in id_level_sizes)
    self._py = t2t_vocab.IdOnlyVocab(self._id_level_sizes)
    self._text = None
    seqio.Vocabulary.__init__(self, extra_ids=0)

  def __getstate__(self):
    return {"id_level_sizes": self._id_level_sizes}

  def __setstate__(self, state):
    self.__init__(state["id_level_sizes"])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError("an ID-only vocabulary encodes no text (targets are built in Python)")

  def __eq__(self, other) -> bool:
    return isinstance(other, IdOnlyVocabulary) and self._id_level_sizes == other._id_level_sizes

  def __hash__(self) -> int:
    return hash(("ids_only", self._id_level_sizes))

  def __str__(self) -> str:
    return f"IdOnlyVocabulary(id_level_sizes={self._id_level_sizes}, vocab_size={self.vocab_size})"


class WordPieceVocabulary(seqio.Vocabulary):
  """seqio.Vocabulary over a pretrained encoder's WordPiece tokenizer (t2t_jax.data.wordpiece).

  Task inputs are tokenised in Python ([CLS] ... [SEP], no EOS: the feature has add_eos=False);
  TF encoding goes through `tf.numpy_function` (works in tf.data, not exportable).
  """

  def __init__(self, tokenizer_path: str):
    self._path = str(tokenizer_path)
    self._py = wordpiece.WordPieceVocab(self._path)
    super().__init__(extra_ids=0)

  def __getstate__(self):
    return {"path": self._path}

  def __setstate__(self, state):
    self.__init__(state["path"])

  @property
  def py_vocab(self):
    return self._py

  @property
  def tokenizer_path(self) -> str:
    return self._py.path

  @property
  def eos_id(self):
    return None

  @property
  def unk_id(self) -> int:
    return int(self._py._tok.token_to_id("[UNK]"))  # pylint: disable=protected-access

  @property
  def _base_vocab_size(self) -> int:
    return self._py.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._py.encode(s)

  def _decode(self, ids) -> str:
    return self._py.decode(ids)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    out = tf.numpy_function(lambda x: np.asarray(self._py.encode(x.decode("utf-8")), np.int32),
                            [s], tf.int32, stateful=False)
    out.set_shape([None])
    return out

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    out = tf.numpy_function(lambda x: np.asarray(self._py.decode(x.tolist()).encode("utf-8"),
                                                 dtype=object), [tf.cast(ids, tf.int32)], tf.string,
                            stateful=False)
    out.set_shape([])
    return out

  def __eq__(self, other) -> bool:
    return isinstance(other, WordPieceVocabulary) and self.tokenizer_path == other.tokenizer_path

  def __hash__(self) -> int:
    return hash(("wordpiece", self.tokenizer_path))

  def __str__(self) -> str:
    return f"WordPieceVocabulary({self.tokenizer_path}, vocab_size={self.vocab_size})"
