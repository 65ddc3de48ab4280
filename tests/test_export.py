"""`t2t export` (t2t_jax/serving/export.py) and its standalone runtime (t2t_jax/export_runtime.py)."""

import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest

from t2t_jax import cli, export_runtime, io_utils
from t2t_jax.serving import export, retriever
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.errors import UserInputError

from test_recommend import PROMPTS, build_model_dir  # pylint: disable=g-bad-import-order

K = 5
FORBIDDEN = ("flax", "optax", "orbax", "tensorflow", "seqio", "t2t_jax.models", "t2t_jax.decoding",
             "t2t_jax.data", "t2t_jax.serving.recommend", "t2t_jax.training.trainer")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  model_dir = build_model_dir(str(root))
  out = str(root / "export")
  assert cli.main(["export", "--model_dir", model_dir, "--out", out, "-k", str(K)]) == 0
  return model_dir, out


@pytest.fixture(scope="module")
def rec(dirs):
  return retriever.GenerativeRetriever.from_model_dir(dirs[0])


@pytest.fixture(scope="module")
def want(rec):
  """In-process answers for PROMPTS[:3] (padded batch 4)."""
  return rec.recommend_rows(PROMPTS[:3], k=K)


def test_layout_and_manifest(dirs, rec):
  _, out = dirs
  names = sorted(os.listdir(out))
  assert names == [".t2t_output.json", "arrays.safetensors", "export_runtime.py", "hf", "ids", "manifest.json",
                   "recommend.jaxexport", "spm.model", "tracks.jsonl"]
  m = json.load(open(os.path.join(out, "manifest.json"), encoding="utf-8"))
  assert (m["format"], m["format_version"], m["top_k"], m["beam_size"]) == ("t2t_jax.export", 2, K, 6)
  assert m["beam_scoring"] == "log_prob" and m["lexical_prior"] == {"weight": 0.0, "in_function": False}
  assert sorted(m["sha256"]) == sorted(m["file_bytes"]) and "arrays.safetensors" in m["sha256"]
  assert m["sha256"]["spm.model"] == hashlib.sha256(open(os.path.join(out, "spm.model"), "rb").read()).hexdigest()
  assert m["platforms"] == ["cpu", "cuda"] and m["inputs_length"] == 16 and m["max_decode_len"] == 3
  assert m["vocab"]["vocab_size"] == rec.vocab.vocab_size and m["vocab"]["id_level_sizes"] == [6, 6, 4]
  assert m["num_tracks"] == rec.id_table.num_tracks == 96
  assert m["file_bytes"]["recommend.jaxexport"] == os.path.getsize(os.path.join(out, "recommend.jaxexport"))
  # Batch-polymorphic: the token argument's batch dimension is symbolic.
  exp = jax.export.deserialize(bytearray(open(os.path.join(out, "recommend.jaxexport"), "rb").read()))
  tok = exp.in_avals[-1]
  assert jax.export.is_symbolic_dim(tok.shape[0]) and tok.shape[1] == 16
  assert [a.shape[1] for a in exp.out_avals] == [K, K]
  tracks = [json.loads(l) for l in open(os.path.join(out, "tracks.jsonl"), encoding="utf-8")]
  assert [t["track_id"] for t in tracks] == rec.id_table.track_ids
  assert not [n for n in os.listdir(os.path.dirname(out)) if n.endswith(".tmp")]
  # One mode for every file (safetensors wrote arrays.safetensors 0600 among 0644 files).
  modes = {stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) for d, _, ns in os.walk(out) for n in ns}
  assert modes == {io_utils.file_mode()}


def test_try_hint_is_shell_quoted():
  out = "/tmp/my exports/it's"
  assert shlex.split(export.try_command(out)) == ["python", f"{out}/export_runtime.py", out,
                                                  "old classics for slow dancing"]


