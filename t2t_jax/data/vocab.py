"""Text + ID-token vocabulary without TensorFlow (used at training-data and serving time).

Token layout (docs/CONTRACTS.md): PAD=0, EOS=1, UNK=2 (T5 conventions, no BOS); then the
SentencePiece pieces, `text_vocab_size = V_text` ids in all (PAD/EOS/UNK included); then one token per
(ID level, code): token(l, c) = V_text + sum(level_sizes[:l]) + c.  Everything is inside
`vocab_size`, so decoding never maps an ID token to UNK.  Content IDs (`level_sizes == ()`) add
nothing: they are written with the text pieces themselves.

ID tokens render as "<id_{level}_{code}>" in decoded text, and `encode` parses that markup back, so
`encode(decode(tokens)) == tokens` for ID-token sequences.

`train_sentencepiece` trains a T5-convention model; any existing SentencePiece model with PAD=0,
EOS=1, UNK=2 (T5's and flan-T5's spiece.model) also works as the text vocabulary.
"""

from __future__ import annotations

import io
import os
import re
from typing import Iterable, Sequence

import sentencepiece as spm

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
ID_TOKEN_RE = re.compile(r"<id_(\d+)_(\d+)>")


def train_sentencepiece(texts: Iterable[str], out_path: str | os.PathLike, *, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        byte_fallback: bool = True, max_sentences: int = 2_000_000,
                        max_sentence_length: int = 4192, num_threads: int = 1) -> str:
  """Trains a SentencePiece model on `texts` (streamed) and writes it atomically to `out_path`.

  T5 conventions: pad=0, eos=1, unk=2, no bos.  `vocab_size` is an upper bound: on a small corpus
  the model may have fewer pieces (hard_vocab_limit=False).  `byte_fallback` spells unseen
  characters (rare emoji, scripts) as UTF-8 bytes instead of UNK.  Deterministic for the same texts
  with num_threads=1.  Returns `out_path`.
  """
  min_size = 3 + (256 if byte_fallback else 0) + 8
  if vocab_size < min_size:
    raise UserInputError(f"vocab_size={vocab_size} is too small (at least {min_size} with byte_fallback={byte_fallback})")
  count = 0

  def sentences():
    nonlocal count
    for t in texts:
      if t and t.strip():
        count += 1
        yield t
        if count >= max_sentences:
          return

  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(), model_writer=model, vocab_size=vocab_size, model_type=model_type,
        character_coverage=character_coverage, byte_fallback=byte_fallback,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        hard_vocab_limit=False, num_threads=num_threads, max_sentence_length=max_sentence_length,
        input_sentence_size=max_sentences, shuffle_input_sentence=False,
        split_digits=True, normalization_rule_name="nmt_nfkc", minloglevel=2)
  except RuntimeError as e:
    if count == 0:
      raise UserInputError("train_sentencepiece: no non-empty texts") from None
    raise UserInputError(f"SentencePiece training failed on {count} texts: {e}") from None
  with io_utils.atomic_write(out_path, "wb") as f:
    f.write(model.getvalue())
  return os.fspath(out_path)


