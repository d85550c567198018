"""Trajectory logs of online runs: one CF-style netCDF4 file per run, appended per chunk.

The layout follows DESIGN.md section 5 and :func:`filters.assimilate` where
they overlap (``forecast_mean``, ``analysis_mean``, spreads, ``innovation``,
``wall_time`` on dims ``time``, ``state``, ``obs``), plus the language-model
quantities (per-chunk and per-token NLL, token ids, timing of each step).
``time`` is the chunk index and is an *unlimited* netCDF dimension: the
writer appends one chunk at a time and syncs the file, so a run that is
interrupted (Ctrl-C) or killed keeps every chunk it completed.  While a run
is writing, HDF5's file lock keeps other processes from opening the file;
set ``HDF5_USE_FILE_LOCKING=FALSE`` in the reader's environment to peek at
a live run (the file is consistent after every chunk).

Shapes: T chunks, n state size, L tokens per chunk, n_full the size of the
placement's own state when the filter state is a subspace of it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["VARIABLES", "WINDOW_VARIABLES", "FINAL", "TrajectoryWriter", "TrajectoryRecorder",
           "open_trajectory", "netcdf_attrs", "strict_json", "run_file_stem"]

#: Per-chunk variables: name -> (dims, dtype, long_name, units).
VARIABLES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "chunk_start": (("time",), "i8", "stream index of the chunk's first target token", "1"),
    "context_tokens": (("time",), "i8", "tokens of context before the chunk's first target", "1"),
    "tokens": (("time",), "i8", "number of tokens scored in the chunk", "1"),
    "nll": (("time",), "f8", "mean negative log-likelihood of the chunk's tokens under the "
            "forecast mean (prequential score)", "nat"),
    "token_nll": (("time", "obs"), "f8", "negative log-likelihood of each token of the chunk "
                  "under the forecast mean (prequential score)", "nat"),
    "token_id": (("time", "obs"), "i8", "token id of each target token of the chunk", "1"),
    "innovation": (("time", "obs"), "f8", "pseudo-observation minus the per-token NLL under "
                   "the forecast mean", "nat"),
    "forecast_mean": (("time", "state"), "f8", "forecast mean of the state (log-scales) used "
                      "to score the chunk", "1"),
    "forecast_spread": (("time", "state"), "f8", "forecast standard deviation of the state",
                        "1"),
    "analysis_mean": (("time", "state"), "f8", "analysis mean of the state after "
                      "assimilating the chunk", "1"),
    "analysis_spread": (("time", "state"), "f8", "analysis standard deviation of the state",
                        "1"),
    "wall_time": (("time",), "f8", "wall time of forecast, scoring and analysis", "s"),
    "wall_time_forecast": (("time",), "f8", "wall time of the forecast step", "s"),
    "wall_time_score": (("time",), "f8", "wall time of scoring the chunk (includes the LM "
                        "trunk pass)", "s"),
    "wall_time_analysis": (("time",), "f8", "wall time of the analysis step", "s"),
}

#: Per-chunk variables of windowed methods (4D-Var), logged only by them.
WINDOW_VARIABLES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "window_chunks": (("time",), "i8", "chunks in the 4D-Var window ending at the chunk", "1"),
    "cost_start": (("time",), "f8", "4D-Var cost of the window ending at the chunk, at its "
                   "background", "1"),
    "cost_end": (("time",), "f8", "4D-Var cost of the window ending at the chunk, at its "
                 "analysis", "1"),
    "iterations": (("time",), "i8", "minimiser iterations (Gauss-Newton outer loops or "
                   "L-BFGS iterations) of the window ending at the chunk", "1"),
    "converged": (("time",), "i8", "1 if the minimiser of the window ending at the chunk "
                  "converged, else 0", "1"),
}

_COORDS = {
    "time": {"long_name": "assimilation cycle (chunk index)", "units": "1", "axis": "T"},
    "state": {"long_name": "state component index", "units": "1"},
    "obs": {"long_name": "token position within the chunk", "units": "1"},
    "state_full": {"long_name": "component index of the placement's full state", "units": "1"},
    "state_b": {"long_name": "state component index (second axis of covariances)", "units": "1"},
}

#: Static variables written once: name -> (dims, long_name, units).
STATIC = {
    "subspace_basis": (("state_full", "state"), "orthonormal subspace basis P "
                       "(full state s = s_ref + P z)", "1"),
    "subspace_reference": (("state_full",), "subspace reference state s_ref", "1"),
}

#: Variables written once when the run ends: name -> (dims, long_name, units).
FINAL = {
    "analysis_covariance": (("state", "state_b"), "analysis covariance of the state after the "
                            "last completed chunk (the filter's covariance, or the sample "
                            "covariance of the analysis ensemble)", "1"),
}


def _final_variable(name: str, arr, n: int) -> np.ndarray:
    if name not in FINAL:
        raise ValueError(f"unknown final variable {name!r}; choose from {list(FINAL)}")
    arr = np.asarray(arr, dtype=float)
    if arr.shape != (n, n):
        raise ValueError(f"{name} must have shape ({n}, {n}), got {arr.shape}")
    return arr


def _variables(extra) -> dict:
    """:data:`VARIABLES` plus the named :data:`WINDOW_VARIABLES`."""
    unknown = [k for k in extra if k not in WINDOW_VARIABLES]
    if unknown:
        raise ValueError(f"unknown extra variables {unknown}; choose from "
                         f"{list(WINDOW_VARIABLES)}")
    return {**VARIABLES, **{k: WINDOW_VARIABLES[k] for k in extra}}


def _attr(value: Any):
    """A netCDF-storable attribute value (JSON for containers, text for None)."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def netcdf_attrs(attrs: dict) -> dict:
    """Attributes made netCDF-storable (see :func:`_attr`), CF ``Conventions`` first.

    Parameters
    ----------
    attrs : dict
        Attribute name to any value: None, bools, dicts and lists are encoded
        (``"none"``, 0/1, JSON); numbers and strings are kept.

    Returns
    -------
    dict
        ``{"Conventions": "CF-1.8", ...}`` with every value storable in netCDF.

    Examples
    --------
    >>> netcdf_attrs({"a": None, "b": {"x": 1}, "c": True})
    {'Conventions': 'CF-1.8', 'a': 'none', 'b': '{"x": 1}', 'c': 1}
    """
    out = {"Conventions": "CF-1.8"}
    out.update({k: _attr(v) for k, v in attrs.items()})
    return out


