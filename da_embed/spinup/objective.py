r"""The spin-up objective: the 4D-Var cost of windows, its MAP states, the forecast rollout.

Spin-up (:func:`da_embed.spinup.spinup`) learns the scale dynamics (s_0,
phi, adapter, Q) on a corpus by 4D-Var; these are the notes of the method.

The state-space model of DESIGN.md section 2, on a *window* of K consecutive
chunks of a training corpus (chunk k: L tokens scored with ``context`` tokens
before them, as in :class:`~da_embed.assimilator.PrequentialConfig`), with
states ``S = (s_0, ..., s_{K-1})`` and chunk summaries ``h_k`` (the LM-head
input pooled over the chunk, as the online assimilator computes them):

.. math::

    s_0 &\sim N(s_b, \mathrm{diag}(b)), \\
    s_k &= m_\theta(s_{k-1}, h_{k-1}) + \varepsilon_k, \quad
           \varepsilon_k \sim N(0, Q), \quad Q = \mathrm{diag}(e^{\lambda}), \\
    m_\theta(s, h) &= f_\phi(s, h) + A_r(h)
           \quad \text{(TransitionNetwork + LowRankAdapter)}, \\
    y_k \mid s_k &\sim \text{the frozen LM under the state } s_k.

Its negative log joint density, the weak-constraint 4D-Var cost with its
normalising constants, is

.. math::

    J(S; \theta) = \tfrac12 |s_0 - s_b|^2_{\mathrm{diag}(b)^{-1}}
      + \tfrac12 \log\det 2\pi\,\mathrm{diag}(b)
      + \sum_{k=1}^{K-1} \Big[\tfrac12 |s_k - m_\theta(s_{k-1}, h_{k-1})|^2_{Q^{-1}}
      + \tfrac12 \log\det 2\pi Q\Big] + \sum_{k=0}^{K-1} \mathrm{NLL}_k(s_k),

with ``NLL_k`` the sum of the exact token negative log-likelihoods of chunk k
under ``s_k`` (no pseudo-observation).  ``theta`` = (the initial scales
``s_b`` and their variances ``b``, ``phi``, the adapter, ``lambda = log diag
Q``).  A stream starts anywhere in the domain, so ``N(s_b, diag b)`` is the
climatology of the state; ``b`` is learned with ``s_b`` (part ``initial``):
a fixed small ``b`` would pull every window's first state, and through the
dynamics the others, towards ``s_b`` and bias the learned drift.

What is minimised (weak constraint)
-----------------------------------
Not ``min_{S, theta} J``: profiling the states by their joint minimum does
not identify Q, because at the strong-constraint trajectory
``s_k = m(s_{k-1}, h_{k-1})`` the quadratic terms vanish and
``J -> -inf`` as ``Q -> 0`` through ``log det Q`` (:func:`window_cost` shows
it).  The log-determinant identifies Q once the states are *integrated out*,
so spin-up minimises the negative log marginal likelihood
``-log p(Y | theta) = -log int exp(-J) dS`` of each window by a stochastic
Laplace-EM, using Fisher's identity
``grad -log p(Y | theta) = E_{p(S | Y, theta)}[grad_theta J(S; theta)]``:

* *E-step* (per window, theta fixed): ``S* = argmin_S J`` by Newton's method
  with a line search; the Hessian is block-tridiagonal (K blocks of n x n:
  the NLL Hessians of the chunks, exact or their empirical Fisher
  ``sum_t g_t g_t^T``, plus the Gauss-Newton Hessian of the background and
  transition terms), factored by a block Cholesky in O(K n^3).  The posterior
  is approximated by ``q = N(S*, H^-1)`` (Laplace).
  The Newton iterations start from the chunks' states of their last E-step
  (the forecast for chunks not seen yet), so later E-steps take a few.
  The NLL Hessian blocks are exact for small states (closed form for
  ``HiddenScale``, autograd otherwise) and the empirical Fisher above
  ``AUTO_EXACT_MAX``; with the latter Newton converges linearly.
* *M-step*: ``m_steps`` Adam steps on ``E_q[J(S; theta)]`` (the NLL terms do
  not depend on theta: the LM is frozen).  By default the expectation is in
  closed form with ``m`` linearised at S* (``F_k = dm/ds``):
  ``E_q |eta_k|^2_{Q^-1} = sum_i (eta*_ki^2 + Var eta_ki) / Q_i`` with
  ``Var eta_k = Sigma_kk - 2 F_k Sigma_{k-1,k} + F_k Sigma_{k-1,k-1} F_k^T``
  from the band of ``H^-1`` (a selected inversion, as in the RTS smoother):
  the EM of the extended Kalman smoother.  It has no Monte-Carlo noise, which
  matters: in the many state directions the tokens barely inform, a noisy
  gradient is all Adam sees, and its normalised steps would random-walk the
  networks into a drift (``samples`` > 0 estimates the expectation by
  posterior draws instead).  With the dynamics fixed the stationary point in
  Q is ``Q_i = mean_k (eta*_ki^2 + Var eta_ki)``: the EM update of
  :func:`filters.variational.ml_diagonal_Q`, posterior variances included.

Windows are cycled as in operational 4D-Var: the corpus (one stream or a
list of documents) is cut into consecutive windows of ``window`` chunks,
split into ``batch`` tracks, and each step takes the next window of every
track.  A window's background is the forecast of the previous window's
analysis, ``N(m(mu, h), Q + diag((F o F) v))`` (``mu``, ``v``: mean and
marginal variances of its last state, ``F`` the Jacobian of ``m`` there);
only a track's first window and a document's use the climatology
``N(s_b, diag b)``.  Windows that always started from the climatology would
make the states trend from ``s_b`` towards where the data put them, and the
dynamics would learn that trend as a drift that never stops (measured on the
reference model: the open-loop forecast left the data after a few chunks).

``s_b`` and ``b`` (``climatology=True``, the default) are the climatology of
the states: the model is taken as stationary, so a new stream's first state
is distributed like any state of the domain, and every E-step's states (not
only the few windows that start a track) inform it: after each E-step,
``s_b`` and ``b`` move a fraction ``climatology_rate`` of the way to the
mean and variance (posterior variances included) of the batch's states, a
stochastic-approximation EM step (Delyon, Lavielle & Moulines 1999).  By
Adam on the track starts alone, ``s_b`` hardly moves (measured on the
reference model: norm 0.5 after 80 steps, where the states sit at norm 20 to
90), and a filter started there spends its first hundreds of chunks getting
to the data.  When the streams share a first state off the stationary mean
(planted streams that all start at one point), set ``climatology=False``.

``shrinkage`` > 0 puts a Gaussian prior on the parameters that are zero for
the random walk (MAP-EM).  Where the tokens barely inform the state, EM's
posterior follows the prior's drift and the M-step then confirms it; on the
reference model without the prior the learned drift carried the states (and,
with the climatology, ``s_b``) outward by about 0.4 per chunk, several times
the filters' own rate.

The logged ``objective`` is the Laplace approximation of
``-log p(Y | theta)``, ``J(S*) + 1/2 log det H - (K n / 2) log 2 pi``, per
token; its terms (``nll``, ``background``, ``transition``, ``logdet_q``,
``laplace``) are logged too.

The strong-constraint limit (``constraint="strong"``)
-----------------------------------------------------
With Q -> 0 the states are a deterministic function of the context:
``s_0 = s_b``, ``s_k = m_theta(s_{k-1}, h_{k-1})``, and ``J`` reduces to
``sum_k NLL_k(s_k)`` (the strong-constraint 4D-Var cost with ``s_0 = s_b``),
minimised by Adam through the unrolled window: the
:class:`~da_embed.spinup.Hypersurface` ("adaptive latent hypersurface"),
trained autoregressively (chunk k is scored by the state generated from the
chunks before it).  At inference the state is carried over the whole stream,
so training does the same (truncated backpropagation through the chunks, as
for recurrent LMs): along the same tracks, the state after each window
(detached) starts the next; a track starts, and restarts at each document,
from ``s_b``.  Windows that always restart from ``s_b`` would never train the
long compositions of ``m`` that inference runs, and its state would drift.

Summaries
---------
``h_k`` is the mean over the chunk's positions of the LM head's input.  For
``HiddenScale`` (and its subspaces) it does not depend on the state.  For
other placements it is taken under the state the window's forecast assigns
to the chunk (the rollout ``s_0 = s_b``, ``s_k = m(s_{k-1}, h_{k-1})``), as
the online assimilator takes it under its forecast mean.

Shapes: B windows per step, K chunks per window, n state size, d summary
width, L tokens per chunk, V vocabulary, M posterior draws.
"""

