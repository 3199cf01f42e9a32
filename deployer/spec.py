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
    # What one run may use. Locally it caps the worker's heap; the clouds get
    # it as their memory setting (Lambda's default is 1024 MB too).
    memory_mb: int = 1024
    # Webhook URLs POSTed when a run fails, fails a check, warns, drifts or
    # changes schema. Secrets: they reach the function through its environment
    # (DEPLOYER_ALERTS), never the bundle; code_hash holds only their digest.
    alerts: tuple[str, ...] = ()


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


MEMORY_RANGE_MB = (128, 32768)


def check_memory(memory_mb: object) -> int:
    low, high = MEMORY_RANGE_MB
    if (
        not isinstance(memory_mb, int)
        or isinstance(memory_mb, bool)
        or not (low <= memory_mb <= high)
    ):
        raise ConfigError(
            f"memory must be a whole number of MB from {low} to {high}, got {memory_mb!r} "
            "(e.g. memory=2048)"
        )
    return memory_mb


def check_cloud_spec(
    spec: DeploySpec,
    *,
    scheme: str,
    runs_on: str,
    store: str,
    max_timeout_seconds: int,
    max_memory_mb: int,
) -> None:
    """A cloud function reads and writes its own cloud's store, within its time limit.

    ``runs_on`` and ``store`` name them in the message, e.g. "a Lambda function"
    and "S3".
    """
    prefix = f"{scheme}://"
    if not spec.output.startswith(prefix) or not spec.output[len(prefix) :].split("/")[0]:
        raise ConfigError(
            f"output {spec.output!r}: {runs_on} writes to {store}, so use "
            f"output='{prefix}<bucket>/<prefix>'"
        )
    if spec.inputs is not None and not spec.inputs.startswith(prefix):
        raise ConfigError(
            f"inputs {spec.inputs!r}: {runs_on} reads from {store}, so upload the data set "
            f"and pass inputs='{prefix}<bucket>/<key>'"
        )
    if spec.timeout_seconds > max_timeout_seconds:
        raise ConfigError(
            f"timeout {spec.timeout_seconds} s is over the {max_timeout_seconds} s "
            f"{runs_on} may run: use timeout={max_timeout_seconds} or less"
        )
    if spec.memory_mb > max_memory_mb:
        raise ConfigError(
            f"memory {spec.memory_mb} MB is over the {max_memory_mb} MB {runs_on} may have: "
            f"use memory={max_memory_mb} or less"
        )
