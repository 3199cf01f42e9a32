"""The `deployer` command: each command parses, calls the library, renders."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from deployer.errors import ConfigError, DeployerError
from deployer.tables import format_value


def _load(reference: str) -> Any:
    """MODULE:ATTR, where MODULE is a dotted name or a path to a .py file."""
    if ":" not in reference:
        raise click.BadParameter(f"{reference!r}: use MODULE:FUNCTION, e.g. model.py:predict")
    module_name, _, attribute = reference.rpartition(":")
    if module_name.endswith(".py") or "/" in module_name:
        module = _import_file(Path(module_name).resolve())
    else:
        sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise click.BadParameter(f"cannot import {module_name!r}: {error}") from None
        except Exception as error:
            raise click.ClickException(
                f"importing {module_name} failed: {type(error).__name__}: {error}"
            ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise click.BadParameter(f"{module_name} has no attribute {attribute!r}") from None


def _import_file(path: Path) -> Any:
    """Import a script by path as a module named after it (its siblings importable)."""
    import importlib.util

    if not path.exists():
        raise click.BadParameter(f"{path} does not exist")
    existing = sys.modules.get(path.stem)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    from deployer.capture import imported_as_script

    imported_as_script(path.stem)
    from deployer.api import importing

    try:
        with importing(str(path)):
            spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[path.stem]
        raise click.ClickException(
            f"{error.filename}, line {error.lineno}: {error.msg}: fix the module and try again"
        ) from None
    except DeployerError as error:  # deployer refused something the module does
        del sys.modules[path.stem]
        raise click.ClickException(f"{_where_in(error, path)}: {error}") from None
    except Exception as error:
        del sys.modules[path.stem]
        raise click.ClickException(
            f"importing {path} failed at {_where_in(error, path)}: {type(error).__name__}: {error}"
        ) from None
    return module


def _where_in(error: BaseException, path: Path) -> str:
    """ "file, line N" of the deepest frame of ``error`` in ``path`` (else the deepest)."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    mine = [frame for frame in frames if Path(frame.filename) == path] or frames
    if not mine:
        return str(path)
    return f"{mine[-1].filename}, line {mine[-1].lineno}"


def _triggers(
    cron: tuple[str, ...],
    tz: str,
    every: tuple[str, ...],
    http: bool,
    public: bool,
    map_schedules: bool = False,
) -> list[Any]:
    from deployer.triggers import Cron, Every, Http

    triggers: list[Any] = [Cron(expression, tz=tz, map=map_schedules) for expression in cron]
    for interval in every:
        amount, _, unit = interval.partition(" ")
        unit = (unit or "minutes").strip().rstrip("s") + "s"
        if unit not in ("minutes", "hours", "days") or not amount.isdigit():
            raise click.BadParameter(f"--every {interval!r}: use e.g. '15 minutes', '2 hours'")
        lengths = {"minutes": 0, "hours": 0, "days": 0, unit: int(amount)}
        triggers.append(
            Every(lengths["minutes"], lengths["hours"], lengths["days"], map=map_schedules)
        )
    if http or public:
        triggers.append(Http(public=public))
    return triggers


