"""Load a bundle once, then run it: input -> function -> metrics -> checks -> store.

Every provider's entry point is a thin adapter around ``load`` and ``run``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import storage

MANIFEST_FILE = "manifest.json"

# What a prediction function may return; anything else is a failed run whose
# message lists these.
ACCEPTED_RETURNS = (
    "a pandas DataFrame, a pyarrow Table, a list of dicts (records), "
    "a dict of lists (columns) or None"
)


class BundleIntegrityError(Exception):
    """The bundle on disk is not the one its manifest describes."""


class PayloadError(Exception):
    """The request body cannot be turned into the function's input (HTTP 400)."""


@dataclass(frozen=True)
class Loaded:
    """A bundle loaded into this process: done once per cold start."""

    manifest: dict[str, Any]
    function: Callable[..., Any]
    metrics: dict[str, Callable[[Any], Any]]
    checks: dict[str, Callable[[Any], Any]]


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # succeeded | failed | check_failed
    record: dict[str, Any]  # what run.json holds
    metrics: dict[str, Any] = field(default_factory=dict)
    output: Any = None  # the output DataFrame, or None


def load(bundle_dir: str) -> Loaded:
    """Read the manifest and unpickle the function, verifying the pickle first.

    The sha256 check runs before unpickling: a pickle executes code when loaded,
    so a file that is not the one deployed must never be loaded.
    """
    with open(os.path.join(bundle_dir, MANIFEST_FILE), "rb") as manifest_file:
        manifest = json.load(manifest_file)
    function_entry = manifest["function"]
    with open(os.path.join(bundle_dir, function_entry["file"]), "rb") as pickle_file:
        pickled = pickle_file.read()
    digest = hashlib.sha256(pickled).hexdigest()
    if digest != function_entry["sha256"]:
        raise BundleIntegrityError(
            f"{function_entry['file']} has sha256 {digest} but the manifest says "
            f"{function_entry['sha256']}: the bundle was modified after it was built; redeploy"
        )
    import cloudpickle

    payload = cloudpickle.loads(pickled)
    return Loaded(
        manifest=manifest,
        function=payload["function"],
        metrics=dict(payload.get("metrics") or {}),
        checks=dict(payload.get("checks") or {}),
    )


class _NoPayload:
    def __repr__(self) -> str:
        return "NO_PAYLOAD"


NO_PAYLOAD: Any = _NoPayload()


