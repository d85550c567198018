"""The cycle loop of a run: forecast, candidates, verification, analysis, the cycle's tokens.

The order of the random draws is part of the method (a run is reproducible
from its seed): per cycle the filter's forecast and the perturbations of the
verification rule draw from the filter's generator, the candidates' uniforms
from the candidates' generator, the analysis (EnKF) again from the filter's,
and the output tokens from the main generator.

Shapes: M members (or sigma points), K candidates per member, L tokens per
cycle, n state size.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from filters import ETKF, UKF, EnKF
from filters.covariance import as_covariance
from filters.states import GaussianState

from ..dynamics import RandomWalk
from ..lm.kv_cache import prefill
from ..progress import progress_bar
from .analysis import _ScoreObservation, pseudo_target, verification_update
from .config import GenerationConfig
from .decoding import _decode
from .preparation import RunSetup
from .result import GenerationResult

__all__ = ["CycleLoop"]

#: Filter name -> constructor (members M, inflation); "verification" and "none" have none.
_FILTER_CLASSES = {
    "etkf": lambda M, inflation: ETKF(N=M, inflation=inflation),
    "enkf": lambda M, inflation: EnKF(N=M, inflation=inflation),
    "ukf": lambda M, inflation: UKF(inflation=inflation),
}


class CycleLoop:
    """The cycles of one run, and what they accumulate (tokens, states, scores, counts).

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : transformers tokenizer of ``model``
    cfg : GenerationConfig
        Checked settings (:meth:`GenerationConfig.checked`).
    setup : RunSetup
        From :func:`~da_embed.generate.preparation.prepare_run`.

    Examples
    --------
    >>> from da_embed.generate.log import GenerationLog
    >>> from da_embed.generate.preparation import prepare_run
    >>> from da_embed.reference import train_tokenizer
    >>> from da_embed.testing import tiny_gpt2
    >>> tok = train_tokenizer("the cat sat on the mat. " * 30, vocab_size=300)
    >>> model = tiny_gpt2(vocab_size=len(tok))
    >>> cfg = GenerationConfig(filter="none", max_new_tokens=3, progress=False).checked("a cat")
    >>> loop = CycleLoop(model, tok, cfg, prepare_run(model, tok, "a cat", cfg))
    >>> log = GenerationLog(None, loop.log_sizes(), {}, {})
    >>> loop.run(log)
    >>> loop.result("a cat", log).token_ids.size
    3
    """

    def __init__(self, model, tokenizer, cfg: GenerationConfig, setup: RunSetup) -> None:
        self.model, self.tokenizer, self.cfg, self.setup = model, tokenizer, cfg, setup
        n = setup.n
        self.rng_main, self.rng_cand, self.rng_filter = (
            np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(3))
        make = _FILTER_CLASSES.get(cfg.filter)
        self.flt = None if make is None else make(setup.members, cfg.inflation)
        self.state = None
        if self.flt is not None:
            self.flt.validate()
            prior = GaussianState(np.zeros(n), cfg.P0 * np.eye(n))
            self.state = self.flt.initialize(prior, self.rng_filter)
        self.Qc = as_covariance(cfg.Q, n, name="Q") if cfg.Q > 0 else None
        self.x = np.zeros(n)  # the point state of "verification" and "none"
        self.walk = RandomWalk(n)
        self.ids = list(setup.prompt_ids)
        self.generated: list[int] = []
        self.states: list[np.ndarray] = []
        self.scores_all: list[np.ndarray] = []
        self.failures = self.skipped = 0
        self.error_messages: list[str] = []
        self.base_cache = None
        self.seconds = float("nan")

    # ------------------------------------------------------------ the state
    @property
    def mean(self) -> np.ndarray:
        """The filter's mean, or the point state of "verification" and "none"."""
        return self.state.mean if self.flt is not None else self.x

    @property
    def spread(self) -> np.ndarray:
        """The filter's standard deviation per entry (zeros for a point state)."""
        return self.state.spread if self.flt is not None else np.zeros(self.setup.n)

    def log_sizes(self) -> dict[str, int]:
        """Dimension sizes of the run's log (0: a dimension the run does not have)."""
        M = self.setup.members
        return {"state": self.setup.n, "member": M, "candidate": self.cfg.candidates if M else 0,
                "token": self.cfg.every}

    # ------------------------------------------------------------- the run
    def run(self, log) -> None:
        """Run every cycle into ``log`` and close it with the run's status, even on failure."""
        pl = self.setup.placement
        was_attached = pl.is_attached
        status = "running"
        t_start = time.perf_counter()
        try:
            pl.attach()
            with torch.no_grad():
                self._cycles(log)
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as exc:
            status = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.seconds = time.perf_counter() - t_start
            if not was_attached:
                pl.remove()
            errors = (self.error_messages
                      + list(getattr(self.setup.verifier, "errors", []) or []))[:5]
            log.close({"status": status, "cycles_completed": len(log), "seconds": self.seconds,
                       "verifier_failures_total": self.failures,
                       "skipped_analyses": self.skipped, "verifier_errors": errors,
                       "generated_text": self.tokenizer.decode(self.generated)})

    def _cycles(self, log) -> None:
        cfg = self.cfg
        if self.setup.shared:
            self.base_cache = prefill(self.model, torch.tensor([self.ids[:-1]], dtype=torch.long))
        cycles = -(-cfg.max_new_tokens // cfg.every)
        bar = progress_bar(range(cycles), desc=f"generate ({cfg.filter})",
                           disable=not cfg.progress, unit="cycle")
        for c in bar:
            log.append(self.cycle(c))
            if self.setup.members and cfg.progress:
                bar.set_postfix(failures=self.failures,
                                state_norm=f"{np.linalg.norm(self.states[-1]):.3f}")
        bar.close()

    def cycle(self, c: int) -> dict[str, Any]:
        """Run cycle ``c``; returns its record (the log's variables)."""
        t0 = time.perf_counter()
        steps = min(self.cfg.every, self.cfg.max_new_tokens - len(self.generated))
        record: dict[str, Any] = {}
        self._forecast(c, record)
        ctx = torch.tensor([self.ids], dtype=torch.long)  # (1, T)
        if self.setup.members:
            self._assimilate(c, ctx, steps, record)
        mean, spread = self.mean, self.spread
        t5 = time.perf_counter()
        new = self._tokens(ctx, steps, mean)
        t6 = time.perf_counter()
        tok_pad = np.full(self.cfg.every, -1, dtype=np.int64)
        tok_pad[:steps] = new
        record.update({"tokens": steps, "token_id": tok_pad,
                       "text": self.tokenizer.decode(new), "analysis_mean": mean,
                       "analysis_spread": spread, "wall_time": t6 - t0,
                       "wall_time_generate": t6 - t5})
        self.states.append(np.array(mean, dtype=float, copy=True))
        return record

    # ------------------------------------------------------------ the stages
    def _forecast(self, c: int, record: dict) -> None:
        if self.flt is not None and c > 0:
            self.state = self.flt.forecast(self.state, self.walk, float(c), 1.0, 1, self.Qc,
                                           self.rng_filter)
        record["forecast_mean"] = self.x.copy() if self.flt is None else self.state.mean
        record["forecast_spread"] = self.spread

    def _assimilate(self, c: int, ctx: torch.Tensor, steps: int, record: dict) -> None:
        """Candidates of every member, their scores, and the analysis."""
        M, K, L = self.setup.members, self.cfg.candidates, self.cfg.every
        X, weights, H = self._member_states()
        u = self.rng_cand.random((K, steps)) if self.cfg.sample else None
        U = None if u is None else np.tile(u, (M, 1))  # (M * K, steps), same u per k
        t1 = time.perf_counter()
        cand = self._candidates(ctx, X, steps, U)
        t2 = time.perf_counter()
        texts = [self.tokenizer.decode(row.tolist()) for row in cand]
        HE, bad = self._scores(cand, texts)
        t3 = time.perf_counter()
        y, r, analysed = self._analysis(X, weights, H, HE)
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
        self.scores_all.append(HE)
        if not np.all(np.isfinite(self.mean)):
            from ..assimilator import AssimilationDiverged

            raise AssimilationDiverged(f"the state became non-finite at cycle {c}; "
                                       "lower P0, Q or eta")

    def _member_states(self):
        """States X (M, n) that propose candidates, their weights (M,), and directions H."""
        M, n = self.setup.members, self.setup.n
        if self.cfg.filter == "ukf":
            sp = self.flt.sigma_points(self.state.mean, self.state.cov)
            return sp.points, sp.wm, None  # (2n + 1, n), (2n + 1,)
        if self.flt is not None:
            return self.state.members, np.full(M, 1.0 / M), None  # (M, n), (M,)
        half = self.rng_filter.standard_normal((M // 2, n))
        H = np.concatenate([half, -half])  # (M, n) antithetic directions
        return self.x + self.cfg.sigma * H, None, H

    def _candidates(self, ctx: torch.Tensor, X: np.ndarray, steps: int,
                    U: np.ndarray | None) -> np.ndarray:
        """Token ids (M * K, steps) of the candidates, member-major."""
        rows = self.setup.members * self.cfg.candidates
        with self.setup.placement.using(X):
            if self.setup.shared:
                cache = copy.deepcopy(self.base_cache)
                cache.batch_repeat_interleave(rows)
            else:
                cache = prefill(self.model, ctx[:, :-1].repeat(rows, 1))
            cand = _decode(self.model, cache, ctx[:, -1:].repeat(rows, 1), steps, U,
                           self.cfg.temperature, self.cfg.top_p).numpy()
        del cache
        return cand

    def _scores(self, cand: np.ndarray, texts: list[str]) -> tuple[np.ndarray, int]:
        """Score matrix HE (M, K) (NaN: the verifier failed) and the number of failures."""
        rows = cand.shape[0]
        context_text = self.tokenizer.decode(self.ids)
        try:
            sc = np.asarray(self.setup.verifier(np.asarray(self.ids), cand, context_text, texts),
                            dtype=float).reshape(rows)
        except Exception as exc:  # noqa: BLE001 - a failing verifier skips the cycle
            if len(self.error_messages) < 5:
                self.error_messages.append(f"{type(exc).__name__}: {exc}")
            sc = np.full(rows, np.nan)
        sc[~np.isfinite(sc)] = np.nan
        HE = sc.reshape(self.setup.members, self.cfg.candidates)  # (M, K)
        bad = int(np.isnan(HE).sum())
        self.failures += bad
        return HE, bad

    def _analysis(self, X, weights, H, HE) -> tuple[np.ndarray, float, bool]:
        """Pseudo-observation y (K,), its variance r, and whether the state moved."""
        K = self.cfg.candidates
        if self.flt is not None:
            # predicted score per column (only usable columns are read)
            predicted = weights @ np.where(np.isnan(HE), 0.0, HE)  # (K,)
            y, r = pseudo_target(HE, predicted, self.cfg.target, self.cfg.R)
            analysed = bool(r > 0 and np.isfinite(y).any())
            if analysed:
                self.state = self.flt.analysis(self.state, y, _ScoreObservation(X, HE),
                                               as_covariance(r, K, name="R"), self.rng_filter)
        else:
            y, r = np.full(K, np.nan), float("nan")
            member_scores = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan
                                      for row in HE])
            x_new = verification_update(self.x, H, member_scores, self.cfg.eta)
            analysed = not np.array_equal(x_new, self.x)
            self.x = x_new
        self.skipped += int(not analysed)
        return y, r, analysed

    def _tokens(self, ctx: torch.Tensor, steps: int, mean: np.ndarray) -> list[int]:
        """The cycle's output tokens, driven by the analysis mean."""
        cfg, shared = self.cfg, self.setup.shared
        u_main = self.rng_main.random((1, steps)) if cfg.sample else None
        first = ctx[:, -1:]
        if cfg.filter == "none":
            new = _decode(self.model, self.base_cache, first, steps, u_main, cfg.temperature,
                          cfg.top_p)
        else:
            with self.setup.placement.using(mean[None]):
                cache = self.base_cache if shared else prefill(self.model, ctx[:, :-1])
                new = _decode(self.model, cache, first, steps, u_main, cfg.temperature,
                              cfg.top_p)
        new = new[0].tolist()
        self.ids.extend(new)
        self.generated.extend(new)
        return new

    # ------------------------------------------------------------ the result
    def result(self, prompt: str, log) -> GenerationResult:
        """The run's :class:`~da_embed.generate.GenerationResult` (after :meth:`run`)."""
        scores = (np.stack(self.scores_all) if self.scores_all
                  else np.zeros((len(self.states), 0, 0)))
        return GenerationResult(
            prompt=prompt, text=self.tokenizer.decode(self.generated),
            prompt_ids=np.asarray(self.setup.prompt_ids, dtype=np.int64),
            token_ids=np.asarray(self.generated, dtype=np.int64), filter=self.cfg.filter,
            states=np.stack(self.states), scores=scores, verifier_failures=self.failures,
            skipped_analyses=self.skipped, seconds=self.seconds, path=log.path,
            dataset=log.to_dataset())
