#!/usr/bin/env python
"""Transformer^2 against the filters on a two-domain stream of the reference model.

Run directly: ``python tests/benchmarks/bench_t2.py`` (``--quick``: a tiny
random model, to check that the script works).  Not collected by pytest.

What it does
------------
1. **Experts** (:func:`da_embed.transformer2.train_experts`, SVF placement):
   one per domain, by Adam on the domain's training text: ``stdlib`` on the
   reference model's own training text (:func:`da_embed.corpora.stdlib_corpus`)
   and ``wiki`` on WikiText-2 ``valid.txt``.
2. **Stream**: held-out standard-library docstrings
   (:func:`da_embed.demo.heldout_docstrings`, paragraphs seen in training
   dropped) and WikiText-2 ``test.txt``, in alternating segments of
   ``--segment-tokens`` (:func:`da_embed.corpora.alternate_segments`).
3. **Comparison** (:func:`da_embed.compare.compare`, prequential protocol,
   chunk 32, context 224): frozen, dynamic evaluation (full SVF state), the
   EKF and the ETKF in a 16-dim Fisher subspace of the same SVF state (on all
   3072 SVF scales the EKF takes about 7 s per chunk here, 30 min per run), ``t2`` (pass 1 picks the expert under which the latest
   ``--t2-context`` tokens are most likely) and ``t2-cem`` (CEM mix of the
   experts, population ``--population``).  The table gives perplexity, change
   against frozen with a 95 % block-bootstrap interval, time and memory, and
   the perplexity per domain.

Nothing is tuned on test: the dyneval learning rate is tuned on the first
``--tune-tokens`` tokens of valid; the filters keep their compare defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import warm_up_compare  # noqa: E402  (the benchmarks' shared helpers)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, a short stream")
    p.add_argument("--max-tokens", type=int, default=8192, help="stream tokens scored")
    p.add_argument("--segment-tokens", type=int, default=1024)
    p.add_argument("--methods", default="frozen,dyneval,ekf@fisher:16,etkf@fisher:16,t2,t2-cem")
    p.add_argument("--expert-steps", type=int, default=40)
    p.add_argument("--expert-lr", type=float, default=0.05)
    p.add_argument("--t2-context", type=int, default=224,
                   help="context tokens pass 1 reads (default: the chunk's whole context)")
    p.add_argument("--population", type=int, default=16, help="CEM population of t2-cem")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--tune-tokens", type=int, default=4096)
    p.add_argument("--out", default="runs/bench_t2")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from da_embed.assimilator import PrequentialConfig
    from da_embed.compare import compare
    from da_embed.corpora import alternate_segments, read_text, stdlib_corpus, wikitext_path
    from da_embed.transformer2 import train_experts

    torch.set_num_threads(args.threads)
    if args.quick:
        from da_embed.testing import random_input_ids, tiny_llama

        model = tiny_llama()
        train = {"a": random_input_ids(model, 1, 600, seed=1)[0].numpy(),
                 "b": random_input_ids(model, 1, 600, seed=2)[0].numpy()}
        streams = {"a": random_input_ids(model, 1, 400, seed=3)[0].numpy(),
                   "b": random_input_ids(model, 1, 400, seed=4)[0].numpy()}
        tune = random_input_ids(model, 1, 300, seed=5)[0].numpy()
        chunk, context, seg, max_tokens = 16, 32, 128, 640
        expert_steps, name = 3, "tiny Llama (random weights), random tokens"
    else:
        from da_embed.demo import heldout_docstrings
        from da_embed.reference import encode_text, load_reference

        model, tokenizer, info = load_reference(progress=True)
        training_text = stdlib_corpus()
        held, held_info = heldout_docstrings(training_text=training_text)
        valid = encode_text(tokenizer, read_text(wikitext_path("valid")))
        train = {"stdlib": encode_text(tokenizer, training_text), "wiki": valid}
        streams = {"stdlib": encode_text(tokenizer, held),
                   "wiki": encode_text(tokenizer, read_text(wikitext_path("test")))}
        tune = valid
        chunk, context, seg, max_tokens = 32, 224, args.segment_tokens, args.max_tokens
        expert_steps, name = args.expert_steps, f"reference model ({info.get('path', 'cache')})"
        print(f"held-out docstrings: {len(held_info['modules'])} modules, "
              f"{held_info['paragraphs']} paragraphs ({held_info['dropped']} seen in training "
              "dropped)", flush=True)
    ids, segments = alternate_segments(streams, seg)
    print(f"model: {name}; stream: " + ", ".join(f"{k} ({v.size} tokens)" for k, v in
                                                 streams.items())
          + f" in alternating segments of {seg} tokens, first {max_tokens} scored", flush=True)
    tic = time.perf_counter()
    experts = train_experts(model, train, placement="svf", steps=expert_steps,
                            lr=args.expert_lr, seed=0, progress=not args.quick)
    first, last = experts.training["loss_first"], experts.training["loss_last"]
    print(f"experts trained in {time.perf_counter() - tic:.0f} s ({expert_steps} Adam steps "
          f"each, lr {args.expert_lr}); training NLL first -> last steps: "
          + ", ".join(f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in experts.names),
          flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        experts.save(os.path.join(args.out, "experts"))
    t2 = {"context_tokens": min(args.t2_context, context)}
    options = {"t2": t2, "t2-cem": dict(t2, population=args.population,
                                         elite=min(8, args.population))}
    kw = dict(methods=args.methods, placement="svf", experts=experts, tune_ids=tune,
              tune_tokens=args.tune_tokens, members=args.members, method_options=options,
              model_name=name)
    # One untimed warm-up of every method on two chunks: the timed run carries no cold start.
    warm_up_compare(args.methods, model, ids, PrequentialConfig(chunk=chunk, context=context),
                    kw)
    tic = time.perf_counter()
    compare(model, ids, segments=segments,
            protocol=PrequentialConfig(chunk=chunk, context=context, max_tokens=max_tokens),
            out=None if not args.out else os.path.join(args.out, "compare"),
            progress=not args.quick, **kw)
    print(f"compare: {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
