"""t2t_jax: Text2Tracks (prompt -> track IDs by generative retrieval) in JAX.

The core package imports without TensorFlow; SeqIO/TFDS code lives in the top-level `tasks` package.

Subpackages:
  data            dataset dirs without TensorFlow: formats, importers, prompts, vocabularies, batches
  ids             track embeddings, track-ID strategies (ID tables) and the JAX k-means
  models          model families behind one interface: T5.1.1 and bert_t5 (pretrained BERT encoder)
  decoding        the catalog trie index and constrained beam search, inside jit
  training        the training loop, train step, partitioning, optimizers, losses, hooks, checkpoints
  serving         the trained retriever (GenerativeRetriever), model-dir assets, recommend, export, serve
  baselines       retrieval baselines: BM25, most popular, dual encoder, bi-encoder, hybrid
  studies         the pipeline as reusable steps: quickstart, compare_ids, CPCD folds and turns
Modules:
  train           the gin train entry (`python -m t2t_jax.train`): train, evaluate, infer, export
  gin_utils       gin plumbing for the entry points (T5X conventions)
  evaluation      constrained beam search over held-out prompts -> ranking metrics
  metrics         Hits@K, Recall@K, MAP@K, NDCG@K and MRR (one code for every method)
  stats           paired bootstrap and mean / spread over folds or seeds
  export_runtime  runs an export with only numpy, jax and sentencepiece (copied into every export dir;
                  the one home of prompt normalisation, file hashing and the trie check)
  quickstart      `t2t quickstart`: end to end on the synthetic catalog or an imported dataset
  cli             the `t2t` command: import, quickstart, recommend, export, serve, plot
  console         terminal output: dependencies' logs quiet by default, progress bars
  plots           training curves and result charts (matplotlib, headless)
  report          results tables, report folders and results files
  io_utils        atomic writes that never destroy what a user did not ask to replace
  storage         one path layer: local paths, gs:// and s3:// URLs (etils.epath / fsspec)
  local_gcs       a local GCS server for tests and benchmarks (gcp-storage-emulator + generation headers)
  errors          UserInputError: errors a user can cause, reported in one line
"""

__version__ = "0.1.0"
