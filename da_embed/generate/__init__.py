"""Generation steered by candidate continuations assimilated as pseudo-observations.

The method (cycles, pseudo-observations, the verification rule, decoding) is
described in :mod:`da_embed.generate.generation`; the settings in
:mod:`~da_embed.generate.config`, the verifiers in
:mod:`~da_embed.generate.verifiers`, the analysis in
:mod:`~da_embed.generate.analysis`, the cycle loop in
:mod:`~da_embed.generate.cycles`, its netCDF log in
:mod:`~da_embed.generate.log`, and the ``da-embed generate`` subcommand in
:mod:`~da_embed.generate.command`.
"""

from .analysis import pseudo_target, verification_update
from .command import add_parser, load_generator, run_cli
from .config import FILTERS
from .decoding import sample_tokens
from .generation import generate
from .result import GenerationResult
from .verifiers import CallableVerifier, LogProbVerifier, load_verifier, make_verifier

__all__ = ["generate", "GenerationResult", "FILTERS", "LogProbVerifier", "CallableVerifier",
           "make_verifier", "load_verifier", "verification_update", "pseudo_target",
           "sample_tokens", "add_parser", "load_generator", "run_cli"]
