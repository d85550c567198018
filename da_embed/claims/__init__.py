"""The seeds' claims table, measured: ``da-embed claims``.

Seed ``000`` (adaptive embedding scaling) claims, for generation with its
verification update against the base model: "+12.7% coherence score",
"maintains 98% of base model's lexical diversity", "1.03x slower",
"110MB additional memory" and "~0.1M parameters".  :func:`reproduce_claims`
measures the same columns on a fixed prompt set for base generation, the
seeds' verification rule, the EnKF and the UKF (and optionally the ETKF), all
on one model in one run, and prints them beside the claims, whatever they
turn out to be.

Protocol (printed with the table):

* prompts: the first sentence of each of the first P paragraphs of
  WikiText-2 ``test.txt`` (:func:`wikitext_prompts`; detokenised);
* each method generates ``max_new_tokens`` tokens per prompt with the same
  seed per prompt (``seed + i``), so base and method share the output
  stream's random numbers and differ only through the state
  (:func:`da_embed.generate.generate`); methods run interleaved prompt by
  prompt so that load from other processes hits all of them alike;
* coherence (Su et al. 2022, or the labelled judge fallback), diversity and
  speed from :mod:`da_embed.textmetrics`; changes against base with 95 %
  percentile-bootstrap intervals over prompts (paired);
* extra memory: the largest peak heap increase of one generation call
  (:class:`~da_embed.memory.PeakHeap`: independent of what ran before);
* parameters: the numbers that adapt the model (the state; no learned
  dynamics here, so the seeds' transition network and adapter are absent).

A run of 50 prompts takes tens of minutes, so each finished generation is appended to
``OUT/generations.jsonl`` at once (``out=``); Ctrl-C on ``da-embed claims`` keeps those
and writes the table of the prompts every method completed (exit status 130).
"""

from .command import add_parser, run_cli
from .prompts import detokenize_wikitext, numpy_doc_prompts, wikitext_prompts
from .reproduce import CLAIM_METHODS, oracle_verifier, reproduce_claims
from .rows import paired_difference
from .table import SEED_CLAIMS, ClaimsTable, write_claims

__all__ = ["SEED_CLAIMS", "CLAIM_METHODS", "oracle_verifier", "paired_difference",
           "numpy_doc_prompts", "wikitext_prompts", "detokenize_wikitext",
           "reproduce_claims", "ClaimsTable", "write_claims", "add_parser", "run_cli"]
