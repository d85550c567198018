"""The registry of methods: each name, what it builds, its aliases and its kind.

The family modules of :mod:`da_embed.methods` fill it, one :func:`register`
per method; :func:`make_method`, :func:`parse_methods` and the name helpers
read it, and :func:`methods_with` derives the tuples of ensemble, covariance,
windowed and expert methods from the flags given at registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from filters import Filter

__all__ = ["METHODS", "UNAVAILABLE", "register", "register_unavailable", "methods_with",
           "make_method", "method_label", "split_method", "parse_methods"]

#: Method names and one-line descriptions (the CLI's --help prints them).
METHODS: dict[str, str] = {}

#: Names that are recognised but not offered, with the reason.
UNAVAILABLE: dict[str, str] = {}

#: The kinds a method may be registered with (the keyword flags of :func:`register`).
_KINDS = ("ensemble", "covariance", "windowed", "expert")


@dataclass(frozen=True)
class _Entry:
    """One registered method: its builder and the kinds it belongs to."""

    build: Callable[..., Filter]
    kinds: frozenset


_ENTRIES: dict[str, _Entry] = {}
# normalised spelling -> canonical name (every name and alias, see _normalise).
_ALIASES: dict[str, str] = {}


def _normalise(name) -> str:
    """Case, surrounding blanks, ``-`` and ``_`` do not matter in a method name."""
    return str(name).strip().lower().replace("-", "").replace("_", "")


def _canonical(name) -> str:
    key = _normalise(name)
    return _ALIASES.get(key, key)


def register(name: str, description: str, *, aliases=(), ensemble: bool = False,
             covariance: bool = False, windowed: bool = False, expert: bool = False):
    """Decorator: register ``build(members, P0, **options) -> Filter`` as method ``name``.

    Registration order is the order of :data:`METHODS` (the CLI prints it).

    Parameters
    ----------
    name : str
        The canonical name (lower case; ``-`` allowed, e.g. ``ekf-diag``).
    description : str
        One line for ``--help`` (the value in :data:`METHODS`).
    aliases : iterable of str, default ()
        Other spellings (compared after dropping case, ``-`` and ``_``).
    ensemble : bool, default False
        The method uses ``members`` states (:func:`make_method` checks
        ``members >= 2``).
    covariance : bool, default False
        Its state carries an n x n covariance.
    windowed : bool, default False
        The assimilator solves a window of chunks per analysis.
    expert : bool, default False
        It uses pre-trained expert states and the placement's full state
        (no ``@`` subspace).

    Returns
    -------
    callable
        The decorator; it returns the builder unchanged.

    Raises
    ------
    ValueError
        If the name or an alias is taken already.

    See Also
    --------
    make_method : builds what was registered.
    methods_with : the names registered with one of the flags.

    Examples
    --------
    >>> from da_embed.methods.registry import METHODS, register
    >>> "frozen" in METHODS  # the families registered when the package was imported
    True
    >>> register("frozen", "again")(lambda members, P0, **options: None)
    Traceback (most recent call last):
    ...
    ValueError: method name 'frozen' is registered already (as 'frozen')
    """
    flags = {"ensemble": ensemble, "covariance": covariance, "windowed": windowed,
             "expert": expert}
    spellings = [_normalise(a) for a in (name, *aliases)]

    def decorator(build: Callable[..., Filter]) -> Callable[..., Filter]:
        for key in spellings:
            if key in _ALIASES or key in UNAVAILABLE:
                raise ValueError(f"method name {key!r} is registered already "
                                 f"(as {_ALIASES.get(key, key)!r})")
        for key in spellings:
            _ALIASES[key] = name
        _ENTRIES[name] = _Entry(build, frozenset(k for k, on in flags.items() if on))
        METHODS[name] = description
        return build

    return decorator


def register_unavailable(name: str, reason: str) -> None:
    """Record a name that is recognised but not offered (see :data:`UNAVAILABLE`).

    Parameters
    ----------
    name : str
        The name users may try (normalised like a method name).
    reason : str
        Why it is not offered; ends the error message.

    Examples
    --------
    >>> from da_embed.methods.registry import UNAVAILABLE
    >>> "letkf" in UNAVAILABLE
    True
    """
    UNAVAILABLE[_normalise(name)] = reason


def methods_with(kind: str) -> tuple[str, ...]:
    """The registered methods of one kind, in registration order.

    Parameters
    ----------
    kind : {"ensemble", "covariance", "windowed", "expert"}
        One of the flags of :func:`register`.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> methods_with("windowed")
    ('4dvar', 'w4dvar')
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    return tuple(name for name, entry in _ENTRIES.items() if kind in entry.kinds)


