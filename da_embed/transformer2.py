"""Transformer^2 baseline: per-domain SVF expert vectors and two-pass adaptation.

Transformer^2 (Sun, Cetin and Tang 2025, "Transformer-squared: self-adaptive
LLMs") fine-tunes only a vector ``z`` that scales the singular values of
chosen weight matrices (SVF, :class:`~da_embed.placements.SingularValueScale`:
``W' = U diag(sigma * z) V^T``), one vector per task or domain, and adapts at
inference in two passes: pass 1 reads the prompt and picks an expert vector
(or mixes them, ``z' = sum_k alpha_k z_k`` with weights from the
cross-entropy method, CEM), pass 2 runs the model with the result.

Here the expert vectors live in a placement's state (for SVF the log-scales
``x = log z``; any placement works), and :class:`TwoPass` is a baseline with
the :class:`filters.Filter` interface, so :class:`~da_embed.OnlineAssimilator`
and :func:`~da_embed.compare.compare` run it like the filters (methods ``t2``
and ``t2-cem``).  Under the prequential protocol, pass 1 for chunk k + 1 runs
in the analysis step after chunk k: it reads only tokens before chunk k + 1
(the tokens the observation operator of chunk k holds: chunk k and its
context), never chunk k + 1 itself; pass 2 is the assimilator's scoring of
chunk k + 1 with the chosen state.  Pass 1 is part of the analysis step, so it
is inside every wall time the assimilator and ``compare`` report.

* ``mode="select"`` (``t2``): the expert under which the context is most
  likely (lowest mean token NLL).
* ``mode="cem"`` (``t2-cem``): the state ``x = sum_k alpha_k x_k`` whose
  weights ``alpha`` (unconstrained reals) minimise the context's mean NLL,
  found by CEM (:func:`cem_weights`: population 32, 3 iterations, 8 elites;
  seeded by the run's generator).  The first population holds the uniform
  mix and every expert alone, so CEM is never worse than ``select`` on the
  context.  The mix is linear in the state: for SVF that is geometric in the
  singular-value scales (``z' = prod_k z_k^alpha_k``; ``alpha = 0`` is the
  base model, a one-hot ``alpha`` one expert).

Shapes: E experts, n state size, P CEM population, T tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from ._version import __version__
from .baselines import PointState, _PointFilter
from .corpora import _token_ids
from .placements import Placement

__all__ = ["Experts", "train_experts", "load_experts", "TwoPass", "CEMResult", "cem_weights",
           "context_nll"]

#: Format tag of saved experts (the JSON file's ``format``).
_FORMAT = "da-embed-experts-1"
#: Placement description keys that must agree between experts and a run.
_PLACEMENT_KEYS = ("placement", "state_dim", "model", "model_type", "options")


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value)
                                       and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _model_sha256(model) -> str:
    """sha256 of the model's parameter names and bytes (which weights the experts scale)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _json_ready(value):
    """Placement descriptions as they read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


# ----------------------------------------------------------------------------
# The experts
# ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Experts:
    """Expert state vectors, one per domain, for one placement of one model.

    Parameters
    ----------
    names : tuple of str
        Domain names, one per expert (unique, non-empty).
    states : ndarray (E, n)
        The experts' states (for SVF the log-scales of the singular values;
        zero is the base model).
    placement : dict
        ``placement.describe()`` of the placement the states belong to.
    model_sha256 : str, optional
        Fingerprint of the model's weights (checked against a run's model).
    training : dict
        How the experts were made (:func:`train_experts` fills it: spec of
        the placement, steps, learning rate, seed, tokens, losses, times).

    Raises
    ------
    ValueError
        No experts, ``states`` not a finite (E, n) array, or names that are
        not E unique non-empty strings.

    Examples
    --------
    >>> import numpy as np
    >>> ex = Experts(("code", "prose"), np.zeros((2, 4)), {"placement": "X", "state_dim": 4})
    >>> len(ex), ex.state_dim, ex["prose"].tolist()
    (2, 4, [0.0, 0.0, 0.0, 0.0])
    >>> Experts((), np.zeros((0, 4)), {})
    Traceback (most recent call last):
    ...
    ValueError: experts: no expert vectors (states has shape (0, 4)); train at least one ...
    """

    names: tuple
    states: np.ndarray = field(repr=False)
    placement: dict = field(repr=False)
    model_sha256: str | None = field(default=None, repr=False)
    training: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        try:
            states = np.array(self.states, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"experts: states must be a numeric (E, n) array: {exc}") from None
        if states.ndim != 2:
            raise ValueError(f"experts: states must have shape (E, n), got {states.shape}")
        if states.shape[0] == 0:
            raise ValueError(f"experts: no expert vectors (states has shape {states.shape}); "
                             "train at least one expert (train_experts with one or more corpora)")
        if states.shape[1] == 0:
            raise ValueError("experts: states have n = 0 entries; the placement has no state")
        if not np.all(np.isfinite(states)):
            raise ValueError("experts: states contain NaN or inf")
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        if (len(names) != states.shape[0] or not all(isinstance(s, str) and s for s in names)
                or len(set(names)) != len(names)):
            raise ValueError(f"experts: names must be {states.shape[0]} unique non-empty strings "
                             f"(one per row of states), got {list(names)!r}")
        if not isinstance(self.placement, dict):
            raise ValueError(f"experts: placement must be a placement description (dict), got "
                             f"{type(self.placement).__name__}")
        states.setflags(write=False)
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "placement", _json_ready(self.placement))
        object.__setattr__(self, "training", _json_ready(dict(self.training)))

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        """The state (n,) of the expert called ``name``."""
        if name not in self.names:
            raise KeyError(f"no expert called {name!r}; experts: {list(self.names)}")
        return self.states[self.names.index(name)]

    @property
    def state_dim(self) -> int:
        """n, the size of every expert's state."""
        return int(self.states.shape[1])

    @property
    def placement_spec(self) -> str | None:
        """The placement name the experts were trained with (``svf:mlp``), if known."""
        spec = self.training.get("placement_spec")
        return spec if isinstance(spec, str) else None

    def params(self) -> dict:
        """A short JSON-serialisable description (stored in run metadata)."""
        return {"names": list(self.names), "state_dim": self.state_dim,
                "placement": self.placement.get("placement"),
                "placement_spec": self.placement_spec,
                "model_sha256": (self.model_sha256 or "")[:12] or None,
                "path": self.training.get("path")}

    def __repr__(self) -> str:
        return (f"Experts({list(self.names)}, n={self.state_dim}, "
                f"placement={self.placement_spec or self.placement.get('placement')})")

    # ------------------------------------------------------------------ checks
    def check_placement(self, placement: Placement) -> None:
        """Raise ValueError unless ``placement`` is the one the experts were trained on.

        Parameters
        ----------
        placement : Placement
            The placement of a run (not a subspace of it: the experts live in
            the full state).

        Raises
        ------
        ValueError
            On a different state size, placement, target matrices or model
            (weights fingerprint); the message names the mismatch.

        Examples
        --------
        >>> from da_embed.placements import HiddenScale, SingularValueScale
        >>> from da_embed.testing import tiny_gpt2
        >>> model = tiny_gpt2()
        >>> ex = Experts(("a",), np.zeros((1, 128)), SingularValueScale(model).describe())
        >>> ex.check_placement(SingularValueScale(model))  # the same placement: fine
        >>> ex.check_placement(HiddenScale(model))
        Traceback (most recent call last):
        ...
        ValueError: experts have state size n = 128 (SingularValueScale, ...) but the run's ...
        """
        if not isinstance(placement, Placement):
            raise ValueError(f"placement must be a Placement, got {type(placement).__name__}")
        mine, theirs = self.placement, _json_ready(placement.describe())
        if int(placement.state_dim) != self.state_dim:
            raise ValueError(
                f"experts have state size n = {self.state_dim} ({mine.get('placement')}, "
                f"{self.placement_spec or 'spec unknown'}) but the run's placement "
                f"{theirs.get('placement')} has n = {placement.state_dim}; use the placement "
                "the experts were trained on (--placement), without a subspace")
        bad = [k for k in _PLACEMENT_KEYS if k in mine and mine.get(k) != theirs.get(k)]
        if bad:
            diff = "; ".join(f"{k}: experts {mine.get(k)!r}, run {theirs.get(k)!r}" for k in bad)
            raise ValueError(f"experts were trained on another placement ({diff})")
        if self.model_sha256 and _model_sha256(placement.model) != self.model_sha256:
            raise ValueError("experts were trained on another model: the weights' fingerprint "
                             f"differs (experts {self.model_sha256[:12]}, run "
                             f"{_model_sha256(placement.model)[:12]}); train them on this model")

    # --------------------------------------------------------------- storage
    def save(self, path) -> Path:
        """Write ``<base>.npz`` (the states) and ``<base>.json`` (the configuration).

        Parameters
        ----------
        path : str or PathLike
            ``<base>``, ``<base>.json`` or ``<base>.npz``; folders are created.

        Returns
        -------
        pathlib.Path
            The JSON file (written last, so it marks a complete save).

        Examples
        --------
        >>> import tempfile
        >>> ex = Experts(("a", "b"), np.eye(2), {"placement": "HiddenScale", "state_dim": 2})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     back = load_experts(ex.save(Path(folder) / "experts"))
        >>> back.names, back.states.tolist()
        (('a', 'b'), [[1.0, 0.0], [0.0, 1.0]])
        """
        base = _base_path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        npz = base.with_suffix(".npz")
        tmp = npz.with_name(npz.name + ".tmp.npz")
        np.savez(tmp, states=self.states)
        os.replace(tmp, npz)
        doc = {"format": _FORMAT, "version": __version__, "names": list(self.names),
               "state_dim": self.state_dim, "states": npz.name, "placement": self.placement,
               "model_sha256": self.model_sha256, "training": self.training}
        js = base.with_suffix(".json")
        tmp = js.with_name(js.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        os.replace(tmp, js)
        return js


def _base_path(path) -> Path:
    p = Path(os.fspath(path))
    return p.with_suffix("") if p.suffix in (".json", ".npz") else p


def load_experts(path) -> Experts:
    """Read experts written by :meth:`Experts.save`.

    Parameters
    ----------
    path : str or PathLike
        ``<base>``, ``<base>.json`` or ``<base>.npz``.

    Returns
    -------
    Experts
        ``training["path"]`` holds the JSON file read.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If the files are not da-embed experts or do not agree.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "x.json").write_text("{}")
    ...     load_experts(Path(folder) / "x.json")
    Traceback (most recent call last):
    ...
    ValueError: ... is not a da-embed experts file (format 'None', expected 'da-embed-experts-1')
    """
    base = _base_path(path)
    js = base.with_suffix(".json")
    if not js.is_file():
        raise FileNotFoundError(f"no experts file {os.fspath(js)!r} (give the path written by "
                                "Experts.save or train_experts)")
    try:
        with open(js) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"could not read experts {os.fspath(js)!r}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{os.fspath(js)!r} is not a da-embed experts file (format "
                         f"'{fmt}', expected '{_FORMAT}')")
    npz = js.with_name(str(doc.get("states", base.with_suffix(".npz").name)))
    if not npz.is_file():
        raise FileNotFoundError(f"the experts' states are missing: {os.fspath(npz)!r}")
    with np.load(npz, allow_pickle=False) as data:
        states = np.array(data["states"])
    if states.ndim != 2 or states.shape[1] != doc.get("state_dim"):
        raise ValueError(f"experts {os.fspath(js)!r}: states have shape {states.shape}, the "
                         f"configuration says n = {doc.get('state_dim')}")
    training = dict(doc.get("training") or {})
    training["path"] = os.fspath(js)
    return Experts(tuple(doc.get("names") or ()), states, doc.get("placement") or {},
                   doc.get("model_sha256"), training)


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
        A tqdm bar per domain (postfix: the running loss).

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
    from tqdm.auto import tqdm

    from .protocol import max_positions
    from .placements.registry import make_placement

    steps = _check_int(steps, "steps", 1)
    batch = _check_int(batch, "batch", 1)
    seq_len = _check_int(seq_len, "seq_len", 1)
    lr = _check_positive(lr, "lr")
    seed = _check_int(seed, "seed", 0)
    spec = placement if isinstance(placement, str) else None
    pl = make_placement(model, placement)
    limit = max_positions(pl.model)
    if limit is not None:
        seq_len = min(seq_len, limit - 1)
    data = _check_corpora(corpora, pl.vocab_size, seq_len + 1)
    if getattr(pl.model, "training", False):
        raise ValueError("model is in training mode (dropout on); call model.eval() first")
    n = int(pl.state_dim)
    states, info = [], {"tokens": {}, "loss_first": {}, "loss_last": {}, "seconds": {}}
    with pl.attached():
        for name, ids in data.items():
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            x = torch.zeros(1, n, dtype=pl.dtype, device=pl.device, requires_grad=True)  # (1, n)
            opt = torch.optim.Adam([x], lr=lr)
            window = torch.as_tensor(ids)
            losses = []
            t0 = time.perf_counter()
            bar = tqdm(range(steps), desc=f"expert {name}", disable=not progress, unit="step",
                       leave=False)
            for _ in bar:
                starts = rng.integers(0, ids.size - seq_len, batch)
                tokens = torch.stack([window[s:s + seq_len + 1] for s in starts.tolist()])
                with torch.enable_grad():
                    loss = pl.token_nll(tokens, x).mean()  # (1, B, seq_len) -> mean NLL
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.close()
            k = min(10, steps)
            info["tokens"][name] = int(ids.size)
            info["loss_first"][name] = float(np.mean(losses[:k]))
            info["loss_last"][name] = float(np.mean(losses[-k:]))
            info["seconds"][name] = time.perf_counter() - t0
            states.append(x.detach().double().cpu().numpy()[0])
    training = {"placement_spec": spec, "steps": steps, "lr": lr, "batch": batch,
                "seq_len": seq_len, "seed": seed, "objective": "mean next-token NLL", **info}
    return Experts(tuple(data), np.stack(states), pl.describe(), _model_sha256(pl.model),
                   training)


