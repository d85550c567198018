#!/usr/bin/env python
"""Learned (predictive spin-up) dynamics against the random walk on the two-domain stream.

Run directly: ``python tests/benchmarks/bench_switch.py`` (``--quick``: a tiny
random model, to check that the script works).  Not collected by pytest.
Issue 15, benchmark (b): the stream of ``bench_t2.py`` (held-out standard-library
docstrings and WikiText-2 ``test.txt`` in alternating segments), the EKF with
the learned dynamics against the same EKF with the random walk, dynamic
evaluation, ``t2`` and ``t2-cem``.

Two steps share a selection file (:mod:`da_embed.selection`):

1. **Selection** (``--step select``) reads WikiText-2 ``valid.txt`` (through
   :func:`da_embed.selection.read_selection_input`: a test split is refused)
   and the reference model's own training text
   (:func:`da_embed.corpora.stdlib_corpus`), never ``test.txt`` or the
   held-out docstrings.  Spin-up text: the first ``--train-tokens`` tokens of
   each, in alternating segments of ``--segment-tokens``; a 16-dim Fisher
   subspace of ``HiddenScale`` is built from it, and
   :func:`da_embed.spinup.spinup` with ``objective="predictive"`` learns s_b,
   the transition network, the adapter and Q there.  Selection text: the next
   ``--select-tokens`` of each (after a gap of 8192), alternating the same
   way: the EKF with every checkpoint of the run is compared with the
   random-walk EKF there, and the checkpoint with the lowest held-out NLL is
   selected.  The SVF experts of ``t2`` / ``t2-cem`` are trained on the
   spin-up text's two domains (as ``bench_t2``).
2. **Report** (``--step report``) reads the selection file and the report
   stream (the first ``--test-tokens`` tokens of the ``bench_t2`` stream; its
   WikiText part is refused if it overlaps a selection input) and runs
   :func:`da_embed.compare.compare` twice on the same chunks: ``frozen,ekf``
   on the ``HiddenScale`` subspace with the selected dynamics (rows ``ekf``
   and ``ekf+learned``), and ``frozen,dyneval,t2,t2-cem`` on the SVF state
   with the experts.  It prints both tables and the paired per-chunk NLL
   differences of ``ekf+learned`` against every other row.

Nothing is tuned on the report stream; the filters keep their compare
defaults (P0 0.1, Q 0.01 for the random walk; the learned Q and s_b for the
learned row), dyneval's learning rate is tuned on valid.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' _common
from _common import warm_up_compare  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, a few steps")
    p.add_argument("--step", choices=("all", "select", "report"), default="all")
    p.add_argument("--selection", default=None, help="selection file (default OUT/selection.json)")
    p.add_argument("--train-tokens", type=int, default=16384, help="spin-up tokens per domain")
    p.add_argument("--select-tokens", type=int, default=2048, help="selection tokens per domain")
    p.add_argument("--test-tokens", type=int, default=4096, help="report stream tokens scored")
    p.add_argument("--segment-tokens", type=int, default=1024)
    p.add_argument("--subspace", default="fisher:16")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--checkpoints", type=int, default=3, help="checkpoints selected among")
    p.add_argument("--svf-methods", default="frozen,dyneval,t2,t2-cem",
                   help="rows of the SVF comparison (no t2 row: no experts are trained)")
    p.add_argument("--expert-steps", type=int, default=40)
    p.add_argument("--expert-lr", type=float, default=0.05)
    p.add_argument("--population", type=int, default=16, help="CEM population of t2-cem")
    p.add_argument("--tune-tokens", type=int, default=4096)
    p.add_argument("--out", default="runs/bench_switch")
    p.add_argument("--threads", type=int, default=1)
    return p


def _model(quick: bool):
    if quick:
        from da_embed.testing import tiny_gpt2

        return tiny_gpt2(initializer_range=1.0), None, "tiny GPT-2 (random weights), random tokens"
    from da_embed.reference import load_reference

    model, tokenizer, info = load_reference(progress=True)
    return model, tokenizer, f"reference model ({info.get('path', 'cache')})"


def _protocol(quick: bool, max_tokens=None):
    from da_embed.assimilator import PrequentialConfig

    if quick:
        return PrequentialConfig(chunk=16, context=32, max_tokens=max_tokens)
    return PrequentialConfig(chunk=32, context=224, max_tokens=max_tokens)


def _paired(a, b):
    from da_embed.metrics import paired_change

    K = min(a.size, b.size)
    return paired_change(a[:K], b[:K], n_boot=2000, seed=0)


def select_step(args, valid_path, forbidden=()) -> str:
    """Spin-up, checkpoint selection and experts on valid + stdlib; never reads test."""
    from da_embed.compare import compare
    from da_embed.corpora import alternate_segments
    from da_embed.placements import HiddenScale
    from da_embed.selection import file_digest, read_selection_input, write_selection
    from da_embed.spinup import SpinupConfig, spinup
    from da_embed.subspaces import make_subspace
    from da_embed.transformer2 import train_experts

    if not args.quick:  # first of all: refuse a test split, before anything is loaded
        text, rec = read_selection_input(valid_path, role="valid", forbidden=forbidden)
    model, tokenizer, name = _model(args.quick)
    n, m, gap = args.train_tokens, args.select_tokens, 8192
    if args.quick:
        from da_embed.testing import random_input_ids

        n, m, gap = 800, 200, 0
        a = random_input_ids(model, 1, n + m, seed=1)[0].numpy()
        b = (random_input_ids(model, 1, n + m, seed=2)[0].numpy() % 40) + 40
        domains = {"a": a, "b": b}
        inputs = [{"role": "valid", "path": "(random tokens, seeds 1, 2)", "sha256": "-",
                   "bytes": 0}]
        seg, steps, stdlib_rec = 128, 6, None
    else:
        from da_embed.corpora import stdlib_corpus
        from da_embed.reference import encode_text

        stdlib_text = stdlib_corpus()
        domains = {"stdlib": encode_text(tokenizer, stdlib_text),
                   "wiki": encode_text(tokenizer, text)}
        inputs = [rec]  # the files read; the generated stdlib text is recorded in extra
        stdlib_rec = {"source": "da_embed.corpora.stdlib_corpus()",
                      "sha256": hashlib.sha256(stdlib_text.encode()).hexdigest(),
                      "bytes": len(stdlib_text.encode())}
        seg, steps = args.segment_tokens, args.steps
    train_ids, train_segs = alternate_segments({k: v[:n] for k, v in domains.items()}, seg)
    select_ids, _ = alternate_segments({k: v[n + gap:n + gap + m] for k, v in domains.items()},
                                       seg)
    protocol = _protocol(args.quick)
    print(f"model: {name}; selection step: spin-up on {train_ids.size} tokens "
          f"({', '.join(domains)} in segments of {seg}), selection on {select_ids.size} "
          "held-out tokens", flush=True)
    cfg = SpinupConfig(chunk=protocol.chunk, context=protocol.context, window=args.window,
                       batch=args.batch, steps=steps, lr=args.lr, lr_half_life=steps / 2,
                       objective="predictive", grad_clip=1.0,
                       checkpoint_every=max(1, steps // args.checkpoints))
    print(f"spin-up settings: {cfg}", flush=True)
    state = make_subspace(HiddenScale(model), args.subspace, tune_ids=train_ids,
                          protocol=protocol, max_tokens=args.tune_tokens)
    os.makedirs(args.out, exist_ok=True)
    basis = os.path.join(args.out, "basis.npz")
    np.savez(basis, basis=state.basis.numpy(), reference=state.reference.numpy())
    tic = time.perf_counter()
    res = spinup(state, train_ids, cfg, out=os.path.join(args.out, "spinup"),
                 progress=not args.quick)
    train_s = time.perf_counter() - tic
    obj = res.history.objective.values
    k = max(1, obj.size // 10)
    print(f"spin-up: {res.step} steps in {train_s:.0f} s; objective (prequential NLL) first/"
          f"last {k} steps {obj[:k].mean():.4f} -> {obj[-k:].mean():.4f} nat/token; Q mean "
          f"{np.mean(res.Q):.4g}, |s_b| = {np.linalg.norm(res.initial_state):.3f}", flush=True)
    ckpts = sorted((res.checkpoint.parent).glob("checkpoint-*.json"))
    held, best = {}, None
    for ck in ckpts:
        sel = compare(model, select_ids, methods="frozen,ekf", placement=state,
                      protocol=protocol, P0=0.1, Q=0.01, dynamics=str(ck), print_fn=None)
        a, b = sel.datasets["ekf+learned"]["nll"].values, sel.datasets["ekf"]["nll"].values
        pc = _paired(a, b)
        held[ck.name] = {"nll": float(a.mean()), "nll_walk": float(b.mean()),
                         "change": pc.change, "low": pc.low, "high": pc.high}
        print(f"  held-out: {ck.name}: ekf+learned vs ekf {pc.change:+.1f}% "
              f"[{pc.low:+.1f}, {pc.high:+.1f}]", flush=True)
        if best is None or held[ck.name]["nll"] < held[best.name]["nll"]:
            best = ck
    print(f"selected: {best.name}", flush=True)
    experts_dir = None
    if "t2" in args.svf_methods:
        tic = time.perf_counter()
        experts = train_experts(model, {k: v[:n] for k, v in domains.items()},
                                placement="svf", steps=3 if args.quick else args.expert_steps,
                                lr=args.expert_lr, seed=0, progress=not args.quick)
        experts_dir = str(experts.save(os.path.join(args.out, "experts")))
        print(f"experts trained in {time.perf_counter() - tic:.0f} s", flush=True)
    path = args.selection or os.path.join(args.out, "selection.json")
    settings = {"P0": 0.1, "Q": 0.01}
    write_selection(
        path, step="bench_switch",
        methods=[{"row": r, "settings": settings} for r in ("frozen", "ekf", "ekf+learned")],
        headline={"methods": ["ekf+learned"],
                  "rule": "ekf+learned against ekf (random walk), dyneval, t2 and t2-cem; "
                          "checkpoint selected on the held-out NLL"},
        budget={"configs": 1, "checkpoints": len(ckpts), "spinup_steps": res.step,
                "train_tokens": int(train_ids.size), "select_tokens": int(select_ids.size),
                "spinup_seconds": round(train_s, 1)},
        inputs=inputs, forbidden=forbidden,
        extra={"quick": bool(args.quick), "subspace": args.subspace,
               "basis": {"file": basis, "sha256": file_digest(basis), "origin": state.origin},
               "spinup_checkpoint": {"file": str(best), "sha256": file_digest(best)},
               "experts": experts_dir, "held_out": held, "spinup_config": str(cfg),
               "train_segments": train_segs, "stdlib_text": stdlib_rec})
    print(f"selection file: {path}", flush=True)
    return path


def _report_stream(args, sel, tokenizer, quick: bool):
    from da_embed.corpora import alternate_segments

    if quick:
        from da_embed.testing import random_input_ids

        streams = {"a": random_input_ids(_model(True)[0], 1, 400, seed=3)[0].numpy(),
                   "b": (random_input_ids(_model(True)[0], 1, 400, seed=4)[0].numpy() % 40)
                   + 40}
        tune = random_input_ids(_model(True)[0], 1, 300, seed=5)[0].numpy()
        return alternate_segments(streams, 128), tune
    from da_embed.corpora import read_text, stdlib_corpus, wikitext_path
    from da_embed.demo import heldout_docstrings
    from da_embed.reference import encode_text
    from da_embed.selection import read_report_text

    held, _ = heldout_docstrings(training_text=stdlib_corpus())
    wiki = read_report_text(wikitext_path("test"), sel)  # refused if a selection input
    streams = {"stdlib": encode_text(tokenizer, held), "wiki": encode_text(tokenizer, wiki)}
    return alternate_segments(streams, args.segment_tokens), encode_text(
        tokenizer, read_text(wikitext_path("valid")))


def report_step(args, selection_path) -> int:
    """The report stream, with what the selection file names; no choice is made here."""
    from da_embed.compare import compare
    from da_embed.placements import HiddenScale, Subspace
    from da_embed.selection import file_digest, read_selection
    from da_embed.transformer2 import load_experts

    sel = read_selection(selection_path)
    ex = sel["extra"]
    quick = bool(ex["quick"])
    model, tokenizer, name = _model(quick)
    for what in ("spinup_checkpoint", "basis"):
        rec = ex[what]
        if file_digest(rec["file"]) != rec["sha256"]:
            raise ValueError(f"{rec['file']} changed since the selection step")
    (ids, segments), tune = _report_stream(args, sel, tokenizer, quick)
    protocol = _protocol(quick, None if quick else args.test_tokens)
    with np.load(ex["basis"]["file"]) as z:
        state = Subspace(HiddenScale(model), z["basis"], z["reference"],
                         origin=ex["basis"]["origin"])
    print(f"model: {name}; report step: {protocol.max_tokens or ids.size} tokens of the "
          f"two-domain stream; selection {selection_path} ({sel['created']}); checkpoint "
          f"{os.path.basename(ex['spinup_checkpoint']['file'])}", flush=True)
    kw = dict(methods="frozen,ekf", placement=state, P0=0.1, Q=0.01,
              dynamics=ex["spinup_checkpoint"]["file"], model_name=name)
    warm_up_compare(kw["methods"] + " (+learned)", model, ids, protocol, kw)
    tic = time.perf_counter()
    hid = compare(model, ids, protocol=protocol, segments=segments,
                  out=os.path.join(args.out, "compare-hidden"), **kw)
    print(f"compare (HiddenScale {ex['subspace']}): {time.perf_counter() - tic:.0f} s",
          flush=True)
    experts = None if ex["experts"] is None else load_experts(ex["experts"])
    t2 = {"context_tokens": protocol.context}
    options = {"t2": t2, "t2-cem": dict(t2, population=args.population,
                                         elite=min(8, args.population))}
    kw = dict(methods=args.svf_methods, placement="svf", experts=experts, tune_ids=tune,
              tune_tokens=args.tune_tokens, method_options=options, model_name=name)
    warm_up_compare(args.svf_methods, model, ids, protocol, kw)
    tic = time.perf_counter()
    svf = compare(model, ids, protocol=protocol, segments=segments,
                  out=os.path.join(args.out, "compare-svf"), **kw)
    print(f"compare (SVF): {time.perf_counter() - tic:.0f} s", flush=True)
    learned = hid.datasets["ekf+learned"]["nll"].values
    print("\nekf+learned against every row (paired per-chunk NLL, 95% block bootstrap; "
          "negative: ekf+learned better):")
    rows = [("ekf", hid), ("frozen", hid), ("dyneval", svf), ("t2", svf), ("t2-cem", svf)]
    for row, cmp in rows:
        if row not in cmp.datasets:
            continue
        other = cmp.datasets[row]["nll"].values
        pc = _paired(learned, other)
        print(f"  vs {row:>8}: perplexity {math.exp(learned.mean()):.2f} vs "
              f"{math.exp(other[:learned.size].mean()):.2f}: {pc.change:+.1f}% "
              f"[{pc.low:+.1f}, {pc.high:+.1f}]", flush=True)
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
            else:
                select_step(args, wikitext_path("valid"), forbidden=[wikitext_path("test")])
        if args.step in ("all", "report"):
            return report_step(args, selection)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench_switch: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
