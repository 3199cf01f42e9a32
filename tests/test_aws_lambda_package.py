"""Lambda's platforms, its layer and slim archives, and deterministic archives.

Installing the tree itself is tested in test_packaging.py; the slow test here
runs the real pip against the real index for Lambda's python3.11.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from at_once import at_once, pip_installs

import deployer
from deployer import archive, packaging
from deployer.console import Reporter
from deployer.errors import BundleError, ProviderError, RequirementsError
from deployer.packaging import Dependencies, Platform
from deployer.providers.aws.lambda_package import (
    DependencyArtifact,
    decompressor_wheel,
    dependency_artifact,
    lambda_target,
    layer_zip,
    slim_archive,
)
from deployer.providers.aws.provider import Packaged

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
needs_python311 = pytest.mark.skipif(
    LOCAL_PYTHON != "3.11", reason="the python3.11 Lambda target is installed with Python 3.11"
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"no process should run here: {args}")


# -- targets -----------------------------------------------------------------------


def test_python311_runs_on_amazon_linux_2_with_glibc_2_26() -> None:
    target = lambda_target("3.11")
    assert target.runtime == "python3.11"
    assert target.architecture == "x86_64"
    assert target.platform.glibc == (2, 26)
    assert str(target) == "python3.11 on x86_64 (Amazon Linux 2, glibc 2.26)"


def test_python312_runs_on_amazon_linux_2023_with_glibc_2_34() -> None:
    target = lambda_target("3.12", "arm64")
    assert target.platform.glibc == (2, 34)
    assert str(target) == "python3.12 on arm64 (Amazon Linux 2023, glibc 2.34)"


def test_a_lambda_target_is_the_platform_its_layer_loads_on() -> None:
    assert lambda_target("3.11", "arm64").platform == Platform(
        python="3.11",
        glibc=(2, 26),
        machine="aarch64",
        site_dir="/opt/python",
        name="python3.11 on arm64 (Amazon Linux 2, glibc 2.26)",
    )


def test_the_newest_numpy_and_pyarrow_wheels_load_on_python312_runtimes_only() -> None:
    python311 = lambda_target("3.11").platform_tags
    python312 = lambda_target("3.12").platform_tags
    assert python311[0] == "manylinux_2_26_x86_64"
    assert "manylinux_2_28_x86_64" in python312
    assert "manylinux_2_27_x86_64" not in python311
    assert "manylinux_2_28_x86_64" not in python311
    assert lambda_target("3.11", "arm64").platform_tags[-1] == "manylinux2014_aarch64"


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


# -- the cache and the Lambda artifacts ---------------------------------------------


def _record(cache: Path, deps_hash: str, artifact: bytes, **changes: Any) -> Path:
    """A record and its slim archive as dependency_artifact leaves them."""
    path = cache / "lambda-artifacts" / f"{deps_hash}-slim.tar.zst"
    path.parent.mkdir(parents=True)
    path.write_bytes(artifact)
    record = {
        "format": 1,
        "deps_hash": deps_hash,
        "target": "python3.12 on arm64 (Amazon Linux 2023, glibc 2.34)",
        "requirements": ["cloudpickle==3.1.1"],
        "installed": ["cloudpickle==3.1.1"],
        "unzipped_bytes": 300 * 2**20,
        "file_count": 1,
        "artifacts": {
            "slim": {"file": path.name, "bytes": len(artifact), "sha256": "a" * 64},
        },
        **changes,
    }
    (cache / "lambda").mkdir()
    (cache / "lambda" / f"{deps_hash}.json").write_text(json.dumps(record))
    return path


def test_a_recorded_artifact_is_used_without_building_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _record(tmp_path, "recorded", b"archive")
    monkeypatch.setattr(packaging.subprocess, "run", _no_subprocess)
    asked: list[int] = []
    artifact = dependency_artifact(
        [" cloudpickle==3.1.1 ", ""],
        lambda_target("3.12", "arm64"),  # not this interpreter: nothing may be installed
        deps_hash="recorded",
        cache_dir=tmp_path,
        reporter=Reporter(quiet=True),
        mode_for=lambda unzipped: asked.append(unzipped) or "slim",
    )
    assert asked == [300 * 2**20]
    assert artifact == DependencyArtifact(
        "recorded", "slim", path, "a" * 64, 300 * 2**20, ("cloudpickle==3.1.1",)
    )


def test_a_record_of_other_requirements_under_the_same_deps_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(tmp_path, "clash", b"archive", requirements=["cloudpickle==3.0.0"])
    monkeypatch.setattr(packaging.subprocess, "run", _no_subprocess)
    with pytest.raises(ProviderError, match="deps_hash must cover the requirements"):
        dependency_artifact(
            ["cloudpickle==3.1.1"],
            lambda_target("3.12", "arm64"),
            deps_hash="clash",
            cache_dir=tmp_path,
            reporter=Reporter(quiet=True),
            mode_for=lambda unzipped: "slim",
        )


@pytest.mark.slow
@needs_python311
def test_the_tree_is_built_in_the_workspace_archived_and_only_the_archive_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = tmp_path / "memory"  # stands in for /dev/shm
    memory.mkdir()
    monkeypatch.setattr(packaging, "MEMORY_FILESYSTEM", memory)
    cache = tmp_path / "cache"
    built_in: list[Path] = []
    real_build = packaging._build

    def watched_build(*args: Any) -> Dependencies:
        built_in.append(args[3])
        return real_build(*args)

    monkeypatch.setattr(packaging, "_build", watched_build)

    def package(mode: str) -> DependencyArtifact:
        return dependency_artifact(
            ["cloudpickle==3.1.1"],
            lambda_target("3.11"),
            deps_hash="small",
            cache_dir=cache,
            reporter=Reporter(quiet=True),
            mode_for=lambda unzipped: mode,
        )

    layer = package("layer")
    assert [path.parent for path in built_in] == [memory]
    assert list(memory.iterdir()) == []  # the tree is gone once archived
    assert sorted(path.name for path in (cache / "lambda").iterdir()) == [
        "small.json",
        "small.lock",
    ]
    assert layer.path == cache / "lambda-artifacts" / "small-layer.zip"
    assert layer.sha256 == digest(layer.path)
    assert layer.installed == ("cloudpickle==3.1.1",)
    with zipfile.ZipFile(layer.path) as content:
        assert "python/cloudpickle/__init__.py" in content.namelist()
        assert sum(entry.file_size for entry in content.infolist()) == layer.unzipped_bytes

    assert package("layer") == layer and len(built_in) == 1  # cached: nothing built
    slim = package("slim")  # the other archive needs the tree again
    assert len(built_in) == 2 and slim.path.name == "small-slim.tar.zst"
    assert package("layer") == layer and package("slim") == slim and len(built_in) == 2
    slim.path.write_bytes(b"replaced")  # a changed archive is not trusted: built again
    assert package("slim") == slim and len(built_in) == 3


@pytest.mark.slow
@needs_python311
def test_a_tree_too_large_without_slim_mode_is_refused_again_without_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def too_large(unzipped: int) -> str:
        raise ProviderError(f"the dependencies are {unzipped} bytes: deploy with slim mode")

    def package() -> DependencyArtifact:
        return dependency_artifact(
            ["cloudpickle==3.1.1"],
            lambda_target("3.11"),
            deps_hash="big",
            cache_dir=tmp_path,
            reporter=Reporter(quiet=True),
            mode_for=too_large,
        )

    with pytest.raises(ProviderError, match="deploy with slim mode") as first:
        package()
    assert not (tmp_path / "lambda-artifacts").exists()
    monkeypatch.setattr(packaging.subprocess, "run", _no_subprocess)
    with pytest.raises(ProviderError, match="deploy with slim mode") as again:
        package()  # from the record: no pip, no tree
    assert str(again.value) == str(first.value)


@pytest.mark.slow
@needs_python311
def test_concurrent_deploys_of_one_deps_hash_build_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installs = pip_installs(monkeypatch)
    results = at_once(
        lambda: dependency_artifact(
            ["cloudpickle==3.1.1"],
            lambda_target("3.11"),
            deps_hash="shared",
            cache_dir=tmp_path,
            reporter=Reporter(quiet=True),
            mode_for=lambda unzipped: "layer",
        )
    )
    assert len(installs) == 1
    assert len(results) == 3 and len(set(results)) == 1
    assert sorted(path.name for path in (tmp_path / "lambda-artifacts").iterdir()) == [
        "shared-layer.zip"
    ]


def _made_up_tree(root: Path) -> Dependencies:
    files = {
        "pkg/__init__.py": "VALUE = 1\n",
        "pkg/__pycache__/__init__.cpython-311.pyc": "bytecode",
        "pkg-1.0.dist-info/RECORD": "pkg/__init__.py,,\n",
    }
    for name, content in files.items():
        path = root / "python" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    size = sum(len(content) for content in files.values())
    return Dependencies("made-up", root, size, len(files), ("pkg==1.0",))


def test_layer_zip_puts_the_tree_under_python_and_slim_archive_at_its_top(tmp_path: Path) -> None:
    first = _made_up_tree(tmp_path / "first")
    second = _made_up_tree(tmp_path / "second")
    os.utime(second.python_dir / "pkg" / "__init__.py", (1_700_000_000, 1_700_000_000))
    for name, build in (("layer.zip", layer_zip), ("slim.tar.zst", slim_archive)):
        first_path, second_path = tmp_path / f"first-{name}", tmp_path / f"second-{name}"
        assert build(first, first_path) == build(second, second_path)
        assert digest(first_path) == digest(second_path)
    with zipfile.ZipFile(tmp_path / "first-layer.zip") as layer:
        names = layer.namelist()
        unzipped = sum(entry.file_size for entry in layer.infolist())
    assert names == [
        "python/pkg-1.0.dist-info/RECORD",
        "python/pkg/__init__.py",
        "python/pkg/__pycache__/__init__.cpython-311.pyc",
    ]
    assert unzipped == first.unzipped_bytes
    with (
        archive.zstd_module().ZstdFile(tmp_path / "first-slim.tar.zst") as decompressed,
        tarfile.open(fileobj=decompressed, mode="r|") as slim,
    ):
        members = [member.name for member in slim]
    assert members == [name.removeprefix("python/") for name in names]


@pytest.mark.slow
def test_the_slim_decompressor_is_built_for_the_functions_platform_and_fetched_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graviton = decompressor_wheel(lambda_target("3.12", "arm64"), tmp_path)
    assert graviton is not None and graviton.is_relative_to(tmp_path / "lambda-zstd")
    with zipfile.ZipFile(graviton) as wheel:
        names = wheel.namelist()
    assert "backports/zstd/__init__.py" in names
    assert "backports/zstd/_zstd.cpython-312-aarch64-linux-gnu.so" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE_zstd.txt") for name in names)

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran again for a platform whose wheel is cached")

    monkeypatch.setattr(packaging.subprocess, "run", no_pip)
    assert decompressor_wheel(lambda_target("3.12", "arm64"), tmp_path) == graviton
    # From Python 3.14 the standard library has it.
    assert decompressor_wheel(lambda_target("3.14"), tmp_path) is None


def test_the_code_zip_is_the_decompressor_wheel_with_the_bundle_added(tmp_path: Path) -> None:
    wheel = tmp_path / "backports_zstd-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(archive.zip_bytes([("backports/zstd/__init__.py", b"x = 1\n" * 500)]))
    bundle = deployer.build(_double, name="double").bundle
    artifact = DependencyArtifact("h", "slim", tmp_path / "deps.tar.zst", "0" * 64, 1, ())
    code = Packaged(artifact, wheel).code_zip(bundle)
    with zipfile.ZipFile(io.BytesIO(code)) as opened:
        assert opened.namelist() == ["backports/zstd/__init__.py", *(n for n, _ in bundle.files)]
        for name, content in bundle.files:
            assert opened.read(name) == content
    # The wheel's entries are copied as they are, compressed bytes included: all
    # that comes before its central directory.
    with zipfile.ZipFile(wheel) as opened:
        entries_end = opened.start_dir
    assert code[:entries_end] == wheel.read_bytes()[:entries_end]
    assert Packaged(artifact, wheel).code_zip(bundle) == code  # deterministic
    assert Packaged(artifact).code_zip(bundle) == bundle.zip_bytes()  # layer mode: the bundle


def _double(frame: Any) -> Any:
    return frame.assign(y=frame.x * 2)


@pytest.mark.slow
@needs_python311
def test_pinned_version_without_a_wheel_says_what_would_work(tmp_path: Path) -> None:
    with pytest.raises(RequirementsError) as raised:
        dependency_artifact(
            ["cloudpickle==3.1.1", "numpy==2.4.6"],
            lambda_target("3.11"),
            deps_hash="numpy-too-new",
            cache_dir=tmp_path,
            reporter=Reporter(quiet=True),
            mode_for=lambda unzipped: "layer",
        )
    message = str(raised.value)
    assert "numpy==2.4.6" in message
    assert "python3.11 on x86_64 (Amazon Linux 2, glibc 2.26)" in message
    # numpy 2.3+ publish manylinux_2_28 wheels only; 2.2.x is the last for glibc 2.26.
    assert re.search(r"numpy==2\.2\.\d+", message)
    assert "python3.12 on x86_64 (Amazon Linux 2023, glibc 2.34) has a wheel" in message
    # A failed install leaves nothing that looks ready, and no half-built tree.
    assert [path.name for path in (tmp_path / "lambda").iterdir()] == ["numpy-too-new.lock"]
    assert not (tmp_path / "lambda-artifacts").exists()
    assert not list(packaging.workspace().glob("deployer-deps-numpy-too-ne*"))


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
    archive.write_tar_zst(first, tmp_path / "first.tar.zst", level=3)
    archive.write_tar_zst(second, tmp_path / "second.tar.zst", level=3)
    assert digest(tmp_path / "first.tar.zst") == digest(tmp_path / "second.tar.zst")


def test_tar_zst_has_no_owner_or_time_and_is_one_zstd_stream(tmp_path: Path) -> None:
    entries = _tree(tmp_path / "tree")
    size = archive.write_tar_zst(entries, tmp_path / "deps.tar.zst", level=3)
    raw = (tmp_path / "deps.tar.zst").read_bytes()
    assert size == len(raw)
    assert raw[:4] == b"\x28\xb5\x2f\xfd"  # zstd's frame magic number
    zstd = archive.zstd_module()
    with tarfile.open(fileobj=io.BytesIO(zstd.decompress(raw))) as opened:
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


def test_failed_archive_leaves_no_file(tmp_path: Path) -> None:
    entries = _tree(tmp_path / "tree")
    missing = [*entries, ("pkg/zzz.py", tmp_path / "tree" / "gone.py")]
    with pytest.raises(FileNotFoundError):
        archive.write_zip(missing, tmp_path / "out.zip")
    with pytest.raises(FileNotFoundError):
        archive.write_tar_zst(missing, tmp_path / "out.tar.zst", level=3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tree"]


def test_an_entry_name_given_twice_is_refused() -> None:
    with pytest.raises(BundleError, match="'a.py' is given twice"):
        archive.zip_bytes([("a.py", b"1"), ("a.py", b"2")])