# ----------------------------------------------------------------------------
# Pass 1: the context's likelihood, CEM
# ----------------------------------------------------------------------------
def context_nll(placement: Placement, states, context_ids, *,
                member_batch: int = 32) -> np.ndarray:
    """Mean next-token NLL of a context under each state (pass 1's score).

    Parameters
    ----------
    placement : Placement
        Attached.
    states : array_like (N, n)
    context_ids : array_like of int (T,)
        T >= 2 tokens; tokens 1 .. T - 1 are scored, each given those before.
    member_batch : int, default 32
        States per forward pass.

    Returns
    -------
    ndarray (N,)
        Mean NLL per token (nats), float64.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> with HiddenScale(tiny_gpt2()).attached() as placement:
    ...     nll = context_nll(placement, np.zeros((3, 32)), np.arange(10))
    >>> nll.shape, bool(np.allclose(nll, nll[0]))  # three copies of the base model
    ((3,), True)
    """
    ids = torch.as_tensor(np.asarray(context_ids, dtype=np.int64)).reshape(1, -1)  # (1, T)
    if ids.shape[1] < 2:
        raise ValueError(f"context_ids needs at least 2 tokens to score, got {ids.shape[1]}")
    X = np.array(states, dtype=np.float64)  # a writable copy (torch warns on read-only arrays)
    if X.ndim != 2:
        raise ValueError(f"states must have shape (N, n), got {X.shape}")
    _check_int(member_batch, "member_batch", 1)
    out = []
    with torch.no_grad():
        for i in range(0, X.shape[0], member_batch):
            nll = placement.token_nll(ids, X[i:i + member_batch])  # (b, 1, T - 1)
            out.append(nll[:, 0].double().mean(-1).cpu().numpy())
    return np.concatenate(out)


