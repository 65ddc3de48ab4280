"""Benchmark: our jitted constrained beam search vs transformers `generate(prefix_allowed_tokens_fn)`.

  python tools/bench_decode.py                      # CPU config: T5-small shapes, batch 8, beam 10
  python tools/bench_decode.py --json /tmp/decode.json --runs 7
  python tools/bench_decode.py --gpu                # H100/H200 target: T5-base, batch 64, beam 10,
                                                    # 100k IDs of 4 tokens (needs a GPU session)
  python tools/bench_decode.py --quick              # seconds-long smoke run (tiny model)

What is compared (one process, same inputs):
  * model: our `t2t_jax.models.t5.Transformer` and transformers' `T5ForConditionalGeneration` with
    the same config AND the same random weights (ours converted by `t2t_jax.hf_convert`), so the two
    constrained searches should return the same IDs (reported as top-1 / top-K agreement);
  * the same prompts (random text tokens), batch, beam, K (= beam, HF's limit), ID length and
    catalog: semantic-style IDs, 3 levels of 256 codes + a disambiguation level, tokens after a
    32000-piece text vocabulary;
  * constrained: ours = `make_recommend_fn` (trie index as jit input); HF = `generate(num_beams=W,
    num_return_sequences=K, max_new_tokens=L, length_penalty=0, prefix_allowed_tokens_fn=trie)`
    with a dict trie (prefix tuple -> allowed tokens), the usual GENRE/TIGER-style baseline;
  * free: the same searches without the constraint (ours: `constrained=False`, which still maps
    each output to a catalog row; HF: no prefix function).
Times are wall seconds per batch after a warm-up call (XLA compile time reported separately);
ours and HF runs are interleaved and medians taken, because this machine's CPUs are shared.

Also:
  * mask-only micro-benchmark: random logits (no model), a whole constrained decode of batch 64 x
    beam 10 over catalogs of 1M and 10M IDs of 4 tokens; ms per step (the decode has 4 steps);
    the same for free decoding and for a full-vocabulary-mask variant (the design we did not take);
  * index build seconds for 10M IDs and index bytes per ID.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXT_VOCAB = 32000
LEVELS = (256, 256, 256)

CONFIGS = {
    # Finishes in a few minutes on a 2-core CPU.
    "cpu": dict(model="small", batch=8, beam=10, catalog=20_000, input_len=32, runs=5,
                mask_catalogs=(1_000_000, 10_000_000), mask_batch=64, mask_beam=10, mask_runs=5,
                build_n=10_000_000, build_runs=3),
    # H100/H200 target shape (for a later session with a GPU).
    "gpu": dict(model="base", batch=64, beam=10, catalog=100_000, input_len=32, runs=20,
                mask_catalogs=(1_000_000, 10_000_000), mask_batch=64, mask_beam=10, mask_runs=20,
                build_n=10_000_000, build_runs=3),
    # Smoke test.
    "quick": dict(model="tiny", batch=2, beam=3, catalog=500, input_len=8, runs=2,
                  mask_catalogs=(20_000,), mask_batch=4, mask_beam=3, mask_runs=2,
                  build_n=50_000, build_runs=1),
}


def semantic_catalog(n: int, seed: int = 0, levels=LEVELS):
  """[n, len(levels) + 1] token sequences like semantic IDs, and the vocabulary size.

  Codes are uniform per level; tracks sharing all codes get a disambiguation code 0, 1, ...
  Tokens: TEXT_VOCAB + sum(level sizes before) + code (the CONTRACTS token layout).
  """
  rng = np.random.default_rng(seed)
  total = int(np.prod(levels))
  flat = np.sort(rng.integers(0, total, n))
  starts = np.r_[0, np.flatnonzero(np.diff(flat)) + 1]
  dis = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
  cols = []
  rest = flat
  for size in reversed(levels):
    cols.append(rest % size)
    rest = rest // size
  codes = np.stack(cols[::-1] + [dis], axis=1)
  codes = codes[rng.permutation(n)]
  sizes = list(levels) + [int(dis.max()) + 1]
  offsets = TEXT_VOCAB + np.concatenate([[0], np.cumsum(sizes)[:-1]])
  vocab = TEXT_VOCAB + sum(sizes)
  vocab = -(-vocab // 128) * 128  # T5 pads the vocabulary to a multiple of 128
  return (codes + offsets).astype(np.int32), int(vocab)


def _median_time(fn, runs):
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def bench_end_to_end(cfg, args, out):
  import jax
  import jax.numpy as jnp
  import torch
  import transformers

  from t2t_jax import hf_convert
  from t2t_jax.decoding.generate import make_recommend_fn
  from t2t_jax.decoding.index import build_index
  from t2t_jax.models import t5

  seqs, vocab = semantic_catalog(cfg["catalog"], seed=1)
  id_len = seqs.shape[1]
  index = build_index(seqs, vocab)
  config = t5.T5Config.preset(cfg["model"], vocab_size=vocab, dropout_rate=0.0)
  params = jax.device_get(t5.init_params(config, jax.random.PRNGKey(0), input_length=8,
                                         target_length=id_len))
  import flax.linen as nn
  params = nn.unbox(params)
  b, w = cfg["batch"], cfg["beam"]
  k = w
  rng = np.random.default_rng(2)
  prompts = rng.integers(3, TEXT_VOCAB, (b, cfg["input_len"])).astype(np.int32)
  prompts[:, cfg["input_len"] * 3 // 4:] = 0  # some padding, as real prompts have

  # ---- ours
  dindex = index.to_device()
  jprompts = jnp.asarray(prompts)
  ours = {}
  for mode, constrained in (("constrained", True), ("free", False)):
    fn = jax.jit(make_recommend_fn(t5.Transformer(config), index, beam_size=w, top_k=k,
                                   max_decode_len=id_len, constrained=constrained))
    t0 = time.perf_counter()
    res = jax.block_until_ready(fn(params, jprompts, dindex))
    out[f"ours_{mode}_first_call_s"] = time.perf_counter() - t0
    ours[mode] = (fn, res)

  # ---- transformers, same weights
  if args.threads:
    torch.set_num_threads(args.threads)
  out["torch_threads"] = torch.get_num_threads()
  hf_cfg = transformers.T5Config(**hf_convert.config_to_hf(config))
  device = "cuda" if torch.cuda.is_available() else "cpu"
  out["hf_device"] = device
  hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
  sd = {name: torch.from_numpy(np.array(v)) for name, v in
        hf_convert.params_to_hf(params, config).items()}
  # transformers 5 ties lm_head to the input embedding whatever the config says; T5 v1.1 (and
  # ours) has its own output matrix, so untie it before loading.
  hf.lm_head.weight = torch.nn.Parameter(sd["lm_head.weight"].clone())
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  assert not unexpected, unexpected
  assert all("embed_tokens" in m for m in missing), missing
  hf = hf.to(device)
  dec = np.concatenate([np.zeros((b, 1), np.int64), seqs[:b, :-1]], axis=1)
  with torch.no_grad():
    hf_logits = hf(input_ids=torch.from_numpy(prompts.astype(np.int64)).to(device),
                   attention_mask=torch.from_numpy(prompts > 0).to(device),
                   decoder_input_ids=torch.from_numpy(dec).to(device)).logits.cpu().numpy()
  our_logits = np.asarray(t5.Transformer(config).apply(
      {"params": params}, jprompts, jnp.asarray(dec, jnp.int32), enable_dropout=False))
  out["logits_max_abs_diff_vs_hf"] = float(np.abs(hf_logits - our_logits).max())
  trie = {}
  for row in seqs.tolist():
    for d in range(len(row)):
      trie.setdefault(tuple(row[:d]), set()).add(row[d])
  trie = {p: sorted(s) for p, s in trie.items()}

  def allowed(batch_id, sent):  # sent starts with the decoder start token
    del batch_id
    return trie.get(tuple(sent.tolist()[1:]), [hf_cfg.eos_token_id])

  tprompts = torch.from_numpy(prompts.astype(np.int64)).to(device)
  mask = tprompts > 0

  def hf_generate(constrained):
    with torch.no_grad():
      return hf.generate(
          input_ids=tprompts, attention_mask=mask, num_beams=w, num_return_sequences=k,
          max_new_tokens=id_len, min_new_tokens=id_len if constrained else 0, do_sample=False,
          length_penalty=0.0, early_stopping=False, output_scores=False,
          return_dict_in_generate=True, output_logits=False,
          prefix_allowed_tokens_fn=allowed if constrained else None)

  t0 = time.perf_counter()
  hf_res = hf_generate(True)
  out["hf_constrained_first_call_s"] = time.perf_counter() - t0
  hf_generate(False)  # warm-up of the free path too

  # Agreement of the two constrained searches (same weights): rows of HF's sequences.
  row_of = {tuple(r): i for i, r in enumerate(seqs.tolist())}
  hf_rows = np.array([row_of.get(tuple(s[1:1 + id_len]), -1)
                      for s in hf_res.sequences.tolist()]).reshape(b, k)
  our_rows = np.asarray(ours["constrained"][1][0])
  out["top1_agreement"] = float((hf_rows[:, 0] == our_rows[:, 0]).mean())
  out["topk_overlap"] = float(np.mean([len(set(hf_rows[i]) & set(our_rows[i])) / k
                                       for i in range(b)]))
  out["hf_constrained_all_valid"] = bool((hf_rows >= 0).all())
  out["ours_constrained_all_valid"] = bool((our_rows >= 0).all())

  # ---- timed, interleaved
  times = {key: [] for key in ("ours_constrained", "ours_free", "hf_constrained", "hf_free")}
  for _ in range(cfg["runs"]):
    for mode in ("constrained", "free"):
      fn = ours[mode][0]
      t0 = time.perf_counter()
      jax.block_until_ready(fn(params, jprompts, dindex))
      times[f"ours_{mode}"].append(time.perf_counter() - t0)
      if not args.skip_hf:
        t0 = time.perf_counter()
        hf_generate(mode == "constrained")
        if device == "cuda":
          torch.cuda.synchronize()
        times[f"hf_{mode}"].append(time.perf_counter() - t0)
  for key, ts in times.items():
    if ts:
      med = statistics.median(ts)
      out[f"{key}_seconds_per_batch"] = med
      out[f"{key}_prompts_per_s"] = b / med
      out[f"{key}_runs_s"] = ts
  free_ours = np.asarray(ours["free"][1][0])
  out["ours_free_invalid_share"] = float((free_ours < 0).mean())
  out["ours_constraint_overhead"] = (out["ours_constrained_seconds_per_batch"] /
                                     out["ours_free_seconds_per_batch"])
  if not args.skip_hf:
    out["hf_constraint_overhead"] = (out["hf_constrained_seconds_per_batch"] /
                                     out["hf_free_seconds_per_batch"])
    out["speedup_constrained_vs_hf"] = (out["ours_constrained_prompts_per_s"] /
                                        out["hf_constrained_prompts_per_s"])
    out["speedup_free_vs_hf"] = out["ours_free_prompts_per_s"] / out["hf_free_prompts_per_s"]


def _full_vocab_mask_decode(index, bank_MxV, batch, beam, steps):
  """The design not taken: per step a [M, V] mask of allowed tokens, then top-k over beam * V.

  Children are scattered into the mask from the same index; next nodes by binary search.
  """
  import jax
  import jax.numpy as jnp
  m, v = bank_MxV.shape
  width = max(index.max_degree)
  node_BxW = jnp.zeros((batch, beam), jnp.int32)
  score_BxW = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (beam - 1)), (batch, 1))
  tok_M = jnp.zeros((m,), jnp.int32)
  for _ in range(steps):
    logp_MxV = jax.nn.log_softmax(bank_MxV + 1e-3 * tok_M[:, None].astype(bank_MxV.dtype), axis=-1)
    node_M = node_BxW.reshape(m)
    first_M, deg_M = index.first_child(node_M), index.degree(node_M)
    offs = jnp.arange(width)
    last_M = jnp.maximum(deg_M - 1, 0)
    tok_MxD = index.edge_token(first_M[:, None] + jnp.minimum(offs, last_M[:, None]))
    allowed_MxV = jnp.zeros((m, v), bool).at[jnp.arange(m)[:, None], tok_MxD].set(
        offs[None, :] < deg_M[:, None])
    masked = jnp.where(allowed_MxV, logp_MxV, -jnp.inf).reshape(batch, beam, v)
    flat = (score_BxW[..., None] + masked).reshape(batch, beam * v)
    score_BxW, idx = jax.lax.top_k(flat, beam)
    parent, tok = idx // v, idx % v
    node_BxW = index.child(jnp.take_along_axis(node_BxW, parent, axis=1), tok)
    tok_M = tok.reshape(m).astype(jnp.int32)
  return node_BxW, score_BxW


def bench_mask_only(cfg, args, out):
  import jax
  import jax.numpy as jnp

  from t2t_jax.decoding.beam_search import beam_search
  from t2t_jax.decoding.index import build_index

  b, w = cfg["mask_batch"], cfg["mask_beam"]
  m = b * w
  res = {"constrained": {}, "free": {}, "full_vocab_mask": {}}
  for n in cfg["mask_catalogs"]:
    seqs, vocab = semantic_catalog(n, seed=3)
    index = build_index(seqs, vocab).to_device()
    del seqs
    steps = index.max_depth
    bank = jax.random.normal(jax.random.PRNGKey(0), (m, vocab), jnp.float32) * 3.0
    cache = {"beam_state": jnp.zeros((m, 2), jnp.int32)}

    def decode(bank, cache, index, constrained):
      # Logits depend on the fed token, so XLA cannot hoist the per-step work out of the loop.
      t2l = lambda tok, c: (bank + 1e-3 * tok.astype(bank.dtype), jax.tree.map(lambda x: x + tok, c))
      return beam_search(t2l, cache, index, batch_size=b, beam_size=w, top_k=w,
                         constrained=constrained)

    fns = {
        "constrained": jax.jit(lambda bank, c, ix: decode(bank, c, ix, True)),
        "free": jax.jit(lambda bank, c, ix: decode(bank, c, ix, False)),
        "full_vocab_mask": jax.jit(lambda bank, c, ix: _full_vocab_mask_decode(
            ix, bank, b, w, steps)),
    }
    for name, fn in fns.items():
      jax.block_until_ready(fn(bank, cache, index))  # compile
      med, _ = _median_time(lambda: jax.block_until_ready(fn(bank, cache, index)),
                            cfg["mask_runs"])
      res[name][str(n)] = 1e3 * med / steps
    rows, _ = fns["constrained"](bank, cache, index)
    assert (np.asarray(rows) >= 0).all()
    del index, bank
  out["mask_only_ms_per_step"] = res["constrained"]
  out["mask_only_free_ms_per_step"] = res["free"]
  out["mask_only_full_vocab_mask_ms_per_step"] = res["full_vocab_mask"]
  out["mask_only_shape"] = dict(batch=b, beam=w, id_len=4, vocab=vocab)


def bench_build(cfg, args, out):
  from t2t_jax.decoding.index import build_index
  n = cfg["build_n"]
  t0 = time.perf_counter()
  seqs, vocab = semantic_catalog(n, seed=4)
  out["catalog_generation_seconds"] = time.perf_counter() - t0
  holder = {}
  med, ts = _median_time(lambda: holder.update(ix=build_index(seqs, vocab)), cfg["build_runs"])
  ix = holder["ix"]
  out["index_build_n"] = n
  out["index_build_seconds"] = med
  out["index_build_runs_s"] = ts
  out["index_bytes_per_id"] = ix.bytes_per_id
  out["index_bytes"] = ix.nbytes
  out["raw_table_bytes_per_id"] = seqs.shape[1] * 4
  out["index_nodes"] = ix.num_nodes
  out["index_max_degree"] = list(ix.max_degree)


def machine_info():
  import jax
  info = dict(platform=platform.platform(), python=platform.python_version(),
              cpu_count=os.cpu_count(), processor=platform.processor(),
              jax=jax.__version__, devices=[str(d) for d in jax.devices()])
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    info["cpu_model"] = names[0] if names else None
  except OSError:
    pass
  try:
    info["load_avg_1m"] = os.getloadavg()[0]
  except OSError:
    pass
  for mod in ("torch", "transformers", "flax", "numpy"):
    try:
      info[mod] = __import__(mod).__version__
    except ImportError:
      info[mod] = None
  return info


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--gpu", action="store_true", help="H100/H200 target configuration")
  parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
  parser.add_argument("--json", help="write the results here")
  parser.add_argument("--runs", type=int, help="timed runs per measurement (median reported)")
  parser.add_argument("--batch", type=int)
  parser.add_argument("--beam", type=int)
  parser.add_argument("--catalog", type=int, help="catalog size for the end-to-end comparison")
  parser.add_argument("--model", help="T5 size preset (tiny, small, base, ...)")
  parser.add_argument("--mask_catalogs", help="comma-separated catalog sizes, e.g. 1000000,10000000")
  parser.add_argument("--build_n", type=int, help="catalog size for the index build timing")
  parser.add_argument("--threads", type=int, default=None,
                      help="CPU threads for both JAX (XLA intra-op) and torch; 0 = libraries' "
                           "defaults. Default 1: on a shared CPU, multi-threaded torch spin-waits "
                           "badly (T5-small generate: 3 s at 1 thread, 17-35 s at 2 on this box); "
                           "--gpu default 0")
  parser.add_argument("--skip_hf", action="store_true")
  parser.add_argument("--skip", default="", help="comma-separated: e2e,mask,build")
  args = parser.parse_args(argv)
  if args.threads is None:
    args.threads = 0 if args.gpu else 1
  if args.threads == 1 and "jax" not in sys.modules:  # XLA reads its flags at first import
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
  name = "gpu" if args.gpu else "quick" if args.quick else "cpu"
  cfg = dict(CONFIGS[name])
  for key in ("runs", "batch", "beam", "catalog", "model", "build_n"):
    if getattr(args, key) is not None:
      cfg[key] = getattr(args, key)
  if args.runs:
    cfg["mask_runs"] = args.runs
  if args.mask_catalogs:
    cfg["mask_catalogs"] = tuple(int(x) for x in args.mask_catalogs.split(","))
  skip = set(filter(None, args.skip.split(",")))

  out = {"config_name": name, "config": cfg, "threads": args.threads, "machine": machine_info()}
  if "e2e" not in skip:
    bench_end_to_end(cfg, args, out)
    print(f"[e2e] T5-{cfg['model']} batch {cfg['batch']} beam {cfg['beam']} "
          f"catalog {cfg['catalog']} x 4 tokens, median of {cfg['runs']} runs")
    for key in ("ours_constrained", "ours_free", "hf_constrained", "hf_free"):
      if f"{key}_prompts_per_s" in out:
        print(f"  {key:17s} {out[f'{key}_prompts_per_s']:9.2f} prompts/s "
              f"({out[f'{key}_seconds_per_batch'] * 1e3:.1f} ms/batch)")
    print(f"  ours constraint overhead (constrained/free time): "
          f"{out['ours_constraint_overhead']:.3f}")
    if "speedup_constrained_vs_hf" in out:
      print(f"  hf constraint overhead: {out['hf_constraint_overhead']:.3f}")
      print(f"  ours / transformers, constrained: {out['speedup_constrained_vs_hf']:.2f}x; "
            f"free: {out['speedup_free_vs_hf']:.2f}x")
      print(f"  same weights (max |logit diff| {out['logits_max_abs_diff_vs_hf']:.1e}) -> "
            f"top-1 agreement {out['top1_agreement']:.2f}, top-K overlap {out['topk_overlap']:.2f}")
    print(f"  ours free decoding: {out['ours_free_invalid_share']:.2%} of outputs not in catalog")
  if "mask" not in skip:
    bench_mask_only(cfg, args, out)
    print(f"[mask-only] batch {cfg['mask_batch']} x beam {cfg['mask_beam']}, random logits, "
          f"ms/step (median of {cfg['mask_runs']})")
    for n in out["mask_only_ms_per_step"]:
      print(f"  {int(n):>10,d} IDs: constrained {out['mask_only_ms_per_step'][n]:7.2f}  "
            f"free {out['mask_only_free_ms_per_step'][n]:7.2f}  "
            f"full-vocab mask {out['mask_only_full_vocab_mask_ms_per_step'][n]:7.2f}")
  if "build" not in skip:
    bench_build(cfg, args, out)
    print(f"[index] {out['index_build_n']:,d} IDs: build {out['index_build_seconds']:.2f} s "
          f"(median of {cfg['build_runs']}), {out['index_bytes_per_id']:.2f} bytes/ID "
          f"(raw int32 table: {out['raw_table_bytes_per_id']})")
  if args.json:
    from t2t_jax.io_utils import write_json
    write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
