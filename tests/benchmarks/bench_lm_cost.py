#!/usr/bin/env python
"""Wall time per chunk of the online methods on ``HiddenScale``, as ratios to frozen.

Run with ``python tests/benchmarks/bench_lm_cost.py`` (a few minutes on 2
cores; ``--models reference,gpt2`` adds a GPT-2-small-shaped model,
``--legacy`` adds the previous set-up of the HiddenScale fast path side by
side, ``--profile METHOD`` prints a cProfile of one run instead).  Not
collected by pytest.

The target of issue 4: ``HiddenScale`` with 16 members costs at most 1.5x
frozen (wall time of the prequential run per chunk, chunk 32, context 224).

What it measures
----------------
* Model: the reference architecture (``da_embed.reference._build_model(
  ReferenceConfig())``: Llama-style, d_model 256, 4 layers, vocabulary 4096,
  tied embeddings) with its random initial weights; timing does not depend on
  the weights.  ``--models gpt2`` is GPT-2 small's shape (d 768, 12 layers,
  vocabulary 50257), random weights too.
* Stream: uniformly random token ids, ``context + chunks * chunk + 1`` long.
  The protocol starts at the stream's second token, so the first
  ``context / chunk`` chunks read a shorter context; ``chunks`` counts the
  chunks with the full context.
* Methods (``HiddenScale``, ``OnlineAssimilator`` defaults: random walk Q
  0.01, P0 0.1, R 1, decrement target): frozen, dyneval (Adam, one step),
  ekf (full n x n covariance), ekf-diag (diagonal covariance), etkf and enkf
  with 16 members on the full state (n = d) and in 8-dimensional subspaces
  (``fisher:8`` from gradients on a separate random stream; ``random:8``).
* Time per chunk (the target's number) = the mean over the full-context
  chunks of the logged per-chunk ``wall_time`` (forecast + prequential score
  with the trunk + analysis with the member heads and the filter).  "run" =
  the whole ``OnlineAssimilator.run`` call (set-up and logging included)
  divided by all its chunks.  Each number is the median over ``--repeats``
  repeats, interleaved (frozen, dyneval, ..., frozen, dyneval, ...) so that
  load from other processes hits every method alike; one untimed warm-up run
  per method first.  Ratios are method time / frozen time, for each torch
  thread count.
* "cpu": CPU time of this process per full-context chunk (``time.process_time``
  between consecutive chunk callbacks, logging included), median over
  repeats.  On a shared machine wall times include waiting for other
  processes; with one torch thread the CPU time is what the wall time would
  be on an idle core, so its ratio is the robust one under load (with two
  threads it also counts OpenMP's spin-waiting).
* "FLOP x": torch's floating-point operations of the whole run
  (``torch.utils.flop_counter.FlopCounterMode``) over frozen's: the time ratio
  that the arithmetic alone would give, the floor beside each time ratio.
* Breakdown: medians over chunks of the logged ``wall_time_score`` (the
  trunk plus the forecast mean's head) and ``wall_time_analysis`` (member
  heads plus the filter), in milliseconds.
* ``--legacy``: every method also runs with the fast path as it was before
  this benchmark (:func:`legacy_setup_fast`: the model's own head on all L
  chunk positions and an L-position self-check, i.e. two extra head products
  per chunk; and all members in one head product instead of blocks of
  ``_FAST_BLOCK_ROWS`` rows), interleaved with the current one, so
  before/after are measured under the same load.  Its ratios are to the
  legacy frozen run.

The header reports the load average (``os.getloadavg``) before and after:
the machine is shared, so absolute times move; read the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from da_embed.assimilator import OnlineAssimilator, PrequentialConfig  # noqa: E402
from da_embed.methods import make_method, split_method  # noqa: E402
from da_embed.observations import TokenNLLObservation  # noqa: E402
from da_embed.placements import HiddenScale  # noqa: E402
from da_embed.subspaces import make_subspace  # noqa: E402

#: (label, method spec) rows; the spec is ``name[@subspace]`` as on the command line.
METHODS = ("frozen", "dyneval", "ekf", "ekf-diag", "etkf", "enkf", "etkf@fisher:8",
           "enkf@fisher:8", "etkf@random:8")


def reference_model():
    """The reference architecture with random weights (eval mode)."""
    from da_embed.reference import ReferenceConfig, _build_model

    return _build_model(ReferenceConfig()).eval()


def gpt2_small():
    """GPT-2 small's shape (124M parameters) with random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).eval()


