"""t2t_jax.data: datasets without TensorFlow.

formats    dataset dir (catalog.jsonl, playlists.jsonl, splits.json, meta.json): validated streaming
           readers, atomic writers, `Dataset`, `make_splits`
synthetic  deterministic synthetic catalog + playlists drawn from latent intents
mpd        Spotify Million Playlist Dataset slices -> dataset dir
convert    catalogs as CSV/Parquet; `import_dataset` for user files
prompts    prompt text from a playlist (title / description / both), normalisation, templates
vocab      SentencePiece training (T5 ids) and the text + ID-token vocabulary
"""
