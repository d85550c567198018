#!/usr/bin/env python
"""Language-model benchmark: online adaptation of the reference models on WikiText-2 test.

Run by ``make bench`` after the filters benchmarks, or directly:
``python tests/benchmarks/bench_lm.py`` (``--quick`` checks that the script
works in under 3 minutes with tiny models).  Not collected by pytest.

What it does
------------
1. **Two reference models**, each with its own byte-level BPE tokenizer, both
   built by :func:`da_embed.reference.load_reference` with the same
   :class:`~da_embed.reference.ReferenceConfig` (trained once and cached):

   * ``stdlib``: trained on the standard-library corpus only, so WikiText-2 is
     a strong domain shift;
   * ``stdlib+wikivalid``: trained on that corpus plus WikiText-2
     ``valid.txt``, so WikiText-2 test is near in-domain.

   The tokenizers differ, so the two models see different token counts for
   the same text: token perplexities of the two models are NOT comparable.
   Both models read the same text (the same line-aligned prefix of
   ``test.txt``), and every row also reports **bits per byte** (total NLL in
   bits over the UTF-8 bytes of the scored tokens) and **word-level
   perplexity** (exp of the total NLL over the whitespace-separated words of
   the scored text, without WikiText's per-line ``<eos>``), which are.
2. **Selection step on valid only** (``--step select``; :func:`select_step`).
   It is handed the path of ``valid.txt`` and nothing else to read
   (:func:`da_embed.selection.read_selection_input` refuses a test split;
   ``test.txt`` is named to it as forbidden, compared by path, never opened).
   Every tuned method gets **the same budget**: ``--budget`` configurations
   (default ``DEFAULT_BUDGET``), drawn seeded and without replacement from a
   grid of its own knobs (:data:`GRIDS`: dyneval's lr, steps, decay and
   optimiser; the EKF's P0, Q, R; 3D/4D-Var's P0 and R; P0, Q, R and
   inflation of the ensemble and unscented filters at ``MEMBERS`` members;
   verify's eta and sigma; P0, Q, R of rotary rows), each run on the same
   first ``--tune-tokens`` tokens of ``valid.txt`` and scored by prequential
   perplexity.  A pick at the edge of a numeric knob's range is printed.
   **Every configuration is one cell of a** :mod:`filters.sweep` **sweep**
   (the ``[lm_tune]`` kind of :mod:`da_embed.tuning`: the cell loads the
   cached reference model and reads valid itself, through the same guard),
   run by :func:`filters.sweep.run_sweep` on ``--scheduler`` (default
   ``local:1``: one worker process, the same numbers as the in-process loop
   ``--scheduler serial``, bit for bit); the cells land in
   ``OUT/tuning/<model>/`` (``cells/*.json``, ``results.nc``) as they finish,
   and ``--resume`` reruns only the missing ones.
   With ``HiddenScale`` the state acts after the trunk, so the trunk's output
   does not depend on the state: tuning runs reuse it
   (:class:`da_embed.trunk_cache.TrunkCache`, checked bit for bit against
   uncached runs at the start of each model).
   The Fisher subspace (``fisher:8``) is computed from the same tuning text
   and its basis saved.  The step then **names the headline filters** (the
   filter row with the lowest valid perplexity on the full ``HiddenScale``
   state, and over all filter rows), and writes ``selection.json``: the rows,
   their settings and valid perplexities, the budget, the headline, the
   SHA-256 of ``valid.txt`` and the saved bases.  For ``stdlib+wikivalid``
   the tuning text is part of the training text.
3. **Report step on test** (``--step report``; :func:`report_step`): reads
   the selection file and ``test.txt`` (refused if it is, or shares more than
   1 % of its 16-word windows with, a selection input) and takes every choice
   from the file.  Every row runs once untimed on two chunks (warm-up), then
   under the prequential protocol of
   :class:`da_embed.assimilator.PrequentialConfig` (chunk 32, context 224,
   stride 32 by default; each chunk is scored with the state estimated from
   earlier chunks only, then assimilated).  Every row prints perplexity, its
   budget, the change against frozen with a 95 % circular block-bootstrap
   interval over chunks of the paired per-chunk NLL differences, bits per
   byte, word-level perplexity, the time ratio to frozen (per-chunk wall
   times summed over the row's chunks, over frozen's on the same chunks, same
   run), the time ratio to the row's own scoring pass (robust to load from
   other processes for ``HiddenScale`` rows), and the chunk/token counts.
   Rows whose analysis costs several LM passes (``4dvar``, rotary rows) run on
   the first ``1/SHORT`` of the chunks and are compared with frozen (and
   dyneval) on those chunks only.  ``--step all`` (the default) runs one step
   and then the other.
4. **Targets** of issue 4, checked for the filters the selection named (not
   the best on test): the named filter lowers perplexity at least as much as
   tuned ``dyneval`` on the same chunks at no more wall time;
   ``HiddenScale`` with 16 members costs at most 1.5x frozen.  Anchor: dynamic
   evaluation of GPT-2 117M on WikiText-2 goes from 29.0 to 24.5 (-15.5 %) at
   about twice the static cost (Krause et al. 2018, as quoted in issue 4).

Outputs (``--out``, default ``runs/bench_lm``): ``selection.json`` and
``selection.md`` (the selection step), ``rows.jsonl`` (one line per
evaluated row, appended as soon as the row finishes), ``tuning.jsonl`` (one
line per tuning run), ``tuning/<model>/`` (the tuning sweep),
``<model>/<row>.nc`` (the trajectory of each row,
appended chunk by chunk, so an interrupted run keeps what it did), and
``bench_lm.md``.  The same markdown replaces the ``## Language models``
section of ``docs/benchmarks.md`` (appended if missing; other sections are
left alone) after each model and at the end of a full run (``--quick`` only
writes it with ``--docs``).

Cost: the script uses one torch thread, so its process CPU time is about
its wall time on a quiet machine; it prints both, and the background load.
Evaluation cost about 0.7 s of CPU per chunk of test text over all default
rows in the run of 2026-11-22 (reference architecture, 4.2M parameters).
The whole ``test.txt`` is 14.9k chunks with the stdlib tokenizer (12.1k
with the other), about 3 and 2.5 hours per model, so the default is a
prefix: the first ``DEFAULT_MAX_TOKENS`` = 32768 tokens of the stdlib
tokenizer (86k characters, 287 lines; 1030 and 820 chunks).  ``--max-tokens
0`` evaluates the whole file.  The equal tuning budget costs far more than
the old per-method grids for the expensive rows (every method runs
``--budget`` configurations on all ``--tune-tokens`` tokens; 4D-Var and the
rotary rows several LM passes per chunk): ``docs/benchmarks.md`` gives the
measured times of the sizes actually run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The script's parts, one module each (re-exported: tests and callers use these names).
from _lm_bench import ModelBench  # noqa: E402,F401
from _lm_grids import (DEFAULT_BUDGET, DEFAULT_MAX_TOKENS, DEFAULT_METHODS,  # noqa: E402,F401
                       DEFAULT_TUNE_TOKENS, GRIDS, MEMBERS, MODELS, ROOT, family, grid_for,
                       is_short, parse_rows, split_settings)
from _lm_models import load_model, reference_config  # noqa: E402,F401
from _lm_report import report_step  # noqa: E402
from _lm_select import select_step  # noqa: E402
from _lm_tables import check_targets, markdown, pick_headline, table, write_docs  # noqa: E402,F401


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Language-model benchmark: every online method on WikiText-2 test for two "
                    "reference models, selected on WikiText-2 valid (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny models and budgets (a few minutes): checks that the script works")
    ap.add_argument("--step", choices=("all", "select", "report"), default="all",
                    help="select: tune on valid and write the selection file; report: evaluate "
                         "on test what the selection file names; all: one, then the other")
    ap.add_argument("--scheduler", default="local:1",
                    help="where the selection step's tuning runs: one filters.sweep cell per "
                         "configuration on 'local' (a worker process per core), 'local:N' "
                         "(N worker processes) or a Dask scheduler ADDRESS; 'serial': the "
                         "in-process loop, no Dask (local:1 gives the same numbers)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the tuning cells already in OUT/tuning/<model>/ and run only the "
                         "missing ones (an interrupted selection step)")
    ap.add_argument("--selection", default=None,
                    help="the selection file (default OUT/selection.json)")
    ap.add_argument("--budget", type=int, default=None,
                    help=f"configurations per tuned method; default {DEFAULT_BUDGET} (quick: 2)")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help=f"test tokens (of the first model; the line-aligned text prefix is "
                         f"shared); default {DEFAULT_MAX_TOKENS} (quick: 1280); 0: whole file")
    ap.add_argument("--tune-tokens", type=int, default=None,
                    help=f"valid tokens for tuning and the Fisher subspace; default "
                         f"{DEFAULT_TUNE_TOKENS} (quick: 640)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--methods", default=DEFAULT_METHODS,
                    help="rows: method names of da-embed compare, NAME@fisher:k / NAME@random:k "
                         "(HiddenScale subspace) or NAME@rotary:MODE (RotaryScale)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and BLAS threads (1: robust on a shared machine)")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--context", type=int, default=224)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_lm"), help="results folder")
    ap.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                    help="write the section of docs/benchmarks.md (default: yes, no with --quick)")
    ap.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars")
    return ap




def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("bench_lm: error: --threads must be >= 1", file=sys.stderr)
        return 2
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their BLAS
    if args.max_tokens is None:
        args.max_tokens = 1280 if args.quick else DEFAULT_MAX_TOKENS
    if args.tune_tokens is None:
        args.tune_tokens = 640 if args.quick else DEFAULT_TUNE_TOKENS
    if args.budget is None:
        args.budget = 2 if args.quick else DEFAULT_BUDGET
    if args.docs is None:
        args.docs = not args.quick

    import torch

    torch.set_num_threads(args.threads)
    from da_embed.assimilator import PrequentialConfig
    from da_embed.corpora import wikitext_path

    selection = Path(args.selection or Path(args.out) / "selection.json")
    try:
        parse_rows(args.methods)
        for m in (m.strip() for m in args.models.split(",") if m.strip()):
            if m not in MODELS:
                raise ValueError(f"--models: unknown model {m!r}; choose from {', '.join(MODELS)}")
        PrequentialConfig(chunk=args.chunk, context=args.context, stride=args.stride)
        if args.tune_tokens < 4 * args.chunk + 1:
            raise ValueError(f"--tune-tokens must be >= {4 * args.chunk + 1}")
        if args.budget < 1:
            raise ValueError("--budget must be >= 1")
        sched = args.scheduler
        if not sched or (sched.startswith("local:") and not (sched[6:].isdigit()
                                                            and int(sched[6:]) >= 1)):
            raise ValueError(f"--scheduler: expected serial, local, local:N (N >= 1) or a "
                             f"scheduler address, got {sched!r}")
        if args.step in ("all", "select"):
            # The selection step gets the valid path only; the test path is named as forbidden
            # (compared by path, never opened).
            select_step(args, wikitext_path("valid"), forbidden=[wikitext_path("test")])
        if args.step in ("all", "report"):
            return report_step(args, selection, wikitext_path("test"))
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench_lm: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