def _emit(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _frame_out(
    frame: Any, as_json: bool, title: str, priorities: dict[str, int] | None = None
) -> None:
    if as_json:
        click.echo(frame.to_json(orient="records", date_format="iso", indent=2))
        return
    from deployer import tables

    tables.show(frame, title, priorities=priorities)


# Exit codes: 1 the run failed, 2 a mistake deployer explains (bad input,
# configuration), 3 the run succeeded but failed a check of severity "error".
EXIT_CHECK_FAILED = 3


class DeployerGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DeployerError as error:
            # A mistake we can explain gets the explanation, not a traceback.
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=DeployerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deployer")
def main() -> None:
    """Deploy prediction functions as scheduled or HTTP cloud functions."""
    import warnings

    warnings.showwarning = _show_warning


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings for people: one line on stderr, not a file and line of deployer's code."""
    click.secho(f"warning: {message}", fg="yellow", err=True)


PROVIDER_OPTION_HELP = "KEY=VALUE passed to the provider, e.g. project=acme, region=europe-west1"


def _provider_names() -> list[str]:
    from deployer.registry import provider_names

    return provider_names(available=True)


PROVIDER: dict[str, Any] = {
    "type": click.Choice(_provider_names()),
    "default": "local",
    "show_default": True,
}


def _check_since(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from datetime import datetime

    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or time: use e.g. 2026-11-29 or 2026-11-29T06:00"
        ) from None
    return value


def provider_choice(command: Any) -> Any:
    """--provider and --provider-option, for commands that reach a deployed function."""
    command = click.option(
        "--provider-option", "provider_option", multiple=True, help=PROVIDER_OPTION_HELP
    )(command)
    return click.option("--provider", **PROVIDER)(command)


def deploy_options(command: Any) -> Any:
    options = [
        click.argument("function"),
        click.option("--name", required=True, help="function name, e.g. churn-scores"),
        click.option("--provider", **PROVIDER),
        click.option("--cron", multiple=True, help="5-field cron schedule (repeatable)"),
        click.option("--tz", default="UTC", show_default=True, help="time zone of --cron"),
        click.option("--every", multiple=True, help="interval schedule, e.g. '15 minutes'"),
        click.option(
            "--map",
            "map_schedules",
            is_flag=True,
            help="the schedules fan --inputs out over many invocations (map runs)",
        ),
        click.option("--http", is_flag=True, help="add an authenticated HTTP trigger"),
        click.option("--public", is_flag=True, help="add an HTTP trigger open to anyone"),
        click.option("--inputs", help="data set read and passed in on scheduled runs"),
        click.option(
            "--allow-missing-inputs",
            is_flag=True,
            help="the inputs are written after the deploy: do not check that they exist",
        ),
        click.option("--output", help="where runs are written (default: provider's store)"),
        click.option("--metrics", help="MODULE:ATTR of a dict of name -> callable(output)"),
        click.option("--checks", help="MODULE:ATTR of a dict of name -> callable(output)"),
        click.option(
            "--reference", help="Parquet/CSV the model was trained on: the drift reference"
        ),
        click.option(
            "--alert",
            multiple=True,
            help="webhook URL POSTed when a run fails, warns or drifts (repeatable; a secret)",
        ),
        click.option(
            "--env",
            "env",
            multiple=True,
            metavar="NAME=VALUE",
            help="environment variable of the function (repeatable; not for secrets)",
        ),
        click.option(
            "--secret",
            "secret",
            multiple=True,
            metavar="NAME=REFERENCE",
            help="variable read from the secret store where the function runs, e.g. "
            "DB_URL=secretsmanager:prod/db (repeatable)",
        ),
        click.option("--max-concurrency", type=int, help="at most this many runs at once"),
        click.option(
            "--keep-versions",
            type=int,
            default=5,  # spec.DEFAULT_KEEP_VERSIONS, not imported: the CLI starts light
            show_default=True,
            help="deployed versions kept for rollback, the live one included",
        ),
        click.option("--requirement", "-r", multiple=True, help="extra or overriding pin"),
        click.option("--timeout", default=300, show_default=True, help="seconds per run"),
        click.option("--memory", default=1024, show_default=True, help="MB one run may use"),
        click.option(
            "--provider-option",
            "provider_option",
            multiple=True,
            help="KEY=VALUE passed to the provider, e.g. architecture=arm64, slim=true",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _build_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": options["name"],
        "provider": options["provider"],
        "triggers": _triggers(
            options["cron"],
            options["tz"],
            options["every"],
            options["http"],
            options["public"],
            options["map_schedules"],
        ),
        "inputs": options["inputs"],
        "output": options["output"],
        "metrics": _load(options["metrics"]) if options["metrics"] else None,
        "checks": _load(options["checks"]) if options["checks"] else None,
        "requirements": list(options["requirement"]),
        "timeout": options["timeout"],
        "memory": options["memory"],
        "provider_options": _provider_options(options["provider_option"]),
        "reference": options["reference"],
        "alerts": list(options["alert"]),
        "env": _pairs(options["env"], "--env", "NAME=VALUE"),
        "secrets": _pairs(options["secret"], "--secret", "NAME=REFERENCE"),
        "max_concurrency": options["max_concurrency"],
        "keep_versions": options["keep_versions"],
        "allow_missing_inputs": options["allow_missing_inputs"],
    }


def _pairs(pairs: tuple[str, ...], option: str, shape: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            # Not quoted: it may be a secret typed in the wrong place.
            raise click.BadParameter(
                f"each value must be {shape} (one had no '=' or no name)", param_hint=option
            )
        found[key] = value
    return found


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """-p KEY=VALUE pairs: VALUE as JSON (0.7, true, "x", [1]) or else as text."""
    import json

    params: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.isidentifier():
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE with KEY a parameter name: use e.g. -p threshold=0.7",
                param_hint="--param",
            )
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _provider_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise click.BadParameter(f"--provider-option {pair!r}: use KEY=VALUE")
        lowered = value.lower()
        parsed[key] = True if lowered == "true" else False if lowered == "false" else value
    return parsed


@main.command()
@deploy_options
@click.option("--dry-run", is_flag=True, help="print the plan and stop")
def deploy(function: str, dry_run: bool, **options: Any) -> None:
    """Deploy FUNCTION (MODULE:FUNCTION)."""
    from deployer import api
    from deployer.console import Reporter

    built = api.build(_load(function), **_build_options(options))
    reporter = Reporter()
    if dry_run:
        api.plan_built(built, reporter=reporter)
        return
    api.apply_built(built, reporter=reporter)


@main.command()
@deploy_options
@click.option(
    "--out-dir",
    "-o",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="folder for what the provider deploys",
)
def build(function: str, out_dir: str, **options: Any) -> None:
    """Build what the provider deploys for FUNCTION and write it; needs no credentials."""
    from deployer import api
    from deployer.console import Reporter

    built = api.build(_load(function), **_build_options(options))
    bundle = built.bundle
    Reporter().requirements(built.requirements)
    click.echo(f"bundle ({bundle.size:,} bytes unzipped):")
    for entry_path, content in bundle.files:
        click.echo(f"  {len(content):>10,}  {entry_path}")
    click.echo(f"code_hash {bundle.code_hash}\ndeps_hash {bundle.deps_hash}")
    click.echo(f"{built.provider} artifacts:")
    for path in api.write_artifacts(built, out_dir):
        click.echo(f"  {path.stat().st_size:>12,}  {path}")


@main.command(name="list")
@provider_choice
@click.option("--json", "as_json", is_flag=True)
def list_command(provider: str, provider_option: tuple[str, ...], as_json: bool) -> None:
    """List deployed functions."""
    from deployer.registry import get_provider

    states = get_provider(provider, _provider_options(provider_option)).list()
    if as_json:
        return _emit([state.__dict__ for state in states])
    if not states:
        click.echo(f"no functions deployed on {provider}")
        return
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "name": state.name,
                "triggers": ", ".join(trigger["type"] for trigger in state.triggers),
                "deployed": state.deployed_at[:16].replace("T", " "),
                "code": state.code_hash[:12],
                "function": state.qualname,
                "url": state.url or "",
            }
            for state in states
        ],
        columns=["name", "triggers", "deployed", "code", "function", "url"],
    )
    _frame_out(frame, False, f"functions on {provider}", priorities={"url": 1, "function": 2})


