"""Matplotlib figures of online runs: scale trajectories, covariances, method comparisons.

Three kinds of input, all written by this package:

* a *trajectory* (one method's run, :mod:`da_embed.trajectory` layout, from
  :meth:`~da_embed.assimilator.OnlineAssimilator.run` or ``<method>.nc``):
  :func:`plot_state_heatmap`, :func:`plot_state_components`,
  :func:`plot_scale_covariance`, :func:`plot_chunk_nll`;
* a *comparison* (:func:`~da_embed.compare.compare`'s result, its
  ``summary.json`` dict or its ``summary.nc`` Dataset):
  :func:`plot_chunk_nll`, :func:`plot_comparison`;
* a *filters run* (:func:`filters.assimilate`, saved with
  :func:`filters.io.to_netcdf`): drawn with :mod:`filters.plot`.

:func:`save_figures` writes every figure that applies to a file or a
``compare`` output folder as PNG files (``da-embed plot`` on the command
line).  As in :mod:`filters.plot`, every plotting function takes the data and
an optional ``ax`` and returns the Axes; colours come from the Okabe-Ito
palette (colour-blind safe), frozen is always black and every other method
keeps its colour across figures; titles name the method, its parameters,
the placement and the prequential protocol.

The state of a run is a vector of log-scales (``s = 0`` is the unmodified
model), dimensionless; in a subspace run it is the coordinate vector ``z`` of
``s = s_ref + P z``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np
import xarray as xr

from filters.plot import run_title

__all__ = ["METHOD_COLORS", "plot_state_heatmap", "plot_state_components",
           "plot_scale_covariance", "plot_chunk_nll", "plot_comparison", "save_figures",
           "trajectory_title", "synthetic_trajectory"]

#: Okabe & Ito (2008) colours for methods other than frozen (black), in the order
#: methods appear; black and the palette's yellow (poor on white) come last.
METHOD_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7",
                 "#F0E442")
_FROZEN_COLOR = "#000000"


# ------------------------------------------------------------------- helpers
def _axes(ax, figsize=(7, 3.5)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _wrap(text: str, width: int = 80) -> str:
    """Wrap each line of a title so it fits the figure's width."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _method_colors(methods) -> dict:
    """Method -> colour: frozen black, the others the palette in order (cycled)."""
    out, i = {}, 0
    for m in methods:
        if m == "frozen":
            out[m] = _FROZEN_COLOR
        else:
            out[m] = METHOD_COLORS[i % len(METHOD_COLORS)]
            i += 1
    return out


def _json_attr(ds, key, default=None):
    try:
        return json.loads(ds.attrs[key])
    except (KeyError, TypeError, ValueError):
        return default


def _check_trajectory(ds, name: str = "ds") -> None:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{name} must be an xarray.Dataset (a da_embed trajectory), got "
                        f"{type(ds).__name__}")
    missing = [v for v in ("analysis_mean", "nll") if v not in ds]
    if missing:
        raise ValueError(f"{name} is not a da_embed trajectory: it has no {missing} "
                         "(open a <method>.nc written by OnlineAssimilator.run or compare)")


def _state_symbol(ds) -> str:
    """``z`` for a subspace run (coordinates of s = s_ref + P z), else ``s``."""
    return "z" if "subspace_basis" in ds else "s"


def _protocol_text(attrs: dict) -> str:
    parts = []
    for key in ("chunk", "context", "stride"):
        if key in attrs and attrs[key] not in (None, "none"):
            parts.append(f"{key} {attrs[key]}")
    return ", ".join(parts)


