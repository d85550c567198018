"""Language-model scale adaptation as data assimilation (built on :mod:`filters`).

The language-model side (placements, observation operators, the online
assimilator) lands in later issues; for now the package carries its version.
"""

from ._version import __version__

__all__ = ["__version__"]
