"""Stage 1 of the pipeline: a callable becomes a `Captured` value.

`capture()` pickles the function (with its metrics and checks) using cloudpickle, and
finds exactly what the pickle needs on the other side:

- the function itself BY VALUE when it lives in `__main__`, a notebook, or a local
  module (a file outside site-packages): the module that defines it is not shipped
  and never imported in the cloud, so its module-level code (training, loading a
  model file, `import deployer`, calling deploy()) does not run there;
- the OTHER local modules the pickle refers to (helpers the function calls), shipped
  as source with their package structure, because cloudpickle keeps functions of
  importable modules by reference;
- the top-level third-party modules it refers to, read from the pickle stream
  (GLOBAL / STACK_GLOBAL opcodes and cloudpickle's `subimport` calls) and from the
  IMPORT_NAME instructions of every code object that is pickled (an import inside
  a function body never reaches the pickle stream), plus every import of the
  shipped local modules.

Nothing here freezes the environment: a module is listed only when something
that is shipped refers to it.

Example:

    captured = capture(predict, metrics={"mean_score": lambda out: out.score.mean()})
    captured.modules        # ("numpy", "sklearn")
    captured.local_modules  # (LocalModule(name='features', path='features/__init__.py'),)
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import io
import os
import pickle
import pickletools
import sys
import sysconfig
import threading
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from deployer.errors import CaptureError

__all__ = ["Captured", "LocalModule", "capture"]

PICKLE_PROTOCOL = 5

# How many levels of captured helpers, attributes and containers the diagnosis of an
# unpicklable capture walks before it names the outermost object it found.
_MAX_DIAGNOSIS_DEPTH = 6

_MAIN_MODULE_NAMES = frozenset({"__main__", "__mp_main__"})
# What cloudpickle writes as the file name of code it pickles by value.
DYNAMIC_CODE_FILENAME = "<dynamic-code>"
# Scripts the CLI imported by path (`deployer deploy model.py:predict`): their
# functions pickle as `python model.py` pickles them, as __main__'s, so that the
# same code gets the same code hash whichever way it was deployed.
_SCRIPT_MODULES: set[str] = set()


def imported_as_script(module_name: str) -> None:
    """Pickle the functions of ``module_name`` as if it were run as ``__main__``."""
    _SCRIPT_MODULES.add(module_name)


# The deployed function runs without deployer installed (requirements leave it out).
_DEPLOYER_PACKAGE = __name__.partition(".")[0]


@dataclass(frozen=True)
class LocalModule:
    """A module of the user's own code, shipped as source inside the bundle."""

    name: str
    path: str
    source: bytes = field(repr=False)


@dataclass(frozen=True)
class Captured:
    """The pickled function and everything needed to load and call it elsewhere."""

    pickle: bytes = field(repr=False)
    qualname: str
    signature: str
    source: str | None = field(repr=False)
    local_modules: tuple[LocalModule, ...]
    modules: tuple[str, ...]
    takes_input: bool
    requires_input: bool
    input_kind: str
    # The keyword-only parameters a run may set: name -> "int", "float", "str",
    # "bool" or "any", with "?" when None is allowed too (manifest FunctionEntry.params).
    params: dict[str, str] = field(default_factory=dict)
    # file name -> first line -> source text of the code pickled by value, so
    # that a run's traceback shows its lines (see runtimes/core.py _show_sources).
    source_lines: dict[str, dict[int, str]] = field(default_factory=dict, repr=False)


def capture(
    function: object,
    *,
    metrics: Mapping[str, Callable[..., object]] | None = None,
    checks: Mapping[str, Callable[..., object]] | None = None,
) -> Captured:
    """Pickle `function` with its metrics and checks, and find what it needs to run.

    Raises CaptureError when something is not callable or cannot be pickled; the
    message names the captured variable and says what to do.

        captured = capture(predict, checks={"in_range": lambda out: out.score.between(0, 1).all()})
    """
    if not callable(function):
        raise CaptureError(
            f"cannot deploy {_short_repr(function)} (a {_type_name(function)}): it is not "
            "callable. Pass the function itself (predict, not predict() or 'predict'), "
            "an instance of a class with __call__, or a functools.partial"
        )
    metric_functions = _named_callables(metrics, "metric")
    check_functions = _named_callables(checks, "check")
    qualname = _qualname_of(function)

    payload = {"function": function, "metrics": metric_functions, "checks": check_functions}
    environment = _Environment.current()
    defining_modules = _defining_local_modules(
        [function, *metric_functions.values(), *check_functions.values()], environment
    )
    with _pickled_by_value(defining_modules):
        try:
            pickled, code_objects = _pickle_recording_code(payload)
        except Exception as error:
            raise _explain_pickling_failure(
                error, function, qualname, metric_functions, check_functions
            ) from error

    references = [_Reference(name) for name in _modules_in_pickle(pickled)]
    references += _imports_of_pickled_code(code_objects)
    local_modules, third_party = _resolve_references(references, environment)
    local_top_levels = {module.name.partition(".")[0] for module in local_modules}
    if _DEPLOYER_PACKAGE not in local_top_levels:
        _refuse_modules_that_import_deployer(local_modules, qualname)

    signature, takes_input, requires_input, input_kind = _input_contract(function)
    return Captured(
        pickle=pickled,
        qualname=qualname,
        signature=signature,
        source=_source_of(function),
        source_lines=_source_lines(record.code for record in code_objects),
        local_modules=tuple(sorted(local_modules, key=lambda module: module.path)),
        modules=tuple(sorted(third_party - local_top_levels)),
        takes_input=takes_input,
        requires_input=requires_input,
        input_kind=input_kind,
        params=_param_kinds(function),
    )


