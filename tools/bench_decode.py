"""Benchmark: our jitted constrained beam search vs transformers `generate(prefix_allowed_tokens_fn)`.

  python tools/bench_decode.py --json decode.json   # CPU config: T5-small, batch 8, beam 10, 20k IDs
  python tools/bench_decode.py --gpu --json decode.json
                                  # H100/H200: T5.1.1-base, batch 64, beam 10, 100k / 1M / 10M IDs
  python tools/bench_decode.py --quick              # seconds-long smoke run (tiny model)

What is compared (one process, same inputs):
  * model: ours (`bench_common.make_model`) and transformers' `T5ForConditionalGeneration` with the
    same config AND the same random weights (ours converted by `t2t_jax.models.hf_convert`), so the two
    constrained searches return the same IDs (reported as top-1 / top-K agreement);
  * the same prompts (random text tokens), batch, beam, K (= beam, HF's limit), ID length and
    catalogs: semantic-style IDs, 3 levels of 256 codes + a disambiguation level, tokens after a
    32000-piece text vocabulary (one model vocabulary for every catalog size);
  * constrained: ours = `make_recommend_fn` (trie index as jit input); HF = `generate(num_beams=W,
    num_return_sequences=K, max_new_tokens=L, length_penalty=0, prefix_allowed_tokens_fn=...)`, the
    usual GENRE/TIGER-style baseline, its prefix function a lexicographically sorted catalog
    (binary search per prefix, answers cached: as fast as a dict trie after warm-up and buildable
    for 10M IDs in seconds);
  * free: the same searches without the constraint (ours: `constrained=False`, which still maps each
    output to a catalog row; HF: no prefix function), at the first catalog only.
The peer in its best configuration: on a CPU every torch thread count 1..nproc is timed on its
constrained generate and the fastest kept (`--threads N` fixes it); our XLA keeps its defaults
(`--xla_single_thread` makes it single-threaded).  Times are wall seconds per batch after a warm-up
call (XLA compile time reported separately); ours and HF calls are interleaved, `--runs` (>= 5) of
each, median/min/max reported.  The peer has `--peer_limit_s` per catalog, checked between calls:
when its warm-up alone exceeds it, that one call is reported (labelled) instead of windows.

Masking-only (no model): random logits [batch x beam, V], a whole 4-step decode of batch 64 x beam 10
over catalogs of 1M and 10M IDs, jitted; `masking_ms_per_decode` = median ms of that constrained
decode (log-softmax, trie lookups, scoring the allowed children, top-k: an upper bound on what the
constraint costs one decode of the whole batch).  The same decode unconstrained (top-k over beam x
vocabulary), their difference and the full-vocabulary-mask variant (the design not taken) are
reported too (definitions in the JSON).  Also: index build seconds and bytes per ID.
The JSON records the load average before and after; a run whose load exceeded the cores says so.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402  pylint: disable=wrong-import-position

TEXT_VOCAB = 32000
LEVELS = (256, 256, 256)
DIS_MAX = 128  # far above the largest collision group of uniform codes at 10M IDs (~10)

CONFIGS = {
    # A few minutes on a 2-core CPU.
    "cpu": dict(model="small", batch=8, beam=10, catalogs=(20_000,), input_len=32, runs=5,
                mask_catalogs=(1_000_000, 10_000_000), mask_batch=64, mask_beam=10, mask_runs=5,
                build_n=10_000_000, build_runs=3, peer_limit_s=900.0),
    # H100/H200 target shape (tools/gpu_suite.py).
    "gpu": dict(model="base", batch=64, beam=10, catalogs=(100_000, 1_000_000, 10_000_000), input_len=32,
                runs=10, mask_catalogs=(1_000_000, 10_000_000), mask_batch=64, mask_beam=10, mask_runs=20,
                build_n=0, build_runs=0, peer_limit_s=45.0),
    # Smoke test.
    "quick": dict(model="tiny", batch=2, beam=3, catalogs=(500,), input_len=8, runs=5,
                  mask_catalogs=(20_000,), mask_batch=4, mask_beam=3, mask_runs=5,
                  build_n=50_000, build_runs=1, peer_limit_s=120.0),
}
DEFINITIONS = {
    "seconds_per_batch": "wall time of one call on a batch of `batch` prompts (all beams, all steps), "
                         "after a warm-up call; median/min/max over `runs` calls",
    "masking_ms_per_decode": "random logits, no model: median ms of one jitted constrained beam-search "
                             "decode of the whole batch (mask_batch x mask_beam rows, all ID steps: log-softmax, "
                             "trie lookups, scoring the allowed children, top-k); an upper bound on what "
                             "the constraint costs per decode, since it includes the search itself",
    "constrained_minus_free_ms_per_decode": "the same decode constrained minus unconstrained (top-k over "
                                            "beam x vocabulary): negative where scoring only the allowed "
                                            "children is cheaper than the full top-k",
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


class SortedCatalogTrie:
  """The peer's prefix -> allowed next tokens, from the catalog sorted lexicographically.

  Rows are sorted once (uint64 keys, 16 bits a token); a prefix's rows are one contiguous range
  found by binary search, and its next tokens are the distinct values of one sorted column.
  Answers are cached per prefix (a dict trie built lazily), so after warm-up a call costs what a
  dict lookup costs; building it for 10M IDs takes seconds instead of a 40M-entry dict.
  """

  def __init__(self, seqs_NxL: np.ndarray, eos_id: int):
    seqs = np.asarray(seqs_NxL, np.int64)
    if seqs.max() >= 1 << 16 or seqs.shape[1] > 4:
      raise ValueError("SortedCatalogTrie packs up to 4 tokens < 65536 into one uint64 key")
    self.width = seqs.shape[1]
    keys = np.zeros(len(seqs), np.uint64)
    for d in range(self.width):
      keys |= seqs[:, d].astype(np.uint64) << np.uint64(16 * (self.width - 1 - d))
    order = np.argsort(keys, kind="stable")
    self.keys = keys[order]
    self.seqs = seqs[order].astype(np.int32)
    self.eos = [int(eos_id)]

  def _key(self, prefix, fill: int) -> np.uint64:
    full = list(prefix) + [fill] * (self.width - len(prefix))
    return np.uint64(sum(int(t) << (16 * (self.width - 1 - d)) for d, t in enumerate(full)))

  @functools.lru_cache(maxsize=None)
  def allowed(self, prefix: tuple) -> list[int]:
    d = len(prefix)
    if d >= self.width:
      return self.eos
    lo = int(np.searchsorted(self.keys, self._key(prefix, 0), side="left"))
    hi = int(np.searchsorted(self.keys, self._key(prefix, 0xFFFF), side="right"))
    if lo >= hi:
      return self.eos
    col = self.seqs[lo:hi, d]
    return col[np.r_[0, np.flatnonzero(np.diff(col)) + 1]].tolist()


# ----------------------------------------------------------------------------------------------- #
# End to end: ours vs transformers, same weights.


class Peer:
  """transformers T5 with our weights; constrained/free generate; threads chosen by measuring."""

  def __init__(self, config, params, prompts_BxL, *, beam, k, id_len, threads, out):
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    from t2t_jax.models import hf_convert  # pylint: disable=import-outside-toplevel
    self.torch = torch
    if threads:
      torch.set_num_threads(threads)
    if torch.cuda.is_available():
      # Same precision as ours: JAX's default float32 matmul on a GPU uses TF32; torch's does not.
      torch.set_float32_matmul_precision("high")
    out["hf_float32_matmul_precision"] = torch.get_float32_matmul_precision()
    hf_cfg = transformers.T5Config(**hf_convert.config_to_hf(config))
    self.device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    sd = {name: torch.from_numpy(np.array(v)) for name, v in hf_convert.params_to_hf(params, config).items()}
    # transformers 5 ties lm_head to the input embedding whatever the config says; T5 v1.1 (and
    # ours) has its own output matrix, so untie it before loading.
    hf.lm_head.weight = torch.nn.Parameter(sd["lm_head.weight"].clone())
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("embed_tokens" in m for m in missing), missing
    self.model = hf.to(self.device)
    self.eos = hf_cfg.eos_token_id
    self.prompts = torch.from_numpy(prompts_BxL.astype(np.int64)).to(self.device)
    self.mask = self.prompts > 0
    self.beam, self.k, self.id_len = beam, k, id_len
    self.trie = None
    out["hf_device"] = self.device

  def logits(self, dec_BxL):
    t = self.torch
    with t.no_grad():
      return self.model(input_ids=self.prompts, attention_mask=self.mask,
                        decoder_input_ids=t.from_numpy(dec_BxL).to(self.device)).logits.float().cpu().numpy()

  def generate(self, constrained: bool):
    trie = self.trie

    def allowed(batch_id, sent):  # sent starts with the decoder start token
      del batch_id
      return trie.allowed(tuple(sent.tolist()[1:]))

    with self.torch.no_grad():
      res = self.model.generate(
          input_ids=self.prompts, attention_mask=self.mask, num_beams=self.beam,
          num_return_sequences=self.k, max_new_tokens=self.id_len,
          min_new_tokens=self.id_len if constrained else 0, do_sample=False, length_penalty=0.0,
          early_stopping=False, output_scores=False, return_dict_in_generate=True, output_logits=False,
          prefix_allowed_tokens_fn=allowed if constrained else None)
    if self.device == "cuda":
      self.torch.cuda.synchronize()
    return res

  def sync(self):
    if self.device == "cuda":
      self.torch.cuda.synchronize()


def _timed(fn):
  t0 = time.perf_counter()
  res = fn()
  return time.perf_counter() - t0, res


def _setup(cfg, out):
  """Model config (one vocabulary for all catalogs), random params, prompts."""
  from t2t_jax.models import t5  # pylint: disable=import-outside-toplevel
  # One vocabulary for every catalog size: room for a disambiguation level of up to DIS_MAX codes.
  vocab = -(-(TEXT_VOCAB + sum(LEVELS) + DIS_MAX) // 128) * 128
  config = t5.T5Config.preset(cfg["model"], vocab_size=vocab, dropout_rate=0.0)
  params = bench_common.init_params(config, seed=0, input_length=8, target_length=len(LEVELS) + 1)
  rng = np.random.default_rng(2)
  prompts = rng.integers(3, TEXT_VOCAB, (cfg["batch"], cfg["input_len"])).astype(np.int32)
  prompts[:, cfg["input_len"] * 3 // 4:] = 0  # some padding, as real prompts have
  out["model"] = {"preset": cfg["model"], "vocab_size": vocab, "params": config.num_params()}
  return config, params, prompts


def _ours_fn(config, index, cfg, constrained):
  import jax  # pylint: disable=import-outside-toplevel
  from t2t_jax.decoding.generate import make_recommend_fn  # pylint: disable=import-outside-toplevel
  return jax.jit(make_recommend_fn(bench_common.make_model(config), index, beam_size=cfg["beam"],
                                   top_k=cfg["beam"], max_decode_len=index.max_depth, constrained=constrained))


def bench_catalog(n, cfg, args, config, params, prompts, peer, res, peer_limit_s):
  """Ours vs HF on one catalog of n IDs; fills `res` (written by the caller after each stage)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from t2t_jax.decoding.index import build_index  # pylint: disable=import-outside-toplevel
  b, w = cfg["batch"], cfg["beam"]
  seqs, _ = semantic_catalog(n, seed=1)
  assert seqs.max() < config.vocab_size, (n, int(seqs.max()), config.vocab_size)
  res["index_build_s"], index = _timed(lambda: build_index(seqs, config.vocab_size))
  res["index_bytes_per_id"] = index.bytes_per_id
  dindex, jprompts = index.to_device(), jnp.asarray(prompts)
  modes = ("constrained", "free") if (args.free and n == cfg["catalogs"][0]) else ("constrained",)
  ours = {}
  for mode in modes:
    fn = _ours_fn(config, index, cfg, mode == "constrained")
    call = functools.partial(lambda f: jax.block_until_ready(f(params, jprompts, dindex)), fn)
    res[f"ours_{mode}_first_call_s"], first = _timed(call)
    ours[mode] = (call, first)
  times = {f"ours_{m}": [] for m in modes}
  if peer is not None:
    res["hf_trie_build_s"], peer.trie = _timed(lambda: SortedCatalogTrie(seqs, peer.eos))
    deadline = time.monotonic() + peer_limit_s
    res["hf_limit_s"] = peer_limit_s
    res["hf_constrained_first_call_s"], hf_res = _timed(lambda: peer.generate(True))
    row_of = _row_lookup(seqs)
    hf_rows = np.array([row_of(s[1:1 + seqs.shape[1]]) for s in hf_res.sequences.tolist()]).reshape(b, w)
    our_rows = np.asarray(ours["constrained"][1][0])
    res["top1_agreement"] = float((hf_rows[:, 0] == our_rows[:, 0]).mean())
    res["topk_overlap"] = float(np.mean([len(set(hf_rows[i]) & set(our_rows[i])) / w for i in range(b)]))
    res["hf_constrained_all_valid"] = bool((hf_rows >= 0).all())
    if "free" in modes:
      peer.generate(False)  # warm-up
    for m in modes:
      times[f"hf_{m}"] = []
  res["ours_constrained_all_valid"] = bool((np.asarray(ours["constrained"][1][0]) >= 0).all())
  for _ in range(cfg["runs"]):  # interleaved: a shared CPU's load hits both sides alike
    for m in modes:
      times[f"ours_{m}"].append(_timed(ours[m][0])[0])
      if peer is not None and time.monotonic() < deadline:
        times[f"hf_{m}"].append(_timed(lambda m=m: peer.generate(m == "constrained"))[0])
  for key, ts in times.items():
    if ts:
      res[key] = {"seconds_per_batch": bench_common.summary(ts),
                  "prompts_per_s": bench_common.summary([b / t for t in ts])}
  if peer is not None and not times["hf_constrained"]:
    first = res["hf_constrained_first_call_s"]
    res["hf_constrained"] = {
        "status": f"did not finish {cfg['runs']} timed calls in {peer_limit_s:.0f} s: the warm-up call "
                  f"alone took {first:.1f} s; figures below are that single call",
        "seconds_per_batch": bench_common.summary([first]), "prompts_per_s": bench_common.summary([b / first])}
  if "free" in modes:
    res["ours_free_invalid_share"] = float((np.asarray(ours["free"][1][0]) < 0).mean())
  _ratios(res, modes)


