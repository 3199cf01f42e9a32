"""Reading runs and their outputs back as pandas DataFrames.

A run is committed when its run.json exists (the runtime writes it last), so
the output of a run that died half-way is never read. The run history also
shows the runs that have no run.json:

- ``running``: its started.json (written first by every run) is younger than
  its timeout plus LOST_GRACE_SECONDS;
- ``lost``: older than that, so the platform stopped it (timeout, out of
  memory) or the store refused its record;
- ``failed`` with error type StoreWriteError: the local provider kept the record
  the store refused in its spool, ``$DEPLOYER_HOME/local/spool/{name}/{run_id}.json``.

Only markers of runs without run.json are read, so a long committed history
costs no more than before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from deployer.archive import write_atomically
from deployer.errors import SchemaChangeWarning, StoreError
from deployer.run_index import RunIndex, Stamp
from deployer.runtimes import fanout, storage

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# How long past its timeout a run without run.json still shows as running:
# room for the commit itself and for clock skew between platform and reader.
LOST_GRACE_SECONDS = 60
# The timeout assumed for a started.json without one: the longest a deploy may set.
UNKNOWN_TIMEOUT_SECONDS = 3600


def _default_output() -> str:
    from deployer.providers.local.provider import home

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


def spool_dir(name: str) -> Path:
    """Where the local provider keeps run records its store refused."""
    from deployer.providers.local.provider import home

    return home() / "local" / "spool" / name


def spool_run(record: dict[str, Any], *, output: str) -> Path:
    """Keep a run record the store refused on this machine, where read_runs finds it.

    ``output`` is the store the run was meant for: the record shows in that
    store's history only.
    """
    name, run_id = record["name"], record["run_id"]
    if not (_plain_file_name(name) and _plain_file_name(run_id)):
        raise StoreError(f"cannot spool a run record named {name!r}/{run_id!r}")
    path = spool_dir(name) / f"{run_id}.json"
    write_atomically(path, storage.json_bytes({**record, "output": output}))
    return path


def _plain_file_name(part: object) -> bool:
    """A name that stays one file in its folder: no separator, not hidden, not empty."""
    return (
        isinstance(part, str)
        and bool(part)
        and not part.startswith(".")
        and (Path(part).name == part)
    )


def _location_key(url: str) -> str:
    """One spelling per store location, so that spooled runs match the store asked for."""
    path = storage.local_path(url)
    if path is not None:
        return "file://" + path
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path}".rstrip("/")


def _spooled_runs(name: str, output: str) -> dict[str, dict[str, Any]]:
    if not _plain_file_name(name):
        return {}
    directory = spool_dir(name)
    if not directory.is_dir():
        return {}
    wanted = _location_key(output)
    records = {}
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # removed while we listed, or not a record
            continue
        if isinstance(record, dict) and _location_key(record.get("output") or "") == wanted:
            records[str(record.get("run_id"))] = record
    return records


def _unfinished_record(marker: dict[str, Any], run_id: str, now: datetime) -> dict[str, Any]:
    """The history row of a run that wrote started.json and no run.json: running or lost."""
    timeout_seconds = marker.get("timeout_seconds") or UNKNOWN_TIMEOUT_SECONDS
    started = _as_utc(marker["started"])
    name = marker.get("name")
    record: dict[str, Any] = {
        "run_id": run_id,
        "name": name,
        "trigger": marker.get("trigger"),
        "started": started.isoformat(),
        "code_hash": marker.get("code_hash"),
        "rows_in": None,
        "rows_out": None,
        "timeout_seconds": timeout_seconds,
        "metrics": {},
    }
    if started + timedelta(seconds=timeout_seconds + LOST_GRACE_SECONDS) > now:
        record["status"] = "running"
        return record
    record["status"] = "lost"
    record["error"] = {
        "type": "Lost",
        "message": (
            f"the run started at {started:%Y-%m-%d %H:%M:%S} UTC and wrote no record within "
            f"its {timeout_seconds} s timeout: the platform stopped it (timeout or out of "
            "memory), or the store refused its record. See the function's logs "
            f"(`deployer logs {name}`); a refused record is logged there as "
            '"deployer.run_not_committed"'
        ),
        "traceback": None,
    }
    return record


class _Listed:
    """What the listing found of one run: which marker files, and run.json's stamp."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.stamp: Stamp | None = None


