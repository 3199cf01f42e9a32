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
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from deployer.errors import ConcurrentChange, ConfigError, ProviderError
from deployer.runtimes.core import ALERTS_VARIABLE, SECRETS_VARIABLE

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


@dataclass(frozen=True)
class Version:
    """One deployed version of a function, as ``deployer history`` lists it."""

    version: str  # the provider's own id (a Lambda version number, a timestamp)
    code_hash: str
    deps_hash: str
    deployed_at: str  # ISO 8601, UTC
    deployed_by: str | None  # who deployed it, where the cloud or machine knows
    live: bool


def choose_version(name: str, versions: Iterable[Version], to: str | None) -> Version:
    """The version ``rollback`` makes live: the one deployed before the live one, or
    the newest whose code hash starts with ``to``. ConfigError naming the choices."""
    ordered = sorted(versions, key=lambda version: version.deployed_at, reverse=True)
    live = next((version for version in ordered if version.live), None)
    kept = ", ".join(
        f"{version.code_hash[:12]} ({version.deployed_at[:16]})"
        for version in ordered
        if not version.live
    )
    if to is None:
        older = [
            version
            for version in ordered
            if not version.live and (live is None or version.deployed_at < live.deployed_at)
        ]
        if not older:
            raise ConfigError(
                f"{name} has no version before the live one to roll back to"
                + (f" (kept: {kept}; pass --to CODE_HASH)" if kept else "")
            )
        return older[0]
    if len(to) < 4:
        raise ConfigError(f"--to {to!r}: give at least 4 characters of a code hash")
    matching = [version for version in ordered if version.code_hash.startswith(to)]
    if not matching:
        raise ConfigError(
            f"{name} keeps no version with code {to}: "
            + (f"the kept ones are {kept}" if kept else "only the live version is kept")
        )
    chosen = next((version for version in matching if not version.live), matching[0])
    if chosen.live:
        raise ConfigError(f"code {to} of {name} is live already: nothing to roll back")
    return chosen


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


# The names of the user's variables (env= and secrets=) that deployer set on the
# function, comma-separated: on redeploy those are deployer's to change or
# remove, and every other variable not named DEPLOYER_* was set by someone
# else (a console, a script) and is kept.
MANAGED_VARIABLE = "DEPLOYER_MANAGED"


def managed_names(current: Mapping[str, str]) -> set[str]:
    """The names of the user's variables (env= and secrets=) deployer set, as
    MANAGED_VARIABLE in ``current`` lists them."""
    return set(filter(None, current.get(MANAGED_VARIABLE, "").split(",")))


def own_variables(spec: DeploySpec, *, secrets: bool = True) -> dict[str, str]:
    """The variables every provider sets from ``spec`` alike: the user's env=, the
    secrets' references (SECRETS_VARIABLE: never values; how deployed() shows
    secrets= back, and what core.require_secrets checks at cold start), and the
    alert webhook URLs (ALERTS_VARIABLE: secrets themselves, so never in a bundle)."""
    variables = dict(spec.env)
    if secrets and spec.secrets:
        variables[SECRETS_VARIABLE] = json.dumps(dict(spec.secrets), sort_keys=True)
    if spec.alerts:
        variables[ALERTS_VARIABLE] = json.dumps(list(spec.alerts))
    return variables


def merged_environment(
    current: Mapping[str, str], own: Mapping[str, str], user_names: Iterable[str]
) -> dict[str, str]:
    """The function's variables after a deploy: ``own`` (deployer's DEPLOYER_* ones
    and the user's env=), with MANAGED_VARIABLE naming ``user_names``, over what
    someone else set in ``current``. What deployer set before and is no longer
    wanted goes; nothing else does."""
    previously = managed_names(current)
    kept = {
        key: value
        for key, value in current.items()
        if not key.startswith("DEPLOYER_") and key not in previously
    }
    merged = {**kept, **own}
    names = sorted(set(user_names))
    if names:
        merged[MANAGED_VARIABLE] = ",".join(names)
    return merged


def user_environment(
    current: Mapping[str, str], secret_names: Iterable[str] = ()
) -> dict[str, str]:
    """The user's env= as deployed: the variables MANAGED_VARIABLE names, but the
    secrets'."""
    managed = managed_names(current) - set(secret_names)
    return {key: current[key] for key in sorted(managed) if key in current}


