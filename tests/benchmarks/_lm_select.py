"""bench_lm: the selection step (tuning on valid only; writes the selection file)."""

from __future__ import annotations

import shutil
from pathlib import Path

from _lm_bench import ModelBench
from _lm_grids import GRIDS, MEMBERS, parse_rows, perf
from _lm_io import Report, _header
from _lm_models import load_model, reference_config
from _lm_tables import pick_headline


def select_step(args, valid_path, forbidden=()) -> Path:
    """Tune every row on valid and write the selection file; never reads test.

    ``valid_path`` is the only text it reads (:func:`da_embed.selection.read_selection_input`
    refuses a test split and the ``forbidden`` paths, which it never opens).  It runs
    with ``args.threads`` torch threads, as the sweep's cells do: the trunk outputs that
    the cache check stores are then the bits a cell computes (a caller's other thread
    count changed them in the last place, and the serial loop's numbers with them).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(getattr(args, "threads", 1))  # the parser's default
    try:
        return _select(args, valid_path, forbidden)
    finally:
        torch.set_num_threads(threads)


def _select(args, valid_path, forbidden) -> Path:
    import numpy as np
    import torch

    from da_embed.reference import encode_text
    from da_embed.selection import read_selection_input, write_selection

    valid_text, valid_rec = read_selection_input(valid_path, role="valid", forbidden=forbidden)
    rows = parse_rows(args.methods)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.jsonl").unlink(missing_ok=True)
    report = Report()
    config = reference_config(args.quick)
    report("da-embed language-model benchmark, selection step: tuning on WikiText-2 valid only")
    _header(report, args, config, np, torch)
    report(f"budget  : {args.budget} configurations per tuned method, each on the first "
           f"{args.tune_tokens} tokens of valid (seed {args.seed})")
    methods, headline, placements, infos = [], {}, {}, {}
    for mname in models:
        report(f"== {mname}")
        model, tok, info = load_model(mname, config, args.progress)
        infos[mname] = {k: info.get(k) for k in ("path", "parameters", "final_loss")}
        tune_ids = encode_text(tok, valid_text[:max(20 * args.tune_tokens, 100_000)])
        if tune_ids.size < args.tune_tokens + 1:
            tune_ids = encode_text(tok, valid_text)
        mb = ModelBench(mname, model, tok, info, args, report, out)
        mb.prepare_tuning(tune_ids[:args.tune_tokens + 1])
        t0 = perf()
        scheduler = getattr(args, "scheduler", "local:1")
        if scheduler == "serial":  # the in-process loop (what the sweep must equal)
            for lab in rows:
                mb.tune(lab)
        else:
            sweep_out = out / "tuning" / mname
            resume = bool(getattr(args, "resume", False))
            if not resume and sweep_out.exists():
                shutil.rmtree(sweep_out)  # a fresh selection (--resume keeps the cells)
            fixed = {"model": mname, "reference_config": vars(config),
                     "model_path": str(info.get("path")), "threads": args.threads,
                     "valid_text": str(valid_path), "valid_sha256": valid_rec["sha256"],
                     "forbidden": [str(f) for f in forbidden]}
            mb.tune_sweep(rows, sweep_out, fixed, scheduler=scheduler, resume=resume)
        report(f"  tuning and subspaces: {perf() - t0:.0f} s wall ({mb.cache.hits} trunk-cache "
               f"hits, {mb.cache.misses} trunk passes)")
        methods += [mb.selected(lab) for lab in rows]
        headline[mname] = pick_headline(mb)
        report(f"  headline, named on valid: {headline[mname]['same']} (same state) and "
               f"{headline[mname]['any']} (all filter rows) against {headline[mname]['baseline']}")
        placements[mname] = mb.bases
        del model, mb
    named = sorted({v for h in headline.values() for v in h.values() if v})
    path = Path(args.selection or out / "selection.json")
    write_selection(
        path, step="bench_lm", methods=methods,
        headline={"methods": named, "per_model": headline,
                  "rule": "the filter row with the lowest valid perplexity (full HiddenScale; "
                          "and over all filter rows), against dyneval"},
        budget={"configs_per_method": args.budget, "tune_tokens": args.tune_tokens,
                "seed": args.seed, "grids": {k: {kk: list(v) for kk, v in g.items()}
                                             for k, g in GRIDS.items()}},
        inputs=[valid_rec], forbidden=forbidden,
        extra={"models": models, "rows": rows, "quick": bool(args.quick),
               "reference_config": vars(config), "model_info": infos,
               "protocol": {"chunk": args.chunk, "context": args.context, "stride": args.stride},
               "members": MEMBERS, "placements": placements})
    (out / "selection.md").write_text("\n".join(report.lines) + "\n")
    report(f"selection file: {path}")
    return path