def legacy_setup_fast(self, hidden, sub):
    """The fast path's set-up before this benchmark (git ded8be1), verbatim, for ``--legacy``."""
    from torch.nn import functional as F

    from da_embed.observations import _FAST_PATH_TOL

    model = hidden.model
    head = model.get_output_embeddings()
    captured = {}

    def grab(module, args):
        captured["h"] = args[0]

    handle = head.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            try:
                out = model(input_ids=self._inputs, use_cache=False, logits_to_keep=self.nobs)
            except TypeError:
                out = model(input_ids=self._inputs, use_cache=False)
    finally:
        handle.remove()
    L = self.nobs
    h = captured["h"][0, -L:]
    logits_model = out.logits[0, -L:]
    self._W = head.weight
    self._b = head.bias
    self._h = h
    self._y = torch.as_tensor(self.targets, device=h.device)
    self._sub = sub
    self.summary_ = h.detach().double().mean(0).cpu().numpy()
    with torch.no_grad():
        mine = F.linear(h, self._W, self._b)
    scale = float(logits_model.abs().max().clamp_min(1.0))
    if float((mine - logits_model).abs().max()) <= _FAST_PATH_TOL * scale:
        self.fast_ = True


def _run(runner, ids, legacy, context=None):
    """One run; with ``legacy`` the previous fast-path set-up is swapped in for it.

    Returns the trajectory and the mean CPU time of this process per full-context
    chunk (between consecutive chunk callbacks; None without ``context``).
    """
    import da_embed.observations as obs_module

    current, rows = TokenNLLObservation._setup_fast, obs_module._FAST_BLOCK_ROWS
    if legacy:  # the previous set-up, and all members in one head product
        TokenNLLObservation._setup_fast = legacy_setup_fast
        obs_module._FAST_BLOCK_ROWS = 1 << 30
    stamps, full = [time.process_time()], []

    def tick(k, record):
        stamps.append(time.process_time())
        full.append(record["context_tokens"] == context)

    try:
        ds = runner.run(ids, callback=tick)
    finally:
        TokenNLLObservation._setup_fast, obs_module._FAST_BLOCK_ROWS = current, rows
    cpu = np.diff(stamps)[np.asarray(full, dtype=bool)]
    return ds, (float(cpu.mean()) if cpu.size else None)


def _runner(placements, base, spec, protocol, members, tune_ids):
    name, sub = split_method(spec)
    if sub not in placements:
        placements[sub] = make_subspace(base, sub, tune_ids=tune_ids, protocol=protocol,
                                        max_tokens=1024)
    flt = make_method(name, members=members)
    return OnlineAssimilator(placements[sub], flt, protocol=protocol, members=members,
                             label=spec)


