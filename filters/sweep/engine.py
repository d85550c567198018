"""Run a sweep's cells on Dask distributed, writing each finished cell at once.

Dask does all the scheduling: a ``LocalCluster`` of worker processes by
default, or any scheduler address (a ``dask scheduler`` someone started,
dask-jobqueue, dask-kubernetes: pass their ``Client``).  Each cell is one
task submitted with ``retries``; a worker process that dies mid-cell makes the
scheduler run the cell again elsewhere (up to its ``allowed-failures``).  This
process receives results with ``as_completed`` and writes each one, so only
this process writes files and nothing is written twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from .cells import Cell, cell_kind, skipped_result
from .results import assemble_results, write_results
from .spec import SweepSpec, load_spec, parse_spec
from .store import CellStore

__all__ = ["run_sweep", "SweepReport", "open_client"]


@dataclass
class SweepReport:
    """What a sweep did.

    Parameters
    ----------
    out : pathlib.Path
        The output folder (``results.nc``, ``spec.json``, ``cells/``).
    cells : int
        Cells in the grid.
    reused : int
        Cells already on disk (``resume``), not run again.
    ran : int
        Cells run now (on the cluster) and written.
    skipped : int
        Cells not run because their filter lacks one of their axes.
    failed : list of tuple
        ``(coords, message)`` of cells the cluster could not finish (not
        written: a resume runs them again).
    results : xarray.Dataset or None
        The assembled ``results.nc``.

    Examples
    --------
    >>> SweepReport(pathlib.Path("x"), 4, 1, 3, 0).complete
    True
    """

    out: pathlib.Path
    cells: int
    reused: int
    ran: int
    skipped: int
    failed: list = field(default_factory=list)
    results: object = None

    @property
    def complete(self) -> bool:
        """True when every cell has its file."""
        return not self.failed


def _local_workers(scheduler: str, n_cells: int) -> int | None:
    """Worker count of a ``local`` / ``local:N`` scheduler, None for an address."""
    if scheduler == "local":
        return max(1, min(os.cpu_count() or 1, n_cells))
    if scheduler.startswith("local:"):
        n = scheduler.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"scheduler: 'local:N' needs a worker count N >= 1, got {scheduler!r}")
        return int(n)
    return None


@contextmanager
def open_client(scheduler: str = "local", n_cells: int = 1):
    """A ``distributed.Client`` for a scheduler spec, closed (with its cluster) on exit.

    Parameters
    ----------
    scheduler : str
        ``local`` (a ``LocalCluster`` of one single-threaded worker process
        per core, at most one per cell), ``local:N`` (N worker processes), or
        the address of a running scheduler (``tcp://host:8786``).
    n_cells : int
        Cells to run (caps the workers of ``local``).

    Yields
    ------
    distributed.Client

    Examples
    --------
    >>> with open_client("local:1") as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    if not isinstance(scheduler, str) or not scheduler:
        raise ValueError(f"scheduler must be 'local', 'local:N' or an address, got {scheduler!r}")
    from distributed import Client, LocalCluster

    n = _local_workers(scheduler, n_cells)
    if n is None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"scheduler: cannot reach {scheduler!r}: {exc}") from None
        with client:
            yield client
        return
    # One thread per worker: a cell is single-threaded numpy (filters.assimilate limits BLAS),
    # so parallelism comes from processes and threads would only contend for the GIL.
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _timed(run: Callable[[dict], dict], payload: dict) -> dict:
    """``run(payload)`` with the cell's wall time in seconds as ``wall_cell``."""
    tic = time.perf_counter()
    out = dict(run(payload))
    out["wall_cell"] = time.perf_counter() - tic
    return out


def _spec_of(spec) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    if isinstance(spec, (str, os.PathLike)):
        return load_spec(spec)
    raise ValueError(f"spec must be a dict, a SweepSpec or a TOML path, got {type(spec).__name__}")


def _make_bar(progress, total: int):
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="sweep", unit="cell")
    return progress(total=total, desc="sweep", unit="cell")