class CEMResult(NamedTuple):
    """What :func:`cem_weights` found.

    Parameters
    ----------
    weights : ndarray (E,)
        The best evaluated weights.
    value : float
        The objective at ``weights``.
    mean, std : ndarray (E,)
        The sampling distribution after the last iteration.
    evaluations : int
        Objective evaluations (population x iterations).

    Examples
    --------
    >>> CEMResult(np.ones(2), 0.5, np.ones(2), np.zeros(2), 32).value
    0.5
    """

    weights: np.ndarray
    value: float
    mean: np.ndarray
    std: np.ndarray
    evaluations: int


def cem_weights(objective: Callable[[np.ndarray], np.ndarray], n_weights: int, *,
                population: int = 32, iterations: int = 3, elite: int = 8,
                init_mean=None, init_std: float = 0.5, min_std: float = 1e-3,
                initial_candidates=None, rng=None) -> CEMResult:
    """Minimise ``objective`` over weight vectors with the cross-entropy method.

    Each iteration draws ``population`` weight vectors from a diagonal
    Gaussian, evaluates them in one call, and refits the Gaussian's mean and
    standard deviation to the ``elite`` best (Rubinstein 1999; the CEM of
    Transformer^2's few-shot mixing).  The best vector evaluated so far
    replaces one draw of every later population, so the result never gets
    worse; ``initial_candidates`` replace the first draws of the first
    population (for :class:`TwoPass`: the uniform mix and each expert alone).

    Parameters
    ----------
    objective : callable
        ``objective(W)`` with W (P, E) returns (P,) values to minimise
        (non-finite values count as +inf).
    n_weights : int
        E.
    population : int, default 32
    iterations : int, default 3
    elite : int, default 8
        Draws the Gaussian is refitted to (<= population).
    init_mean : array_like (E,), optional
        Default: the uniform mix ``1 / E``.
    init_std : float, default 0.5
    min_std : float, default 1e-3
        Floor of the standard deviation (keeps the search alive).
    initial_candidates : array_like (c, E), optional
        Evaluated in the first population (c <= population).
    rng : numpy.random.Generator or int, optional
        The randomness (same seed, same result).

    Returns
    -------
    CEMResult

    Examples
    --------
    >>> target = np.array([1.0, 0.0, 0.0])
    >>> res = cem_weights(lambda W: ((W - target) ** 2).sum(1), 3, iterations=8, rng=0)
    >>> bool(np.abs(res.weights - target).max() < 0.1), res.evaluations
    (True, 256)
    """
    E = _check_int(n_weights, "n_weights", 1)
    P = _check_int(population, "population", 2)
    iterations = _check_int(iterations, "iterations", 1)
    elite = _check_int(elite, "elite", 1)
    if elite > P:
        raise ValueError(f"elite ({elite}) must not exceed population ({P})")
    init_std = _check_positive(init_std, "init_std")
    min_std = _check_positive(min_std, "min_std")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mean = np.full(E, 1.0 / E) if init_mean is None else np.array(init_mean, dtype=float)
    if mean.shape != (E,) or not np.all(np.isfinite(mean)):
        raise ValueError(f"init_mean must be {E} finite numbers, got {init_mean!r}")
    seeds = np.zeros((0, E)) if initial_candidates is None else np.atleast_2d(
        np.asarray(initial_candidates, dtype=float))
    if seeds.ndim != 2 or seeds.shape[1] != E or seeds.shape[0] > P:
        raise ValueError(f"initial_candidates must have shape (c, {E}) with c <= population "
                         f"({P}), got {seeds.shape}")
    std = np.full(E, init_std)
    best_w, best_v = mean.copy(), math.inf
    for it in range(iterations):
        W = mean + std * rng.standard_normal((P, E))  # (P, E)
        if it == 0:
            W[:seeds.shape[0]] = seeds
        else:
            W[0] = best_w
        v = np.asarray(objective(W), dtype=float).reshape(-1)  # (P,)
        if v.shape != (P,):
            raise ValueError(f"objective must return {P} values for {P} weight vectors, got "
                             f"shape {v.shape}")
        v = np.where(np.isfinite(v), v, np.inf)
        i = int(np.argmin(v))
        if v[i] < best_v:
            best_w, best_v = W[i].copy(), float(v[i])
        top = W[np.argsort(v, kind="stable")[:elite]]  # (elite, E)
        mean, std = top.mean(0), np.maximum(top.std(0), min_std)
    return CEMResult(best_w, best_v, mean, std, P * iterations)


