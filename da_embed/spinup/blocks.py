"""Block-tridiagonal algebra of the E-step Hessian: pure functions, tested against dense twins.

D (..., K, n, n) diagonal blocks, C (..., K - 1, n, n) with C[k] = H[k + 1, k];
the factor L is block lower-bidiagonal, H = L L^T.  Private helpers of
:mod:`da_embed.spinup` (no public names).
"""

from __future__ import annotations

import torch

__all__: list[str] = []

def _btd_cholesky(D: torch.Tensor, C: torch.Tensor):
    """Block Cholesky factor (Ld, Lc) of H, and a (...,) int flag: 0 where H is PD."""
    K = D.shape[-3]
    Ld, Lc = [], []
    info = torch.zeros(D.shape[:-3], dtype=torch.int32, device=D.device)
    prev = None
    for k in range(K):
        Dk = D[..., k, :, :]
        if k > 0:
            # L[k, k-1] = C[k-1] L[k-1, k-1]^-T
            low = torch.linalg.solve_triangular(prev, C[..., k - 1, :, :].mT, upper=False).mT
            Lc.append(low)
            Dk = Dk - low @ low.mT
        Lkk, inf = torch.linalg.cholesky_ex(Dk)
        info = torch.maximum(info, inf)
        Ld.append(Lkk)
        prev = Lkk
    Lc_t = torch.stack(Lc, dim=-3) if Lc else D.new_zeros(*D.shape[:-3], 0, *D.shape[-2:])
    return (torch.stack(Ld, dim=-3), Lc_t), info


def _btd_solve(factor, r: torch.Tensor) -> torch.Tensor:
    """``H^-1 r`` for r (..., K, n) from the block Cholesky factor of H."""
    Ld, Lc = factor
    K = Ld.shape[-3]
    y = []
    for k in range(K):  # L y = r
        rk = r[..., k, :, None]
        if k > 0:
            rk = rk - Lc[..., k - 1, :, :] @ y[-1]
        y.append(torch.linalg.solve_triangular(Ld[..., k, :, :], rk, upper=False))
    x = [None] * K
    for k in range(K - 1, -1, -1):  # L^T x = y
        yk = y[k]
        if k < K - 1:
            yk = yk - Lc[..., k, :, :].mT @ x[k + 1]
        x[k] = torch.linalg.solve_triangular(Ld[..., k, :, :].mT, yk, upper=True)
    return torch.cat(x, dim=-1).mT.reshape(r.shape)


def _btd_sample(factor, eps: torch.Tensor) -> torch.Tensor:
    """``L^-T eps`` (..., K, n): deviations with covariance H^-1 for standard normal eps."""
    Ld, Lc = factor
    K = Ld.shape[-3]
    x = [None] * K
    for k in range(K - 1, -1, -1):
        ek = eps[..., k, :, None]
        if k < K - 1:
            ek = ek - Lc[..., k, :, :].mT @ x[k + 1]
        x[k] = torch.linalg.solve_triangular(Ld[..., k, :, :].mT, ek, upper=True)
    return torch.stack([v[..., 0] for v in x], dim=-2)


def _btd_logdet(factor) -> torch.Tensor:
    """``log det H`` (...,) from its block Cholesky factor."""
    Ld, _ = factor
    return 2.0 * torch.log(torch.diagonal(Ld, dim1=-2, dim2=-1)).sum((-1, -2))


def _btd_marginals(factor):
    """Blocks of H^-1 on the band: Sigma_kk (..., K, n, n) and Sigma_{k+1,k} (..., K-1, n, n).

    Selected inversion backwards from the last block, as the RTS smoother runs:
    with L_k = L[k, k] and E_k = L[k + 1, k],
    ``Sigma_{k+1,k} = -Sigma_{k+1,k+1} E_k L_k^-1`` and
    ``Sigma_kk = L_k^-T (L_k^-1 - E_k^T Sigma_{k+1,k})`` (rows of ``L^T H^-1 = L^-1``).
    """
    Ld, Lc = factor
    K, n = Ld.shape[-3], Ld.shape[-1]
    eye = torch.eye(n, dtype=Ld.dtype, device=Ld.device).expand(Ld.shape[:-3] + (n, n))
    inv = [torch.linalg.solve_triangular(Ld[..., k, :, :], eye, upper=False) for k in range(K)]
    diag, sub = [None] * K, [None] * (K - 1)
    diag[K - 1] = inv[K - 1].mT @ inv[K - 1]
    for k in range(K - 2, -1, -1):
        sub[k] = -diag[k + 1] @ Lc[..., k, :, :] @ inv[k]
        diag[k] = inv[k].mT @ (inv[k] - Lc[..., k, :, :].mT @ sub[k])
    sub_t = torch.stack(sub, -3) if sub else Ld.new_zeros(Ld.shape[:-3] + (0, n, n))
    return torch.stack(diag, -3), sub_t


def _factor_damped(D: torch.Tensor, C: torch.Tensor):
    """Block Cholesky of H, adding lambda I to the diagonal blocks until H is PD.

    Exact NLL Hessians may be indefinite away from the minimum; the damped
    matrix gives a descent direction (Levenberg).  Returns (factor, lambda).
    """
    factor, info = _btd_cholesky(D, C)
    if not bool(info.any()):
        return factor, 0.0
    eye = torch.eye(D.shape[-1], dtype=D.dtype, device=D.device)
    lam = 1e-8 * float(torch.diagonal(D, dim1=-2, dim2=-1).abs().max().clamp_min(1.0))
    for _ in range(40):
        factor, info = _btd_cholesky(D + lam * eye, C)
        if not bool(info.any()):
            return factor, lam
        lam *= 10.0
    raise FloatingPointError("the E-step Hessian could not be made positive definite "
                             "(non-finite NLL Hessian?)")
