"""bench_lm: the results table, the headline picked on valid, the target checks, the markdown."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from _lm_grids import ANCHOR, DOCS, ENSEMBLE, FILTERS, MEMBERS, SECTION, SHORT, TARGET_HIDDEN_16, _fmt_settings


# ----------------------------------------------------------------------------
# Tables and targets
# ----------------------------------------------------------------------------
def row_line(r: dict) -> tuple:
    configs, tokens = r.get("budget", (0, 0))
    budget = f"{configs} x {tokens}" if configs else "-"
    if "perplexity" not in r:
        return (r["row"], "-", budget, r.get("status", ""), "", "", "", "", "", "", "", "")
    status = "" if r["status"] == "complete" else f" ({r['status'][:40]})"
    if r["row"] == "frozen":
        change = "-"
    elif math.isnan(r.get("ci_low", float("nan"))):
        change = f"{r['change_pct']:+.1f}%"
    else:
        change = f"{r['change_pct']:+.1f}% [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
    return (r["row"] + status, _fmt_settings(r["settings"]) or "-", budget,
            f"{r['perplexity']:.1f}",
            change, f"{r['bits_per_byte']:.3f}", f"{r['word_perplexity']:.0f}",
            f"{r['frozen_ratio']:.2f}", f"{r['own_ratio']:.2f}", str(r["state_dim"]),
            str(r["chunks"]), str(r["tokens"]))


COLS = ("row", "tuned settings", "budget", "ppl", "vs frozen [95% CI]", "bits/byte", "word ppl",
        "time x frozen", "x own score", "n", "chunks", "tokens")


def table(rows: list[dict]) -> str:
    body = [row_line(r) for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c)
              for i, c in enumerate(COLS)]

    def fmt(row):
        return "  ".join(v.ljust(w) if i < 3 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(COLS), fmt(tuple("-" * w for w in widths))] + [fmt(b) for b in body])


def _name(r):
    return r["row"].partition("@")[0]


def pick_headline(mb: ModelBench) -> dict:
    """Name the headline filters from VALID perplexity (selection step; test unseen).

    ``same``: the full-``HiddenScale`` filter row with the lowest valid
    perplexity (same state as ``dyneval``); ``any``: the same over all
    filter rows.  Both are reported against ``dyneval``.
    """
    valid = {lab: min((r["valid_perplexity"] for r in res), default=float("inf"))
             for lab, res in mb.tuning.items()}
    out = {"baseline": "dyneval" if "dyneval" in valid else None}
    for key, keep in (("same", lambda lab: "@" not in lab), ("any", lambda lab: True)):
        cand = [lab for lab in valid if _name({"row": lab}) in FILTERS and keep(lab)
                and math.isfinite(valid[lab])]
        out[key] = min(cand, key=valid.get) if cand else None
    return out


def check_targets(mb: ModelBench, headline: dict) -> list[str]:
    """Lines of the target checks of one model (issue 4), for the filters named on valid."""
    import numpy as np

    from da_embed.metrics import paired_change

    out = []
    rows = {r["row"]: r for r in mb.rows if "perplexity" in r}
    dyn, fz = rows.get("dyneval"), rows.get("frozen")
    if dyn is None or fz is None:
        out.append("  targets: need frozen and dyneval rows")
        return out
    dn, dw, ds = (np.asarray(dyn[k]) for k in ("nll_per_chunk", "wall_per_chunk",
                                                "score_per_chunk"))
    fn, fw = np.asarray(fz["nll_per_chunk"]), np.asarray(fz["wall_per_chunk"])
    shown = set()
    for key, title in (("same", "on the same state (full HiddenScale, n = %d)" % dyn["state_dim"]),
                       ("any", "over all filter rows (subspaces, other placements)")):
        lab = headline.get(key)
        if lab is None or lab in shown or lab not in rows:
            continue
        shown.add(lab)
        best, k = rows[lab], rows[lab]["chunks"]
        d_change = 100 * math.expm1(float(dn[:k].mean() - fn[:k].mean()))
        d_time, d_own = float(dw[:k].sum() / fw[:k].sum()), float(dw[:k].sum() / ds[:k].sum())
        ppl_ok, t_ok = best["change_pct"] <= d_change, best["frozen_ratio"] <= d_time
        o_ok = best["own_ratio"] <= d_own
        out.append(f"  filter named on valid {title}: {lab} {best['change_pct']:+.1f}% vs "
                   f"dyneval ({_fmt_settings(dyn['settings'])}) {d_change:+.1f}% on the same "
                   f"{k} chunks -> perplexity {'met' if ppl_ok else 'MISSED'}; time x frozen "
                   f"{best['frozen_ratio']:.2f} vs dyneval {d_time:.2f} -> "
                   f"{'met' if t_ok else 'MISSED'} (x own scoring {best['own_ratio']:.2f} vs "
                   f"{d_own:.2f}: {'met' if o_ok else 'MISSED'}) -> target "
                   f"{'MET' if ppl_ok and t_ok else 'MISSED'}")
        pc = paired_change(np.asarray(best["nll_per_chunk"]), dn[:k], n_boot=2000, seed=0)
        out.append(f"    {lab} vs dyneval, paired over those chunks: {pc.change:+.2f}% "
                   f"[{pc.low:+.2f}, {pc.high:+.2f}] (95% block bootstrap)")
    m16 = [r for r in rows.values() if _name(r) in ENSEMBLE + ("verify",)]
    for r in m16:
        out.append(f"  HiddenScale with {MEMBERS} members, {r['row']}: time x frozen "
                   f"{r['frozen_ratio']:.2f}, x own scoring {r['own_ratio']:.2f} (target <= "
                   f"{TARGET_HIDDEN_16:g}: {'met' if r['frozen_ratio'] <= TARGET_HIDDEN_16 else 'MISSED'}"
                   f" / {'met' if r['own_ratio'] <= TARGET_HIDDEN_16 else 'MISSED'})")
    return out


# ----------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------
def markdown(report: Report, args, complete: bool) -> str:
    cmd = "make bench" if not sys.argv[1:] else "python tests/benchmarks/bench_lm.py " + " ".join(
        sys.argv[1:])
    head = f"""{SECTION}