# --- by value ------------------------------------------------------------------------

# cloudpickle's by-value registry is process-global: one capture at a time may
# change it, or a concurrent capture would pickle a module by reference halfway.
_BY_VALUE_LOCK = threading.Lock()


def _defining_local_modules(
    callables: Iterable[object], environment: _Environment
) -> list[types.ModuleType]:
    """The local modules in which the user's callables are defined."""
    modules: dict[str, types.ModuleType] = {}
    pending = list(callables)
    while pending:
        candidate = pending.pop()
        if isinstance(candidate, functools.partial):
            pending.append(candidate.func)
            continue
        if not isinstance(candidate, types.FunctionType | types.MethodType | type):
            candidate = type(candidate)  # a callable instance: its class
        if isinstance(candidate, types.MethodType):
            pending.append(candidate.__func__)
            continue
        module_name = getattr(candidate, "__module__", None)
        module = sys.modules.get(module_name) if isinstance(module_name, str) else None
        if module is None or module_name in modules:
            continue
        if _classify(module.__name__, environment)[0] is _Kind.LOCAL:
            modules[module.__name__] = module
    return list(modules.values())


@contextmanager
def _pickled_by_value(modules: list[types.ModuleType]) -> Iterator[None]:
    import cloudpickle

    with _BY_VALUE_LOCK:
        already = set(cloudpickle.list_registry_pickle_by_value())
        added = [module for module in modules if module.__name__ not in already]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


# --- arguments -------------------------------------------------------------------------


def _named_callables(
    callables: Mapping[str, Callable[..., object]] | None, kind: str
) -> dict[str, Callable[..., object]]:
    if callables is None:
        return {}
    example = (
        "{'mean_score': lambda out: out.score.mean()}"
        if kind == "metric"
        else "{'scores_in_range': lambda out: out.score.between(0, 1).all()}"
    )
    if not isinstance(callables, Mapping):
        raise CaptureError(
            f"{kind}s must be a mapping of name to callable, like {example}; "
            f"got {_short_repr(callables)} (a {_type_name(callables)})"
        )
    checked: dict[str, Callable[..., object]] = {}
    for name, value in callables.items():
        if not isinstance(name, str):
            raise CaptureError(
                f"{kind} names must be strings, like {example}; got {name!r} (a {_type_name(name)})"
            )
        if not callable(value):
            raise CaptureError(
                f"{kind} {name!r} is {_short_repr(value)} (a {_type_name(value)}), not a "
                f"callable: each {kind} is a function of the function's output, like {example}"
            )
        checked[name] = value
    return checked


# --- pickling --------------------------------------------------------------------------


class _PicklingRecord(NamedTuple):
    code: types.CodeType
    package: str | None  # the package relative imports in `code` resolve against


@functools.cache
def _recording_pickler_class() -> type[Any]:
    # Built on first use so that importing deployer does not import cloudpickle.
    import cloudpickle

    class RecordingPickler(cloudpickle.Pickler):
        """cloudpickle's Pickler, recording every code object it pickles.

        reducer_override sees every object that is not a plain int/str/list/dict...,
        so a code object can reach the stream only through here. It also refuses
        open files: cloudpickle would silently pickle a readable text file as a
        snapshot of its contents, which is never what a deployed function wants.
        And it writes the frozenset constants of code (`x in {"a", "b"}`) in sorted
        order: their own order follows string hashes, which change per process,
        and would make the same function pickle to different bytes in every run.
        """

        def __init__(self, file: io.BytesIO, protocol: int) -> None:
            super().__init__(file, protocol=protocol)
            self.code_objects: list[types.CodeType] = []
            self.packages_by_code: dict[types.CodeType, str | None] = {}

        def reducer_override(self, obj: object) -> object:
            if isinstance(obj, types.CodeType):
                self.code_objects.append(obj)
                return self._reduce_code(obj)
            if isinstance(obj, types.FunctionType):
                package = obj.__globals__.get("__package__")
                self.packages_by_code.setdefault(obj.__code__, package or None)
            elif _is_open_file(obj):
                raise pickle.PicklingError(f"refusing to pickle an open file: {obj!r}")
            return super().reducer_override(obj)

        def _function_getnewargs(self, func: types.FunctionType) -> tuple[Any, ...]:
            arguments = super()._function_getnewargs(func)
            base_globals = arguments[1]
            if isinstance(base_globals.get("__file__"), str):
                # Where the checkout lives is not part of the code: a laptop and CI
                # must build the same bytes, or every deploy looks like a code
                # change. (cloudpickle already blanks co_filename for the same
                # reason.) This dict is the pickler's copy; the module is untouched.
                base_globals["__file__"] = os.path.basename(base_globals["__file__"])
            if base_globals.get("__name__") in _SCRIPT_MODULES:
                base_globals["__name__"] = "__main__"
                base_globals["__package__"] = None
            return tuple(arguments)

        def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
            reduction = super()._dynamic_function_reduce(func)
            if func.__module__ in _SCRIPT_MODULES:
                _state, slotstate = reduction[2]  # cloudpickle's (state, slotstate)
                slotstate["__module__"] = "__main__"
            return tuple(reduction)

        def _reduce_code(self, code: types.CodeType) -> object:
            reduction = self.dispatch_table[types.CodeType](code)
            constructor, arguments, *rest = reduction
            filename = shipped_filename(code)
            if filename is not None:
                # cloudpickle blanks the file name (it varies between machines); its
                # base name does not, and lets a run's traceback name the file.
                arguments = tuple(
                    filename
                    if isinstance(argument, str) and argument == DYNAMIC_CODE_FILENAME
                    else argument
                    for argument in arguments
                )
                reduction = (constructor, arguments, *rest)
            constants = tuple(_SortedFrozenset.wrap(constant) for constant in code.co_consts)
            if constants == code.co_consts:
                return reduction
            # The constants tuple is passed through unchanged by cloudpickle's reducer;
            # if that ever stops being true, nothing matches and the order stays as is.
            arguments = tuple(
                constants if argument is code.co_consts else argument for argument in arguments
            )
            return (constructor, arguments, *rest)

    return RecordingPickler


