"""The public entry points: deploy(), plan(), build(), and the Deployment they return.

Each is the pipeline stopped at a different stage:
capture -> requirements -> bundle -> plan -> apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.errors import (
    CheckFailed,
    ConfigError,
    QualityWarning,
    RunError,
    SchemaChangeWarning,
)
from deployer.quality import (
    Check,
    Drift,
    Metric,
    check_alerts,
    quality_config,
    reference_json,
    reference_profile,
)
from deployer.registry import options_dict
from deployer.spec import (
    DEFAULT_KEEP_VERSIONS,
    DeploySpec,
    check_env,
    check_keep_versions,
    check_location,
    check_max_concurrency,
    check_memory,
    check_name,
    check_params_json,
    check_settings,
    check_timeout,
)
from deployer.triggers import Trigger, validate_triggers

if TYPE_CHECKING:
    import pandas as pd

    from deployer.bundle import Bundle
    from deployer.console import Reporter
    from deployer.fanout import MapRun
    from deployer.providers.base import Invocation, Plan, Provider, Version
    from deployer.requirements import Requirements

DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_MEMORY_MB = 1024


@dataclass(frozen=True)
class Built:
    """The pipeline stopped before the provider: what would be deployed."""

    bundle: Bundle
    requirements: Requirements
    spec: DeploySpec
    provider: str
    provider_options: Mapping[str, Any] = field(default_factory=dict)
    # Planning accepts inputs that do not exist yet (see plan_built); building
    # never reaches the store, so it does not check them either way.
    allow_missing_inputs: bool = False
    # The provider instance that validated ``spec``: planning and applying reuse
    # it, with the credentials, clients and account it already looked up.
    target: Provider | None = field(default=None, repr=False, compare=False)
    # The function itself, in this process: planning a redeploy calls it on a
    # sample of inputs to see whether the output's columns change.
    function: Callable[..., Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Deployment:
    """A deployed function. Methods reach the provider, which holds the truth."""

    name: str
    provider: str
    url: str | None
    output: str
    code_hash: str
    deps_hash: str
    triggers: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    # Where the provider needs them to find the function again (GCP project
    # and region, AWS architecture), the options it was deployed with.
    provider_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def invoke(
        self,
        data: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: int | None = None,
    ) -> Any:
        """Run the function now (trigger ``manual``) and return its predictions.

        ``data`` is a DataFrame or a JSON-able value; the result is a DataFrame
        (or None when the function returned nothing). ``params`` sets keyword-only
        parameters of the function for this run (``{"threshold": 0.7}``); the run
        checks them against the signature and records them. A failed run raises
        RunError; a request the function refuses (a wrong parameter) ConfigError.
        """
        invocation = invoke(
            self.name,
            data,
            params=params,
            provider=self.provider,
            timeout=timeout,
            provider_options=self.provider_options,
        )
        return _predictions(invocation, self.name)

    def map(
        self,
        data: Any,
        *,
        concurrency: int | None = None,
        rows_per_shard: int | None = None,
        shard_mb: float | None = None,
        retries: int = 2,
        failure_budget: int = 0,
        progress: bool = True,
        params: Mapping[str, Any] | None = None,
    ) -> MapRun:
        """Score ``data`` (Parquet/CSV files, a folder or prefix, or a DataFrame) over
        many concurrent invocations, committed as one run; see ``deployer.map``."""
        from deployer.fanout import run_map

        return run_map(
            self.name,
            data,
            provider=self.provider,
            provider_options=self.provider_options,
            concurrency=concurrency,
            rows_per_shard=rows_per_shard,
            shard_mb=shard_mb,
            retries=retries,
            failure_budget=failure_budget,
            progress=progress,
            params=params,
        )

    def runs(self, *, last: int | None = None) -> pd.DataFrame:
        from deployer.store import read_runs

        return read_runs(self.name, output=self.output, last=last)

    def outputs(self, *, last: int | None = None) -> pd.DataFrame:
        from deployer.store import read_outputs

        return read_outputs(self.name, output=self.output, last=last)

    def quality(self, *, last: int | None = None) -> pd.DataFrame:
        """Drift scores, verdicts and schema changes per run and column (read_quality)."""
        from deployer.quality import read_quality

        return read_quality(self.name, output=self.output, last=last)

    def report(self, *, last: int = 100, path: str | Path | None = None) -> Path | None:
        """The run report: shown inline in Jupyter; elsewhere written to ``path``
        (default ``{name}-report.html``), whose location is returned."""
        from deployer.report import report_html, write_report

        if path is None and _in_notebook():
            from IPython.display import HTML, display

            document = report_html(
                self.name,
                output=self.output,
                provider=self.provider,
                provider_options=self.provider_options,
                last=last,
            )
            # In a frame of its own: the page's styles and script stay out of the notebook's.
            display(HTML(_framed(document)))
            return None
        return write_report(
            self.name,
            path,
            output=self.output,
            provider=self.provider,
            provider_options=self.provider_options,
            last=last,
        )

    def logs(self, *, lines: int = 100) -> str:
        from deployer.registry import get_provider

        return get_provider(self.provider, self.provider_options).logs(self.name, lines=lines)

    def delete(self, *, quiet: bool = False) -> None:
        delete(
            self.name, provider=self.provider, quiet=quiet, provider_options=self.provider_options
        )


def _reporter(quiet: bool) -> Reporter:
    from deployer.console import Reporter

    return Reporter(quiet=quiet)


LARGE_PICKLE_BYTES = 50 * 2**20  # above this, deploy suggests loading the model from storage


def build(
    function: Callable[..., Any],
    *,
    name: str,
    provider: str = "local",
    triggers: Trigger | Sequence[Trigger] = (),
    inputs: str | None = None,
    output: str | None = None,
    metrics: Mapping[str, Callable[[Any], Any] | Metric] | None = None,
    checks: Mapping[str, Callable[[Any], Any] | Check] | None = None,
    requirements: Sequence[str] = (),
    timeout: int = DEFAULT_TIMEOUT_SECONDS,
    memory: int = DEFAULT_MEMORY_MB,
    provider_options: Mapping[str, Any] | None = None,
    reference: Any = None,
    drift: Drift | bool | None = None,
    alerts: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    max_concurrency: int | None = None,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    allow_missing_inputs: bool = False,
) -> Built:
    """Capture, pin and bundle ``function`` without touching any provider.

    Everything the user passed is validated here, before anything is written,
    including that the function can be called the way every run will call it.
    Offline: whether ``inputs`` exist and ``output`` is writable is checked when
    planning (plan_built), where ``allow_missing_inputs`` applies.
    """
    from deployer.bundle import build as build_bundle
    from deployer.bundle import python_version
    from deployer.capture import capture
    from deployer.preflight import check_signature
    from deployer.registry import get_provider
    from deployer.requirements import resolve

    check_name(name)
    checked_triggers = validate_triggers(triggers)
    target = get_provider(provider, provider_options)
    spec = DeploySpec(
        name=name,
        output=check_location(output or target.default_output(), "output"),
        inputs=None if inputs is None else check_location(inputs, "inputs"),
        triggers=checked_triggers,
        timeout_seconds=check_timeout(timeout),
        memory_mb=check_memory(memory),
        alerts=check_alerts(alerts),
        env=check_env(env),
        secrets=check_env(secrets, "secrets"),
        max_concurrency=check_max_concurrency(max_concurrency),
        keep_versions=check_keep_versions(keep_versions),
    )
    check_settings(spec.env, spec.secrets)
    spec = target.check(spec)
    _check_map_schedules(spec, target)
    quality = quality_config(metrics, checks, drift, alerts=spec.alerts)
    reference_bytes = None
    profile = reference_profile(reference)
    if profile is not None:
        reference_bytes = reference_json(profile)
    captured = capture(function, metrics=quality.metric_functions, checks=quality.check_functions)
    if len(captured.pickle) > LARGE_PICKLE_BYTES:
        import warnings

        warnings.warn(
            f"{captured.qualname}() pickles to {len(captured.pickle) / 2**20:.0f} MB (the model "
            "it closes over, most likely): every cold start downloads and unpickles it, and "
            "Lambda's code limit is 250 MB. Store the model in object storage and load it "
            "once per cold start instead (e.g. joblib.load of a file next to the output)",
            UserWarning,
            stacklevel=_callers_level(),
        )
    check_signature(function, captured, spec)
    pinned = resolve(captured, user_requirements=requirements, preinstalled=target.preinstalled)
    bundle = build_bundle(
        captured,
        pinned,
        spec,
        platform=target.platform(python_version()),
        metric_names=tuple(quality.metric_functions),
        check_names=tuple(quality.check_functions),
        quality=quality.settings,
        reference=reference_bytes,
    )
    return Built(
        bundle=bundle,
        requirements=pinned,
        spec=spec,
        provider=provider,
        provider_options=options_dict(provider_options),
        allow_missing_inputs=allow_missing_inputs,
        target=target,
        function=function,
    )


def write_artifacts(
    built: Built, directory: str | Path = ".", *, quiet: bool = False
) -> list[Path]:
    """Write what ``built``'s provider deploys (bundle zip, Lambda code zip and layer,
    GCP source zip) into ``directory``. Needs no credentials and calls no cloud.

    >>> deployer.write_artifacts(deployer.build(predict, name="scores", provider="gcp"), "dist")
    [PosixPath('dist/scores-3f9a...-source.zip')]
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    return _target(built).write_artifacts(built.bundle, target, _reporter(quiet))


