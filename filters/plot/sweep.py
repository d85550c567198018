"""Figures of a sweep's ``results.nc`` (DAPPER's tuning plots are the anchor).

The score (``rmse_analysis``; ``change_pct`` for language-model cells) is
averaged over seeds (:func:`filters.sweep.seed_table`); along one axis, each
filter's curve takes at every value the best cell over the other axes, with
the standard error across seeds as error bars; a heatmap shows two numeric
axes, one panel per filter, each pixel the best over the remaining axes.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .helpers import new_axes

__all__ = ["numeric_axes", "plot_sweep_axis", "plot_sweep_heatmap"]


def numeric_axes(ds: xr.Dataset) -> list[str]:
    """Numeric grid axes with at least two values (``seed`` excluded).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep's ``results.nc``.

    Returns
    -------
    list of str

    Examples
    --------
    >>> ds = xr.Dataset(coords={"filter": ["ETKF"], "N": [8, 16], "seed": [0, 1]})
    >>> numeric_axes(ds)
    ['N']
    """
    return [d for d in ds.dims if d != "seed" and ds.sizes[d] > 1
            and np.issubdtype(ds[d].dtype, np.number) and ds[d].dtype != bool]


def _best_over(table: xr.Dataset, keep: list[str]) -> xr.Dataset:
    """At each point of ``keep``, the row of the cell with the lowest mean over the others."""
    others = [d for d in table["mean"].dims if d not in keep]
    if not others:
        return table
    stacked = table.stack(_rest=others)
    m = stacked["mean"].fillna(np.inf)
    idx = m.argmin("_rest")
    best = stacked.isel(_rest=idx)
    best["mean"] = best["mean"].where(np.isfinite(m.min("_rest")))
    return best.drop_vars(["_rest", *others], errors="ignore")


def plot_sweep_axis(ds: xr.Dataset, axis: str, ax=None):
    """The score against one numeric axis, one line per filter, seed error bars.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep's ``results.nc``.
    axis : str
        A numeric grid axis.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ds = xr.Dataset({"rmse_analysis": (("filter", "N"), [[1.0, 0.5]]),
    ...                  "status": (("filter", "N"), [["ok", "ok"]])},
    ...                 coords={"filter": ["ETKF"], "N": [8, 16]},
    ...                 attrs={"score": "rmse_analysis", "group": "filter"})
    >>> plot_sweep_axis(ds, "N").get_xlabel()
    'N'
    """
    from filters.sweep import seed_table

    if axis not in numeric_axes(ds):
        raise ValueError(f"axis must be a numeric grid axis with 2+ values "
                         f"({', '.join(numeric_axes(ds)) or 'none'}), got {axis!r}")
    group = ds.attrs.get("group", "filter")
    table = seed_table(ds)
    ax = new_axes(ax)
    x = table[axis].values
    for g in (table[group].values if group in table.dims else [None]):
        sub = table.sel({group: g}) if g is not None else table
        best = _best_over(sub, [axis])
        ax.errorbar(x, best["mean"].values, yerr=best["se"].values, marker="o", capsize=3,
                    label=str(g) if g is not None else None)
    score = ds.attrs.get("score", "rmse_analysis")
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{score} (mean ± se over seeds)")
    if np.all(x > 0) and x.max() / x.min() >= 8:
        ax.set_xscale("log")
    ax.set_title(f"{score} against {axis} (best over the other axes)", fontsize="medium")
    if group in table.dims:
        ax.legend(title=group, fontsize="small")
    return ax


def plot_sweep_heatmap(ds: xr.Dataset, x: str, y: str, fig=None):
    """The score over two numeric axes, one panel per filter (best over the other axes).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep's ``results.nc``.
    x, y : str
        Two numeric grid axes.
    fig : matplotlib Figure, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ds = xr.Dataset({"rmse_analysis": (("filter", "N", "inflation"), [[[1.0, 0.5],
    ...                  [0.7, 0.6]]]), "status": (("filter", "N", "inflation"),
    ...                  [[["ok", "ok"], ["ok", "ok"]]])},
    ...                 coords={"filter": ["ETKF"], "N": [8, 16], "inflation": [1.0, 1.1]},
    ...                 attrs={"score": "rmse_analysis", "group": "filter"})
    >>> len(plot_sweep_heatmap(ds, "inflation", "N").axes)  # one panel and its colour bar
    2
    """
    from matplotlib.figure import Figure

    from filters.sweep import seed_table

    axes_ok = numeric_axes(ds)
    for a in (x, y):
        if a not in axes_ok:
            raise ValueError(f"x and y must be numeric grid axes with 2+ values "
                             f"({', '.join(axes_ok) or 'none'}), got {a!r}")
    if x == y:
        raise ValueError(f"x and y must be two different axes, got {x!r} twice")
    group = ds.attrs.get("group", "filter")
    table = seed_table(ds)
    groups = list(table[group].values) if group in table.dims else [None]
    fig = fig or Figure(figsize=(3.2 * len(groups) + 1, 3.2), layout="constrained")
    panels = fig.subplots(1, len(groups), squeeze=False)[0]
    best = {g: _best_over(table.sel({group: g}) if g is not None else table, [y, x])["mean"]
            .transpose(y, x).values for g in groups}
    finite = np.concatenate([b[np.isfinite(b)] for b in best.values()] or [np.array([0.0])])
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0, 1)
    score = ds.attrs.get("score", "rmse_analysis")
    for ax, g in zip(panels, groups):
        im = ax.imshow(best[g], origin="lower", aspect="auto", cmap="viridis", vmin=vmin,
                       vmax=vmax)
        ax.set_xticks(range(ds.sizes[x]), [f"{v:g}" for v in ds[x].values])
        ax.set_yticks(range(ds.sizes[y]), [f"{v:g}" for v in ds[y].values])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(str(g) if g is not None else score, fontsize="medium")
        for (i, j), v in np.ndenumerate(best[g]):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize="x-small",
                        color="black" if v > (vmin + vmax) / 2 else "white")
    fig.colorbar(im, ax=list(panels), label=f"{score} (mean over seeds)")
    return fig
