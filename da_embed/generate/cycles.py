"""The cycle loop of a run: forecast, candidates, verification, analysis, commit, the rest.

The order of the random draws is part of the method (a run is reproducible
from its seed): per cycle the main generator draws the uniforms of the
cycle's I output tokens (the first L of them decode the mean row of the
candidate batch), then the filter's forecast and the perturbations of the
verification rule draw from the filter's generator, the candidates' uniforms
from the candidates' generator, and the analysis (EnKF) again from the
filter's.

Shapes: M members (or sigma points), K candidates per member, L tokens per
cycle, n state size.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from filters import ETKF, UKF, EnKF
from filters.covariance import as_covariance
from filters.states import GaussianState

from ..dynamics import RandomWalk
from ..lm.kv_cache import forward_with_cache, output_cache, prefill
from ..progress import progress_bar
from .analysis import _ScoreObservation, pseudo_target, verification_update
from .config import GenerationConfig
from .batch import cached_logprob, decode_rows, fuses_verifier, head_logprob, select_row
from .preparation import RunSetup
from .result import GenerationResult
from .verifiers import LogProbVerifier

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
        self.cache = None  # the committed text but its last token (shared prefix cache)
        self.vcache = None  # the verifier's own cache of the same, when it keeps one
        self.fused = False  # the self verifier reads the candidates' own head inputs
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
                "token": self.cfg.every, "candidate_token": self.cfg.candidate_length if M else 0}

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
            self.cache = prefill(self.model, torch.tensor([self.ids[:-1]], dtype=torch.long))
        self._start_verifier_cache()
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
        u_main = self.rng_main.random((1, steps)) if self.cfg.sample else None
        head, cache = [], self.cache
        if self.setup.members:
            head, cache = self._assimilate(c, ctx, steps, u_main, record)
        mean, spread = self.mean, self.spread
        t5 = time.perf_counter()
        rest = self._continue(head, steps - len(head), u_main, cache, mean)
        new = head + rest
        self._extend_verifier_cache(new)
        self.ids.extend(new)
        self.generated.extend(new)
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

    def _assimilate(self, c: int, ctx: torch.Tensor, steps: int, u_main, record: dict):
        """Candidates of every member and the mean row, their scores, the analysis, the commit.

        Returns the committed head (the first ``min(candidate_length, steps)``
        tokens of the cycle) and the cache it was decoded on (one row after
        :func:`select_row` when the prefix cache is shared, else None).
        """
        M, K, Lc = self.setup.members, self.cfg.candidates, self.cfg.candidate_length
        n_cand = min(Lc, steps)
        X, weights, H = self._member_states()
        u = self.rng_cand.random((K, n_cand)) if self.cfg.sample else None
        # row 0: the current mean (main stream's uniforms); rows 1..: member-major candidates
        rows = np.vstack([np.asarray(self.mean, dtype=float)[None], np.repeat(X, K, axis=0)])
        U = None if u is None else np.vstack([u_main[:, :n_cand], np.tile(u, (M, 1))])
        heads = [] if self.fused else None
        t1 = time.perf_counter()
        tok, cache = decode_rows(self.model, self.setup.placement, rows, ctx, n_cand, U,
                                 cache=self.cache if self.setup.shared else None,
                                 temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                 head_inputs=heads)
        cand = tok[1:].numpy()  # (M * K, n_cand)
        t2 = time.perf_counter()
        texts = [self.tokenizer.decode(row.tolist()) for row in cand]
        HE, bad = self._scores(cand, texts, None if heads is None else [h[1:] for h in heads])
        t3 = time.perf_counter()
        y, r, analysed = self._analysis(X, weights, H, HE)
        t4 = time.perf_counter()
        committed = self._committed(HE)
        head = tok[committed + 1].tolist()
        cache = select_row(cache, committed + 1) if self.setup.shared else None
        pad = np.full((M * K, Lc), -1, dtype=np.int64)
        pad[:, :n_cand] = cand
        record.update({
            "member_state": X, "candidate_token_id": pad.reshape(M, K, Lc),
            "candidate_text": np.array(texts, dtype=object).reshape(M, K),
            "score": HE, "observation": y, "obs_variance": r,
            "verifier_failures": bad, "analysed": int(analysed), "committed": committed,
            "wall_time_candidates": t2 - t1, "wall_time_verifier": t3 - t2,
            "wall_time_analysis": t4 - t3})
        self.scores_all.append(HE)
        if not np.all(np.isfinite(self.mean)):
            from ..assimilator import AssimilationDiverged

            raise AssimilationDiverged(f"the state became non-finite at cycle {c}; "
                                       "lower P0, Q or eta")
        return head, cache

    def _committed(self, HE: np.ndarray) -> int:
        """The committed candidate (member-major index into HE), or -1 for the mean row."""
        if self.cfg.commit == "mean" or not np.isfinite(HE).any():
            return -1
        return int(np.nanargmax(HE.reshape(-1)))  # first maximum

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

    # ------------------------------------------------------------ the verifier
    def _cached_verifier(self):
        """The verifier's model when it scores token ids from a KV cache, else None."""
        v = self.setup.verifier
        if isinstance(v, LogProbVerifier) and v.tokenizer is None:
            return v.model
        return None

    def _start_verifier_cache(self) -> None:
        """The verifier's own cache of the prompt, unless it reads the shared one."""
        vmodel = self._cached_verifier()
        self.fused = (vmodel is self.model and self.setup.members > 0
                      and fuses_verifier(self.model, self.setup.placement))
        if vmodel is None or (vmodel is self.model and self.setup.shared):
            return
        self.vcache = prefill(vmodel, torch.tensor([self.ids[:-1]], dtype=torch.long))

    def _extend_verifier_cache(self, new: list[int]) -> None:
        if self.vcache is not None and new:
            # outside using(): the hooks are the identity, so this is the frozen model
            ids = torch.tensor([self.ids[-1:] + new[:-1]], dtype=torch.long)
            self.vcache = output_cache(forward_with_cache(self._cached_verifier(), ids,
                                                          self.vcache))

    def _scores(self, cand: np.ndarray, texts: list[str], heads) -> tuple[np.ndarray, int]:
        """Score matrix HE (M, K) (NaN: the verifier failed) and the number of failures.

        ``heads``: the candidates' LM-head inputs when the self verifier is
        fused with their decoding (:func:`~da_embed.generate.batch.fuses_verifier`).
        """
        rows = cand.shape[0]
        vmodel = self._cached_verifier()
        try:
            if heads is not None:  # one batched pass of the frozen head
                sc = head_logprob(self.model, heads, cand)
            elif vmodel is not None:  # one batched pass on the context's cache
                cache = self.cache if self.vcache is None else self.vcache
                sc = cached_logprob(vmodel, cache, self.ids[-1], cand)
            else:
                sc = self.setup.verifier(np.asarray(self.ids), cand,
                                         self.tokenizer.decode(self.ids), texts)
            sc = np.asarray(sc, dtype=float).reshape(rows)
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

    def _continue(self, head: list[int], n: int, u_main, cache, mean: np.ndarray) -> list[int]:
        """The cycle's tokens after the committed head, driven by the analysis mean.

        ``cache`` holds the context and the head but its last token (one row)
        when the prefix cache is shared; it becomes the run's cache.
        Otherwise the context is run once under the mean (exact: the trunk
        depends on the state).
        """
        cfg, shared = self.cfg, self.setup.shared
        if n <= 0:
            if shared:
                self.cache = cache
            return []
        u = None if u_main is None else u_main[:, len(head):]
        ctx = torch.tensor([self.ids + head], dtype=torch.long)  # (1, T + len(head))
        if cfg.filter == "none":
            tok, cache = decode_rows(self.model, None, None, ctx, n, u, cache=cache,
                                     own_cache=True, temperature=cfg.temperature,
                                     top_p=cfg.top_p)
        else:
            tok, cache = decode_rows(self.model, self.setup.placement, mean[None], ctx, n, u,
                                     cache=cache if shared else None, own_cache=True,
                                     temperature=cfg.temperature, top_p=cfg.top_p)
        if shared:
            self.cache = cache
        return tok[0].tolist()

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
