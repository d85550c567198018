#!/usr/bin/env python
"""Spin-up benchmark: learned dynamics vs the random walk as the filters' forecast step.

Run directly: ``python tests/benchmarks/bench_spinup.py`` (``--quick``: a tiny
random model and a few steps, to check that the script works).  Not
collected by pytest.

What it does
------------
Two steps share a selection file (:mod:`da_embed.selection`):

1. **Selection step on WikiText-2 valid only** (``--step select``): it is
   handed the path of ``valid.txt`` and nothing else to read (a test split is
   refused; ``test.txt`` is never opened).  Spin-up on the first
   ``--train-tokens`` tokens of ``valid.txt`` with :func:`da_embed.spinup.spinup`
   on ``HiddenScale`` of the reference model
   (:func:`da_embed.reference.load_reference`, trained on the standard
   library's documentation, so WikiText-2 is a domain shift): the initial
   scales s_b, the transition network, the adapter and a diagonal Q, by
   Laplace-EM on the weak-constraint 4D-Var cost.  The checkpoints and the
   training trajectory go to ``OUT/spinup``.  Then the EKF with and without
   the learned dynamics on ``--select-tokens`` held-out tokens of valid
   (after ``--train-tokens`` plus a gap of 8192): the selection text.  The
   step writes ``OUT/selection.json``: the rows to report and their settings,
   the spin-up settings and checkpoint (with its SHA-256), the subspace basis,
   the held-out result and the SHA-256 of ``valid.txt``.
2. **Report step on WikiText-2 test** (``--step report``): reads the
   selection file and the first ``--test-tokens`` tokens of ``test.txt``
   (refused if it is, or overlaps, a selection input) and runs
   :func:`da_embed.compare.compare` under the prequential protocol (chunk
   32, context 224): every selected method once with the random-walk
   forecast (Q = 0.01, P0 = 0.1, the DESIGN section 8 settings) and once
   with the learned dynamics, Q and s_b (rows ``NAME+learned``);
   ``frozen+learned`` is the learned dynamics alone (no data assimilated;
   full state only).  With ``--subspace fisher:k`` both the spin-up and the
   filters work in the same k-dim gradient-principal subspace built from
   valid.  The table prints the perplexity of every row, its change against
   frozen with a 95 % block bootstrap interval, time and memory ratios; the
   last lines give the change of each ``+learned`` row against its
   random-walk row.  Every method runs once untimed on a few tokens first
   (warm-up).

``--step all`` (the default) runs one step, then the other.  Nothing is
tuned on test: the spin-up settings are fixed in advance (the defaults
below; the shrinkage was selected on held-out valid, docs/benchmarks.md),
the filters keep their compare defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' _common


def _paired(a, b):
    """Mean per-chunk NLL difference a - b in percent of perplexity, with a 95% interval."""
    from da_embed.metrics import paired_change

    return paired_change(a, b, n_boot=2000, seed=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, a few steps")
    p.add_argument("--step", choices=("all", "select", "report"), default="all",
                   help="select: spin-up and held-out check on valid, writes the selection "
                        "file; report: test, with what the file names; all: both")
    p.add_argument("--selection", default=None, help="selection file (default OUT/selection.json)")
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
    p.add_argument("--objective", choices=("em", "predictive"), default="em",
                   help="SpinupConfig.objective: the EM objective or the prequential NLL "
                        "through an unrolled EKF")
    p.add_argument("--grad-clip", type=float, default=None,
                   help="SpinupConfig.grad_clip (gradient-norm clipping; default none)")
    p.add_argument("--select-tokens", type=int, default=8192,
                   help="held-out tokens of valid (after --train-tokens plus a gap of 8192) on "
                        "which the selection step compares the EKF with and without the learned "
                        "dynamics (0: skip)")
    p.add_argument("--methods", default="frozen,ekf,etkf")
    p.add_argument("--subspace", default=None,
                   help="spin up and compare in this subspace (fisher:k from the first "
                        "--tune-tokens tokens of valid, the same basis in both)")
    p.add_argument("--tune-tokens", type=int, default=4096)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--out", default="runs/bench_spinup")
    p.add_argument("--threads", type=int, default=None)
    return p


def _model(quick: bool):
    if quick:
        from da_embed.testing import tiny_gpt2

        return tiny_gpt2(initializer_range=1.0), None, "tiny GPT-2 (random weights), random tokens"
    from da_embed.reference import load_reference

    model, tokenizer, info = load_reference(progress=True)
    return model, tokenizer, f"reference model ({info.get('path', 'cache')})"


def _protocol(quick: bool):
    from da_embed.assimilator import PrequentialConfig

    return PrequentialConfig(chunk=16, context=32) if quick else PrequentialConfig(chunk=32,
                                                                                   context=224)


def select_step(args, valid_path, forbidden=()) -> str:
    """Spin-up and held-out check on valid; writes the selection file.  Never reads test."""
    from da_embed.compare import compare
    from da_embed.placements import HiddenScale
    from da_embed.selection import file_digest, read_selection_input, write_selection
    from da_embed.spinup import SpinupConfig, spinup
    from da_embed.subspaces import make_subspace

    if not args.quick:  # first of all: refuse a test split, before anything is loaded
        text, rec = read_selection_input(valid_path, role="valid", forbidden=forbidden)
    model, tokenizer, name = _model(args.quick)
    if args.quick:  # random tokens stand for valid: nothing is read
        from da_embed.testing import random_input_ids

        ids = random_input_ids(model, 1, 2000 + 300, seed=1)[0].numpy()
        train, select = ids[:2000], ids[2000:2000 + (300 if args.select_tokens else 0)]
        inputs = [{"role": "valid", "path": "(random tokens, seed 1)", "sha256": "-", "bytes": 0}]
        steps = 5
    else:
        from da_embed.reference import encode_text

        valid = encode_text(tokenizer, text)
        train = valid[:args.train_tokens]
        gap = args.train_tokens + 8192  # held-out valid: never trained on
        select = valid[gap:gap + args.select_tokens]
        inputs, steps = [rec], args.steps
    protocol = _protocol(args.quick)
    print(f"model: {name}; selection step: spin-up on {train.size} tokens of WikiText-2 valid, "
          f"held-out check on {select.size} tokens of valid", flush=True)
    cfg = SpinupConfig(chunk=protocol.chunk, context=protocol.context, window=args.window,
                       batch=args.batch, steps=steps, lr=args.lr, lr_half_life=steps / 2,
                       m_steps=2, learn=args.learn, climatology=not args.no_climatology,
                       **({} if args.shrinkage is None else {"shrinkage": args.shrinkage}),
                       objective=args.objective, grad_clip=args.grad_clip,
                       checkpoint_every=max(1, steps // 4))
    print(f"spin-up settings: {cfg}", flush=True)
    placement = HiddenScale(model)
    state = make_subspace(placement, args.subspace, tune_ids=train, protocol=protocol,
                          max_tokens=args.tune_tokens)
    basis = None
    if state is not placement:  # the report step uses this very basis
        basis = os.path.join(args.out, "basis.npz")
        os.makedirs(args.out, exist_ok=True)
        np.savez(basis, basis=state.basis.numpy(), reference=state.reference.numpy())
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
    held_out = None
    if select.size > protocol.chunk + protocol.context:
        print(f"\nselection text: {select.size} held-out tokens of valid (tokens "
              f"{args.train_tokens + 8192}-), EKF only", flush=True)
        sel = compare(model, select, methods="frozen,ekf", placement=state,
                      protocol=protocol, P0=0.1, Q=0.01, dynamics=res,
                      out=os.path.join(args.out, "compare-select"), model_name=name,
                      progress=True)
        held_out = _learned_vs_walk(sel)
    ckpt = str(res.checkpoint)
    settings = {"P0": 0.1, "Q": 0.01, "members": args.members}
    methods = [{"row": m.strip(), "settings": settings} for m in args.methods.split(",")
               if m.strip()]
    path = args.selection or os.path.join(args.out, "selection.json")
    write_selection(
        path, step="bench_spinup", methods=methods,
        headline={"methods": [m["row"] for m in methods if m["row"] != "frozen"],
                  "rule": "each method's +learned row against its random-walk row; "
                          "settings fixed in advance, spin-up on valid"},
        budget={"configs_per_method": 1, "spinup_steps": res.step,
                "train_tokens": int(train.size), "select_tokens": int(select.size),
                "spinup_seconds": round(train_s, 1)},
        inputs=inputs, forbidden=forbidden,
        extra={"quick": bool(args.quick), "subspace": args.subspace,
               "basis": None if basis is None else {"file": basis, "sha256": file_digest(basis),
                                                    "origin": state.origin},
               "spinup_checkpoint": {"file": ckpt, "sha256": file_digest(ckpt)},
               "spinup_config": str(cfg), "held_out": held_out,
               "protocol": {"chunk": protocol.chunk, "context": protocol.context}})
    print(f"selection file: {path}", flush=True)
    return path


def report_step(args, selection_path, test_path) -> int:
    """Test, with what the selection file names; no choice is made here."""
    from _common import warm_up_compare

    from da_embed.compare import compare
    from da_embed.placements import HiddenScale, Subspace
    from da_embed.selection import file_digest, read_report_text, read_selection

    sel = read_selection(selection_path)
    ex = sel["extra"]
    model, tokenizer, name = _model(bool(ex["quick"]))
    if ex["quick"]:
        from da_embed.testing import random_input_ids

        test = random_input_ids(model, 1, 600, seed=2)[0].numpy()
    else:
        from da_embed.reference import encode_text

        test = encode_text(tokenizer, read_report_text(test_path, sel))[:args.test_tokens]
    for what in ("spinup_checkpoint", "basis"):
        rec = ex.get(what)
        if rec and file_digest(rec["file"]) != rec["sha256"]:
            raise ValueError(f"{rec['file']} changed since the selection step")
    protocol = _protocol(bool(ex["quick"]))
    placement = HiddenScale(model)
    state = placement
    if ex.get("basis"):
        with np.load(ex["basis"]["file"]) as z:
            state = Subspace(placement, z["basis"], z["reference"], origin=ex["basis"]["origin"])
    methods = ",".join(m["row"] for m in sel["methods"])
    st = sel["methods"][0]["settings"]
    print(f"model: {name}; report step: {test.size} tokens of test; selection {selection_path} "
          f"({sel['created']}; {', '.join(r['role'] + ' sha256 ' + r['sha256'][:12] for r in sel['inputs'])})",
          flush=True)
    if ex.get("held_out"):
        print("held-out valid (selection step): " + "; ".join(
            f"{k} {v['change']:+.1f}% [{v['low']:+.1f}, {v['high']:+.1f}]"
            for k, v in ex["held_out"].items()), flush=True)
    kw = dict(methods=methods, placement=state, members=st["members"], P0=st["P0"], Q=st["Q"],
              dynamics=ex["spinup_checkpoint"]["file"], model_name=name, progress=False)
    warm_up_compare(methods, model, test, protocol, kw)
    tic = time.perf_counter()
    cmp = compare(model, test, protocol=protocol, out=os.path.join(args.out, "compare"), **kw)
    print(f"compare: {time.perf_counter() - tic:.0f} s")
    _learned_vs_walk(cmp)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from da_embed.corpora import wikitext_path

    if args.threads:
        torch.set_num_threads(args.threads)
    selection = args.selection or os.path.join(args.out, "selection.json")
    try:
        if args.step in ("all", "select"):
            if args.quick:
                select_step(args, None)
            else:  # the selection step gets the valid path; test is named as forbidden only
                select_step(args, wikitext_path("valid"), forbidden=[wikitext_path("test")])
        if args.step in ("all", "report"):
            return report_step(args, selection, None if args.quick else wikitext_path("test"))
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench_spinup: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _pct(x: float) -> str:
    """A signed change in percent: one decimal, or 3 significant digits past 1e6 (a diverged
    row would print dozens of digits)."""
    return f"{x:+.3g}" if math.isfinite(x) and abs(x) >= 1e6 else f"{x:+.1f}"


def _learned_vs_walk(cmp) -> dict:
    """Print each ``+learned`` row against its random-walk row (paired per-chunk NLL)."""
    out = {}
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
        with np.errstate(over="ignore"):  # a diverged row's perplexity is inf, not an error
            ppl = {x: float(np.exp(cmp.datasets[x]["nll"].values[:K].mean())) for x in (m, base)}
        print(f"  {m:>16}: perplexity {ppl[m]:.6g} vs {base} {ppl[base]:.6g}: "
              f"{_pct(pc.change)}% [{_pct(pc.low)}, {_pct(pc.high)}]", flush=True)
        out[m] = {"change": pc.change, "low": pc.low, "high": pc.high, "chunks": int(K)}
    return out


if __name__ == "__main__":
    sys.exit(main())
