"""Retrieval baselines scored by the same metric code as Text2Tracks (t2t_jax.metrics).

  base.py          Baseline: the seam (a t2t_jax.serving.protocols.Retriever with fit(catalog, train))
  catalog.py       what every retriever is fitted on (CatalogTexts, training pairs) and the track texts
  bm25.py          BM25Retriever (bm25s) over track documents
  popularity.py    MostPopular: the tracks in most training playlists
  dual_encoder.py  DualEncoderRetriever: the project's T5 encoder towers, in-batch softmax, in JAX
  bi_encoder.py    BiEncoderRetriever: sentence-transformers (all-MiniLM-L6-v2), zero-shot or fine-tuned (MNRL)
  hybrid.py        HybridRetriever: BM25 and a dense retriever fused by weighted reciprocal-rank fusion
"""