def plan(
    function: Callable[..., Any],
    *,
    name: str,
    provider: str = "local",
    triggers: Trigger | Sequence[Trigger] = (),
    inputs: str | None = None,
    output: str | None = None,
    metrics: Mapping[str, Callable[[Any], Any] | Metric] | None = None,
    checks: Mapping[str, Callable[[Any], Any] | Check] | None = None,
    requirements: Sequence[str] = (),
    timeout: int = DEFAULT_TIMEOUT_SECONDS,
    memory: int = DEFAULT_MEMORY_MB,
    provider_options: Mapping[str, Any] | None = None,
    reference: Any = None,
    drift: Drift | bool | None = None,
    alerts: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    max_concurrency: int | None = None,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    allow_missing_inputs: bool = False,
    quiet: bool = False,
) -> Plan:
    """What deploy() with the same arguments would change, from the provider's state;
    changes nothing (the check that ``output`` is writable writes a test object
    and deletes it).

    >>> deployer.plan(predict, name="churn-scores", triggers=[Cron("0 6 * * *")]).actions
    """
    built = build(
        function,
        name=name,
        provider=provider,
        triggers=triggers,
        inputs=inputs,
        output=output,
        metrics=metrics,
        checks=checks,
        requirements=requirements,
        timeout=timeout,
        memory=memory,
        provider_options=provider_options,
        reference=reference,
        drift=drift,
        alerts=alerts,
        env=env,
        secrets=secrets,
        max_concurrency=max_concurrency,
        keep_versions=keep_versions,
        allow_missing_inputs=allow_missing_inputs,
    )
    return plan_built(built, reporter=_reporter(quiet))


