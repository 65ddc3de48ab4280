"""CPCD (Conversational Playlist Curation Dataset, Chaganty et al. 2023, arXiv 2303.06791,
google-research-datasets/cpcd, CC BY 4.0) -> a dataset dir.

Input: the development set's two files in `cpcd_dir` (cpcd_v1.dialogs.dev.train.jsonl: 400
conversations, cpcd_v1.dialogs.dev.val.jsonl: 50).  One JSON object a line: `id`, `turns` (each
with `user_query`, `search_results`, `liked_results`, `disliked_results`, ...), `tracks` ({video id:
{track_titles, track_artists (list), track_release_titles, track_ids}}) and `goal_playlist` (the
video ids the person kept).

Output (one playlist per conversation):
  playlist_id  the conversation id
  title        the prompt: every user turn, joined with " " (`prompt="first_turn"`: the first only);
               with `artists="masked"`, catalog artist names removed (`ArtistMasker`, `MASK_RULE`);
               with `artists="entities_masked"`, also the conversation's own artists (common words
               too), goal and liked titles, their misspellings and unambiguous first or last names
               (`EntityMasker`, `ENTITY_MASK_RULE`), decided from the conversation's tracks;
               `entity_check` measures what is left independently (tools/check_masking.py)
  description  ""
  track_ids    the goal tracks, deduplicated (below), in goal order
Songs appear under several video ids: tracks are deduplicated by normalised (title, sorted
artists) (NFKC, case-folded, whitespace collapsed); a song's id is the lexicographically smallest of
its video ids, and `track_aliases.json` maps every other video id to it.  The catalog holds every
track any conversation gives metadata for (goal, liked, disliked and the search results that have
metadata; most search results have none and are counted in meta as referenced_without_metadata):
artist = artists joined with ", ", album = release title, tags = [].  A conversation without goal
tracks is skipped and counted.

Splits: splits.json is the canonical one: test = the 50 val-file conversations; validation = a
seeded `validation_fraction` (at least `min_validation`) of the train file's; train = the rest.
folds.json: seeded `num_folds`-fold partition of all conversations kept (`formats.fold_splits` /
`finish.materialize_fold` turn a fold into splits or a dataset dir).  Prompts are long (several
turns): meta.json's prompt_max_chars is 2048 for tasks to cut at, and prompt_stats gives lengths.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import unicodedata
from typing import Any, Iterable, Iterator

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import OSA

from t2t_jax import io_utils
from t2t_jax.data import english, finish, formats
from t2t_jax.errors import UserInputError, where

TRAIN_FILE = "cpcd_v1.dialogs.dev.train.jsonl"
VAL_FILE = "cpcd_v1.dialogs.dev.val.jsonl"
ALIASES_FILE = "track_aliases.json"
PROMPTS = ("all_user_turns", "first_turn")
ARTISTS = ("as_written", "masked", "entities_masked")
PROMPT_MAX_CHARS = 2048
MIN_NAME_CHARS = 3
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# Separators inside one artist string ("A feat. B", "A & B", "A, B"): each part is masked too.
_ARTIST_PARTS = re.compile(r"\s*(?:,|&|\bfeat\.|\bft\.|\bfeaturing\b)\s*", re.IGNORECASE)
_POSSESSIVE = re.compile(r"['\u2019]s(?!\w)", re.IGNORECASE)


@dataclasses.dataclass
class Conversation:
  conversation_id: str
  user_turns: list[str]
  goal: list[str]
  referenced: set[str]
  tracks: dict[str, tuple[str, tuple[str, ...], str]]  # video id -> (title, artists, release)
  liked: list[str] = dataclasses.field(default_factory=list)  # liked_results of every turn, in order


def _norm(text: str) -> str:
  return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def song_key(title: str, artists: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
  """The dedup key of a song: normalised title and sorted normalised artists."""
  return _norm(title), tuple(sorted(_norm(a) for a in artists))


def _ids(value: Any, what: str) -> list[str]:
  if not isinstance(value, list):
    raise formats._BadRecord(f"{what} must be a list, got {type(value).__name__}")  # pylint: disable=protected-access
  for i, v in enumerate(value):
    problem = formats.id_problem(v)
    if problem:
      raise formats._BadRecord(f"{what}[{i}] {problem}")  # pylint: disable=protected-access
  return value


def parse_conversation(rec: Any) -> Conversation:
  """Validates one CPCD line (parsed JSON); raises formats._BadRecord naming the bad field."""
  bad = formats._BadRecord  # pylint: disable=protected-access
  if isinstance(rec, bad):
    raise rec
  if not isinstance(rec, dict):
    raise bad(f"expected a JSON object, got {type(rec).__name__}")
  cid = rec.get("id")
  problem = formats.id_problem(cid)
  if problem:
    raise bad(f"field 'id' {problem}")
  turns = rec.get("turns")
  if not isinstance(turns, list):
    raise bad(f"conversation {cid!r}: 'turns' must be a list")
  user_turns, referenced, liked = [], set(), []
  for k, turn in enumerate(turns):
    if not isinstance(turn, dict) or not isinstance(turn.get("user_query", ""), str):
      raise bad(f"conversation {cid!r}: turns[{k}] must be an object with a string 'user_query'")
    formats.check_text(turn.get("user_query", ""), f"turns[{k}].user_query")
    user_turns.append(turn.get("user_query", ""))
    for key in ("liked_results", "disliked_results"):
      ids = _ids(turn.get(key, []), f"conversation {cid!r}: turns[{k}].{key}")
      referenced.update(ids)
      if key == "liked_results":
        liked.extend(ids)
    results = turn.get("search_results", [])
    if not isinstance(results, list):
      raise bad(f"conversation {cid!r}: turns[{k}].search_results must be a list")
    for j, group in enumerate(results):
      referenced.update(_ids(group, f"conversation {cid!r}: turns[{k}].search_results[{j}]"))
  goal = _ids(rec.get("goal_playlist"), f"conversation {cid!r}: goal_playlist")
  referenced.update(goal)
  tracks = rec.get("tracks")
  if not isinstance(tracks, dict):
    raise bad(f"conversation {cid!r}: 'tracks' must be an object")
  meta = {}
  for vid, m in tracks.items():
    problem = formats.id_problem(vid)
    if problem:
      raise bad(f"conversation {cid!r}: tracks key {problem}")
    what = f"conversation {cid!r}: tracks[{vid!r}]"
    if not isinstance(m, dict):
      raise bad(f"{what} must be an object")
    title, artists, release = m.get("track_titles"), m.get("track_artists"), m.get("track_release_titles", "")
    if not isinstance(title, str) or not isinstance(release, str) or not isinstance(artists, list) \
        or not all(isinstance(a, str) for a in artists):
      raise bad(f"{what}: expected track_titles (string), track_artists (list of strings), "
                "track_release_titles (string)")
    for key, value in (("track_titles", title), ("track_release_titles", release), *(("track_artists", a) for a in artists)):
      formats.check_text(value, key)
    meta[vid] = (title, tuple(a.strip() for a in artists if a.strip()), release)
  referenced.update(meta)
  return Conversation(cid, user_turns, list(goal), referenced, meta, list(dict.fromkeys(liked)))


def read_conversations(path: str | os.PathLike, *, on_error: str = "raise",
                       stats: formats.ReadStats | None = None) -> Iterator[Conversation]:
  """Streams validated conversations from a CPCD JSONL file (errors name file:line)."""
  stats = stats if stats is not None else formats.ReadStats()
  seen: set[str] = set()
  for lineno, rec in formats.iter_jsonl(path):
    try:
      conv = parse_conversation(rec)
      if conv.conversation_id in seen:
        raise formats._BadRecord(f"duplicate conversation id {conv.conversation_id!r}")  # pylint: disable=protected-access
    except formats._BadRecord as e:  # pylint: disable=protected-access
      msg = f"{where(path, lineno)}: {e}"
      if on_error == "raise":
        raise UserInputError(msg) from None
      stats.skip(msg)
      continue
    seen.add(conv.conversation_id)
    stats.read += 1
    yield conv


def _strip_accents(text: str) -> str:
  return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


MASK_RULE = (
    "Names: every catalog artist, each part of a multi-artist string (split on ',', '&', 'feat.', "
    "'ft.', 'featuring'), its accent-free spelling and the name without a leading 'The '. Kept in "
    "prompts (not masked): names shorter than 3 characters, names without a letter, names starting "
    "with a symbol, and names of one or two words that are all common English words "
    "(t2t_jax/data/english.py: 'Yes', 'Future', 'Green Day', 'The Cure'). Matching: case-insensitive, "
    "at token boundaries, leftmost-longest, a possessive 's taken along; each match is replaced by "
    "nothing and whitespace collapsed.")


class ArtistMasker:
  """Removes catalog artist names from prompts (`MASK_RULE`): a rough, documented stand-in for the
  paper's LLM rewrite of CPCD queries without artist names.  Lookup by first word, so masking costs
  O(words x names sharing that first word), not O(characters x names) as one big regex would.
  """

  def __init__(self, artist_strings):
    self.skipped = collections.Counter()
    names: set[str] = set()
    for s in artist_strings:
      for part in [s, *_ARTIST_PARTS.split(s)]:
        part = _WS.sub(" ", part).strip()
        for variant in (part, _strip_accents(part)):
          names.add(variant)
          if variant.lower().startswith("the "):
            names.add(variant[4:])
    by_first: dict[str, set[str]] = collections.defaultdict(set)
    for name in names:
      reason = self._skip_reason(name)
      if reason:
        self.skipped[reason] += 1
        continue
      by_first[_WORD.match(name).group().lower()].add(name.lower())
    self._by_first = {k: sorted(v, key=len, reverse=True) for k, v in by_first.items()}
    self.num_names = sum(len(v) for v in self._by_first.values())

  @staticmethod
  def _skip_reason(name: str) -> str | None:
    if len(name) < MIN_NAME_CHARS:
      return "shorter_than_3"
    if not any(c.isalpha() for c in name):
      return "no_letter"
    if not _WORD.match(name):
      return "starts_with_symbol"
    words = [w.lower() for w in _WORD.findall(name)]
    if len(words) <= 2 and all(w in english.COMMON_WORDS for w in words):
      return "common_words"
    return None

  def spans(self, text: str) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) of the names in `text`, leftmost-longest."""
    lower = text.lower()
    if len(lower) != len(text):  # rare case-mapping that changes length: match on the original
      lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    out, pos = [], 0
    for m in _WORD.finditer(lower):
      if m.start() < pos or (m.start() > 0 and lower[m.start() - 1].isalnum()):
        continue
      for name in self._by_first.get(m.group(), ()):
        end = m.start() + len(name)
        if lower.startswith(name, m.start()) and not (end < len(lower) and (lower[end].isalnum() or lower[end] == "_")):
          poss = _POSSESSIVE.match(lower, end)
          end = poss.end() if poss else end
          out.append((m.start(), end))
          pos = end
          break
    return out

  def mask(self, text: str) -> tuple[str, int]:
    """(text without artist names, number of names removed); repeats until nothing is left."""
    total = 0
    for _ in range(4):
      spans = self.spans(text)
      if not spans:
        break
      total += len(spans)
      parts, prev = [], 0
      for a, b in spans:
        parts.append(text[prev:a])
        prev = b
      parts.append(text[prev:])
      text = _WS.sub(" ", " ".join(parts)).strip()
    return text, total


