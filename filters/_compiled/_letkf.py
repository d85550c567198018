"""The LETKF's local analyses for small ensembles, without per-point LAPACK and BLAS calls (private).

``filters._kernels._letkf`` (the generic path's kernel, and this one's numpy
twin through ``letkf_analysis``) solves each grid point's local ETKF with
``numpy.linalg.eigh`` and small matrix products.  At the sizes of
``sakov2008``'s LETKF (N = 7, about 15 local observations, 40 points) those
are 7 x 7 and 7 x 15 operands, where each LAPACK/BLAS call costs more in
overhead than in arithmetic, and every point allocates its own work arrays.
:func:`_letkf_small` does the same algebra with the work arrays allocated once,
flat loops for the products, ``_eigen._eigh_small`` for the eigendecomposition,
and the analysis of a point's column in the eigenbasis,

    x_a = mu + (V^T Y dy / d) . (V^T a) + V (sqrt(N - 1) d^-1/2 (V^T a)),

instead of forming the N x N transform.  About 3x less time than the generic
kernel at those sizes; equal to it to rounding (tests/test_compiled.py,
``test_analysis_kernels_equal_twins``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._eigen import _eigh_small

__all__: list[str] = []  # private module


@njit(cache=True, error_model="numpy")
def _letkf_small(mu, A, Y, dy, taper):
    """Local ETKF analyses (Hunt et al. 2007) with R-localisation, for N >= 2.

    ``mu`` (n,), ``A`` (N, n) anomalies, ``Y`` (N, m) and ``dy`` (m,) whitened,
    ``taper`` (n, m) in [0, 1].  Returns the analysis ensemble (N, n).
    """
    N, n = A.shape
    m = Y.shape[1]
    N1 = N - 1.0
    sN1 = math.sqrt(N1)
    out = np.empty((N, n))
    Yl = np.empty((N, m))  # a point's tapered observations, its first cnt columns
    dyl = np.empty(m)
    C = np.empty((N, N))
    Ydy = np.empty(N)
    g = np.empty(N)
    for i in range(n):
        cnt = 0
        for j in range(m):
            t = taper[i, j]
            if t > 0.0:
                st = math.sqrt(t)
                for r in range(N):
                    Yl[r, cnt] = Y[r, j] * st
                dyl[cnt] = dy[j] * st
                cnt += 1
        if cnt == 0:  # nothing within reach: the forecast stays
            for r in range(N):
                out[r, i] = mu[i] + A[r, i]
            continue
        for r in range(N):  # C = Yl Yl^T + (N - 1) I (lower triangle mirrored), Ydy = Yl dyl
            acc = 0.0
            for c in range(cnt):
                acc += Yl[r, c] * dyl[c]
            Ydy[r] = acc
            for s in range(r + 1):
                acc = 0.0
                for c in range(cnt):
                    acc += Yl[r, c] * Yl[s, c]
                C[r, s] = acc
                C[s, r] = acc
            C[r, r] += N1
        d, V = _eigh_small(C)
        wa = 0.0
        for k in range(N):
            va = 0.0
            vy = 0.0
            for r in range(N):
                va += V[r, k] * A[r, i]
                vy += V[r, k] * Ydy[r]
            wa += vy / d[k] * va
            g[k] = sN1 / math.sqrt(d[k]) * va
        for r in range(N):
            acc = 0.0
            for k in range(N):
                acc += V[r, k] * g[k]
            out[r, i] = mu[i] + wa + acc
    return out
