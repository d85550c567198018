"""Training of Transformer^2's experts: one state per domain, by Adam on its next-token NLL.

:func:`train_experts` runs in named stages: :class:`ExpertTrainingConfig`
checks the settings, :func:`_prepare` builds the placement and checks the
corpora, :func:`_train_expert` runs the Adam loop of one domain and
:func:`_training_record` describes the run in :attr:`Experts.training`.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_int, check_positive
from ..corpora import _token_ids
from ..overlap import window_set
from ..placements.base import Placement
from ..placements.registry import make_placement
from ..progress import progress_bar
from ..protocol import max_positions
from .experts import Experts, weights_sha256

__all__ = ["ExpertTrainingConfig", "train_experts"]


@dataclass(frozen=True)
class ExpertTrainingConfig:
    """Settings of :func:`train_experts` (checked, in this order, on creation).

    Parameters
    ----------
    steps : int, default 100
        Adam steps per domain.
    lr : float, default 0.05
        Adam learning rate.
    batch : int, default 4
        Windows per step.
    seq_len : int, default 128
        Tokens each window predicts.
    seed : int, default 0
        Seed of every domain's window generator (with the domain's name).
    progress : bool, default True
        A progress bar per domain.

    Raises
    ------
    ValueError
        A setting out of range (the message names it).

    Examples
    --------
    >>> ExpertTrainingConfig(steps=3).steps
    3
    >>> ExpertTrainingConfig(lr=0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got 0
    """

    steps: int = 100
    lr: float = 0.05
    batch: int = 4
    seq_len: int = 128
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        checked = {"steps": check_int(self.steps, "steps", 1),
                   "batch": check_int(self.batch, "batch", 1),
                   "seq_len": check_int(self.seq_len, "seq_len", 1),
                   "lr": check_positive(self.lr, "lr"),
                   "seed": check_int(self.seed, "seed", 0)}
        for key, value in checked.items():
            object.__setattr__(self, key, value)


def _check_corpora(corpora, vocab: int, min_tokens: int) -> dict[str, np.ndarray]:
    if not isinstance(corpora, dict) or not corpora:
        raise ValueError("corpora must be a non-empty dict of domain name -> token ids (one "
                         f"expert per domain), got {type(corpora).__name__}"
                         + (" (empty)" if isinstance(corpora, dict) else ""))
    out = {}
    for name, ids in corpora.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"corpora: domain names must be non-empty strings, got {name!r}")
        arr = _token_ids(ids, f"corpora[{name!r}]")
        if arr.size < min_tokens:
            raise ValueError(f"corpora[{name!r}] has {arr.size} tokens; at least seq_len + 1 = "
                             f"{min_tokens} are needed (give more text or a smaller seq_len)")
        if int(arr.min()) < 0 or int(arr.max()) >= vocab:
            raise ValueError(f"corpora[{name!r}]: token ids must lie in [0, {vocab}) (the "
                             f"model's vocabulary), got [{int(arr.min())}, {int(arr.max())}]")
        out[name] = arr.astype(np.int64)
    return out



def train_experts(model, corpora: dict, *, placement="svf", steps: int = 100, lr: float = 0.05,
                  batch: int = 4, seq_len: int = 128, seed: int = 0,
                  progress: bool = True) -> Experts:
    """Train one expert state per domain by gradient descent on its next-token NLL.

    For each domain, a state ``x`` (starting at 0, the base model) is trained
    with Adam on the mean token NLL of random windows of ``seq_len + 1``
    tokens of the domain's stream (``batch`` windows per step); the model's
    weights stay frozen (the placement freezes them while attached).  This is
    Transformer^2's SVF fine-tuning with the next-token objective (the paper
    also uses RL on task rewards).  Each domain draws its windows from its own
    generator, seeded by ``seed`` and the domain's name, so an expert does not
    depend on the other domains.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The frozen causal LM (eval mode).
    corpora : dict of str to array_like of int
        Domain name -> token ids (1-D), in the model's vocabulary.
    placement : str or Placement, default "svf"
        ``svf[:targets]`` (T2's SVF) or any name of
        :func:`~da_embed.compare.make_placement`, or a placement on ``model``.
    steps : int, default 100
        Adam steps per domain.
    lr : float, default 0.05
        Adam learning rate (40 steps at 0.05 took the reference model's
        WikiText expert from 7.50 to 7.01 nats/token on held-out text).
    batch : int, default 4
        Windows per step.
    seq_len : int, default 128
        Tokens each window predicts (capped by the model's position limit).
    seed : int, default 0
    progress : bool, default True
        A progress bar per domain (postfix: the running loss).

    Returns
    -------
    Experts
        ``training`` holds the spec, settings, tokens per domain, the first
        and last losses (mean of the first and last ``min(10, steps)``
        steps) and seconds per domain.

    Raises
    ------
    ValueError
        Empty ``corpora``, a corpus shorter than ``seq_len + 1`` tokens or
        outside the vocabulary, bad settings.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed.testing import tiny_llama
    >>> model = tiny_llama()
    >>> rng = np.random.default_rng(0)
    >>> corpora = {"low": rng.integers(0, 40, 400), "high": rng.integers(50, 90, 400)}
    >>> ex = train_experts(model, corpora, steps=3, lr=0.05, batch=2, seq_len=16,
    ...                    progress=False)
    >>> ex.names, ex.states.shape, ex.placement_spec
    (('low', 'high'), (2, 192), 'svf')
    """
    cfg = ExpertTrainingConfig(steps, lr, batch, seq_len, seed, progress)
    spec = placement if isinstance(placement, str) else None
    pl, cfg, data = _prepare(model, corpora, placement, cfg)
    states, info = [], {"tokens": {}, "loss_first": {}, "loss_last": {}, "seconds": {}}
    with pl.attached():
        for name, ids in data.items():
            state, losses, seconds = _train_expert(pl, name, ids, cfg)
            k = min(10, cfg.steps)
            info["tokens"][name] = int(ids.size)
            info["loss_first"][name] = float(np.mean(losses[:k]))
            info["loss_last"][name] = float(np.mean(losses[-k:]))
            info["seconds"][name] = seconds
            states.append(state)
    return Experts(tuple(data), np.stack(states), pl.describe(), weights_sha256(pl.model),
                   _training_record(spec, cfg, info),
                   {name: window_set(ids) for name, ids in data.items()})


def _prepare(model, corpora, placement,
             cfg: ExpertTrainingConfig) -> tuple[Placement, ExpertTrainingConfig, dict]:
    """The placement, the settings with ``seq_len`` capped by the model, the checked corpora."""
    pl = make_placement(model, placement)
    limit = max_positions(pl.model)
    if limit is not None:
        cfg = dataclasses.replace(cfg, seq_len=min(cfg.seq_len, limit - 1))
    data = _check_corpora(corpora, pl.vocab_size, cfg.seq_len + 1)
    if getattr(pl.model, "training", False):
        raise ValueError("model is in training mode (dropout on); call model.eval() first")
    return pl, cfg, data


def _train_expert(pl: Placement, name: str, ids: np.ndarray,
                  cfg: ExpertTrainingConfig) -> tuple[np.ndarray, list, float]:
    """Adam on one domain's windows: its state (n,), the losses per step, the seconds taken.

    The windows come from a generator seeded by ``cfg.seed`` and the domain's
    name, so an expert does not depend on the other domains.
    """
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
    n = int(pl.state_dim)
    x = torch.zeros(1, n, dtype=pl.dtype, device=pl.device, requires_grad=True)  # (1, n)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    window = torch.as_tensor(ids)
    losses = []
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.steps), desc=f"expert {name}", disable=not cfg.progress,
                       unit="step", leave=False)
    for _ in bar:
        starts = rng.integers(0, ids.size - cfg.seq_len, cfg.batch)
        tokens = torch.stack([window[s:s + cfg.seq_len + 1] for s in starts.tolist()])
        with torch.enable_grad():
            loss = pl.token_nll(tokens, x).mean()  # (1, B, seq_len) -> mean NLL
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return x.detach().double().cpu().numpy()[0], losses, time.perf_counter() - t0


def _training_record(spec: str | None, cfg: ExpertTrainingConfig, info: dict) -> dict:
    """:attr:`Experts.training`: the spec, the settings and the per-domain ``info``."""
    return {"placement_spec": spec, "steps": cfg.steps, "lr": cfg.lr, "batch": cfg.batch,
            "seq_len": cfg.seq_len, "seed": cfg.seed, "objective": "mean next-token NLL",
            **info}