`tests/benchmarks/bench_lm.py` (run by `make bench` after the two scripts
above; `--quick` checks it in a few minutes with tiny models; options
`--step`, `--budget`, `--max-tokens`, `--tune-tokens`, `--models`,
`--methods`, `--scheduler`, `--resume`, `--threads`, `--out`). The module
docstring has the details.
In short:

* **Two reference models** (the default `ReferenceConfig`, each with its own
  BPE tokenizer): `stdlib` (standard-library docs only: WikiText-2 is a strong
  shift) and `stdlib+wikivalid` (the same plus WikiText-2 `valid.txt`: near
  in-domain). Their tokenizers differ, so their token perplexities are not
  comparable; both read the same text, and **bits/byte** and **word ppl**
  (exp of the total NLL over whitespace-separated words, no `<eos>`) are.
* **Selection, then test, in two steps.** The selection step
  (`--step select`) is given `valid.txt` only (it refuses a test split and
  never opens `test.txt`). Every tuned method gets **the same budget**: the
  same number of configurations (`--budget`), drawn (seeded, without
  replacement) from a grid of its own knobs (dyneval: lr, steps, decay,
  optimiser; EKF: P0, Q, R; 3D/4D-Var: P0, R; ensemble and unscented
  filters: P0, Q, R, inflation at {MEMBERS} members; verify: eta, sigma;
  rotary: P0, Q, R), each run on the same first `--tune-tokens` tokens of
  valid. **Each configuration is one cell of a `filters.sweep` sweep**
  (the `[lm_tune]` cell kind of `da_embed.tuning`, which loads the cached
  model and reads valid itself through the same guard), run by
  `run_sweep` on `--scheduler` (default `local:1`, bit for bit the numbers
  of the in-process loop `--scheduler serial`); the cells land in
  `OUT/tuning/<model>/` as they finish and `--resume` runs only the
  missing ones. It writes `selection.json`: every row's settings, the budget, the
  SHA-256 of the texts it read, the saved Fisher bases, and the **headline
  filters, named from valid perplexity**. The report step (`--step report`)
  reads that file and `test.txt` (refusing a test text that is, or shares
  more than 1 % of its 16-word windows with, a selection input) and takes
  no choice from test. For `stdlib+wikivalid` the tuning text is part of its
  training text.
* **Evaluation on a prefix of `test.txt`** under the prequential protocol
  (printed below); every row runs once untimed on two chunks first (warm-up).
  `budget`: configurations x valid tokens each. `time x frozen`: per-chunk
  wall time summed over the row's chunks over frozen's on the same chunks,
  same run. `x own score`: the row's wall time over its own scoring pass (for
  HiddenScale rows this is exactly frozen's work on the same chunk at the
  same moment), robust to load from other processes. Rows with fewer chunks
  (4D-Var, rotary) ran on the first 1/{SHORT} of the chunks: their change is
  paired with frozen on those chunks, but their ppl, bits/byte and word ppl
  are over that shorter text.
* {ANCHOR}
"""
    note = "" if complete else ("\n**Partial results**: the run had not finished when this "
                                "section was written.\n")
    return (head + note + f"\n### Results (`{cmd}`)\n\n```\n" + "\n".join(report.lines).strip()
            + "\n```\n")


def write_docs(text: str, path: Path = DOCS) -> None:
    """Replace the ``## Language models`` section of ``path`` (append it if missing)."""
    old = path.read_text() if path.exists() else ""
    pat = re.compile(r"^## Language models\s*$.*?(?=^## |\Z)", re.S | re.M)
    new_section = text.rstrip() + "\n\n"
    if pat.search(old):
        new = pat.sub(lambda m: new_section, old, count=1)
    else:
        new = old.rstrip() + "\n\n" + new_section
    path.write_text(new.rstrip() + "\n")
