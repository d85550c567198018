"""A block of cycles in one Numba call: forecast, analysis, inflation, rotation, log (private).

:func:`_run_block` is the loop of ``filters.assimilate._cycle`` for the
ensemble filters, on the models and observation operators that have kernels:
every cycle forecasts, checks divergence, analyses the present observations,
inflates, rotates, checks again and writes the cycle's diagnostics into the
preallocated :class:`~filters.cycling.CycleLog` arrays.  All randomness comes
pre-drawn from the run's numpy Generator (``normals``, ``perms``), consumed in
the order in which the numpy path draws it.  Its numpy twin is that loop itself
(tests/test_compiled.py runs both).

Encodings (``filters._compiled._runner`` builds them): models 0 Lorenz-63
(``mpar`` = sigma, rho, beta), 1 Lorenz-96 (``mpar[0]`` = forcing), 2 linear
(``M``); process noise 0 none, 1 diagonal (``q_sd``), 2 full (``q_chol``);
observations 0 identity, 1 subset (``idx``), 2 linear (``H``); filters
0 ETKF, 1 EnKF, 2 DEnKF, 3 EnSRF, 4 LETKF.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import _kernels
from ._analysis import _denkf, _enkf, _ensrf, _etkf, _inflate, _letkf, _mean0, _rotate, _std0

__all__: list[str] = []  # private module

_JIT = dict(cache=True, error_model="numpy")

ETKF, ENKF, DENKF, ENSRF, LETKF = 0, 1, 2, 3, 4
#: Status codes of a block (``status[0]``).
OK, FORECAST_DIVERGED, ANALYSIS_DIVERGED = 0, 1, 2


@njit(**_JIT)
def _model_step(kind, E, mpar, M, dt, nsteps):
    """``model.integrate(E, t, dt, nsteps)`` (the models are autonomous)."""
    if kind == 0:
        return _kernels._l63_rk4(E, mpar[0], mpar[1], mpar[2], dt, nsteps)
    if kind == 1:
        return _kernels._l96_rk4(E, mpar[0], dt, nsteps)
    for _ in range(nsteps):
        E = np.dot(E, M.T)
    return E


@njit(**_JIT)
def _forecast(E, mkind, mpar, M, dt, nsteps, q_kind, q_sd, q_chol, normals, cur):
    """The ensemble forecast; with noise, ``step + sqrt(dt) Q^{1/2} z`` per step."""
    if q_kind == 0:
        return _model_step(mkind, E, mpar, M, dt, nsteps), cur
    N, n = E.shape
    sq = np.sqrt(dt)
    for _ in range(nsteps):
        E = _model_step(mkind, E, mpar, M, dt, 1)
        Z = normals[cur:cur + N * n].reshape((N, n))
        cur += N * n
        if q_kind == 1:
            W = np.empty((N, n))
            for r in range(N):
                for i in range(n):
                    W[r, i] = Z[r, i] * q_sd[i]
        else:
            W = np.dot(Z, q_chol.T)
        E = E + sq * W
    return E, cur


@njit(**_JIT)
def _observe(kind, X, idx, H):
    """``obs(X)`` for X (N, n)."""
    if kind == 0:
        return X
    if kind == 1:
        out = np.empty((X.shape[0], idx.shape[0]))
        for r in range(X.shape[0]):
            for j in range(idx.shape[0]):
                out[r, j] = X[r, idx[j]]
        return out
    return np.dot(X, H.T)


@njit(**_JIT)
def _observe_mean(kind, x, idx, H):
    """``obs(x)`` for one state x (n,)."""
    if kind == 0:
        return x.copy()
    if kind == 1:
        return x[idx]
    return np.dot(x, H.T)


@njit(**_JIT)
def _analyse(filt, Ef, HE, y, sd, present, taper, normals, cur, perms, pcur,
             inf_kind, inf_par, rotate, basis):
    """``_EnsembleFilter.analysis`` on the present observations: update, inflate, rotate."""
    N, n = Ef.shape
    m = present.shape[0]
    if filt == ETKF:
        Ea = _etkf(Ef, HE, y, sd)
    elif filt == ENKF:
        D = normals[cur:cur + N * m].reshape((N, m))
        cur += N * m
        Ea = _enkf(Ef, HE, y, sd, D)
    elif filt == DENKF:
        Ea = _denkf(Ef, HE, y, sd)
    elif filt == ENSRF:
        if perms.shape[0] == 0:  # order "given" (a random order draws m per analysis)
            order = np.arange(m)
        else:
            order = perms[pcur:pcur + m].copy()
            pcur += m
        Ea = _ensrf(Ef, HE, y, sd, order)
    else:
        Ea = _letkf(Ef, HE, y, sd, taper[:, present])
    for q in range(inf_kind.shape[0]):
        Z = normals[cur:cur]  .reshape((0, n))
        if inf_kind[q] == 1 and inf_par[q] != 0.0:
            Z = normals[cur:cur + N * n].reshape((N, n))
            cur += N * n
        Ea = _inflate(inf_kind[q], inf_par[q], Ef, Ea, Z)
    if rotate:
        k = (N - 1) * (N - 1)
        Ea = _rotate(Ea, basis, normals[cur:cur + k].reshape((N - 1, N - 1)))
        cur += k
    return Ea, cur, pcur


@njit(**_JIT)
def _diverged(x, threshold):
    """:func:`filters.cycling.diverged`."""
    big = 0.0
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return True
        big = max(big, abs(x[i]))
    return not big < threshold


@njit(**_JIT)
def _pairwise_leaf(a, lo, n):
    """numpy's pairwise summation of at most 128 values (8 accumulators)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r = a[lo:lo + 8].copy()
    i = 8
    while i < n - (n % 8):
        for j in range(8):
            r[j] += a[lo + i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(**_JIT)
def _pairwise_sum(a, lo, n):
    """numpy's pairwise summation of ``a[lo:lo + n]``: halves (rounded to 8) down to 128.

    numpy's recursion ``pw(left) + pw(right)`` evaluated with explicit stacks
    (Numba cannot cache a recursive function): a work item is a range to sum,
    or (n = -1) "add the top two values".
    """
    if n <= 128:
        return _pairwise_leaf(a, lo, n)
    w_lo = np.empty(256, np.int64)
    w_n = np.empty(256, np.int64)
    vals = np.empty(128)
    w_lo[0], w_n[0], top, nv = lo, n, 0, 0
    while top >= 0:
        c_lo, c_n = w_lo[top], w_n[top]
        top -= 1
        if c_n < 0:
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        elif c_n <= 128:
            vals[nv] = _pairwise_leaf(a, c_lo, c_n)
            nv += 1
        else:
            n2 = c_n // 2
            n2 -= n2 % 8
            # Pushed in reverse: the left half is summed first, then the right, then added.
            w_lo[top + 1], w_n[top + 1] = 0, -1
            w_lo[top + 2], w_n[top + 2] = c_lo + n2, c_n - n2
            w_lo[top + 3], w_n[top + 3] = c_lo, n2
            top += 3
    return vals[0]


@njit(**_JIT)
def _scores(E, truth, rank_out):
    """Truth ranks into ``rank_out`` and ``crps_ensemble(E, truth).mean()``.

    Each column is sorted by counting (a member's place is the number of
    smaller members, ties in member order): branch-free loops over the N
    members, which for N of a few tens cost less than a sort's allocation and
    branches, and give numpy's sorted values (equal values are equal; only the
    sign of a zero could be placed differently, which no sum below can see).
    The CRPS sums then run in numpy's order.
    """
    N, n = E.shape
    crps = np.empty(n)
    col = np.empty(N)
    x = np.empty(N)
    for i in range(n):
        t = truth[i]
        cnt = 0
        for r in range(N):
            col[r] = E[r, i]
            cnt += col[r] < t
        rank_out[i] = cnt
        for r in range(N):
            v = col[r]
            pos = 0
            for s in range(N):
                pos += col[s] < v
            for s in range(r):
                pos += col[s] == v
            x[pos] = v
        t1 = 0.0
        t2 = 0.0
        for r in range(N):
            t1 += abs(x[r] - t)
            t2 += ((2.0 * (r + 1) - N) - 1.0) * x[r]
        crps[i] = t1 / N - t2 / (N * N)
    return _pairwise_sum(crps, 0, n) / n


@njit(**_JIT)
def _run_block(E, k0, k1, ys, truth, model, mpar, M, dt, nsteps, q_kind, q_sd, q_chol,
               obs_kind, idx, H, r_sd, filt, taper, rotate, basis, inf_kind, inf_par,
               normals, perms, threshold, mf, ma, sf, sa, innov, used, rank, crps, ens,
               ens_base, status):
    """Cycles ``k0 .. k1-1`` from members E; returns the last analysis members.

    ``status`` (int64, 2): the outcome code and the number of finished cycles,
    kept current, so that an exception of the linear algebra leaves the count
    of the cycles whose diagnostics are written.
    """
    cur = 0
    pcur = 0
    m_all = ys.shape[1]
    for k in range(k0, k1):
        Ef, cur = _forecast(E, model, mpar, M, dt, nsteps, q_kind, q_sd, q_chol, normals, cur)
        mu_f = _mean0(Ef)
        if _diverged(mu_f, threshold):
            status[0] = FORECAST_DIVERGED
            return E
        yk = ys[k]
        present = np.flatnonzero(~np.isnan(yk))
        if present.shape[0] == 0:
            Ea = Ef
        else:
            HE = _observe(obs_kind, Ef, idx, H)
            if present.shape[0] < m_all:
                HE = HE[:, present]
            Ea, cur, pcur = _analyse(filt, Ef, np.ascontiguousarray(HE), yk[present],
                                     r_sd[present], present, taper, normals, cur, perms, pcur,
                                     inf_kind, inf_par, rotate, basis)
        mu_a = _mean0(Ea)
        if _diverged(mu_a, threshold):
            status[0] = ANALYSIS_DIVERGED
            return E
        mf[k] = mu_f
        ma[k] = mu_a
        sf[k] = _std0(Ef)
        sa[k] = _std0(Ea)
        innov[k] = yk - _observe_mean(obs_kind, mu_f, idx, H)
        used[k] = present.shape[0]
        if crps.shape[0] > 0:
            crps[k] = _scores(Ea, truth[k], rank[k])
        if ens.shape[0] > 0:
            ens[k - ens_base] = Ea
        E = Ea
        status[1] = k + 1
    return E
