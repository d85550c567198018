"""Dynamics of the scale state: the forecast models used between chunks.

The state-space model of DESIGN.md section 2 is

.. math:: s_{t+1} = f_\\phi(s_t, h_t) + A_r(h_t) + \\varepsilon_t,
          \\qquad \\varepsilon_t \\sim N(0, Q),

with ``h_t`` a pooled summary of the LM hidden states of chunk ``t``.  This
module holds its pieces:

* :class:`TransitionNetwork` ``f_phi(s, h) = s + g_phi([s, h])``, a residual MLP;
* :class:`LowRankAdapter` ``A_r(h) = B (A h)`` of rank r;
* :class:`RandomWalk`, the forecast model used until spin-up training exists:
  ``s_{t+1} = s_t`` (the filter adds the process noise Q; with Q = 0 it is the
  identity, or persistence, forecast);
* :class:`LearnedDynamics`, the two networks as a :class:`filters.models.Model`
  (so every filter's forecast step can use them once they are trained).

Both networks start at the identity (the last layer of ``g_phi`` and the
adapter's ``B`` are zero), like peft's adapters: an untrained
:class:`LearnedDynamics` forecasts exactly as :class:`RandomWalk`.

Parameter budget (DESIGN section 2: "about 0.1M parameters for d = 768"): at
state and summary width 768 (``HiddenScale`` on a GPT-2-small-sized model),
``TransitionNetwork(768, 768, hidden=32)`` holds 74,528 parameters and
``LowRankAdapter(768, 768, rank=16)`` 24,576, together 99,104.

Shapes: N members, n state size, d summary width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from filters.models import Model

__all__ = ["TransitionNetwork", "LowRankAdapter", "count_parameters", "RandomWalk",
           "LearnedDynamics", "DEFAULT_HIDDEN", "DEFAULT_RANK"]

#: Default hidden width of the transition MLP (with rank 16: ~0.1M parameters at d = 768).
DEFAULT_HIDDEN = 32
#: Default rank of the low-rank adapter.
DEFAULT_RANK = 16


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of a torch module.

    Parameters
    ----------
    module : torch.nn.Module
    trainable_only : bool, default False
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int

    Examples
    --------
    >>> count_parameters(TransitionNetwork(768, 768)) + count_parameters(LowRankAdapter(768, 768))
    99104
    """
    return int(sum(p.numel() for p in module.parameters()
                   if p.requires_grad or not trainable_only))


