"""The machine's cache of built dependencies (uv environments, Lambda layers):
where it is, and the lock that makes building into it safe.

Shared by every project on the machine, keyed by ``deps_hash``: a set of
dependencies is installed once, whoever asks first. ``DEPLOYER_CACHE``
overrides the location (tests point it at a temporary directory).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    default = Path.home() / ".cache" / "deployer"
    return Path(os.environ.get("DEPLOYER_CACHE", default)).resolve()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), across processes.

    Two deploys needing the same dependencies then build them once: the second
    waits, then finds the finished build.
    """
    fcntl = posix_locks()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def posix_locks() -> Any:
    """The fcntl module; on a system without it, the error says which systems work."""
    try:
        import fcntl
    except ImportError:
        from deployer.errors import ConfigError

        raise ConfigError(
            f"the local provider and the dependency cache run on Linux and macOS, not on "
            f"{sys.platform}: use WSL 2 on Windows, or deploy to a cloud provider from CI"
        ) from None
    return fcntl
