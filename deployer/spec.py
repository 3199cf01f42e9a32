"""What the user asked to deploy, validated before anything is built or written."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployer.errors import ConfigError
from deployer.runtimes import storage
from deployer.triggers import Trigger

# The strictest common subset of Lambda, Cloud Functions and Azure Functions
# names, short enough to leave room for the suffixes providers add (roles,
# schedules), so a name that deploys to one provider deploys to all.
NAME_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
NAME_RULE = "1-40 characters: lowercase letters, digits and hyphens, starting with a letter"


# How many deployed versions are kept for rollback unless the user says.
DEFAULT_KEEP_VERSIONS = 5


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
    # Plain settings the function reads from its environment (NAME -> text),
    # sorted by name. Not secrets: they show in plans and the function's settings.
    env: tuple[tuple[str, str], ...] = ()
    # NAME -> a reference to a value in the provider's secret store (AWS
    # Secrets Manager / SSM Parameter Store, Google Secret Manager, Azure Key
    # Vault; locally the environment or a .env file), sorted by name. The value
    # is read where the function runs, at its cold start: only the reference
    # is ever in a plan, setting or record, and the function's identity may
    # read exactly these secrets.
    secrets: tuple[tuple[str, str], ...] = ()
    # At most this many runs at once (None: the platform's default).
    max_concurrency: int | None = None
    # How many deployed versions are kept for rollback, the live one included.
    keep_versions: int = DEFAULT_KEEP_VERSIONS


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


# Names a user's variable may not take: deployer's own, and what the runtimes
# themselves set (each provider adds its platform's, see Provider.check).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV_PREFIXES = ("DEPLOYER_",)
RESERVED_ENV_NAMES = frozenset({"PATH", "PYTHONPATH", "HOME", "TZ", "LANG"})


def check_env(env: object, what: str = "env") -> tuple[tuple[str, str], ...]:
    """``env=`` (or ``secrets=``) as sorted (name, text) pairs; ConfigError naming the
    first bad one. Only names are quoted: a secret's reference is fine to show,
    but a value passed here by mistake must not end up in an error log."""
    if env is None:
        return ()
    if not isinstance(env, Mapping):
        raise ConfigError(
            f'{what}= must be a dict of NAME -> text, e.g. {what}={{"LOG_LEVEL": "info"}}, '
            f"got {type(env).__name__}"
        )
    pairs = []
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ConfigError(
                f"{what}=: {name!r} is not an environment variable name: use letters, digits "
                "and underscores, not starting with a digit (e.g. DB_URL)"
            )
        if name.startswith(RESERVED_ENV_PREFIXES) or name in RESERVED_ENV_NAMES:
            raise ConfigError(
                f"{what}=: {name} is set by deployer or the runtime itself: choose another name"
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"{what}=: the value of {name} must be text (environment variables are "
                f"strings), got {type(value).__name__}: write str(...) of it"
            )
        if what == "secrets" and not value.strip():
            raise ConfigError(f"secrets=: {name} has an empty reference")
        pairs.append((name, value))
    return tuple(sorted(pairs))


def check_settings(env: tuple[tuple[str, str], ...], secrets: tuple[tuple[str, str], ...]) -> None:
    both = sorted({name for name, _ in env} & {name for name, _ in secrets})
    if both:
        raise ConfigError(
            f"{', '.join(both)} is in both env= and secrets=: a variable has one value; keep it "
            "in secrets= if it is one"
        )


def check_max_concurrency(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not (1 <= value <= 1000):
        raise ConfigError(
            f"max_concurrency must be a whole number of runs from 1 to 1000, or None for the "
            f"platform's default, got {value!r}"
        )
    return value


def check_keep_versions(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not (1 <= value <= 100):
        raise ConfigError(
            f"keep_versions must be a whole number from 1 (no rollback) to 100, got {value!r}"
        )
    return value


def check_params_json(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``params`` as JSON data; which names and kinds the function takes is checked
    by the run itself (against the deployed signature) before anything runs."""
    if params is None:
        return None
    if not isinstance(params, Mapping) or not all(isinstance(key, str) for key in params):
        raise ConfigError(
            f'params must be a dict of parameter names to values, e.g. {{"threshold": 0.7}}, '
            f"got {params!r:.80}"
        )
    try:
        return dict(json.loads(json.dumps(dict(params), allow_nan=False)))
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"params must be plain JSON values (numbers, strings, true/false, null, lists, "
            f"dicts): {error}"
        ) from None


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