from __future__ import annotations

import math

import torch

from .blocks import _btd_solve, _factor_damped
from .learned import _Learned

__all__ = ["window_cost"]

#: Sufficient decrease constant of the E-step line search (Armijo).
ARMIJO = 1e-4
_LOG2PI = math.log(2.0 * math.pi)


def _prior(S, Hs, sb, b, q, step_fn):
    """Background (B,), transition quadratic (B,) and model errors (B, K - 1, n).

    ``b`` and ``q`` are the diagonals (n,) of the background and process-noise
    covariances (or scalars).
    """
    B, K, n = S.shape
    pred = step_fn(S[:, :-1].reshape(-1, n), Hs[:, :-1].reshape(-1, Hs.shape[-1]))
    eta = S[:, 1:] - pred.reshape(B, K - 1, n)  # (B, K - 1, n)
    bg = 0.5 * ((S[:, 0] - sb) ** 2 / b).sum(-1)  # (B,)
    tr = 0.5 * (eta ** 2 / q).sum((1, 2))  # (B,)
    return bg, tr, eta


def window_cost(nll, states, summaries, step_fn, initial_state, background_var, q):
    r"""The weak-constraint cost ``J(S; theta)`` of windows, with its constants (nats).

    ``J = 1/2 |s_0 - s_b|^2_{diag(b)^-1} + 1/2 log det(2 pi diag b) + sum_k NLL_k
    + sum_{k >= 1} [1/2 |s_k - m(s_{k-1}, h_{k-1})|^2_{Q^-1} + 1/2 log det(2 pi Q)]``,
    the negative log joint density of the states and the tokens (see the
    module notes).

    Parameters
    ----------
    nll : torch.Tensor (B, K)
        Chunk NLL sums ``NLL_k(s_k)``.
    states : torch.Tensor (B, K, n)
    summaries : torch.Tensor (B, K, d)
    step_fn : callable
        ``m(S (N, n), H (N, d)) -> (N, n)``.
    initial_state : torch.Tensor (n,)
        s_b.
    background_var : float or torch.Tensor (n,)
        b, the diagonal of the background covariance.
    q : torch.Tensor (n,)
        The diagonal of Q.

    Returns
    -------
    torch.Tensor (B,)

    Examples
    --------
    Profiling the states does not identify Q: along the deterministic
    trajectory the cost falls without bound as Q -> 0.

    >>> import torch
    >>> S = torch.zeros(1, 3, 2, dtype=torch.float64)  # a trajectory of the identity map
    >>> cost = lambda q: float(window_cost(torch.zeros(1, 3), S, torch.zeros(1, 3, 1),
    ...                                    lambda s, h: s, torch.zeros(2), 0.1,
    ...                                    torch.full((2,), q, dtype=torch.float64))[0])
    >>> cost(1e-2) > cost(1e-4) > cost(1e-8)
    True
    """
    S = torch.as_tensor(states, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    B, K, n = S.shape
    b = torch.as_tensor(background_var, dtype=torch.float64).expand(n)
    bg, tr, _ = _prior(S, torch.as_tensor(summaries, dtype=torch.float64),
                       torch.as_tensor(initial_state, dtype=torch.float64), b, q, step_fn)
    const = 0.5 * float((torch.log(b) + _LOG2PI).sum()) \
        + 0.5 * (K - 1) * float((torch.log(q) + _LOG2PI).sum())
    return torch.as_tensor(nll, dtype=torch.float64).sum(-1) + bg + tr + const


def _prior_blocks(S, Hs, q, b, jac_fn):
    """Gauss-Newton Hessian blocks (D (B, K, n, n), C (B, K - 1, n, n)) of the prior terms."""
    B, K, n = S.shape
    Fm = jac_fn(S[:, :-1].reshape(-1, n), Hs[:, :-1].reshape(-1, Hs.shape[-1]))
    Fm = Fm.detach().reshape(B, K - 1, n, n)  # d m(s_k) / d s_k
    qinv = 1.0 / q
    QF = qinv[:, None] * Fm  # Q^-1 F
    D = torch.zeros(B, K, n, n, dtype=S.dtype)
    D[:, 0] += torch.diag_embed(1.0 / b)  # b: (n,) or per window (B, n)
    D[:, :-1] += Fm.mT @ QF
    D[:, 1:] += torch.diag(qinv)
    return D, -QF


def _map_states(chunks, S, Hs, sb, b, q, step_fn, jac_fn, exact: bool, max_iter: int,
                tol: float):
    """E-step: Newton's method for S* = argmin J over every window at once.

    Returns S* (B, K, n), the block Cholesky factor of the Hessian at S*, the
    chunk NLL sums (B, K) there, and diagnostics.
    """
    B, K, n = S.shape

    def prior_grad(S):
        Sg = S.detach().requires_grad_(True)
        with torch.enable_grad():
            bg, tr, _ = _prior(Sg, Hs, sb, b, q, step_fn)
            (g,) = torch.autograd.grad((bg + tr).sum(), Sg)
        return bg.detach(), tr.detach(), g

    def cost(S):
        with torch.no_grad():
            nll = chunks.values(S.reshape(-1, n)).reshape(B, K)
            bg, tr, _ = _prior(S, Hs, sb, b, q, step_fn)
        return nll.sum(1) + bg + tr

    damping = 0.0
    stalled = torch.zeros(B, dtype=torch.bool)
    for it in range(max_iter + 1):
        val, g_obs, h_obs = chunks.terms(S.reshape(-1, n), exact)
        nll = val.reshape(B, K)
        bg, tr, g_p = prior_grad(S)
        D_p, C = _prior_blocks(S, Hs, q, b, jac_fn)
        g = g_obs.reshape(B, K, n) + g_p
        D = h_obs.reshape(B, K, n, n) + D_p
        factor, lam = _factor_damped(D, C)
        damping = max(damping, lam)
        delta = -_btd_solve(factor, g)
        dec = -(g * delta).sum((1, 2))  # Newton decrement squared (B,)
        active = (dec / 2 > tol) & ~stalled
        if it == max_iter or not bool(active.any()):
            break
        J = nll.sum(1) + bg + tr
        alpha = torch.ones(B, dtype=S.dtype)
        for _ in range(20):  # backtracking, per window
            J_try = cost(S + (alpha * active)[:, None, None] * delta)
            ok = (J_try <= J - ARMIJO * alpha * dec) | ~active
            if bool(ok.all()):
                break
            alpha = torch.where(ok, alpha, alpha / 2)
        alpha = torch.where(ok, alpha, torch.zeros_like(alpha))
        stalled |= active & (alpha == 0)  # no decrease: at the floating-point floor of J
        S = S + (alpha * active)[:, None, None] * delta
    info = {"iterations": it, "damping": damping, "decrement": float(dec.max() / 2),
            "background": bg, "transition": tr}
    return S, factor, nll, info


def _rollout(chunks, learned: _Learned, B: int, K: int, grad: bool, start=None):
    """The windows' forecast s_0, s_k = m(s_{k-1}, h_{k-1}): states, summaries, NLLs.

    ``s_0`` is ``s_b``, or ``start`` (B, n) where it is not NaN (a state
    carried from the window before).
    """
    n = learned.n
    s0 = learned.initial.to(torch.float64).expand(B, n)
    if start is not None:
        s0 = torch.where(torch.isnan(start), s0, start)
    with torch.set_grad_enabled(grad):
        if chunks.fast:
            Hs = chunks.summaries.reshape(B, K, -1).to(torch.float64)
            states = [s0]
            for k in range(1, K):
                states.append(learned.step(states[-1], Hs[:, k - 1]))
            S = torch.stack(states, 1)  # (B, K, n)
            nll = chunks.values(S.reshape(-1, n)).reshape(B, K)
            return S, Hs, nll
        states, summ, nll = [s0], [], []
        for k in range(K):
            row_h, row_v = [], []
            for w in range(B):
                v, h = chunks.nll_and_summary(chunks.ops[w * K + k], states[-1][w])
                row_v.append(v)
                row_h.append(h)
            summ.append(torch.stack(row_h))
            nll.append(torch.stack(row_v))
            if k + 1 < K:
                states.append(learned.step(states[-1], summ[-1]))
        return (torch.stack(states, 1), torch.stack(summ, 1).to(torch.float64),
                torch.stack(nll, 1))
