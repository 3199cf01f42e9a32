"""Dependency trees for a function platform: its wheels, stripped, precompiled, import-checked.

The packaging stage shared by every provider that ships vendored wheels (AWS
Lambda's layers, Azure's ``.python_packages``); how the tree is archived and
which limits it must fit stay with the provider:

    Platform(...)              the CPython, glibc and machine the tree must load on
    install_dependencies(...)  pip install for that platform, strip, verify, precompile,
                               cached per deps_hash
    scratch_dependencies(...)  the same tree in a scratch folder (a memory filesystem
                               when there is room), removed once the caller archived it
    Dependencies               the finished tree (``root/python/...``) and its size

Wheels are chosen for the platform, never this machine's: the machine
building the deploy may be a Mac, or a Linux with a newer glibc than the
platform's, and a wheel that loads here can fail to load there.
"""

from __future__ import annotations

import ast
import json
import os
import platform as host  # the machine building the deploy, not the target
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.parser import HeaderParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.cache import locked
from deployer.errors import ProviderError, RequirementsError
from deployer.requirements import canonical

if TYPE_CHECKING:
    from deployer.console import Reporter

# manylinux tags older than 2_17 (manylinux1 = 2_5, manylinux2010 = 2_12) were
# only ever defined for x86; aarch64 wheels start at 2_17 (manylinux2014).
OLDEST_GLIBC_MINOR = {"x86_64": 5, "aarch64": 17}
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}

METADATA_FILE = "deployer-dependencies.json"
# A memory filesystem builds a tree that is only archived (scratch_dependencies)
# when it has this much room: an install needs the tree and pip's unpacked
# wheels at once, about three times what is shipped.
MEMORY_FILESYSTEM = Path("/dev/shm")
WORKSPACE_FREE_BYTES = 3 * 2**30
NO_SPACE = "No space left on device"  # strerror(ENOSPC), in pip's output and OSError alike
METADATA_FORMAT = 1
TEST_DIRECTORY_NAMES = frozenset({"tests", "test"})
# Sources, headers and static libraries: needed to compile against a package,
# never to import it.
BUILD_ONLY_SUFFIXES = frozenset(
    {".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx", ".a"}
)
# Type stubs are read by type checkers only, never by the interpreter.
STUB_SUFFIX = ".pyi"
# A cheap filter before parsing a file for imports: only a line that imports
# something named test/tests can make a test directory needed.
TEST_IMPORT_HINT = re.compile(rb"^[ \t]*(?:from|import)[ \t][^\n]*\btests?\b", re.MULTILINE)
NO_WHEEL = re.compile(
    r"Could not find a version that satisfies the requirement (?P<requirement>\S+)"
    r"(?: \(from (?P<parent>[^()]*)\))? \(from versions: (?P<versions>[^()]*)\)"
)
PIP_OUTPUT_LINES = 25
VERIFY_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class Platform:
    """The Linux a dependency tree must load on: its CPython, glibc and machine."""

    python: str  # "3.11"
    glibc: tuple[int, int]  # decides which manylinux wheels load
    machine: str  # as wheel tags and ``uname -m`` name it: "x86_64" | "aarch64"
    # Where the tree is on sys.path when the function runs ("/opt/python" for a
    # Lambda layer). Written into .pyc files as their source path so two builds
    # in different temporary directories give identical bytes; the import
    # system replaces it with the real path when it loads the .pyc.
    site_dir: str
    # How messages name it, in the provider's words ("python3.11 on x86_64
    # (Amazon Linux 2, glibc 2.26)"); the cache records it too.
    name: str = ""

    def __str__(self) -> str:
        major, minor = self.glibc
        return self.name or f"Python {self.python} on {self.machine} (glibc {major}.{minor})"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def platform_tags(self) -> tuple[str, ...]:
        """pip --platform values, newest first.

        pip takes --platform literally: given manylinux_2_26 it does not also
        accept manylinux_2_17 wheels (as an installer running on such a system
        would), so every tag the glibc accepts is listed, with the legacy alias
        next to its PEP 600 twin.
        """
        major, newest = self.glibc
        tags = []
        for minor in range(newest, OLDEST_GLIBC_MINOR[self.machine] - 1, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.machine}")
            if minor in LEGACY_MANYLINUX:
                tags.append(f"{LEGACY_MANYLINUX[minor]}_{self.machine}")
        return tuple(tags)


