"""``da-embed plot RUN.nc|DIR``: the figures of a run or a compare folder as PNG files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .argtypes import positive_int

__all__ = ["PlotArgs", "add_parser", "run"]


@dataclass(frozen=True)
class PlotArgs:
    """The options of ``da-embed plot``.

    Parameters
    ----------
    run : str
        A ``.nc`` run file or a compare output folder.
    out : str, optional
        Folder for the PNG files (None: next to the input).
    dpi : int
        Resolution of the PNG files.

    Examples
    --------
    >>> PlotArgs.from_namespace(argparse.Namespace(run="r.nc", out=None, dpi=150)).dpi
    150
    """

    run: str
    out: str | None
    dpi: int

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "PlotArgs":
        """The options from the parsed arguments."""
        return cls(run=args.run, out=args.out, dpi=args.dpi)


def add_parser(sub) -> None:
    """Add the ``plot`` subcommand to the ``da-embed`` subparsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subparsers of :func:`da_embed.cli.build_parser`.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["plot", "runs/x"]).dpi
    150
    """
    p = sub.add_parser(
        "plot", help="write the figures of a run or a compare folder as PNG files",
        description="Write every figure that applies to RUN as PNG files and print their "
                    "paths: a compare output folder (per-chunk NLL, change vs frozen, and the "
                    "scale state, components and covariance of each method), a trajectory "
                    "<method>.nc, a summary.nc/summary.json, or a filters run .nc "
                    "(filters.plot figures).")
    p.add_argument("run", metavar="RUN.nc|DIR", help="a .nc run file or a compare output folder")
    p.add_argument("--out", default=None,
                   help="folder for the PNG files (default: next to the input; a folder's "
                        "figures go into the folder)")
    p.add_argument("--dpi", type=positive_int, default=150, help="resolution of the PNG files")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def run(args: argparse.Namespace) -> int:
    """Run ``da-embed plot``: print the path of every PNG file written.

    Parameters
    ----------
    args : argparse.Namespace
        The options of :func:`add_parser`; converted to :class:`PlotArgs` at once.

    Returns
    -------
    int
        Exit status 0.

    Examples
    --------
    >>> run(argparse.Namespace(run="no-such.nc", out=None, dpi=150))
    Traceback (most recent call last):
    ...
    FileNotFoundError: no file or folder at 'no-such.nc' (give a compare output folder or a \
.nc run file)
    """
    from ..plot import save_figures  # draws on bare Figures: no pyplot, no window

    config = PlotArgs.from_namespace(args)
    for path in save_figures(config.run, config.out, dpi=config.dpi):
        print(path)
    return 0
