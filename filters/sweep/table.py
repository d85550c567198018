"""The sweep's table: mean over seeds with its standard error, best cell per filter."""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr

__all__ = ["seed_table", "best_cells", "format_table"]


def seed_table(ds: xr.Dataset, variable: str | None = None) -> xr.Dataset:
    """Mean over the ``seed`` axis of the cells that are ok, with the standard error across seeds.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep's ``results.nc``.
    variable : str, optional
        The variable to average (default: the sweep's ``score`` attribute).

    Returns
    -------
    xarray.Dataset
        ``mean``, ``se`` (sample standard deviation / sqrt(n); without a seed
        axis, or with one seed, the cell's own ``<variable>_se`` when there is
        one) and ``n_ok`` (seeds that are ok), over the other axes.

    Examples
    --------
    >>> ds = xr.Dataset({"rmse_analysis": (("filter", "seed"), [[1.0, 3.0]]),
    ...                  "status": (("filter", "seed"), [["ok", "ok"]])},
    ...                 coords={"filter": ["ETKF"], "seed": [0, 1]},
    ...                 attrs={"score": "rmse_analysis"})
    >>> t = seed_table(ds)
    >>> float(t["mean"][0]), float(t["se"][0]), int(t["n_ok"][0])
    (2.0, 1.0, 2)
    """
    variable = variable or ds.attrs.get("score", "rmse_analysis")
    if variable not in ds:
        raise ValueError(f"variable must be a variable of the sweep, got {variable!r}")
    ok = ds["status"] == "ok"
    x = ds[variable].where(ok)
    if "seed" in ds.dims and ds.sizes["seed"] > 1:
        n = ok.sum("seed")
        mean = x.mean("seed", skipna=True)
        se = x.std("seed", ddof=1, skipna=True) / np.sqrt(n.where(n > 0))
    else:
        squeeze = (lambda a: a.isel(seed=0, drop=True)) if "seed" in ds.dims else (lambda a: a)
        n = squeeze(ok.astype(int))
        mean = squeeze(x)
        own = f"{variable}_se"
        se = squeeze(ds[own].where(ok)) if own in ds else xr.full_like(mean, np.nan)
    return xr.Dataset({"mean": mean, "se": se, "n_ok": n.astype(int)}, attrs=dict(ds.attrs))


def best_cells(table: xr.Dataset, group: str | None = None) -> list[dict]:
    """The cell with the lowest mean for each value of ``group`` (e.g. per filter).

    Parameters
    ----------
    table : xarray.Dataset
        From :func:`seed_table`.
    group : str, optional
        Default: the sweep's ``group`` attribute (``filter``).

    Returns
    -------
    list of dict
        Per group value: the coordinates of its best cell, ``mean``, ``se`` and
        ``n_ok``; a value with no ok cell has ``mean`` NaN and no coordinates.

    Examples
    --------
    >>> t = xr.Dataset({"mean": (("filter", "N"), [[2.0, 1.0]]), "se": (("filter", "N"),
    ...                 [[0.1, 0.2]]), "n_ok": (("filter", "N"), [[2, 2]])},
    ...                coords={"filter": ["ETKF"], "N": [8, 16]})
    >>> best_cells(t, "filter")
    [{'filter': 'ETKF', 'N': 16, 'mean': 1.0, 'se': 0.2, 'n_ok': 2}]
    """
    group = group or table.attrs.get("group", "filter")
    if group not in table.dims:
        raise ValueError(f"group must be an axis of the sweep, got {group!r}")
    out = []
    for g in table[group].values:
        sub = table.sel({group: g})
        m = sub["mean"].values
        row = {group: _py(g)}
        if np.all(np.isnan(m)):
            out.append({**row, "mean": float("nan"), "se": float("nan"), "n_ok": 0})
            continue
        idx = np.unravel_index(np.nanargmin(m), m.shape)
        pick = dict(zip(sub["mean"].dims, idx))
        for d, i in pick.items():
            row[d] = _py(sub[d].values[i])
        cell = sub.isel(pick)
        out.append({**row, "mean": float(cell["mean"]), "se": float(cell["se"]),
                    "n_ok": int(cell["n_ok"])})
    return out


def _py(v):
    return v.item() if hasattr(v, "item") else v


def _fmt(mean: float, se: float) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.4f} ± {se:.4f}" if np.isfinite(se) else f"{mean:.4f} ± ?"


def format_table(ds: xr.Dataset) -> str:
    """The printed table: one row per cell of the non-seed axes, then the best per filter.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep's ``results.nc``.

    Returns
    -------
    str

    Examples
    --------
    >>> ds = xr.Dataset({"rmse_analysis": (("filter", "seed"), [[1.0, 3.0]]),
    ...                  "status": (("filter", "seed"), [["ok", "ok"]])},
    ...                 coords={"filter": ["ETKF"], "seed": [0, 1]},
    ...                 attrs={"score": "rmse_analysis", "group": "filter"})
    >>> print(format_table(ds))  # doctest: +NORMALIZE_WHITESPACE
    filter  rmse_analysis (mean ± se over seeds)  seeds ok
    ETKF    2.0000 ± 1.0000                       2/2
    <BLANKLINE>
    best per filter: ETKF: 2.0000 ± 1.0000
    """
    table = seed_table(ds)
    score = ds.attrs.get("score", "rmse_analysis")
    n_seeds = ds.sizes.get("seed", 1)
    dims = list(table["mean"].dims)
    head = [*dims, f"{score} (mean ± se over seeds)", "seeds ok"]
    rows = []
    for idx in itertools.product(*(range(table.sizes[d]) for d in dims)):
        pick = dict(zip(dims, idx))
        cell = table.isel(pick)
        rows.append([*(str(_py(table[d].values[i])) for d, i in pick.items()),
                     _fmt(float(cell["mean"]), float(cell["se"])),
                     f"{int(cell['n_ok'])}/{n_seeds}"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    group = ds.attrs.get("group", "filter")
    if group in dims:
        best = []
        for b in best_cells(table, group):
            where = ", ".join(f"{k}={v}" for k, v in b.items()
                              if k not in (group, "mean", "se", "n_ok"))
            best.append(f"{b[group]}: {_fmt(b['mean'], b['se'])}" + (f" at {where}" if where else ""))
        lines += ["", f"best per {group}: " + "; ".join(best)]
    return "\n".join(lines)