def parse_body(raw: bytes | str) -> Any:
    """An HTTP request body as a run's payload, the same way on every provider.

    Empty means no payload (the run reads its inputs); anything that is not
    UTF-8 JSON is the caller's error (PayloadError, HTTP 400).
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PayloadError(f"the body is not UTF-8 text: {error}") from None
    if not raw.strip():
        return NO_PAYLOAD
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise PayloadError(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise PayloadError(
            "the body nests JSON deeper than this runtime parses: send rows of plain values"
        ) from None


def bad_request(error: PayloadError | str) -> dict[str, Any]:
    """The JSON body answering a request that cannot start a run (HTTP 400)."""
    return {"error": {"type": "BadRequest", "message": str(error)}}


def run(
    loaded: Loaded,
    *,
    trigger: str,
    payload: Any = NO_PAYLOAD,
    output: str | None = None,
    run_id: str | None = None,
    fire_time: datetime | None = None,
    event_id: str = "",
) -> RunResult:
    """One invocation. Never raises for the user's mistakes: they become a failed run.

    ``payload`` is the request body (JSON value or DataFrame) for HTTP and manual
    runs; without one, the manifest's ``inputs`` data set is read, or the
    function is called with no argument. PayloadError is the exception: a body
    that cannot become the function's input is the caller's error (HTTP 400)
    and is raised before anything is written.
    """
    manifest = loaded.manifest
    started = storage.utc_now()
    run_id = run_id or storage.new_run_id(started, fire_time=fire_time, event_id=event_id)
    output_root = output or manifest["output"]
    name = manifest["name"]
    if payload is not NO_PAYLOAD:
        function_input = _payload_to_input(payload, manifest)
    else:
        function_input = NO_PAYLOAD
    record: dict[str, Any] = {
        "run_id": run_id,
        "name": name,
        "trigger": trigger,
        "started": started.isoformat(),
        "code_hash": manifest.get("code_hash"),
        "rows_in": None,
        "rows_out": None,
    }
    if fire_time is not None:
        record["fire_time"] = fire_time.isoformat()
    metrics: dict[str, Any] = {}
    output_frame = None
    status = "succeeded"
    try:
        if function_input is NO_PAYLOAD:
            function_input = _read_inputs(manifest)
        record["rows_in"] = _row_count(function_input)
        call_started = time.perf_counter()
        returned = _call(loaded.function, function_input, manifest)
        call_ms = (time.perf_counter() - call_started) * 1000
        output_frame = _to_frame(returned)
        record["rows_out"] = 0 if output_frame is None else len(output_frame)
        metrics = _builtin_metrics(output_frame, record["rows_in"], call_ms)
        metrics["user"] = _user_metrics(loaded.metrics, output_frame)
        record["checks"] = _run_checks(loaded.checks, output_frame)
        if not all(check["passed"] for check in record["checks"].values()):
            status = "check_failed"
    except Exception as error:  # the user's code failed: record it, never crash the host
        status = "failed"
        record["error"] = {
            "type": type(error).__name__,
            "message": str(error),
            "traceback": traceback.format_exc(),
        }
    filesystem, root = storage.filesystem(output_root)
    directory = storage.run_path(root, name, run_id)
    if output_frame is not None and status != "failed":
        _write_parquet(filesystem, storage.join(directory, storage.OUTPUT_FILE), output_frame)
    storage.write_json(filesystem, storage.join(directory, storage.METRICS_FILE), metrics)
    ended = storage.utc_now()
    record["status"] = status
    record["ended"] = ended.isoformat()
    record["duration_ms"] = round((ended - started).total_seconds() * 1000, 3)
    # run.json is the commit marker: written last, so a run that died before
    # this line is invisible to readers.
    storage.write_json(filesystem, storage.join(directory, storage.RUN_FILE), record)
    return RunResult(
        run_id=run_id,
        status=status,
        record=record,
        metrics=metrics,
        output=output_frame if status != "failed" else None,
    )


def _payload_to_input(payload: Any, manifest: dict[str, Any]) -> Any:
    function_entry = manifest["function"]
    if not function_entry.get("takes_input", True):
        if payload in (None, {}, []):
            return None
        raise PayloadError(
            f"{function_entry['qualname']}() takes no input but the request has a body; "
            "send no body, or give the function a parameter"
        )
    if function_entry.get("input_kind") != "dataframe":
        return payload
    import pandas as pd

    if isinstance(payload, pd.DataFrame):
        return payload
    if isinstance(payload, list) and all(isinstance(row, dict) for row in payload):
        return pd.DataFrame.from_records(payload)
    if isinstance(payload, dict) and payload:
        values = list(payload.values())
        if all(isinstance(value, list) for value in values):
            if len({len(value) for value in values}) > 1:
                raise PayloadError("the columns in the body have different lengths")
            return pd.DataFrame(payload)
        if not any(isinstance(value, (list, dict)) for value in values):
            return pd.DataFrame([payload])
    raise PayloadError(
        f"{function_entry['qualname']}() takes a DataFrame: send a JSON list of records "
        '([{"col": 1}, ...]), an object of columns ({"col": [1, 2]}) or one record ({"col": 1})'
    )


def _read_inputs(manifest: dict[str, Any]) -> Any:
    inputs = manifest.get("inputs")
    if not inputs:
        return None
    import pyarrow.dataset as dataset
    from pyarrow import fs as pafs

    filesystem, path = storage.filesystem(inputs)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"inputs {inputs!r} does not exist: write the data set there first")
    data_format = "csv" if path.endswith(".csv") else "parquet"
    table = dataset.dataset(path, filesystem=filesystem, format=data_format).to_table()
    return table.to_pandas()


def _call(function: Callable[..., Any], function_input: Any, manifest: dict[str, Any]) -> Any:
    entry = manifest["function"]
    if function_input is None:
        if entry.get("requires_input"):
            raise TypeError(
                f"{entry['qualname']}() needs an input but this run has none: "
                "set inputs= when deploying, or send a body"
            )
        return function()
    if not entry.get("takes_input", True):
        return function()
    return function(function_input)


def _row_count(value: Any) -> int | None:
    if value is None or value is NO_PAYLOAD:
        return None
    try:
        return len(value)
    except TypeError:
        return None


def _to_frame(returned: Any) -> Any:
    if returned is None:
        return None
    import pandas as pd
    import pyarrow as pa

    if isinstance(returned, pd.DataFrame):
        return returned
    if isinstance(returned, pa.Table):
        return returned.to_pandas()
    if isinstance(returned, list) and all(isinstance(row, dict) for row in returned):
        return pd.DataFrame.from_records(returned)
    if isinstance(returned, dict) and all(
        isinstance(column, (list, tuple)) for column in returned.values()
    ):
        return pd.DataFrame(returned)
    raise TypeError(
        f"the function returned {type(returned).__module__}.{type(returned).__qualname__}; "
        f"return {ACCEPTED_RETURNS}"
    )


def _plain(value: Any) -> Any:
    """A JSON-safe Python value (numpy scalars -> Python, NaN/inf -> None)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


