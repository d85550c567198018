"""Sphinx configuration of the da-embed documentation (``make docs``).

Builds and reads offline: no intersphinx, MathJax is copied into the HTML
(``sphinx-mathjax-offline``), and the gallery runs every script of
``examples/`` with matplotlib's Agg backend.
"""

from __future__ import annotations

import os
import sys
import warnings

# Headless, reproducible figures and one BLAS/Numba thread per process (the
# machines have 2 cores and the examples are small).
os.environ.setdefault("MPLBACKEND", "Agg")
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the source tree, if not installed

from da_embed import __version__  # noqa: E402

# -- project -----------------------------------------------------------------
project = "da-embed"
author = "da-embed developers"
copyright = "da-embed developers, Apache-2.0"
version = release = __version__

# -- extensions --------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static: math renders offline too
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip", "auto_examples/*.json",
                    "auto_examples/*.md5", "sg_execution_times.rst"]

# No network on the build machines: sphinx.ext.intersphinx is deliberately not
# loaded, so references to numpy, xarray, torch, ... render as plain text.

# -- autodoc / autosummary / numpydoc ---------------------------------------
autosummary_generate = True
autosummary_imported_members = True  # the packages re-export from private modules
autosummary_ignore_module_all = False  # document exactly __all__
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"
autoclass_content = "class"


def _api_modules() -> list[str]:
    """The modules the API page documents (its autosummary entries that are modules)."""
    import importlib
    import re
    import types

    names = re.findall(r"^   ((?:filters|da_embed)[\w.]*)\s*$",
                       open(os.path.join(HERE, "api", "index.rst")).read(), flags=re.M)
    out = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(mod, types.ModuleType) and mod.__name__ == name:
            out.append(name)
    return out


def _api_owners(modules: list[str]) -> dict[str, list[str]]:
    """Per module page, the names documented on another (more specific) module page.

    A class or function re-exported by several documented modules (``filters.Var3D``
    is ``filters.variational.Var3D``) gets one page, under the deepest documented
    module that exports it; the other module pages link to it.  Two pages of the
    same object would register its canonical name twice (a duplicate-object
    warning) and split the cross-references.
    """
    import importlib
    import inspect

    owner: dict[int, str] = {}
    exported: dict[str, list[tuple[str, object]]] = {}
    for modname in modules:
        mod = importlib.import_module(modname)
        items = []
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                items.append((name, obj))
                best = owner.get(id(obj))
                if best is None or modname.count(".") > best.count("."):
                    owner[id(obj)] = modname
        exported[modname] = items
    moved: dict[str, list[str]] = {}
    for modname, items in exported.items():
        for name, obj in items:
            if owner[id(obj)] != modname:
                moved.setdefault(modname, []).append(f"{owner[id(obj)]}.{name}")
    return moved


def _api_aliases(modules: list[str]) -> dict[str, str]:
    """Other names of every documented class or function -> its documented name.

    ``filters.Setting`` (re-export), ``filters.settings.Setting`` (page) and
    ``filters.variational._filters.Var3D`` (definition) name the same object;
    a cross-reference to any of them is resolved to the page
    (:func:`_resolve_alias`).
    """
    import importlib
    import inspect

    moved = _api_owners(modules)
    aliases: dict[str, str] = {}
    for modname in modules:
        mod = importlib.import_module(modname)
        moved_here = {t.rsplit(".", 1)[1]: t for t in moved.get(modname, [])}
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            page = moved_here.get(name, f"{modname}.{name}")
            for alias in (f"{modname}.{name}",
                          f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"):
                if alias != page:
                    aliases.setdefault(alias, page)
    return aliases


API_MODULES = _api_modules()
autosummary_context = {"api_moved": _api_owners(API_MODULES)}
API_ALIASES = _api_aliases(API_MODULES)


def _prefer_documented_modules() -> None:
    """Make autosummary read a documented module's name as the module.

    ``da_embed.compare`` and ``da_embed.spinup`` are modules *and* the functions
    the package re-exports under those names; autosummary tries the attribute
    first and would document the function under the module's name.
    """
    import importlib

    import sphinx.ext.autosummary as autosummary

    original = autosummary._import_by_name
    documented = frozenset(API_MODULES)

    def _import_by_name(name, grouped_exception=True):
        if name in documented:
            return importlib.import_module(name), None, name
        return original(name, grouped_exception)

    autosummary._import_by_name = _import_by_name


_prefer_documented_modules()

numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
# Validation of every docstring against the numpydoc checks is done by the
# tests (tests/test_docstrings.py); the build only renders.
numpydoc_validation_checks: set = set()

# -- MyST (docs/benchmarks.md) ------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# -- sphinx-gallery ----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",  # run every example, not only plot_*
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "matplotlib_animations": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "backreferences_dir": None,
    "doc_module": (),
    "only_warn_on_example_error": False,  # a failing example fails the build
    "min_reported_time": 0,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"da-embed {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-nav-bs"], "index": [], "benchmarks": []}
html_static_path: list = []
html_show_sourcelink = False

# -- quiet, deterministic builds --------------------------------------------
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Hide the ``Alias for field number k`` properties of NamedTuples.

    Their meaning is already in the class's Attributes section.
    """
    doc = getattr(obj, "__doc__", None) or ""
    if isinstance(obj, property) and doc.startswith("Alias for field number"):
        return True
    return skip


def _resolve_alias(app, env, node, contnode):
    """Resolve a Python cross-reference to another name of a documented object.

    The target itself or its longest prefix (``filters.Setting.simulate`` ->
    ``filters.settings.Setting.simulate``) is looked up in :data:`API_ALIASES`.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    candidates = [target]
    if node.get("py:module") and not target.startswith(("filters.", "da_embed.")):
        candidates.append(f"{node['py:module']}.{target}")
    for cand in candidates:
        parts = cand.split(".")
        for cut in range(len(parts), 1, -1):
            page = API_ALIASES.get(".".join(parts[:cut]))
            if page is not None:
                new = ".".join([page, *parts[cut:]])
                return env.get_domain("py").resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], new, node, contnode)
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("missing-reference", _resolve_alias)
