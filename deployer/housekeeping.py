"""The machine's dependency cache, seen and pruned (`deployer cache`).

What is in ``$DEPLOYER_CACHE`` (deployer/cache.py): one uv environment per
``deps_hash`` for the local provider (``envs/``), the records of Lambda
dependency trees (``lambda/<deps_hash>.json``; earlier versions kept the trees
there) and the layers and slim archives made of them (``lambda-artifacts/``).
Each is rebuilt on demand, so removing one costs only the time to build it
again; an environment a local deployment of this home runs with is never
removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployer.cache import cache_root

LAST_USED = ".last-used"  # touched whenever an environment or tree is used
_HASH_LENGTH = 64


@dataclass(frozen=True)
class CacheItem:
    kind: str  # "environment" | "lambda dependencies" | "lambda artifact"
    deps_hash: str
    path: Path
    size_bytes: int
    last_used: float  # seconds since the epoch
    used_by: tuple[str, ...]  # local deployments of this home that run with it


def mark_used(path: Path) -> None:
    """Record that ``path`` (an environment or a dependency tree) was just used."""
    # A read-only cache still works; it only looks older than it is.
    with contextlib.suppress(OSError):
        (path / LAST_USED).touch()


def cache_items(used_by: Mapping[str, Sequence[str]]) -> list[CacheItem]:
    """Everything in the cache, largest first. ``used_by``: deps_hash -> the local
    deployments that run with that environment."""
    root = cache_root()
    found: list[CacheItem] = []
    candidates: list[tuple[str, Path, str]] = []
    if (root / "envs").is_dir():
        candidates += [
            ("environment", path, path.name) for path in (root / "envs").iterdir() if path.is_dir()
        ]
    if (root / "lambda").is_dir():
        # Records of the trees the artifacts were made from (<deps_hash>.json), and
        # the trees themselves where earlier versions of deployer kept them (<deps_hash>/).
        candidates += [
            ("lambda dependencies", path, path.name.removesuffix(".json"))
            for path in (root / "lambda").iterdir()
            if len(path.name.removesuffix(".json")) == _HASH_LENGTH
        ]
    if (root / "lambda-artifacts").is_dir():
        candidates += [
            ("lambda artifact", path, path.name.split("-", 1)[0])
            for path in (root / "lambda-artifacts").iterdir()
            if path.is_file()
        ]
    for kind, path, deps_hash in candidates:
        if deps_hash.startswith("."):
            continue  # being built right now
        users = tuple(used_by.get(deps_hash, ())) if kind == "environment" else ()
        found.append(CacheItem(kind, deps_hash, path, _size(path), _last_used(path), users))
    return sorted(found, key=lambda item: item.size_bytes, reverse=True)


def prune(
    items: Sequence[CacheItem], *, older_than_days: float, now: float | None = None
) -> list[CacheItem]:
    """Remove what no local deployment uses and nothing used for ``older_than_days``;
    returns what was removed."""
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    removed = []
    for item in items:
        if item.used_by or item.last_used > cutoff:
            continue
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        if not item.path.exists():
            removed.append(item)
    return removed


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def _last_used(path: Path) -> float:
    marker = path / LAST_USED
    try:
        return (marker if marker.exists() else path).stat().st_mtime
    except OSError:
        return 0.0
