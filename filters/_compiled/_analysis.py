"""The ensemble analyses, inflations and rotation as Numba kernels (private).

Each kernel is the numpy function of :mod:`filters.ensemble` (or
:mod:`filters.inflation`) it is named after, operation for operation: the same
BLAS/LAPACK calls (``dgemm``, ``dgemv``, ``dsyrk``, ``dsyevd``, ``dgesv``,
``dpotrf``, ``dgeqrf``) on the same operands, and the elementwise loops and
axis-0 sums in numpy's order, so that its result is bitwise the numpy one.
Those numpy functions are the twins (tests/test_compiled.py holds each kernel
to them).  Observations are whitened by the standard deviations of a diagonal R.
One exception: for N <= ``_eigen.SMALL_N`` the ETKF's eigendecomposition is
``_eigen._eigh_small``, not LAPACK's ``dsyevd`` (about 40% less time at
N = 28), so its result equals ``etkf_analysis`` to rounding, not bitwise
(tests/test_compiled_speed.py holds whole runs to 1e-12 relative).  Likewise the
LETKF's local analyses for 2 <= N <= ``SMALL_N`` are ``_letkf._letkf_small`` (flat
loops and ``_eigh_small`` per point instead of LAPACK and BLAS calls; about 3x
less time at N = 7), equal to ``letkf_analysis`` to rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import _kernels
from ._eigen import SMALL_N, _eigh_small
from ._lapack import _cholesky, _syrk
from ._letkf import _letkf_small

__all__: list[str] = []  # private module

_JIT = dict(cache=True, error_model="numpy")

#: As ``filters.ensemble._equations._ETKF_BLOCK_BYTES`` (the same column blocks).
_ETKF_BLOCK_BYTES = 1 << 21


@njit(**_JIT)
def _mean0(E):
    """``E.mean(axis=0)``: numpy sums an outer axis row by row, then divides."""
    N, n = E.shape
    s = np.zeros(n)
    for r in range(N):
        for i in range(n):
            s[i] += E[r, i]
    return s / N


@njit(**_JIT)
def _std0(E):
    """``E.std(axis=0, ddof=1)``."""
    N, n = E.shape
    mu = _mean0(E)
    s = np.zeros(n)
    for r in range(N):
        for i in range(n):
            d = E[r, i] - mu[i]
            s[i] += d * d
    return np.sqrt(s / (N - 1))


@njit(**_JIT)
def _anomalies(E, mu):
    """``E - mu`` (a new C-contiguous array)."""
    N, n = E.shape
    A = np.empty((N, n))
    for r in range(N):
        for i in range(n):
            A[r, i] = E[r, i] - mu[i]
    return A


@njit(**_JIT)
def _whitened_obs(HE, y, sd):
    """``_whitened_obs`` of the numpy path for a diagonal R (``sd = sqrt(R.diag)``)."""
    ym = _mean0(HE)
    Y = _anomalies(HE, ym)
    N, m = Y.shape
    for r in range(N):
        for j in range(m):
            Y[r, j] /= sd[j]
    dy = (y - ym) / sd
    return Y, dy


@njit(**_JIT)
def _ens_space_gain(Y):
    """``(Y Y^T + (N-1) I)^{-1}`` by Cholesky, as ``_equations._ens_space_gain``."""
    N = Y.shape[0]
    C = _syrk(Y, False)
    for i in range(N):
        C[i, i] += N - 1.0
    L = _cholesky(C)
    Linv = np.linalg.solve(L, np.eye(N))
    return _syrk(np.ascontiguousarray(Linv), True)


@njit(**_JIT)
def _etkf(E, HE, y, sd):
    """``etkf_analysis`` (symmetric square root, column blocks of E)."""
    N, n = E.shape
    Y, dy = _whitened_obs(HE, y, sd)
    C = _syrk(Y, False)
    for i in range(N):
        C[i, i] += N - 1.0
    if N <= SMALL_N:  # LAPACK's per-call overhead dominates at this size (see _eigen)
        d, V = _eigh_small(C)
    else:
        d, V = np.linalg.eigh(C)
        V = np.ascontiguousarray(V)  # numpy's eigh returns C order, Numba's F order
    w = np.dot(V, np.dot(V.T, np.dot(Y, dy)) / d)
    s = np.sqrt(N - 1.0) / np.sqrt(d)
    Vs = np.empty((N, N))
    for r in range(N):
        for c in range(N):
            Vs[r, c] = V[r, c] * s[c]
    T = np.dot(Vs, V.T)
    for r in range(N):
        for c in range(N):
            T[r, c] += w[c]
    out = np.empty((N, n))
    step = max(256, _ETKF_BLOCK_BYTES // (8 * N))
    for j in range(0, n, step):
        j1 = min(n, j + step)
        Eb = E[:, j:j1]
        mub = _mean0(Eb)
        ob = np.dot(T, _anomalies(Eb, mub))
        for r in range(N):
            for i in range(j1 - j):
                out[r, j + i] = ob[r, i] + mub[i]
    return out


@njit(**_JIT)
def _enkf(E, HE, y, sd, D):
    """``enkf_analysis`` with the white perturbations ``D`` (N, m) drawn by the caller."""
    N, m = HE.shape
    mu = _mean0(E)
    A = _anomalies(E, mu)
    Y, _ = _whitened_obs(HE, y, sd)
    D = _anomalies(D, _mean0(D))
    innov = np.empty((N, m))
    for r in range(N):
        for j in range(m):
            innov[r, j] = (y[j] - HE[r, j]) / sd[j] - D[r, j]
    G = _ens_space_gain(Y)
    return E + np.dot(np.dot(np.dot(innov, Y.T), G), A)


@njit(**_JIT)
def _denkf(E, HE, y, sd):
    """``denkf_analysis``: the Kalman mean update, half the gain on the anomalies."""
    N = E.shape[0]
    mu = _mean0(E)
    A = _anomalies(E, mu)
    Y, dy = _whitened_obs(HE, y, sd)
    G = _ens_space_gain(Y)
    YtG = np.dot(Y.T, G)
    dmu = np.dot(np.dot(dy, YtG), A)
    T = -0.5 * np.dot(Y, YtG)
    for i in range(N):
        T[i, i] += 1.0
    return (mu + dmu) + np.dot(T, A)


@njit(**_JIT)
def _ensrf(E, HE, y, sd, order):
    """``ensrf_analysis`` (the serial kernel of :mod:`filters._kernels`)."""
    mu = _mean0(E)
    A = _anomalies(E, mu)
    Y, dy = _whitened_obs(HE, y, sd)
    return _kernels._ensrf_serial(mu, A, Y, dy, order)


@njit(**_JIT)
def _letkf(E, HE, y, sd, taper):
    """``letkf_analysis`` (the local-analysis kernel of :mod:`filters._kernels`)."""
    mu = _mean0(E)
    A = _anomalies(E, mu)
    Y, dy = _whitened_obs(HE, y, sd)
    if 2 <= E.shape[0] <= SMALL_N:  # per-point LAPACK/BLAS overhead dominates (see _letkf)
        return _letkf_small(mu, A, Y, dy, np.ascontiguousarray(taper))
    return _kernels._letkf(mu, A, Y, dy, np.ascontiguousarray(taper))


# ----------------------------------------------------------------------------
# Inflation (filters.inflation) and the random rotation (random_rotation).
# ----------------------------------------------------------------------------
#: Inflation kinds of the encoded sequence (filters._compiled._runner encodes them).
MULTIPLICATIVE, ADDITIVE, RTPP, RTPS = 0, 1, 2, 3


@njit(**_JIT)
def _inflate(kind, par, Ef, Ea, Z):
    """One inflation object's ``apply`` (Z: its white draws (N, n) when additive)."""
    N, n = Ea.shape
    if kind == MULTIPLICATIVE:
        if par == 1.0:
            return Ea
        mu = _mean0(Ea)
        out = np.empty((N, n))
        for r in range(N):
            for i in range(n):
                out[r, i] = mu[i] + par * (Ea[r, i] - mu[i])
        return out
    if kind == ADDITIVE:
        if par == 0.0:
            return Ea
        sq = np.sqrt(par)
        Zs = np.empty((N, n))
        for r in range(N):
            for i in range(n):
                Zs[r, i] = Z[r, i] * sq
        zm = _mean0(Zs)
        out = np.empty((N, n))
        for r in range(N):
            for i in range(n):
                out[r, i] = (Ea[r, i] + Zs[r, i]) - zm[i]
        return out
    mu = _mean0(Ea)
    out = np.empty((N, n))
    if kind == RTPP:
        muf = _mean0(Ef)
        for r in range(N):
            for i in range(n):
                a = (1.0 - par) * (Ea[r, i] - mu[i]) + par * (Ef[r, i] - muf[i])
                out[r, i] = mu[i] + a
        return out
    sf = _std0(Ef)
    sa = _std0(Ea)
    fac = np.ones(n)
    for i in range(n):
        if sa[i] > 0:
            fac[i] = 1.0 + par * (sf[i] - sa[i]) / sa[i]
    for r in range(N):
        for i in range(n):
            out[r, i] = mu[i] + (Ea[r, i] - mu[i]) * fac[i]
    return out


@njit(**_JIT)
def _rotate(E, basis, Z):
    """``mu + random_rotation(N, rng) @ (E - mu)`` with the rotation's draws Z (N-1, N-1)."""
    N = E.shape[0]
    Qr, Rr = np.linalg.qr(Z)
    Qr = np.ascontiguousarray(Qr)  # as numpy's (C order)
    B = np.eye(N)
    for r in range(N - 1):
        for c in range(N - 1):
            B[r + 1, c + 1] = Qr[r, c] * np.sign(Rr[c, c])
    rot = np.dot(np.dot(basis, B), basis.T)
    mu = _mean0(E)
    return mu + np.dot(rot, _anomalies(E, mu))
