"""The bad-input corpus (tests/data/bad, manifest.json): every broken input raises a UserInputError
naming its file and record, or is skipped and counted under on_error="skip", and no run leaves
partial output (no dataset dir, no temporaries) behind.  Through `t2t import` the same inputs end
with one line `t2t: error: ...` and exit status 2.  Real-data quirks (a track listed twice in a
playlist, playlists without prompt text) are accepted and counted instead."""

import json
import os
import re

import pytest

from t2t_jax import cli
from t2t_jax.data import convert, mpd
from t2t_jax.errors import UserInputError

HERE = os.path.dirname(__file__)
BAD = os.path.join(HERE, "data", "bad")
CPCD = os.path.join(HERE, "data", "cpcd")
GOOD = os.path.join(HERE, "data", "good")
with open(os.path.join(BAD, "manifest.json"), encoding="utf-8") as f:
  MANIFEST = json.load(f)
ERRORS = [e for e in MANIFEST if e["error"]]
ACCEPTED = [e for e in MANIFEST if not e["error"]]


def _run(entry, out, on_error):
  path = os.path.join(BAD, entry["file"])
  kind = entry["kind"]
  kw = dict(on_error=on_error, vocab_size=None)  # the vocabulary is not what these inputs test
  if kind == "catalog":
    return convert.import_dataset(path, os.path.join(GOOD, "playlists.jsonl"), out, **kw)
  if kind == "playlists":
    return convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), path, out, **kw)
  if kind == "splits":
    return convert.import_dataset(os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl"),
                                  out, splits_path=path, **kw)
  if kind == "mpd":
    return mpd.convert_mpd(path, out, **kw)
  raise AssertionError(kind)


def _argv(entry, out):
  path = os.path.join(BAD, entry["file"])
  kind = entry["kind"]
  good_cat, good_pl = os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl")
  if kind == "catalog":
    fmt = {".csv": "csv", ".parquet": "parquet"}.get(os.path.splitext(path)[1], "jsonl")
    return ["import", fmt, path, good_pl, "--out", out]
  if kind == "playlists":
    return ["import", "jsonl", good_cat, path, "--out", out]
  if kind == "splits":
    return ["import", "jsonl", good_cat, good_pl, "--splits", path, "--out", out]
  return ["import", "mpd", path, "--out", out]


def _stats(entry, meta):
  stats = meta["read_stats"]
  if entry["kind"] == "mpd":
    return stats
  return stats["catalog" if entry["kind"] == "catalog" else "playlists"]


def test_corpus_size():
  assert len(ERRORS) >= 55 and len(ACCEPTED) >= 3
  assert sorted(e["file"] for e in MANIFEST) == sorted(f for f in os.listdir(BAD) if f != "manifest.json")


@pytest.mark.parametrize("entry", ERRORS, ids=[e["file"] for e in ERRORS])
def test_bad_input_raises_and_leaves_nothing(entry, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(UserInputError) as info:
    _run(entry, out, "raise")
  assert re.search(entry["error"], str(info.value)), str(info.value)
  assert entry["file"] in str(info.value)
  assert "\n" not in str(info.value)
  assert os.listdir(tmp_path) == []  # no dataset dir, no temporaries


@pytest.mark.parametrize("entry", ERRORS, ids=[e["file"] for e in ERRORS])
def test_bad_input_skip_mode(entry, tmp_path):
  out = tmp_path / "out"
  if entry["skip"] == "raises":
    with pytest.raises(UserInputError, match=entry["error"]):
      _run(entry, out, "skip")
    assert os.listdir(tmp_path) == []
    return
  meta = _run(entry, out, "skip")
  assert sorted(os.listdir(tmp_path)) == ["out"]
  stats = _stats(entry, meta)
  skipped = stats["playlists_skipped" if entry["kind"] == "mpd" else "skipped"]
  assert skipped == entry["skip"]
  if skipped:
    pattern = entry.get("skip_error", entry["error"])
    assert re.search(pattern, stats["messages"][0]), stats["messages"][0]
  for key, value in entry.get("counts", {}).items():
    assert stats[key] == value, key


@pytest.mark.parametrize("entry", ACCEPTED, ids=[e["file"] for e in ACCEPTED])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_real_data_quirks_are_accepted_and_counted(entry, on_error, tmp_path):
  meta = _run(entry, tmp_path / "out", on_error)
  stats = _stats(entry, meta)
  for key, value in entry["accept"].items():
    assert stats[key] == value, key
  assert meta["num_playlists"] == entry["num_playlists"]


@pytest.mark.parametrize("entry", ERRORS, ids=[e["file"] for e in ERRORS])
def test_cli_rejects_at_the_door(entry, tmp_path, capsys):
  out = str(tmp_path / "out")
  assert cli.main(_argv(entry, out)) == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("t2t: error: "), captured.err
  assert re.search(entry["error"], err[0]) and entry["file"] in err[0]
  assert captured.out == "" and os.listdir(tmp_path) == []


def test_cli_folder_symlink_loop_and_missing(tmp_path, capsys):
  good_cat, good_pl = os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl")
  (tmp_path / "in").mkdir()
  folder = tmp_path / "in" / "catalog.jsonl"
  folder.mkdir()
  loop = tmp_path / "in" / "loop.jsonl"
  os.symlink(loop, loop)
  cases = [(["jsonl", str(folder), good_pl], "catalog.jsonl: is a folder, expected a catalog file"),
           (["csv", str(folder), good_pl], "catalog.jsonl: is a folder"),
           (["jsonl", good_cat, str(loop)], "loop.jsonl: unreadable symbolic link"),
           (["jsonl", good_cat, str(tmp_path / "nope.jsonl")], "nope.jsonl: no such file"),
           (["mpd", str(loop)], "loop.jsonl: unreadable symbolic link"),
           (["cpcd", str(folder / "x")], "not a folder")]
  for args, needle in cases:
    out = tmp_path / "out"
    assert cli.main(["import", *args, "--out", str(out)]) == 2, args
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], (args, err)
    assert not out.exists()


