"""A sweep's spec: parse and check a dict or a TOML file, expand it into cells.

A spec has a ``[grid]`` table (axis name -> list of values, ``filter`` and
``seed`` included) and one table that names the cell kind and fixes what the
grid does not vary: ``[setting]`` (a factory of :mod:`filters.settings` and its
keywords) or ``[lm]`` (registered by ``da_embed.sweep``).  Every error is a
ValueError naming the entry.
"""

from __future__ import annotations

import itertools
import math
import os
import pathlib
import sys
from dataclasses import dataclass

from .cells import Cell, cell_kind, kinds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["SweepSpec", "parse_spec", "load_spec"]


@dataclass(frozen=True)
class SweepSpec:
    """A checked spec: its cell kind, fixed table and grid axes.

    Parameters
    ----------
    kind : str
        The cell kind (``setting`` or ``lm``), named by the spec's table.
    fixed : dict
        That table, normalised by the kind.
    axes : dict
        Axis name -> tuple of values, in the spec's order.

    Examples
    --------
    >>> spec = parse_spec({"setting": {"name": "sakov2012", "n_obs": 80},
    ...                    "grid": {"filter": ["ETKF", "EnKF"], "N": [8, 16]}})
    >>> spec.shape, len(spec.cells())
    ((2, 2), 4)
    """

    kind: str
    fixed: dict
    axes: dict

    @property
    def shape(self) -> tuple:
        """Number of values of each axis."""
        return tuple(len(v) for v in self.axes.values())

    def cells(self) -> list[Cell]:
        """Every cell of the grid, the last axis varying fastest.

        Returns
        -------
        list of Cell
        """
        kind = cell_kind(self.kind)
        names = list(self.axes)
        out = []
        for index in itertools.product(*(range(n) for n in self.shape)):
            coords = {a: self.axes[a][i] for a, i in zip(names, index)}
            out.append(Cell(self.kind, coords, index, kind.payload(self.fixed, coords)))
        return out

    def to_dict(self) -> dict:
        """The spec as a plain dict (what :func:`parse_spec` takes back).

        Returns
        -------
        dict
        """
        return {self.kind: dict(self.fixed), "grid": {a: list(v) for a, v in self.axes.items()}}


def _check_axis(name, values) -> tuple:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"[grid] {name}: expected a list of values, got {values!r}")
    if len(values) == 0:
        raise ValueError(f"[grid] {name}: the axis is empty (give at least one value)")
    types = set()
    for v in values:
        if isinstance(v, bool):
            types.add("bool")
        elif isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"[grid] {name}: values must be finite, got {v!r}")
            types.add("number")
        elif isinstance(v, str):
            types.add("str")
        else:
            raise ValueError(f"[grid] {name}: values must be numbers, strings or booleans, "
                             f"got {v!r}")
    if len(types) > 1:
        raise ValueError(f"[grid] {name}: values mix {' and '.join(sorted(types))}; "
                         "one type per axis")
    if len(set(values)) != len(values):
        raise ValueError(f"[grid] {name}: repeated values in {list(values)!r}")
    return tuple(values)


def parse_spec(spec) -> SweepSpec:
    """Check a spec given as a dict (the TOML file's tables) and return it.

    Parameters
    ----------
    spec : dict or SweepSpec
        ``{"grid": {...}, "setting": {...}}`` or ``{"grid": {...}, "lm": {...}}``.

    Returns
    -------
    SweepSpec

    Raises
    ------
    ValueError
        Naming the entry: an unknown table, a missing grid, an empty or
        malformed axis, an unknown filter or setting, an axis no filter has.

    Examples
    --------
    >>> parse_spec({"setting": {"name": "sakov2012"}, "grid": {"filter": ["ETKF"], "N": []}})
    Traceback (most recent call last):
    ...
    ValueError: [grid] N: the axis is empty (give at least one value)
    """
    if isinstance(spec, SweepSpec):
        return spec
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be a dict of tables, got {type(spec).__name__}")
    known = kinds()
    tables = [k for k in spec if k != "grid"]
    for k in tables:
        if k not in known:
            raise ValueError(f"unknown table [{k}] (a spec has [grid] and one of "
                             f"{', '.join(f'[{n}]' for n in sorted(known))})")
    if len(tables) != 1:
        raise ValueError("a spec needs exactly one of "
                         f"{', '.join(f'[{n}]' for n in sorted(known))} besides [grid], "
                         f"got {len(tables)}")
    kind = tables[0]
    fixed = spec[kind]
    if not isinstance(fixed, dict):
        raise ValueError(f"[{kind}] must be a table, got {fixed!r}")
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ValueError("[grid] is missing or empty: give the axes (name = [values])")
    axes = {str(name): _check_axis(name, values) for name, values in grid.items()}
    fixed = cell_kind(kind).validate(dict(fixed), {a: list(v) for a, v in axes.items()})
    return SweepSpec(kind, fixed, axes)


def load_spec(path) -> SweepSpec:
    """Read and check a TOML spec file.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    SweepSpec

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a TOML file, or a bad spec (see :func:`parse_spec`); the message
        starts with the file name.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.toml"
    >>> _ = p.write_text("grid = [1, 2")
    >>> load_spec(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../bad.toml: not a TOML file: ...
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no spec file at {os.fspath(path)!r}")
    if p.is_dir():
        raise IsADirectoryError(f"the spec {os.fspath(path)!r} is a folder, not a TOML file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{os.fspath(p)}: not a TOML file: {exc}") from None
    try:
        return parse_spec(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(p)}: {exc}") from None
