"""Load a bundle once, then run it: input -> function -> metrics -> checks -> store.

Every provider's entry point is a thin adapter around ``load`` and ``run``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import alerts, quality, storage
from .manifest import MANIFEST_FILE, Manifest

# What a prediction function may return; anything else is a failed run whose
# message lists these.
ACCEPTED_RETURNS = (
    "a pandas DataFrame, a pyarrow Table, a list of dicts (records), "
    "a dict of lists (columns) or None"
)


# A write the store refuses is tried this many times in all, after these
# pauses: enough to ride out a throttled request or a brief outage, short
# enough not to eat the margin left before a platform's deadline.
WRITE_ATTEMPTS = 3
WRITE_BACKOFF_SECONDS = (0.2, 0.5)

# A run given a deadline records itself as timed out this long before it (the
# larger of 1 s and 5% of its time, at most half of it), so that the write
# lands before the platform stops the process.
DEADLINE_MARGIN_SECONDS = 1.0
DEADLINE_MARGIN_FRACTION = 0.05

# The tag of the one JSON line on stderr (the platform's log) that carries a
# run record the store refused, e.g. CloudWatch: { $.event = "deployer.run_not_committed" },
# Cloud Logging: jsonPayload.event="deployer.run_not_committed".
NOT_COMMITTED_EVENT = "deployer.run_not_committed"


# In the bundle: the source lines of the code pickled by value (deployer/capture.py).
SOURCES_FILE = "sources.json"


class BundleIntegrityError(Exception):
    """The bundle on disk is not the one its manifest describes."""


class StoreWriteError(Exception):
    """The store refused one of a run's files, every time it was tried."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.file = file


class OutputError(Exception):
    """What the function returned cannot be stored as Parquet; the message says why and how."""


class PayloadError(Exception):
    """The request body cannot be turned into the function's input (HTTP 400)."""


@dataclass(frozen=True)
class Loaded:
    """A bundle loaded into this process: done once per cold start."""

    manifest: Manifest
    function: Callable[..., Any]
    metrics: dict[str, Callable[[Any], Any]]
    checks: dict[str, Callable[[Any], Any]]
    reference: dict[str, Any] | None = None  # the deploy-time reference (reference.json)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # succeeded | failed | check_failed
    record: dict[str, Any]  # what run.json holds
    metrics: dict[str, Any] = field(default_factory=dict)
    output: Any = None  # the output DataFrame, or None
    # False when the store refused run.json: the record is then only in the
    # log (one NOT_COMMITTED_EVENT line), and locally in the host's spool.
    committed: bool = True


def load(bundle_dir: str) -> Loaded:
    """Read the manifest and unpickle the function, verifying the pickle first.

    The manifest is checked first (ManifestError for a format this runtime does
    not read), then the sha256: a pickle executes code when loaded, so a file
    that is not the one deployed must never be loaded.
    """
    with open(os.path.join(bundle_dir, MANIFEST_FILE), "rb") as manifest_file:
        manifest = Manifest.from_json(manifest_file.read())
    # Before unpickling: the user's modules may read their secrets when imported.
    require_secrets()
    function_entry = manifest.function
    with open(os.path.join(bundle_dir, function_entry.file), "rb") as pickle_file:
        pickled = pickle_file.read()
    digest = hashlib.sha256(pickled).hexdigest()
    if digest != function_entry.sha256:
        raise BundleIntegrityError(
            f"{function_entry.file} has sha256 {digest} but the manifest says "
            f"{function_entry.sha256}: the bundle was modified after it was built; redeploy"
        )
    import cloudpickle

    payload = cloudpickle.loads(pickled)
    _show_sources(bundle_dir)
    reference = None
    reference_file = manifest.quality.get("reference")
    if reference_file:
        with open(os.path.join(bundle_dir, reference_file), "rb") as handle:
            reference = json.loads(handle.read())
    return Loaded(
        manifest=manifest,
        function=payload["function"],
        metrics=dict(payload.get("metrics") or {}),
        checks=dict(payload.get("checks") or {}),
        reference=reference,
    )


_loaded_bundles: dict[str, Loaded] = {}
# Platforms serve requests on threads (functions-framework, the Azure worker):
# the first requests of a cold instance may arrive together and must not
# unpickle the function twice.
_load_lock = threading.Lock()


def load_once(bundle_dir: str) -> Loaded:
    """``load``, once per process: a warm instance reuses what its cold start loaded."""
    loaded = _loaded_bundles.get(bundle_dir)
    if loaded is None:
        with _load_lock:
            loaded = _loaded_bundles.get(bundle_dir)
            if loaded is None:
                loaded = _loaded_bundles[bundle_dir] = load(bundle_dir)
    return loaded


def failure_outside_run(error: BaseException) -> tuple[int, dict[str, Any]]:
    """The reply when the bundle or the store failed, not the user's function
    (that is a failed run, with its record): the log gets the traceback, the
    caller only the error's type, since its message may name paths or secrets."""
    traceback.print_exc(file=sys.stderr)
    message = "the function failed outside the run; see its logs"
    return 500, {"error": {"type": type(error).__name__, "message": message}}