def run_sweep(spec, out, *, client=None, scheduler: str = "local", resume: bool = False,
              retries: int = 2, progress=False,
              on_cell: Callable[[Cell, dict], None] | None = None) -> SweepReport:
    """Run every cell of a spec on Dask and assemble ``OUT/results.nc``.

    Parameters
    ----------
    spec : dict, SweepSpec, str or PathLike
        The spec as a dict (the TOML tables), checked, or a TOML file.
    out : str or PathLike
        Output folder: ``spec.json``, ``cells/<key>.json`` (one per finished
        cell, written as it finishes) and ``results.nc``.
    client : distributed.Client, optional
        Run on this client's cluster (e.g. a dask-jobqueue ``SLURMCluster``'s
        or a dask-kubernetes one); it is left open.  Default: one opened from
        ``scheduler`` and closed at the end.
    scheduler : str, default "local"
        ``local``, ``local:N`` or a scheduler address (see :func:`open_client`);
        ignored when ``client`` is given.
    resume : bool
        Keep the cells already in ``out`` and run only the missing ones.
        Without it, an ``out`` that already holds cells is refused.
    retries : int, default 2
        Dask retries of a cell whose task raised (a cell's own errors are
        results; this covers failures around it).
    progress : bool or callable
        A bar counting cells: True for tqdm, or a factory called as
        ``progress(total=..., desc=..., unit=...)``.
    on_cell : callable, optional
        ``on_cell(cell, result)`` after each cell is written (logging, tests).

    Returns
    -------
    SweepReport

    Examples
    --------
    A LocalCluster of two worker processes (starting one takes seconds):

    >>> import tempfile
    >>> spec = {"setting": {"name": "sakov2012", "n_obs": 80},
    ...         "grid": {"filter": ["ETKF"], "N": [8, 16], "seed": [0, 1]}}
    >>> report = run_sweep(spec, tempfile.mkdtemp(), scheduler="local:2")  # doctest: +SKIP
    >>> report.results["rmse_analysis"].dims  # doctest: +SKIP
    ('filter', 'N', 'seed')
    """
    spec = _spec_of(spec)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    if client is None:  # a bad scheduler is refused before anything is written
        if not isinstance(scheduler, str) or not scheduler:
            raise ValueError(f"scheduler must be 'local', 'local:N' or an address, got {scheduler!r}")
        _local_workers(scheduler, 1)
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the file {os.fspath(out)!r}")
    if not resume and (out / "cells").is_dir() and any((out / "cells").glob("*.json")):
        raise ValueError(f"out {os.fspath(out)!r} already holds a sweep's cells: resume it "
                         "(--resume) or choose another folder")
    store = CellStore(out)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1) + "\n")
    kind = cell_kind(spec.kind)
    cells = spec.cells()
    todo = [c for c in cells if not store.has(c)]
    report = SweepReport(out, len(cells), len(cells) - len(todo), 0, 0)
    bar = _make_bar(progress, len(cells))
    if bar is not None:
        bar.update(report.reused)
    try:
        written = set()
        for c in todo:  # cells whose filter lacks an axis: no run, a result at once
            if c.skip and c.key not in written:
                res = skipped_result(kind, c.skip)
                store.write(c, res)
                written.add(c.key)
                report.skipped += 1
                _after(bar, on_cell, c, res)
            elif c.skip:
                report.skipped += 1
                _after(bar, on_cell, c, store.read(c))
        runs = [c for c in todo if not c.skip]
        if runs:
            if client is not None:
                _run_on(client, runs, kind, store, retries, report, bar, on_cell)
            else:
                with open_client(scheduler, len(runs)) as own:
                    _run_on(own, runs, kind, store, retries, report, bar, on_cell)
    finally:
        if bar is not None:
            bar.close()
    report.results = assemble_results(spec, store)
    write_results(report.results, out / "results.nc")
    return report


def _after(bar, on_cell, cell, result) -> None:
    if bar is not None:
        bar.update(1)
    if on_cell is not None:
        on_cell(cell, result)


def _run_on(client, runs, kind, store, retries, report, bar, on_cell) -> None:
    """Submit ``runs`` to ``client`` and write each result as it arrives.

    Costlier cells (``kind.cost``) get a higher Dask priority and start first;
    results travel with their completion (``with_results``), saving one round
    trip to the scheduler per cell.
    """
    from distributed import as_completed

    cost = kind.cost or (lambda payload: 0.0)
    # Submitted costliest first, so the first cells a scheduler hands out are the long ones.
    runs = sorted(runs, key=lambda c: cost(c.payload), reverse=True)
    futures = {client.submit(_timed, kind.run, c.payload, pure=False, retries=retries,
                             priority=_priority(cost(c.payload))): c
               for c in runs}
    for fut, result in as_completed(list(futures), with_results=True, raise_errors=False):
        cell = futures[fut]
        if fut.status != "finished":
            exc = fut.exception()
            report.failed.append((cell.coords, f"{type(exc).__name__}: {exc}"))
            continue
        store.write(cell, result)
        report.ran += 1
        fut.release()
        _after(bar, on_cell, cell, result)


def _priority(cost: float) -> int:
    # Dask priorities are integers, higher first; a log scale keeps them small.
    return int(round(100 * math.log1p(max(float(cost), 0.0))))
