"""CPCD's own evaluation protocol: turn level, tracks compared by cluster (written here from its
description; the dataset's script is google-research-datasets/cpcd eval.py + metrics.py).

For each conversation (with goal tracks) and each turn t < `max_turns` (default 10):
  query  the user turns 0..t joined with " " (each turn whitespace-collapsed, empty turns dropped:
         the importer's "all_user_turns" prompt cut after turn t), optionally rewritten by `text_fn`
         (studies/turns_study.py: the masking and normalisation the dataset dir's prompts got)
  seeds  the keys of the first 3 liked tracks of every EARLIER turn (< t): tracks the system has
         already been told about.  The current turn's liked tracks are not known when it is asked.
  gold   the whole goal playlist's keys.  Seeds are removed from both the ranking and the gold set;
         a turn with no gold left is skipped (counted in turns_skipped).
Metrics at k over the ranking with duplicate keys dropped (first occurrence kept) and seeds removed,
then cut at k; `G` = gold left, `hits` = gold keys among the top k:
  hit@k        1 if any gold key is in the top k
  recall@k     |hits| / |G|
  precision@k  |hits| / k (a ranking shorter than k counts its empty places as misses; the dataset's
               script requires at least k candidates, where the two agree)
  mrr@k        1 / rank of the first gold key in the top k (0 if none)
  map@k        AP@k = sum over gold ranks r <= k of precision@r, divided by min(|G|, k)
"macro": the mean over a conversation's scored turns, then over conversations; "micro": the mean over
all scored turns.  The dataset's script bounds only its per-turn table by 10 turns, its macro and micro
use every turn it gets predictions for (its published development figures: 2,396 scored turns, 2,390 of
them in its 10 per-turn columns); `max_turns=None` scores every turn.

Track keys (`TrackKeys`): two video ids are the same track when the dataset's cluster file puts them in
one cluster (cpcd_v1.dev.val.track_clusters.jsonl: the 50 validation conversations), when they have the
same normalised title + artists (`cpcd.song_key`, the importer's merge), or when the dataset dir's
track_aliases.json maps one to the other; transitively, so a catalog row (one song of the importer) has
exactly one key, the one its gold tracks get.  (On the development set: 15 of the 1,012 validation goal
ids are missing from the cluster file, 6 of them sharing a song with clustered ids, and 2 songs have
video ids in two clusters.)  A key reads "cluster:<id>" (the smallest cluster id of the group), else
"song:<title and artists>", else "id:<video id>" for ids without metadata and cluster.

Ranking: `rank_turns(rank_fn, queries, catalog_keys, k)` asks a method for catalog rows
(`rank_fn(texts, n) -> int [Q, n]`, -1 = none), turns them into keys and scores them.  Since seeds and
duplicate keys are dropped before the cut at k, it asks for `candidates_needed(queries, k)` rows (k +
the most seed keys of any query) and again with twice as many for queries still short of k keys.

numpy only (the core); the retrievers live in t2t_jax.baselines, the study that runs them in
studies/turns_study.py, the command in tools/cpcd_turns.py.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import statistics
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from t2t_jax import stats
from t2t_jax.data import cpcd, formats
from t2t_jax.errors import UserInputError, where

CLUSTERS_FILE = "cpcd_v1.dev.val.track_clusters.jsonl"
MAX_TURNS = 10
NUM_SEEDS = 3
KS = (1, 5, 10)
METRICS = ("hit", "recall", "precision", "mrr", "map")
# --aggregate's paired test: every Text2Tracks row (name starting with this) against each baseline, on
# these macro metrics, resampling conversations.
TEXT2TRACKS_PREFIX = "text2tracks"
PAIRED_BASELINES = ("bi_encoder_tuned", "hybrid")
PAIRED_METRICS = ("hit@10", "mrr@10")
BOOTSTRAP_SAMPLES = 10000
_WS = re.compile(r"\s+")

RankFn = Callable[[list[str], int], np.ndarray]  # (texts, n) -> int [len(texts), n] catalog rows, -1 = none
TextFn = Callable[[str, cpcd.Conversation], str]  # (query text, its conversation) -> text sent to methods

# The dataset's published development-set figures (google-research-datasets/cpcd scores/*.dev.csv, this
# protocol, 448 dev conversations, 2,396 scored turns) as {metric@k: (macro, micro)}.  They rank the full
# CPCD track catalog, which is not public and larger than the tracks these files describe: a reference
# point, not a comparison.
PUBLISHED_DEV_SOURCE = ("google-research-datasets/cpcd, scores/{bm25,de-ttw,hybrid}.dev.csv: the "
                        "dataset's evaluation script on all 448 scored development conversations "
                        "(2,396 turns), ranking the full CPCD track catalog (not public, larger than ours)")
PUBLISHED_DEV = {
    "BM25 (CPCD authors)": {
        "hit@1": (0.0467, 0.0467), "hit@5": (0.1487, 0.1469), "hit@10": (0.2189, 0.2162),
        "recall@1": (0.0036, 0.0039), "recall@5": (0.0170, 0.0180), "recall@10": (0.0277, 0.0285),
        "precision@1": (0.0467, 0.0467), "precision@5": (0.0399, 0.0399), "precision@10": (0.0350, 0.0346),
        "mrr@1": (0.0467, 0.0467), "mrr@5": (0.0820, 0.0819), "mrr@10": (0.0913, 0.0911),
        "map@1": (0.0467, 0.0467), "map@5": (0.0235, 0.0240), "map@10": (0.0170, 0.0175)},
    "Dual encoder trained on synthetic Talk-the-Walk conversations (CPCD authors)": {
        "hit@1": (0.0417, 0.0422), "hit@5": (0.1613, 0.1607), "hit@10": (0.2499, 0.2475),
        "recall@1": (0.0033, 0.0034), "recall@5": (0.0173, 0.0175), "recall@10": (0.0332, 0.0333),
        "precision@1": (0.0417, 0.0422), "precision@5": (0.0431, 0.0432), "precision@10": (0.0423, 0.0417),
        "mrr@1": (0.0417, 0.0422), "mrr@5": (0.0839, 0.0838), "mrr@10": (0.0955, 0.0952),
        "map@1": (0.0417, 0.0422), "map@5": (0.0244, 0.0245), "map@10": (0.0191, 0.0190)},
    "Hybrid BM25 + dual encoder (CPCD authors)": {
        "hit@1": (0.0413, 0.0426), "hit@5": (0.1776, 0.1786), "hit@10": (0.2590, 0.2588),
        "recall@1": (0.0032, 0.0034), "recall@5": (0.0185, 0.0191), "recall@10": (0.0328, 0.0340),
        "precision@1": (0.0413, 0.0426), "precision@5": (0.0449, 0.0452), "precision@10": (0.0400, 0.0400),
        "mrr@1": (0.0413, 0.0426), "mrr@5": (0.0878, 0.0890), "mrr@10": (0.0988, 0.0998),
        "map@1": (0.0413, 0.0426), "map@5": (0.0236, 0.0238), "map@10": (0.0174, 0.0177)},
}


@dataclasses.dataclass(frozen=True)
class TurnQuery:
  """One scored turn: the query text so far, the seed keys known by then, the goal playlist's keys."""
  conversation_id: str
  turn: int
  text: str
  seeds: frozenset[str]
  gold: frozenset[str]  # the whole goal playlist; evaluation removes the seeds


