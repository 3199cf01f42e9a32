"""The `deployer` command: each command parses, calls the library, renders."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from deployer.errors import DeployerError


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
            raise click.BadParameter(f"cannot import {module_name!r}: {error}") from error
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
    spec.loader.exec_module(module)
    return module


def _triggers(
    cron: tuple[str, ...], tz: str, every: tuple[str, ...], http: bool, public: bool
) -> list[Any]:
    from deployer.triggers import Cron, Every, Http

    triggers: list[Any] = [Cron(expression, tz=tz) for expression in cron]
    for interval in every:
        amount, _, unit = interval.partition(" ")
        unit = (unit or "minutes").strip().rstrip("s") + "s"
        if unit not in ("minutes", "hours", "days") or not amount.isdigit():
            raise click.BadParameter(f"--every {interval!r}: use e.g. '15 minutes', '2 hours'")
        triggers.append(Every(**{unit: int(amount)}))
    if http or public:
        triggers.append(Http(public=public))
    return triggers


def _emit(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _frame_out(frame: Any, as_json: bool, title: str) -> None:
    if as_json:
        click.echo(frame.to_json(orient="records", date_format="iso", indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(str(column), no_wrap=column in ("run_id", "started"))
    for row in frame.itertuples(index=False):
        table.add_row(*("" if value is None else str(value) for value in row))
    Console().print(table)


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


@click.group(cls=DeployerGroup)
@click.version_option(package_name="deployer")
def main() -> None:
    """Deploy prediction functions as scheduled or HTTP cloud functions."""


PROVIDER_OPTION_HELP = "KEY=VALUE passed to the provider, e.g. project=acme, region=europe-west1"


def provider_choice(command: Any) -> Any:
    """--provider and --provider-option, for commands that reach a deployed function."""
    command = click.option(
        "--provider-option", "provider_option", multiple=True, help=PROVIDER_OPTION_HELP
    )(command)
    return click.option("--provider", default="local", show_default=True)(command)


def deploy_options(command: Any) -> Any:
    options = [
        click.argument("function"),
        click.option("--name", required=True, help="function name, e.g. churn-scores"),
        click.option("--provider", default="local", show_default=True),
        click.option("--cron", multiple=True, help="5-field cron schedule (repeatable)"),
        click.option("--tz", default="UTC", show_default=True, help="time zone of --cron"),
        click.option("--every", multiple=True, help="interval schedule, e.g. '15 minutes'"),
        click.option("--http", is_flag=True, help="add an authenticated HTTP trigger"),
        click.option("--public", is_flag=True, help="add an HTTP trigger open to anyone"),
        click.option("--inputs", help="data set read and passed in on scheduled runs"),
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
            options["cron"], options["tz"], options["every"], options["http"], options["public"]
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
    }


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
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "function", "triggers", "code", "url", "deployed")
    for state in states:
        table.add_row(
            state.name,
            state.qualname,
            ", ".join(trigger["type"] for trigger in state.triggers),
            state.code_hash[:12],
            state.url or "",
            state.deployed_at[:19],
        )
    Console().print(table)


@main.command()
@click.argument("name")
@provider_choice
@click.option("--data", help="JSON body, or @path to a .json, .csv or .parquet file")
@click.option("--timeout", type=int, help="seconds (default: the deployed timeout)")
@click.option("--json", "as_json", is_flag=True)
def invoke(
    name: str,
    provider: str,
    provider_option: tuple[str, ...],
    data: str | None,
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
        provider=provider,
        timeout=timeout,
        provider_options=_provider_options(provider_option),
    )
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


def _read_data(data: str) -> Any:
    if not data.startswith("@"):
        try:
            return json.loads(data)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"--data is not valid JSON: {error}") from None
    path = Path(data[1:])
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
            click.option("--provider", default="local", show_default=True),
            click.option(
                "--provider-option", "provider_option", multiple=True, help=PROVIDER_OPTION_HELP
            ),
            click.option("--last", type=int, help="only the last N runs"),
            click.option("--since", help="only runs started at or after this ISO time"),
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
def runs(
    name: str,
    output: str | None,
    provider: str,
    provider_option: tuple[str, ...],
    last: int | None,
    since: str | None,
    as_json: bool,
) -> None:
    """Run history of NAME with status, timing and metrics."""
    from deployer.store import read_runs

    frame = read_runs(
        name, output=_output_for(name, output, provider, provider_option), last=last, since=since
    )
    notes: list[str] = []
    if not as_json and not frame.empty:
        # Runs with no record in the store (lost, or kept in the local spool
        # because the store refused it) say why under the table.
        unrecorded = frame[(frame.status == "lost") | (frame.error_type == "StoreWriteError")]
        notes = [
            f"{run.run_id} {run.status}: {run.error_message}" for run in unrecorded.itertuples()
        ]
        # A terminal has room for what a person scans first; --json has everything.
        frame = frame.assign(
            started=frame.started.dt.strftime("%Y-%m-%d %H:%M:%S"),
            # Running and lost runs have no duration or row count yet: blank, not "nan".
            duration_ms=frame.duration_ms.map(_blank_if_missing),
            rows_out=frame.rows_out.map(_blank_if_missing),
        )
        wanted = ["run_id", "status", "trigger", "started", "duration_ms", "rows_out"]
        wanted += [column for column in frame.columns if column.startswith("metric.")]
        wanted += ["error_type"] if frame.error_type.notna().any() else []
        frame = frame[wanted]
    _frame_out(frame, as_json, f"runs of {name}")
    for note in notes:
        click.echo(note)


def _blank_if_missing(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@main.command()
@_read_options
@click.option(
    "--include-failed-checks", is_flag=True, help="also the predictions of check_failed runs"
)
def outputs(
    name: str,
    output: str | None,
    provider: str,
    provider_option: tuple[str, ...],
    last: int | None,
    since: str | None,
    as_json: bool,
    include_failed_checks: bool,
) -> None:
    """Predictions of NAME's committed runs (not of runs that failed a check, unless asked)."""
    from deployer.store import read_outputs

    frame = read_outputs(
        name,
        output=_output_for(name, output, provider, provider_option),
        last=last,
        since=since,
        include_failed_checks=include_failed_checks,
    )
    _frame_out(frame, as_json, f"outputs of {name} ({len(frame)} rows)")


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


@main.command()
@click.argument("name")
@provider_choice
@click.option("--lines", "-n", default=100, show_default=True)
def logs(name: str, provider: str, provider_option: tuple[str, ...], lines: int) -> None:
    """The function's recent log lines."""
    from deployer.registry import get_provider

    target = get_provider(provider, _provider_options(provider_option))
    click.echo(target.logs(name, lines=lines), nl=False)


@main.command()
@click.argument("name")
@provider_choice
def delete(name: str, provider: str, provider_option: tuple[str, ...]) -> None:
    """Delete NAME and its triggers; its outputs stay."""
    from deployer import api

    api.delete(name, provider=provider, provider_options=_provider_options(provider_option))


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
