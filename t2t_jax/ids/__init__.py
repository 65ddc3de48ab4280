"""t2t_jax.ids: track embeddings, track-ID strategies and the JAX k-means.

  table.py            IdTable: track <-> ID codes, save/load, id_stats (the contract in docs/CONTRACTS.md)
  embeddings.py       CF track embeddings from playlist co-occurrence (streamed sparse SVD), word2vec; files
  text_embeddings.py  track texts (metadata / training prompts) -> sentence-encoder embeddings
  cold_start.py       fill_cold_start: positions for tracks in no training playlist (artist, text kNN)
  catalog.py          catalog_embeddings (source + cold start in one call), training_popularity
  kmeans.py           k-means (k-means++ / k-means||, blocked matmul assignment, streamed, mesh-parallel)
  semantic.py         semantic IDs: residual / hierarchical k-means, collision-aware levels, collision policies
  dictionary.py       semantic IDs by sparse coding over a learned dictionary (scikit-learn)
  strategies.py       build_ids(strategy, ...): content, integer, artist_{iid,int}_track_seq, semantic_{rq,hkmeans,dict}
  specs.py            IdSpec: named strategy specs (the rows of a comparison) and build_table from one
  build.py            build_id_table (gin): one strategy's table dir with stats.json and plots (tools/build_ids.py)
  compare.py          compare_strategies: every strategy on one dataset, one row of ID properties each
  token_vectors.py    vectors of ID tokens from the vectors of the tracks they name (semantic init)
"""
