"""Numba access to the two BLAS/LAPACK calls that numpy makes and Numba does not (private).

numpy computes ``A @ A.T`` and ``A.T @ A`` with ``dsyrk`` (one triangle, then a
copy), and its Cholesky factor with ``dpotrf('L')`` on a Fortran-ordered copy;
Numba's ``@`` calls ``dgemm`` and its ``np.linalg.cholesky`` factors the other
triangle, which round differently.  These kernels make the same calls through
scipy's BLAS/LAPACK (the library Numba itself uses), so the compiled cycle path
reproduces the numpy path to the last bit.  The calls go to numpy's own
OpenBLAS when numpy bundles one (the wheels' ``numpy.libs``, an ILP64 build), since
scipy's may be another release that rounds differently (numpy 2.4.6 bundles
OpenBLAS 0.3.31, scipy 1.17.1 0.3.30: their ``dpotrf`` differed at 1e-17);
otherwise to scipy's.  Integer arguments are passed as int64 whatever the
library's width: on a little-endian machine an LP64 library reads the same
value from the first four bytes, so one compiled (and cached) kernel serves both.
Numpy twins: ``A @ A.T``,
``A.T @ A`` and ``np.linalg.cholesky`` themselves (tests/test_compiled.py).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import llvmlite.binding as _llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

__all__: list[str] = []  # private module

# Named external symbols (not ctypes pointers, which Numba cannot cache): registered at
# import, before any cached kernel that calls them is loaded.  Fortran calling
# convention: every argument is a pointer.


def _numpy_openblas():
    """numpy's bundled OpenBLAS (ILP64, symbols ``scipy_<name>_64_``), or None."""
    if sys.byteorder != "little":
        return None
    here = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(glob.glob(os.path.join(here, "numpy.libs", "libscipy_openblas64_*.so"))):
        try:
            lib = ctypes.CDLL(path)
            return {name: ctypes.cast(getattr(lib, f"scipy_{name}_64_"), ctypes.c_void_p).value
                    for name in ("dsyrk", "dpotrf")}
        except (OSError, AttributeError):
            continue
    return None


_NUMPY_BLAS = _numpy_openblas()
#: Which library the calls go to (for the record: tests and docs mention it).
LIBRARY = "numpy's OpenBLAS" if _NUMPY_BLAS else "scipy's BLAS/LAPACK"
_llvm.add_symbol("filters_compiled_dsyrk", _NUMPY_BLAS["dsyrk"] if _NUMPY_BLAS else
                 get_cython_function_address("scipy.linalg.cython_blas", "dsyrk"))
_llvm.add_symbol("filters_compiled_dpotrf", _NUMPY_BLAS["dpotrf"] if _NUMPY_BLAS else
                 get_cython_function_address("scipy.linalg.cython_lapack", "dpotrf"))
_vp = types.voidptr
_dsyrk = types.ExternalFunction("filters_compiled_dsyrk", types.void(*[_vp] * 10))
_dpotrf = types.ExternalFunction("filters_compiled_dpotrf", types.void(*[_vp] * 5))

_L = ord("L")
_N = ord("N")
_T = ord("T")


@njit(cache=True)
def _syrk(A, trans):
    """numpy's ``A @ A.T`` (trans False) or ``A.T @ A`` (trans True) of a C-contiguous A.

    numpy (row-major, CblasUpper) maps to the Fortran call with uplo 'L' and the
    opposite transpose flag, then copies the upper triangle into the lower.
    """
    rows, cols = A.shape
    p = cols if trans else rows
    k = rows if trans else cols
    C = np.zeros((p, p))
    uplo = np.array([_L], np.uint8)
    tr = np.array([_N if trans else _T], np.uint8)
    pp = np.array([p], np.int64)
    kk = np.array([k], np.int64)
    lda = np.array([cols], np.int64)
    one = np.array([1.0])
    zero = np.array([0.0])
    if p > 0 and k > 0:
        _dsyrk(uplo.ctypes, tr.ctypes, pp.ctypes, kk.ctypes, one.ctypes, A.ctypes, lda.ctypes,
               zero.ctypes, C.ctypes, pp.ctypes)
    for i in range(p):
        for j in range(i + 1, p):
            C[j, i] = C[i, j]
    return C


@njit(cache=True)
def _cholesky(C):
    """numpy's ``np.linalg.cholesky`` of a symmetric C (lower factor, C-contiguous)."""
    n = C.shape[0]
    B = C.T.copy()  # its buffer is C in Fortran order
    uplo = np.array([_L], np.uint8)
    nn = np.array([n], np.int64)
    info = np.zeros(1, np.int64)
    _dpotrf(uplo.ctypes, nn.ctypes, B.ctypes, nn.ctypes, info.ctypes)
    if info[0] != 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            out[i, j] = B[j, i]
    return out
