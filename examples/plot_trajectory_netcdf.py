"""
Writing runs to netCDF and reading them with xarray
===================================================

Every run is one CF-style :class:`xarray.Dataset` (``long_name`` and
``units`` on every variable, the filter, its parameters, the seed and the
package version in the attributes), written with the netCDF4 engine.  This
example writes two runs to a temporary folder, opens them again with plain
xarray, and plots a state component with its uncertainty band:

1. a twin experiment of :mod:`filters` (ETKF on Lorenz-63), saved with
   :func:`filters.to_netcdf`;
2. an online run of :class:`da_embed.OnlineAssimilator` on a tiny language
   model, which appends one chunk at a time to its file while it runs (a
   killed run keeps every completed chunk).
"""

import os
import shutil
import tempfile
import textwrap

import matplotlib.pyplot as plt
import xarray as xr

from da_embed import OnlineAssimilator, PrequentialConfig
from da_embed.placements import HiddenScale
from da_embed.plot import trajectory_title
from da_embed.testing import random_input_ids, tiny_gpt2
from filters import ETKF, assimilate, to_netcdf
from filters.plot import plot_component
from filters.settings import sakov2012

tmp = tempfile.mkdtemp(prefix="da-embed-example-")

# %%
# A filters run
# -------------
ds = assimilate(ETKF(N=10, inflation=1.02, rotate=True), sakov2012(n_obs=100), seed=0)
path = to_netcdf(ds, os.path.join(tmp, "etkf.nc"))

with xr.open_dataset(path, engine="netcdf4") as run:
    print(run["analysis_mean"].attrs["long_name"], "-", run["analysis_mean"].dims)
    print("filter:", run.attrs["filter"], run.attrs["filter_params"])
    print("RMSE after burn-in:", round(float(run.attrs["rmse_analysis_mean"]), 3))
    run = run.load()  # into memory, so the file can close

# %%
# The mean of component 2 (the z variable of Lorenz-63) with a band of two
# analysis standard deviations, the truth and the observations.
fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
plot_component(run, 2, ax=ax)
plt.show()

# %%
# An online language-model run
# ----------------------------
# The trajectory of an EKF on the hidden-state scales of a tiny GPT-2: the
# file is written chunk by chunk while the run goes (``out=``).
model = tiny_gpt2(seed=0)
ids = random_input_ids(model, batch=1, length=161, seed=1)[0]
runner = OnlineAssimilator(HiddenScale(model), "ekf", protocol=PrequentialConfig(chunk=8, context=16))
lm_path = os.path.join(tmp, "ekf.nc")
runner.run(ids, out=lm_path)

traj = xr.open_dataset(lm_path, engine="netcdf4").load()
print(traj.attrs["method"], "|", traj.attrs.get("protocol", ""), "|", dict(traj.sizes))
print(traj["nll"].attrs["long_name"])

# %%
# Plain xarray and matplotlib: component 0 of the analysis with its band.
k = 0
m = traj["analysis_mean"].isel(state=k)
sd = traj["analysis_spread"].isel(state=k)
t = traj["time"].values
fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
ax.fill_between(t, m - 2 * sd, m + 2 * sd, alpha=0.3, lw=0, label="analysis ± 2σ")
ax.plot(t, m, lw=1.2, label="analysis mean")
ax.axhline(0.0, color="k", lw=0.8, ls="--", label="unmodified model (s = 0)")
ax.set_xlabel(traj["time"].attrs["long_name"])
ax.set_ylabel(f"log-scale s[{k}]")
ax.set_title("\n".join(textwrap.wrap(trajectory_title(traj), 80)), fontsize="medium")
ax.legend(fontsize="small")
plt.show()

for name in sorted(os.listdir(tmp)):
    print(f"{name}: {os.path.getsize(os.path.join(tmp, name)) / 1024:.1f} kB")
shutil.rmtree(tmp)
