"""Dependency trees for a platform: wheel tags, strip pass, import check, bytecode, cache.

The slow tests run the real pip against the real index for Linux x86_64 with
glibc 2.26 (Amazon Linux 2's); one install is shared by the whole session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import re
import subprocess
import sys
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from at_once import at_once, pip_installs

from deployer import packaging
from deployer.console import Reporter
from deployer.errors import ProviderError
from deployer.packaging import METADATA_FILE, Dependencies, Platform, install_dependencies

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
GLIBC_2_26 = Platform(python="3.11", glibc=(2, 26), machine="x86_64", site_dir="/srv/packages")
# pandas 3.1.1 publishes a manylinux_2_24 wheel (loads on glibc 2.26); the
# newest pyarrow and numpy publish only 2_27/2_28 ones (do not), so pip must
# fall back to older versions of those.
SMALL_SET = [
    f"cloudpickle=={cloudpickle.__version__}",
    "pandas==3.1.1",
    "pyarrow>=14",
]
needs_python311 = pytest.mark.skipif(
    LOCAL_PYTHON != "3.11", reason="a Python 3.11 platform is installed with Python 3.11"
)


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.messages: list[str] = []

    def say(self, message: str) -> None:
        self.messages.append(message)


def _no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"no process should run here: {args}")


# -- platforms ---------------------------------------------------------------------


def test_platform_tags_are_every_manylinux_the_glibc_accepts_newest_first() -> None:
    glibc_2_26 = GLIBC_2_26.platform_tags
    glibc_2_34 = Platform("3.12", (2, 34), "x86_64", site_dir="/srv/packages").platform_tags
    assert glibc_2_26[0] == "manylinux_2_26_x86_64"
    assert glibc_2_34[0] == "manylinux_2_34_x86_64"
    assert "manylinux_2_28_x86_64" in glibc_2_34
    assert "manylinux_2_27_x86_64" not in glibc_2_26
    for tags in (glibc_2_26, glibc_2_34):
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
    assert glibc_2_26.index("manylinux2014_x86_64") == glibc_2_26.index("manylinux_2_17_x86_64") + 1


def test_aarch64_tags_start_at_manylinux2014() -> None:
    tags = Platform("3.11", (2, 26), "aarch64", site_dir="/srv/packages").platform_tags
    assert tags[0] == "manylinux_2_26_aarch64"
    assert tags[-2:] == ("manylinux_2_17_aarch64", "manylinux2014_aarch64")
    assert all(tag.endswith("_aarch64") for tag in tags)


def test_a_platform_is_named_by_its_provider_or_else_by_python_machine_and_glibc() -> None:
    assert str(GLIBC_2_26) == "Python 3.11 on x86_64 (glibc 2.26)"
    assert str(Platform("3.11", (2, 26), "x86_64", site_dir="/", name="my image")) == "my image"
    assert GLIBC_2_26.abi == "cp311"


def test_python_other_than_this_interpreter_is_refused_before_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "3.12" if LOCAL_PYTHON != "3.12" else "3.11"
    monkeypatch.setattr(packaging.subprocess, "run", _no_subprocess)
    with pytest.raises(ProviderError, match=f"Python {other} environment"):
        install_dependencies(
            ["cloudpickle==3.1.1"],
            Platform(other, (2, 34), "x86_64", site_dir="/srv/packages"),
            deps_hash="other-python",
            cache_dir=tmp_path,
            reporter=Reporter(quiet=True),
        )


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
    removed = packaging._strip(python_dir, GLIBC_2_26, reporter)
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
        packaging._verify_imports(python_dir, RecordingReporter())
    assert "mathlib (ModuleNotFoundError: No module named 'mathlib.tests'" in str(raised.value)


def test_import_check_only_notes_an_optional_package_nobody_required(tmp_path: Path) -> None:
    python_dir = tmp_path / "python"
    _distribution(python_dir, "plotting", {"plotting/__init__.py": "import matplotlib_zzz\n"})
    _distribution(python_dir, "fine", {"fine.py": "import json\nVALUE = 1\n"})
    reporter = RecordingReporter()
    packaging._verify_imports(python_dir, reporter)
    assert any(
        "plotting does not import without matplotlib_zzz" in line for line in reporter.messages
    )
    assert not list(python_dir.rglob("__pycache__"))  # checking wrote no bytecode


def test_import_check_sees_only_the_tree_and_the_standard_library(tmp_path: Path) -> None:
    python_dir = tmp_path / "python"
    # pytest is installed here, but not in the tree: the check must not find it.
    _distribution(python_dir, "usespytest", {"usespytest.py": "import pytest\n"})
    reporter = RecordingReporter()
    packaging._verify_imports(python_dir, reporter)
    assert any("usespytest does not import without pytest" in line for line in reporter.messages)


# -- real installs for Python 3.11 on glibc 2.26 (pip against the index) -----------


@dataclass(frozen=True)
class Installed:
    dependencies: Dependencies
    cache_dir: Path
    reporter: RecordingReporter


def _install(cache_dir: Path, lines: list[str], deps_hash: str) -> Installed:
    reporter = RecordingReporter()
    dependencies = install_dependencies(
        lines, GLIBC_2_26, deps_hash=deps_hash, cache_dir=cache_dir, reporter=reporter
    )
    return Installed(dependencies, cache_dir, reporter)


@pytest.fixture(scope="session")
def small_install(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """cloudpickle + pandas + pyarrow for Python 3.11 on glibc 2.26, installed once a session."""
    if LOCAL_PYTHON != "3.11":
        pytest.skip("a Python 3.11 platform is installed with Python 3.11")
    return _install(tmp_path_factory.mktemp("packaging-cache"), SMALL_SET, "small-set")


def _wheel_tags(python_dir: Path) -> dict[str, list[str]]:
    return {
        wheel.parent.name: HeaderParser().parsestr(wheel.read_text()).get_all("Tag") or []
        for wheel in python_dir.glob("*.dist-info/WHEEL")
    }


def _tree_digests(python_dir: Path) -> dict[str, str]:
    return {
        path.relative_to(python_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in python_dir.rglob("*")
        if path.is_file()
    }


@pytest.mark.slow
def test_install_takes_only_wheels_that_load_on_the_platforms_glibc(
    small_install: Installed,
) -> None:
    installed = dict(line.split("==") for line in small_install.dependencies.installed)
    assert installed["pandas"] == "3.1.1"  # pinned stays pinned
    assert installed["cloudpickle"] == cloudpickle.__version__
    assert int(installed["pyarrow"].split(".")[0]) >= 14  # the range floats...
    assert {"numpy", "python-dateutil", "tzdata"} <= set(installed)  # ...with transitive ones
    accepted = set(GLIBC_2_26.platform_tags) | {"any"}
    tags = _wheel_tags(small_install.dependencies.python_dir)
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
def test_tree_is_cached_as_python_dir_and_metadata_under_its_deps_hash(
    small_install: Installed,
) -> None:
    root = small_install.dependencies.root
    assert root == small_install.cache_dir / "small-set"
    assert sorted(path.name for path in root.iterdir()) == [METADATA_FILE, "python"]
    assert sorted(path.name for path in small_install.cache_dir.iterdir()) == [
        "small-set",
        "small-set.lock",
    ]


@pytest.mark.slow
def test_tree_is_stripped_but_keeps_the_tests_module_numpy_testing_imports(
    small_install: Installed,
) -> None:
    python_dir = small_install.dependencies.python_dir
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
    assert sorted(name for name, _ in small_install.dependencies.files()) == sorted(
        path.as_posix() for path in files
    )


@pytest.mark.slow
def test_every_module_has_unchecked_hash_based_bytecode_naming_the_site_dir(
    small_install: Installed,
) -> None:
    python_dir = small_install.dependencies.python_dir
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
    pandas_init = python_dir / "pandas" / "__pycache__" / "__init__.cpython-311.pyc"
    code = marshal.loads(pandas_init.read_bytes()[16:])
    assert code.co_filename == "/srv/packages/pandas/__init__.py"


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
def test_two_installs_in_other_directories_give_byte_identical_trees(
    small_install: Installed, tmp_path: Path
) -> None:
    again = _install(tmp_path / "other-cache", SMALL_SET, "small-set")
    assert again.dependencies.installed == small_install.dependencies.installed
    assert again.dependencies.unzipped_bytes == small_install.dependencies.unzipped_bytes
    assert _tree_digests(again.dependencies.python_dir) == _tree_digests(
        small_install.dependencies.python_dir
    )


@pytest.mark.slow
def test_same_deps_hash_again_returns_the_cache_without_running_anything(
    small_install: Installed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packaging.subprocess, "run", _no_subprocess)
    again = _install(small_install.cache_dir, SMALL_SET, "small-set")
    assert again.dependencies == small_install.dependencies
    assert again.reporter.messages == []


@pytest.mark.slow
def test_same_deps_hash_for_other_requirements_is_refused(small_install: Installed) -> None:
    with pytest.raises(ProviderError, match="deps_hash must cover the requirements"):
        _install(small_install.cache_dir, ["cloudpickle==3.0.0"], "small-set")


@pytest.mark.slow
@needs_python311
def test_concurrent_installs_of_one_deps_hash_run_pip_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs = pip_installs(monkeypatch)
    results = at_once(lambda: _install(tmp_path, ["cloudpickle==3.1.1"], "shared").dependencies)
    assert len(installs) == 1
    assert len({result.root for result in results}) == 1 and len(results) == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shared", "shared.lock"]


@pytest.mark.slow
@needs_python311
def test_a_tree_without_its_metadata_is_not_taken_as_ready(tmp_path: Path) -> None:
    # What a copy interrupted half-way, or an older deployer, may leave behind.
    leftover = tmp_path / "partial" / "python" / "cloudpickle"
    leftover.mkdir(parents=True)
    (leftover / "__init__.py").write_text("raise ImportError('half a tree')\n")
    installed = _install(tmp_path, ["cloudpickle==3.1.1"], "partial")
    assert installed.dependencies.installed == ("cloudpickle==3.1.1",)
    python_dir = installed.dependencies.python_dir
    assert "half a tree" not in (python_dir / "cloudpickle" / "__init__.py").read_text()


@pytest.mark.slow
@needs_python311
def test_a_memory_filesystem_that_fills_up_builds_on_disk_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = tmp_path / "memory"
    memory.mkdir()
    monkeypatch.setattr(packaging, "MEMORY_FILESYSTEM", memory)
    real_build = packaging._build

    def full_memory(*args: Any) -> Dependencies:
        if args[3].parent == memory:  # as pip reports ENOSPC
            raise ProviderError(f"installing failed:\nOSError: [Errno 28] {packaging.NO_SPACE}")
        return real_build(*args)

    monkeypatch.setattr(packaging, "_build", full_memory)
    reporter = RecordingReporter()
    with packaging.scratch_dependencies(
        ["cloudpickle==3.1.1"], GLIBC_2_26, deps_hash="big", reporter=reporter
    ) as dependencies:
        assert (dependencies.python_dir / "cloudpickle" / "__init__.py").is_file()
        assert memory not in dependencies.root.parents
    assert not dependencies.root.exists()
    assert any("filled up: building on disk" in message for message in reporter.messages)
