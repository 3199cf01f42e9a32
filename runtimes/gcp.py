"""Entry of the GCP provider for Google's functions-framework: ``deployer_runtime.gcp.handle``.

Cloud Functions (2nd gen) calls ``handle`` with a flask Request. Requests it answers:
- Cloud Scheduler: a POST carrying ``X-CloudScheduler: true``,
  ``X-CloudScheduler-JobName`` and ``X-CloudScheduler-ScheduleTime`` (RFC 3339).
  The run id comes from the schedule time and the job's name, so Scheduler's
  retry of the same firing overwrites one run instead of adding a second. A
  failed run answers 500, which Scheduler counts as a failed attempt and retries.
- Any other POST is an HTTP prediction: JSON in, JSON out, 400 on a body that
  is not JSON or not a table. No answer ever carries a traceback; a failed
  run's traceback is in its run.json.

The source root (``/workspace`` on Cloud Functions) holds ``main.py``, the
bundle's files and this package. Only the standard library is imported when
this module loads; flask objects arrive as arguments.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import traceback
from datetime import datetime, timezone
from typing import Any

SCHEDULER_HEADER = "X-CloudScheduler"
JOB_NAME_HEADER = "X-CloudScheduler-JobName"
SCHEDULE_TIME_HEADER = "X-CloudScheduler-ScheduleTime"
JSON_HEADERS = {"Content-Type": "application/json"}

_loaded: Any = None
# functions-framework serves requests on threads; the first requests of a cold
# instance may arrive together and must not unpickle the function twice.
_load_lock = threading.Lock()

# RFC 3339 allows any number of fractional digits and a "Z"; fromisoformat
# before Python 3.11 takes neither.
_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})$"
)


def _source_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load() -> Any:
    global _loaded
    if _loaded is None:
        with _load_lock:
            if _loaded is None:
                from . import core

                _loaded = core.load(_source_root())
    return _loaded


def parse_schedule_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; ValueError when it is not one."""
    match = _RFC3339.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp")
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    moment = datetime.fromisoformat(f"{match['base'].replace('t', 'T')}.{fraction}{offset}")
    return moment.astimezone(timezone.utc)


def _reply(status: int, body: dict[str, Any]) -> tuple[str, int, dict[str, str]]:
    return json.dumps(body, default=str), status, dict(JSON_HEADERS)


def _bad_request(message: Any) -> tuple[str, int, dict[str, str]]:
    from . import core

    return _reply(400, core.bad_request(message))


def handle(request: Any) -> tuple[str, int, dict[str, str]]:
    """The Cloud Functions entry point: one request, one run (or a 4xx before any run)."""
    if request.method != "POST":
        body, status, headers = _reply(
            405,
            {"error": {"type": "MethodNotAllowed", "message": "send a POST with a JSON body"}},
        )
        return body, status, {**headers, "Allow": "POST"}
    try:
        if request.headers.get(SCHEDULER_HEADER, "").lower() == "true":
            return _scheduled(request)
        return _prediction(request)
    except Exception as error:
        # Not the user's function failing (that is a failed run, answered
        # above) but the bundle or the store: the log gets the traceback, the
        # caller gets what is wrong without it.
        traceback.print_exc(file=sys.stderr)
        return _reply(500, {"error": {"type": type(error).__name__, "message": str(error)}})


def _scheduled(request: Any) -> tuple[str, int, dict[str, str]]:
    from . import core

    job_name = request.headers.get(JOB_NAME_HEADER, "")
    raw_time = request.headers.get(SCHEDULE_TIME_HEADER)
    fire_time = None
    if raw_time:
        try:
            fire_time = parse_schedule_time(raw_time)
        except ValueError as error:
            return _bad_request(f"{SCHEDULE_TIME_HEADER}: {error}")
    # The body Scheduler sends is ignored: a scheduled run reads the deployed
    # inputs data set, whatever the job was configured with.
    result = core.run(
        _load(),
        trigger="schedule",
        fire_time=fire_time,
        event_id=f"gcp:{job_name}",
    )
    # A failed run is a 500 so that Scheduler records the attempt as failed and
    # retries; the retry derives the same run id and overwrites this run.
    return _reply(*core.response_body(result))


MANUAL_HEADER = "X-Deployer-Trigger"


def _prediction(request: Any) -> tuple[str, int, dict[str, str]]:
    from . import core

    # `deployer invoke` marks its calls, so they are recorded as manual runs
    # like on every other provider; anything else is an HTTP trigger.
    manual = request.headers.get(MANUAL_HEADER, "").lower() == "manual"
    try:
        payload = core.parse_body(request.get_data(cache=False))
        result = core.run(_load(), trigger="manual" if manual else "http", payload=payload)
    except core.PayloadError as error:
        return _bad_request(error)
    return _reply(*core.response_body(result))