def _users_traceback(error: BaseException) -> str:
    """The traceback from the user's code down, without the runtime's frames above
    it; all of it when the error arose in the runtime itself."""
    here = os.path.dirname(os.path.abspath(__file__))
    frames = error.__traceback__
    while frames is not None and os.path.dirname(frames.tb_frame.f_code.co_filename) == here:
        frames = frames.tb_next
    shown = frames if frames is not None else error.__traceback__
    return "".join(traceback.format_exception(type(error), error, shown))


def _show_sources(bundle_dir: str) -> None:
    """Let tracebacks show the lines of the user's code pickled by value: its code
    names the file (model.py, a notebook cell) but the file is not here."""
    import linecache

    path = os.path.join(bundle_dir, SOURCES_FILE)
    if not os.path.exists(path):
        return
    with open(path, "rb") as handle:
        sources: dict[str, dict[str, str]] = json.loads(handle.read())
    for filename, pieces in sources.items():
        if os.path.exists(os.path.join(bundle_dir, filename)):
            continue  # a real file of the bundle (a local module) is its own source
        lines: list[str] = []
        for first, text in sorted(pieces.items(), key=lambda item: int(item[0])):
            start = int(first) - 1
            lines.extend("\n" for _ in range(start - len(lines)))
            for offset, line in enumerate(text.splitlines(keepends=True)):
                if start + offset < len(lines):
                    lines[start + offset] = line
                else:
                    lines.append(line)
        # No modification time: linecache.checkcache keeps the entry.
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


class _NoPayload:
    def __repr__(self) -> str:
        return "NO_PAYLOAD"


NO_PAYLOAD: Any = _NoPayload()
# The alert webhook URLs, as a JSON list: set by the provider in the function's
# environment (they are secrets, so never in the bundle).
ALERTS_VARIABLE = "DEPLOYER_ALERTS"
# The user's secrets= as JSON {NAME: reference}, set by the provider: references
# only. The values are in the environment by the time the bundle loads (the
# platform put them there, or the runtime did at cold start: runtimes/aws.py).
SECRETS_VARIABLE = "DEPLOYER_SECRETS"


class SecretError(RuntimeError):
    """A secret the function needs is not there where it runs."""


def require_secrets() -> None:
    """Refuse to load without every secret the function was deployed with: better
    one clear error at cold start than a KeyError in the user's code at each run."""
    references = json.loads(os.environ.get(SECRETS_VARIABLE) or "{}")
    for name in sorted(references):
        value = os.environ.get(name)
        if value is None or value.startswith("@Microsoft.KeyVault("):
            raise SecretError(
                f"secret {name} ({references[name]}) is not set where the function runs: the "
                "secret store did not give it (it is gone, or this function may not read it); "
                "fix it and deploy again"
            )


RUN_MARKER = "deployer: run"  # "deployer: run RUN_ID started (trigger)" / "... ended"
ALERT_SECONDS = 30  # at most this long for all of a run's alerts


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


def split_params(payload: Any) -> tuple[Any, Any]:
    """(payload, params) of a body that sets parameters: ``{"data": ..., "params":
    {...}}``, or ``{"params": {...}}`` to run over the inputs. Any other body is
    all payload, with no params (None).

    A body is read as one that sets parameters only when its keys are exactly
    these and ``params`` is an object, so a plain-data body (rows, or columns,
    whose values are lists) keeps its meaning.
    """
    if (
        isinstance(payload, dict)
        and "params" in payload
        and set(payload) <= {"data", "params"}
        and isinstance(payload["params"], dict)
    ):
        return payload.get("data", NO_PAYLOAD), payload["params"]
    return payload, None


_KIND_NAMES = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
}


def check_params(params: Any, qualname: str, known: Mapping[str, str]) -> dict[str, Any]:
    """``params`` as a run sets them: only keyword-only parameters of the function
    with a default, each of the JSON kind its annotation asks for. PayloadError
    (HTTP 400) names what is wrong, before anything is written."""
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
        raise PayloadError(
            f"params must be an object of parameter names to values, got {_json_kind(params)}"
        )
    unknown = sorted(set(params) - set(known))
    if unknown:
        settable = (
            f"the ones a run may set are {', '.join(sorted(known))}"
            if known
            else f"{qualname}() has none: give it keyword-only parameters with defaults "
            "(def predict(frame, *, threshold=0.5))"
        )
        raise PayloadError(
            f"{qualname}() has no keyword-only parameter {', '.join(unknown)}: {settable}"
        )
    for key, value in params.items():
        kind = known[key]
        nullable = kind.endswith("?")
        kind = kind.rstrip("?")
        if (value is None and nullable) or kind == "any" or _is_kind(value, kind):
            continue
        wanted = _KIND_NAMES[kind] + (" or null" if nullable else "")
        raise PayloadError(
            f"params.{key} must be {wanted} ({qualname}() annotates it {kind}), "
            f"got {_json_kind(value)}: {json.dumps(value, default=str)[:80]}"
        )
    return dict(params)


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "float":
        return isinstance(value, (int, float))
    return isinstance(value, {"int": int, "str": str, "bool": bool}[kind])


