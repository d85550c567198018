"""Verifiers: what scores a candidate continuation (a log-probability, or any callable)."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..textmetrics import continuation_logprob, continuation_logprob_ids

__all__ = ["LogProbVerifier", "CallableVerifier", "load_verifier", "make_verifier"]


class LogProbVerifier:
    """Score = mean log-probability of the candidate's tokens given the context.

    Parameters
    ----------
    model : transformers causal LM
        The judge (for ``verifier="self"``: the generating model itself,
        called without any state, i.e. the frozen base model).
    tokenizer : transformers tokenizer, optional
        The judge's tokenizer: candidates are re-tokenised from text.  None:
        the judge shares the generator's vocabulary and scores token ids.
    name : str, default "logprob"

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2
    >>> v = LogProbVerifier(tiny_gpt2(), name="self")
    >>> v(np.array([1, 2]), np.array([[3, 4], [5, 6]]), "", ["", ""]).shape
    (2,)
    """

    def __init__(self, model, tokenizer=None, *, name: str = "logprob") -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def __call__(self, context_ids, candidate_ids, context_text: str, candidate_texts):
        """Scores (R,) of the candidates ``candidate_ids`` (R, L) after ``context_ids`` (T,)."""
        if self.tokenizer is None:
            return continuation_logprob_ids(self.model, context_ids, candidate_ids)
        return continuation_logprob(self.model, self.tokenizer, context_text, candidate_texts)


class CallableVerifier:
    """Score = ``fn(candidate_text)`` for any Python callable ``text -> float``.

    A call that raises, or returns something that is not a finite number,
    gives NaN (the candidate is skipped and counted by :func:`~da_embed.generate.generate`);
    the first messages are kept in ``errors``.

    Parameters
    ----------
    fn : callable
    name : str, optional
        Default: the callable's ``__name__``.

    Examples
    --------
    >>> v = CallableVerifier(lambda text: 1 / len(text))
    >>> v(None, None, "", ["ab", ""]).tolist()
    [0.5, nan]
    >>> v.errors
    ['ZeroDivisionError: division by zero']
    """

    def __init__(self, fn: Callable[[str], float], name: str | None = None) -> None:
        if not callable(fn):
            raise ValueError(f"verifier must be callable (text -> float), got "
                             f"{type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.errors: list[str] = []

    def __call__(self, context_ids, candidate_ids, context_text: str, candidate_texts):
        """Scores (R,) of the candidate texts (NaN where the callable failed)."""
        out = np.full(len(candidate_texts), np.nan)
        for r, text in enumerate(candidate_texts):
            try:
                value = float(self.fn(text))
            except Exception as exc:  # noqa: BLE001 - any user failure is skipped and counted
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if math.isfinite(value):
                out[r] = value
            elif len(self.errors) < 5:
                self.errors.append(f"non-finite score {value!r}")
        return out


def load_verifier(spec) -> CallableVerifier:
    """A verifier from a Python file: ``PATH`` (function ``score``) or ``PATH:FUNCTION``.

    Parameters
    ----------
    spec : str or PathLike
        ``my_reward.py`` or ``my_reward.py:reward``; the function takes the
        candidate's text and returns a float.

    Returns
    -------
    CallableVerifier

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it cannot be imported or has no such callable.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reward.py")
    >>> _ = open(path, "w").write("def score(text):\\n    return len(text)\\n")
    >>> load_verifier(path)(None, None, "", ["abc"]).tolist()
    [3.0]
    """
    text = os.fspath(spec)
    path, func = text, "score"
    if ":" in text and not os.path.exists(text):
        head, _, tail = text.rpartition(":")
        if tail.isidentifier():
            path, func = head, tail
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"verifier file not found: {path!r} (give 'self', 'judge', or a "
                                f"Python file defining score(text) -> float, optionally "
                                f"FILE.py:FUNCTION)")
    mod_spec = importlib.util.spec_from_file_location(f"_da_embed_verifier_{p.stem}", p)
    if mod_spec is None or mod_spec.loader is None:
        raise ValueError(f"verifier file {path!r} is not an importable Python file")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure in one line
        raise ValueError(f"could not import the verifier file {path!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ValueError(f"verifier file {path!r} defines no function {func!r} "
                         f"(text -> float)")
    return CallableVerifier(fn, name=f"{p.name}:{func}")


def make_verifier(verifier, model, *, judge_model=None):
    """The verifier object for a ``verifier`` argument of :func:`~da_embed.generate.generate`.

    Parameters
    ----------
    verifier : "self", "judge", callable, or path
        ``"self"``: :class:`LogProbVerifier` on ``model`` (the frozen base);
        ``"judge"``: :class:`LogProbVerifier` on ``judge_model``; a callable
        ``text -> float`` (wrapped in :class:`CallableVerifier` unless it
        already takes the four verifier arguments, i.e. is a
        ``LogProbVerifier``/``CallableVerifier``); a path: :func:`load_verifier`.
    model : transformers causal LM
        The generating model.
    judge_model : path, model, or (model, tokenizer), optional
        For ``"judge"``: a folder written by ``save_pretrained`` (model and
        tokenizer), a causal LM sharing the generator's vocabulary, or a
        (model, tokenizer) pair (candidates are re-tokenised).

    Returns
    -------
    LogProbVerifier or CallableVerifier

    Examples
    --------
    >>> from da_embed.testing import tiny_gpt2
    >>> make_verifier("self", tiny_gpt2()).name
    'self'
    """
    if isinstance(verifier, (LogProbVerifier, CallableVerifier)):
        return verifier
    if isinstance(verifier, str) and verifier == "self":
        return LogProbVerifier(model, name="self")
    if isinstance(verifier, str) and verifier == "judge":
        if judge_model is None:
            raise ValueError("verifier='judge' needs judge_model (a model folder, a causal LM, "
                             "or a (model, tokenizer) pair; --judge-model PATH)")
        if isinstance(judge_model, (str, os.PathLike)):
            from ..lm.models import load_model

            jm, jt = load_model(judge_model)
            return LogProbVerifier(jm, jt, name=f"judge:{os.fspath(judge_model)}")
        if isinstance(judge_model, tuple) and len(judge_model) == 2:
            return LogProbVerifier(judge_model[0], judge_model[1], name="judge")
        emb = getattr(judge_model, "get_input_embeddings", None)
        if emb is None:
            raise ValueError(f"judge_model must be a path, a causal LM or a (model, tokenizer) "
                             f"pair, got {type(judge_model).__name__}")
        v_judge = judge_model.get_input_embeddings().num_embeddings
        v_gen = model.get_input_embeddings().num_embeddings
        if v_judge < v_gen:
            raise ValueError(f"judge_model has a vocabulary of {v_judge} tokens, smaller than "
                             f"the generator's {v_gen}: pass (judge_model, judge_tokenizer)")
        return LogProbVerifier(judge_model, name="judge")
    if callable(verifier):
        return CallableVerifier(verifier)
    if isinstance(verifier, (str, os.PathLike)):
        return load_verifier(verifier)
    raise ValueError(f"verifier must be 'self', 'judge', a callable text -> float, or a path "
                     f"to a Python file, got {type(verifier).__name__}")