def _created() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class TrajectoryRecorder:
    """Per-chunk records in memory; :meth:`to_dataset` builds the xarray Dataset.

    Parameters
    ----------
    n, L : int
        State size and tokens per chunk.
    static : dict, optional
        Static variables of :data:`STATIC` (name -> array).
    extra : sequence of str, optional
        Names of :data:`WINDOW_VARIABLES` recorded too (windowed methods).

    Examples
    --------
    >>> rec = TrajectoryRecorder(2, 3)
    >>> rec.to_dataset({"method": "frozen"}).sizes["time"]
    0
    """

    def __init__(self, n: int, L: int, static: dict | None = None, extra=()) -> None:
        self.n, self.L = int(n), int(L)
        self.static = dict(static or {})
        self.variables = _variables(extra)
        self.records: dict[str, list] = {k: [] for k in self.variables}

    def __len__(self) -> int:
        return len(self.records["nll"])

    def append(self, record: dict) -> None:
        """Add one chunk (a dict with every name of :data:`VARIABLES`, and the extras)."""
        for k in self.variables:
            self.records[k].append(np.asarray(record[k]))

    def to_dataset(self, attrs: dict, final: dict | None = None) -> xr.Dataset:
        """The Dataset of the chunks recorded so far (CF attributes on everything).

        ``final`` holds variables of :data:`FINAL` (name -> array), e.g. the
        final ``analysis_covariance``.
        """
        T = len(self)
        shapes = {"time": (T,), "state": (self.n,), "obs": (self.L,)}
        data = {}
        for k, (dims, dtype, long_name, units) in self.variables.items():
            shape = tuple(s for d in dims for s in shapes[d])
            vals = (np.stack(self.records[k]).astype(dtype) if T
                    else np.zeros(shape, dtype=dtype))
            data[k] = xr.Variable(dims, vals.reshape(shape),
                                  {"long_name": long_name, "units": units})
        coords = {"time": ("time", np.arange(T), _COORDS["time"]),
                  "state": ("state", np.arange(self.n), _COORDS["state"]),
                  "obs": ("obs", np.arange(self.L), _COORDS["obs"])}
        for k, arr in self.static.items():
            dims, long_name, units = STATIC[k]
            data[k] = xr.Variable(dims, np.asarray(arr, dtype=float),
                                  {"long_name": long_name, "units": units})
            if "state_full" not in coords:
                coords["state_full"] = ("state_full", np.arange(np.shape(arr)[0]),
                                        _COORDS["state_full"])
        for k, arr in (final or {}).items():
            arr = _final_variable(k, arr, self.n)
            dims, long_name, units = FINAL[k]
            data[k] = xr.Variable(dims, arr, {"long_name": long_name, "units": units})
            coords["state_b"] = ("state_b", np.arange(self.n), _COORDS["state_b"])
        return xr.Dataset(data, coords=coords, attrs=netcdf_attrs(attrs))


