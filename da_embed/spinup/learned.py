"""The learned quantities of spin-up: s_b, b, log diag Q, the transition network, the adapter."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from ..dynamics import LearnedDynamics, LowRankAdapter, TransitionNetwork
from .config import SpinupConfig, SpinupResult

__all__: list[str] = []


class _Learned:
    """s_b, log diag Q, the transition network and the adapter (float64)."""

    def __init__(self, n: int, d: int, config: SpinupConfig, hypersurface=None):
        if hypersurface is not None:
            self.transition, self.adapter = hypersurface.transition, hypersurface.adapter
            self.initial = hypersurface.initial_state
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.transition = TransitionNetwork(n, d, config.hidden).double()
                self.adapter = LowRankAdapter(n, d, config.rank).double()
            self.initial = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.log_q = nn.Parameter(torch.full((n,), math.log(config.q_init),
                                             dtype=torch.float64))
        self.log_b = nn.Parameter(torch.full((n,), math.log(config.background_var),
                                             dtype=torch.float64))
        self.n, self.d = n, d

    def named(self) -> "OrderedDict[str, torch.Tensor]":
        out = OrderedDict([("initial_state", self.initial), ("log_b", self.log_b),
                           ("log_q", self.log_q)])
        out.update((f"transition.{k}", v) for k, v in self.transition.named_parameters())
        out.update((f"adapter.{k}", v) for k, v in self.adapter.named_parameters())
        return out

    def trainable(self, config: SpinupConfig) -> list[tuple[str, torch.Tensor]]:
        keep = {"initial": ("initial_state", "log_b"), "q": ("log_q",),
                "transition": ("transition.",), "adapter": ("adapter.",)}
        prefixes = tuple(x for p in config.learn for x in keep[p])
        strong_unused = ("log_b", "log_q") if config.constraint == "strong" else ()
        if config.objective == "predictive":  # b is the filter's P0, fixed as in compare
            strong_unused = ("log_b",)
        closed_form = (("initial_state", "log_b") if config.constraint == "weak"
                       and config.climatology and config.objective == "em"
                       else ())  # updated by climatology_update
        return [(k, v) for k, v in self.named().items()
                if k.startswith(prefixes) and k not in strong_unused + closed_form]

    def shrunk(self) -> list[torch.Tensor]:
        """The parameters that are zero for the random walk (``shrinkage``'s prior)."""
        return [self.transition.out.weight, self.transition.out.bias, self.adapter.B.weight]

    def climatology_update(self, S: torch.Tensor, V: torch.Tensor, rate: float) -> None:
        """Move s_b and b a fraction ``rate`` to the mean and variance of the states.

        ``S`` (..., n) posterior means, ``V`` (..., n) their marginal variances.
        """
        with torch.no_grad():
            S, V = S.reshape(-1, self.n), V.reshape(-1, self.n)
            mean = S.mean(0)
            var = ((S - mean) ** 2 + V).mean(0).clamp_min(1e-12)
            b = (1 - rate) * torch.exp(self.log_b) + rate * var
            self.initial.copy_((1 - rate) * self.initial + rate * mean)
            self.log_b.copy_(torch.log(b))

    def step(self, S: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """``m(s, h) = f_phi(s, h) + A_r(h)`` for S (N, n), H (N, d)."""
        return self.transition(S, H) + self.adapter(H.to(self.adapter.A.weight.dtype))

    def jacobian(self, S: torch.Tensor, H: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """``d m / d s`` (N, n, n) at S (N, n), H (N, d): ``I + W2 diag(1 - t^2) W1_s``.

        Differentiable in the parameters with ``grad=True`` (the M-step's
        linearised variances depend on it).
        """
        tr = self.transition
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            t = torch.tanh(tr.inp(torch.cat([S, H], dim=-1)))  # (N, hidden)
            W1s = tr.inp.weight[:, :self.n]  # (hidden, n)
            J = tr.out.weight @ ((1 - t * t).unsqueeze(-1) * W1s)  # (N, n, n)
        return J + torch.eye(self.n, dtype=J.dtype)

    def dynamics(self) -> LearnedDynamics:
        return LearnedDynamics(copy.deepcopy(self.transition), copy.deepcopy(self.adapter),
                               initial_state=self.initial.detach().numpy().copy())

    def result(self, config: SpinupConfig, step: int, history, checkpoint,
               placement: dict) -> SpinupResult:
        """The learned quantities as a :class:`~da_embed.spinup.SpinupResult` (copies, detached)."""
        n = self.n
        q = (np.zeros(n) if config.constraint == "strong"
             else torch.exp(self.log_q.detach()).numpy().copy())
        return SpinupResult(self.dynamics(), q, self.initial.detach().numpy().copy(),
                            torch.exp(self.log_b.detach()).numpy().copy(), step, config,
                            history, checkpoint, placement)
