"""Map runs from the host: ``deployer.map`` / ``Deployment.map`` / ``deployer map``.

Plans the shards from footers (runtimes/fanout.py), stages a DataFrame to the
store first, runs the shards through the provider's dispatcher with a
progress bar, and returns the committed run. The planning, the shards and the
commit are runtimes/fanout.py, which a scheduled map run uses inside the
function as well.

    run = deployer.map("churn-scores", "s3://acme/features/2026-11/", provider="aws")
    deployer.read_outputs("churn-scores", output=..., run_id=run.run_id)
"""

from __future__ import annotations

import contextlib
import math
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.errors import CheckFailed, ConfigError, QualityWarning, RunError
from deployer.runtimes import fanout, storage
from deployer.spec import check_params_json

if TYPE_CHECKING:
    import pandas as pd

# A DataFrame is staged in row groups so that the map has about this many shards
# per concurrent invocation (a slow shard then holds up a fraction of the run).
SHARDS_PER_WORKER = 4
STAGING = "staging"  # {output}/{name}/staging/{id}/input.parquet, removed after the run


@dataclass(frozen=True)
class MapRun:
    """A committed map run: what ``deployer.read_run`` returns of it, in short."""

    name: str
    run_id: str
    status: str
    rows_in: int | None
    rows_out: int | None
    shards: int
    failed_shards: tuple[dict[str, Any], ...]
    record: Mapping[str, Any] = field(repr=False)


def run_map(
    name: str,
    data: Any,
    *,
    provider: str = "local",
    provider_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    rows_per_shard: int | None = None,
    shard_mb: float | None = None,
    retries: int = 2,
    failure_budget: int = 0,
    progress: bool = True,
    cancel: threading.Event | None = None,
    run_id: str | None = None,
    trigger: str = fanout.MAP_TRIGGER,
    params: Mapping[str, Any] | None = None,
) -> MapRun:
    """Score ``data`` with the deployed ``name`` over many concurrent invocations,
    committed as one run (trigger ``map``). See README, "Fan-out".

    ``data``: a Parquet or CSV file, a folder or prefix of them, a list of
    files, or a DataFrame (written to the store first). Raises RunError when
    more shards failed than ``failure_budget``, CheckFailed when a check of
    severity "error" failed; warns (QualityWarning) when the run warned.
    ``run_id`` and ``trigger``: a scheduled map run's (the local scheduler's).
    ``params``: keyword-only parameters of the function for every shard, checked
    against its signature by the first shard (a wrong one fails the run there).
    """
    from deployer.providers.base import BaseProvider
    from deployer.registry import get_provider

    _check_counts(concurrency=concurrency, rows_per_shard=rows_per_shard, retries=retries)
    if failure_budget < 0:
        raise ConfigError(f"failure_budget={failure_budget!r}: give 0 or more failed shards")
    if shard_mb is not None and shard_mb <= 0:
        raise ConfigError(f"shard_mb={shard_mb!r}: give a positive size in MB")
    checked_params = check_params_json(params)
    target = get_provider(provider, provider_options)
    state = target.require(name)
    concurrency = concurrency or target.map_concurrency
    deployed = target.deployed(name) if isinstance(target, BaseProvider) else None
    limit = deployed.settings.get("max concurrency") if deployed is not None else None
    if limit:
        # More shards at once than the function may run would only be throttled.
        concurrency = min(concurrency, limit)
    staged = None
    if _is_dataframe(data):
        staged, data, rows_per_shard = _stage(data, state.output, name, concurrency, rows_per_shard)
    try:
        target.check_map_data(name, [data] if isinstance(data, str) else list(data))
        try:
            plan = fanout.plan_shards(
                data,
                rows_per_shard=rows_per_shard,
                bytes_per_shard=None if shard_mb is None else int(shard_mb * 2**20),
                min_shards=concurrency * SHARDS_PER_WORKER,
            )
        except fanout.MapError as error:
            raise ConfigError(str(error)) from None
        concurrency = min(concurrency, len(plan.shards))
        for note in plan.notes:
            warnings.warn(note, UserWarning, stacklevel=2)
        with (
            target.map_dispatcher(name, concurrency=concurrency) as dispatch,
            _ProgressBar(name, plan, enabled=progress) as bar,
        ):
            try:
                record = fanout.coordinate(
                    plan,
                    dispatch,
                    fanout.MapTarget(name, state.output, state.code_hash),
                    concurrency=concurrency,
                    retries=retries,
                    failure_budget=failure_budget,
                    on_progress=bar.update,
                    cancel=cancel,
                    run_id=run_id,
                    trigger=trigger,
                    params=checked_params,
                )
            except fanout.MapCancelled as error:
                raise RunError(str(error)) from None
    finally:
        if staged is not None:
            _unstage(*staged)
    return _outcome(record, plan)


