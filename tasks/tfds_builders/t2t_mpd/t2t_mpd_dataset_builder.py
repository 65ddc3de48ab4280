"""t2t_mpd: the Spotify Million Playlist Dataset as Text2Tracks playlists (manual download).

  tfds build tasks/tfds_builders/t2t_mpd --manual_dir=/path/to/mpd/data --data_dir=/tmp/tfds
The slices are converted with t2t_jax.data.mpd.convert_mpd (validation, repeats dropped, splits
by playlist, deterministic in the seed) and then written as TFDS records.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from t2t_jax.data import mpd
from t2t_jax.errors import UserInputError
from tasks.tfds_builders import common


@dataclasses.dataclass
class MpdBuilderConfig(tfds.core.BuilderConfig):
  seed: int = 0
  validation_fraction: float = 0.01
  test_fraction: float = 0.01
  on_error: str = "raise"


class Builder(tfds.core.GeneratorBasedBuilder):
  """Spotify MPD playlists with their tracks."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download spotify_million_playlist_dataset.zip from AIcrowd
  (https://www.aicrowd.com/challenges/spotify-million-playlist-dataset-challenge), unzip it and pass
  its data/ folder (the one holding mpd.slice.0-999.json ... mpd.slice.999000-999999.json) as
  --manual_dir.  Any subset of slices works.
  """
  BUILDER_CONFIGS = [
      MpdBuilderConfig(name="default", description="1% validation, 1% test playlists, strict."),
      MpdBuilderConfig(name="lenient", description="As default; malformed playlists skipped and counted.",
                       on_error="skip"),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.features(), supervised_keys=None,
        homepage="https://www.aicrowd.com/challenges/spotify-million-playlist-dataset-challenge",
        description="Spotify Million Playlist Dataset playlists (name, description, tracks).")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise UserInputError(f"--manual_dir {manual_dir} does not exist; {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    cfg = self.builder_config
    out = common.work_dir(dl_manager, f"t2t_mpd_{cfg.name}_seed{cfg.seed}")
    mpd.convert_mpd(manual_dir, out, seed=cfg.seed, validation_fraction=cfg.validation_fraction,
                    test_fraction=cfg.test_fraction, on_error=cfg.on_error)
    return common.split_generators(out, self._generate_examples)

  def _generate_examples(self, dataset_dir: str, split: str):
    yield from common.generate_examples(dataset_dir, split)
