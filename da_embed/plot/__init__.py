"""Matplotlib figures of online runs: scale trajectories, covariances, method comparisons.

Inputs: a *trajectory* (one method's run, :mod:`da_embed.trajectory` layout):
:func:`plot_state_heatmap`, :func:`plot_state_components`,
:func:`plot_scale_covariance`, :func:`plot_chunk_nll`; a *comparison*
(:func:`~da_embed.compare.compare`'s result, ``summary.json`` or ``summary.nc``):
:func:`plot_chunk_nll`, :func:`plot_comparison`; a *filters run*: drawn with
:mod:`filters.plot`.  :func:`save_figures` writes every figure that applies as
PNG files (``da-embed plot``).  As in :mod:`filters.plot` (whose helpers these
figures share), every function takes the data and an optional ``ax`` and
returns the Axes; frozen is always black and every other method keeps its
Okabe-Ito colour across figures.  The state of a run is a vector of log-scales
(``s = 0`` is the unmodified model); in a subspace run it is the coordinate
vector ``z`` of ``s = s_ref + P z``.
"""

from ._common import METHOD_COLORS, synthetic_trajectory, trajectory_title
from ._comparison import plot_chunk_nll, plot_comparison
from ._files import save_figures
from ._trajectory import plot_scale_covariance, plot_state_components, plot_state_heatmap

# da_embed.plot.run_title was importable before the split; it stays so.
from filters.plot import run_title  # noqa: F401

__all__ = ["METHOD_COLORS", "plot_state_heatmap", "plot_state_components",
           "plot_scale_covariance", "plot_chunk_nll", "plot_comparison", "save_figures",
           "trajectory_title", "synthetic_trajectory"]
