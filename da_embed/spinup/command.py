"""The ``da-embed spinup`` command: its parser and its run (the argparse edge of spin-up).

:func:`run_cli` turns the parsed namespace into typed settings at once
(:class:`SpinupJob`: a :class:`~da_embed.spinup.SpinupConfig` and where the
data, the model and the outputs are); only those travel further.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..corpora import read_text, wikitext_path
from ..lm.models import load_model
from ..placements.registry import make_placement
from .checkpoint import _checkpoint_json
from .config import CONSTRAINTS, HESSIANS, OBJECTIVES, PARTS, SpinupConfig
from .hypersurface import Hypersurface
from .log import LOG_NAME
from .run import spinup

__all__ = ["add_parser", "run_cli", "SpinupJob"]


def add_parser(sub) -> None:
    """Add ``da-embed spinup`` to the CLI's subparsers (see :func:`run_cli`).

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subparsers of the ``da-embed`` parser (``parser.add_subparsers()``).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="da-embed")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["spinup", "--window", "4", "--constraint", "strong"])
    >>> args.window, args.constraint, args.out
    (4, 'strong', 'da-embed-spinup')
    """
    p = sub.add_parser(
        "spinup", help="learn the scale dynamics and Q on a corpus (weak-constraint 4D-Var)",
        description="Spin-up: learn the initial scales, the transition network, the low-rank "
                    "adapter and a diagonal process-noise covariance Q on a training corpus by "
                    "Laplace-EM on the weak-constraint 4D-Var cost over windows of chunks "
                    "(--constraint strong: the Q -> 0 hypersurface).  Writes "
                    "checkpoint-NNNNNN.safetensors/.json every --checkpoint-every steps and at "
                    "the end, and the training trajectory spinup.nc, to --out; --resume "
                    "continues bit for bit.  Use the result with da-embed compare --dynamics "
                    "OUT.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = SpinupConfig()  # the defaults
    _data_arguments(p.add_argument_group("data and model"))
    _spinup_arguments(p.add_argument_group("spin-up"), d)
    _run_arguments(p.add_argument_group("run"), d)
    _predictive_arguments(p.add_argument_group("objective"), d)


def _predictive_arguments(g, d: SpinupConfig) -> None:
    """What is minimised: the EM objective or the predictive one, and its settings."""
    g.add_argument("--objective", default=d.objective, choices=OBJECTIVES,
                   help="em: Laplace-EM on the 4D-Var cost; predictive: the prequential NLL "
                        "of an EKF unrolled over the windows, by backpropagation through it")
    g.add_argument("--grad-clip", type=float, default=d.grad_clip,
                   help="clip the gradient norm before each Adam step (default: no clipping)")
    g.add_argument("--obs-var", type=float, default=d.obs_var,
                   help="predictive: R = OBS_VAR I of the EKF (as compare --R)")
    g.add_argument("--decrement", type=float, default=d.decrement,
                   help="predictive: innovation per token of the EKF (as compare --decrement)")


def _data_arguments(g) -> None:
    """The corpus, the model and where the state acts."""
    g.add_argument("--corpus", help="training text file (UTF-8); default: WikiText-2 valid.txt")
    g.add_argument("--model", help="local Hugging Face causal LM folder (model + tokenizer); "
                   "default: the cached reference model")
    g.add_argument("--placement", default="hidden",
                   help="where the state acts: hidden, embedding, svf[:targets], rotary[:mode]")
    g.add_argument("--max-tokens", type=int, default=65536,
                   help="use the first MAX_TOKENS tokens of the corpus")
    g.add_argument("--subspace", default=None,
                   help="learn in a k-dim subspace: random:k, or fisher:k (top principal "
                        "directions of per-token NLL gradients on the first --tune-tokens "
                        "tokens of the corpus); compare with the same --subspace and, for "
                        "fisher, the same text as --tune-corpus")
    g.add_argument("--tune-tokens", type=int, default=4096,
                   help="tokens of the corpus used for a fisher subspace")
    g.add_argument("--eval-corpus", default=None,
                   help="the held-out text the learned dynamics will be evaluated on (compare's "
                        "--corpus): a training text sharing more than 1%% of its 16-token "
                        "windows is refused; default: WikiText-2 test.txt where found, 'none': "
                        "no check")
    g.add_argument("--allow-overlap", action="store_true",
                   help="train although the corpus overlaps --eval-corpus (the checkpoints and "
                        "spinup.nc record it)")


def _spinup_arguments(g, d: SpinupConfig) -> None:
    """The :class:`~da_embed.spinup.SpinupConfig` of the run (defaults ``d``)."""
    g.add_argument("--chunk", type=int, default=d.chunk, help="tokens per chunk")
    g.add_argument("--context", type=int, default=d.context, help="tokens of context (>= chunk)")
    g.add_argument("--window", type=int, default=d.window, help="chunks per window (>= 2)")
    g.add_argument("--batch", type=int, default=d.batch, help="windows per step")
    g.add_argument("--steps", type=int, default=d.steps, help="total steps (E-step + M-steps)")
    g.add_argument("--m-steps", type=int, default=d.m_steps, help="Adam steps per E-step")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--lr-half-life", type=float, default=None,
                   help="steps over which the learning rate halves (default: constant)")
    g.add_argument("--constraint", default=d.constraint, choices=CONSTRAINTS,
                   help="weak (learns Q) or strong (Q -> 0, the hypersurface)")
    g.add_argument("--learn", default=",".join(d.learn),
                   help=f"comma-separated parts to learn, of {', '.join(PARTS)}")
    g.add_argument("--q-init", type=float, default=d.q_init, help="initial diagonal of Q")
    g.add_argument("--background-var", type=float, default=d.background_var,
                   help="initial variances of the window-start state")
    g.add_argument("--no-climatology", action="store_true",
                   help="learn s_b and b by Adam from the windows that start a track or "
                        "document only, instead of as the climatology of all states")
    g.add_argument("--climatology-rate", type=float, default=d.climatology_rate,
                   help="fraction of the way s_b and b move to the batch's climatology per step")
    g.add_argument("--shrinkage", type=float, default=d.shrinkage,
                   help="precision of the prior pulling the dynamics towards the random walk")
    g.add_argument("--hidden", type=int, default=d.hidden, help="transition network width")
    g.add_argument("--rank", type=int, default=d.rank, help="adapter rank")
    g.add_argument("--samples", type=int, default=d.samples, help="posterior draws per window")
    g.add_argument("--hessian", default=d.hessian, choices=HESSIANS,
                   help="NLL Hessian blocks of the E-step")


def _run_arguments(g, d: SpinupConfig) -> None:
    """Seed, outputs, checkpoints and the machine."""
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--out", default="da-embed-spinup", help="output folder")
    g.add_argument("--resume", metavar="CKPT", default=None,
                   help="continue from a checkpoint (its .json/.safetensors file, or a folder: "
                        "its latest)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints")
    g.add_argument("--threads", type=int, default=None, help="torch threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")


@dataclass(frozen=True)
class SpinupJob:
    """What ``da-embed spinup`` runs, from its parsed arguments (see :func:`run_cli`).

    Parameters
    ----------
    config : SpinupConfig
        The spin-up settings (checked on construction).
    corpus : str or None
        Training text file; None: WikiText-2 ``valid.txt``.
    model : str or None
        Local Hugging Face causal LM folder; None: the cached reference model.
    placement : str
        Placement spec (``hidden``, ``embedding``, ``svf[:targets]``, ``rotary[:mode]``).
    subspace : str or None
        Subspace spec (``random:k``, ``fisher:k``).
    tune_tokens : int
        Tokens of the corpus used for a fisher subspace.
    out : str
        Output folder.
    resume : str or None
        Checkpoint to continue from.
    threads : int or None
        Torch threads.
    progress : bool
        Progress bars.
    eval_corpus : str or None
        The held-out text checked for overlap with the corpus; None:
        WikiText-2 ``test.txt`` where found; ``"none"``: no check.
    allow_overlap : bool
        Train although the corpus overlaps it (recorded).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="da-embed")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> job = SpinupJob.from_args(parser.parse_args(["spinup", "--window", "4"]))
    >>> job.config.window, job.placement, job.progress
    (4, 'hidden', True)
    """

    config: SpinupConfig
    corpus: str | None
    model: str | None
    placement: str
    subspace: str | None
    tune_tokens: int
    out: str
    resume: str | None
    threads: int | None
    progress: bool
    eval_corpus: str | None = None
    allow_overlap: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SpinupJob":
        """The job of parsed ``da-embed spinup`` arguments (ValueError on bad settings).

        Parameters
        ----------
        args : argparse.Namespace
            The ``da-embed spinup`` arguments (all of them are read).

        Returns
        -------
        SpinupJob
        """
        cfg = SpinupConfig(chunk=args.chunk, context=args.context, max_tokens=args.max_tokens,
                           window=args.window, batch=args.batch, steps=args.steps, lr=args.lr,
                           lr_half_life=args.lr_half_life, constraint=args.constraint,
                           learn=args.learn, q_init=args.q_init,
                           background_var=args.background_var,
                           climatology=not args.no_climatology,
                           climatology_rate=args.climatology_rate, shrinkage=args.shrinkage,
                           hidden=args.hidden, rank=args.rank, samples=args.samples,
                           m_steps=args.m_steps, hessian=args.hessian, seed=args.seed,
                           checkpoint_every=args.checkpoint_every,
                           **_objective_settings(args))
        return cls(cfg, args.corpus, args.model, args.placement, args.subspace,
                   args.tune_tokens, args.out, args.resume, args.threads, not args.no_progress,
                   args.eval_corpus, bool(args.allow_overlap))


def _objective_settings(args: argparse.Namespace) -> dict:
    """The objective's fields of the config (defaults where the namespace lacks them)."""
    d = SpinupConfig()
    return {k: getattr(args, k, getattr(d, k))
            for k in ("objective", "grad_clip", "obs_var", "decrement")}