def _json_kind(value: Any) -> str:
    for kind, name in (
        (bool, "true/false"),
        (dict, "an object"),
        (list, "a list"),
        (str, "a string"),
        (int, "a number"),
        (float, "a number"),
    ):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


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
    deadline: float | None = None,
    params: dict[str, Any] | None = None,
    overlap: bool = True,
) -> RunResult:
    """One invocation. Never raises for the user's mistakes: they become a failed run.

    ``payload`` is the request body (JSON value or DataFrame) for HTTP and manual
    runs; without one, the manifest's ``inputs`` data set is read, or the
    function is called with no argument. PayloadError is the exception: a body
    that cannot become the function's input is the caller's error (HTTP 400)
    and is raised before anything is written.

    A store that refuses the run's files does not raise either: each write is
    retried, and a run that still cannot be stored is a failed run (error type
    StoreWriteError); if even its run.json is refused, ``committed`` is False
    and the whole record is printed to stderr as one JSON line tagged
    NOT_COMMITTED_EVENT, so that it is in the platform's log.

    ``deadline`` is the ``time.monotonic()`` value at which the platform will
    stop this process (Lambda: ``time.monotonic() +
    context.get_remaining_time_in_millis() / 1000``; Cloud Functions: the
    request's arrival plus the deployed timeout). Shortly before it the run is
    recorded as failed with error type Timeout, so that a run the platform
    kills is not lost; if the run finishes after all, its own record replaces
    that one.

    ``params`` sets keyword-only parameters of the function for this run
    (``check_params``; a wrong one is a PayloadError); they are recorded in
    run.json.

    ``overlap=False`` (a schedule's): while another such run of the function
    still runs (its lease, ``LEASE_FILE``, names it and has not expired), this
    one only commits a run.json with status ``skipped`` naming it.
    """
    manifest = loaded.manifest
    params = check_params(params, manifest.function.qualname, manifest.function.params)
    started = storage.utc_now()
    run_id = run_id or storage.new_run_id(started, fire_time=fire_time, event_id=event_id)
    output_root = output or manifest.output
    name = manifest.name
    if payload is not NO_PAYLOAD:
        function_input = _payload_to_input(payload, manifest)
    else:
        function_input = NO_PAYLOAD
    record: dict[str, Any] = {
        "run_id": run_id,
        "name": name,
        "trigger": trigger,
        "started": started.isoformat(),
        "code_hash": manifest.code_hash,
        "rows_in": None,
        "rows_out": None,
    }
    if fire_time is not None:
        record["fire_time"] = fire_time.isoformat()
    if params:
        record["params"] = params
    timeout_seconds = manifest.timeout_seconds
    # Markers around what the run prints: `deployer logs NAME --run RUN_ID` finds
    # the run's own lines between them, in any provider's log.
    print(f"{RUN_MARKER} {run_id} started ({trigger})", file=sys.stderr, flush=True)
    writer = _RunWriter(output_root, name, run_id, started)
    if not overlap:
        running = writer.running_lease(run_id, started)
        if running is not None:
            return _skipped(writer, record, running)
        writer.take_lease(run_id, started, timeout_seconds)
    writer.mark_started(record, timeout_seconds)
    watchdog = None if deadline is None else _Watchdog(writer, record, deadline, timeout_seconds)
    try:
        metrics: dict[str, Any] = {}
        output_frame = None
        output_writer = None
        profile: dict[str, Any] | None = None
        status = "succeeded"
        try:
            if function_input is NO_PAYLOAD:
                function_input = _read_inputs(manifest)
            record["rows_in"] = _row_count(function_input)
            call_started = time.perf_counter()
            returned = _call(loaded.function, function_input, manifest, params)
            call_ms = (time.perf_counter() - call_started) * 1000
            output_frame = to_frame(returned)
            output_table = None if output_frame is None else to_arrow(output_frame)
            record["rows_out"] = 0 if output_frame is None else len(output_frame)
            if output_table is not None:
                # Written while the run is profiled and checked: both are most of a
                # run's time and neither waits for the other (bench/run_write_path.py).
                output_writer = writer.write_in_background(
                    storage.OUTPUT_FILE, _parquet_writer(output_table)
                )
            profile = _quality_profile(writer, loaded, function_input, output_frame, record)
            metrics = _builtin_metrics(output_frame, record["rows_in"], call_ms, profile)
            settings = manifest.quality
            metrics["user"], bounds = quality.evaluate_metrics(
                loaded.metrics, output_frame, settings
            )
            record["checks"] = quality.evaluate_checks(loaded.checks, output_frame, settings)
            if bounds:
                record["bounds"] = bounds
            status, reasons = quality.status_of(record["checks"], bounds, profile or {})
            if reasons:
                record["quality"] = reasons
        except Exception as error:  # the user's code failed: record it, never crash the host
            status = "failed"
            if output_writer is not None:  # a failed run keeps no output
                writer.discard(output_writer, storage.OUTPUT_FILE)
            output_writer = None
            profile = None
            record["error"] = {
                "type": type(error).__name__,
                "message": str(error),
                # An OutputError's message is the whole story; deployer's frames are noise.
                "traceback": None if isinstance(error, OutputError) else _users_traceback(error),
            }
        record["status"] = status
        profile_bytes = None if profile is None else storage.json_bytes(profile)
        committed = writer.commit(record, metrics, output_writer, profile_bytes)
        if committed and profile is not None and record["status"] in ("succeeded", "warned"):
            writer.remember(profile, run_id, have_reference=bool(profile.get("had_reference")))
        if committed:
            _alert(writer, record, deadline)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if not overlap:
            writer.release_lease(run_id)
        print(f"{RUN_MARKER} {run_id} ended", file=sys.stderr, flush=True)
    stored = record["status"] != "failed"
    return RunResult(
        run_id=run_id,
        status=record["status"],
        record=record,
        metrics=metrics,
        output=output_frame if stored else None,
        committed=committed,
    )