def _reject(key: str, shown) -> None:
    """Raise for a canonical ``key`` that is unavailable or unknown (``shown`` is quoted)."""
    if key in UNAVAILABLE:
        raise ValueError(f"method {shown!r} is not available: {UNAVAILABLE[key]}")
    if key not in METHODS:
        raise ValueError(f"unknown method {shown!r}; choose from {', '.join(METHODS)}")


def make_method(name: str, *, members: int = 16, P0: float | None = None, **options) -> Filter:
    """The filter or baseline a method name stands for.

    Parameters
    ----------
    name : str
        One of :data:`METHODS` (case-insensitive).
    members : int, default 16
        Ensemble size N of the ensemble filters, candidates K of ``verify``.
    P0 : float, optional
        Prior variance; sets the static ``B = P0 I`` (``xB``) of 3D-Var and 4D-Var.
    **options
        Keyword arguments of the class (e.g. ``lr=0.03`` for ``dyneval``,
        ``inflation=1.05`` for ``etkf``).

    Returns
    -------
    filters.Filter

    Raises
    ------
    ValueError
        For an unknown or unavailable name (the message says why), or
        ``members < 2`` for an ensemble method.

    Examples
    --------
    >>> make_method("etkf", members=8)
    ETKF(N=8, inflation=None, rotate=False)
    >>> make_method("dyneval", lr=0.03).lr
    0.03
    """
    key = _canonical(name)
    _reject(key, name)
    entry = _ENTRIES[key]
    if "ensemble" in entry.kinds:
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise ValueError(f"members must be an integer >= 2 for {key} (an ensemble needs at "
                             f"least two members), got {members!r}")
    try:
        return entry.build(members, P0, **options)
    except TypeError as exc:
        raise ValueError(f"bad option for method {key!r}: {exc}") from None


def method_label(name: str) -> str:
    """The canonical spelling of a method name (``"3D-Var"`` -> ``"3dvar"``).

    Parameters
    ----------
    name : str
        A method name in any accepted spelling (case, ``-`` and ``_`` ignored;
        aliases such as ``var3d`` or ``strong4dvar``).

    Returns
    -------
    str
        The key of :data:`METHODS` it stands for (unknown names are returned
        normalised, not rejected: :func:`parse_methods` checks).

    Examples
    --------
    >>> method_label("3D-Var")
    '3dvar'
    """
    return _canonical(name)


def split_method(label: str) -> tuple[str, str | None]:
    """Split ``"name@subspace"`` into the method name and its subspace (or None).

    Parameters
    ----------
    label : str
        A method, optionally followed by ``@`` and a subspace spec.

    Returns
    -------
    name : str
        The canonical method name (:func:`method_label`).
    subspace : str or None
        The text after ``@``, stripped; None without ``@``.

    Examples
    --------
    >>> split_method("etkf@fisher:8"), split_method("ekf")
    (('etkf', 'fisher:8'), ('ekf', None))
    """
    name, sep, sub = str(label).partition("@")
    return _canonical(name), (sub.strip() if sep else None)


def _parse_one(raw) -> str:
    """The canonical label of one entry of a method list (checked)."""
    from ..subspaces import parse_subspace

    shown = str(raw).strip()
    key, sub = split_method(raw)
    _reject(key, shown)
    if sub is None:
        return key
    if "expert" in _ENTRIES[key].kinds:
        raise ValueError(f"method {shown!r}: {key} runs in the placement's full "
                         "state (the experts' space); drop the '@' subspace")
    parsed = parse_subspace(sub)
    if parsed is None:
        raise ValueError(f"method {shown!r}: give a subspace after '@' "
                         "(random:k or fisher:k)")
    return f"{key}@{parsed[0]}:{parsed[1]}"


def parse_methods(spec) -> list[str]:
    """Split and check a comma-separated list of methods (duplicates dropped).

    A method may carry its own subspace after ``@`` (``etkf@fisher:8``,
    ``ukf@random:4``), overriding the run's ``--subspace`` for that method;
    the labels keep it.

    Parameters
    ----------
    spec : str or iterable of str
        ``"frozen,ekf,etkf@fisher:8"`` or a list of such names.

    Returns
    -------
    list of str
        Canonical labels in the given order, each once.

    Raises
    ------
    ValueError
        For an unknown or unavailable method, a bad subspace, or an empty list.

    Examples
    --------
    >>> parse_methods("frozen, EKF,etkf@fisher:8")
    ['frozen', 'ekf', 'etkf@fisher:8']
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in names:
        if not str(raw).strip():
            continue
        key = _parse_one(raw)
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"methods is empty; choose from {', '.join(METHODS)}")
    return out