def _listed_runs(
    filesystem: Any, runs_dir: str, name: str, output: str | None
) -> dict[str, _Listed]:
    """Run id -> which of run.json and started.json it has, from one recursive listing."""
    from pyarrow import fs as pafs

    # Listed recursively and keyed on files, not on directories: object stores
    # have no directories, and pyarrow's GCS filesystem leaves a prefix without
    # a marker object out of a non-recursive listing (apache/arrow#35993), so
    # runs written to gs:// would never be found that way.
    selector = pafs.FileSelector(runs_dir, allow_not_found=True, recursive=True)
    try:
        entries = filesystem.get_file_info(selector)
    except OSError as error:
        raise StoreError(f"cannot list runs of {name!r} under {output}: {error}") from error
    prefix = runs_dir.rstrip("/") + "/"
    runs: dict[str, _Listed] = {}
    for entry in entries:
        if entry.type != pafs.FileType.File or not entry.path.startswith(prefix):
            continue
        relative = entry.path[len(prefix) :]
        if relative.count("/") != 1:
            continue
        run_id, file = relative.split("/")
        if file in (storage.RUN_FILE, storage.STARTED_FILE):
            listed = runs.setdefault(run_id, _Listed())
            listed.files.add(file)
            if file == storage.RUN_FILE:
                listed.stamp = _stamp(entry)
    return runs


def _read_json(filesystem: Any, path: str) -> Any:
    return json.loads(storage.read_bytes(filesystem, path))