class _RunWriter:
    """Writes one run's files to its store; shared by the run and its deadline's timer.

    The lock orders the two writers of run.json: the timer's Timeout record
    never lands after the run's own record, and the run's own record always
    lands after (so over) the timer's.
    """

    def __init__(self, output_root: str, name: str, run_id: str, started: datetime) -> None:
        self.location = storage.join(output_root, name, "runs", run_id)
        self.started = started
        self._lock = threading.Lock()
        self._finished = False  # run.json holds the run's own outcome; the timer stays out
        self._written: set[str] = set()
        self._filesystem: Any = None
        self._open_error: Exception | None = None
        try:
            self._filesystem, root = storage.filesystem(output_root)
            self._directory = storage.run_path(root, name, run_id)
            self._function_directory = storage.join(root, name)
        except Exception as error:  # reported by the first write, like any refusal
            self._open_error = error
            self._directory = self._function_directory = ""

    def running_lease(self, run_id: str, now: datetime) -> dict[str, Any] | None:
        """The lease of another run that still runs: not expired, not committed."""
        lease = self.read_shared(LEASE_FILE)
        if lease is None or lease.get("run_id") in (None, run_id):
            return None
        try:
            expires = datetime.fromisoformat(str(lease["expires"]))
        except (KeyError, ValueError):
            return None
        if expires <= now:
            return None  # stopped without releasing it (killed): it has run its time
        other = storage.join(self._function_directory, "runs", str(lease["run_id"]))
        if self._read_json(other, storage.RUN_FILE) is not None:
            return None  # committed, and its release was lost
        return lease

    def take_lease(self, run_id: str, started: datetime, timeout_seconds: int | None) -> None:
        """Claim the function's scheduled runs until this one ends (or its timeout,
        plus a minute, has passed: a run the platform killed releases nothing)."""
        expires = started + timedelta(seconds=(timeout_seconds or 900) + LEASE_GRACE_SECONDS)
        lease = {"run_id": run_id, "started": started.isoformat(), "expires": expires.isoformat()}
        try:
            storage.write_bytes(
                self._filesystem,
                storage.join(self._function_directory, LEASE_FILE),
                storage.json_bytes(lease),
            )
        except Exception as error:  # the run goes on; a concurrent firing may then run too
            print(f"deployer: could not write {LEASE_FILE}: {error}", file=sys.stderr, flush=True)

    def release_lease(self, run_id: str) -> None:
        lease = self.read_shared(LEASE_FILE)
        if lease is not None and lease.get("run_id") == run_id:
            storage.delete_quietly(
                self._filesystem, storage.join(self._function_directory, LEASE_FILE)
            )

    def read_shared(self, file: str) -> dict[str, Any] | None:
        """A file the function's runs share ({output}/{name}/file); None if absent or
        unreadable: what it holds (the reference, the last schema) only informs."""
        return self._read_json(self._function_directory, file)

    def read_run_file(self, file: str) -> dict[str, Any] | None:
        """A JSON file of this run's folder; None if absent or unreadable."""
        return self._read_json(self._directory, file)

    def _read_json(self, directory: str, file: str) -> dict[str, Any] | None:
        if self._open_error is not None:
            return None
        try:
            value = json.loads(storage.read_bytes(self._filesystem, storage.join(directory, file)))
        except Exception:  # absent, unreadable, not JSON: as if absent
            return None
        return value if isinstance(value, dict) else None

    def remove_files(self, files: list[str]) -> None:
        """Delete files of this run's folder, best effort (a map run's strays)."""
        if self._open_error is not None:
            return
        for file in files:
            storage.delete_quietly(self._filesystem, storage.join(self._directory, file))
            self._written.discard(file)

    def remember(self, profile: dict[str, Any], run_id: str, *, have_reference: bool) -> None:
        """After a committed run: its columns for the next run's schema comparison,
        and (if the function has no reference yet) its profiles as the reference."""
        shared = [(quality.SCHEMA_FILE, {"run_id": run_id, **quality.schema_of(profile)})]
        if not have_reference:
            shared.append(
                (quality.REFERENCE_FILE, quality.reference_from(profile, run_id, explicit=False))
            )
        for file, value in shared:
            try:
                storage.write_bytes(
                    self._filesystem,
                    storage.join(self._function_directory, file),
                    storage.json_bytes(value),
                )
            except Exception as error:  # the run is committed; this only informs the next
                print(f"deployer: could not write {file}: {error}", file=sys.stderr, flush=True)

    def write(
        self,
        file: str,
        data: bytes | Callable[[Any], object],
        *,
        attempts: int = WRITE_ATTEMPTS,
    ) -> None:
        """Write one file of the run, retrying; StoreWriteError when every attempt failed.

        ``data`` is the bytes, or a function that writes them to a stream (the
        output: encoded straight into the store, again on a retry).
        """
        last: Exception | None = self._open_error
        for attempt in range(attempts if last is None else 0):
            path = storage.join(self._directory, file)
            try:
                if callable(data):
                    storage.write_stream(self._filesystem, path, data)
                else:
                    storage.write_bytes(self._filesystem, path, data)
            except Exception as error:
                last = error
                if attempt + 1 < attempts:
                    time.sleep(WRITE_BACKOFF_SECONDS[min(attempt, len(WRITE_BACKOFF_SECONDS) - 1)])
                continue
            self._written.add(file)
            return
        tries = "once" if attempts == 1 or self._open_error else f"{attempts} times"
        raise StoreWriteError(
            file,
            f"the store refused to write {file} to {self.location} (tried {tries}; "
            f"{type(last).__name__}: {last})",
        ) from last

    def mark_started(self, record: dict[str, Any], timeout_seconds: int | None) -> None:
        """Write started.json: with it, a run the platform kills is visible as lost."""
        marker = {key: record[key] for key in ("run_id", "name", "trigger", "started", "code_hash")}
        marker["timeout_seconds"] = timeout_seconds
        try:
            self.write(storage.STARTED_FILE, storage.json_bytes(marker), attempts=1)
        except StoreWriteError as error:
            # Not fatal: the run goes on, and its commit (retried) decides what
            # is kept and reports a store that still refuses.
            print(f"deployer: {error}; the run goes on", file=sys.stderr, flush=True)

    def write_in_background(self, file: str, data: Callable[[Any], object]) -> Future[None]:
        """``write`` on a thread of its own; commit() waits for it."""
        done: Future[None] = Future()

        def write() -> None:
            try:
                self.write(file, data)
            except BaseException as error:  # StoreWriteError, raised again by commit()
                done.set_exception(error)
            else:
                done.set_result(None)

        threading.Thread(target=write, name=f"deployer-write-{file}", daemon=True).start()
        return done

    def discard(self, pending: Future[None], file: str) -> None:
        """Wait for a background write, then remove what it wrote."""
        try:
            pending.result()
        except Exception:  # refused: nothing to remove
            return
        self._delete(file)

    def commit(
        self,
        record: dict[str, Any],
        metrics: dict[str, Any],
        output: Callable[[Any], object] | Future[None] | None,
        profile: bytes | None = None,
    ) -> bool:
        """Write output, metrics, the profile, then run.json; True when a run.json of
        this run is stored. ``output`` may be a write already under way.

        When the store refuses a file, the run becomes a failed run
        (StoreWriteError) and its files are removed as far as the store allows.
        """
        try:
            if isinstance(output, Future):
                output.result()
            elif output is not None:
                self.write(storage.OUTPUT_FILE, output)
            self.write(storage.METRICS_FILE, storage.json_bytes(metrics))
            if profile is not None:
                self.write(quality.PROFILE_FILE, profile)
            _set_ended(record, self.started)
            with self._lock:
                # run.json is the commit marker: written last, so a run that
                # died before this line never shows half its output.
                self.write(storage.RUN_FILE, storage.json_bytes(record))
                self._finished = True
            return True
        except StoreWriteError as error:
            return self._record_refusal(record, error)

    def _record_refusal(self, record: dict[str, Any], error: StoreWriteError) -> bool:
        outcome = record["status"]
        if "error" in record:
            record["function_error"] = record["error"]
        record["status"] = "failed"
        record["error"] = {
            "type": type(error).__name__,
            "message": (
                f"{error}. The run {outcome.replace('_', ' ')}, but its results were meant "
                f"for {self.location} and were not kept: check that the store exists and "
                "that the function may write to it"
            ),
            "traceback": traceback.format_exc(),
        }
        _set_ended(record, self.started)
        self._delete(storage.OUTPUT_FILE)
        self._delete(quality.PROFILE_FILE)
        committed = False
        with self._lock:
            if error.file != storage.RUN_FILE:
                # The store refused a data file; it may still take the small record.
                try:
                    self.write(storage.RUN_FILE, storage.json_bytes(record), attempts=1)
                    committed = True
                except StoreWriteError:
                    pass
            self._finished = True
        if not committed:
            self._delete(storage.METRICS_FILE)
            log_not_committed(record)
        return committed

    def record_timeout(self, record: dict[str, Any]) -> None:
        """Write the timer's Timeout record, unless the run has recorded its own outcome."""
        with self._lock:
            if self._finished:
                return
            try:
                self.write(storage.RUN_FILE, storage.json_bytes(record), attempts=1)
            except StoreWriteError as error:
                record["error"]["message"] += f" ({error})"
                log_not_committed(record)
                return
        print(
            f"deployer: run {record['run_id']} is about to reach its timeout; "
            f"recorded it as failed (Timeout) in {self.location}",
            file=sys.stderr,
            flush=True,
        )

    def _delete(self, file: str) -> None:
        # Only what this run wrote, best effort: the store may be refusing everything.
        if file in self._written:
            storage.delete_quietly(self._filesystem, storage.join(self._directory, file))
            self._written.discard(file)


