"""An independent check that prompts no longer name their goal artists or goal titles.

`cpcd.EntityMasker` removes a conversation's artists and track titles from its prompt; this module
measures what it left, with a different algorithm, so that the measurement is not the masker's own
rule restated (it imports nothing from `cpcd`, and reads the raw CPCD files itself):

  normalisation  NFKD with combining marks dropped (accents), case-folded, a possessive "'s"
                 dropped, other apostrophes removed ("don't" -> "dont"), every other non-word
                 character a space: the prompt and each entity become token lists;
  entities       each goal artist as listed in the track's artist list, and each goal title in
                 full and as its core (parenthesised / bracketed parts and a " - ..." suffix
                 dropped), each also without a leading "the"; an entity of fewer than 2 letters or
                 digits is not checked, nor a title that is one common English word ("Love",
                 "Home": `english.COMMON_WORDS`, a plain word list) -- artists are always checked,
                 common words or not ("Queen", "Future");
  exact          the entity's tokens occur as a contiguous run of prompt tokens;
  fuzzy          (entities of at least 5 letters) some window of n-1, n or n+1 consecutive prompt
                 tokens (n = the entity's token count) has difflib.SequenceMatcher ratio >= 0.85
                 with the entity, both joined by spaces (misspellings, a dropped or added space),
                 unless the window is all common English words (a word, not a misspelling) or
                 whole words of the entity (part of a name, "Jackson" of "The Jackson 5": this
                 checker counts full names and their misspellings, not partial names).

`residue` lists what one prompt still holds; `residue_report` counts prompts with any residue over
a dataset dir (or given prompts) against the goals of the raw CPCD files (`goal_entities`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import unicodedata
from typing import Any, Iterable, Mapping

from t2t_jax.data import english, formats
from t2t_jax.errors import UserInputError, where

FUZZY_RATIO = 0.85
FUZZY_MIN_LETTERS = 5
MIN_SIGNIFICANT = 2
CPCD_FILES = ("cpcd_v1.dialogs.dev.train.jsonl", "cpcd_v1.dialogs.dev.val.jsonl")
_POSSESSIVE = re.compile(r"['\u2019`]s\b")
_APOSTROPHE = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[\W_]+")
_BRACKETED = re.compile(r"\s*[(\[][^)\]]*[)\]]")
_DASH_SUFFIX = re.compile(r"\s+[-\u2013\u2014]\s+.*$")


@dataclasses.dataclass(frozen=True)
class Found:
  """One goal entity still in a prompt: `text` is the matching prompt words (normalised)."""
  kind: str  # "artist" or "title"
  entity: str
  text: str
  exact: bool


@dataclasses.dataclass(frozen=True)
class Goal:
  """A conversation's goal artists and goal titles, as the raw data lists them."""
  artists: tuple[str, ...]
  titles: tuple[str, ...]


def tokens(text: str) -> list[str]:
  """The checker's normalisation: accent-free, case-folded word tokens (module docstring)."""
  text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
  text = _APOSTROPHE.sub("", _POSSESSIVE.sub("", text))
  return _NON_WORD.sub(" ", text).split()


def _forms(kind: str, entity: str) -> set[tuple[str, ...]]:
  variants = [entity]
  if kind == "title":
    variants.append(_DASH_SUFFIX.sub("", _BRACKETED.sub("", entity)))
  forms = set()
  for v in variants:
    toks = tuple(tokens(v))
    if len(toks) > 1 and toks[0] == "the":
      forms.add(toks[1:])
    forms.add(toks)
  out = set()
  for toks in forms:
    if sum(len(t) for t in toks) < MIN_SIGNIFICANT:
      continue
    if kind == "title" and len(toks) == 1 and toks[0] in english.COMMON_WORDS:
      continue
    out.add(toks)
  return out


def _contains(haystack: list[str], needle: tuple[str, ...]) -> bool:
  n = len(needle)
  return any(tuple(haystack[i:i + n]) == needle for i in range(len(haystack) - n + 1))


def _fuzzy(prompt: list[str], needle: tuple[str, ...]) -> str | None:
  target = " ".join(needle)
  matcher = difflib.SequenceMatcher(autojunk=False)
  matcher.set_seq2(target)
  n = len(needle)
  for size in (n - 1, n, n + 1):
    if size < 1:
      continue
    for i in range(len(prompt) - size + 1):
      if all(w in english.COMMON_WORDS for w in prompt[i:i + size]):
        continue  # a real word ("love" near the title "Llove"), not a misspelling
      if size < n and _contains(list(needle), tuple(prompt[i:i + size])):
        continue  # part of the name ("Jackson" of "The Jackson 5"), not the name
      window = " ".join(prompt[i:i + size])
      # ratio = 2M / (|a| + |b|) <= 2 min / (|a| + |b|): skip windows whose length rules it out.
      if 2 * min(len(window), len(target)) < FUZZY_RATIO * (len(window) + len(target)):
        continue
      matcher.set_seq1(window)
      if matcher.real_quick_ratio() >= FUZZY_RATIO and matcher.quick_ratio() >= FUZZY_RATIO \
          and matcher.ratio() >= FUZZY_RATIO:
        return window
  return None


