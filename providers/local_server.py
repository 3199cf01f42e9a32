"""``deployer serve``: the local provider's scheduler and HTTP server.

One warm worker per function, requests to one function serialised by a lock,
functions independent of each other: a function that crashes or hangs past its
timeout is recorded as a failed run and restarted on its next request, and
the server keeps serving. Binds to 127.0.0.1 only.

HTTP API:
    POST /v1/functions/{name}   JSON body in -> predictions JSON out
    GET  /v1/functions          deployed functions
    GET  /healthz               "ok"
Functions whose Http trigger is not public need ``Authorization: Bearer
<token>``, the token being in ``$DEPLOYER_HOME/local/token``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deployer.providers import local
from deployer.runtimes import core, storage
from deployer.triggers import Cron, Every, next_fire_times, trigger_from_dict

# How long the scheduler sleeps at most between looks at the registry, which
# is also how quickly a redeploy made while serving is picked up.
POLL_SECONDS = 1.0


def token_path() -> Path:
    return local.home() / "local" / "token"


def read_or_create_token() -> str:
    path = token_path()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as token_file:
        token_file.write(token)
    return token


class FunctionSlot:
    """A function's warm worker, and the lock that serialises its requests."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.worker = local.Worker(entry)
        self.lock = threading.Lock()

    def run(self, message: dict[str, Any]) -> local.Invocation:
        with self.lock:
            return local.run_request(
                self.worker, self.entry, message, self.entry["timeout_seconds"]
            )

    def stop(self) -> None:
        with self.lock:
            self.worker.stop()


class LocalServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.host = host
        self.port = local.port() if port is None else port
        self.log = log
        self.token = read_or_create_token()
        self._slots: dict[str, FunctionSlot] = {}
        self._slots_lock = threading.Lock()
        self._stopping = threading.Event()
        self._http: ThreadingHTTPServer | None = None
        self._next_fire: dict[tuple[str, str], datetime] = {}

    # -- functions ---------------------------------------------------------

    def slot(self, name: str) -> FunctionSlot | None:
        """The slot for ``name``, replacing its worker when it was redeployed."""
        entry = local.read_entry(name)
        with self._slots_lock:
            current = self._slots.get(name)
            if entry is None:
                if current is not None:
                    current.stop()
                    del self._slots[name]
                return None
            if (
                current is None
                or current.entry["bundle_sha"] != entry["bundle_sha"]
                or current.entry["python"] != entry["python"]
            ):
                if current is not None:
                    current.stop()
                current = FunctionSlot(entry)
                self._slots[name] = current
            else:
                current.entry = entry
            return current

    def dispatch(self, name: str, message: dict[str, Any]) -> local.Invocation | None:
        slot = self.slot(name)
        if slot is None:
            return None
        invocation = slot.run(message)
        self.log(f"{name}: {message.get('trigger')} run {invocation.run_id} -> {invocation.status}")
        return invocation

    # -- scheduler ---------------------------------------------------------

    def _schedules(self) -> list[tuple[str, str, Cron | Every]]:
        schedules = []
        for entry in local.list_entries():
            for data in entry["triggers"]:
                trigger = trigger_from_dict(data)
                if isinstance(trigger, (Cron, Every)):
                    key = json.dumps(data, sort_keys=True)
                    schedules.append((entry["name"], key, trigger))
        return schedules

    def tick(self, now: datetime) -> list[threading.Thread]:
        """Fire every schedule whose time has come; returns the started threads."""
        started = []
        seen = set()
        for name, key, schedule in self._schedules():
            seen.add((name, key))
            due = self._next_fire.get((name, key))
            if due is None:
                # Fires missed while nothing was serving are skipped, as a
                # disabled cloud schedule would skip them.
                self._next_fire[(name, key)] = next_fire_times(schedule, now, 1)[0]
                continue
            if due > now:
                continue
            self._next_fire[(name, key)] = next_fire_times(schedule, now, 1)[0]
            message = {
                "trigger": "schedule",
                "fire_time": due.isoformat(),
                "event_id": f"local:{key}",
                "run_id": storage.new_run_id(now, fire_time=due, event_id=f"local:{key}"),
            }
            thread = threading.Thread(target=self.dispatch, args=(name, message), daemon=True)
            thread.start()
            started.append(thread)
        for stale in set(self._next_fire) - seen:
            del self._next_fire[stale]
        return started

    def _scheduler_loop(self) -> None:
        while not self._stopping.is_set():
            now = datetime.now(timezone.utc)
            self.tick(now)
            upcoming = [moment for moment in self._next_fire.values()]
            wait = POLL_SECONDS
            if upcoming:
                wait = max(0.01, min(wait, (min(upcoming) - now).total_seconds()))
            self._stopping.wait(wait)

    # -- HTTP --------------------------------------------------------------

    def serve_forever(self) -> None:
        self.start()
        try:
            self._stopping.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def start(self) -> None:
        handler = _make_handler(self)
        self._http = ThreadingHTTPServer((self.host, self.port), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        threading.Thread(target=self._scheduler_loop, daemon=True).start()
        self.log(f"serving on http://{self.host}:{self.port} (token in {token_path()})")

    def stop(self) -> None:
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._slots_lock:
            for slot in self._slots.values():
                slot.stop()
            self._slots.clear()


def _make_handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the server logs runs itself, one line each

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, error_type: str, message: str) -> None:
            self._send(status, {"error": {"type": error_type, "message": message}})

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/functions":
                self._send(
                    200,
                    [
                        {
                            "name": entry["name"],
                            "code_hash": entry["code_hash"],
                            "triggers": entry["triggers"],
                        }
                        for entry in local.list_entries()
                    ],
                )
            else:
                self._error(404, "NotFound", f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            prefix = "/v1/functions/"
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self.path.startswith(prefix):
                return self._error(404, "NotFound", f"no route {self.path}")
            name = self.path[len(prefix) :].strip("/")
            entry = local.read_entry(name)
            if entry is None:
                return self._error(404, "NotFound", f"no function named {name!r} is deployed")
            http = [trigger for trigger in entry["triggers"] if trigger["type"] == "http"]
            if not http:
                return self._error(
                    404, "NotFound", f"{name} has no Http trigger: deploy it with Http()"
                )
            if not http[0].get("public") and not secrets.compare_digest(
                self.headers.get("Authorization", ""), f"Bearer {server.token}"
            ):
                return self._error(
                    401,
                    "Unauthorized",
                    f"send 'Authorization: Bearer <token>' (token in "
                    f"{token_path()}) or deploy with Http(public=True)",
                )
            message: dict[str, Any] = {"trigger": "http"}
            try:
                payload = core.parse_body(raw)
            except core.PayloadError as error:
                return self._send(400, core.bad_request(error))
            if payload is not core.NO_PAYLOAD:
                message["payload"] = payload
            invocation = server.dispatch(name, message)
            if invocation is None:
                return self._error(404, "NotFound", f"{name} was deleted")
            self._send(invocation.http_status, invocation.body)

    return Handler
