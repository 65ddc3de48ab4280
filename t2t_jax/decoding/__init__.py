"""t2t_jax.decoding: catalog trie index and constrained beam search (prompt -> top-K track rows)."""

from t2t_jax.decoding.beam_search import beam_search, invalid_share
from t2t_jax.decoding.index import ConstraintIndex, build_index
