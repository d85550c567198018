r"""The predictive spin-up objective: the prequential NLL of a differentiable EKF.

``SpinupConfig(objective="predictive")`` (``da-embed spinup --objective
predictive``) learns s_0 = s_b, phi, the adapter and Q = diag(e^lambda)
by minimising the quantity the comparison reports: the negative
log-likelihood of each next chunk under the forecast of the filter that
has assimilated the chunks before it.  On a window of K chunks (B windows
per step, the tracks of :mod:`da_embed.spinup.objective`), the EKF of
:class:`filters.EKF` with the settings of ``compare`` runs in torch:

.. math::

    \text{forecast:}\quad m_k &= m_\theta(a_{k-1}, h_{k-1}), \qquad
        P_k = F_k P^a_{k-1} F_k^\top + Q, \quad F_k = \partial m_\theta / \partial s, \\
    \text{score:}\quad \ell_k &= \textstyle\sum_t \mathrm{nll}_t(m_k)
        \quad \text{(chunk k under the forecast from chunks} < k), \\
    \text{analysis:}\quad K_k &= P_k G_k^\top (G_k P_k G_k^\top + r I)^{-1}, \quad
        a_k = m_k + K_k d, \quad d = -c \mathbf 1, \\
    P^a_k &= (I - K_k G_k) P_k (I - K_k G_k)^\top + r K_k K_k^\top \quad \text{(Joseph)},

with ``G_k`` (L, n) the per-token gradients of the NLL at ``m_k`` (the
analytic ``HiddenScale`` Jacobian ``(h e^s) ((softmax - onehot) W)``, mapped
by the subspace basis), ``r`` = ``obs_var`` (``compare --R``) and ``c`` =
``decrement`` (the ``"decrement"`` pseudo-observation, so the innovation
``y - h(m_k)`` is ``-c`` for every token).  The loss is ``sum_k l_k`` per
token, minimised by Adam on its exact gradient: backpropagation through the
forecasts *and* the analyses.  ``G_k`` is not frozen: it is computed by
differentiable torch operations of ``m_k``, so the gradient includes how the
gain changes with the state (the full derivative of the unrolled filter, not
a Gauss-Newton approximation); the Cholesky solve ``(G P G^T + r I)^{-1}``
is differentiated by torch.

The state enters the window as in inference: a track's first window (and a
document's) starts from the prior ``N(s_b, P0 I)`` with P0 =
``background_var`` (as ``compare --P0``, fixed); every other window starts
from the forecast of the previous window's last analysis (mean and full
covariance, carried detached: truncated backpropagation through time, as for
recurrent LMs).  ``grad_clip`` clips the gradient norm before each Adam step.

The EM objective's priors (``climatology``, ``shrinkage``) are not used: the
predictive loss itself prefers the random walk wherever the learned dynamics
do not forecast better.  The state must be a ``HiddenScale`` or a subspace of
it (the analytic Jacobian; other placements would need the Jacobian of the
whole model by autograd, per token).

The logged ``objective``, ``nll`` and ``nll_forecast`` are all the window's
prequential NLL per token (what is minimised); ``background``,
``transition`` and ``damping`` are 0 and ``logdet_q`` and ``laplace`` NaN.

Shapes: B windows, K chunks per window, n state size, d summary width, L
tokens per chunk, V vocabulary.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__: list[str] = []


def _symmetrize(P: torch.Tensor) -> torch.Tensor:
    return 0.5 * (P + P.mT)


def _ekf_forecast(cov: torch.Tensor, jac: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``F P F^T + diag(q)`` (..., n, n), as :func:`filters.kalman.kalman_predict`."""
    return _symmetrize(jac @ cov @ jac.mT + torch.diag_embed(q.expand(cov.shape[:-1])))


def _ekf_analysis(mean: torch.Tensor, cov: torch.Tensor, innovation: torch.Tensor,
                  H: torch.Tensor, r: float):
    """The EKF analysis of :func:`filters.kalman.kalman_analysis` (Joseph form), in torch.

    ``mean`` (..., n), ``cov`` (..., n, n), ``innovation`` (..., m), ``H``
    (..., m, n), ``R = r I``.  Differentiable in every tensor argument (the
    gain by a Cholesky solve of ``H P H^T + R``).
    """
    m = H.shape[-2]
    PHt = cov @ H.mT  # (..., n, m)
    S = _symmetrize(H @ PHt) + r * torch.eye(m, dtype=cov.dtype)  # (..., m, m)
    Lc, info = torch.linalg.cholesky_ex(S)
    if bool(info.any()):  # only for non-finite or exploded states: S >= r I otherwise
        raise FloatingPointError("the EKF diverged (innovation covariance not positive "
                                 "definite): lower lr, or set grad_clip")
    K = torch.cholesky_solve(PHt.mT, Lc).mT  # (..., n, m): P H^T S^-1
    new_mean = mean + (K @ innovation.unsqueeze(-1))[..., 0]
    IKH = torch.eye(cov.shape[-1], dtype=cov.dtype) - K @ H
    new_cov = IKH @ cov @ IKH.mT + r * (K @ K.mT)
    return new_mean, _symmetrize(new_cov)


