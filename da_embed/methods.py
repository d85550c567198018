"""Method names of the online comparison and the objects they build.

A *method* is anything with the :class:`filters.Filter` interface: a filter of
:mod:`filters` or a baseline of :mod:`da_embed.baselines`.

==========  ==========================================================  =================
name        what it is                                                  state
==========  ==========================================================  =================
frozen      the unmodified model (no adaptation)                        point
dyneval     dynamic evaluation: Adam steps on the chunk NLL             point
verify      the seeds' verification rule, revealed-token scores         point
ekf         extended Kalman filter, exact per-token gradients           mean + n x n cov
            (the diagonal EKF above ``max_dense_state`` = 4096)
ekf-diag    extended Kalman filter with a diagonal covariance            mean + n variances
3dvar       3D-Var (static B = P0 I), Gauss-Newton on the chunk         mean
enkf        stochastic EnKF (perturbed observations), N members         ensemble
etkf        ensemble transform Kalman filter, N members                 ensemble
ensrf       serial ensemble square-root filter, N members               ensemble
denkf       deterministic EnKF, N members                               ensemble
ukf         unscented Kalman filter, 2n + 1 sigma points (small n)      mean + n x n cov
4dvar       strong-constraint 4D-Var over the last W chunks (W=window)  mean + n x n cov
w4dvar      weak-constraint 4D-Var over the last W chunks, model        mean + n x n cov
            error covariance Q per chunk (the random walk's)
t2          Transformer^2 two-pass: pass 1 picks the expert state       point
            under which the context is most likely, pass 2 scores
t2-cem      Transformer^2 two-pass: pass 1 mixes the expert states      point
            with CEM weights (population 32) fitted to the context
==========  ==========================================================  =================

``4dvar`` and ``w4dvar`` are windowed: at chunk k (after scoring it) the
assimilator solves the window of chunks ``k - W + 1 .. k`` (one
:class:`~da_embed.observations.TokenNLLObservation` per chunk, Gauss-Newton
with their exact Jacobians, random-walk dynamics between chunks) and takes the
state at the window's end as the analysis (see
:class:`~da_embed.assimilator.OnlineAssimilator`).  ``W`` is the filter's
``window`` option (default 4; ``make_method("4dvar", window=6)``).

``ekf-diag`` is :class:`filters.DiagonalEKF`: the EKF's gain from a
diagonal covariance, O(n L^2) per chunk of L tokens and O(n L) memory, the
diagonal of the posterior kept (the diagonal-Fisher form of online natural
gradient, Ollivier 2018).  ``ekf`` becomes it automatically when the state is
larger than the assimilator's ``max_dense_state`` (4096), so ``ekf`` runs on
any placement (e.g. ``svf`` on a large model).

``t2`` and ``t2-cem`` (:class:`~da_embed.transformer2.TwoPass`) need
pre-trained expert states (``make_method("t2", experts=...)``, see
:func:`~da_embed.transformer2.train_experts`) and run in the placement's full
state (no subspace).

Not offered: ``letkf`` (token observations have no position in the state
index, so localisation has nothing to act on; see :data:`UNAVAILABLE`).
"""

from __future__ import annotations

from filters import EKF, UKF, DEnKF, DiagonalEKF, EnKF, EnSRF, ETKF, Filter

from .baselines import DynamicEvaluation, Frozen, VerificationRule

__all__ = ["METHODS", "UNAVAILABLE", "make_method", "parse_methods", "method_label",
           "split_method"]

#: Method names and one-line descriptions (the CLI's --help prints them).
METHODS = {
    "frozen": "the unmodified model (no adaptation)",
    "dyneval": "dynamic evaluation (Krause et al. 2018): Adam steps on the chunk NLL",
    "verify": "the seeds' verification rule with revealed-token scores (K = --members)",
    "ekf": "extended Kalman filter with exact per-token gradients (Ollivier 2018); "
           "a diagonal covariance (ekf-diag) above n = 4096",
    "ekf-diag": "extended Kalman filter with a diagonal covariance: O(n L^2) per chunk, "
                "any state size (diagonal-Fisher online natural gradient)",
    "3dvar": "3D-Var with a static background B = P0 I (Gauss-Newton)",
    "enkf": "stochastic EnKF (perturbed observations), N = --members",
    "etkf": "ensemble transform Kalman filter, N = --members",
    "ensrf": "serial ensemble square-root filter, N = --members",
    "denkf": "deterministic EnKF, N = --members",
    "ukf": "unscented Kalman filter, 2n + 1 sigma points (use a small state or --subspace)",
    "4dvar": "strong-constraint 4D-Var over a sliding window of the last 4 chunks "
             "(Gauss-Newton, exact per-token Jacobians, B = P0 I)",
    "w4dvar": "weak-constraint 4D-Var over the last 4 chunks, model error Q per chunk",
    "t2": "Transformer^2 two-pass: the expert state (--experts) under which the context is "
          "most likely scores the next chunk",
    "t2-cem": "Transformer^2 two-pass: a mix of the expert states, weights by CEM (population "
              "32) on the context's likelihood",
}

