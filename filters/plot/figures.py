"""Matplotlib figures of a run (a Dataset from :func:`filters.assimilate`).

Every function takes the Dataset and an optional ``ax`` and returns the Axes,
so figures compose.  Colours (:data:`~filters.plot.helpers.PALETTE`), titles
and heatmaps come from :mod:`filters.plot.helpers`, which the figures of
``da_embed.plot`` share.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ..metrics import rank_histogram
from .helpers import PALETTE, new_axes, run_title, signed_heatmap

__all__ = ["plot_component", "plot_rmse", "plot_covariance", "plot_spread_skill",
           "plot_rank_histogram"]

def _observed_component(ds: xr.Dataset, component: int):
    """Index of the observation of ``component`` if it is observed directly."""
    try:
        obs = json.loads(ds.attrs["setting_params"])["obs"]
    except (KeyError, TypeError, ValueError):
        return None
    if obs.get("name") == "Identity":
        return component
    idx = obs.get("indices")
    if idx is not None and component in idx:
        return idx.index(component)
    return None


def plot_component(ds: xr.Dataset, component: int = 0, ax=None, *, sigmas: float = 2.0):
    """One state component over time: analysis mean with a band, truth, observations.

    Parameters
    ----------
    ds : xarray.Dataset
        A run.
    component : int
        State index.
    ax : matplotlib Axes, optional
    sigmas : float
        Half-width of the band in analysis standard deviations.

    Returns
    -------
    matplotlib.axes.Axes
        Band, mean, truth and (where observed directly) observations, with a legend.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from filters import ETKF, assimilate
    >>> from filters.settings import sakov2012
    >>> ds = assimilate(ETKF(N=10, inflation=1.02), sakov2012(n_obs=40), seed=0)
    >>> ax = plot_component(ds, 0)
    >>> ax.get_ylabel()
    'x[0] (model units)'
    """
    n = ds.sizes["state"]
    if not (0 <= component < n):
        raise ValueError(f"component must be in [0, {n - 1}], got {component}")
    ax = new_axes(ax)
    t = ds["time"].values
    m = ds["analysis_mean"].values[:, component]
    s = ds["analysis_spread"].values[:, component]
    ax.fill_between(t, m - sigmas * s, m + sigmas * s, color=PALETTE["band"], alpha=0.35,
                    linewidth=0, label=f"analysis ± {sigmas:g}σ")
    ax.plot(t, m, color=PALETTE["analysis"], lw=1.2, label="analysis mean")
    if "truth" in ds:
        ax.plot(t, ds["truth"].values[:, component], color=PALETTE["truth"], lw=1.0, ls="--",
                label="truth")
    j = _observed_component(ds, component)
    if j is not None:
        ax.plot(t, ds["observations"].values[:, j], ".", color=PALETTE["observation"], ms=3,
                label="observations")
    ax.set_xlabel(f"time ({ds['time'].attrs.get('units', '')})")
    ax.set_ylabel(f"x[{component}] ({ds['analysis_mean'].attrs.get('units', '')})")
    ax.set_title(run_title(ds), fontsize="medium")
    ax.legend(fontsize="small", ncols=2, loc="best")
    return ax


def plot_rmse(ds: xr.Dataset, ax=None, *, kind: str = "analysis"):
    """RMSE against the truth and the spread (root-mean variance) over time.

    Parameters
    ----------
    ds : xarray.Dataset
    ax : matplotlib Axes, optional
    kind : {"analysis", "forecast"}
        The RMSE and spread after the analysis or before it (of the forecast).

    Returns
    -------
    matplotlib.axes.Axes
        RMSE and spread on a log scale, the end of the burn-in and the mean RMSE.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from filters import ETKF, assimilate
    >>> from filters.settings import linear_gaussian
    >>> ax = plot_rmse(assimilate(ETKF(N=10), linear_gaussian(n_obs=50), seed=0))
    >>> [line.get_label() for line in ax.get_lines()][:2], ax.get_yscale()
    (['analysis RMSE', 'analysis spread'], 'log')
    """
    if kind not in ("analysis", "forecast"):
        raise ValueError(f"kind must be 'analysis' or 'forecast', got {kind!r}")
    if f"rmse_{kind}" not in ds:
        raise ValueError("the run has no truth, so no RMSE to plot")
    ax = new_axes(ax)
    t = ds["time"].values
    ax.plot(t, ds[f"rmse_{kind}"].values, color=PALETTE[kind], lw=1.0, label=f"{kind} RMSE")
    ax.plot(t, ds[f"rmv_{kind}"].values, color=PALETTE["spread"], lw=1.0, label=f"{kind} spread")
    b = ds.attrs.get("burn_in", 0.0)
    if b > t[0]:
        ax.axvline(b, color="0.5", lw=0.8, ls=":", label="end of burn-in")
    mean = ds.attrs.get(f"rmse_{kind}_mean")
    if mean is not None and np.isfinite(mean):
        ax.axhline(mean, color=PALETTE[kind], lw=0.8, ls="--",
                   label=f"mean {mean:.3f} ± {ds.attrs.get(f'rmse_{kind}_stderr', np.nan):.3f}")
    ax.set_yscale("log")
    ax.set_xlabel(f"time ({ds['time'].attrs.get('units', '')})")
    ax.set_ylabel(f"RMSE, spread ({ds[f'rmse_{kind}'].attrs.get('units', '')})")
    ax.set_title(run_title(ds), fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    return ax


def plot_covariance(ds: xr.Dataset, time: int = -1, ax=None, *, correlation: bool = False):
    """The analysis covariance (or correlation) matrix at one cycle, as a heatmap.

    Uses ``analysis_cov`` when the run stored it, else ``analysis_ensemble``.

    Parameters
    ----------
    ds : xarray.Dataset
    time : int
        Cycle index (negative counts from the end).
    ax : matplotlib Axes, optional
    correlation : bool
        Show correlations (colour scale -1..1) instead of covariances.

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap (one image) with its colour bar.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from filters import ETKF, assimilate
    >>> from filters.settings import linear_gaussian
    >>> ds = assimilate(ETKF(N=10), linear_gaussian(n_obs=20), seed=0, store_ensemble=True)
    >>> ax = plot_covariance(ds, correlation=True)
    >>> ax.get_images()[0].get_array().shape
    (4, 4)
    """
    if "analysis_cov" in ds:
        C = ds["analysis_cov"].values[time]
    elif "analysis_ensemble" in ds:
        E = ds["analysis_ensemble"].values[time]
        A = E - E.mean(axis=0)
        C = A.T @ A / (E.shape[0] - 1)
    else:
        raise ValueError("the run stored neither analysis_cov nor analysis_ensemble; "
                         "run assimilate(..., store_cov=True) or store_ensemble=True")
    ax = new_axes(ax)
    if correlation:
        s = np.sqrt(np.maximum(np.diag(C), 1e-300))
        C = C / np.outer(s, s)
        vmax, label = 1.0, "correlation"
    else:
        vmax, label = float(np.abs(C).max()) or 1.0, "covariance (model units²)"
    signed_heatmap(ax, C, vmax, label)
    tval = float(ds["time"].values[time])
    ax.set_xlabel("state component")
    ax.set_ylabel("state component")
    ax.set_title(f"analysis {label.split(' ')[0]} at t = {tval:g}\n{run_title(ds)}", fontsize="medium")
    return ax


def plot_spread_skill(ds: xr.Dataset, ax=None, *, kind: str = "analysis"):
    """Per-cycle spread against RMSE after burn-in, with the 1:1 line.

    A calibrated filter scatters around the diagonal.

    Parameters
    ----------
    ds : xarray.Dataset
        A run with a truth.
    ax : matplotlib Axes, optional
    kind : {"analysis", "forecast"}
        As in :func:`plot_rmse`.

    Returns
    -------
    matplotlib.axes.Axes

    See Also
    --------
    plot_rmse : The same RMSE and spread as time series.

    Examples
    --------
    The forecast spread of a stochastic EnKF, one point per cycle (no burn-in here):

    >>> import matplotlib; matplotlib.use("Agg")
    >>> from filters import EnKF, assimilate, linear_gaussian
    >>> ds = assimilate(EnKF(N=20), linear_gaussian(n_obs=50), seed=0)
    >>> ax = plot_spread_skill(ds, kind="forecast")
    >>> len(ax.get_lines()[0].get_xdata()), ax.get_xlabel()
    (50, 'forecast spread (model units)')
    """
    if f"rmse_{kind}" not in ds:
        raise ValueError("the run has no truth, so no spread-skill plot")
    ax = new_axes(ax)
    keep = ds["time"].values > ds.attrs.get("burn_in", 0.0)
    e = ds[f"rmse_{kind}"].values[keep]
    s = ds[f"rmv_{kind}"].values[keep]
    ax.plot(s, e, ".", color=PALETTE[kind], ms=3, alpha=0.6, label="cycles after burn-in")
    hi = float(np.nanmax(np.concatenate([e, s]))) if e.size else 1.0
    ax.plot([0, hi], [0, hi], color=PALETTE["truth"], lw=0.8, ls="--", label="spread = RMSE")
    ax.set_xlabel(f"{kind} spread ({ds[f'rmv_{kind}'].attrs.get('units', '')})")
    ax.set_ylabel(f"{kind} RMSE ({ds[f'rmse_{kind}'].attrs.get('units', '')})")
    ax.set_title(run_title(ds), fontsize="medium")
    ax.legend(fontsize="small")
    return ax


def plot_rank_histogram(ds: xr.Dataset, ax=None):
    """Rank histogram (Talagrand diagram) of the truth among analysis members.

    Parameters
    ----------
    ds : xarray.Dataset
        A run of an ensemble filter with a truth (it has ``truth_rank``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    Fifteen members give sixteen bars, whose heights (relative frequencies) sum to one;
    here only two of the four components are observed:

    >>> import matplotlib; matplotlib.use("Agg")
    >>> from filters import EnKF, assimilate, linear_gaussian
    >>> ax = plot_rank_histogram(assimilate(EnKF(N=15), linear_gaussian(m=2, n_obs=60), seed=1))
    >>> len(ax.patches), round(float(sum(bar.get_height() for bar in ax.patches)), 6)
    (16, 1.0)
    """
    if "truth_rank" not in ds:
        raise ValueError("the run has no truth_rank (it needs an ensemble filter and a truth)")
    params = json.loads(ds.attrs.get("filter_params", "{}"))
    N = params.get("N")
    keep = ds["time"].values > ds.attrs.get("burn_in", 0.0)
    ranks = ds["truth_rank"].values[keep]
    if N is None:
        N = int(ranks.max()) if ranks.size else 1
    counts = rank_histogram(ranks, N)
    ax = new_axes(ax)
    freq = counts / max(counts.sum(), 1)
    ax.bar(np.arange(N + 1), freq, color=PALETTE["analysis"], width=0.9, label="truth rank")
    ax.axhline(1.0 / (N + 1), color=PALETTE["truth"], lw=0.8, ls="--", label="flat (calibrated)")
    ax.set_xlabel("number of members below the truth")
    ax.set_ylabel("relative frequency")
    ax.set_title(run_title(ds), fontsize="medium")
    ax.legend(fontsize="small")
    return ax