class _SortedFrozenset:
    """Pickles as the frozenset it wraps, with its items in a stable order."""

    def __init__(self, items: frozenset[object]) -> None:
        self.items = items

    @classmethod
    def wrap(cls, constant: object) -> object:
        return cls(constant) if isinstance(constant, frozenset) else constant

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SortedFrozenset) and other.items == self.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __reduce__(self) -> tuple[type[frozenset[object]], tuple[tuple[object, ...]]]:
        # Code constants are literals, whose repr does not depend on the process.
        ordered = sorted(self.items, key=lambda item: (type(item).__qualname__, repr(item)))
        return frozenset, (tuple(ordered),)


def _is_open_file(value: object) -> bool:
    # In-memory buffers are plain data; sys.stdout/stderr are pickled by reference.
    return (
        isinstance(value, io.IOBase)
        and not isinstance(value, io.StringIO | io.BytesIO)
        and value is not sys.stdout
        and value is not sys.stderr
    )


def _pickle_recording_code(payload: object) -> tuple[bytes, list[_PicklingRecord]]:
    pickler_class = _recording_pickler_class()
    with io.BytesIO() as buffer:
        pickler = pickler_class(buffer, protocol=PICKLE_PROTOCOL)
        pickler.dump(payload)
        pickled = buffer.getvalue()
    records = [
        _PicklingRecord(code, pickler.packages_by_code.get(code)) for code in pickler.code_objects
    ]
    return pickled, records


def shipped_filename(code: types.CodeType) -> str | None:
    """The file name a by-value function's code keeps in the bundle: the base name
    of its source file (the same on every machine), or None for code without one."""
    filename = code.co_filename
    if filename.startswith("<") or not filename.endswith(".py"):
        return None
    return os.path.basename(filename)


def _source_lines(codes: Iterable[types.CodeType]) -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    for code in codes:
        name = shipped_filename(code)
        if name is None or code.co_name.startswith("<"):  # nested code is in its parent's
            continue
        try:
            lines, first = inspect.getsourcelines(code)
        except (OSError, TypeError):
            continue  # no source on this machine: the traceback names file and line only
        found.setdefault(name, {})[max(first, 1)] = "".join(lines)
    return found


def _pickles(value: object) -> bool:
    try:
        _pickle_recording_code(value)
    except Exception:
        return False
    return True


# --- what the pickle stream refers to --------------------------------------------------


class _GlobalReference(NamedTuple):
    module: str
    name: str


_STRING_OPCODES = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "SHORT_BINSTRING",
        "BINSTRING",
        "STRING",
    }
)
_MEMO_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# Opcodes that change neither the stack nor the memo.
_SILENT_OPCODES = frozenset({"FRAME", "PROTO", "STOP"})


def _modules_in_pickle(data: bytes) -> set[str]:
    """Full names of the modules a pickle stream imports when it is loaded.

    Those are the modules of its GLOBAL/STACK_GLOBAL references and the modules
    cloudpickle pickles as `subimport(name)` (module objects used by by-value
    functions). cloudpickle's own reconstruction helpers are left out.
    """
    import cloudpickle

    public_cloudpickle_names = set(cloudpickle.__all__)
    modules: set[str] = set()
    awaiting_subimport_name = False
    for value in _pushed_values(data):
        if awaiting_subimport_name and isinstance(value, str):
            modules.add(value)
        # cloudpickle reduces an importable module to `subimport(name)`: the pickler
        # saves the reference to subimport, then its argument, the name string.
        awaiting_subimport_name = False
        if not isinstance(value, _GlobalReference):
            continue
        if value.module == "cloudpickle" or value.module.startswith("cloudpickle."):
            awaiting_subimport_name = value.name == "subimport"
            if value.name not in public_cloudpickle_names:
                continue
        modules.add(value.module)
    return modules


