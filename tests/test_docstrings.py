"""Every public name of ``filters`` and ``da_embed`` carries a complete numpydoc docstring.

Public names are the entries of ``__all__`` of every public module of both
packages (found with :func:`pkgutil.walk_packages`, so new modules are covered
without editing this file; modules or packages whose name starts with ``_``,
and ``__main__``, are private).  For each public function and class the
docstring, parsed by :class:`numpydoc.docscrape.NumpyDocString`, must have

* a summary;
* a ``Parameters`` section naming every parameter of the signature (``self``,
  ``cls`` and private ``_name`` parameters excepted; a class documents its
  constructor in the class docstring, so every dataclass or NamedTuple field
  is covered too);
* a ``Returns`` (or ``Yields``) section when the function's source has a
  ``return`` with a value (or a ``yield``);
* an ``Examples`` section with at least one ``>>>`` line (the examples run as
  doctests because pytest is configured with ``--doctest-modules``).

Public methods, classmethods, staticmethods and properties of public classes
(defined in this project, inherited ones included) need a docstring with a
summary; a method may inherit the docstring of the method it overrides, as
:func:`inspect.getdoc` and Sphinx do.  Dataclass fields set outside the
constructor (``init=False``) must appear in the class docstring's
``Parameters`` or ``Attributes``.  The failure message lists every offending
name with what is missing.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap
import types
import warnings

from numpydoc.docscrape import NumpyDocString  # in the ``test`` extra: no silent skip

PACKAGES = ("filters", "da_embed")
# The names the issue lists explicitly; discovery must find at least these.
REQUIRED_MODULES = (
    "filters", "filters.models", "filters.variational", "filters.plot", "filters.io",
    "filters.metrics", "filters.settings", "filters.assimilate", "filters.inflation",
    "filters.covariance", "filters.states", "filters.kalman", "filters.ensemble",
    "filters.unscented", "da_embed",
)


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") for part in module_name.split("."))


def _import_failed(name: str) -> None:
    raise ImportError(f"cannot import package {name} while looking for public modules")


def public_modules() -> list[str]:
    """Names of every public module of the packages (the packages themselves included)."""
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + ".",
                                          onerror=_import_failed):
            if not _is_private(info.name):
                names.append(info.name)
    return sorted(set(names))


def _own(obj) -> bool:
    """True for objects defined in this project (not re-exported from numpy, torch, ...)."""
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in PACKAGES


def _parse(doc: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown section names are reported as missing parts
        return NumpyDocString(doc)


def _documented_names(section) -> set[str]:
    names = set()
    for parameter in section:
        for name in parameter.name.split(","):
            names.add(name.strip().lstrip("*"))
    return names


def _signature_parameters(obj) -> list[str] | None:
    """Parameter names a caller passes (self/cls dropped); None when there is no signature."""
    target = obj
    if inspect.isclass(obj):
        # A class whose constructor comes from outside the project (an exception
        # or warning category) takes nothing of its own to document.
        constructor_owners = [klass for klass in obj.__mro__
                              if "__init__" in vars(klass) or "__new__" in vars(klass)]
        if not constructor_owners or not _own(constructor_owners[0]):
            return []
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    names = [name.lstrip("*") for name in signature.parameters if name not in ("self", "cls")]
    return [name for name in names if not name.startswith("_")]  # private by convention


class _ValueReturns(ast.NodeVisitor):
    """Finds ``return <value>`` and ``yield`` in a function body, not in nested scopes."""

    def __init__(self):
        self.returns_value = False
        self.yields = False
        self.depth = 0

    def _scope(self, node):
        self.depth += 1
        if self.depth == 1:
            self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _scope

    def visit_Return(self, node):
        if node.value is not None and not (isinstance(node.value, ast.Constant)
                                           and node.value.value is None):
            self.returns_value = True
        self.generic_visit(node)

    def visit_Yield(self, node):
        self.yields = True
        self.generic_visit(node)

    visit_YieldFrom = visit_Yield


def _return_kind(function) -> tuple[bool, bool]:
    """(returns a value, yields) read from the source of ``function``."""
    function = inspect.unwrap(function)
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False, False
    tree = ast.parse(source)
    visitor = _ValueReturns()
    visitor.visit(tree.body[0])
    return visitor.returns_value, visitor.yields


def _check_callable(qualname: str, obj, problems: list[str]) -> None:
    doc = inspect.getdoc(obj)
    if not doc:
        problems.append(f"{qualname}: no docstring")
        return
    try:
        parsed = _parse(doc)
    except Exception as error:  # numpydoc raises on malformed sections
        problems.append(f"{qualname}: docstring does not parse as numpydoc ({error})")
        return
    missing = []
    if not "".join(parsed["Summary"]).strip():
        missing.append("summary")
    parameters = _signature_parameters(obj)
    if parameters:
        documented = _documented_names(parsed["Parameters"])
        undocumented = [name for name in parameters if name not in documented]
        if not parsed["Parameters"]:
            missing.append("Parameters section")
        elif undocumented:
            missing.append("Parameters entries for " + ", ".join(undocumented))
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        returns_value, yields = _return_kind(obj)
        if yields and not (parsed["Yields"] or parsed["Returns"]):
            missing.append("Yields section")
        elif returns_value and not (parsed["Returns"] or parsed["Yields"]):
            missing.append("Returns section")
    examples = "\n".join(parsed["Examples"])
    if ">>>" not in examples:
        missing.append("Examples section with a >>> line")
    if missing:
        problems.append(f"{qualname}: missing " + "; ".join(missing))


def _check_members(qualname: str, cls, problems: list[str], seen: set[int]) -> None:
    if dataclasses.is_dataclass(cls):
        doc = inspect.getdoc(cls) or ""
        try:
            parsed = _parse(doc)
        except Exception:
            parsed = None  # already reported for the class itself
        if parsed is not None:
            documented = (_documented_names(parsed["Parameters"])
                          | _documented_names(parsed["Attributes"]))
            for field in dataclasses.fields(cls):
                # constructor fields are checked as parameters of the class
                if field.init or field.name.startswith("_"):
                    continue
                if field.name not in documented:
                    problems.append(f"{qualname}.{field.name}: dataclass field not in the class "
                                    "docstring's Parameters or Attributes")
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
        if owner is None or not _own(owner):
            continue
        attribute = vars(owner)[name]
        if isinstance(attribute, (staticmethod, classmethod)):
            function = attribute.__func__
        elif isinstance(attribute, property):
            function = attribute.fget
        elif isinstance(attribute, types.FunctionType):
            function = attribute
        elif hasattr(attribute, "__get__") and hasattr(attribute, "__doc__") and \
                hasattr(attribute, "func"):  # functools.cached_property
            function = attribute.func
        else:
            continue  # class attributes, dataclass field defaults, constants
        if function is None or id(function) in seen:
            continue
        seen.add(id(function))
        member_name = f"{owner.__module__}.{owner.__qualname__}.{name}"
        doc = inspect.getdoc(getattr(cls, name)) if not isinstance(attribute, property) \
            else inspect.getdoc(attribute)
        try:
            summary = "".join(_parse(doc)["Summary"]).strip() if doc else ""
        except Exception as error:  # numpydoc raises on malformed sections
            problems.append(f"{member_name}: docstring does not parse as numpydoc ({error})")
            continue
        if not summary:
            problems.append(f"{member_name}: method/property without a docstring summary")


def collect_public_objects(problems: list[str]) -> dict[str, object]:
    """Map 'module.qualname' to every public function and class, each object once.

    Names listed in an ``__all__`` but missing from their module go to ``problems``.
    """
    objects: dict[int, tuple[str, object]] = {}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            try:
                obj = getattr(module, name)
            except AttributeError:
                problems.append(f"{module_name}.{name}: listed in __all__ but not defined")
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not _own(obj):
                continue  # constants (METHODS, __version__) carry no docstring of their own
            qualname = f"{obj.__module__}.{obj.__qualname__}"
            objects.setdefault(id(obj), (qualname, obj))
    return dict(sorted(objects.values(), key=lambda item: item[0]))


def test_discovery_covers_the_listed_modules():
    modules = public_modules()
    missing = [name for name in REQUIRED_MODULES if name not in modules]
    assert not missing, f"module discovery missed {missing}"
    assert any(name.startswith("da_embed.placements.") for name in modules)
    assert not [name for name in modules if _is_private(name)]


def test_public_modules_declare_all():
    missing = [name for name in public_modules()
               if not hasattr(importlib.import_module(name), "__all__")]
    assert not missing, "public modules without an explicit __all__: " + ", ".join(missing)


def test_public_names_have_numpydoc_docstrings():
    problems: list[str] = []
    objects = collect_public_objects(problems)
    assert len(objects) > 50  # the discovery found the packages' names
    seen_methods: set[int] = set()
    for qualname, obj in objects.items():
        _check_callable(qualname, obj, problems)
        if inspect.isclass(obj):
            _check_members(qualname, obj, problems, seen_methods)
    assert not problems, (f"{len(problems)} incomplete docstrings among {len(objects)} public "
                          "names:\n" + "\n".join(problems))


def test_checker_flags_incomplete_docstrings():
    """The checks fail on a docstring that lacks each part (so a pass means something)."""

    def undocumented(x, y=1):
        return x + y

    def summary_only(x):
        """Add one."""
        return x + 1

    def complete(x):
        """Add one.

        Parameters
        ----------
        x : int
            A number.

        Returns
        -------
        int
            ``x + 1``.

        Examples
        --------
        >>> complete(1)
        2
        """
        return x + 1

    def partial_parameters(x, y):
        """Add.

        Parameters
        ----------
        x : int
            A number.

        Returns
        -------
        int
            The sum.

        Examples
        --------
        >>> partial_parameters(1, 2)
        3
        """
        return x + y

    problems: list[str] = []
    _check_callable("undocumented", undocumented, problems)
    _check_callable("summary_only", summary_only, problems)
    _check_callable("complete", complete, problems)
    _check_callable("partial_parameters", partial_parameters, problems)
    assert problems[0] == "undocumented: no docstring"
    assert "Parameters section" in problems[1] and "Returns section" in problems[1]
    assert "Examples section" in problems[1]
    assert problems[2] == "partial_parameters: missing Parameters entries for y"
    assert len(problems) == 3


def test_checker_flags_undocumented_methods_and_fields():
    @dataclasses.dataclass
    class Example:
        """A class.

        Parameters
        ----------
        a : int
            A number.

        Examples
        --------
        >>> Example(1).a
        1
        """

        a: int
        hidden: int = dataclasses.field(init=False, default=0)

        def method(self):
            return self.a

        @property
        def twice(self):
            return 2 * self.a

        def documented(self):
            """Return ``a``."""
            return self.a

    Example.__module__ = "filters.example"  # pretend it is a project class
    problems: list[str] = []
    _check_callable("Example", Example, problems)
    assert problems == []
    _check_members("Example", Example, problems, set())
    assert sorted(problems) == [
        "Example.hidden: dataclass field not in the class docstring's Parameters or Attributes",
        "filters.example.test_checker_flags_undocumented_methods_and_fields.<locals>.Example"
        ".method: method/property without a docstring summary",
        "filters.example.test_checker_flags_undocumented_methods_and_fields.<locals>.Example"
        ".twice: method/property without a docstring summary",
    ]
