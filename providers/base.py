"""The small interface every provider implements, and the plain data it returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from deployer.bundle import Bundle
    from deployer.console import Reporter
    from deployer.spec import DeploySpec

# Kinds of plan action, in the order they are applied.
CREATE = "create"
INSTALL_DEPENDENCIES = "install dependencies"
UPDATE_CODE = "update code"
UPDATE_CONFIG = "update config"
ADD_TRIGGER = "add trigger"
REMOVE_TRIGGER = "remove trigger"
DELETE = "delete"


@dataclass(frozen=True)
class Action:
    kind: str
    description: str  # one line a person can read

    def __str__(self) -> str:
        return f"{self.kind}: {self.description}"


@dataclass(frozen=True)
class Plan:
    """What a deploy or delete will change, computed from the provider's own state."""

    name: str
    provider: str
    actions: tuple[Action, ...]
    bundle: Bundle | None = field(default=None, repr=False)
    spec: DeploySpec | None = field(default=None, repr=False)

    @property
    def changes_nothing(self) -> bool:
        return not self.actions

    def kinds(self) -> list[str]:
        return [action.kind for action in self.actions]


@dataclass(frozen=True)
class DeploymentState:
    """A deployed function as the provider reports it."""

    name: str
    provider: str
    url: str | None
    code_hash: str
    deps_hash: str
    output: str
    inputs: str | None
    triggers: tuple[dict[str, Any], ...]
    deployed_at: str
    qualname: str = ""


@dataclass(frozen=True)
class Invocation:
    """The reply to one invoke: the HTTP-style status and JSON body of the run."""

    http_status: int
    body: dict[str, Any]

    @property
    def run_id(self) -> str | None:
        return self.body.get("run_id")

    @property
    def status(self) -> str | None:
        return self.body.get("status")


def describe_trigger(trigger: dict[str, Any]) -> str:
    """One line for a trigger as stored in a manifest or read back from a cloud.

    What a cloud holds may have been edited by hand; a plan still prints.
    """
    from deployer.errors import TriggerError
    from deployer.triggers import describe, trigger_from_dict

    try:
        return describe(trigger_from_dict(trigger))
    except TriggerError:
        return f"unreadable trigger {trigger!r}"


def trigger_changes(
    wanted: Iterable[dict[str, Any]], existing: Iterable[dict[str, Any]]
) -> list[Action]:
    """Reconciliation, as every provider plans it: add what is wanted and missing,
    remove what is deployed but no longer wanted (a schedule dropped from the call)."""
    wanted, existing = list(wanted), list(existing)
    added = [Action(ADD_TRIGGER, describe_trigger(t)) for t in wanted if t not in existing]
    removed = [Action(REMOVE_TRIGGER, describe_trigger(t)) for t in existing if t not in wanted]
    return added + removed


class Provider(Protocol):
    name: str
    preinstalled: frozenset[str]  # distributions the provider's runtime already has

    def check(self, spec: DeploySpec) -> DeploySpec:
        """Provider-specific validation (and defaults) of what the user asked for.

        Pure: no network and no credentials, so that building works offline.
        Credentials, accounts and regions are checked when planning."""

    def write_artifacts(self, bundle: Bundle, directory: Path, reporter: Reporter) -> list[Path]:
        """Write what this provider deploys for ``bundle`` into ``directory``; no cloud call."""

    def default_output(self) -> str: ...

    def platform(self, python: str) -> str | None:
        """The platform dependencies are built for (part of deps_hash); None: this machine."""

    def plan(self, bundle: Bundle, spec: DeploySpec) -> Plan: ...

    def apply(self, plan: Plan, reporter: Reporter) -> DeploymentState: ...

    def get(self, name: str) -> DeploymentState | None: ...

    def list(self) -> list[DeploymentState]: ...

    def invoke(
        self, name: str, payload: Any = None, *, timeout_seconds: int | None = None
    ) -> Invocation: ...

    def plan_delete(self, name: str) -> Plan: ...

    def delete(self, plan: Plan, reporter: Reporter) -> None: ...

    def logs(self, name: str, *, lines: int = 100) -> str: ...
