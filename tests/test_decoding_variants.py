"""t2t_jax/studies/decoding_variants.py, decoding_variants_run.py and tools/decoding_variants.py: artist
entropy, valid-ID share, misses at their rank, the penalty-0 sweep row = the constrained row, the tool
end to end."""

import json
import math
import os
import sys

import numpy as np
import pytest

from t2t_jax.studies import decoding_variants as dv
from t2t_jax.studies import decoding_variants_run as dv_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import decoding_variants as tool  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from test_recommend import build_model_dir  # noqa: E402  pylint: disable=g-bad-import-order

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- pure helpers ----------------------------------------------------------------------------- #


def test_artist_entropy_exact_values():
  artist = [f"a{i}" for i in range(10)] + ["same"] * 10  # rows 0..9: 10 artists; 10..19: one
  distinct_K = np.arange(10)[None]
  same_K = np.arange(10, 20)[None]
  assert dv.artist_entropy(same_K, artist) == 0.0
  assert dv.artist_entropy(distinct_K, artist) == pytest.approx(math.log2(10))
  # p = (1/4, 1/2, 1/4) -> 1.5 bits; two artists 2 + 2 -> 1 bit; mean over prompts; k truncates.
  assert dv.artist_entropy(np.array([[0, 10, 1, 11]]), artist) == pytest.approx(1.5)
  assert dv.artist_entropy(np.array([[0, 1, 10, 11]]), ["x", "x", "y", "y"] * 5) == pytest.approx(1.0)
  both = np.concatenate([distinct_K, same_K])
  assert dv.artist_entropy(both, artist) == pytest.approx(math.log2(10) / 2)
  assert dv.artist_entropy(distinct_K, artist, k=2) == pytest.approx(1.0)
  # Invalid slots and repeats are dropped; a prompt without valid rows is left out of the mean.
  assert dv.artist_entropy(np.array([[0, 0, -1, 1], [-1, -1, -1, -1]]), artist) == pytest.approx(1.0)
  assert math.isnan(dv.artist_entropy(np.full((2, 3), -1), artist))
  assert dv.distinct_artists(both, artist) == pytest.approx(5.5)


def test_valid_share_on_a_hand_made_table_and_generations():
  from t2t_jax.decoding import index as index_lib  # pylint: disable=g-import-not-at-top
  from t2t_jax.ids.table import IdTable  # pylint: disable=g-import-not-at-top
  table = IdTable(strategy="semantic_rq", track_ids=["a", "b", "c", "d"],
                  codes=np.array([[0, 0], [0, 1], [1, 2], [2, 2]]), level_sizes=(3, 3), is_text=False,
                  meta={})
  offset, eos = 10, 1  # ID tokens: level 0 -> 10..12, level 1 -> 13..15
  index = index_lib.build_table_index(table, offset, 16)
  gens = [[10, 13, eos], [10, 14, 0], [11, 15, eos], [12, 15, eos],  # the four IDs
          [10, eos, 0],        # stops inside an ID
          [eos, 0, 0],         # empty
          [10, 15, eos],       # unknown (0, 2)
          [13, 13, eos],       # level-1 token first
          [12, 15, 13]]        # runs past a complete ID
  rows = dv.rows_of_sequences(index, gens)
  np.testing.assert_array_equal(rows, [0, 1, 2, 3, -1, -1, -1, -1, -1])
  # Two prompts x 3 outputs; one slot never produced (score -inf), one repeat.
  rows_NxK = np.array([[rows[0], rows[4], rows[0]], [rows[6], rows[2], -1]])
  scores_NxK = np.array([[-1.0, -2.0, -3.0], [-1.0, -2.0, -np.inf]])
  stats = dv.valid_id_stats(rows_NxK, scores_NxK)
  assert stats == {"valid_id_share": pytest.approx(3 / 5), "top1_valid_share": 0.5,
                   "duplicate_share": pytest.approx(1 / 5), "num_outputs": 5}
  # Invalid and repeated outputs are misses at their rank (plain metrics would close the gaps).
  m = dv.ranking_row(rows_NxK, [[0], [2]], num_rows=4, ks=(1, 3))
  assert m["hits@1"] == 0.5 and m["hits@3"] == 1.0
  assert m["mrr"] == pytest.approx((1 + 0.5) / 2) and m["map@3"] == pytest.approx((1 + 0.5) / 2)
  np.testing.assert_array_equal(dv.slot_rows(rows_NxK, 4), [[0, 5, 6], [4, 2, 6]])


# ---- decoding on a tiny model dir -------------------------------------------------------------- #


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("dv"))
  return root, build_model_dir(root, train_steps=0)  # initialised weights: code paths, not quality


def _run_tool(root, model_dir, out, penalties="0,2", extra=()):
  rc = tool.main(["--model_dir", model_dir, "--dataset_dir", os.path.join(root, "data"),
                  "--split", "train", "--max_prompts", "8", "--penalties", penalties, "--k", "4",
                  "--beam_size", "4", "--group_size", "4", "--out", out, *extra])
  assert rc == 0
  with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
    return out, json.load(f)