def _placement_and_ids(job: SpinupJob):
    """Read the corpus, load the model and build the placement; (placement, ids, corpus, eval)."""
    from ..reference import encode_text

    cfg = job.config
    corpus = job.corpus if job.corpus is not None else wikitext_path("valid")
    try:
        text = read_text(corpus)
    except ValueError as exc:
        raise ValueError(f"--corpus: {exc}") from None
    if job.threads:
        torch.set_num_threads(job.threads)
    if job.model is None:
        from ..reference import load_reference

        model, tokenizer, _ = load_reference(progress=job.progress)
    else:
        model, tokenizer = load_model(job.model)
    try:
        placement = make_placement(model, job.placement)
    except ValueError as exc:
        raise ValueError(f"--placement {job.placement!r}: {exc}") from None
    ids = encode_text(tokenizer, text)
    held_out = _eval_ids(job, tokenizer)
    if job.subspace is not None:
        from ..subspaces import make_subspace

        placement = make_subspace(placement, job.subspace, tune_ids=ids, protocol=cfg.protocol,
                                  seed=cfg.seed, max_tokens=job.tune_tokens)
    if cfg.constraint == "strong":
        placement = Hypersurface(placement, hidden=cfg.hidden, rank=cfg.rank, seed=cfg.seed)
    return placement, ids, corpus, held_out


