"""What every provider shares: the plan's typed steps, the reconciliation that is
the same everywhere, and the plain data providers return.

A provider implements a few primitives (``deployed``, ``execute``, ``get``,
``list``, ``invoke``, ``delete``, ...); ``BaseProvider`` turns them into
plans and applies exactly what a plan says. See README, "Adding a provider".
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from deployer.errors import ConcurrentChange, ConfigError, ProviderError

if TYPE_CHECKING:
    from pathlib import Path

    from deployer.bundle import Bundle
    from deployer.console import Reporter
    from deployer.runtimes.fanout import Dispatch
    from deployer.spec import DeploySpec

# Kinds of plan step, as printed.
CREATE = "create"
INSTALL_DEPENDENCIES = "install dependencies"
UPDATE_CODE = "update code"
UPDATE_CONFIG = "update config"
ADD_TRIGGER = "add trigger"
REMOVE_TRIGGER = "remove trigger"
DELETE = "delete"


# -- steps -------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One change a plan makes. Apply executes a plan's steps in order, and only them."""

    kind: ClassVar[str] = ""
    description: str  # one line a person can read

    def __str__(self) -> str:
        return f"{self.kind}: {self.description}"


# Steps without fields of their own are plain subclasses (the dataclass is Step).
class InstallDependencies(Step):
    kind = INSTALL_DEPENDENCIES


class CreateFunction(Step):
    kind = CREATE


class UpdateCode(Step):
    kind = UPDATE_CODE


@dataclass(frozen=True)
class UpdateConfig(Step):
    """A setting of the function (``setting`` names it: memory, timeout, output...)."""

    kind: ClassVar[str] = UPDATE_CONFIG
    setting: str = ""


@dataclass(frozen=True)
class TriggerStep(Step):
    """A step on one trigger, as the manifest records it."""

    trigger: Mapping[str, Any] = field(default_factory=dict)


class AddTrigger(TriggerStep):
    kind = ADD_TRIGGER


class RemoveTrigger(TriggerStep):
    kind = REMOVE_TRIGGER


class DeleteFunction(Step):
    kind = DELETE


FUNCTION_STEPS = (CreateFunction, UpdateCode, UpdateConfig)


@dataclass(frozen=True)
class Plan:
    """What a deploy or delete will change, computed from the provider's own state.

    ``observed`` fingerprints the state the plan was made from: applying it
    after something else changed that state is refused.
    """

    name: str
    provider: str
    steps: tuple[Step, ...]
    bundle: Bundle | None = field(default=None, repr=False)
    spec: DeploySpec | None = field(default=None, repr=False)
    observed: str = field(default="", repr=False)

    @property
    def actions(self) -> tuple[Step, ...]:
        """The steps (the name plans had before steps were typed)."""
        return self.steps

    @property
    def changes_nothing(self) -> bool:
        return not self.steps

    def kinds(self) -> list[str]:
        return [step.kind for step in self.steps]

    def of_type(self, *types: type[Step]) -> list[Step]:
        return [step for step in self.steps if isinstance(step, types)]


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
class Deployed:
    """What a provider found under a name, in the shape the shared diff compares.

    ``settings`` holds the provider's own rendering of each setting (a Lambda's
    MemorySize in MB, a Cloud Function's "2Gi"), keyed like ``wanted_settings``.
    """

    code_hash: str
    deps_hash: str
    settings: Mapping[str, Any]
    triggers: tuple[dict[str, Any], ...]


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


# -- helpers every provider uses ---------------------------------------------


def describe_trigger(trigger: Mapping[str, Any]) -> str:
    """One line for a trigger as stored in a manifest or read back from a cloud.

    What a cloud holds may have been edited by hand; a plan still prints.
    """
    from deployer.errors import TriggerError
    from deployer.triggers import describe, trigger_from_dict

    try:
        return describe(trigger_from_dict(dict(trigger)))
    except TriggerError:
        return f"unreadable trigger {dict(trigger)!r}"


def trigger_changes(
    wanted: Iterable[Mapping[str, Any]], existing: Iterable[Mapping[str, Any]]
) -> list[Step]:
    """Add what is wanted and missing, remove what is deployed but no longer
    wanted (a schedule dropped from the call)."""
    wanted, existing = list(wanted), list(existing)
    added: list[Step] = [
        AddTrigger(describe_trigger(t), trigger=t) for t in wanted if t not in existing
    ]
    removed: list[Step] = [
        RemoveTrigger(describe_trigger(t), trigger=t) for t in existing if t not in wanted
    ]
    return added + removed


