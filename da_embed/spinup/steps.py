"""The two kinds of spin-up step: the weak constraint's E-step and the strong constraint's rollout.

Each returns the M-step loss as a closure (Adam calls it ``m_steps`` times on
one E-step), the step's record for ``spinup.nc``, and what the next windows of
the tracks start from.  Private helpers of :mod:`da_embed.spinup` (no public
names); the notes are in :mod:`da_embed.spinup.objective`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .blocks import _btd_logdet, _btd_marginals, _btd_sample
from .objective import _LOG2PI, _map_states, _prior, _rollout

__all__: list[str] = []


@dataclass(frozen=True)
class _Background:
    """The prior of each window's first state (B windows, n states, d summary width).

    ``restart`` (B,) marks windows with the climatological background
    N(s_b, diag b); the others continue their track: their background is the
    forecast ``N(m(mu, h), Q + diag((F o F) v))`` of the previous window's
    analysis (``mu`` (B, n), ``h`` (B, d): its last state and summary, s_b and
    zeros where the window restarts).
    """

    restart: torch.Tensor
    mu: torch.Tensor
    h: torch.Tensor
    F2v: torch.Tensor  # (B, n): diag((F o F) v)
    mean: torch.Tensor  # (B, n): s_b or m(mu, h)
    var: torch.Tensor  # (B, n): b or Q + F2v
    q: torch.Tensor  # (n,): the diagonal of Q


def _background(learned, carried: dict, restart: torch.Tensor) -> _Background:
    """The windows' backgrounds from what the previous windows carried (:class:`_Background`)."""
    with torch.no_grad():
        mu, v, h_prev = carried["carry"], carried["carry_var"], carried["carry_h"]
        mu_safe = torch.where(restart[:, None], learned.initial.detach(), mu)
        h_safe = torch.where(restart[:, None], torch.zeros_like(h_prev), h_prev)
        F2v = (learned.jacobian(mu_safe, h_safe) ** 2 @ torch.nan_to_num(v).unsqueeze(-1))[..., 0]
        sb = torch.where(restart[:, None], learned.initial.detach(),
                         learned.step(mu_safe, h_safe))  # (B, n)
        q = torch.exp(learned.log_q.detach())
        b = torch.where(restart[:, None], torch.exp(learned.log_b.detach()), q + F2v)  # (B, n)
    return _Background(restart, mu_safe, h_safe, F2v, sb, b, q)


def _background_cost(learned, bg: _Background, x0, extra):
    """E_q of the first states' prior terms (..., B) under the current theta.

    ``x0`` (..., B, n) first states; ``extra``: E_q's variance term (or 0).
    """
    keep = bg.restart.to(torch.float64)  # (B,) 1: climatological background
    bt, qt = torch.exp(learned.log_b), torch.exp(learned.log_q)
    clim = 0.5 * (((x0 - learned.initial) ** 2 + extra) / bt).sum(-1) \
        + 0.5 * (learned.log_b + _LOG2PI).sum()  # climatology N(s_b, diag b)
    var = qt + bg.F2v  # (B, n): the variance of the forecast from the track
    cyc = 0.5 * (((x0 - learned.step(bg.mu, bg.h)) ** 2 + extra) / var).sum(-1) \
        + 0.5 * (torch.log(var) + _LOG2PI).sum(-1)
    return keep * clim + (1 - keep) * cyc  # (..., B)


def _closed_form_loss(learned, bg: _Background, S, Hs, Sd, Ss, tokens):
    """E_q[J] in closed form under the dynamics linearised at S* (the EKS's EM)."""
    B, K, n = S.shape
    Sk, Sp = S[:, 1:], S[:, :-1]  # (B, K-1, n)
    Hp = Hs[:, :-1].reshape(-1, Hs.shape[-1])
    var0 = torch.diagonal(Sd[:, 0], dim1=-2, dim2=-1)  # (B, n) posterior variances of s_0

    def loss():  # M-step: E_q[J(S; theta)] (theta-dependent terms), per token
        qt = torch.exp(learned.log_q)
        eta = Sk - learned.step(Sp.reshape(-1, n), Hp).reshape(B, K - 1, n)
        Fm = learned.jacobian(Sp.reshape(-1, n), Hp, grad=True).reshape(B, K - 1, n, n)
        # Var eta_k = Sigma_kk - 2 F Sigma_{k-1,k} + F Sigma_{k-1,k-1} F^T (diagonals)
        var = torch.diagonal(Sd[:, 1:], dim1=-2, dim2=-1) - 2 * (Fm * Ss).sum(-1) \
            + ((Fm @ Sd[:, :-1]) * Fm).sum(-1)
        tr = 0.5 * ((eta ** 2 + var) / qt).sum()
        logq = 0.5 * (K - 1) * (learned.log_q + _LOG2PI).sum()
        return (_background_cost(learned, bg, S[:, 0], var0).sum() + tr + B * logq) / tokens

    return loss