def residue(prompt: str, goal_artists: Iterable[str], goal_titles: Iterable[str]) -> list[Found]:
  """The goal artists and goal titles still in `prompt`, exact matches first (module docstring)."""
  words = tokens(prompt)
  found = []
  for kind, entities in (("artist", goal_artists), ("title", goal_titles)):
    for entity in sorted(set(entities)):
      forms = sorted(_forms(kind, entity), key=len, reverse=True)
      hit = next((f for f in forms if _contains(words, f)), None)
      if hit is not None:
        found.append(Found(kind, entity, " ".join(hit), True))
        continue
      for f in forms:
        if sum(len(t) for t in f) >= FUZZY_MIN_LETTERS:
          window = _fuzzy(words, f)
          if window is not None:
            found.append(Found(kind, entity, window, False))
            break
  return found


def goal_entities(cpcd_dir: str | os.PathLike) -> dict[str, Goal]:
  """{conversation id: Goal} from the raw CPCD files in `cpcd_dir` (goal tracks without metadata
  are left out); a conversation without goal tracks maps to an empty Goal."""
  out = {}
  for name in CPCD_FILES:
    path = os.path.join(os.fspath(cpcd_dir), name)
    if not os.path.isfile(path):
      raise UserInputError(f"{path}: not found (expected the CPCD folder with {' and '.join(CPCD_FILES)})")
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          rec = json.loads(line)
          tracks = rec["tracks"]
          goal = [tracks[v] for v in rec["goal_playlist"] if v in tracks]
          out[rec["id"]] = Goal(tuple(dict.fromkeys(a for t in goal for a in t["track_artists"])),
                                tuple(dict.fromkeys(t["track_titles"] for t in goal)))
        except (ValueError, KeyError, TypeError) as e:
          raise UserInputError(f"{where(path, lineno)}: not a CPCD conversation ({type(e).__name__}: {e})") from None
  return out


def dataset_prompts(dataset_dir: str | os.PathLike) -> tuple[dict[str, str], dict[str, list[str]]]:
  """({playlist id: prompt}, splits) of a dataset dir."""
  dataset_dir = os.fspath(dataset_dir)
  prompts = {p.playlist_id: p.title
             for p in formats.read_playlists(os.path.join(dataset_dir, formats.PLAYLISTS_FILE))}
  return prompts, formats.read_splits(os.path.join(dataset_dir, "splits.json"))


def residue_report(prompts: str | os.PathLike | Mapping[str, str], goals: str | os.PathLike | Mapping[str, Goal],
                   *, ids: Iterable[str] | None = None, max_examples: int = 10) -> dict[str, Any]:
  """Counts the prompts that still hold a goal artist or title.

  `prompts`: a dataset dir or {conversation id: prompt}; `goals`: a CPCD folder or
  {conversation id: Goal}; `ids`: the conversations to count (default: every prompt).  Returns
  {num_prompts, num_with_residue, share, by_kind: {artist, title: prompts with that kind},
  examples: the first finding of the first `max_examples` prompts with residue, each
  {id, kind, entity, text, exact}}.
  """
  if not isinstance(prompts, Mapping):
    prompts = dataset_prompts(prompts)[0]
  if not isinstance(goals, Mapping):
    goals = goal_entities(goals)
  ids = list(prompts) if ids is None else list(ids)
  missing = [i for i in ids if i not in goals or i not in prompts]
  if missing:
    raise UserInputError(f"conversation {missing[0]!r} has no prompt or no goal in the inputs "
                         f"({len(missing)} such); is the dataset an import of this CPCD folder?")
  with_residue, by_kind, examples = 0, {"artist": 0, "title": 0}, []
  for i in ids:
    found = residue(prompts[i], goals[i].artists, goals[i].titles)
    with_residue += bool(found)
    for kind in by_kind:
      by_kind[kind] += any(f.kind == kind for f in found)
    examples.extend({"id": i, **dataclasses.asdict(f)} for f in found[:1] if len(examples) < max_examples)
  return {"num_prompts": len(ids), "num_with_residue": with_residue,
          "share": with_residue / len(ids) if ids else 0.0, "by_kind": by_kind, "examples": examples}
