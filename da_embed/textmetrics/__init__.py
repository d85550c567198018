"""Metrics of generated text and of its cost: coherence, diversity, speed, memory, parameters.

These are the columns of the seeds' claims table (``da-embed claims``), one
module each, every definition with its source:
:mod:`~da_embed.textmetrics.coherence` (cosine of sentence embeddings, Su et
al. 2022, or a labelled judge log-probability fallback),
:mod:`~da_embed.textmetrics.diversity` (rep-n and diversity, Welleck et al.
2020; Su et al. 2022), :mod:`~da_embed.textmetrics.cost` (speed relative to
base generation, extra memory, adaptation parameters) and
:mod:`~da_embed.textmetrics.logprob` (mean log-probability of continuations,
the judge's score).

Shapes: P prompts (texts), R candidates, T context tokens, L continuation tokens.
"""

from .coherence import (ENCODER_PACKAGE, Coherence, SentenceEncoder, coherence,
                        cosine_coherence, load_sentence_encoder, sentence_encoder_available)
from .cost import PeakMemory, adaptation_parameters, relative_throughput
from .diversity import DIVERSITY_NS, diversity, rep_n
from .logprob import continuation_logprob, continuation_logprob_ids

__all__ = ["rep_n", "diversity", "SentenceEncoder", "sentence_encoder_available",
           "load_sentence_encoder", "cosine_coherence", "continuation_logprob",
           "continuation_logprob_ids", "Coherence", "coherence", "relative_throughput",
           "PeakMemory", "adaptation_parameters", "ENCODER_PACKAGE", "DIVERSITY_NS"]
