"""Progress bars that stay short in log files.

On a terminal a bar refreshes in place.  Written to a file or a CI log every
refresh is a new stretch of text, so one long run left hundreds of kilobytes
of bars; when stderr is not a terminal a bar here refreshes at most every
:data:`LOG_INTERVAL` seconds and is always left as one final line.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "LOG_INTERVAL"]

#: Seconds between refreshes of a bar written to something that is not a terminal.
LOG_INTERVAL = 30.0


def progress_bar(iterable=None, **options):
    """A :class:`tqdm.auto.tqdm` bar, quiet when stderr is not a terminal.

    Parameters
    ----------
    iterable : iterable, optional
        As for tqdm.
    **options
        tqdm's options (``total``, ``desc``, ``disable``, ``unit``, ...).  When
        stderr is not a terminal, ``mininterval`` defaults to
        :data:`LOG_INTERVAL` and ``leave`` is forced True, so a log receives a
        few lines per bar rather than every refresh.

    Returns
    -------
    tqdm.auto.tqdm

    Examples
    --------
    >>> bar = progress_bar(range(3), desc="demo", disable=True)
    >>> sum(bar)
    3
    """
    from tqdm.auto import tqdm

    stream = options.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        options.setdefault("mininterval", LOG_INTERVAL)
        options["leave"] = True
    return tqdm(iterable, **options)
