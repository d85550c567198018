"""Matplotlib figures of a run (a Dataset from :func:`filters.assimilate`).

Every function takes the Dataset and an optional ``ax`` and returns the Axes,
so figures compose.  Colours come from the Okabe-Ito palette (colour-blind
safe), the same role always gets the same colour, and titles name the filter
and its parameters.  The figures are in ``filters.plot.figures``; what they
share (and ``da_embed.plot`` shares with them) in :mod:`filters.plot.helpers`.
"""

from .figures import (plot_component, plot_covariance, plot_rank_histogram, plot_rmse,
                      plot_spread_skill)
from .helpers import PALETTE, run_title
from .sweep import numeric_axes, plot_sweep_axis, plot_sweep_heatmap

__all__ = ["PALETTE", "plot_component", "plot_rmse", "plot_covariance", "plot_spread_skill",
           "plot_rank_histogram", "run_title", "numeric_axes", "plot_sweep_axis",
           "plot_sweep_heatmap"]