def is_schedule(trigger: Mapping[str, Any]) -> bool:
    return trigger.get("type") in ("cron", "every")


def schedule_prefix(name: str) -> str:
    return f"deployer-{name}-"


def schedule_id(name: str, trigger: Mapping[str, Any]) -> str:
    """The cloud name of one of ``name``'s schedules: stable for the same trigger."""
    digest = hashlib.sha256(json.dumps(dict(trigger), sort_keys=True).encode()).hexdigest()[:10]
    return f"{schedule_prefix(name)}{digest}"


def is_schedule_of(name: str, schedule_name: str) -> bool:
    """Exactly ``deployer-{name}-{10 hex}``: the schedules of "scores-v2" are not
    the schedules of "scores", although they share its prefix."""
    return (
        re.fullmatch(rf"{re.escape(schedule_prefix(name))}[0-9a-f]{{10}}", schedule_name)
        is not None
    )


def split_bucket_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` (or gs://, az://) -> ("bucket", "a/b")."""
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    return bucket, key.strip("/")


def encode_payload(payload: Any) -> Any:
    """A payload as plain JSON data: a DataFrame becomes records, timestamps ISO strings."""
    if hasattr(payload, "to_json") and hasattr(payload, "columns"):
        return json.loads(payload.to_json(orient="records", date_format="iso"))
    return payload


def invoke_body(payload: Any, params: Mapping[str, Any] | None = None) -> bytes:
    """The HTTP body of an invoke over a function URL: the payload as JSON (a
    DataFrame as records, timestamps as ISO strings); no payload, no body, which
    the runtime answers with a 400 unless the function takes no input. With
    ``params``, ``{"data": payload, "params": params}`` (runtimes/core.py
    ``split_params``)."""
    if params is not None:
        body: dict[str, Any] = {"params": dict(params)}
        if payload is not None:
            body["data"] = encode_payload(payload)
        return json.dumps(body, default=str).encode()
    if payload is None:
        return b""
    return json.dumps(encode_payload(payload), default=str).encode()


def invocation_from_reply(status: int, text: str) -> Invocation:
    """An HTTP reply of a deployed function as an Invocation; a reply that is not
    the runtime's JSON (a platform error page) becomes a failed one quoting it."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return Invocation(
            status,
            {"status": "failed", "error": {"type": f"HTTP {status}", "message": text[:500]}},
        )
    return Invocation(status, body)


def refuse_public_map(name: str, state: DeploymentState) -> None:
    """A function with a public HTTP trigger takes no map shards where shards travel
    over its URL: anyone could send one, naming files for it to read."""
    if any(t.get("type") == "http" and t.get("public") for t in state.triggers):
        raise ConfigError(
            f"{name} has a public HTTP trigger, and a public function takes no map shards "
            "(anyone could send one through its URL): map with a function deployed with "
            "Http() (authenticated)"
        )


def require_readable_buckets(
    name: str, urls: Iterable[str], state: DeploymentState, who: str
) -> None:
    """For providers whose function is granted its output's and inputs' buckets
    (GCS buckets, Azure containers): data elsewhere would fail in every shard,
    so it is refused before any runs."""
    buckets = {split_bucket_url(state.output)[0]}
    if state.inputs:
        buckets.add(split_bucket_url(state.inputs)[0])
    scheme = state.output.partition("://")[0]
    for url in urls:
        if url.partition("://")[0] != scheme or split_bucket_url(url)[0] not in buckets:
            raise ConfigError(
                f"{url} is outside what {name}'s {who} may read ({', '.join(sorted(buckets))}): "
                "deploy it with inputs= in the bucket to map, or pass a DataFrame, which is "
                "staged under its output"
            )


# What a function URL answers when no instance is free yet (Cloud Run, Azure's front end).
BUSY_STATUSES = (429, 503)


@contextlib.contextmanager
def posting_shards(
    url: str, headers: Callable[[], dict[str, str]], *, timeout: float, concurrency: int
) -> Iterator[Dispatch]:
    """A map run's dispatcher for a provider whose function is called over HTTPS:
    each shard one POST of its JSON request (``headers()`` for each, so that a
    token can be renewed), the reply's ``map`` the answer; a busy platform
    (429/503) is retried with backoff and does not count against the shard."""
    import requests

    from deployer.runtimes import fanout

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
    session.mount("https://", adapter)
    session.mount("http://", adapter)

    def dispatch(request: dict[str, Any]) -> dict[str, Any]:
        for pause in [*fanout.busy_pauses(), None]:
            try:
                response = session.post(
                    url, data=json.dumps(request), headers=headers(), timeout=timeout
                )
            except requests.RequestException as error:
                raise fanout.ShardUnavailable(type(error).__name__, str(error)) from None
            if response.status_code not in BUSY_STATUSES or pause is None:
                break
            time.sleep(pause)
        reply = invocation_from_reply(response.status_code, response.text)
        if "map" not in reply.body:
            refused = reply.body.get("error") or {}
            raise fanout.ShardUnavailable(
                str(refused.get("type") or f"HTTP {response.status_code}"),
                str(refused.get("message") or response.text[:500]),
            )
        result: dict[str, Any] = reply.body["map"]
        return result

    try:
        yield dispatch
    finally:
        session.close()


def fingerprint(state: DeploymentState | None) -> str:
    """A digest of what is deployed under a name, as ``get`` reports it."""
    data = None if state is None else asdict(state)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# -- the interface, and the base class that implements most of it -----------


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

    def require(self, name: str) -> DeploymentState:
        """``get``, or a ConfigError naming what is deployed."""

    def list(self) -> list[DeploymentState]: ...

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout_seconds: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Invocation: ...

    def plan_delete(self, name: str) -> Plan: ...

    def delete(self, plan: Plan, reporter: Reporter) -> None: ...

    def logs(self, name: str, *, lines: int = 100, run_id: str | None = None) -> str:
        """The function's last ``lines`` log lines; with ``run_id``, only that run's."""

    map_concurrency: int

    def check_map_data(self, name: str, urls: Iterable[str]) -> None: ...

    def map_dispatcher(
        self, name: str, *, concurrency: int
    ) -> contextlib.AbstractContextManager[Dispatch]:
        """Runs shards of a map run of ``name`` (see BaseProvider.map_dispatcher)."""


class BaseProvider:
    """The reconciliation every provider does the same way.

    A subclass says where it deploys (``where``, ``function_noun``), what is
    deployed (``deployed``, ``get``, ``list``), how it renders settings
    (``wanted_settings``), adds its own steps around the shared ones in
    ``plan``, and carries steps out in ``execute`` / ``execute_delete``.
    """

    name: ClassVar[str]
    preinstalled: ClassVar[frozenset[str]] = frozenset()
    function_noun: ClassVar[str] = "function"
    # The typed form of provider_options (a frozen dataclass whose fields are the
    # constructor's keyword arguments); None: the provider takes no options.
    Options: ClassVar[type | None] = None

    # -- primitives a provider implements ---------------------------------

    @property
    def where(self) -> str:
        """Where this provider deploys, for messages: "on aws in eu-west-1"."""
        return f"on {self.name}"

    def get(self, name: str) -> DeploymentState | None:
        raise NotImplementedError

    def list(self) -> builtins.list[DeploymentState]:
        raise NotImplementedError

    def deployed(self, name: str) -> Deployed | None:
        """What is deployed under ``name``; a resource deployer did not make raises."""
        raise NotImplementedError

    def wanted_settings(self, spec: DeploySpec) -> dict[str, Any]:
        """The function's settings as this provider renders them (compared to ``deployed``)."""
        return {
            "output": spec.output,
            "inputs": spec.inputs,
            "timeout": spec.timeout_seconds,
            "memory": spec.memory_mb,
        }

    def execute(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        """Carry out ``plan.steps`` in order, and nothing else."""
        raise NotImplementedError

    def delete_steps(self, name: str, state: DeploymentState) -> builtins.list[Step]:
        """Steps of a delete beyond the function and its triggers (roles, accounts)."""
        return []

    def execute_delete(self, plan: Plan, state: DeploymentState, reporter: Reporter) -> None:
        raise NotImplementedError

    def require_python(self, python: str) -> None:
        """Refuse a bundle made on a Python minor version this provider cannot run.

        The function is pickled: it loads only on the version that pickled it."""

    def require_access(self) -> None:
        """Credentials, account, region: checked when planning, never when building."""

    # How many shards of a map run go at once unless the caller says: bounded
    # well below the platform's own limit (AWS: 1,000 concurrent executions).
    map_concurrency: ClassVar[int] = 10
    # Whether a schedule with map=True can run here (its coordinator where it fires).
    scheduled_map: ClassVar[bool] = False

    @contextlib.contextmanager
    def map_dispatcher(self, name: str, *, concurrency: int) -> Iterator[Dispatch]:
        """Runs shards of a map run on ``name``: a callable from a shard request to
        the function's reply (runtimes/fanout.py), good for ``concurrency`` threads."""
        raise ProviderError(f"map runs are not supported {self.where} yet")
        yield  # pragma: no cover

    def check_map_data(self, name: str, urls: Iterable[str]) -> None:
        """Refuse data the function cannot read, before any shard runs (AWS: its role)."""

    @contextlib.contextmanager
    def applying(self, name: str) -> Iterator[None]:
        """Held while a plan for ``name`` is checked and applied (local: a file lock)."""
        yield

    # -- shared reconciliation ---------------------------------------------

    def observe(self, name: str) -> str:
        """The fingerprint of what is deployed under ``name`` now."""
        return fingerprint(self.get(name))

    def function_steps(
        self, deployed: Deployed | None, bundle: Bundle, spec: DeploySpec
    ) -> builtins.list[Step]:
        """Create, or update the code and each setting that differs."""
        if deployed is None:
            return [CreateFunction(f"{self.function_noun} {spec.name} ({bundle.code_hash[:12]})")]
        steps: list[Step] = []
        if deployed.code_hash != bundle.code_hash:
            steps.append(
                UpdateCode(f"{(deployed.code_hash or '?')[:12]} -> {bundle.code_hash[:12]}")
            )
        if deployed.deps_hash != bundle.deps_hash:
            steps.append(
                UpdateConfig(
                    f"dependencies {(deployed.deps_hash or '?')[:12]} -> {bundle.deps_hash[:12]}",
                    setting="dependencies",
                )
            )
        for setting, value in self.wanted_settings(spec).items():
            current = deployed.settings.get(setting)
            if current != value:
                steps.append(UpdateConfig(f"{setting}: {current!r} -> {value!r}", setting=setting))
        return steps

    def make_plan(
        self, bundle: Bundle, spec: DeploySpec, steps: Iterable[Step], observed: str
    ) -> Plan:
        return Plan(spec.name, self.name, tuple(steps), bundle=bundle, spec=spec, observed=observed)

    def apply(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        if plan.bundle is None or plan.spec is None:
            raise ProviderError("a deploy plan needs its bundle and spec")
        with self.applying(plan.name):
            self.require_unchanged(plan)
            if plan.changes_nothing:
                state = self.get(plan.name)
                if state is not None:
                    return state
            return self.execute(plan, reporter)

    def require_unchanged(self, plan: Plan) -> None:
        if not plan.observed:
            return  # a plan made by hand, without an observation
        if self.observe(plan.name) != plan.observed:
            raise ConcurrentChange(
                f"{plan.name} {self.where} changed after this plan was made (another deploy "
                "or delete of it ran in between): nothing was changed by this one. Run the "
                "deploy again to plan from what is there now"
            )

    def require(self, name: str) -> DeploymentState:
        """The deployed function ``name``, or an error naming what is deployed."""
        state = self.get(name)
        if state is not None:
            return state
        names = sorted(other.name for other in self.list())
        there = f"deployed there: {', '.join(names)}" if names else "nothing is deployed there yet"
        raise ConfigError(
            f"no function named {name!r} is deployed {self.where} ({there}): "
            f"see `deployer list --provider {self.name}`"
        )

    def plan_delete(self, name: str) -> Plan:
        state = self.require(name)
        steps: list[Step] = [DeleteFunction(f"{self.function_noun} {name}")]
        steps += trigger_changes([], state.triggers)
        steps += self.delete_steps(name, state)
        return Plan(name, self.name, tuple(steps), observed=fingerprint(state))

    def delete(self, plan: Plan, reporter: Reporter) -> None:
        with self.applying(plan.name):
            state = self.require(plan.name)
            self.require_unchanged(plan)
            self.execute_delete(plan, state, reporter)
        reporter.say(f"deleted {plan.name} (its outputs stay in {state.output})")
