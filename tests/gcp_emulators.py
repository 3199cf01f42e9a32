"""GCP on this machine: gcp-storage-emulator for GCS, functions-framework for Cloud Functions.

Fixtures (import them into a test module):
- ``gcs_emulator`` (session): gcp-storage-emulator on a free loopback port.
- ``gcs_bucket``: STORAGE_EMULATOR_HOST pointed at it and a fresh bucket per test.

And, for tests and bench/ alike:
- ``storage_emulator``: the emulator as a context manager (what the fixture uses);
- ``function_environment``: a fresh venv with only a source's requirements.txt
  installed by uv (what Cloud Build does), cached by the requirements' text;
- ``cloud_function``: functions-framework from that venv serving ``main.py``
  with the source directory as its working directory, as on Cloud Functions.

Objects are put and read through the emulator's JSON API with urllib, so the
tests' view of the bucket never depends on the pyarrow code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for_port

READY_MARKER = ".installed"


class GcsEmulator:
    """gcp-storage-emulator's JSON API, for arranging and inspecting buckets in tests."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def _call(self, method: str, path: str, data: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json" if method == "POST" else "text/plain"}
        if path.startswith("/upload/"):
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(
            f"{self.endpoint}{path}", data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def create_bucket(self, name: str) -> None:
        self._call("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data`` as ``key``; returns its gs:// URL."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data)
        return f"gs://{bucket}/{key}"

    def get(self, bucket: str, key: str) -> bytes:
        quoted = urllib.parse.quote(key, safe="")
        return self._call("GET", f"/storage/v1/b/{bucket}/o/{quoted}?alt=media")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix})
        listing = json.loads(self._call("GET", f"/storage/v1/b/{bucket}/o?{query}"))
        return sorted(item["name"] for item in listing.get("items", []))


@contextmanager
def storage_emulator(directory: Path) -> Iterator[GcsEmulator]:
    """gcp-storage-emulator on a free loopback port, keeping its data and log in ``directory``."""
    # The data directory must be absolute and given before `start`; the
    # emulator otherwise resolves it against its own package directory.
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "-d", str(directory / "data")]
    command += ["start", "-H", "127.0.0.1", "--port", str(port)]
    with open(directory / "emulator.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        yield GcsEmulator(f"http://127.0.0.1:{port}")
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """gcp-storage-emulator on a free loopback port, for the whole session."""
    with storage_emulator(tmp_path_factory.mktemp("gcs-emulator")) as emulator:
        yield emulator


@pytest.fixture
def gcs_bucket(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket; pyarrow (storage.filesystem) in this process reaches the emulator."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    gcs_emulator.create_bucket(name)
    return name


def function_environment(requirements: Path, cache: Path) -> Path:
    """A venv with only ``requirements`` installed, as Cloud Build makes one; cached by their text.

    Nothing of this process's environment is in it: no deployer, no pytest,
    no hypothesis. The interpreter is this one, because a pickled function
    loads only on the Python minor version that made it.
    """
    from uv import find_uv_bin

    text = requirements.read_text()
    environment = cache / hashlib.sha256(text.encode()).hexdigest()[:16]
    if (environment / READY_MARKER).exists():
        return environment
    shutil.rmtree(environment, ignore_errors=True)
    uv = find_uv_bin()
    uv_environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(environment)],
        # Bytecode compiled at install time, as pip (and so Cloud Build) does:
        # otherwise the first request of every cold start pays for compiling.
        [uv, "pip", "install", "--quiet", "--compile-bytecode"]
        + ["--python", str(environment / "bin" / "python"), "-r", str(requirements)],
    ):
        completed = subprocess.run(command, capture_output=True, text=True, env=uv_environment)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
    (environment / READY_MARKER).touch()
    return environment


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class CloudFunction:
    """functions-framework serving one source directory, warm between requests."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log(self) -> str:
        """What Cloud Logging would get: functions-framework's and the function's output."""
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        body: bytes | str | None = None,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Reply:
        data = body.encode() if isinstance(body, str) else body
        if method == "POST" and data is None:
            data = b""
        request = urllib.request.Request(
            self.url, data=data, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(
                    response.status, dict(response.headers), response.read().decode("utf-8")
                )
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read().decode("utf-8"))

    def post_json(self, value: Any) -> Reply:
        return self.request(json.dumps(value), headers={"Content-Type": "application/json"})


def scheduler_headers(schedule_time: str, job_name: str) -> dict[str, str]:
    """The headers Cloud Scheduler sets on an HTTP target's request (Scheduler v1 HttpTarget)."""
    return {
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": job_name,
        "X-CloudScheduler-ScheduleTime": schedule_time,
        "User-Agent": "Google-Cloud-Scheduler",
        "Content-Type": "application/octet-stream",
    }


def function_process_environment(
    environment: Path, port: int, extra: dict[str, str]
) -> dict[str, str]:
    """The variables a 2nd gen function sees (not inherited from this process), plus ``extra``."""
    return {
        "PATH": f"{environment / 'bin'}{os.pathsep}{os.defpath}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PORT": str(port),
        "K_SERVICE": "function",
        "K_REVISION": "function-00001-abc",
        "K_CONFIGURATION": "function",
        "FUNCTION_TARGET": "handle",
        "FUNCTION_SIGNATURE_TYPE": "http",
        **extra,
    }


@contextmanager
def cloud_function(
    source: Path,
    environment: Path,
    env: dict[str, str],
    *,
    target: str = "handle",
    startup_timeout: float = 60,
) -> Iterator[CloudFunction]:
    """Serve ``source``'s main.py with functions-framework from ``environment``; stop on exit."""
    port = free_port()
    log_path = source.parent / f"{source.name}-functions-framework-{port}.log"
    command = [str(environment / "bin" / "functions-framework"), "--target", target]
    command += ["--source", "main.py", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=source,
            env=function_process_environment(environment, port, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    function = CloudFunction(process, port, log_path, started)
    try:
        try:
            wait_for_port(port, process, timeout=startup_timeout)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n--- functions-framework ---\n{function.log}") from None
        yield function
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def unzip(archive: bytes, directory: Path) -> Path:
    """Unpack a source zip as Cloud Functions does before building it."""
    import io
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        source.extractall(directory)
    return directory
