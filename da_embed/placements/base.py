"""The common base of all placements: the shared API and the member batching.

A *placement* decides where the scale state ``x`` (n numbers per member, 0 at
identity) enters a frozen Hugging Face causal LM.  All placements share one
small API:

``placement = SomePlacement(model, **options)``
    validates the model and precomputes what the placement needs.
``placement.attach()`` / ``placement.remove()`` / ``with placement.attached():``
    install / remove the hooks; removing restores the model bit for bit.
``placement.logits(input_ids, states)``
    logits (N, B, T, V) of N members in one batched forward pass.
``placement.token_nll(input_ids, states)``
    per-token negative log-likelihoods (N, B, T-1), the observation operator.
``with placement.using(states): model.generate(...)``
    direct calls of the model with a member-major batch of N * B rows.

Shapes use fixed letters: N members, n state size, B batch, T tokens, d model
width, V vocabulary.  Attaching and removing live in
:mod:`~da_embed.placements._attachment`, the argument checks in
:mod:`~da_embed.placements.checks`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ._attachment import Attachment
from .checks import (IGNORE_INDEX, _check_input_ids, _check_mask, _check_model, _check_states,
                     _check_targets, _model_name, rotary_modules)
from .checks import _as_tensor, _check_int  # noqa: F401  (still importable from here)

__all__ = ["Placement", "rotary_modules"]


class Placement(Attachment):
    """Base class of the placements (where a scale state enters a frozen LM).

    Subclasses set ``state_dim`` and implement three small methods:
    ``_install()`` registers the hooks and returns their handles,
    ``_prepare(states)`` turns validated states (N, n) into the tensors the hooks
    read (computed once per forward call, differentiably), and optionally
    ``_run(input_ids, attention_mask, n_members)`` when the default batching
    (repeat the batch N times, member-major) is not the cheapest.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A Hugging Face causal LM (GPT-2 and Llama families are tested).  It is
        never copied; attaching registers hooks, removing deletes them.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        The model the placement acts on.
    state_dim : int
        n, the number of state entries per member.

    Notes
    -----
    *States.* ``states`` is an (N, n) float tensor or array, one row per member;
    the zero row is the unmodified model.  States are cast to the model's dtype
    and device (differentiably: gradients reach float64 states of a float32
    model).

    *Batching.* N members with a batch of B sequences run as one forward pass
    of batch N * B, member-major: rows ``j * B : (j + 1) * B`` belong to member
    ``j``.  Hooks view their tensors as (N, B, ...) and apply member ``j``'s
    scales to its rows.  No weight matrix is copied per member.

    *Freezing.* While attached, every model parameter has ``requires_grad``
    switched off (the LM is frozen; gradients go to the states only); removing
    the placement restores the flags.  Only one placement may be attached to a
    model at a time.

    *Gradients.* ``logits`` and ``token_nll`` build an autograd graph only when
    ``states.requires_grad`` (and grad mode is on); otherwise they run under
    ``torch.no_grad()``.

    Examples
    --------
    >>> import torch
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> placement = HiddenScale(tiny_gpt2())
    >>> with placement.attached():
    ...     logits = placement.logits(torch.tensor([[1, 2, 3]]), torch.zeros(4, 32))
    >>> tuple(logits.shape)  # (N, B, T, V)
    (4, 1, 3, 97)
    """

    state_dim: int

    def __init__(self, model) -> None:
        self.model = _check_model(model, type(self).__name__)
        self._handles: list = []
        self._frozen: list[tuple[nn.Parameter, bool]] = []
        self._ctx: dict[str, Any] | None = None  # what the hooks read, set by using()

    # ------------------------------------------------------------------ metadata
    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype states are cast to (that of the LM head weight)."""
        return self.model.get_output_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        """The device states and token ids are moved to."""
        return self.model.get_output_embeddings().weight.device

    @property
    def vocab_size(self) -> int:
        """V, the number of rows of the input embedding table."""
        return int(self.model.get_input_embeddings().num_embeddings)

    def _options(self) -> dict[str, Any]:
        """The constructor options, JSON-serialisable (subclasses extend)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Metadata for run logs (JSON-serialisable).

        Returns
        -------
        dict
            ``placement`` (class name), ``state_dim``, ``model`` (class name),
            ``model_type`` (the config's), and ``options`` (the constructor
            options needed to rebuild the placement).

        Examples
        --------
        >>> from da_embed.placements import EmbeddingScale
        >>> from da_embed.testing import tiny_llama
        >>> EmbeddingScale(tiny_llama()).describe()["state_dim"]
        32
        """
        config = getattr(self.model, "config", None)
        return {"placement": type(self).__name__, "state_dim": int(self.state_dim),
                "model": _model_name(self.model),
                "model_type": getattr(config, "model_type", None),
                "options": self._options()}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return (f"{type(self).__name__}({_model_name(self.model)}{', ' if opts else ''}{opts}; "
                f"state_dim={self.state_dim}{', attached' if self.is_attached else ''})")

    # ------------------------------------------------------------- validation
    def _check_states(self, states) -> torch.Tensor:
        """Validate states (N, n) and cast them to the model's dtype and device."""
        return _check_states(states, int(self.state_dim), type(self).__name__,
                             device=self.device, dtype=self.dtype)  # (N, n)

    def _check_input_ids(self, input_ids) -> torch.Tensor:
        return _check_input_ids(input_ids, self.model, device=self.device)  # (B, T)

    def _check_mask(self, attention_mask, input_ids: torch.Tensor) -> torch.Tensor | None:
        return _check_mask(attention_mask, input_ids, device=self.device)  # (B, T)

    # ------------------------------------------------------------ the batching
    @contextlib.contextmanager
    def using(self, states) -> Iterator["Placement"]:
        """Context manager: direct calls of the model use these member states.

        Inside the block, every forward pass of ``self.model`` (including
        ``generate``) must have a batch of N * B rows, member-major (rows
        ``j * B : (j + 1) * B`` belong to member ``j``), e.g.
        ``input_ids.repeat(N, 1)``.

        Parameters
        ----------
        states : torch.Tensor or numpy.ndarray
            Shape (N, n).

        Yields
        ------
        Placement
            ``self``.

        Examples
        --------
        >>> import torch
        >>> from da_embed.placements import EmbeddingScale
        >>> from da_embed.testing import tiny_gpt2
        >>> model = tiny_gpt2()
        >>> placement = EmbeddingScale(model)
        >>> ids = torch.tensor([[5, 6, 7]])  # (B, T) = (1, 3)
        >>> with placement.attached(), placement.using(torch.zeros(2, 32)):
        ...     out = model.generate(ids.repeat(2, 1), max_new_tokens=2, do_sample=False,
        ...                          pad_token_id=0)
        >>> tuple(out.shape)  # (N * B, T + 2)
        (2, 5)
        """
        self._require_attached("using")
        states = self._check_states(states)
        with self._activated(states):
            yield self

    @contextlib.contextmanager
    def _activated(self, states: torch.Tensor) -> Iterator[None]:
        previous = self._ctx
        ctx = self._prepare(states)
        ctx.setdefault("n_members", int(states.shape[0]))
        self._ctx = ctx
        try:
            yield
        finally:
            self._ctx = previous

    def _members(self, t: torch.Tensor) -> torch.Tensor:
        """View a hook's (N * B, ...) tensor as (N, B, ...)."""
        n_members = self._ctx["n_members"]
        if t.shape[0] % n_members:
            raise ValueError(f"{type(self).__name__}: the model was called with a batch of "
                             f"{t.shape[0]} rows, not a multiple of the N = {n_members} members; "
                             f"inside using(states) repeat the inputs member-major, "
                             f"e.g. input_ids.repeat(N, 1)")
        return t.reshape(n_members, t.shape[0] // n_members, *t.shape[1:])  # (N, B, ...)

    def _prepare(self, states: torch.Tensor) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             n_members: int) -> torch.Tensor:
        """One forward pass of batch N * B; returns logits (N, B, T, V)."""
        B, T = input_ids.shape
        ids = input_ids.repeat(n_members, 1)  # (N * B, T), member-major
        mask = None if attention_mask is None else attention_mask.repeat(n_members, 1)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.logits.reshape(n_members, B, T, -1)  # (N, B, T, V)

    # ------------------------------------------------------------ public calls
    def logits(self, input_ids, states, attention_mask=None) -> torch.Tensor:
        """Logits of N members, run as one batched forward pass.

        Parameters
        ----------
        input_ids : torch.Tensor
            Token ids, shape (B, T), integer.
        states : torch.Tensor or numpy.ndarray
            Member states, shape (N, n); a zero row is the unmodified model.
            May require grad.
        attention_mask : torch.Tensor, optional
            Shape (B, T), passed to the model (repeated for every member).

        Returns
        -------
        torch.Tensor
            Logits, shape (N, B, T, V), in the model's dtype.

        See Also
        --------
        token_nll : the negative log-likelihoods of the next tokens under these logits.

        Examples
        --------
        >>> from da_embed.placements import EmbeddingScale
        >>> from da_embed.testing import tiny_llama, random_input_ids
        >>> import torch
        >>> model = tiny_llama()
        >>> placement = EmbeddingScale(model).attach()
        >>> ids = random_input_ids(model, batch=2, length=6)
        >>> logits = placement.logits(ids, torch.zeros(3, 32))  # (N, B, T, V)
        >>> placement.remove()
        >>> torch.allclose(logits[1], model(ids).logits, atol=1e-6)
        True
        """
        self._require_attached("logits")
        ids = self._check_input_ids(input_ids)
        mask = self._check_mask(attention_mask, ids)
        states = self._check_states(states)
        if self.model.training:
            import warnings
            warnings.warn(f"{_model_name(self.model)} is in training mode (dropout on): members "
                          f"will differ by more than their states; call model.eval()",
                          RuntimeWarning, stacklevel=2)
        grad = torch.is_grad_enabled() and states.requires_grad
        with torch.set_grad_enabled(grad), self._activated(states):
            return self._run(ids, mask, int(states.shape[0]))  # (N, B, T, V)

    def token_nll(self, input_ids, states, targets=None, attention_mask=None) -> torch.Tensor:
        """Per-token negative log-likelihoods of N members (the observation operator).

        ``nll[j, b, t] = -log p_j(targets[b, t] | input_ids[b, :t + 1])`` where
        ``p_j`` is the model under member ``j``'s state.  Computed with a fused
        log-softmax + gather (``torch.nn.functional.cross_entropy``), in the
        model's dtype, with no extra (N, B, T, V) copy.

        Parameters
        ----------
        input_ids : torch.Tensor
            Token ids, shape (B, T).
        states : torch.Tensor or numpy.ndarray
            Member states, shape (N, n).  May require grad (EKF, 4D-Var).
        targets : torch.Tensor, optional
            Next-token targets, shape (B, T - 1) (aligned with positions
            ``0 .. T - 2``) or (B, T) (one per position).  Default
            ``input_ids[:, 1:]``.  Entries equal to -100 give an NLL of 0.
        attention_mask : torch.Tensor, optional
            Shape (B, T).

        Returns
        -------
        torch.Tensor
            Shape (N, B, T - 1), or (N, B, T) for (B, T) targets.

        See Also
        --------
        logits : the logits these are computed from (one batched forward pass).

        Examples
        --------
        >>> from da_embed.placements import HiddenScale
        >>> from da_embed.testing import tiny_gpt2, random_input_ids
        >>> import torch
        >>> model = tiny_gpt2()
        >>> ids = random_input_ids(model, batch=2, length=6)
        >>> states = torch.zeros(4, 32, requires_grad=True)
        >>> with HiddenScale(model).attached() as placement:
        ...     nll = placement.token_nll(ids, states)
        >>> tuple(nll.shape)  # (N, B, T - 1)
        (4, 2, 5)
        >>> tuple(torch.autograd.grad(nll.sum(), states)[0].shape)
        (4, 32)
        """
        self._require_attached("token_nll")
        ids = self._check_input_ids(input_ids)
        B, T = ids.shape
        tgt = _check_targets(targets, ids, self.vocab_size, device=self.device)  # (B, L)
        L = tgt.shape[1]
        logits = self.logits(ids, states, attention_mask)  # (N, B, T, V)
        N, V = logits.shape[0], logits.shape[-1]
        full = torch.full((B, T), IGNORE_INDEX, dtype=torch.long, device=self.device)
        full[:, :L] = tgt  # (B, T); the unused last position is ignored
        full = full.unsqueeze(0).expand(N, B, T)  # (N, B, T)
        nll = F.cross_entropy(logits.reshape(-1, V), full.reshape(-1), reduction="none",
                              ignore_index=IGNORE_INDEX)  # (N * B * T,)
        return nll.reshape(N, B, T)[:, :, :L]  # (N, B, L)