def secret_references(current: Mapping[str, str]) -> dict[str, str]:
    """The user's secrets= as deployed in SECRETS_VARIABLE (name -> reference)."""
    try:
        found = json.loads(current.get(SECRETS_VARIABLE) or "{}")
    except ValueError:
        return {}
    return dict(sorted(found.items())) if isinstance(found, dict) else {}


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


# -- logs ----------------------------------------------------------------------

# How often `logs --follow` asks for new lines (a provider may ask less often).
LOG_POLL_SECONDS = 1.5
# A run id begins with the time the run started (runtimes/storage.py new_run_id):
# its lines are looked for from a little before it, for clocks that differ.
RUN_ID_TIME = re.compile(r"^(\d{8}T\d{6}Z)-")
RUN_CLOCK_SKEW = timedelta(minutes=5)
# Without --since, a cloud's last lines are looked for in these windows back from
# now, the next only when the last held too few (a log may go back years).
RECENT_LOG_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30))
# Event ids a follow remembers, to drop what overlapping polls return again.
SEEN_EVENTS_LIMIT = 20_000


@dataclass(frozen=True)
class LogEvent:
    """One line (or one multi-line message) a function printed, as its log keeps it."""

    timestamp: datetime  # timezone-aware
    event_id: str  # unique in the function's log: a repeat of an overlapping poll is dropped
    text: str  # without the final line break
    stream: str = ""  # the instance that printed it (CloudWatch's log stream...): a run's own

    def to_dict(self) -> dict[str, str]:
        return {"time": self.timestamp.isoformat(), "stream": self.stream, "line": self.text}


@dataclass(frozen=True)
class LogQuery:
    """Which events of a log to read; a provider turns it into its own filter."""

    since: datetime | None = None  # at or after
    until: datetime | None = None  # at or before
    contains: str | None = None  # only events whose text contains this

    def matches(self, event: LogEvent) -> bool:
        return (
            (self.since is None or event.timestamp >= self.since)
            and (self.until is None or event.timestamp <= self.until)
            and (self.contains is None or self.contains in event.text)
        )


@dataclass(frozen=True)
class LogPage:
    """Events of a log in time order, and where the next page starts."""

    events: tuple[LogEvent, ...]
    cursor: Any  # the provider's own (a file offset, a time and a page token...)
    more: bool = False  # the next page is there now: read it without waiting


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def next_log_start(
    events: Iterable[LogEvent], start: datetime | None, floor: datetime | None, lag: timedelta
) -> datetime | None:
    """Where a time-based cursor resumes after the last page of a read: ``lag`` before
    the newest event seen (events can reach a cloud's log late; what is read again is
    dropped by its id), never before ``floor`` (the query's since), never going back."""
    times = [event.timestamp for event in events]
    if not times:
        return start
    resume = max(times) - lag
    for bound in (start, floor):
        if bound is not None and resume < bound:
            resume = bound
    return resume


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as the clouds' log APIs take it: 2026-11-30T06:00:00.000000Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 UTC time as Cloud Logging and Application Insights answer it (up to
    nanoseconds: cut to microseconds)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    moment = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return moment + timedelta(microseconds=int((fraction + "000000")[:6]))


def run_started(run_id: str) -> datetime | None:
    """When the lines of ``run_id`` may begin, from the time its id starts with."""
    match = RUN_ID_TIME.match(run_id)
    if match is None:
        return None
    started = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return started - RUN_CLOCK_SKEW


class _LogReader:
    """Reads a log from where it last stopped; never yields an event twice."""

    def __init__(
        self, provider: BaseProvider, source: Any, query: LogQuery, *, lag: timedelta
    ) -> None:
        self.provider = provider
        self.source = source
        self.query = query
        self.cursor: Any = None
        self.lag = lag
        self.seen: dict[str, datetime] = {}

    def remember(self, events: Iterable[LogEvent]) -> None:
        for event in events:
            self.seen[event.event_id] = event.timestamp
        if len(self.seen) > SEEN_EVENTS_LIMIT:
            # Only ids within the look-back of the newest can come again.
            keep_from = max(self.seen.values()) - self.lag - timedelta(minutes=1)
            self.seen = {key: at for key, at in self.seen.items() if at >= keep_from}

    def read(self) -> builtins.list[LogEvent]:
        """Every event there now that was not read before, in time order."""
        found: list[LogEvent] = []
        while True:
            page = self.provider.log_page(self.source, self.query, self.cursor)
            self.cursor = page.cursor
            for event in page.events:
                if event.event_id not in self.seen and self.query.matches(event):
                    found.append(event)
                    self.remember([event])
            if not page.more:
                break
        found.sort(key=lambda event: event.timestamp)  # stable: a page's order among equals
        return found


