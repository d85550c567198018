"""Subspaces for small ensembles and the UKF: random ones and gradient-principal ("Fisher") ones.

DESIGN.md section 8: gradient-free updates in a random subspace barely move
perplexity (-2 %), in the top principal directions of per-token NLL
gradients on tuning text they recover most of the gain (-46 %).
:func:`fisher_subspace` builds the latter from a tuning stream with the same
prequential windows as the runs; the basis is stored with every run
(``subspace_basis`` in the trajectory file).

Shapes: n full state size, k subspace size, G gradients (num_tokens, n).
"""

from __future__ import annotations

import numpy as np

from .observations import TokenNLLObservation
from .placements import Placement, Subspace
from .progress import progress_bar
from .protocol import PrequentialConfig

__all__ = ["parse_subspace", "nll_gradients", "fisher_subspace", "make_subspace"]

_KINDS = ("random", "fisher")


def parse_subspace(spec: str | None):
    """Parse ``"random:k"`` or ``"fisher:k"`` (None or "none": no subspace).

    Parameters
    ----------
    spec : str or None
        The spec; ``None``, ``""``, ``"none"`` and ``"full"`` mean the full state.

    Returns
    -------
    tuple (kind, k) or None

    Raises
    ------
    ValueError
        For an unknown kind or a size that is not an integer >= 1.

    Examples
    --------
    >>> parse_subspace("fisher:8"), parse_subspace(None)
    (('fisher', 8), None)
    """
    if spec is None or str(spec).strip().lower() in ("", "none", "full"):
        return None
    kind, sep, k = str(spec).strip().partition(":")
    kind = kind.lower()
    if kind not in _KINDS or not sep:
        raise ValueError(f"subspace must be 'random:k' or 'fisher:k' (e.g. fisher:8), "
                         f"got {spec!r}")
    try:
        kk = int(k)
    except ValueError:
        raise ValueError(f"subspace size k must be an integer >= 1, got {k!r} in "
                         f"{spec!r}") from None
    if kk < 1:
        raise ValueError(f"subspace size k must be an integer >= 1, got {kk} in {spec!r}")
    return kind, kk


def nll_gradients(placement: Placement, token_ids, protocol: PrequentialConfig, *,
                  max_tokens: int = 4096, state=None, progress: bool = False) -> np.ndarray:
    """Per-token NLL gradients of a tuning stream, chunk by chunk.

    Parameters
    ----------
    placement : Placement
        Attached for the computation if it is not.
    token_ids : array_like of int (T_tokens,)
    protocol : PrequentialConfig
        The windows (chunk and context) of the runs.
    max_tokens : int, default 4096
        Stop after this many gradient rows.
    state : array_like (n,), optional
        Where the gradients are taken; default 0 (the unmodified model).
    progress : bool, default False
        A progress bar over chunks.

    Returns
    -------
    numpy.ndarray (num_tokens, n)

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=30)[0]
    >>> nll_gradients(HiddenScale(model), ids, PrequentialConfig(chunk=8, context=8)).shape
    (24, 32)
    """
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    starts = protocol.starts(ids.size)
    if starts.size == 0:
        raise ValueError(f"the tuning text has {ids.size} tokens; at least chunk + 1 = "
                         f"{protocol.chunk + 1} are needed")
    n = int(placement.state_dim)
    x = np.zeros(n) if state is None else np.asarray(state, dtype=float)
    rows, count = [], 0
    n_chunks = min(starts.size, -(-int(max_tokens) // protocol.chunk))
    with placement.attached():
        for start in progress_bar(starts[:n_chunks], desc="NLL gradients (Fisher subspace)",
                                  disable=not progress, leave=False, unit="chunk"):
            a = max(0, int(start) - protocol.context)
            obs = TokenNLLObservation(placement, ids[a:int(start) + protocol.chunk],
                                      protocol.chunk)
            rows.append(obs.jacobian(x))  # (L, n)
    return np.concatenate(rows)[:max_tokens]


def fisher_subspace(placement: Placement, token_ids, k: int, protocol: PrequentialConfig, *,
                    max_tokens: int = 4096, progress: bool = False) -> Subspace:
    """The top-k principal directions of per-token NLL gradients on tuning text.

    Parameters
    ----------
    placement : Placement
        The placement to wrap.
    token_ids : array_like of int
        Tuning stream (e.g. WikiText-2 valid), never the evaluation stream.
    k : int
        Subspace size.
    protocol : PrequentialConfig
    max_tokens : int, default 4096
        Gradient rows used.
    progress : bool, default False

    Returns
    -------
    Subspace
        ``origin`` says ``gradients(num_samples=...)``.

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2, random_input_ids
    >>> model = tiny_gpt2()
    >>> ids = random_input_ids(model, batch=1, length=60)[0]
    >>> sub = fisher_subspace(HiddenScale(model), ids, 3, PrequentialConfig(chunk=8, context=16))
    >>> sub.state_dim, sub.origin
    (3, 'gradients(num_samples=56)')
    """
    G = nll_gradients(placement, token_ids, protocol, max_tokens=max_tokens, progress=progress)
    if k > min(G.shape):
        raise ValueError(f"subspace size k = {k} exceeds min(gradient rows, n) = {min(G.shape)}; "
                         "use more tuning tokens or a smaller k")
    return Subspace.from_gradients(placement, G, k)


def make_subspace(placement: Placement, spec, *, tune_ids=None,
                  protocol: PrequentialConfig | None = None, seed: int = 0,
                  max_tokens: int = 4096, progress: bool = False) -> Placement:
    """Wrap ``placement`` in the subspace ``spec`` describes (or return it unchanged).

    Parameters
    ----------
    placement : Placement
    spec : str or None
        ``"random:k"``, ``"fisher:k"`` or None.
    tune_ids : array_like of int, optional
        Tuning stream, needed for ``fisher``.
    protocol : PrequentialConfig, optional
    seed : int, default 0
        Seed of a random subspace.
    max_tokens : int, default 4096
        Gradient rows of a Fisher subspace.
    progress : bool, default False

    Returns
    -------
    Placement

    Examples
    --------
    >>> from da_embed.placements import HiddenScale
    >>> from da_embed.testing import tiny_gpt2
    >>> placement = HiddenScale(tiny_gpt2())
    >>> sub = make_subspace(placement, "random:4", seed=0)
    >>> sub.state_dim, sub.origin
    (4, 'random(seed=0)')
    >>> make_subspace(placement, None) is placement
    True
    """
    parsed = parse_subspace(spec)
    if parsed is None:
        return placement
    kind, k = parsed
    n = int(placement.state_dim)
    if k > n:
        raise ValueError(f"subspace size k = {k} exceeds the state size n = {n} of "
                         f"{type(placement).__name__}")
    if kind == "random":
        return Subspace.random(placement, k, seed=seed)
    if tune_ids is None:
        raise ValueError("a fisher subspace needs tuning text (--tune-corpus)")
    return fisher_subspace(placement, tune_ids, k, protocol or PrequentialConfig(),
                           max_tokens=max_tokens, progress=progress)
