"""Helpers every figure of a run shares: palette, Axes, titles, heatmaps, attributes.

Public so that the figures of both packages draw the same way: the figures of
:mod:`filters.plot` and those of ``da_embed.plot`` (which may import
``filters``; ``filters`` never imports ``da_embed``).  Colours come from the
Okabe-Ito palette (colour-blind safe) and the same role always gets the same
colour.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

__all__ = ["PALETTE", "new_axes", "run_title", "json_attr", "integer_ticks", "signed_heatmap"]

#: Okabe & Ito (2008) colour-blind-safe palette, by role.
PALETTE = {
    "truth": "#000000",
    "analysis": "#0072B2",
    "forecast": "#E69F00",
    "observation": "#D55E00",
    "spread": "#009E73",
    "band": "#56B4E9",
    "other": "#CC79A7",
}


def new_axes(ax=None, figsize=(7, 3.5)):
    """``ax``, or the Axes of a new figure (constrained layout) when it is None.

    Parameters
    ----------
    ax : matplotlib Axes, optional
        Where to draw; returned as it is.
    figsize : tuple of float, default (7, 3.5)
        Size in inches of the new figure.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax`` itself, or the single Axes of a new figure.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = new_axes(figsize=(4, 3))
    >>> new_axes(ax) is ax, ax.figure.get_size_inches().tolist()
    (True, [4.0, 3.0])
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def json_attr(ds, key: str, default=None):
    """A JSON-encoded attribute of a Dataset, decoded; ``default`` when absent or not JSON.

    Parameters
    ----------
    ds : xarray.Dataset
        A run or a trajectory.
    key : str
        The attribute's name.
    default : optional
        Returned when the attribute is missing or does not decode.

    Returns
    -------
    object
        The decoded value.

    Examples
    --------
    >>> ds = xr.Dataset(attrs={"filter_params": '{"N": 10}', "bad": "{"})
    >>> json_attr(ds, "filter_params"), json_attr(ds, "bad", {}), json_attr(ds, "none")
    ({'N': 10}, {}, None)
    """
    try:
        return json.loads(ds.attrs[key])
    except (KeyError, TypeError, ValueError):
        return default


def integer_ticks(ax, *, y: bool = True) -> None:
    """Integer tick positions on the x axis (and the y axis) of ``ax``: index axes.

    Parameters
    ----------
    ax : matplotlib Axes
        The Axes to change.
    y : bool, default True
        Also the y axis.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = new_axes()
    >>> integer_ticks(ax, y=False)
    >>> type(ax.xaxis.get_major_locator()).__name__
    'MaxNLocator'
    """
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def signed_heatmap(ax, C, vmax: float, label: str, *, cmap: str = "RdBu_r", **imshow):
    """A heatmap of ``C`` on ``[-vmax, vmax]`` (diverging colours), its colour bar, integer ticks.

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw.
    C : ndarray (rows, columns)
        The values (e.g. a covariance, a state over time).
    vmax : float
        The colour limit; 0 sits in the middle of the colour map.
    label : str
        The colour bar's label.
    cmap : str, default "RdBu_r"
        A diverging colour map.
    **imshow
        Further arguments of :meth:`matplotlib.axes.Axes.imshow` (``aspect``,
        ``origin``, ``extent``).

    Returns
    -------
    matplotlib.image.AxesImage

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> im = signed_heatmap(new_axes(), np.eye(3), 1.0, "covariance")
    >>> im.get_clim(), im.get_array().shape
    ((-1.0, 1.0), (3, 3))
    """
    im = ax.imshow(C, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest", **imshow)
    ax.figure.colorbar(im, ax=ax, label=label)
    integer_ticks(ax)
    return im


def run_title(ds: xr.Dataset) -> str:
    """``"ETKF(N=28, inflation=1.02, rotate=True) on sakov2008"`` from a run's attributes.

    Parameters
    ----------
    ds : xarray.Dataset
        A run; uses its ``filter``, ``filter_params`` and ``setting`` attributes.

    Returns
    -------
    str
        The filter with its non-default parameters, and the setting.

    Examples
    --------
    >>> from filters import ETKF, assimilate
    >>> from filters.settings import linear_gaussian
    >>> run_title(assimilate(ETKF(N=10, inflation=1.02), linear_gaussian(n_obs=5), seed=0))
    'ETKF(N=10, inflation=1.02) on linear_gaussian'
    """
    name = ds.attrs.get("filter", "filter")
    try:
        params = json.loads(ds.attrs.get("filter_params", "{}"))
    except (TypeError, ValueError):
        params = {}
    shown = []
    for k, v in params.items():
        if v is None or v is False or isinstance(v, (dict, list)) and not v:
            continue
        if isinstance(v, dict):  # an inflation object
            v = next((x for kk, x in v.items() if kk != "name"), v)
        if isinstance(v, list):
            v = "+".join(str(next((x for kk, x in i.items() if kk != "name"), i))
                         if isinstance(i, dict) else str(i) for i in v)
        shown.append(f"{k}={v}")
    setting = ds.attrs.get("setting", "")
    return f"{name}({', '.join(shown)})" + (f" on {setting}" if setting else "")