def test_runtime_matches_in_process_recommender(dirs, rec, want):
  rt = export_runtime.load(dirs[1])
  np.testing.assert_array_equal(rt.encode(PROMPTS[:3]), rec.encode(PROMPTS[:3]))
  rows, scores = rt.recommend_rows(PROMPTS[:3])
  np.testing.assert_array_equal(rows, want[0])
  np.testing.assert_allclose(scores, want[1], rtol=1e-5, atol=1e-5)
  # Another batch size runs the same exported module (symbolic batch): 1 prompt.
  rows1, _ = rt.recommend_rows(PROMPTS[1])
  np.testing.assert_array_equal(rows1[0], want[0][1])
  # Smaller k is a prefix; the dict view names the catalog tracks.
  recs = rt.recommend(PROMPTS[:3], k=2)
  assert [[r["track_id"] for r in rs] for rs in recs] == [
      [rec.id_table.track_ids[int(i)] for i in r[:2]] for r in want[0]]
  assert recs[0][0]["rank"] == 1 and recs[0][0]["title"] == rec.tracks[recs[0][0]["track_id"]].title
  with pytest.raises(UserInputError, match=r"k must be an integer in \[1, 5\]"):
    rt.recommend(PROMPTS[:1], k=K + 1)
  with pytest.raises(UserInputError, match="prompt #1: empty prompt"):
    rt.recommend(["  "])


def test_standalone_runtime_in_a_clean_subprocess(dirs, want, tmp_path):
  """The copy inside the export dir runs with numpy/jax/sentencepiece only: no flax, optax, orbax, TF."""
  _, out = dirs
  code = (
      "import json, sys\n"
      f"sys.path.insert(0, {out!r})\n"
      "import export_runtime\n"
      f"rec = export_runtime.load({out!r})\n"
      f"rows, scores = rec.recommend_rows({PROMPTS[:3]!r})\n"
      f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.startswith({FORBIDDEN!r}))\n"
      "print(json.dumps({'rows': rows.tolist(), 'scores': scores.tolist(), 'bad': bad,"
      " 'file': export_runtime.__file__}))\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="")
  res = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=600, check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  got = json.loads(res.stdout.strip().splitlines()[-1])
  assert got["bad"] == [], got["bad"]
  assert os.path.dirname(got["file"]) == out
  np.testing.assert_array_equal(np.asarray(got["rows"]), want[0])
  np.testing.assert_allclose(np.asarray(got["scores"]), want[1], rtol=1e-5, atol=1e-5)


def test_runtime_normalisation_and_tokens_match_the_package(dirs, rec):
  rt = export_runtime.load(dirs[1])
  texts = ["  Café\u00a0del  Mar\t", "ﬁne ＦＵＬＬ width", "a\u200bb\u200dc", "x" * 600,
           ("word " * 200).strip(), "mix <id_0_3> tokens", "\U0001F3B7 jazz\n\nnight"]
  assert prompts_lib.normalize_prompt is export_runtime.normalize_prompt  # one home (issue 22)
  assert prompts_lib.normalize_text is export_runtime.normalize_text
  np.testing.assert_array_equal(rt.encode(texts), rec.encode(texts))
  for bad in ("", " \u200b\t", None):
    with pytest.raises(UserInputError):
      export_runtime.normalize_prompt(bad)


def test_runtime_refuses_a_lone_surrogate_like_the_package():
  """Issue 23: a prompt that is a lone surrogate (a "\\ud800" JSON escape) said "empty prompt"."""
  for normalize in (export_runtime.normalize_prompt, prompts_lib.normalize_prompt):
    with pytest.raises(UserInputError, match=r"prompt is not valid text: lone surrogate '\\ud800' at position 0"):
      normalize("\ud800")
    with pytest.raises(UserInputError, match="at position 5"):
      normalize("rock \udce9")


