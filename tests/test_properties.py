"""Bad and extreme input for the ensemble filters (issue 12, part 4), on both cycle paths.

Every generated case ends in one of three ways: a ValueError naming the bad
parameter, a DivergenceError whose ``dataset`` keeps every finished cycle (all
finite), or a run whose every number is finite and whose every analysis
covariance is symmetric positive semi-definite.  Never a silent NaN.

``test_bad_input_quick`` runs a few hundred cases (CI); the ``slow``-marked
``test_bad_input_full`` runs 10,000 per filter (``pytest -m slow``).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters import DEnKF, DivergenceError, EnKF, EnSRF, ETKF, LETKF, assimilate
from filters.covariance import as_covariance
from filters.models import LinearGaussian
from filters.settings import Simulation, linear_gaussian, sakov2012

FILTERS = {"ETKF": ETKF, "EnKF": EnKF, "DEnKF": DEnKF, "EnSRF": EnSRF, "LETKF": LETKF}


class NaNAfter(LinearGaussian):
    """A linear model whose step returns NaN from its ``bad``-th call on (a sick model)."""

    def __init__(self, M, bad: int):
        super().__init__(M)
        self.bad, self.calls = bad, 0

    def step(self, x, t, dt):
        self.calls += 1
        out = super().step(x, t, dt)
        return out * np.nan if self.calls >= self.bad else out


@st.composite
def cases(draw):
    """A filter's size, a setting and a corruption of its observations or R."""
    kind = draw(st.sampled_from(["nan", "inf", "huge", "R", "N", "nanmodel", "l63"]))
    n = draw(st.integers(2, 5))
    N = draw(st.sampled_from([1, 2, 3, 5, 11 * n + 1]))
    T = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    k = draw(st.integers(0, T - 1))
    j = draw(st.integers(0, n - 1))
    scale = draw(st.sampled_from([1.0, 1e-150, 1e150, 1e300]))
    rmat = draw(st.sampled_from(["singular", "indefinite", "nonsym", "ok"]))
    return dict(kind=kind, n=n, N=N, T=T, seed=seed, k=k, j=j, scale=scale, rmat=rmat)


def _bad_R(kind: str, n: int):
    R = np.eye(n)
    if kind == "singular":
        R[:] = 1.0
    elif kind == "indefinite":
        R[0, 0] = -1.0
    elif kind == "nonsym":
        R[0, 1] = 0.5
    return R


def build(case):
    """(setting, simulation, expected ValueError pattern or None) of a case."""
    n, T = case["n"], case["T"]
    setting = linear_gaussian(n=n, n_obs=T, seed=case["seed"])
    if case["kind"] == "l63":
        setting = sakov2012(n_obs=T)
        n = 3
    sim = setting.simulate(case["seed"])
    ys = sim.observations.copy()
    expect = None
    if case["kind"] == "nan":
        ys[case["k"], case["j"] % n] = np.nan
    elif case["kind"] == "inf":
        ys[case["k"], case["j"] % n] = np.inf
        expect = "simulation.observations"
    elif case["kind"] in ("huge", "l63"):
        ys[case["k"]] *= case["scale"]
    elif case["kind"] == "R":
        setting = setting.with_(R=as_covariance(case["scale"], n, "R"))  # bad R: see check()
    elif case["kind"] == "nanmodel":
        setting = setting.with_(model=NaNAfter(setting.model.M, bad=case["k"] + 1))
    sim = Simulation(sim.times, sim.truth, ys, sim.initial_truth)
    return setting, sim, expect


def check(name: str, case: dict, compiled) -> None:
    if case["kind"] == "R" and case["rmat"] != "ok":
        # A bad matrix is refused where a user hands it over: the setting's R.
        setting = linear_gaussian(n=case["n"], n_obs=case["T"], seed=case["seed"])
        with pytest.raises(ValueError, match="R must be"):
            setting.with_(R=_bad_R(case["rmat"], case["n"]) * case["scale"])
        return
    setting, sim, expect = build(case)
    kw = dict(N=case["N"])
    if name == "LETKF":
        kw["radius"] = 2.0
    flt = FILTERS[name](inflation=1.02, **kw)
    if case["N"] < 2:
        expect = "N \\(ensemble size\\)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow/invalid warnings on the way to a divergence
        try:
            ds = assimilate(flt, setting, simulation=sim, seed=case["seed"], store_cov=True,
                            compiled=compiled)
        except ValueError as exc:
            assert expect is not None, f"unexpected ValueError: {exc}"
            assert re.search(expect, str(exc)), str(exc)
            return
        except DivergenceError as exc:
            assert expect is None, f"expected a ValueError ({expect}), got {exc}"
            kept = exc.dataset
            assert kept.sizes["time"] == exc.cycle
            for v in ("analysis_mean", "forecast_mean", "analysis_spread"):
                assert np.isfinite(kept[v].values).all(), v
            return
    assert expect is None, f"expected a ValueError ({expect})"
    for v in ("analysis_mean", "forecast_mean", "analysis_spread", "forecast_spread"):
        assert np.isfinite(ds[v].values).all(), f"silent non-finite {v}"
    cov = ds["analysis_cov"].values
    assert np.isfinite(cov).all()
    np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))  # A^T A / (N-1): exactly symmetric
    for P in cov:
        w = np.linalg.eigvalsh(P)
        assert w.min() >= -1e-10 * max(1.0, abs(w).max()), w


QUICK = settings(max_examples=100, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "generic"])
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_bad_input_quick(name, compiled):
    @QUICK
    @given(case=cases())
    def run(case):
        check(name, case, "auto" if compiled else False)

    run()


FULL = settings(max_examples=10_000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FILTERS))
def test_bad_input_full(name):
    @FULL
    @given(case=cases(), compiled=st.sampled_from(["auto", False]))
    def run(case, compiled):
        check(name, case, compiled)

    run()
