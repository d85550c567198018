"""The demo's texts: held-out standard-library docstrings and licence prose.

Both come with every Python installation, so the demo needs no download;
:func:`heldout_docstrings` reads the submodules' own docstrings in a clean
interpreter and :func:`licence_text` finds licence files of CPython or of
installed distributions.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

__all__ = ["EVAL_MODULES", "TUNE_MODULES", "heldout_docstrings", "module_texts", "drop_seen",
           "licence_text"]

#: Submodules whose own docstrings make the reported stream's first segment.
EVAL_MODULES = ("email.message", "logging.handlers", "http.client", "xml.etree.ElementTree")
#: Other submodules: the tuning stream's first segment (disjoint from the above).
TUNE_MODULES = ("unittest.case", "http.cookiejar", "urllib.request", "asyncio.events")
#: Distributions whose licence files stand in when CPython's LICENSE.txt is
#: missing (reported stream) and that give the tuning stream its licence.
_EVAL_LICENCE_DISTS = ("numpy", "scipy")
_TUNE_LICENCE_DISTS = ("transformers", "xarray", "torch")


def heldout_docstrings(modules=EVAL_MODULES, training_text: str | None = None):
    """Docstrings of submodules' own classes and functions, minus anything seen in training.

    The reference corpus (:func:`da_embed.corpora.stdlib_corpus`) reads the
    docstrings of the standard library's *top-level* modules and skips
    names defined elsewhere, so what a submodule such as ``email.message``
    defines is not in it.  The docstrings are read in a clean, isolated
    interpreter (the same extraction as the corpus), so the text depends
    only on the Python version.

    Parameters
    ----------
    modules : sequence of str
        Dotted module names, in order; a module that cannot be imported is
        skipped (and listed in ``info["missing"]``).
    training_text : str, optional
        The model's training text: paragraphs (blocks separated by a blank
        line) that occur in it verbatim are dropped.

    Returns
    -------
    text : str
    info : dict
        ``modules`` (used), ``missing``, ``paragraphs`` (kept) and
        ``dropped`` (found verbatim in ``training_text``).

    Examples
    --------
    >>> text, info = heldout_docstrings(["json.decoder"])
    >>> "JSONDecoder" in text, info["modules"], info["dropped"]
    (True, ['json.decoder'], 0)
    """
    modules = [str(m) for m in modules]
    texts = module_texts(modules)
    used = [name for name, text in zip(modules, texts) if text.strip()]
    missing = [name for name, text in zip(modules, texts) if not text.strip()]
    text, kept, dropped = drop_seen("\n\n".join(t for t in texts if t.strip()), training_text)
    info = {"modules": used, "missing": missing, "paragraphs": kept, "dropped": dropped}
    return text, info


_TEXTS: dict[str, str] = {}  # module -> its docstrings (fixed for a Python version)


def module_texts(modules) -> list[str]:
    """Docstrings of each module, read in one clean interpreter for all not yet cached.

    Parameters
    ----------
    modules : sequence of str
        Dotted module names.

    Returns
    -------
    list of str
        One text per module (empty for a module that cannot be imported).

    Examples
    --------
    >>> "JSONDecoder" in module_texts(["json.decoder"])[0]
    True
    """
    todo = [m for m in dict.fromkeys(modules) if m not in _TEXTS]
    if todo:
        # _stdlib_docs.py lies in da_embed/, the folder above this package
        folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        script = (f"import sys, json; sys.path.insert(0, {folder!r}); import _stdlib_docs as d; "
                  f"sys.stdout.buffer.write(json.dumps([d._module_text(m) for m in {todo!r}])"
                  ".encode('utf-8'))")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run([sys.executable, "-I", "-X", "utf8", "-c", script],
                              capture_output=True, timeout=600, env=env)
        if proc.returncode != 0:
            raise RuntimeError("extracting docstrings failed: "
                               + proc.stderr.decode("utf-8", "replace")[-2000:])
        _TEXTS.update(zip(todo, json.loads(proc.stdout.decode("utf-8"))))
    return [_TEXTS[m] for m in modules]


def drop_seen(text: str, training_text: str | None) -> tuple[str, int, int]:
    """``text`` minus paragraphs found verbatim in ``training_text``.

    Parameters
    ----------
    text : str
        Paragraphs separated by blank lines.
    training_text : str or None
        None keeps every paragraph.

    Returns
    -------
    text : str
    kept, dropped : int
        Paragraph counts.

    Examples
    --------
    >>> drop_seen("a b\\n\\nc d\\n", "xx c d yy")
    ('a b\\n', 1, 1)
    """
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    kept = [p for p in paras if training_text is None or p not in training_text]
    return "\n\n".join(kept) + ("\n" if kept else ""), len(kept), len(paras) - len(kept)


def _cpython_licence_paths() -> list[Path]:
    """Where CPython's LICENSE.txt lives on the usual installations (Debian: its copyright)."""
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stdlib = Path(sysconfig.get_path("stdlib"))
    return [stdlib / "LICENSE.txt", Path(os.__file__).parent / "LICENSE.txt",
            Path(sys.base_prefix) / "LICENSE.txt",
            Path(sys.base_prefix) / "share" / "doc" / f"python{ver}" / "copyright",
            Path("/usr/share/doc") / f"python{ver}" / "copyright"]


def _dist_licence(dist: str) -> tuple[str, str] | None:
    """The top-most licence file of an installed distribution, as (text, path)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in (d.files or [])
             if Path(str(f)).name.upper().startswith(("LICEN", "COPYING"))]
    for f in sorted(files, key=lambda f: (len(Path(str(f)).parts), str(f))):
        path = Path(d.locate_file(f))
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if len(text.strip()) >= 500:
            return text, str(path)
    return None


def licence_text(which: str = "eval") -> tuple[str, str]:
    """Licence prose that every installation of the package carries, and where it came from.

    Parameters
    ----------
    which : {"eval", "tune"}
        ``"eval"``: CPython's own ``LICENSE.txt`` (the history of Python and
        the PSF, BeOpen, CNRI and CWI licences), else the licence files of
        numpy or scipy.  ``"tune"``: the licence of ``transformers``
        (Apache-2.0), else of xarray or torch.  The two never share a source.

    Returns
    -------
    text : str
    source : str
        The file read (or ``"<dist> package description"`` as the last resort).

    Raises
    ------
    ValueError
        If ``which`` is neither ``"eval"`` nor ``"tune"``.

    Examples
    --------
    >>> text, source = licence_text("tune")
    >>> len(text) > 500 and "licen" in text.lower()
    True
    """
    if which not in ("eval", "tune"):
        raise ValueError(f"which must be 'eval' or 'tune', got {which!r}")
    if which == "eval":
        for path in _cpython_licence_paths():
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                if len(text.strip()) >= 500:
                    return text, str(path)
    dists = _EVAL_LICENCE_DISTS if which == "eval" else _TUNE_LICENCE_DISTS
    for dist in dists:
        found = _dist_licence(dist)
        if found is not None:
            return found
    for dist in dists:  # last resort: prose of the package's long description
        try:
            desc = importlib.metadata.metadata(dist).get_payload() or ""
        except importlib.metadata.PackageNotFoundError:
            continue
        if len(desc.strip()) >= 500:
            return desc, f"{dist} package description"
    raise FileNotFoundError(f"no licence text found for the {which} stream (looked for "
                            f"CPython's LICENSE.txt and the licences of {', '.join(dists)})")
