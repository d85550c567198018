"""Plain-numpy twins of the Numba kernels in :mod:`filters._kernels`.

Each twin is written from the textbook equations, not translated from the
kernel: vectorised over members and sites where that is natural, with the
serial EnSRF as the Whitaker & Hamill (2002) loop on an augmented state and
the LETKF as a loop over grid points calling a small numpy ETKF.
``tests/test_kernels.py`` proves each kernel equals its twin.

Shapes: ``N`` members, ``n`` state, ``m`` observations, ``D`` coordinate dims.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------
def l96_tendency(X: np.ndarray, forcing: float) -> np.ndarray:
    """Lorenz (1996): ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` on a ring; X (..., n)."""
    xp1 = np.roll(X, -1, axis=-1)  # x_{i+1}
    xm1 = np.roll(X, 1, axis=-1)  # x_{i-1}
    xm2 = np.roll(X, 2, axis=-1)  # x_{i-2}
    return (xp1 - xm2) * xm1 - X + forcing


def l63_tendency(X: np.ndarray, sigma: float, rho: float, beta: float) -> np.ndarray:
    """Lorenz (1963) right-hand side for X (..., 3)."""
    x, y, z = X[..., 0], X[..., 1], X[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def rk4(f, X: np.ndarray, dt: float, nsteps: int) -> np.ndarray:
    """Classical Runge-Kutta 4, ``nsteps`` steps of ``dt``, for every row of X at once."""
    X = np.array(X, dtype=float)
    for _ in range(nsteps):
        k1 = f(X)
        k2 = f(X + dt / 2 * k1)
        k3 = f(X + dt / 2 * k2)
        k4 = f(X + dt * k3)
        X = X + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return X


def l96_rk4(E: np.ndarray, forcing: float, dt: float, nsteps: int) -> np.ndarray:
    """Twin of ``_l96_rk4``: E (N, n) -> (N, n)."""
    return rk4(lambda X: l96_tendency(X, forcing), E, dt, nsteps)


def l63_rk4(E: np.ndarray, sigma: float, rho: float, beta: float, dt: float,
            nsteps: int) -> np.ndarray:
    """Twin of ``_l63_rk4``: E (N, 3) -> (N, 3)."""
    return rk4(lambda X: l63_tendency(X, sigma, rho, beta), E, dt, nsteps)


# ----------------------------------------------------------------------------
# Serial EnSRF (Whitaker & Hamill 2002, eqs. 2-13)
# ----------------------------------------------------------------------------
def ensrf_serial(mu, A, Y, dy, order) -> np.ndarray:
    """Twin of ``_ensrf_serial``, whitened scalar observations one at a time.

    The observation priors are carried as extra state components (the
    augmented state ``z = [x, h(x)]``), so every scalar update is the same
    textbook step on ``z``: with ``h`` the observed component's anomalies,
    ``K = cov(z, h) / (var(h) + 1)``, the mean moves by ``K (y - mean h)``
    and the anomalies by ``- alpha K h`` with
    ``alpha = 1 / (1 + sqrt(1 / (var(h) + 1)))`` (R = 1 after whitening).
    In whitened, shifted coordinates the observations are 0 and the observed
    mean is ``-dy``.
    """
    N, n = A.shape
    Z = np.hstack([A, Y])  # (N, n + m) anomalies of the augmented state
    zbar = np.concatenate([mu, -np.asarray(dy, dtype=float)])  # (n + m,)
    for j in order:
        h = Z[:, n + j].copy()  # (N,) anomalies of observation j
        var_h = h @ h / (N - 1)
        K = Z.T @ h / (N - 1) / (var_h + 1.0)  # (n + m,)
        zbar = zbar + K * (0.0 - zbar[n + j])
        alpha = 1.0 / (1.0 + np.sqrt(1.0 / (var_h + 1.0)))
        Z = Z - alpha * np.outer(h, K)
    return zbar[:n] + Z[:, :n]


# ----------------------------------------------------------------------------
# Localisation
# ----------------------------------------------------------------------------
def gaspari_cohn(r) -> np.ndarray:
    """Gaspari & Cohn (1999) eq. 4.10, as the two polynomials of the paper, vectorised."""
    r = np.abs(np.asarray(r, dtype=float))
    inner = -0.25 * r**5 + 0.5 * r**4 + 0.625 * r**3 - 5.0 / 3.0 * r**2 + 1.0
    with np.errstate(divide="ignore"):
        outer = (r**5 / 12.0 - 0.5 * r**4 + 0.625 * r**3 + 5.0 / 3.0 * r**2 - 5.0 * r + 4.0
                 - 2.0 / 3.0 / r)
    return np.where(r <= 1.0, inner, np.where(r <= 2.0, outer, 0.0))


def distance(a, b, period) -> np.ndarray:
    """Twin of ``_distance``, broadcasting over leading axes: a (..., D), b (..., D)."""
    d = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    period = np.asarray(period, dtype=float)
    periodic = period > 0
    safe = np.where(periodic, period, 1.0)
    wrapped = np.mod(d, safe)
    wrapped = np.minimum(wrapped, safe - wrapped)
    d = np.where(periodic, wrapped, d)
    return np.sqrt(np.sum(d * d, axis=-1))


def taper_matrix(xcoords, ycoords, period, half_width) -> np.ndarray:
    """Twin of ``_taper_matrix``: (n, D), (m, D) -> (n, m) by broadcasting."""
    dist = distance(np.asarray(xcoords)[:, None, :], np.asarray(ycoords)[None, :, :], period)
    return gaspari_cohn(dist / half_width)


# ----------------------------------------------------------------------------
# LETKF
# ----------------------------------------------------------------------------
def etkf_weights(Y: np.ndarray, dy: np.ndarray):
    """Numpy ETKF in ensemble space (Hunt et al. 2007, eqs. 21-24), R = I.

    Returns the mean weights ``w`` (N,) and the symmetric square-root
    transform ``W`` (N, N): ``Pa~ = [(N-1) I + Y Y^T]^{-1}``,
    ``w = Pa~ Y dy``, ``W = [(N-1) Pa~]^{1/2}``.
    """
    N = Y.shape[0]
    Pa = np.linalg.inv((N - 1) * np.eye(N) + Y @ Y.T)
    Pa = 0.5 * (Pa + Pa.T)
    w = Pa @ Y @ dy
    W = np.real(sla.sqrtm((N - 1) * Pa))
    return w, 0.5 * (W + W.T)


def letkf(mu, A, Y, dy, taper) -> np.ndarray:
    """Twin of ``_letkf``: a loop over grid points, each an ETKF on its tapered local obs."""
    N, n = A.shape
    out = np.empty((N, n))
    for i in range(n):
        local = taper[i] > 0
        if not local.any():
            out[:, i] = mu[i] + A[:, i]
            continue
        s = np.sqrt(taper[i, local])
        w, W = etkf_weights(Y[:, local] * s, dy[local] * s)
        out[:, i] = mu[i] + A[:, i] @ w + W @ A[:, i]
    return out
