"""The ETKF transform keeps the precision of its members when the mean dwarfs the spread.

``etkf_analysis`` (and its compiled kernel) forms ``mu + (w + T) (E - mu)``: the
transform only ever multiplies anomalies.  Applying the same transform to the
members, ``(w + T + c 1^T / N) E``, is equal in exact arithmetic (the rows of
``w + T`` sum to one) and would save two passes over E, but in floating point the
large entries of ``w`` (an innovation of many standard deviations) multiply the
mean: 16,691 ulp of error in this test's case of mean 1e6, spread 1e-3 and
innovations of 1e4 standard deviations (issue 12, 2026-12-04).  This test fails for
that form.
"""

from __future__ import annotations

import numpy as np
import pytest

from filters._compiled import _analysis
from filters.covariance import as_covariance
from filters.ensemble import etkf_analysis

#: Largest error allowed, in units of the spacing of the largest reference member.
ULPS = 16.0


def _reference(E, HE, y, sd):
    """The ETKF analysis in long double: anomaly form, inverse by Newton refinement."""
    ld = np.longdouble
    N = E.shape[0]
    El = E.astype(ld)
    mu = El.mean(axis=0)
    A = El - mu
    HEl = HE.astype(ld)
    ym = HEl.mean(axis=0)
    Y = (HEl - ym) / sd.astype(ld)
    dy = (y.astype(ld) - ym) / sd.astype(ld)
    C = Y @ Y.T + (N - 1) * np.eye(N, dtype=ld)
    Cinv = np.linalg.inv(C.astype(float)).astype(ld)
    eye = np.eye(N, dtype=ld)
    for _ in range(3):  # Newton-Schulz: the inverse to long-double precision
        Cinv = Cinv @ (2 * eye - C @ Cinv)
    w = Cinv @ (Y @ dy)
    d, V = np.linalg.eigh(C.astype(float))  # T multiplies anomalies only: float64 suffices
    Vl = V.astype(ld)
    T = (Vl * (np.sqrt(ld(N - 1)) / np.sqrt(d.astype(ld)))) @ Vl.T
    return mu + (w[None, :] + T) @ A


@pytest.mark.parametrize("mean, spread, innovation", [
    (3.0, 1.0, 1.0), (1e6, 1e-3, 1.0), (1e6, 1e-3, 1e4), (1e8, 1.0, 30.0)])
@pytest.mark.parametrize("N", [30, 80])  # both sides of the compiled path's SMALL_N
def test_etkf_members_within_a_few_ulps_of_a_long_double_reference(mean, spread, innovation, N):
    rng = np.random.default_rng(1)
    n, m = 50, 20
    E = mean + spread * rng.standard_normal((N, n))
    HE = E[:, :m].copy()
    y = HE.mean(axis=0) + innovation * spread * rng.standard_normal(m)
    sd = np.full(m, spread)
    ref = _reference(E, HE, y, sd)
    ulp = np.spacing(float(np.abs(ref).max()))
    generic = etkf_analysis(E, HE, y, as_covariance(spread ** 2, m))
    compiled = _analysis._etkf(E, HE, y, sd)
    for name, out in (("etkf_analysis", generic), ("compiled _etkf", compiled)):
        err = float(np.abs(out - ref).max()) / ulp
        assert err <= ULPS, f"{name}: {err:.1f} ulp from the long-double reference"