def trajectory_title(ds: xr.Dataset) -> str:
    """``"etkf: ETKF(N=16) on HiddenScale (n = 32), TinyLM; chunk 8, context 16"``.

    Parameters
    ----------
    ds : xarray.Dataset
        A trajectory (any Dataset; missing attributes are left out).

    Returns
    -------
    str

    Examples
    --------
    >>> trajectory_title(synthetic_trajectory("etkf"))
    'etkf: ETKF(N=8) on HiddenScale (n = 6), synthetic; chunk 4, context 8, stride 4'
    """
    label = ds.attrs.get("method", "")
    flt = run_title(ds) if "filter" in ds.attrs else label or "run"
    head = flt if not label or label.lower() == flt.lower() else f"{label}: {flt}"
    placement = _json_attr(ds, "placement", {}) or {}
    where = placement.get("placement") if isinstance(placement, dict) else None
    if where == "Subspace":
        opts = placement.get("options", {})
        inner = opts.get("placement", {}).get("placement", "?")
        where = f"{inner} in a {opts.get('k', '?')}-dim subspace ({opts.get('origin', '?')})"
    n = ds.attrs.get("state_dim", ds.sizes.get("state"))
    if where:
        head += f" on {where}"
        if n is not None and "subspace" not in where:
            head += f" (n = {n})"
    if ds.attrs.get("model"):
        head += f", {ds.attrs['model']}"
    proto = _protocol_text(ds.attrs)
    return head + (f"; {proto}" if proto else "")