def _pushed_values(data: bytes) -> Iterator[object]:
    """Every value a pickle stream pushes, as far as module references need it.

    Strings and global references are tracked; any other pushed value is None.
    STACK_GLOBAL takes the two strings pushed just before it, and either may be
    a memo reference (BINGET/LONG_BINGET) to a string pickled earlier, so the
    memo is replayed too.
    """
    memo: dict[int, object] = {}
    recent: deque[object] = deque([None, None], maxlen=2)
    for opcode, argument, _position in pickletools.genops(data):
        name = opcode.name
        if name in _SILENT_OPCODES:
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = recent[-1]
            continue
        if name in _MEMO_PUT_OPCODES:
            memo[int(typing.cast(int, argument))] = recent[-1]
            continue
        value: object = None
        if name in _STRING_OPCODES:
            value = argument if isinstance(argument, str) else None
        elif name in _MEMO_GET_OPCODES:
            value = memo.get(int(typing.cast(int, argument)))
        elif name in ("GLOBAL", "INST"):
            # Protocols 0-3 (never written by capture) name the module in the argument.
            module, _, attribute = str(argument).partition(" ")
            value = _GlobalReference(module, attribute)
        elif name == "STACK_GLOBAL":
            pushed_module, pushed_attribute = recent[-2], recent[-1]
            if isinstance(pushed_module, str) and isinstance(pushed_attribute, str):
                value = _GlobalReference(pushed_module, pushed_attribute)
        recent.append(value)
        yield value


# --- what pickled code imports ---------------------------------------------------------


class _Reference(NamedTuple):
    """An absolute module name some shipped code imports, with the names it imports from it."""

    module: str
    fromlist: tuple[str, ...] = ()
    # `from package import name` imports a submodule or just an attribute; only
    # finding the file tells which, so a missing one is not an error.
    maybe_attribute: bool = False


class _Import(NamedTuple):
    name: str
    level: int
    fromlist: tuple[str, ...]


def _imports_of_pickled_code(records: Iterable[_PicklingRecord]) -> list[_Reference]:
    references: list[_Reference] = []
    for record in records:
        for imported in _imports_in_code(record.code):
            absolute = _absolute_module_name(imported, record.package)
            if absolute is not None:
                references.append(_Reference(absolute, imported.fromlist))
    return references


def _imports_in_code(code: types.CodeType) -> Iterator[_Import]:
    """IMPORT_NAME instructions of `code` and of every code object nested in it."""
    pending = [code]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        pending.extend(
            constant for constant in current.co_consts if isinstance(constant, types.CodeType)
        )
        instructions = list(dis.get_instructions(current))
        for index, instruction in enumerate(instructions):
            if instruction.opname != "IMPORT_NAME":
                continue
            level, fromlist = 0, tuple[str, ...]()
            # The compiler always loads the level, then the fromlist, right before
            # IMPORT_NAME (3.14 loads a small level with LOAD_SMALL_INT).
            if index >= 2:
                level_value = instructions[index - 2].argval
                fromlist_value = instructions[index - 1].argval
                if isinstance(level_value, int):
                    level = level_value
                if isinstance(fromlist_value, tuple):
                    fromlist = tuple(str(name) for name in fromlist_value)
            yield _Import(str(instruction.argval), level, fromlist)


def _absolute_module_name(imported: _Import, package: str | None) -> str | None:
    if imported.level == 0:
        return imported.name or None
    if not package:
        # A relative import outside a package fails when the code runs, here and there alike.
        return None
    try:
        return importlib.util.resolve_name("." * imported.level + imported.name, package)
    except (ImportError, ValueError):
        return None


# --- where a module comes from ---------------------------------------------------------


class _Kind(Enum):
    LOCAL = "local"
    THIRD_PARTY = "third-party"
    PYTHON = "comes with Python"
    NOT_FOUND = "not found"


class _Location(NamedTuple):
    origin: str | None  # the module's file; None for namespace packages and built-ins
    search_locations: tuple[str, ...] | None  # set for packages


@dataclass(frozen=True)
class _Environment:
    distributions: Mapping[str, list[str]]
    site_directories: tuple[str, ...]
    stdlib_directories: tuple[str, ...]
    interpreter_directories: tuple[str, ...]

    @classmethod
    def current(cls) -> _Environment:
        paths = sysconfig.get_paths()
        site_directories = {paths["purelib"], paths["platlib"]}
        stdlib_directories = {paths["stdlib"], paths["platstdlib"]}
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        return cls(
            distributions=importlib.metadata.packages_distributions(),
            site_directories=tuple(sorted(_real(path) for path in site_directories)),
            stdlib_directories=tuple(sorted(_real(path) for path in stdlib_directories)),
            interpreter_directories=tuple(sorted(_real(path) for path in prefixes)),
        )

    def is_site_packages(self, path: str) -> bool:
        parts = Path(path).parts
        return (
            "site-packages" in parts
            or "dist-packages" in parts
            or any(_is_within(path, directory) for directory in self.site_directories)
        )

    def is_stdlib(self, path: str) -> bool:
        return any(_is_within(path, directory) for directory in self.stdlib_directories)

    def is_interpreter(self, path: str) -> bool:
        return any(_is_within(path, directory) for directory in self.interpreter_directories)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _locate(name: str) -> _Location | None:
    """Where module `name` is (or would be) loaded from, without running any of its code."""
    module = sys.modules.get(name)
    if module is not None:
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            return _location_of_spec(spec)
        file = getattr(module, "__file__", None)
        path = getattr(module, "__path__", None)
        return _Location(
            _real(file) if isinstance(file, str) else None,
            tuple(_real(entry) for entry in path) if path is not None else None,
        )
    parent, _, _ = name.rpartition(".")
    if not parent:
        try:
            # For a top-level name this only asks the finders; nothing is imported.
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        return _location_of_spec(spec) if spec is not None else None
    # importlib.util.find_spec would import the parent package; walk its path instead.
    parent_location = _locate(parent)
    if parent_location is None or parent_location.search_locations is None:
        return None
    spec = importlib.machinery.PathFinder.find_spec(name, list(parent_location.search_locations))
    return _location_of_spec(spec) if spec is not None else None


