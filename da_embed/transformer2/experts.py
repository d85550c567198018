"""The experts of Transformer^2: per-domain state vectors of one placement, saved and loaded.

:class:`Experts` holds one state per domain (for SVF the log-scales of the
singular values); :meth:`Experts.save` and :func:`load_experts` write and read
them as ``<base>.npz`` (the states) and ``<base>.json`` (the configuration).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..placements.base import Placement

__all__ = ["Experts", "load_experts", "weights_sha256"]

#: Format tag of saved experts (the JSON file's ``format``).
_FORMAT = "da-embed-experts-1"
#: Placement description keys that must agree between experts and a run.
_PLACEMENT_KEYS = ("placement", "state_dim", "model", "model_type", "options")

def weights_sha256(model) -> str:
    """sha256 of the model's parameter names and bytes (which weights the experts scale).

    Parameters
    ----------
    model : torch.nn.Module
        The model whose weights are fingerprinted.

    Returns
    -------
    str
        The hex digest (:attr:`Experts.model_sha256`).

    Examples
    --------
    >>> len(weights_sha256(torch.nn.Linear(2, 2)))
    64
    """
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
    windows : dict of str to ndarray, optional
        Per expert, the distinct 16-token window hashes of its training
        corpus (:func:`da_embed.overlap.window_set`; :func:`train_experts`
        fills it), so that a comparison can refuse to score a text an expert
        was trained on without the corpus at hand.  None: unknown.

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
    windows: dict | None = field(default=None, repr=False)

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
        if self.windows is not None:
            if set(self.windows) != set(names):
                raise ValueError(f"experts: windows must have one entry per expert "
                                 f"({list(names)}), got {sorted(self.windows)}")
            object.__setattr__(self, "windows", {k: np.asarray(self.windows[k], np.uint64)
                                                 for k in names})

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
        if self.model_sha256 and weights_sha256(placement.model) != self.model_sha256:
            raise ValueError("experts were trained on another model: the weights' fingerprint "
                             f"differs (experts {self.model_sha256[:12]}, run "
                             f"{weights_sha256(placement.model)[:12]}); train them on this model")

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
        np.savez(tmp, states=self.states, **{f"windows_{i}": self.windows[n] for i, n in
                                             enumerate(self.names) if self.windows})
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
        names = tuple(doc.get("names") or ())
        windows = ({n: np.array(data[f"windows_{i}"]) for i, n in enumerate(names)}
                   if names and all(f"windows_{i}" in data for i in range(len(names))) else None)
    if states.ndim != 2 or states.shape[1] != doc.get("state_dim"):
        raise ValueError(f"experts {os.fspath(js)!r}: states have shape {states.shape}, the "
                         f"configuration says n = {doc.get('state_dim')}")
    training = dict(doc.get("training") or {})
    training["path"] = os.fspath(js)
    return Experts(tuple(doc.get("names") or ()), states, doc.get("placement") or {},
                   doc.get("model_sha256"), training, windows)