_param_option = click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="set a keyword-only parameter of the function, e.g. -p threshold=0.7 "
    "(VALUE is read as JSON, else as text)",
)


@main.command()
@click.argument("name")
@provider_choice
@click.option("--data", help="JSON body, or @path to a .json, .csv or .parquet file")
@_param_option
@click.option("--timeout", type=int, help="seconds (default: the deployed timeout)")
@click.option("--json", "as_json", is_flag=True)
def invoke(
    name: str,
    provider: str,
    provider_option: tuple[str, ...],
    data: str | None,
    params: tuple[str, ...],
    timeout: int | None,
    as_json: bool,
) -> None:
    """Run NAME now; without --data it reads its inputs (as a scheduled run would)."""
    from deployer import api

    payload: Any = None
    if data is not None:
        payload = _read_data(data)
    invocation = api.invoke(
        name,
        payload,
        params=_params(params) if params else None,
        provider=provider,
        timeout=timeout,
        provider_options=_provider_options(provider_option),
    )
    error = invocation.body.get("error") or {}
    if "run_id" not in invocation.body and error.get("type") == "BadRequest":
        # Refused before any run (a wrong parameter, a body that is no table).
        if as_json:
            _emit({"http_status": invocation.http_status, **invocation.body})
            sys.exit(2)
        raise ConfigError(f"{name} refused the request: {error.get('message')}")
    if as_json:
        _emit({"http_status": invocation.http_status, **invocation.body})
    else:
        body = invocation.body
        click.echo(f"run {body.get('run_id')}: {body.get('status')}")
        for reason in body.get("quality") or []:
            click.secho(
                f"  {reason}", fg="red" if body.get("status") == "check_failed" else "yellow"
            )
        if body.get("error"):
            click.secho(f"{body['error'].get('type')}: {body['error'].get('message')}", fg="red")
        predictions = body.get("predictions")
        if predictions:
            import pandas as pd

            shown = "" if len(predictions) <= 20 else f" (first 20 of {len(predictions)})"
            _frame_out(
                pd.DataFrame.from_records(predictions).head(20), False, f"predictions{shown}"
            )
    if invocation.http_status >= 400:
        sys.exit(1)
    if invocation.body.get("status") == "check_failed":
        sys.exit(EXIT_CHECK_FAILED)


