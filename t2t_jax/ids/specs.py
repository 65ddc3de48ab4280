"""Named ID-strategy specs (the rows of a comparison) and the one way to build a table from one.

  IdSpec                          (name, strategy, kwargs): e.g. IdSpec("integer_random", "integer",
                                  {"order": "random"})
  parse_id_specs                  IdSpecs from gin-friendly tuples, checked
  build_table                     a spec's IdTable over a catalog: `strategies.build_ids` (the single
                                  strategy dispatch) + the `last_level_order` option
  check_embeddings                refuse semantic specs whose `embeddings` a study cannot provide

Semantic specs may name the track embeddings they quantise: kwargs["embeddings"] (default "cf"):
  "cf"          collaborative filtering: normalised co-occurrence SVD of the training playlists, cold
                tracks placed by artist / text (`ids.catalog.catalog_embeddings`);
  "encoder"     the tracks' metadata through the study's fine-tuned sentence encoder (the nested
                study's tuned bi-encoder, per training seed: `studies.fair_study`), i.e. the space the
                warm-started Text2Tracks encoder reads prompts in;
  "encoder+cf"  both, each L2-normalised, concatenated (`fused_embeddings`).
  order_last_level_by_popularity  re-number the last level of semantic IDs by training popularity
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from t2t_jax.errors import UserInputError
from t2t_jax.ids import strategies
from t2t_jax.ids.table import IdTable


# Deterministic strategies (no `seed` argument).
UNSEEDED = ("content", "artist_iid_track_seq")
EMBEDDINGS = ("cf", "encoder", "encoder+cf")


@dataclasses.dataclass(frozen=True)
class IdSpec:
  """One ID strategy of a comparison: a name (table dir, task, row label), a `build_ids` strategy
  and its keyword arguments."""
  name: str
  strategy: str
  kwargs: dict = dataclasses.field(default_factory=dict)

  @property
  def family(self) -> str:
    return self.strategy.split("_")[0]

  @property
  def embeddings(self) -> str | None:
    """The track embeddings a semantic spec quantises (module doc); None for the other strategies."""
    return self.kwargs.get("embeddings", "cf") if self.family == "semantic" else None

  @property
  def embedding_sources(self) -> tuple[str, ...]:
    """The parts of `embeddings` ("encoder+cf" -> ("encoder", "cf")); () for non-semantic specs."""
    return tuple(self.embeddings.split("+")) if self.embeddings else ()


def parse_id_specs(specs: Sequence) -> list[IdSpec]:
  """IdSpecs from gin-friendly values: IdSpec, (name, strategy, kwargs) or (name, strategy)."""
  out = []
  for s in specs:
    if not isinstance(s, IdSpec):
      if not isinstance(s, (tuple, list)) or len(s) not in (2, 3):
        raise UserInputError(f"ID spec {s!r}: expected (name, strategy[, kwargs])")
      s = IdSpec(str(s[0]), str(s[1]), dict(s[2]) if len(s) == 3 else {})
    if s.strategy not in strategies.STRATEGIES:
      raise UserInputError(f"ID spec {s.name!r}: unknown strategy {s.strategy!r}; choose one of "
                           f"{strategies.STRATEGIES}")
    if "embeddings" in s.kwargs and (s.family != "semantic" or s.kwargs["embeddings"] not in EMBEDDINGS):
      raise UserInputError(f"ID spec {s.name!r}: embeddings={s.kwargs['embeddings']!r} needs a semantic strategy "
                           f"and one of {EMBEDDINGS}")
    if not s.name or not all(c.isalnum() or c == "_" for c in s.name):
      raise UserInputError(f"ID spec name {s.name!r}: use letters, digits and '_' only")
    out.append(s)
  names = [s.name for s in out]
  if len(set(names)) != len(names):
    raise UserInputError(f"ID spec names must be unique, got {names}")
  if not out:
    raise UserInputError("no ID strategies given")
  return out


def check_embeddings(specs: Sequence[IdSpec], available: Sequence[str], where: str) -> None:
  """UserInputError naming the first semantic spec whose `embeddings` `where` cannot provide."""
  for s in specs:
    if s.embeddings is not None and s.embeddings not in available:
      raise UserInputError(f"ID spec {s.name!r}: embeddings={s.embeddings!r} is not available in {where} "
                           f"(it provides {tuple(available)}; 'encoder' IDs need the nested protocol's "
                           "tuned bi-encoder: compare_ids.protocol = 'nested')")


def fused_embeddings(*parts_NxD: np.ndarray) -> np.ndarray:
  """float32 [N, sum D]: each part L2-normalised per row, concatenated, divided by sqrt(#parts) so
  rows have unit norm and each part weighs the same in every distance."""
  out = [np.asarray(p, np.float32) / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts_NxD]
  return np.concatenate(out, axis=1) / np.float32(np.sqrt(len(out)))


def order_last_level_by_popularity(table: IdTable, counts_N: np.ndarray) -> IdTable:
  """Re-numbers the last ID level inside every prefix group by training popularity (code 0 = the
  group's most popular track; ties by row), keeping IDs unique and every code within its level size.

  Semantic IDs end with a level that only tells apart the tracks of one prefix group (the
  disambiguation level, or the leaf level of hierarchical k-means); its codes carry no meaning of
  their own (distance order).  Popularity order gives the same code the same meaning in every group
  ("the most popular track here"), which a generative model learns once for all groups.
  """
  codes_NxL = table.codes.copy()
  if table.is_text or codes_NxL.shape[1] < 2:
    raise UserInputError(f"last_level_order='popularity' needs an ID of >= 2 fixed levels "
                         f"({table.strategy})")
  n = codes_NxL.shape[0]
  prefix_N = np.unique(codes_NxL[:, :-1], axis=0, return_inverse=True)[1].reshape(-1)
  order = np.lexsort((np.arange(n), -np.asarray(counts_N, np.int64), prefix_N))
  sorted_prefix = prefix_N[order]
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_prefix)) + 1]
  codes_NxL[order, -1] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
  meta = dict(table.meta, last_level_order="popularity")
  return IdTable(strategy=table.strategy, track_ids=table.track_ids, codes=codes_NxL,
                 level_sizes=table.level_sizes, is_text=False, meta=meta)


def build_table(spec: IdSpec, *, track_ids: Sequence[str], artists: Sequence[str] | None = None,
                titles: Sequence[str] | None = None,
                encode_fn: Callable[[str], Sequence[int]] | None = None, embeddings_NxD=None,
                popularity_N: np.ndarray | None = None, seed: int = 0,
                embedding_info: dict | None = None) -> IdTable:
  """`spec`'s IdTable over a catalog (rows in `track_ids` order).

  Every input goes to `strategies.build_ids`, which picks what its strategy needs (`popularity_N`
  orders the artist strategies' artists and tracks); `seed` is the default seed of the seeded
  strategies.  `spec.kwargs["last_level_order"] == "popularity"` re-numbers the last level by
  `popularity_N` (training counts per row).  `embedding_info` (`ids.catalog.catalog_embeddings`'
  info) goes to the table's meta and stats.json.
  """
  kwargs = dict(spec.kwargs)
  kwargs.pop("embeddings", None)  # which embeddings_NxD the caller passes (module doc)
  last_level_order = kwargs.pop("last_level_order", None)
  if last_level_order not in (None, "default", "popularity"):
    raise UserInputError(f"ID spec {spec.name!r}: last_level_order must be 'default' or "
                         f"'popularity', got {last_level_order!r}")
  if spec.strategy not in UNSEEDED:
    kwargs.setdefault("seed", seed)
  table = strategies.build_ids(spec.strategy, track_ids=list(track_ids), embeddings=embeddings_NxD,
                               artists=artists, titles=titles, encode_fn=encode_fn,
                               embedding_info=embedding_info, popularity=popularity_N, **kwargs)
  if last_level_order == "popularity":
    if popularity_N is None:
      raise UserInputError(f"ID spec {spec.name!r}: last_level_order='popularity' needs training "
                           "popularity")
    table = order_last_level_by_popularity(table, popularity_N)
  return table