def synthetic_trajectory(method: str = "etkf", *, T: int = 16, n: int = 6, L: int = 4,
                         seed: int = 0, covariance: bool = True) -> xr.Dataset:
    """A small synthetic trajectory in the real layout, for examples and quick checks.

    The state follows a seeded random walk with shrinking spreads and the
    per-token NLL a noisy decreasing curve; no model is run.  The layout is
    the one :class:`~da_embed.trajectory.TrajectoryRecorder` writes.

    Parameters
    ----------
    method : str, default "etkf"
        Method label (``"frozen"`` gives a state fixed at 0 with zero spread).
    T, n, L : int
        Chunks, state size, tokens per chunk.
    seed : int, default 0
    covariance : bool, default True
        Store a final ``analysis_covariance`` (not for frozen).

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> ds = synthetic_trajectory("ekf", T=5, n=3)
    >>> ds["analysis_mean"].shape, ds["analysis_covariance"].dims
    ((5, 3), ('state', 'state_b'))
    """
    from .trajectory import TrajectoryRecorder

    for name, v in (("T", T), ("n", n), ("L", L)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    rng = np.random.default_rng(seed)
    frozen = method == "frozen"
    rec = TrajectoryRecorder(n, L)
    scales = np.linspace(1.0, 0.2, n)  # components differ in how much they move
    x = np.zeros(n)
    spread = np.full(n, math.sqrt(0.1))
    for k in range(T):
        mean_f, spread_f = x.copy(), np.sqrt(spread ** 2 + 0.01)
        if not frozen:
            x = x + 0.1 * scales * rng.standard_normal(n)
            spread = spread_f * 0.8
        nll_tok = 4.0 + (0.0 if frozen else -0.02 * k) + 0.3 * rng.standard_normal(L)
        rec.append({"chunk_start": 1 + k * L, "context_tokens": min(8, k * L), "tokens": L,
                    "nll": nll_tok.mean(), "token_nll": nll_tok,
                    "token_id": rng.integers(0, 97, L), "innovation": -np.ones(L),
                    "forecast_mean": mean_f, "forecast_spread": 0 * spread_f if frozen
                    else spread_f, "analysis_mean": x.copy(),
                    "analysis_spread": 0 * spread if frozen else spread.copy(),
                    "wall_time": 0.01, "wall_time_forecast": 0.001, "wall_time_score": 0.005,
                    "wall_time_analysis": 0.004})
    filters_ = {"frozen": ("frozen", {}), "ekf": ("EKF", {}), "etkf": ("ETKF", {"N": 8})}
    fname, params = filters_.get(method, (method.upper(), {}))
    final = None
    if covariance and not frozen:
        A = rng.standard_normal((n, n)) * 0.3
        C = np.diag(spread) @ (np.eye(n) + 0.5 * (A + A.T) / n) @ np.diag(spread)
        final = {"analysis_covariance": 0.5 * (C + C.T)}
    attrs = {"method": method, "filter": fname, "filter_params": json.dumps(params),
             "placement": json.dumps({"placement": "HiddenScale", "state_dim": n}),
             "model": "synthetic", "chunk": L, "context": 2 * L, "stride": L,
             "state_dim": n, "tokens_scored": T * L, "status": "complete"}
    return rec.to_dataset(attrs, final=final)


# ------------------------------------------------------------ trajectories
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

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = plot_state_heatmap(synthetic_trajectory())
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('chunk (index)', 'state component of s (index)')
    >>> ax.get_images()[0].get_array().shape  # (components, chunks)
    (6, 16)
    """
    _check_trajectory(ds)
    if which not in ("analysis", "forecast"):
        raise ValueError(f"which must be 'analysis' or 'forecast', got {which!r}")
    M = np.asarray(ds[f"{which}_mean"].values, dtype=float)  # (T, n)
    sym = _state_symbol(ds)
    if full:
        if "subspace_basis" not in ds:
            raise ValueError("full=True needs a subspace run (the trajectory has no "
                             "subspace_basis)")
        M = M @ ds["subspace_basis"].values.T + ds["subspace_reference"].values  # (T, n_full)
        sym = "s"
    if M.shape[0] == 0:
        raise ValueError("the trajectory has no completed chunk to plot")
    ax = _axes(ax)
    if vmax is None:
        vmax = float(np.nanmax(np.abs(M))) if M.size else 0.0
    vmax = vmax if vmax > 0 else 1e-12  # an all-zero state (frozen) still gets a scale
    T, n = M.shape
    im = ax.imshow(M.T, aspect="auto", origin="lower", cmap=cmap, vmin=-vmax, vmax=vmax,
                   interpolation="nearest", extent=(-0.5, T - 0.5, -0.5, n - 0.5))
    ax.figure.colorbar(im, ax=ax, label=f"{which} mean log-scale {sym} (dimensionless)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("chunk (index)")
    ax.set_ylabel(f"state component of {sym} (index)")
    ax.set_title(_wrap(f"{which} mean of the scale state\n{trajectory_title(ds)}", 72),
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
    _check_trajectory(ds)
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
    ax = _axes(ax)
    t = ds["time"].values
    sym = _state_symbol(ds)
    colors = _method_colors([f"c{i}" for i in range(len(dims))])
    for c, d in zip(colors.values(), dims):
        m, s = M[:, d], S[:, d]
        if sigmas > 0 and np.any(s > 0):
            ax.fill_between(t, m - sigmas * s, m + sigmas * s, color=c, alpha=0.2, linewidth=0)
        ax.plot(t, m, color=c, lw=1.3, label=f"{sym}[{d}]")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("chunk (index)")
    ax.set_ylabel(f"{which} mean log-scale {sym} (dimensionless)")
    ax.set_title(_wrap(f"{chosen}, bands ± {sigmas:g}σ of the {which} spread\n"
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
    _check_trajectory(ds)
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
    ax = _axes(ax, figsize=(5.5, 4.5))
    sym = _state_symbol(ds)
    if correlation:
        sd = np.sqrt(np.maximum(np.diag(C), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            C = np.where(np.outer(sd, sd) > 0, C / np.outer(sd, sd), 0.0)
        np.fill_diagonal(C, np.where(sd > 0, 1.0, 0.0))
        vmax, label = 1.0, "correlation"
    else:
        vmax = float(np.abs(C).max()) if C.size else 0.0
        vmax, label = (vmax if vmax > 0 else 1e-12), "covariance"
    im = ax.imshow(C, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    unit = "(dimensionless)" if correlation else "(log-scale², dimensionless)"
    ax.figure.colorbar(im, ax=ax, label=f"analysis {label} of {sym} {unit}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"state component of {sym} (index)")
    ax.set_ylabel(f"state component of {sym} (index)")
    ax.set_title(_wrap(f"analysis {label} after chunk {k}{note}\n{trajectory_title(ds)}", 60),
                 fontsize="medium")
    return ax


# -------------------------------------------------------------- comparisons
def _summary_dict(summary) -> dict:
    """The ``summary.json`` dict from a dict, a Comparison or a summary.nc Dataset."""
    if isinstance(summary, dict):
        d = summary
    elif hasattr(summary, "summary") and callable(summary.summary) and hasattr(summary, "rows"):
        d = summary.summary()
    elif isinstance(summary, xr.Dataset) and "summary" in summary.attrs:
        d = json.loads(summary.attrs["summary"])
    else:
        raise TypeError("summary must be a compare summary: the summary.json dict, a "
                        "Comparison or the summary.nc Dataset, got "
                        f"{type(summary).__name__}")
    if not isinstance(d.get("rows"), list) or not d["rows"]:
        raise ValueError("summary has no rows (expected the summary.json of da_embed.compare)")
    return d


def _summary_heading(summary: dict) -> str:
    s, p = summary.get("settings", {}), summary.get("protocol", {})
    where = s.get("placement", "?")
    if s.get("state_dim") is not None:
        where += f" (n = {s['state_dim']})"
    if s.get("subspace"):
        where += f", subspace {s['subspace']}"
    tokens = s.get("tokens_scored")
    return (f"{s.get('model', '?')}, {where}; {_protocol_text(p)}"
            + (f"; {tokens} tokens" if tokens is not None else ""))


def _nll_table(data):
    """(methods, nll (M, T), heading) from any input :func:`plot_chunk_nll` accepts."""
    if isinstance(data, xr.Dataset) and "method" in data.dims:  # summary.nc
        names = [str(m) for m in data["method"].values]
        nll = np.asarray(data["nll"].values, dtype=float)
        heading = _summary_heading(json.loads(data.attrs["summary"])) \
            if "summary" in data.attrs else ""
        return names, nll, heading
    if isinstance(data, xr.Dataset):
        _check_trajectory(data, "summary_or_datasets")
        data = [data]
    elif isinstance(data, dict) and "rows" in data:
        raise ValueError("summary.json holds no per-chunk NLL: pass the summary.nc Dataset, "
                         "the Comparison or the trajectories")
    elif hasattr(data, "datasets") and hasattr(data, "rows"):  # a Comparison
        data = data.datasets
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, (list, tuple)):
        items = [(getattr(d, "attrs", {}).get("method", f"run {i}"), d)
                 for i, d in enumerate(data)]
    else:
        raise TypeError("summary_or_datasets must be a summary.nc Dataset, a Comparison, a "
                        "trajectory, or a dict/list of trajectories, got "
                        f"{type(data).__name__}")
    if not items:
        raise ValueError("summary_or_datasets is empty")
    for name, d in items:
        _check_trajectory(d, f"trajectory {name!r}")
    K = min(d.sizes["time"] for _, d in items)
    nll = np.stack([np.asarray(d["nll"].values[:K], dtype=float) for _, d in items])
    first = items[0][1]
    heading = ", ".join(x for x in (first.attrs.get("model", ""), _protocol_text(first.attrs))
                        if x)
    return [str(n) for n, _ in items], nll, heading


def _running_mean(y: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over the last ``w`` values (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, y.size + 1)
    lo = np.maximum(0, i - w)
    return (c[i] - c[lo]) / (i - lo)


def plot_chunk_nll(summary_or_datasets, ax=None, *, smooth: int | None = None,
                   relative: bool = False):
    """Per-chunk prequential NLL of the methods side by side, or their difference to frozen.

    Parameters
    ----------
    summary_or_datasets : xarray.Dataset, Comparison, dict or list
        ``summary.nc`` of a comparison, a :class:`~da_embed.compare.Comparison`,
        one trajectory, or several (a dict method -> trajectory, or a list).
    ax : matplotlib Axes, optional
    smooth : int, optional
        Show the trailing running mean over ``smooth`` chunks instead of the
        raw per-chunk values.
    relative : bool, default False
        Plot each method's NLL minus frozen's on the same chunk (negative:
        better than frozen); frozen becomes the zero line.

    Returns
    -------
    matplotlib.axes.Axes
        One line per method, labelled with the method.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> runs = {"frozen": synthetic_trajectory("frozen"), "etkf": synthetic_trajectory("etkf")}
    >>> ax = plot_chunk_nll(runs, smooth=4)
    >>> [ln.get_label() for ln in ax.get_lines()], ax.get_ylabel()
    (['frozen', 'etkf'], 'mean NLL per token (nat)')
    """
    names, nll, heading = _nll_table(summary_or_datasets)
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, int)
                               or smooth < 1):
        raise ValueError(f"smooth must be an integer >= 1 (chunks) or None, got {smooth!r}")
    if relative:
        if "frozen" not in names:
            raise ValueError("relative=True needs the frozen method among the runs")
        nll = nll - nll[names.index("frozen")]
    ax = _axes(ax)
    colors = _method_colors(names)
    t = np.arange(nll.shape[1])
    for name, y in zip(names, nll):
        if smooth is not None and smooth > 1:
            y = _running_mean(y, smooth)
        frozen = name == "frozen"
        ax.plot(t, y, color=colors[name], lw=1.0 if frozen else 1.3,
                ls="--" if frozen else "-", label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("chunk (index)")
    ax.set_ylabel("NLL minus frozen's per token (nat)" if relative
                  else "mean NLL per token (nat)")
    what = "per-chunk NLL minus frozen's (below 0: better)" if relative else "per-chunk NLL"
    if smooth is not None and smooth > 1:
        what += f", running mean over {smooth} chunks"
    ax.set_title(_wrap(f"prequential {what}" + (f"\n{heading}" if heading else "")),
                 fontsize="medium")
    ax.legend(fontsize="small", ncols=min(4, len(names)), loc="best")
    return ax


def plot_comparison(summary, ax=None, *, kind: str = "bars"):
    """Perplexity change against frozen (%) with 95 % intervals, and the time cost.

    Parameters
    ----------
    summary : dict, Comparison or xarray.Dataset
        The ``summary.json`` dict, a :class:`~da_embed.compare.Comparison`, or
        the ``summary.nc`` Dataset.
    ax : matplotlib Axes, optional
    kind : {"bars", "scatter"}
        ``"bars"``: one bar per method (frozen excluded) with the
        block-bootstrap interval as error bar, annotated with the wall-time
        ratio to frozen; ``"scatter"``: change against wall-time ratio
        (log axis), one point per method.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> rows = [{"method": "frozen", "perplexity": 50.0, "change_pct": 0.0, "ci_low": float("nan"),
    ...          "ci_high": float("nan"), "wall_ratio": 1.0},
    ...         {"method": "ekf", "perplexity": 45.0, "change_pct": -10.0, "ci_low": -14.0,
    ...          "ci_high": -6.0, "wall_ratio": 2.5}]
    >>> ax = plot_comparison({"rows": rows})
    >>> [float(p.get_height()) for p in ax.patches], [t.get_text() for t in ax.texts]
    ([-10.0], ['2.5× time'])
    """
    d = _summary_dict(summary)
    if kind not in ("bars", "scatter"):
        raise ValueError(f"kind must be 'bars' or 'scatter', got {kind!r}")
    rows = [r for r in d["rows"] if r.get("method") != "frozen"]
    if not rows:
        raise ValueError("summary has only frozen: nothing to compare against it")
    frozen = next((r for r in d["rows"] if r.get("method") == "frozen"), None)
    names = [str(r["method"]) for r in rows]
    colors = _method_colors(["frozen"] + names)
    ch = np.array([float(r["change_pct"]) for r in rows])
    lo = np.array([float(r.get("ci_low", np.nan)) for r in rows])
    hi = np.array([float(r.get("ci_high", np.nan)) for r in rows])
    yerr = np.nan_to_num(np.stack([ch - lo, hi - ch]), nan=0.0)  # no interval: no bar
    ratio = np.array([float(r.get("wall_ratio", np.nan)) for r in rows])
    ax = _axes(ax)
    if kind == "bars":
        x = np.arange(len(rows))
        ax.bar(x, ch, color=[colors[m] for m in names], width=0.6, yerr=yerr, capsize=4,
               error_kw={"ecolor": "0.25", "lw": 1.0})
        span = max(float(np.max(np.abs(np.concatenate([ch - yerr[0], ch + yerr[1]])))), 1e-9)
        for xi, c, e_lo, e_hi, r in zip(x, ch, yerr[0], yerr[1], ratio):
            end = c + e_hi if c >= 0 else c - e_lo
            ax.annotate(f"{r:.3g}× time", (xi, end), xytext=(0, 3 if c >= 0 else -3),
                        textcoords="offset points", ha="center",
                        va="bottom" if c >= 0 else "top", fontsize="small")
        ax.set_ylim(min(0.0, float(np.min(ch - yerr[0]))) - 0.2 * span,
                    max(0.0, float(np.max(ch + yerr[1]))) + 0.2 * span)
        ax.set_xticks(x, names)
        ax.set_xlabel("method (labels: wall time as a multiple of frozen's)")
    else:
        for m, c, el, eh, r in zip(names, ch, yerr[0], yerr[1], ratio):
            ax.errorbar([r], [c], yerr=[[el], [eh]], fmt="o", color=colors[m], capsize=3,
                        label=m)
            ax.annotate(m, (r, c), xytext=(4, 4), textcoords="offset points",
                        fontsize="small")
        ax.set_xscale("log")
        ax.set_xlabel("wall time (multiple of frozen's)")
        ax.legend(fontsize="small", loc="best")
    ax.axhline(0.0, color=_FROZEN_COLOR, lw=0.8)
    ax.set_ylabel("perplexity change vs frozen (%)")
    level = int(100 * d.get("settings", {}).get("ci_level", 0.95))
    ref = f"frozen perplexity {frozen['perplexity']:.4g}; " if frozen else ""
    ax.set_title(_wrap(f"{ref}change with {level}% block-bootstrap CI (below 0: better)\n"
                       f"{_summary_heading(d)}"), fontsize="medium")
    return ax


# ------------------------------------------------------------------ writing
def _figure(figsize=(7, 3.5)):
    """A figure without pyplot (no GUI backend, no global figure list)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig, path: pathlib.Path, dpi, written: list) -> None:
    fig.savefig(path, dpi=dpi)
    written.append(path)


