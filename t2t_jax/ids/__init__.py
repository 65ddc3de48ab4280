"""t2t_jax.ids: track embeddings, track-ID strategies and the JAX k-means.

  table.py       IdTable: track <-> ID codes, save/load, id_stats (the contract in docs/CONTRACTS.md)
  embeddings.py  CF track embeddings from playlist co-occurrence (streamed sparse SVD); embedding files
  kmeans.py      k-means (k-means++ / k-means||, blocked matmul assignment, streamed, mesh-parallel)
  semantic.py    semantic IDs: residual / hierarchical k-means + disambiguation level, balanced option
  strategies.py  build_ids(strategy, ...): content, integer, semantic_rq, semantic_hkmeans
"""
