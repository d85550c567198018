"""
A tuning grid on Dask: ETKF and EnKF over ensemble size and inflation
=====================================================================

:func:`filters.sweep.run_sweep` (the Python side of ``da-embed sweep``) runs a
grid of :func:`filters.assimilate` cells on Dask distributed and writes each
finished cell at once, then ``results.nc`` with one dimension per grid axis.
Here the grid is small (Lorenz-63, ``sakov2012`` with 200 cycles: 2 filters x
3 ensemble sizes x 3 inflations x 2 seeds = 36 cells) and the cluster is a
``LocalCluster`` of threads in this process, so the page builds in seconds;
``da-embed sweep SPEC.toml --out DIR`` starts worker processes instead, and
``--scheduler tcp://HOST:8786`` sends the cells to any Dask scheduler.
"""

import tempfile

import matplotlib.pyplot as plt
from distributed import Client, LocalCluster

from filters.plot import plot_sweep_axis, plot_sweep_heatmap
from filters.sweep import format_table, run_sweep

spec = {"setting": {"name": "sakov2012", "n_obs": 200},
        "grid": {"filter": ["ETKF", "EnKF"], "N": [5, 10, 20],
                 "inflation": [1.0, 1.03, 1.08], "seed": [0, 1]}}

with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                  dashboard_address=None) as cluster, Client(cluster) as client:
    report = run_sweep(spec, tempfile.mkdtemp(), client=client)
results = report.results
print(results)

# %%
# The table: mean over seeds with the standard error across seeds
# ----------------------------------------------------------------
# (a cell's own ``rmse_analysis_se`` is its time-average's error; the table's
# is the spread between seeds).
print(format_table(results))

# %%
# RMSE against each axis, best over the other one
# -----------------------------------------------
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
plot_sweep_axis(results, "N", ax=axes[0])
plot_sweep_axis(results, "inflation", ax=axes[1])

# %%
# Both axes at once, one panel per filter
# ---------------------------------------
plot_sweep_heatmap(results, "inflation", "N")
plt.show()
