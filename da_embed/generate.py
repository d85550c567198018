"""Generation steered by candidate continuations assimilated as pseudo-observations.

At generation time no true next tokens exist, so the observations are scores
(DESIGN.md section 2, observations of the second kind).  Every ``L`` tokens
(one *cycle*):

1. *forecast*: the filter's state moves with the random-walk forecast
   (process noise ``Q`` per cycle; ensemble filters and the UKF only);
2. *candidates*: each member state (ensemble member, sigma point, or
   perturbed state of the verification rule) proposes K continuations of L
   tokens, all M * K of them decoded as one batch
   (:meth:`~da_embed.placements.Placement.using`, member-major);
3. *verification*: a verifier scores each candidate (``self``: its mean
   log-probability under the frozen base model; ``judge``: the same under
   another causal LM; or any Python callable ``text -> float``);
4. *analysis*: the M x K score matrix is the predicted observation ``H(X)``
   of the members and the filter's analysis moves the state towards members
   whose candidates scored high (below);
5. the analysis mean drives the next L tokens of the output.

The pseudo-observation (EnKF, ETKF, UKF)
----------------------------------------
Candidate k of every member is decoded with the same uniform random numbers
(common random numbers), so column k of the score matrix is a function of
the state alone for this cycle: ``h_k(s) = score(candidate_k(s))`` is an
observation operator with m = K components.

* target ``"best"`` (default): ``y_k = max_j h_k(x_j)``, the best score that
  any member reached with the same random numbers.  A number ``c`` instead
  means ``y_k = hbar_k + c sqrt(r)``, c standard deviations above the
  filter's predicted score ``hbar_k`` (ensemble mean, or weighted
  sigma-point mean).
* ``R = r I`` with ``r = "auto"`` (default): the variance of all M * K
  scores of the cycle, i.e. a candidate's score is trusted as much as the
  scores vary among the candidates.  With ``"auto"`` the whole update is
  invariant to an affine change of the verifier's scale (``a * score + b``,
  a > 0), so a callable verifier needs no tuning; a number fixes r (in
  squared score units).
* A candidate whose verifier raised or returned a non-finite value drops
  its column k (``y_k`` missing, the filters skip it) and is counted; a
  cycle with no usable column, or with all scores equal (r = 0), keeps the
  forecast.

The verification rule (the seeds')
----------------------------------
``s <- s + delta_s + eta * mean_j(z_j h_j)``: M perturbed states
``s + sigma h_j`` (``h_j ~ N(0, I)``, antithetic pairs) each propose K
candidates; ``z_j`` is member j's mean score standardised over the members
(zero mean, unit variance: scale-free, like evolution strategies' fitness
shaping); ``delta_s``, the low-rank adapter's output, is 0 without learned
dynamics (:func:`verification_update`).  Defaults ``sigma = sqrt(P0)``,
``eta = sigma``.

Decoding
--------
Sampling is inverse-CDF sampling: the token is the first index whose
cumulative probability (vocabulary order, after temperature and top-p)
exceeds a uniform number ``u``.  The output stream's uniforms are the draws
of ``numpy.random.default_rng(SeedSequence(seed).spawn(3)[0])``, in order, one
per token, whatever the filter, so runs with the same seed differ only
through their states; the candidates' uniforms come from ``spawn(3)[1]`` and
the filter's randomness from ``spawn(3)[2]``.  Greedy decoding takes the
first maximum (as ``transformers``' ``generate``).  Generation does not stop
at an end-of-text token: every run produces ``max_new_tokens`` tokens.
With ``filter="none"`` the result is the base model's own generation.

Shapes: M members (or sigma points), K candidates per member, L tokens per
cycle, n state size, C cycles, V vocabulary.
"""

from __future__ import annotations

import copy
import datetime as _dt
import importlib.util
import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import xarray as xr

from filters import ETKF, UKF, EnKF
from filters.covariance import as_covariance
from filters.models import ObservationOperator
from filters.states import GaussianState

from ._version import __version__
from .lm.kv_cache import forward_with_cache, output_cache, prefill
from .placements import HiddenScale, Placement, Subspace
from .textmetrics import continuation_logprob, continuation_logprob_ids
from .trajectory import netcdf_attrs

__all__ = ["generate", "GenerationResult", "FILTERS", "LogProbVerifier", "CallableVerifier",
           "make_verifier", "load_verifier", "verification_update", "pseudo_target",
           "sample_tokens"]

#: Filter names of :func:`generate` and what they do.
FILTERS = {
    "etkf": "ensemble transform Kalman filter: M = members states, each proposes K candidates",
    "enkf": "stochastic EnKF (perturbed observations), M = members",
    "ukf": "unscented Kalman filter: M = 2n + 1 sigma points (use a small state or a subspace)",
    "verification": "the seeds' rule s <- s + eta * mean_j(z_j h_j), M = members perturbations",
    "none": "the base model's own generation (no candidates, no adaptation)",
}


