"""WordPiece input vocabulary of a pretrained BERT-family encoder (its own `tokenizer.json`).

Tokenisation goes through Hugging Face's `tokenizers` library (the model's exact normaliser,
pre-tokeniser, WordPiece model and [CLS] ... [SEP] template), not a re-implementation.  Ids are the
model's, with the pad token at 0 (so "token > 0" is the attention mask, as for T5 inputs), [CLS]
first, [SEP] last; there is no EOS.  Truncation keeps [CLS] and the final [SEP].  A tokenizer whose
pad token is not id 0 (MPNet's: <s> 0, <pad> 1, </s> 2, RoBERTa's template) has its pad id swapped
with 0 in both directions (`export_runtime.wordpiece_pad_id`, `swap_pad`); the encoder's
word-embedding rows are swapped the same way (t2t_jax.models.bert.hf_to_params).
"""

from __future__ import annotations

import os

from t2t_jax.errors import UserInputError
from t2t_jax.export_runtime import swap_pad, wordpiece_pad_id

TOKENIZER_FILE = "tokenizer.json"


class WordPieceVocab:
  """`encode(text, max_length=None) -> list[int]` with the model's special tokens."""

  kind = "wordpiece"

  def __init__(self, path: str | os.PathLike):
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
    path = os.fspath(path)
    file = os.path.join(path, TOKENIZER_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise UserInputError(f"{path}: no {TOKENIZER_FILE} (a Hugging Face tokenizer is expected)")
    try:
      self._tok = Tokenizer.from_file(file)
    except Exception as e:  # pylint: disable=broad-except  (tokenizers raises plain Exception)
      raise UserInputError(f"{file}: not a tokenizers file ({e})") from None
    self.hf_pad_id = wordpiece_pad_id(self._tok)  # before no_padding() clears its setting
    if self.hf_pad_id is None:
      raise UserInputError(f"{file}: no pad token ([PAD], <pad> or a padding setting)")
    self._tok.no_padding()
    self._tok.no_truncation()
    self.path = file
    self.pad_id = 0
    self.cls_id, self.sep_id = self.encode("")  # the template's [CLS] / [SEP] (<s> / </s>)

  @property
  def vocab_size(self) -> int:
    return int(self._tok.get_vocab_size(with_added_tokens=True))

  def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
    ids = swap_pad(self._tok.encode(text).ids, self.hf_pad_id)
    if max_length is not None and len(ids) > max_length:
      ids = ids[:max_length - 1] + [ids[-1]]  # keep [SEP]
    return ids

  def encode_prompt(self, text: str) -> list[int]:
    """Model input ids of a prompt ([CLS] ... [SEP]; no EOS)."""
    return self.encode(text)

  def decode(self, ids) -> str:
    return self._tok.decode(swap_pad([int(i) for i in ids if int(i) > 0], self.hf_pad_id))

  def __repr__(self) -> str:
    return f"WordPieceVocab({self.path!r}, vocab_size={self.vocab_size})"
