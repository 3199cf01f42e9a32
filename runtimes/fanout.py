"""Fan-out: one run over a data set too large for one invocation.

A map run is planned from Parquet footers (files and row groups; never the
data), cut into shards, and each shard is sent to the deployed function as a
reference (its files and row groups, the run id, its part number): a few
hundred bytes, whatever the shard holds. Each shard writes
``part-NNNNN.parquet`` (the same name when it is retried) and answers with its
rows, its user metrics and checks, and its profiles. The coordinator merges
them and writes metrics.json, profile.json and, last, run.json, which lists
every part: a map run that did not commit shows nothing, and parts no
committed run.json lists are removed.

The coordinator runs on the host for ``deployer map`` / ``Deployment.map``
and inside the function for a scheduled map run; both sides import only this
module, the standard library and pyarrow, so it ships in every bundle.

Profiles merge exactly (counts add) because every shard bins on the same
edges: the function's reference, or, for a function without one yet, the
bins of the first shard that ran (``map-reference.json`` in the run's
folder, removed at commit).
"""

from __future__ import annotations

import os
import random
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from . import storage

MAP_TRIGGER = "map"
MAP_REFERENCE_FILE = "map-reference.json"  # in the run's folder while the run goes on
PART_PATTERN = re.compile(r"^part-(\d{5})\.parquet$")
RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
MAX_PARTS = 100_000  # part-NNNNN
FORMATS = ("parquet", "csv")
# A shard's default size: what an invocation reads and holds at once. Parquet
# sizes are compressed; in memory a shard is several times larger.
DEFAULT_SHARD_BYTES = 64 * 2**20
FOOTER_CONCURRENCY = 16  # footers read at once while planning (round trips on a store)
RETRY_BACKOFF_SECONDS = (0.5, 2.0, 5.0)
# Merges a Metric may name: exact for counts and sums ("sum"), extremes, and a
# mean of per-row values weighted by each shard's output rows ("mean").
MERGES = ("sum", "mean", "min", "max")


class MapError(Exception):
    """The data cannot be fanned out as asked; the message says why and what to do."""


class ShardRequestError(Exception):
    """A shard request that is not one deployer makes (HTTP 400)."""


def part_file(part: int) -> str:
    return f"part-{part:05d}.parquet"


# --- planning ------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Part of one file: all of it (row_groups None), or some of its row groups."""

    path: str  # a URL (s3://, gs://, az://, file path)
    row_groups: tuple[int, ...] | None = None
    format: str = "parquet"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "row_groups": None if self.row_groups is None else list(self.row_groups),
            "format": self.format,
        }


@dataclass(frozen=True)
class Shard:
    part: int
    pieces: tuple[Piece, ...]
    rows: int | None  # None for CSV: counted only by reading
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"part": self.part, "pieces": [piece.to_json() for piece in self.pieces]}


@dataclass(frozen=True)
class ShardPlan:
    source: str  # what the user gave, for the run record
    shards: tuple[Shard, ...]
    files: int
    rows: int | None
    bytes: int
    notes: tuple[str, ...] = ()  # what the plan could not do as asked (a huge row group)

    def describe(self) -> str:
        rows = "?" if self.rows is None else f"{self.rows:,}"
        return (
            f"{len(self.shards)} shards from {self.files} file(s), {rows} rows, "
            f"{self.bytes / 2**20:,.1f} MB"
        )


@dataclass(frozen=True)
class _FileFooter:
    url: str
    format: str
    size: int
    row_groups: tuple[tuple[int, int], ...] = ()  # (rows, bytes) per row group
    schema: Any = None