# ----------------------------------------------------------------- validation
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(value, name: str, *, low: float = 0.0, strict: bool = True,
                 high: float | None = None) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low
        if high is not None:
            ok = ok and value <= high
    if not ok:
        rng = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and <= {high}")
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return float(value)


# ------------------------------------------------------------------- decoding
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


def _decode(model, cache, first: torch.Tensor, steps: int, u: np.ndarray | None,
            temperature: float, top_p: float) -> torch.Tensor:
    """Decode ``steps`` tokens for R rows from a cache of everything but ``first`` (R, 1).

    The cache is extended in place with ``first`` and all new tokens but the
    last, so afterwards it again holds everything but the last token.
    """
    tok, out = first, []
    for t in range(steps):
        res = forward_with_cache(model, tok, cache)
        cache = output_cache(res)
        ut = None if u is None else torch.from_numpy(u[:, t])
        nxt = sample_tokens(res.logits[:, -1, :], ut, temperature=temperature, top_p=top_p)
        out.append(nxt)
        tok = nxt[:, None]  # (R, 1)
    return torch.stack(out, dim=1)  # (R, steps)


def _shares_trunk(placement: Placement) -> bool:
    """Whether the trunk (and so the KV cache) is independent of the state."""
    inner = placement.placement if isinstance(placement, Subspace) else placement
    return isinstance(inner, HiddenScale)


# ------------------------------------------------------------------ verifiers
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
    gives NaN (the candidate is skipped and counted by :func:`generate`);
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
    """The verifier object for a ``verifier`` argument of :func:`generate`.

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
            from .lm.models import load_model

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


# ------------------------------------------------------------------ analysis
def pseudo_target(HE: np.ndarray, predicted: np.ndarray, target="best", R="auto"):
    """Pseudo-observation ``y`` (K,) and observation variance ``r`` of one cycle.

    Parameters
    ----------
    HE : numpy.ndarray (M, K)
        Scores of member j's candidate k (NaN: the verifier failed).
    predicted : numpy.ndarray (K,)
        The filter's predicted score per column (ensemble mean or weighted
        sigma-point mean).
    target : "best" or float
        ``"best"``: ``y_k = max_j HE[j, k]``; a number c:
        ``y_k = predicted_k + c sqrt(r)``.
    R : "auto" or float
        ``"auto"``: r = the variance of all usable scores; a number: r.

    Returns
    -------
    y : numpy.ndarray (K,)
        NaN for a column with a failed candidate (not assimilated).
    r : float
        0 when the scores carry no information (all equal, or none usable).

    Examples
    --------
    >>> HE = np.array([[1.0, 2.0], [3.0, np.nan]])
    >>> y, r = pseudo_target(HE, HE.mean(axis=0))
    >>> y.tolist(), r
    ([3.0, nan], 1.0)
    """
    usable = np.all(np.isfinite(HE), axis=0)  # (K,)
    y = np.full(HE.shape[1], np.nan)
    if not usable.any():
        return y, 0.0
    vals = HE[:, usable]
    r = float(np.var(vals)) if isinstance(R, str) else float(R)
    if target == "best":
        y[usable] = vals.max(axis=0)
    else:
        y[usable] = predicted[usable] + float(target) * math.sqrt(max(r, 0.0))
    return y, r


def verification_update(x: np.ndarray, directions: np.ndarray, scores: np.ndarray,
                        eta: float) -> np.ndarray:
    """The seeds' rule ``x + eta * mean_j(z_j h_j)`` with standardised scores.

    Parameters
    ----------
    x : numpy.ndarray (n,)
    directions : numpy.ndarray (M, n)
        ``h_j``, the perturbation directions of the candidates.
    scores : numpy.ndarray (M,)
        Member scores (NaN: skipped).
    eta : float
        Step size.

    Returns
    -------
    numpy.ndarray (n,)
        ``x`` unchanged when fewer than two scores are usable or they are all
        equal.

    Examples
    --------
    >>> H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> verification_update(np.zeros(2), H, np.array([2.0, 0.0]), eta=0.5).tolist()
    [0.5, 0.0]
    """
    ok = np.isfinite(scores)
    if ok.sum() < 2:
        return x.copy()
    s = scores[ok]
    sd = s.std()
    if not sd > 0:
        return x.copy()
    z = (s - s.mean()) / sd  # (M_ok,)
    return x + eta * (z[:, None] * directions[ok]).mean(axis=0)


class _ScoreObservation(ObservationOperator):
    """The cycle's score matrix as an observation operator of the points it was made at."""

    def __init__(self, X: np.ndarray, HE: np.ndarray) -> None:
        self.X, self.HE = X, HE
        self.ndim, self.nobs = X.shape[1], HE.shape[1]

    def __call__(self, X):
        X = np.asarray(X)
        if X.shape != self.X.shape or not np.array_equal(X, self.X):
            raise RuntimeError("the filter asked for scores at states other than the ones the "
                               "candidates were generated at")
        return self.HE.copy()