def _state_moves(ds) -> bool:
    """False for a run whose state never leaves its start with zero spread (frozen)."""
    vals = [ds[v].values for v in ("analysis_mean", "analysis_spread") if v in ds]
    return any(np.any(np.abs(np.nan_to_num(v)) > 0) for v in vals)


def _trajectory_figures(ds, stem: str, out: pathlib.Path, dpi, written: list,
                        nll: bool = True) -> None:
    if nll:  # in a compare folder every method's NLL is in chunk_nll.png already
        fig, ax = _figure()
        plot_chunk_nll(ds, ax)
        _save(fig, out / f"{stem}_nll.png", dpi, written)
    if ds.sizes["time"] == 0 or not _state_moves(ds):
        return  # a frozen state has nothing to show but its NLL
    fig, ax = _figure((7, 4))
    plot_state_heatmap(ds, ax)
    _save(fig, out / f"{stem}_state_heatmap.png", dpi, written)
    fig, ax = _figure()
    plot_state_components(ds, ax=ax)
    _save(fig, out / f"{stem}_state_components.png", dpi, written)
    if "analysis_covariance" in ds or np.any(np.nan_to_num(ds["analysis_spread"].values) > 0):
        fig, ax = _figure((6, 5))
        plot_scale_covariance(ds, ax, correlation="analysis_covariance" in ds)
        _save(fig, out / f"{stem}_covariance.png", dpi, written)


