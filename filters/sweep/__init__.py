"""Experiment grids on Dask distributed: a spec, its cells, one file per finished cell.

A sweep is a grid of cells (one :func:`filters.assimilate` run each, or a cell
of another registered kind) that Dask distributed runs on a ``LocalCluster``
or on any scheduler; every finished cell is written at once as its own small
file, so a killed sweep resumes where it stopped.  ``DIR/results.nc`` holds
one dimension per grid axis.  ``da-embed sweep`` is the command line of
:func:`run_sweep`.

Examples
--------
>>> spec = parse_spec({"setting": {"name": "linear_gaussian", "n_obs": 20},
...                    "grid": {"filter": ["KalmanFilter"], "seed": [0, 1]}})
>>> [c.coords for c in spec.cells()]
[{'filter': 'KalmanFilter', 'seed': 0}, {'filter': 'KalmanFilter', 'seed': 1}]
"""

from . import _setting_kind  # noqa: F401  (registers the "setting" cell kind)
from .cells import Cell, CellKind, cell_kind, register_cell_kind, run_cell
from .engine import SweepReport, run_sweep
from .results import RESULT_VARIABLES, assemble_results
from .spec import SweepSpec, load_spec, parse_spec
from .store import CellStore
from .table import best_cells, format_table, seed_table

__all__ = ["SweepSpec", "parse_spec", "load_spec", "Cell", "CellKind", "register_cell_kind",
           "cell_kind", "run_cell", "CellStore", "run_sweep", "SweepReport",
           "assemble_results", "RESULT_VARIABLES", "seed_table", "best_cells", "format_table"]
