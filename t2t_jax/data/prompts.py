"""Prompts: the text a playlist contributes as model input, normalised.

`make_prompt(playlist, field)` takes the playlist title, its description, or both:
  "title"        the title;
  "description"  the description, falling back to the title when the description is empty (most
                 MPD playlists have none; dropping them would empty the task);
  "both"         "title | description" (just the title when the description is empty).
Cleaning (`clean_text`, applied to the title and the description before they are combined): HTML
as found in real playlist descriptions (`<a href="spotify:genre:...">pop</a>`, `&#x2F;`, `&amp;`) is
turned into text: tags removed (line and block tags such as `<br>`, `<p>`, `</li>` become a space), entities unescaped, once more for
escaped markup; a placeholder value (`<MISSING>`, any case) counts as empty.  Only tag-shaped text is
removed (`<` then a letter or `/`, up to `>`), so "<3" stays.
Normalisation (`normalize_text`): Unicode NFKC, control characters removed, whitespace runs collapsed
to one space, trimmed.  Case, punctuation, emoji and non-Latin scripts are kept: they carry intent.
Serving (`normalize_prompt`) normalises but does not clean: a user's request is plain text, and the
exported runtime applies the same rules (`normalize_text`, `truncate` and `normalize_prompt` live
there, in t2t_jax/export_runtime.py, and are imported here); a prompt holding a lone surrogate is not
text and is refused.
An empty prompt raises `UserInputError` naming the playlist.  A prompt longer than `max_chars` is
cut at the last word boundary (`on_overlong="truncate"`, the default) or rejected (`"raise"`).

`PROMPT_TEMPLATES` / `augment_prompt` rephrase a prompt as a user request ("play me some ...") for
optional training-time augmentation; evaluation always uses the plain prompt.
"""

from __future__ import annotations

import html
import re
from typing import Sequence

import numpy as np

from t2t_jax.errors import UserInputError
# Normalisation has one home, the export runtime (numpy + jax + sentencepiece only, copied into every
# export dir), so that an exported model's prompts are normalised exactly as training prompts were.
from t2t_jax.export_runtime import DEFAULT_MAX_CHARS, normalize_prompt, normalize_text, truncate

FIELDS = ("title", "description", "both")
_SEPARATOR = " | "
# Placeholders some exports write for a missing title/description (compared case-insensitively).
MISSING_VALUES = frozenset({"<missing>"})
_BREAK_TAG = re.compile(r"</?\s*(?:br|p|div|li|ul|ol|tr|td|h[1-6])\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)

PROMPT_TEMPLATES = (
    "{prompt}",
    "play me some {prompt}",
    "can you recommend {prompt}?",
    "I want to listen to {prompt}",
    "songs like: {prompt}",
    "make me a playlist: {prompt}",
    "any suggestions for {prompt}?",
    "{prompt} please",
)


def clean_text(text: str) -> str:
  """HTML tags removed and entities unescaped (see the module docstring); placeholders -> ""."""
  if not text or text.strip().lower() in MISSING_VALUES:
    return ""
  if "<" not in text and "&" not in text:
    return text
  for _ in range(2):  # the second pass handles escaped markup ("&lt;b&gt;")
    text = _TAG.sub("", _BREAK_TAG.sub(" ", text))
    if "&" not in text:
      break
    text = html.unescape(text)
  if text.strip().lower() in MISSING_VALUES:
    return ""
  return text


def prompt_text(title: str, description: str, field: str = "title") -> str:
  """Raw (unnormalised) prompt for `field` from a title and description."""
  if field not in FIELDS:
    raise UserInputError(f"prompt field must be one of {FIELDS}, got {field!r}")
  title = title or ""
  description = description or ""
  if field == "title":
    return title
  if field == "description":
    return description if description.strip() else title
  if description.strip() and title.strip():
    return title + _SEPARATOR + description
  return title or description


def make_prompt(playlist, field: str = "title", *, max_chars: int = DEFAULT_MAX_CHARS,
                on_overlong: str = "truncate") -> str:
  """The normalised prompt of a playlist (anything with .title, .description, .playlist_id)."""
  if on_overlong not in ("truncate", "raise"):
    raise UserInputError(f"on_overlong must be 'truncate' or 'raise', got {on_overlong!r}")
  if max_chars <= 0:
    raise UserInputError(f"max_chars must be positive, got {max_chars}")
  text = normalize_text(prompt_text(clean_text(playlist.title), clean_text(playlist.description), field))
  pid = getattr(playlist, "playlist_id", "?")
  if not text:
    raise UserInputError(f"playlist {pid!r}: empty prompt (field {field!r}: title and description are blank)")
  if len(text) > max_chars:
    if on_overlong == "raise":
      raise UserInputError(f"playlist {pid!r}: prompt is {len(text)} characters (max_chars={max_chars})")
    text = truncate(text, max_chars)
  return text


def augment_prompt(prompt: str, rng: np.random.Generator,
                   templates: Sequence[str] = PROMPT_TEMPLATES) -> str:
  """Wraps a prompt in a random request template (for training-time augmentation)."""
  template = templates[int(rng.integers(len(templates)))]
  return template.format(prompt=prompt)
