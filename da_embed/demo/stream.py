"""The demo's domain-shift stream: docstrings, then licence text (:func:`demo_stream`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..protocol import PrequentialConfig
from .texts import EVAL_MODULES, TUNE_MODULES, drop_seen, heldout_docstrings, licence_text, \
    module_texts

__all__ = ["DemoStream", "check_budget", "demo_stream"]


@dataclass(frozen=True)
class DemoStream:
    """The reported stream and the tuning stream of the demo, with their provenance.

    Parameters
    ----------
    ids : ndarray (T,)
        Reported stream: held-out docstrings, then licence text.
    boundary : int
        Index in ``ids`` of the first licence token; it is the first target
        of a chunk, so every chunk lies in one segment.
    tune_ids : ndarray (T_tune,)
        Tuning stream, built the same way from other sources.
    sources : dict
        Where every segment came from and its token count.

    Examples
    --------
    >>> s = DemoStream(np.zeros(33, dtype=np.int64), 17, np.zeros(18, dtype=np.int64), {})
    >>> s.segment_of([1, 9, 17, 25]).tolist()
    ['docstrings', 'docstrings', 'licence', 'licence']
    """

    ids: np.ndarray = field(repr=False)
    boundary: int
    tune_ids: np.ndarray = field(repr=False)
    sources: dict

    def segment_of(self, chunk_start) -> np.ndarray:
        """Segment name of chunks by their first target index ("docstrings" or "licence")."""
        s = np.asarray(chunk_start)
        return np.where(s >= self.boundary, "licence", "docstrings")


def _two_segments(first, second, n_first: int, n_second: int, what: str):
    if first.size < n_first or second.size < n_second:
        raise ValueError(f"the {what} needs {n_first} + {n_second} tokens but the texts have "
                         f"{first.size} + {second.size}; lower max_tokens / tune_tokens")
    return np.concatenate([first[:n_first], second[:n_second]]).astype(np.int64)


def check_budget(max_tokens, tune_tokens, protocol: PrequentialConfig) -> tuple[int, int]:
    """Chunks of the reported stream and of its docstring part; errors name the parameter.

    Parameters
    ----------
    max_tokens, tune_tokens : int
        As in :func:`demo_stream`.
    protocol : PrequentialConfig

    Returns
    -------
    (int, int)
        Chunks of the reported stream, and of its docstring segment.

    Raises
    ------
    TypeError, ValueError
        For a non-integer or too small budget.

    Examples
    --------
    >>> check_budget(3072, 1024, PrequentialConfig())
    (95, 47)
    """
    for name, v in (("max_tokens", max_tokens), ("tune_tokens", tune_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    stride, L = protocol.stride, protocol.chunk
    k = (int(max_tokens) - 1 - L) // stride + 1 if max_tokens > L else 0
    if k < 2:
        raise ValueError(f"max_tokens must give at least 2 chunks (one per segment): "
                         f">= {1 + L + stride} tokens with {protocol}, got {max_tokens}")
    if tune_tokens < 2 * (L + 1):
        raise ValueError(f"tune_tokens must be >= 2 * (chunk + 1) = {2 * (L + 1)}, "
                         f"got {tune_tokens}")
    return k, k // 2


def demo_stream(tokenizer, *, max_tokens: int = 3072, tune_tokens: int = 1024,
                protocol: PrequentialConfig | None = None,
                training_text: str | None = None) -> DemoStream:
    """The demo's domain-shift stream and its tuning stream, both half docstrings, half licence.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The model's tokenizer.
    max_tokens : int, default 3072
        Length budget of the reported stream; it is cut to ``1 + k * stride``
        tokens (k chunks), the first ``k // 2`` chunks docstrings.
    tune_tokens : int, default 1024
        Length of the tuning stream (half each).
    protocol : PrequentialConfig, optional
        Default ``PrequentialConfig()`` (chunk 32, context 224).
    training_text : str, optional
        The model's training text (see :func:`heldout_docstrings`).

    Returns
    -------
    DemoStream

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> tok = train_tokenizer("Return the value of the header. " * 40, vocab_size=300)
    >>> s = demo_stream(tok, max_tokens=100, tune_tokens=40,
    ...                 protocol=PrequentialConfig(chunk=8, context=16))
    >>> s.ids.size, s.boundary, s.tune_ids.size  # 12 chunks of 8 (+ the unscored first token)
    (97, 49, 40)
    """
    from ..reference import encode_text

    protocol = PrequentialConfig() if protocol is None else protocol
    k, k_doc = check_budget(max_tokens, tune_tokens, protocol)
    stride, L = protocol.stride, protocol.chunk
    boundary = 1 + k_doc * stride
    n_licence = (k - k_doc - 1) * stride + L  # the last chunk needs only L targets
    module_texts(EVAL_MODULES + TUNE_MODULES)  # one interpreter for both streams
    doc, doc_info = heldout_docstrings(EVAL_MODULES, training_text)
    lic, lic_src = licence_text("eval")
    lic, _, lic_dropped = drop_seen(lic, training_text)
    tdoc, tdoc_info = heldout_docstrings(TUNE_MODULES, training_text)
    tlic, tlic_src = licence_text("tune")
    doc_ids, lic_ids = encode_text(tokenizer, doc), encode_text(tokenizer, lic)
    tdoc_ids, tlic_ids = encode_text(tokenizer, tdoc), encode_text(tokenizer, tlic)
    ids = _two_segments(doc_ids, lic_ids, boundary, n_licence, "reported stream")
    half = int(tune_tokens) // 2
    tune = _two_segments(tdoc_ids, tlic_ids, half, int(tune_tokens) - half, "tuning stream")
    sources = {
        "docstrings": {**doc_info, "tokens": boundary,
                       "held_out": training_text is not None},
        "licence": {"source": lic_src, "tokens": n_licence, "dropped": lic_dropped},
        "tune_docstrings": {**tdoc_info, "tokens": half},
        "tune_licence": {"source": tlic_src, "tokens": int(tune_tokens) - half},
    }
    return DemoStream(ids, boundary, tune, sources)
