"""The paper's decoding variants as result rows (issue 13 part 6; Text2Tracks, "Model, training,
decoding" and Figure 3).

  constrained_row    trie-constrained beam search (what `t2t recommend` serves): the reference row
  unconstrained_row  plain beam search over the whole output vocabulary; each generated sequence is
                     mapped back to a catalog row when it spells a real ID, else it is invalid
                     (`valid_id_share`, the paper's "about 80% of generated IDs were valid")
  diversity_sweep    grouped (diverse) beam search at several diversity penalties, constrained
                     (default) or unconstrained as in the paper: Hits@10 and the artist entropy of
                     the top 10 (the paper's Figure 3)
  plot_sweep         that figure (Hits@10 and artist entropy vs penalty; constrained and
                     unconstrained sweeps as solid and dotted lines), written atomically

Conventions shared by every row:
  * Ranked lists keep their slots: an invalid output (-1), or a repeat of a row ranked higher for the
    same prompt, is a miss at its rank (`slot_rows`), so an unconstrained list is scored exactly as a
    user would see it.  For constrained rows (distinct, valid outputs) this is the same number as
    `evaluation.evaluate_rankings`.
  * Artist entropy is the Shannon entropy in bits (log base 2) of the artist distribution of the
    distinct valid tracks in a prompt's top k, averaged over prompts with at least one valid track:
    0 when all are by one artist, log2(10) = 3.32 for 10 tracks by 10 artists.
  * By default the sweep's groups are each as wide as the reference beam (beam_size * num_groups
    beams in all), so its constrained penalty-0 row is the reference row: without a penalty every
    group follows the same paths and duplicate finishes merge
    (tests/test_beam_search.py::test_grouped_beam_search_diversity).  The unconstrained sweep (the
    paper's setting) merges repeated catalog rows too, but a non-ID sequence that several groups
    generate keeps one (missed) slot per copy, so its penalty-0 row is not `unconstrained_row`.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Hashable, Sequence

import numpy as np

from t2t_jax import evaluation, report
from t2t_jax.errors import UserInputError

DEFAULT_PENALTIES = (0.0, 0.5, 1.0, 2.0, 4.0)
KS = (1, 5, 10)


# ----------------------------------------------------------------------------------------------- #
# Pure helpers (numpy).


def slot_rows(rows_NxK: np.ndarray, num_rows: int) -> np.ndarray:
  """Rows where every slot that is not a new catalog row (-1, or a repeat within the prompt's list)
  becomes a distinct placeholder >= num_rows, so ranking metrics count it as a miss at its rank."""
  rows_NxK = np.asarray(rows_NxK, np.int64)
  out_NxK = rows_NxK.copy()
  for i, r_K in enumerate(rows_NxK):
    seen = set()
    for j, r in enumerate(r_K.tolist()):
      if r < 0 or r in seen:
        out_NxK[i, j] = num_rows + j
      else:
        seen.add(r)
  return out_NxK


def valid_id_stats(rows_NxK: np.ndarray, scores_NxK: np.ndarray | None = None) -> dict:
  """Validity of generated outputs: the beam search marks a sequence that is no catalog ID with row
  -1; slots with score -inf were never produced (fewer than K sequences) and are not counted.

  Returns valid_id_share (valid / produced outputs), top1_valid_share (prompts whose best output is
  valid), duplicate_share (produced outputs repeating a row ranked higher for the same prompt),
  num_outputs (produced).
  """
  rows_NxK = np.asarray(rows_NxK, np.int64)
  produced_NxK = (np.ones(rows_NxK.shape, bool) if scores_NxK is None
                  else np.isfinite(np.asarray(scores_NxK, np.float64)))
  valid_NxK = produced_NxK & (rows_NxK >= 0)
  dup = 0
  for r_K, v_K in zip(rows_NxK, valid_NxK):
    kept = r_K[v_K]
    dup += len(kept) - len(set(kept.tolist()))
  produced = int(produced_NxK.sum())
  return {"valid_id_share": float(valid_NxK.sum() / max(produced, 1)),
          "top1_valid_share": float(valid_NxK[:, 0].mean()) if len(rows_NxK) else 0.0,
          "duplicate_share": float(dup / max(produced, 1)), "num_outputs": produced}


def _artists_per_prompt(rows_NxK, artist_of_N: Sequence[Hashable], k: int | None):
  for r_K in np.asarray(rows_NxK, np.int64):
    seen, artists = set(), []
    for r in r_K[:k].tolist():
      if r >= 0 and r not in seen:
        seen.add(r)
        artists.append(artist_of_N[r])
    yield artists


def _entropy_bits(items: Sequence[Hashable]) -> float:
  counts = np.asarray(list(collections.Counter(items).values()), np.float64)
  p = counts / counts.sum()
  return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0


def artist_entropy(rows_NxK: np.ndarray, artist_of_N: Sequence[Hashable], k: int | None = None) -> float:
  """Mean Shannon entropy in bits (log2) of the artist distribution of each prompt's top k.

  Per prompt: the distinct valid rows (row >= 0, first occurrence) among the first k slots (all
  slots when k is None); p(a) = share of them by artist a; H = -sum p(a) log2 p(a).  Averaged over
  prompts with at least one valid row (nan when none has one).
  """
  per_prompt = [_entropy_bits(a) for a in _artists_per_prompt(rows_NxK, artist_of_N, k) if a]
  return float(np.mean(per_prompt)) if per_prompt else math.nan


def distinct_artists(rows_NxK: np.ndarray, artist_of_N: Sequence[Hashable], k: int | None = None) -> float:
  """Mean number of distinct artists among each prompt's top k valid rows (prompts with none: 0)."""
  counts = [len(set(a)) for a in _artists_per_prompt(rows_NxK, artist_of_N, k)]
  return float(np.mean(counts)) if counts else 0.0


def ranking_row(rows_NxK: np.ndarray, relevant: Sequence[Sequence[int]], *, num_rows: int,
                artist_of_N: Sequence[Hashable] | None = None, ks: Sequence[int] = KS) -> dict:
  """Hits/MAP/NDCG@K for K in `ks` up to the list length K' and at K' (+ artist_entropy@K' and
  distinct_artists@K' when artists are given) of ranked table rows, invalid and repeated slots
  counted as misses at their rank."""
  rows_NxK = np.asarray(rows_NxK)
  k = rows_NxK.shape[1]
  ks = tuple(sorted({x for x in ks if x <= k} | {k}))  # always @K of the whole list
  m = evaluation.evaluate_rankings(slot_rows(rows_NxK, num_rows), relevant, ks)
  out = {key: v for key, v in m.items() if key != "per_query"}
  if artist_of_N is not None:
    ent = artist_entropy(rows_NxK, artist_of_N, k)
    out[f"artist_entropy@{k}"] = None if math.isnan(ent) else ent
    out[f"distinct_artists@{k}"] = distinct_artists(rows_NxK, artist_of_N, k)
  return out


# ----------------------------------------------------------------------------------------------- #
# Decoding rows (through the trained retriever, `GenerativeRetriever.rank_inputs`).


def _check(beam_size: int, k: int, relevant, inputs) -> None:
  if beam_size < 1 or k < 1:
    raise UserInputError(f"beam_size ({beam_size}) and k ({k}) must be positive")
  if len(relevant) != len(inputs) or not len(inputs):
    raise UserInputError(f"{len(inputs)} prompts but {len(relevant)} relevant sets (need >= 1 each)")


def constrained_row(retriever, inputs, relevant, beam_size: int, k: int, *, artist_of_N=None,
                    batch_size: int = 32) -> dict:
  """The reference row: trie-constrained beam search of width max(beam_size, k), as served.

  `retriever`: the trained model's `GenerativeRetriever` (its decoder, trie and ID table)."""
  _check(beam_size, k, relevant, inputs)
  beam = max(beam_size, k)
  table = retriever.id_table
  rows_NxK, scores_NxK = retriever.rank_inputs(inputs, k, beam_size=beam, batch_size=batch_size)
  return {"decoding": "constrained", "decoder": "constrained", "beam_size": beam, "num_groups": 1,
          "diversity_penalty": 0.0, **valid_id_stats(rows_NxK, scores_NxK),
          **ranking_row(rows_NxK, relevant, num_rows=table.num_tracks, artist_of_N=artist_of_N)}


def _free_max_len(table, max_decode_len: int | None) -> int:
  """Unconstrained decoding's length limit: default the longest ID + EOS (the targets' length)."""
  return int(max_decode_len or int(table.lengths.max()) + 1)


def unconstrained_row(retriever, inputs, relevant, beam_size: int, k: int, *, artist_of_N=None,
                      max_decode_len: int | None = None, batch_size: int = 32) -> dict:
  """Plain beam search (any token at every step), the paper's default decoder.

  A sequence ends at EOS or after `max_decode_len` tokens (default: the longest ID + EOS, the
  training targets' length, so the model itself decides where an ID stops) and is mapped to the
  table row whose ID it spells (-1: not an ID).  Reports `valid_id_stats` and the ranking metrics
  with invalid and repeated outputs as misses at their rank.
  """
  _check(beam_size, k, relevant, inputs)
  beam = max(beam_size, k)
  table = retriever.id_table
  max_len = _free_max_len(table, max_decode_len)
  rows_NxK, scores_NxK = retriever.rank_inputs(inputs, k, beam_size=beam, constrained=False,
                                               max_decode_len=max_len, batch_size=batch_size)
  return {"decoding": "unconstrained", "decoder": "unconstrained", "beam_size": beam,
          "num_groups": 1, "diversity_penalty": 0.0, "max_decode_len": max_len,
          **valid_id_stats(rows_NxK, scores_NxK),
          **ranking_row(rows_NxK, relevant, num_rows=table.num_tracks, artist_of_N=artist_of_N)}


def diversity_sweep(retriever, inputs, relevant, *, beam_size: int, k: int, artist_of_N, penalties: Sequence[float] = DEFAULT_PENALTIES,
                    num_groups: int = 2, batch_size: int = 32, group_size: int | None = None,
                    constrained: bool = True, max_decode_len: int | None = None) -> list[dict]:
  """Grouped (diverse) beam search, one row per diversity penalty.

  `num_groups` groups of `group_size` beams each (None: max(beam_size, k), so constrained penalty 0
  reproduces `constrained_row`; but then the first group alone can fill the top k and the penalty
  changes little: the paper's setting is k beams in all, group_size = k // num_groups);
  a group's candidates lose `penalty` per earlier group's beam that chose the same token at that
  step.

  Args:
    constrained: True searches the catalog trie (every output an ID); False decodes freely, the
      paper's setting: sequences end at EOS or after `max_decode_len` tokens (default, as in
      `unconstrained_row`: the longest ID + EOS) and those that spell no ID are misses.

  Returns:
    Rows: decoding ("grouped (diverse)", plus " unconstrained" for free decoding), decoder
    ("constrained" / "unconstrained"), diversity_penalty, num_groups, beam_size (total),
    `valid_id_stats` (valid_id_share is 1 when constrained), hits/map/ndcg@K, artist_entropy@k,
    distinct_artists@k; unconstrained rows also max_decode_len.
  """
  _check(beam_size, k, relevant, inputs)
  if num_groups < 1:
    raise UserInputError(f"num_groups must be >= 1, got {num_groups}")
  try:
    penalties = [float(p) for p in penalties]
  except (TypeError, ValueError):
    raise UserInputError(f"diversity penalties must be numbers, got {list(penalties)}") from None
  if not penalties or not all(math.isfinite(p) and p >= 0 for p in penalties):
    raise UserInputError(f"diversity penalties must be finite and >= 0, got {penalties}")
  if group_size is not None and group_size < 1:
    raise UserInputError(f"group_size must be >= 1, got {group_size}")
  table = retriever.id_table
  beam = (group_size or max(beam_size, k)) * num_groups
  decoder = "constrained" if constrained else "unconstrained"
  free = {} if constrained else {"max_decode_len": _free_max_len(table, max_decode_len)}
  out = []
  for penalty in penalties:
    rows_NxK, scores_NxK = retriever.rank_inputs(inputs, k, beam_size=beam, constrained=constrained,
                                                 num_groups=num_groups,
                                                 diversity_penalty=float(penalty),
                                                 batch_size=batch_size, **free)
    out.append({"decoding": "grouped (diverse)" + ("" if constrained else " unconstrained"),
                "decoder": decoder, "beam_size": beam, "num_groups": num_groups,
                "diversity_penalty": float(penalty), **free, **valid_id_stats(rows_NxK, scores_NxK),
                **ranking_row(rows_NxK, relevant, num_rows=table.num_tracks,
                              artist_of_N=artist_of_N)})
  return out


# ----------------------------------------------------------------------------------------------- #
# Figure 3.


def plot_sweep(rows: Sequence[dict], path: str | os.PathLike, *, k: int = 10) -> None:
  """Hits@k (left axis) and artist entropy of the top k (right axis) vs diversity penalty, like the
  paper's Figure 3; PNG written atomically (temp file + rename).

  Rows of both decoders (`diversity_sweep(constrained=...)`, key "decoder", constrained when
  absent) are drawn as solid / dashed (constrained) and dotted (unconstrained) lines, the legend
  naming the decoder when both are present.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = sorted(rows, key=lambda r: r["diversity_penalty"])
  if not rows:
    raise UserInputError("plot_sweep: no sweep rows")
  decoder_of = lambda r: r.get("decoder", "constrained")
  decoders = [d for d in ("constrained", "unconstrained") if any(decoder_of(r) == d for r in rows)]
  styles = {"constrained": ("o-", "s--"), "unconstrained": ("^:", "v:")}
  fig, ax = plt.subplots(figsize=(5.2, 3.4))
  ax2 = ax.twinx()
  all_hits = []
  for dec in decoders:
    part = [r for r in rows if decoder_of(r) == dec]
    suffix = f" ({dec})" if len(decoders) > 1 or dec != "constrained" else ""
    x = [r["diversity_penalty"] for r in part]
    hits = [r.get(f"hits@{k}") for r in part]
    ent = [r.get(f"artist_entropy@{k}") for r in part]
    ent = [math.nan if e is None else e for e in ent]
    all_hits += hits
    ax.plot(x, hits, styles[dec][0], color="tab:blue", label=f"Hits@{k}{suffix}")
    ax2.plot(x, ent, styles[dec][1], color="tab:orange", label=f"artist entropy@{k} (bits){suffix}")
  ax.set_xlabel("diversity penalty")
  ax.set_ylabel(f"Hits@{k}", color="tab:blue")
  ax2.set_ylabel(f"artist entropy of top {k} (bits)", color="tab:orange")
  top = max([h for h in all_hits if h is not None] + [0.0])
  ax.set_ylim(0.0, min(1.05, top * 1.3) if top > 0 else 1.0)  # from 0; entropy up to log2(k) bits
  ax2.set_ylim(0.0, math.log2(max(k, 2)) * 1.05)
  groups = sorted({r.get("num_groups") for r in rows})
  ax.set_title(f"Grouped beam search ({', '.join(map(str, groups))} groups)", fontsize=10)
  lines = ax.get_lines() + ax2.get_lines()
  ax.legend(lines, [l.get_label() for l in lines], fontsize=8 if len(decoders) == 1 else 7,
            loc="lower right")
  report.save_figure(fig, os.fspath(path))


def rows_of_sequences(index, seqs_NxL: np.ndarray) -> np.ndarray:
  """int32 [N]: the table row each generated token sequence spells, -1 when it is no ID.

  A sequence ends at its first EOS or PAD (0); the EOS is part of the ID only when the catalog's
  rows are EOS-terminated (text IDs).  Walks the trie with the lookups free beam search uses
  (`ConstraintIndex.child` / `row_of`), so it agrees with `beam_search(..., constrained=False)`;
  for sequences generated elsewhere (e.g. a Hugging Face `generate`).
  """
  seqs_NxL = np.asarray(seqs_NxL, np.int32)
  node_N = np.zeros(seqs_NxL.shape[0], np.int32)
  open_N = np.ones(seqs_NxL.shape[0], bool)
  for j in range(seqs_NxL.shape[1]):
    tok_N = seqs_NxL[:, j]
    stop_N = open_N & ((tok_N == index.eos_id) | (tok_N == 0))
    step_N = open_N & ~stop_N | (stop_N & (tok_N == index.eos_id) & index.eos_terminated)
    child_N = np.asarray(index.child(node_N, tok_N))
    node_N = np.where(step_N, child_N, node_N)
    open_N &= ~stop_N
  return np.asarray(index.row_of(node_N), np.int32)
