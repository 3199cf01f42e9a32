"""A provider-neutral, content-addressed bundle and its deterministic zip.

Identical inputs give identical bytes: entries are sorted and every entry gets
the same timestamp and mode, so a rebuild of unchanged code has the same
sha256 and a provider can tell "nothing changed" without uploading anything.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from deployer import archive
from deployer.capture import Captured
from deployer.errors import BundleError
from deployer.requirements import Requirements
from deployer.runtimes.core import SOURCES_FILE
from deployer.runtimes.manifest import MANIFEST_FILE, CreatedWith, FunctionEntry, Manifest
from deployer.runtimes.quality import REFERENCE_FILE
from deployer.spec import DeploySpec
from deployer.triggers import trigger_to_dict

FUNCTION_FILE = "function.pkl"
REQUIREMENTS_FILE = "requirements.txt"
RUNTIME_PACKAGE = "deployer_runtime"
# Where the quality settings enter code_hash (not a file of the bundle).
QUALITY_KEY = "<quality settings>"
RUNTIME_DIR = Path(__file__).resolve().parent / "runtimes"


@dataclass(frozen=True)
class Bundle:
    manifest: Manifest
    files: tuple[tuple[str, bytes], ...]  # (posix path, content), sorted by path
    code_hash: str
    deps_hash: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def size(self) -> int:
        return sum(len(content) for _, content in self.files)

    def __repr__(self) -> str:
        return (
            f"Bundle(name={self.name!r}, files={len(self.files)}, size={self.size}, "
            f"code_hash={self.code_hash[:12]!r}, deps_hash={self.deps_hash[:12]!r})"
        )

    def zip_bytes(self) -> bytes:
        return archive.zip_bytes(self.files)

    def write_zip(self, path: str | Path) -> Path:
        target = Path(path)
        archive.write_zip(self.files, target)  # the same bytes as zip_bytes(), written whole
        return target

    def extract(self, directory: str | Path) -> Path:
        root = Path(directory)
        for path, content in self.files:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return root


def runtime_files() -> dict[str, bytes]:
    """The runtime package as shipped: ``deployer_runtime/*.py``."""
    files = {}
    for source in sorted(RUNTIME_DIR.glob("*.py")):
        files[f"{RUNTIME_PACKAGE}/{source.name}"] = source.read_bytes()
    if f"{RUNTIME_PACKAGE}/core.py" not in files:
        raise BundleError(f"the runtime is missing from {RUNTIME_DIR}: reinstall deployer")
    return files


def _digest(files: dict[str, bytes]) -> str:
    hasher = hashlib.sha256()
    for path in sorted(files):
        hasher.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return hasher.hexdigest()


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def build(
    captured: Captured,
    requirements: Requirements,
    spec: DeploySpec,
    *,
    metric_names: tuple[str, ...] = (),
    check_names: tuple[str, ...] = (),
    quality: dict[str, Any] | None = None,
    reference: bytes | None = None,
    python: str | None = None,
    platform: str | None = None,
) -> Bundle:
    """``quality``: the settings runtimes/quality.py reads; ``reference``: the
    deploy-time reference profile (reference.json). Both are part of code_hash."""
    python = python or python_version()
    platform = platform or sysconfig.get_platform().replace("-", "_").replace(".", "_")
    code_files: dict[str, bytes] = {FUNCTION_FILE: captured.pickle, **runtime_files()}
    for module in captured.local_modules:
        path = PurePosixPath(module.path)
        if (
            path.is_absolute()
            or ".." in path.parts
            or path.parts[0]
            in (
                RUNTIME_PACKAGE,
                FUNCTION_FILE,
                MANIFEST_FILE,
                REQUIREMENTS_FILE,
                REFERENCE_FILE,
                SOURCES_FILE,
            )
        ):
            raise BundleError(
                f"local module {module.name!r} would be written to {module.path!r}, which "
                "clashes with the bundle's own files: rename the module"
            )
        code_files[str(path)] = module.source
    if captured.source_lines:
        code_files[SOURCES_FILE] = json.dumps(captured.source_lines, sort_keys=True).encode()
    quality = dict(quality or {})
    if reference is not None:
        code_files[REFERENCE_FILE] = reference
        quality["reference"] = REFERENCE_FILE
    else:
        quality["reference"] = None
    requirement_lines = requirements.lines()
    deps_hash = hashlib.sha256(
        json.dumps(
            {"python": python, "platform": platform, "requirements": requirement_lines},
            sort_keys=True,
        ).encode()
    ).hexdigest()
    # Bounds, severities and thresholds change what a run reports: they are code.
    quality_bytes = json.dumps(quality, sort_keys=True).encode()
    code_hash = _digest({**code_files, QUALITY_KEY: quality_bytes})
    import cloudpickle

    from deployer import __version__

    manifest = Manifest(
        name=spec.name,
        python=python,
        platform=platform,
        function=FunctionEntry(
            file=FUNCTION_FILE,
            sha256=hashlib.sha256(captured.pickle).hexdigest(),
            qualname=captured.qualname,
            signature=captured.signature,
            takes_input=captured.takes_input,
            requires_input=captured.requires_input,
            input_kind=captured.input_kind,
            params=captured.params,
        ),
        source=captured.source,
        requirements=tuple(requirement_lines),
        local_modules=tuple(module.path for module in captured.local_modules),
        inputs=spec.inputs,
        output=spec.output,
        triggers=tuple(trigger_to_dict(trigger) for trigger in spec.triggers),
        timeout_seconds=spec.timeout_seconds,
        metrics=tuple(metric_names),
        checks=tuple(check_names),
        quality=quality,
        code_hash=code_hash,
        deps_hash=deps_hash,
        created_with=CreatedWith(
            deployer=__version__,
            cloudpickle=cloudpickle.__version__,
            python=python_version(),
        ),
    )
    files = dict(code_files)
    files[MANIFEST_FILE] = manifest.to_json()
    files[REQUIREMENTS_FILE] = ("\n".join(requirement_lines) + "\n").encode()
    return Bundle(
        manifest=manifest,
        files=tuple(sorted(files.items())),
        code_hash=code_hash,
        deps_hash=deps_hash,
    )
