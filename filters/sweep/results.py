"""Assemble the cell files of a sweep into one xarray Dataset (``results.nc``)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import xarray as xr

from .cells import cell_kind
from .spec import SweepSpec
from .store import CellStore

__all__ = ["assemble_results", "write_results", "RESULT_VARIABLES", "MISSING"]

#: Variables every sweep's Dataset has besides its kind's numbers.
RESULT_VARIABLES = ("wall_cell", "status", "message")
#: Status of a cell that has no file yet (an interrupted sweep).
MISSING = "missing"

_UNITS = {"wall_cell": "s", "wall_per_cycle": "s"}
_LONG = {"rmse_analysis": "time-averaged analysis RMSE after burn-in",
         "rmse_analysis_se": "standard error of rmse_analysis (autocorrelation-corrected)",
         "spread": "time-averaged analysis root-mean variance (spread) after burn-in",
         "wall_per_cycle": "mean wall time of a forecast + analysis cycle",
         "wall_cell": "wall time of the whole cell on its worker",
         "status": "ok, diverged, error, skipped (filter lacks an axis) or missing",
         "message": "why a cell is not ok"}


def _coord(values: tuple) -> np.ndarray:
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=float)


def assemble_results(spec: SweepSpec, store: CellStore) -> xr.Dataset:
    """One Dataset with a dimension per grid axis (named as in the spec).

    Parameters
    ----------
    spec : SweepSpec
    store : CellStore
        Where the cell files are.

    Returns
    -------
    xarray.Dataset
        The kind's numeric variables (``rmse_analysis``, ``rmse_analysis_se``,
        ``spread``, ``wall_per_cycle`` for a ``setting`` sweep), ``wall_cell``,
        ``status`` and ``message`` (strings); NaN and status ``missing`` where a
        cell has no file.  Attributes: ``sweep_kind``, ``spec`` (JSON),
        ``score`` and ``group`` (what tables and plots rank by).

    Examples
    --------
    >>> import tempfile
    >>> from filters.sweep import parse_spec
    >>> spec = parse_spec({"setting": {"name": "sakov2012"}, "grid": {"filter": ["ETKF"],
    ...                    "N": [8, 16]}})
    >>> ds = assemble_results(spec, CellStore(tempfile.mkdtemp()))
    >>> dict(ds.sizes), ds["status"].values.tolist()
    ({'filter': 1, 'N': 2}, [['missing', 'missing']])
    """
    kind = cell_kind(spec.kind)
    dims = list(spec.axes)
    shape = spec.shape
    numbers = {v: np.full(shape, np.nan) for v in (*kind.variables, "wall_cell")}
    status = np.full(shape, MISSING, dtype=object)
    message = np.full(shape, "", dtype=object)
    for cell in spec.cells():
        res = store.read(cell)
        if res is None:
            continue
        for v, arr in numbers.items():
            arr[cell.index] = float(res.get(v, np.nan))
        status[cell.index] = str(res.get("status", "error"))
        message[cell.index] = str(res.get("message", ""))
    coords = {a: (a, _coord(v)) for a, v in spec.axes.items()}
    data = {v: (dims, arr, {"long_name": _LONG.get(v, v), **({"units": _UNITS[v]}
                                                             if v in _UNITS else {})})
            for v, arr in numbers.items()}
    data["status"] = (dims, status, {"long_name": _LONG["status"]})
    data["message"] = (dims, message, {"long_name": _LONG["message"]})
    return xr.Dataset(data, coords=coords, attrs={
        "sweep_kind": spec.kind, "spec": json.dumps(spec.to_dict()), "score": kind.score,
        "group": kind.group, "title": f"da-embed sweep ({spec.kind})"})


def write_results(ds: xr.Dataset, path) -> pathlib.Path:
    """Write ``ds`` as netCDF via a temporary file and a rename (never half-written).

    Parameters
    ----------
    ds : xarray.Dataset
    path : str or PathLike

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_results(xr.Dataset({"x": ("a", [1.0])}), pathlib.Path(tempfile.mkdtemp()) / "r.nc")
    >>> p.name
    'r.nc'
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp)
    os.replace(tmp, path)
    return path