@main.command(name="map")
@click.argument("name")
@click.argument("data", nargs=-1, required=True)
@provider_choice
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="shards at once (default: local, the cores; aws 100; gcp and azure 20)",
)
@click.option("--rows-per-shard", type=click.IntRange(min=1), help="rows in a shard at most")
@click.option(
    "--shard-mb",
    type=click.FloatRange(min=0, min_open=True),
    help="Parquet MB in a shard at most (default 64)",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="tries after a shard's first",
)
@click.option(
    "--failure-budget",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="failed shards the run tolerates",
)
@_param_option
@click.option("--json", "as_json", is_flag=True, help="print the run record as JSON")
def map_command(
    name: str,
    data: tuple[str, ...],
    provider: str,
    provider_option: tuple[str, ...],
    concurrency: int | None,
    rows_per_shard: int | None,
    shard_mb: float | None,
    retries: int,
    failure_budget: int,
    params: tuple[str, ...],
    as_json: bool,
) -> None:
    """Score DATA (Parquet or CSV files, folders or prefixes) with NAME over many
    concurrent invocations, committed as one run."""
    from deployer.errors import CheckFailed, RunError
    from deployer.fanout import run_map, shard_sources

    try:
        run = run_map(
            name,
            shard_sources(data),
            provider=provider,
            provider_options=_provider_options(provider_option),
            concurrency=concurrency,
            rows_per_shard=rows_per_shard,
            shard_mb=shard_mb,
            retries=retries,
            failure_budget=failure_budget,
            progress=not as_json,
            params=_params(params) if params else None,
        )
    except CheckFailed as error:
        click.secho(str(error), fg="red", err=True)
        sys.exit(EXIT_CHECK_FAILED)
    except RunError as error:  # failed, or cancelled: no run to read outputs from
        click.secho(f"error: {error}", fg="red", err=True)
        sys.exit(1)
    if as_json:
        _emit(dict(run.record))
        return
    record = run.record
    seconds = (record.get("duration_ms") or 0) / 1000
    rate = (run.rows_in or 0) / seconds if seconds else 0
    retried = record.get("map", {}).get("retried", 0)
    click.echo(
        f"run {run.run_id}: {run.status}, {run.rows_in:,} rows in {run.shards} shards "
        f"({retried} retried, {len(run.failed_shards)} failed) in {seconds:,.1f} s, "
        f"{rate:,.0f} rows/s"
    )
    click.echo(f"its outputs: deployer outputs {name} --run {run.run_id}")


def _write_frame(frame: Any, to: str) -> None:
    if to.endswith(".parquet"):
        frame.to_parquet(to, index=False)
    elif to.endswith(".csv"):
        frame.to_csv(to, index=False)
    else:
        raise click.BadParameter(f"{to!r}: give a .parquet or .csv file", param_hint="--to")


def _read_data(data: str) -> Any:
    if not data.startswith("@"):
        try:
            return json.loads(data)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"--data is not valid JSON: {error}") from None
    path = Path(data[1:])
    if not path.is_file():
        raise click.BadParameter(
            f"{path} does not exist (after @ comes a file)", param_hint="--data"
        )
    if path.suffix not in (".json", ".csv", ".parquet"):
        raise click.BadParameter(
            f"{path}: give a .json, .csv or .parquet file", param_hint="--data"
        )
    if path.suffix == ".json":
        return json.loads(path.read_text())
    import pandas as pd

    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def _read_options(command: Any) -> Any:
    for option in reversed(
        [
            click.argument("name"),
            click.option("--output", help="the store NAME writes to (default: its provider's)"),
            click.option("--provider", **PROVIDER),
            click.option(
                "--provider-option", "provider_option", multiple=True, help=PROVIDER_OPTION_HELP
            ),
            click.option("--last", type=click.IntRange(min=1), help="only the last N runs"),
            click.option(
                "--since",
                callback=_check_since,
                help="only runs started at or after this ISO time, e.g. 2026-11-29T06:00",
            ),
            click.option("--json", "as_json", is_flag=True),
        ]
    ):
        command = option(command)
    return command


def _output_for(
    name: str, output: str | None, provider: str, provider_option: tuple[str, ...]
) -> str | None:
    """The store NAME writes to: --output, else what its provider says."""
    if output:
        return output
    from deployer.registry import get_provider

    state = get_provider(provider, _provider_options(provider_option)).get(name)
    return state.output if state else None