@dataclasses.dataclass(frozen=True)
class Dialog:
  """A validated CPCD conversation (`cpcd.Conversation`) with each turn's liked video ids."""
  conversation: cpcd.Conversation
  liked: tuple[tuple[str, ...], ...]

  @property
  def conversation_id(self) -> str:
    return self.conversation.conversation_id


# ----------------------------------------------------------------------------------------------- #
# Reading.


def read_dialogs(path: str | os.PathLike) -> list[Dialog]:
  """Validated conversations of a CPCD JSONL file (`cpcd.parse_conversation`; errors name file:line)
  with each turn's liked ids (the turn boundaries `cpcd.Conversation` does not keep)."""
  out, seen = [], set()
  for lineno, rec in formats.iter_jsonl(path):
    try:
      conv = cpcd.parse_conversation(rec)
      if conv.conversation_id in seen:
        raise formats._BadRecord(f"duplicate conversation id {conv.conversation_id!r}")  # pylint: disable=protected-access
    except formats._BadRecord as e:  # pylint: disable=protected-access
      raise UserInputError(f"{where(path, lineno)}: {e}") from None
    seen.add(conv.conversation_id)
    # parse_conversation has checked that each turn is an object whose liked_results is a list of ids.
    liked = tuple(tuple(turn.get("liked_results", [])) for turn in rec["turns"])
    out.append(Dialog(conv, liked))
  return out