@dataclass(frozen=True)
class Dependencies:
    """A finished dependency tree for one platform, cached under its deps_hash."""

    deps_hash: str
    root: Path  # the tree: root/python/...
    unzipped_bytes: int  # of root/python, what a platform's size limits count
    file_count: int
    installed: tuple[str, ...]  # "name==version", transitive ones included, sorted

    @property
    def python_dir(self) -> Path:
        return self.root / "python"

    def files(self) -> list[tuple[str, Path]]:
        """Every file of the tree as (posix path relative to ``python/``, path), sorted."""
        return _files(self.python_dir)

    def __repr__(self) -> str:
        return (
            f"Dependencies(deps_hash={self.deps_hash[:12]!r}, root={str(self.root)!r}, "
            f"unzipped_bytes={self.unzipped_bytes}, file_count={self.file_count}, "
            f"installed={len(self.installed)} packages)"
        )


def requirement_list(requirement_lines: Sequence[str]) -> list[str]:
    """The requirements as a cache records them and pip is given them: stripped, no blanks."""
    return [line.strip() for line in requirement_lines if line.strip()]


def install_dependencies(
    requirement_lines: Sequence[str],
    platform: Platform,
    *,
    deps_hash: str,
    cache_dir: Path,
    reporter: Reporter,
    alternatives: Sequence[Platform] = (),
) -> Dependencies:
    """Install ``requirement_lines`` for ``platform`` into ``cache_dir/<deps_hash>``.

    ``cache_dir`` is the provider's own directory in the machine's cache: a
    deps_hash names the requirements and the Python and platform of the
    machine that made the bundle, not the platform the tree is for.
    ``alternatives`` are the provider's other platforms, nearest first: when a
    requirement has no wheel for ``platform``, the error names the first of
    them that has one.

    Returns at once when that tree exists. Otherwise it is built in a temporary
    sibling and renamed into place under a lock, so concurrent deploys install
    once and a failed install leaves nothing that looks ready.
    """
    root = cache_dir / deps_hash
    lines = requirement_list(requirement_lines)
    ready = _read_ready(root, deps_hash, lines, platform)
    if ready is not None:
        return ready
    _check_interpreter(platform)
    with locked(root.with_name(f"{deps_hash}.lock")):
        ready = _read_ready(root, deps_hash, lines, platform)
        if ready is not None:
            return ready
        # Only a build holding this lock writes here, so anything found now is
        # from a process that died mid-build, or a tree without its metadata
        # (never ready): neither may block the rename below.
        for abandoned in [*root.parent.glob(f".{deps_hash}.*"), root]:
            shutil.rmtree(abandoned, ignore_errors=True)
        building = root.with_name(f".{deps_hash}.{uuid.uuid4().hex}")
        try:
            dependencies = _build(lines, platform, deps_hash, building, reporter, alternatives)
            os.replace(building, root)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return replace(dependencies, root=root)


@contextmanager
def scratch_dependencies(
    requirement_lines: Sequence[str],
    platform: Platform,
    *,
    deps_hash: str,
    reporter: Reporter,
    alternatives: Sequence[Platform] = (),
) -> Iterator[Dependencies]:
    """The tree of ``requirement_lines`` for ``platform``, built in a scratch folder
    (``workspace()``) and removed on exit, for a caller that keeps an archive of it
    rather than the tree.

    A tree is thousands of files: on some disks creating them costs more than
    pip's whole install, and a provider that ships one archive needs them only
    until it is written.
    """
    lines = requirement_list(requirement_lines)
    _check_interpreter(platform)
    place = workspace()
    building = Path(tempfile.mkdtemp(prefix=f"deployer-deps-{deps_hash[:12]}-", dir=place))
    try:
        try:
            dependencies = _build(lines, platform, deps_hash, building, reporter, alternatives)
        except (ProviderError, OSError) as error:
            # A tree larger than the memory filesystem's room: build it on disk.
            if place != MEMORY_FILESYSTEM or NO_SPACE not in str(error):
                raise
            shutil.rmtree(building, ignore_errors=True)
            reporter.say(f"[yellow]note[/] {MEMORY_FILESYSTEM} filled up: building on disk")
            building = Path(tempfile.mkdtemp(prefix=f"deployer-deps-{deps_hash[:12]}-"))
            dependencies = _build(lines, platform, deps_hash, building, reporter, alternatives)
        yield dependencies
    finally:
        shutil.rmtree(building, ignore_errors=True)


