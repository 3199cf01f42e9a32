"""Lambda's dependency artifacts: which platform a Lambda runtime is, and its layer or slim archive.

The pipeline's packaging stage for AWS, without any AWS call (``providers/aws/provider.py``
uploads what this builds). Installing, stripping and precompiling the wheels is
the same for every platform and lives in ``deployer/packaging.py``; this module
says what Lambda's platform is and how Lambda takes the tree:

    lambda_target("3.11")      which Lambda runtime, and the Amazon Linux it runs on
    dependency_artifact(...)   the tree for that runtime as a layer or slim archive,
                               cached per deps_hash
    layer_zip(...)             a layer (``python/...``), when code + layers fit 250 MB
    slim_archive(...)          one tar.zst unpacked into /tmp on cold start, when not
    decompressor_wheel(...)    what the code zip needs to decompress it (zstd before 3.14)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer import packaging
from deployer.archive import sha256_file, write_atomically, write_tar_zst, write_zip
from deployer.cache import locked
from deployer.errors import ProviderError
from deployer.packaging import Dependencies, Platform

if TYPE_CHECKING:
    from deployer.console import Reporter

# Lambda's limit for the function's code plus all its layers, unzipped. The
# zip itself can only be uploaded directly up to 50 MB; larger goes via S3.
LAYER_LIMIT_BYTES = 250 * 1024 * 1024
DIRECT_UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024

# Lambda's Python runtimes and the Amazon Linux each runs on, from
# https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html. The glibc
# decides which manylinux wheels load: python3.10 and 3.11 run on Amazon Linux 2
# (glibc 2.26), so the manylinux_2_27/2_28-only wheels that the newest numpy,
# scipy, pyarrow and scikit-learn publish do NOT load there, while python3.12+
# run on Amazon Linux 2023 (glibc 2.34). python3.9 is deprecated by Lambda
# (2025-12-15) and deployer itself needs 3.10+, so it is not offered.
AMAZON_LINUX_2 = "Amazon Linux 2"
AMAZON_LINUX_2023 = "Amazon Linux 2023"
OPERATING_SYSTEM_GLIBC = {AMAZON_LINUX_2: (2, 26), AMAZON_LINUX_2023: (2, 34)}
RUNTIME_OPERATING_SYSTEMS = {
    "3.10": AMAZON_LINUX_2,
    "3.11": AMAZON_LINUX_2,
    "3.12": AMAZON_LINUX_2023,
    "3.13": AMAZON_LINUX_2023,
    "3.14": AMAZON_LINUX_2023,
}
# Lambda's architecture names -> the machine name in wheel tags and uname.
WHEEL_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Where Lambda mounts layers: the tree's .pyc files name it as their source path.
LAYER_MOUNT = "/opt/python"
# Lambda's records of built trees in the machine's cache
# (``<cache>/lambda/<deps_hash>.json``), and the archives made of them.
CACHE_DIRECTORY = "lambda"
ARTIFACTS_CACHE_DIRECTORY = "lambda-artifacts"


@dataclass(frozen=True)
class LambdaTarget:
    """A Lambda runtime on one architecture, and the platform its wheels must load on."""

    runtime: str  # "python3.11"
    architecture: str  # Lambda's name: "x86_64" | "arm64"
    platform: Platform  # the runtime's Python, its Amazon Linux's glibc, the wheel machine

    def __str__(self) -> str:
        return str(self.platform)

    @property
    def python(self) -> str:
        return self.platform.python

    @property
    def platform_tags(self) -> tuple[str, ...]:
        return self.platform.platform_tags


def lambda_target(python: str, architecture: str = "x86_64") -> LambdaTarget:
    """The Lambda runtime for Python ``python`` ("3.11") on ``architecture``."""
    if architecture not in WHEEL_MACHINES:
        raise ProviderError(
            f"Lambda has no architecture {architecture!r}: use 'x86_64' (the default) or "
            "'arm64' (Graviton)"
        )
    operating_system = RUNTIME_OPERATING_SYSTEMS.get(python)
    if operating_system is None:
        offered = ", ".join(f"python{version}" for version in RUNTIME_OPERATING_SYSTEMS)
        raise ProviderError(
            f"Lambda has no runtime for Python {python}: it offers {offered}. A pickled "
            "function only loads on the Python version that pickled it, so deploy from one "
            "of those (for example a virtualenv made with `uv venv --python 3.12`)"
        )
    glibc = OPERATING_SYSTEM_GLIBC[operating_system]
    runtime = f"python{python}"
    return LambdaTarget(
        runtime=runtime,
        architecture=architecture,
        platform=Platform(
            python=python,
            glibc=glibc,
            machine=WHEEL_MACHINES[architecture],
            site_dir=LAYER_MOUNT,
            name=f"{runtime} on {architecture} ({operating_system}, glibc {glibc[0]}.{glibc[1]})",
        ),
    )


@dataclass(frozen=True)
class DependencyArtifact:
    """A set of dependencies built for Lambda, as it is shipped: a layer zip or a slim archive."""

    deps_hash: str
    mode: str  # "layer" | "slim"
    path: Path
    sha256: str
    unzipped_bytes: int  # of the tree, what Lambda's 250 MB limit counts
    installed: tuple[str, ...]  # "name==version", transitive ones included, sorted


def dependency_artifact(
    requirement_lines: Sequence[str],
    target: LambdaTarget,
    *,
    deps_hash: str,
    cache_dir: Path,
    reporter: Reporter,
    mode_for: Callable[[int], str],
) -> DependencyArtifact:
    """The layer zip or slim archive of ``requirement_lines`` for ``target``.

    ``mode_for(unzipped_bytes)`` says which ("layer" or "slim"), or raises. The
    tree is built in a scratch folder (``packaging.scratch_dependencies``),
    archived and removed: the cache keeps the archive
    (``cache_dir/lambda-artifacts/<deps_hash>-layer.zip|-slim.tar.zst``) and a
    record of the tree (``cache_dir/lambda/<deps_hash>.json``), not the tree's
    thousands of files. A deploy whose record and archive are there builds
    nothing; one that needs the other archive (its code grew past the layer
    limit) builds the tree again. Under a lock per deps_hash, so concurrent
    deploys build once; the archive is written before the record, and each is
    complete or absent.
    """
    lines = packaging.requirement_list(requirement_lines)
    records = cache_dir / CACHE_DIRECTORY
    record_path = records / f"{deps_hash}.json"
    with locked(records / f"{deps_hash}.lock"):
        record = packaging.read_metadata(record_path, deps_hash, lines, target.platform)
        if record is not None:
            mode = mode_for(record["unzipped_bytes"])
            found = _artifact_of(record, mode, deps_hash, cache_dir)
            if found is not None:
                return found
        with packaging.scratch_dependencies(
            lines,
            target.platform,
            deps_hash=deps_hash,
            reporter=reporter,
            alternatives=_other_runtimes(target),
        ) as dependencies:
            metadata = json.loads((dependencies.root / packaging.METADATA_FILE).read_text())
            artifacts = (record or {}).get("artifacts", {})
            try:
                mode = mode_for(dependencies.unzipped_bytes)
            except Exception:
                # Recorded all the same: deploying again learns the size without a build.
                _write_record(record_path, {**metadata, "artifacts": artifacts})
                raise
            path = _artifact_path(cache_dir, deps_hash, mode)
            with reporter.status(f"packing {mode} ({dependencies.unzipped_bytes / 1e6:.0f} MB)"):
                (layer_zip if mode == "layer" else slim_archive)(dependencies, path)
        built = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        record = {**metadata, "artifacts": {**artifacts, mode: built}}
        _write_record(record_path, record)
    found = _artifact_of(record, mode, deps_hash, cache_dir)
    assert found is not None  # just written
    return found


def _write_record(path: Path, record: dict[str, Any]) -> None:
    write_atomically(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def _artifact_path(cache_dir: Path, deps_hash: str, mode: str) -> Path:
    suffix = "-layer.zip" if mode == "layer" else f"-slim{SLIM_SUFFIX}"
    return cache_dir / ARTIFACTS_CACHE_DIRECTORY / f"{deps_hash}{suffix}"


def _artifact_of(
    record: dict[str, Any], mode: str, deps_hash: str, cache_dir: Path
) -> DependencyArtifact | None:
    """The record's ``mode`` archive, if it is there as recorded (a pruned or
    replaced one is built again)."""
    entry = record.get("artifacts", {}).get(mode)
    path = _artifact_path(cache_dir, deps_hash, mode)
    try:
        if entry is None or path.stat().st_size != entry["bytes"]:
            return None
    except FileNotFoundError:
        return None
    return DependencyArtifact(
        deps_hash=deps_hash,
        mode=mode,
        path=path,
        sha256=entry["sha256"],
        unzipped_bytes=int(record["unzipped_bytes"]),
        installed=tuple(record["installed"]),
    )


def _other_runtimes(target: LambdaTarget) -> tuple[Platform, ...]:
    """The other Lambda Pythons on the same architecture, nearest first.

    Newer ones first: python3.12+ run on Amazon Linux 2023 (glibc 2.34), where
    the manylinux_2_28 wheels of recent releases load.
    """

    current = _version(target.python)
    pythons = sorted(RUNTIME_OPERATING_SYSTEMS, key=_version)
    newer = [python for python in pythons if _version(python) > current]
    older = [python for python in reversed(pythons) if _version(python) < current]
    return tuple(lambda_target(python, target.architecture).platform for python in newer + older)


def _version(python: str) -> tuple[int, ...]:
    return tuple(int(part) for part in python.split("."))


def layer_zip(dependencies: Dependencies, path: Path) -> int:
    """A Lambda layer zip of the tree (entries ``python/...``); returns its size."""
    return write_zip([(f"python/{name}", file) for name, file in dependencies.files()], path)


# zstd level 3 on every core (bench/slim_archive.py): for a 323 MB pandas +
# pyarrow + scikit-learn tree, about 0.8 s and 93 MB on 2 cores, where gzip level
# 1 on both cores took 1.7 s for 118 MB; inflating it on cold start is about
# 0.2 s of CPU instead of gzip's 0.9 s, at any level.
SLIM_LEVEL = 3
SLIM_SUFFIX = ".tar.zst"
# The runtime inflates the slim archive before any dependency is there, so its
# decompressor ships in the code zip: the standard library's compression.zstd
# from Python 3.14, else this backport of it (a 0.5 MB wheel), built for the
# function's platform and fetched once per platform.
ZSTD_BACKPORT = "backports.zstd==1.8.0"
ZSTD_IN_STANDARD_LIBRARY = (3, 14)


def slim_archive(dependencies: Dependencies, path: Path) -> int:
    """A tar.zst of the contents of ``python/`` for slim mode; returns its size.

    The runtime unpacks it into /tmp as it downloads and puts that directory
    on sys.path, so entries are relative to ``python/``.
    """
    return write_tar_zst(dependencies.files(), path, level=SLIM_LEVEL)


def decompressor_wheel(target: LambdaTarget, cache_dir: Path) -> Path | None:
    """What the code zip must hold to decompress a slim archive on ``target``.

    Nothing from Python 3.14 on; before, backports.zstd's wheel for the target's
    platform, fetched once per platform into ``cache_dir``. A wheel is a zip with
    the package at its top, where ``from backports import zstd`` finds it, and its
    license beside: the code zip is that wheel with the bundle added, so its
    compressed entries are copied, never compressed again.
    """
    if _version(target.python) >= ZSTD_IN_STANDARD_LIBRARY:
        return None
    platform = target.platform
    name = ZSTD_BACKPORT.replace("==", "-")
    folder = cache_dir / "lambda-zstd" / f"{name}-{platform.abi}-{platform.platform_tags[0]}"
    return packaging.download_wheel(ZSTD_BACKPORT, platform, folder)
