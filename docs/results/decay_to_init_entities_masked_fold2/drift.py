"""How far each candidate's decoder moved from its retrieval_init start: the norms of the residual branches
that retrieval_init sets to 0 (so their norm is their distance from the start)."""
import json, os, sys
import jax, numpy as np
from t2t_jax.training import checkpoints
root = sys.argv[1]
out = {}
for fam in sorted(os.listdir(root)):
  if not fam.startswith("bert_t5"):
    continue
  md = os.path.join(root, fam, "integer_atomic", "seed0")
  try:
    params = jax.tree.map(np.asarray, checkpoints.load_params(md)[1])
  except Exception as e:  # still training
    print(fam, "skipped:", e, file=sys.stderr)
    continue
  dec = params["decoder"]
  zero_branches = []
  for name, layer in sorted(dec.items()):
    if not name.startswith("layers_"):
      continue
    zero_branches += [layer["self_attention"]["out"]["kernel"], layer["mlp"]["wo"]["kernel"]]
    if name != "layers_0":
      zero_branches.append(layer["encoder_decoder_attention"]["out"]["kernel"])
    else:
      zero_branches.append(layer["encoder_decoder_attention"]["query"]["kernel"])
  out[fam] = round(float(np.sqrt(sum(np.sum(np.square(w.astype(np.float64))) for w in zero_branches))), 4)
print(json.dumps(out, indent=1))