def _check_counts(**counts: int | None) -> None:
    for label, value in counts.items():
        least = 0 if label == "retries" else 1
        if value is not None and (not isinstance(value, int) or value < least):
            raise ConfigError(f"{label}={value!r}: give a whole number, at least {least}")


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _stage(
    frame: pd.DataFrame, output: str, name: str, concurrency: int, rows_per_shard: int | None
) -> tuple[tuple[Any, str], str, int]:
    """Write ``frame`` to the store as Parquet in row groups of one shard each."""
    import pyarrow.parquet as pq

    from deployer.runtimes import core

    if len(frame) == 0:
        raise ConfigError("map() got an empty DataFrame: there is nothing to score")
    rows = rows_per_shard or max(1, math.ceil(len(frame) / (concurrency * SHARDS_PER_WORKER)))
    try:
        table = core.to_arrow(frame)
    except core.OutputError as error:
        raise ConfigError(f"map() cannot stage this DataFrame: {error}") from None
    filesystem, root = storage.filesystem(output)
    token = uuid.uuid4().hex
    path = storage.join(root, name, STAGING, token, "input.parquet")
    storage.write_stream(
        filesystem, path, lambda stream: pq.write_table(table, stream, row_group_size=rows)
    )
    url = storage.join(output, name, STAGING, token, "input.parquet")
    return (filesystem, path), url, rows


def _unstage(filesystem: Any, path: str) -> None:
    storage.delete_quietly(filesystem, path)
    with contextlib.suppress(Exception):  # an object store has no directory to remove
        filesystem.delete_dir(path.rsplit("/", 1)[0])


def _outcome(record: Mapping[str, Any], plan: fanout.ShardPlan) -> MapRun:
    name, run_id = record["name"], record["run_id"]
    run = MapRun(
        name=name,
        run_id=run_id,
        status=record["status"],
        rows_in=record.get("rows_in"),
        rows_out=record.get("rows_out"),
        shards=len(plan.shards),
        failed_shards=tuple(record.get("failed_shards") or ()),
        record=record,
    )
    where = f"see `deployer runs {name} {run_id}`"
    reasons = list(record.get("quality") or [])
    if run.status == "failed":
        error = record.get("error") or {}
        raise RunError(f"map run {run_id} failed: {error.get('message')} ({where})")
    if run.status == "check_failed":
        raise CheckFailed(
            f"map run {run_id} failed its checks: {'; '.join(reasons)} ({where}); its "
            f"outputs are in the run: deployer.read_outputs({name!r}, run_id={run_id!r}, "
            "include_failed_checks=True)",
            predictions=None,
            reasons=reasons,
        )
    if run.status == "warned":
        warnings.warn(
            f"map run {run_id} warned: {'; '.join(reasons)}", QualityWarning, stacklevel=3
        )
    return run


class _ProgressBar:
    """Shards done / failed / retried and rows per second, on stderr (rich)."""

    def __init__(self, name: str, plan: fanout.ShardPlan, *, enabled: bool) -> None:
        self.name = name
        self.plan = plan
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> _ProgressBar:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=True)
        console.print(f"map {self.name}: {self.plan.describe()}")
        self._progress = Progress(
            TextColumn("shards"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("map", total=len(self.plan.shards), detail="")
        return self

    def update(self, seen: fanout.MapProgress) -> None:
        if self._progress is None:
            return
        detail = f"failed {seen.failed}  retried {seen.retried}  {seen.rows_per_second:,.0f} rows/s"
        with self._lock:
            self._progress.update(self._task, completed=seen.done + seen.failed, detail=detail)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def shard_sources(data: Sequence[str]) -> str | list[str]:
    """The CLI's DATA arguments as map() takes them."""
    return data[0] if len(data) == 1 else list(data)