# ----------------------------------------------------------------------------
# The two-pass method
# ----------------------------------------------------------------------------
class TwoPass(_PointFilter):
    """Transformer^2's two-pass adaptation as a baseline of the online loop.

    After chunk k is scored, pass 1 reads the tokens before chunk k + 1 (at
    most ``context_tokens``, at most the model's position limit, from the
    chunk just scored and its context; never chunk k + 1) and chooses the
    state for chunk k + 1 (``select``: the expert with the lowest context
    NLL; ``cem``: the weights of a mix of the experts' states found by CEM).
    Pass 2 is the assimilator's prequential scoring of chunk k + 1 with that
    state.  Chunk 0 is scored with the prior mean (0, the base model): its
    context is one token.  There are no dynamics: the forecast keeps the
    chosen state as it is (``Q`` and the forecast model are not used).

    Parameters
    ----------
    experts : Experts
        The expert states (required; checked against the run's placement).
    mode : {"select", "cem"}
        Method names ``t2`` and ``t2-cem``.
    population : int, default 32
        CEM draws per iteration.
    iterations : int, default 3
        CEM iterations (cost: population x iterations context passes).
    elite : int, default 8
        CEM elites.
    init_std : float, default 0.5
        CEM's first standard deviation of every weight (its first mean is
        the uniform mix 1 / E).
    context_tokens : int, optional
        Most tokens pass 1 reads (default: all it may).
    member_batch : int, default 32
        States per forward pass of pass 1.

    Attributes
    ----------
    history_ : list of dict
        One per analysis (entry k chose the state of chunk k + 1):
        ``weights`` (E,), ``context_nll`` (the chosen state's context NLL),
        ``expert_nll`` (E,) (select) and ``context_tokens``.
    adaptation_parameters : int
        E * n (the expert vectors), plus E mixing weights for ``cem``.

    Examples
    --------
    >>> import numpy as np
    >>> from da_embed import OnlineAssimilator, PrequentialConfig
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> placement = HiddenScale(model)
    >>> experts = Experts(("up", "down"), np.stack([np.full(32, 0.3), np.full(32, -0.3)]),
    ...                   placement.describe(), training={"placement_spec": "hidden"})
    >>> run = OnlineAssimilator(placement, TwoPass(experts), protocol=PrequentialConfig(8, 8))
    >>> ds = run.run(random_input_ids(model, batch=1, length=33)[0])
    >>> ds.attrs["method"], len(run.filter_.history_), run.filter_.history_[0]["weights"].tolist()
    ('t2', 4, [1.0, 0.0])
    """

    def __init__(self, experts: Experts | None = None, *, mode: str = "select",
                 population: int = 32, iterations: int = 3, elite: int = 8,
                 init_std: float = 0.5, context_tokens: int | None = None,
                 member_batch: int = 32):
        super().__init__(inflation=None)
        self.experts, self.mode = experts, mode
        self.population, self.iterations, self.elite = population, iterations, elite
        self.init_std, self.context_tokens = init_std, context_tokens
        self.member_batch = member_batch

    @property
    def name(self) -> str:
        """``t2`` (select) or ``t2-cem``."""
        return "t2-cem" if self.mode == "cem" else "t2"

    @property
    def adaptation_parameters(self) -> int:
        """E * n (the expert vectors), plus E mixing weights in CEM mode."""
        if not isinstance(self.experts, Experts):
            return 0
        E, n = len(self.experts), self.experts.state_dim
        return E * n + (E if self.mode == "cem" else 0)

    def validate(self):
        """Check the options; ValueError names the bad one."""
        if self.experts is None:
            raise ValueError(f"{self.name} needs experts (Experts from train_experts or "
                             "load_experts; on the command line --experts PATH or "
                             "--expert-corpus NAME=PATH)")
        if not isinstance(self.experts, Experts):
            raise ValueError(f"experts must be an Experts object, got "
                             f"{type(self.experts).__name__}")
        if self.mode not in ("select", "cem"):
            raise ValueError(f"mode must be 'select' or 'cem', got {self.mode!r}")
        _check_int(self.population, "population", 2)
        _check_int(self.iterations, "iterations", 1)
        _check_int(self.elite, "elite", 1)
        if self.elite > self.population:
            raise ValueError(f"elite ({self.elite}) must not exceed population "
                             f"({self.population})")
        _check_positive(self.init_std, "init_std")
        if self.context_tokens is not None:
            _check_int(self.context_tokens, "context_tokens", 2)
        _check_int(self.member_batch, "member_batch", 1)

    def check_placement(self, placement: Placement) -> None:
        """Raise ValueError unless the experts belong to ``placement``.

        See :meth:`Experts.check_placement`.

        Parameters
        ----------
        placement : Placement
            The run's placement.
        """
        self.validate()
        self.experts.check_placement(placement)

    def initialize(self, prior, rng):
        """Start at the prior mean (the base model); reset the history."""
        self.validate()
        n = int(np.asarray(prior.mean).shape[0])
        if n != self.experts.state_dim:
            raise ValueError(f"{self.name}: the experts have state size n = "
                             f"{self.experts.state_dim} but the run's state has n = {n}; use "
                             "the placement the experts were trained on, without a subspace")
        self.history_: list[dict] = []
        self._checked = None
        return super().initialize(prior, rng)

    def forecast(self, state, model, t, dt, nsteps, Q, rng):
        """No dynamics: the chosen state is kept as it is."""
        return state

    def _pass1_tokens(self, obs) -> np.ndarray:
        tokens = getattr(obs, "tokens", None)
        if tokens is None:
            raise ValueError(f"{self.name} reads the context from the observation operator: "
                             f"it needs a TokenNLLObservation, got {type(obs).__name__}")
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        from .protocol import max_positions

        m = tokens.size
        if self.context_tokens is not None:
            m = min(m, int(self.context_tokens))
        limit = max_positions(obs.placement.model)
        if limit is not None:
            m = min(m, limit)
        return tokens[tokens.size - m:]

    def choose(self, placement: Placement, context_ids, rng=None) -> tuple[np.ndarray, dict]:
        """Pass 1: the expert weights for the text after ``context_ids``.

        Parameters
        ----------
        placement : Placement
            Attached, the experts' placement.
        context_ids : array_like of int (T,)
            The tokens before the text to adapt to (T >= 2).
        rng : numpy.random.Generator or int, optional
            CEM's randomness.

        Returns
        -------
        weights : ndarray (E,)
            One-hot for ``select``; the state is ``weights @ experts.states``.
        info : dict
            ``context_nll`` (of the chosen state), ``expert_nll`` (E,) for
            ``select``, ``context_tokens``.

        Examples
        --------
        >>> import numpy as np
        >>> from da_embed.placements import HiddenScale
        >>> from da_embed.testing import tiny_gpt2
        >>> model = tiny_gpt2()
        >>> placement = HiddenScale(model)
        >>> ex = Experts(("base", "cold"), np.stack([np.zeros(32), np.full(32, -3.0)]),
        ...              placement.describe())
        >>> with placement.attached():
        ...     w, info = TwoPass(ex).choose(placement, np.arange(12))
        >>> w.tolist(), info["context_tokens"]
        ([1.0, 0.0], 12)
        """
        self.validate()
        X = self.experts.states  # (E, n)
        E = X.shape[0]
        ids = np.asarray(context_ids, dtype=np.int64).reshape(-1)

        def objective(W):  # (P, E) -> (P,)
            return context_nll(placement, W @ X, ids, member_batch=self.member_batch)

        if self.mode == "select":
            nll = objective(np.eye(E))  # (E,)
            k = int(np.argmin(nll))
            return np.eye(E)[k], {"context_nll": float(nll[k]), "expert_nll": nll,
                                  "context_tokens": int(ids.size)}
        seeds = np.vstack([np.full((1, E), 1.0 / E), np.eye(E)])[:self.population]
        res = cem_weights(objective, E, population=self.population, iterations=self.iterations,
                          elite=self.elite, init_std=self.init_std, initial_candidates=seeds,
                          rng=rng)
        return res.weights, {"context_nll": res.value, "context_tokens": int(ids.size)}

    def analysis(self, state, y, obs, R, rng):
        """Pass 1 for the next chunk on the tokens ``obs`` holds (this chunk and its context)."""
        placement = obs.placement
        if getattr(self, "_checked", None) is not placement:
            self.experts.check_placement(placement)
            self._checked = placement
        ids = self._pass1_tokens(obs)
        weights, info = self.choose(placement, ids, rng)
        if not hasattr(self, "history_"):
            self.history_ = []
        self.history_.append({"weights": weights, **info})
        return PointState(weights @ self.experts.states)
