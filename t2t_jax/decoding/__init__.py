"""t2t_jax.decoding: catalog trie index and constrained beam search (prompt -> top-K track rows).

  index.py        ConstraintIndex: the catalog's IDs as a level-order trie of static arrays (build_index,
                  build_table_index, token_seqs_for_table)
  beam_search.py  beam search over that trie inside jit: constrained or free, grouped (diverse), invalid_share
  generate.py     glue between the model interface and beam search: prompts -> top-K catalog rows
"""

from t2t_jax.decoding.beam_search import beam_search, invalid_share
from t2t_jax.decoding.index import ConstraintIndex, build_index