def plan_built(built: Built, *, reporter: Reporter) -> Plan:
    """Show the requirements, compute the plan from the provider's state, check what
    the runs will read and write, show the plan."""
    reporter.requirements(built.requirements)
    computed = _target(built).plan(built.bundle, built.spec)
    _check_locations(built)
    reporter.plan(computed)
    _warn_on_output_schema_change(built, computed)
    return computed


def _warn_on_output_schema_change(built: Built, computed: Plan) -> None:
    """New code whose output columns differ from the last run's: say so before applying."""
    from deployer.preflight import output_schema_change
    from deployer.providers.base import CreateFunction, UpdateCode

    if built.function is None or not computed.of_type(UpdateCode, CreateFunction):
        return
    change = output_schema_change(built.function, built.spec)
    if change is not None:
        import warnings

        warnings.warn(
            f"{built.spec.name}: {change}", SchemaChangeWarning, stacklevel=_callers_level()
        )


# Set while the CLI imports the user's module to find the function it names.
_importing: list[str] = []


@contextmanager
def importing(path: str) -> Iterator[None]:
    """While the CLI imports ``path``, deploy/apply/delete refuse: a command that
    only reads the module (build, or deploy with its own options) must not deploy."""
    _importing.append(path)
    try:
        yield
    finally:
        _importing.pop()