class _Watchdog:
    """Records the run as timed out shortly before its deadline, unless it finished first."""

    def __init__(
        self,
        writer: _RunWriter,
        record: dict[str, Any],
        deadline: float,
        timeout_seconds: int | None,
    ) -> None:
        budget = deadline - time.monotonic()
        self.margin = max(
            0.0, min(max(DEADLINE_MARGIN_SECONDS, DEADLINE_MARGIN_FRACTION * budget), budget / 2)
        )
        self._writer = writer
        self._record = record
        self._timeout_seconds = timeout_seconds
        self._timer = threading.Timer(max(0.0, budget - self.margin), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        limit = f"{self._timeout_seconds} s timeout" if self._timeout_seconds else "timeout"
        record = failure_record(
            name=self._record["name"],
            run_id=self._record["run_id"],
            trigger=self._record["trigger"],
            started=self._writer.started,
            code_hash=self._record.get("code_hash"),
            error_type="Timeout",
            message=(
                f"the run did not finish within its {limit}: it was recorded as failed "
                f"{self.margin:.1f} s before the platform stops it. Make the function faster "
                "or deploy with a longer timeout (deploy(..., timeout=SECONDS) or --timeout)"
            ),
        )
        for key in ("fire_time", "rows_in"):
            if self._record.get(key) is not None:
                record[key] = self._record[key]
        self._writer.record_timeout(record)

    def cancel(self) -> None:
        self._timer.cancel()


# {output}/{name}/schedule-lease.json: which run of the schedules that do not
# overlap is running, until when.
LEASE_FILE = "schedule-lease.json"
LEASE_GRACE_SECONDS = 60


def _skipped(writer: _RunWriter, record: dict[str, Any], running: dict[str, Any]) -> RunResult:
    """A run that did not start because another one still runs: its run.json says so."""
    record["status"] = "skipped"
    record["skipped"] = {
        "reason": "overlap",
        "running": running.get("run_id"),
        "running_since": running.get("started"),
        "message": (
            f"run {running.get('run_id')} (started {running.get('started')}) still runs, "
            "and this schedule does not overlap"
        ),
    }
    print(
        f"deployer: run {record['run_id']} skipped: {record['skipped']['message']}",
        file=sys.stderr,
        flush=True,
    )
    committed = writer.commit(record, {}, None, None)
    print(f"{RUN_MARKER} {record['run_id']} ended", file=sys.stderr, flush=True)
    return RunResult(
        run_id=record["run_id"],
        status="skipped",
        record=record,
        metrics={},
        output=None,
        committed=committed,
    )


def _set_ended(record: dict[str, Any], started: datetime) -> None:
    ended = storage.utc_now()
    record["ended"] = ended.isoformat()
    record["duration_ms"] = round((ended - started).total_seconds() * 1000, 3)


def log_not_committed(record: dict[str, Any]) -> None:
    """Print a run record the store refused as one tagged JSON line: the platform's log keeps it."""
    error = record.get("error") or {}
    line = {
        "event": NOT_COMMITTED_EVENT,
        "severity": "ERROR",  # Cloud Logging reads it as the entry's severity
        "message": (
            f"run {record.get('run_id')} of {record.get('name')} could not be stored: "
            f"{error.get('type')}: {error.get('message')}"
        ),
        "record": record,
    }
    print(json.dumps(line, default=str), file=sys.stderr, flush=True)


def _payload_to_input(payload: Any, manifest: Manifest) -> Any:
    function_entry = manifest.function
    if not function_entry.takes_input:
        if payload in (None, {}, []):
            return None
        raise PayloadError(
            f"{function_entry.qualname}() takes no input but the request has a body; "
            "send no body, or give the function a parameter"
        )
    if function_entry.input_kind != "dataframe":
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
        f"{function_entry.qualname}() takes a DataFrame: send a JSON list of records "
        '([{"col": 1}, ...]), an object of columns ({"col": [1, 2]}) or one record ({"col": 1})'
    )