@main.command()
@_read_options
@click.argument("run_id", required=False)
def runs(
    name: str,
    run_id: str | None,
    output: str | None,
    provider: str,
    provider_option: tuple[str, ...],
    last: int | None,
    since: str | None,
    as_json: bool,
) -> None:
    """Run history of NAME with status, timing and metrics; with RUN_ID, that run in
    full (error and traceback, checks, metrics, drift, timing, trigger)."""
    from deployer.store import no_runs_hint, read_run, read_runs

    location = _output_for(name, output, provider, provider_option)
    if run_id is not None:
        record = read_run(name, run_id, output=location)
        if as_json:
            return _emit(record)
        return _show_run(record, provider)
    frame = read_runs(name, output=location, last=last, since=since)
    if frame.empty and last is None and since is None:
        raise click.ClickException(no_runs_hint(name, location))
    notes: list[str] = []
    priorities: dict[str, int] = {}
    if not as_json and not frame.empty:
        # Runs with no record in the store (lost, or kept in the local spool
        # because the store refused it) say why under the table.
        unrecorded = frame[(frame.status == "lost") | (frame.error_type == "StoreWriteError")]
        notes = [
            f"{run.run_id} {run.status}: {run.error_message}" for run in unrecorded.itertuples()
        ]
        frame, priorities = _runs_for_people(frame)
    _frame_out(frame, as_json, f"runs of {name}", priorities=priorities)
    for note in notes:
        click.echo(note)


# Which run columns a narrow terminal drops first (higher goes sooner; metrics last).
RUN_COLUMN_PRIORITIES = {"why": 1, "started": 2, "took": 3, "rows": 3, "trigger": 4}
METRIC_PRIORITY = 5


def _runs_for_people(frame: Any) -> tuple[Any, dict[str, int]]:
    """The run table a person scans: what failed and why first, then timing and metrics."""
    import pandas as pd

    why = frame.error_type.where(frame.error_type.notna(), None)
    if "checks_failed" in frame:
        failed = frame.checks_failed.map(_failed_checks)
        why = why.where(why.notna(), failed)
    # A schedule that does not overlap fired while its previous run ran.
    why = why.where(frame.status != "skipped", "previous run still running")
    table = pd.DataFrame(
        {
            "run_id": frame.run_id,
            "status": frame.status,
            "trigger": frame.trigger,
            "started": frame.started.dt.strftime("%Y-%m-%d %H:%M"),
            # Running and lost runs have no duration or row count yet: blank, not "nan".
            "took": frame.duration_ms.map(_milliseconds),
            "rows": frame.rows_out,
        }
    )
    if why.notna().any():
        table["why"] = why
    priorities = dict(RUN_COLUMN_PRIORITIES)
    for column in frame.columns:
        if column.startswith("metric."):
            metric = column.removeprefix("metric.")
            table[metric] = frame[column]
            priorities.setdefault(metric, METRIC_PRIORITY)
    return table, priorities


def _failed_checks(names: Any) -> str | None:
    return f"checks: {', '.join(names)}" if isinstance(names, list) and names else None


def _show_run(record: dict[str, Any], provider: str) -> None:
    """One run, for a person: what happened first, then the details."""
    status = record.get("status")
    colour = {"succeeded": "green", "warned": "yellow"}.get(str(status), "red")
    click.secho(f"run {record['run_id']} of {record.get('name')}: {status}", fg=colour, bold=True)
    lines = [
        ("trigger", record.get("trigger")),
        ("started", record.get("started")),
        ("ended", record.get("ended")),
        ("duration", _milliseconds(record.get("duration_ms"))),
        ("rows in / out", f"{record.get('rows_in')} / {record.get('rows_out')}"),
        ("code", (record.get("code_hash") or "")[:12]),
    ]
    skipped = record.get("skipped")
    if isinstance(skipped, dict):
        lines.append(("skipped", skipped.get("message")))
    if isinstance(record.get("params"), dict):
        lines.append(
            ("params", ", ".join(f"{key}={value!r}" for key, value in record["params"].items()))
        )
    fanned = record.get("map")
    if isinstance(fanned, dict):
        failed_shards = record.get("failed_shards") or []
        lines.append(
            (
                "map",
                f"{fanned.get('shards')} shards of {fanned.get('source')} "
                f"({len(record.get('parts') or [])} committed, {fanned.get('retried', 0)} "
                f"retries, {len(failed_shards)} failed, budget {fanned.get('failure_budget')})",
            )
        )
    for label, value in lines:
        if value not in (None, "", "None / None"):
            click.echo(f"  {label:<14} {value}")
    for shard in (record.get("failed_shards") or [])[:10]:
        error = shard.get("error") or {}
        pieces = ", ".join(
            f"{piece.get('path')} row groups {piece.get('row_groups')}"
            for piece in shard.get("pieces") or []
        )
        click.secho(
            f"  shard {shard.get('part')} failed after {shard.get('attempts')} attempts: "
            f"{error.get('type')}: {error.get('message')} ({pieces})",
            fg="red",
        )
    for reason in record.get("quality") or []:
        click.secho(f"  {reason}", fg=colour)
    error = record.get("error")
    if error:
        click.secho(f"\n{error.get('type')}: {error.get('message')}", fg="red")
        if error.get("traceback"):
            click.echo(error["traceback"].rstrip())
    checks = record.get("checks") or {}
    if checks:
        click.echo("\nchecks:")
        for check, result in checks.items():
            mark = "passed" if result.get("passed") else f"FAILED ({result.get('severity')})"
            detail = f": {result['error']}" if result.get("error") else ""
            if result.get("failed_parts"):
                detail += f" in shards {', '.join(map(str, result['failed_parts'][:20]))}"
            click.echo(f"  {check}: {mark}{detail}")
    for metric, bound in (record.get("bounds") or {}).items():
        if not bound.get("passed"):
            click.echo(
                f"  metric {metric} = {bound.get('value')} outside "
                f"[{bound.get('lower')}, {bound.get('upper')}] ({bound.get('severity')})"
                + (f": {bound['error']}" if bound.get("error") else "")
            )
    user_metrics = (record.get("metrics") or {}).get("user") or {}
    if user_metrics:
        click.echo("\nmetrics:")
        for metric, value in user_metrics.items():
            click.echo(f"  {metric}: {format_value(value)}")
    for delivery in record.get("alerts") or []:
        state = (
            "delivered" if delivery.get("delivered") else f"NOT delivered ({delivery.get('error')})"
        )
        click.echo(f"  alert to {delivery.get('webhook')}: {state}")
    click.echo(
        f"\nits log: deployer logs {record.get('name')} --run {record['run_id']}"
        + (f" --provider {provider}" if provider != "local" else "")
    )


