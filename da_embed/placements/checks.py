"""Checks shared by the placements: the model, states, token ids, masks and targets.

Each check returns its argument as the tensor the placements compute with (on
the model's device, in the right dtype) or raises a ValueError that names the
argument, the shape or range it must have, and what it got.
:func:`rotary_modules` tells a model with rotary positions (no position
limit) from one with a learned position table.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..checks import check_int

__all__ = ["IGNORE_INDEX", "rotary_modules"]

#: Target value whose negative log-likelihood is reported as 0 (as in torch).
IGNORE_INDEX = -100


def rotary_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules carrying a rotary ``inv_freq`` buffer (Llama: ``model.rotary_emb``).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of (str, torch.nn.Module)
        Their qualified names and the modules; empty for a model without
        rotary embeddings (whose positions are then bounded by a table).

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2, tiny_llama
    >>> len(rotary_modules(tiny_llama())) > 0, rotary_modules(tiny_gpt2())
    (True, [])
    """
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(getattr(mod, "inv_freq", None), torch.Tensor)]


def _model_name(model) -> str:
    return type(model).__name__


def _check_model(model, who: str) -> nn.Module:
    """Check ``model`` looks like a Hugging Face causal LM; return it."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a Hugging Face causal LM (a torch.nn.Module), "
                         f"got {type(model).__name__}")
    getters = ("get_input_embeddings", "get_output_embeddings")
    if not all(callable(getattr(model, g, None)) for g in getters):
        raise ValueError(f"{who} needs a Hugging Face causal LM with get_input_embeddings() and "
                         f"get_output_embeddings(); {_model_name(model)} has neither")
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"{who} needs a model whose input embedding is an nn.Embedding; "
                         f"{_model_name(model)} has {type(emb).__name__}")
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise ValueError(f"{who} needs a causal LM with an output head (get_output_embeddings()); "
                         f"{_model_name(model)} has none")
    if not head.weight.dtype.is_floating_point:
        raise ValueError(f"{who} needs a floating-point model; {_model_name(model)} has "
                         f"{head.weight.dtype} weights")
    return model


def _check_int(value, name: str, *, minimum: int) -> int:
    """:func:`da_embed.checks.check_int` with the bound as a keyword (as placements spell it)."""
    return check_int(value, name, minimum)


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a torch tensor or a numpy array, "
                         f"got {type(value).__name__}") from exc


def _is_token_dtype(t: torch.Tensor) -> bool:
    """Whether ``t`` holds integers (token ids), not bools, floats or complex numbers."""
    return not (t.dtype == torch.bool or t.dtype.is_floating_point or t.is_complex())


def _check_states(states, n: int, who: str, *, device, dtype) -> torch.Tensor:
    """Validate states (N, n) of placement ``who`` and cast them to ``device`` and ``dtype``."""
    t = _as_tensor(states, "states")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"states must be real numbers, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[1] != n:
        hint = " (for one member pass states[None])" if t.ndim == 1 and t.shape[0] == n else ""
        raise ValueError(f"states must have shape (N, n) = (N, {n}) for "
                         f"{who}, got {tuple(t.shape)}{hint}")
    if t.shape[0] < 1:
        raise ValueError(f"states must hold at least one member (N >= 1), got shape "
                         f"{tuple(t.shape)}")
    finite = torch.isfinite(t.detach())
    if not bool(finite.all()):
        bad = torch.nonzero(~finite.all(dim=1)).flatten().tolist()
        raise ValueError(f"states must be finite; members {bad} contain NaN or inf")
    if not t.dtype.is_floating_point:
        t = t.to(torch.float64)
    return t.to(device=device, dtype=dtype)  # (N, n)


def _check_input_ids(input_ids, model: nn.Module, *, device) -> torch.Tensor:
    """Validate token ids (B, T) for ``model`` (vocabulary, position limit); move to ``device``."""
    t = _as_tensor(input_ids, "input_ids")
    if t.ndim != 2:
        raise ValueError(f"input_ids must be a 2-D (B, T) tensor of token ids, got shape "
                         f"{tuple(t.shape)}")
    if not _is_token_dtype(t):
        raise ValueError(f"input_ids must hold integer token ids (torch.long), got {t.dtype}")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"input_ids must have B >= 1 rows and T >= 1 tokens, got shape "
                         f"{tuple(t.shape)}")
    lo, hi = int(t.min()), int(t.max())
    vocab = int(model.get_input_embeddings().num_embeddings)
    if lo < 0 or hi >= vocab:
        raise ValueError(f"input_ids must lie in [0, {vocab}) (the vocabulary of "
                         f"{_model_name(model)}), got values in [{lo}, {hi}]")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and t.shape[1] > limit and not rotary_modules(model):
        raise ValueError(f"input_ids has {t.shape[1]} tokens but {_model_name(model)} "
                         f"has learned positions for at most {limit}")
    return t.to(device=device, dtype=torch.long)  # (B, T)


def _check_mask(attention_mask, input_ids: torch.Tensor, *, device) -> torch.Tensor | None:
    """Validate an attention mask of the shape of ``input_ids`` (None passes through)."""
    if attention_mask is None:
        return None
    m = _as_tensor(attention_mask, "attention_mask")
    if tuple(m.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}, got {tuple(m.shape)}")
    return m.to(device=device)  # (B, T)


def _check_targets(targets, input_ids: torch.Tensor, vocab: int, *, device) -> torch.Tensor:
    """Next-token targets (B, T - 1) or (B, T) for ``input_ids`` (B, T); default the shift."""
    B, T = input_ids.shape
    if targets is None:
        if T < 2:
            raise ValueError(f"input_ids needs T >= 2 tokens to score next tokens, got "
                             f"shape {tuple(input_ids.shape)}")
        return input_ids[:, 1:]  # (B, T - 1)
    tgt = _as_tensor(targets, "targets")
    if tgt.ndim != 2 or tgt.shape[0] != B or tgt.shape[1] not in (T - 1, T):
        raise ValueError(f"targets must have shape (B, T - 1) = ({B}, {T - 1}) or "
                         f"(B, T) = ({B}, {T}), got {tuple(tgt.shape)}")
    if not _is_token_dtype(tgt):
        raise ValueError(f"targets must hold integer token ids, got {tgt.dtype}")
    tgt = tgt.to(device=device, dtype=torch.long)
    valid = tgt[tgt != IGNORE_INDEX]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= vocab):
        raise ValueError(f"targets must lie in [0, {vocab}) or equal "
                         f"{IGNORE_INDEX}, got values in [{int(valid.min())}, "
                         f"{int(valid.max())}]")
    return tgt  # (B, L)
