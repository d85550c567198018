"""A symmetric eigendecomposition for small matrices, without LAPACK's call overhead (private).

The ensemble-space matrices of the ETKF (N x N, N of a few tens) are too small
for LAPACK's ``dsyevd``: on the 28 x 28 matrix of ``sakov2008`` it spends about
60 us, mostly in the per-call overhead of its level-2 BLAS calls and its
divide-and-conquer merge, where the arithmetic is about 9 N^3 = 0.2 Mflop.
:func:`_eigh_small` is the Householder tridiagonalisation and the implicit QL
iteration of EISPACK's ``tred2``/``tql2`` (as in the public-domain JAMA
package), written as flat loops over contiguous rows: it computes the
transposed eigenvector matrix, so every inner loop (the Householder updates,
the Givens rotations) runs along a row.

Its results agree with ``numpy.linalg.eigh`` (LAPACK ``dsyevd``) to rounding
(both are backward stable; the eigenvectors of a repeated eigenvalue span the
same space, and the ETKF uses only ``V f(d) V^T``, which does not depend on that
choice or on the signs).  Numpy twin: ``numpy.linalg.eigh`` itself
(tests/test_compiled.py).  Non-finite input, or a QL iteration that does not
converge in 30 N sweeps, falls back to ``np.linalg.eigh``, which then behaves
as on the generic path.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__: list[str] = []  # private module

_JIT = dict(cache=True, error_model="numpy")
#: Largest N for which the compiled ETKF uses :func:`_eigh_small` (LAPACK wins above).
SMALL_N = 64


@njit(**_JIT)
def _tred2(Z, d, e):
    """Householder reduction of the symmetric ``Z`` to tridiagonal (d, e), in place.

    ``Z`` holds the matrix on entry and the transposed orthogonal factor on exit
    (``Z[j, k]`` is JAMA's ``V[k][j]``); ``e[0] = 0``.
    """
    n = Z.shape[0]
    for j in range(n):
        d[j] = Z[j, n - 1]
    for i in range(n - 1, 0, -1):
        scale = 0.0
        h = 0.0
        for k in range(i):
            scale += abs(d[k])
        if scale == 0.0:
            e[i] = d[i - 1]
            for j in range(i):
                d[j] = Z[j, i - 1]
                Z[j, i] = 0.0
                Z[i, j] = 0.0
        else:
            for k in range(i):
                d[k] /= scale
                h += d[k] * d[k]
            f = d[i - 1]
            g = math.sqrt(h)
            if f > 0:
                g = -g
            e[i] = scale * g
            h = h - f * g
            d[i - 1] = f - g
            for j in range(i):
                e[j] = 0.0
            for j in range(i):
                f = d[j]
                Z[i, j] = f
                g = e[j] + Z[j, j] * f
                for k in range(j + 1, i):
                    zjk = Z[j, k]
                    g += zjk * d[k]
                    e[k] += zjk * f
                e[j] = g
            f = 0.0
            for j in range(i):
                e[j] /= h
                f += e[j] * d[j]
            hh = f / (h + h)
            for j in range(i):
                e[j] -= hh * d[j]
            for j in range(i):
                f = d[j]
                g = e[j]
                for k in range(j, i):
                    Z[j, k] -= f * e[k] + g * d[k]
                d[j] = Z[j, i - 1]
                Z[j, i] = 0.0
        d[i] = h
    # Accumulate the transformations.
    for i in range(n - 1):
        Z[i, n - 1] = Z[i, i]
        Z[i, i] = 1.0
        h = d[i + 1]
        if h != 0.0:
            for k in range(i + 1):
                d[k] = Z[i + 1, k] / h
            for j in range(i + 1):
                g = 0.0
                for k in range(i + 1):
                    g += Z[i + 1, k] * Z[j, k]
                for k in range(i + 1):
                    Z[j, k] -= g * d[k]
        for k in range(i + 1):
            Z[i + 1, k] = 0.0
    for j in range(n):
        d[j] = Z[j, n - 1]
        Z[j, n - 1] = 0.0
    Z[n - 1, n - 1] = 1.0
    e[0] = 0.0


@njit(**_JIT)
def _tql2(Z, d, e):
    """Implicit QL on the tridiagonal (d, e), rotating the rows of ``Z``; False if stuck."""
    n = Z.shape[0]
    for i in range(1, n):
        e[i - 1] = e[i]
    e[n - 1] = 0.0
    f = 0.0
    tst1 = 0.0
    eps = 2.0 ** -52
    for l in range(n):
        tst1 = max(tst1, abs(d[l]) + abs(e[l]))
        m = l
        while m < n - 1:
            if abs(e[m]) <= eps * tst1:
                break
            m += 1
        if m > l:
            it = 0
            while True:
                it += 1
                if it > 30 * n:
                    return False
                g = d[l]
                p = (d[l + 1] - g) / (2.0 * e[l])
                r = math.sqrt(p * p + 1.0)
                if p < 0:
                    r = -r
                d[l] = e[l] / (p + r)
                d[l + 1] = e[l] * (p + r)
                dl1 = d[l + 1]
                h = g - d[l]
                for i in range(l + 2, n):
                    d[i] -= h
                f += h
                p = d[m]
                c = 1.0
                c2 = c
                c3 = c
                el1 = e[l + 1]
                s = 0.0
                s2 = 0.0
                for i in range(m - 1, l - 1, -1):
                    c3 = c2
                    c2 = c
                    s2 = s
                    g = c * e[i]
                    h = c * p
                    r = math.sqrt(p * p + e[i] * e[i])
                    e[i + 1] = s * r
                    s = e[i] / r
                    c = p / r
                    p = c * d[i] - s * g
                    d[i + 1] = h + s * (c * g + s * d[i])
                    for k in range(n):
                        h = Z[i + 1, k]
                        zi = Z[i, k]
                        Z[i + 1, k] = s * zi + c * h
                        Z[i, k] = c * zi - s * h
                p = -s * s2 * c3 * el1 * e[l] / dl1
                e[l] = s * p
                d[l] = c * p
                if not abs(e[l]) > eps * tst1:
                    break
        d[l] = d[l] + f
        e[l] = 0.0
    return True


@njit(**_JIT)
def _eigh_small(C):
    """``numpy.linalg.eigh(C)`` of a symmetric C: ascending eigenvalues, eigenvector columns.

    Reads the lower triangle as LAPACK does (``C`` is symmetric here anyway).
    Returns ``(d, V)`` with ``V`` C-contiguous.
    """
    n = C.shape[0]
    ok = n > 0
    for i in range(n):
        for j in range(n):
            if not np.isfinite(C[i, j]):
                ok = False
    if not ok:
        d, V = np.linalg.eigh(C)
        return d, np.ascontiguousarray(V)
    # Z[j, k] = V[k][j] of JAMA, which starts as the (symmetric) matrix: the lower triangle.
    Z = np.empty((n, n))
    for i in range(n):
        for j in range(i + 1):
            Z[i, j] = C[i, j]
            Z[j, i] = C[i, j]
    d = np.empty(n)
    e = np.empty(n)
    _tred2(Z, d, e)
    if not _tql2(Z, d, e):
        d, V = np.linalg.eigh(C)
        return d, np.ascontiguousarray(V)
    # Sort ascending (a stable argsort; JAMA uses a selection sort), then V = Z^T.
    order = np.argsort(d, kind="mergesort")
    ds = np.empty(n)
    V = np.empty((n, n))
    for c in range(n):
        ds[c] = d[order[c]]
        for r in range(n):
            V[r, c] = Z[order[c], r]
    return ds, V
