"""Figures of a comparison: per-chunk NLL of several methods, their change against frozen."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from filters.plot.helpers import integer_ticks, new_axes

from ._common import (FROZEN_COLOR, check_trajectory, method_colors, protocol_text,
                      synthetic_trajectory, wrap_title)

__all__ = ["summary_dict", "summary_heading", "nll_table", "plot_chunk_nll", "plot_comparison"]


def summary_dict(summary) -> dict:
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


def summary_heading(summary: dict) -> str:
    s, p = summary.get("settings", {}), summary.get("protocol", {})
    where = s.get("placement", "?")
    if s.get("state_dim") is not None:
        where += f" (n = {s['state_dim']})"
    if s.get("subspace"):
        where += f", subspace {s['subspace']}"
    tokens = s.get("tokens_scored")
    return (f"{s.get('model', '?')}, {where}; {protocol_text(p)}"
            + (f"; {tokens} tokens" if tokens is not None else ""))


def nll_table(data):
    """(methods, nll (M, T), heading) from any input :func:`plot_chunk_nll` accepts."""
    if isinstance(data, xr.Dataset) and "method" in data.dims:  # summary.nc
        names = [str(m) for m in data["method"].values]
        nll = np.asarray(data["nll"].values, dtype=float)
        heading = summary_heading(json.loads(data.attrs["summary"])) \
            if "summary" in data.attrs else ""
        return names, nll, heading
    if isinstance(data, xr.Dataset):
        check_trajectory(data, "summary_or_datasets")
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
        check_trajectory(d, f"trajectory {name!r}")
    K = min(d.sizes["time"] for _, d in items)
    nll = np.stack([np.asarray(d["nll"].values[:K], dtype=float) for _, d in items])
    first = items[0][1]
    heading = ", ".join(x for x in (first.attrs.get("model", ""), protocol_text(first.attrs))
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
    names, nll, heading = nll_table(summary_or_datasets)
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, int)
                               or smooth < 1):
        raise ValueError(f"smooth must be an integer >= 1 (chunks) or None, got {smooth!r}")
    if relative:
        if "frozen" not in names:
            raise ValueError("relative=True needs the frozen method among the runs")
        nll = nll - nll[names.index("frozen")]
    ax = new_axes(ax)
    colors = method_colors(names)
    t = np.arange(nll.shape[1])
    for name, y in zip(names, nll):
        if smooth is not None and smooth > 1:
            y = _running_mean(y, smooth)
        frozen = name == "frozen"
        ax.plot(t, y, color=colors[name], lw=1.0 if frozen else 1.3,
                ls="--" if frozen else "-", label=name)
    integer_ticks(ax, y=False)
    ax.set_xlabel("chunk (index)")
    ax.set_ylabel("NLL minus frozen's per token (nat)" if relative
                  else "mean NLL per token (nat)")
    what = "per-chunk NLL minus frozen's (below 0: better)" if relative else "per-chunk NLL"
    if smooth is not None and smooth > 1:
        what += f", running mean over {smooth} chunks"
    ax.set_title(wrap_title(f"prequential {what}" + (f"\n{heading}" if heading else "")),
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
        Bars (or points) labelled with the methods, frozen as the zero line.

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
    d = summary_dict(summary)
    if kind not in ("bars", "scatter"):
        raise ValueError(f"kind must be 'bars' or 'scatter', got {kind!r}")
    rows = [r for r in d["rows"] if r.get("method") != "frozen"]
    if not rows:
        raise ValueError("summary has only frozen: nothing to compare against it")
    frozen = next((r for r in d["rows"] if r.get("method") == "frozen"), None)
    names = [str(r["method"]) for r in rows]
    colors = method_colors(["frozen"] + names)
    ch = np.array([float(r["change_pct"]) for r in rows])
    lo = np.array([float(r.get("ci_low", np.nan)) for r in rows])
    hi = np.array([float(r.get("ci_high", np.nan)) for r in rows])
    yerr = np.nan_to_num(np.stack([ch - lo, hi - ch]), nan=0.0)  # no interval: no bar
    ratio = np.array([float(r.get("wall_ratio", np.nan)) for r in rows])
    ax = new_axes(ax)
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
    ax.axhline(0.0, color=FROZEN_COLOR, lw=0.8)
    ax.set_ylabel("perplexity change vs frozen (%)")
    level = int(100 * d.get("settings", {}).get("ci_level", 0.95))
    ref = f"frozen perplexity {frozen['perplexity']:.4g}; " if frozen else ""
    ax.set_title(wrap_title(f"{ref}change with {level}% block-bootstrap CI (below 0: better)\n"
                       f"{summary_heading(d)}"), fontsize="medium")
    return ax
