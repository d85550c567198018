"""Decoding: inverse-CDF (or greedy) sampling of one token per row.

Sampling is inverse-CDF sampling: the token is the first index whose
cumulative probability (vocabulary order, after temperature and top-p)
exceeds a uniform number ``u``, so decoding with the same uniforms (common
random numbers) differs only through the model's state.  Greedy decoding
takes the first maximum (as ``transformers``' ``generate``).  The batched
decoding loop itself is :func:`~da_embed.generate.batch.decode_rows`.

Shapes: R rows, V vocabulary.
"""

from __future__ import annotations

import torch

__all__ = ["sample_tokens"]


def sample_tokens(logits: torch.Tensor, u: torch.Tensor | None, *, temperature: float = 1.0,
                  top_p: float = 1.0) -> torch.Tensor:
    """Pick one token per row: greedy (``u`` None) or inverse-CDF sampling.

    Parameters
    ----------
    logits : torch.Tensor (R, V)
        Computed in float64 here.
    u : torch.Tensor (R,) or None
        Uniform numbers in [0, 1), one per row; None for greedy decoding.
    temperature : float, default 1.0
    top_p : float, default 1.0
        Nucleus sampling (Holtzman et al. 2020): keep the most probable
        tokens until their mass reaches ``top_p`` (the first always stays).

    Returns
    -------
    torch.Tensor (R,) long
        The first index whose cumulative probability (vocabulary order)
        exceeds ``u`` times the total; argmax (first maximum) when greedy.

    Examples
    --------
    >>> logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    >>> [int(sample_tokens(logits, torch.tensor([v]))[0]) for v in (0.1, 0.2, 0.69, 0.71)]
    [0, 1, 1, 2]
    >>> int(sample_tokens(logits, None)[0])
    1
    """
    if u is None:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)  # (R, V)
    if top_p < 1.0:
        p_sorted, idx = probs.sort(dim=-1, descending=True, stable=True)
        keep_sorted = (p_sorted.cumsum(-1) - p_sorted) < top_p  # mass before the token < p
        keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
        probs = probs * keep
    cdf = probs.cumsum(dim=-1)  # (R, V)
    v = u.to(cdf.dtype).reshape(-1, 1) * cdf[:, -1:]  # (R, 1)
    tok = torch.searchsorted(cdf, v, right=True)[:, 0]
    return tok.clamp(max=cdf.shape[-1] - 1)
