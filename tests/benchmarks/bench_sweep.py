#!/usr/bin/env python
"""Sweep benchmark: a 24-cell grid on 2 Dask workers against the serial loop, and Dask's cost per cell.

Run with ``make bench`` or directly: ``python tests/benchmarks/bench_sweep.py``
(``--quick``: fewer cycles, to check that the script works).  Not collected by
pytest.

What it measures
----------------
1. **24 cells** (ETKF, EnKF, EnSRF x N 16, 24 x inflation 1.02, 1.04 x seed
   0, 1 on ``sakov2008``, Lorenz-96), once per entry of ``--n-obs`` (cycles per
   cell; default 1500 and 6000, cells of about 75 and 280 ms, to show how the
   fixed cost of a sweep, ``results.nc`` and the tail, weighs on short cells):

   * serial: :func:`filters.sweep.run_cell` of every cell in a loop in this
     process, after one warm-up cell per filter (Numba's kernels loaded);
   * cold: :func:`filters.sweep.run_sweep` with ``scheduler="local:2"``, timed
     from the call to its return: the LocalCluster's start, the workers'
     imports and warm-up, the cells, the files and ``results.nc``;
   * warm: the same on a LocalCluster of 2 single-threaded worker processes
     started and warmed (one cell per filter on each) beforehand, passed as ``client``.

   Serial loop and warm sweep alternate ``--repeats`` times (default 5); the
   ratio is the median warm sweep over the median serial loop (target <= 0.6
   for warm), and each repeat's own ratio is printed.  The cold sweep runs
   once.
2. **Dask's cost per cell**: ``--trivial`` cells whose run returns at once,
   through :func:`run_sweep` on the warm cluster (submission, scheduling,
   transfer, the cell's JSON file): wall time / cells.  Target <= 50 ms.

The header gives the load average: the machine is shared, and 2 workers on 2
cores compete with everything else on it.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

from filters.sweep import CellKind, parse_spec, register_cell_kind, run_cell, run_sweep

TARGET_RATIO = 0.6
TARGET_OVERHEAD = 0.050


def trivial_run(payload: dict) -> dict:
    """A cell that does nothing (shipped to the workers by value: it lives in __main__)."""
    return {"x": float(payload["i"]), "status": "ok", "message": ""}


def _spec(n_obs: int) -> dict:
    return {"setting": {"name": "sakov2008", "n_obs": n_obs},
            "grid": {"filter": ["ETKF", "EnKF", "EnSRF"], "N": [16, 24],
                     "inflation": [1.02, 1.04], "seed": [0, 1]}}


def _time_grid(n_obs: int, client, repeats: int) -> tuple[list, list, float]:
    """Serial loop and warm sweep of the 24-cell grid, alternated; one cold sweep."""
    spec = parse_spec(_spec(n_obs))
    cells = spec.cells()
    warmup = [next(c for c in cells if c.coords["filter"] == f) for f in spec.axes["filter"]]
    for c in warmup:  # warm-up: each filter's Numba kernels loaded, here and on both workers
        run_cell(c)
        client.run(run_cell, c)

    def serial_loop() -> float:
        tic = time.perf_counter()
        for c in cells:
            run_cell(c)
        return time.perf_counter() - tic

    with tempfile.TemporaryDirectory() as d:
        tic = time.perf_counter()
        run_sweep(spec, d, scheduler="local:2")
        cold = time.perf_counter() - tic
    serial, warm = [], []
    for _ in range(repeats):  # alternated, so that load drifts hit both alike
        serial.append(serial_loop())
        with tempfile.TemporaryDirectory() as d:
            tic = time.perf_counter()
            run_sweep(spec, d, client=client)
            warm.append(time.perf_counter() - tic)
    return serial, warm, cold


def _report(n_obs: int, serial: list, warm: list, cold: float) -> None:
    serial_m, warm_m = statistics.median(serial), statistics.median(warm)
    ratio = warm_m / serial_m
    print(f"24 cells, sakov2008 n_obs={n_obs} ({1000 * serial_m / 24:.0f} ms per cell serially)")
    print(f"  serial loop             {serial_m:7.2f} s   (median of {len(serial)})")
    print(f"  sweep, 2 workers, cold  {cold:7.2f} s   ratio {cold / serial_m:.2f}   (once)")
    print(f"  sweep, 2 workers, warm  {warm_m:7.2f} s   ratio {ratio:.2f}   (median of "
          f"{len(warm)}; target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    print("  each repeat's warm/serial: " + " ".join(f"{w / t:.2f}" for w, t in zip(warm, serial)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", default="1500,6000",
                        help="comma-separated cycles per cell, one grid each (default 1500,6000)")
    parser.add_argument("--trivial", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        sizes = [int(v) for v in args.n_obs.split(",")]
    except ValueError:
        parser.error(f"--n-obs: expected comma-separated integers, got {args.n_obs!r}")
    if args.quick:
        sizes, args.trivial, args.repeats = [100], 40, 1
    import distributed

    print(f"bench_sweep: dask/distributed {distributed.__version__}, {os.cpu_count()} cores, "
          f"load average before {os.getloadavg()[0]:.2f}")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    with cluster, distributed.Client(cluster) as client:
        timed = {n: _time_grid(n, client, args.repeats) for n in sizes}
        register_cell_kind(CellKind("trivial", validate=lambda f, a: f,
                                    payload=lambda f, c: dict(c), run=trivial_run,
                                    variables=("x",), score="x", group="i"))
        trivial = parse_spec({"trivial": {}, "grid": {"i": list(range(args.trivial))}})
        with tempfile.TemporaryDirectory() as d:
            run_sweep(parse_spec({"trivial": {}, "grid": {"i": [-1, -2]}}), d, client=client)
        with tempfile.TemporaryDirectory() as d:
            tic = time.perf_counter()
            run_sweep(trivial, d, client=client)
            overhead = (time.perf_counter() - tic) / args.trivial
    print(f"load average after {os.getloadavg()[0]:.2f}")
    for n, (serial, warm, cold) in timed.items():
        _report(n, serial, warm, cold)
    print(f"Dask cost per cell ({args.trivial} trivial cells, 2 warm workers): "
          f"{1000 * overhead:.1f} ms   (target <= {1000 * TARGET_OVERHEAD:.0f} ms: "
          f"{'met' if overhead <= TARGET_OVERHEAD else 'NOT met'})")


if __name__ == "__main__":
    main()
