"""Text corpora: the embedded default (Python's own documentation) and text files.

The embedded default corpus is always present offline: the pydoc topics of
:mod:`pydoc_data.topics` followed by the docstrings of the standard library's
top-level modules and of their public classes and functions, in sorted order,
so that the same Python version gives the same text.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

__all__ = ["stdlib_corpus", "read_text", "wikitext_path"]

# Modules whose import has side effects (opens a browser, prints, starts a GUI
# or an interpreter) or that are not documentation-bearing.
_SKIP = {
    "antigravity", "this", "idlelib", "turtledemo", "turtle", "tkinter", "__hello__",
    "__phello__", "__future__", "lib2to3", "test", "ensurepip", "venv", "pydoc_data",
    "xxsubtype", "xxlimited", "xxlimited_35", "msvcrt", "winreg", "winsound", "_winapi",
    "nt", "sre_compile", "sre_constants", "sre_parse",
}


def _module_text(name: str) -> str:
    """Docstrings of a module and its public classes, functions and methods."""
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            mod = importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - any import failure just skips the module
        return ""
    parts = []
    doc = inspect.getdoc(mod)
    if doc:
        parts.append(doc)
    public = getattr(mod, "__all__", None)
    names = sorted(public) if isinstance(public, (list, tuple)) else sorted(
        n for n in vars(mod) if not n.startswith("_"))
    for attr in names:
        obj = getattr(mod, attr, None)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", name) != name:
            continue  # documented where it is defined
        d = inspect.getdoc(obj)
        if d:
            parts.append(f"{attr}\n{d}")
        if inspect.isclass(obj):
            for meth_name, meth in sorted(vars(obj).items()):
                if meth_name.startswith("_") or not callable(meth):
                    continue
                md = inspect.getdoc(meth)
                if md:
                    parts.append(f"{attr}.{meth_name}\n{md}")
    return "\n\n".join(parts)


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
        names = sorted(n for n in sys.stdlib_module_names
                       if not n.startswith("_") and n not in _SKIP)
        parts.extend(t for t in map(_module_text, names) if t)
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


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

    Raises
    ------
    ValueError
        If ``split`` is not "valid" or "test".
    FileNotFoundError
        If no copy is found.
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