def workspace() -> Path:
    """Where scratch trees are built: the memory filesystem when it is there and has
    room (``WORKSPACE_FREE_BYTES``), else the temporary directory."""
    try:
        if (
            os.access(MEMORY_FILESYSTEM, os.W_OK | os.X_OK)
            and shutil.disk_usage(MEMORY_FILESYSTEM).free >= WORKSPACE_FREE_BYTES
        ):
            return MEMORY_FILESYSTEM
    except OSError:
        pass
    return Path(tempfile.gettempdir())


# -- the cache -----------------------------------------------------------------


def read_metadata(
    path: Path, deps_hash: str, lines: list[str], platform: Platform
) -> dict[str, Any] | None:
    """What was recorded at ``path`` about the tree built for ``deps_hash``, or None.

    A record of other requirements or another platform under the same deps_hash
    is refused: the hash must have been computed wrongly, and the cache would
    ship the wrong packages.
    """
    try:
        metadata: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    # Recorded as "target", the key since the first cache format: renaming it
    # would turn every existing tree into a clash.
    if metadata.get("target") != str(platform) or metadata.get("requirements") != lines:
        raise ProviderError(
            f"the dependency cache {path} holds {metadata.get('requirements')} for "
            f"{metadata.get('target')}, not {lines} for {platform}, under the same deps_hash "
            f"{deps_hash[:12]}: the deps_hash must cover the requirements and the target. "
            f"Remove {path.parent if path.name == METADATA_FILE else path} and deploy again"
        )
    return metadata


def _read_ready(
    root: Path, deps_hash: str, lines: list[str], platform: Platform
) -> Dependencies | None:
    metadata = read_metadata(root / METADATA_FILE, deps_hash, lines, platform)
    if metadata is None:
        return None
    return Dependencies(
        deps_hash=deps_hash,
        root=root,
        unzipped_bytes=int(metadata["unzipped_bytes"]),
        file_count=int(metadata["file_count"]),
        installed=tuple(metadata["installed"]),
    )


def _check_interpreter(platform: Platform) -> None:
    # Bytecode is specific to a Python minor version, and pip evaluates
    # requirement markers (python_version < "3.12") with the interpreter it runs
    # in, so both need this interpreter to be the platform's Python. deployer's
    # policy (the runtime follows the local Python) makes that the normal case.
    # pip has no way to evaluate sys_platform / platform_machine markers for
    # the platform either: from a Mac, a dependency conditional on Linux can be
    # missed. Linux builds on the platform's machine (CI) see exactly what it would.
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    if local != platform.python:
        raise ProviderError(
            f"dependencies for {platform} are installed and precompiled with the Python that "
            f"runs them, but this is Python {local} ({sys.executable}): deploy from a "
            f"Python {platform.python} environment"
        )


# -- building ------------------------------------------------------------------