def _milliseconds(value: Any) -> str | None:
    if value is None or value != value:  # missing or NaN: the run has not ended
        return None
    return f"{value / 1000:.3g} s" if value >= 1000 else f"{value:.0f} ms"


@main.command()
@_read_options
@click.option(
    "--include-failed-checks", is_flag=True, help="also the predictions of check_failed runs"
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="rows shown (the newest)",
)
@click.option(
    "--to",
    type=click.Path(dir_okay=False),
    help="write every row to this .parquet or .csv file instead of showing a preview",
)
@click.option("--run", "run_id", help="only this run's outputs (e.g. a map run's)")
def outputs(
    name: str,
    output: str | None,
    provider: str,
    provider_option: tuple[str, ...],
    last: int | None,
    since: str | None,
    as_json: bool,
    include_failed_checks: bool,
    limit: int,
    to: str | None,
    run_id: str | None,
) -> None:
    """Predictions of NAME's committed runs (not of runs that failed a check, unless
    asked): a preview of the newest rows, or all of them into a file with --to."""
    from deployer.store import committed_runs, no_runs_hint, read_outputs

    location = _output_for(name, output, provider, provider_option)
    if not committed_runs(name, output=location, last=1):
        raise click.ClickException(no_runs_hint(name, location))
    if to is not None:
        frame = read_outputs(
            name,
            output=location,
            last=last,
            since=since,
            include_failed_checks=include_failed_checks,
            run_id=run_id,
        )
        _write_frame(frame, to)
        click.echo(f"{len(frame):,} rows of {name} written to {to}")
        return
    frame = read_outputs(
        name,
        output=location,
        last=last,
        since=since,
        include_failed_checks=include_failed_checks,
        limit=limit,
        run_id=run_id,
    )
    _frame_out(frame, as_json, f"outputs of {name}: the newest {len(frame)} rows (--limit, --to)")


@main.command()
@_read_options
@click.option("--all", "show_all", is_flag=True, help="every column, not only flagged ones")
def quality(
    name: str,
    output: str | None,
    provider: str,
    provider_option: tuple[str, ...],
    last: int | None,
    since: str | None,
    as_json: bool,
    show_all: bool,
) -> None:
    """Drift and schema changes of NAME's recent runs (default: the last 10), per column."""
    from deployer.quality import read_quality

    if since is not None:
        raise click.BadParameter(
            "quality reads the last N runs: use --last N", param_hint="--since"
        )
    frame = read_quality(
        name, output=_output_for(name, output, provider, provider_option), last=last or 10
    )
    if not show_all:
        frame = frame[frame.verdict.isin(["warn", "drift"]) | frame.schema_change.notna()]
    if frame.empty and not as_json:
        click.echo(f"no drift or schema change in the last {last or 10} runs of {name}")
        return
    if not as_json:
        frame = frame.assign(
            js=frame.js.map(lambda value: "" if value != value else f"{value:.3f}"),
            psi=frame.psi.map(lambda value: "" if value != value else f"{value:.3f}"),
        ).drop(columns=["null_fraction", "drifted"])
    _frame_out(frame, as_json, f"quality of {name}")


