"""Tests for the TFDS builders in tasks/tfds_builders (synthetic tiny config, MPD on the fixture slices)."""

import json
import os
import subprocess
import sys

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from t2t_jax.data import formats, mpd, synthetic  # noqa: E402
from tasks.tfds_builders.t2t_mpd import t2t_mpd_dataset_builder as mpd_builder  # noqa: E402
from tasks.tfds_builders.t2t_synthetic import t2t_synthetic_dataset_builder as syn_builder  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPD_DIR = os.path.join(REPO, "tests", "data", "mpd")


def _examples(builder, split):
  return {ex["playlist_id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_synthetic_builder_matches_generator(tmp_path):
  builder = syn_builder.Builder(config="tiny", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 180, "validation": 10, "test": 10}
  ref_dir = tmp_path / "ref"
  synthetic.generate(builder.builder_config.synthetic, ref_dir)
  ref = formats.Dataset.load(ref_dir)
  got = _examples(builder, "validation")
  assert sorted(got) == sorted(ref.split_ids("validation"))
  for p in ref.playlists("validation"):
    ex = got[p.playlist_id]
    assert ex["title"].decode() == p.title and ex["description"].decode() == p.description
    assert [t.decode() for t in ex["tracks"]["track_id"]] == list(p.track_ids)
    first = ref.tracks[ref.track_row[p.track_ids[0]]]
    assert ex["tracks"]["artist"][0].decode() == first.artist
    assert json.loads(ex["intent"].decode()) == p.intent


def test_mpd_builder(tmp_path):
  builder = mpd_builder.Builder(config="default", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=MPD_DIR))
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert sum(splits.values()) == 5 and splits["train"] >= 3
  everything = {}
  for split in ("train", "validation", "test"):
    everything.update(_examples(builder, split))
  ref = {p.playlist_id: (p, tracks) for p, tracks in mpd.read_mpd(MPD_DIR)}
  assert sorted(everything) == sorted(ref)
  ex = everything["1"]
  assert ex["title"].decode() == "chill jazz 🎷" and ex["description"].decode() == "late night jazz"
  assert [t.decode() for t in ex["tracks"]["title"]] == [t.title for t in ref["1"][1]]
  assert ex["intent"].decode() == ""


def test_mpd_builder_missing_manual_dir(tmp_path):
  builder = mpd_builder.Builder(data_dir=str(tmp_path / "tfds"))
  with pytest.raises(Exception, match="manual"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "none")))


def test_tfds_build_cli(tmp_path):
  """`tfds build` itself (the CLI imports apache_beam and mlcroissant; skipped without them: .ci/run
  installs the `beam` extra). 14 s on the 2-core VM at load ~3."""
  pytest.importorskip("apache_beam")
  pytest.importorskip("mlcroissant")
  env = dict(os.environ, PYTHONPATH=REPO)
  cli = [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build"]
  subprocess.run(cli + ["tasks/tfds_builders/t2t_synthetic", "--config=tiny", f"--data_dir={tmp_path}"],
                 cwd=REPO, env=env, check=True, capture_output=True)
  subprocess.run(cli + ["tasks/tfds_builders/t2t_mpd", f"--manual_dir={MPD_DIR}", f"--data_dir={tmp_path}"],
                 cwd=REPO, env=env, check=True, capture_output=True)
  for name, config in (("t2t_synthetic", "tiny"), ("t2t_mpd", "default")):
    files = os.listdir(tmp_path / name / config / "1.0.0")
    assert "dataset_info.json" in files and any(f.endswith("-train.tfrecord-00000-of-00001") for f in files)
