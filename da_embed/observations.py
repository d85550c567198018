"""Revealed-token observations: per-token NLLs of a chunk as an observation operator.

When a chunk of text is revealed, every filter of :mod:`filters` sees it through
:class:`TokenNLLObservation`: the operator maps a state (or an ensemble of
states) to the vector of per-token negative log-likelihoods (NLLs) of the
chunk's tokens, ``h(s) = (nll_1(s), ..., nll_L(s))``.  The exact per-token
gradients (autograd, or the analytic formula for ``HiddenScale``) give its
Jacobian, for the EKF and 3D-Var.

The pseudo-observation (the target of the update)
-------------------------------------------------
Tokens are not noisy measurements of NLLs, so the "observation" ``y`` is a
target the update moves the NLLs towards, with noise ``R``.  Two choices are
offered by :func:`pseudo_observation`:

``"decrement"`` (the default): ``y = h_bar - c`` where ``h_bar`` is the
    filter's own prediction of the chunk's NLLs (``h(mean)`` for the EKF and
    3D-Var, the ensemble mean of ``h(members)`` for ensemble filters, the
    weighted sigma-point mean for the UKF; :func:`predicted_observation`), so
    the innovation is ``-c`` for every token.  With ``R = r I`` the linearised
    update is

    .. math:: s_a = s_f - \\frac{c}{r} \\big(P_f^{-1} + J^\\top J / r\\big)^{-1}
              J^\\top \\mathbf 1, \\qquad P_a^{-1} = P_f^{-1} + J^\\top J / r,

    with ``J`` (L, n) the per-token gradients: a natural-gradient step on the
    chunk's total NLL with the empirical Fisher matrix accumulated in ``P``.
    For ``c = r = 1`` this is exactly the EKF form of online natural-gradient
    learning (Ollivier 2018, "Online natural gradient as a Kalman filter"),
    the Bayesian reading of dynamic evaluation; its fixed point on repeated
    data is the maximum-likelihood state.  ``c / r`` sets the step length and
    ``1 / r`` the weight of a token's Fisher information against the prior
    ``P``; the defaults ``c = 1``, ``r = 1`` are that exact correspondence
    (to be tuned on validation text).

``"zero"``: ``y = 0`` (the smallest possible NLL).  The innovation is
    ``-nll_t``, so the update is a Gauss-Newton step on
    ``sum_t nll_t^2 / (2 r)``: tokens are weighted by their own NLL, which
    over-weights rare tokens and has the wrong fixed point (not the MLE).  It
    is the literal "ensemble Kalman inversion towards NLL 0" of the design
    notes, kept for comparison.

Shapes: N members, n state size, L tokens in the chunk (= number of
observations m), W window length (context + chunk), d model width, V
vocabulary.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from filters import UKF
from filters.models import ObservationOperator
from filters.states import EnsembleState

from .placements import HiddenScale, Placement, Subspace

__all__ = ["TokenNLLObservation", "pseudo_observation", "predicted_observation",
           "verification_scores", "TARGETS"]

#: Target choices of :func:`pseudo_observation`.
TARGETS = ("decrement", "zero")

#: Target id that cross-entropy skips (as in torch and the placements).
_IGNORE = -100

#: Relative tolerance of the HiddenScale fast path's self-check against the model's logits.
_FAST_PATH_TOL = 1e-4

#: Rows (members x chunk tokens) of one head product of the fast path.  The members'
#: logits are a (rows, V) block that cross-entropy reads right after the matmul
#: writes it; blocks of 256 rows (8 members of a 32-token chunk) stay in cache and
#: cut the member-head CPU time by about a fifth against one (N L, V) product on
#: the reference model (V = 4096), and do not lose at V = 50257
#: (tests/benchmarks/bench_lm_cost.py).
_FAST_BLOCK_ROWS = 256


def _hidden_parts(placement: Placement):
    """(HiddenScale, Subspace or None) if the fast head-only path applies, else None."""
    inner, sub = placement, None
    if isinstance(placement, Subspace):
        inner, sub = placement.placement, placement
    if not isinstance(inner, HiddenScale):
        return None
    head = inner.model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        return None
    config = getattr(inner.model, "config", None)
    # Logit post-processing in the model's forward would break "logits = head(h)".
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            return None
    return inner, sub


class TokenNLLObservation(ObservationOperator):
    """Per-token NLLs of one chunk under a state: ``h(s) = nll(chunk | context; s)``.

    Parameters
    ----------
    placement : Placement
        An attached placement (possibly a :class:`~da_embed.placements.Subspace`);
        the state is its state (n = ``placement.state_dim``).
    window : array_like of int
        Token ids of the context followed by the chunk, shape (W,).  The model
        reads ``window[:-1]``; the targets are the last ``n_targets`` tokens.
    n_targets : int
        L, the number of chunk tokens (1 <= L <= W - 1).
    member_batch : int, default 32
        Members per forward pass (bounds memory for large ensembles).
    fast : bool, optional
        Use the head-only path for ``HiddenScale`` (the trunk runs once, here,
        and members only re-run the LM head).  Default: when it applies; it is
        checked once against the model's own logits and dropped if they differ.

    Attributes
    ----------
    nobs : int
        L.
    ndim : int
        n.
    targets : numpy.ndarray
        The chunk's token ids (L,).
    tokens : numpy.ndarray
        The whole window, context then chunk (W,).
    summary_ : numpy.ndarray or None
        Mean over the chunk's positions of the LM head's input (the final
        hidden state, before any ``HiddenScale``), shape (d,), set by the
        fast path at construction and otherwise by :meth:`score`.
    fast_ : bool
        Whether the head-only path is used.

    Notes
    -----
    Evaluations are cached (the last few distinct inputs), so a filter that
    evaluates ``h`` at the same members the assimilator already scored pays
    nothing.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> placement = HiddenScale(tiny_gpt2()).attach()
    >>> H = TokenNLLObservation(placement, np.arange(12), n_targets=4)
    >>> H(np.zeros((3, 32))).shape, H.jacobian(np.zeros(32)).shape  # (N, L), (L, n)
    ((3, 4), (4, 32))
    >>> placement.remove()
    """

    linear = False

    def __init__(self, placement: Placement, window, n_targets: int, *, member_batch: int = 32,
                 fast: bool | None = None) -> None:
        if not isinstance(placement, Placement):
            raise ValueError(f"placement must be a Placement, got {type(placement).__name__}")
        if not placement.is_attached:
            raise ValueError(f"{type(placement).__name__} must be attached (placement.attach() "
                             "or `with placement.attached():`) before building observations")
        ids = torch.as_tensor(np.asarray(window)).reshape(-1).to(torch.long)  # (W,)
        W = int(ids.numel())
        L = int(n_targets)
        if not 1 <= L <= W - 1:
            raise ValueError(f"n_targets must be in [1, W - 1] = [1, {W - 1}] for a window of "
                             f"{W} tokens, got {n_targets}")
        if int(member_batch) < 1:
            raise ValueError(f"member_batch must be >= 1, got {member_batch}")
        self.placement = placement
        self.ndim = int(placement.state_dim)
        self.nobs = L
        self.member_batch = int(member_batch)
        device = placement.device
        self._inputs = ids[:-1].unsqueeze(0).to(device)  # (1, W - 1)
        tgt = ids[1:].clone()
        tgt[: W - 1 - L] = _IGNORE  # context positions are not observed
        self._targets = tgt.unsqueeze(0).to(device)  # (1, W - 1)
        self.targets = ids[W - L:].numpy().copy()  # (L,)
        self.tokens = ids.numpy().copy()  # (W,) context + chunk (read by TwoPass's pass 1)
        self._cache: OrderedDict = OrderedDict()
        self._logits = (None, None)  # (state bytes, logits (L, V)) of the last single-state score
        self.summary_: np.ndarray | None = None
        parts = _hidden_parts(placement) if fast in (None, True) else None
        if fast and parts is None:
            raise ValueError(f"fast=True needs a HiddenScale (or a Subspace of one) on a model "
                             f"with a linear LM head; got {type(placement).__name__}")
        self.fast_ = False
        if parts is not None:
            self._setup_fast(*parts)

    # ---------------------------------------------------------------- fast path
    def _setup_fast(self, hidden: HiddenScale, sub: Subspace | None) -> None:
        model = hidden.model
        head = model.get_output_embeddings()
        base = getattr(model, "base_model", model)
        captured = {}
        L = self.nobs

        def grab_head_input(module, args):
            captured["h"] = args[0]

        def grab_base_output(module, args, output):
            captured["h"] = output[0]  # last_hidden_state (1, W - 1, d)

        # The trunk runs once, here.  When the model has a separate base model, its
        # output gives the chunk's hidden states and only the last position goes
        # through the model's own head (for the self-check below), instead of L.
        split = base is not model
        handle = (base.register_forward_hook(grab_base_output) if split
                  else head.register_forward_pre_hook(grab_head_input))
        try:
            with torch.no_grad():  # the placement's hooks are idle outside its calls
                try:
                    out = model(input_ids=self._inputs, use_cache=False,
                                logits_to_keep=1 if split else L)
                except TypeError:  # a model without logits_to_keep
                    out = model(input_ids=self._inputs, use_cache=False)
        finally:
            handle.remove()
        h = captured["h"][0, -L:]  # (L, d), unscaled final hidden state
        self._W = head.weight  # (V, d)
        self._b = head.bias  # (V,) or None
        self._h = h
        self._y = torch.as_tensor(self.targets, device=h.device)  # (L,)
        self._sub = sub
        self.summary_ = h.detach().double().mean(0).cpu().numpy()  # (d,)
        # Self-check: the model's logits at the last position must be head(h) (no logit
        # post-processing, and h really is the head's input); else the slow path is used.
        logits_model = out.logits[0, -1]  # (V,)
        with torch.no_grad():
            mine = F.linear(h[-1], self._W, self._b)  # (V,)
        scale = float(logits_model.abs().max().clamp_min(1.0))
        if float((mine - logits_model).abs().max()) <= _FAST_PATH_TOL * scale:
            self.fast_ = True

    def _full(self, X: torch.Tensor) -> torch.Tensor:
        """Full HiddenScale states (N, d) from the operator's states (N, n)."""
        return X if self._sub is None else self._sub.to_full(X)

    def _fast_nll(self, X: torch.Tensor) -> torch.Tensor:
        """NLLs (N, L) from the cached hidden states; differentiable in X.

        For one state without gradient the logits are kept (keyed by the state's
        bytes): the EKF's Jacobian is taken at the state it has just scored, and
        re-uses them instead of a second (L, d) x (d, V) head product.
        """
        s = self._full(X).to(self._h.dtype)  # (N, d)
        hs = self._h.unsqueeze(0) * torch.exp(s).unsqueeze(1)  # (N, L, d)
        logits = F.linear(hs, self._W, self._b)  # (N, L, V)
        N, L, V = logits.shape
        y = self._y.unsqueeze(0).expand(N, L)
        nll = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1),
                              reduction="none").reshape(N, L)  # (N, L)
        if N == 1 and not X.requires_grad:
            self._logits = (X.detach().cpu().numpy().tobytes(), logits[0])
        return nll

    def _fast_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Analytic per-token gradients (L, n) (DESIGN section 8, item 3)."""
        s = self._full(x.unsqueeze(0))[0].to(self._h.dtype)  # (d,)
        hs = self._h * torch.exp(s)  # (L, d)
        key, kept = self._logits
        if key is not None and key == x.detach().cpu().numpy().tobytes():
            logits = kept  # the score's logits at this very state
        else:
            logits = F.linear(hs, self._W, self._b)  # (L, V)
        p = torch.softmax(logits, dim=-1)  # (L, V)
        p[torch.arange(self.nobs), self._y] -= 1.0  # softmax - onehot(y)
        G = hs * (p @ self._W)  # (L, d)
        if self._sub is not None:
            G = G.double() @ self._sub.basis.to(G.device)  # (L, k)
        return G

    # ------------------------------------------------------------------ checks
    def _as_states(self, X) -> tuple[torch.Tensor, bool]:
        arr = np.asarray(X, dtype=float)
        single = arr.ndim == 1
        arr2 = arr[None] if single else arr
        if arr2.ndim != 2 or arr2.shape[1] != self.ndim:
            raise ValueError(f"states must have shape (n,) or (N, n) with n = {self.ndim}, "
                             f"got {arr.shape}")
        if not np.all(np.isfinite(arr2)):
            raise ValueError("states must be finite; got NaN or inf (the filter diverged?)")
        return torch.from_numpy(np.ascontiguousarray(arr2)), single

    # ------------------------------------------------------------ evaluation
    def _nll_batch(self, X: torch.Tensor) -> torch.Tensor:
        """NLLs (N, L) for states (N, n), batched over members, no gradient unless X needs it."""
        outs = []
        step = self.member_batch
        if self.fast_:
            step = min(step, max(1, _FAST_BLOCK_ROWS // self.nobs))
        for i in range(0, X.shape[0], step):
            Xb = X[i:i + step]
            if self.fast_:
                with torch.set_grad_enabled(Xb.requires_grad):
                    outs.append(self._fast_nll(Xb))
            else:
                nll = self.placement.token_nll(self._inputs, Xb, targets=self._targets)
                outs.append(nll[:, 0, -self.nobs:])  # (b, L)
        return torch.cat(outs)

    def __call__(self, X) -> np.ndarray:
        """Per-token NLLs: (L,) for a state (n,), (N, L) for states (N, n), float64."""
        Xt, single = self._as_states(X)
        key = (tuple(Xt.shape), Xt.numpy().tobytes())
        hit = self._cache.get(key)
        if hit is None:
            with torch.no_grad():
                hit = self._nll_batch(Xt).double().cpu().numpy()
            self._cache[key] = hit
            if len(self._cache) > 4:
                self._cache.popitem(last=False)
        return (hit[0] if single else hit).copy()

    def score(self, x) -> np.ndarray:
        """Per-token NLLs (L,) under one state (n,); also sets :attr:`summary_`.

        This is the prequential score of the chunk when ``x`` is the state
        estimated from earlier chunks.
        """
        if self.fast_ or self.summary_ is not None:
            return self(x)
        head = self.placement.model.get_output_embeddings()
        captured = {}

        def grab(module, args):  # runs before the placement's own hook (prepend)
            captured["h"] = args[0]

        handle = head.register_forward_pre_hook(grab, prepend=True)
        try:
            out = self(x)
        finally:
            handle.remove()
        if "h" in captured:
            L = self.nobs
            self.summary_ = captured["h"][0, -L:].detach().double().mean(0).cpu().numpy()
        return out

    def jacobian(self, x) -> np.ndarray:
        """Exact per-token gradients ``d nll_t / d s`` at ``x`` (n,), shape (L, n).

        ``HiddenScale`` (and subspaces of it) use the analytic formula
        ``G = (h * exp(s)) * ((softmax(logits) - onehot(y)) @ W_head)``; other
        placements run L copies of the state as L members in one batched pass
        and back-propagate ``sum_t nll_t(copy t)`` once (row t of the gradient
        is token t's gradient).
        """
        Xt, single = self._as_states(x)
        if not single:
            raise ValueError(f"jacobian needs one state of shape (n,) = ({self.ndim},), "
                             f"got {tuple(Xt.shape)}")
        if self.fast_:
            with torch.no_grad():
                return self._fast_jacobian(Xt[0]).double().cpu().numpy()
        L = self.nobs
        rows = []
        for i in range(0, L, self.member_batch):
            b = min(self.member_batch, L - i)
            copies = Xt.expand(b, -1).clone().requires_grad_(True)  # (b, n)
            with torch.enable_grad():
                nll = self.placement.token_nll(self._inputs, copies, targets=self._targets)
                pos = nll.shape[-1] - L + i + torch.arange(b)  # (b,) positions in the window
                picked = nll[torch.arange(b), 0, pos]  # copy j holds token i + j
                (g,) = torch.autograd.grad(picked.sum(), copies)
            rows.append(g.detach().double())
        return torch.cat(rows).cpu().numpy()  # (L, n)

    def value_and_gradient(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Per-token NLLs (L,) and the gradient (n,) of their sum, at ``x`` (n,).

        One backward pass (or the analytic formula for ``HiddenScale``).
        """
        Xt, single = self._as_states(x)
        if not single:
            raise ValueError(f"value_and_gradient needs one state of shape (n,), "
                             f"got {tuple(Xt.shape)}")
        if self.fast_:
            return self(x), self.jacobian(x).sum(axis=0)
        xg = Xt.clone().requires_grad_(True)
        with torch.enable_grad():
            nll = self._nll_batch(xg)[0]  # (L,)
            (g,) = torch.autograd.grad(nll.sum(), xg)
        return nll.detach().double().cpu().numpy(), g[0].double().cpu().numpy()

    def params(self) -> dict:
        return {**super().params(), "placement": type(self.placement).__name__,
                "fast": bool(self.fast_)}


# ----------------------------------------------------------------------------
# The pseudo-observation and the scores of the verification rule
# ----------------------------------------------------------------------------
def predicted_observation(filter, state, obs: ObservationOperator) -> np.ndarray:
    """The filter's own prediction of the observations, shape (m,).

    The ensemble mean of ``obs(members)`` for ensemble states, the weighted
    sigma-point mean for :class:`filters.UKF`, ``obs(mean)`` otherwise (EKF,
    3D-Var, the baselines).  Evaluations are cached by the operator, so the
    filter's own later call costs nothing.

    Parameters
    ----------
    filter : filters.Filter
        The filter (or baseline) whose state this is.
    state : GaussianState, EnsembleState or PointState
        The forecast state.
    obs : ObservationOperator
        The observation operator (e.g. a :class:`TokenNLLObservation`).

    Returns
    -------
    ndarray (m,)
        The predicted observations.

    Examples
    --------
    >>> from filters import EKF
    >>> from filters.models import CallableObservation
    >>> from filters.states import GaussianState
    >>> H = CallableObservation(lambda x: x ** 2, ndim=1, nobs=1)
    >>> predicted_observation(EKF(), GaussianState(np.array([2.0]), np.eye(1)), H).tolist()
    [4.0]
    """
    if isinstance(state, EnsembleState):
        return np.asarray(obs(state.members)).mean(axis=0)
    if isinstance(filter, UKF):
        sp = filter.sigma_points(state.mean, state.cov)
        return sp.wm @ np.asarray(obs(sp.points))
    return np.asarray(obs(state.mean))


def pseudo_observation(predicted, target: str = "decrement", decrement: float = 1.0) -> np.ndarray:
    """The target ``y`` of an update on revealed tokens (see the module notes).

    Parameters
    ----------
    predicted : array_like (L,)
        The filter's prediction of the per-token NLLs
        (:func:`predicted_observation`).
    target : {"decrement", "zero"}
        ``"decrement"``: ``y = predicted - decrement`` (every innovation is
        ``-decrement``: a natural-gradient step, Ollivier 2018).
        ``"zero"``: ``y = 0``.
    decrement : float, default 1.0
        The innovation per token (nats) of the ``"decrement"`` target.

    Returns
    -------
    numpy.ndarray (L,)

    Examples
    --------
    >>> pseudo_observation([3.0, 5.0]).tolist(), pseudo_observation([3.0, 5.0], "zero").tolist()
    ([2.0, 4.0], [0.0, 0.0])
    """
    p = np.asarray(predicted, dtype=float)
    if target == "decrement":
        if not (np.isfinite(decrement) and decrement > 0):
            raise ValueError(f"decrement must be a finite number > 0, got {decrement!r}")
        return p - float(decrement)
    if target == "zero":
        return np.zeros_like(p)
    raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")


def verification_scores(nll) -> np.ndarray:
    """Revealed-token scores of K candidates for the seeds' verification rule.

    ``score_k = -(mean_t nll_kt - mean_j mean_t nll_jt)``: the candidate's
    mean log-likelihood of the revealed chunk, centred over the candidates
    (a baseline that removes the common part, as in evolution strategies).

    Parameters
    ----------
    nll : array_like (K, L)
        Per-token NLLs of the chunk under each candidate state.

    Returns
    -------
    numpy.ndarray (K,)
        Zero mean; larger is better.

    Examples
    --------
    >>> verification_scores([[1.0, 1.0], [3.0, 3.0]]).tolist()
    [1.0, -1.0]
    """
    m = np.asarray(nll, dtype=float).mean(axis=1)  # (K,)
    return -(m - m.mean())
