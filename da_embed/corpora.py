"""Text corpora: the embedded default (Python's own documentation) and text files.

The embedded default corpus is always present offline: the pydoc topics of
:mod:`pydoc_data.topics` followed by the docstrings of the standard library's
top-level modules and of their public classes and functions, in sorted order.
The docstrings are read in a clean, isolated interpreter, so the same Python
version gives the same text whatever the calling process has imported.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["stdlib_corpus", "read_text", "wikitext_path", "alternate_segments"]

def stdlib_corpus(include_topics: bool = True, include_docstrings: bool = True) -> str:
    """The embedded default corpus: Python's own documentation, offline.

    Parameters
    ----------
    include_topics : bool
        Include the pydoc topics (the language reference sections shipped in
        :mod:`pydoc_data.topics`).
    include_docstrings : bool
        Include the docstrings of the standard library's top-level modules
        and of their public classes, functions and methods.

    Returns
    -------
    str
        Deterministic for a given Python version (sorted order).

    Examples
    --------
    >>> text = stdlib_corpus(include_docstrings=False)
    >>> len(text) > 100_000
    True
    """
    parts = []
    if include_topics:
        from pydoc_data.topics import topics

        parts.extend(topics[k] for k in sorted(topics))
    if include_docstrings:
        parts.append(_stdlib_docstrings())
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


@functools.lru_cache(maxsize=1)
def _stdlib_docstrings() -> str:
    """Docstrings extracted in a clean, isolated interpreter (about 1 s, cached)."""
    script = Path(__file__).with_name("_stdlib_docs.py")
    proc = subprocess.run([sys.executable, "-I", "-X", "utf8", str(script)], capture_output=True,
                          timeout=600, env={k: v for k, v in os.environ.items()
                                            if not k.startswith("PYTHON")})
    if proc.returncode != 0:
        raise RuntimeError("extracting the standard library's docstrings failed: "
                           + proc.stderr.decode("utf-8", "replace")[-2000:])
    return proc.stdout.decode("utf-8")


def read_text(path: str | os.PathLike, *, min_chars: int = 1) -> str:
    """Read a UTF-8 text file (undecodable bytes replaced), with clear errors.

    Parameters
    ----------
    path : str or PathLike
    min_chars : int
        Fewest characters (after stripping whitespace) accepted.

    Returns
    -------
    str

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is a directory or has fewer than ``min_chars`` characters.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "corpus.txt"
    ...     _ = path.write_bytes("café ".encode() + bytes([255]))  # one undecodable byte
    ...     read_text(path) == "café \N{REPLACEMENT CHARACTER}"
    True
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"corpus file not found: {os.fspath(path)!r}")
    if p.is_dir():
        raise ValueError(f"corpus path {os.fspath(path)!r} is a directory, expected a text file")
    text = p.read_text(encoding="utf-8", errors="replace")
    if len(text.strip()) < min_chars:
        raise ValueError(f"corpus {os.fspath(path)!r} has {len(text.strip())} characters, "
                         f"expected at least {min_chars}")
    return text


def wikitext_path(split: str = "test") -> Path:
    """Path of WikiText-2 ``valid.txt`` or ``test.txt`` on development machines.

    Looked up in ``$DA_EMBED_WIKITEXT`` (a folder) and then in
    ``../shared/data/wikitext-2`` beside the repository.  Users elsewhere pass
    the file with ``--corpus``.

    Parameters
    ----------
    split : {"test", "valid"}
        Which file.

    Returns
    -------
    pathlib.Path
        The first existing ``<folder>/<split>.txt``.

    Raises
    ------
    ValueError
        If ``split`` is not "valid" or "test".
    FileNotFoundError
        If no copy is found.

    Examples
    --------
    >>> import tempfile
    >>> from unittest import mock
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = (Path(folder) / "valid.txt").write_text(" = Valkyria Chronicles = ")
    ...     with mock.patch.dict(os.environ, {"DA_EMBED_WIKITEXT": folder}):
    ...         print(wikitext_path("valid").name)
    valid.txt
    """
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    candidates = []
    if os.environ.get("DA_EMBED_WIKITEXT"):
        candidates.append(Path(os.environ["DA_EMBED_WIKITEXT"]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2")
    for folder in candidates:
        f = folder / f"{split}.txt"
        if f.is_file():
            return f
    raise FileNotFoundError(f"WikiText-2 {split}.txt not found in {[str(c) for c in candidates]}; "
                            "set DA_EMBED_WIKITEXT or pass the file with --corpus")



def _token_ids(ids, what: str) -> np.ndarray:
    """``ids`` (array, list or tensor) as a 1-D array; ValueError naming ``what`` otherwise."""
    import numpy as np
    arr = np.asarray(ids.detach().cpu().numpy() if hasattr(ids, "detach") else ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D sequence of integer token ids, "
                         f"got shape {arr.shape} and dtype {arr.dtype}")
    return arr

def alternate_segments(streams: dict, segment_tokens: int):
    """Interleave token streams in alternating segments: a multi-domain stream.

    The result takes ``segment_tokens`` tokens from each stream in turn (in
    the dict's order), each stream continuing where its last segment ended:
    ``A[0:S], B[0:S], A[S:2S], B[S:2S], ...``.  It stops at the first stream
    that cannot give a full segment, so every segment is complete.

    Parameters
    ----------
    streams : dict of str to array_like of int
        Domain name -> token ids (1-D), each at least one segment long
        (one domain gives its own whole segments).
    segment_tokens : int
        S, tokens per segment (>= 1).

    Returns
    -------
    ids : numpy.ndarray of int64
        The concatenated stream.
    segments : list of dict
        One per segment, in stream order: ``domain``, ``start`` and ``stop``
        (stream indices, ``ids[start:stop]``).

    Raises
    ------
    ValueError
        No streams, a stream that is not 1-D integer ids, one shorter than a
        segment, or a bad ``segment_tokens``.

    Examples
    --------
    >>> ids, segments = alternate_segments({"a": [1, 2, 3, 4, 5], "b": [7, 8, 9, 10]}, 2)
    >>> ids.tolist()
    [1, 2, 7, 8, 3, 4, 9, 10]
    >>> [(s["domain"], s["start"], s["stop"]) for s in segments]
    [('a', 0, 2), ('b', 2, 4), ('a', 4, 6), ('b', 6, 8)]
    """
    import numbers

    import numpy as np

    if (isinstance(segment_tokens, bool) or not isinstance(segment_tokens, numbers.Integral)
            or segment_tokens < 1):
        raise ValueError(f"segment_tokens must be an integer >= 1, got {segment_tokens!r}")
    S = int(segment_tokens)
    if not isinstance(streams, dict) or not streams:
        raise ValueError("streams must be a non-empty dict of domain name -> token ids")
    arrays = {}
    for name, ids in streams.items():
        arr = _token_ids(ids, f"streams[{name!r}]")
        if arr.size < S:
            raise ValueError(f"streams[{name!r}] has {arr.size} tokens, fewer than one segment "
                             f"(segment_tokens = {S})")
        arrays[str(name)] = arr.astype(np.int64)
    parts, segments, pos, r = [], [], 0, 0
    while True:  # ends: the streams are finite; the first round is complete (each >= S)
        for name, arr in arrays.items():
            if (r + 1) * S > arr.size:  # the first stream without a full segment ends it
                return np.concatenate(parts), segments
            parts.append(arr[r * S:(r + 1) * S])
            segments.append({"domain": name, "start": pos, "stop": pos + S})
            pos += S
        r += 1