ENTITY_MASK_RULE = (
    "Everything of MASK_RULE (catalog artists) and, per conversation, names taken from that "
    "conversation's own tracks (its gold: the goal playlist and the tracks it shows), the same way for "
    "training and test conversations (a stand-in for the paper's LLM rewrite of the queries without "
    "artist names): (1) the artists of every track of the conversation with metadata, common words "
    "included ('Queen', 'Future', 'The Cure'), each part of a multi-artist string, with and without a "
    "leading 'The'; (2) the titles of its goal and liked tracks, in full and without parenthesised or "
    "bracketed parts, a ' - ...' suffix or a 'feat.' tail, with and without a leading 'The'; titles of "
    "fewer than 3 letters and titles that are one common English word ('Love', 'Christmas') are kept; "
    "(3) near-misses of (1) and (2), comparing words as accent-free, case-folded letters and digits "
    "with spaces and punctuation dropped: up to one word more than the name with an equal spelling "
    "('greenday', 'R uth B', 'AC DC'), or one word more or less (at least 2) or as many words within "
    "optimal-string-alignment distance 1 of a name of 4-7 letters, 2 of 8-15, 3 of 16 or more "
    "('Tylor swift', 'lil wayn', 'Nickle back'), except words all common English words "
    "(t2t_jax/data/english.py), a first letter other than the name's for names under 7 letters, and a "
    "first or last word the match does not need; (4) the first or last word of a multi-word artist of "
    "(1) when unambiguous: at least 4 letters, not a common English word, not in ENTITY_NAME_WORDS "
    "('Lil', 'DJ', 'Band', 'Korean'), not a word of two or more catalog artist names ('John', "
    "'Hillsong') and not in two or more catalog titles or releases other than that artist's own or "
    "naming them ('Worship', 'Frozen'): 'Kanye', 'Alanis', 'Clapton'. Words are tokens (a possessive "
    "'s and apostrophes dropped, '&' read as 'and'); matches leftmost-longest, each replaced by "
    "nothing, whitespace collapsed.")
