"""``EmbeddingScale``: per-dimension log-scales of the input token embeddings."""

from __future__ import annotations

from typing import Any

import torch

from .base import Placement

__all__ = ["EmbeddingScale"]


class EmbeddingScale(Placement):
    r"""Scale the token embeddings per model dimension (the Adaptive Embedding Scaling seed).

    For member j with state :math:`x_j \in \mathbb{R}^d` (d = d_model), every
    token embedding becomes

    .. math:: e'(\text{token}) = e(\text{token}) \odot \exp(x_j),

    before position embeddings are added (GPT-2) and before the first block.
    ``x = 0`` is the unmodified model.  The embedding table itself is never
    edited: a forward hook on ``model.get_input_embeddings()`` multiplies its
    output (N * B, T, d), viewed as (N, B, T, d), by ``exp(x)`` (N, 1, 1, d).
    Members run as one forward pass of batch N * B.  Calls that pass
    ``inputs_embeds`` instead of ids bypass the embedding module and are not
    scaled.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A Hugging Face causal LM whose input embedding is an ``nn.Embedding``
        (the module the hook sits on).

    Attributes
    ----------
    state_dim : int
        d_model (the width of the input embedding).

    Examples
    --------
    >>> import torch
    >>> from da_embed.placements import EmbeddingScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=4)
    >>> placement = EmbeddingScale(model)
    >>> placement.state_dim
    32
    >>> with placement.attached():
    ...     logits = placement.logits(ids, 0.1 * torch.randn(2, 32))  # (N, B, T, V)
    >>> tuple(logits.shape)
    (2, 1, 4, 97)
    """

    def __init__(self, model) -> None:
        super().__init__(model)
        self.state_dim = int(self.model.get_input_embeddings().embedding_dim)

    def _install(self) -> list:
        return [self.model.get_input_embeddings().register_forward_hook(self._hook)]

    def _prepare(self, states: torch.Tensor) -> dict[str, Any]:
        return {"scale": torch.exp(states)}  # (N, d)

    def _hook(self, module, args, output):
        ctx = self._ctx
        if ctx is None:
            return None
        e = self._members(output)  # (N, B, T, d)
        scale = ctx["scale"].to(e.dtype)  # (N, d)
        return (e * scale[:, None, None, :]).reshape(output.shape)  # (N * B, T, d)