def _location_of_spec(spec: importlib.machinery.ModuleSpec) -> _Location:
    origin = spec.origin if spec.has_location and spec.origin else None
    search_locations = spec.submodule_search_locations
    return _Location(
        _real(origin) if origin is not None else None,
        tuple(_real(entry) for entry in search_locations) if search_locations is not None else None,
    )


def _classify(name: str, environment: _Environment) -> tuple[_Kind, _Location | None]:
    top_level = name.partition(".")[0]
    if top_level in _MAIN_MODULE_NAMES:
        return _Kind.PYTHON, None
    if top_level in sys.stdlib_module_names:
        # Only a file of the user's own that shadows a standard module counts as local;
        # anything inside the interpreter's own directories is the real thing.
        top_location = _locate(top_level)
        files = _files_of(top_location)
        if not files or any(
            environment.is_site_packages(path)
            or environment.is_stdlib(path)
            or environment.is_interpreter(path)
            for path in files
        ):
            return _Kind.PYTHON, None
    location = _locate(name)
    if location is None:
        return _Kind.NOT_FOUND, None
    files = _files_of(location)
    if not files and name != top_level:
        # A module made at run time by its package (six.moves): the package decides.
        return _classify(top_level, environment)
    if not files:
        return _Kind.PYTHON, None  # built into the interpreter
    if any(environment.is_site_packages(path) for path in files):
        return _Kind.THIRD_PARTY, location
    if all(environment.is_stdlib(path) for path in files):
        return _Kind.PYTHON, None
    if top_level in environment.distributions:
        # Installed outside site-packages (an editable install, a --target directory):
        # the requirements stage decides what to do with it.
        return _Kind.THIRD_PARTY, location
    return _Kind.LOCAL, location


def _files_of(location: _Location | None) -> list[str]:
    if location is None:
        return []
    return ([location.origin] if location.origin else []) + list(location.search_locations or ())


def _resolve_references(
    references: Iterable[_Reference], environment: _Environment
) -> tuple[list[LocalModule], set[str]]:
    """Split referenced modules into local ones (shipped, followed) and third-party top-levels."""
    local_modules: dict[str, LocalModule] = {}
    third_party: set[str] = set()
    visited: set[str] = set()
    pending = list(references)
    while pending:
        reference = pending.pop()
        name = reference.module
        if name in visited:
            # `from package import submodule` may name a new submodule of a known package.
            if name in local_modules and _is_package(local_modules[name]):
                pending.extend(_submodule_candidates(name, reference.fromlist))
            continue
        visited.add(name)
        kind, location = _classify(name, environment)
        if kind is _Kind.NOT_FOUND and reference.maybe_attribute:
            continue  # `from package import attribute`: not a module at all
        if kind in (_Kind.THIRD_PARTY, _Kind.NOT_FOUND):
            # A module missing here is listed too: the requirements stage refuses it
            # with a message naming it, instead of the deployed function failing later.
            third_party.add(name.partition(".")[0])
            continue
        if kind is not _Kind.LOCAL or location is None:
            continue
        parent = name.rpartition(".")[0]
        if parent:
            # Importing a submodule runs every parent package's __init__ first.
            pending.append(_Reference(parent))
        if location.origin is None:
            continue  # a namespace package is only a directory: nothing to ship
        module = _read_local_module(name, location)
        local_modules[name] = module
        package = name if location.search_locations is not None else parent
        if location.search_locations is not None:
            pending.extend(_submodule_candidates(name, reference.fromlist))
        for imported in _imports_in_code(_compile_local_module(module, location.origin)):
            absolute = _absolute_module_name(imported, package)
            if absolute is not None:
                pending.append(_Reference(absolute, imported.fromlist))
    return list(local_modules.values()), third_party


def _submodule_candidates(package: str, fromlist: Iterable[str]) -> list[_Reference]:
    return [
        _Reference(f"{package}.{item}", maybe_attribute=True) for item in fromlist if item != "*"
    ]