def read_clusters(path: str | os.PathLike) -> dict[str, str]:
  """{video id: cluster id} from a track-clusters JSONL file ({"track_id", "cluster_id", ...} a line)."""
  out: dict[str, str] = {}
  for lineno, rec in formats.iter_jsonl(path):
    if isinstance(rec, formats._BadRecord):  # pylint: disable=protected-access
      raise UserInputError(f"{where(path, lineno)}: {rec}")
    if not isinstance(rec, dict) or not all(isinstance(rec.get(f), str) and rec.get(f)
                                            for f in ("track_id", "cluster_id")):
      raise UserInputError(f"{where(path, lineno)}: expected an object with string 'track_id' and 'cluster_id'")
    tid, cid = rec["track_id"], rec["cluster_id"]
    if out.get(tid, cid) != cid:
      raise UserInputError(f"{where(path, lineno)}: track {tid!r} is in two clusters ({out[tid]!r}, {cid!r})")
    out[tid] = cid
  return out


def read_aliases(dataset_dir: str | os.PathLike) -> dict[str, str]:
  """The importer's {video id: song's track id} (track_aliases.json of a CPCD dataset dir; {} if none)."""
  path = os.path.join(os.fspath(dataset_dir), cpcd.ALIASES_FILE)
  if not os.path.exists(path):
    return {}
  aliases = formats.read_json_file(path, "track aliases file")
  if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
    raise UserInputError(f"{path}: expected a JSON object of video id -> track id strings")
  return aliases


# ----------------------------------------------------------------------------------------------- #
# Track keys.