def _comparison_figures(summary: dict | None, nll_source, prefix: str, out: pathlib.Path,
                        dpi, written: list) -> None:
    if nll_source is not None:
        fig, ax = _figure()
        plot_chunk_nll(nll_source, ax, smooth=4)
        _save(fig, out / f"{prefix}chunk_nll.png", dpi, written)
        names, _, _ = _nll_table(nll_source)
        if "frozen" in names and len(names) > 1:
            fig, ax = _figure()
            plot_chunk_nll(nll_source, ax, smooth=4, relative=True)
            _save(fig, out / f"{prefix}chunk_nll_vs_frozen.png", dpi, written)
    if summary is not None and any(r.get("method") != "frozen" for r in summary["rows"]):
        fig, ax = _figure()
        plot_comparison(summary, ax)
        _save(fig, out / f"{prefix}comparison.png", dpi, written)


def _filters_figures(ds, stem: str, out: pathlib.Path, dpi, written: list) -> None:
    from filters import plot as fplot

    fig, ax = _figure()
    fplot.plot_component(ds, 0, ax)
    _save(fig, out / f"{stem}_component0.png", dpi, written)
    if "rmse_analysis" in ds:
        fig, ax = _figure()
        fplot.plot_rmse(ds, ax)
        _save(fig, out / f"{stem}_rmse.png", dpi, written)
        fig, ax = _figure((5, 4.5))
        fplot.plot_spread_skill(ds, ax)
        _save(fig, out / f"{stem}_spread_skill.png", dpi, written)
    if "truth_rank" in ds:
        fig, ax = _figure()
        fplot.plot_rank_histogram(ds, ax)
        _save(fig, out / f"{stem}_rank_histogram.png", dpi, written)
    if "analysis_cov" in ds or "analysis_ensemble" in ds:
        fig, ax = _figure((6, 5))
        fplot.plot_covariance(ds, -1, ax)
        _save(fig, out / f"{stem}_covariance.png", dpi, written)