@main.command()
@click.argument("name")
@click.option(
    "-o",
    "--out",
    "path",
    type=click.Path(dir_okay=False),
    help="the HTML file to write (default: NAME-report.html)",
)
@click.option("--open", "open_it", is_flag=True, help="open it in the browser")
@click.option(
    "--last", type=click.IntRange(min=1), default=100, show_default=True, help="runs shown"
)
@click.option("--output", help="the store NAME writes to (default: its provider's)")
@provider_choice
def report(
    name: str,
    path: str | None,
    open_it: bool,
    last: int,
    output: str | None,
    provider: str,
    provider_option: tuple[str, ...],
) -> None:
    """A report of NAME's last runs with charts: one HTML file, no network needed."""
    from deployer.report import write_report
    from deployer.store import count_runs, no_runs_hint

    location = _output_for(name, output, provider, provider_option)
    if not count_runs(name, output=location):
        raise click.ClickException(no_runs_hint(name, location))
    written = write_report(
        name,
        path,
        output=location,
        provider=provider,
        provider_options=_provider_options(provider_option),
        last=last,
    )
    click.echo(f"report of {name} ({written.stat().st_size / 1024:,.0f} KB): {written}")
    if open_it:
        import webbrowser

        webbrowser.open(written.as_uri())


@main.command()
@click.argument("name")
@click.option("--run", "run_id", required=True, help="the run whose data is the reference")
@click.option("--output", help="the store NAME writes to (default: its provider's)")
@provider_choice
def reference(
    name: str, run_id: str, output: str | None, provider: str, provider_option: tuple[str, ...]
) -> None:
    """Make run RUN_ID's input and output the reference NAME's runs are compared with."""
    from deployer.quality import set_reference

    set_reference(name, run_id, output=_output_for(name, output, provider, provider_option))
    click.echo(f"{name}: drift is now measured against run {run_id}")


# --since of `logs`: an age back from now, or a time as the other commands take it.
LOG_AGE = re.compile(r"^(\d+)\s*([smhd])$")
LOG_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _check_log_since(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    """An age (30s, 15m, 1h, 2d) or an ISO time (UTC unless it says otherwise)."""
    if value is None:
        return None
    age = LOG_AGE.match(value.strip())
    if age is not None:
        amount = timedelta(**{LOG_AGE_UNITS[age.group(2)]: int(age.group(1))})
        return datetime.now(timezone.utc) - amount
    try:
        _check_since(ctx, param, value)
    except click.BadParameter:
        raise click.BadParameter(
            f"{value!r} is neither an age nor an ISO time: use e.g. 30s, 15m, 1h, 2d, "
            "or 2026-11-29T06:00 (UTC unless it names a zone, e.g. 2026-11-29T06:00+01:00)"
        ) from None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@main.command()
@click.argument("name")
@provider_choice
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=1),
    help="only the last N lines of what matches  [default: 100; with --since or --run: all]",
)
@click.option(
    "--since",
    callback=_check_log_since,
    help="only lines at or after this: an age (30s, 15m, 1h, 2d) or an ISO time, "
    "e.g. 2026-11-29T06:00 (UTC unless it names a zone)",
)
@click.option("--run", "run_id", help="only what this run printed (--follow stops at its end)")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="then keep printing new lines as they arrive, until Ctrl-C",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='one object {"name", "run_id", "lines"}; with --follow, one object per line '
    'as it arrives (JSON Lines: {"name", "time", "stream", "line"})',
)
def logs(
    name: str,
    provider: str,
    provider_option: tuple[str, ...],
    lines: int | None,
    since: datetime | None,
    run_id: str | None,
    follow: bool,
    as_json: bool,
) -> None:
    """The function's recent log lines, or one run's; with --follow, then the new ones.

    \b
    deployer logs scores --since 1h
    deployer logs scores --run 20261127T060000Z-1a2b3c4d
    deployer logs scores -f --json | jq .line
    """
    from deployer.registry import get_provider

    target = get_provider(provider, _provider_options(provider_option))
    if lines is None and since is None and run_id is None:
        lines = 100
    events = target.log_events(name, since=since, run_id=run_id, follow=follow, lines=lines)
    if follow:
        return _follow_logs(name, events, as_json)
    found = [line for event in events for line in event.text.splitlines() or [""]]
    if run_id is not None and not found:
        raise click.ClickException(
            f"no log lines of run {run_id} of {name}: a log keeps only so much (locally the "
            "last 30 MB, in a cloud its retention), a run made before deployer 0.1's run "
            "markers has none, and a run that has not started has none yet (--follow waits "
            "for it)"
        )
    if as_json:
        return _emit({"name": name, "run_id": run_id, "lines": found})
    click.echo("".join(f"{line}\n" for line in found), nl=False)