def _build(
    lines: list[str],
    platform: Platform,
    deps_hash: str,
    building: Path,
    reporter: Reporter,
    alternatives: Sequence[Platform],
) -> Dependencies:
    python_dir = building / "python"
    python_dir.mkdir(parents=True)
    requirements_file = building / "requirements.txt"
    requirements_file.write_text("".join(f"{line}\n" for line in lines))
    with reporter.status(
        f"installing {len(lines)} requirements for {platform} "
        f"(once per set of dependencies, cached as {deps_hash[:12]})"
    ):
        _pip_install(requirements_file, python_dir, platform, alternatives)
    requirements_file.unlink()
    _check_wheel_tags(python_dir, platform)
    installed_bytes = _tree_bytes(python_dir)
    with reporter.status("removing tests, headers, sources and symbol tables"):
        removed = _strip(python_dir, platform, reporter)
    stripped_bytes = _tree_bytes(python_dir)
    with reporter.status(f"precompiling for python{platform.python}"):
        _precompile(python_dir, platform, reporter)
    if _can_run(platform, reporter):
        with reporter.status("checking every installed package imports"):
            _verify_imports(python_dir, reporter)
    files = _files(python_dir)
    shipped_bytes = sum(file.stat().st_size for _, file in files)
    reporter.say(
        f"dependencies for {platform}: {_megabytes(installed_bytes)} installed, "
        f"{_megabytes(stripped_bytes)} stripped ({_describe_removed(removed)}), "
        f"{_megabytes(shipped_bytes)} with bytecode"
    )
    installed = _installed_distributions(python_dir)
    metadata: dict[str, Any] = {
        "format": METADATA_FORMAT,
        "deps_hash": deps_hash,
        "target": str(platform),
        "requirements": lines,
        "installed": list(installed),
        "unzipped_bytes": shipped_bytes,
        "file_count": len(files),
        "sizes": {
            "installed": installed_bytes,
            "stripped": stripped_bytes,
            "shipped": shipped_bytes,
            "removed": removed,
        },
    }
    (building / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return Dependencies(
        deps_hash=deps_hash,
        root=building,
        unzipped_bytes=shipped_bytes,
        file_count=len(files),
        installed=installed,
    )


def _pip_environment(temporary: Path | None = None) -> dict[str, str]:
    # The user's pip configuration (index URLs, certificates) is kept; only
    # settings that contradict an install into --target are overridden.
    # ``temporary``: pip's own scratch space. pip --target installs there and
    # then moves the result, which is a rename only on the same filesystem.
    return {
        **os.environ,
        **({"TMPDIR": str(temporary)} if temporary else {}),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
        "PIP_REQUIRE_VIRTUALENV": "0",
        "PIP_USER": "0",
    }


def _platform_options(platform: Platform) -> list[str]:
    # uv would be faster, but its --python-platform offers manylinux 2_17 and
    # 2_28 and nothing between: for Amazon Linux 2 (glibc 2.26) it would either
    # miss valid 2_24 wheels (pandas 3) or pick 2_28 ones that do not load.
    options = [
        # A function platform cannot build sdists; this machine's build would not fit it.
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        platform.python,
        "--abi",
        platform.abi,
    ]
    for tag in platform.platform_tags:
        options += ["--platform", tag]
    return options


def _pip_install(
    requirements_file: Path, python_dir: Path, platform: Platform, alternatives: Sequence[Platform]
) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(python_dir),
        *_platform_options(platform),
        "--no-compile",  # precompiled later, hash-based and deterministic
        # pip would compare the result with the packages of *this* environment,
        # which have nothing to do with the platform's tree.
        "--no-warn-conflicts",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
        "-r",
        str(requirements_file),
    ]
    temporary = python_dir.with_name("pip-temporary")
    temporary.mkdir()
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=_pip_environment(temporary)
        )
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    if "No module named pip" in completed.stderr:
        raise ProviderError(
            f"pip is needed to install wheels for {platform} but {sys.executable} has none "
            f"(uv has no target for most glibc versions, 2.26 among them): run "
            f"`{sys.executable} -m ensurepip` or `uv pip install pip` in this environment"
        )
    if completed.returncode != 0:
        raise _install_error(completed.stdout + completed.stderr, platform, alternatives)


def download_wheel(requirement: str, platform: Platform, directory: Path) -> Path:
    """The wheel of one pinned ``requirement`` for ``platform``, without its dependencies,
    in ``directory`` (fetched once: a wheel already there is used)."""
    existing = sorted(directory.glob("*.whl"))
    if existing:
        return existing[0]
    fetching = directory.with_name(f".{directory.name}.{uuid.uuid4().hex}")
    try:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--dest",
                str(fetching),
                *_platform_options(platform),
                "--progress-bar",
                "off",
                requirement,
            ],
            capture_output=True,
            text=True,
            env=_pip_environment(),
        )
        if completed.returncode != 0:
            raise _install_error(completed.stdout + completed.stderr, platform, ())
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(fetching, directory)
        except OSError:  # another deploy fetched it meanwhile
            if not any(directory.glob("*.whl")):
                raise
    finally:
        shutil.rmtree(fetching, ignore_errors=True)
    return sorted(directory.glob("*.whl"))[0]


def _install_error(output: str, platform: Platform, alternatives: Sequence[Platform]) -> Exception:
    """pip's failure as an error saying what is wrong and what would work."""
    missing = NO_WHEEL.search(output)
    if missing is not None:
        return _no_wheel_error(
            missing["requirement"], missing["parent"], missing["versions"], platform, alternatives
        )
    detail = "\n".join(output.strip().splitlines()[-PIP_OUTPUT_LINES:])
    if "ResolutionImpossible" in output or "conflicting dependencies" in output:
        return RequirementsError(
            f"the requirements conflict with each other for {platform}:\n{detail}\n"
            "loosen or change one of the pins pip names above"
        )
    if "Invalid requirement" in output:
        return RequirementsError(f"pip cannot read a requirement:\n{detail}")
    return ProviderError(
        f"installing the dependencies for {platform} failed:\n{detail}\n"
        "if this is a network error, check that the package index is reachable "
        "(pip's index-url and proxy settings apply)"
    )


