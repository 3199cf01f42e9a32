"""Run a bundle's Lambda entry the way AWS Lambda runs it, on this machine.

AWS's own runtime interface client (``awslambdaric``, the one inside Lambda's
Python images) runs the handler in a subprocess and talks to a small Lambda
Runtime API served here, so events, responses, error reports and init errors
travel the same way as on Lambda.

The subprocess is ``python -I -S``: no site-packages, no PYTHONPATH, no current
directory. Its sys.path is Lambda's: the task root (/var/task), each layer's
``python`` directory (/opt/python), the runtime directory (/var/runtime, where
Lambda keeps awslambdaric and boto3, outside the user's code), then the
standard library. Anything else the function imports is missing, as on Lambda.

    runtime = install_runtime(directory)
    layer = install_layer(task_root / "requirements.txt", cache)
    with lambda_function(task_root, [layer], {...}, runtime=runtime) as function:
        kind, value = function.invoke({"deployer": {"trigger": "manual"}})

Timeouts work as on Lambda when ``invoke`` gets ``function_timeout``: the
invocation's ``Lambda-Runtime-Deadline-Ms`` is that many seconds after the
runtime receives it (which is what ``context.get_remaining_time_in_millis()``
counts down from), and a handler still running then has its process killed,
the invocation ending in a ``Sandbox.Timedout`` error.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

API_PREFIX = "/2018-06-01/runtime"
NEXT_PATH = f"{API_PREFIX}/invocation/next"
INIT_ERROR_PATH = f"{API_PREFIX}/init/error"
INVOCATION_REPLY = re.compile(
    rf"^{API_PREFIX}/invocation/(?P<request_id>[^/]+)/(?P<kind>response|error)$"
)
ACCOUNT_ID = "123456789012"
DEFAULT_HANDLER = "deployer_runtime.aws.handler"
# What Lambda's Python runtime has in /var/runtime besides the user's code.
RUNTIME_REQUIREMENTS = ("awslambdaric>=3,<5", "boto3>=1.34,<2")
READY_MARKER = ".installed"

# Runs inside the isolated interpreter: sys.path in Lambda's order, then
# awslambdaric's own entry point, exactly like `python -m awslambdaric HANDLER`.
BOOTSTRAP = """\
import sys
task_root, runtime_dir, handler, *layers = sys.argv[1:]
version = f"{sys.version_info[0]}.{sys.version_info[1]}"
paths = [task_root]
for layer in layers:
    # Lambda unpacks every layer into /opt and searches both of these.
    paths += [f"{layer}/python/lib/python{version}/site-packages", f"{layer}/python"]
sys.path[:0] = [*paths, runtime_dir]
from awslambdaric.__main__ import main
main([sys.argv[0], handler])
"""


class LambdaInitError(Exception):
    """The runtime reported an init error (handler import failed) before any invocation."""


class LambdaExited(Exception):
    """The function's process ended while an invocation was waiting for it."""


def _pip_install(target: Path, arguments: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-warn-conflicts", "--no-input", "--target", str(target), *arguments]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}")


def install_runtime(directory: Path) -> Path:
    """Install awslambdaric and boto3 into ``directory`` (Lambda's /var/runtime), once."""
    if not (directory / READY_MARKER).exists():
        _pip_install(directory, list(RUNTIME_REQUIREMENTS))
        (directory / READY_MARKER).touch()
    return directory


def install_layer(requirements: Path, cache: Path) -> Path:
    """A layer directory with ``requirements`` installed in its ``python/``, cached by their text.

    Installed for this machine's platform: these tests are about execution, not
    about building wheels for Lambda's platform.
    """
    text = requirements.read_text()
    layer = cache / hashlib.sha256(text.encode()).hexdigest()[:16]
    if not (layer / READY_MARKER).exists():
        _pip_install(layer / "python", ["-r", str(requirements)])
        (layer / READY_MARKER).touch()
    return layer


class _Invocation:
    def __init__(self, event: Any, wait_seconds: float, function_timeout: float | None) -> None:
        self.request_id = str(uuid.uuid4())
        self.body = json.dumps(event).encode()
        self.function_timeout = function_timeout
        self.deadline_ms = int((time.time() + wait_seconds) * 1000)
        self.handed_out: float | None = None  # time.monotonic() when the runtime got it
        self.done = threading.Event()
        self.outcome: tuple[str, Any] = ("pending", None)

    def hand_out(self) -> None:
        """The runtime receives the event: Lambda's timeout starts now."""
        self.handed_out = time.monotonic()
        if self.function_timeout is not None:
            self.deadline_ms = int((time.time() + self.function_timeout) * 1000)

    def timed_out(self) -> bool:
        return (
            self.function_timeout is not None
            and self.handed_out is not None
            and time.monotonic() > self.handed_out + self.function_timeout
        )


