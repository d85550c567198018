"""``da-embed sweep SPEC.toml --out DIR``: an experiment grid on Dask distributed.

The engine is :func:`filters.sweep.run_sweep`; language-model cells (an
``[lm]`` spec) are the kind registered by :mod:`da_embed.sweep`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

__all__ = ["SweepArgs", "add_parser", "run"]


@dataclass(frozen=True)
class SweepArgs:
    """The options of ``da-embed sweep``.

    Parameters
    ----------
    spec : str
        The TOML spec file.
    out : str
        Output folder (``results.nc``, ``spec.json``, ``cells/``).
    scheduler : str
        ``local``, ``local:N`` or a Dask scheduler address.
    resume : bool
        Keep the finished cells in ``out`` and run only the missing ones.
    retries : int
        Dask retries of a cell's task.

    Examples
    --------
    >>> ns = argparse.Namespace(spec="s.toml", out="runs/s", scheduler="local:2", resume=False,
    ...                         retries=2)
    >>> SweepArgs.from_namespace(ns).scheduler
    'local:2'
    """

    spec: str
    out: str
    scheduler: str
    resume: bool
    retries: int

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "SweepArgs":
        """The options from the parsed arguments."""
        return cls(spec=args.spec, out=args.out, scheduler=args.scheduler,
                   resume=bool(args.resume), retries=args.retries)


def _count(text: str) -> int:
    """An integer >= 0 (``--retries``)."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def add_parser(sub) -> None:
    """Add the ``sweep`` subcommand to the ``da-embed`` subparsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subparsers of :func:`da_embed.cli.build_parser`.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["sweep", "s.toml", "--out", "d"]).scheduler
    'local'
    """
    p = sub.add_parser(
        "sweep", help="run an experiment grid (filters or language-model cells) on Dask",
        description="Run every cell of the grid in SPEC.toml on Dask distributed (a "
                    "LocalCluster, or the scheduler at ADDRESS), write each finished cell at "
                    "once under DIR/cells/, then DIR/results.nc (one dimension per grid axis) "
                    "and print the table: mean over seeds with the standard error across "
                    "seeds, and the best cell per filter.  A [setting] spec runs "
                    "filters.assimilate cells, an [lm] spec compare cells.")
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep's spec ([setting] or [lm], [grid])")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--scheduler", default="local", metavar="local|local:N|ADDRESS",
                   help="'local': a LocalCluster, one worker process per core; 'local:N': N "
                        "worker processes; else a Dask scheduler address (tcp://host:8786)")
    p.add_argument("--resume", action="store_true",
                   help="keep the cells already in DIR and run only the missing ones")
    p.add_argument("--retries", type=_count, default=2,
                   help="Dask retries of a cell whose task failed (default 2)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def run(args: argparse.Namespace) -> int:
    """Run ``da-embed sweep``: the grid, the table, the path of ``results.nc``.

    Parameters
    ----------
    args : argparse.Namespace
        The options of :func:`add_parser`; converted to :class:`SweepArgs` at once.

    Returns
    -------
    int
        0 when every cell has its file; 1 when the cluster could not finish
        some (rerun with ``--resume``).

    Examples
    --------
    >>> run(argparse.Namespace(spec="no-such.toml", out="d", scheduler="local", resume=False,
    ...                        retries=2))
    Traceback (most recent call last):
    ...
    FileNotFoundError: no spec file at 'no-such.toml'
    """
    from filters.sweep import format_table, load_spec, run_sweep

    from .. import sweep as _lm_cells  # noqa: F401  (registers the [lm] cell kind)
    from ..progress import progress_bar

    config = SweepArgs.from_namespace(args)
    spec = load_spec(config.spec)
    report = run_sweep(spec, config.out, scheduler=config.scheduler, resume=config.resume,
                       retries=config.retries, progress=progress_bar)
    print(f"{report.cells} cells: {report.reused} already in {config.out}, {report.ran} run, "
          f"{report.skipped} skipped (filter lacks an axis)")
    print(format_table(report.results))
    print(report.out / "results.nc")
    if report.failed:
        for coords, message in report.failed:
            print(f"not finished: {coords}: {message}", file=sys.stderr)
        print(f"da-embed sweep: error: {len(report.failed)} cells could not be finished on the "
              "cluster; rerun with --resume", file=sys.stderr)
        return 1
    return 0