@pytest.fixture(scope="module")
def tool_run(model, tmp_path_factory):
  root, model_dir = model
  return _run_tool(root, model_dir, str(tmp_path_factory.mktemp("dvout") / "res"))


def _check_rows(out, rows, penalties=(0.0, 2.0)):
  assert [(r["decoding"], r["diversity_penalty"]) for r in rows] == [
      ("constrained", 0.0), ("unconstrained", 0.0)] + [("grouped (diverse)", p) for p in penalties]
  for r in rows:
    for key in ("hits@4", "map@4", "valid_id_share", "top1_valid_share", "artist_entropy@4",
                "distinct_artists@4", "num_groups", "beam_size", "num_queries"):
      assert key in r, (r["decoding"], key)
    assert r["num_queries"] == 8 and 0.0 <= r["valid_id_share"] <= 1.0
    # None only when no output is a real ID; at most log2(4) bits.
    assert (r["artist_entropy@4"] is None) == (r["valid_id_share"] == 0.0)
    assert r["artist_entropy@4"] is None or 0.0 <= r["artist_entropy@4"] <= 2.0 + 1e-9
  ref, free, zero, two = rows[:4]
  assert ref["valid_id_share"] == 1.0 and zero["valid_id_share"] == 1.0 and ref["duplicate_share"] == 0
  assert free["max_decode_len"] == 4  # 3-token IDs + EOS
  # Penalty 0 with 2 groups of the reference width is the constrained reference row.
  for key in ("hits@1", "hits@4", "map@4", "ndcg@4", "mrr", "artist_entropy@4", "distinct_artists@4"):
    assert zero[key] == pytest.approx(ref[key]), key
  assert (zero["num_groups"], zero["beam_size"], two["num_groups"], two["beam_size"]) == (2, 8, 2, 8)
  with open(os.path.join(out, "fig3.png"), "rb") as f:
    assert f.read(8) == PNG_MAGIC
  md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
  assert "| unconstrained |" in md and "bits" in md
  assert sorted(os.listdir(out)) == [".t2t_output.json", "fig3.png", "results.csv", "results.json",
                                     "results.md"]


@pytest.mark.entry
def test_tool_rows_and_figure(tool_run):
  _check_rows(*tool_run)


def _common(model):
  """diversity_sweep / *_row keyword arguments for the tiny model dir's first 8 train playlists."""
  from t2t_jax.serving import retriever  # pylint: disable=g-import-not-at-top
  root, model_dir = model
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=4)
  prompts, relevant, _, ds = dv_run.load_prompts(rec, os.path.join(root, "data"), "train", 8)
  return dict(retriever=rec, inputs=rec.encode(prompts), relevant=relevant,
              artist_of_N=dv_run.artists_of_table(rec, ds))


def test_unconstrained_sweep_with_one_group_is_the_unconstrained_row(model):
  common = _common(model)
  free = dv.unconstrained_row(beam_size=4, k=4, **common)
  sweep = dv.diversity_sweep(beam_size=4, k=4, penalties=(0.0,), num_groups=1, constrained=False,
                             **common)
  assert len(sweep) == 1
  row = sweep[0]
  assert (row["decoding"], row["decoder"], row["beam_size"], row["max_decode_len"]) == (
      "grouped (diverse) unconstrained", "unconstrained", 4, 4)  # 3-token IDs + EOS
  assert free["decoder"] == "unconstrained"
  # The valid-ID share fields of `unconstrained_row`, with its values (one group = plain search).
  for key in ("valid_id_share", "top1_valid_share", "duplicate_share", "num_outputs", "hits@1",
              "hits@4", "map@4", "ndcg@4", "mrr", "artist_entropy@4", "distinct_artists@4"):
    assert row[key] == free[key], key
  assert row["num_outputs"] == 8 * 4  # free search always finishes K sequences per prompt


def test_plot_sweep_draws_both_decoders(tmp_path, monkeypatch):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from t2t_jax import report  # pylint: disable=g-import-not-at-top
  rows = [{"decoder": dec, "num_groups": 2, "diversity_penalty": p, "hits@4": h,
           "artist_entropy@4": e}
          for dec, h0, e0 in (("constrained", 0.5, 1.0), ("unconstrained", 0.3, None))
          for p, h, e in ((0.0, h0, e0), (1.0, h0 - 0.1, e0 and e0 + 0.5))]
  figs = []
  monkeypatch.setattr(report, "save_figure", lambda fig, path, dpi=80: figs.append(fig))
  dv.plot_sweep(rows, tmp_path / "both.png", k=4)
  dv.plot_sweep(rows[:2], tmp_path / "constrained.png", k=4)  # the default: labels unchanged
  both, only = figs
  lines = both.axes[0].get_lines() + both.axes[1].get_lines()
  assert [(l.get_label(), l.get_linestyle()) for l in lines] == [
      ("Hits@4 (constrained)", "-"), ("Hits@4 (unconstrained)", ":"),
      ("artist entropy@4 (bits) (constrained)", "--"),
      ("artist entropy@4 (bits) (unconstrained)", ":")]
  assert list(lines[1].get_ydata()) == [0.3, 0.3 - 0.1]
  assert [l.get_label() for l in only.axes[0].get_lines() + only.axes[1].get_lines()] == [
      "Hits@4", "artist entropy@4 (bits)"]
  plt.close("all")


