"""``deployer serve``: the local provider's scheduler and HTTP server.

One warm worker per function, requests to one function serialised by that
function's own lock, functions independent of each other: a function that
crashes or hangs past its timeout is recorded as a failed run and restarted on
its next request, and the server keeps serving. Binds to 127.0.0.1 only, and
one ``serve`` at a time per ``DEPLOYER_HOME`` (a second would fire every
schedule twice).

HTTP API:
    POST /v1/functions/{name}   JSON body in -> predictions JSON out
    GET  /v1/functions          deployed functions (token required)
    GET  /healthz               200 while the scheduler runs, else 503

Security model: every route but /healthz needs ``Authorization: Bearer
<token>`` (the token is in ``$DEPLOYER_HOME/local/token``, mode 0600), except
POST to a function deployed with ``Http(public=True)``. The request is
authenticated from its path and headers alone, before its body is read;
a name is validated like deploy validates it before it touches a path. Bodies
are capped (``max_body_bytes``, 6 MB by default as on Lambda), connections and
threads are bounded, every socket has a timeout, and every malformed request
gets a 4xx. A failed run answers its error type and run id, never its message
(which may quote data or secrets): the owner reads it with ``deployer runs``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import stat
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from deployer.archive import write_atomically
from deployer.cache import posix_locks
from deployer.errors import ConfigError, DeployerError
from deployer.providers.local import pages
from deployer.providers.local import provider as local
from deployer.runtimes import core, fanout, storage
from deployer.spec import NAME_PATTERN
from deployer.triggers import Cron, Every, next_fire_times, trigger_from_dict

# How long the scheduler sleeps at most between looks at the registry, which
# is also how quickly a redeploy made while serving is picked up.
POLL_SECONDS = 1.0
# /healthz reports the scheduler dead once it has not come round for this long.
SCHEDULER_STALE_SECONDS = 10.0
# Lambda's synchronous payload limit; larger bodies get 413.
MAX_BODY_BYTES = 6 * 2**20
# Threads serving connections at once; one more connection gets 503 at once.
MAX_CONNECTIONS = 64
LISTEN_BACKLOG = 128
# A connection that sends nothing for this long (half-open, slow loris, idle
# keep-alive) is closed, freeing its thread.
SOCKET_TIMEOUT_SECONDS = 30.0
# A token shorter than this is refused: token_urlsafe(24) gives 32 characters.
MIN_TOKEN_CHARACTERS = 32
FUNCTIONS_PREFIX = "/v1/functions/"
# Manual runs through this server's warm workers (LocalProvider.invoke).
INVOKE_PREFIX = "/v1/invoke/"
TIMEOUT_HEADER = "X-Deployer-Timeout"
# The run's params (JSON) when the body is Parquet, which has no room for them.
PARAMS_HEADER = "X-Deployer-Params"
PARQUET_TYPE = "application/vnd.apache.parquet"
# How long a retired worker's bundle lock may stay shared with a process being
# forked at that moment (see remove_unused_bundles).
RETIRED_BUNDLE_PATIENCE_SECONDS = 5.0


def token_path() -> Path:
    return local.home() / "local" / "token"


def lock_path() -> Path:
    return local.home() / "local" / "serve.lock"


def serving_path() -> Path:
    return local.home() / "local" / "serve.json"


def serving() -> tuple[str, int] | None:
    """(host, port) of the `deployer serve` running for this home, or None.

    serve.json alone could be left by a server that was killed; the lock is
    held only by a live one.
    """
    try:
        address = json.loads(serving_path().read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not ServeLock.is_held(lock_path()):
        return None
    return str(address["host"]), int(address["port"])


def read_or_create_token() -> str:
    """The bearer token, made once with mode 0600; refused if others may read it."""
    path = token_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return read_or_create_token()
        with os.fdopen(descriptor, "w") as token_file:
            token_file.write(token)
        return token
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {mode:04o}): anyone who reads it can "
            f"run your functions; run `chmod 600 {path}` (or delete it to make a new token)"
        )
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARACTERS:
        raise ConfigError(
            f"{path} holds a token of {len(token)} characters, under the "
            f"{MIN_TOKEN_CHARACTERS} a guess cannot reach: delete the file and start "
            "`deployer serve` again to make a new one"
        )
    return token


class ServeLock:
    """One ``deployer serve`` per home: an exclusive lock held while serving."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        fcntl = posix_locks()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path, "a+")  # noqa: SIM115 (held for the server's life)
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise ConfigError(
                f"another `deployer serve` (pid {holder}) is already serving {local.home()}: "
                "two would fire every schedule twice; stop it first, or set DEPLOYER_HOME "
                "to another folder"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._file = lock_file

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None

    @staticmethod
    def is_held(path: Path) -> bool:
        """Whether a running `deployer serve` holds the lock at ``path`` (not this process)."""
        fcntl = posix_locks()
        try:
            lock_file = open(path)  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            lock_file.close()  # closing also drops the shared lock, if it was taken
        return False


class FunctionSlot:
    """A function's warm worker, and the lock that serialises its requests."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.worker = local.Worker(entry)
        self.lock = threading.Lock()

    def run(
        self, message: dict[str, Any], timeout_seconds: float | None = None
    ) -> local.Invocation:
        timeout = timeout_seconds or self.entry["timeout_seconds"]
        if message.get("overlap") is False and not self.lock.acquire(blocking=False):
            # A schedule that does not overlap fires while the warm worker is
            # busy: a worker of its own makes the run, which finds the running
            # one's lease and records itself as skipped (or runs, when the busy
            # one is not of such a schedule), instead of queueing behind it.
            aside = local.Worker(self.entry)
            try:
                return local.run_request(aside, self.entry, message, timeout)
            finally:
                aside.stop()
        if message.get("overlap") is False:
            try:
                return local.run_request(self.worker, self.entry, message, timeout)
            finally:
                self.lock.release()
        with self.lock:
            return local.run_request(self.worker, self.entry, message, timeout)

    def stop(self) -> None:
        with self.lock:
            self.worker.stop()


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A threading server with a cap on connections and a real listen backlog."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        super().__init__(address, handler)
        self._connections = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connections.acquire(blocking=False):
            body = b'{"error": {"type": "Busy", "message": "too many connections; retry"}}'
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


class LocalServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log: Callable[[str], None] = print,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        socket_timeout_seconds: float = SOCKET_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = local.port() if port is None else port
        self.log = log
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.socket_timeout_seconds = socket_timeout_seconds
        self.token = read_or_create_token()
        self._slots: dict[str, FunctionSlot] = {}
        self._slots_lock = threading.Lock()
        self._stopping = threading.Event()
        self._http: _BoundedHTTPServer | None = None
        self._lock = ServeLock(lock_path())
        self._next_fire: dict[tuple[str, str], datetime] = {}
        self._scheduler: threading.Thread | None = None
        self._heartbeat = time.monotonic()
        # Problems already logged (a bad entry, a failing schedule), so a file
        # that stays broken is named once, not every second.
        self._reported: set[str] = set()
        self.sessions = pages.Sessions()

    # -- functions ---------------------------------------------------------

    def slot(self, name: str) -> FunctionSlot | None:
        """The slot for ``name``, replacing its worker when it was redeployed.

        The global lock only guards the table; a retired worker is stopped
        outside it, so a redeploy of one function never waits on another's call.
        """
        entry = local.read_entry(name)
        retired = None
        with self._slots_lock:
            current = self._slots.get(name)
            if entry is None:
                retired = self._slots.pop(name, None)
                current = None
            elif (
                current is None
                or current.entry["bundle_sha"] != entry["bundle_sha"]
                or current.entry["python"] != entry["python"]
                or current.entry.get("tree_sha") != entry.get("tree_sha")
                or current.entry.get("memory_mb") != entry.get("memory_mb")
            ):
                retired = current
                current = FunctionSlot(entry)
                self._slots[name] = current
            else:
                current.entry = entry
        if retired is not None:
            # Waits for the retired worker's running call, on its own thread; then
            # its bundle, if no deployment uses it any more, goes.
            threading.Thread(target=self._retire, args=(retired,), daemon=True).start()
        return current

    # -- pages -------------------------------------------------------------

    def function_summaries(self) -> list[dict[str, Any]]:
        """Each deployed function with its last run, for the index page."""
        from deployer.providers.base import describe_trigger
        from deployer.store import run_history

        summaries = []
        for entry in local.list_entries():
            try:
                last = run_history(entry["name"], output=entry["output"], last=1)
            except DeployerError:
                last = []
            summaries.append(
                {
                    "name": entry["name"],
                    "status": last[0].get("status") if last else None,
                    "started": str(last[0].get("started", ""))[:19] if last else None,
                    "triggers": [describe_trigger(trigger) for trigger in entry["triggers"]],
                }
            )
        return summaries

    def report(self, name: str, last: str) -> str:
        from deployer.report import DEFAULT_RUNS, report_html

        entry = local.read_entry(name)
        assert entry is not None
        runs = int(last) if last.isdigit() and int(last) > 0 else DEFAULT_RUNS
        return report_html(name, output=entry["output"], provider="local", last=runs)

    def _retire(self, slot: FunctionSlot) -> None:
        slot.stop()
        try:
            local.remove_unused_bundles(patience_seconds=RETIRED_BUNDLE_PATIENCE_SECONDS)
        except Exception as error:  # housekeeping must never take the server down
            self.log(f"removing unused bundles failed: {error}")

    def dispatch(
        self, name: str, message: dict[str, Any], timeout_seconds: float | None = None
    ) -> local.Invocation | None:
        slot = self.slot(name)
        if slot is None:
            return None
        invocation = slot.run(message, timeout_seconds)
        trigger = message.get("trigger")
        if invocation.run_id is None:  # refused before a run began (a body that is no table)
            error = invocation.body.get("error") or {}
            self.log(
                f"{name}: {trigger} request refused with HTTP {invocation.http_status} "
                f"({error.get('type', 'error')}); no run was made"
            )
        else:
            self.log(f"{name}: {trigger} run {invocation.run_id} -> {invocation.status}")
        return invocation

    def _report_once(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.log(message)

    # -- scheduler ---------------------------------------------------------

    def _schedules(self) -> list[tuple[str, str, Cron | Every]]:
        def skip(error: local.EntryError) -> None:
            self._report_once(f"entry:{error}", f"skipping a function: {error}")

        schedules = []
        for entry in local.list_entries(on_error=skip):
            try:
                for data in entry["triggers"]:
                    trigger = trigger_from_dict(data)
                    if isinstance(trigger, (Cron, Every)):
                        key = json.dumps(data, sort_keys=True)
                        schedules.append((entry["name"], key, trigger))
            except Exception as error:  # one bad entry must not stop the others
                self._report_once(
                    f"triggers:{entry.get('name')}:{error}",
                    f"skipping the schedules of {entry.get('name')!r}: {error}; redeploy it",
                )
        return schedules

    def tick(self, now: datetime) -> list[threading.Thread]:
        """Fire every schedule whose time has come; returns the started threads."""
        started = []
        seen = set()
        for name, key, schedule in self._schedules():
            seen.add((name, key))
            try:
                due = self._next_fire.get((name, key))
                if due is None:
                    # Fires missed while nothing was serving are skipped, as a
                    # disabled cloud schedule would skip them.
                    self._next_fire[(name, key)] = next_fire_times(schedule, now, 1)[0]
                    continue
                if due > now:
                    continue
                self._next_fire[(name, key)] = next_fire_times(schedule, now, 1)[0]
            except Exception as error:
                self._report_once(
                    f"schedule:{name}:{key}", f"{name}: cannot compute its schedule: {error}"
                )
                continue
            message: dict[str, Any] = {
                "trigger": "schedule",
                "fire_time": due.isoformat(),
                "event_id": f"local:{key}",
                "run_id": storage.new_run_id(now, fire_time=due, event_id=f"local:{key}"),
            }
            if schedule.params:
                message["params"] = dict(schedule.params)
            if not schedule.overlap:
                message["overlap"] = False
            target = self._map_logged if schedule.map else self._dispatch_logged
            thread = threading.Thread(target=target, args=(name, message), daemon=True)
            thread.start()
            started.append(thread)
        for stale in set(self._next_fire) - seen:
            del self._next_fire[stale]
        return started

    def _map_logged(self, name: str, message: dict[str, Any]) -> None:
        """A schedule with map=True: its inputs fanned out over this machine's
        workers, coordinated here, committed as one run with the firing's run id."""
        entry = local.read_entry(name)
        if entry is None:
            return
        provider = local.LocalProvider()
        target = fanout.MapTarget(name, entry["output"], entry.get("code_hash"))
        try:
            with provider.map_dispatcher(name, concurrency=provider.map_concurrency) as dispatch:
                record = fanout.scheduled_map(
                    target,
                    entry.get("inputs") or "",
                    dispatch,
                    fire_time=datetime.fromisoformat(message["fire_time"]),
                    event_id=message["event_id"],
                    concurrency=provider.map_concurrency,
                )
            self.log(f"{name}: scheduled map run {record['run_id']} -> {record['status']}")
        except Exception as error:  # the server outlives any one run
            self.log(f"{name}: scheduled map run {message['run_id']} failed: {error}")

    def _dispatch_logged(self, name: str, message: dict[str, Any]) -> None:
        try:
            self.dispatch(name, message)
        except Exception as error:
            self.log(f"{name}: scheduled run failed to start: {type(error).__name__}: {error}")

    def _scheduler_loop(self) -> None:
        while not self._stopping.is_set():
            self._heartbeat = time.monotonic()
            now = datetime.now(timezone.utc)
            try:
                self.tick(now)
            except Exception:  # the scheduler outlives any one failure
                self.log("scheduler error (it keeps running):\n" + traceback.format_exc())
            upcoming = list(self._next_fire.values())
            wait = POLL_SECONDS
            if upcoming:
                wait = max(0.01, min(wait, (min(upcoming) - now).total_seconds()))
            self._stopping.wait(wait)

    def scheduler_alive(self) -> bool:
        return (
            self._scheduler is not None
            and self._scheduler.is_alive()
            and time.monotonic() - self._heartbeat < SCHEDULER_STALE_SECONDS
        )

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
        self._lock.acquire()
        try:
            self._http = _BoundedHTTPServer(
                (self.host, self.port), _make_handler(self), self.max_connections
            )
        except OSError as error:
            self._lock.release()
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {self.port} on {self.host} is in use (another program, or a "
                    "`deployer serve` of another home): pass --port, or set DEPLOYER_PORT"
                ) from None
            raise
        self.port = self._http.server_address[1]
        # Where invoke finds this server (see serving()): written only while the lock is held.
        write_atomically(
            serving_path(), json.dumps({"host": self.host, "port": self.port}).encode()
        )
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._heartbeat = time.monotonic()
        self._scheduler = threading.Thread(target=self._scheduler_loop, daemon=True)
        self._scheduler.start()
        self.log(f"serving on http://{self.host}:{self.port} (token in {token_path()})")
        self.log(
            f"reports: http://{self.host}:{self.port}{pages.LOGIN_PATH}?code="
            f"{self.sessions.new_code()} (signs a browser in; one use, 10 minutes)"
        )

    def stop(self) -> None:
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._slots_lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            slot.stop()
        if self._lock.held:
            serving_path().unlink(missing_ok=True)
        self._lock.release()


def _make_handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.socket_timeout_seconds

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes; without this, Nagle holds
            # the second until the client's delayed ACK (~40 ms a response).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the server logs runs itself, one line each

        def _send(self, status: int, body: Any, *, close: bool = False) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                # The body was not read: what is left of it must not be
                # parsed as the next request.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self, status: int, error_type: str, message: str, *, close: bool = False
        ) -> None:
            self._send(status, {"error": {"type": error_type, "message": message}}, close=close)

        def _authorized(self) -> bool:
            return secrets.compare_digest(
                self.headers.get("Authorization", "").encode(), f"Bearer {server.token}".encode()
            )

        def _unauthorized(self) -> None:
            self._error(
                401,
                "Unauthorized",
                "send 'Authorization: Bearer <token>' with the token of this deployer serve",
                close=True,
            )

        def do_GET(self) -> None:  # noqa: N802
            self._guarded(self._get)

        def do_POST(self) -> None:  # noqa: N802
            self._guarded(self._post)

        def _guarded(self, handle: Callable[[], None]) -> None:
            try:
                handle()
            except (ConnectionError, TimeoutError):
                self.close_connection = True
            except Exception:
                server.log("request failed:\n" + traceback.format_exc())
                try:
                    self._error(500, "InternalError", "the server failed; see its log", close=True)
                except OSError:
                    self.close_connection = True

        def _page(self, status: int, document: str, extra: dict[str, str] | None = None) -> None:
            data = document.encode()
            self.send_response(status)
            for header, value in {**pages.PAGE_HEADERS, **(extra or {})}.items():
                self.send_header(header, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _redirect(self, location: str, cookie: str | None = None) -> None:
            self.send_response(303)
            self.send_header("Location", location)
            if cookie is not None:
                self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _browser_authorized(self) -> bool:
            return self._authorized() or server.sessions.valid(self.headers.get("Cookie"))

        def _pages(self, path: str, query: str) -> bool:
            """The browser's pages; False when ``path`` is not one of them."""
            if path == pages.LOGIN_PATH:
                code = parse_qs(query).get("code", [""])[0]
                session = server.sessions.redeem(code) if code else None
                if session is not None:
                    self._redirect("/", pages.session_cookie(session))
                else:
                    self._page(401 if code else 200, pages.login_page("/", failed=bool(code)))
                return True
            if path != "/" and not path.startswith(pages.REPORT_PREFIX):
                return False
            if not self._browser_authorized():
                self._page(401, pages.login_page(pages.safe_next(path)))
                return True
            if path == "/":
                self._page(200, pages.index_page(server.function_summaries()))
                return True
            name = path[len(pages.REPORT_PREFIX) :]
            if not NAME_PATTERN.match(name) or local.read_entry(name) is None:
                self._page(404, pages.message_page("not found", f"no function {name!r} here"))
                return True
            try:
                document = server.report(name, parse_qs(query).get("last", [""])[0])
            except DeployerError as error:
                self._page(503, pages.message_page("no report", str(error)))
                return True
            self._page(200, document)
            return True

        def _login(self) -> None:
            raw = self._read_body()
            if raw is None:
                return
            form = parse_qs(raw.decode(errors="replace"))
            given = form.get("token", [""])[0]
            next_path = pages.safe_next(form.get("next", ["/"])[0])
            if not secrets.compare_digest(given.encode(), server.token.encode()):
                return self._page(401, pages.login_page(next_path, failed=True))
            self._redirect(next_path, pages.session_cookie(server.sessions.new_session()))

        def _get(self) -> None:
            split = urlsplit(self.path)
            path = split.path
            if path == "/healthz":
                if server.scheduler_alive():
                    return self._send(200, {"status": "ok", "scheduler": "running"})
                return self._send(503, {"status": "degraded", "scheduler": "stopped"})
            if self._pages(path, split.query):
                return None
            if not self._authorized():
                return self._unauthorized()
            if path == "/v1/functions":
                return self._send(
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
            self._error(404, "NotFound", "no such route")

        def _post(self) -> None:
            path = urlsplit(self.path).path
            if path == pages.LOGIN_PATH:
                return self._login()
            if path.startswith(INVOKE_PREFIX):
                return self._invoke(path[len(INVOKE_PREFIX) :])
            name = path[len(FUNCTIONS_PREFIX) :] if path.startswith(FUNCTIONS_PREFIX) else ""
            if not NAME_PATTERN.match(name):
                # Decided from the path alone: no file is looked at, no body read.
                if not self._authorized():
                    return self._unauthorized()
                return self._error(404, "NotFound", "no such route", close=True)
            authorized = self._authorized()
            try:
                entry = local.read_entry(name)
            except local.EntryError as error:
                server.log(f"{name}: {error}")
                entry = None
            http = [t for t in (entry or {}).get("triggers", []) if t.get("type") == "http"]
            if not authorized and not (http and http[0].get("public")):
                # Unknown, private or not HTTP-triggered look alike to a stranger.
                return self._unauthorized()
            if entry is None:
                return self._error(
                    404, "NotFound", f"no function named {name!r} is deployed", close=True
                )
            if not http:
                return self._error(
                    404,
                    "NotFound",
                    f"{name} has no Http trigger: deploy it with Http()",
                    close=True,
                )
            raw = self._read_body()
            if raw is None:
                return
            message = self._json_message(raw, "http")
            if message is None:
                return
            invocation = server.dispatch(name, message)
            if invocation is None:
                return self._error(404, "NotFound", f"{name} was deleted")
            self._send(*core.for_http_caller(invocation.http_status, invocation.body, name))

        def _invoke(self, name: str) -> None:
            """`deployer invoke` / d.invoke() on this server's warm worker: a manual run
            of any deployed function (HTTP trigger or not), for the token holder only.
            The reply is the run's own status and body, as a fresh worker's would be."""
            if not self._authorized():
                return self._unauthorized()
            if not NAME_PATTERN.match(name):
                return self._error(404, "NotFound", "no such route", close=True)
            declared_timeout = self.headers.get(TIMEOUT_HEADER, "")
            timeout = float(declared_timeout) if declared_timeout.isdigit() else None
            raw = self._read_body()
            if raw is None:
                return
            with tempfile.TemporaryDirectory(prefix="deployer-invoke-") as scratch:
                if self.headers.get("Content-Type") == PARQUET_TYPE:
                    # A DataFrame: Parquet keeps the dtypes JSON would lose.
                    payload_file = os.path.join(scratch, "payload.parquet")
                    Path(payload_file).write_bytes(raw)
                    parquet: dict[str, Any] = {"trigger": "manual", "payload_file": payload_file}
                    params = self.headers.get(PARAMS_HEADER)
                    if params is not None:
                        try:
                            parquet["params"] = json.loads(params)
                        except ValueError:
                            return self._error(
                                400, "BadRequest", f"{PARAMS_HEADER} is not JSON", close=True
                            )
                    message: dict[str, Any] | None = parquet
                else:
                    message = self._json_message(raw, "manual")
                if message is None:
                    return
                invocation = server.dispatch(name, message, timeout)
            if invocation is None:
                return self._error(404, "NotFound", f"no function named {name!r} is deployed")
            self._send(invocation.http_status, invocation.body)

        def _json_message(self, raw: bytes, trigger: str) -> dict[str, Any] | None:
            """The run request for a JSON body; None after answering 400 to one
            that cannot become the function's input."""
            try:
                payload = core.parse_body(raw)
            except core.PayloadError as error:
                self._send(400, core.bad_request(error))
                return None
            payload, params = core.split_params(payload)
            message: dict[str, Any] = {"trigger": trigger}
            if payload is not core.NO_PAYLOAD:
                message["payload"] = payload
            if params is not None:
                message["params"] = params
            return message

        def _read_body(self) -> bytes | None:
            """The body, or None after answering a request whose body cannot be read."""
            if self.headers.get("Transfer-Encoding"):
                self._error(
                    411, "LengthRequired", "send the body with a Content-Length", close=True
                )
                return None
            declared = self.headers.get("Content-Length", "0").strip() or "0"
            if not declared.isdigit():
                self._error(
                    400, "BadRequest", f"Content-Length {declared[:40]!r} is not a size", close=True
                )
                return None
            length = int(declared)
            if length > server.max_body_bytes:
                self._error(
                    413,
                    "PayloadTooLarge",
                    f"the body is {length} bytes, over this server's limit of "
                    f"{server.max_body_bytes}: send fewer rows per request",
                    close=True,
                )
                return None
            raw = self.rfile.read(length) if length else b""
            if len(raw) < length:
                self.close_connection = True  # the client went away mid-body
                return None
            return raw

    return Handler
