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

Layout and how to add a method
------------------------------
:mod:`~da_embed.methods.registry` holds the names and :func:`make_method`;
one module per family registers its methods, in the order of :data:`METHODS`
(printed by ``--help``): :mod:`~da_embed.methods.baselines`,
:mod:`~da_embed.methods.filters`, :mod:`~da_embed.methods.transformer2`.
To add a method (e.g. a new LM adaptation rule):

1. write its builder ``build(members, P0, **options) -> Filter`` in a family
   module (a new ``da_embed/methods/<family>.py`` or an existing one) under
   ``@register(name, description, aliases=..., ensemble=..., covariance=...,
   windowed=..., expert=...)``; import the class it builds from a layer below
   the methods (or inside the builder, as ``transformer2.py`` does);
2. for a new family module, add one ``from . import <family>`` line below;
3. add one test that ``make_method(name)`` builds it and that
   ``parse_methods(name)`` accepts it.

The tuples below (:data:`ENSEMBLE_METHODS` and the rest) follow from the
flags, so nothing else changes.

Examples
--------
>>> list(METHODS)[:4]
['frozen', 'dyneval', 'verify', 'ekf']
>>> make_method("Var4D", window=6).window, "4dvar" in WINDOWED_METHODS
(6, True)
"""

from . import baselines, filters, transformer2  # noqa: F401  (registration order)
from .registry import (METHODS, UNAVAILABLE, make_method, method_label, methods_with,
                       parse_methods, split_method)

# the old module's names, and the two tuples other modules import
__all__ = ["METHODS", "UNAVAILABLE", "make_method", "parse_methods", "method_label",
           "split_method", "WINDOWED_METHODS", "EXPERT_METHODS"]

#: Methods whose state carries an n x n covariance.
COVARIANCE_METHODS = methods_with("covariance")
#: Windowed methods (the assimilator solves a window of chunks per analysis).
WINDOWED_METHODS = methods_with("windowed")
#: Methods that use an ensemble of ``members`` states.
ENSEMBLE_METHODS = methods_with("ensemble")
#: Methods that use pre-trained expert states and the placement's full state (no subspace).
EXPERT_METHODS = methods_with("expert")