def _builtin_metrics(frame: Any, rows_in: int | None, call_ms: float) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": 0 if frame is None else len(frame),
        "duration_ms": round(call_ms, 3),
        "columns": {},
        "schema": {},
    }
    if frame is None:
        return metrics
    import pandas as pd
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    metrics["schema"] = {field.name: str(field.type) for field in schema}
    for column in frame.columns:
        series = frame[column]
        stats: dict[str, Any] = {
            "null_fraction": float(series.isna().mean()) if len(series) else 0.0
        }
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            stats.update(
                min=_plain(series.min()), max=_plain(series.max()), mean=_plain(series.mean())
            )
        metrics["columns"][str(column)] = stats
    return metrics


def _user_metrics(metrics: dict[str, Callable[[Any], Any]], frame: Any) -> dict[str, Any]:
    values = {}
    for name, metric in metrics.items():
        try:
            values[name] = _plain(metric(frame))
        except Exception as error:
            raise RuntimeError(f"metric {name!r} raised {type(error).__name__}: {error}") from error
    return values


def _run_checks(checks: dict[str, Callable[[Any], Any]], frame: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, check in checks.items():
        try:
            results[name] = {"passed": bool(check(frame))}
        except Exception as error:  # a check that cannot run has not passed
            results[name] = {"passed": False, "error": f"{type(error).__name__}: {error}"}
    return results


def _write_parquet(filesystem: Any, path: str, frame: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(filesystem, path, sink.getvalue().to_pybytes())


def failure_record(
    *,
    name: str,
    run_id: str,
    trigger: str,
    started: datetime,
    code_hash: str | None,
    error_type: str,
    message: str,
) -> dict[str, Any]:
    """run.json for a run the host saw fail from outside (timeout, crashed process)."""
    ended = storage.utc_now()
    return {
        "run_id": run_id,
        "name": name,
        "trigger": trigger,
        "started": started.isoformat(),
        "ended": ended.isoformat(),
        "duration_ms": round((ended - started).total_seconds() * 1000, 3),
        "code_hash": code_hash,
        "rows_in": None,
        "rows_out": None,
        "status": "failed",
        "error": {"type": error_type, "message": message, "traceback": None},
    }


def commit_record(output: str, record: dict[str, Any]) -> None:
    filesystem, root = storage.filesystem(output)
    directory = storage.run_path(root, record["name"], record["run_id"])
    storage.write_json(filesystem, storage.join(directory, storage.RUN_FILE), record)


def response_body(result: RunResult) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body every provider's HTTP entry returns.

    A failed run is a 500 naming the error type and message — never the
    traceback, which stays in run.json for the owner. A run whose checks
    failed still returns its predictions (200) with ``status: check_failed``.
    """
    if result.status == "failed":
        error = result.record.get("error", {})
        return 500, {
            "run_id": result.run_id,
            "status": "failed",
            "error": {"type": error.get("type"), "message": error.get("message")},
        }
    predictions: Any = None
    if result.output is not None:
        predictions = json.loads(result.output.to_json(orient="records", date_format="iso"))
    return 200, {
        "run_id": result.run_id,
        "status": result.status,
        "predictions": predictions,
        "checks": result.record.get("checks", {}),
        "metrics": result.metrics.get("user", {}),
    }
