"""Language-model scale adaptation as data assimilation (built on :mod:`filters`).

Placements (:mod:`da_embed.placements`) put a scale state into a frozen
Hugging Face causal LM; :mod:`da_embed.testing` builds tiny random models for
tests and examples.  Observation operators and the online assimilator land in
later issues.
"""

from ._version import __version__
from .placements import (EmbeddingScale, HiddenScale, Placement, RotaryScale,
                         SingularValueScale, Subspace)

__all__ = ["__version__", "Placement", "EmbeddingScale", "HiddenScale", "SingularValueScale",
           "RotaryScale", "Subspace"]
