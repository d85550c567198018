"""Choices made on validation text, reported on test text: the selection file between them.

A benchmark that tunes and reports in one run can pick, knowingly or not,
what looks best on the text it reports.  Here the two are separate steps
that share one JSON file:

1. the **selection step** is given the validation file only.  It reads it
   through :func:`read_selection_input`, which refuses a test split (by path:
   the test file is never opened by this step), tunes, names the methods to
   report and their settings, and writes them with :func:`write_selection`
   together with the budget and the SHA-256 of every text it read;
2. the **report step** reads that file (:func:`read_selection`) and the test
   text through :func:`read_report_text`, which refuses a test text that is
   one of the selection's inputs or shares more than
   :data:`da_embed.overlap.MAX_SHARED` of its 16-word windows with one (so
   a copy of the test text under another name is caught before anything is
   scored).  It takes every choice from the file.

Tuning budgets are drawn with :func:`draw_configs`: the same number of
configurations for every method, from each method's own grid.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np

from .overlap import MAX_SHARED, NGRAM, shared_fraction

__all__ = ["SELECTION_VERSION", "file_digest", "is_test_split", "read_selection_input",
           "draw_configs", "write_selection", "read_selection", "read_report_text"]

#: Format version of the selection file.
SELECTION_VERSION = 1
_KEYS = ("version", "step", "methods", "headline", "budget", "inputs")


def file_digest(path) -> str:
    """SHA-256 (hex) of a file's bytes.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    str

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     p = Path(folder) / "a.txt"
    ...     _ = p.write_bytes(b"abc")
    ...     file_digest(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_test_split(path) -> bool:
    """Whether a file name says it is a test split (``test.txt``, ``wiki.test.tokens``, ...).

    The name's parts, split at ``.``, ``_`` and ``-``, include ``test``; the
    folders are not looked at.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    bool

    Examples
    --------
    >>> is_test_split("data/wikitext-2/test.txt"), is_test_split("wiki.test.tokens")
    (True, True)
    >>> is_test_split("tests/data/valid.txt"), is_test_split("contest.txt")
    (False, False)
    """
    return "test" in re.split(r"[._\-]", Path(path).name.lower())


def read_selection_input(path, *, role: str = "valid", forbidden=()) -> tuple[str, dict]:
    """Read a text for the selection step, refusing a test split.

    Nothing of a refused file is opened.

    Parameters
    ----------
    path : str or PathLike
        The validation (or training) text.
    role : str, default "valid"
        What the text is for, recorded in the selection file.
    forbidden : sequence of str or PathLike, default ()
        Paths the step must not read (the test file); compared after
        resolving links, never opened.

    Returns
    -------
    text : str
    record : dict
        ``role``, ``path``, ``sha256`` and ``bytes`` of the text, for the
        selection file's ``inputs``.

    Raises
    ------
    ValueError
        If ``path`` is one of ``forbidden`` or its name says it is a test
        split (:func:`is_test_split`).
    FileNotFoundError
        If it does not exist.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "valid.txt").write_text("some words")
    ...     text, rec = read_selection_input(Path(folder) / "valid.txt")
    ...     read_selection_input(Path(folder) / "test.txt")
    Traceback (most recent call last):
    ...
    ValueError: the selection step was handed a test split ...
    """
    from .corpora import read_text

    p = Path(path).resolve()
    bad = {Path(f).resolve() for f in forbidden}
    if p in bad or is_test_split(p):
        raise ValueError(f"the selection step was handed a test split ({os.fspath(path)!r}); "
                         f"it reads validation text only: choices must be made before test is "
                         f"touched")
    text = read_text(p)
    return text, {"role": str(role), "path": str(p), "sha256": file_digest(p),
                  "bytes": p.stat().st_size}


def draw_configs(grid: dict, budget: int, *, seed: int = 0, key: str = "") -> list[dict]:
    """``budget`` configurations drawn without replacement from a full grid.

    Every method of a comparison gets the same ``budget``; the grid holds
    its own knobs.  The draw depends only on ``grid``, ``budget``, ``seed``
    and ``key`` (the method's name, so that methods draw independently).

    Parameters
    ----------
    grid : dict of str to sequence
        Values of each knob; the configurations are their product.
    budget : int
        Configurations to draw (at most the grid's size).
    seed : int, default 0
    key : str, default ""

    Returns
    -------
    list of dict
        In the grid's (product) order.

    Raises
    ------
    ValueError
        If ``budget`` is not a positive integer, or exceeds the grid's size.

    Examples
    --------
    >>> draw_configs({"lr": [0.01, 0.1], "steps": [1, 2]}, 4)
    [{'lr': 0.01, 'steps': 1}, {'lr': 0.01, 'steps': 2}, {'lr': 0.1, 'steps': 1}, {'lr': 0.1, 'steps': 2}]
    >>> len(draw_configs({"P0": [0.1, 0.3, 1.0], "R": [0.5, 2.0]}, 3, key="ekf"))
    3
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    if budget > len(points):
        raise ValueError(f"budget {budget} exceeds the {len(points)} configurations of the "
                         f"grid over {', '.join(names) or 'nothing'}{f' ({key})' if key else ''}")
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode())])
    picked = sorted(rng.choice(len(points), size=budget, replace=False).tolist())
    return [points[i] for i in picked]


def write_selection(path, *, step: str, methods: list, headline: dict, budget: dict,
                    inputs: list, forbidden=(), extra: dict | None = None) -> Path:
    """Write the selection file (JSON), after checking that no input is a test text.

    Parameters
    ----------
    path : str or PathLike
    step : str
        The selection step (``"bench_lm"``, ``"bench_spinup"``).
    methods : list of dict
        The methods to report, each with at least ``row`` and ``settings``.
    headline : dict
        The comparison the report headlines, named now (``{"methods": [...]}``).
    budget : dict
        The tuning budget (configurations per method, tokens).
    inputs : list of dict
        The records of :func:`read_selection_input`.
    forbidden : sequence of str or PathLike, default ()
        Paths none of the inputs may be (checked again here).
    extra : dict, optional
        Anything else the report step needs (model settings, file names).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If an input is a test split or one of ``forbidden``, or ``methods``
        or ``headline`` is malformed.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "valid.txt").write_text("some words")
    ...     _, rec = read_selection_input(Path(folder) / "valid.txt")
    ...     path = write_selection(Path(folder) / "selection.json", step="demo",
    ...                            methods=[{"row": "ekf", "settings": {"P0": 0.1}}],
    ...                            headline={"methods": ["ekf"]}, budget={"configs": 1},
    ...                            inputs=[rec])
    ...     read_selection(path)["methods"]
    [{'row': 'ekf', 'settings': {'P0': 0.1}}]
    """
    bad = {Path(f).resolve() for f in forbidden}
    for rec in inputs:
        p = Path(rec["path"]).resolve()
        if p in bad or is_test_split(p):
            raise ValueError(f"selection input {rec['path']!r} is a test text")
    for m in methods:
        if not isinstance(m, dict) or "row" not in m or "settings" not in m:
            raise ValueError(f"methods: each entry needs 'row' and 'settings', got {m!r}")
    rows = {m["row"] for m in methods}
    missing = [h for h in headline.get("methods", []) if h not in rows]
    if missing:
        raise ValueError(f"headline names {missing}, which are not among the selected methods")
    record = {"version": SELECTION_VERSION, "step": step,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "methods": methods, "headline": headline, "budget": budget, "inputs": inputs,
              **({"extra": extra} if extra else {})}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    os.replace(tmp, out)  # a reader never sees half a file
    return out


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_selection(path) -> dict:
    """Read and check a selection file.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        If the file is not a selection file of this version.
    FileNotFoundError
        If it does not exist.

    Examples
    --------
    >>> read_selection("no-such-selection.json")
    Traceback (most recent call last):
    ...
    FileNotFoundError: selection file not found: 'no-such-selection.json' (run the selection step first)
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"selection file not found: {os.fspath(path)!r} (run the "
                                f"selection step first)")
    try:
        rec = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"selection file {os.fspath(path)!r} is not JSON: {exc}") from None
    missing = [k for k in _KEYS if k not in rec]
    if missing or rec.get("version") != SELECTION_VERSION:
        raise ValueError(f"{os.fspath(path)!r} is not a selection file of version "
                         f"{SELECTION_VERSION} (missing {missing or 'nothing'}, version "
                         f"{rec.get('version')!r})")
    return rec


