"""A Functions host for tests: an Azure app's HTTP function served over HTTP.

What the Functions host and its Python worker do for an HTTP trigger, in a
virtualenv that has nothing but ``azure-functions`` (test_azure_app's
``make_venv``): the app root and its ``.python_packages`` on sys.path,
``function_app`` imported, and each ``POST /api/ROUTE`` handed to the app's
``http`` function as a real ``func.HttpRequest``, concurrently on threads as
the worker does. Keys are the front end's business (tests/azure_fake.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = r"""
import sys
app_root = sys.argv[1]
sys.path[:0] = [app_root, app_root + "/.python_packages/lib/site-packages"]
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import azure.functions as func
import function_app

functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
http = functions["http"].get_user_function()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = func.HttpRequest(
            method="POST",
            url="http://localhost" + self.path,
            headers={key: value for key, value in self.headers.items()},
            body=body,
        )
        response = http(request)
        answer = response.get_body()
        self.send_response(response.status_code)
        self.send_header("Content-Type", response.mimetype or "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def functions_host(python: Path, app_root: Path, environment: dict[str, str]) -> Iterator[str]:
    """Serve ``app_root``'s HTTP function; yields the host's base URL. Its log (what
    the app printed) is ``functions-host.log`` beside the app root."""
    log_path = app_root.parent / "functions-host.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(python), "-I", "-c", HOST, str(app_root)],
            cwd=app_root,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(app_root), **environment},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the Functions host did not start:\n{log_path.read_text()}")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        process.kill()
        process.wait(timeout=10)
