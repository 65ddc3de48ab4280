"""t2t_synthetic: playlists drawn from latent intents (t2t_jax.data.synthetic), as a TFDS dataset.

  tfds build tasks/tfds_builders/t2t_synthetic --config=tiny --data_dir=/tmp/tfds
Configs: `tiny` (300 tracks, 200 playlists; for tests) and `quickstart` (the SyntheticConfig
defaults: 3,000 tracks, 5,000 playlists).  Deterministic: the same config gives the same dataset.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from t2t_jax.data import synthetic
from tasks.tfds_builders import common


@dataclasses.dataclass
class SyntheticBuilderConfig(tfds.core.BuilderConfig):
  synthetic: synthetic.SyntheticConfig = dataclasses.field(default_factory=synthetic.SyntheticConfig)


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic Text2Tracks playlists."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticBuilderConfig(name="tiny", description="300 tracks, 200 playlists (tests).",
                             synthetic=synthetic.SyntheticConfig(
                                 seed=0, num_artists=30, num_tracks=300, num_playlists=200, num_intents=20,
                                 min_playlist_len=5, max_playlist_len=15, min_pool_size=8)),
      SyntheticBuilderConfig(name="quickstart", description="3,000 tracks, 5,000 playlists.",
                             synthetic=synthetic.SyntheticConfig()),
  ]
  DEFAULT_CONFIG_NAME = "tiny"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.features(), supervised_keys=None,
        homepage="https://arxiv.org/abs/2503.24193",
        description="Synthetic playlists whose titles and descriptions name a latent intent "
                    "(genre, mood, activity, era) and whose tracks mostly match it.")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config.synthetic
    out = common.work_dir(dl_manager, f"t2t_synthetic_{self.builder_config.name}_seed{cfg.seed}")
    if not os.path.exists(os.path.join(out, "meta.json")):
      synthetic.generate(cfg, out)
    return common.split_generators(out, self._generate_examples)

  def _generate_examples(self, dataset_dir: str, split: str):
    yield from common.generate_examples(dataset_dir, split)