class TrackKeys:
  """Video id -> the key tracks are compared by: the groups of ids joined by a shared cluster, a shared
  `cpcd.song_key` or an alias, transitively (see the module docstring)."""

  def __init__(self, *, clusters: Mapping[str, str] | None = None,
               metadata: Mapping[str, tuple[str, tuple[str, ...]]] | None = None,
               aliases: Mapping[str, str] | None = None):
    """clusters {video id: cluster id}; metadata {video id: (title, artists)}; aliases {video id: id}."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
      root = x
      while parent.setdefault(root, root) != root:
        root = parent[root]
      while parent[x] != root:
        parent[x], x = root, parent[x]
      return root

    def union(a: str, b: str) -> None:
      ra, rb = find(a), find(b)
      if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)

    labels: dict[str, list[str]] = collections.defaultdict(list)  # group label -> video ids
    for vid, cid in (clusters or {}).items():
      labels["cluster:" + cid].append(vid)
    for vid, (title, artists) in (metadata or {}).items():
      labels["song:" + json.dumps(cpcd.song_key(title, tuple(artists)), ensure_ascii=False)].append(vid)
    for label, vids in labels.items():
      for vid in vids:
        union(vids[0], vid)
    for alias, song in (aliases or {}).items():
      union(alias, song)
    by_root: dict[str, set[str]] = collections.defaultdict(set)
    for label, vids in labels.items():
      by_root[find(vids[0])].add(label)
    name = {}
    for root, group in by_root.items():
      clustered = sorted(g for g in group if g.startswith("cluster:"))
      name[root] = clustered[0] if clustered else min(group)
    self._key = {vid: name.get(find(vid)) or "id:" + find(vid) for vid in list(parent)}
    self.stats = {
        "video_ids": len(self._key), "keys": len(set(self._key.values())),
        "clustered_ids": len(clusters or {}),
        "keys_joining_clusters": sum(sum(g.startswith("cluster:") for g in group) > 1 for group in by_root.values())}

  @classmethod
  def from_dialogs(cls, dialogs: Iterable[Dialog], *, clusters: Mapping[str, str] | None = None,
                   aliases: Mapping[str, str] | None = None) -> "TrackKeys":
    """Keys over the track metadata of `dialogs` (the first seen per video id, as the importer)."""
    metadata: dict[str, tuple[str, tuple[str, ...]]] = {}
    for d in dialogs:
      for vid, (title, artists, _) in d.conversation.tracks.items():
        metadata.setdefault(vid, (title, artists))
    return cls(clusters=clusters, metadata=metadata, aliases=aliases)

  def __contains__(self, vid: str) -> bool:
    return vid in self._key

  def key(self, vid: str) -> str:
    return self._key.get(vid) or "id:" + vid


def catalog_keys(tracks: Sequence[Any], keys: TrackKeys) -> list[str]:
  """The key of each catalog row (`formats.Track`s or track ids, e.g. `Dataset.load(dir).tracks`).

  Build `keys` with the dataset dir's aliases (`read_aliases`) so a row and all its video ids agree.
  Raises UserInputError for track ids `keys` has never seen (the catalog is not from these files).
  """
  ids = [t if isinstance(t, str) else t.track_id for t in tracks]
  unknown = [t for t in ids if t not in keys]
  if unknown:
    raise UserInputError(f"{len(unknown)} catalog track(s) are in none of the CPCD conversations read, e.g. "
                         f"{unknown[0]!r}: was the dataset imported from other CPCD files?")
  return [keys.key(t) for t in ids]


# ----------------------------------------------------------------------------------------------- #
# Turn queries.


def turn_queries(dialogs: Iterable[Dialog], keys: TrackKeys, *, max_turns: int | None = MAX_TURNS,
                 num_seeds: int = NUM_SEEDS, conversation_ids: Iterable[str] | None = None,
                 text_fn: TextFn | None = None) -> list[TurnQuery]:
  """One TurnQuery per turn t < max_turns of each conversation with goal tracks (file order).

  conversation_ids: keep only these (each must be among `dialogs`); text_fn(text, conversation)
  rewrites each query text (e.g. the importer's masking); a conversation without goal tracks gives
  no queries.
  """
  if max_turns is not None and (isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1):
    raise UserInputError(f"max_turns must be a positive integer or None, got {max_turns!r}")
  dialogs = list(dialogs)
  if conversation_ids is not None:
    wanted = set(conversation_ids)
    missing = sorted(wanted - {d.conversation_id for d in dialogs})
    if missing:
      raise UserInputError(f"{len(missing)} conversation(s) not in the CPCD files read, e.g. {missing[0]!r}")
    dialogs = [d for d in dialogs if d.conversation_id in wanted]
  out = []
  for d in dialogs:
    gold = frozenset(keys.key(v) for v in d.conversation.goal)
    if not gold:
      continue
    turns, seeds = [], frozenset()
    n = len(d.conversation.user_turns) if max_turns is None else min(max_turns, len(d.conversation.user_turns))
    for t in range(n):
      turn = _WS.sub(" ", d.conversation.user_turns[t]).strip()
      if turn:
        turns.append(turn)
      text = " ".join(turns)
      out.append(TurnQuery(d.conversation_id, t, text_fn(text, d.conversation) if text_fn else text, seeds, gold))
      seeds = seeds | {keys.key(v) for v in d.liked[t][:num_seeds]}  # known from turn t + 1 on
  return out


def read_turn_queries(cpcd_file: str | os.PathLike, *, clusters_file: str | os.PathLike | None = None,
                      max_turns: int | None = MAX_TURNS, conversation_ids: Iterable[str] | None = None,
                      keys: TrackKeys | None = None, text_fn: TextFn | None = None) -> list[TurnQuery]:
  """Turn queries of a raw CPCD JSONL file.  Keys: `keys` when given, else built from this file's
  track metadata and the cluster file (when given)."""
  dialogs = read_dialogs(cpcd_file)
  if keys is None:
    keys = TrackKeys.from_dialogs(dialogs, clusters=read_clusters(clusters_file) if clusters_file else None)
  elif clusters_file is not None:
    raise UserInputError("read_turn_queries: pass clusters_file or keys, not both")
  return turn_queries(dialogs, keys, max_turns=max_turns, conversation_ids=conversation_ids, text_fn=text_fn)


# ----------------------------------------------------------------------------------------------- #
# Metrics.


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
  ks = tuple(ks)
  if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
    raise UserInputError(f"ks must be positive integers, got {ks!r}")
  return tuple(int(k) for k in ks)


def dedup(keys: Iterable[str]) -> list[str]:
  """Keys in order, each once (its first occurrence)."""
  return list(dict.fromkeys(keys))


def turn_metrics(ranked: Sequence[str], gold: frozenset[str] | set[str], ks: Sequence[int] = KS) -> dict[str, float]:
  """hit/recall/precision/mrr/map @k of one turn: `ranked` without duplicates or seeds, `gold` non-empty."""
  assert gold, "a turn without gold tracks is skipped, not scored"
  ks = _check_ks(ks)
  is_hit = [key in gold for key in ranked[:max(ks)]]
  hits_at = np.cumsum(is_hit, dtype=np.int64)  # hits_at[r - 1]: gold keys within the top r
  out = {}
  for k in ks:
    top = is_hit[:k]
    hits = int(hits_at[len(top) - 1]) if top else 0
    first = next((r for r, h in enumerate(top, 1) if h), None)
    ap = sum(hits_at[r - 1] / r for r, h in enumerate(top, 1) if h)
    out.update({f"hit@{k}": float(hits > 0), f"recall@{k}": hits / len(gold), f"precision@{k}": hits / k,
                f"mrr@{k}": 1.0 / first if first else 0.0, f"map@{k}": float(ap) / min(len(gold), k)})
  return out


def metric_names(ks: Sequence[int] = KS) -> list[str]:
  return [f"{m}@{k}" for m in METRICS for k in _check_ks(ks)]


def evaluate_turns(ranked_keys_per_query: Sequence[Sequence[str]], queries: Sequence[TurnQuery],
                   ks: Sequence[int] = KS) -> dict[str, Any]:
  """Macro and micro metrics (`metric_names(ks)`) of one ranking of keys per query (best first).

  Each ranking is deduplicated (first occurrence kept) and stripped of the query's seeds before the cut
  at k; seeds leave the gold set too; a query with no gold left is skipped.  Returns {"macro": {...},
  "micro": {...}, "num_conversations", "num_turns", "turns_skipped", "per_turn": {turn, num_turns,
  hit@max(ks)}, "per_conversation": {conversation_id, hit/recall/mrr/map@max(ks)}} (the macro values
  per conversation, in first-query order: what a paired test between methods resamples).  Raises
  UserInputError when no turn is left to score.
  """
  ks = _check_ks(ks)
  if len(ranked_keys_per_query) != len(queries):
    raise UserInputError(f"{len(ranked_keys_per_query)} rankings for {len(queries)} queries")
  by_conv: dict[str, list[dict]] = collections.defaultdict(list)
  by_turn: dict[int, list[dict]] = collections.defaultdict(list)
  skipped = 0
  for ranked, q in zip(ranked_keys_per_query, queries):
    gold = q.gold - q.seeds
    if not gold:
      skipped += 1
      continue
    m = turn_metrics([key for key in dedup(ranked) if key not in q.seeds], gold, ks)
    by_conv[q.conversation_id].append(m)
    by_turn[q.turn].append(m)
  if not by_conv:
    raise UserInputError(f"no turn to score among {len(queries)} queries: every turn's gold set is empty "
                         "once its seeds are removed")
  names = metric_names(ks)
  turns = [m for ms in by_conv.values() for m in ms]
  micro = {n: float(np.mean([m[n] for m in turns])) for n in names}
  macro = {n: float(np.mean([np.mean([m[n] for m in ms]) for ms in by_conv.values()])) for n in names}
  top = f"hit@{max(ks)}"
  order = sorted(by_turn)
  per_conv = {"conversation_id": list(by_conv)}
  for name in (f"{metric}@{max(ks)}" for metric in ("hit", "recall", "mrr", "map")):
    per_conv[name] = [round(float(np.mean([m[name] for m in ms])), 6) for ms in by_conv.values()]
  return {"macro": macro, "micro": micro, "num_conversations": len(by_conv), "num_turns": len(turns),
          "turns_skipped": skipped,
          "per_turn": {"turn": order, "num_turns": [len(by_turn[t]) for t in order],
                       top: [float(np.mean([m[top] for m in by_turn[t]])) for t in order]},
          "per_conversation": per_conv}


# ----------------------------------------------------------------------------------------------- #
# Ranking catalog rows.


def candidates_needed(queries: Sequence[TurnQuery], k: int) -> int:
  """Catalog rows to ask for so that k keys are left after the seeds go: k + the most seeds of a query."""
  return int(k) + max((len(q.seeds) for q in queries), default=0)


def keys_of_rows(rows: Sequence[int], catalog_keys: Sequence[str]) -> list[str]:
  """Catalog rows (best first, -1 = none) -> their keys, each once (the first row of a key wins)."""
  out = []
  for r in rows:
    r = int(r)
    if r < 0:
      continue
    if r >= len(catalog_keys):
      raise UserInputError(f"a method returned catalog row {r}, outside [0, {len(catalog_keys)})")
    out.append(catalog_keys[r])
  return dedup(out)


def rank_keys(rank_fn: RankFn, queries: Sequence[TurnQuery], catalog_keys: Sequence[str],
              k: int) -> tuple[list[list[str]], dict]:
  """(ranked keys per query, info) from `rank_fn(texts, n) -> int [len(texts), n]` catalog rows.

  Asks for `candidates_needed` rows, then with twice as many (up to the catalog) for the queries whose
  ranking was full but has fewer than k keys once seeds and duplicate keys are dropped.  Queries with an
  empty text are not sent and rank nothing.
  """
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise UserInputError(f"k must be a positive integer, got {k!r}")
  num_rows = len(catalog_keys)
  n = min(candidates_needed(queries, k), num_rows)
  ranked: list[list[str]] = [[] for _ in queries]
  todo = [i for i, q in enumerate(queries) if q.text]
  info = {"candidates": n, "empty_queries": len(queries) - len(todo), "calls": 0}
  t = time.perf_counter()
  while todo:
    rows = np.asarray(rank_fn([queries[i].text for i in todo], n))
    info["calls"] += 1
    if rows.ndim != 2 or rows.shape[0] != len(todo):
      raise UserInputError(f"a method returned rows of shape {rows.shape} for {len(todo)} prompts")
    short = []
    for row, i in zip(rows, todo):
      ranked[i] = keys_of_rows(row, catalog_keys)
      left = sum(key not in queries[i].seeds for key in ranked[i])
      if left < k and n < num_rows and row.size >= n and (row >= 0).all():
        short.append(i)
    if not short:
      break
    todo, n = short, min(2 * n, num_rows)
    info["candidates_max"] = n
  info["rank_seconds"] = round(time.perf_counter() - t, 3)
  return ranked, info


def rank_turns(rank_fn: RankFn, queries: Sequence[TurnQuery], catalog_keys: Sequence[str], k: int, *,
               ks: Sequence[int] | None = None) -> dict[str, Any]:
  """`evaluate_turns` of a method's catalog rankings (`rank_keys`) plus its info (candidates asked for,
  calls, rank_seconds, empty_queries).  ks defaults to those of KS up to k, and k."""
  ks = _check_ks(ks) if ks is not None else tuple(sorted({x for x in KS if x <= k} | {int(k)}))
  if max(ks) > k:
    raise UserInputError(f"ks {ks} go past k={k}")
  ranked, info = rank_keys(rank_fn, queries, catalog_keys, k)
  return {**evaluate_turns(ranked, queries, ks), **info}


def gold_coverage(queries: Sequence[TurnQuery], catalog_keys: Sequence[str]) -> dict[str, int]:
  """How many distinct goal keys of the queried conversations any catalog row has (the rest cannot be
  retrieved: goal tracks the conversations give no metadata for)."""
  gold = {(q.conversation_id, g) for q in queries for g in q.gold}
  known = set(catalog_keys)
  return {"goal_keys": len(gold), "goal_keys_in_catalog": sum(g in known for _, g in gold)}


def aggregate_runs(runs: Sequence[tuple[str, dict]], metrics: Sequence[str] = ("hit@10", "recall@10", "mrr@10",
                                                                               "map@10"), *,
                   paired_metrics: Sequence[str] = PAIRED_METRICS, bootstrap_samples: int = BOOTSTRAP_SAMPLES,
                   bootstrap_seed: int = 0) -> dict:
  """Mean and spread over runs (e.g. training seeds) of `tools/cpcd_turns.py --json` results, and a
  paired bootstrap of every Text2Tracks row against the tuned bi-encoder and the hybrid.

  runs: (label, results dict) pairs with the same protocol and test queries.  Per method present in
  every run: macro and micro metrics and the conversation-level Hits@10 as {"mean", "std" (sample,
  n-1), "min", "max", "values"}, with the run labels in order.

  "paired_bootstrap": per pair (a row whose name starts with "text2tracks", "bi_encoder_tuned" or
  "hybrid", all present in every run) and macro metric in `paired_metrics`: each conversation's macro
  value (its turns' mean, the rows' per_conversation) averaged over the runs, then
  `stats.paired_bootstrap` over the conversations of text2tracks minus baseline: {"delta", "ci" [low,
  high], "ci_level", "p", "n" (conversations), "num_samples", "means" {method: mean over conversations}}.

  Raises UserInputError when the runs were scored on different queries or conversations, or when a run
  has no per-conversation values (a results file of an older tools/cpcd_turns.py).
  """
  if not runs:
    raise UserInputError("no runs to aggregate")
  shapes = {(r["data"].get("test_conversations"), r["data"].get("turn_queries")) for _, r in runs}
  if len(shapes) != 1:
    raise UserInputError(f"runs were scored on different test sets: {sorted(shapes, key=str)}")

  def spread(values):
    values = [float(v) for v in values]
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}

  by_name = [{row["name"]: row for row in r["results"]} for _, r in runs]
  names = [n for n in by_name[0] if all(n in rows for rows in by_name)]
  methods = []
  for name in names:
    rows = [rows[name] for rows in by_name]
    entry = {"name": name, "method": rows[0]["method"],
             "macro": {m: spread(row["macro"][m] for row in rows) for m in metrics},
             "micro": {m: spread(row["micro"][m] for row in rows) for m in metrics}}
    if all("conversation" in row for row in rows):
      entry["conversation_hits@10"] = spread(row["conversation"]["hits@10"] for row in rows)
    methods.append(entry)
  pairs = [(t, b) for t in names if t.startswith(TEXT2TRACKS_PREFIX) for b in PAIRED_BASELINES if b in names]
  paired = []
  if pairs:
    ids, per_conv = _seed_averaged_per_conversation(runs, sorted({n for pair in pairs for n in pair}),
                                                    paired_metrics)
    for t2t, baseline in pairs:
      entry = {"text2tracks": t2t, "baseline": baseline,
               "resampling": (f"{len(ids)} conversations, each one's macro value (mean over its turns) "
                              f"averaged over the {len(runs)} runs")}
      for m in paired_metrics:
        a, b = per_conv[t2t][m], per_conv[baseline][m]
        bt = stats.paired_bootstrap(a, b, num_samples=bootstrap_samples, seed=bootstrap_seed)
        entry[m] = {"delta": round(bt["mean_diff"], 4), "ci": [round(bt["low"], 4), round(bt["high"], 4)],
                    "ci_level": bt["ci"], "p": round(bt["p_value"], 4), "n": bt["num_queries"],
                    "num_samples": bt["num_samples"],
                    "means": {t2t: round(float(np.mean(a)), 4), baseline: round(float(np.mean(b)), 4)}}
      paired.append(entry)
  return {"runs": [label for label, _ in runs], "num_runs": len(runs),
          "test_conversations": runs[0][1]["data"].get("test_conversations"),
          "turn_queries": runs[0][1]["data"].get("turn_queries"), "methods": methods,
          "paired_bootstrap": paired}


def _seed_averaged_per_conversation(runs: Sequence[tuple[str, dict]], names: Sequence[str],
                                    metrics: Sequence[str]) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
  """(conversation ids in the first run's order, {method: {metric: float [C] averaged over runs}}).

  Each run's rows follow its data.conversation_ids; runs are aligned by id.  Raises UserInputError when
  a run lacks them, scored another set of conversations, or a row's values do not match its ids.
  """
  first_label, first = runs[0]
  ids0 = None
  sums: dict[str, dict[str, np.ndarray]] = {}
  for label, r in runs:
    ids = r["data"].get("conversation_ids")
    rows = {row["name"]: row for row in r["results"]}
    if not ids or any("per_conversation" not in rows[n] for n in names):
      raise UserInputError(f"{label}: no per-conversation values (data.conversation_ids and each row's "
                           "per_conversation; a results file of an older tools/cpcd_turns.py): re-run it "
                           "with the current code for a paired test")
    if len(set(ids)) != len(ids):
      raise UserInputError(f"{label}: data.conversation_ids lists a conversation twice")
    if ids0 is None:
      ids0 = list(ids)
    elif set(ids) != set(ids0):
      only_here, only_first = sorted(set(ids) - set(ids0)), sorted(set(ids0) - set(ids))
      raise UserInputError(
          f"{label} scored other conversations than {first_label} ({len(ids)} vs {len(ids0)}; "
          f"{len(only_here)} only in {label}{', e.g. ' + repr(only_here[0]) if only_here else ''}, "
          f"{len(only_first)} only in {first_label}{', e.g. ' + repr(only_first[0]) if only_first else ''}): "
          "a paired test over seeds needs the same conversations in every run")
    position = {c: i for i, c in enumerate(ids)}
    order = [position[c] for c in ids0]
    for n in names:
      per = rows[n]["per_conversation"]
      for m in metrics:
        values = per.get(m)
        if values is None or len(values) != len(ids):
          raise UserInputError(f"{label}: row {n!r} has {'no' if values is None else len(values)} "
                               f"per-conversation {m} values for {len(ids)} conversations")
        sums.setdefault(n, {}).setdefault(m, np.zeros(len(ids0)))
        sums[n][m] += np.asarray(values, np.float64)[order]
  return ids0, {n: {m: v / len(runs) for m, v in ms.items()} for n, ms in sums.items()}
