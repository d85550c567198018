"""The spin-up driver :func:`spinup`, and loading what it learned (checkpoints, dynamics)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..overlap import MAX_SHARED, NGRAM, check_disjoint
from ..placements import HiddenScale, Placement
from .checkpoint import _placement_record, _read_checkpoint
from .chunks import _corpus
from .config import SpinupConfig, SpinupResult
from .learned import _Learned
from .log import LOG_NAME, _history, _previous_records
from .training import _Training

__all__ = ["spinup", "load_spinup", "load_dynamics", "check_learned_placement",
           "LEARNED_SUFFIX"]

def _as_placement(model_or_placement) -> Placement:
    if isinstance(model_or_placement, Placement):
        return model_or_placement
    if isinstance(model_or_placement, nn.Module):
        return HiddenScale(model_or_placement)
    raise ValueError(f"model_or_placement must be a Hugging Face causal LM or a Placement, "
                     f"got {type(model_or_placement).__name__}")


def _generator(placement: Placement, cfg: SpinupConfig):
    """The placement if it generates its states (a Hypersurface: trained in place), else None.

    Recognised by the capability it declares (``generates_states``), so spin-up's
    core does not import the class built on it.
    """
    if not getattr(placement, "generates_states", False):
        return None
    if cfg.constraint != "strong":
        raise ValueError("a Hypersurface is the strong-constraint limit: use "
                         "SpinupConfig(constraint='strong') (or Hypersurface.fit)")
    if (cfg.hidden, cfg.rank) != (placement.transition.hidden, placement.adapter.rank):
        raise ValueError(f"config hidden/rank ({cfg.hidden}, {cfg.rank}) differ from the "
                         f"Hypersurface's ({placement.transition.hidden}, "
                         f"{placement.adapter.rank})")
    return placement


def spinup(model_or_placement, token_ids, config: SpinupConfig | None = None, *, out=None,
           resume=None, progress: bool = True, eval_ids=None,
           allow_overlap: bool = False) -> SpinupResult:
    """Learn s_b, the transition network, the adapter and Q on a corpus.

    The method is described in :mod:`da_embed.spinup.objective`.

    Parameters
    ----------
    model_or_placement : transformers.PreTrainedModel or Placement
        Where the state acts (a model means ``HiddenScale(model)``); a
        :class:`~da_embed.spinup.Hypersurface` is trained in place, in the
        strong-constraint limit.
    token_ids : array_like of int
        The training corpus: one stream (T,), S streams (S, T), or a list of
        1-D documents; windows never span two documents.
    config : SpinupConfig, optional
    out : str or PathLike, optional
        Folder for the checkpoints and ``spinup.nc`` (created).
    resume : str or PathLike, optional
        A checkpoint (its JSON or tensor file, or a folder: its latest) to
        continue from, bit for bit; its configuration (but ``steps``,
        ``checkpoint_every``, ``cache_chunks``), token stream and
        model/placement must be this run's.
    progress : bool, default True
        A progress bar (:func:`da_embed.progress.progress_bar`).
    eval_ids : array_like of int, optional
        The held-out text the learned dynamics will be evaluated on.  The
        training corpus (what of it is used, ``config.max_tokens``) may
        share at most :data:`da_embed.overlap.MAX_SHARED` (1 %) of its
        :data:`~da_embed.overlap.NGRAM`-token windows
        (:func:`da_embed.overlap.check_disjoint`), checked before training.
        The fraction is recorded in the checkpoints and ``spinup.nc``
        (``overlap``).
    allow_overlap : bool, default False
        Train anyway on a corpus that overlaps ``eval_ids`` (recorded).

    Returns
    -------
    SpinupResult

    Raises
    ------
    ValueError
        Bad input, a training corpus that overlaps ``eval_ids`` (unless
        ``allow_overlap``) or a checkpoint from another configuration (the
        message names what differs).
    KeyboardInterrupt
        Re-raised after a checkpoint of the last completed step is written
        (with ``out``), so ``resume=out`` loses nothing.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=2, hidden=4, rank=2)
    >>> res = spinup(HiddenScale(model), ids, cfg, progress=False)
    >>> res.Q.shape, res.history.sizes["step"], res.dynamics.num_parameters
    ((32,), 2, 548)
    """
    cfg = SpinupConfig() if config is None else config
    if not isinstance(cfg, SpinupConfig):
        raise ValueError(f"config must be a SpinupConfig, got {type(cfg).__name__}")
    placement = _as_placement(model_or_placement)
    hyper = _generator(placement, cfg)
    target = placement if hyper is None else hyper.placement
    corpus = _corpus(target, token_ids, cfg)
    overlap = None
    if eval_ids is not None:  # learning the dynamics on the scored text would leak it
        frac = check_disjoint(eval_ids, list(corpus.docs), what="the training text",
                              allow=allow_overlap,
                              option="allow_overlap=True (--allow-overlap)")
        overlap = {"shared_fraction": frac, "ngram": NGRAM, "threshold": MAX_SHARED,
                   "allow_overlap": bool(allow_overlap),
                   "eval_tokens": int(np.asarray(eval_ids).size)}
    run = _Training(target, corpus, cfg, hyper)
    if overlap is not None:
        run.meta["overlap"] = overlap
    if resume is not None:
        run.restore(resume)
    run.open_log(None if out is None else Path(os.fspath(out)))
    run.train(progress)
    return run.result()


def load_spinup(path) -> SpinupResult:
    """A spin-up checkpoint as a :class:`SpinupResult` (no model needed).

    Parameters
    ----------
    path : str or PathLike
        A checkpoint's JSON or tensor file, or a folder (its latest checkpoint).

    Returns
    -------
    SpinupResult
        ``history`` is the folder's ``spinup.nc`` up to the checkpoint's step
        (empty if absent).

    Raises
    ------
    FileNotFoundError, ValueError
        If there is no checkpoint there or it is not readable.

    Examples
    --------
    >>> import tempfile
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=2, steps=1, hidden=4, rank=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     res = spinup(HiddenScale(model), ids, cfg, out=out, progress=False)
    ...     back = load_spinup(out)
    >>> bool((back.Q == res.Q).all()), back.step
    (True, 1)
    """
    jp, meta, tensors = _read_checkpoint(path)
    cfg_dict = dict(meta["config"])
    cfg_dict["learn"] = tuple(cfg_dict["learn"])
    cfg = SpinupConfig(**cfg_dict)
    learned = _Learned(int(meta["state_dim"]), int(meta["summary_dim"]), cfg)
    with torch.no_grad():
        for k, v in learned.named().items():
            v.copy_(tensors[f"param.{k}"])
    step = int(meta["step"])
    history = _history(_previous_records(jp.parent / LOG_NAME, step), learned.n,
                       {"checkpoint": jp.name})
    return learned.result(cfg, step, history, jp, meta["placement"])


def load_dynamics(path):
    """The learned forecast model and Q of a spin-up checkpoint.

    Parameters
    ----------
    path : str or PathLike
        Where the checkpoint is, as for :func:`load_spinup`.

    Returns
    -------
    dynamics : LearnedDynamics
        ``s -> f_phi(s, h) + A_r(h)``, starting from ``initial_state`` = s_b;
        give it to any filter as its forecast model (with
        :class:`~da_embed.assimilator.OnlineAssimilator` ``dynamics=``).
    Q : numpy.ndarray (n,)
        The diagonal of the learned process-noise covariance per chunk (zeros
        for a strong-constraint run).

    Examples
    --------
    >>> import tempfile
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=97)[0]
    >>> cfg = SpinupConfig(chunk=8, context=8, window=3, batch=1, steps=1, hidden=4, rank=2)
    >>> folder = tempfile.mkdtemp()
    >>> _ = spinup(model, ids, cfg, out=folder, progress=False)
    >>> dyn, Q = load_dynamics(folder)
    >>> dyn.ndim, Q.shape
    (32, (32,))
    """
    res = load_spinup(path)
    return res.dynamics, res.Q


#: Suffix of the comparison rows that use the learned dynamics and Q.
LEARNED_SUFFIX = "+learned"


def check_learned_placement(result: SpinupResult, placement: Placement) -> None:
    """Raise ValueError unless ``result`` was learned on a placement like ``placement``.

    The placement class and state size must agree, and for a subspace its
    basis (compared by hash).

    Parameters
    ----------
    result : SpinupResult
        A spin-up result or loaded checkpoint (:func:`load_spinup`).
    placement : Placement
        The placement the learned dynamics are about to drive.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> fake = SpinupResult(None, None, None, None, 0, None, None, None,
    ...                     {"placement": "EmbeddingScale", "state_dim": 32})
    >>> check_learned_placement(fake, HiddenScale(tiny_gpt2()))
    Traceback (most recent call last):
    ...
    ValueError: the learned dynamics are for EmbeddingScale (n = 32), not HiddenScale (n = 32): ...
    """
    want = result.placement or {}
    have = _placement_record(placement)
    if (want.get("placement"), int(want.get("state_dim", -1))) != (have["placement"],
                                                                   int(have["state_dim"])):
        raise ValueError(f"the learned dynamics are for {want.get('placement')} (n = "
                         f"{want.get('state_dim')}), not {have['placement']} (n = "
                         f"{have['state_dim']}): spin up on the placement you compare "
                         "(--placement, and the same --subspace)")
    if want.get("basis_sha256") != have.get("basis_sha256"):
        raise ValueError("the learned dynamics are for another subspace basis than this "
                         "placement's: build the subspace from the same tuning text")