@pytest.mark.entry
def test_tool_unconstrained_sweep_flag(model, tmp_path):
  root, model_dir = model
  out, rows = _run_tool(root, model_dir, str(tmp_path / "res"), penalties="1",
                        extra=("--unconstrained_sweep",))
  assert [(r["decoding"], r["decoder"], r["diversity_penalty"]) for r in rows] == [
      ("constrained", "constrained", 0.0), ("unconstrained", "unconstrained", 0.0),
      ("grouped (diverse)", "constrained", 1.0),
      ("grouped (diverse) unconstrained", "unconstrained", 1.0)]
  free_sweep = rows[3]
  assert (free_sweep["num_groups"], free_sweep["beam_size"]) == (2, 8)
  assert free_sweep["max_decode_len"] == 4
  assert 0.0 <= free_sweep["valid_id_share"] <= 1.0 and free_sweep["num_outputs"] == 8 * 4
  assert (free_sweep["artist_entropy@4"] is None) == (free_sweep["valid_id_share"] == 0.0)
  assert rows[2]["valid_id_share"] == 1.0
  with open(os.path.join(out, "fig3.png"), "rb") as f:
    assert f.read(8) == PNG_MAGIC
  md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
  assert "| grouped (diverse) unconstrained |" in md and '"unconstrained_sweep": true' in md


@pytest.mark.entry
def test_reference_row_is_what_recommend_serves(tool_run, model):
  """The constrained row's numbers equal `t2t recommend`'s decoder on the same prompts."""
  from t2t_jax import evaluation  # pylint: disable=g-import-not-at-top
  from t2t_jax.serving import retriever  # pylint: disable=g-import-not-at-top
  root, model_dir = model
  rec = retriever.GenerativeRetriever.from_model_dir(model_dir, beam_size=4)
  prompts, relevant, _, _ = dv_run.load_prompts(rec, os.path.join(root, "data"), "train", 8)
  served, _ = rec.recommend_rows(prompts, k=4)
  want = evaluation.evaluate_rankings(served, relevant, (1, 4))
  ref = tool_run[1][0]
  for key in ("hits@1", "hits@4", "map@4", "ndcg@4", "mrr"):
    assert ref[key] == pytest.approx(want[key]), key


@pytest.mark.slow
@pytest.mark.entry
def test_tool_on_a_trained_model(tmp_path):
  """A micro T5 trained for a few steps (prompt -> first track's ID): the same rows, and the
  unconstrained decoder now emits real IDs."""
  root = str(tmp_path)
  model_dir = build_model_dir(root, train_steps=60)
  out, rows = _run_tool(root, model_dir, str(tmp_path / "res"), penalties="0,1,4")
  _check_rows(out, rows, (0.0, 1.0, 4.0))
  free = rows[1]
  assert 0.0 < free["valid_id_share"] < 1.0 and free["top1_valid_share"] > 0.0  # 0.66 / 1.0 when written
  assert free["artist_entropy@4"] is not None


@pytest.mark.entry
def test_tool_bad_flags_are_one_line(tool_run, model, tmp_path, capsys):
  out, _ = tool_run
  root, model_dir = model
  base = ["--model_dir", model_dir, "--dataset_dir", os.path.join(root, "data")]
  cases = [(base + ["--penalties", "0,x", "--out", str(tmp_path / "o")], "--penalties"),
           (base + ["--penalties", "-1", "--out", str(tmp_path / "o")], "--penalties"),
           (base + ["--k", "0", "--out", str(tmp_path / "o")], "--k"),
           (["--model_dir", model_dir, "--out", str(tmp_path / "o")], "--dataset_dir"),
           (base + ["--out", model_dir], "overlaps"),
           (base + ["--out", os.path.join(root, "data")], "overlaps")]
  other = tmp_path / "other"
  other.mkdir()
  (other / "keep.txt").write_text("x")
  cases.append((base + ["--out", str(other)], str(other)))
  for argv, needle in cases:
    assert tool.main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], (argv, err)
  assert (other / "keep.txt").read_text() == "x" and not (tmp_path / "o").exists()
  # A previous results dir of this tool may be replaced (checked, not rerun here).
  from t2t_jax import io_utils  # pylint: disable=g-import-not-at-top
  io_utils.check_output_dir(out, kind=dv_run.OUTPUT_KIND)
