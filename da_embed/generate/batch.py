"""The batched candidate stage: every row of a cycle decoded at once from the prefix's KV cache.

A cycle decodes R rows in one batch: row 0 carries the filter's current mean
(the row whose tokens are committed by ``commit="mean"``), rows
``1 + j * K + k`` carry member j's candidate k (member-major).  Each row has
its own state, so the placement runs with N = R "members" of batch 1 each (a
per-row scale tensor, :meth:`~da_embed.placements.Placement.using`).

Which placements share the prefix cache
---------------------------------------
The prefix's keys and values are those of the frozen trunk unless the state
acts inside the trunk:

* ``hidden`` (:class:`~da_embed.placements.HiddenScale`, and any
  :class:`~da_embed.placements.Subspace` of it) scales the final hidden state
  just before the LM head, after every attention layer: the prefix's K/V do
  not depend on the state, so one cache of the committed text serves every
  row (expanded along the batch dimension, never recomputed) and the self
  verifier too.  This is *exact*, not an approximation.
* ``embedding``, ``svf`` and ``rotary`` change the input of the first layer,
  the weights of every layer, or the rotary phases of every key: each row's
  prefix K/V depend on its state.  Those rows get a per-row prefix pass of
  the whole context, still as one batch of R rows, every cycle.

:func:`shares_prefix_cache` tells the two apart; the exactness test
(``tests/test_generate_batch.py``) checks both against separate full
forward passes.

Shapes: R rows, T context tokens, L candidate tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch

from ..lm.kv_cache import forward_with_cache, output_cache, prefill
from ..placements import HiddenScale, Placement, Subspace
from .decoding import sample_tokens

__all__ = ["shares_prefix_cache", "expand_cache", "select_row", "decode_rows",
           "cached_logprob", "head_logprob", "fuses_verifier"]


def shares_prefix_cache(placement: Placement) -> bool:
    """Whether the prefix's KV cache is the same for every state of ``placement``.

    Parameters
    ----------
    placement : Placement

    Returns
    -------
    bool
        True for :class:`~da_embed.placements.HiddenScale` and a
        :class:`~da_embed.placements.Subspace` of it (the state acts after the
        last attention layer); False for every other placement.

    Examples
    --------
    >>> from da_embed.placements import EmbeddingScale, HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> model = tiny_gpt2()
    >>> shares_prefix_cache(HiddenScale(model)), shares_prefix_cache(EmbeddingScale(model))
    (True, False)
    """
    inner = placement.placement if isinstance(placement, Subspace) else placement
    return isinstance(inner, HiddenScale)


def expand_cache(cache, rows: int):
    """A copy of a one-row ``cache`` repeated to ``rows`` rows (the original is unchanged).

    Parameters
    ----------
    cache : transformers.Cache
        Batch size 1, built under ``torch.no_grad()`` (tensors with an
        autograd graph cannot be copied).
    rows : int
        R >= 1.

    Returns
    -------
    transformers.Cache
        Batch size R, every row equal to the original.

    Examples
    --------
    >>> import torch
    >>> from da_embed.lm.kv_cache import prefill
    >>> from da_embed.testing import tiny_gpt2
    >>> with torch.no_grad():  # as in generation: a cache without an autograd graph
    ...     cache = prefill(tiny_gpt2(), torch.tensor([[1, 2, 3]]))
    >>> expand_cache(cache, 4).layers[0].keys.shape[0], cache.layers[0].keys.shape[0]
    (4, 1)
    """
    out = copy.deepcopy(cache)
    if rows > 1:
        out.batch_repeat_interleave(rows)
    return out


def select_row(cache, row: int):
    """Keep only batch row ``row`` of ``cache`` (in place); returns the cache.

    Parameters
    ----------
    cache : transformers.Cache
    row : int

    Returns
    -------
    transformers.Cache
        Batch size 1.

    Examples
    --------
    >>> import torch
    >>> from da_embed.lm.kv_cache import prefill
    >>> from da_embed.testing import tiny_gpt2
    >>> cache = prefill(tiny_gpt2(), torch.tensor([[1, 2], [3, 4]]))
    >>> select_row(cache, 1).layers[0].keys.shape[0]
    1
    """
    cache.batch_select_indices(torch.tensor([row], dtype=torch.long))
    return cache


def decode_rows(model, placement: Placement | None, states: np.ndarray | None,
                context: torch.Tensor, steps: int, u: np.ndarray | None, *, cache=None,
                own_cache: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                logits_out: list | None = None, head_inputs: list | None = None):
    """Decode ``steps`` tokens for R rows, row r under state ``states[r]``, as one batch.

    Parameters
    ----------
    model : transformers causal LM
        ``placement`` is attached to it.
    placement : Placement or None
        None: the model as it is (one row, no state).
    states : numpy.ndarray (R, n) or None
        One state per row (None with ``placement`` None).
    context : torch.Tensor (1, T)
        The text so far (T >= 1), shared by every row.
    steps : int
        Tokens to decode per row.
    u : numpy.ndarray (R, steps) or None
        Uniform numbers (inverse-CDF sampling); None: greedy.
    cache : transformers.Cache, optional
        The one-row cache of ``context[:, :-1]`` when the placement shares
        the prefix cache (:func:`shares_prefix_cache`); it is expanded to R
        rows (a copy: ``cache`` itself is not changed).  None: a per-row
        prefix pass of ``context[:, :-1]`` (one batch of R rows).
    own_cache : bool, default False
        With R = 1: extend ``cache`` itself instead of a copy (the caller
        hands it over).
    temperature, top_p : float
        As :func:`~da_embed.generate.sample_tokens`.
    logits_out : list, optional
        If given, the logits (R, V) of every step are appended to it.
    head_inputs : list, optional
        If given, the input (R, d) of the LM head at every step, before any
        placement acts on it, is appended to it (see :func:`head_logprob`).

    Returns
    -------
    tokens : torch.Tensor (R, steps) long
    cache : transformers.Cache
        R rows: the context and every new token but the last.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> model = tiny_gpt2()
    >>> with HiddenScale(model).attached() as pl, torch.no_grad():
    ...     tok, _ = decode_rows(model, pl, np.zeros((3, 32)), torch.tensor([[5, 6]]), 4, None)
    >>> tuple(tok.shape), bool((tok[0] == tok[2]).all())
    ((3, 4), True)
    """
    R = 1 if states is None else int(states.shape[0])
    active = contextlib.nullcontext() if placement is None else placement.using(states)
    with active:
        if cache is None:
            cache = prefill(model, context[:, :-1].repeat(R, 1))
        elif not (own_cache and R == 1):
            cache = expand_cache(cache, R)
        handle = None
        if head_inputs is not None:  # registered after the prefix pass: decoding steps only
            def capture(module, args):  # runs before the placement's own pre-hook (prepend)
                head_inputs.append(args[0][:, -1, :])

            handle = model.get_output_embeddings().register_forward_pre_hook(capture,
                                                                             prepend=True)
        try:
            return _decode_loop(model, R, context, steps, u, cache, temperature, top_p,
                                logits_out)
        finally:
            if handle is not None:
                handle.remove()


def _decode_loop(model, R, context, steps, u, cache, temperature, top_p, logits_out):
    tok, out = context[:, -1:].repeat(R, 1), []
    for t in range(steps):
        res = forward_with_cache(model, tok, cache)
        cache = output_cache(res)
        logits = res.logits[:, -1, :]  # (R, V)
        if logits_out is not None:
            logits_out.append(logits)
        ut = None if u is None else torch.from_numpy(np.ascontiguousarray(u[:, t]))
        nxt = sample_tokens(logits, ut, temperature=temperature, top_p=top_p)
        out.append(nxt)
        tok = nxt[:, None]  # (R, 1)
    return torch.stack(out, dim=1), cache  # (R, steps)


def cached_logprob(model, cache, last_token: int, candidate_ids) -> np.ndarray:
    """Mean log-probability of each candidate after the context, from the context's cache.

    The same numbers as :func:`~da_embed.textmetrics.continuation_logprob_ids`
    (one full pass of ``[context, candidate]`` per candidate), but the
    context is never recomputed: one batched pass of the R candidates on the
    cache expanded to R rows.

    Parameters
    ----------
    model : transformers causal LM
        Called as it is (outside any ``using`` block: the frozen base model).
    cache : transformers.Cache
        One row: the context but its last token (not changed).
    last_token : int
        The context's last token.
    candidate_ids : array_like of int (R, L)

    Returns
    -------
    numpy.ndarray (R,)

    Examples
    --------
    >>> import torch
    >>> from da_embed.lm.kv_cache import prefill
    >>> from da_embed.testing import tiny_gpt2
    >>> from da_embed.textmetrics import continuation_logprob_ids
    >>> model = tiny_gpt2()
    >>> with torch.no_grad():
    ...     s = cached_logprob(model, prefill(model, torch.tensor([[1, 2]])), 3, [[4, 5], [6, 7]])
    >>> bool(abs(s - continuation_logprob_ids(model, [1, 2, 3], [[4, 5], [6, 7]])).max() < 1e-5)
    True
    """
    cand = torch.as_tensor(np.asarray(candidate_ids, dtype=np.int64))  # (R, L)
    R = cand.shape[0]
    inputs = torch.cat([torch.full((R, 1), int(last_token), dtype=torch.long), cand[:, :-1]], 1)
    res = forward_with_cache(model, inputs, expand_cache(cache, R))
    lp = torch.log_softmax(res.logits.double(), dim=-1)  # (R, L, V)
    return lp.gather(-1, cand[:, :, None])[:, :, 0].mean(dim=1).numpy()


def fuses_verifier(model, placement: Placement) -> bool:
    """Whether the frozen model's scores can be read off the candidates' own decoding.

    With a placement that acts only on the LM head's input
    (:func:`shares_prefix_cache`), the trunk's output for a candidate is that
    of the frozen model, so the frozen model's logits are the head applied to
    the head's input before the placement scales it (:func:`head_logprob`):
    no second pass over the candidates.  Only for models whose logits are the
    head's output as it is (no final soft-capping or logit scale in the
    configuration).

    Parameters
    ----------
    model : transformers causal LM
    placement : Placement

    Returns
    -------
    bool

    Examples
    --------
    >>> from da_embed.placements import EmbeddingScale, HiddenScale
    >>> from da_embed.testing import tiny_llama
    >>> model = tiny_llama()
    >>> fuses_verifier(model, HiddenScale(model)), fuses_verifier(model, EmbeddingScale(model))
    (True, False)
    """
    config = getattr(model, "config", None)
    post = any(getattr(config, name, None) not in (None, 1, 1.0)
               for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    return shares_prefix_cache(placement) and not post


def head_logprob(model, head_inputs, candidate_ids) -> np.ndarray:
    """Mean log-probability of each candidate under the frozen model, from its head inputs.

    Parameters
    ----------
    model : transformers causal LM
    head_inputs : sequence of torch.Tensor (R, d)
        The LM head's input before each of the L candidate tokens
        (:func:`decode_rows` ``head_inputs``, rows of the candidates).
    candidate_ids : array_like of int (R, L)

    Returns
    -------
    numpy.ndarray (R,)
        One batched pass of the LM head over the R * L inputs.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> from da_embed.textmetrics import continuation_logprob_ids
    >>> model, h = tiny_gpt2(), []
    >>> with HiddenScale(model).attached() as pl, torch.no_grad():
    ...     tok, _ = decode_rows(model, pl, np.full((2, 32), 0.3), torch.tensor([[5, 6]]), 3,
    ...                          None, head_inputs=h)
    ...     s = head_logprob(model, h, tok)
    >>> bool(abs(s - continuation_logprob_ids(model, [5, 6], tok.numpy())).max() < 1e-5)
    True
    """
    cand = torch.as_tensor(np.asarray(candidate_ids, dtype=np.int64))  # (R, L)
    h = torch.stack(list(head_inputs), dim=1)  # (R, L, d)
    logits = model.get_output_embeddings()(h)  # (R, L, V), outside using(): frozen head
    lp = torch.log_softmax(logits.double(), dim=-1)
    return lp.gather(-1, cand[:, :, None])[:, :, 0].mean(dim=1).numpy()