def _refuse_modules_that_import_deployer(
    local_modules: Iterable[LocalModule], qualname: str
) -> None:
    # A shipped module that imports deployer when it loads would fail to load in the
    # cloud, where deployer is not installed: say so now, not in the first run's log.
    for module in sorted(local_modules, key=lambda module: module.path):
        if _imports_when_loaded(ast.parse(module.source), _DEPLOYER_PACKAGE):
            raise CaptureError(
                f"{qualname} needs local module {module.name!r} ({module.path}), which imports "
                f"{_DEPLOYER_PACKAGE} when it loads; the deployed function runs without "
                f"{_DEPLOYER_PACKAGE}, so loading it there would fail. Move that import under "
                '`if __name__ == "__main__":` or into the function that deploys, or define '
                f"{qualname} in a module that does not import {_DEPLOYER_PACKAGE}"
            )


def _imports_when_loaded(node: ast.AST, package: str) -> bool:
    """Whether running a module's top level imports `package` (or one of its submodules).

    Function bodies do not run on import, nor does an `if __name__ == "__main__":` block.
    """
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return False
    if isinstance(node, ast.Import):
        return any(alias.name.partition(".")[0] == package for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").partition(".")[0] == package
    if isinstance(node, ast.If) and _is_main_guard(node.test):
        return any(_imports_when_loaded(statement, package) for statement in node.orelse)
    if isinstance(node, ast.Try) and any(map(_catches_import_error, node.handlers)):
        # `try: import deployer / except ImportError:` loads fine without it.
        rest = [*node.handlers, *node.orelse, *node.finalbody]
        return any(_imports_when_loaded(statement, package) for statement in rest)
    return any(_imports_when_loaded(child, package) for child in ast.iter_child_nodes(node))


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        isinstance(name, ast.Name)
        and name.id in ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")
        for name in caught
    )


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _is_package(module: LocalModule) -> bool:
    return module.path.endswith("/__init__.py")


def _read_local_module(name: str, location: _Location) -> LocalModule:
    origin = location.origin or ""
    if not origin.endswith(".py"):
        raise CaptureError(
            f"local module {name!r} is {origin}, not Python source, so it cannot be shipped: "
            "install the project that provides it as a package (pip install), or keep its "
            ".py file importable"
        )
    try:
        source = Path(origin).read_bytes()
    except OSError as error:
        raise CaptureError(
            f"cannot read local module {name!r} from {origin}: {error}. The function needs "
            "it; make the file readable"
        ) from error
    is_package = location.search_locations is not None
    path = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    return LocalModule(name=name, path=path, source=source)


def _compile_local_module(module: LocalModule, origin: str) -> types.CodeType:
    try:
        return compile(module.source, origin, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        raise CaptureError(
            f"local module {module.name!r} ({origin}) does not compile: {error}. "
            "Fix it before deploying: the deployed function imports it"
        ) from error


# --- names, signature, source ----------------------------------------------------------


def _qualname_of(function: object) -> str:
    if isinstance(function, functools.partial):
        return f"partial({_qualname_of(function.func)})"
    if inspect.isroutine(function) or inspect.isclass(function):
        name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
        if isinstance(name, str):
            return name
    return type(function).__qualname__


def _source_of(function: object) -> str | None:
    target = function
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.ismethod(target):
        target = target.__func__
    candidates: list[object] = [target]
    if not (inspect.isfunction(target) or inspect.isclass(target)):
        # A callable instance: its class, or failing that its __call__. Python 3.11
        # finds a class's source through its module's file, which a notebook's
        # __main__ does not have, while a function's code names its cell.
        candidates = [type(target), inspect.getattr_static(type(target), "__call__", None)]
    for candidate in candidates:
        try:
            return inspect.getsource(typing.cast(Callable[..., object], candidate))
        except (OSError, TypeError):
            continue
    return None


def _input_contract(function: object) -> tuple[str, bool, bool, str]:
    """(signature text, takes_input, requires_input, input_kind) of a callable."""
    try:
        signature = inspect.signature(typing.cast(Callable[..., object], function))
    except (TypeError, ValueError):
        # No signature (some built-ins): pass the input when there is one, and
        # tolerate its absence, rather than refusing a callable we cannot inspect.
        return "", True, False, "dataframe"
    positional = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        )
    ]
    if not positional:
        return str(signature), False, False, "json"
    first = positional[0]
    requires_input = (
        first.kind is not inspect.Parameter.VAR_POSITIONAL
        and first.default is inspect.Parameter.empty
    )
    is_dataframe = _is_dataframe_annotation(first.annotation, _globals_of(function))
    return str(signature), True, requires_input, "dataframe" if is_dataframe else "json"


_PARAM_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


def _param_kinds(function: object) -> dict[str, str]:
    """The keyword-only parameters with a default (the others are refused at deploy),
    each with the JSON kind its annotation asks for; "any" when it names none of
    int, float, str and bool."""
    try:
        signature = inspect.signature(typing.cast(Callable[..., object], function))
    except (TypeError, ValueError):
        return {}
    namespace = _globals_of(function)
    return {
        parameter.name: _param_kind(parameter.annotation, namespace)
        for parameter in signature.parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter.default is not inspect.Parameter.empty
    }