def _read_inputs(manifest: Manifest) -> Any:
    inputs = manifest.inputs
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


def _call(
    function: Callable[..., Any],
    function_input: Any,
    manifest: Manifest,
    params: dict[str, Any] | None = None,
) -> Any:
    entry = manifest.function
    params = params or {}
    if function_input is None:
        if entry.requires_input:
            raise TypeError(
                f"{entry.qualname}() needs an input but this run has none: "
                "set inputs= when deploying, or send a body"
            )
        return function(**params)
    if not entry.takes_input:
        return function(**params)
    return function(function_input, **params)


def _row_count(value: Any) -> int | None:
    if value is None or value is NO_PAYLOAD:
        return None
    try:
        return len(value)
    except TypeError:
        return None


def to_frame(returned: Any) -> Any:
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


def _builtin_metrics(
    frame: Any, rows_in: int | None, call_ms: float, profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": 0 if frame is None else len(frame),
        "duration_ms": round(call_ms, 3),
        "columns": {},
        "schema": {},
    }
    if frame is None:
        return metrics
    profiled = ((profile or {}).get("output") or {}).get("profile", {}).get("columns")
    if profiled is not None and len(profiled) == len(frame.columns):
        # The output's profile has them already (min/max/mean over finite values).
        for name, column in profiled.items():
            metrics["schema"][name] = column.get("type")
            summary: dict[str, Any] = {"null_fraction": column.get("null_fraction", 0.0)}
            if column.get("kind") == "numeric":
                summary.update({key: column.get(key) for key in ("min", "max", "mean")})
            metrics["columns"][name] = summary
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