def _not_while_importing(action: str) -> None:
    if _importing:
        raise ConfigError(
            f"the module calls deployer.{action}() when imported, so reading it would "
            f'{action}: put the call under `if __name__ == "__main__":` (then `python '
            f"{Path(_importing[-1]).name}` still {action}s) and run the command again"
        )


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (which displays HTML), not a terminal."""
    import sys

    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _framed(document: str) -> str:
    import html

    return (
        f'<iframe sandbox="allow-scripts" srcdoc="{html.escape(document, quote=True)}" '
        'style="width: 100%; height: 900px; border: 1px solid #ddd"></iframe>'
    )


def _callers_level() -> int:
    """The stacklevel of the first frame outside deployer: warnings name the user's line."""
    import sys

    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("deployer"):
        frame = frame.f_back
        level += 1
    return level


def _check_locations(built: Built) -> None:
    """Refuse inputs a run could not read and an output it could not write.

    After the provider's plan, which names missing credentials or a wrong
    account better than a store's refusal would; before anything is uploaded
    or changed. Uses the deploying identity's access, as a stand-in for the
    function's.
    """
    from deployer.preflight import check_inputs, check_output_writable

    spec = built.spec
    if spec.inputs is not None:
        check_inputs(spec.inputs, allow_missing=built.allow_missing_inputs)
    check_output_writable(spec.output, spec.name)


def _target(built: Built) -> Provider:
    if built.target is not None:
        return built.target
    from deployer.registry import get_provider

    return get_provider(built.provider, built.provider_options)


def deploy(
    function: Callable[..., Any],
    *,
    name: str,
    provider: str = "local",
    triggers: Trigger | Sequence[Trigger] = (),
    inputs: str | None = None,
    output: str | None = None,
    metrics: Mapping[str, Callable[[Any], Any] | Metric] | None = None,
    checks: Mapping[str, Callable[[Any], Any] | Check] | None = None,
    requirements: Sequence[str] = (),
    timeout: int = DEFAULT_TIMEOUT_SECONDS,
    memory: int = DEFAULT_MEMORY_MB,
    provider_options: Mapping[str, Any] | None = None,
    reference: Any = None,
    drift: Drift | bool | None = None,
    alerts: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    max_concurrency: int | None = None,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    allow_missing_inputs: bool = False,
    quiet: bool = False,
) -> Deployment:
    """Deploy ``function`` as a scheduled and/or HTTP-triggered function.

    Before anything is uploaded or changed, what would fail every run is
    refused: a signature the run's call does not fit, ``inputs`` that do not
    exist or are not Parquet/CSV, an ``output`` that cannot be written (checked
    by writing and deleting a test object under ``{output}/{name}/``). Pass
    ``allow_missing_inputs=True`` for a data set that is only written after
    the deploy.

    ``env`` sets plain environment variables of the function; ``secrets``
    sets variables from the provider's secret store, by reference (AWS
    ``secretsmanager:NAME`` or ``ssm:/PATH``, GCP ``projects/P/secrets/S``,
    Azure ``https://VAULT.vault.azure.net/secrets/S``, local ``env:VAR``):
    read where the function runs, never written into the bundle, a plan or a
    record, and readable by the function's identity and no other. Variables
    set on the function outside deployer are kept on redeploy.
    ``max_concurrency`` caps how many runs happen at once. ``keep_versions``
    deployed versions (the live one included) are kept for ``rollback``.

    >>> d = deployer.deploy(predict, name="churn-scores",
    ...                     triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()],
    ...                     inputs="features.parquet",
    ...                     metrics={"mean_score": lambda out: out.score.mean()})
    >>> d.invoke(features).head()
    """
    _not_while_importing("deploy")
    built = build(
        function,
        name=name,
        provider=provider,
        triggers=triggers,
        inputs=inputs,
        output=output,
        metrics=metrics,
        checks=checks,
        requirements=requirements,
        timeout=timeout,
        memory=memory,
        provider_options=provider_options,
        reference=reference,
        drift=drift,
        alerts=alerts,
        env=env,
        secrets=secrets,
        max_concurrency=max_concurrency,
        keep_versions=keep_versions,
        allow_missing_inputs=allow_missing_inputs,
    )
    return apply_built(built, reporter=_reporter(quiet))


