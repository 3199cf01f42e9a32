"""The source a Cloud Function (2nd gen) is built from, and the runtime it runs on.

Cloud Functions builds Python functions itself: Cloud Build installs
``requirements.txt`` into the image and functions-framework imports ``main.py``
from the source root and calls its entry point. So the source is the bundle's
files as they are, plus:

- ``main.py``, which only re-exports ``deployer_runtime.gcp.handle`` (entry
  point ``handle``);
- ``requirements.txt``: the bundle's pinned requirements plus what the entry
  itself needs: functions-framework, which serves it, and google-auth with
  requests, which check the ID token of a request that claims to come from
  Cloud Scheduler (runtimes/gcp.py). functions-framework brings neither.

The zip is deterministic (deployer.archive), so an unchanged bundle gives the
same bytes and the same hash, and a redeploy can tell nothing changed.

Each deployed zip is kept, with a record of the version's settings
(``KeptSource``), so that ``deployer rollback`` can rebuild exactly that source
without the function object that made it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deployer import archive
from deployer.errors import ProviderError
from deployer.runtimes.manifest import MANIFEST_FILE

if TYPE_CHECKING:
    from deployer.bundle import Bundle
    from deployer.spec import DeploySpec

ENTRY_POINT = "handle"
MAIN_FILE = "main.py"
REQUIREMENTS_FILE = "requirements.txt"
# Ranges, not pins: these are the platform's, not the function's, so each
# build gets the newest release with wheels for the runtime's Python.
FUNCTIONS_FRAMEWORK = "functions-framework>=3.8,<4"
# google.oauth2.id_token.verify_token with clock_skew_in_seconds, and its
# requests transport (google-auth's "requests" extra, listed as itself so that
# a user's own pin of google-auth still brings it).
GOOGLE_AUTH = "google-auth>=2.25,<3"
REQUESTS = "requests>=2.31,<3"
RUNTIME_REQUIREMENTS = (FUNCTIONS_FRAMEWORK, GOOGLE_AUTH, REQUESTS)

MAIN_SOURCE = '''\
"""Cloud Functions entry: functions-framework calls handle() for every request."""

import os
import sys

# functions-framework appends this directory to the END of sys.path, after the
# installed packages; the bundle's own modules must win over a same-named
# package, as they do on the other providers.
_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT in sys.path:
    sys.path.remove(_ROOT)
sys.path.insert(0, _ROOT)

from deployer_runtime.gcp import handle  # noqa: E402

__all__ = ["handle"]
'''

# Python minor version -> Cloud Functions runtime id. A cloudpickled function
# loads only on the minor version that pickled it, so this is an exact match.
# From Google's runtime table (docs.cloud.google.com/run/docs/runtimes/python):
# python39 was decommissioned on 2026-04-05 (no new deploys); python310 is
# deprecated since 2026-10-04 but still deployable until 2027-04-04; python315
# is in preview only.
GCP_RUNTIMES: dict[str, str] = {
    "3.10": "python310",
    "3.11": "python311",
    "3.12": "python312",
    "3.13": "python313",
    "3.14": "python314",
}


def gcp_runtime(python: str) -> str:
    """The Cloud Functions runtime id for a Python minor version: "3.11" -> "python311"."""
    runtime = GCP_RUNTIMES.get(python)
    if runtime is None:
        available = ", ".join(GCP_RUNTIMES)
        raise ProviderError(
            f"Cloud Functions has no runtime for Python {python}; it runs Python {available}. "
            "The function is pickled, so it loads only on the Python version that pickled it: "
            "deploy from one of those versions (for example in a virtual environment made "
            "with `uv venv --python 3.12`)"
        )
    return runtime


def requirements_text(bundle: Bundle) -> str:
    """The bundle's pinned requirements plus the entry's own RUNTIME_REQUIREMENTS, one a line."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = list(bundle.manifest.requirements)
    pinned = {canonicalize_name(Requirement(line).name) for line in lines}
    # The user may have pinned one of them themselves; theirs wins.
    for requirement in RUNTIME_REQUIREMENTS:
        if canonicalize_name(Requirement(requirement).name) not in pinned:
            lines.append(requirement)
    return "\n".join(lines) + "\n"


def source_files(bundle: Bundle) -> list[tuple[str, bytes]]:
    """The function's source tree: the bundle, main.py and requirements.txt, sorted by path."""
    files = dict(bundle.files)
    if MAIN_FILE in files:
        raise ProviderError(
            f"the bundle of {bundle.name!r} ships a local module {MAIN_FILE}, which is the "
            "file Cloud Functions loads its entry point from: rename that module"
        )
    files[MAIN_FILE] = MAIN_SOURCE.encode()
    files[REQUIREMENTS_FILE] = requirements_text(bundle).encode()
    return sorted(files.items())


def source_zip(bundle: Bundle) -> bytes:
    """The source archive Cloud Functions builds from; identical bundles give identical bytes."""
    return archive.zip_bytes(source_files(bundle))


