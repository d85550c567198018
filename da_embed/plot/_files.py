"""Writing every figure that applies to a file or a ``compare`` folder as PNG (``da-embed plot``).

Figures are drawn on bare :class:`matplotlib.figure.Figure` objects: no
pyplot, no GUI backend, no global figure list.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
import xarray as xr

from ..trajectory import run_file_stem
from ._common import synthetic_trajectory
from ._comparison import nll_table, plot_chunk_nll, plot_comparison, summary_dict
from ._trajectory import plot_scale_covariance, plot_state_components, plot_state_heatmap

__all__ = ["save_figures"]


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
        names, _, _ = nll_table(nll_source)
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
    if "sweep_kind" in ds.attrs and "status" in ds:
        return "sweep"
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
    sweep folder or its       ``sweep_<axis>`` per numeric axis (best over the
    ``results.nc``            other axes, seed error bars per filter),
                              ``sweep_heatmap_<x>_<y>`` per pair of them
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
    if p.is_dir() and (p / "results.nc").is_file() and _kind(_load(p / "results.nc")) == "sweep":
        _sweep_figures(_load(p / "results.nc"), out, dpi, written)
        return written
    if p.is_dir():
        _folder_figures(p, out, dpi, written)
        return written
    if p.suffix == ".json":
        try:
            summary = summary_dict(json.loads(p.read_text()))
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
    if kind == "sweep":
        _sweep_figures(ds, out, dpi, written)
    elif kind == "summary":
        _comparison_figures(summary_dict(ds), ds, f"{p.stem}_", out, dpi, written)
    elif kind == "trajectory":
        _trajectory_figures(ds, p.stem, out, dpi, written)
    else:
        _filters_figures(ds, p.stem, out, dpi, written)
    return written


def _sweep_figures(ds: xr.Dataset, out: pathlib.Path, dpi, written: list) -> None:
    """A sweep's figures: the score against each numeric axis, and heatmaps of axis pairs."""
    from matplotlib.figure import Figure

    from filters.plot import numeric_axes, plot_sweep_axis, plot_sweep_heatmap

    axes = numeric_axes(ds)
    if not axes:
        raise ValueError("the sweep has no numeric axis with two or more values to plot")
    out.mkdir(parents=True, exist_ok=True)
    for axis in axes:
        fig = Figure(figsize=(6, 3.8), layout="constrained")
        plot_sweep_axis(ds, axis, fig.add_subplot())
        _save(fig, out / f"sweep_{axis}.png", dpi, written)
    for i, x in enumerate(axes):
        for y in axes[i + 1:]:
            _save(plot_sweep_heatmap(ds, x, y), out / f"sweep_heatmap_{x}_{y}.png", dpi, written)


def _folder_figures(p: pathlib.Path, out: pathlib.Path, dpi, written: list) -> None:
    summary = None
    if (p / "summary.json").is_file():
        try:
            summary = summary_dict(json.loads((p / "summary.json").read_text()))
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
        summary = summary_dict(_load(p / "summary.nc"))
    if summary is None and not trajectories:
        raise ValueError(f"{os.fspath(p)!r} is not a compare output folder: it has no "
                         "summary.json, summary.nc or <method>.nc trajectory")
    if summary is not None:  # the summary's method order (frozen first)
        # a row's file stem: from its path (also in summaries written before the shell-safe
        # names), else from the label
        order = [pathlib.Path(str(r["path"])).stem if r.get("path")
                 else run_file_stem(str(r["method"])) for r in summary["rows"]]
        trajectories = dict(sorted(trajectories.items(), key=lambda kv: (
            order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
    labels = {stem: str(ds.attrs.get("method", stem)) for stem, ds in trajectories.items()}
    out.mkdir(parents=True, exist_ok=True)
    nll_source = ({labels[s]: ds for s, ds in trajectories.items()} if trajectories
                  else (_load(p / "summary.nc") if (p / "summary.nc").is_file() else None))
    _comparison_figures(summary, nll_source, "", out, dpi, written)
    for stem, ds in trajectories.items():
        _trajectory_figures(ds, stem, out, dpi, written, nll=False)
