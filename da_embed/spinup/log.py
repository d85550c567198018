"""The training trajectory ``spinup.nc``: one record per step, appended and synced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .._version import __version__
from ..trajectory import netcdf_attrs
from .checkpoint import _json_default, _now
from .config import SpinupConfig

__all__ = ["LOG_NAME", "LOG_VARIABLES"]

#: File name of the training trajectory in ``out``.
LOG_NAME = "spinup.nc"
#: Per-step variables of ``spinup.nc``: name -> (dims, long_name, units).
LOG_VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "objective": (("step",), "Laplace approximation of the negative log marginal likelihood "
                  "of the step's windows (strong constraint: their NLL), per token", "nat"),
    "nll": (("step",), "token NLL at the E-step's states S* (strong: at the rollout), "
            "per token", "nat"),
    "nll_forecast": (("step",), "token NLL at the windows' forecast s_0 = s_b, "
                     "s_k = m(s_{k-1}, h_{k-1}) (no data used), per token", "nat"),
    "background": (("step",), "1/2 |s_0 - s_b|^2_{diag(b)^-1} + 1/2 log det(2 pi diag b) "
                   "at S*, per token", "nat"),
    "transition": (("step",), "1/2 sum_k |s_k - m(s_{k-1}, h_{k-1})|^2_{Q^-1} at S*, "
                   "per token", "nat"),
    "logdet_q": (("step",), "1/2 sum_k log det(2 pi Q), per token", "nat"),
    "laplace": (("step",), "1/2 log det H - (K n / 2) log(2 pi) (Laplace volume term), "
                "per token", "nat"),
    "mstep_loss": (("step",), "E_q[J(S; theta)] minimised by the M-step (theta-dependent "
                   "terms; strong constraint: the NLL), at its first Adam step, per token",
                   "nat"),
    "q": (("step", "state"), "diagonal of the process-noise covariance Q per chunk "
          "(before the step's update)", "1"),
    "q_mean": (("step",), "mean of the diagonal of Q", "1"),
    "q_min": (("step",), "smallest entry of the diagonal of Q", "1"),
    "q_max": (("step",), "largest entry of the diagonal of Q", "1"),
    "initial_state_norm": (("step",), "Euclidean norm of s_b", "1"),
    "b_mean": (("step",), "mean of the background variances b", "1"),
    "state_norm": (("step",), "mean Euclidean norm of the windows' states", "1"),
    "newton_iterations": (("step",), "Newton iterations of the E-step", "1"),
    "damping": (("step",), "largest Levenberg damping added to the E-step Hessian", "1"),
    "grad_norm": (("step",), "Euclidean norm of the gradient of the learned parameters",
                  "1"),
    "wall_time": (("step",), "wall time of the step", "s"),
}
_COORDS = {"step": {"long_name": "Adam step", "units": "1", "axis": "T"},
           "state": {"long_name": "state component index", "units": "1"}}


def _log_attrs(attrs: dict) -> dict:
    return netcdf_attrs(attrs)


def _history(records: list[dict], n: int, attrs: dict) -> xr.Dataset:
    T = len(records)
    data = {}
    for k, (dims, long_name, units) in LOG_VARIABLES.items():
        if T:
            vals = np.array([r[k] for r in records], dtype=float)
        else:
            vals = np.zeros((0, n) if len(dims) == 2 else (0,))
        data[k] = xr.Variable(dims, vals, {"long_name": long_name, "units": units})
    coords = {"step": ("step", np.array([r["step"] for r in records], dtype=np.int64),
                       _COORDS["step"]),
              "state": ("state", np.arange(n), _COORDS["state"])}
    return xr.Dataset(data, coords=coords, attrs=_log_attrs(attrs))


class _StepLog:
    """``spinup.nc``: one record per step, appended and synced (a killed run keeps them)."""

    def __init__(self, path: Path, n: int, attrs: dict, previous: list[dict]):
        import netCDF4

        self.path = path
        ds = netCDF4.Dataset(os.fspath(path), "w", format="NETCDF4")
        self._ds = ds
        try:
            ds.setncatts(_log_attrs(attrs))
            ds.createDimension("step", None)
            ds.createDimension("state", n)
            for name in ("step", "state"):
                v = ds.createVariable(name, "i8", (name,))
                v.setncatts(_COORDS[name])
            ds["state"][:] = np.arange(n)
            for k, (dims, long_name, units) in LOG_VARIABLES.items():
                v = ds.createVariable(k, "f8", dims, fill_value=np.nan)
                v.setncatts({"long_name": long_name, "units": units})
            self.count = 0
            for r in previous:
                self.append(r, sync=False)
            ds.sync()
        except BaseException:
            ds.close()
            raise

    def append(self, record: dict, sync: bool = True) -> None:
        i, ds = self.count, self._ds
        ds["step"][i] = record["step"]
        for k, (dims, _, _) in LOG_VARIABLES.items():
            if len(dims) == 2:
                ds[k][i, :] = np.asarray(record[k], dtype=float)
            else:
                ds[k][i] = record[k]
        self.count = i + 1
        if sync:
            ds.setncattr("steps_logged", self.count)
            ds.sync()

    def close(self, attrs: dict | None = None) -> None:
        if self._ds is None:
            return
        try:
            if attrs:
                self._ds.setncatts(_log_attrs(attrs))
        finally:
            self._ds.close()
            self._ds = None


def _previous_records(path: Path, step: int) -> list[dict]:
    """Records of an existing log up to ``step`` (those after it are dropped on resume)."""
    if not path.exists():
        return []
    ds = xr.load_dataset(path, engine="netcdf4")
    out = []
    for i, s in enumerate(ds["step"].values):
        if int(s) > step:
            continue
        r = {"step": int(s)}
        for k, (dims, _, _) in LOG_VARIABLES.items():
            v = ds[k].values[i] if k in ds else (np.full(ds.sizes["state"], np.nan)
                                                 if len(dims) == 2 else np.nan)
            r[k] = np.asarray(v, dtype=float) if len(dims) == 2 else float(v)
        out.append(r)
    return out


def _run_attrs(cfg: SpinupConfig, meta: dict, target_name: str) -> dict:
    """Global attributes of a run's ``spinup.nc`` (and of its history)."""
    return {"title": f"da-embed spin-up ({cfg.constraint} constraint) on {target_name}",
            "constraint": cfg.constraint,
            "config": json.dumps(meta["config"], default=_json_default),
            "placement": json.dumps(meta["placement"], default=str),
            "stream_sha256": meta["stream_sha256"], "model_sha256": meta["model_sha256"],
            **({"overlap": json.dumps(meta["overlap"])} if "overlap" in meta else {}),
            "package": "da-embed", "version": __version__, "created": _now(),
            "objective": "Laplace-EM on the weak-constraint 4D-Var cost (see da_embed.spinup)"
            if cfg.constraint == "weak" else "strong-constraint cost sum_k NLL_k(s_k), "
            "s_0 = s_b, s_k = m(s_{k-1}, h_{k-1})"}