def _row_lookup(seqs):
  table = {tuple(r): i for i, r in enumerate(seqs.tolist())} if len(seqs) <= 200_000 else None
  if table is not None:
    return lambda s: table.get(tuple(s), -1)
  keys = seqs.astype(np.int64) @ (np.int64(1) << (16 * np.arange(seqs.shape[1] - 1, -1, -1, dtype=np.int64)))
  order = np.argsort(keys)
  sk = keys[order]

  def lookup(s):
    k = sum(int(t) << (16 * (len(s) - 1 - d)) for d, t in enumerate(s))
    i = int(np.searchsorted(sk, k))
    return int(order[i]) if i < len(sk) and sk[i] == k else -1
  return lookup


def _ratios(res, modes):
  med = lambda key: res[key]["seconds_per_batch"]["median"] if key in res else None
  if "free" in modes:
    res["ours_constraint_overhead"] = med("ours_constrained") / med("ours_free")
  if med("hf_constrained"):
    res["speedup_constrained_vs_hf"] = med("hf_constrained") / med("ours_constrained")
  if "free" in modes and med("hf_free"):
    res["hf_constraint_overhead"] = med("hf_constrained") / med("hf_free")
    res["speedup_free_vs_hf"] = med("hf_free") / med("ours_free")


def bench_end_to_end(cfg, args, out, write, time_left, after_first=None):
  """Ours vs the peer on every catalog; `after_first()` runs once the first catalog is measured (the
  masking-only runs: with a short --time_budget_s the smallest catalog's ratio comes first)."""
  import jax  # pylint: disable=import-outside-toplevel
  config, params, prompts = _setup(cfg, out)
  out["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
  peer = None
  if not args.skip_hf:
    watch = bench_common.LoadWatch("hf setup")
    peer = Peer(config, params, prompts, beam=cfg["beam"], k=cfg["beam"], id_len=len(LEVELS) + 1,
                threads=args.threads, out=out)
    _check_same_logits(config, params, prompts, peer, out)
    if peer.device == "cpu" and not args.threads:
      seqs, _ = semantic_catalog(cfg["catalogs"][0], seed=1)
      peer.trie = SortedCatalogTrie(seqs, peer.eos)
      out["torch_threads"] = bench_common.choose_torch_threads(lambda: peer.generate(True), repeats=1)
    else:
      out["torch_threads"] = {"chosen": peer.torch.get_num_threads(),
                              "how": "--threads" if args.threads else "not measured: the peer runs on CUDA"}
    watch.report(quiet=True)
  params = jax.device_put(params)  # once: not a host-to-device copy of the weights per call
  out["catalogs"] = {}
  for n in cfg["catalogs"]:
    watch = bench_common.LoadWatch(f"catalog {n}")
    res = out["catalogs"][str(n)] = {"num_ids": n}
    left = time_left()
    if left < 20:
      res["status"] = f"skipped: {left:.0f} s of --time_budget_s left"
      print(f"[e2e] {n:,d} IDs: {res['status']}", flush=True)
      write()
      continue
    # With a budget, the peer gets at most a third of what is left (ours needs the rest).
    peer_limit = min(cfg["peer_limit_s"], left / 3) if args.time_budget_s else cfg["peer_limit_s"]
    bench_catalog(n, cfg, args, config, params, prompts, peer, res, peer_limit)
    res["load"] = watch.report()
    _print_catalog(n, cfg, res)
    write()
    if after_first is not None:
      after_first()
      after_first = None
  if after_first is not None:
    after_first()


def _check_same_logits(config, params, prompts, peer, out):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  seqs, _ = semantic_catalog(64, seed=1)
  b = prompts.shape[0]
  dec = np.concatenate([np.zeros((b, 1), np.int64), np.resize(seqs, (b, seqs.shape[1]))[:, :-1]], axis=1)
  ours = np.asarray(bench_common.model_logits(config, params, jnp.asarray(prompts), jnp.asarray(dec, jnp.int32)))
  out["logits_max_abs_diff_vs_hf"] = float(np.abs(peer.logits(dec) - ours).max())


def _print_catalog(n, cfg, res):
  print(f"[e2e] T5-{cfg['model']} batch {cfg['batch']} beam {cfg['beam']}, {n:,d} IDs x 4 tokens "
        f"(index {res['index_build_s']:.1f} s, {res['index_bytes_per_id']:.2f} B/ID)", flush=True)
  for key in ("ours_constrained", "ours_free", "hf_constrained", "hf_free"):
    if key in res:
      print(f"  {key:17s} {bench_common.fmt_summary(res[key]['prompts_per_s'], ' prompts/s')}", flush=True)
      if "status" in res[key]:
        print(f"  {'':17s} {res[key]['status']}", flush=True)
  for key in ("speedup_constrained_vs_hf", "speedup_free_vs_hf", "ours_constraint_overhead", "top1_agreement"):
    if key in res:
      print(f"  {key} = {res[key]:.3f}", flush=True)


# ----------------------------------------------------------------------------------------------- #
# Masking only and index build.


def _full_vocab_mask_decode(index, bank_MxV, batch, beam, steps):
  """The design not taken: per step a [M, V] mask of allowed tokens, then top-k over beam * V.

  Children are scattered into the mask from the same index; next nodes by binary search.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
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


def bench_mask_only(cfg, out, write):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from t2t_jax.decoding.beam_search import beam_search  # pylint: disable=import-outside-toplevel
  from t2t_jax.decoding.index import build_index  # pylint: disable=import-outside-toplevel
  b, w = cfg["mask_batch"], cfg["mask_beam"]
  m = b * w
  out["mask_only"] = {"batch": b, "beam": w, "runs": cfg["mask_runs"], "catalogs": {}}
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
      return beam_search(t2l, cache, index, batch_size=b, beam_size=w, top_k=w, constrained=constrained)

    fns = {"constrained": jax.jit(lambda bank, c, ix: decode(bank, c, ix, True)),
           "free": jax.jit(lambda bank, c, ix: decode(bank, c, ix, False)),
           "full_vocab_mask": jax.jit(lambda bank, c, ix: _full_vocab_mask_decode(ix, bank, b, w, steps))}
    res = {"num_ids": n, "vocab": vocab, "steps_per_decode": steps}
    for name, fn in fns.items():
      call = lambda fn=fn: jax.block_until_ready(fn(bank, cache, index))
      call()  # compile
      ts = bench_common.time_windows(call, warmup=1, steps=1, windows=cfg["mask_runs"])
      res[f"{name}_ms_per_decode"] = bench_common.summary([1e3 * t for t in ts])
    rows, _ = fns["constrained"](bank, cache, index)
    assert (np.asarray(rows) >= 0).all()
    res["masking_ms_per_decode"] = res["constrained_ms_per_decode"]["median"]
    res["constrained_minus_free_ms_per_decode"] = (res["constrained_ms_per_decode"]["median"] -
                                                   res["free_ms_per_decode"]["median"])
    out["mask_only"]["catalogs"][str(n)] = res
    print(f"[mask-only] {n:>11,d} IDs, batch {b} x beam {w}, {steps} steps, ms per decode (median of "
          f"{cfg['mask_runs']}): constrained (= masking-only) {res['masking_ms_per_decode']:.3f}, free "
          f"{res['free_ms_per_decode']['median']:.3f}, "
          f"full-vocab mask {res['full_vocab_mask_ms_per_decode']['median']:.3f}", flush=True)
    write()
    del index, bank


def bench_build(cfg, out):
  from t2t_jax.decoding.index import build_index  # pylint: disable=import-outside-toplevel
  n = cfg["build_n"]
  gen_s, (seqs, vocab) = _timed(lambda: semantic_catalog(n, seed=4))
  holder = {}
  ts = []
  for _ in range(cfg["build_runs"]):
    ts.append(_timed(lambda: holder.update(ix=build_index(seqs, vocab)))[0])
  ix = holder["ix"]
  out["index_build"] = {"n": n, "catalog_generation_s": gen_s, "seconds": bench_common.summary(ts),
                        "bytes_per_id": ix.bytes_per_id, "bytes": ix.nbytes, "raw_table_bytes_per_id":
                        seqs.shape[1] * 4, "nodes": ix.num_nodes, "max_degree": list(ix.max_degree)}
  print(f"[index] {n:,d} IDs: build {bench_common.fmt_summary(out['index_build']['seconds'], ' s')}, "
        f"{ix.bytes_per_id:.2f} bytes/ID (raw int32 table: {seqs.shape[1] * 4})", flush=True)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--gpu", action="store_true", help="H100/H200 target configuration")
  p.add_argument("--quick", action="store_true", help="tiny smoke configuration")
  p.add_argument("--json", help="write the results here (after every stage)")
  p.add_argument("--runs", type=int, help="timed calls per measurement (>= 5)")
  p.add_argument("--batch", type=int)
  p.add_argument("--beam", type=int)
  p.add_argument("--catalogs", help="comma-separated catalog sizes for the end-to-end comparison")
  p.add_argument("--catalog", type=int, help="one catalog size (same as --catalogs N)")
  p.add_argument("--model", help="T5 size preset (tiny, small, base, ...)")
  p.add_argument("--mask_catalogs", help="comma-separated catalog sizes, e.g. 1000000,10000000")
  p.add_argument("--mask_runs", type=int)
  p.add_argument("--build_n", type=int, help="catalog size for the index build timing (0: skip)")
  p.add_argument("--peer_limit_s", type=float, help="time limit of the peer's timed calls per catalog")
  p.add_argument("--time_budget_s", type=float, default=None,
                 help="whole run: catalogs that cannot start with 20 s left are skipped, the peer's limit shrinks")
  p.add_argument("--threads", type=int, default=0,
                 help="torch threads for the peer (default 0: the fastest of 1..nproc, measured on a CPU)")
  p.add_argument("--xla_single_thread", action="store_true", help="make our XLA:CPU single-threaded")
  p.add_argument("--no_free", dest="free", action="store_false", help="skip free decoding")
  p.add_argument("--skip_hf", action="store_true")
  p.add_argument("--skip", default="", help="comma-separated: e2e,mask,build")
  return p.parse_args(argv)


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.xla_single_thread and "jax" not in sys.modules:  # XLA reads its flags at first import
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
  name = "gpu" if args.gpu else "quick" if args.quick else "cpu"
  cfg = dict(CONFIGS[name])
  for key in ("runs", "batch", "beam", "model", "build_n", "mask_runs", "peer_limit_s"):
    if getattr(args, key) is not None:
      cfg[key] = getattr(args, key)
  if args.catalog:
    cfg["catalogs"] = (args.catalog,)
  if args.catalogs:
    cfg["catalogs"] = tuple(int(float(x)) for x in args.catalogs.split(","))
  if args.mask_catalogs:
    cfg["mask_catalogs"] = tuple(int(float(x)) for x in args.mask_catalogs.split(","))
  if cfg["runs"] < bench_common.MIN_WINDOWS:
    print(f"note: --runs {cfg['runs']} < {bench_common.MIN_WINDOWS}: too few for a stable figure", flush=True)
  skip = set(filter(None, args.skip.split(",")))
  watch = bench_common.LoadWatch("bench_decode")
  out = {"benchmark": "bench_decode", "command": "python tools/bench_decode.py " + " ".join(argv),
         "config_name": name, "config": cfg, "definitions": DEFINITIONS,
         "machine": bench_common.machine_info()}
  write = lambda: bench_common.write_json(args.json, out)
  t_start = time.monotonic()
  time_left = lambda: (args.time_budget_s or float("inf")) - (time.monotonic() - t_start) - 5
  mask = ((lambda: bench_mask_only(cfg, out, write)) if "mask" not in skip and cfg["mask_catalogs"]
          else (lambda: None))
  if "e2e" not in skip:  # the first (smallest) catalog, then the masking-only runs, then the others
    bench_end_to_end(cfg, args, out, write, time_left, after_first=mask)
  else:
    mask()
  if "build" not in skip and cfg["build_n"]:
    bench_build(cfg, out)
  out["load"] = watch.report()
  write()
  return out


if __name__ == "__main__":
  main()