# ------------------------------------------------------------------ logging
_VARS: dict[str, tuple[tuple[str, ...], Any, str, str]] = {
    "tokens": (("time",), "i8", "tokens generated by the analysis mean in the cycle", "1"),
    "token_id": (("time", "token"), "i8", "tokens generated by the analysis mean (-1 beyond "
                 "the cycle's length)", "1"),
    "text": (("time",), str, "text of the cycle's generated tokens", "1"),
    "forecast_mean": (("time", "state"), "f8", "forecast mean of the state (log-scales) before "
                      "the candidates", "1"),
    "forecast_spread": (("time", "state"), "f8", "forecast standard deviation of the state",
                        "1"),
    "analysis_mean": (("time", "state"), "f8", "analysis mean of the state: drives the cycle's "
                      "tokens", "1"),
    "analysis_spread": (("time", "state"), "f8", "analysis standard deviation of the state",
                        "1"),
    "wall_time": (("time",), "f8", "wall time of the cycle", "s"),
    "wall_time_generate": (("time",), "f8", "wall time of generating the cycle's tokens", "s"),
}
_CANDIDATE_VARS: dict[str, tuple[tuple[str, ...], Any, str, str]] = {
    "member_state": (("time", "member", "state"), "f8", "state of each member, sigma point or "
                     "perturbed state that proposed candidates", "1"),
    "candidate_token_id": (("time", "member", "candidate", "token"), "i8", "token ids of the "
                           "candidates (-1 beyond the cycle's length)", "1"),
    "candidate_text": (("time", "member", "candidate"), str, "text of each candidate", "1"),
    "score": (("time", "member", "candidate"), "f8", "verifier score of each candidate (NaN: "
              "the verifier failed)", "1"),
    "observation": (("time", "candidate"), "f8", "pseudo-observation y per candidate index "
                    "(NaN: not assimilated)", "1"),
    "obs_variance": (("time",), "f8", "observation-error variance r (R = r I)", "1"),
    "verifier_failures": (("time",), "i8", "candidates whose verifier raised or returned a "
                          "non-finite value", "1"),
    "analysed": (("time",), "i8", "1 if the scores updated the state, 0 if the cycle kept the "
                 "forecast", "1"),
    "wall_time_candidates": (("time",), "f8", "wall time of decoding the candidates", "s"),
    "wall_time_verifier": (("time",), "f8", "wall time of scoring the candidates", "s"),
    "wall_time_analysis": (("time",), "f8", "wall time of the analysis", "s"),
}
_COORDS = {
    "time": {"long_name": "assimilation cycle", "units": "1", "axis": "T"},
    "state": {"long_name": "state component index", "units": "1"},
    "member": {"long_name": "member, sigma point or perturbed state", "units": "1"},
    "candidate": {"long_name": "candidate index (same random numbers for every member)",
                  "units": "1"},
    "token": {"long_name": "token position within the cycle", "units": "1"},
    "state_full": {"long_name": "component index of the placement's full state", "units": "1"},
}


