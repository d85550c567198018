"""The ``da-embed`` command line.

``da-embed compare`` runs several online methods on one token stream and
prints the comparison table (:func:`da_embed.compare.compare`); ``da-embed plot
RUN.nc|DIR`` writes the figures of a run or a compare folder as PNG files
(:func:`da_embed.plot.save_figures`).  Bad input
(missing files, an empty or too short corpus, a model path that does not
exist, a placement the model cannot carry, too few members, a chunk longer
than the context, ...) ends with one line naming the problem and exit status
2, never a traceback (``--debug`` shows it).  Ctrl-C stops the run with exit
status 130; every completed chunk is kept in the method's netCDF file.

The subcommands live in one module each (:mod:`da_embed.cli.compare`,
:mod:`da_embed.cli.plot`, ...); this package only re-exports the entry point:

>>> main(["compare", "--chunk", "64", "--context", "32"])  # the error goes to stderr
2
"""

from .app import build_parser, main

__all__ = ["main", "build_parser"]
