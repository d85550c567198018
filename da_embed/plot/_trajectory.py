"""Figures of one method's trajectory: the scale state over chunks, its covariance."""

from __future__ import annotations

import numpy as np
import xarray as xr

from filters.plot.helpers import integer_ticks, new_axes, signed_heatmap

from ._common import (check_trajectory, method_colors, state_symbol, synthetic_trajectory,
                      trajectory_title, wrap_title)

__all__ = ["plot_state_heatmap", "plot_state_components", "plot_scale_covariance"]


def plot_state_heatmap(ds: xr.Dataset, ax=None, *, which: str = "analysis",
                       full: bool = False, cmap: str = "RdBu_r", vmax: float | None = None):
    """The scale state over chunks as a chunk x component heatmap.

    Colours diverge around 0 (the unmodified model): red scales up, blue
    down, white unchanged.

    Parameters
    ----------
    ds : xarray.Dataset
        A trajectory.
    ax : matplotlib Axes, optional
    which : {"analysis", "forecast"}
        ``analysis_mean`` (after each chunk) or ``forecast_mean`` (the state
        each chunk was scored with).
    full : bool, default False
        For a subspace run, show the placement's full state
        ``s = s_ref + P z`` instead of the coordinates ``z``.
    cmap : str, default "RdBu_r"
        A diverging colour map.
    vmax : float, optional
        Colour limit (symmetric, ``[-vmax, vmax]``); default the largest
        absolute value.

    Returns
    -------
    matplotlib.axes.Axes
        One image, components by chunks, with its colour bar.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = plot_state_heatmap(synthetic_trajectory())
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('chunk (index)', 'state component of s (index)')
    >>> ax.get_images()[0].get_array().shape  # (components, chunks)
    (6, 16)
    """
    check_trajectory(ds)
    if which not in ("analysis", "forecast"):
        raise ValueError(f"which must be 'analysis' or 'forecast', got {which!r}")
    M = np.asarray(ds[f"{which}_mean"].values, dtype=float)  # (T, n)
    sym = state_symbol(ds)
    if full:
        if "subspace_basis" not in ds:
            raise ValueError("full=True needs a subspace run (the trajectory has no "
                             "subspace_basis)")
        M = M @ ds["subspace_basis"].values.T + ds["subspace_reference"].values  # (T, n_full)
        sym = "s"
    if M.shape[0] == 0:
        raise ValueError("the trajectory has no completed chunk to plot")
    ax = new_axes(ax)
    if vmax is None:
        vmax = float(np.nanmax(np.abs(M))) if M.size else 0.0
    vmax = vmax if vmax > 0 else 1e-12  # an all-zero state (frozen) still gets a scale
    T, n = M.shape
    signed_heatmap(ax, M.T, vmax, f"{which} mean log-scale {sym} (dimensionless)", cmap=cmap,
                   aspect="auto", origin="lower", extent=(-0.5, T - 0.5, -0.5, n - 0.5))
    ax.set_xlabel("chunk (index)")
    ax.set_ylabel(f"state component of {sym} (index)")
    ax.set_title(wrap_title(f"{which} mean of the scale state\n{trajectory_title(ds)}", 72),
                 fontsize="medium")
    return ax


def _top_variance(M: np.ndarray, k: int) -> list[int]:
    var = np.nanvar(M, axis=0) if M.shape[0] else np.zeros(M.shape[1])
    order = np.argsort(-var, kind="stable")  # ties (e.g. frozen) keep index order
    return sorted(int(i) for i in order[:k])