def _records(
    name: str,
    output: str | None,
    last: int | None,
    since: datetime | str | None,
    *,
    committed_only: bool,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    filesystem, root = _open(output)
    runs_dir = storage.runs_path(root, name)
    # For the last few runs of a long history on S3, list the run folders (a
    # thousand a page) and look at the newest ones only, instead of every file.
    listed: Mapping[str, _Listed] | None = None
    if last is not None and _lists_folders(filesystem):
        folders = _FolderListing(filesystem, runs_dir, name, output)
        if last * QUICK_LISTING_FACTOR < len(folders):
            listed = folders
    quick = listed is not None
    if listed is None:
        listed = _listed_runs(filesystem, runs_dir, name, output)
    if committed_only:
        spooled: dict[str, dict[str, Any]] = {}
        run_ids = sorted(
            listed
            if quick  # whether each committed is found in the loop, newest first
            else (run_id for run_id, found in listed.items() if storage.RUN_FILE in found.files)
        )
    else:
        spooled = _spooled_runs(name, output or _default_output())
        run_ids = sorted(set(listed) | set(spooled))
    if since is not None:
        cutoff = _as_utc(since).strftime("%Y%m%dT%H%M%SZ")
        run_ids = [run_id for run_id in run_ids if run_id[:16] >= cutoff]
    now = now or storage.utc_now()
    index = RunIndex(filesystem, root, name)
    records = []
    # Newest first, so that ``last`` stops early on a long history.
    for run_id in reversed(run_ids):
        found = listed.get(run_id) or _Listed()
        directory = storage.join(runs_dir, run_id)
        record = None
        if storage.RUN_FILE in found.files:
            record = index.record(run_id, found.stamp)
            if record is None:
                record = _read_record(filesystem, directory)
                if record is not None:
                    index.put_record(run_id, found.stamp, record)
        if record is None and not committed_only:
            if run_id in spooled:
                record = {**spooled[run_id], "metrics": {}}
            elif storage.STARTED_FILE in found.files:
                try:
                    marker = _read_json(filesystem, storage.join(directory, storage.STARTED_FILE))
                    record = _unfinished_record(marker, run_id, now)
                except (FileNotFoundError, ValueError, KeyError, TypeError):
                    record = None  # removed since the listing, or not a marker
        if record is None:
            continue
        record["_directory"] = directory
        record["_stamp"] = found.stamp
        records.append(record)
        if last is not None and len(records) >= last:
            break
    # Entries of deleted runs are dropped only when every run was listed.
    index.save(None if quick else set(listed))
    records.reverse()
    return records


# The newest runs are looked at one by one (two HEADs each) only when there are
# this many times more runs than asked for: a full listing costs a LIST page per
# thousand files (about five a run), and a page costs about ten HEADs.
QUICK_LISTING_FACTOR = 40


def _stamp(entry: Any) -> Stamp:
    """run.json's size and modification time, to the second: a listing and a HEAD
    report the same object's time at different precisions on some stores."""
    seconds = int(entry.mtime_ns or 0) // 1_000_000_000
    return Stamp(int(entry.size or 0), seconds * 1_000_000_000)


def _lists_folders(filesystem: Any) -> bool:
    """Whether a listing of ``runs/`` that is not recursive names every run: true on
    S3 and disk; not on GCS, where pyarrow leaves out prefixes without a marker
    object (apache/arrow#35993)."""
    from pyarrow import fs as pafs

    return isinstance(filesystem, (pafs.S3FileSystem, pafs.LocalFileSystem))


class _FolderListing(Mapping[str, _Listed]):
    """Run id -> its marker files, from a listing of the run folders; each run's
    files are looked up (two HEADs) only when that run is asked for."""

    def __init__(self, filesystem: Any, runs_dir: str, name: str, output: str | None) -> None:
        from pyarrow import fs as pafs

        self.filesystem = filesystem
        self.runs_dir = runs_dir
        selector = pafs.FileSelector(runs_dir, allow_not_found=True, recursive=False)
        try:
            entries = filesystem.get_file_info(selector)
        except OSError as error:
            raise StoreError(f"cannot list runs of {name!r} under {output}: {error}") from error
        self.run_ids = sorted(
            entry.base_name for entry in entries if entry.type == pafs.FileType.Directory
        )
        self._looked_up: dict[str, _Listed] = {}

    def __getitem__(self, run_id: str) -> _Listed:
        if run_id not in self._looked_up:
            if run_id not in self.run_ids:
                raise KeyError(run_id)
            from pyarrow import fs as pafs

            directory = storage.join(self.runs_dir, run_id)
            found = _Listed()
            markers = [storage.RUN_FILE, storage.STARTED_FILE]
            for entry in self.filesystem.get_file_info(
                [storage.join(directory, marker) for marker in markers]
            ):
                if entry.type != pafs.FileType.File:
                    continue
                found.files.add(entry.base_name)
                if entry.base_name == storage.RUN_FILE:
                    found.stamp = _stamp(entry)
            self._looked_up[run_id] = found
        return self._looked_up[run_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.run_ids)

    def __len__(self) -> int:
        return len(self.run_ids)


def _read_record(filesystem: Any, directory: str) -> dict[str, Any] | None:
    """run.json with its metrics attached, or None if the run was deleted since the listing."""
    try:
        record: dict[str, Any] = _read_json(filesystem, storage.join(directory, storage.RUN_FILE))
    except FileNotFoundError:
        return None
    try:
        record["metrics"] = _read_json(filesystem, storage.join(directory, storage.METRICS_FILE))
    except FileNotFoundError:
        record["metrics"] = {}
    return record


def count_runs(name: str, *, output: str | None = None) -> int:
    """How many runs ``name`` has in the store (committed or not), from one listing."""
    filesystem, root = _open(output)
    runs_dir = storage.runs_path(root, name)
    if _lists_folders(filesystem):  # a page per thousand runs, not per thousand files
        return len(_FolderListing(filesystem, runs_dir, name, output))
    return len(_listed_runs(filesystem, runs_dir, name, output))


def default_output() -> str:
    return _default_output()


# A failed run keeps no output; a skipped one never ran.
NO_OUTPUT_STATUSES = ("failed", "skipped")


def output_files(record: dict[str, Any]) -> list[str]:
    """A run's output file names: output.parquet, or a map run's parts (its run.json lists them)."""
    parts = record.get("parts")
    if isinstance(parts, list):
        return [str(part["file"]) for part in parts if fanout.PART_PATTERN.match(str(part["file"]))]
    return [storage.OUTPUT_FILE]


def _output_paths(record: dict[str, Any]) -> list[str]:
    return [storage.join(record["_directory"], file) for file in output_files(record)]


def first_rows_of_run(record: dict[str, Any], output: str | None, rows: int) -> pd.DataFrame | None:
    """The first ``rows`` predictions of a run from ``committed_runs``/``run_history``."""
    filesystem, _ = _open(output)
    table = _first_rows_of(record, filesystem, rows)
    return None if table is None else table.to_pandas()


def _first_rows_of(record: dict[str, Any], filesystem: Any, rows: int) -> pa.Table | None:
    """The first ``rows`` rows of a run's output, reading its files only as far as needed."""
    import pyarrow as pa

    tables = []
    have = 0
    for path in _output_paths(record):
        if have >= rows:
            break
        try:
            table = _first_rows(path, filesystem, rows - have)
        except FileNotFoundError:
            continue  # the run returned None
        tables.append(table)
        have += table.num_rows
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def committed_runs(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    since: datetime | str | None = None,
) -> list[dict[str, Any]]:
    """run.json records of committed runs, oldest first, with metrics attached."""
    return _records(name, output, last, since, committed_only=True)


def run_history(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    since: datetime | str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Committed runs, plus running, lost and spooled ones (see the module's docstring)."""
    return _records(name, output, last, since, committed_only=False, now=now)


def read_runs(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    since: datetime | str | None = None,
) -> pd.DataFrame:
    """One row per run: status, trigger, timing, rows, checks, metrics (``metric.NAME``)
    and the params the run was given (``param.NAME``).

    Besides committed runs (succeeded, warned, check_failed, failed, and skipped:
    a schedule with ``overlap=False`` that fired while its previous run ran), status is
    ``running`` for a run still within its timeout, ``lost`` for one that
    started and never wrote its record (stopped by the platform: timeout or out
    of memory), and ``failed`` with error type StoreWriteError for a run whose
    store refused its record (kept locally by the local provider).

    >>> deployer.read_runs("churn-scores", output="s3://acme/predictions", last=10)
    """
    import pandas as pd

    rows = []
    for record in run_history(name, output=output, last=last, since=since):
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
        for param, value in (record.get("params") or {}).items():
            row[f"param.{param}"] = value
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
    include_failed_checks: bool = False,
    limit: int | None = None,
    run_id: str | None = None,
) -> pd.DataFrame:
    """The predictions of committed runs, concatenated, with a ``run_id`` column.

    Runs that failed a check of severity "error" are left out unless
    ``include_failed_checks``. ``limit``: at most this many rows, from the
    newest runs (read newest first, and only as far as needed). ``run_id``:
    that run's alone. When the runs read differ in output schema, a
    SchemaChangeWarning says how (see ``_concat_runs``).

    >>> deployer.read_outputs("churn-scores", output="s3://acme/predictions", last=1)
    """
    import pandas as pd

    filesystem, _ = _open(output)
    tables: list[tuple[str, pa.Table]] = []
    wanted = None if limit is None else max(limit, 0)
    have = 0
    records = committed_runs(name, output=output, last=last, since=since)
    if run_id is not None:
        records = [record for record in records if record["run_id"] == run_id]
        if not records:
            read_run(name, run_id, output=output)  # names the runs there are
            raise StoreError(f"run {run_id} of {name} did not commit: it has no outputs")
    readable = [
        record
        for record in records
        if record.get("status") not in NO_OUTPUT_STATUSES
        and (include_failed_checks or record.get("status") != "check_failed")
    ]
    if wanted is None:
        whole = _read_as_one_dataset(filesystem, readable)
        if whole is not None:
            return whole
        tables = _read_tables(filesystem, readable)
    else:
        for record in reversed(readable):  # newest first, only as far as needed
            if have >= wanted:
                break
            table = _first_rows_of(record, filesystem, wanted - have)
            if table is None:
                continue  # the run returned None
            have += table.num_rows
            tables.append((record["run_id"], table))
        tables.reverse()
    if not tables:
        return pd.DataFrame({"run_id": pd.Series(dtype="str")})
    return _concat_runs(name, tables)


def _read_as_one_dataset(filesystem: Any, records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """All the runs' outputs as one Arrow dataset, read in parallel and converted
    to pandas once, when every run recorded the same output schema (what almost
    every history is); None when they differ or a run has no output file, for
    _read_tables and _concat_runs to handle and say so."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    schemas = {
        json.dumps((record.get("metrics") or {}).get("schema"), sort_keys=True)
        for record in records
    }
    if len(records) < 2 or len(schemas) != 1 or "null" in schemas:
        return None
    runs_dir = records[0]["_directory"].rsplit("/", 1)[0]
    paths = [path for record in records for path in _output_paths(record)]
    try:
        dataset = ds.dataset(
            paths,
            filesystem=filesystem,
            format="parquet",
            # runs/{run_id}/output.parquet (or part-NNNNN.parquet): the folder names the run.
            partitioning=ds.partitioning(pa.schema([("run_id", pa.string())])),
            partition_base_dir=runs_dir,
        )
        table = dataset.to_table()
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    names = table.column_names
    return table.select(["run_id", *(name for name in names if name != "run_id")]).to_pandas()


# Output files read at once: on an object store each read is a round trip.
READ_CONCURRENCY = 16


def _read_tables(filesystem: Any, records: list[dict[str, Any]]) -> list[tuple[str, pa.Table]]:
    """Every run's output, read concurrently, in the runs' order (runs without one left out)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    def read(record: dict[str, Any]) -> tuple[str, pa.Table] | None:
        tables = []
        for path in _output_paths(record):
            try:
                # One thread per run here already: pyarrow's own pool would only contend.
                tables.append(pq.read_table(path, filesystem=filesystem, use_threads=False))
            except FileNotFoundError:
                continue  # the run returned None
        if not tables:
            return None
        return record["run_id"], tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    if len(records) <= 1:
        found = [read(record) for record in records]
    else:
        with ThreadPoolExecutor(max_workers=min(READ_CONCURRENCY, len(records))) as pool:
            found = list(pool.map(read, records))
    return [item for item in found if item is not None]


def _concat_runs(name: str, tables: list[tuple[str, pa.Table]]) -> pd.DataFrame:
    """One frame of many runs' outputs, each row with its run_id.

    Runs with the same output schema are concatenated as they are. When the
    schema changed between runs (a redeploy), nothing is coerced silently: a
    SchemaChangeWarning says what differs; a column missing from some runs is
    null there, integers stay integers (pandas' nullable Int64), and a column
    whose type changed takes the wider type (int64 and double: double).
    """
    import pandas as pd
    import pyarrow as pa

    schemas: dict[pa.Schema, list[str]] = {}
    for run_id, table in tables:
        schemas.setdefault(table.schema.remove_metadata(), []).append(run_id)
    types_mapper = None
    if len(schemas) > 1:
        import warnings

        warnings.warn(_schema_change_message(name, schemas), SchemaChangeWarning, stacklevel=3)
        unified = pa.unify_schemas(list(schemas), promote_options="permissive")
        tables = [(run_id, _conform(table, unified)) for run_id, table in tables]

        def types_mapper(arrow_type: pa.DataType) -> Any:
            return pd.Int64Dtype() if pa.types.is_integer(arrow_type) else None

    combined = pa.concat_tables(
        [
            table.add_column(0, "run_id", pa.array([run_id] * table.num_rows, pa.string()))
            for run_id, table in tables
        ]
    )
    return combined.to_pandas(types_mapper=types_mapper)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _schema_change_message(name: str, schemas: dict[pa.Schema, list[str]]) -> str:
    """What differs between the schemas, each named by its runs (first..last)."""
    described = []
    first = None
    for schema, run_ids in schemas.items():
        runs = f"run {run_ids[0]}" if len(run_ids) == 1 else f"runs {run_ids[0]}..{run_ids[-1]}"
        if first is None:
            first = schema
            columns = ", ".join(f"{field.name} {field.type}" for field in schema)
            described.append(f"{runs}: {columns}")
            continue
        changes = []
        for field in schema:
            if field.name not in first.names:
                changes.append(f"+{field.name} {field.type}")
            elif first.field(field.name).type != field.type:
                changes.append(f"{field.name} {first.field(field.name).type} -> {field.type}")
        changes += [f"-{field.name}" for field in first if field.name not in schema.names]
        described.append(f"{runs}: {', '.join(changes) or 'columns reordered'}")
    return (
        f"the outputs of {name} changed schema between runs ({'; '.join(described)}); "
        "columns missing from a run are null there (integers as nullable Int64) and a "
        "column whose type changed has the wider type: read one schema's runs with "
        "run_id=, last= or since="
    )


def read_run(name: str, run_id: str, *, output: str | None = None) -> dict[str, Any]:
    """One run's whole record (run.json, with its metrics), including a running,
    lost or spooled run; StoreError naming the runs there are if it is not found.

    >>> deployer.read_run("churn-scores", "20261129T060000Z-ab12cd34")["error"]["traceback"]
    """
    for record in run_history(name, output=output):
        if record["run_id"] == run_id:
            return {key: value for key, value in record.items() if not key.startswith("_")}
    recent = [record["run_id"] for record in run_history(name, output=output, last=5)]
    there = f"its last runs: {', '.join(recent)}" if recent else no_runs_hint(name, output)
    raise StoreError(f"{name} has no run {run_id!r} ({there}): see `deployer runs {name}`")


def functions_with_runs(output: str | None = None) -> list[str]:
    """Names of the functions that have runs in the store."""
    filesystem, root = _open(output)
    import pyarrow.fs as pafs

    try:
        entries = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return []
    names = []
    for entry in entries:
        if entry.type != pafs.FileType.Directory:
            continue
        runs = filesystem.get_file_info(storage.join(entry.path, "runs"))
        if runs.type == pafs.FileType.Directory:
            names.append(entry.base_name)
    return sorted(names)


def no_runs_hint(name: str, output: str | None) -> str:
    """What to say when ``name`` has no runs: which functions do have some."""
    others = [other for other in functions_with_runs(output) if other != name]
    where = output or _default_output()
    if others:
        return f"{name} has no runs in {where}; these functions have runs: {', '.join(others)}"
    return f"{name} has no runs in {where}, and no other function has either"


def _first_rows(path: str, filesystem: Any, rows: int) -> Any:
    """The first ``rows`` rows of a Parquet file, reading only the row groups needed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        batches = []
        for batch in parquet.iter_batches(batch_size=max(rows, 1)):
            batches.append(batch)
            if sum(len(b) for b in batches) >= rows:
                break
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    return table.slice(0, rows)


def committed_files(
    name: str,
    *,
    output: str | None = None,
    last: int | None = None,
    include_failed_checks: bool = False,
) -> list[str]:
    """URLs of the output files of ``name``'s committed runs, oldest first: what
    another tool (DuckDB, polars, Spark) should read, so that it sees only runs
    whose run.json exists. The run id is the folder above each file.

    >>> duckdb.sql(f"select * from read_parquet({deployer.committed_files('scores')})")
    """
    root = output or _default_output()
    filesystem, _ = _open(output)
    files = []
    for record in committed_runs(name, output=output, last=last):
        status = record.get("status")
        if status in NO_OUTPUT_STATUSES or (status == "check_failed" and not include_failed_checks):
            continue
        for file in output_files(record):
            path = storage.join(record["_directory"], file)
            if filesystem.get_file_info(path).type.name != "File":
                continue  # the run returned nothing
            files.append(storage.join(root, name, "runs", record["run_id"], file))
    return files
