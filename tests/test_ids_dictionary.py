"""Tests for t2t_jax.ids.dictionary: signed sparse-code IDs (hand-computed on an identity dictionary)."""

import numpy as np
import pytest

from t2t_jax.errors import UserInputError
from t2t_jax.ids import dictionary


def test_sparse_codes_order_by_magnitude_with_sign():
  atoms = np.eye(4, dtype=np.float32)
  x = np.array([[0.5, -2.0, 0.0, 1.0],   # atoms 1 (-2) then 3 (+1): codes 1 + 4 = 5, 3
                [3.0, 0.0, -0.5, 0.0],   # atom 0 (+3), atom 2 (-0.5): 0, 2 + 4 = 6
                [0.0, 0.0, 3.0, 0.0]],   # one atom explains it: padded with the best unused atom
               np.float32)
  codes, err, padded = dictionary.sparse_codes(x, atoms, 2)
  # Row 2: OMP stops after atom 2; unused atoms all have <x, atom> = 0 -> the lowest index (0), sign +.
  np.testing.assert_array_equal(codes, [[5, 3], [0, 6], [2, 0]])
  np.testing.assert_allclose(err, [0.25, 0.0, 0.0], atol=1e-6)
  assert padded == 1


def test_build_dictionary_ids_policies():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(150, 5)).astype(np.float32)
  emb[100:] = emb[:50]  # 50 exact duplicates: shared IDs
  ids = [f"t{i}" for i in range(150)]
  pop = np.r_[np.zeros(100, np.int64), np.ones(50, np.int64)]
  t = dictionary.build_dictionary_ids(emb, ids, dict_size=8, num_nonzero=2, max_iter=2, collisions="most_popular",
                                      popularity=pop)
  assert t.level_sizes == (16, 16) and t.meta["collision_policy"] == "most_popular"
  assert set(range(50)) <= set(t.meta["unreachable_rows"])  # the less popular copies
  owner = t.row_of_codes()
  for r in t.meta["unreachable_rows"]:  # every shared ID is owned by its most popular track
    o = owner[tuple(t.codes[r])]
    assert o != r and (pop[o], -o) >= (pop[r], -r)
  d = dictionary.build_dictionary_ids(emb, ids, dict_size=8, num_nonzero=2, max_iter=2)
  assert d.level_sizes[:2] == (16, 16) and d.num_levels == 3 and d.num_duplicate_ids() == 0
  np.testing.assert_array_equal(d.codes[:, :2], t.codes)  # same dictionary, same codes (seeded)
  assert d.meta["stats"]["mean_sq_reconstruction_error"] < d.meta["stats"]["mean_sq_norm"]
  with pytest.raises(UserInputError, match="num_nonzero=6 exceeds"):
    dictionary.build_dictionary_ids(emb, ids, dict_size=8, num_nonzero=6)
  with pytest.raises(UserInputError, match="without disambiguation"):
    dictionary.build_dictionary_ids(emb, ids, dict_size=8, num_nonzero=2, max_iter=1, disambiguation=False)