def plot_state_components(ds: xr.Dataset, dims=None, ax=None, *, k: int = 4,
                          which: str = "analysis", sigmas: float = 2.0):
    """Chosen state components over chunks, each with a band of ``sigmas`` spreads.

    Parameters
    ----------
    ds : xarray.Dataset
        A trajectory.
    dims : sequence of int, optional
        State components to show; default the ``k`` components whose
        ``which`` mean varies most over time.
    ax : matplotlib Axes, optional
    k : int, default 4
        Number of components chosen when ``dims`` is None.
    which : {"analysis", "forecast"}
    sigmas : float, default 2.0
        Half-width of the bands in standard deviations (``*_spread``).

    Returns
    -------
    matplotlib.axes.Axes
        One line (and band) per component, labelled ``s[i]``.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = plot_state_components(synthetic_trajectory(), dims=[0, 3])
    >>> [ln.get_label() for ln in ax.get_lines()]
    ['s[0]', 's[3]']
    >>> len(plot_state_components(synthetic_trajectory(), k=2).get_lines())
    2
    """
    check_trajectory(ds)
    if which not in ("analysis", "forecast"):
        raise ValueError(f"which must be 'analysis' or 'forecast', got {which!r}")
    if not (isinstance(sigmas, (int, float)) and sigmas >= 0):
        raise ValueError(f"sigmas must be a number >= 0, got {sigmas!r}")
    M = np.asarray(ds[f"{which}_mean"].values, dtype=float)  # (T, n)
    S = np.asarray(ds[f"{which}_spread"].values, dtype=float)
    n = M.shape[1]
    if dims is None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        dims = _top_variance(M, min(k, n))
        chosen = f"the {len(dims)} components of largest variance over time"
    else:
        dims = [int(d) for d in np.atleast_1d(dims)]
        bad = [d for d in dims if not 0 <= d < n]
        if bad or not dims:
            raise ValueError(f"dims must be state indices in [0, {n - 1}], got {dims}")
        chosen = "chosen components"
    ax = new_axes(ax)
    t = ds["time"].values
    sym = state_symbol(ds)
    colors = method_colors([f"c{i}" for i in range(len(dims))])
    for c, d in zip(colors.values(), dims):
        m, s = M[:, d], S[:, d]
        if sigmas > 0 and np.any(s > 0):
            ax.fill_between(t, m - sigmas * s, m + sigmas * s, color=c, alpha=0.2, linewidth=0)
        ax.plot(t, m, color=c, lw=1.3, label=f"{sym}[{d}]")
    integer_ticks(ax, y=False)
    ax.set_xlabel("chunk (index)")
    ax.set_ylabel(f"{which} mean log-scale {sym} (dimensionless)")
    ax.set_title(wrap_title(f"{chosen}, bands ± {sigmas:g}σ of the {which} spread\n"
                       f"{trajectory_title(ds)}"), fontsize="medium")
    ax.legend(fontsize="small", ncols=min(4, len(dims)), loc="best")
    return ax


def plot_scale_covariance(ds: xr.Dataset, ax=None, *, correlation: bool = False,
                          time: int = -1):
    """The analysis covariance (or correlation) of the state as a heatmap.

    Uses the final ``analysis_covariance`` the run stored (filters with a
    covariance or an ensemble, state size up to 1024).  When the run has no
    stored covariance (point methods, large states, an older file) or
    ``time`` is not the last chunk, it shows the diagonal built from the
    ``analysis_spread`` of that chunk and says so in the title.

    Parameters
    ----------
    ds : xarray.Dataset
        A trajectory.
    ax : matplotlib Axes, optional
    correlation : bool, default False
        Correlations (colour scale -1..1) instead of covariances.
    time : int, default -1
        Chunk index (negative counts from the end).

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap; its title says when it is only the diagonal from spreads.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ds = synthetic_trajectory("ekf", n=4)
    >>> ax = plot_scale_covariance(ds)
    >>> bool((ax.get_images()[0].get_array() == ds["analysis_covariance"].values).all())
    True
    >>> "diagonal from spreads" in plot_scale_covariance(ds, time=0).get_title()
    True
    """
    check_trajectory(ds)
    T = ds.sizes["time"]
    if T == 0:
        raise ValueError("the trajectory has no completed chunk to plot")
    if isinstance(time, bool) or not isinstance(time, (int, np.integer)) or not -T <= time < T:
        raise ValueError(f"time must be a chunk index in [{-T}, {T - 1}], got {time!r}")
    k = int(time) % T
    if "analysis_covariance" in ds and k == T - 1:
        C = np.asarray(ds["analysis_covariance"].values, dtype=float)
        note = ""
    else:
        s = np.asarray(ds["analysis_spread"].values[k], dtype=float)
        C = np.diag(s ** 2)
        why = ("the run stored no covariance" if "analysis_covariance" not in ds
               else "the covariance is stored for the last chunk only")
        note = f" (diagonal from spreads only: {why})"
    ax = new_axes(ax, figsize=(5.5, 4.5))
    sym = state_symbol(ds)
    if correlation:
        sd = np.sqrt(np.maximum(np.diag(C), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            C = np.where(np.outer(sd, sd) > 0, C / np.outer(sd, sd), 0.0)
        np.fill_diagonal(C, np.where(sd > 0, 1.0, 0.0))
        vmax, label = 1.0, "correlation"
    else:
        vmax = float(np.abs(C).max()) if C.size else 0.0
        vmax, label = (vmax if vmax > 0 else 1e-12), "covariance"
    unit = "(dimensionless)" if correlation else "(log-scale², dimensionless)"
    signed_heatmap(ax, C, vmax, f"analysis {label} of {sym} {unit}")
    ax.set_xlabel(f"state component of {sym} (index)")
    ax.set_ylabel(f"state component of {sym} (index)")
    ax.set_title(wrap_title(f"analysis {label} after chunk {k}{note}\n{trajectory_title(ds)}", 60),
                 fontsize="medium")
    return ax
