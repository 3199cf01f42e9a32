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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployer import archive
from deployer.errors import ProviderError

if TYPE_CHECKING:
    from deployer.bundle import Bundle

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
