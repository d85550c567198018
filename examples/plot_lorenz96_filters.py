"""
Comparing ensemble filters and the EKF on Lorenz-96
===================================================

Four filters assimilate the same truth and observations of DAPPER's
``sakov2008`` setting (Lorenz-96, n = 40, F = 8, every component observed with
R = I every 0.05 time units): the stochastic EnKF with perturbed
observations, the ETKF (symmetric square root), the LETKF with Gaspari-Cohn
localisation, and the extended Kalman filter.  The hyperparameters are
DAPPER's tuned ones for this setting (the ones ``make demo-filters`` uses).

The run is shortened to 300 cycles (15 time units) with a burn-in of 5 time
units so that the page builds in seconds; ``make demo-filters`` runs 1000 cycles
with the published burn-in of 20.
"""

import matplotlib.pyplot as plt

from filters import EKF, ETKF, LETKF, EnKF, assimilate
from filters.plot import plot_rmse
from filters.settings import sakov2008

setting = sakov2008(n_obs=300).with_(burn_in=5.0)
sim = setting.simulate(0)  # one truth and one set of observations for every filter

filters = {
    "EnKF": EnKF(N=40, inflation=1.06),
    "ETKF": ETKF(N=28, inflation=1.02, rotate=True),
    "LETKF": LETKF(N=7, inflation=1.04, radius=4.0, rotate=True),
    "EKF": EKF(infl_rate=10.0),
}

# %%
# Run every filter
# ----------------
# :func:`filters.assimilate` cycles a filter (forecast, then analysis) over the
# observations and returns an :class:`xarray.Dataset`.  Its attributes hold
# time averages after the burn-in with autocorrelation-corrected standard
# errors.
runs = {name: assimilate(flt, setting, seed=0, simulation=sim) for name, flt in filters.items()}

print(f"{'filter':8s} {'analysis RMSE':>16s} {'spread':>8s} {'ms/cycle':>9s}")
for name, ds in runs.items():
    a = ds.attrs
    print(f"{name:8s} {a['rmse_analysis_mean']:9.3f} ± {a['rmse_analysis_stderr']:.3f} "
          f"{a['rmv_analysis_mean']:8.3f} {1e3 * a['time_per_cycle_median']:9.2f}")

# %%
# RMSE and spread over time
# -------------------------
# :func:`filters.plot.plot_rmse` draws the analysis RMSE against the truth,
# the spread (root-mean variance), the end of the burn-in and the time
# average.  A calibrated filter has spread close to its RMSE.  The LETKF works
# with 7 members because each local analysis only has to represent the errors
# of a few neighbouring sites; a global ETKF needs more members than the
# number of unstable and neutral directions of the model (about 14 here).
fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True, sharey=True, layout="constrained")
for ax, (name, ds) in zip(axes.flat, runs.items()):
    plot_rmse(ds, ax=ax)
    ax.set_title(name)
    ax.legend(fontsize="x-small", loc="upper right")
plt.show()