def _word_ids(text: str) -> np.ndarray:
    """Whitespace words as integers (CRC-32), for the window check without a tokenizer."""
    return np.fromiter((zlib.crc32(w.encode()) for w in text.split()), dtype=np.int64)


def read_report_text(path, selection: dict, *, n: int = NGRAM,
                     threshold: float = MAX_SHARED) -> str:
    """Read the report's test text, refusing one the selection step may have seen.

    The test text must differ (by SHA-256) from every input of the
    selection, and share at most ``threshold`` of its ``n``-word windows
    with each (the inputs are read again only for this check, and must
    still have their recorded digests).

    Parameters
    ----------
    path : str or PathLike
        The test text.
    selection : dict
        From :func:`read_selection`.
    n : int, default :data:`da_embed.overlap.NGRAM`
    threshold : float, default :data:`da_embed.overlap.MAX_SHARED`

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If the test text is, or overlaps, a selection input, or an input
        changed since the selection.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     valid, test = Path(folder) / "valid.txt", Path(folder) / "test.txt"
    ...     _ = valid.write_text(" ".join(f"v{i}" for i in range(100)))
    ...     _ = test.write_text(" ".join(f"t{i}" for i in range(100)))
    ...     sel = {"inputs": [read_selection_input(valid)[1]]}
    ...     len(read_report_text(test, sel).split())
    100
    """
    from .corpora import read_text

    text = read_text(path)
    digest = file_digest(path)
    words = _word_ids(text)
    for rec in selection["inputs"]:
        if rec["sha256"] == digest:
            raise ValueError(f"the test text {os.fspath(path)!r} is the selection's "
                             f"{rec['role']} text {rec['path']!r}")
        if not Path(rec["path"]).is_file() or file_digest(rec["path"]) != rec["sha256"]:
            raise ValueError(f"the selection's {rec['role']} text {rec['path']!r} is missing or "
                             f"changed since the selection: rerun the selection step")
        frac = shared_fraction(words, _word_ids(read_text(rec["path"])), n)
        if frac > threshold:
            raise ValueError(f"the test text {os.fspath(path)!r} shares {100 * frac:.1f}% of "
                             f"its {n}-word windows with the selection's {rec['role']} text "
                             f"{rec['path']!r} (more than {100 * threshold:g}%)")
    return text