class _GenerationLog:
    """Cycles in memory and, optionally, appended to a netCDF4 file (synced per cycle)."""

    def __init__(self, path, sizes: dict[str, int], attrs: dict, static: dict) -> None:
        self.sizes = sizes
        self.vars = dict(_VARS)
        if sizes["member"]:
            self.vars.update(_CANDIDATE_VARS)
        self.records: dict[str, list] = {k: [] for k in self.vars}
        self.static, self.attrs = static, dict(attrs)
        self.path, self._ds = None, None
        if path is None:
            return
        import netCDF4

        self.path = os.fspath(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        ds = netCDF4.Dataset(self.path, "w", format="NETCDF4")
        self._ds = ds
        try:
            ds.setncatts(netcdf_attrs({**attrs, "cycles_completed": 0}))
            ds.createDimension("time", None)
            t = ds.createVariable("time", "i8", ("time",))
            t.setncatts(_COORDS["time"])
            dims = [d for d in ("state", "member", "candidate", "token") if sizes[d]]
            for d in dims:
                ds.createDimension(d, sizes[d])
                c = ds.createVariable(d, "i8", (d,))
                c.setncatts(_COORDS[d])
                c[:] = np.arange(sizes[d])
            for name, (vdims, dtype, long_name, units) in self.vars.items():
                fill = {"fill_value": np.nan} if dtype == "f8" else {}
                v = ds.createVariable(name, dtype, vdims, **fill)
                v.setncatts({"long_name": long_name, "units": units})
            for name, (arr, long_name) in static.items():
                ds.createDimension("state_full", arr.shape[0])
                c = ds.createVariable("state_full", "i8", ("state_full",))
                c.setncatts(_COORDS["state_full"])
                c[:] = np.arange(arr.shape[0])
                v = ds.createVariable(name, "f8", ("state_full", "state")[:arr.ndim])
                v.setncatts({"long_name": long_name, "units": "1"})
                v[...] = arr
            ds.sync()
        except BaseException:
            ds.close()
            raise

    def __len__(self) -> int:
        return len(self.records["tokens"])

    def append(self, record: dict) -> None:
        k = len(self)
        for name in self.vars:
            self.records[name].append(record[name])
        if self._ds is None:
            return
        ds = self._ds
        ds["time"][k] = k
        for name, (vdims, dtype, _, _) in self.vars.items():
            value = record[name]
            if dtype is str and isinstance(value, str):
                ds[name][k] = value
            elif dtype is str:
                ds[name][k, ...] = np.asarray(value, dtype=object)
            elif len(vdims) == 1:
                ds[name][k] = value
            else:
                ds[name][k, ...] = np.asarray(value)
        ds.setncattr("cycles_completed", k + 1)
        ds.sync()

    def close(self, attrs: dict) -> None:
        self.attrs.update(attrs)
        if self._ds is None:
            return
        try:
            self._ds.setncatts(netcdf_attrs(attrs))
        finally:
            self._ds.close()
            self._ds = None

    def to_dataset(self) -> xr.Dataset:
        C = len(self)
        shape_of = {"time": C, **self.sizes}
        data = {}
        for name, (vdims, dtype, long_name, units) in self.vars.items():
            shape = tuple(shape_of[d] for d in vdims)
            if dtype is str:
                vals = (np.array([np.asarray(r, dtype=object) for r in self.records[name]],
                                 dtype=object) if C else np.zeros(shape, dtype=object))
                vals = vals.reshape(shape)
            else:
                vals = (np.stack([np.asarray(r) for r in self.records[name]]).astype(dtype)
                        if C else np.zeros(shape, dtype=dtype)).reshape(shape)
            data[name] = xr.Variable(vdims, vals, {"long_name": long_name, "units": units})
        coords = {d: (d, np.arange(shape_of[d]), _COORDS[d])
                  for d in ("time", "state", "member", "candidate", "token") if shape_of[d]}
        for name, (arr, long_name) in self.static.items():
            coords["state_full"] = ("state_full", np.arange(arr.shape[0]), _COORDS["state_full"])
            data[name] = xr.Variable(("state_full", "state")[:arr.ndim], arr,
                                     {"long_name": long_name, "units": "1"})
        return xr.Dataset(data, coords=coords, attrs=netcdf_attrs(self.attrs))


# --------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class GenerationResult:
    """What :func:`generate` returns.

    Parameters
    ----------
    prompt : str
    text : str
        The generated continuation (decoded ``token_ids``).
    prompt_ids, token_ids : numpy.ndarray
        Token ids of the prompt and of the continuation (``max_new_tokens``).
    filter : str
    states : numpy.ndarray (C, n)
        The analysis mean of each cycle (the state that drove its tokens).
    scores : numpy.ndarray (C, M, K)
        Verifier scores of the candidates (NaN: failed); (C, 0, 0) for "none".
    verifier_failures : int
        Candidates whose verifier raised or returned a non-finite value.
    skipped_analyses : int
        Cycles whose scores could not update the state.
    seconds : float
        Wall time of the generation loop (candidates, verifier, analysis, tokens).
    path : str or None
        The netCDF log, if one was written.
    dataset : xarray.Dataset
        The full log (same content as the file).

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> res = generate(tiny_gpt2(vocab_size=len(tok)), tok, "the cat", filter="none",
    ...                max_new_tokens=4, progress=False)
    >>> res.token_ids.size, res.verifier_failures, res.tokens_per_second > 0
    (4, 0, True)
    """

    prompt: str
    text: str
    prompt_ids: np.ndarray
    token_ids: np.ndarray
    filter: str
    states: np.ndarray
    scores: np.ndarray
    verifier_failures: int
    skipped_analyses: int
    seconds: float
    path: str | None
    dataset: xr.Dataset

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time."""
        return float(self.token_ids.size / self.seconds) if self.seconds > 0 else float("inf")


# ------------------------------------------------------------------- generate
def _prepare_placement(model, placement, subspace, seed: int) -> Placement:
    from .placements.registry import make_placement
    from .subspaces import parse_subspace

    pl = make_placement(model, placement)
    if pl.model is not model:
        raise ValueError("placement must act on the model passed to generate()")
    parsed = parse_subspace(subspace)
    if parsed is None:
        return pl
    if isinstance(pl, Subspace):
        raise ValueError("placement is already a Subspace; do not pass subspace too")
    kind, k = parsed
    if kind != "random":
        raise ValueError("generate() builds only random subspaces; build a Fisher subspace with "
                         "da_embed.fisher_subspace(...) and pass it as placement")
    if k > pl.state_dim:
        raise ValueError(f"subspace size k = {k} exceeds the state size n = {pl.state_dim}")
    return Subspace.random(pl, k, seed=seed)


def generate(model, tokenizer, prompt: str, *, filter: str = "etkf", placement="hidden",
             subspace: str | None = None, candidates: int = 1, every: int = 8,
             max_new_tokens: int = 64, verifier="self", judge_model=None, members: int = 8,
             sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
             P0: float = 0.01, Q: float = 0.001, R="auto", target="best",
             inflation: float | None = None, eta: float | None = None,
             sigma: float | None = None, seed: int = 0, out=None,
             progress: bool = True) -> GenerationResult:
    """Generate text whose scale state is updated by scored candidate continuations.

    Parameters
    ----------
    model : transformers causal LM
        Frozen; a placement is attached for the run and removed after.
    tokenizer : transformers tokenizer of ``model``
    prompt : str
        Non-empty.
    filter : {"etkf", "enkf", "ukf", "verification", "none"}
        See :data:`FILTERS` and the module notes.
    placement : str or Placement, default "hidden"
        Where the state acts (``hidden``, ``embedding``, ``svf[:targets]``,
        ``rotary[:mode]``, or a Placement of ``model``).
    subspace : str, optional
        ``"random:k"``: run in a random k-dimensional subspace (the UKF then
        needs 2k + 1 sigma points).
    candidates : int, default 1
        K, candidates per member and cycle (>= 1; > 1 needs ``sample``).
    every : int, default 8
        L, tokens per cycle (candidate length and assimilation interval).
    max_new_tokens : int, default 64
    verifier : "self", "judge", callable or path, default "self"
        See :func:`make_verifier`.
    judge_model : path, model or (model, tokenizer), optional
        For ``verifier="judge"``.
    members : int, default 8
        Ensemble size (enkf, etkf; >= 2) or perturbed states (verification;
        even, >= 2).  Ignored by ukf (2n + 1 sigma points) and none.
    sample : bool, default True
        Sample (inverse CDF) or decode greedily.
    temperature, top_p : float
        Sampling temperature (> 0) and nucleus mass (0 < top_p <= 1).
    P0 : float, default 0.01
        Prior variance of each state entry (log-scale sd 0.1).
    Q : float, default 0.001
        Random-walk process-noise variance per cycle (0: none).
    R : "auto" or float, default "auto"
        Observation-error variance of a score (module notes).
    target : "best" or float, default "best"
        The pseudo-observation (module notes).
    inflation : float, optional
        Multiplicative inflation of the analysis anomalies (enkf, etkf) or
        covariance (ukf), against the collapse of the spread over cycles.
    eta, sigma : float, optional
        Step and perturbation size of the verification rule (default
        ``sqrt(P0)`` both).
    seed : int, default 0
    out : str or PathLike, optional
        netCDF file, appended cycle by cycle (state trajectory, member
        states, candidates, scores, observations, timings).
    progress : bool, default True
        A progress bar over cycles.

    Returns
    -------
    GenerationResult

    Raises
    ------
    ValueError
        For an empty prompt, ``candidates < 1``, an unknown filter, and any
        other bad setting, before any work.

    Examples
    --------
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> model = tiny_gpt2(vocab_size=len(tok))
    >>> res = generate(model, tok, "the cat", filter="etkf", members=4, candidates=2,
    ...                every=4, max_new_tokens=8, progress=False)
    >>> res.token_ids.size, res.states.shape, res.scores.shape  # 2 cycles, n = 32, M x K
    (8, (2, 32), (2, 4, 2))
    """
    # ---- cheap checks first
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FILTERS)}, got {filter!r}")
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt must not be empty")
    K = _check_int(candidates, "candidates (K)", 1)
    L = _check_int(every, "every (L, tokens per cycle)", 1)
    T_new = _check_int(max_new_tokens, "max_new_tokens", 1)
    seed = _check_int(seed, "seed", 0)
    temperature = _check_float(temperature, "temperature")
    top_p = _check_float(top_p, "top_p", high=1.0)
    P0 = _check_float(P0, "P0")
    Q = _check_float(Q, "Q", strict=False)
    if not (isinstance(R, str) and R == "auto"):
        R = _check_float(R, "R")
    if not (isinstance(target, str) and target == "best"):
        if isinstance(target, str):
            raise ValueError(f"target must be 'best' or a number, got {target!r}")
        target = _check_float(target, "target", low=-math.inf)
    if not isinstance(sample, bool):
        raise ValueError(f"sample must be True or False, got {sample!r}")
    if not sample and K > 1 and filter != "none":
        raise ValueError(f"candidates = {K} > 1 needs sampling: greedy candidates of one member "
                         "are identical (use sample=True or candidates=1)")
    if filter in ("etkf", "enkf", "verification"):
        M = _check_int(members, "members", 2)
        if filter == "verification" and M % 2:
            raise ValueError(f"members must be even for the verification rule (antithetic "
                             f"pairs), got {M}")
    sigma = math.sqrt(P0) if sigma is None else _check_float(sigma, "sigma")
    eta = sigma if eta is None else _check_float(eta, "eta")
    if getattr(model, "training", False):
        warnings.warn("the model is in training mode (dropout on): call model.eval()",
                      RuntimeWarning, stacklevel=2)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if not prompt_ids:
        raise ValueError(f"prompt {prompt!r} has no tokens after tokenisation")
    V = int(model.get_input_embeddings().num_embeddings)
    if max(prompt_ids) >= V:
        raise ValueError(f"the tokenizer gives ids up to {max(prompt_ids)} but the model's "
                         f"vocabulary has {V}: tokenizer and model do not match")
    from .assimilator import AssimilationDiverged
    from .protocol import max_positions
    from .placements.base import rotary_modules

    limit = max_positions(model)
    if limit is not None and not rotary_modules(model) and len(prompt_ids) + T_new > limit:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({T_new}) exceed "
                         f"the model's position limit of {limit}")
    pl = _prepare_placement(model, placement, subspace, seed)
    n = int(pl.state_dim)
    if filter == "ukf":
        M = 2 * n + 1
    elif filter == "none":
        M = 0
    checker = None if filter == "none" else make_verifier(verifier, model,
                                                          judge_model=judge_model)

    # ---- the filter and its randomness
    rng_main, rng_cand, rng_filter = (np.random.default_rng(s)
                                      for s in np.random.SeedSequence(seed).spawn(3))
    prior = GaussianState(np.zeros(n), P0 * np.eye(n))
    flt = {"etkf": lambda: ETKF(N=M, inflation=inflation),
           "enkf": lambda: EnKF(N=M, inflation=inflation),
           "ukf": lambda: UKF(inflation=inflation)}.get(filter)
    flt = None if flt is None else flt()
    if flt is not None:
        flt.validate()
        state = flt.initialize(prior, rng_filter)
    Qc = as_covariance(Q, n, name="Q") if Q > 0 else None
    x = np.zeros(n)  # the point state of "verification" and "none"

    from .dynamics import RandomWalk

    walk = RandomWalk(n)
    shared = _shares_trunk(pl) or filter == "none"
    static = {}
    if isinstance(pl, Subspace):
        static = {"subspace_basis": (pl.basis.numpy(), "orthonormal subspace basis P (full "
                                     "state s = s_ref + P z)")}
    cycles = -(-T_new // L)
    attrs = {
        "title": "da-embed generation with candidates as pseudo-observations",
        "filter": filter, "filter_params": {} if flt is None else flt.params(),
        "placement": pl.describe(), "verifier": getattr(checker, "name", "none"),
        "candidates": K, "every": L, "members": M, "max_new_tokens": T_new, "sample": sample,
        "temperature": temperature, "top_p": top_p, "P0": P0, "Q": Q, "R": R,
        "target": target, "eta": eta, "sigma": sigma, "seed": seed, "prompt": prompt,
        "model": type(model).__name__, "package": "da-embed", "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
    }
    log = _GenerationLog(out, {"state": n, "member": M, "candidate": K if M else 0,
                               "token": L}, attrs, static)

    from tqdm.auto import tqdm

    ids = list(prompt_ids)
    generated: list[int] = []
    states, scores_all = [], []
    failures = skipped = 0
    error_messages: list[str] = []
    was_attached = pl.is_attached
    status = "running"
    t_start = time.perf_counter()
    try:
        pl.attach()
        with torch.no_grad():
            base_cache = prefill(model, torch.tensor([ids[:-1]], dtype=torch.long)) \
                if shared else None
            bar = tqdm(range(cycles), desc=f"generate ({filter})", disable=not progress,
                       unit="cycle")
            for c in bar:
                t0 = time.perf_counter()
                steps = min(L, T_new - len(generated))
                record: dict[str, Any] = {}
                # -- forecast
                if flt is not None and c > 0:
                    state = flt.forecast(state, walk, float(c), 1.0, 1, Qc, rng_filter)
                if flt is not None:
                    record["forecast_mean"], record["forecast_spread"] = state.mean, state.spread
                else:
                    record["forecast_mean"], record["forecast_spread"] = x.copy(), np.zeros(n)
                ctx = torch.tensor([ids], dtype=torch.long)  # (1, T)
                if M:
                    # -- candidates: M * K rows, member-major, common random numbers per k
                    if filter == "ukf":
                        sp = flt.sigma_points(state.mean, state.cov)
                        X, weights = sp.points, sp.wm  # (2n + 1, n), (2n + 1,)
                    elif flt is not None:
                        X, weights = state.members, np.full(M, 1.0 / M)  # (M, n), (M,)
                    else:
                        half = rng_filter.standard_normal((M // 2, n))
                        H = np.concatenate([half, -half])  # (M, n) antithetic directions
                        X = x + sigma * H
                    u = rng_cand.random((K, steps)) if sample else None
                    U = None if u is None else np.tile(u, (M, 1))  # (M * K, steps)
                    t1 = time.perf_counter()
                    with pl.using(X):
                        if shared:
                            cache = copy.deepcopy(base_cache)
                            cache.batch_repeat_interleave(M * K)
                        else:
                            cache = prefill(model, ctx[:, :-1].repeat(M * K, 1))
                        cand = _decode(model, cache, ctx[:, -1:].repeat(M * K, 1), steps, U,
                                       temperature, top_p).numpy()  # (M * K, steps)
                    del cache
                    t2 = time.perf_counter()
                    texts = [tokenizer.decode(row.tolist()) for row in cand]
                    context_text = tokenizer.decode(ids)
                    try:
                        sc = np.asarray(checker(np.asarray(ids), cand, context_text, texts),
                                        dtype=float).reshape(M * K)
                    except Exception as exc:  # noqa: BLE001 - a failing verifier skips the cycle
                        if len(error_messages) < 5:
                            error_messages.append(f"{type(exc).__name__}: {exc}")
                        sc = np.full(M * K, np.nan)
                    sc[~np.isfinite(sc)] = np.nan
                    HE = sc.reshape(M, K)  # (M, K)
                    bad = int(np.isnan(HE).sum())
                    failures += bad
                    t3 = time.perf_counter()
                    # -- analysis
                    if flt is not None:
                        # predicted score per column (only usable columns are read)
                        predicted = weights @ np.where(np.isnan(HE), 0.0, HE)  # (K,)
                        y, r = pseudo_target(HE, predicted, target, R)
                        analysed = bool(r > 0 and np.isfinite(y).any())
                        if analysed:
                            state = flt.analysis(state, y, _ScoreObservation(X, HE),
                                                 as_covariance(r, K, name="R"), rng_filter)
                    else:
                        y, r = np.full(K, np.nan), float("nan")
                        member_scores = np.array([np.nanmean(row) if np.isfinite(row).any()
                                                  else np.nan for row in HE])
                        x_new = verification_update(x, H, member_scores, eta)
                        analysed = not np.array_equal(x_new, x)
                        x = x_new
                    skipped += int(not analysed)
                    t4 = time.perf_counter()
                    pad = np.full((M * K, L), -1, dtype=np.int64)
                    pad[:, :steps] = cand
                    record.update({
                        "member_state": X, "candidate_token_id": pad.reshape(M, K, L),
                        "candidate_text": np.array(texts, dtype=object).reshape(M, K),
                        "score": HE, "observation": y, "obs_variance": r,
                        "verifier_failures": bad, "analysed": int(analysed),
                        "wall_time_candidates": t2 - t1, "wall_time_verifier": t3 - t2,
                        "wall_time_analysis": t4 - t3})
                    scores_all.append(HE)
                    if not np.all(np.isfinite(state.mean if flt is not None else x)):
                        raise AssimilationDiverged(f"the state became non-finite at cycle {c}; "
                                                   "lower P0, Q or eta")
                mean = state.mean if flt is not None else x
                spread = state.spread if flt is not None else np.zeros(n)
                # -- the cycle's tokens, driven by the analysis mean
                t5 = time.perf_counter()
                u_main = rng_main.random((1, steps)) if sample else None
                first = ctx[:, -1:]
                if filter == "none":
                    new = _decode(model, base_cache, first, steps, u_main, temperature, top_p)
                else:
                    with pl.using(mean[None]):
                        cache = base_cache if shared else prefill(model, ctx[:, :-1])
                        new = _decode(model, cache, first, steps, u_main, temperature, top_p)
                new = new[0].tolist()
                ids.extend(new)
                generated.extend(new)
                t6 = time.perf_counter()
                tok_pad = np.full(L, -1, dtype=np.int64)
                tok_pad[:steps] = new
                record.update({"tokens": steps, "token_id": tok_pad,
                               "text": tokenizer.decode(new), "analysis_mean": mean,
                               "analysis_spread": spread, "wall_time": t6 - t0,
                               "wall_time_generate": t6 - t5})
                states.append(np.array(mean, dtype=float, copy=True))
                log.append(record)
                if M and progress:
                    bar.set_postfix(failures=failures, state_norm=f"{np.linalg.norm(mean):.3f}")
            bar.close()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        seconds = time.perf_counter() - t_start
        if not was_attached:
            pl.remove()
        errors = (error_messages + list(getattr(checker, "errors", []) or []))[:5]
        log.close({"status": status, "cycles_completed": len(log), "seconds": seconds,
                   "verifier_failures_total": failures, "skipped_analyses": skipped,
                   "verifier_errors": errors, "generated_text": tokenizer.decode(generated)})
    scores = np.stack(scores_all) if scores_all else np.zeros((len(states), 0, 0))
    return GenerationResult(
        prompt=prompt, text=tokenizer.decode(generated),
        prompt_ids=np.asarray(prompt_ids, dtype=np.int64),
        token_ids=np.asarray(generated, dtype=np.int64), filter=filter,
        states=np.stack(states), scores=scores, verifier_failures=failures,
        skipped_analyses=skipped, seconds=seconds, path=log.path, dataset=log.to_dataset())


# ------------------------------------------------------------------------ CLI
def add_parser(sub) -> None:
    """Add the ``generate`` subcommand to the ``da-embed`` subparsers."""
    import argparse

    p = sub.add_parser(
        "generate", help="generate text steered by scored candidates (pseudo-observations)",
        description="Every --every tokens each ensemble member / sigma point proposes "
                    "--candidates continuations, a verifier scores them, the scores are "
                    "assimilated as pseudo-observations into the scale state, and the "
                    "updated mean state generates the next tokens.  Prints the text; logs "
                    "states, candidates and scores to --out (netCDF).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model")
    p.add_argument("--filter", default="etkf", choices=tuple(FILTERS),
                   help="; ".join(f"{k}: {v}" for k, v in FILTERS.items()))
    p.add_argument("--placement", default="hidden",
                   help="hidden, embedding, svf[:targets], rotary[:mode]")
    p.add_argument("--subspace", default=None, help="random:k (a random k-dim subspace)")
    p.add_argument("--candidates", type=int, default=1, help="K candidates per member")
    p.add_argument("--every", type=int, default=8, help="L tokens per cycle")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--members", type=int, default=8,
                   help="ensemble size (enkf, etkf) or perturbations (verification)")
    p.add_argument("--verifier", default="self",
                   help="self, judge (with --judge-model), or PATH[:FUNCTION] of a Python "
                        "file defining score(text) -> float")
    p.add_argument("--judge-model", default=None, help="judge causal LM folder")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--P0", type=float, default=0.01, help="prior variance of the state")
    p.add_argument("--Q", type=float, default=0.001, help="process noise per cycle")
    p.add_argument("--R", default="auto", help="score noise variance, or auto")
    p.add_argument("--target", default="best", help="best, or c (score sds above predicted)")
    p.add_argument("--inflation", type=float, default=None,
                   help="multiplicative inflation (enkf, etkf, ukf)")
    p.add_argument("--eta", type=float, default=None, help="verification rule step")
    p.add_argument("--sigma", type=float, default=None, help="verification rule perturbation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="da-embed-generate.nc", help="netCDF log")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _number_or(text: str, word: str, name: str):
    if text == word:
        return word
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be {word!r} or a number, got {text!r}") from None


def load_generator(model_path, progress: bool = True):
    """(model, tokenizer, name): a local model folder, or the cached reference model."""
    if model_path is None:
        from .reference import load_reference

        model, tokenizer, info = load_reference(progress=progress)
        return model, tokenizer, f"reference ({info.get('path', 'cache')})"
    from .lm.models import load_model

    model, tokenizer = load_model(model_path)
    return model, tokenizer, os.fspath(model_path)


def run_cli(args) -> int:
    """Run ``da-embed generate`` (parsed ``args``); returns the exit status."""
    # Cheap checks before the model is loaded (generate() checks everything again).
    if not args.prompt.strip():
        raise ValueError("prompt must not be empty")
    _check_int(args.candidates, "candidates (K)", 1)
    _check_int(args.every, "every (L, tokens per cycle)", 1)
    _check_int(args.max_new_tokens, "max_new_tokens", 1)
    R = _number_or(args.R, "auto", "--R")
    target = _number_or(args.target, "best", "--target")
    verifier = args.verifier
    if verifier not in ("self", "judge"):
        verifier = load_verifier(verifier)
    if args.verifier == "judge" and args.judge_model is None:
        raise ValueError("--verifier judge needs --judge-model PATH")
    model, tokenizer, name = load_generator(args.model, progress=not args.no_progress)
    res = generate(model, tokenizer, args.prompt, filter=args.filter, placement=args.placement,
                   subspace=args.subspace, candidates=args.candidates, every=args.every,
                   max_new_tokens=args.max_new_tokens, verifier=verifier,
                   judge_model=args.judge_model, members=args.members,
                   sample=not args.greedy, temperature=args.temperature, top_p=args.top_p,
                   P0=args.P0, Q=args.Q, R=R, target=target, inflation=args.inflation,
                   eta=args.eta, sigma=args.sigma,
                   seed=args.seed, out=args.out, progress=not args.no_progress)
    print(f"{res.prompt}{res.text}")
    print(f"[{name}; filter {res.filter}; {res.token_ids.size} tokens in {res.seconds:.2f} s "
          f"({res.tokens_per_second:.1f} tokens/s); verifier failures {res.verifier_failures}; "
          f"skipped analyses {res.skipped_analyses}; final |state| "
          f"{float(np.linalg.norm(res.states[-1])):.4f}; log {res.path}]")
    return 0