class _RunLines:
    """One run's lines out of log events in time order: from its "started" marker to its
    "ended" one (runtimes/core.py), on the stream that printed the marker (other
    instances run other calls meanwhile). A map run's parts mark themselves "... part N
    started", each on its own stream; a run that starts again (a retry) starts over."""

    def __init__(self, run_id: str) -> None:
        from deployer.runtimes.core import RUN_MARKER

        self.marker = re.compile(
            rf"{re.escape(RUN_MARKER)} {re.escape(run_id)} (part (\d+) )?(started|ended)"
        )
        self.contains = f"{RUN_MARKER} {run_id} "
        self.open: dict[str, set[str]] = {}  # stream -> parts started and not ended
        self.lines: list[LogEvent] = []
        self.ended = False  # the run's own "ended" marker (not a part's) was seen

    def add(self, event: LogEvent) -> bool:
        """Whether ``event`` is one of the run's lines."""
        match = self.marker.search(event.text)
        part = (match.group(2) or "") if match else ""
        if match is not None and match.group(3) == "started":
            if not part:
                self.lines, self.open, self.ended = [], {}, False
            self.open.setdefault(event.stream, set()).add(part)
        mine = bool(self.open.get(event.stream))
        if mine:
            self.lines.append(event)
        if match is not None and match.group(3) == "ended":
            self.open.get(event.stream, set()).discard(part)
            self.ended = self.ended or not part
        return mine

    def is_marker(self, event: LogEvent) -> bool:
        return self.marker.search(event.text) is not None


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

    def history(self, name: str) -> builtins.list[Version]:
        """The versions of ``name`` kept for rollback, newest first; one is live."""

    def rollback(self, name: str, to: str | None, reporter: Reporter) -> Version:
        """Make a kept version live again, without building anything; ``to``: a code
        hash (prefix), else the version deployed before the live one."""

    def logs(self, name: str, *, lines: int = 100, run_id: str | None = None) -> str:
        """The function's last ``lines`` log lines; with ``run_id``, only that run's."""

    def log_events(
        self,
        name: str,
        *,
        since: datetime | None = None,
        run_id: str | None = None,
        follow: bool = False,
        lines: int | None = None,
        poll_seconds: float | None = None,
    ) -> Iterator[LogEvent]:
        """The function's log, and with ``follow`` what it prints next (see BaseProvider)."""

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
        """The function's settings as this provider renders them (compared to ``deployed``).

        ``env`` and ``secrets`` are the user's (names and values; a secret's
        value is its reference), as ``user_environment``/``secret_references``
        read them back."""
        return {
            "output": spec.output,
            "inputs": spec.inputs,
            "timeout": spec.timeout_seconds,
            "memory": spec.memory_mb,
            "env": dict(spec.env),
            "secrets": dict(spec.secrets),
            "max concurrency": spec.max_concurrency,
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

    # -- logs: a provider reads pages of its log; the rest is done here --------

    # How late an event can reach the log after its timestamp: a follow reads
    # this far back again on every poll (repeats are dropped by event id).
    log_lag: ClassVar[timedelta] = timedelta(0)
    # How often a follow polls (a cloud's log API has a quota on reads).
    log_poll_seconds: ClassVar[float] = LOG_POLL_SECONDS

    def log_source(self, name: str) -> Any:
        """Where ``name``'s log is (a file, a log group...), read once per command;
        raises, naming what is deployed, unless ``name`` is."""
        raise ProviderError(f"deployer cannot read the logs of functions {self.where} yet")

    def log_page(self, source: Any, query: LogQuery, cursor: Any) -> LogPage:
        """A page of the events of the log at ``source`` that match ``query``, in time
        order: from the start when ``cursor`` is None, else from where the page that
        returned ``cursor`` ended. A page may repeat events of the page before (a cursor
        that is a time looks back ``log_lag`` for late ones): they are dropped by id."""
        raise NotImplementedError

    def recent_log_events(self, source: Any, count: int) -> builtins.list[LogEvent]:
        """The last ``count`` events: those of ever longer windows back from now, until
        one holds ``count`` (or the longest was read)."""
        now = utc_now()
        events: list[LogEvent] = []
        for window in RECENT_LOG_WINDOWS:
            reader = _LogReader(self, source, LogQuery(since=now - window), lag=self.log_lag)
            events = reader.read()
            if len(events) >= count:
                break
        return events[-count:]

    def logs(self, name: str, *, lines: int = 100, run_id: str | None = None) -> str:
        """The function's last ``lines`` log lines; with ``run_id``, only that run's."""
        return "".join(
            f"{event.text}\n" for event in self.log_events(name, run_id=run_id, lines=lines)
        )

    def log_events(
        self,
        name: str,
        *,
        since: datetime | None = None,
        run_id: str | None = None,
        follow: bool = False,
        lines: int | None = None,
        poll_seconds: float | None = None,
    ) -> Iterator[LogEvent]:
        """The events of ``name``'s log at or after ``since`` (default: its last
        ``lines``), or of run ``run_id`` alone; then, with ``follow``, each new one as
        it arrives, in order and once, until the caller stops (with ``run_id``: until
        the run's "ended" marker). ``lines`` keeps the last so many of what is there.

        >>> for event in provider.log_events("scores", since=an_hour_ago, follow=True):
        ...     print(event.text)
        """
        source = self.log_source(name)
        poll = self.log_poll_seconds if poll_seconds is None else poll_seconds
        if run_id is not None:
            yield from self._run_log_events(source, run_id, since, follow, lines, poll)
            return
        if since is None:
            backlog = self.recent_log_events(source, lines or 100)
            start = backlog[-1].timestamp if backlog else utc_now() - self.log_lag
            reader = _LogReader(self, source, LogQuery(since=start), lag=self.log_lag)
            reader.remember(backlog)
        else:
            reader = _LogReader(self, source, LogQuery(since=since), lag=self.log_lag)
            backlog = reader.read()
        yield from backlog[-lines:] if lines else backlog
        while follow:
            time.sleep(poll)
            yield from reader.read()

    def _run_log_events(
        self,
        source: Any,
        run_id: str,
        since: datetime | None,
        follow: bool,
        lines: int | None,
        poll: float,
    ) -> Iterator[LogEvent]:
        run = _RunLines(run_id)
        start = since or run_started(run_id)
        # Its markers first (a filter the log applies), then only the stretch they span.
        marker_query = LogQuery(since=start, contains=run.contains)
        reader = _LogReader(self, source, marker_query, lag=self.log_lag)
        markers = [event for event in reader.read() if run.is_marker(event)]
        until = None
        if markers:
            start = markers[0].timestamp
            last = run.marker.search(markers[-1].text)
            if not follow and last is not None and last.group(3) == "ended":
                until = markers[-1].timestamp
        elif not follow:
            return
        reader = _LogReader(self, source, LogQuery(since=start, until=until), lag=self.log_lag)
        for event in reader.read():
            run.add(event)
        yield from run.lines[-lines:] if lines else run.lines
        while follow and not run.ended:
            time.sleep(poll)
            for event in reader.read():
                if run.add(event):
                    yield event
                if run.ended:
                    return

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

    def history(self, name: str) -> builtins.list[Version]:
        raise ProviderError(
            f"{self.name} does not keep versions for rollback yet: deploy the code you want "
            "again instead"
        )

    def rollback(self, name: str, to: str | None, reporter: Reporter) -> Version:
        """``choose_version`` of ``history``, made live by ``make_live`` (under the
        deploy lock of ``name``, so a deploy and a rollback never interleave)."""
        with self.applying(name):
            self.require(name)
            chosen = choose_version(name, self.history(name), to)
            self.make_live(name, chosen, reporter)
        reporter.say(
            f"{name}: code {chosen.code_hash[:12]} (deployed {chosen.deployed_at[:16]}) is live "
            f"again, {self.rollback_note}"
        )
        return chosen

    # What a rollback brings back, for its closing line.
    rollback_note: ClassVar[str] = "with its settings; the triggers stay as deployed now"

    def make_live(self, name: str, version: Version, reporter: Reporter) -> None:
        raise NotImplementedError
