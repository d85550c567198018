"""Language-model scale adaptation as data assimilation (built on :mod:`filters`).

Placements (:mod:`da_embed.placements`) put a scale state into a frozen
Hugging Face causal LM; :mod:`da_embed.observations` turns revealed tokens
into observations (per-token NLLs); :mod:`da_embed.dynamics` holds the
forecast models; :class:`OnlineAssimilator` runs any filter of :mod:`filters`
(or a baseline of :mod:`da_embed.baselines`) over a token stream under the
prequential protocol; :func:`compare` tabulates methods against the frozen
model (also ``da-embed compare`` on the command line); :func:`spinup` learns the
dynamics and Q from a corpus by 4D-Var (``da-embed spinup``), and
:class:`Hypersurface` is its strong-constraint limit.  :mod:`da_embed.testing`
builds tiny random models for tests and examples.
"""

from ._version import __version__
from .assimilator import AssimilationDiverged, OnlineAssimilator, PrequentialConfig
from .baselines import DynamicEvaluation, Frozen, PointState, VerificationRule
from .compare import Comparison, compare
from .dynamics import (LearnedDynamics, LowRankAdapter, RandomWalk, TransitionNetwork,
                       count_parameters)
from .methods import METHODS, make_method
from .observations import TokenNLLObservation
from . import placements
from .placements import (EmbeddingScale, HiddenScale, Placement, RotaryScale,
                         SingularValueScale, Subspace)
from .planted import PlantedDrift, PlantedShift, planted_drift, planted_shift
from .spinup import (Hypersurface, SpinupConfig, SpinupResult, load_dynamics, load_spinup,
                     spinup)
from .subspaces import fisher_subspace
from .trajectory import open_trajectory
from .transformer2 import Experts, TwoPass, load_experts, train_experts

# Hypersurface lived in da_embed.placements before issue 11 (it trains itself by spin-up,
# which sits above the placements); `from da_embed.placements import Hypersurface` keeps working.
placements.Hypersurface = Hypersurface

__all__ = [
    "__version__",
    # placements
    "Placement", "EmbeddingScale", "HiddenScale", "SingularValueScale", "RotaryScale",
    "Subspace", "Hypersurface", "fisher_subspace",
    # dynamics
    "TransitionNetwork", "LowRankAdapter", "RandomWalk", "LearnedDynamics", "count_parameters",
    "spinup", "SpinupConfig", "SpinupResult", "load_dynamics", "load_spinup",
    # observations and the online loop
    "TokenNLLObservation", "OnlineAssimilator", "PrequentialConfig", "AssimilationDiverged",
    "METHODS", "make_method", "Frozen", "DynamicEvaluation", "VerificationRule", "PointState",
    "Experts", "TwoPass", "train_experts", "load_experts",
    # comparison and outputs
    "compare", "Comparison", "open_trajectory", "PlantedShift", "planted_shift",
    "PlantedDrift", "planted_drift",
]