def lines_of_run(lines: list[str], run_id: str) -> list[str]:
    """The lines a run printed, between its markers (both included); [] if absent.

    A map run's shards mark themselves "... RUN_ID part N started": the lines
    between any of its parts' markers are the run's (shards on one worker log
    run one after another; on several they interleave, all of this run).
    """
    marker = re.compile(
        rf"{re.escape(RUN_MARKER)} {re.escape(run_id)} (part (\d+) )?(started|ended)"
    )
    found: list[str] = []
    open_parts: set[str] = set()
    for line in lines:
        match = marker.search(line)
        if match is not None and match.group(3) == "started":
            if match.group(2) is None:
                found, open_parts = [], set()  # a retry of the run starts it over
            open_parts.add(match.group(2) or "")
        if open_parts:
            found.append(line)
        if match is not None and match.group(3) == "ended":
            open_parts.discard(match.group(2) or "")
    return found


def _alert(writer: _RunWriter, record: dict[str, Any], deadline: float | None) -> None:
    """POST the run's alert to the webhooks, after it is committed, and record the
    deliveries in its run.json. Never raises, never outlasts the run's deadline."""
    try:
        urls = json.loads(os.environ.get(ALERTS_VARIABLE) or "[]")
    except ValueError:
        urls = []
    if not urls:
        return
    payload = alerts.alert_payload(record, read_command=f"deployer runs {record['name']}")
    if payload is None:
        return
    limit = time.monotonic() + ALERT_SECONDS
    if deadline is not None:
        limit = min(limit, deadline - DEADLINE_MARGIN_SECONDS)
    record["alerts"] = alerts.send_alerts(urls, payload, deadline=limit)
    try:
        writer.write(storage.RUN_FILE, storage.json_bytes(record), attempts=1)
    except StoreWriteError as error:  # the run stays committed without the delivery notes
        print(f"deployer: {error}", file=sys.stderr, flush=True)


def _quality_profile(
    writer: _RunWriter,
    loaded: Loaded,
    function_input: Any,
    output_frame: Any,
    record: dict[str, Any],
) -> dict[str, Any] | None:
    """profile.json of the run, with drift and schema changes summarised into its
    record; None when there is nothing to profile. Never raises: a failure here is
    recorded as ``quality_error`` and the run keeps its predictions."""
    if loaded.manifest.quality.get("profile") is False:
        return None  # deployed with drift=False
    frames = {"input": function_input, "output": output_frame}
    try:
        stored = writer.read_shared(quality.REFERENCE_FILE)
        reference = quality.reference_for(loaded.reference, stored)
        previous = writer.read_shared(quality.SCHEMA_FILE)
        document = quality.profile_run(frames, reference, previous, loaded.manifest.quality)
    except Exception as error:  # profiling is ours, not the user's: report, never fail
        record["quality_error"] = f"{type(error).__name__}: {error}"[:500]
        return None
    if not any(side in document for side in frames):
        return None
    document["had_reference"] = stored is not None
    _summarise_quality(record, document)
    return document


