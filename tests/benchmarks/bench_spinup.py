#!/usr/bin/env python
"""Spin-up benchmark: learned dynamics vs the random walk as the filters' forecast step.

Run directly: ``python tests/benchmarks/bench_spinup.py`` (``--quick``: a tiny
random model and a few steps, to check that the script works).  Not
collected by pytest.

What it does
------------
1. **Spin-up on WikiText-2 valid** (the first ``--train-tokens`` tokens of
   ``valid.txt``) with :func:`da_embed.spinup.spinup` on ``HiddenScale`` of the
   reference model (:func:`da_embed.reference.load_reference`, trained on the
   standard library's documentation, so WikiText-2 is a domain shift): the
   initial scales s_b, the transition network, the adapter and a diagonal Q,
   by Laplace-EM on the weak-constraint 4D-Var cost.  The checkpoints and the
   training trajectory go to ``OUT/spinup``.
2. **Evaluation on WikiText-2 test** (the first ``--test-tokens`` tokens) with
   :func:`da_embed.compare.compare` under the prequential protocol (chunk 32,
   context 224): every method once with the random-walk forecast (Q = 0.01,
   P0 = 0.1, the DESIGN section 8 settings) and once with the learned
   dynamics, Q and s_b (rows ``NAME+learned``); ``frozen+learned`` is the
   learned dynamics alone (no data assimilated; full state only).  With
   ``--subspace fisher:k`` both the spin-up and the filters work in the same
   k-dim gradient-principal subspace built from valid.  The table prints the
   perplexity of every row, its change against frozen with a 95 % block
   bootstrap interval, time and memory ratios; the last lines give the
   change of each ``+learned`` row against its random-walk row.

Nothing is tuned on test.  The spin-up settings are fixed in advance (the
defaults below); the filters keep their compare defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np


def _paired(a, b):
    """Mean per-chunk NLL difference a - b in percent of perplexity, with a 95% interval."""
    from da_embed.metrics import paired_change

    return paired_change(a, b, n_boot=2000, seed=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, a few steps")
    p.add_argument("--train-tokens", type=int, default=65536)
    p.add_argument("--test-tokens", type=int, default=8192)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--learn", default="all", help="spin-up parts to learn (SpinupConfig.learn)")
    p.add_argument("--no-climatology", action="store_true",
                   help="learn s_b by Adam from track starts (SpinupConfig.climatology=False)")
    p.add_argument("--shrinkage", type=float, default=None,
                   help="SpinupConfig.shrinkage (prior precision towards the random walk; "
                        "default: SpinupConfig's)")
    p.add_argument("--select-tokens", type=int, default=8192,
                   help="after spin-up, also compare the EKF with and without the learned "
                        "dynamics on this many held-out tokens of valid (after --train-tokens "
                        "plus a gap of 8192), the text the spin-up settings were selected on "
                        "(0: skip)")
    p.add_argument("--methods", default="frozen,ekf,etkf")
    p.add_argument("--subspace", default=None,
                   help="spin up and compare in this subspace (fisher:k from the first "
                        "--tune-tokens tokens of valid, the same basis in both)")
    p.add_argument("--tune-tokens", type=int, default=4096)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--out", default="runs/bench_spinup")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    import torch

    from da_embed.assimilator import PrequentialConfig
    from da_embed.compare import compare
    from da_embed.corpora import read_text, wikitext_path
    from da_embed.placements import HiddenScale
    from da_embed.spinup import SpinupConfig, spinup

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        from da_embed.testing import random_input_ids, tiny_gpt2

        model = tiny_gpt2(initializer_range=1.0)
        train = random_input_ids(model, 1, 2000, seed=1)[0].numpy()
        test = random_input_ids(model, 1, 600, seed=2)[0].numpy()
        select = random_input_ids(model, 1, 300 if args.select_tokens else 0, seed=3)[0].numpy()
        chunk, context, steps, name = 16, 32, 5, "tiny GPT-2 (random weights), random tokens"
    else:
        from da_embed.reference import encode_text, load_reference

        model, tokenizer, info = load_reference(progress=True)
        valid = encode_text(tokenizer, read_text(wikitext_path("valid")))
        train = valid[:args.train_tokens]
        gap = args.train_tokens + 8192  # held-out valid: never trained on
        select = valid[gap:gap + args.select_tokens]
        test = encode_text(tokenizer, read_text(wikitext_path("test")))[:args.test_tokens]
        chunk, context, steps = 32, 224, args.steps
        name = f"reference model ({info.get('path', 'cache')})"
    print(f"model: {name}; spin-up on {train.size} tokens of WikiText-2 valid, evaluation on "
          f"{test.size} tokens of test", flush=True)
    cfg = SpinupConfig(chunk=chunk, context=context, window=args.window, batch=args.batch,
                       steps=steps, lr=args.lr, lr_half_life=steps / 2, m_steps=2,
                       learn=args.learn, climatology=not args.no_climatology,
                       **({} if args.shrinkage is None else {"shrinkage": args.shrinkage}),
                       checkpoint_every=max(1, steps // 4))
    print(f"spin-up settings: {cfg}", flush=True)
    from da_embed.subspaces import make_subspace

    placement = HiddenScale(model)
    protocol = PrequentialConfig(chunk=chunk, context=context)
    state = make_subspace(placement, args.subspace, tune_ids=train, protocol=protocol,
                          max_tokens=args.tune_tokens)
    print(f"state: {type(state).__name__} (n = {state.state_dim})"
          + ("" if args.subspace is None else f", {args.subspace} from valid"), flush=True)
    tic = time.perf_counter()
    res = spinup(state, train, cfg, out=os.path.join(args.out, "spinup"), progress=True)
    train_s = time.perf_counter() - tic
    h = res.history
    k = max(1, len(h.step) // 10)
    print(f"spin-up: {res.step} steps in {train_s:.0f} s; first/last {k} steps mean: "
          f"objective {h.objective.values[:k].mean():.4f} -> {h.objective.values[-k:].mean():.4f}"
          f", NLL at S* {h.nll.values[:k].mean():.4f} -> {h.nll.values[-k:].mean():.4f}, "
          f"forecast NLL {h.nll_forecast.values[:k].mean():.4f} -> "
          f"{h.nll_forecast.values[-k:].mean():.4f} nat/token; Q diagonal mean "
          f"{np.mean(res.Q):.4g} [{np.min(res.Q):.3g}, {np.max(res.Q):.3g}], "
          f"|s_b| = {np.linalg.norm(res.initial_state):.3f}", flush=True)
    if select.size > chunk + context:
        print(f"\nselection text: {select.size} held-out tokens of valid (tokens "
              f"{args.train_tokens + 8192}-), EKF only", flush=True)
        sel = compare(model, select, methods="frozen,ekf", placement=placement,
                      protocol=protocol, subspace=args.subspace, tune_ids=train,
                      tune_tokens=args.tune_tokens, P0=0.1, Q=0.01, dynamics=res,
                      out=os.path.join(args.out, "compare-select"), model_name=name,
                      progress=True)
        _learned_vs_walk(sel)
    tic = time.perf_counter()
    print(f"\ntest: {test.size} tokens of test", flush=True)
    cmp = compare(model, test, methods=args.methods, placement=placement, protocol=protocol,
                  subspace=args.subspace, tune_ids=train, tune_tokens=args.tune_tokens,
                  members=args.members, P0=0.1, Q=0.01, dynamics=res,
                  out=os.path.join(args.out, "compare"), model_name=name, progress=True)
    print(f"compare: {time.perf_counter() - tic:.0f} s")
    _learned_vs_walk(cmp)
    return 0


def _learned_vs_walk(cmp) -> None:
    """Print each ``+learned`` row against its random-walk row (paired per-chunk NLL)."""
    print("\nlearned dynamics against the random walk, same filter (paired per-chunk NLL, "
          "95% block bootstrap):")
    for row in cmp.rows:
        m = row["method"]
        if not m.endswith("+learned"):
            continue
        base = m[:-len("+learned")]
        a, b = cmp.datasets[m]["nll"].values, cmp.datasets[base]["nll"].values
        K = min(a.size, b.size)
        pc = _paired(a[:K], b[:K])
        ppl = {x: math.exp(cmp.datasets[x]["nll"].values[:K].mean()) for x in (m, base)}
        print(f"  {m:>16}: perplexity {ppl[m]:.6g} vs {base} {ppl[base]:.6g}: "
              f"{pc.change:+.1f}% [{pc.low:+.1f}, {pc.high:+.1f}]", flush=True)


if __name__ == "__main__":
    sys.exit(main())
