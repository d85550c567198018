"""Mean log-probability of continuations under a causal LM (a verifier and a coherence fallback).

Shapes: R candidates, T context tokens, L continuation tokens.
"""

from __future__ import annotations

import numpy as np

from ._texts import _as_texts

__all__ = ["continuation_logprob_ids", "continuation_logprob"]


def _position_limit(model) -> int | None:
    from ..protocol import max_positions

    return max_positions(model)


def continuation_logprob_ids(model, context_ids, candidate_ids, *, batch_size: int = 32
                             ) -> np.ndarray:
    """Mean log-probability of each candidate's tokens given a shared context.

    ``score_r = (1 / L) sum_t log p(c_rt | context, c_r<t)`` under ``model``
    (one batched forward pass of ``[context, c_r]`` per block of candidates).
    The context is cut from the left so that context and candidate fit the
    model's position limit.

    Parameters
    ----------
    model : transformers causal LM
    context_ids : array_like of int (T,)
        T >= 1.
    candidate_ids : array_like of int (R, L)
        Equal-length candidates; entries < 0 are padding and not scored.
    batch_size : int, default 32

    Returns
    -------
    numpy.ndarray (R,)
        NaN for a candidate with no scored token.

    Examples
    --------
    >>> import torch
    >>> from da_embed.testing import tiny_gpt2
    >>> model = tiny_gpt2()
    >>> s = continuation_logprob_ids(model, [1, 2, 3], [[4, 5], [6, -1]])
    >>> with torch.no_grad():
    ...     lp = torch.log_softmax(model(torch.tensor([[1, 2, 3, 6]])).logits[0, 2], -1)[6]
    >>> bool(abs(s[1] - float(lp)) < 1e-5)
    True
    """
    import torch

    ctx = np.asarray(context_ids, dtype=np.int64).reshape(-1)
    cand = np.asarray(candidate_ids, dtype=np.int64)
    if cand.ndim != 2:
        raise ValueError(f"candidate_ids must be a 2-D (R, L) array, got shape {cand.shape}")
    if ctx.size < 1:
        raise ValueError("context_ids must hold at least one token")
    R, L = cand.shape
    limit = _position_limit(model)
    if limit is not None:
        if L >= limit:
            raise ValueError(f"candidates of {L} tokens do not fit the judge's position limit "
                             f"of {limit} with any context")
        ctx = ctx[-(limit - L):]
    T = ctx.size
    out = np.full(R, np.nan)
    valid = cand >= 0  # (R, L)
    with torch.no_grad():
        for i in range(0, R, batch_size):
            c = torch.from_numpy(np.where(valid[i:i + batch_size], cand[i:i + batch_size], 0))
            B = c.shape[0]
            ids = torch.cat([torch.from_numpy(ctx).expand(B, T), c], dim=1)  # (B, T + L)
            # Right padding cannot change earlier positions of a causal LM: no mask needed.
            logits = model(input_ids=ids).logits[:, T - 1:T + L - 1].double()  # (B, L, V)
            lp = torch.log_softmax(logits, dim=-1).gather(-1, c.unsqueeze(-1))[..., 0]  # (B, L)
            v = torch.from_numpy(valid[i:i + batch_size])
            count = v.sum(1)
            mean = (lp * v).sum(1) / count.clamp(min=1)
            out[i:i + B] = np.where(count.numpy() > 0, mean.numpy(), np.nan)
    return out


def continuation_logprob(model, tokenizer, context: str, continuations, *,
                         batch_size: int = 32) -> np.ndarray:
    """Mean log-probability of each continuation text given a context text.

    Context and continuations are tokenised separately (no special tokens)
    and concatenated, so every continuation token is scored; continuations
    of different lengths are scored in length groups.  An empty context is
    replaced by the tokenizer's BOS token (or the first continuation token
    is then not scored when there is none).

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : transformers tokenizer of ``model``
    context : str
    continuations : str or sequence of str
    batch_size : int, default 32

    Returns
    -------
    numpy.ndarray (R,)
        Nats per token; NaN for a continuation with no token.

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> model = tiny_gpt2(vocab_size=len(tok))
    >>> s = continuation_logprob(model, tok, "the cat", [" sat", ""])
    >>> bool(s[0] < 0), bool(np.isnan(s[1]))
    (True, True)
    """
    conts = _as_texts(continuations, "continuations")
    ctx = list(tokenizer(context, add_special_tokens=False)["input_ids"])
    skip_first = False
    if not ctx:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is not None:
            ctx = [int(bos)]
        else:
            skip_first = True
    encoded = [list(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in conts]
    out = np.full(len(conts), np.nan)
    groups: dict[int, list[int]] = {}
    for r, ids in enumerate(encoded):
        if skip_first:
            if len(ids) >= 2:
                groups.setdefault(len(ids) - 1, []).append(r)
        elif ids:
            groups.setdefault(len(ids), []).append(r)
    for L, rows in groups.items():
        if skip_first:
            for r in rows:
                out[r] = continuation_logprob_ids(model, encoded[r][:1], [encoded[r][1:]])[0]
            continue
        cand = np.array([encoded[r] for r in rows], dtype=np.int64)  # (R_L, L)
        out[rows] = continuation_logprob_ids(model, ctx, cand, batch_size=batch_size)
    return out
