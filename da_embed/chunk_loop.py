"""The loop of one assimilation run over the chunks of a stream.

:class:`ChunkLoop` carries what :meth:`da_embed.assimilator.OnlineAssimilator.run`
moves from chunk to chunk (the state, the window of a windowed method, the
trajectory recorder and file) and runs each chunk's stages in order:
*forecast* (the last analysis moved one step, Q added), *score* (the chunk's
tokens under the forecast mean: the prequential score), *analyse* (the
chunk assimilated, or the window ending at it) and *log* (the record
appended to the trajectory).  The run starts from :class:`DiagonalPrior`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .observations import TokenNLLObservation, predicted_observation, pseudo_observation
from .windowed import WindowedAnalysis

__all__ = ["AssimilationDiverged", "ChunkLoop", "DiagonalPrior", "exp_or_inf"]


class AssimilationDiverged(RuntimeError):
    """The state estimate became non-finite or exploded; completed chunks are kept.

    Examples
    --------
    >>> try:
    ...     raise AssimilationDiverged("etkf diverged at chunk 3; 3 completed chunks were kept")
    ... except RuntimeError as error:
    ...     print(type(error).__name__)
    AssimilationDiverged
    """


def exp_or_inf(x: float) -> float:
    """exp that gives inf instead of OverflowError (a diverged run's perplexity).

    Parameters
    ----------
    x : float

    Returns
    -------
    float
        ``exp(x)``, or inf for ``x >= 709`` (beyond float64).

    Examples
    --------
    >>> exp_or_inf(0.0), exp_or_inf(1e4)
    (1.0, inf)
    """
    return math.exp(x) if x < 709.0 else float("inf")


class DiagonalPrior:
    """N(0, P0 I) with the GaussianState interface the filters use, lazily dense.

    Parameters
    ----------
    n : int
        State size.
    variance : float
        P0, the variance of every component.

    Examples
    --------
    >>> prior = DiagonalPrior(3, 0.25)
    >>> prior.ndim, prior.spread.tolist(), prior.cov.shape
    (3, [0.5, 0.5, 0.5], (3, 3))
    """

    def __init__(self, n: int, variance: float):
        self.mean = np.zeros(n)
        self.variance = float(variance)

    @property
    def ndim(self) -> int:
        """The state size n."""
        return self.mean.shape[0]

    @property
    def cov(self) -> np.ndarray:
        """The dense covariance P0 I (n, n)."""
        return self.variance * np.eye(self.ndim)

    @property
    def variances(self) -> np.ndarray:
        """The diagonal (n,): what the diagonal EKF reads (no n x n matrix)."""
        return np.full(self.ndim, self.variance)

    @property
    def spread(self) -> np.ndarray:
        """The standard deviations (n,)."""
        return np.full(self.ndim, math.sqrt(self.variance))

    def sample(self, rng, size):
        """``size`` draws (size, n); the same numbers as GaussianState.sample for cov = P0 I."""
        return self.mean + math.sqrt(self.variance) * rng.standard_normal((size, self.ndim))


@dataclass
class ChunkLoop:
    """One run's chunk loop: its settings, its state and its outputs.

    Parameters
    ----------
    placement : Placement
        Attached while the loop runs.
    flt : filters.Filter
    dynamics : filters.models.Model
        Forecast model of one chunk.
    Q : Covariance or None
        Process noise per chunk (None: the identity forecast).
    R : Covariance
        Observation noise of one chunk (L, L).
    ids : ndarray of int64
        The checked stream.
    starts : ndarray of int
        The first target token of every chunk.
    protocol : PrequentialConfig
    target, decrement
        The pseudo-observation (:func:`~da_embed.observations.pseudo_observation`).
    label : str
        The method's label (in messages and the progress bar).
    member_batch : int
        Members per forward pass.
    rng : numpy.random.Generator
    recorder : TrajectoryRecorder
    writer : TrajectoryWriter or None
    bar : tqdm.tqdm
        The progress bar (:func:`da_embed.progress.progress_bar`).
    attrs : dict
        The output's global attributes.

    Attributes
    ----------
    state : GaussianState, EnsembleState or PointState
        The analysis of the last completed chunk (the forecast during a chunk).
    last : GaussianState, EnsembleState, PointState or None
        The analysis of the last completed chunk (None before the first).
    window : WindowedAnalysis or None
        The window of a windowed method (set by :meth:`start`).
    status : str
        ``interrupted`` until the run sets its end; ``diverged`` when it stopped for that.
    nll_sum : float
        Sum of the chunks' mean NLL so far (the bar's running perplexity).

    Examples
    --------
    >>> from da_embed.assimilator import OnlineAssimilator, PrequentialConfig
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import random_input_ids, tiny_gpt2
    >>> runner = OnlineAssimilator(HiddenScale(tiny_gpt2()), "etkf", members=4,
    ...                            protocol=PrequentialConfig(chunk=8, context=8))
    >>> loop = runner._prepare(random_input_ids(runner.placement.model, 1, 17)[0], None)
    >>> with runner.placement.attached():
    ...     loop.start(0.1)
    ...     record = loop.step(0, int(loop.starts[0]))
    >>> loop.bar.close()
    >>> record["tokens"], len(loop.recorder), loop.last is loop.state, loop.status
    (8, 1, True, 'interrupted')
    """

    placement: Any
    flt: Any
    dynamics: Any
    Q: Any
    R: Any
    ids: np.ndarray
    starts: np.ndarray
    protocol: Any
    target: str
    decrement: float
    label: str
    member_batch: int
    rng: np.random.Generator
    recorder: Any
    writer: Any
    bar: Any
    attrs: dict
    state: Any = field(default=None, init=False)
    last: Any = field(default=None, init=False)
    window: WindowedAnalysis | None = field(default=None, init=False)
    status: str = field(default="interrupted", init=False)
    nll_sum: float = field(default=0.0, init=False)

    def start(self, P0: float) -> None:
        """The initial state from the prior N(s_b, P0 I) (and the window of a windowed method)."""
        prior = DiagonalPrior(self.recorder.n, P0)
        if getattr(self.dynamics, "initial_state", None) is not None:
            prior.mean = np.array(self.dynamics.initial_state, dtype=float)  # spin-up's s_b
        self.state = self.flt.initialize(prior, self.rng)
        if getattr(self.flt, "windowed", False):
            self.flt.setup(self.dynamics, None, prior, 1.0, self.Q)
            self.window = WindowedAnalysis(self.flt, self.dynamics, prior.mean, self.R, self.Q)

    def step(self, k: int, start: int) -> dict:
        """Forecast, score, analyse and log chunk k; its record."""
        t0 = time.perf_counter()
        if k > 0:
            self.state = self.flt.forecast(self.state, self.dynamics, float(k - 1), 1.0, 1,
                                           self.Q, self.rng)
        t1 = time.perf_counter()
        a = max(0, start - self.protocol.context)
        obs = TokenNLLObservation(self.placement, self.ids[a:start + self.protocol.chunk],
                                  self.protocol.chunk, member_batch=self.member_batch)
        mean_f = np.asarray(self.state.mean, dtype=float)
        token_nll = obs.score(mean_f)  # (L,) prequential: earlier chunks only
        t2 = time.perf_counter()
        self._check(bool(np.all(np.isfinite(token_nll))), k,
                    "the NLL under the forecast mean is not finite")
        y, analysed, info = self._analyse(k, obs)
        t3 = time.perf_counter()
        mean_a = np.asarray(analysed.mean, dtype=float)
        self._check(bool(np.all(np.isfinite(mean_a)) and np.abs(mean_a).max() < 1e4), k,
                    "the analysis mean is non-finite or beyond 1e4")
        if hasattr(self.dynamics, "set_summary") and obs.summary_ is not None:
            self.dynamics.set_summary(obs.summary_)  # forecast of chunk k + 1 sees chunk k
        record = {
            "chunk_start": start, "context_tokens": start - a, "tokens": self.protocol.chunk,
            "nll": float(token_nll.mean()), "token_nll": token_nll, "token_id": obs.targets,
            "innovation": y - token_nll, "forecast_mean": mean_f,
            "forecast_spread": _spread(self.state), "analysis_mean": mean_a,
            "analysis_spread": _spread(analysed), "wall_time": t3 - t0,
            "wall_time_forecast": t1 - t0, "wall_time_score": t2 - t1,
            "wall_time_analysis": t3 - t2, **info,
        }
        self._log(record, analysed)
        return record

    def _analyse(self, k: int, obs):
        """The pseudo-observation of chunk k and its analysis: (y, state, window info)."""
        self.flt.prepare(self.dynamics, obs)
        y = pseudo_observation(predicted_observation(self.flt, self.state, obs),
                               self.target, self.decrement)
        if self.window is None:
            return y, self.flt.analysis(self.state, y, obs, self.R, self.rng), {}
        # chunks k - W + 1 .. k at once; the analysis is the state at k
        return (y, *self.window.analyse(k, obs, y))

    def _check(self, ok: bool, k: int, what: str) -> None:
        if not ok:
            self.status = "diverged"
            raise AssimilationDiverged(f"{self.label} diverged at chunk {k}: {what}; {k} "
                                       "completed chunks were kept")

    def _log(self, record: dict, analysed) -> None:
        self.recorder.append(record)
        if self.writer is not None:
            self.writer.append(record)
        self.state = self.last = analysed

    def report(self, k: int, record: dict,
               callback: Callable[[int, dict], None] | None = None) -> None:
        """Chunk k on the progress bar (running perplexity), then ``callback(k, record)``."""
        self.nll_sum += record["nll"]
        self.bar.update(1)
        self.bar.set_postfix(ppl=f"{exp_or_inf(self.nll_sum / (k + 1)):.4g}")
        if callback is not None:
            callback(k, record)


def _spread(state) -> np.ndarray:
    return np.asarray(state.spread, dtype=float)