def _eval_ids(job: SpinupJob, tokenizer):
    """(path, token ids) of the held-out text of the overlap check, or None (no check)."""
    from ..reference import encode_text

    if job.eval_corpus is not None and job.eval_corpus.lower() == "none":
        return None
    path = job.eval_corpus
    if path is None:
        try:
            path = wikitext_path("test")
        except FileNotFoundError:
            return None
    try:
        return path, encode_text(tokenizer, read_text(path))
    except (ValueError, FileNotFoundError) as exc:
        raise ValueError(f"--eval-corpus: {exc}") from None


def run_cli(args) -> int:
    """Run ``da-embed spinup`` from parsed arguments; returns the exit status.

    The configuration is checked before the model is loaded; Ctrl-C writes a
    checkpoint of the last completed step and returns 130.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by the parser :func:`add_parser` adds.

    Returns
    -------
    int
        0 when done, 130 when interrupted.

    Raises
    ------
    ValueError
        Bad settings (before anything is loaded), corpus or placement.
    FileNotFoundError
        ``--resume`` names no checkpoint (before anything is loaded).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="da-embed")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> run_cli(parser.parse_args(["spinup", "--window", "1"]))
    Traceback (most recent call last):
    ...
    ValueError: window must be an integer >= 2, got 1
    """
    job = SpinupJob.from_args(args)
    cfg = job.config
    if job.resume is not None:
        _checkpoint_json(job.resume)  # a missing checkpoint fails before any loading
    placement, ids, corpus, held_out = _placement_and_ids(job)
    print(f"corpus {os.fspath(corpus)}: {ids.size} tokens (using at most {cfg.max_tokens}); "
          f"chunk {cfg.chunk}, context {cfg.context}, window {cfg.window} chunks", flush=True)
    try:
        res = spinup(placement, ids, cfg, out=job.out, resume=job.resume,
                     progress=job.progress, eval_ids=None if held_out is None else held_out[1],
                     allow_overlap=job.allow_overlap)
    except KeyboardInterrupt:
        print(f"\ninterrupted: resume with --resume {os.fspath(job.out)}", file=sys.stderr)
        return 130
    h = res.history
    last = {k: float(h[k].values[-1]) for k in ("objective", "nll", "nll_forecast")}
    print(f"spin-up done: {res.step} steps; objective {last['objective']:.4f} nat/token, NLL "
          f"{last['nll']:.4f} (forecast {last['nll_forecast']:.4f}); Q diagonal mean "
          f"{float(np.mean(res.Q)):.3g} [{float(np.min(res.Q)):.3g}, {float(np.max(res.Q)):.3g}]")
    if held_out is None:
        print("overlap check: none (no --eval-corpus and no WikiText-2 test.txt found)")
    else:
        frac = json.loads(res.history.attrs["overlap"])["shared_fraction"]
        print(f"overlap check: the training text shares {100 * frac:.2f}% of the 16-token "
              f"windows of {os.fspath(held_out[0])} (limit 1%"
              + ("; --allow-overlap given" if job.allow_overlap else "") + ")")
    print(f"learned dynamics ({cfg.objective} objective): "
          f"{res.dynamics.params()['transition_parameters']} transition + "
          f"{res.dynamics.params()['adapter_parameters']} adapter = "
          f"{res.dynamics.num_parameters} parameters")
    print(f"checkpoint {res.checkpoint}; trajectory {Path(os.fspath(job.out)) / LOG_NAME}")
    return 0
