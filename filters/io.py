"""netCDF input and output of runs (netCDF4 engine, CF metadata kept)."""

from __future__ import annotations

import os

import xarray as xr

__all__ = ["to_netcdf", "open_run"]


def to_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> str:
    """Write a run to ``path`` with the netCDF4 engine; returns the path.

    Parent folders are created.  Reopening with :func:`open_run` gives a
    Dataset identical to ``ds``.

    Parameters
    ----------
    ds : xarray.Dataset
        The run (e.g. from :func:`filters.assimilate`).
    path : str or os.PathLike
        The file to write; an existing file is overwritten.

    Returns
    -------
    str
        ``path`` as a string.

    Examples
    --------
    >>> import tempfile
    >>> ds = xr.Dataset({"rmse": ("time", [0.5, 0.25])}, attrs={"filter": "ETKF"})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = to_netcdf(ds, os.path.join(folder, "runs", "etkf.nc"))
    ...     open_run(path).identical(ds)
    True
    """
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4")
    return path


def open_run(path: str | os.PathLike) -> xr.Dataset:
    """Load a run written by :func:`to_netcdf` fully into memory (file closed after).

    Parameters
    ----------
    path : str or os.PathLike
        A netCDF file written by :func:`to_netcdf`.

    Returns
    -------
    xarray.Dataset
        The run, loaded; the file is not kept open.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = to_netcdf(xr.Dataset({"x": ("time", [1.0, 2.0])}), os.path.join(folder, "r.nc"))
    ...     open_run(path)["x"].values.tolist()
    [1.0, 2.0]
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no run file at {os.fspath(path)!r}")
    return xr.load_dataset(path, engine="netcdf4")
