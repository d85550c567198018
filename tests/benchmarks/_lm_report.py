"""bench_lm: the report step (evaluation on test of what the selection file names)."""

from __future__ import annotations

import os
from pathlib import Path

from _lm_bench import ModelBench
from _lm_grids import ANCHOR, DOCS, MEMBERS, SECTION, SHORT, _fmt_settings, is_short, perf
from _lm_io import LoadMonitor, Report, _cpu_seconds, _header
from _lm_models import load_model, reference_config, text_prefix
from _lm_tables import check_targets, markdown, table, write_docs


def report_step(args, selection_path, test_path) -> int:
    """Evaluate on test what the selection file names; takes no choice from test."""
    import numpy as np
    import torch

    from da_embed.assimilator import PrequentialConfig
    from da_embed.reference import encode_text
    from da_embed.selection import read_report_text, read_selection

    sel = read_selection(selection_path)
    test_text = read_report_text(test_path, sel)
    ex = sel["extra"]
    args.chunk, args.context, args.stride = (ex["protocol"][k] for k in ("chunk", "context",
                                                                          "stride"))
    args.tune_tokens, args.budget = sel["budget"]["tune_tokens"], sel["budget"]["configs_per_method"]
    args.models, rows = ",".join(ex["models"]), ex["rows"]
    PrequentialConfig(chunk=args.chunk, context=args.context, stride=args.stride)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.jsonl").unlink(missing_ok=True)
    wall0, load = perf(), LoadMonitor()
    report = Report()
    config = reference_config(bool(ex["quick"]))
    report("da-embed language-model benchmark: online adaptation on WikiText-2 test"
           + ("  [--quick: tiny models, says nothing about the methods]" if args.quick else ""))
    _header(report, args, config, np, torch)
    report(f"rows    : {', '.join(rows)}; {MEMBERS} members / candidates; rows "
           f"{', '.join(r for r in rows if is_short(r)) or '-'} on the first 1/{SHORT} of the chunks")
    report(f"selection: {selection_path} (step {sel['step']}, {sel['created']}): made on "
           + "; ".join(f"{r['role']} {Path(r['path']).name} sha256 {r['sha256'][:12]}"
                       for r in sel["inputs"])
           + f"; budget {args.budget} configurations per tuned method x {args.tune_tokens} "
           f"valid tokens; test.txt sha256 read only now")
    report(ANCHOR)
    ref_prefix, complete = None, False
    try:
        for mi, mname in enumerate(ex["models"]):
            report()
            report(f"== {mname}")
            model, tok, info = load_model(mname, config, args.progress)
            if str(info.get("path")) != str(ex["model_info"][mname]["path"]):
                raise ValueError(f"model {mname} is not the one the selection used "
                                 f"({info.get('path')} vs {ex['model_info'][mname]['path']})")
            report(f"  model: {info.get('parameters', 0) / 1e6:.2f}M parameters, trained on "
                   f"{info.get('tokens')} tokens (final loss "
                   f"{info.get('final_loss', float('nan')):.3f}); cache {info.get('path')}")
            if ref_prefix is None:
                ref_prefix = text_prefix(tok, test_text, args.max_tokens or None)
            test_ids = encode_text(tok, ref_prefix)
            mb = ModelBench(mname, model, tok, info, args, report, out,
                            bases=ex["placements"].get(mname))
            K = _selected_and_text(mb, sel, ref_prefix, test_text, test_ids)
            t_eval, c_eval = perf(), _cpu_seconds()
            _run_rows(mb, rows, test_ids)
            t_eval, c_eval = perf() - t_eval, _cpu_seconds() - c_eval
            report()
            report(f"-- {mname}: prequential results on WikiText-2 test ({mb.protocol}; frozen "
                   f"{mb.frozen['chunk_wall_s'] / max(1, mb.frozen['chunks']) * 1e3:.1f} ms/chunk)"
                   if mb.frozen else f"-- {mname}")
            report(table(mb.rows))
            report(f"  time: evaluation {t_eval:.0f} s wall / {c_eval:.0f} s CPU "
                   f"({c_eval / max(1, K):.2f} s CPU per chunk over all rows)")
            report("  targets (issue 4), for the filters named on valid before test was read:")
            for line in check_targets(mb, sel["headline"]["per_model"].get(mname, {})):
                report(line)
            (out / "bench_lm.md").write_text(markdown(report, args, complete=False))
            if args.docs and mi < len(ex["models"]) - 1:
                write_docs(markdown(report, args, complete=False))
            del model
        complete = True
    except KeyboardInterrupt:
        report("\ninterrupted: completed rows are in rows.jsonl and <model>/<row>.nc under "
               f"{out}")
    report()
    report(f"background load: other processes kept {load.background_cores():.2f} of "
           f"{os.cpu_count()} cores busy on average during the report step")
    report(f"wall time of the report step: {perf() - wall0:.0f} s; process CPU time "
           f"{_cpu_seconds():.0f} s (with {args.threads} thread(s))")
    md = markdown(report, args, complete)
    (out / "bench_lm.md").write_text(md)
    if args.docs:
        write_docs(md)
        print(f"wrote the '{SECTION}' section of {DOCS}")
    print(f"results: {out}/rows.jsonl, tuning.jsonl, selection.json, <model>/<row>.nc, "
          f"bench_lm.md")
    return 0 if complete else 130


def _selected_and_text(mb: ModelBench, sel: dict, ref_prefix: str, test_text: str, test_ids) -> int:
    """Give ``mb`` the selection file's settings of its model, print them and the test text; chunks."""
    mname, report = mb.name, mb.report
    picks = [m for m in sel["methods"] if m["model"] == mname]
    for m in picks:
        mb.tuned[m["row"]] = m["settings"]
        if m.get("configs"):
            mb.budget[m["row"]] = (m["configs"], m["tokens"])
    report("  selected on valid (settings, valid ppl, budget):")
    for m in picks:
        if m.get("configs"):
            report(f"    {m['row']:18s} {_fmt_settings(m['settings'])}: "
                   f"{m['valid_perplexity']:.1f} ({m['configs']} x {m['tokens']})"
                   + (f"; at the grid's edge in {', '.join(m['edges'])}"
                      if m.get("edges") else ""))
    K = len(mb.protocol.starts(test_ids.size))
    report(f"  test text: {'whole test.txt' if len(ref_prefix) == len(test_text) else 'prefix of test.txt'}"
           f" ({len(ref_prefix)} of {len(test_text)} characters, "
           f"{ref_prefix.count(chr(10))} lines) = {test_ids.size} tokens of this model "
           f"({len(ref_prefix.encode('utf-8')) / max(1, test_ids.size):.2f} bytes/token)")
    report(f"  protocol: {mb.protocol}; {K} chunks = {K * mb.protocol.chunk} tokens scored "
           f"per full row; each chunk is scored with the state from earlier chunks only, "
           f"then assimilated")
    return K


def _run_rows(mb: ModelBench, rows: list, test_ids) -> None:
    """Evaluate every row on the test ids, printing one line per row."""
    report = mb.report
    for lab in rows:
        r = mb.run_row(lab, test_ids)
        if "perplexity" in r:
            report(f"  row {lab}: ppl {r['perplexity']:.1f}, {r['change_pct']:+.1f}% vs "
                   f"frozen, time x frozen {r['frozen_ratio']:.2f}, {r['chunks']} chunks, "
                   f"{r['wall_s']:.0f} s" + (f" [{r['status']}]" if r['status'] != 'complete' else ""))
        else:
            report(f"  row {lab}: {r.get('status')}")