def _kind(ds: xr.Dataset) -> str:
    if "method" in ds.dims and "nll" in ds and "summary" in ds.attrs:
        return "summary"
    if "nll" in ds and "analysis_mean" in ds and "method" in ds.attrs:
        return "trajectory"
    if "analysis_mean" in ds and "setting" in ds.attrs:
        return "filters"
    return "unknown"


def _load(path: pathlib.Path) -> xr.Dataset:
    try:
        return xr.load_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not read {os.fspath(path)!r} as netCDF: {exc}") from None


def save_figures(path, out_dir=None, *, dpi: int = 150) -> list[pathlib.Path]:
    """Write every figure that applies to a run or a comparison as PNG files.

    ========================  ==================================================
    input                     figures (``PREFIX_`` is the file's stem)
    ========================  ==================================================
    ``compare`` folder        ``chunk_nll``, ``chunk_nll_vs_frozen`` (both a
                              running mean over 4 chunks), ``comparison``,
                              and per method ``<method>_state_heatmap``,
                              ``_state_components``, ``_covariance`` (only
                              when the method's state moves: not frozen)
    trajectory ``.nc``        ``PREFIX_nll`` and the state figures
    ``summary.nc``            ``PREFIX_chunk_nll``, ``PREFIX_chunk_nll_vs_frozen``,
                              ``PREFIX_comparison``
    ``summary.json``          ``PREFIX_comparison``
    filters run ``.nc``       :mod:`filters.plot`: ``PREFIX_component0``,
                              ``_rmse``, ``_spread_skill`` (with a truth),
                              ``_rank_histogram`` (ensemble), ``_covariance``
                              (stored covariance or ensemble)
    ========================  ==================================================

    Parameters
    ----------
    path : str or PathLike
        A ``compare`` output folder, a trajectory ``.nc``, a ``summary.nc`` /
        ``summary.json``, or a run of :func:`filters.assimilate` saved with
        :func:`filters.io.to_netcdf`.
    out_dir : str or PathLike, optional
        Where to write (created if needed); default the folder itself, or the
        file's folder.
    dpi : int, default 150

    Returns
    -------
    list of pathlib.Path
        The files written, in order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is none of the inputs above.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> synthetic_trajectory("etkf").to_netcdf(d / "etkf.nc")
    >>> [p.name for p in save_figures(d / "etkf.nc", dpi=50)]  # doctest: +NORMALIZE_WHITESPACE
    ['etkf_nll.png', 'etkf_state_heatmap.png', 'etkf_state_components.png',
     'etkf_covariance.png']
    """
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or dpi < 1:
        raise ValueError(f"dpi must be an integer >= 1, got {dpi!r}")
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no file or folder at {os.fspath(path)!r} (give a compare "
                                "output folder or a .nc run file)")
    out = pathlib.Path(out_dir) if out_dir is not None else (p if p.is_dir() else p.parent)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {os.fspath(out)!r}")
    written: list[pathlib.Path] = []
    if p.is_dir():
        _folder_figures(p, out, dpi, written)
        return written
    if p.suffix == ".json":
        try:
            summary = _summary_dict(json.loads(p.read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{os.fspath(p)!r} is not a compare summary.json: {exc}") from None
        out.mkdir(parents=True, exist_ok=True)
        _comparison_figures(summary, None, f"{p.stem}_", out, dpi, written)
        return written
    ds = _load(p)
    kind = _kind(ds)
    if kind == "unknown":
        raise ValueError(f"{os.fspath(p)!r} is neither a da_embed trajectory, a compare "
                         "summary.nc, nor a filters run (no analysis_mean/nll variables)")
    out.mkdir(parents=True, exist_ok=True)
    if kind == "summary":
        _comparison_figures(_summary_dict(ds), ds, f"{p.stem}_", out, dpi, written)
    elif kind == "trajectory":
        _trajectory_figures(ds, p.stem, out, dpi, written)
    else:
        _filters_figures(ds, p.stem, out, dpi, written)
    return written


def _folder_figures(p: pathlib.Path, out: pathlib.Path, dpi, written: list) -> None:
    summary = None
    if (p / "summary.json").is_file():
        try:
            summary = _summary_dict(json.loads((p / "summary.json").read_text()))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{os.fspath(p / 'summary.json')!r} is not a compare summary: "
                             f"{exc}") from None
    trajectories: dict[str, Any] = {}
    for f in sorted(p.glob("*.nc")):
        if f.name == "summary.nc":
            continue
        ds = _load(f)
        if _kind(ds) == "trajectory":
            trajectories[f.stem] = ds
    if summary is None and (p / "summary.nc").is_file():
        summary = _summary_dict(_load(p / "summary.nc"))
    if summary is None and not trajectories:
        raise ValueError(f"{os.fspath(p)!r} is not a compare output folder: it has no "
                         "summary.json, summary.nc or <method>.nc trajectory")
    if summary is not None:  # the summary's method order (frozen first)
        order = [str(r["method"]).replace(":", "-") for r in summary["rows"]]
        trajectories = dict(sorted(trajectories.items(), key=lambda kv: (
            order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
    labels = {stem: str(ds.attrs.get("method", stem)) for stem, ds in trajectories.items()}
    out.mkdir(parents=True, exist_ok=True)
    nll_source = ({labels[s]: ds for s, ds in trajectories.items()} if trajectories
                  else (_load(p / "summary.nc") if (p / "summary.nc").is_file() else None))
    _comparison_figures(summary, nll_source, "", out, dpi, written)
    for stem, ds in trajectories.items():
        _trajectory_figures(ds, stem, out, dpi, written, nll=False)
