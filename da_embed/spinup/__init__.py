"""Spin-up: learn the scale dynamics (s_0, phi, adapter, Q) on a corpus by 4D-Var.

The notes of the method are in :mod:`da_embed.spinup.objective`; the rooms:
:mod:`~da_embed.spinup.config` (settings, result), :mod:`~da_embed.spinup.blocks`
(block-tridiagonal algebra), :mod:`~da_embed.spinup.chunks` (the corpus as
chunks), :mod:`~da_embed.spinup.learned`, :mod:`~da_embed.spinup.objective`,
:mod:`~da_embed.spinup.steps` (E- and M-steps), :mod:`~da_embed.spinup.predictive`
(the prequential objective of a differentiable EKF), :mod:`~da_embed.spinup.log`,
:mod:`~da_embed.spinup.checkpoint`, :mod:`~da_embed.spinup.training` (the loop),
:mod:`~da_embed.spinup.run` (:func:`spinup`, loading), :mod:`~da_embed.spinup.command`
(``da-embed spinup``) and :mod:`~da_embed.spinup.hypersurface` (the strong limit).
"""

from .blocks import _btd_cholesky, _btd_logdet, _btd_marginals, _btd_sample, _btd_solve
from .blocks import _factor_damped
from .chunks import _ChunkCache, _chunk_index, _FastChunks, _GenericChunks, _tracks
from .config import CONSTRAINTS, HESSIANS, OBJECTIVES, PARTS, SpinupConfig, SpinupResult
from .learned import _Learned
from .log import LOG_NAME, LOG_VARIABLES, _previous_records
from .objective import _map_states, _rollout, window_cost
from .run import LEARNED_SUFFIX, check_learned_placement, load_dynamics, load_spinup, spinup
from .steps import _strong_step, _weak_step
from .hypersurface import Hypersurface
from .command import add_parser, run_cli

__all__ = ["SpinupConfig", "SpinupResult", "spinup", "load_dynamics", "load_spinup",
           "window_cost", "check_learned_placement", "CONSTRAINTS",
           "PARTS", "HESSIANS", "OBJECTIVES", "LOG_VARIABLES", "LEARNED_SUFFIX",
           "Hypersurface", "add_parser", "run_cli"]
