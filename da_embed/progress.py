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
        :data:`LOG_INTERVAL`, ``leave`` is forced True and ``set_postfix`` /
        ``set_description`` do not redraw by themselves, so a log receives a
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
    if callable(isatty) and isatty():
        return tqdm(iterable, **options)
    options.setdefault("mininterval", LOG_INTERVAL)
    options["leave"] = True
    return _log_bar(tqdm)(iterable, **options)


def _log_bar(tqdm):
    """``tqdm`` whose postfix and description wait for the next refresh.

    tqdm redraws at once on ``set_postfix`` / ``set_description``; in a log
    every such call (a loss per step) would be another line.
    """

    class LogBar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
            super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

        def set_description(self, desc=None, refresh=False):
            super().set_description(desc, refresh=refresh)

    return LogBar
