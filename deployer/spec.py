"""What the user asked to deploy, validated before anything is built or written."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployer.errors import ConfigError
from deployer.runtimes import storage
from deployer.triggers import Trigger

# The strictest common subset of Lambda, Cloud Functions and Azure Functions
# names, short enough to leave room for the suffixes providers add (roles,
# schedules), so a name that deploys to one provider deploys to all.
NAME_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
NAME_RULE = "1-40 characters: lowercase letters, digits and hyphens, starting with a letter"


@dataclass(frozen=True)
class DeploySpec:
    name: str
    output: str
    inputs: str | None
    triggers: tuple[Trigger, ...]
    timeout_seconds: int


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"invalid function name {name!r}: use {NAME_RULE}, e.g. 'churn-scores'")
    return name


def check_location(url: object, what: str) -> str:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{what} must be a path or URL string, got {url!r}")
    try:
        storage.check_location(url)
    except storage.StorageError as error:
        raise ConfigError(f"{what}: {error}") from None
    return url


def check_timeout(timeout_seconds: object) -> int:
    if (
        not isinstance(timeout_seconds, int)
        or isinstance(timeout_seconds, bool)
        or not (1 <= timeout_seconds <= 3600)
    ):
        raise ConfigError(
            f"timeout must be a whole number of seconds from 1 to 3600, got {timeout_seconds!r}"
        )
    return timeout_seconds
