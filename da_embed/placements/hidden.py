"""``HiddenScale``: per-dimension log-scales of the final hidden state."""

from __future__ import annotations

from typing import Any

import torch

from .base import Placement

__all__ = ["HiddenScale"]


class HiddenScale(Placement):
    r"""Scale the final hidden state per dimension, just before the LM head.

    For member j with state :math:`x_j \in \mathbb{R}^d`,

    .. math:: \text{logits}_j = \text{head}\big(h \odot \exp(x_j)\big),

    where :math:`h` (B, T, d) is the input of ``model.get_output_embeddings()``
    (after the final layer norm).  ``x = 0`` is the unmodified model.

    This is the cheap placement: :meth:`logits` runs the trunk **once** (batch
    B) and a forward pre-hook on the LM head expands its input to the N
    members, ``h (1, B, T, d) * exp(x) (N, 1, 1, d) -> (N * B, T, d)``, so only
    the head (and any logit post-processing in the model's forward) runs per
    member.  Inside :meth:`using` (direct calls, e.g. ``generate``) the batch
    is already N * B rows and the hook scales rows member by member.

    For this placement the per-token gradients are analytic (DESIGN section 8):
    ``d nll_t / d x = (h_t * exp(x)) * ((softmax(logits_t) - onehot(y_t)) @ W_head)``;
    :meth:`token_nll` also supports autograd.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A Hugging Face causal LM with an output head
        (``get_output_embeddings()``, whose input is scaled).

    Attributes
    ----------
    state_dim : int
        d_model (the input width of the LM head).

    Examples
    --------
    >>> import torch
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_llama, random_input_ids
    >>> model = tiny_llama()
    >>> ids = random_input_ids(model, batch=2, length=5)
    >>> with HiddenScale(model).attached() as placement:
    ...     nll = placement.token_nll(ids, torch.zeros(8, 32))  # 8 members, one trunk pass
    >>> tuple(nll.shape)
    (8, 2, 4)
    """

    def __init__(self, model) -> None:
        super().__init__(model)
        head = self.model.get_output_embeddings()
        self.state_dim = int(head.weight.shape[1])

    def _install(self) -> list:
        head = self.model.get_output_embeddings()
        return [head.register_forward_pre_hook(self._pre_hook)]

    def _prepare(self, states: torch.Tensor) -> dict[str, Any]:
        return {"scale": torch.exp(states), "expand": False}  # (N, d)

    def _pre_hook(self, module, args):
        ctx = self._ctx
        if ctx is None or not args:
            return None
        h = args[0]  # (B, T, d) when expanding, else (N * B, T, d)
        scale = ctx["scale"].to(h.dtype)  # (N, d)
        n_members = scale.shape[0]
        if ctx["expand"]:
            shape = (n_members, *([1] * (h.ndim - 1)), -1)  # (N, 1, 1, d)
            hs = h.unsqueeze(0) * scale.reshape(shape)  # (N, B, T, d)
            hs = hs.reshape(n_members * h.shape[0], *h.shape[1:])  # (N * B, T, d)
        else:
            hm = self._members(h)  # (N, B, T, d)
            hs = (hm * scale.reshape(n_members, *([1] * (hm.ndim - 2)), -1)).reshape(h.shape)
        return (hs, *args[1:])

    def _run(self, input_ids, attention_mask, n_members):
        B, T = input_ids.shape
        self._ctx["expand"] = True  # the trunk runs once, the head per member
        try:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        finally:
            self._ctx["expand"] = False
        return out.logits.reshape(n_members, B, T, -1)  # (N, B, T, V)
