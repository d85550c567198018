"""The prequential protocol: how a token stream is cut into scored chunks.

Every language-model number of the package is a prequential score: chunk k is
scored with the state estimated from chunks before k, then assimilated.
:class:`PrequentialConfig` fixes chunk, context, stride and token limit and is
stored with every result; :func:`max_positions` reads a model's position
limit, against which the protocol's window is checked.  This module sits
below the assimilator, the subspaces and the experiments, which all take a
protocol.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np

from .checks import check_int

__all__ = ["PrequentialConfig", "max_positions"]


@dataclass(frozen=True)
class PrequentialConfig:
    """The prequential protocol: how the stream is cut into scored chunks.

    Parameters
    ----------
    chunk : int, default 32
        L, tokens per chunk (scored, then assimilated, together).
    context : int, default 224
        Tokens before the chunk the model reads (32 + 224 = 256, the
        reference model's training length).  At least ``chunk``.
    stride : int, optional
        Distance between the first tokens of consecutive chunks; default
        ``chunk`` (chunks tile the stream).  At least ``chunk``: a smaller
        stride would score tokens already assimilated.
    max_tokens : int, optional
        Use only the first ``max_tokens`` tokens of the stream.

    Examples
    --------
    >>> p = PrequentialConfig(chunk=4, context=8)
    >>> p.stride, p.starts(14).tolist()  # targets 1-4, 5-8, 9-12; token 13 is left over
    (4, [1, 5, 9])
    >>> PrequentialConfig(chunk=64, context=32)
    Traceback (most recent call last):
    ...
    ValueError: chunk (64) must not be longer than context (32): ...
    """

    chunk: int = 32
    context: int = 224
    stride: int | None = None
    max_tokens: int | None = None

    def __post_init__(self):
        check_int(self.chunk, "chunk", 1)
        check_int(self.context, "context", 1)
        if self.chunk > self.context:
            raise ValueError(f"chunk ({self.chunk}) must not be longer than context "
                             f"({self.context}): every chunk is scored with at least `context` "
                             "tokens before it; raise --context or lower --chunk")
        if self.stride is None:
            object.__setattr__(self, "stride", int(self.chunk))
        check_int(self.stride, "stride", 1)
        if self.stride < self.chunk:
            raise ValueError(f"stride ({self.stride}) must be >= chunk ({self.chunk}): a smaller "
                             "stride would score tokens that were already assimilated")
        if self.max_tokens is not None:
            check_int(self.max_tokens, "max_tokens", self.chunk + 1)

    @property
    def window(self) -> int:
        """Longest input the model reads: ``context + chunk - 1`` tokens."""
        return self.context + self.chunk - 1

    def starts(self, n_tokens: int) -> np.ndarray:
        """First target index of every complete chunk of a stream of ``n_tokens``."""
        n = int(n_tokens) if self.max_tokens is None else min(int(n_tokens), self.max_tokens)
        if n - 1 < self.chunk:
            return np.zeros(0, dtype=np.int64)
        return 1 + self.stride * np.arange((n - 1 - self.chunk) // self.stride + 1, dtype=np.int64)

    def describe(self) -> dict:
        """The protocol as a dict (stored with every result)."""
        return asdict(self)

    def __str__(self) -> str:
        return (f"chunk {self.chunk}, context {self.context}, stride {self.stride}"
                + ("" if self.max_tokens is None else f", max_tokens {self.max_tokens}"))


def max_positions(model) -> int | None:
    """The model's position limit (``n_positions`` or ``max_position_embeddings``), if any.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Any model with a ``config`` (or anything else: then None).

    Returns
    -------
    int or None
        The most tokens one forward pass may see, None when the config has no limit.

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2, tiny_llama
    >>> max_positions(tiny_gpt2()), max_positions(tiny_llama()), max_positions(object())
    (64, 128, None)
    """
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(config, attr, None)
        if isinstance(v, numbers.Integral) and v > 0:
            return int(v)
    return None
