"""The online assimilation loop over a token stream, under the prequential protocol.

:class:`OnlineAssimilator` couples a language model (through a placement), a
forecast model (:mod:`da_embed.dynamics`) and any method with the
:class:`filters.Filter` interface (the filters of :mod:`filters` or the
baselines of :mod:`da_embed.baselines`), and runs a token stream chunk by
chunk.  For every chunk k:

1. *forecast*: ``filter.forecast`` moves the analysis of chunk k - 1 with the
   forecast model and adds the process noise Q (one step of ``dt = 1`` per
   chunk; chunk 0 starts from the prior N(0, P0 I));
2. *score*: the chunk's tokens are scored with the forecast mean, i.e. with
   the state estimated from earlier chunks only (the prequential score);
3. *analyse*: ``filter.analysis`` assimilates the chunk through
   :class:`~da_embed.observations.TokenNLLObservation` with the
   pseudo-observation of :func:`~da_embed.observations.pseudo_observation`
   and noise ``R = r I``;
4. *log*: the chunk is appended to the trajectory (and its netCDF file).

Windowed methods (``4dvar``, ``w4dvar``: filters with ``windowed = True``)
replace step 3 by a sliding-window analysis (:class:`~da_embed.windowed.WindowedAnalysis`): at
chunk k, after chunk k is scored, the window of chunks ``j0 = k - W + 1 .. k``
(fewer at the start) is solved at once, one observation operator per chunk,
with the forecast model between chunks; the background at chunk ``j0`` is the
analysis of chunk ``j0 - 1`` moved one step (the prior at ``j0 = 0``) with the
static ``B = P0 I``, so every chunk enters each window's cost once, and the
window's state at chunk k is the analysis.  Scoring chunk k + 1 uses that
analysis moved one step, so the protocol stays prequential.  These runs also
log per chunk ``window_chunks``, ``cost_start``, ``cost_end``, ``iterations``
and ``converged``.

The protocol (:class:`PrequentialConfig`: chunk, context, stride, token
limit) is stored with every result.  Chunk k's targets are the stream tokens
``start_k .. start_k + chunk - 1`` with ``start_k = 1 + k * stride``; each is
predicted from the ``context`` tokens before ``start_k`` (fewer at the start
of the stream) and the chunk's earlier tokens, so the model reads at most
``context + chunk - 1`` tokens.  The first token of the stream is never
scored; a last partial chunk is dropped; tokens between chunks (``stride >
chunk``) are context only.

Shapes: N members, n state size, L = chunk, T chunks.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from typing import Callable

import numpy as np
import xarray as xr

from filters import EKF, DiagonalEKF, Filter
from filters.covariance import as_covariance
from filters.models import Model

from ._version import __version__
from .chunk_loop import AssimilationDiverged, ChunkLoop, exp_or_inf
from .dynamics import RandomWalk
from .methods import make_method, method_label
from .observations import TARGETS
from .placements import Placement, Subspace
from .progress import progress_bar
from .protocol import PrequentialConfig, max_positions
from .trajectory import WINDOW_VARIABLES, TrajectoryRecorder, TrajectoryWriter
from .windowed import WindowedAnalysis

__all__ = ["PrequentialConfig", "OnlineAssimilator", "AssimilationDiverged", "max_positions",
           "WindowedAnalysis"]

#: Largest state size whose final analysis covariance is stored (n x n float64: 8 MiB).
_MAX_STORED_COVARIANCE = 1024


class OnlineAssimilator:
    """Run a filter (or baseline) over a token stream under the prequential protocol.

    Parameters
    ----------
    placement : Placement
        Where the state enters the LM (possibly a Subspace); attached for the
        run if it is not.
    method : str or filters.Filter, default "ekf"
        A name of :data:`da_embed.methods.METHODS` or a filter object.
    protocol : PrequentialConfig, optional
        Default ``PrequentialConfig()``.
    dynamics : filters.models.Model, optional
        Forecast model of one chunk; default :class:`~da_embed.dynamics.RandomWalk`.
        A model with ``set_summary(h)`` (e.g.
        :class:`~da_embed.dynamics.LearnedDynamics`) gets the pooled final
        hidden state of each chunk after it is scored.
    P0 : float, default 0.1
        Prior variance of every state component (the prior is N(0, P0 I), or
        N(s_b, P0 I) when ``dynamics`` has an ``initial_state`` s_b).
    Q : float or array_like, default 0.01
        Process-noise covariance per chunk (scalar, variances or matrix); 0
        means none (the identity forecast).  DESIGN section 8: the EKF with
        P0 0.1 and Q 0.01 matched dynamic evaluation.
    R : float or array_like, default 1.0
        Observation-noise variance per token (see
        :mod:`da_embed.observations` for why 1 with ``decrement`` 1).
    target : {"decrement", "zero"}
        Pseudo-observation (:func:`~da_embed.observations.pseudo_observation`).
    decrement : float, default 1.0
        Innovation per token of the ``"decrement"`` target.
    members : int, default 16
        Ensemble size when ``method`` is a name.
    seed : int, default 0
        Seeds the filter's randomness (ensembles, perturbed observations).
    member_batch : int, default 32
        Members per forward pass.
    max_dense_state : int, default 4096
        Largest n for methods with an n x n covariance (EKF, UKF, 3D-Var).
        Above it the EKF (``"ekf"`` or a :class:`filters.EKF` object) switches
        to the diagonal-covariance :class:`filters.DiagonalEKF` with the same
        options (``filter`` in the output says ``"diagonal EKF"``).
    max_sigma_points : int, default 257
        Largest 2n + 1 for the UKF (n <= 128 by default).
    model_name : str, optional
        Stored in the output (default: the model's class name).
    label : str, optional
        Method label in outputs (default: the method's name).
    progress : bool, default False
        Show a tqdm progress bar.
    attrs : dict, optional
        Extra global attributes of the output (e.g. the segments of a
        multi-domain stream), written with the others from the start.

    Attributes
    ----------
    filter_ : filters.Filter
        The method object used by the last run.
    state_ : GaussianState, EnsembleState or PointState
        The analysis after the last completed chunk.
    dataset_ : xarray.Dataset
        The trajectory of the last run.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> run = OnlineAssimilator(HiddenScale(model), "ekf",
    ...                        protocol=PrequentialConfig(chunk=8, context=16))
    >>> ds = run.run(random_input_ids(model, batch=1, length=41)[0])
    >>> ds.sizes["time"], ds.attrs["chunk"], ds.attrs["method"]
    (5, 8, 'ekf')
    """

    def __init__(self, placement: Placement, method="ekf", *,
                 protocol: PrequentialConfig | None = None, dynamics: Model | None = None,
                 P0: float = 0.1, Q=0.01, R=1.0, target: str = "decrement",
                 decrement: float = 1.0, members: int = 16, seed: int = 0,
                 member_batch: int = 32, max_dense_state: int = 4096,
                 max_sigma_points: int = 257, model_name: str | None = None,
                 label: str | None = None, progress: bool = False,
                 attrs: dict | None = None) -> None:
        self.placement = placement
        self.method = method
        self.protocol = protocol
        self.dynamics = dynamics
        self.P0, self.Q, self.R = P0, Q, R
        self.target, self.decrement = target, decrement
        self.members, self.seed = members, seed
        self.member_batch = member_batch
        self.max_dense_state, self.max_sigma_points = max_dense_state, max_sigma_points
        self.model_name, self.label, self.progress = model_name, label, progress
        self.attrs = attrs

    # ----------------------------------------------------------------- set-up
    def _build(self):
        """Validate the settings; return (protocol, filter, label, dynamics, Q, n)."""
        if not isinstance(self.placement, Placement):
            raise ValueError(f"placement must be a Placement (e.g. HiddenScale(model)), got "
                             f"{type(self.placement).__name__}")
        protocol = PrequentialConfig() if self.protocol is None else self.protocol
        if not isinstance(protocol, PrequentialConfig):
            raise ValueError(f"protocol must be a PrequentialConfig, got "
                             f"{type(protocol).__name__}")
        if not (isinstance(self.P0, numbers.Real) and math.isfinite(self.P0) and self.P0 > 0):
            raise ValueError(f"P0 (prior variance) must be a finite number > 0, got {self.P0!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}, got {self.target!r}")
        if not (isinstance(self.decrement, numbers.Real) and math.isfinite(self.decrement)
                and self.decrement > 0):
            raise ValueError(f"decrement must be a finite number > 0, got {self.decrement!r}")
        n = int(self.placement.state_dim)
        if isinstance(self.method, str):
            flt = make_method(self.method, members=self.members, P0=self.P0)
            label = self.label or method_label(self.method)
        elif isinstance(self.method, Filter):
            flt = self.method
            label = self.label or flt.name
        else:
            raise ValueError(f"method must be a method name or a filters.Filter, got "
                             f"{type(self.method).__name__}")
        if type(flt) is EKF and n > self.max_dense_state:
            # Above the dense limit the EKF keeps a diagonal covariance (O(n L^2)).
            flt = DiagonalEKF(jacobian=flt.jacobian, infl_rate=flt.infl_rate,
                              fd_eps=flt.fd_eps, inflation=flt.inflation)
        flt.validate()
        dense = getattr(flt, "name", "") in ("EKF", "UKF", "KF", "3D-Var", "4D-Var",
                                             "weak 4D-Var")
        if dense and n > self.max_dense_state:
            raise ValueError(f"{label} keeps an n x n covariance; n = {n} exceeds max_dense_state "
                             f"= {self.max_dense_state}: use a Subspace (--subspace fisher:k)")
        if getattr(flt, "name", "") == "UKF" and 2 * n + 1 > self.max_sigma_points:
            raise ValueError(f"the UKF needs 2n + 1 = {2 * n + 1} sigma points (n = {n}), more "
                             f"than max_sigma_points = {self.max_sigma_points}: use a small "
                             "state (RotaryScale, or --subspace fisher:k)")
        dyn = RandomWalk(n) if self.dynamics is None else self.dynamics
        if not isinstance(dyn, Model) or int(getattr(dyn, "ndim", -1)) != n:
            raise ValueError(f"dynamics must be a filters.models.Model of ndim {n} (the state "
                             f"size), got {type(dyn).__name__}")
        Q = self.Q
        if isinstance(Q, numbers.Real) and not isinstance(Q, bool):
            if not (math.isfinite(Q) and Q >= 0):
                raise ValueError(f"Q must be a finite number >= 0, got {Q!r}")
            Qc = None if Q == 0 else as_covariance(float(Q), n, "Q")
        else:
            Qc = as_covariance(Q, n, "Q")
        as_covariance(self.R, protocol.chunk, "R")  # checked before any work
        if getattr(flt, "windowed", False):
            if hasattr(dyn, "set_summary"):
                raise ValueError(f"{label} re-runs the dynamics over a window of chunks; "
                                 f"{type(dyn).__name__} reads each chunk's summary and is not "
                                 "supported there: use the random walk (the default dynamics)")
            if getattr(flt, "_weak", False) and Qc is None and getattr(flt, "Q", None) is None:
                raise ValueError(f"{label} (weak-constraint 4D-Var) needs a model-error "
                                 "covariance: Q must be > 0")
        return protocol, flt, label, dyn, Qc, n

    def _check_stream(self, token_ids, protocol) -> np.ndarray:
        try:
            ids = np.asarray(token_ids.detach().cpu().numpy() if hasattr(token_ids, "detach")
                             else token_ids)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"token_ids must be a 1-D sequence of token ids: {exc}") from None
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"token_ids must be a 1-D array of integer token ids, got shape "
                             f"{ids.shape} and dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if protocol.max_tokens is not None:
            ids = ids[:protocol.max_tokens]
        if ids.size - 1 < protocol.chunk:
            raise ValueError(f"the token stream has {ids.size} tokens; at least chunk + 1 = "
                             f"{protocol.chunk + 1} are needed for one chunk (the corpus is "
                             "empty or too short)")
        V = self.placement.vocab_size
        if int(ids.min()) < 0 or int(ids.max()) >= V:
            raise ValueError(f"token ids must lie in [0, {V}) (the model's vocabulary), got "
                             f"[{int(ids.min())}, {int(ids.max())}]: tokenizer and model do "
                             "not match")
        limit = max_positions(self.placement.model)
        if limit is not None and protocol.window > limit:
            raise ValueError(f"context + chunk - 1 = {protocol.window} tokens exceed the model's "
                             f"position limit of {limit}; lower --context or --chunk")
        return ids

    # -------------------------------------------------------------------- run
    def run(self, token_ids, *, out=None,
            callback: Callable[[int, dict], None] | None = None) -> xr.Dataset:
        """Assimilate a token stream chunk by chunk.

        Parameters
        ----------
        token_ids : array_like of int, shape (T_tokens,)
            The stream.
        out : str or PathLike, optional
            netCDF file written as the run goes (one chunk appended at a time).
        callback : callable, optional
            ``callback(k, record)`` after chunk k is logged.

        Returns
        -------
        xarray.Dataset
            The trajectory (:mod:`da_embed.trajectory` layout); also in
            :attr:`dataset_`.

        Raises
        ------
        ValueError
            For bad settings or input, before any work.
        AssimilationDiverged
            If the state estimate becomes non-finite (completed chunks kept).
        KeyboardInterrupt
            Re-raised after the file is closed with every completed chunk.
        """
        loop = self._prepare(token_ids, out)
        t_start = time.perf_counter()
        try:
            with self.placement.attached():
                loop.start(self.P0)
                for k, start in enumerate(loop.starts):
                    record = loop.step(k, int(start))  # forecast, score, analyse, log
                    self.state_ = loop.state
                    loop.report(k, record, callback)
            loop.status = "complete"
        except BaseException as exc:
            if loop.status != "diverged" and not isinstance(exc, KeyboardInterrupt):
                loop.status = f"failed: {type(exc).__name__}"
            raise
        finally:
            self._finish(loop, time.perf_counter() - t_start)
        return self.dataset_

    def _prepare(self, token_ids, out) -> ChunkLoop:
        """Check everything, open the outputs; the run's loop, not yet started."""
        protocol, flt, label, dyn, Q, n = self._build()
        ids = self._check_stream(token_ids, protocol)
        starts = protocol.starts(ids.size)
        R = as_covariance(self.R, protocol.chunk, "R")
        rng = np.random.default_rng(self.seed)
        static = {}
        if isinstance(self.placement, Subspace):
            static = {"subspace_basis": self.placement.basis.numpy(),
                      "subspace_reference": self.placement.reference.numpy()}
        attrs = self._attrs(protocol, flt, label, dyn, ids, starts, n)
        extra = tuple(WINDOW_VARIABLES) if getattr(flt, "windowed", False) else ()
        recorder = TrajectoryRecorder(n, protocol.chunk, static, extra)
        writer = (None if out is None
                  else TrajectoryWriter(out, n, protocol.chunk, attrs, static, extra))
        self.filter_ = flt
        bar = progress_bar(total=len(starts), desc=label, disable=not self.progress,
                           leave=False, unit="chunk")
        return ChunkLoop(self.placement, flt, dyn, Q, R, ids, starts, protocol, self.target,
                         self.decrement, label, self.member_batch, rng, recorder, writer, bar,
                         attrs)

    def _finish(self, loop: ChunkLoop, seconds: float) -> None:
        """Close the bar and the file (with the final covariance); set :attr:`dataset_`."""
        loop.bar.close()
        final = self._final_attrs(loop.recorder, loop.status, seconds)
        cov = _final_covariance(loop.last, loop.recorder.n)
        arrays = {} if cov is None else {"analysis_covariance": cov}
        if loop.writer is not None:
            loop.writer.close(final, arrays)
        self.dataset_ = loop.recorder.to_dataset({**loop.attrs, **final}, arrays)

    # --------------------------------------------------------------- metadata
    def _attrs(self, protocol, flt, label, dyn, ids, starts, n) -> dict:
        model = self.placement.model
        dyn_params = dyn.params() if hasattr(dyn, "params") else {"name": type(dyn).__name__}
        dyn_count = int(getattr(dyn, "num_parameters", 0))
        q = self.Q if isinstance(self.Q, numbers.Real) else "array"
        r = self.R if isinstance(self.R, numbers.Real) else "array"
        return {
            "title": f"{label} on {type(self.placement).__name__} "
                     f"({self.model_name or type(model).__name__}), prequential",
            "method": label, "filter": getattr(flt, "name", type(flt).__name__),
            "filter_params": json.dumps(flt.params(), default=str),
            "placement": json.dumps(self.placement.describe(), default=str),
            "model": self.model_name or type(model).__name__,
            "seed": int(self.seed), "package": "da-embed", "version": __version__,
            "created": _now(),
            "protocol": json.dumps(protocol.describe()), "chunk": protocol.chunk,
            "context": protocol.context, "stride": protocol.stride,
            "max_tokens": protocol.max_tokens,
            "stream_tokens": int(ids.size), "chunks_planned": int(len(starts)),
            "tokens_planned": int(len(starts) * protocol.chunk),
            "prequential": "each chunk is scored with the forecast mean (the state estimated "
                           "from earlier chunks only), then assimilated",
            "observation": "per-token negative log-likelihoods of the chunk (TokenNLLObservation)",
            "target": self.target, "decrement": float(self.decrement), "R": r, "Q": q,
            "P0": float(self.P0), "dynamics": json.dumps(dyn_params, default=str),
            "state_dim": n, "adaptation_parameters": (0 if label == "frozen" else n + dyn_count),
            **({} if getattr(flt, "adaptation_parameters", None) is None
               else {"adaptation_parameters": int(flt.adaptation_parameters)}),  # e.g. T2's experts
            **(self.attrs or {}),
        }

    @staticmethod
    def _final_attrs(recorder: TrajectoryRecorder, status: str, seconds: float) -> dict:
        K = len(recorder)
        nll = float(np.mean(recorder.records["nll"])) if K else float("nan")
        tokens = int(np.sum(recorder.records["tokens"])) if K else 0
        return {"status": status, "chunks_completed": K, "tokens_scored": tokens,
                "nll_mean": nll, "perplexity": exp_or_inf(nll) if K else float("nan"),
                "wall_time_total": float(seconds)}


def _final_covariance(state, n: int):
    """The state's covariance (the ensemble's sample covariance), or None.

    None for point estimates (frozen, dyneval, verify: no ``cov``), for no
    completed chunk, and above ``_MAX_STORED_COVARIANCE``.
    """
    if state is None or n > _MAX_STORED_COVARIANCE or not hasattr(state, "cov"):
        return None
    cov = np.asarray(state.cov, dtype=float)
    return cov if cov.shape == (n, n) and np.all(np.isfinite(cov)) else None


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