def _token_terms(chunks, rows, Z: torch.Tensor):
    """Per-token NLLs (B, L) and their gradients G (B, L, n) at states Z (B, n).

    ``rows`` (B,) index the chunks of ``chunks`` (a ``_FastChunks``).  Both are
    differentiable in Z (G through the softmax and ``exp(s)``): the EKF's
    analytic Jacobian, kept in the autograd graph.
    """
    u = chunks.h[rows] * torch.exp(chunks._full(Z)).unsqueeze(1)  # (B, L, d)
    logp = torch.log_softmax(F.linear(u, chunks.W, chunks.b), dim=-1)  # (B, L, V)
    y = chunks.y[rows]  # (B, L)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, L)
    resid = logp.exp() - F.one_hot(y, logp.shape[-1]).to(logp.dtype)  # softmax - onehot
    G = u * (resid @ chunks.W)  # (B, L, d)
    if chunks.P is not None:
        G = G @ chunks.P  # (B, L, n)
    return nll, G


def _start(learned, cfg, carried, restart: torch.Tensor):
    """Mean (B, n) and covariance (B, n, n) of the windows' first forecast.

    The prior ``N(s_b, P0 I)`` where ``restart``, else the forecast of the
    carried analysis (detached) with the summary of the chunk before.
    """
    B, n = restart.shape[0], learned.n
    mu = torch.nan_to_num(carried["carry"])  # NaN-free: where() would pass NaN gradients
    cov = torch.nan_to_num(carried["carry_cov"])
    h = carried["carry_h"]
    fc_mean = learned.step(mu, h)
    fc_cov = _ekf_forecast(cov, learned.jacobian(mu, h, grad=True), torch.exp(learned.log_q))
    prior_cov = cfg.background_var * torch.eye(n, dtype=torch.float64).expand(B, n, n)
    r = restart[:, None]
    mean = torch.where(r, learned.initial.expand(B, n), fc_mean)
    return mean, torch.where(r[..., None], prior_cov, fc_cov)


def _unroll(chunks, learned, cfg, B: int, K: int, carried, restart):
    """The EKF over the B windows: chunk NLL sums (B, K), forecast means (B, K, n), and the
    last analysis (mean, covariance) and summary carried into the next windows."""
    Hs = chunks.summaries.reshape(B, K, -1).to(torch.float64)  # (B, K, d)
    q = torch.exp(learned.log_q)
    rows = torch.arange(B) * K  # window-major chunks: window w's chunk k is w * K + k
    mean, cov = _start(learned, cfg, carried, restart)
    nll, means = [], []
    for k in range(K):
        if k > 0:
            jac = learned.jacobian(mean, Hs[:, k - 1], grad=True)
            mean = learned.step(mean, Hs[:, k - 1])
            cov = _ekf_forecast(cov, jac, q)
        tok, G = _token_terms(chunks, rows + k, mean)  # scored before its analysis
        nll.append(tok.sum(-1))
        means.append(mean)
        d = torch.full_like(tok, -cfg.decrement)  # y - h(m) of the "decrement" target
        mean, cov = _ekf_analysis(mean, cov, d, G, cfg.obs_var)
    following = {"carry": mean.detach().clone(), "carry_cov": cov.detach().clone(),
                 "carry_h": Hs[:, -1].clone()}
    return torch.stack(nll, 1), torch.stack(means, 1), following


def _predictive_step(chunks, learned, cfg, B: int, K: int, tokens: int, carried, restart):
    """The unrolled windows' prequential NLL per token (a closure), the record, and what the
    tracks' next windows start from.

    The first call of the closure returns the loss of the unroll done here
    (its graph kept); later calls (``m_steps`` > 1) unroll again under the
    updated parameters.
    """
    if not getattr(chunks, "fast", False):
        raise ValueError("objective='predictive' needs a HiddenScale state (or a Subspace of "
                         "one) on a model with a linear LM head: the analytic per-token "
                         "Jacobian")
    with torch.enable_grad():
        nll, means, following = _unroll(chunks, learned, cfg, B, K, carried, restart)
        first = [nll.sum() / tokens]

    def loss():
        if first:
            return first.pop()
        return _unroll(chunks, learned, cfg, B, K, carried, restart)[0].sum() / tokens

    value = float(nll.detach().sum()) / tokens
    nan = float("nan")
    record = {"nll": value, "nll_forecast": value, "background": 0.0, "transition": 0.0,
              "logdet_q": nan, "laplace": nan,
              "state_norm": float(means.detach().norm(dim=-1).mean()),
              "newton_iterations": 0, "damping": 0.0, "objective": value}
    return loss, record, following