def apply(
    plan: Plan,
    *,
    provider_options: Mapping[str, Any] | Any | None = None,
    quiet: bool = False,
) -> Deployment:
    """Carry out a plan from :func:`plan` exactly: its steps, in order, and nothing else.

    If what the plan was made from changed since (another deploy of the same
    name ran), nothing is changed and :class:`ConcurrentChange` is raised.

    >>> planned = deployer.plan(predict, name="churn-scores", provider="aws", output=...)
    >>> print(*planned.steps, sep="\n")   # review it
    >>> deployer.apply(planned)
    """
    _not_while_importing("apply")
    from deployer.registry import get_provider

    if plan.bundle is None:
        raise ConfigError("apply() takes a deploy plan from deployer.plan(), not a delete plan")
    state = get_provider(plan.provider, provider_options).apply(plan, _reporter(quiet))
    return _deployment(state, provider_options)


def _listening(url: str) -> bool:
    """Whether something accepts connections at ``url``'s host and port."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 80), timeout=0.5):
            return True
    except OSError:
        return False


def apply_built(built: Built, *, reporter: Reporter) -> Deployment:
    computed = plan_built(built, reporter=reporter)
    state = _target(built).apply(computed, reporter)
    if state.url:
        reporter.say(f"[bold]{state.name}[/] is deployed: {state.url}")
        if built.provider == "local" and not _listening(state.url):
            reporter.say(
                "  nothing answers there yet: start `deployer serve` to serve HTTP triggers "
                "and fire schedules (d.invoke() works without it)"
            )
    else:
        reporter.say(f"[bold]{state.name}[/] is deployed")
    return _deployment(state, built.provider_options)


def _deployment(state: Any, provider_options: Mapping[str, Any] | None = None) -> Deployment:
    return Deployment(
        name=state.name,
        provider=state.provider,
        url=state.url,
        output=state.output,
        code_hash=state.code_hash,
        deps_hash=state.deps_hash,
        triggers=state.triggers,
        provider_options=options_dict(provider_options),
    )


def get(
    name: str, *, provider: str = "local", provider_options: Mapping[str, Any] | None = None
) -> Deployment:
    from deployer.registry import get_provider

    state = get_provider(provider, provider_options).get(name)
    if state is None:
        raise ConfigError(f"no function named {name!r} is deployed on {provider}")
    return _deployment(state, provider_options)


def list_deployments(
    *, provider: str = "local", provider_options: Mapping[str, Any] | None = None
) -> list[Deployment]:
    from deployer.registry import get_provider

    target = get_provider(provider, provider_options)
    return [_deployment(state, provider_options) for state in target.list()]


def invoke(
    name: str,
    data: Any = None,
    *,
    params: Mapping[str, Any] | None = None,
    provider: str = "local",
    timeout: int | None = None,
    provider_options: Mapping[str, Any] | None = None,
) -> Invocation:
    from deployer.registry import get_provider

    target = get_provider(provider, provider_options)
    return target.invoke(name, data, timeout_seconds=timeout, params=check_params_json(params))


def history(
    name: str, *, provider: str = "local", provider_options: Mapping[str, Any] | None = None
) -> list[Version]:
    """The deployed versions of ``name`` kept for rollback, newest first; one is live.

    >>> [(v.code_hash[:12], v.deployed_at, v.live) for v in deployer.history("churn-scores")]
    """
    from deployer.registry import get_provider

    return get_provider(provider, provider_options).history(name)


def rollback(
    name: str,
    *,
    to: str | None = None,
    provider: str = "local",
    provider_options: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> Version:
    """Make a kept version of ``name`` live again, without your function or a new
    build of it: the one deployed before the live one, or the newest whose code
    hash starts with ``to``. AWS moves its alias, local its entry; GCP and Azure
    publish the kept artifact again. Code, dependencies and settings come back;
    the triggers stay as deployed now, and a rollback never grants access the
    function does not have now. The next deploy deploys as usual.

    >>> deployer.rollback("churn-scores")  # the previous version
    """
    from deployer.registry import get_provider

    _not_while_importing("rollback")
    return get_provider(provider, provider_options).rollback(name, to, _reporter(quiet))


def delete(
    name: str,
    *,
    provider: str = "local",
    quiet: bool = False,
    provider_options: Mapping[str, Any] | None = None,
) -> Plan:
    from deployer.registry import get_provider

    _not_while_importing("delete")
    target = get_provider(provider, provider_options)
    reporter = _reporter(quiet)
    computed = target.plan_delete(name)
    reporter.plan(computed)
    target.delete(computed, reporter)
    return computed


def _check_map_schedules(spec: DeploySpec, target: Provider) -> None:
    """A schedule with map=True fans the inputs out where the schedule fires."""
    mapped = [trigger for trigger in spec.triggers if getattr(trigger, "map", False)]
    if not mapped:
        return
    if not spec.inputs:
        raise ConfigError(
            f"{mapped[0]!r} with map=True fans the inputs data set out over many invocations, "
            "and there is none: set inputs= to the Parquet file or prefix the schedule scores"
        )
    if not getattr(target, "scheduled_map", False):
        raise ConfigError(
            f"schedules with map=True do not run on {target.name} yet (their coordinator "
            "runs in the function, on local and aws): schedule without map=True, and fan "
            f"out from a machine with `deployer map {spec.name} {spec.inputs}`"
        )


def _predictions(invocation: Invocation, name: str) -> Any:
    body = invocation.body
    if invocation.http_status >= 400:
        error = body.get("error") or {}
        run_id = body.get("run_id")
        if run_id is None and error.get("type") == "BadRequest":
            raise ConfigError(f"{name} refused the request: {error.get('message')}")
        where = (
            f" (its record and traceback: deployer.read_run({name!r}, {run_id!r}) or "
            f"`deployer runs {name} {run_id}`)"
            if run_id
            else ""
        )
        raise RunError(f"run {run_id} failed: {error.get('type')}: {error.get('message')}{where}")
    predictions = body.get("predictions")
    frame = None
    if predictions is not None:
        import pandas as pd

        frame = pd.DataFrame.from_records(predictions)
    reasons = list(body.get("quality") or [])
    where = f"see `deployer runs {name} {body.get('run_id')}`"
    if body.get("status") == "check_failed":
        raise CheckFailed(
            f"run {body.get('run_id')} failed its checks: {'; '.join(reasons)} ({where}); "
            "its predictions are on this error's .predictions",
            predictions=frame,
            reasons=reasons,
        )
    if body.get("status") == "warned":
        import warnings

        warnings.warn(
            f"run {body.get('run_id')} warned: {'; '.join(reasons)}", QualityWarning, stacklevel=3
        )
    return frame
