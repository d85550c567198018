#!/usr/bin/env python
"""Whole ``assimilate`` call per cycle on Lorenz-96, the compiled path against the generic one.

``sakov2008(n_obs=2000)``, one simulation (seed 3); each filter runs with
``compiled=True`` and ``compiled=False``, interleaved, ``--repeats`` times; the
table gives the medians of wall and process (CPU) time per cycle, and the load
average before and after.  Run: ``OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python
tests/benchmarks/bench_compiled.py [--filters ETKF,EnKF] [--repeats 5]`` (filters
are selected by the start of their row label).  Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import filters
from filters import assimilate
from filters.settings import sakov2008

ROWS = {
    "ETKF N=28 infl 1.02 rot": lambda: filters.ETKF(N=28, inflation=1.02, rotate=True),
    "ETKF N=28 infl 1.02 (no rotation)": lambda: filters.ETKF(N=28, inflation=1.02),
    "EnKF N=40 infl 1.06": lambda: filters.EnKF(N=40, inflation=1.06),
    "DEnKF N=40 infl 1.01": lambda: filters.DEnKF(N=40, inflation=1.01),
    "EnSRF N=28 infl 1.02 rot": lambda: filters.EnSRF(N=28, inflation=1.02, rotate=True),
    "LETKF N=7 r=4 infl 1.04 rot": lambda: filters.LETKF(N=7, inflation=1.04, radius=4.0,
                                                         rotate=True),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--filters", default="", help="comma-separated label prefixes (default: all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=2000)
    args = ap.parse_args(argv)
    prefixes = [p for p in args.filters.split(",") if p]
    rows = {k: v for k, v in ROWS.items() if not prefixes or any(k.startswith(p) for p in prefixes)}
    T = args.cycles
    setting = sakov2008(n_obs=T)
    sim = setting.simulate(seed=3)
    for make in rows.values():  # compile / warm up
        for c in (True, False):
            assimilate(make(), setting.with_(n_obs=20), seed=0, compiled=c)
    wall = {(k, c): [] for k in rows for c in (True, False)}
    cpu = {(k, c): [] for k in rows for c in (True, False)}
    rmse = {}
    load0 = os.getloadavg()
    for _ in range(args.repeats):
        for k, make in rows.items():
            for c in (True, False):
                t0, p0 = time.perf_counter(), time.process_time()
                ds = assimilate(make(), setting, simulation=sim, seed=1, compiled=c)
                wall[k, c].append((time.perf_counter() - t0) / T)
                cpu[k, c].append((time.process_time() - p0) / T)
                rmse[k, c] = ds.attrs["rmse_analysis_mean"]
    print(f"load average before {load0}, after {os.getloadavg()}")
    print("| filter | compiled us/cycle (wall) | (CPU) | generic us/cycle (wall) | (CPU) | "
          "RMSE compiled / generic |")
    print("|---|---|---|---|---|---|")
    for k in rows:
        med = [np.median(d[k, c]) * 1e6 for c in (True, False) for d in (wall, cpu)]
        print(f"| {k} | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.1f} | {med[3]:.1f} | "
              f"{rmse[k, True]:.3f} / {rmse[k, False]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
