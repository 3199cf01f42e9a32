"""GCP on this machine: gcp-storage-emulator for GCS, functions-framework for Cloud Functions.

Fixtures (import them into a test module):
- ``gcs_emulator`` (session): gcp-storage-emulator on a free loopback port.
- ``gcs_bucket``: STORAGE_EMULATOR_HOST pointed at it and a fresh bucket per test.
- ``google_certificates``: a loopback stand-in for Google's ID-token
  certificates (``https://www.googleapis.com/oauth2/v1/certs``) holding a test
  key, which mints the tokens Cloud Scheduler would send. The runtime is
  pointed at it with DEPLOYER_GCP_CERTS_URL, a variable only tests set.

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

    def __init__(self, endpoint: str, log_path: Path | None = None) -> None:
        self.endpoint = endpoint
        self.log_path = log_path

    def _call(self, method: str, path: str, data: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json" if method == "POST" else "text/plain"}
        if path.startswith("/upload/"):
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(
            f"{self.endpoint}{path}", data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def create_bucket(self, name: str, *, exist_ok: bool = False) -> None:
        try:
            self._call("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())
        except urllib.error.HTTPError as error:
            if not (exist_ok and error.code == 409):
                raise

    def iam_policy(self, bucket: str) -> dict[str, Any]:
        """The bucket's IAM policy as stored (the emulator keeps it; it does not enforce it)."""
        policy: dict[str, Any] = json.loads(self._call("GET", f"/storage/v1/b/{bucket}/iam"))
        return policy

    def set_iam_policy(self, bucket: str, policy: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b/{bucket}/iam",
            data=json.dumps(policy).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30):
            pass

    def members(self, bucket: str, role: str) -> set[str]:
        return {
            member
            for binding in self.iam_policy(bucket).get("bindings", [])
            if binding["role"] == role
            for member in binding["members"]
        }

    def object_requests(self, bucket: str, key: str) -> list[str]:
        """The request lines the emulator logged for one object (uploads, metadata, reads)."""
        assert self.log_path is not None
        quoted = urllib.parse.quote(key, safe="")
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if f"/b/{bucket}/o/{quoted}" in line or (f"/b/{bucket}/o?" in line and quoted in line)
        ]

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
        yield GcsEmulator(f"http://127.0.0.1:{port}", directory / "emulator.log")
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


# -- Google's ID-token certificates, with a key of the tests' own --------------------

GOOGLE_ISSUER = "https://accounts.google.com"
_signing_keys: dict[str, tuple[str, str]] = {}


def signing_key(key_id: str) -> tuple[str, str]:
    """(private key PEM, self-signed x.509 certificate PEM) for ``key_id``, made once a session."""
    if key_id not in _signing_keys:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"deployer test {key_id}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256())
        )
        _signing_keys[key_id] = (
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )
    return _signing_keys[key_id]


def mint_token(key_id: str, claims: dict[str, Any]) -> str:
    """A JWT signed RS256 by the test key ``key_id``, as google-auth signs one."""
    from google.auth import crypt, jwt

    signer = crypt.RSASigner.from_string(signing_key(key_id)[0], key_id=key_id)
    return jwt.encode(signer, claims).decode()


class GoogleCertificates:
    """Serves ``{key id: certificate}`` like Google's v1 certs endpoint, and counts the fetches.

    Only ``KEY_ID``'s certificate is served: a token signed by any other test
    key is a token Google did not sign.
    """

    KEY_ID = "deployer-test-key"
    MAX_AGE_SECONDS = 3600

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        body = json.dumps({self.KEY_ID: signing_key(self.KEY_ID)[1]}).encode()
        certificates = self
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                certificates.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={certificates.MAX_AGE_SECONDS}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def claims(*, email: str, audience: str, **overrides: Any) -> dict[str, Any]:
        """The claims of the ID token Cloud Scheduler sends for ``email``, valid for an hour."""
        now = int(time.time())
        return {
            "iss": GOOGLE_ISSUER,
            "aud": audience,
            "azp": "111111111111111111111",
            "sub": "111111111111111111111",
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
            **overrides,
        }

    def token(self, *, email: str, audience: str, key_id: str = KEY_ID, **overrides: Any) -> str:
        return mint_token(key_id, self.claims(email=email, audience=audience, **overrides))


@pytest.fixture
def google_certificates() -> Iterator[GoogleCertificates]:
    certificates = GoogleCertificates()
    try:
        yield certificates
    finally:
        certificates.stop()


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


def scheduler_headers(
    schedule_time: str, job_name: str, token: str | None = None
) -> dict[str, str]:
    """The headers Cloud Scheduler sets on an HTTP target's request (Scheduler v1 HttpTarget),
    with ``Authorization: Bearer <token>`` when the job has an OIDC token."""
    headers = {
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": job_name,
        "X-CloudScheduler-ScheduleTime": schedule_time,
        "User-Agent": "Google-Cloud-Scheduler",
        "Content-Type": "application/octet-stream",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


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
