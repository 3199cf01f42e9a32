"""Lambda's Invoke API in front of several execution environments of tests/lambda_harness.py.

``boto3``'s Lambda client is pointed here (``AWS_ENDPOINT_URL_LAMBDA``): an
Invoke (``POST /2015-03-31/functions/NAME/invocations``) goes to an idle
environment (awslambdaric against the local Runtime API), as Lambda gives each
concurrent invocation its own; every other Lambda call (GetFunction, tags,
configuration) is passed on to moto unchanged. ``throttle`` makes the next N
invokes answer as Lambda does when the account's concurrency is used up
(HTTP 429, TooManyRequestsException), so that the caller's backoff is tested
against the real botocore error path.
"""

from __future__ import annotations

import http.client
import json
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from lambda_harness import LambdaFunction

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations")


class LambdaFront:
    def __init__(self, functions: Sequence[LambdaFunction], moto_endpoint: str) -> None:
        self.idle: queue.SimpleQueue[LambdaFunction] = queue.SimpleQueue()
        for function in functions:
            self.idle.put(function)
        self.moto = urlsplit(moto_endpoint)
        self.lock = threading.Lock()
        self.to_throttle = 0
        self.throttled = 0
        self.invoked: list[dict[str, Any]] = []
        self.most_at_once = 0
        self._running = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                front.handle(self)

            def do_GET(self) -> None:
                front.handle(self)

            def do_PUT(self) -> None:
                front.handle(self)

            def do_DELETE(self) -> None:
                front.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def throttle(self, invokes: int) -> None:
        with self.lock:
            self.to_throttle = invokes

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if request.command == "POST" and INVOKE_PATH.match(request.path):
            status, headers, answer = self._invoke(body)
        else:
            status, headers, answer = self._to_moto(request, body)
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(answer)))
        request.end_headers()
        request.wfile.write(answer)

    def _invoke(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if self.to_throttle > 0:
                self.to_throttle -= 1
                self.throttled += 1
                error = {"Type": "User", "message": "Rate Exceeded."}
                return (
                    429,
                    {
                        "x-amzn-ErrorType": "TooManyRequestsException",
                        "Content-Type": "application/json",
                    },
                    json.dumps(error).encode(),
                )
        event = json.loads(body or b"{}")
        function = self.idle.get()  # waits, as Lambda queues nothing: enough environments
        with self.lock:
            self.invoked.append(event)
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            kind, value = function.invoke(event, timeout=300)
        finally:
            with self.lock:
                self._running -= 1
            self.idle.put(function)
        headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "1"}
        if kind == "error":
            headers["X-Amz-Function-Error"] = "Unhandled"
        return 200, headers, json.dumps(value).encode()

    def _to_moto(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.moto.hostname, self.moto.port, timeout=60)
        try:
            headers = {key: value for key, value in request.headers.items() if key != "Host"}
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            kept = {
                key: value
                for key, value in response.getheaders()
                if key.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return response.status, kept, answer
        finally:
            connection.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def lambda_front(functions: Sequence[LambdaFunction], moto_endpoint: str) -> Iterator[LambdaFront]:
    front = LambdaFront(functions, moto_endpoint)
    try:
        yield front
    finally:
        front.close()