#: Names that are recognised but not offered, with the reason.
UNAVAILABLE = {
    "letkf": "the LETKF localises by distance between state components and observations, "
             "but a token's NLL depends on every state component (it has no position in "
             "the state index), so every local analysis would use every token and the LETKF "
             "would equal the ETKF at n times the cost; use etkf",
}

#: Methods whose state carries an n x n covariance.
COVARIANCE_METHODS = ("ekf", "ukf", "3dvar", "4dvar", "w4dvar")
#: Windowed methods (the assimilator solves a window of chunks per analysis).
WINDOWED_METHODS = ("4dvar", "w4dvar")
#: Methods that use an ensemble of ``members`` states.
ENSEMBLE_METHODS = ("enkf", "etkf", "ensrf", "denkf", "verify")
#: Methods that use pre-trained expert states and the placement's full state (no subspace).
EXPERT_METHODS = ("t2", "t2-cem")


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    aliases = {"3dvar": "3dvar", "var3d": "3dvar", "4dvar": "4dvar", "var4d": "4dvar",
               "strong4dvar": "4dvar", "weak4dvar": "w4dvar", "w4dvar": "w4dvar",
               "dynamiceval": "dyneval", "verification": "verify",
               "ekfdiag": "ekf-diag", "diagekf": "ekf-diag", "diagonalekf": "ekf-diag",
               "t2cem": "t2-cem", "transformer2": "t2", "transformer2cem": "t2-cem"}
    return aliases.get(key, key)


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
    if key in UNAVAILABLE:
        raise ValueError(f"method {name!r} is not available: {UNAVAILABLE[key]}")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if key in ENSEMBLE_METHODS:
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise ValueError(f"members must be an integer >= 2 for {key} (an ensemble needs at "
                             f"least two members), got {members!r}")
    try:
        if key == "frozen":
            return Frozen(**options)
        if key in EXPERT_METHODS:
            from .transformer2 import TwoPass

            return TwoPass(mode="cem" if key == "t2-cem" else "select", **options)
        if key == "dyneval":
            return DynamicEvaluation(**options)
        if key == "verify":
            return VerificationRule(K=members, **options)
        if key == "ekf":
            return EKF(**options)
        if key == "ekf-diag":
            return DiagonalEKF(**options)
        if key == "ukf":
            return UKF(**options)
        if key == "3dvar":
            from filters import Var3D

            opts = {"B": "eye", "maxiter": 20, "gtol": 1e-4, **({} if P0 is None else {"xB": P0}),
                    **options}
            return Var3D(**opts)
        if key in WINDOWED_METHODS:
            from filters import StrongConstraint4DVar, WeakConstraint4DVar

            opts = {"window": 4, "B": "eye", "minimizer": "gauss-newton", "maxiter": 20,
                    "gtol": 1e-4, **({} if P0 is None else {"xB": P0}), **options}
            cls = StrongConstraint4DVar if key == "4dvar" else WeakConstraint4DVar
            return cls(**opts)
        cls = {"enkf": EnKF, "etkf": ETKF, "ensrf": EnSRF, "denkf": DEnKF}[key]
        return cls(N=members, **options)
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
    from .subspaces import parse_subspace

    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in names:
        if not str(raw).strip():
            continue
        key, sub = split_method(raw)
        if key in UNAVAILABLE:
            raise ValueError(f"method {str(raw).strip()!r} is not available: {UNAVAILABLE[key]}")
        if key not in METHODS:
            raise ValueError(f"unknown method {str(raw).strip()!r}; choose from "
                             f"{', '.join(METHODS)}")
        if sub is not None and key in EXPERT_METHODS:
            raise ValueError(f"method {str(raw).strip()!r}: {key} runs in the placement's full "
                             "state (the experts' space); drop the '@' subspace")
        if sub is not None:
            parsed = parse_subspace(sub)
            if parsed is None:
                raise ValueError(f"method {str(raw).strip()!r}: give a subspace after '@' "
                                 "(random:k or fisher:k)")
            key = f"{key}@{parsed[0]}:{parsed[1]}"
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"methods is empty; choose from {', '.join(METHODS)}")
    return out