def _param_kind(annotation: object, namespace: Mapping[str, object]) -> str:
    if isinstance(annotation, str):
        # Resolved by name only, as DataFrame annotations are: never evaluated.
        members = [part.strip() for part in annotation.strip().strip("'\"").split("|")]
        if len(members) == 1 and members[0].startswith("Optional[") and members[0].endswith("]"):
            members = [members[0][len("Optional[") : -1].strip(), "None"]
        builtin = {kind.__name__: kind for kind in _PARAM_KINDS}
        resolved: list[object] = [
            type(None)
            if member == "None"
            else builtin.get(member) or _lookup_dotted(member, namespace)
            for member in members
        ]
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        resolved = list(typing.get_args(annotation))
    else:
        resolved = [annotation]
    nullable = type(None) in resolved
    kinds = {_PARAM_KINDS.get(member) for member in resolved if member is not type(None)}  # type: ignore[call-overload]
    if len(kinds) != 1 or None in kinds:
        return "any"
    kind = kinds.pop()
    return f"{kind}?" if nullable else str(kind)


def _globals_of(function: object) -> Mapping[str, object]:
    target = function
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.ismethod(target):
        target = target.__func__
    if not inspect.isfunction(target):
        target = inspect.getattr_static(type(target), "__call__", None)
    namespace = getattr(target, "__globals__", None)
    return namespace if isinstance(namespace, Mapping) else {}


def _is_dataframe_annotation(annotation: object, namespace: Mapping[str, object]) -> bool:
    if annotation is inspect.Parameter.empty:
        return True
    if isinstance(annotation, str):
        return _is_dataframe_annotation_text(annotation, namespace)
    if isinstance(annotation, type):
        return annotation.__name__ == "DataFrame" and annotation.__module__.startswith("pandas")
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and arguments:
        # Optional[pd.DataFrame] and pd.DataFrame | None still take a DataFrame.
        members = [argument for argument in arguments if argument is not type(None)]
        return all(_is_dataframe_annotation(member, namespace) for member in members)
    return False


def _is_dataframe_annotation_text(text: str, namespace: Mapping[str, object]) -> bool:
    # String annotations (from __future__ import annotations) are resolved by plain
    # name lookup only: evaluating them could run arbitrary code.
    members = [part.strip() for part in text.strip().strip("'\"").split("|")]
    members = [member for member in members if member != "None"]
    if len(members) == 1 and members[0].startswith("Optional[") and members[0].endswith("]"):
        members = [members[0][len("Optional[") : -1].strip()]
    if not members:
        return False
    for member in members:
        resolved = _lookup_dotted(member, namespace)
        if isinstance(resolved, type):
            if not _is_dataframe_annotation(resolved, namespace):
                return False
        elif member not in ("DataFrame", "pd.DataFrame", "pandas.DataFrame"):
            return False
    return True


def _lookup_dotted(dotted: str, namespace: Mapping[str, object]) -> object | None:
    head, *attributes = dotted.split(".")
    if not head.isidentifier() or head not in namespace:
        return None
    value = namespace[head]
    for attribute in attributes:
        if not attribute.isidentifier():
            return None
        value = getattr(value, attribute, None)
        if value is None:
            return None
    return value


# --- explaining a pickling failure -----------------------------------------------------


class _Culprit(NamedTuple):
    path: str  # how the user names it: 'db', 'self.connection', "CONFIG['lock']"
    value: object
    owner: str  # what captured it: 'predict()', "metric 'mean_score'"


def _explain_pickling_failure(
    error: Exception,
    function: object,
    qualname: str,
    metrics: Mapping[str, Callable[..., object]],
    checks: Mapping[str, Callable[..., object]],
) -> CaptureError:
    roots: list[tuple[object, str, str]] = [
        (function, _root_path(function), _owner_description(function, qualname))
    ]
    roots += [(value, _root_path(value), f"metric {name!r}") for name, value in metrics.items()]
    roots += [(value, _root_path(value), f"check {name!r}") for name, value in checks.items()]
    seen: set[int] = set()
    for root, path, owner in roots:
        if _pickles(root):
            continue
        culprit = _find_culprit(root, path, owner, seen, depth=0)
        if culprit is not None:
            return CaptureError(
                f"cannot pickle {culprit.path!r} (a {_type_name(culprit.value)}) captured by "
                f"{culprit.owner}: {_advice(culprit.value)}"
            )
        return CaptureError(
            f"cannot pickle {owner} (a {_type_name(root)}): {type(error).__name__}: {error}. "
            "A deployed function can capture plain data (numbers, strings, arrays, "
            "DataFrames, fitted models); create connections, files and locks inside it"
        )
    return CaptureError(
        f"cannot pickle {_owner_description(function, qualname)} with its metrics and checks: "
        f"{type(error).__name__}: {error}. A deployed function can capture plain data "
        "(numbers, strings, arrays, DataFrames, fitted models); create connections, files "
        "and locks inside it"
    )


def _find_culprit(
    value: object, path: str, owner: str, seen: set[int], depth: int
) -> _Culprit | None:
    """The innermost object captured by `value` that does not pickle on its own."""
    for child_path, child, child_owner in _captured_by(value, path, owner):
        if id(child) in seen:
            continue
        seen.add(id(child))
        if _pickles(child):
            continue
        if depth < _MAX_DIAGNOSIS_DEPTH:
            deeper = _find_culprit(child, child_path, child_owner, seen, depth + 1)
            if deeper is not None:
                return deeper
        return _Culprit(child_path, child, owner)
    return None


