"""netCDF input and output of runs (netCDF4 engine, CF metadata kept)."""

from __future__ import annotations

import os

import xarray as xr

__all__ = ["to_netcdf", "open_run"]


def to_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> str:
    """Write a run to ``path`` with the netCDF4 engine; returns the path.

    Parent folders are created.  Reopening with :func:`open_run` gives a
    Dataset identical to ``ds``.
    """
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4")
    return path


def open_run(path: str | os.PathLike) -> xr.Dataset:
    """Load a run written by :func:`to_netcdf` fully into memory (file closed after)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no run file at {os.fspath(path)!r}")
    return xr.load_dataset(path, engine="netcdf4")