# Words many artist names share: never masked alone as the first or last word of a name (rule (4)).
ENTITY_NAME_WORDS = frozenset("""
lil little young big baby dj mc mr mrs ms miss sir dr saint st king queen prince princess lord
the and feat featuring with los las el la le les de del della di da du van von der den y
band orchestra philharmonic symphony symphonic ensemble quartet trio choir chorus singers players
brothers sisters boys girls family gang crew collective project experience group sound sounds
company club society kids orchestre orquesta
korean japanese chinese french german spanish italian latin latino african american english british
irish brazilian indian russian swedish mexican cuban jamaican
""".split())
_MASK_TOKEN = re.compile(r"\w+(?:['\u2019]\w+)*|&")
_TOKEN_JUNK = re.compile(r"['\u2019_]")
_TITLE_EXTRAS = (re.compile(r"\s*[(\[][^)\]]*[)\]]"), re.compile(r"\s+[-\u2013\u2014]\s+.*$"),
                 re.compile(r"\s+(?:feat\.|ft\.|featuring)\s.*$", re.IGNORECASE))


def _token_key(token: str) -> str:
  """A word token as rule (3) compares it: accent-free, case-folded, possessive 's and apostrophes
  dropped; '&' is 'and'."""
  if token == "&":
    return "and"
  key = _strip_accents(token).casefold()
  if key.endswith(("'s", "\u2019s")):
    key = key[:-2]
  return _TOKEN_JUNK.sub("", key)


