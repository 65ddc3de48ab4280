"""t2t_jax.serving: the trained retriever and what serves it (TF-free).

Modules:
  retriever       GenerativeRetriever: model + parameters + vocabularies + ID table + device trie +
                  jitted constrained top-k, built once (from a model dir or a training run); every
                  decode of the framework goes through it
  assets          MODEL_DIR/assets: the tokenizers, ID table, catalog and decoding settings
  lexical         the BM25 index (bm25s) a model dir keeps for the lexical prior inside beam search
  recommend       `t2t recommend`: prompts -> ranked tracks from a model dir
  export          `t2t export`: a model dir -> a portable jax.export dir (its runtime is
                  t2t_jax/export_runtime.py, numpy + jax + sentencepiece only)
  serve           `t2t serve`: HTTP JSON endpoint (aiohttp) with micro-batching
  serve_limits    connection cap, timeouts, rate-limited logs, API key and bind checks for serve
  protocols       the retriever seams as Protocols: Retriever (baselines), TrackRecommender (models)
"""
