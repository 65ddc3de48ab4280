"""`t2t export` (t2t_jax/export.py) and its standalone runtime (t2t_jax/export_runtime.py)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from t2t_jax import cli, export, export_runtime, recommend
from t2t_jax.data import prompts as prompts_lib
from t2t_jax.errors import UserInputError

from test_recommend import PROMPTS, build_model_dir  # pylint: disable=g-bad-import-order

K = 5
FORBIDDEN = ("flax", "optax", "orbax", "tensorflow", "seqio", "t2t_jax.models", "t2t_jax.decoding",
             "t2t_jax.data", "t2t_jax.recommend", "t2t_jax.trainer")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  model_dir = build_model_dir(str(root))
  out = str(root / "export")
  assert cli.main(["export", "--model_dir", model_dir, "--out", out, "-k", str(K)]) == 0
  return model_dir, out


@pytest.fixture(scope="module")
def rec(dirs):
  return recommend.Recommender.load(dirs[0])


@pytest.fixture(scope="module")
def want(rec):
  """In-process answers for PROMPTS[:3] (padded batch 4)."""
  return rec.recommend_rows(PROMPTS[:3], k=K)


def test_layout_and_manifest(dirs, rec):
  _, out = dirs
  names = sorted(os.listdir(out))
  assert names == ["arrays.safetensors", "export_runtime.py", "hf", "ids", "manifest.json",
                   "recommend.jaxexport", "spm.model", "tracks.jsonl"]
  m = json.load(open(os.path.join(out, "manifest.json"), encoding="utf-8"))
  assert (m["format"], m["format_version"], m["top_k"], m["beam_size"]) == ("t2t_jax.export", 1, K, 6)
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
  for t in texts:
    assert export_runtime.normalize_prompt(t) == prompts_lib.normalize_prompt(t), t
  np.testing.assert_array_equal(rt.encode(texts), rec.encode(texts))
  for bad in ("", " \u200b\t", None):
    with pytest.raises(UserInputError):
      export_runtime.normalize_prompt(bad)


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
  from t2t_jax import hf_convert  # pylint: disable=g-import-not-at-top
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
