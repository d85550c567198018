"""The main job (``make demo``): online adaptation of the reference model to a domain shift.

``python -m da_embed.demo --out runs/demo`` does, offline and in about five minutes on 2 CPU
cores the first time (the reference model is trained once and cached; later runs take about a
minute and a half):

1. loads the reference model (:func:`da_embed.reference.load_reference`, trained on the
   standard library's own documentation the first time);
2. builds a *domain-shift stream* (:func:`demo_stream`) from text that every Python
   installation carries: first **held-out standard-library docstrings** (the docstrings of
   submodules' own classes and functions, such as :mod:`email.message`; the training corpus
   reads only top-level modules and skips re-exported names, and any paragraph of them found
   verbatim in the training text is dropped as well), then **licence text**, prose of another
   kind (CPython's ``LICENSE.txt``; where a distribution does not ship it, the licence files of
   the package's own dependencies). A separate *tuning stream* built the same way from other
   modules and another licence (Apache-2.0, shipped with ``transformers``) supplies the Fisher
   subspace and the dynamic-evaluation learning rate: nothing is tuned on the reported stream;
3. compares, under the prequential protocol (chunks of 32 tokens, 224 tokens of context), the
   frozen model, dynamic evaluation, the EKF and strong-constraint 4D-Var on the full
   :class:`~da_embed.placements.HiddenScale` state (n = d_model) with the EnKF and the UKF in
   an 8-dimensional Fisher subspace of it (the UKF needs ``2k + 1`` sigma points, so a small
   state) via :func:`da_embed.compare.compare`;
4. prints the comparison table and the perplexity of each method on each segment of the stream
   (before and after the shift), and writes every trajectory (netCDF), the summaries and the
   figures (PNG) to one folder.

Usage::

    python -m da_embed.demo --out runs/demo [--max-tokens 3072] [--no-progress]
"""

from .report import segment_rows, segment_table
from .run import DEMO_METHOD_OPTIONS, DEMO_METHODS, main, run_demo
from .stream import DemoStream, demo_stream
from .texts import EVAL_MODULES, TUNE_MODULES, heldout_docstrings, licence_text

__all__ = ["DEMO_METHODS", "DEMO_METHOD_OPTIONS", "EVAL_MODULES", "TUNE_MODULES", "DemoStream",
           "heldout_docstrings", "licence_text", "demo_stream", "segment_rows",
           "segment_table", "run_demo", "main"]