def _no_wheel_error(
    requirement: str,
    parent: str | None,
    versions_text: str,
    platform: Platform,
    alternatives: Sequence[Platform],
) -> RequirementsError:
    """What pip's "from versions: ..." (the versions that DO have a wheel here) allows."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    name, pinned = requirement, None
    try:
        parsed = Requirement(requirement)
        name = canonical(parsed.name)
        pins = [spec.version for spec in parsed.specifier if spec.operator in ("==", "===")]
        pinned = Version(pins[0]) if len(pins) == 1 else None
    except (InvalidRequirement, InvalidVersion):
        pass
    versions = []
    for text in versions_text.split(","):
        try:
            versions.append(Version(text.strip()))
        except InvalidVersion:
            continue  # "none", or a legacy version string
    stable = [version for version in versions if not version.is_prerelease] or versions
    needed_by = f" (needed by {parent})" if parent else ""
    remedies = []
    if stable:
        newest = max(stable)
        problem = (
            f"{requirement}{needed_by} has no wheel for {platform}; the newest {name} that has "
            f"one is {newest}"
        )
        # A pickled model is safest with the version closest to the one it was made with.
        above = [version for version in stable if pinned is not None and version > pinned]
        choice = f"{name}=={newest}"
        if above and min(above) != newest:
            choice = f"{name}=={min(above)} (the nearest) or {choice} (the newest)"
        remedies.append(
            f"use {choice}: install it here (the function is pinned to what is installed "
            f"locally) or pass requirements=['{name}==<version>']"
        )
    else:
        problem = (
            f"no version of {name} has a wheel for {platform} on the configured package "
            f"indexes{needed_by}: it publishes only source, or no Linux wheels for this Python, "
            "and deployer does not build source for a cloud function"
        )
        remedies.append(f"drop {name}, or use a package that publishes manylinux wheels")
    other = _first_with_wheel(requirement, alternatives)
    if other is not None:
        remedies.append(f"deploy from Python {other.python}: {other} has a wheel for {requirement}")
    return RequirementsError(f"{problem}. What would work: " + "; or ".join(remedies))


def _first_with_wheel(requirement: str, alternatives: Sequence[Platform]) -> Platform | None:
    """The first of ``alternatives`` that has a wheel for ``requirement``."""
    for other in alternatives:
        with tempfile.TemporaryDirectory(prefix="deployer-probe-") as scratch:
            # --dry-run resolves against the index and installs nothing.
            completed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--dry-run",
                    "--no-deps",
                    "--ignore-installed",
                    "--quiet",
                    "--target",
                    scratch,
                    *_platform_options(other),
                    requirement,
                ],
                capture_output=True,
                text=True,
                env=_pip_environment(),
            )
        if completed.returncode == 0:
            return other
    return None


def _check_wheel_tags(python_dir: Path, platform: Platform) -> None:
    # pip guarantees this given --platform; checked anyway because a wheel for
    # the wrong platform installs fine and only fails once deployed.
    accepted = {*platform.platform_tags, "any"}
    for wheel_file in sorted(python_dir.glob("*.dist-info/WHEEL")):
        tags = HeaderParser().parsestr(wheel_file.read_text()).get_all("Tag") or []
        platforms = {tag.rsplit("-", 1)[-1] for tag in tags}
        if tags and not any(
            part in accepted for platform_tag in platforms for part in platform_tag.split(".")
        ):
            raise ProviderError(
                f"{wheel_file.parent.name} was installed with tags {tags}, which {platform} "
                "cannot load: check your pip configuration for find-links or indexes serving "
                "wheels for other platforms"
            )


def _installed_distributions(python_dir: Path) -> tuple[str, ...]:
    installed = []
    for metadata_file in python_dir.glob("*.dist-info/METADATA"):
        headers = HeaderParser().parsestr(metadata_file.read_text(errors="replace"))
        installed.append(f"{canonical(headers['Name'])}=={headers['Version']}")
    return tuple(sorted(installed))


# -- the strip pass ------------------------------------------------------------


def _strip(python_dir: Path, platform: Platform, reporter: Reporter) -> dict[str, int]:
    """Remove what no import needs; returns bytes removed per kind of file."""
    removed = {"tests": 0, "build files": 0, "stale bytecode": 0, "stubs": 0, "scripts": 0}

    def remove(path: Path, kind: str) -> None:
        if path.is_dir():
            removed[kind] += _tree_bytes(path)
            shutil.rmtree(path)
        elif path.exists():
            removed[kind] += path.stat().st_size
            path.unlink()

    # Console scripts: their #! line names this machine's interpreter.
    remove(python_dir / "bin", "scripts")
    for directory, names, files in _walk(python_dir):
        if directory.name == "__pycache__":
            # Bytecode from the wheel, built by whatever Python made it, with
            # timestamps; it is replaced by our own.
            remove(directory, "stale bytecode")
            names.clear()
            continue
        is_include = directory.name == "include" and directory.parent != python_dir
        if is_include and not _has_python(directory):
            remove(directory, "build files")  # C headers, for building against the package
            names.clear()
            continue
        for name in files:
            path = directory / name
            suffix = path.suffix
            if suffix in BUILD_ONLY_SUFFIXES:
                remove(path, "build files")
            elif suffix == STUB_SUFFIX:
                remove(path, "stubs")
            elif suffix == ".pyc" and path.with_suffix(".py").exists():
                # A .pyc without its .py is the module itself (sourceless
                # distributions): only ones with a source are stale.
                remove(path, "stale bytecode")
            elif name == "conftest.py":
                remove(path, "tests")  # pytest configuration; no function runs pytest
    removed["tests"] += _remove_unused_tests(python_dir)
    removed["symbol tables"] = _strip_symbols(python_dir, platform, reporter)
    return removed


def _has_python(directory: Path) -> bool:
    return any(name.endswith(".py") for _, _, files in os.walk(directory) for name in files)


def _walk(top: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk in sorted order; callers may prune ``names`` in place."""
    for directory, names, files in os.walk(top):
        names.sort()
        yield Path(directory), names, sorted(files)