def _follow_logs(name: str, events: Iterator[Any], as_json: bool) -> None:
    """Print each event as it comes; Ctrl-C is how a follow ends, not an error."""
    try:
        for event in events:
            if as_json:
                click.echo(json.dumps({"name": name, **event.to_dict()}))
            else:
                click.echo(event.text)
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("name")
@provider_choice
def delete(name: str, provider: str, provider_option: tuple[str, ...]) -> None:
    """Delete NAME and its triggers; its outputs stay."""
    from deployer import api

    api.delete(name, provider=provider, provider_options=_provider_options(provider_option))


@main.command()
@click.argument("name")
@provider_choice
@click.option("--json", "as_json", is_flag=True)
def history(name: str, provider: str, provider_option: tuple[str, ...], as_json: bool) -> None:
    """The deployed versions of NAME kept for rollback, newest first."""
    from dataclasses import asdict

    import pandas as pd

    from deployer import api

    versions = api.history(
        name, provider=provider, provider_options=_provider_options(provider_option)
    )
    if as_json:
        return _emit([asdict(version) for version in versions])
    frame = pd.DataFrame(
        [
            {
                "live": "*" if version.live else "",
                "version": version.version,
                "code": version.code_hash[:12],
                "deps": version.deps_hash[:12],
                "deployed": version.deployed_at[:19].replace("T", " "),
                "by": version.deployed_by or "",
            }
            for version in versions
        ],
        columns=["live", "version", "code", "deps", "deployed", "by"],
    )
    _frame_out(frame, False, f"versions of {name} (* live; `deployer rollback {name}`)")


@main.command()
@click.argument("name")
@provider_choice
@click.option("--to", "to", metavar="CODE_HASH", help="the code hash (a prefix) to make live")
def rollback(name: str, provider: str, provider_option: tuple[str, ...], to: str | None) -> None:
    """Make the version before the live one (or --to CODE_HASH) live again from what
    was kept of it (no build from your code); the triggers stay as deployed now."""
    from deployer import api

    api.rollback(
        name, to=to, provider=provider, provider_options=_provider_options(provider_option)
    )


@main.command()
@click.option("--prune", is_flag=True, help="remove what is unused and older than --older-than")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="days since last use before --prune removes an unused item",
)
@click.option("--json", "as_json", is_flag=True)
def cache(prune: bool, older_than: float, as_json: bool) -> None:
    """The dependency cache: environments and Lambda dependencies, their size, when
    they were last used and which local deployments use them; --prune cleans it."""
    from datetime import datetime, timezone

    from deployer import housekeeping
    from deployer.cache import cache_root
    from deployer.providers.local.provider import list_entries

    used_by: dict[str, list[str]] = {}
    for entry in list_entries():
        used_by.setdefault(entry["deps_hash"], []).append(entry["name"])
        for kept in entry.get("history", []):  # for rollback
            used_by.setdefault(kept["deps_hash"], []).append(f"{entry['name']} (kept)")
    items = housekeeping.cache_items(used_by)
    removed = housekeeping.prune(items, older_than_days=older_than) if prune else []
    rows = [
        {
            "kind": item.kind,
            "deps_hash": item.deps_hash[:12],
            "size_mb": round(item.size_bytes / 2**20, 1),
            "last_used": datetime.fromtimestamp(item.last_used, timezone.utc).strftime(
                "%Y-%m-%d %H:%M"
            ),
            "used_by": ", ".join(item.used_by),
            "removed": item in removed,
        }
        for item in items
    ]
    if as_json:
        return _emit(rows)
    import pandas as pd

    total = sum(item.size_bytes for item in items) / 2**20
    freed = sum(item.size_bytes for item in removed) / 2**20
    frame = pd.DataFrame(rows, columns=["kind", "deps_hash", "size_mb", "last_used", "used_by"])
    _frame_out(frame, False, f"{cache_root()}: {total:,.0f} MB")
    if prune:
        click.echo(f"removed {len(removed)} items, {freed:,.0f} MB")


@main.command()
@click.option("--port", type=int, help="port on 127.0.0.1 (default 8765 or $DEPLOYER_PORT)")
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="largest request body in MB (413 above it)",
)
def serve(port: int | None, max_body: int) -> None:
    """Run local schedules and serve HTTP triggers on 127.0.0.1 (foreground)."""
    from deployer.providers.local.server import LocalServer

    LocalServer(
        port=port, log=lambda line: click.echo(line, err=True), max_body_bytes=max_body * 2**20
    ).serve_forever()


if __name__ == "__main__":
    main()
