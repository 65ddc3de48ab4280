"""WordPiece input vocabulary of a pretrained BERT-family encoder (its own `tokenizer.json`).

Tokenisation goes through Hugging Face's `tokenizers` library (the model's exact normaliser,
pre-tokeniser, WordPiece model and [CLS] ... [SEP] template), not a re-implementation.  Ids are the
model's: [PAD] = 0 (so "token > 0" is the attention mask, as for T5 inputs), [CLS] first, [SEP]
last; there is no EOS.  Truncation keeps [CLS] and the final [SEP].
"""

from __future__ import annotations

import os

from t2t_jax.errors import UserInputError

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
    self._tok.no_padding()
    self._tok.no_truncation()
    self.path = file
    self.pad_id = self._tok.token_to_id("[PAD]")
    if self.pad_id != 0:
      raise UserInputError(f"{file}: [PAD] must be id 0, got {self.pad_id}")
    self.cls_id = self._tok.token_to_id("[CLS]")
    self.sep_id = self._tok.token_to_id("[SEP]")

  @property
  def vocab_size(self) -> int:
    return int(self._tok.get_vocab_size(with_added_tokens=True))

  def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
    ids = list(self._tok.encode(text).ids)
    if max_length is not None and len(ids) > max_length:
      ids = ids[:max_length - 1] + [ids[-1]]  # keep [SEP]
    return ids

  def encode_prompt(self, text: str) -> list[int]:
    """Model input ids of a prompt ([CLS] ... [SEP]; no EOS)."""
    return self.encode(text)

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids if int(i) > 0])

  def __repr__(self) -> str:
    return f"WordPieceVocab({self.path!r}, vocab_size={self.vocab_size})"
