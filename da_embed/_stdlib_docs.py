"""Extract the standard library's docstrings (run as a script in a clean interpreter).

Run by :func:`da_embed.corpora.stdlib_corpus` as ``python -I _stdlib_docs.py``
so that what the current process has imported (numpy, torch, ...) cannot
change the text: some modules' namespaces and docstrings depend on it.
Imports only the standard library; writes UTF-8 text to stdout.
"""

import importlib
import inspect
import io
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

__all__: list = []

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



def main() -> None:
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _SKIP)
    texts = [t for t in map(_module_text, names) if t]
    out = "\n\n".join(t.strip() for t in texts if t.strip())
    sys.stdout.buffer.write(out.encode("utf-8"))


if __name__ == "__main__":
    main()