class RuntimeApi:
    """The Lambda Runtime API endpoints awslambdaric calls, on a free loopback port.

    ``/invocation/next`` blocks until an event is queued, as on Lambda, where the
    runtime's long poll is the instance waiting for work.
    """

    def __init__(self, function_arn: str) -> None:
        self.function_arn = function_arn
        self.init_error: Any = None
        self._pending: queue.Queue[_Invocation] = queue.Queue()
        self._invocations: dict[str, _Invocation] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RuntimeApiHandler)
        self._server.daemon_threads = True
        self._server.runtime_api = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def submit(
        self, event: Any, timeout: float, function_timeout: float | None = None
    ) -> _Invocation:
        invocation = _Invocation(event, timeout, function_timeout)
        with self._lock:
            self._invocations[invocation.request_id] = invocation
        self._pending.put(invocation)
        return invocation

    def next_invocation(self) -> _Invocation | None:
        while not self._closing.is_set():
            try:
                return self._pending.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def finish(self, request_id: str, kind: str, value: Any) -> bool:
        with self._lock:
            invocation = self._invocations.pop(request_id, None)
        if invocation is None:
            return False
        invocation.outcome = (kind, value)
        invocation.done.set()
        return True

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the function's own output is what a test wants to see

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _read_json(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", errors="replace")

    def do_GET(self) -> None:
        api: RuntimeApi = self.server.runtime_api
        if self.path != NEXT_PATH:
            self._reply(404, b'{"errorType": "NotFound"}')
            return
        invocation = api.next_invocation()
        if invocation is None:  # shutting down: the process is being stopped
            return
        invocation.hand_out()
        trace_id = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"
        self._reply(
            200,
            invocation.body,
            {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                "Lambda-Runtime-Trace-Id": trace_id,
            },
        )

    def do_POST(self) -> None:
        api: RuntimeApi = self.server.runtime_api
        body = self._read_json()
        if self.path == INIT_ERROR_PATH:
            api.init_error = body
            self._reply(202, b'{"status": "OK"}')
            return
        match = INVOCATION_REPLY.match(self.path)
        if match is None:
            self._reply(404, b'{"errorType": "NotFound"}')
        elif api.finish(match["request_id"], match["kind"], body):
            self._reply(202, b'{"status": "OK"}')
        else:
            self._reply(400, b'{"errorType": "InvalidRequestID"}')


class _Collected:
    """Everything a stream of the process writes, read on a thread so it never blocks."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._chunks: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._chunks.append(line.decode("utf-8", errors="replace"))

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        return "".join(self._chunks)


class LambdaFunction:
    """A running function: one execution environment, warm between invocations."""

    def __init__(self, api: RuntimeApi, process: subprocess.Popen[bytes]) -> None:
        self.api = api
        self.process = process
        assert process.stdout is not None and process.stderr is not None
        self._stdout = _Collected(process.stdout)
        self._stderr = _Collected(process.stderr)

    @property
    def stdout(self) -> str:
        """What Lambda would send to CloudWatch from awslambdaric: prints, logs, [ERROR] lines."""
        return self._stdout.text

    @property
    def stderr(self) -> str:
        return self._stderr.text

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"

    def invoke(
        self, event: Any, timeout: float = 120, *, function_timeout: float | None = None
    ) -> tuple[str, Any]:
        """Send ``event``; return ("response", the handler's JSON) or ("error", the error JSON).

        ``function_timeout`` is the function's configured timeout in seconds, as
        on Lambda: past it the process is killed and the outcome is Lambda's
        ("error", {"errorType": "Sandbox.Timedout", ...}); the function must be
        started again for another invocation. Raises LambdaInitError if the
        runtime could not load the handler, LambdaExited if the process died,
        TimeoutError after ``timeout`` seconds; each message carries the
        process's output.
        """
        invocation = self.api.submit(event, timeout, function_timeout)
        deadline = time.monotonic() + timeout
        while not invocation.done.wait(0.05):
            if invocation.timed_out():
                self.process.kill()
                self._drain()
                error = {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {function_timeout:.2f} seconds",
                }
                if self.api.finish(invocation.request_id, "error", error):
                    return invocation.outcome
                break  # the handler answered while it was being killed
            if self.api.init_error is not None:
                self._drain()
                raise LambdaInitError(
                    f"init error: {json.dumps(self.api.init_error)}\n{self.output()}"
                )
            if self.process.poll() is not None:
                self._drain()
                raise LambdaExited(
                    f"the function's process exited with code {self.process.returncode}\n"
                    f"{self.output()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply after {timeout} s\n{self.output()}")
        return invocation.outcome

    def _drain(self) -> None:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        self._stdout.join(5)
        self._stderr.join(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._stdout.join(5)
        self._stderr.join(5)


def lambda_environment(
    *, api_address: str, task_root: Path, runtime: Path, handler: str, name: str, region: str
) -> dict[str, str]:
    """The variables Lambda sets for a Python function (not inherited from this process)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return {
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": str(runtime),
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{uuid.uuid4().hex}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PATH": os.defpath,
    }


@contextmanager
def lambda_function(
    task_root: Path,
    layers: list[Path],
    env: dict[str, str],
    handler: str = DEFAULT_HANDLER,
    *,
    runtime: Path,
    name: str = "function",
    region: str = "us-east-1",
) -> Iterator[LambdaFunction]:
    """Start a Runtime API and awslambdaric on ``handler``; stop both on exit.

    ``runtime`` is a directory from install_runtime; ``layers`` are directories
    whose ``python/`` holds packages (install_layer); ``env`` is added to (and
    overrides) what Lambda sets, e.g. AWS_ENDPOINT_URL and credentials.
    """
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
    api = RuntimeApi(arn)
    environment = lambda_environment(
        api_address=api.address,
        task_root=task_root,
        runtime=runtime,
        handler=handler,
        name=name,
        region=region,
    )
    environment.update(env)
    arguments = [str(task_root), str(runtime), handler, *(str(layer) for layer in layers)]
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", BOOTSTRAP, *arguments],
            cwd=task_root,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except BaseException:
        api.close()
        raise
    function = LambdaFunction(api, process)
    try:
        yield function
    finally:
        function.stop()
        api.close()