def load_sentencepiece(spm_path: str | os.PathLike) -> spm.SentencePieceProcessor:
  """Loads a SentencePiece model and checks the T5 special ids (PAD=0, EOS=1, UNK=2)."""
  spm_path = os.fspath(spm_path)
  if not os.path.exists(spm_path):
    raise UserInputError(f"{spm_path}: SentencePiece model not found")
  sp = spm.SentencePieceProcessor()
  try:
    sp.Load(spm_path)
  except (OSError, RuntimeError) as e:
    raise UserInputError(f"{spm_path}: not a SentencePiece model ({e})") from None
  if (sp.pad_id(), sp.eos_id(), sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
    raise UserInputError(
        f"{spm_path}: special ids pad/eos/unk are {sp.pad_id()}/{sp.eos_id()}/{sp.unk_id()}, "
        f"expected {PAD_ID}/{EOS_ID}/{UNK_ID} (T5 conventions)")
  return sp


class TextAndIdVocab:
  """SentencePiece text pieces followed by ID tokens (one per level and code)."""

  def __init__(self, spm_path: str | os.PathLike, id_level_sizes: Sequence[int] = ()):
    self.spm_path = os.fspath(spm_path)
    self._sp = load_sentencepiece(self.spm_path)
    self.id_level_sizes = tuple(int(s) for s in id_level_sizes)
    if any(s <= 0 for s in self.id_level_sizes):
      raise UserInputError(f"ID level sizes must be positive, got {self.id_level_sizes}")
    self._level_offsets = [sum(self.id_level_sizes[:l]) for l in range(len(self.id_level_sizes))]

  @property
  def sp(self) -> spm.SentencePieceProcessor:
    return self._sp

  @property
  def text_vocab_size(self) -> int:
    return int(self._sp.GetPieceSize())

  @property
  def id_token_offset(self) -> int:
    return self.text_vocab_size

  @property
  def num_id_tokens(self) -> int:
    return int(sum(self.id_level_sizes))

  @property
  def vocab_size(self) -> int:
    return self.text_vocab_size + self.num_id_tokens

  pad_id, eos_id, unk_id = PAD_ID, EOS_ID, UNK_ID

  def id_token(self, level: int, code: int) -> int:
    if not 0 <= level < len(self.id_level_sizes):
      raise UserInputError(f"ID level {level} out of range (levels: {self.id_level_sizes})")
    if not 0 <= code < self.id_level_sizes[level]:
      raise UserInputError(f"ID code {code} out of range [0, {self.id_level_sizes[level]}) at level {level}")
    return self.id_token_offset + self._level_offsets[level] + code

  def is_id_token(self, token: int) -> bool:
    return self.id_token_offset <= token < self.vocab_size

  def level_and_code(self, token: int) -> tuple[int, int]:
    """Inverse of `id_token`."""
    if not self.is_id_token(token):
      raise ValueError(f"{token} is not an ID token")
    rel = token - self.id_token_offset
    for level in range(len(self.id_level_sizes) - 1, -1, -1):
      if rel >= self._level_offsets[level]:
        return level, rel - self._level_offsets[level]
    raise AssertionError(token)

  def encode(self, text: str) -> list[int]:
    """Text -> token ids (no EOS); "<id_l_c>" markup becomes the ID token."""
    out: list[int] = []
    pos = 0
    for m in ID_TOKEN_RE.finditer(text):
      chunk = text[pos:m.start()]
      if chunk.strip():
        out.extend(self._sp.EncodeAsIds(chunk))
      out.append(self.id_token(int(m.group(1)), int(m.group(2))))
      pos = m.end()
    chunk = text[pos:]
    if chunk.strip() or pos == 0:
      out.extend(self._sp.EncodeAsIds(chunk))
    return out

  def encode_prompt(self, text: str) -> list[int]:
    """Model input ids of a prompt: its text pieces + EOS.  Plain text only: a user-typed
    "<id_l_c>" never becomes an ID token."""
    return list(self._sp.EncodeAsIds(text)) + [EOS_ID]

  def decode(self, tokens: Iterable[int]) -> str:
    """Token ids -> text, up to the first EOS; PAD dropped; ID tokens as "<id_l_c>"."""
    parts: list[str] = []
    run: list[int] = []
    for t in tokens:
      t = int(t)
      if t == EOS_ID:
        break
      if t == PAD_ID:
        continue
      if self.is_id_token(t):
        if run:
          parts.append(self._sp.DecodeIds(run))
          run = []
        level, code = self.level_and_code(t)
        parts.append(f"<id_{level}_{code}>")
      else:
        run.append(t if 0 <= t < self.text_vocab_size else UNK_ID)
    if run:
      parts.append(self._sp.DecodeIds(run))
    return "".join(parts)

  def __repr__(self) -> str:
    return (f"TextAndIdVocab({self.spm_path!r}, id_level_sizes={self.id_level_sizes}, "
            f"text_vocab_size={self.text_vocab_size}, vocab_size={self.vocab_size})")


class IdOnlyVocab(TextAndIdVocab):
  """Output vocabulary of ID tokens only: PAD=0, EOS=1, UNK=2, then one token per (level, code).

  For model families whose decoder has its own vocabulary (bert_t5): no text pieces, so the output
  softmax has 3 + sum(level_sizes) entries.  Same interface as `TextAndIdVocab` (token(l, c) =
  3 + sum(level_sizes[:l]) + c; "<id_l_c>" markup); plain text cannot be encoded.
  """

  NUM_SPECIAL = 3

  def __init__(self, id_level_sizes: Sequence[int]):  # pylint: disable=super-init-not-called
    self.spm_path = None
    self._sp = None
    self.id_level_sizes = tuple(int(s) for s in id_level_sizes)
    if not self.id_level_sizes or any(s <= 0 for s in self.id_level_sizes):
      raise UserInputError(f"ID level sizes must be positive, got {self.id_level_sizes}")
    self._level_offsets = [sum(self.id_level_sizes[:l]) for l in range(len(self.id_level_sizes))]

  @property
  def sp(self):
    raise UserInputError("an ID-only vocabulary has no text pieces")

  @property
  def text_vocab_size(self) -> int:
    return self.NUM_SPECIAL

  def encode(self, text: str) -> list[int]:
    out, pos = [], 0
    for m in ID_TOKEN_RE.finditer(text):
      if text[pos:m.start()].strip():
        raise UserInputError(f"ID-only vocabulary: cannot encode text {text[pos:m.start()]!r}")
      out.append(self.id_token(int(m.group(1)), int(m.group(2))))
      pos = m.end()
    if text[pos:].strip():
      raise UserInputError(f"ID-only vocabulary: cannot encode text {text[pos:]!r}")
    return out

  def decode(self, tokens: Iterable[int]) -> str:
    parts = []
    for t in tokens:
      t = int(t)
      if t == EOS_ID:
        break
      if self.is_id_token(t):
        level, code = self.level_and_code(t)
        parts.append(f"<id_{level}_{code}>")
      elif t != PAD_ID:
        parts.append("<unk>")
    return "".join(parts)

  def __repr__(self) -> str:
    return f"IdOnlyVocab(id_level_sizes={self.id_level_sizes}, vocab_size={self.vocab_size})"