def test_safetensors_files(dirs, rec):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  _, out = dirs
  arrays = load_file(os.path.join(out, "arrays.safetensors"))
  ours = export_runtime.read_safetensors(os.path.join(out, "arrays.safetensors"))
  assert sorted(arrays) == sorted(ours)
  for name, a in arrays.items():
    assert ours[name].dtype == a.dtype and np.array_equal(ours[name], a), name
  flat = export.flatten_params(rec.params)
  assert set(ours) == {"params/" + n for n in flat} | {"index/child_start", "index/token", "index/terminal_row"}
  np.testing.assert_array_equal(ours["index/token"], np.asarray(rec.index.token))
  # Hugging Face T5 naming: [out, in] kernels, [buckets, heads] relative position tables.
  hf = load_file(os.path.join(out, "hf", "model.safetensors"))
  cfg = json.load(open(os.path.join(out, "hf", "config.json"), encoding="utf-8"))
  assert (cfg["model_type"], cfg["feed_forward_proj"], cfg["d_model"], cfg["num_layers"]) == ("t5", "gated-gelu", 32, 2)
  np.testing.assert_array_equal(hf["shared.weight"], flat["token_embedder/embedding"])
  np.testing.assert_array_equal(hf["lm_head.weight"], flat["decoder/logits_dense/kernel"].T)
  np.testing.assert_array_equal(hf["decoder.block.1.layer.1.EncDecAttention.k.weight"],
                                flat["decoder/layers_1/encoder_decoder_attention/key/kernel"].T)
  np.testing.assert_array_equal(hf["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
                                flat["encoder/relpos_bias/rel_embedding"].T)
  n_hf = sum(a.size for a in hf.values())
  assert n_hf == sum(a.size for a in flat.values())  # every weight exactly once
  # ... and it reads back into the same tree.
  from t2t_jax.models import hf_convert  # pylint: disable=g-import-not-at-top
  back = export.flatten_params(hf_convert.load_hf_t5(os.path.join(out, "hf"), rec.model.config))
  assert sorted(back) == sorted(flat)
  for name, a in flat.items():
    np.testing.assert_array_equal(back[name], a, err_msg=name)


def test_bad_export_inputs_leave_nothing_behind(dirs, tmp_path, capsys):
  model_dir, out = dirs
  before = sorted(os.listdir(out))
  assert cli.main(["export", "--model_dir", model_dir, "--out", out, "-k", "0"]) == 2
  assert "-k must be" in capsys.readouterr().err
  assert cli.main(["export", "--model_dir", model_dir, "--out", out, "--platforms", "gpu"]) == 2
  assert "--platforms" in capsys.readouterr().err
  assert cli.main(["export", "--model_dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
  assert "nope" in capsys.readouterr().err
  assert sorted(os.listdir(out)) == before and not os.path.exists(tmp_path / "o")
  assert not [n for n in os.listdir(os.path.dirname(out)) if n.endswith(".tmp")]
  with pytest.raises(UserInputError, match="not a t2t export dir"):
    export_runtime.load(str(tmp_path))


# ---- integrity: a damaged export fails at load with one line, exit 2 (never wrong tracks) -----------


def _copy(out, tmp_path) -> str:
  d = str(tmp_path / "copy")
  shutil.copytree(out, d)
  return d


def _rehash(d) -> None:
  """Makes the manifest agree with the files again (a malformed file that passes the hash check)."""
  path = os.path.join(d, "manifest.json")
  m = json.load(open(path, encoding="utf-8"))
  for name in m["sha256"]:
    data = open(os.path.join(d, name), "rb").read()
    m["sha256"][name], m["file_bytes"][name] = hashlib.sha256(data).hexdigest(), len(data)
  json.dump(m, open(path, "w", encoding="utf-8"))


def _rewrite_arrays(d, change) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = os.path.join(d, "arrays.safetensors")
  arrays = {k: np.array(v) for k, v in export_runtime.read_safetensors(path).items()}
  change(arrays)
  save_file(arrays, path, metadata={"format": "t2t_jax.export"})
  _rehash(d)


def _flip_weight_byte(d):
  """Flips one bit in the middle of the token embedding (a silent wrong-answer corruption)."""
  path = os.path.join(d, "arrays.safetensors")
  data = bytearray(open(path, "rb").read())
  n = int.from_bytes(data[:8], "little")
  begin, end = json.loads(data[8:8 + n])["params/token_embedder/embedding"]["data_offsets"]
  data[8 + n + (begin + end) // 2] ^= 0x40
  open(path, "wb").write(bytes(data))


def _shift_rows(a):
  a["index/terminal_row"] = np.concatenate([a["index/terminal_row"][1:], [-1]]).astype(np.int32)


def _one_row_five_times(a):
  t = a["index/terminal_row"]
  t[np.flatnonzero(t >= 0)[:5]] = t[t >= 0][0]


def _child_start_out_of_range(a):
  a["index/child_start"][3] = 10**6


def _drop_a_weight(a):
  del a[sorted(k for k in a if k.startswith("params/"))[0]]


DAMAGES = {
    "flipped weight": (_flip_weight_byte, "arrays.safetensors: sha256 differs from the manifest"),
    "truncated tracks": (lambda d: open(os.path.join(d, "tracks.jsonl"), "r+b").truncate(10),
                         r"tracks.jsonl: 10 bytes, the manifest says \d+"),
    "missing vocabulary": (lambda d: os.remove(os.path.join(d, "spm.model")), "spm.model: missing"),
    "garbage manifest": (lambda d: open(os.path.join(d, "manifest.json"), "w").write("{"),
                         "manifest.json: unreadable"),
    "shifted trie rows": (lambda d: _rewrite_arrays(d, _shift_rows),
                          r"arrays.safetensors: trie: (leaf node \d+ ends no row|row \d+ ends at 0 nodes)"),
    "one row five times": (lambda d: _rewrite_arrays(d, _one_row_five_times), r"trie: row \d+ ends at 5 nodes"),
    "child_start out of range": (lambda d: _rewrite_arrays(d, _child_start_out_of_range),
                                 "trie: child_start decreases"),
    "missing weight": (lambda d: _rewrite_arrays(d, _drop_a_weight),
                       "arrays do not match the exported function"),
    "truncated function": (lambda d: (open(os.path.join(d, "recommend.jaxexport"), "r+b").truncate(50), _rehash(d)),
                           "recommend.jaxexport: not a jax.export serialization"),
    "tracks file short": (lambda d: (open(os.path.join(d, "tracks.jsonl"), "w").write('{"track_id": "t"}\n'),
                                     _rehash(d)), "tracks.jsonl: 1 tracks, the manifest says 96"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_export_fails_with_one_line_exit_2(dirs, tmp_path, capsys, damage):
  d = _copy(dirs[1], tmp_path)
  corrupt, message = DAMAGES[damage]
  corrupt(d)
  assert export_runtime.main([d, "late night drive"]) == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("export_runtime: error: "), captured.err
  assert re.search(message, err[0]), err[0]
  assert captured.out == ""


def test_unverified_load_skips_only_the_hashes(dirs, tmp_path):
  d = _copy(dirs[1], tmp_path)
  _flip_weight_byte(d)
  export_runtime.load(d, verify=False)  # structure still checked; the hash is not
  with pytest.raises(UserInputError, match="sha256 differs"):
    export_runtime.load(d)


def test_runtime_holds_the_one_trie_check(rec):
  """decoding.index validates with the runtime's validate_index_arrays (issue 22: no copy to drift);
  it accepts the exported trie and rejects each corruption of it."""
  from t2t_jax.decoding import index as index_lib  # pylint: disable=g-import-not-at-top
  from test_index import _corruptions  # pylint: disable=g-import-not-at-top
  assert index_lib.validate_index_arrays is export_runtime.validate_index_arrays
  ix = rec.index
  kw = dict(num_rows=ix.num_rows, vocab_size=ix.vocab_size, max_depth=ix.max_depth)
  export_runtime.validate_index_arrays(ix.child_start, ix.token, ix.terminal_row, **kw)
  corruptions = _corruptions(ix)
  for _, cs, tok, term in corruptions:
    with pytest.raises(UserInputError, match="^trie: "):
      export_runtime.validate_index_arrays(cs, tok, term, **kw)
  assert len(corruptions) == 12


def test_export_refuses_outputs_that_would_destroy_data(dirs, tmp_path, capsys):
  model_dir, _ = dirs
  before = sorted(os.listdir(model_dir))
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  afile = tmp_path / "afile"
  afile.write_text("keep me too")
  cases = [(model_dir, "(it is it)"), (os.path.join(model_dir, "checkpoints"), "(it lies inside it)"),
           (os.path.dirname(model_dir), "(it contains it)"), (str(afile), "exists and is not a folder (a file)"),
           (str(mine), "not a t2t output (no .t2t_output.json)")]
  for out, message in cases:
    assert cli.main(["export", "--model_dir", model_dir, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], (out, err)
  assert sorted(os.listdir(model_dir)) == before
  assert (mine / "notes.txt").read_text() == "keep me" and afile.read_text() == "keep me too"
  assert sorted(os.listdir(tmp_path)) == ["afile", "mine"]
