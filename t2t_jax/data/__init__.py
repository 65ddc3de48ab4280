"""t2t_jax.data: datasets without TensorFlow.

formats       dataset dir (catalog.jsonl, playlists.jsonl, splits.json, meta.json, folds.json): validated
              streaming readers, the shared id rule (`id_problem`), atomic writers, `Dataset`,
              `make_splits`, k-fold `fold_splits`
finish        the last step of every importer: splits (default sizes), SentencePiece vocab, meta.json
convert       catalogs as CSV/Parquet; `import_dataset` for user files (`t2t import jsonl|csv|parquet`)
mpd           Spotify Million Playlist Dataset slices -> dataset dir (`t2t import mpd`)
cpcd          the Conversational Playlist Curation Dataset -> dataset dir (`t2t import cpcd`)
synthetic     deterministic synthetic catalog + playlists drawn from latent intents
prompts       prompt text from a playlist (title / description / both), HTML cleaning, normalisation
vocab         SentencePiece training (T5 ids) and the text + ID-token vocabulary
wordpiece     WordPiece input vocabulary of a pretrained BERT-family encoder (its tokenizer.json)
english       common English words (which artist names the CPCD masking keeps)
entity_check  an independent check that masked prompts no longer name goal artists or titles
examples      `ExampleSource`: raw (prompt, ID) examples from a dataset dir and an ID table
batches       unpacked numpy model batches from an `ExampleSource` (the TensorFlow-free data path)
resumable     `IndexedBatches`: checkpointable batch iterators (resume by index, without replay)
"""
