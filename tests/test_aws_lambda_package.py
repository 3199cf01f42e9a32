"""Lambda dependency artifacts: target wheels, strip pass, bytecode, cache, deterministic archives.

The slow tests run the real pip against the real index for Lambda's platform;
one install is shared by the whole session.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from deployer import archive
from deployer.console import Reporter
from deployer.errors import BundleError, ProviderError, RequirementsError
from deployer.providers.aws import lambda_package
from deployer.providers.aws.lambda_package import (
    Dependencies,
    LambdaTarget,
    install_dependencies,
    lambda_target,
    layer_zip,
    slim_archive,
)

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# pandas 3.1.1 publishes a manylinux_2_24 wheel (loads on Amazon Linux 2); the
# newest pyarrow and numpy publish only 2_27/2_28 ones (do not), so pip must
# fall back to older versions of those for python3.11.
SMALL_SET = [
    f"cloudpickle=={cloudpickle.__version__}",
    "pandas==3.1.1",
    "pyarrow>=14",
]
needs_python311 = pytest.mark.skipif(
    LOCAL_PYTHON != "3.11", reason="the python3.11 Lambda target is installed with Python 3.11"
)


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.messages: list[str] = []

    def say(self, message: str) -> None:
        self.messages.append(message)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- targets -----------------------------------------------------------------------


def test_python311_runs_on_amazon_linux_2_with_glibc_2_26() -> None:
    target = lambda_target("3.11")
    assert target.runtime == "python3.11"
    assert target.architecture == "x86_64"
    assert target.glibc == (2, 26)
    assert str(target) == "python3.11 on x86_64 (Amazon Linux 2, glibc 2.26)"


def test_python312_runs_on_amazon_linux_2023_with_glibc_2_34() -> None:
    target = lambda_target("3.12", "arm64")
    assert target.glibc == (2, 34)
    assert str(target) == "python3.12 on arm64 (Amazon Linux 2023, glibc 2.34)"


def test_platform_tags_are_every_manylinux_the_glibc_accepts_newest_first() -> None:
    python311 = lambda_target("3.11").platform_tags
    python312 = lambda_target("3.12").platform_tags
    assert python311[0] == "manylinux_2_26_x86_64"
    assert python312[0] == "manylinux_2_34_x86_64"
    # The wheels the newest numpy/pyarrow publish load on 3.12's runtime only.
    assert "manylinux_2_28_x86_64" in python312
    assert "manylinux_2_27_x86_64" not in python311
    assert "manylinux_2_28_x86_64" not in python311
    for tags in (python311, python312):
        for legacy in (
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
            "manylinux_2_12_x86_64",
            "manylinux2010_x86_64",
            "manylinux_2_5_x86_64",
            "manylinux1_x86_64",
        ):
            assert legacy in tags
        minors = [int(tag.split("_")[2]) for tag in tags if tag.startswith("manylinux_2_")]
        assert minors == sorted(minors, reverse=True)
    assert python311.index("manylinux2014_x86_64") == python311.index("manylinux_2_17_x86_64") + 1


def test_arm64_tags_start_at_manylinux2014() -> None:
    tags = lambda_target("3.11", "arm64").platform_tags
    assert tags[0] == "manylinux_2_26_aarch64"
    assert tags[-2:] == ("manylinux_2_17_aarch64", "manylinux2014_aarch64")
    assert all(tag.endswith("_aarch64") for tag in tags)


@pytest.mark.parametrize("python", ["3.9", "3.8", "2.7", "3.15"])
def test_python_without_a_lambda_runtime_names_the_versions_that_work(python: str) -> None:
    with pytest.raises(ProviderError) as raised:
        lambda_target(python)
    message = str(raised.value)
    assert f"Python {python}" in message
    for offered in ("python3.10", "python3.11", "python3.12", "python3.13", "python3.14"):
        assert offered in message


@pytest.mark.parametrize("architecture", ["amd64", "aarch64", "i386"])
def test_unknown_architecture_is_refused(architecture: str) -> None:
    with pytest.raises(ProviderError, match="'x86_64'.*'arm64'"):
        lambda_target("3.11", architecture)


def test_target_python_other_than_this_interpreter_is_refused_before_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "3.12" if LOCAL_PYTHON != "3.12" else "3.11"
    monkeypatch.setattr(lambda_package.subprocess, "run", _no_subprocess)
    with pytest.raises(ProviderError, match=f"Python {other} environment"):
        install_dependencies(
            ["cloudpickle==3.1.1"],
            lambda_target(other),
            deps_hash="other-python",
            cache_dir=tmp_path,
            reporter=Reporter(quiet=True),
        )


def _no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"no process should run here: {args}")


# -- deterministic archives --------------------------------------------------------


def test_zip_bytes_is_sorted_with_fixed_times_and_modes() -> None:
    first = archive.zip_bytes([("b.txt", b"second"), ("a/x.py", b"first")])
    second = archive.zip_bytes([("a/x.py", b"first"), ("b.txt", b"second")])
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as opened:
        entries = opened.infolist()
        assert opened.read("b.txt") == b"second"
    assert [entry.filename for entry in entries] == ["a/x.py", "b.txt"]
    assert {entry.date_time for entry in entries} == {(1980, 1, 1, 0, 0, 0)}
    assert {entry.external_attr >> 16 for entry in entries} == {0o644}
    assert {entry.create_system for entry in entries} == {3}
    assert {entry.compress_type for entry in entries} == {zipfile.ZIP_DEFLATED}


def _tree(directory: Path, *, executable_mode: int = 0o750) -> list[tuple[str, Path]]:
    (directory / "pkg").mkdir(parents=True)
    (directory / "pkg" / "module.py").write_text("VALUE = 1\n" * 1000)
    (directory / "pkg" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (directory / "pkg" / "tool").chmod(executable_mode)
    (directory / "pkg" / "private.dat").write_bytes(os.urandom(3000))
    (directory / "pkg" / "private.dat").chmod(0o600)
    return [
        (path.relative_to(directory).as_posix(), path)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]


def test_write_zip_streams_files_with_the_same_bytes_as_zip_bytes(tmp_path: Path) -> None:
    entries = _tree(tmp_path / "tree")
    size = archive.write_zip(entries, tmp_path / "files.zip")
    assert size == (tmp_path / "files.zip").stat().st_size
    in_memory = archive.zip_bytes([(name, path.read_bytes()) for name, path in entries])
    with zipfile.ZipFile(tmp_path / "files.zip") as opened:
        modes = {entry.filename: entry.external_attr >> 16 for entry in opened.infolist()}
        assert opened.read("pkg/module.py") == (tmp_path / "tree/pkg/module.py").read_bytes()
    # Only the executable bit survives, so the sole difference is the tool's mode.
    assert modes == {"pkg/module.py": 0o644, "pkg/private.dat": 0o644, "pkg/tool": 0o755}
    (tmp_path / "tree" / "pkg" / "tool").chmod(0o644)
    archive.write_zip(entries, tmp_path / "plain.zip")
    assert (tmp_path / "plain.zip").read_bytes() == in_memory


def test_archives_do_not_depend_on_file_times_or_exact_modes(tmp_path: Path) -> None:
    first = _tree(tmp_path / "first", executable_mode=0o700)
    second = _tree(tmp_path / "second", executable_mode=0o755)
    for _, path in second:
        os.utime(path, (1_700_000_000, 1_700_000_000))
    # Same content in a shuffled order: the archive sorts.
    second = list(reversed(second))
    (tmp_path / "second" / "pkg" / "private.dat").write_bytes(
        (tmp_path / "first" / "pkg" / "private.dat").read_bytes()
    )
    archive.write_zip(first, tmp_path / "first.zip")
    archive.write_zip(second, tmp_path / "second.zip")
    assert digest(tmp_path / "first.zip") == digest(tmp_path / "second.zip")
    archive.write_tar_gz(first, tmp_path / "first.tar.gz")
    archive.write_tar_gz(second, tmp_path / "second.tar.gz")
    assert digest(tmp_path / "first.tar.gz") == digest(tmp_path / "second.tar.gz")


def test_tar_gz_has_no_owner_time_or_file_name(tmp_path: Path) -> None:
    entries = _tree(tmp_path / "tree")
    size = archive.write_tar_gz(entries, tmp_path / "deps.tar.gz")
    raw = (tmp_path / "deps.tar.gz").read_bytes()
    assert size == len(raw)
    # gzip header: magic, method, flags (FNAME is bit 3), mtime (4 bytes).
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0
    assert raw[4:8] == b"\0\0\0\0"
    with tarfile.open(tmp_path / "deps.tar.gz") as opened:
        members = opened.getmembers()
        assert opened.extractfile("pkg/module.py").read() == b"VALUE = 1\n" * 1000  # type: ignore[union-attr]
    assert [member.name for member in members] == ["pkg/module.py", "pkg/private.dat", "pkg/tool"]
    assert {(member.mtime, member.uid, member.gid) for member in members} == {(0, 0, 0)}
    assert {(member.uname, member.gname) for member in members} == {("", "")}
    assert {member.name: member.mode for member in members} == {
        "pkg/module.py": 0o644,
        "pkg/private.dat": 0o644,
        "pkg/tool": 0o755,
    }
    assert gzip.decompress(raw)  # a valid stream end to end


def test_failed_archive_leaves_no_file(tmp_path: Path) -> None:
    entries = _tree(tmp_path / "tree")
    missing = [*entries, ("pkg/zzz.py", tmp_path / "tree" / "gone.py")]
    with pytest.raises(FileNotFoundError):
        archive.write_zip(missing, tmp_path / "out.zip")
    with pytest.raises(FileNotFoundError):
        archive.write_tar_gz(missing, tmp_path / "out.tar.gz")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tree"]


def test_an_entry_name_given_twice_is_refused() -> None:
    with pytest.raises(BundleError, match="'a.py' is given twice"):
        archive.zip_bytes([("a.py", b"1"), ("a.py", b"2")])


# -- the strip pass and the import check, on made-up trees -------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _distribution(root: Path, name: str, files: dict[str, str]) -> None:
    """A package as pip leaves it: files plus a dist-info whose RECORD lists them."""
    _write(root, files)
    record = "".join(f"{path},," + "\n" for path in files)
    _write(root, {f"{name}-1.0.dist-info/RECORD": record})
    _write(root, {f"{name}-1.0.dist-info/METADATA": f"Name: {name}\nVersion: 1.0\n"})


def test_strip_removes_build_files_and_tests_but_keeps_what_imports_need(tmp_path: Path) -> None:
    python_dir = tmp_path / "python"
    _write(
        python_dir,
        {
            "bin/tool": "#!/usr/local/bin/python3\n",
            "mathlib/__init__.py": "from mathlib import testing\n",
            # Like numpy.testing, which imports numpy/_core/tests/_natype.py:
            "mathlib/testing.py": "from mathlib._core.tests._natype import NA\n",
            "mathlib/_core/__init__.py": "",
            "mathlib/_core/tests/_natype.py": "from . import _helper\nNA = None\n",
            "mathlib/_core/tests/_helper.py": "",
            "mathlib/_core/tests/test_big.py": "import pytest\n",
            "mathlib/_core/tests/data/big.csv": "1,2\n" * 1000,
            "mathlib/_core/include/mathlib.h": "int x;\n",
            "mathlib/_core/_kernels.pyx": "cdef int x\n",
            "mathlib/_core/_kernels.pxd": "",
            "mathlib/_core/_kernels.c": "int x;\n",
            "mathlib/_core/_kernels.hpp": "",
            "mathlib/_core/libstatic.a": "!<arch>\n",
            "mathlib/_core/__init__.pyi": "",
            "mathlib/__pycache__/__init__.cpython-39.pyc": "stale",
            "mathlib/old.py": "",
            "mathlib/old.pyc": "stale, next to its source",
            "sourceless/__init__.pyc": "the module itself: no .py next to it",
            "mathlib/conftest.py": "from mathlib.tests import fixtures\n",
            "mathlib/tests/__init__.py": "",
            "mathlib/tests/fixtures.py": "",
            "mathlib/test/test_x.py": "",
            "codegen/include/__init__.py": "# a package named include, with code: kept\n",
            "codegen/include/template.h": "",
        },
    )
    reporter = RecordingReporter()
    removed = lambda_package._strip(python_dir, lambda_target("3.11"), reporter)
    left = sorted(path.relative_to(python_dir).as_posix() for path in python_dir.rglob("*"))
    assert left == [
        "codegen",
        "codegen/include",
        "codegen/include/__init__.py",
        "mathlib",
        "mathlib/__init__.py",
        "mathlib/_core",
        "mathlib/_core/__init__.py",
        "mathlib/_core/tests",
        "mathlib/_core/tests/_helper.py",
        "mathlib/_core/tests/_natype.py",
        "mathlib/old.py",
        "mathlib/testing.py",
        "sourceless",
        "sourceless/__init__.pyc",
    ]
    assert removed["tests"] > 4000
    assert removed["build files"] > 0 and removed["scripts"] > 0


def test_import_check_names_the_module_a_strip_broke(tmp_path: Path) -> None:
    python_dir = tmp_path / "python"
    _distribution(
        python_dir,
        "mathlib",
        {
            "mathlib/__init__.py": "from mathlib.tests._natype import NA\n",
        },
    )
    with pytest.raises(ProviderError) as raised:
        lambda_package._verify_imports(python_dir, RecordingReporter())
    assert "mathlib (ModuleNotFoundError: No module named 'mathlib.tests'" in str(raised.value)


def test_import_check_only_notes_an_optional_package_nobody_required(tmp_path: Path) -> None:
    python_dir = tmp_path / "python"
    _distribution(python_dir, "plotting", {"plotting/__init__.py": "import matplotlib_zzz\n"})
    _distribution(python_dir, "fine", {"fine.py": "import json\nVALUE = 1\n"})
    reporter = RecordingReporter()
    lambda_package._verify_imports(python_dir, reporter)
    assert any(
        "plotting does not import without matplotlib_zzz" in line for line in reporter.messages
    )
    assert not list(python_dir.rglob("__pycache__"))  # checking wrote no bytecode


def test_import_check_sees_only_the_tree_and_the_standard_library(tmp_path: Path) -> None:
    python_dir = tmp_path / "python"
    # pytest is installed here, but not in the tree: the check must not find it.
    _distribution(python_dir, "usespytest", {"usespytest.py": "import pytest\n"})
    reporter = RecordingReporter()
    lambda_package._verify_imports(python_dir, reporter)
    assert any("usespytest does not import without pytest" in line for line in reporter.messages)


# -- real installs for python3.11 (pip against the index) --------------------------


@dataclass(frozen=True)
class Installed:
    dependencies: Dependencies
    target: LambdaTarget
    cache_dir: Path
    reporter: RecordingReporter


def _install(cache_dir: Path, lines: list[str], deps_hash: str) -> Installed:
    target = lambda_target("3.11")
    reporter = RecordingReporter()
    dependencies = install_dependencies(
        lines, target, deps_hash=deps_hash, cache_dir=cache_dir, reporter=reporter
    )
    return Installed(dependencies, target, cache_dir, reporter)


@pytest.fixture(scope="session")
def small_install(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """cloudpickle + pandas + pyarrow for python3.11 on x86_64, installed once a session."""
    if LOCAL_PYTHON != "3.11":
        pytest.skip("the python3.11 Lambda target is installed with Python 3.11")
    return _install(tmp_path_factory.mktemp("lambda-cache"), SMALL_SET, "small-set")


def _wheel_tags(python_dir: Path) -> dict[str, list[str]]:
    return {
        wheel.parent.name: HeaderParser().parsestr(wheel.read_text()).get_all("Tag") or []
        for wheel in python_dir.glob("*.dist-info/WHEEL")
    }


@pytest.mark.slow
def test_install_takes_only_wheels_that_load_on_amazon_linux_2(small_install: Installed) -> None:
    installed = dict(line.split("==") for line in small_install.dependencies.installed)
    assert installed["pandas"] == "3.1.1"  # pinned stays pinned
    assert installed["cloudpickle"] == cloudpickle.__version__
    assert int(installed["pyarrow"].split(".")[0]) >= 14  # the range floats...
    assert {"numpy", "python-dateutil", "tzdata"} <= set(installed)  # ...with transitive ones
    accepted = set(small_install.target.platform_tags) | {"any"}
    tags = _wheel_tags(small_install.dependencies.root / "python")
    assert len(tags) == len(installed)
    for distribution, wheel_tags in tags.items():
        platforms = {tag.rsplit("-", 1)[1] for tag in wheel_tags}
        assert platforms & accepted, f"{distribution} has no tag for glibc 2.26: {wheel_tags}"
        pythons = {part for tag in wheel_tags for part in tag.split("-")[0].split(".")}
        assert pythons & {"cp311", "py3", "py311"}, f"{distribution} is not for 3.11: {wheel_tags}"
    # ...to the newest pyarrow and numpy that still publish a wheel for glibc <= 2.26.
    glibc_minors = [
        int(match)
        for wheel_tags in tags.values()
        for tag in wheel_tags
        for match in re.findall(r"manylinux_2_(\d+)_", tag)
    ]
    assert min(glibc_minors) <= 26


@pytest.mark.slow
def test_tree_is_stripped_but_keeps_the_tests_module_numpy_testing_imports(
    small_install: Installed,
) -> None:
    python_dir = small_install.dependencies.root / "python"
    files = [path.relative_to(python_dir) for path in python_dir.rglob("*") if path.is_file()]
    suffixes = {path.suffix for path in files}
    assert not suffixes & {".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".hpp", ".a", ".pyi"}
    assert not [path for path in files if "include" in path.parts]
    assert not (python_dir / "bin").exists()
    test_files = sorted(
        path.as_posix()
        for path in files
        if {"tests", "test"} & set(path.parts) and path.suffix != ".pyc"
    )
    assert test_files == ["numpy/_core/tests/_natype.py"]
    assert len(files) == small_install.dependencies.file_count
    assert sum((python_dir / path).stat().st_size for path in files) == (
        small_install.dependencies.unzipped_bytes
    )


@pytest.mark.slow
def test_every_module_has_unchecked_hash_based_bytecode(small_install: Installed) -> None:
    python_dir = small_install.dependencies.root / "python"
    sources = list(python_dir.rglob("*.py"))
    compiled = list(python_dir.rglob("*.pyc"))
    assert len(sources) > 500
    assert len(compiled) == len(sources)  # none left from the wheels, one per module
    for source in sources:
        bytecode = source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
        header = bytecode.read_bytes()[:16]
        assert header[:4] == importlib.util.MAGIC_NUMBER
        # PEP 552 flags: bit 0 = hash-based, bit 1 = check the source. Unchecked: 0b01.
        assert int.from_bytes(header[4:8], "little") == 0b01, bytecode
        assert header[8:16] == importlib.util.source_hash(source.read_bytes())


@pytest.mark.slow
def test_tree_imports_and_works_with_nothing_but_the_standard_library(
    small_install: Installed, tmp_path: Path
) -> None:
    # Reading Parquet from a Python file object leaves Arrow threads that can
    # abort the interpreter at exit ("terminate called without an active
    # exception", apache/arrow#34314; one run in five here, with or without our
    # strip pass). Freeing them before exit keeps the exit code meaningful.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import gc, io, cloudpickle, numpy.testing, pandas as pd, pyarrow.parquet\n"
        "assert all(p.startswith(sys.argv[1]) for p in "
        "(pd.__file__, pyarrow.__file__, cloudpickle.__file__))\n"
        "frame = pd.DataFrame({'x': [1.5, 2.5]})\n"
        "buffer = io.BytesIO(); frame.to_parquet(buffer)\n"
        "result = pd.read_parquet(io.BytesIO(buffer.getvalue()))\n"
        "print(result.x.sum())\n"
        "del frame, buffer, result; gc.collect()\n"
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-B",
            "-c",
            script,
            str(small_install.dependencies.python_dir),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "4.0"


@pytest.mark.slow
def test_layer_zip_and_slim_archive_are_byte_identical_across_installs(
    small_install: Installed, tmp_path: Path
) -> None:
    again = _install(tmp_path / "other-cache", SMALL_SET, "small-set")
    assert again.dependencies.installed == small_install.dependencies.installed
    sizes = {}
    for name, build in (("layer.zip", layer_zip), ("slim.tar.gz", slim_archive)):
        first = build(small_install.dependencies, tmp_path / "first" / name)
        second = build(again.dependencies, tmp_path / "second" / name)
        assert first == second
        assert digest(tmp_path / "first" / name) == digest(tmp_path / "second" / name)
        sizes[name] = first
    with zipfile.ZipFile(tmp_path / "first" / "layer.zip") as layer:
        names = layer.namelist()
        unzipped = sum(entry.file_size for entry in layer.infolist())
    assert all(name.startswith("python/") for name in names)
    assert "python/pandas/__init__.py" in names
    assert unzipped == small_install.dependencies.unzipped_bytes
    with tarfile.open(tmp_path / "first" / "slim.tar.gz") as slim:
        members = slim.getnames()
    assert "pandas/__init__.py" in members
    assert sorted(members) == sorted(name.removeprefix("python/") for name in names)


@pytest.mark.slow
def test_same_deps_hash_again_returns_the_cache_without_running_anything(
    small_install: Installed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lambda_package.subprocess, "run", _no_subprocess)
    again = _install(small_install.cache_dir, SMALL_SET, "small-set")
    assert again.dependencies == small_install.dependencies
    assert again.reporter.messages == []


@pytest.mark.slow
def test_same_deps_hash_for_other_requirements_is_refused(small_install: Installed) -> None:
    with pytest.raises(ProviderError, match="deps_hash must cover the requirements"):
        _install(small_install.cache_dir, ["cloudpickle==3.0.0"], "small-set")


@pytest.mark.slow
@needs_python311
def test_pinned_version_without_a_wheel_says_what_would_work(tmp_path: Path) -> None:
    with pytest.raises(RequirementsError) as raised:
        _install(tmp_path, ["cloudpickle==3.1.1", "numpy==2.4.6"], "numpy-too-new")
    message = str(raised.value)
    assert "numpy==2.4.6" in message
    assert "python3.11 on x86_64 (Amazon Linux 2, glibc 2.26)" in message
    # numpy 2.3+ publish manylinux_2_28 wheels only; 2.2.x is the last for glibc 2.26.
    assert re.search(r"numpy==2\.2\.\d+", message)
    assert "python3.12 on x86_64 (Amazon Linux 2023, glibc 2.34) has a wheel" in message
    # A failed install leaves nothing that looks ready, and no half-built tree.
    assert [path.name for path in (tmp_path / "lambda").iterdir()] == ["numpy-too-new.lock"]


@pytest.mark.slow
@needs_python311
def test_concurrent_installs_of_one_deps_hash_run_pip_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs = []
    real_run: Callable[..., Any] = subprocess.run

    def counting_run(command: list[str], *args: Any, **kwargs: Any) -> Any:
        if command[1:4] == ["-m", "pip", "install"]:
            installs.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(lambda_package.subprocess, "run", counting_run)
    results: list[Dependencies] = []
    errors: list[BaseException] = []

    def install() -> None:
        try:
            results.append(_install(tmp_path, ["cloudpickle==3.1.1"], "shared").dependencies)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=install) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(installs) == 1
    assert len({result.root for result in results}) == 1 and len(results) == 3
    assert sorted(path.name for path in (tmp_path / "lambda").iterdir()) == [
        "shared",
        "shared.lock",
    ]


@pytest.mark.slow
@needs_python311
def test_a_tree_without_its_metadata_is_not_taken_as_ready(tmp_path: Path) -> None:
    # What a copy interrupted half-way, or an older deployer, may leave behind.
    leftover = tmp_path / "lambda" / "partial" / "python" / "cloudpickle"
    leftover.mkdir(parents=True)
    (leftover / "__init__.py").write_text("raise ImportError('half a tree')\n")
    installed = _install(tmp_path, ["cloudpickle==3.1.1"], "partial")
    assert installed.dependencies.installed == ("cloudpickle==3.1.1",)
    python_dir = installed.dependencies.root / "python"
    assert "half a tree" not in (python_dir / "cloudpickle" / "__init__.py").read_text()
