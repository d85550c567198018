"""A Lorenz-96 comparison of the filters (``make demo-filters``).

Runs every filter of the package on DAPPER's ``sakov2008`` setting with the
same truth and observations, prints analysis RMSE and spread (time averages
after burn-in, with autocorrelation-corrected standard errors) and the median
time per cycle, and writes one netCDF file per filter.

Usage::

    python -m filters.demo --out runs/demo-filters [--cycles 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys

from . import DEnKF, EKF, ETKF, LETKF, UKF, EnKF, EnSRF, Var3D, assimilate, to_netcdf
from .settings import sakov2008

__all__ = ["default_filters", "main"]


def default_filters() -> dict:
    """The compared filters with DAPPER's tuned parameters for ``sakov2008``.

    Returns
    -------
    dict of str to Filter
        Label (filter and parameters) to a fresh filter object.

    Examples
    --------
    >>> filters = default_filters()
    >>> len(filters), filters["ETKF N=28 infl=1.02 rot"].N
    (8, 28)
    """
    return {
        "ETKF N=28 infl=1.02 rot": ETKF(N=28, inflation=1.02, rotate=True),
        "EnKF N=40 infl=1.06": EnKF(N=40, inflation=1.06),
        "DEnKF N=40 infl=1.01": DEnKF(N=40, inflation=1.01),
        "EnSRF N=28 infl=1.02 rot": EnSRF(N=28, inflation=1.02, rotate=True),
        "LETKF N=7 infl=1.04 rot r=4": LETKF(N=7, inflation=1.04, radius=4.0, rotate=True),
        "EKF infl_rate=10": EKF(infl_rate=10.0),
        "UKF merwe": UKF(),
        "3D-Var xB=0.02 (B=clim)": Var3D(xB=0.02),
    }


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``): ``--out``, ``--cycles``, ``--seed``.

    Returns
    -------
    int
        0 on success; bad arguments exit with status 2 and a usage message.

    Examples
    --------
    >>> try:  # too few cycles to average after the burn-in
    ...     main(["--cycles", "5", "--out", "runs/demo"])
    ... except SystemExit as stop:
    ...     print("exit status", stop.code)
    exit status 2
    """
    p = argparse.ArgumentParser(prog="python -m filters.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo", help="folder for the netCDF files")
    p.add_argument("--cycles", type=int, default=1000, help="number of analysis cycles")
    p.add_argument("--seed", type=int, default=0, help="seed of truth, observations and filters")
    args = p.parse_args(argv)
    if args.cycles < 10:
        p.error(f"--cycles must be >= 10, got {args.cycles}")
    setting = sakov2008(n_obs=args.cycles)
    need = int(setting.burn_in / setting.dt_obs) + 10
    if args.cycles < need:
        p.error(f"--cycles must be >= {need} so that time averages after the burn-in of "
                f"{setting.burn_in:g} time units have data, got {args.cycles}")
    print(f"Lorenz-96 sakov2008: n=40, F=8, dt=0.05, R=I, {args.cycles} cycles, "
          f"burn-in {setting.burn_in:g} time units, seed {args.seed}")
    sim = setting.simulate(args.seed)
    header = f"{'filter':30s} {'rmse.a':>16s} {'spread.a':>8s} {'ms/cycle':>9s}"
    print(header)
    print("-" * len(header))
    for label, flt in default_filters().items():
        ds = assimilate(flt, setting, seed=args.seed, simulation=sim)
        a = ds.attrs
        rm = f"{a['rmse_analysis_mean']:.3f} ± {a['rmse_analysis_stderr']:.3f}"
        print(f"{label:30s} {rm:>16s} {a['rmv_analysis_mean']:8.3f} "
              f"{1e3 * a['time_per_cycle_median']:9.3f}", flush=True)
        to_netcdf(ds, os.path.join(args.out, f"{flt.name.lower()}.nc"))
    print(f"netCDF trajectories written to {os.path.abspath(args.out)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