# -- kept sources: what `deployer rollback` rebuilds -------------------------------

KEPT_FORMAT = 1
VERSION_FORMAT = "%Y%m%dT%H%M%S%fZ"  # a version id is when it was deployed: it sorts


@dataclass(frozen=True)
class KeptSource:
    """One deployed version of a function as deployer keeps it for rollback: this
    record (``VERSION.json``) beside the source zip it was built from
    (``VERSION.zip``), with the settings deploy gave the function.

    Nothing secret is in it: secrets= are references (the platform reads the
    values), and the alert URLs, secrets themselves, are not kept at all (a
    rollback keeps the ones deployed at the time). The zip holds only their
    digest, in its manifest.
    """

    version: str
    name: str
    code_hash: str
    deps_hash: str
    deployed_at: str  # ISO 8601, UTC
    deployed_by: str | None  # the deploying identity's email, when the credentials tell
    source_sha256: str  # of VERSION.zip: a rollback redeploys exactly these bytes
    runtime: str  # "python312": the one the version was built on
    qualname: str
    output: str
    inputs: str | None
    timeout_seconds: int
    memory_mb: int
    env: tuple[tuple[str, str], ...]
    secrets: tuple[tuple[str, str], ...]  # name -> reference, never a value
    max_concurrency: int | None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"format": KEPT_FORMAT, **asdict(self)}
        data["env"], data["secrets"] = dict(self.env), dict(self.secrets)
        return json.dumps(data, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeptSource:
        """The record ``to_json`` wrote; ValueError saying what is wrong with anything else."""
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != KEPT_FORMAT:
            raise ValueError(f"it is not a record of format {KEPT_FORMAT}")
        return cls(
            version=_field(data, "version", str),
            name=_field(data, "name", str),
            code_hash=_field(data, "code_hash", str),
            deps_hash=_field(data, "deps_hash", str),
            deployed_at=_field(data, "deployed_at", str),
            deployed_by=_field(data, "deployed_by", str, optional=True),
            source_sha256=_field(data, "source_sha256", str),
            runtime=_field(data, "runtime", str),
            qualname=_field(data, "qualname", str),
            output=_field(data, "output", str),
            inputs=_field(data, "inputs", str, optional=True),
            timeout_seconds=_field(data, "timeout_seconds", int),
            memory_mb=_field(data, "memory_mb", int),
            env=_pairs(data, "env"),
            secrets=_pairs(data, "secrets"),
            max_concurrency=_field(data, "max_concurrency", int, optional=True),
        )


def _field(data: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(key)
    if (value is None and optional) or (type(value) is kind):
        return value
    raise ValueError(f"its {key} is {value!r}, not a {kind.__name__}")


def _pairs(data: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    value = data.get(key)
    if not isinstance(value, dict) or not all(
        isinstance(name, str) and isinstance(text, str) for name, text in value.items()
    ):
        raise ValueError(f"its {key} is not a mapping of names to text")
    return tuple(sorted(value.items()))


def kept_source(
    bundle: Bundle,
    spec: DeploySpec,
    source: bytes,
    *,
    deployed_at: datetime,
    deployed_by: str | None,
) -> KeptSource:
    """The record of deploying ``source`` (``source_zip(bundle)``) with ``spec``."""
    return KeptSource(
        version=deployed_at.strftime(VERSION_FORMAT),
        name=spec.name,
        code_hash=bundle.code_hash,
        deps_hash=bundle.deps_hash,
        deployed_at=deployed_at.isoformat(timespec="microseconds"),
        deployed_by=deployed_by,
        source_sha256=hashlib.sha256(source).hexdigest(),
        runtime=gcp_runtime(bundle.manifest.python),
        qualname=bundle.manifest.function.qualname,
        output=spec.output,
        inputs=spec.inputs,
        timeout_seconds=spec.timeout_seconds,
        memory_mb=spec.memory_mb,
        env=spec.env,
        secrets=spec.secrets,
        max_concurrency=spec.max_concurrency,
    )


def check_kept_zip(kept: KeptSource, source: bytes) -> None:
    """ValueError unless ``source`` is the zip ``kept`` was deployed from: the bytes it
    recorded, whose manifest names its function and hashes."""
    if hashlib.sha256(source).hexdigest() != kept.source_sha256:
        raise ValueError("its sha256 is not the one recorded when it was deployed")
    try:
        with zipfile.ZipFile(io.BytesIO(source)) as zipped:
            manifest = json.loads(zipped.read(MANIFEST_FILE))
    except (zipfile.BadZipFile, KeyError, ValueError):
        raise ValueError(f"it is not a source zip with a {MANIFEST_FILE}") from None
    found = (
        tuple(manifest.get(key) for key in ("name", "code_hash", "deps_hash"))
        if isinstance(manifest, dict)
        else None
    )
    if found != (kept.name, kept.code_hash, kept.deps_hash):
        raise ValueError("its manifest names other code than the record")