def _remove_unused_tests(python_dir: Path) -> int:
    """Remove test directories, except the modules that other code imports.

    Removing every tests/ folder breaks ``import sklearn``: numpy.testing
    (which scikit-learn imports) does ``from numpy._core.tests._natype import
    pd_NA``. Rather than an allowlist that goes stale with the next numpy, a
    module inside a test directory survives when code outside test directories
    imports it (or a surviving test module does, or it is a package on the
    way); everything else in test directories goes.
    """
    test_directories: list[Path] = []
    importers: list[Path] = []
    for directory, names, files in _walk(python_dir):
        if directory != python_dir and directory.name in TEST_DIRECTORY_NAMES:
            test_directories.append(directory)
            names.clear()
            continue
        importers += [
            directory / name for name in files if name.endswith(".py") and name != "conftest.py"
        ]
    if not test_directories:
        return 0
    needed: set[Path] = set()
    test_parts = {directory.relative_to(python_dir).parts for directory in test_directories}
    queue = [path for path in importers if TEST_IMPORT_HINT.search(path.read_bytes())]
    while queue:
        for module in _imported_modules(queue.pop(), python_dir):
            for path in _test_files_of(module, python_dir, test_parts):
                if path not in needed:
                    needed.add(path)
                    if path.suffix == ".py":
                        queue.append(path)
    removed = 0
    for test_directory in test_directories:
        for directory, _, files in _walk(test_directory):
            for name in files:
                path = directory / name
                if path not in needed:
                    removed += path.stat().st_size
                    path.unlink()
        for directory_name, _, _ in sorted(os.walk(test_directory), reverse=True):
            if not os.listdir(directory_name):
                os.rmdir(directory_name)
    return removed