def _sampled_loss(learned, bg: _Background, S, Hs, factor, M: int, rng, tokens):
    """Monte-Carlo E_q[J] by M draws from q (antithetic pairs when M is even)."""
    B, K, n = S.shape
    half = M // 2 if M % 2 == 0 else M  # antithetic pairs: the mean's error cancels
    eps = torch.as_tensor(rng.standard_normal((half, B, K, n)))
    if half != M:
        eps = torch.cat([eps, -eps])
    with torch.no_grad():
        X = S.unsqueeze(0) + _btd_sample(factor, eps)  # (M, B, K, n)
    Xf = X.reshape(M * B, K, n)
    Hf = Hs.unsqueeze(0).expand(M, B, K, Hs.shape[-1]).reshape(M * B, K, -1)

    def loss():  # M-step: Monte-Carlo E_q[J(S; theta)] (theta-dependent terms), per token
        _, tr_s, _ = _prior(Xf, Hf, learned.initial, 1.0, torch.exp(learned.log_q),
                            learned.step)
        logq = 0.5 * (K - 1) * (learned.log_q + _LOG2PI).sum()
        first = _background_cost(learned, bg, X[:, :, 0], 0.0).sum() / M
        return (first + tr_s.sum() / M + B * logq) / tokens

    return loss


def _weak_record(S, nll, nll0, info, bg: _Background, logdet, tokens) -> dict:
    """The weak step's record: the Laplace objective and its terms, per token."""
    B, K, n = S.shape
    const_b = 0.5 * float((torch.log(bg.var) + _LOG2PI).sum())
    logq_term = 0.5 * (K - 1) * float((torch.log(bg.q) + _LOG2PI).sum())
    laplace = 0.5 * logdet - 0.5 * K * n * _LOG2PI
    record = {
        "nll": float(nll.sum()) / tokens, "nll_forecast": float(nll0.sum()) / tokens,
        "background": float(info["background"].sum() + const_b) / tokens,
        "transition": float(info["transition"].sum()) / tokens,
        "logdet_q": B * logq_term / tokens, "laplace": float(laplace.sum()) / tokens,
        "state_norm": float(S.norm(dim=-1).mean()),
        "newton_iterations": info["iterations"], "damping": info["damping"],
    }
    record["objective"] = (record["nll"] + record["background"] + record["transition"]
                           + record["logdet_q"] + record["laplace"])
    return record


def _weak_step(chunks, learned, config, rng, exact, B, K, tokens, warm, carried, restart):
    """E-step on the batch's windows; returns the M-step loss (a closure), the record, the
    states S* (B, K, n), their posterior variances and what the next windows of the tracks
    start from.

    ``warm`` (B, K, n) holds earlier E-step states of the chunks (NaN where
    none): the Newton iterations start there, elsewhere at the forecast.
    ``restart`` (B,) marks windows whose first state has the climatological
    background N(s_b, diag b); the others continue their track: their
    background is the forecast of the previous window's analysis,
    ``N(m(mu, h), Q + diag((F o F) v))`` (``mu``, ``v``, ``h`` in ``carried``:
    the mean and marginal variances of its last state, and its summary).
    """
    bg = _background(learned, carried, restart)
    with torch.no_grad():
        S0, Hs, nll0 = _rollout(chunks, learned, B, K, grad=False, start=bg.mean)
        start = torch.where(torch.isnan(warm), S0, warm)
    S, factor, nll, info = _map_states(chunks, start, Hs, bg.mean, bg.var, bg.q, learned.step,
                                       learned.jacobian, exact, config.newton_iter,
                                       config.newton_tol)
    with torch.no_grad():
        logdet = _btd_logdet(factor)  # (B,)
        Sd, Ss = _btd_marginals(factor)  # Sigma_kk (B, K, n, n), Sigma_{k+1,k} (B, K-1, n, n)
        following = {"carry": S[:, -1].clone(),
                     "carry_var": torch.diagonal(Sd[:, -1], dim1=-2, dim2=-1).clone(),
                     "carry_h": Hs[:, -1].clone()}
    if config.samples == 0:
        loss = _closed_form_loss(learned, bg, S, Hs, Sd, Ss, tokens)
    else:
        loss = _sampled_loss(learned, bg, S, Hs, factor, config.samples, rng, tokens)
    record = _weak_record(S, nll, nll0, info, bg, logdet, tokens)
    V = torch.diagonal(Sd, dim1=-2, dim2=-1).clone()  # (B, K, n) posterior variances
    return loss, record, S, V, following


def _strong_step(chunks, learned, B, K, tokens, start):
    """The unrolled windows' NLL per token (a closure), the record, and the state after them.

    ``start`` (B, n): the state carried into each window (NaN: ``s_b``).
    """
    with torch.no_grad():
        S, Hs, nll = _rollout(chunks, learned, B, K, grad=False, start=start)
        after = learned.step(S[:, -1], Hs[:, -1])  # (B, n): carried into the next window

    def loss():
        return _rollout(chunks, learned, B, K, grad=True, start=start)[2].sum() / tokens

    nan = float("nan")
    value = float(nll.sum()) / tokens
    record = {"nll": value, "nll_forecast": value, "background": 0.0, "transition": 0.0,
              "logdet_q": nan, "laplace": nan, "state_norm": float(S.norm(dim=-1).mean()),
              "newton_iterations": 0, "damping": 0.0, "objective": value}
    return loss, record, after
