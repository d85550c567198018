"""The training loop of :func:`~da_embed.spinup.spinup`: one run's state, its steps, its outputs.

Private helpers of :mod:`da_embed.spinup` (no public names).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..dynamics import count_parameters
from ..observations import _hidden_parts
from ..placements import Placement
from ..progress import progress_bar
from .checkpoint import (_FORMAT, _check_compatible, _model_hash, _placement_record,
                         _read_checkpoint, _restore, _stream_hash, _write_checkpoint)
from .chunks import _ChunkCache, _Corpus
from .config import AUTO_EXACT_MAX, AUTO_EXACT_WORK, RESUMABLE, SpinupConfig, SpinupResult
from .learned import _Learned
from .log import LOG_NAME, _history, _previous_records, _run_attrs, _StepLog
from .predictive import _predictive_step
from .steps import _strong_step, _weak_step

__all__: list[str] = []


def _run_meta(target: Placement, corpus: _Corpus, cfg: SpinupConfig, learned: _Learned,
              kind: str) -> dict:
    """What a checkpoint records of the run (a resumed run must match its identity)."""
    docs = corpus.docs
    return {"format": _FORMAT, "package": "da-embed", "version": __version__,
            "config": {**cfg.identity(), **{k: getattr(cfg, k) for k in RESUMABLE}},
            "identity": cfg.identity(), "stream_sha256": _stream_hash(docs),
            "stream_tokens": int(sum(doc.size for doc in docs)), "documents": len(docs),
            "chunks": int(corpus.starts.size),
            "model_sha256": _model_hash(target), "kind": kind,
            "placement": _placement_record(target), "state_dim": learned.n,
            "summary_dim": learned.d,
            "parameters": {"transition": count_parameters(learned.transition),
                           "adapter": count_parameters(learned.adapter)},
            "log": LOG_NAME}


def _initial_carried(chunks: int, B: int, n: int, d: int, rng, predictive: bool) -> dict:
    """What carries over from step to step (all of it is checkpointed).

    The E-step states of every chunk seen (NaN: not yet; the warm starts of
    the weak constraint), the states carried along the tracks (strong), the
    generator; for the predictive objective also the filter's covariance
    carried along the tracks.
    """
    out = {"bank": torch.full((chunks, n), float("nan"), dtype=torch.float64),
           "carry": torch.full((B, n), float("nan"), dtype=torch.float64),
           "carry_var": torch.full((B, n), float("nan"), dtype=torch.float64),
           "carry_h": torch.zeros((B, d), dtype=torch.float64),
           "rng": rng.bit_generator.state}
    if predictive:
        out["carry_cov"] = torch.full((B, n, n), float("nan"), dtype=torch.float64)
    return out


class _Training:
    """One spin-up run: the learned quantities, Adam, what carries over, the records."""

    def __init__(self, target: Placement, corpus: _Corpus, cfg: SpinupConfig, hyper=None):
        self.target, self.corpus, self.cfg = target, corpus, cfg
        head = target.model.get_output_embeddings().weight
        n, d, V = int(target.state_dim), int(head.shape[1]), int(head.shape[0])
        self.learned = _Learned(n, d, cfg, hyper)
        trainable = self.learned.trainable(cfg)
        self.climatology = (cfg.constraint == "weak" and cfg.climatology
                            and "initial" in cfg.learn and cfg.objective == "em")
        if cfg.objective == "predictive" and _hidden_parts(target) is None:
            raise ValueError(f"objective='predictive' needs a HiddenScale state (or a Subspace "
                             f"of one), got {type(target).__name__}: the EKF uses its analytic "
                             f"per-token Jacobian")
        if not trainable and not self.climatology:
            raise ValueError(f"learn = {cfg.learn} leaves nothing to learn under the "
                             f"{cfg.constraint} constraint")
        # With the climatology alone (learn="initial") Adam has nothing to do: a zero-size
        # placeholder keeps the optimizer (and the checkpoint format) the same.
        self.optimizer = torch.optim.Adam([p for _, p in trainable] or [
            torch.zeros(0, dtype=torch.float64, requires_grad=True)], lr=cfg.lr)
        self.params = [p for _, p in trainable]
        self.rng = np.random.default_rng(cfg.seed)
        kind = "hypersurface" if hyper is not None else "dynamics"
        self.meta = _run_meta(target, corpus, cfg, self.learned, kind)
        self.carried = _initial_carried(int(corpus.starts.size), cfg.batch, n, d, self.rng,
                                        cfg.objective == "predictive")
        self.exact = cfg.hessian == "exact" or (cfg.hessian == "auto" and n <= AUTO_EXACT_MAX
                                                and n * d * V <= AUTO_EXACT_WORK)
        self.tokens = cfg.batch * cfg.window * cfg.chunk
        self.start_step, self.done, self.updating = 0, 0, False
        self.previous: list[dict] = []
        self.records: list[dict] = []
        self.out_dir, self.log, self.last_ckpt, self.status = None, None, None, "interrupted"
        self.attrs: dict = {}

    # ------------------------------------------------------------ set-up stages
    def restore(self, resume) -> None:
        """Continue from the checkpoint ``resume`` (ValueError if it is another run's)."""
        jp, saved, tensors = _read_checkpoint(resume)
        _check_compatible(jp, saved, self.meta)
        if int(saved["step"]) > self.cfg.steps:
            raise ValueError(f"steps = {self.cfg.steps} is below the checkpoint's step "
                             f"{saved['step']}")
        _restore(saved, tensors, self.learned, self.optimizer, self.carried)
        self.rng.bit_generator.state = self.carried["rng"]
        self.start_step = self.done = int(saved["step"])
        self.previous = _previous_records(jp.parent / LOG_NAME, self.start_step)

    def open_log(self, out_dir: Path | None) -> None:
        """Start ``spinup.nc`` in ``out_dir`` (created; None: no outputs)."""
        self.out_dir = out_dir
        self.attrs = _run_attrs(self.cfg, self.meta, type(self.target).__name__)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.log = _StepLog(out_dir / LOG_NAME, self.learned.n, self.attrs, self.previous)
        self.records = list(self.previous)

    # ---------------------------------------------------------------- the loop
    def train(self, progress: bool) -> None:
        """Steps up to ``cfg.steps``; a Ctrl-C checkpoints the last completed step."""
        cfg = self.cfg
        what = "predictive" if cfg.objective == "predictive" else cfg.constraint
        bar = progress_bar(total=cfg.steps, initial=self.start_step, desc=f"spin-up ({what})",
                           disable=not progress,
                           unit="step")
        try:
            with self.target.attached():
                c = self.corpus
                cache = _ChunkCache(self.target, c.docs, c.doc_of, c.starts, cfg.protocol,
                                    cfg.cache_chunks)
                for step in range(self.start_step + 1, cfg.steps + 1):
                    record = self.step(cache, step)
                    self.keep(record, step)
                    bar.update(1)
                    bar.set_postfix(objective=f"{record['objective']:.4f}",
                                    q=f"{record['q_mean']:.3g}")
            self.status = "complete"
        except KeyboardInterrupt:
            self.checkpoint_interrupted()
            raise
        except BaseException as exc:
            self.status = f"failed: {type(exc).__name__}"
            raise
        finally:
            bar.close()
            if self.log is not None:
                self.log.close({"status": self.status, "steps_logged": len(self.records)})

    def step(self, cache: _ChunkCache, step: int) -> dict:
        """One training step (E-step or rollout, then the M-step); returns its record."""
        tic = time.perf_counter()
        cfg, learned, carried, c = self.cfg, self.learned, self.carried, self.corpus
        B, K, n = cfg.batch, cfg.window, learned.n
        # Track j's next window; what the window before left carries in, unless
        # the track (or a document) starts there.
        pos = (step - 1) % c.track_len
        w = np.minimum(np.arange(B) * c.track_len + pos, c.track_first.size - 1)
        restart = torch.as_tensor(c.track_reset[w] | (pos == 0))
        chunks_of = (c.track_first[w][:, None] + np.arange(K)).ravel()  # (B * K,) window-major
        chunks = cache.chunks(chunks_of)
        q_before = torch.exp(learned.log_q.detach()).numpy().copy()
        if cfg.objective == "predictive":
            loss_fn, record, following = _predictive_step(chunks, learned, cfg, B, K,
                                                          self.tokens, carried, restart)
        elif cfg.constraint == "weak":
            idx = torch.as_tensor(chunks_of)
            loss_fn, record, S, V, following = _weak_step(
                chunks, learned, cfg, self.rng, self.exact, B, K, self.tokens,
                carried["bank"][idx].reshape(B, K, n), carried, restart)
        else:
            start = torch.where(restart[:, None], torch.nan, carried["carry"])
            loss_fn, record, after = _strong_step(chunks, learned, B, K, self.tokens, start)
        first_loss, gn = self.m_step(loss_fn, record, step)
        # The step is complete: what carries over is updated together.
        if cfg.objective == "predictive":
            carried.update(following)
        elif cfg.constraint == "weak":
            if self.climatology:
                learned.climatology_update(S, V, cfg.climatology_rate)
            carried["bank"][idx] = S.reshape(B * K, n)  # warm starts of later E-steps
            carried.update(following)
        else:
            carried["carry"] = after
        carried["rng"] = self.rng.bit_generator.state
        self.done, self.updating = step, False
        record.update(step=step, q=q_before, q_mean=float(q_before.mean()),
                      q_min=float(q_before.min()), q_max=float(q_before.max()),
                      initial_state_norm=float(learned.initial.detach().norm()),
                      b_mean=float(torch.exp(learned.log_b.detach()).mean()),
                      grad_norm=math.sqrt(gn), mstep_loss=first_loss,
                      wall_time=time.perf_counter() - tic)
        if cfg.constraint == "strong":
            record["q"] = np.zeros(n)
            record.update(q_mean=0.0, q_min=0.0, q_max=0.0)
        return record

    def m_step(self, loss_fn, record: dict, step: int) -> tuple[float, float]:
        """``m_steps`` Adam steps on ``loss_fn``; the first loss and squared gradient norm."""
        cfg, params = self.cfg, self.params
        first_loss, gn = float("nan"), 0.0
        lr_now = cfg.lr if cfg.lr_half_life is None \
            else cfg.lr * 0.5 ** ((step - 1) / cfg.lr_half_life)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_now
        shrunk = [w for w in self.learned.shrunk() if any(w is p for p in params)] \
            if cfg.shrinkage > 0 and cfg.constraint == "weak" and cfg.objective == "em" else []
        diverged = (f"spin-up diverged at step {step}: non-finite objective or gradient; "
                    "resume from the last checkpoint with a lower lr")
        if not math.isfinite(record["objective"]):
            raise FloatingPointError(diverged)
        for it in range(cfg.m_steps if params else 0):  # Adam steps on this E-step
            with torch.enable_grad():
                loss = loss_fn()
                if shrunk:  # MAP: the Gaussian prior towards the random walk
                    loss = loss + 0.5 * cfg.shrinkage * sum((w ** 2).sum() for w in shrunk)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            sq = sum(0.0 if g is None else float((g ** 2).sum()) for g in grads)
            if it == 0:
                first_loss, gn = float(loss.detach()), sq
            if not math.isfinite(sq):
                raise FloatingPointError(diverged)
            if cfg.grad_clip is not None and sq > cfg.grad_clip ** 2:  # clip the norm
                grads = [None if g is None else g * (cfg.grad_clip / math.sqrt(sq))
                         for g in grads]
            for p, g in zip(params, grads):
                p.grad = torch.zeros_like(p) if g is None else g.detach()
            self.updating = True
            self.optimizer.step()
        return first_loss, gn

    # ----------------------------------------------------------------- outputs
    def keep(self, record: dict, step: int) -> None:
        """Log the step's record and checkpoint every ``checkpoint_every`` steps and last."""
        self.records.append(record)
        if self.log is not None:
            self.log.append(record)
        if self.out_dir is not None and (step % self.cfg.checkpoint_every == 0
                                         or step == self.cfg.steps):
            self.last_ckpt = self.checkpoint(step)

    def checkpoint(self, step: int) -> Path:
        """Write the checkpoint of ``step`` to ``out_dir``; returns its JSON file."""
        return _write_checkpoint(self.out_dir, step, self.learned, self.optimizer, self.meta,
                                 self.carried)

    def checkpoint_interrupted(self) -> None:
        """Keep the last completed step (not one interrupted inside its parameter update)."""
        done, last = self.done, self.last_ckpt
        if self.out_dir is not None and done > self.start_step and not self.updating and (
                last is None or not last.name.startswith(f"checkpoint-{done:06d}")):
            self.last_ckpt = self.checkpoint(done)

    def result(self) -> SpinupResult:
        """The run as a :class:`~da_embed.spinup.SpinupResult` (history: the records kept)."""
        history = _history(self.records, self.learned.n, {**self.attrs, "status": self.status})
        return self.learned.result(self.cfg, self.done, history, self.last_ckpt,
                                   self.meta["placement"])