def _imported_modules(path: Path, python_dir: Path) -> set[str]:
    """Absolute names of what ``path`` imports, with ``from x import y`` as both x and x.y."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in old code are not our concern
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()  # cannot be imported either, so it needs nothing
    # For pkg/mod.py and for pkg/__init__.py alike, the package is "pkg".
    package = path.relative_to(python_dir).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - node.level + 1]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return names


def _test_files_of(
    module: str, python_dir: Path, test_directories: set[tuple[str, ...]]
) -> Iterator[Path]:
    """Files inside test directories (given as parts relative to ``python_dir``)
    that importing ``module`` executes."""
    parts = tuple(module.split("."))
    for length in range(1, len(parts) + 1):
        # Inside a test directory when one of its leading parts is one (tuple
        # lookups: Path.is_relative_to here cost a second for scikit-learn's tree).
        if not any(parts[:depth] in test_directories for depth in range(1, length + 1)):
            continue
        location = python_dir.joinpath(*parts[:length])
        candidates = [location / "__init__.py", location.with_name(location.name + ".py")]
        if location.parent.is_dir():
            candidates += location.parent.glob(f"{location.name}.*.so")
        yield from (candidate for candidate in candidates if candidate.is_file())


def _strip_symbols(python_dir: Path, platform: Platform, reporter: Reporter) -> int:
    """``strip --strip-unneeded`` on shared libraries; returns bytes saved.

    Not ``--strip-debug``: these wheels are built without debug sections
    (it saves 1 MB of pandas + pyarrow + scikit-learn), their weight is in
    the static symbol tables (.symtab/.strtab, 40 MB of that set, 13 MB of
    libarrow alone). The dynamic loader and Python only read .dynsym, which
    ``--strip-unneeded`` keeps; distributions strip shared libraries the same way.

    Never inside ``*.libs/``: auditwheel vendored those libraries and rewrote
    them with patchelf, and binutils' strip turns patchelf's layout into one
    the loader refuses (numpy's OpenBLAS after either strip mode: "ELF load
    command address/offset not page-aligned", so ``import numpy`` fails).
    """
    strip = shutil.which("strip")
    if strip is None:
        reporter.say(
            "[yellow]note[/] `strip` (binutils) is not installed: shared libraries keep their "
            "symbol tables, about 10% more size; install binutils to remove them"
        )
        return 0
    if _machine() != platform.machine:
        reporter.say(
            f"[yellow]note[/] this machine is {_machine()} and the target {platform.machine}: "
            "this machine's `strip` cannot rewrite the target's libraries, so they keep "
            "their symbol tables"
        )
        return 0
    libraries = [
        directory / name
        for directory, _, files in _walk(python_dir)
        if not any(part.endswith(".libs") for part in directory.relative_to(python_dir).parts)
        for name in files
        if (name.endswith(".so") or ".so." in name) and _is_elf(directory / name)
    ]
    if not libraries:
        return 0
    before = sum(library.stat().st_size for library in libraries)
    workers = os.cpu_count() or 1
    batches = [libraries[index::workers] for index in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as executor:
        failed = [
            path
            for batch_failures in executor.map(lambda batch: _strip_batch(strip, batch), batches)
            for path in batch_failures
        ]
    if failed:
        shown = ", ".join(str(path.relative_to(python_dir)) for path in failed[:5])
        reporter.say(
            f"[yellow]note[/] `strip` could not process {len(failed)} libraries ({shown}); "
            "they are shipped as installed"
        )
    return before - sum(library.stat().st_size for library in libraries)


def _strip_batch(strip: str, batch: list[Path]) -> list[Path]:
    """Strip a batch in one process; on failure find which files failed (strip
    writes a new file and renames it, so a failed one is left as it was)."""
    if not batch:
        return []
    completed = subprocess.run(
        [strip, "--strip-unneeded", *map(str, batch)], capture_output=True, text=True
    )
    if completed.returncode == 0:
        return []
    if len(batch) == 1:
        return batch
    return [path for single in batch for path in _strip_batch(strip, [single])]


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(4) == b"\x7fELF"


def _machine() -> str:
    machine = host.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


# -- verifying and precompiling ------------------------------------------------

VERIFY_SCRIPT = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
failures = []
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except BaseException as error:
        failures.append({
            "module": module,
            "error": f"{type(error).__name__}: {error}",
            "missing": getattr(error, "name", None) if isinstance(error, ImportError) else None,
        })
print(json.dumps(failures))
"""


def _can_run(platform: Platform, reporter: Reporter) -> bool:
    """Whether this machine can load the platform's tree: Linux, same machine, glibc new enough."""
    libc, version = host.libc_ver()
    try:
        glibc = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        glibc = (0, 0)
    if host.system() == "Linux" and _machine() == platform.machine and glibc >= platform.glibc:
        return True
    reporter.say(
        f"[yellow]note[/] this machine cannot load libraries built for {platform}, so the "
        "installed packages were not test-imported here"
    )
    return False


def _verify_imports(python_dir: Path, reporter: Reporter) -> None:
    """Import every top-level module in a process that sees only the tree and the stdlib.

    ``-I`` drops PYTHONPATH, the user site and the script's directory; ``-S``
    drops site-packages. What imports here imports on the platform too (given
    the glibc-checked wheels), which is what catches a strip that went too far.
    """
    modules = _top_level_modules(python_dir)
    if not modules:
        return
    with tempfile.TemporaryDirectory(prefix="deployer-verify-") as scratch:
        try:
            completed = subprocess.run(
                # -B: importing must not add timestamp-based .pyc to the tree.
                [sys.executable, "-I", "-S", "-B", "-c", VERIFY_SCRIPT, str(python_dir), *modules],
                capture_output=True,
                text=True,
                cwd=scratch,
                timeout=VERIFY_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            raise ProviderError(
                f"importing the installed packages ({', '.join(modules)}) took over "
                f"{VERIFY_TIMEOUT_SECONDS} s: one of them blocks on import (a network call or "
                "a prompt); find it with `python -c 'import <name>'` and leave it out"
            ) from None
    if completed.returncode != 0 or not completed.stdout.strip():
        raise ProviderError(
            f"importing the installed packages crashed the interpreter (exit code "
            f"{completed.returncode}):\n{completed.stderr.strip()[-2000:]}\n"
            "a shared library in the tree is broken: report this with the requirements"
        )
    failures = json.loads(completed.stdout.strip().splitlines()[-1])
    broken = []
    for failure in failures:
        missing = failure["missing"]
        if (
            missing
            and missing.split(".")[0] not in modules
            and missing not in sys.stdlib_module_names
        ):
            # Needs a package nobody asked for (an optional extra): not broken
            # by the strip, and only a problem if the function imports it.
            reporter.say(
                f"[yellow]note[/] {failure['module']} does not import without {missing}, which "
                "is not among the requirements: add it if the function uses "
                f"{failure['module']}"
            )
        else:
            broken.append(f"{failure['module']} ({failure['error']})")
    if broken:
        raise ProviderError(
            f"the installed dependency tree does not import: {'; '.join(broken)}. "
            "The strip pass or a wheel broke it: report this with the requirements"
        )


def _top_level_modules(python_dir: Path) -> list[str]:
    """Importable top-level names of the installed distributions, from their RECORDs."""
    modules: set[str] = set()
    for record in python_dir.glob("*.dist-info/RECORD"):
        for line in record.read_text(errors="replace").splitlines():
            first = line.split(",", 1)[0].split("/", 1)
            name = first[0]
            if len(first) == 1:  # a file at the top: a module or an extension
                name = name.split(".", 1)[0] if name.endswith((".py", ".so")) else ""
            if name.isidentifier() and name != "__pycache__":
                modules.add(name)
    return sorted(
        name
        for name in modules
        if (python_dir / name).is_dir()
        or (python_dir / f"{name}.py").is_file()
        or any(python_dir.glob(f"{name}.*.so"))
    )


def _precompile(python_dir: Path, platform: Platform, reporter: Reporter) -> None:
    """Write .pyc next to every module, hash-based and unchecked.

    A function's code is read-only where it runs (Lambda's code and layer
    directories), so without shipped .pyc every cold start compiles every
    module again (pandas + pyarrow + scikit-learn import in ~3.8 s instead of
    ~1.1 s on Lambda). Unchecked hash-based .pyc are never revalidated against
    the source (nothing there changes) and, unlike timestamp-based ones, do not
    record when they were built, so the tree stays byte-for-byte reproducible.
    """
    completed = subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "compileall",
            "-q",
            "-f",  # a .pyc already there (from anything that imported the tree) is rewritten
            "-j",
            "0",
            "-o",
            "0",  # function runtimes run python without -O: they look for plain .pyc
            "--invalidation-mode",
            "unchecked-hash",
            "-d",
            platform.site_dir,
            str(python_dir),
        ],
        capture_output=True,
        text=True,
    )
    tag = sys.implementation.cache_tag
    uncompiled = [
        path
        for path in python_dir.rglob("*.py")
        if not (path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc").is_file()
    ]
    if uncompiled:
        # compileall skips files with syntax errors (templates, Python 2
        # leftovers); they would fail on import either way.
        shown = ", ".join(str(path.relative_to(python_dir)) for path in uncompiled[:5])
        reporter.say(f"[yellow]note[/] {len(uncompiled)} files do not compile: {shown}")
    elif completed.returncode != 0:
        raise ProviderError(
            f"precompiling the dependencies failed:\n{completed.stdout[-2000:]}"
            f"{completed.stderr[-2000:]}"
        )


# -- helpers -------------------------------------------------------------------


def _files(directory: Path) -> list[tuple[str, Path]]:
    """Every file under ``directory`` as (posix path relative to it, path), sorted."""
    return [
        ((folder / name).relative_to(directory).as_posix(), folder / name)
        for folder, _, files in _walk(directory)
        for name in files
    ]


def _tree_bytes(directory: Path) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, files in os.walk(directory)
        for name in files
    )


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def _describe_removed(removed: dict[str, int]) -> str:
    parts = [f"{kind} {_megabytes(size)}" for kind, size in removed.items() if size >= 2**20 // 2]
    return "removed " + ", ".join(parts) if parts else "nothing to remove"