def _cpcd_copy(folder, line, user_queries):
  """tests/data/cpcd copied into `folder`, the train file's conversation at `line` given these user turns."""
  folder.mkdir()
  for name in (n for n in os.listdir(CPCD) if n.endswith(".jsonl")):
    with open(os.path.join(CPCD, name), encoding="utf-8") as f:
      rows = [json.loads(l) for l in f]
    if name.endswith(".train.jsonl"):
      for turn, query in zip(rows[line - 1]["turns"], user_queries):
        turn["user_query"] = query
      cid = rows[line - 1]["id"]
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return cid


@pytest.mark.parametrize("queries, needle", [
    (["x " * 15000], r"cpcd_v1\.dialogs\.dev\.train\.jsonl:3: field 'turns\[0\]\.user_query' is 30000 characters "
                     r"long \(limit 20000\)$"),
    ([("word " * 1000).strip()] * 5, r"playlist '{cid}': field 'title' is 24999 characters long \(limit 20000\)$"),
], ids=["one_huge_turn", "turns_too_long_together"])
def test_cli_cpcd_overlong_prompt_names_the_conversation(tmp_path, capsys, queries, needle):
  """Issue 23: a 5 MB user turn was reported at a line of the deleted temporary playlists.jsonl."""
  cid = _cpcd_copy(tmp_path / "cpcd", 3, queries)
  out = tmp_path / "out"
  assert cli.main(["import", "cpcd", str(tmp_path / "cpcd"), "--out", str(out), "--vocab_size", "0",
                   "--num_folds", "2"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(needle.format(cid=cid), err[0]) and ".t2t-tmp" not in err[0], err
  assert sorted(os.listdir(tmp_path)) == ["cpcd"]


def test_cli_refuses_to_replace_what_it_did_not_write(tmp_path, capsys):
  good = [os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl")]
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  assert cli.main(["import", "jsonl", *good, "--out", str(mine), "--vocab_size", "0"]) == 2
  assert "not a t2t output" in capsys.readouterr().err and (mine / "notes.txt").exists()
  # The input's own folder is never an output.
  assert cli.main(["import", "jsonl", *good, "--out", GOOD, "--overwrite", "--vocab_size", "0"]) == 2
  assert "overlaps the input" in capsys.readouterr().err
  out = tmp_path / "ds"
  assert cli.main(["import", "jsonl", *good, "--out", str(out), "--vocab_size", "0"]) == 0
  assert cli.main(["import", "jsonl", *good, "--out", str(out), "--vocab_size", "0", "--seed", "1"]) == 0  # its own
  assert cli.main(["import", "jsonl", *good, "--out", str(mine), "--vocab_size", "0", "--overwrite"]) == 0
  assert not (mine / "notes.txt").exists()


@pytest.mark.parametrize("bad", ["t\n1", "t\r1", "t\u20281", "t\u20291", "t\x851", "t\x0b1", "t\x0c1", "t\x1c1", "t1 "])
def test_id_table_refuses_ids_that_would_not_reload(bad, tmp_path):
  """Issue 14: such ids used to pass IdTable.save and then fail IdTable.load ("3 code rows but 4
  track ids", str.splitlines splitting them); the shared id rule now refuses them up front."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from t2t_jax.ids.table import IdTable  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserInputError, match=r"track id at position 1 (contains|has leading)"):
    IdTable("integer", ["t0", bad, "t2"], np.zeros((3, 1), np.int32), level_sizes=(4,))
  odd = ["t0", "Ärtist – Sóng (live) ♫", "a b", "x" * 512]
  IdTable("integer", odd, np.arange(4, dtype=np.int32)[:, None], level_sizes=(4,)).save(tmp_path / "ids")
  assert IdTable.load(tmp_path / "ids").track_ids == odd


def test_output_that_is_a_file(tmp_path, capsys):
  (tmp_path / "ds").write_text("a file")
  good = [os.path.join(GOOD, "catalog.jsonl"), os.path.join(GOOD, "playlists.jsonl")]
  assert cli.main(["import", "jsonl", *good, "--out", str(tmp_path / "ds"), "--overwrite"]) == 2
  assert "exists and is not a folder" in capsys.readouterr().err
  assert (tmp_path / "ds").read_text() == "a file"