def flops_per_run(runner, ids) -> float:
    """Floating-point operations of torch in one ``runner.run(ids)`` (``FlopCounterMode``).

    The filters' own numpy arithmetic is not counted (EKF: a few ``n^2 L`` products, about
    13 MFLOP per chunk at n = 256, L = 32; ensembles in a subspace: negligible).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        runner.run(ids)
    return float(counter.get_total_flops())


def bench(model, methods, *, threads=(1, 2), repeats=5, chunks=12, members=16, chunk=32,
          context=224, seed=0, legacy=False, out=print):
    """Median time per chunk of each method and its ratio to frozen, per thread count.

    Returns
    -------
    list of dict
        One row per (threads, set-up, method): ms_per_chunk, ratio, score_ms, analysis_ms.
    """
    protocol = PrequentialConfig(chunk=chunk, context=context)
    V = int(model.get_output_embeddings().weight.shape[0])
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=context + chunks * chunk + 1)
    tune_ids = rng.integers(0, V, size=context + 16 * chunk + 1)
    base = HiddenScale(model)
    placements = {}
    methods = ["frozen"] + [m for m in methods if m != "frozen"]
    runners = {m: _runner(placements, base, m, protocol, members, tune_ids) for m in methods}
    variants = [False, True] if legacy else [False]
    keys = [(v, m) for v in variants for m in methods]
    flops = {m: flops_per_run(runners[m], ids) for m in methods}  # once: same for any thread count
    rows = []
    for nt in threads:
        torch.set_num_threads(int(nt))
        times = {key: [] for key in keys}
        whole = {key: [] for key in keys}
        parts = {}
        cpu = {key: [] for key in keys}
        for v, m in keys:  # warm-up (allocator, lazy imports, caches)
            _run(runners[m], ids[: context + 2 * chunk + 1], v)
        for _ in range(repeats):
            for v, m in keys:  # interleaved: load changes hit every method alike
                tic = time.perf_counter()
                ds, c = _run(runners[m], ids, v, context)
                cpu[(v, m)].append(c)
                whole[(v, m)].append((time.perf_counter() - tic) / ds.sizes["time"])
                full = ds["context_tokens"].values == context
                times[(v, m)].append(float(ds["wall_time"].values[full].mean()))
                parts[(v, m)] = ds
        out(f"\ntorch threads {nt}: median over {repeats} repeats, {chunks} chunks of "
            f"{chunk} tokens, context {context}, {members} members; load "
            f"{os.getloadavg()[0]:.2f}")
        out(f"{'method':<16}{'set-up':<9}{'ms/chunk':>9}{'x frozen':>9}{'score ms':>9}"
            f"{'analysis':>9}{'run ms':>8}{'run x':>7}{'cpu ms':>8}{'cpu x':>7}{'FLOP x':>8}")
        for v, m in keys:
            t = statistics.median(times[(v, m)])
            base_t = statistics.median(times[(v, "frozen")])
            w = statistics.median(whole[(v, m)])
            base_w = statistics.median(whole[(v, "frozen")])
            c = statistics.median(cpu[(v, m)])
            base_c = statistics.median(cpu[(v, "frozen")])
            ds = parts[(v, m)]
            full = ds["context_tokens"].values == context
            score = 1e3 * float(np.median(ds["wall_time_score"].values[full]))
            ana = 1e3 * float(np.median(ds["wall_time_analysis"].values[full]))
            setup = "legacy" if v else "current"
            rows.append({"threads": nt, "setup": setup, "method": m, "ms_per_chunk": 1e3 * t,
                         "ratio": t / base_t, "score_ms": score, "analysis_ms": ana,
                         "run_ms_per_chunk": 1e3 * w, "run_ratio": w / base_w,
                         "cpu_ms_per_chunk": 1e3 * c, "cpu_ratio": c / base_c,
                         "flop_ratio": flops[m] / flops["frozen"]})
            out(f"{m:<16}{setup:<9}{1e3 * t:>9.1f}{t / base_t:>9.2f}{score:>9.1f}{ana:>9.1f}"
                f"{1e3 * w:>8.1f}{w / base_w:>7.2f}{1e3 * c:>8.1f}{c / base_c:>7.2f}"
                f"{flops[m] / flops['frozen']:>8.2f}")
    return rows


def profile(model, spec, *, members=16, chunks=12, chunk=32, context=224, threads=1, top=30):
    """cProfile of one run of ``spec`` (cumulative time, ``top`` rows)."""
    import cProfile
    import pstats

    torch.set_num_threads(threads)
    protocol = PrequentialConfig(chunk=chunk, context=context)
    V = int(model.get_output_embeddings().weight.shape[0])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=context + chunks * chunk + 1)
    tune_ids = rng.integers(0, V, size=context + 16 * chunk + 1)
    runner = _runner({}, HiddenScale(model), spec, protocol, members, tune_ids)
    runner.run(ids[: context + 2 * chunk + 1])
    prof = cProfile.Profile()
    prof.enable()
    runner.run(ids)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunks", type=int, default=12)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--models", default="reference",
                   help="comma-separated: reference (the reference architecture), gpt2 (GPT-2 "
                        "small's shape; slow: about 1 s of CPU per chunk)")
    p.add_argument("--gpt2-chunks", type=int, default=2, help="full-context chunks per gpt2 run")
    p.add_argument("--legacy", action="store_true",
                   help="also the previous fast-path set-up, interleaved (before/after)")
    p.add_argument("--profile", default=None, help="cProfile one run of this method instead")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    load0 = os.getloadavg()
    print(f"bench_lm_cost: {' '.join(sys.argv)}")
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"({os.cpu_count()} cores); torch {torch.__version__}")
    known = {"reference": ("reference (Llama-style d256 L4 V4096, random weights)",
                           reference_model, args.chunks),
             "gpt2": ("GPT-2 small shape (d768 L12 V50257, random weights)", gpt2_small,
                      args.gpt2_chunks)}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names or any(m not in known for m in names):
        p.error(f"--models: choose from {', '.join(known)}, got {args.models!r}")
    for title, build, chunks in (known[m] for m in names):
        model = build()
        print(f"\n== {title}")
        if args.profile:
            profile(model, args.profile, members=args.members, chunks=chunks,
                    threads=threads[0])
            continue
        bench(model, methods, threads=threads, repeats=args.repeats, chunks=chunks,
              members=args.members, legacy=args.legacy)
    load1 = os.getloadavg()
    print(f"\nload average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