class TransitionNetwork(nn.Module):
    """Residual MLP ``f_phi(s, h) = s + W2 tanh(W1 [s, h] + b1) + b2``.

    Parameters
    ----------
    state_dim : int
        n, the size of the scale state.
    summary_dim : int
        d, the size of the hidden summary ``h`` (the LM width for a mean-pooled
        final hidden state).
    hidden : int, default 32
        Width of the hidden layer (32 keeps the network near 75k parameters at
        n = d = 768, see the module notes).

    Notes
    -----
    ``W2`` and ``b2`` start at zero, so the untrained network is the identity
    ``f(s, h) = s``.

    Examples
    --------
    >>> import torch
    >>> f = TransitionNetwork(4, 3, hidden=8)
    >>> s, h = torch.randn(2, 4), torch.randn(3)
    >>> torch.equal(f(s, h), s)  # identity at initialisation
    True
    >>> count_parameters(f)  # (4 + 3) * 8 + 8 + 8 * 4 + 4
    100
    """

    def __init__(self, state_dim: int, summary_dim: int, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.state_dim = _check_size(state_dim, "state_dim")
        self.summary_dim = _check_size(summary_dim, "summary_dim")
        self.hidden = _check_size(hidden, "hidden")
        self.inp = nn.Linear(self.state_dim + self.summary_dim, self.hidden)
        self.out = nn.Linear(self.hidden, self.state_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def residual(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``g_phi([s, h])`` in the network's dtype; ``s`` (n,) or (N, n), ``h`` (d,) or (N, d)."""
        dtype = self.inp.weight.dtype
        squeeze = s.ndim == 1
        s2 = (s.unsqueeze(0) if squeeze else s).to(dtype)  # (N, n)
        h2 = h.unsqueeze(0) if h.ndim == 1 else h  # (1 or N, d)
        h2 = h2.to(dtype).expand(s2.shape[0], -1)  # (N, d)
        g = self.out(torch.tanh(self.inp(torch.cat([s2, h2], dim=-1))))  # (N, n)
        return g[0] if squeeze else g

    def forward(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Next state ``s + g_phi([s, h])``, in the dtype of ``s`` (shape of ``s``)."""
        return s + self.residual(s, h).to(s.dtype)


class LowRankAdapter(nn.Module):
    """Rank-r map of the hidden summary into the state, ``A_r(h) = B (A h)``.

    Parameters
    ----------
    state_dim : int
        n.
    summary_dim : int
        d.
    rank : int, default 16
        r (16 gives 24,576 parameters at n = d = 768).

    Notes
    -----
    No biases; ``B`` starts at zero so the untrained adapter adds nothing.

    Examples
    --------
    >>> import torch
    >>> A = LowRankAdapter(5, 3, rank=2)
    >>> A(torch.randn(3)).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0]
    >>> count_parameters(A)  # 3 * 2 + 2 * 5
    16
    """

    def __init__(self, state_dim: int, summary_dim: int, rank: int = DEFAULT_RANK) -> None:
        super().__init__()
        self.state_dim = _check_size(state_dim, "state_dim")
        self.summary_dim = _check_size(summary_dim, "summary_dim")
        self.rank = _check_size(rank, "rank")
        self.A = nn.Linear(self.summary_dim, self.rank, bias=False)
        self.B = nn.Linear(self.rank, self.state_dim, bias=False)
        nn.init.zeros_(self.B.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Adapter output, (n,) for ``h`` (d,) or (N, n) for (N, d)."""
        return self.B(self.A(h))


class RandomWalk(Model):
    """The persistence forecast ``s_{t+1} = s_t`` (one step per chunk).

    With the filters' convention the process noise is added by the filter's
    forecast (``dt * Q`` per step); the assimilator uses ``dt = 1`` and one
    step per chunk, so the state performs a random walk with covariance Q per
    chunk.  Q = 0 (or None) gives the identity forecast.

    Parameters
    ----------
    ndim : int
        n, the state size.

    Examples
    --------
    >>> m = RandomWalk(3)
    >>> m.step(np.ones(3), 0.0, 1.0).tolist(), m.jacobian(np.ones(3), 0.0, 1.0).shape
    ([1.0, 1.0, 1.0], (3, 3))
    """

    #: The step is linear (the identity), so the exact Kalman filter accepts it.
    linear = True

    def __init__(self, ndim: int) -> None:
        self.ndim = _check_size(ndim, "ndim")

    def step(self, x, t, dt):
        return np.array(x, dtype=float, copy=True)

    def jacobian(self, x, t, dt):
        return np.eye(self.ndim)

    def jacobian_diagonal(self, x, t, dt):
        """The diagonal of the (identity) Jacobian, (n,): O(n) for the diagonal EKF."""
        return np.ones(self.ndim)


class LearnedDynamics(Model):
    """``s -> f_phi(s, h) + A_r(h)`` as a :class:`filters.models.Model`.

    The summary ``h`` of the last revealed chunk is set with
    :meth:`set_summary` before each forecast (the assimilator does it after
    scoring a chunk, so the forecast of chunk k + 1 uses chunk k's summary
    only).

    Parameters
    ----------
    transition : TransitionNetwork
    adapter : LowRankAdapter, optional
    initial_state : array_like (n,), optional
        Where a run starts: the learned initial scales s_b of spin-up
        (:mod:`da_embed.spinup`).  The online assimilator uses it as the prior
        mean; None means the zero state.

    Examples
    --------
    >>> dyn = LearnedDynamics(TransitionNetwork(4, 3, hidden=8), LowRankAdapter(4, 3, rank=2))
    >>> dyn.set_summary(np.ones(3))
    >>> dyn.step(np.arange(4.0), 0.0, 1.0).tolist()  # untrained: the identity
    [0.0, 1.0, 2.0, 3.0]
    >>> dyn.jacobian(np.zeros(4), 0.0, 1.0).shape
    (4, 4)
    """

    def __init__(self, transition: TransitionNetwork,
                 adapter: LowRankAdapter | None = None, *, initial_state=None) -> None:
        if not isinstance(transition, TransitionNetwork):
            raise ValueError(f"transition must be a TransitionNetwork, got "
                             f"{type(transition).__name__}")
        if adapter is not None:
            if not isinstance(adapter, LowRankAdapter):
                raise ValueError(f"adapter must be a LowRankAdapter, got {type(adapter).__name__}")
            if (adapter.state_dim, adapter.summary_dim) != (transition.state_dim,
                                                            transition.summary_dim):
                raise ValueError("adapter and transition must have the same state_dim and "
                                 "summary_dim")
        self.transition, self.adapter = transition, adapter
        self.ndim = transition.state_dim
        if initial_state is not None:
            initial_state = np.asarray(initial_state, dtype=float).reshape(-1)
            if initial_state.shape != (self.ndim,) or not np.all(np.isfinite(initial_state)):
                raise ValueError(f"initial_state must hold {self.ndim} finite numbers, got "
                                 f"shape {initial_state.shape}")
        self.initial_state = initial_state
        self._h = torch.zeros(transition.summary_dim, dtype=torch.float64)

    def set_summary(self, h) -> None:
        """Set the hidden summary (d,) used by the next forecast."""
        t = torch.as_tensor(np.asarray(h, dtype=float)).reshape(-1)
        if t.numel() != self.transition.summary_dim:
            raise ValueError(f"summary must have {self.transition.summary_dim} entries, "
                             f"got {t.numel()}")
        self._h = t

    def _torch_step(self, s: torch.Tensor) -> torch.Tensor:
        """float64 ``s + g(s, h) + A(h)``: the networks run in their dtype, the sum in float64."""
        out = s + self.transition.residual(s, self._h).double()
        if self.adapter is not None:
            out = out + self.adapter(self._h.to(self.adapter.A.weight.dtype)).double()
        return out

    def step(self, x, t, dt):
        with torch.no_grad():
            return self._torch_step(torch.as_tensor(np.asarray(x, dtype=float))).numpy()

    def jacobian(self, x, t, dt):
        s = torch.as_tensor(np.asarray(x, dtype=float))
        J = torch.func.jacrev(self._torch_step)(s)  # (n, n)
        return J.detach().numpy()

    def params(self) -> dict:
        return {**super().params(), "transition_parameters": count_parameters(self.transition),
                "adapter_parameters": 0 if self.adapter is None else count_parameters(self.adapter)}

    @property
    def num_parameters(self) -> int:
        """Parameters of the transition network and the adapter together."""
        return self.params()["transition_parameters"] + self.params()["adapter_parameters"]