def _token_keys(text: str) -> list[str]:
  return [k for k in (_token_key(m.group()) for m in _MASK_TOKEN.finditer(text)) if k]


def _has_run(keys: list[str], run: tuple[str, ...]) -> bool:
  n = len(run)
  return any(tuple(keys[i:i + n]) == run for i in range(len(keys) - n + 1))


def _max_edits(letters: int) -> int:
  """Rule (3): the edit distance allowed for a name of `letters` letters and digits."""
  return 0 if letters < 4 else 1 if letters <= 7 else 2 if letters <= 15 else 3


class EntityMasker:
  """Removes catalog artists (`ArtistMasker`) and a conversation's own artists, titles and their
  near-misses from its prompt (`ENTITY_MASK_RULE`).

  Per prompt: every run of up to n+1 prompt words (n: the longest name's word count) is looked up
  by its squashed form in a dict (exact and space variants), and the runs of n-1 (at least 2), n and
  n+1 words are compared with the names of n words by rapidfuzz's optimal string alignment distance
  (`process.cdist`, in C++): the whole CPCD (450 prompts, 8k songs) masks in about a second.
  """

  KINDS = ("catalog_artist", "artist", "title", "name_part", "near_miss")

  def __init__(self, songs: Iterable[tuple[str, tuple[str, ...], str]]):
    """`songs`: the catalog's (title, artists, release) triples."""
    songs = list(songs)
    self.catalog = ArtistMasker(a for _, artists, _ in songs for a in artists)
    # Rule (4)'s "words names share": a word of two or more catalog artist names, or of two or more
    # titles or releases that are not by an artist with that word and do not hold such an artist's
    # full name ("Worship", "Baroque", "Saxophone", "John"; not "Whitney" from "Feeling Whitney").
    names_with: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for _, artists, _ in songs:
      for a in artists:
        for part in _ARTIST_PARTS.split(a):
          keys = _token_keys(part)
          keys = keys[1:] if len(keys) > 1 and keys[0] == "the" else keys
          for w in keys:
            names_with[w].add(tuple(keys))
    in_texts: dict[str, set[str]] = collections.defaultdict(set)
    for title, artists, release in songs:
      own = {w for a in artists for w in _token_keys(a)}
      for text in {title, release}:
        keys = _token_keys(text)
        for w in set(keys) - own:
          if not any(_has_run(keys, name) for name in names_with.get(w, ())):
            in_texts[w].add(text)
    self.shared_words = frozenset({w for w, n in names_with.items() if len(n) > 1}
                                  | {w for w, t in in_texts.items() if len(t) > 1})

  def names(self, artists: Iterable[str], titles: Iterable[str]) -> dict[str, tuple[str, int]]:
    """{squashed name: (kind, number of words)} of one conversation: kind 'artist' (rule (1)),
    'title' (2) or 'name_part' (4)."""
    out: dict[str, tuple[str, int]] = {}
    parts: dict[str, None] = {}  # an ordered set
    for s in artists:
      for part in [s, *_ARTIST_PARTS.split(s)]:
        keys = _token_keys(part)
        for variant in (keys, keys[1:] if len(keys) > 1 and keys[0] == "the" else []):
          if variant and len("".join(variant)) >= 2:
            out.setdefault("".join(variant), ("artist", len(variant)))
          if len(variant) > 1:
            for word in (variant[0], variant[-1]):
              if len(word) >= 4 and word.isalpha() and word not in english.COMMON_WORDS \
                  and word not in ENTITY_NAME_WORDS and word not in self.shared_words:
                parts[word] = None
    for title in titles:
      core = title
      for pattern in _TITLE_EXTRAS:
        core = pattern.sub("", core)
      for text in (title, core):
        keys = _token_keys(text)
        for variant in (keys, keys[1:] if len(keys) > 1 and keys[0] == "the" else []):
          squashed = "".join(variant)
          if sum(c.isalpha() for c in squashed) < 3 or (len(variant) == 1 and variant[0] in english.COMMON_WORDS):
            continue
          out.setdefault(squashed, ("title", len(variant)))
    for word in parts:
      out.setdefault(word, ("name_part", 1))
    return out

  @staticmethod
  def _near_miss(window: list[str], name: str, distance: int, names: dict[str, tuple[str, int]]) -> bool:
    """Rule (3)'s exceptions: a run of words within the distance allowed of `name` is not a
    near-miss when its first letter differs and the name has fewer than 7 letters ('use' / 'Muse'),
    when it is all common English words ('love' / 'Llove'), or when a word at its edge is not
    needed: without it the run is as close to `name` or is another artist or title ('K.T. Oslin. I',
    'Unforgiven is')."""
    if (len(name) < 7 and window[0][0] != name[0]) or all(w in english.COMMON_WORDS for w in window):
      return False
    for inner in (window[1:], window[:-1]):
      other = names.get("".join(inner), ("", 0))[0]
      if inner and (other in ("artist", "title") or OSA.distance("".join(inner), name) <= distance):
        return False
    return True

  def spans(self, text: str, artists: Iterable[str], titles: Iterable[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) of what to remove from `text`, leftmost-longest; kind is
    one of `KINDS`."""
    return self._spans(text, self.names(artists, titles))

  def _spans(self, text: str, names: dict[str, tuple[str, int]]) -> list[tuple[int, int, str]]:
    found = [(a, b, "catalog_artist") for a, b in self.catalog.spans(text)]
    tokens = [(k, m.start(), m.end()) for m in _MASK_TOKEN.finditer(text) if (k := _token_key(m.group()))]
    keys = [k for k, _, _ in tokens]
    longest = max((n for _, n in names.values()), default=0)
    for size in range(1, longest + 2):
      for i in range(len(tokens) - size + 1):
        hit = names.get("".join(keys[i:i + size]))
        if hit and (size == 1 if hit[0] == "name_part" else size <= hit[1] + 1):
          found.append((tokens[i][1], tokens[i + size - 1][2], hit[0]))
    by_words = collections.defaultdict(list)
    for squashed, (kind, n) in names.items():
      if kind != "name_part" and _max_edits(len(squashed)):
        by_words[n].append(squashed)
    for n, group in by_words.items():
      limits = np.array([_max_edits(len(g)) for g in group])
      for size in sorted({max(n - 1, 2), n, n + 1}):
        starts = range(len(tokens) - size + 1)
        if not starts:
          continue
        windows = ["".join(keys[i:i + size]) for i in starts]
        dist = process.cdist(windows, group, scorer=OSA.distance, score_cutoff=3, dtype=np.int32)
        for i, j in zip(*np.nonzero((dist > 0) & (dist <= limits[None, :]))):
          if self._near_miss(keys[starts[i]:starts[i] + size], group[j], int(dist[i, j]), names):
            found.append((tokens[starts[i]][1], tokens[starts[i] + size - 1][2], "near_miss"))
    found.sort(key=lambda s: (s[0], s[0] - s[1]))
    out, pos = [], 0
    for a, b, kind in found:
      if a >= pos:
        out.append((a, b, kind))
        pos = b
    return out

  def mask(self, text: str, artists: Iterable[str], titles: Iterable[str]) -> tuple[str, collections.Counter]:
    """(text without the names, {kind: number removed}); repeats until nothing is left."""
    names = self.names(artists, titles)
    removed = collections.Counter()
    for _ in range(4):
      spans = self._spans(text, names)
      if not spans:
        break
      removed.update(kind for _, _, kind in spans)
      parts, prev = [], 0
      for a, b, _ in spans:
        parts.append(text[prev:a])
        prev = b
      parts.append(text[prev:])
      text = _WS.sub(" ", " ".join(parts)).strip()
    return text, removed


def _prompt(conv: Conversation, mode: str) -> str:
  turns = [_WS.sub(" ", t).strip() for t in conv.user_turns]
  turns = [t for t in turns if t]
  if mode == "first_turn":
    return turns[0] if turns else ""
  return " ".join(turns)


def _songs(conversations: list[Conversation]) -> tuple[dict[str, str], dict[str, tuple]]:
  """(video id -> song id, song id -> (title, artists, release)) over every conversation."""
  groups: dict[tuple, list[str]] = collections.defaultdict(list)
  meta: dict[str, tuple] = {}
  for conv in conversations:
    for vid, m in conv.tracks.items():
      if vid not in meta:
        meta[vid] = m
        groups[song_key(m[0], m[1])].append(vid)
  canonical = {}
  for vids in groups.values():
    song = min(vids)
    for vid in vids:
      canonical[vid] = song
  return canonical, {song: meta[song] for song in set(canonical.values())}


def _conversation_names(conv: Conversation) -> tuple[list[str], list[str]]:
  """(artists of every track with metadata, titles of the goal and liked tracks) of `conv`."""
  artists = list(dict.fromkeys(a for _, names, _ in conv.tracks.values() for a in names))
  titles = list(dict.fromkeys(conv.tracks[v][0] for v in conv.goal + conv.liked if v in conv.tracks))
  return artists, titles


def _playlists(parts: dict[str, list[Conversation]], canonical: dict[str, str], prompt: str,
               masker: ArtistMasker | EntityMasker | None, counts: collections.Counter):
  """(playlists, {part: kept conversation ids}): one playlist per conversation with goal tracks."""
  playlists, kept = [], {name: [] for name in parts}
  for name, part in parts.items():
    for conv in part:
      goal = [canonical.get(v) for v in conv.goal]
      counts["goal_tracks_without_metadata"] += sum(g is None for g in goal)
      track_ids = list(dict.fromkeys(g for g in goal if g is not None))
      counts["goal_duplicates_merged"] += sum(g is not None for g in goal) - len(track_ids)
      text = _prompt(conv, prompt)
      if isinstance(masker, EntityMasker):
        text, removed = masker.mask(text, *_conversation_names(conv))
        n = sum(removed.values())
        counts.update({f"removed_{kind}": v for kind, v in removed.items()})
      elif masker is not None:
        text, n = masker.mask(text)
      if masker is not None:
        counts["masked_replacements"] += n
        counts["masked_prompts_changed"] += n > 0
      if not track_ids:
        counts["conversations_without_goal"] += 1
        continue
      if not text:
        counts["conversations_with_empty_prompt"] += 1
        continue
      playlists.append(formats.Playlist(conv.conversation_id, text, "", tuple(track_ids)))
      kept[name].append(conv.conversation_id)
  return playlists, kept


def _check_options(prompt: str, artists: str) -> None:
  if prompt not in PROMPTS:
    raise UserInputError(f"--prompt must be one of {PROMPTS}, got {prompt!r}")
  if artists not in ARTISTS:
    raise UserInputError(f"--artists must be one of {ARTISTS}, got {artists!r}")


def convert_cpcd(cpcd_dir: str | os.PathLike, out_dir: str | os.PathLike, *, prompt: str = "all_user_turns",
                 artists: str = "as_written", num_folds: int = 5, seed: int = 0,
                 validation_fraction: float = 0.1, min_validation: int = 20, on_error: str = "raise",
                 vocab_size: int | None = finish.DEFAULT_VOCAB_SIZE, spm_path: str | os.PathLike | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
  """CPCD development set -> dataset dir (atomic); returns meta.  See the module docstring."""
  _check_options(prompt, artists)
  cpcd_dir = os.fspath(cpcd_dir)
  if not os.path.isdir(cpcd_dir):
    raise UserInputError(f"{cpcd_dir}: not a folder (expected the CPCD folder with {TRAIN_FILE} and {VAL_FILE})")
  stats = formats.ReadStats()
  parts = {name: list(read_conversations(os.path.join(cpcd_dir, f), on_error=on_error, stats=stats))
           for name, f in (("train", TRAIN_FILE), ("test", VAL_FILE))}
  convs = parts["train"] + parts["test"]
  dup = collections.Counter(c.conversation_id for c in convs)
  if any(v > 1 for v in dup.values()):
    raise UserInputError(f"{cpcd_dir}: conversation {next(k for k, v in dup.items() if v > 1)!r} is in both files")
  canonical, songs = _songs(convs)
  order = list(dict.fromkeys(canonical[v] for c in convs for v in c.tracks))
  masker: ArtistMasker | EntityMasker | None = None
  if artists == "masked":
    masker = ArtistMasker(a for s in songs.values() for a in s[1])
  elif artists == "entities_masked":
    masker = EntityMasker(songs.values())
  counts = collections.Counter()
  playlists, kept = _playlists(parts, canonical, prompt, masker, counts)
  if not playlists:
    raise UserInputError(f"{cpcd_dir}: no conversation with goal tracks and a prompt")
  referenced = set().union(*(c.referenced for c in convs))
  validation = formats.validation_subset(kept["train"], fraction=validation_fraction,
                                         minimum=min_validation, seed=seed)
  held = set(validation)
  splits = {"train": sorted(i for i in kept["train"] if i not in held), "validation": validation,
            "test": sorted(kept["test"])}
  folds = formats.make_folds(kept["train"] + kept["test"], num_folds=num_folds, seed=seed)
  aliases = {v: s for v, s in sorted(canonical.items()) if v != s}
  train_ids, test_ids = set(kept["train"]), set(kept["test"])
  train_goals = {t for p in playlists if p.playlist_id in train_ids for t in p.track_ids}
  test_goals = {t for p in playlists if p.playlist_id in test_ids for t in p.track_ids}
  meta = {
      "source": "cpcd", "input": os.path.abspath(cpcd_dir), "prompt": prompt, "artists": artists,
      "attribution": "CPCD, Chaganty et al. 2023 (arXiv 2303.06791), google-research-datasets/cpcd, CC BY 4.0",
      "conversations": {"train_file": len(parts["train"]), "val_file": len(parts["test"]),
                        "kept": len(playlists)},
      "video_ids": len(canonical), "songs": len(songs), "video_ids_merged": len(aliases),
      "artists_distinct": len({a for s in songs.values() for a in s[1]}),
      "referenced_ids": len(referenced), "referenced_without_metadata": len(referenced - set(canonical)),
      "test_goal_tracks_in_train_goals": {"tracks": len(test_goals), "in_train": len(test_goals & train_goals)},
      "split_rule": (f"canonical: test = {VAL_FILE}; validation = {validation_fraction:.0%} (at least "
                     f"{min_validation}) of {TRAIN_FILE}, seed {seed}"),
      "num_folds": num_folds,
      **{k: int(v) for k, v in sorted(counts.items()) if not k.startswith("removed_")},
      "read_stats": stats.as_dict()}
  if masker is not None:
    catalog = masker.catalog if isinstance(masker, EntityMasker) else masker
    meta["masking"] = {"rule": MASK_RULE,
                       "names": catalog.num_names, "names_skipped": dict(catalog.skipped),
                       "replacements": counts["masked_replacements"],
                       "prompts_changed": counts["masked_prompts_changed"]}
    if isinstance(masker, EntityMasker):
      meta["masking"]["rule"] = ENTITY_MASK_RULE
      meta["masking"]["catalog_rule"] = MASK_RULE
      meta["masking"]["removed_by_kind"] = {k: counts[f"removed_{k}"] for k in EntityMasker.KINDS}
  with io_utils.atomic_dir(out_dir, kind="dataset", inputs=(cpcd_dir, spm_path), overwrite=overwrite) as tmp:
    formats.write_catalog(os.path.join(tmp, formats.CATALOG_FILE),
                          (formats.Track(s, ", ".join(songs[s][1]), songs[s][0], songs[s][2]) for s in order))
    formats.write_playlists(os.path.join(tmp, formats.PLAYLISTS_FILE), playlists)
    io_utils.write_json(os.path.join(tmp, ALIASES_FILE), aliases)
    io_utils.write_json(os.path.join(tmp, formats.FOLDS_FILE), folds, indent=None)
    return finish.finish_dataset(tmp, meta=meta, splits=splits, split_spec=finish.SplitSpec(seed=seed),
                                 vocab_size=vocab_size, spm_path=spm_path, prompt_max_chars=PROMPT_MAX_CHARS)
