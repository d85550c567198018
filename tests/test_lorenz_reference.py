"""Seeded time-averaged analysis RMSE against DAPPER's published values.

The reference values below are DAPPER 1.7.1's benchmark numbers for its own
settings (``dapper/mods/Lorenz63/sakov2012.py`` and
``dapper/mods/Lorenz96/sakov2008.py``, the RMSE comments next to each method
there, as collected in our issue).  :func:`filters.settings.sakov2012` and
:func:`filters.settings.sakov2008` rebuild those settings.

* ``slow`` tests run the full 1000 observations (burn-in as in DAPPER) and
  assert the time-averaged analysis RMSE within 10% of the reference, except
  the perturbed-observation EnKF with N=10 on Lorenz-63, whose RMSE is noisy
  (DAPPER quotes 0.56 to 0.73), and which must stay below 0.8.
* The default tests run shorter windows (Lorenz-63: 600 observations with
  DAPPER's burn-in of 16 time units; Lorenz-96: 400 observations with a
  burn-in of 5 time units instead of 20, since 400 observations only span 20
  time units; the analysis error has settled well before 5) and assert
  within 25% of the reference, for two seeds.

Seed 1 with 1000 observations measured 2026-11 (for the record): L96 ETKF
0.185, EnKF 0.229, DEnKF 0.190, EnSRF 0.187, LETKF 0.226, EKF 0.230, UKF 0.176;
L63 ETKF 0.545, EnKF N=10 0.575, EnKF N=100 0.535.
"""

from __future__ import annotations

import numpy as np
import pytest

from filters import EKF, ETKF, LETKF, UKF, DEnKF, EnKF, EnSRF, assimilate
from filters.settings import sakov2008, sakov2012

#: DAPPER 1.7.1 reference analysis RMSE (time average after burn-in).
#: key: (setting, label) -> (filter factory, reference RMSE, or None for a bound-only case)
REFERENCE = {
    # Lorenz-63, mods/Lorenz63/sakov2012.py
    ("sakov2012", "ETKF N=10 infl=1.02 rot"): (lambda: ETKF(N=10, inflation=1.02, rotate=True), 0.59),
    ("sakov2012", "EnKF N=10 infl=1.04"): (lambda: EnKF(N=10, inflation=1.04), None),  # 0.56-0.73
    ("sakov2012", "EnKF N=100 infl=1.01"): (lambda: EnKF(N=100, inflation=1.01), 0.55),
    # Lorenz-96, mods/Lorenz96/sakov2008.py
    ("sakov2008", "ETKF N=28 infl=1.02 rot"): (lambda: ETKF(N=28, inflation=1.02, rotate=True), 0.18),
    ("sakov2008", "EnKF N=40 infl=1.06"): (lambda: EnKF(N=40, inflation=1.06), 0.22),
    ("sakov2008", "DEnKF N=40 infl=1.01"): (lambda: DEnKF(N=40, inflation=1.01), 0.18),
    ("sakov2008", "LETKF N=7 infl=1.04 rot loc_rad=4"):
        (lambda: LETKF(N=7, radius=4.0, inflation=1.04, rotate=True), 0.22),
    ("sakov2008", "EnSRF N=28 infl=1.02 rot"): (lambda: EnSRF(N=28, inflation=1.02, rotate=True), 0.18),
    ("sakov2008", "ExtKF infl=10"): (lambda: EKF(infl_rate=10.0), 0.24),
}
#: Bound for the noisy EnKF N=10 on Lorenz-63 (DAPPER: 0.56 to 0.73).
NOISY_ENKF_BOUND = 0.8
#: UKF on sakov2008 (no DAPPER reference): must beat this.
UKF_L96_BOUND = 0.3

# Tolerances of this file (declared once).
REL_TOL_FULL = 0.10  # slow, full-length runs
REL_TOL_SHORT = 0.25  # default, short runs
SEED_FULL = 1
SEEDS_SHORT = (1, 2)
N_OBS_FULL = 1000
N_OBS_SHORT = {"sakov2012": 600, "sakov2008": 400}
BURN_IN_SHORT = {"sakov2012": 16.0, "sakov2008": 5.0}


def short_setting(name: str):
    if name == "sakov2012":
        return sakov2012(n_obs=N_OBS_SHORT[name]).with_(burn_in=BURN_IN_SHORT[name])
    return sakov2008(n_obs=N_OBS_SHORT[name]).with_(burn_in=BURN_IN_SHORT[name])


def full_setting(name: str):
    return sakov2012(n_obs=N_OBS_FULL) if name == "sakov2012" else sakov2008(n_obs=N_OBS_FULL)


def rmse_a(make_filter, setting, seed) -> float:
    ds = assimilate(make_filter(), setting, seed=seed)
    value = float(ds.attrs["rmse_analysis_mean"])
    assert np.isfinite(value), "no cycle after burn-in"
    # The attribute is the time mean of the logged RMSE after burn-in.
    keep = ds.time.values > setting.burn_in
    np.testing.assert_allclose(value, ds.rmse_analysis.values[keep].mean(), rtol=1e-12)
    return value


def check(value: float, ref: float | None, rel_tol: float, label: str) -> None:
    if ref is None:
        assert value < NOISY_ENKF_BOUND, f"{label}: RMSE {value:.3f} >= {NOISY_ENKF_BOUND}"
    else:
        assert abs(value / ref - 1.0) <= rel_tol, (
            f"{label}: RMSE {value:.3f} vs DAPPER {ref} ({100 * (value / ref - 1):+.1f}%, "
            f"allowed ±{100 * rel_tol:.0f}%)")


CASES = [pytest.param(key, id=f"{key[0]}-{key[1]}") for key in REFERENCE]


@pytest.mark.parametrize("seed", SEEDS_SHORT)
@pytest.mark.parametrize("key", CASES)
def test_short_run_near_reference(key, seed):
    make_filter, ref = REFERENCE[key]
    value = rmse_a(make_filter, short_setting(key[0]), seed)
    check(value, ref, REL_TOL_SHORT, f"{key} seed {seed}")


@pytest.mark.parametrize("seed", SEEDS_SHORT)
def test_short_ukf_on_sakov2008(seed):
    value = rmse_a(UKF, short_setting("sakov2008"), seed)
    assert value < UKF_L96_BOUND


def test_filters_beat_the_observations():
    """Sanity scale for the RMSE: a filter must beat the observation noise (sqrt(R) = 1 on L96),
    and a filter without observations (an unobserved free run) must not."""
    s = short_setting("sakov2008")
    ds = assimilate(ETKF(N=20, inflation=1.02), s, seed=1)
    assert float(ds.attrs["rmse_analysis_mean"]) < 0.5
    free_run = assimilate(ETKF(N=20, inflation=1.02), s.with_(R=s.R.scaled(1e8)), seed=1)
    assert float(free_run.attrs["rmse_analysis_mean"]) > 2.0


@pytest.mark.slow
@pytest.mark.parametrize("key", CASES)
def test_full_run_reference(key):
    make_filter, ref = REFERENCE[key]
    value = rmse_a(make_filter, full_setting(key[0]), SEED_FULL)
    check(value, ref, REL_TOL_FULL, f"{key} seed {SEED_FULL}")


@pytest.mark.slow
def test_full_ukf_on_sakov2008():
    assert rmse_a(UKF, full_setting("sakov2008"), SEED_FULL) < UKF_L96_BOUND
