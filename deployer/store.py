"""Reading committed runs and their outputs back as pandas DataFrames.

A run is committed when its run.json exists (the runtime writes it last), so a
run that died half-way is never read.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from deployer.errors import StoreError
from deployer.runtimes import storage

if TYPE_CHECKING:
    import pandas as pd


def _default_output() -> str:
    from deployer.providers.local import home

    return str(home() / "store")


def _open(output: str | None) -> tuple[Any, str]:
    try:
        return storage.filesystem(output or _default_output())
    except storage.StorageError as error:
        raise StoreError(str(error)) from None


def _as_utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def committed_runs(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    since: datetime | str | None = None,
) -> list[dict[str, Any]]:
    """run.json records of committed runs, oldest first, with metrics attached."""
    from pyarrow import fs as pafs

    filesystem, root = _open(output)
    runs_dir = storage.runs_path(root, name)
    # Listed recursively and keyed on run.json files, not on directories: object
    # stores have no directories, and pyarrow's GCS filesystem leaves a prefix
    # without a marker object out of a non-recursive listing (apache/arrow#35993),
    # so runs written to gs:// would never be found that way.
    selector = pafs.FileSelector(runs_dir, allow_not_found=True, recursive=True)
    try:
        entries = filesystem.get_file_info(selector)
    except OSError as error:
        raise StoreError(f"cannot list runs of {name!r} under {output}: {error}") from error
    prefix = runs_dir.rstrip("/") + "/"
    run_ids = sorted(
        entry.path[len(prefix) :].split("/", 1)[0]
        for entry in entries
        if entry.type == pafs.FileType.File
        and entry.path.startswith(prefix)
        and entry.path[len(prefix) :].count("/") == 1
        and entry.base_name == storage.RUN_FILE
    )
    if since is not None:
        cutoff = _as_utc(since).strftime("%Y%m%dT%H%M%SZ")
        run_ids = [run_id for run_id in run_ids if run_id[:16] >= cutoff]
    records = []
    # Newest first, so that ``last`` stops early on a long history.
    for run_id in reversed(run_ids):
        directory = storage.join(runs_dir, run_id)
        try:
            record = json.loads(
                storage.read_bytes(filesystem, storage.join(directory, storage.RUN_FILE))
            )
        except FileNotFoundError:
            continue  # not committed: still running, or died half-way
        try:
            record["metrics"] = json.loads(
                storage.read_bytes(filesystem, storage.join(directory, storage.METRICS_FILE))
            )
        except FileNotFoundError:
            record["metrics"] = {}
        record["_directory"] = directory
        records.append(record)
        if last is not None and len(records) >= last:
            break
    records.reverse()
    return records


def read_runs(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    since: datetime | str | None = None,
) -> pd.DataFrame:
    """One row per committed run: status, trigger, timing, rows, checks and metrics.

    >>> deployer.read_runs("churn-scores", output="s3://acme/predictions", last=10)
    """
    import pandas as pd

    rows = []
    for record in committed_runs(name, output=output, last=last, since=since):
        metrics = record.get("metrics", {})
        error = record.get("error") or {}
        row = {
            "run_id": record["run_id"],
            "status": record.get("status"),
            "trigger": record.get("trigger"),
            "started": pd.Timestamp(record["started"]) if record.get("started") else pd.NaT,
            "ended": pd.Timestamp(record["ended"]) if record.get("ended") else pd.NaT,
            "duration_ms": record.get("duration_ms"),
            "rows_in": record.get("rows_in"),
            "rows_out": record.get("rows_out"),
            "code_hash": record.get("code_hash"),
            "error_type": error.get("type"),
            "error_message": error.get("message"),
            "checks_failed": [
                check
                for check, result in (record.get("checks") or {}).items()
                if not result.get("passed")
            ],
        }
        for metric, value in (metrics.get("user") or {}).items():
            row[f"metric.{metric}"] = value
        rows.append(row)
    columns = [
        "run_id",
        "status",
        "trigger",
        "started",
        "ended",
        "duration_ms",
        "rows_in",
        "rows_out",
        "code_hash",
        "error_type",
        "error_message",
        "checks_failed",
    ]
    return pd.DataFrame(rows, columns=columns if not rows else None)


def read_outputs(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    since: datetime | str | None = None,
) -> pd.DataFrame:
    """The predictions of committed runs, concatenated, with a ``run_id`` column.

    >>> deployer.read_outputs("churn-scores", output="s3://acme/predictions", last=1)
    """
    import pandas as pd
    import pyarrow.parquet as pq

    filesystem, _ = _open(output)
    frames = []
    for record in committed_runs(name, output=output, last=last, since=since):
        if record.get("status") == "failed":
            continue
        path = storage.join(record["_directory"], storage.OUTPUT_FILE)
        try:
            table = pq.read_table(path, filesystem=filesystem)
        except FileNotFoundError:
            continue  # the run returned None
        frame = table.to_pandas()
        frame.insert(0, "run_id", record["run_id"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame({"run_id": pd.Series(dtype="str")})
    return pd.concat(frames, ignore_index=True)
