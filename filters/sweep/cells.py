"""Cells of a sweep and the registry of cell kinds.

A cell is one point of the grid: its coordinates (axis name -> value) and a
JSON payload that says everything its run needs, so that its key (a hash of
kind and payload) names its result file and a changed setting is a new cell.
A *cell kind* turns a spec's fixed table and a cell's coordinates into that
payload and runs it; :mod:`filters.sweep` has the kind ``setting`` (one
:func:`filters.assimilate` run), ``da_embed.sweep`` registers ``lm``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Cell", "CellKind", "register_cell_kind", "cell_kind", "run_cell", "SKIPPED",
           "skipped_result"]

#: Status of a cell that was not run because its filter lacks one of its axes.
SKIPPED = "skipped"


@dataclass(frozen=True)
class Cell:
    """One point of a sweep's grid.

    Parameters
    ----------
    kind : str
        Name of its :class:`CellKind`.
    coords : dict
        Axis name -> value, in the order of the spec's grid.
    index : tuple of int
        Position of each value on its axis.
    payload : dict
        JSON-serialisable: everything the kind's ``run`` needs.  A ``"skip"``
        entry (a reason) marks a cell that is not run.

    Examples
    --------
    >>> c = Cell("setting", {"seed": 0}, (0,), {"seed": 0})
    >>> len(c.key), c.key == Cell("setting", {"seed": 1}, (1,), {"seed": 0}).key
    (16, True)
    """

    kind: str
    coords: dict
    index: tuple
    payload: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """16 hex digits of the SHA-256 of kind and payload: the cell's file name."""
        text = json.dumps({"kind": self.kind, "payload": self.payload}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def skip(self) -> str | None:
        """Why the cell is not run, or None."""
        return self.payload.get("skip")


@dataclass(frozen=True)
class CellKind:
    """How one kind of cell is validated, described and run.

    Parameters
    ----------
    name : str
        The spec's table that selects this kind (``setting``, ``lm``).
    validate : callable
        ``validate(fixed, axes) -> fixed``: checks the kind's table and the
        grid's axes (name -> list of values), returns the table normalised;
        raises ValueError naming the entry.
    payload : callable
        ``payload(fixed, coords) -> dict``: the JSON payload of one cell.
    run : callable
        ``run(payload) -> dict``: a module-level function (Dask ships it to
        the workers by reference) returning the cell's numbers (the names in
        ``variables``) plus ``status`` and ``message``; it catches the
        cell's own failures (status ``error``) rather than raising.
    variables : tuple of str
        The numeric results of a cell (variables of ``results.nc``).
    score : str
        The variable the table and the plots rank cells by (lower is better).
    group : str
        The axis that the table's "best cell per ..." is taken for.
    cost : callable, optional
        ``cost(payload) -> float``: a rough relative run time of a cell.  The
        engine starts the costliest cells first (the longest-processing-time
        rule), so that a sweep does not end with one worker running a long
        cell while the others wait.  Only the order changes, never a result.
        Default: the grid's order.

    Examples
    --------
    >>> cell_kind("setting").variables[:2]
    ('rmse_analysis', 'rmse_analysis_se')
    """

    name: str
    validate: Callable[[dict, dict], dict]
    payload: Callable[[dict, dict], dict]
    run: Callable[[dict], dict]
    variables: tuple
    score: str
    group: str
    cost: Callable[[dict], float] | None = None


_KINDS: dict[str, CellKind] = {}


def register_cell_kind(kind: CellKind) -> CellKind:
    """Register a cell kind under its name (again: replaced).

    Parameters
    ----------
    kind : CellKind

    Returns
    -------
    CellKind
        ``kind`` itself.

    Examples
    --------
    >>> register_cell_kind(cell_kind("setting")).name
    'setting'
    """
    if not isinstance(kind, CellKind):
        raise ValueError(f"kind must be a CellKind, got {type(kind).__name__}")
    _KINDS[kind.name] = kind
    return kind


def cell_kind(name: str) -> CellKind:
    """The registered cell kind called ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    CellKind

    Raises
    ------
    ValueError
        For an unknown name.

    Examples
    --------
    >>> cell_kind("setting").group
    'filter'
    """
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown cell kind {name!r} (known: {', '.join(sorted(_KINDS))})") from None


def kinds() -> dict:
    """Name -> CellKind of every registered kind (a copy)."""
    return dict(_KINDS)


def skipped_result(kind: CellKind, reason: str) -> dict:
    """The result of a cell that is not run: NaN numbers, status ``skipped``, the reason.

    Parameters
    ----------
    kind : CellKind
    reason : str

    Returns
    -------
    dict

    Examples
    --------
    >>> skipped_result(cell_kind("setting"), "no radius")["status"]
    'skipped'
    """
    out = {v: float("nan") for v in kind.variables}
    out.update(status=SKIPPED, message=reason)
    return out


def run_cell(cell: Cell) -> dict:
    """Run one cell here, in this process (the serial loop a sweep must equal).

    Parameters
    ----------
    cell : Cell

    Returns
    -------
    dict
        The kind's numbers, ``status`` and ``message``.

    Examples
    --------
    >>> from filters.sweep import parse_spec
    >>> spec = parse_spec({"setting": {"name": "linear_gaussian", "n_obs": 20},
    ...                    "grid": {"filter": ["KalmanFilter"]}})
    >>> run_cell(spec.cells()[0])["status"]
    'ok'
    """
    kind = cell_kind(cell.kind)
    if cell.skip:
        return skipped_result(kind, cell.skip)
    return kind.run(cell.payload)
