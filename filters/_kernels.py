"""Numba kernels of the ensemble core (private).

Every kernel takes only arrays and scalars, is compiled with ``cache=True`` and
sits behind a public, validating wrapper elsewhere in :mod:`filters`.  Each has
a plain-numpy twin in ``tests/twins.py`` and a test proving they agree.

Shapes: ``N`` members, ``n`` state, ``m`` observations, ``D`` coordinate dims.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__: list[str] = []  # private module: nothing is public


# --------------------------------------------------------------------------
# Models: RK4 integration of the Lorenz systems, for one state or an ensemble.
# --------------------------------------------------------------------------
@njit(cache=True)
def _l96_tendency(x, forcing, out):  # x (n,), out (n,)
    n = x.shape[0]
    for i in range(n):
        out[i] = (x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + forcing


@njit(cache=True)
def _l96_rk4(E, forcing, dt, nsteps):  # E (N, n) -> (N, n)
    N, n = E.shape
    out = np.empty_like(E)
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    tmp = np.empty(n)
    for j in range(N):
        x = E[j].copy()
        for _ in range(nsteps):
            _l96_tendency(x, forcing, k1)
            for i in range(n):
                tmp[i] = x[i] + 0.5 * dt * k1[i]
            _l96_tendency(tmp, forcing, k2)
            for i in range(n):
                tmp[i] = x[i] + 0.5 * dt * k2[i]
            _l96_tendency(tmp, forcing, k3)
            for i in range(n):
                tmp[i] = x[i] + dt * k3[i]
            _l96_tendency(tmp, forcing, k4)
            for i in range(n):
                x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        out[j] = x
    return out


@njit(cache=True)
def _l63_tendency(x, sigma, rho, beta, out):  # x (3,)
    out[0] = sigma * (x[1] - x[0])
    out[1] = x[0] * (rho - x[2]) - x[1]
    out[2] = x[0] * x[1] - beta * x[2]


@njit(cache=True)
def _l63_rk4(E, sigma, rho, beta, dt, nsteps):  # E (N, 3) -> (N, 3)
    N = E.shape[0]
    out = np.empty_like(E)
    k1 = np.empty(3)
    k2 = np.empty(3)
    k3 = np.empty(3)
    k4 = np.empty(3)
    tmp = np.empty(3)
    for j in range(N):
        x = E[j].copy()
        for _ in range(nsteps):
            _l63_tendency(x, sigma, rho, beta, k1)
            for i in range(3):
                tmp[i] = x[i] + 0.5 * dt * k1[i]
            _l63_tendency(tmp, sigma, rho, beta, k2)
            for i in range(3):
                tmp[i] = x[i] + 0.5 * dt * k2[i]
            _l63_tendency(tmp, sigma, rho, beta, k3)
            for i in range(3):
                tmp[i] = x[i] + dt * k3[i]
            _l63_tendency(tmp, sigma, rho, beta, k4)
            for i in range(3):
                x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        out[j] = x
    return out


# --------------------------------------------------------------------------
# Serial ensemble square-root filter (Whitaker & Hamill 2002; Potter scheme).
# The loop over observations is sequential by definition (each observation
# sees the ensemble updated by the previous ones), so it is not a prange.
# --------------------------------------------------------------------------
@njit(cache=True)
def _ensrf_serial(mu, A, Y, dy, order):
    """Assimilate whitened scalar observations one at a time.

    mu (n,), A (N, n) state anomalies, Y (N, m) whitened observation
    anomalies, dy (m,) whitened innovation, order (m,) processing order.
    Returns the analysis ensemble (N, n).  Inputs are not modified.
    """
    N, n = A.shape
    m = Y.shape[1]
    N1 = N - 1.0
    mu = mu.copy()
    A = A.copy()
    Y = Y.copy()
    dy = dy.copy()
    kx = np.empty(n)
    ky = np.empty(m)
    for jj in range(order.shape[0]):
        j = order[jj]
        yj = Y[:, j].copy()  # (N,)
        c = 0.0
        for i in range(N):
            c += yj[i] * yj[i]
        c = c / N1 + 1.0  # HPH^T + R, with R = 1 after whitening
        # Gains in state and observation space: A^T yj / (N1 c), Y^T yj / (N1 c)
        for k in range(n):
            s = 0.0
            for i in range(N):
                s += A[i, k] * yj[i]
            kx[k] = s / (N1 * c)
        for k in range(m):
            s = 0.0
            for i in range(N):
                s += Y[i, k] * yj[i]
            ky[k] = s / (N1 * c)
        d = dy[j]
        alpha = 1.0 / (1.0 + np.sqrt(1.0 / c))  # square-root factor (R = 1)
        for k in range(n):
            mu[k] += kx[k] * d
        for k in range(m):
            dy[k] -= ky[k] * d
        for i in range(N):
            a = alpha * yj[i]
            for k in range(n):
                A[i, k] -= a * kx[k]
            for k in range(m):
                Y[i, k] -= a * ky[k]
    out = np.empty((N, n))
    for i in range(N):
        for k in range(n):
            out[i, k] = mu[k] + A[i, k]
    return out


# --------------------------------------------------------------------------
# Localisation: Gaspari-Cohn taper and (periodic) distances.
# --------------------------------------------------------------------------
@njit(cache=True)
def _gaspari_cohn(r):
    """Gaspari & Cohn (1999) eq. 4.10 at scaled distance r = d / c (support 2c)."""
    if r <= 1.0:
        r2 = r * r
        r3 = r2 * r
        return 1.0 + r2 * (-r3 / 4.0 + r2 / 2.0) + r3 * (5.0 / 8.0) - r2 * (5.0 / 3.0)
    if r < 2.0:
        r2 = r * r
        r3 = r2 * r
        # The polynomial falls to 0 like (2 - r)^3: clip roundoff (about -3e-16
        # near r = 2) so that the coefficients stay in [0, 1].
        return max(0.0, r2 * (r3 / 12.0 - r2 / 2.0) + r3 * (5.0 / 8.0) + r2 * (5.0 / 3.0)
                   - r * 5.0 + 4.0 - (2.0 / 3.0) / r)
    return 0.0


@njit(cache=True)
def _distance(a, b, period):  # a (D,), b (D,), period (D,) (0 = not periodic)
    s = 0.0
    for k in range(a.shape[0]):
        d = abs(a[k] - b[k])
        if period[k] > 0.0:
            d = d % period[k]
            d = min(d, period[k] - d)
        s += d * d
    return np.sqrt(s)


@njit(cache=True)
def _taper_matrix(xcoords, ycoords, period, half_width):
    """Gaspari-Cohn coefficients (n, m) between state and observation sites."""
    n = xcoords.shape[0]
    m = ycoords.shape[0]
    out = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            out[i, j] = _gaspari_cohn(_distance(xcoords[i], ycoords[j], period) / half_width)
    return out


# --------------------------------------------------------------------------
# LETKF: one ETKF analysis per grid point, R-localised by the taper.
# The local domains are independent: prange over them.
# --------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _letkf(mu, A, Y, dy, taper):
    """Local ETKF analyses (Hunt et al. 2007) with R-localisation.

    mu (n,), A (N, n), Y (N, m) and dy (m,) whitened, taper (n, m) in [0, 1].
    Returns the analysis ensemble (N, n).
    """
    N, n = A.shape
    m = Y.shape[1]
    N1 = N - 1.0
    out = np.empty((N, n))
    for i in prange(n):
        cnt = 0
        for j in range(m):
            if taper[i, j] > 0.0:
                cnt += 1
        if cnt == 0:
            for r in range(N):
                out[r, i] = mu[i] + A[r, i]
            continue
        Yl = np.empty((N, cnt))
        dyl = np.empty(cnt)
        c = 0
        for j in range(m):
            t = taper[i, j]
            if t > 0.0:
                st = np.sqrt(t)
                for r in range(N):
                    Yl[r, c] = Y[r, j] * st
                dyl[c] = dy[j] * st
                c += 1
        C = Yl @ Yl.T  # (N, N)
        for r in range(N):
            C[r, r] += N1
        d, V = np.linalg.eigh(C)
        # Pw = V d^-1 V^T, T = sqrt(N1) V d^-1/2 V^T, w = Pw Yl dyl
        Ydy = Yl @ dyl  # (N,)
        Vt_Ydy = V.T @ Ydy
        for k in range(N):
            Vt_Ydy[k] /= d[k]
        w = V @ Vt_Ydy  # (N,)
        Vs = V.copy()
        for k in range(N):
            Vs[:, k] *= 1.0 / np.sqrt(d[k])
        T = (Vs @ V.T) * np.sqrt(N1)  # (N, N), symmetric
        a = A[:, i].copy()  # (N,)
        wa = 0.0
        for r in range(N):
            wa += w[r] * a[r]
        Ta = T @ a
        for r in range(N):
            out[r, i] = mu[i] + wa + Ta[r]
    return out


# --------------------------------------------------------------------------
# Tangent-linear RK4 (the EKF forecast): the state after nsteps and the
# product M of the exact Jacobians of the steps, for one state.
# kind 0: Lorenz-63 (p = sigma, rho, beta); kind 1: Lorenz-96 (p[0] = forcing).
# --------------------------------------------------------------------------
@njit(cache=True)
def _lorenz_tendency(kind, x, p, out):
    if kind == 0:
        _l63_tendency(x, p[0], p[1], p[2], out)
    else:
        _l96_tendency(x, p[0], out)


@njit(cache=True)
def _lorenz_jacobian(kind, x, p, J):  # J (n, n), overwritten
    n = x.shape[0]
    J[:, :] = 0.0
    if kind == 0:
        J[0, 0] = -p[0]
        J[0, 1] = p[0]
        J[1, 0] = p[1] - x[2]
        J[1, 1] = -1.0
        J[1, 2] = -x[0]
        J[2, 0] = x[1]
        J[2, 1] = x[0]
        J[2, 2] = -p[2]
    else:
        for i in range(n):
            im1 = (i - 1) % n
            J[i, i] = -1.0
            J[i, (i - 2) % n] += -x[im1]
            J[i, (i + 1) % n] += x[im1]
            J[i, im1] += x[(i + 1) % n] - x[(i - 2) % n]


# The RK4 work arrays and loop of _lorenz_rk4_tlm repeat those of _l96_rk4 on purpose: each
# kernel is one flat, compiled loop (Numba inlines no shared Python helper as cheaply), and each
# has its numpy twin that the tests hold it to (tests/test_kernels.py).
@njit(cache=True)
def _lorenz_rk4_tlm(kind, x, p, dt, nsteps):
    """x (n,) -> (x after nsteps RK4 steps, M (n, n) = J_nsteps ... J_1)."""
    n = x.shape[0]
    x = x.copy()
    eye = np.eye(n)
    M = np.eye(n)
    J = np.empty((n, n))
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    for _ in range(nsteps):
        _lorenz_tendency(kind, x, p, k1)
        _lorenz_jacobian(kind, x, p, J)
        d1 = J.copy()
        tmp = x + 0.5 * dt * k1
        _lorenz_tendency(kind, tmp, p, k2)
        _lorenz_jacobian(kind, tmp, p, J)
        d2 = J @ (eye + 0.5 * dt * d1)
        tmp = x + 0.5 * dt * k2
        _lorenz_tendency(kind, tmp, p, k3)
        _lorenz_jacobian(kind, tmp, p, J)
        d3 = J @ (eye + 0.5 * dt * d2)
        tmp = x + dt * k3
        _lorenz_tendency(kind, tmp, p, k4)
        _lorenz_jacobian(kind, tmp, p, J)
        d4 = J @ (eye + dt * d3)
        step_jac = eye + dt / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4)
        for i in range(n):
            x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        M = step_jac @ M
    return x, M