def _captured_by(value: object, path: str, owner: str) -> Iterator[tuple[str, object, str]]:
    """(path, object, owner-if-we-look-inside-it) for each object `value` holds on to.

    The third item is the owner to report for objects found *inside* that object:
    a helper function becomes the owner of its own captures.
    """
    if isinstance(value, types.FunctionType):
        for name, variable in _variables_of_function(value):
            yield name, variable, _nested_owner(variable, owner)
    elif isinstance(value, functools.partial):
        parameter_names = _positional_parameter_names(value.func)
        for index, argument in enumerate(value.args):
            name = parameter_names[index] if index < len(parameter_names) else f"argument {index}"
            yield name, argument, _nested_owner(argument, owner)
        for name, argument in value.keywords.items():
            yield name, argument, _nested_owner(argument, owner)
        yield _qualname_of(value.func), value.func, f"{_qualname_of(value.func)}()"
    elif isinstance(value, types.MethodType):
        yield "self", value.__self__, _nested_owner(value.__self__, owner)
        yield _qualname_of(value.__func__), value.__func__, owner
    elif isinstance(value, types.BuiltinMethodType) and not isinstance(
        value.__self__, types.ModuleType
    ):
        # A C method such as lock.acquire pickles as its object plus a name.
        yield "self", value.__self__, owner
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}[{key!r}]", item, _nested_owner(item, owner)
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item, _nested_owner(item, owner)
    elif not isinstance(value, type | types.ModuleType):
        for name, attribute in _attributes_of(value):
            yield f"{path}.{name}", attribute, _nested_owner(attribute, owner)
        klass = type(value)
        if _is_defined_interactively(klass):
            # cloudpickle pickles such a class by value: its methods and class
            # attributes travel too, and may capture something unpicklable.
            for name, member in vars(klass).items():
                member_path = f"{klass.__qualname__}.{name}"
                if isinstance(member, types.FunctionType):
                    yield member_path, member, f"{member_path}()"
                elif not (name.startswith("__") and name.endswith("__")):
                    yield member_path, member, owner


def _is_defined_interactively(klass: type) -> bool:
    module = klass.__module__
    return (
        module in _MAIN_MODULE_NAMES
        or module not in sys.modules
        or "<locals>" in (klass.__qualname__)
    )


def _nested_owner(value: object, owner: str) -> str:
    if isinstance(value, types.FunctionType | functools.partial | types.MethodType):
        return f"{_qualname_of(value)}(), which {owner} uses"
    return owner


def _variables_of_function(function: types.FunctionType) -> Iterator[tuple[str, object]]:
    # inspect.getclosurevars misses names used only in nested code (comprehensions
    # are nested code objects before 3.12) and fails on empty cells.
    code = function.__code__
    for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            yield name, cell.cell_contents
        except ValueError:
            continue  # the variable was never assigned
    namespace = function.__globals__
    for name in _global_names(code):
        if name in namespace:
            yield name, namespace[name]
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return
    for parameter in parameters:
        if parameter.default is not inspect.Parameter.empty:
            yield parameter.name, parameter.default


def _global_names(code: types.CodeType) -> list[str]:
    names: dict[str, None] = {}
    pending = [code]
    while pending:
        current = pending.pop()
        names.update(dict.fromkeys(current.co_names))
        pending.extend(
            constant for constant in current.co_consts if isinstance(constant, types.CodeType)
        )
    return list(names)


def _positional_parameter_names(function: object) -> list[str]:
    try:
        parameters = inspect.signature(typing.cast(Callable[..., object], function)).parameters
    except (TypeError, ValueError):
        return []
    return [
        parameter.name
        for parameter in parameters.values()
        if parameter.kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def _attributes_of(value: object) -> list[tuple[str, object]]:
    attributes: list[tuple[str, object]] = []
    instance_dict = getattr(value, "__dict__", None)
    if isinstance(instance_dict, dict):
        attributes.extend((str(name), item) for name, item in instance_dict.items())
    for klass in type(value).__mro__:
        slots = vars(klass).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                attributes.append((slot, getattr(value, slot)))
    return attributes


def _root_path(value: object) -> str:
    if isinstance(value, types.FunctionType | functools.partial | types.MethodType | type):
        return ""
    return "self"


def _owner_description(function: object, qualname: str) -> str:
    if isinstance(function, functools.partial):
        return qualname
    if isinstance(function, type):
        return f"class {qualname}"
    if inspect.isroutine(function):
        return f"{qualname}()"
    return f"the {qualname} instance"


def _advice(value: object) -> str:
    module = type(value).__module__
    if isinstance(value, io.IOBase):
        return "open it inside the function instead"
    if isinstance(value, types.GeneratorType | types.AsyncGeneratorType | types.CoroutineType):
        return "turn it into a list before deploying (list(...)), or create it inside the function"
    if module in ("_thread", "threading", "multiprocessing.synchronize"):
        return "create it inside the function instead: a lock cannot be shared across machines"
    if module == "socket" or "connect" in type(value).__qualname__.lower():
        return "open the connection inside the function instead"
    return (
        "create it inside the function instead, or capture only plain data "
        "(numbers, strings, arrays, DataFrames, fitted models)"
    )


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
