"""Builds the tiny data root shared by the tasks/ tests (loaded by path from tests/test_tasks_*.py).

{root}/tiny-syn: a 120-track, 40-playlist synthetic dataset, a 400-piece SentencePiece model, a
semantic-like IdTable "sem" (levels 8, 8, 2; rows in *reverse* catalog order, so table rows differ
from catalog rows) and a content-ID table "title" (text-token ids, -1 padded).
"""

import numpy as np

from t2t_jax.data import formats, prompts, synthetic, vocab
from t2t_jax.ids.table import IdTable


def build(root):
  cfg = synthetic.SyntheticConfig(seed=1, num_artists=20, num_tracks=120, num_playlists=40, num_intents=8,
                                  min_playlist_len=3, max_playlist_len=6, min_pool_size=5,
                                  validation_fraction=0.1, test_fraction=0.1)
  ds_dir = root / "tiny-syn"
  synthetic.generate(cfg, ds_dir)
  ds = formats.Dataset.load(ds_dir)
  vocab.train_sentencepiece((prompts.make_prompt(p, "both") for p in ds.playlists()),
                            ds_dir / "vocab" / "spm.model", vocab_size=400)
  ids = [t.track_id for t in reversed(ds.tracks)]
  n = len(ids)
  codes = np.stack([np.arange(n) % 8, (np.arange(n) // 8) % 8, np.arange(n) // 64], 1)
  IdTable("sem", ids, codes, (8, 8, 2)).save(ds_dir / "ids" / "sem")
  sp = vocab.load_sentencepiece(ds_dir / "vocab" / "spm.model")
  toks = [sp.EncodeAsIds(t.title)[:5] for t in ds.tracks]
  text_codes = np.full((n, 5), -1, np.int32)
  for i, tk in enumerate(toks):
    text_codes[i, :len(tk)] = tk
  IdTable("title", [t.track_id for t in ds.tracks], text_codes, (), is_text=True).save(ds_dir / "ids" / "title")
  return ds