def _summarise_quality(record: dict[str, Any], document: dict[str, Any]) -> None:
    """The drifted columns and schema changes of profile.json, into run.json."""
    drifted: dict[str, Any] = {}
    dataset_drift = False
    changes: list[dict[str, Any]] = []
    for side in ("input", "output"):
        entry = document.get(side)
        if not isinstance(entry, dict):
            continue
        result = entry.get("drift") or {}
        dataset_drift = dataset_drift or bool(result.get("dataset_drift"))
        for column, scores in result.get("columns", {}).items():
            if scores.get("verdict") in ("warn", "drift"):
                drifted[f"{side}:{column}"] = {**scores, "column": column, "side": side}
        changes += [{**change, "side": side} for change in entry.get("schema_changes", [])]
    if drifted or dataset_drift:
        record["drift"] = {"dataset_drift": dataset_drift, "columns": drifted}
    if changes:
        record["schema_changes"] = changes


def to_arrow(frame: Any) -> Any:
    """The output as an Arrow table, or OutputError naming the column at fault and the fix.

    Column names must be strings: Parquet stores names as text, so an integer
    name would come back as a different one ('0' for 0).
    """
    import pyarrow as pa

    not_text = [column for column in frame.columns if not isinstance(column, str)]
    if not_text:
        shown = ", ".join(f"{column!r} ({type(column).__name__})" for column in not_text[:5])
        raise OutputError(
            f"output column names must be strings, and {shown} "
            f"{'is' if len(not_text) == 1 else 'are'} not: Parquet would store them as text "
            "and they would read back changed. Name the columns, e.g. "
            "pd.DataFrame(proba, columns=[f'p_{c}' for c in model.classes_]) or "
            "out.columns = out.columns.astype(str)"
        )
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicated:
        raise OutputError(
            f"output columns {', '.join(map(repr, duplicated))} appear more than once: "
            "give each column its own name"
        )
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise OutputError(_unstorable_column(frame, error)) from None


def _unstorable_column(frame: Any, error: Exception) -> str:
    """Which column Arrow could not convert and what it holds."""
    import pyarrow as pa

    for column in frame.columns:
        series = frame[column]
        if series.dtype != object:
            continue
        try:
            pa.array(series, from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            kinds = series.dropna().map(lambda value: type(value).__name__)
            counts = kinds.value_counts()
            minority = counts.index[-1]
            example = series[kinds == minority].index[0]
            held = ", ".join(f"{kind} in {count} rows" for kind, count in counts.items())
            return (
                f"output column {column!r} mixes types ({held}; e.g. row {example!r}: "
                f"{series[example]!r}) and Parquet needs one type per column: convert it, "
                f"e.g. out[{column!r}] = out[{column!r}].astype(str)"
            )
    return f"the output cannot be stored as Parquet: {error}"


def _parquet_writer(table: Any) -> Callable[[Any], object]:
    """What writes the output as Parquet into a stream: encoded straight into the
    store, with no copy in memory (the same again if the write is retried).

    Dictionary encoding only for text-like columns: on numbers it costs most
    of the write and rarely saves space (bench/run_write_path.py: the write
    takes 0.4-0.7x of pyarrow's defaults at a size within a few percent).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    text_like = [
        field.name
        for field in table.schema
        if pa.types.is_string(field.type)
        or pa.types.is_large_string(field.type)
        or pa.types.is_binary(field.type)
        or pa.types.is_large_binary(field.type)
        or pa.types.is_dictionary(field.type)
        or pa.types.is_boolean(field.type)
    ]
    return lambda stream: pq.write_table(table, stream, use_dictionary=text_like)


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
    """Write a run.json made outside the run (by a host), retrying; StoreWriteError if refused."""
    started = datetime.fromisoformat(record["started"])
    writer = _RunWriter(output, record["name"], record["run_id"], started)
    writer.write(storage.RUN_FILE, storage.json_bytes(record))


def response_body(result: RunResult) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a run, for its owner (a direct or manual invoke).

    A failed run is a 500 naming the error type and message — never the
    traceback, which stays in run.json for the owner. A run whose checks
    failed still returns its predictions (200) with ``status: check_failed``.
    HTTP triggers answer :func:`for_http_caller` of this instead.
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
        "quality": result.record.get("quality", []),
    }


def for_http_caller(status: int, body: dict[str, Any], name: str) -> tuple[int, dict[str, Any]]:
    """What an HTTP trigger's caller sees of a run: a failed run's error type and
    run id, never its message, which may quote the data, a path or a secret.

    The owner reads the message in the run record (``deployer runs``).
    """
    if status < 500:
        return status, body
    error = body.get("error") or {}
    return status, {
        "run_id": body.get("run_id"),
        "status": body.get("status", "failed"),
        "error": {
            "type": error.get("type"),
            "message": f"the run failed; its owner sees why with `deployer runs {name}`",
        },
    }