def plan_shards(
    source: str | Sequence[str],
    *,
    rows_per_shard: int | None = None,
    bytes_per_shard: int | None = None,
    min_shards: int = 1,
) -> ShardPlan:
    """Shards of ``source`` (a Parquet or CSV file, a folder/prefix of them, or a
    list), from listings and Parquet footers only.

    Row groups are packed in file order into shards of at most ``rows_per_shard``
    rows (or, without it, ``bytes_per_shard`` compressed bytes; by default 64 MB,
    or less so that there are about ``min_shards``: the concurrency times a few).
    A row group is the smallest shard Parquet allows; a larger one is a shard of
    its own and the plan's notes say so. A CSV file is one shard. MapError when
    there is nothing to read, the formats are mixed, or the Parquet files do
    not share one schema.
    """
    if rows_per_shard is not None and rows_per_shard < 1:
        raise MapError(f"rows_per_shard={rows_per_shard!r}: give a positive number of rows")
    if bytes_per_shard is not None and bytes_per_shard < 1:
        raise MapError(f"bytes_per_shard={bytes_per_shard!r}: give a positive number of bytes")
    urls = [source] if isinstance(source, str) else list(source)
    if not urls:
        raise MapError("map() got an empty list of files: give a file, a folder or a list")
    files = _list_files(urls)
    formats = {footer.format for footer in files}
    if len(formats) > 1:
        raise MapError(
            f"{_shown(source)} mixes Parquet and CSV files: fan out one format at a time"
        )
    footers = _read_footers(files)
    _require_one_schema(footers)
    limit_rows = rows_per_shard
    limit_bytes = bytes_per_shard
    if rows_per_shard is None and bytes_per_shard is None:
        total = sum(footer.size for footer in footers)
        limit_bytes = max(1, min(DEFAULT_SHARD_BYTES, -(-total // max(1, min_shards))))
    shards: list[Shard] = []
    notes: list[str] = []
    oversized: list[tuple[str, int, int, int]] = []
    large_csv: list[_FileFooter] = []
    current: list[Piece] = []
    current_rows = current_bytes = 0

    def close() -> None:
        nonlocal current, current_rows, current_bytes
        if current:
            shards.append(Shard(len(shards), tuple(current), current_rows, current_bytes))
        current, current_rows, current_bytes = [], 0, 0

    for footer in footers:
        if footer.format == "csv":
            close()
            shards.append(Shard(len(shards), (Piece(footer.url, None, "csv"),), None, footer.size))
            if footer.size > (bytes_per_shard or DEFAULT_SHARD_BYTES):
                large_csv.append(footer)
            continue
        for index, (rows, size) in enumerate(footer.row_groups):
            over = (limit_rows is not None and current_rows + rows > limit_rows) or (
                limit_bytes is not None and current_bytes + size > limit_bytes
            )
            if over:
                close()
            if (limit_rows is not None and rows > limit_rows) or (
                limit_bytes is not None and size > limit_bytes
            ):
                oversized.append((footer.url, index, rows, size))
            groups = current[-1].row_groups if current else None
            if groups is not None and current[-1].path == footer.url:
                current[-1] = Piece(footer.url, (*groups, index))
            else:
                current.append(Piece(footer.url, (index,)))
            current_rows += rows
            current_bytes += size
    close()
    if oversized and (rows_per_shard is not None or bytes_per_shard is not None):
        url, index, rows, size = oversized[0]
        more = f" (and {len(oversized) - 1} more row groups)" if len(oversized) > 1 else ""
        notes.append(
            f"{url} row group {index} holds {rows:,} rows ({size / 2**20:,.1f} MB){more}, "
            "more than a shard: a row group is the smallest shard, as Parquet is split by "
            "row groups; write the files with smaller ones "
            "(pyarrow.parquet.write_table(..., row_group_size=N))"
        )
    if large_csv:
        more = f" (and {len(large_csv) - 1} more)" if len(large_csv) > 1 else ""
        notes.append(
            f"{large_csv[0].url} ({large_csv[0].size / 2**20:,.0f} MB){more} is one shard: CSV "
            "is split by files only (a row may span any byte range), so write smaller files, "
            "or Parquet with row groups of a shard's size"
        )
    if not shards:
        raise MapError(f"{_shown(source)} has no rows to fan out")
    if len(shards) > MAX_PARTS:
        raise MapError(
            f"{_shown(source)} makes {len(shards):,} shards, more than the {MAX_PARTS:,} "
            "a run can hold: give larger shards (rows_per_shard= or bytes_per_shard=)"
        )
    has_csv = "csv" in formats
    return ShardPlan(
        source=_shown(source),
        shards=tuple(shards),
        files=len(footers),
        rows=None if has_csv else sum(rows for f in footers for rows, _ in f.row_groups),
        bytes=sum(footer.size for footer in footers),
        notes=tuple(notes),
    )


def _shown(source: str | Sequence[str]) -> str:
    if isinstance(source, str):
        return source
    items = list(source)
    return items[0] if len(items) == 1 else f"{items[0]} and {len(items) - 1} more"


def _format_of(path: str) -> str | None:
    lowered = path.lower()
    if lowered.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if lowered.endswith(".csv"):
        return "csv"
    return None


def _list_files(urls: list[str]) -> list[_FileFooter]:
    """Every data file the URLs name, in a stable order (folders listed recursively)."""
    from pyarrow import fs as pafs

    found: list[_FileFooter] = []
    for url in urls:
        storage.check_location(url)
        if "://" not in url:  # a path of this machine: the workers run elsewhere
            url = os.path.abspath(url)
        filesystem, path = storage.filesystem(url)
        info = filesystem.get_file_info(path)
        base = url.rstrip("/")
        if info.type == pafs.FileType.File:
            data_format = _format_of(path)
            if data_format is None:
                raise MapError(f"{url} is not a .parquet or .csv file: map() reads those")
            found.append(_FileFooter(url, data_format, int(info.size or 0)))
            continue
        selector = pafs.FileSelector(path, allow_not_found=True, recursive=True)
        entries = [
            entry
            for entry in filesystem.get_file_info(selector)
            if entry.type == pafs.FileType.File
        ]
        if info.type == pafs.FileType.NotFound and not entries:
            raise MapError(f"{url} does not exist: write the data set there first")
        prefix = path.rstrip("/") + "/"
        files = []
        for entry in sorted(entries, key=lambda entry: entry.path):
            inside = entry.path.startswith(prefix)
            relative = entry.path[len(prefix) :] if inside else entry.base_name
            # Hidden and marker files (_SUCCESS, .crc, _metadata) are not data.
            if any(part.startswith(("_", ".")) for part in relative.split("/")):
                continue
            data_format = _format_of(entry.path)
            if data_format is not None:
                files.append(_FileFooter(f"{base}/{relative}", data_format, int(entry.size or 0)))
        if not files:
            raise MapError(f"{url} holds no .parquet or .csv files")
        found.extend(files)
    return found


def _read_footers(files: list[_FileFooter]) -> list[_FileFooter]:
    """Each Parquet file with its row groups' rows and sizes, from its footer alone."""

    def read(footer: _FileFooter) -> _FileFooter:
        if footer.format != "parquet":
            return footer
        import pyarrow as pa
        import pyarrow.parquet as pq

        filesystem, path = storage.filesystem(footer.url)
        try:
            with filesystem.open_input_file(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
        except (pa.ArrowInvalid, OSError) as error:
            raise MapError(f"{footer.url} is not a readable Parquet file: {error}") from None
        groups = tuple(
            (metadata.row_group(index).num_rows, metadata.row_group(index).total_byte_size)
            for index in range(metadata.num_row_groups)
        )
        return _FileFooter(
            footer.url, "parquet", footer.size, groups, metadata.schema.to_arrow_schema()
        )

    if len(files) == 1:
        return [read(files[0])]
    with ThreadPoolExecutor(max_workers=min(FOOTER_CONCURRENCY, len(files))) as pool:
        return list(pool.map(read, files))


def _require_one_schema(footers: list[_FileFooter]) -> None:
    first = next((footer for footer in footers if footer.schema is not None), None)
    if first is None:
        return
    reference = first.schema.remove_metadata()
    for footer in footers:
        if footer.schema is None or footer.schema.remove_metadata().equals(reference):
            continue
        theirs = footer.schema.remove_metadata()
        differences = [
            f"{name}: {reference.field(name).type} vs {theirs.field(name).type}"
            for name in reference.names
            if name in theirs.names and reference.field(name).type != theirs.field(name).type
        ]
        differences += [f"-{name}" for name in reference.names if name not in theirs.names]
        differences += [f"+{name}" for name in theirs.names if name not in reference.names]
        raise MapError(
            f"{footer.url} does not have the columns of {first.url} "
            f"({', '.join(differences) or 'columns in another order'}): every file of a map "
            "run must share one schema; map them separately or rewrite them alike"
        )


# --- one shard, inside the function -----------------------------------------------


@dataclass(frozen=True)
class ShardRequest:
    run_id: str
    part: int
    pieces: tuple[Piece, ...]
    first: bool  # the first shard: sets the run's bins when the function has no reference
    params: dict[str, Any] | None = None  # the run's params (core.check_params in the shard)


def parse_shard_request(message: Any) -> ShardRequest:
    """A shard request, validated before any path is touched (ShardRequestError)."""
    if not isinstance(message, dict):
        raise ShardRequestError("a map shard request is a JSON object")
    run_id = message.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise ShardRequestError(f"run_id {run_id!r} is not a deployer run id")
    part = message.get("part")
    if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part < MAX_PARTS:
        raise ShardRequestError(f"part {part!r} is not a part number (0..{MAX_PARTS - 1})")
    raw_pieces = message.get("pieces")
    if not isinstance(raw_pieces, list) or not raw_pieces:
        raise ShardRequestError("a shard names at least one piece of a file")
    pieces = []
    for raw in raw_pieces:
        if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
            raise ShardRequestError("each piece is an object with a path")
        data_format = raw.get("format", "parquet")
        if data_format not in FORMATS:
            raise ShardRequestError(f"format {data_format!r} is not one of {FORMATS}")
        groups = raw.get("row_groups")
        if groups is not None and not (
            isinstance(groups, list)
            and all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in groups)
        ):
            raise ShardRequestError("row_groups is a list of row group numbers")
        try:
            storage.check_location(raw["path"])
        except storage.StorageError as error:
            raise ShardRequestError(str(error)) from None
        pieces.append(Piece(raw["path"], None if groups is None else tuple(groups), data_format))
    params = message.get("params")
    if params is not None and not isinstance(params, dict):
        raise ShardRequestError("params is an object of parameter names to values")
    return ShardRequest(run_id, part, tuple(pieces), bool(message.get("first")), params)


def read_shard(pieces: Iterable[Piece]) -> Any:
    """The shard's rows as one DataFrame: only its row groups are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for piece in pieces:
        filesystem, path = storage.filesystem(piece.path)
        if piece.format == "csv":
            from pyarrow import csv

            with filesystem.open_input_stream(path) as stream:
                tables.append(csv.read_csv(stream))
            continue
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            if piece.row_groups is None:
                tables.append(parquet.read())
            else:
                tables.append(parquet.read_row_groups(list(piece.row_groups)))
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table.to_pandas()


def run_shard(loaded: Any, message: Any) -> dict[str, Any]:
    """One shard of a map run: read it, call the function, write its part file,
    answer with what the coordinator merges. The user's errors are answered as a
    failed shard (the coordinator retries it); ShardRequestError for a request
    deployer did not make."""
    from . import core, quality

    if isinstance(message, dict) and message.get("alert"):
        return _alert_for(loaded, message)
    request = parse_shard_request(message)
    manifest = loaded.manifest
    try:
        params = core.check_params(
            request.params, manifest.function.qualname, manifest.function.params
        )
    except core.PayloadError as error:
        raise ShardRequestError(str(error)) from None
    writer = core._RunWriter(manifest.output, manifest.name, request.run_id, storage.utc_now())
    file = part_file(request.part)
    marker = f"{core.RUN_MARKER} {request.run_id} part {request.part}"
    print(f"{marker} started ({MAP_TRIGGER})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    reply: dict[str, Any] = {"part": request.part, "file": file}
    if request.first:
        reply["settings"] = settings_of(manifest)
    try:
        frame = read_shard(request.pieces)
        reply["rows_in"] = len(frame)
        call_started = time.perf_counter()
        returned = core._call(loaded.function, frame, manifest, params)
        reply["call_ms"] = round((time.perf_counter() - call_started) * 1000, 3)
        output = core.to_frame(returned)
        reference = _shard_reference(writer, loaded, request, frame, output)
        table = None
        if output is not None:
            table = _conform_output(core.to_arrow(output), reference.get("output_schema"))
        reply["rows_out"] = 0 if output is None else len(output)
        settings = manifest.quality
        reply["metrics"], reply["bounds"] = quality.evaluate_metrics(
            loaded.metrics, output, settings
        )
        reply["checks"] = quality.evaluate_checks(loaded.checks, output, settings)
        if settings.get("profile") is not False:
            reply["profile"] = quality.profile_sides(
                {"input": frame, "output": output}, reference.get("bins") or {}
            )
        if table is not None:
            reply["schema"] = {field.name: str(field.type) for field in table.schema}
            writer.write(file, core._parquet_writer(table))
        reply["status"] = "succeeded"
    except Exception as error:  # the user's code or data: the coordinator decides
        reply["status"] = "failed"
        reply["error"] = {
            "type": type(error).__name__,
            "message": str(error)[:2000],
            "traceback": None
            if isinstance(error, core.OutputError)
            else core._users_traceback(error)[-8000:],
        }
    finally:
        print(f"{marker} ended", file=sys.stderr, flush=True)
    reply["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return reply


def _alert_for(loaded: Any, message: dict[str, Any]) -> dict[str, Any]:
    """After a map run committed: its alert, sent from the function, which holds the
    webhook URLs (a coordinator on a machine does not), its deliveries recorded."""
    from . import core

    run_id = message.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise ShardRequestError(f"run_id {run_id!r} is not a deployer run id")
    manifest = loaded.manifest
    writer = core._RunWriter(manifest.output, manifest.name, run_id, storage.utc_now())
    record = writer.read_run_file(storage.RUN_FILE)
    if record is None:
        return {"status": "failed", "error": {"type": "NotCommitted", "message": run_id}}
    core._alert(writer, record, None)
    return {"status": "succeeded", "alerts": record.get("alerts") or []}


_run_references: dict[str, dict[str, Any]] = {}  # run id -> its map-reference.json
_references_lock = threading.Lock()


def _shard_reference(
    writer: Any, loaded: Any, request: ShardRequest, frame: Any, output: Any
) -> dict[str, Any]:
    """The bins every shard of the run profiles on, and the output schema every
    part is written in: the first shard sets them (map-reference.json), the
    others read them, once per process and run."""
    cached = _run_references.get(request.run_id)
    if cached is not None:
        return cached
    with _references_lock:
        if request.first:
            document = _first_reference(writer, loaded, frame, output)
            writer.write(MAP_REFERENCE_FILE, storage.json_bytes(document))
        else:
            document = writer.read_run_file(MAP_REFERENCE_FILE)
            if document is None:
                raise RuntimeError(
                    f"{MAP_REFERENCE_FILE} of run {request.run_id} is missing: the run "
                    "was cancelled or has committed, and this shard came too late"
                )
        _run_references.clear()  # a process serves one map run at a time
        _run_references[request.run_id] = document
    return document


def _first_reference(writer: Any, loaded: Any, frame: Any, output: Any) -> dict[str, Any]:
    """map-reference.json: the function's reference where it has one, else the
    first shard's own profile as the bins; and the first shard's output schema."""
    from . import quality

    stored = writer.read_shared(quality.REFERENCE_FILE)
    reference = quality.reference_for(loaded.reference, stored)
    bins = dict(reference)
    if loaded.manifest.quality.get("profile") is not False:
        for side, profile in quality.profile_sides({"input": frame, "output": output}, {}).items():
            bins.setdefault(side, profile)
    return {
        "bins": bins,
        "had_reference": sorted(reference),  # the sides judged for drift
        "had_stored_reference": stored is not None,
        "output_schema": None if output is None else _schema_text(_arrow_schema(output)),
    }


def settings_of(manifest: Any) -> dict[str, Any]:
    """What the coordinator needs of the deployed function, as the function has it."""
    return {
        "name": manifest.name,
        "output": manifest.output,
        "code_hash": manifest.code_hash,
        "quality": manifest.quality,
    }


def _arrow_schema(frame: Any) -> Any:
    from . import core

    return core.to_arrow(frame.head(0)).schema


def _schema_text(schema: Any) -> str:
    import base64

    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()


def _schema_from_text(text: str) -> Any:
    import base64

    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _conform_output(table: Any, schema_text: str | None) -> Any:
    """The part in the run's output schema (the first shard's): a column that is
    all null here takes the run's type; any other difference is an OutputError."""
    if not schema_text:
        return table
    import pyarrow as pa

    from . import core

    schema = _schema_from_text(schema_text)
    if table.schema.remove_metadata().equals(schema):
        return table
    if table.column_names != schema.names:
        raise core.OutputError(
            f"this shard's output columns {table.column_names} differ from the first shard's "
            f"{schema.names}: every shard of a map run must return the same columns"
        )
    columns = []
    for wanted, column in zip(schema, table.columns, strict=True):
        if column.type == wanted.type:
            columns.append(column)
        elif column.null_count == len(column):
            columns.append(pa.nulls(len(column), wanted.type))
        else:
            raise core.OutputError(
                f"output column {wanted.name!r} is {column.type} in this shard but "
                f"{wanted.type} in the first shard's: return one type per column "
                f"(e.g. out[{wanted.name!r}] = out[{wanted.name!r}].astype(...))"
            )
    return pa.Table.from_arrays(columns, schema=schema)


# --- the coordinator ---------------------------------------------------------------

# dispatch(request) -> reply: runs one shard on the provider's own concurrency
# (a warm worker, a Lambda invocation, an HTTP call). It raises ShardUnavailable
# when the shard could not run at all (a crashed worker, a 5xx, a timeout); the
# coordinator retries that like a failed shard.
Dispatch = Callable[[dict[str, Any]], dict[str, Any]]


class ShardUnavailable(Exception):
    """A shard did not run to an answer (the platform's error, not the function's)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


BUSY_ATTEMPTS = 8


def busy_pauses(
    attempts: int = BUSY_ATTEMPTS, first: float = 0.5, cap: float = 20.0
) -> list[float]:
    """Pauses before each retry of a call the platform refused as busy (throttled:
    more concurrent invocations than it allows): exponential, capped, and
    jittered so that the refused shards do not all come back at once."""
    return [min(cap, first * 2**index) * (0.5 + random.random()) for index in range(attempts - 1)]


class MapCancelled(Exception):
    """The map run was cancelled before it committed; nothing of it is visible."""


@dataclass
class MapProgress:
    """What the coordinator has seen so far; handed to ``on_progress`` after each change."""

    shards: int
    done: int = 0
    failed: int = 0
    retried: int = 0
    rows: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rows_per_second(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.rows / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class MapTarget:
    """The deployed function a map run goes to, as the caller knows it."""

    name: str
    output: str
    code_hash: str | None


def coordinate(
    plan: ShardPlan,
    dispatch: Dispatch,
    target: MapTarget,
    *,
    concurrency: int,
    retries: int = 2,
    failure_budget: int = 0,
    run_id: str | None = None,
    trigger: str = MAP_TRIGGER,
    on_progress: Callable[[MapProgress], None] | None = None,
    cancel: threading.Event | None = None,
    backoff: Sequence[float] = RETRY_BACKOFF_SECONDS,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every shard of ``plan`` through ``dispatch`` and commit one run; its run.json.

    ``params`` are the function's keyword-only parameters for every shard; each
    shard checks them against the signature (a wrong one is a 400 there).

    The first shard runs alone (it fixes the run's bins and output schema, and a
    function that fails on every row fails once, not ten thousand times), then
    the rest ``concurrency`` at a time, each retried ``retries`` times with
    backoff. More than ``failure_budget`` failed shards fail the run: its parts
    are removed and its run.json says which shards failed and why. A cancelled
    run (``cancel`` set, or Ctrl-C) removes what it wrote and raises MapCancelled.
    """
    if concurrency < 1:
        raise MapError(f"concurrency={concurrency!r}: give at least 1")
    if retries < 0 or failure_budget < 0:
        raise MapError("retries= and failure_budget= are counts: 0 or more")
    cancel = cancel or threading.Event()
    started = storage.utc_now()
    run_id = run_id or storage.new_run_id(started)
    from . import core

    writer = core._RunWriter(target.output, target.name, run_id, started)
    record: dict[str, Any] = {
        "run_id": run_id,
        "name": target.name,
        "trigger": trigger,
        "started": started.isoformat(),
        "code_hash": target.code_hash,
        "rows_in": None,
        "rows_out": None,
        "map": {
            "source": plan.source,
            "shards": len(plan.shards),
            "concurrency": concurrency,
            "retries": retries,
            "failure_budget": failure_budget,
        },
    }
    if params:
        record["params"] = params
    writer.mark_started(record, None)
    progress = MapProgress(len(plan.shards))
    state = _Runs(dispatch, run_id, retries, backoff, cancel, progress, on_progress, params)
    try:
        replies = state.run_all(plan.shards, concurrency, failure_budget)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        cancel.set()
        _remove_run(writer, plan)
        raise
    if interrupted or (cancel.is_set() and not state.over_budget(failure_budget)):
        cancel.set()
        _remove_run(writer, plan)
        raise MapCancelled(
            f"map run {run_id} of {target.name} was cancelled after {progress.done} of "
            f"{len(plan.shards)} shards: the shards not started were dropped, those running "
            "were let finish, and everything the run wrote was removed; nothing was committed"
        )
    settings: dict[str, Any] = next(
        (reply["settings"] for reply in replies if "settings" in reply), {}
    )
    record = _commit(writer, record, plan, replies, settings, failure_budget, progress)
    _send_alert(dispatch, record, settings)
    return record


def _send_alert(dispatch: Dispatch, record: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """Ask the function to alert for the committed run, when it has webhooks and the
    run calls for one; a failure here never changes the run."""
    from . import alerts

    configured = ((settings.get("quality") or {}).get("alerts") or {}).get("count")
    needed = alerts.alert_payload(record, read_command=f"deployer runs {record['name']}")
    if not configured or needed is None:
        return
    try:
        reply = dispatch({"run_id": record["run_id"], "alert": True})
        record["alerts"] = reply.get("alerts") or []
    except Exception as error:  # the run is committed; the alert is best effort
        print(f"deployer: the alert of {record['run_id']} was not sent: {error}", file=sys.stderr)


class _Runs:
    """The shards' attempts: which ran, which failed, when to stop."""

    def __init__(
        self,
        dispatch: Dispatch,
        run_id: str,
        retries: int,
        backoff: Sequence[float],
        cancel: threading.Event,
        progress: MapProgress,
        on_progress: Callable[[MapProgress], None] | None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.params = params
        self.run_id = run_id
        self.retries = retries
        self.backoff = tuple(backoff) or (0.0,)
        self.cancel = cancel
        self.progress = progress
        self.on_progress = on_progress
        self.lock = threading.Lock()
        self.failed = 0

    def over_budget(self, failure_budget: int) -> bool:
        return self.failed > failure_budget

    def run_all(
        self, shards: Sequence[Shard], concurrency: int, failure_budget: int
    ) -> list[dict[str, Any]]:
        replies: list[dict[str, Any]] = []
        remaining = list(shards)
        # The first shard alone; if it fails, the next, while the budget allows.
        while remaining and not self.cancel.is_set():
            reply = self.attempt(remaining.pop(0), first=True)
            replies.append(reply)
            if reply["status"] == "succeeded":
                break
            if self.over_budget(failure_budget):
                return replies
        if not remaining or self.cancel.is_set():
            return replies
        with ThreadPoolExecutor(max_workers=min(concurrency, len(remaining))) as pool:
            pending: set[Future[dict[str, Any]]] = {
                pool.submit(self.attempt, shard, first=False) for shard in remaining
            }
            try:
                while pending:
                    # A timeout, so that Ctrl-C reaches this thread while shards run.
                    finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                    for future in finished:
                        replies.append(future.result())
                    if self.over_budget(failure_budget):
                        self.cancel.set()  # no point running the rest: the run has failed
            except BaseException:
                self.cancel.set()
                for future in pending:
                    future.cancel()
                raise
        return [reply for reply in replies if reply["status"] != "cancelled"]

    def attempt(self, shard: Shard, *, first: bool) -> dict[str, Any]:
        request = {**shard.to_json(), "run_id": self.run_id, "first": first}
        if self.params:
            request["params"] = self.params
        reply: dict[str, Any] = {}
        for attempt in range(self.retries + 1):
            if self.cancel.is_set():
                return {"part": shard.part, "status": "cancelled"}
            if attempt:
                pause = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                time.sleep(pause * (0.5 + random.random()))  # jittered: retries do not march
                with self.lock:
                    self.progress.retried += 1
                    self._report()
            try:
                reply = dict(self.dispatch(request))
            except ShardUnavailable as error:
                reply = {
                    "part": shard.part,
                    "status": "failed",
                    "error": {"type": error.error_type, "message": str(error), "traceback": None},
                }
            except Exception as error:  # the dispatcher's own failure: recorded like any
                reply = {
                    "part": shard.part,
                    "status": "failed",
                    "error": {
                        "type": type(error).__name__,
                        "message": str(error),
                        "traceback": traceback.format_exc()[-4000:],
                    },
                }
            reply["attempts"] = attempt + 1
            if reply.get("status") == "succeeded":
                break
        reply["part"] = shard.part
        reply.setdefault("status", "failed")
        with self.lock:
            if reply["status"] == "succeeded":
                self.progress.done += 1
                self.progress.rows += int(reply.get("rows_in") or 0)
            else:
                self.failed += 1
                self.progress.failed += 1
            self._report()
        return reply

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


def _remove_run(writer: Any, plan: ShardPlan) -> None:
    """Everything a map run that will not commit wrote: its parts, bins and marker."""
    files = [part_file(shard.part) for shard in plan.shards]
    writer.remove_files([*files, MAP_REFERENCE_FILE, storage.STARTED_FILE])


def _commit(
    writer: Any,
    record: dict[str, Any],
    plan: ShardPlan,
    replies: list[dict[str, Any]],
    settings: Mapping[str, Any],
    failure_budget: int,
    progress: MapProgress,
) -> dict[str, Any]:
    from . import core, quality

    replies = sorted(replies, key=lambda reply: reply["part"])
    succeeded = [reply for reply in replies if reply["status"] == "succeeded"]
    failed = [reply for reply in replies if reply["status"] != "succeeded"]
    shards = {shard.part: shard for shard in plan.shards}
    record["map"]["retried"] = progress.retried
    record["failed_shards"] = [
        {
            "part": reply["part"],
            "pieces": [piece.to_json() for piece in shards[reply["part"]].pieces],
            "attempts": reply.get("attempts"),
            "error": reply.get("error"),
        }
        for reply in failed
    ]
    not_run = len(plan.shards) - len(replies)
    if len(failed) > failure_budget or not succeeded:
        first = failed[0] if failed else {"part": None, "error": {}}
        error = first.get("error") or {}
        skipped = f"; {not_run} shards were not started" if not_run else ""
        record["status"] = "failed"
        record["error"] = {
            "type": "MapFailed",
            "message": (
                f"{len(failed)} of {len(plan.shards)} shards failed, more than the failure "
                f"budget of {failure_budget}{skipped}. Part {first['part']} failed with "
                f"{error.get('type')}: {error.get('message')}"
            ),
            "traceback": error.get("traceback"),
        }
        _set_totals(record, succeeded)
        core._set_ended(record, writer.started)
        _remove_run(writer, plan)
        writer.write(storage.RUN_FILE, storage.json_bytes(record))
        return record
    map_reference = writer.read_run_file(MAP_REFERENCE_FILE) or {}
    config = settings.get("quality") or {}
    record["parts"] = [
        {
            "part": reply["part"],
            "file": reply["file"],
            "rows_in": reply.get("rows_in"),
            "rows_out": reply.get("rows_out"),
            "attempts": reply.get("attempts"),
        }
        for reply in succeeded
        if reply.get("schema") is not None
    ]
    _set_totals(record, succeeded)
    metrics, bounds = _merge_metrics(succeeded, config)
    record["checks"] = _merge_checks(succeeded)
    if bounds:
        record["bounds"] = bounds
    document = None
    if config.get("profile") is not False and all("profile" in reply for reply in succeeded):
        document = _judge(writer, succeeded, map_reference, config)
        core._summarise_quality(record, document)
    status, reasons = quality.status_of(record["checks"], bounds, document or {})
    if failed:
        reasons.append(
            f"{len(failed)} of {len(plan.shards)} shards failed (within the failure budget of "
            f"{failure_budget}): their rows are not in this run"
        )
        status = status if status == "check_failed" else "warned"
    record["status"] = status
    if reasons:
        record["quality"] = reasons
    builtin = {
        "rows_in": record["rows_in"],
        "rows_out": record["rows_out"],
        "duration_ms": round(sum(float(reply.get("call_ms") or 0) for reply in succeeded), 3),
        "columns": {},
        "schema": next((reply["schema"] for reply in succeeded if reply.get("schema")), {}),
        "user": metrics["merged"],
        "user_by_part": metrics["by_part"],
    }
    output_profile = ((document or {}).get("output") or {}).get("profile") or {}
    for column, summary in (output_profile.get("columns") or {}).items():
        entry = {"null_fraction": summary.get("null_fraction", 0.0)}
        if summary.get("kind") == "numeric":
            entry.update({key: summary.get(key) for key in ("min", "max", "mean")})
        builtin["columns"][column] = entry
    writer.write(storage.METRICS_FILE, storage.json_bytes(builtin))
    if document is not None:
        writer.write(quality.PROFILE_FILE, storage.json_bytes(document))
    core._set_ended(record, writer.started)
    writer.write(storage.RUN_FILE, storage.json_bytes(record))  # the commit
    if document is not None and record["status"] in ("succeeded", "warned"):
        writer.remember(
            document,
            record["run_id"],
            have_reference=bool(map_reference.get("had_stored_reference")),
        )
    kept = {entry["file"] for entry in record["parts"]}
    writer.remove_files(
        [part_file(shard.part) for shard in plan.shards if part_file(shard.part) not in kept]
        + [MAP_REFERENCE_FILE]
    )
    return record


def _set_totals(record: dict[str, Any], succeeded: list[dict[str, Any]]) -> None:
    record["rows_in"] = sum(int(reply.get("rows_in") or 0) for reply in succeeded)
    record["rows_out"] = sum(int(reply.get("rows_out") or 0) for reply in succeeded)


def _merge_checks(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """A check passes the run when it passed on every shard (exact for checks of
    every row; a check of an aggregate is judged per shard)."""
    merged: dict[str, Any] = {}
    for reply in replies:
        for name, result in (reply.get("checks") or {}).items():
            entry = merged.setdefault(
                name, {"passed": True, "severity": result.get("severity"), "failed_parts": []}
            )
            if not result.get("passed"):
                entry["passed"] = False
                entry["failed_parts"].append(reply["part"])
                entry.setdefault("error", result.get("error"))
    for entry in merged.values():
        if entry.get("error") is None:
            entry.pop("error", None)
    return merged


def _merge_metrics(
    replies: list[dict[str, Any]], config: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """User metrics per shard, and merged where the Metric names a merge; bounds are
    judged on the merged value, or per shard (any shard outside fails) without one."""
    from . import quality

    specs = config.get("metrics") or {}
    names = list(dict.fromkeys(name for reply in replies for name in reply.get("metrics") or {}))
    merged: dict[str, Any] = {}
    by_part: dict[str, list[Any]] = {}
    bounds: dict[str, Any] = {}
    for name in names:
        values = [(reply.get("metrics") or {}).get(name) for reply in replies]
        weights = [int(reply.get("rows_out") or 0) for reply in replies]
        by_part[name] = values
        spec = specs.get(name, {})
        how = spec.get("merge")
        if how in MERGES:
            merged[name] = _merged_value(how, values, weights)
        shard_bounds = [(reply.get("bounds") or {}).get(name) for reply in replies]
        if not any(shard_bounds):
            continue
        if how in MERGES:
            bounds[name] = quality.bound_verdict(merged[name], spec)
            continue
        outside = [
            reply["part"]
            for reply, result in zip(replies, shard_bounds, strict=True)
            if result is not None and not result.get("passed")
        ]
        bounds[name] = {
            "passed": not outside,
            "lower": spec.get("lower"),
            "upper": spec.get("upper"),
            "severity": spec.get("severity", quality.ERROR),
            "failed_parts": outside,
        }
    return {"merged": merged, "by_part": by_part}, bounds


def _merged_value(how: str, values: list[Any], weights: list[int]) -> float | None:
    present = [
        (float(value), weight)
        for value, weight in zip(values, weights, strict=True)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    if len(present) != len(values) or not present:
        return None  # a shard's metric failed: the merge would be a guess
    if how == "sum":
        return sum(value for value, _ in present)
    if how == "min":
        return min(value for value, _ in present)
    if how == "max":
        return max(value for value, _ in present)
    total = sum(weight for _, weight in present)
    return sum(value * weight for value, weight in present) / total if total else None


def _judge(
    writer: Any,
    replies: list[dict[str, Any]],
    map_reference: Mapping[str, Any],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """profile.json of the map run: the shards' profiles merged (counts add), judged
    against the function's reference and its previous run like any run."""
    from . import profile as profiling
    from . import quality

    merged: dict[str, Any] = {}
    for side in ("input", "output"):
        parts = [reply["profile"][side] for reply in replies if side in reply["profile"]]
        if not parts:
            continue
        flagged = {
            name
            for part in parts
            for name, column in part["columns"].items()
            if column.get("passthrough")
        }
        merged[side] = profiling.merge_profiles(parts)
        for name in flagged & set(merged[side]["columns"]):
            merged[side]["columns"][name]["passthrough"] = True
    had = set(map_reference.get("had_reference") or ())
    reference = {
        side: profile for side, profile in (map_reference.get("bins") or {}).items() if side in had
    }
    previous = writer.read_shared(quality.SCHEMA_FILE)
    document = quality.judge_sides(merged, reference, previous, config)
    document["had_reference"] = bool(had)
    return document


# --- a scheduled map run, coordinated inside the function ----------------------------

CONCURRENCY_VARIABLE = "DEPLOYER_MAP_CONCURRENCY"  # shards at once of a scheduled map run
DEFAULT_SCHEDULED_CONCURRENCY = 50
# The coordinator stops starting shards this long before its own deadline, so
# that the shards running can finish and the run is recorded before it is stopped.
COORDINATOR_MARGIN_SECONDS = 30.0


def scheduled_map(
    target: MapTarget,
    inputs: str,
    dispatch: Dispatch,
    *,
    fire_time: Any,
    event_id: str,
    concurrency: int | None = None,
    deadline: float | None = None,
    timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """A schedule with map=True: ``inputs`` fanned out, coordinated where the
    schedule fired (the function it invoked; locally, the server), committed as
    one run whose id comes from the fire time (a retry of the firing redoes the
    same run). In a function the coordinator waits for its shards, so the run
    must finish within the function's timeout (``deadline``): past it, shards
    not started are dropped and the run is recorded as failed (Timeout).
    Planning errors are a failed run too."""
    from . import core

    started = storage.utc_now()
    run_id = storage.new_run_id(started, fire_time=fire_time, event_id=event_id)
    if concurrency is None:
        concurrency = int(os.environ.get(CONCURRENCY_VARIABLE) or DEFAULT_SCHEDULED_CONCURRENCY)
    cancel = threading.Event()
    timer = None
    if deadline is not None:
        budget = deadline - time.monotonic()
        margin = min(COORDINATOR_MARGIN_SECONDS, budget / 4)
        timer = threading.Timer(max(0.0, budget - margin), cancel.set)
        timer.daemon = True
        timer.start()
    error_type = "MapFailed"
    try:
        plan = plan_shards(inputs, min_shards=concurrency * 4)
        return coordinate(
            plan,
            dispatch,
            target,
            concurrency=concurrency,
            run_id=run_id,
            trigger="schedule",
            cancel=cancel,
        )
    except MapError as error:
        message = str(error)
    except MapCancelled as error:
        error_type = "Timeout"
        message = (
            f"{error}. The map run did not finish within the function's timeout "
            f"({timeout_seconds} s), which its coordinator runs in: deploy with a "
            "longer timeout, or fan out from a machine with `deployer map`"
        )
    finally:
        if timer is not None:
            timer.cancel()
    record = core.failure_record(
        name=target.name,
        run_id=run_id,
        trigger="schedule",
        started=started,
        code_hash=target.code_hash,
        error_type=error_type,
        message=message,
    )
    record["fire_time"] = fire_time.isoformat()
    core.commit_record(target.output, record)
    return record
