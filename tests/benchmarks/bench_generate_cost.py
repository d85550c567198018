#!/usr/bin/env python
"""Cost of generation with candidates: time per committed token against base generation.

Run with ``python tests/benchmarks/bench_generate_cost.py [options]`` (also
from ``make bench``).  Not collected by pytest.

For every configuration (filter, K candidates per member, L tokens per
candidate, I tokens per cycle) and every prompt, base generation
(``filter="none"``) and the configuration generate ``--max-new-tokens``
tokens side by side, base first, with the same seed; the slowdown of a
repeat is the configuration's seconds per committed token over base's in
that repeat, and the table gives the median over ``--repeats`` interleaved
repeats (the machine may be shared: interleaving makes outside load hit both
alike).  Every configuration (and base) generates once, untimed, first.

The configurations are one-dimensional sweeps around ``--center K,L,I``:
K over ``--ks``, L over ``--lengths``, I over ``--intervals`` (each with the
other two at the centre), for every filter of ``--filters``.  Extra memory
is the peak heap in use above the start of one generation
(:class:`da_embed.memory.PeakHeap`), the largest over the prompts.

The prompts are the first sentences of the first ``--prompts`` paragraphs
of WikiText-2 ``test.txt``; the model is the cached reference model unless
``--model`` names a folder; one torch thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _configs(filters, center, ks, lengths, intervals):
    K0, L0, I0 = center
    seen, out = set(), []
    for f in filters:
        grid = ([(k, L0, I0) for k in ks] + [(K0, L, I0) for L in lengths]
                + [(K0, L0, i) for i in intervals])
        for K, L, I in grid:
            if L > I or (f, K, L, I) in seen:
                continue
            seen.add((f, K, L, I))
            out.append((f, K, L, I))
    return out


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    """Measure and print the cost table; returns 0.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder; default: the reference model")
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--filters", default="enkf,verification,ukf", help="comma-separated filters")
    p.add_argument("--center", default="1,2,64", help="K,L,I of the sweeps' centre (the defaults)")
    p.add_argument("--ks", default="1,2,4")
    p.add_argument("--lengths", default="1,2,4,8")
    p.add_argument("--intervals", default="8,16,32,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--ukf-subspace", default="random:4")
    p.add_argument("--commit", default="mean")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from da_embed.claims import wikitext_prompts
    from da_embed.corpora import wikitext_path
    from da_embed.generate import generate, load_generator
    from da_embed.memory import PeakHeap

    model, tok, name = load_generator(args.model, progress=False)
    model.eval()
    prompts = wikitext_prompts(wikitext_path("test"), args.prompts)
    center = tuple(_ints(args.center))
    configs = _configs([f.strip() for f in args.filters.split(",") if f.strip()], center,
                       _ints(args.ks), _ints(args.lengths), _ints(args.intervals))

    def run(cfg, i, prompt):
        f, K, L, I = cfg
        kw = dict(max_new_tokens=args.max_new_tokens, top_p=args.top_p, seed=i,
                  progress=False)
        if f == "none":
            return generate(model, tok, prompt, filter="none", every=I, **kw)
        return generate(model, tok, prompt, filter=f, candidates=K, candidate_length=L,
                        every=I, members=args.members, commit=args.commit,
                        subspace=args.ukf_subspace if f == "ukf" else None, **kw)

    base = ("none", 1, center[1], center[2])
    for cfg in [base, *configs]:  # untimed warm-up of every configuration
        run(cfg, 0, prompts[0])
    ratios = {c: [] for c in configs}
    per_token = {c: [] for c in configs}
    base_tok = []
    memory = {c: 0.0 for c in [base, *configs]}
    t_start = time.perf_counter()
    for rep in range(args.repeats):
        for cfg in configs:
            secs = {"b": 0.0, "m": 0.0}
            toks = {"b": 0, "m": 0}
            for i, prompt in enumerate(prompts):
                for key, c in (("b", base), ("m", cfg)):
                    if rep == 0:
                        with PeakHeap() as mem:
                            res = run(c, i, prompt)
                        memory[c] = max(memory[c], mem.peak_extra / 2**20)
                    else:
                        res = run(c, i, prompt)
                    secs[key] += res.seconds
                    toks[key] += int(res.token_ids.size)
            b, m = secs["b"] / toks["b"], secs["m"] / toks["m"]
            ratios[cfg].append(m / b)
            per_token[cfg].append(m)
            base_tok.append(b)
        print(f"repeat {rep + 1}/{args.repeats} done ({time.perf_counter() - t_start:.0f} s)",
              file=sys.stderr, flush=True)
    print(f"model {name}; {len(prompts)} prompts x {args.max_new_tokens} tokens; members "
          f"{args.members}; commit {args.commit}; top_p {args.top_p}; median of "
          f"{args.repeats} interleaved repeats; base {1e3 * statistics.median(base_tok):.2f} "
          f"ms/token, extra heap {memory[base]:.1f} MB")
    print()
    print("| filter | K | L | I | ms / committed token | slowdown vs base [min, max] "
          "| extra heap MB |")
    print("|---|---|---|---|---|---|---|")
    for cfg in configs:
        f, K, L, I = cfg
        r = ratios[cfg]
        print(f"| {f} | {K} | {L} | {I} | {1e3 * statistics.median(per_token[cfg]):.2f} | "
              f"{statistics.median(r):.2f}x [{min(r):.2f}, {max(r):.2f}] | "
              f"{memory[cfg]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