class TrajectoryWriter:
    """Append chunks to a netCDF4 file as they complete (unlimited ``time``).

    Every :meth:`append` writes one chunk and syncs the file, and
    ``chunks_completed`` is updated, so an interrupted run keeps every
    completed chunk; :meth:`close` (also on exceptions, as a context manager)
    writes the final attributes.

    Parameters
    ----------
    path : str or PathLike
        Output file (parent folders are created; an existing file is replaced).
    n, L : int
        State size and tokens per chunk.
    attrs : dict
        Global attributes (converted with :func:`netcdf_attrs`).
    static : dict, optional
        Static variables of :data:`STATIC`.
    extra : sequence of str, optional
        Names of :data:`WINDOW_VARIABLES` written too.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "run.nc")
    >>> with TrajectoryWriter(path, n=2, L=3, attrs={"method": "frozen"}) as w:
    ...     pass
    >>> int(open_trajectory(path).attrs["chunks_completed"])
    0
    """

    def __init__(self, path, n: int, L: int, attrs: dict, static: dict | None = None,
                 extra=()) -> None:
        import netCDF4

        self.variables = _variables(extra)
        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self.n, self.L, self.count = int(n), int(L), 0
        ds = netCDF4.Dataset(self.path, "w", format="NETCDF4")
        self._ds = ds
        try:
            ds.setncatts(netcdf_attrs({**attrs, "chunks_completed": 0}))
            ds.createDimension("time", None)
            ds.createDimension("state", self.n)
            ds.createDimension("obs", self.L)
            for name, size in (("state", self.n), ("obs", self.L)):
                v = ds.createVariable(name, "i8", (name,))
                v.setncatts(_COORDS[name])
                v[:] = np.arange(size)
            t = ds.createVariable("time", "i8", ("time",))
            t.setncatts(_COORDS["time"])
            for k, (dims, dtype, long_name, units) in self.variables.items():
                fill = {"fill_value": np.nan} if dtype == "f8" else {}
                v = ds.createVariable(k, dtype, dims, **fill)
                v.setncatts({"long_name": long_name, "units": units})
            for k, arr in (static or {}).items():
                arr = np.asarray(arr, dtype=float)
                if "state_full" not in ds.dimensions:
                    ds.createDimension("state_full", arr.shape[0])
                    c = ds.createVariable("state_full", "i8", ("state_full",))
                    c.setncatts(_COORDS["state_full"])
                    c[:] = np.arange(arr.shape[0])
                dims, long_name, units = STATIC[k]
                v = ds.createVariable(k, "f8", dims)
                v.setncatts({"long_name": long_name, "units": units})
                v[...] = arr
            ds.sync()
        except BaseException:
            ds.close()
            raise

    def append(self, record: dict) -> None:
        """Write one chunk and sync the file."""
        k = self.count
        ds = self._ds
        ds["time"][k] = k
        for name, (dims, _, _, _) in self.variables.items():
            if len(dims) == 1:
                ds[name][k] = record[name]
            else:
                ds[name][k, :] = np.asarray(record[name])
        self.count = k + 1
        ds.setncattr("chunks_completed", self.count)
        ds.sync()

    def close(self, attrs: dict | None = None, final: dict | None = None) -> None:
        """Write final attributes and variables of :data:`FINAL`, then close (harmless twice)."""
        if self._ds is None:
            return
        try:
            if attrs:
                self._ds.setncatts(netcdf_attrs(attrs))
            for k, arr in (final or {}).items():
                arr = _final_variable(k, arr, self.n)
                ds = self._ds
                if "state_b" not in ds.dimensions:
                    ds.createDimension("state_b", self.n)
                    c = ds.createVariable("state_b", "i8", ("state_b",))
                    c.setncatts(_COORDS["state_b"])
                    c[:] = np.arange(self.n)
                dims, long_name, units = FINAL[k]
                v = ds.createVariable(k, "f8", dims)
                v.setncatts({"long_name": long_name, "units": units})
                v[...] = arr
        finally:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_trajectory(path) -> xr.Dataset:
    """Load a trajectory file fully into memory (the file is closed after).

    Parameters
    ----------
    path : str or PathLike
        A file written by :class:`TrajectoryWriter` (an interrupted run's file
        holds the chunks it completed).

    Returns
    -------
    xarray.Dataset
        One ``time`` entry per completed chunk, ``chunks_completed`` in all.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.

    See Also
    --------
    filters.open_run : The reader of a run of :func:`filters.assimilate`.

    Examples
    --------
    A writer closed before its first chunk leaves a trajectory of no chunks:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "run.nc")
    ...     with TrajectoryWriter(path, n=2, L=3, attrs={"method": "etkf"}):
    ...         pass
    ...     ds = open_trajectory(path)
    >>> ds.attrs["method"], ds.sizes["state"], ds.sizes["time"]
    ('etkf', 2, 0)
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no trajectory file at {os.fspath(path)!r}")
    return xr.load_dataset(path, engine="netcdf4")


def run_file_stem(label: str) -> str:
    """The shell-safe file stem of a method label (``enkf@fisher:8`` -> ``enkf_fisher-8``).

    ``@`` (a method's own subspace) becomes ``_``; ``:`` and every other
    character outside ``A-Za-z0-9._+-`` becomes ``-``, so a file name never
    needs quoting in a shell.  The stems of canonical labels are distinct
    (canonical method names hold no ``_``).

    Parameters
    ----------
    label : str
        A method label of :func:`da_embed.compare.compare`.

    Returns
    -------
    str

    Examples
    --------
    >>> run_file_stem("enkf@fisher:8"), run_file_stem("ekf+learned"), run_file_stem("4dvar")
    ('enkf_fisher-8', 'ekf+learned', '4dvar')
    """
    return re.sub(r"[^A-Za-z0-9._+-]", "-", str(label).replace("@", "_"))


def strict_json(value):
    """``value`` with every non-finite float (NaN, inf) replaced by ``None``.

    JSON has no NaN: Python writes a bare ``NaN`` that strict readers (jq,
    JavaScript's ``JSON.parse``) reject.  Summaries go through this before
    ``json.dump(..., allow_nan=False)``, so an undefined value reads as ``null``.

    Parameters
    ----------
    value : object
        Nested dicts, lists, tuples, numbers, numpy scalars and strings.

    Returns
    -------
    object
        The same structure, numpy scalars as Python numbers.

    Examples
    --------
    >>> strict_json({"ci": [float("nan"), 1.5], "n": np.int64(3)})
    {'ci': [None, 1.5], 'n': 3}
    """
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
