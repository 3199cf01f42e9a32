"""The hostile-input catalogue against a real `deployer serve`, and the local
provider's defences: each test here failed before its fix (issue 7)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import deployer
from deployer import Every, Http
from deployer.errors import ConfigError
from deployer.providers.local import provider as local
from deployer.providers.local.server import LocalServer, token_path

pytestmark = pytest.mark.slow


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


class Served:
    """`deployer serve` in its own process, spoken to over raw sockets."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, token: str) -> None:
        self.process = process
        self.port = port
        self.token = token

    def raw(self, request: bytes, *, timeout: float = 10) -> bytes:
        """Send ``request`` as is; return what the server answers before closing or pausing."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as connection:
            connection.sendall(request)
            return _read_response(connection)

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))


def _read_response(connection: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            return data
        if not chunk:
            return data
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                return data


def status_of(response: bytes) -> int:
    assert response, "the server closed the connection without an answer"
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def post(path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
    if "Content-Length" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def served(deployer_home: Path) -> Iterator[Served]:
    from conftest import free_port, wait_for_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deployer.cli", "serve", "--port", str(port)],
        env={**os.environ, "DEPLOYER_HOME": str(deployer_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        yield Served(process, port, token_path().read_text().strip())
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


# -- 1. path traversal --------------------------------------------------------


def _plant_foreign_function(root: Path, marker: Path) -> None:
    """An entry and a "bundle" outside the functions folder that would leave a marker."""
    bundle = root / "x" / "bundle"
    (bundle / "deployer_runtime").mkdir(parents=True)
    (bundle / "deployer_runtime" / "__init__.py").write_text("")
    (bundle / "deployer_runtime" / "local.py").write_text(
        f"def main():\n    open({str(marker)!r}, 'w').write('ran')\n"
    )
    entry = {
        "name": "evil",
        "python": sys.executable,
        "bundle_dir": str(bundle),
        "bundle_sha": "0" * 64,
        "code_hash": "0" * 64,
        "deps_hash": "0" * 64,
        "output": str(root / "out"),
        "inputs": None,
        "triggers": [{"type": "http", "public": True}],
        "timeout_seconds": 5,
        "deployed_at": "2026-01-01T00:00:00+00:00",
    }
    (root / "x" / "evil.json").write_text(json.dumps(entry))


def test_traversal_in_the_function_name_runs_nothing(served: Served, tmp_path: Path) -> None:
    marker = tmp_path / "ran-foreign-code"
    # The functions folder, {home}/local/functions, exists once something is
    # deployed; three levels up from it is tmp_path.
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    _plant_foreign_function(tmp_path, marker)
    for path in ("/v1/functions/../../../x/evil", "/v1/functions/..%2F..%2F..%2Fx%2Fevil"):
        response = served.raw(post(path, b"[]"))
        assert status_of(response) in (401, 404)
        with_token = served.raw(post(path, b"[]", {"Authorization": f"Bearer {served.token}"}))
        assert status_of(with_token) == 404
    time.sleep(0.5)
    assert not marker.exists()


def test_entries_are_read_only_from_the_functions_folder(deployer_home: Path) -> None:
    with pytest.raises(ConfigError, match="invalid function name"):
        local.read_entry("../../x/evil")
    with pytest.raises(ConfigError, match="invalid function name"):
        local.log_path("../evil")


# -- 7. unauthenticated resource exhaustion -----------------------------------


def test_body_is_not_read_before_the_caller_is_authenticated(served: Served) -> None:
    deployer.deploy(predict, name="private", triggers=[Http()], quiet=True)
    # Headers announce 100 MB and none of it is sent: the answer must not wait for it.
    request = post("/v1/functions/private", headers={"Content-Length": str(100 * 2**20)})
    response = served.raw(request, timeout=5)
    assert status_of(response) == 401
    assert str(token_path()) not in response.decode()


def test_malformed_requests_get_a_4xx(served: Served) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    auth = {"Authorization": f"Bearer {served.token}"}
    for length in ("-1", "abc", "1e3"):
        response = served.raw(
            post("/v1/functions/scores", b"[]", {**auth, "Content-Length": length}), timeout=5
        )
        assert status_of(response) == 400, length
    chunked = served.raw(
        post("/v1/functions/scores", b"0\r\n\r\n", {**auth, "Transfer-Encoding": "chunked"})
    )
    assert status_of(chunked) == 411
    nested = b"[" * 5000 + b"]" * 5000
    response = served.raw(post("/v1/functions/scores", nested, auth))
    assert status_of(response) == 400 and body_of(response)["error"]["type"] == "BadRequest"
    long_name = "a" * 10_000
    assert status_of(served.raw(post(f"/v1/functions/{long_name}", b"[]"))) == 401
    assert status_of(served.raw(post(f"/v1/functions/{long_name}", b"[]", auth))) == 404
    too_large = served.raw(
        post("/v1/functions/scores", headers={**auth, "Content-Length": str(7 * 2**20)})
    )
    assert status_of(too_large) == 413
    # After all of it, the server still answers.
    ok = served.raw(post("/v1/functions/scores", b'[{"x": 2}]', auth), timeout=60)
    assert status_of(ok) == 200 and body_of(ok)["predictions"][0]["score"] == 4


def test_listing_functions_needs_the_token(served: Served) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    anonymous = served.raw(b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(anonymous) == 401 and b"scores" not in anonymous
    request = f"GET /v1/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.token}"
    allowed = served.raw(f"{request}\r\n\r\n".encode())
    assert status_of(allowed) == 200 and body_of(allowed)[0]["name"] == "scores"


def test_half_open_connections_do_not_grow_threads_without_bound(served: Served) -> None:
    before = served.threads()
    held = []
    try:
        for _ in range(150):
            connection = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            connection.sendall(b"POST /v1/functions/x HTTP/1.1\r\n")  # and never more
            held.append(connection)
        time.sleep(1)
        # One thread per connection up to the cap, then 503 at once.
        assert served.threads() - before <= 64 + 2
    finally:
        for connection in held:
            connection.close()


def test_thirty_two_clients_connecting_at_once_are_all_answered(served: Served) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(32)

    def one() -> None:
        barrier.wait()
        statuses.append(status_of(served.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")))

    threads = [threading.Thread(target=one) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 32


def test_idle_connections_time_out_and_free_their_thread(deployer_home: Path) -> None:
    server = LocalServer(port=0, log=lambda line: None, max_connections=4, socket_timeout_seconds=1)
    server.start()
    try:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(_read_response(extra)) == 503
        time.sleep(1.5)  # the idle four are closed by the socket timeout
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        for connection in held:
            connection.close()
    finally:
        server.stop()


# -- 4. a malformed entry and the scheduler ------------------------------------


def test_a_malformed_entry_is_skipped_and_named_and_schedules_still_fire(
    deployer_home: Path,
) -> None:
    deployer.deploy(lambda: [{"tick": 1}], name="ticker", triggers=[Every(minutes=5)], quiet=True)
    functions = deployer_home / "local" / "functions"
    (functions / "junk.json").write_text("{")
    (functions / "Bad Name.json").write_text("{}")
    lines: list[str] = []
    scheduler = LocalServer(port=0, log=lines.append)
    from datetime import datetime, timezone

    start = datetime(2026, 11, 27, 6, 1, tzinfo=timezone.utc)
    scheduler.tick(start)
    fired = scheduler.tick(datetime(2026, 11, 27, 6, 5, tzinfo=timezone.utc))
    assert len(fired) == 1
    fired[0].join(timeout=120)
    scheduler.tick(datetime(2026, 11, 27, 6, 6, tzinfo=timezone.utc))
    assert deployer.read_runs("ticker").trigger.tolist() == ["schedule"]
    named = [line for line in lines if "junk.json" in line]
    assert len(named) == 1, lines  # named once, not on every tick
    assert any("Bad Name.json" in line for line in lines)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_reports_a_dead_scheduler(deployer_home: Path) -> None:
    server = LocalServer(port=0, log=lambda line: None)

    def explode(now: Any) -> list[threading.Thread]:
        raise SystemExit("scheduler thread ends")

    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert json.load(reply)["scheduler"] == "running"
        server.tick = explode  # type: ignore[method-assign]
        server._scheduler.join(timeout=5)  # type: ignore[union-attr]
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(url, timeout=5)
        assert answer.value.code == 503
    finally:
        server.stop()


def test_an_error_in_one_tick_does_not_stop_the_scheduler(deployer_home: Path) -> None:
    lines: list[str] = []
    server = LocalServer(port=0, log=lines.append)
    calls = []

    def flaky(now: Any) -> list[threading.Thread]:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("disk hiccup")
        return []

    server.tick = flaky  # type: ignore[method-assign]
    server.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(calls) >= 3
        assert server.scheduler_alive()
        assert any("disk hiccup" in line for line in lines)
    finally:
        server.stop()


# -- 8. one function's redeploy does not stall the others ----------------------


def test_a_redeploy_waiting_on_a_running_call_does_not_stall_other_functions(
    deployer_home: Path,
) -> None:
    def slow(body: Any) -> list[dict[str, int]]:
        import time

        time.sleep(6)
        return [{"done": 1}]

    deployer.deploy(slow, name="slow", triggers=[Http()], quiet=True)
    deployer.deploy(predict, name="quick", triggers=[Http()], quiet=True)
    server = LocalServer(port=0, log=lambda line: None)
    server.start()
    try:
        assert server.dispatch("quick", {"trigger": "http", "payload": [{"x": 1}]}).status == (
            "succeeded"
        )
        running = threading.Thread(
            target=server.dispatch, args=("slow", {"trigger": "http", "payload": {}})
        )
        running.start()
        time.sleep(2)  # the slow call is under way in its worker

        def slow_v2(body: Any) -> list[dict[str, int]]:
            return [{"done": 2}]

        deployer.deploy(slow_v2, name="slow", triggers=[Http()], quiet=True)
        replacing = threading.Thread(
            target=server.dispatch, args=("slow", {"trigger": "http", "payload": {}})
        )
        replacing.start()
        time.sleep(0.5)
        quick = server.dispatch("quick", {"trigger": "http", "payload": [{"x": 2}]})
        assert quick is not None and quick.status == "succeeded"
        assert running.is_alive(), "the other function waited for the slow call to end"
        running.join(timeout=30)
        replacing.join(timeout=60)
    finally:
        server.stop()


# -- 9. the timeout does not count loading --------------------------------------


def test_the_timeout_counts_the_call_not_the_cold_start(deployer_home: Path) -> None:
    class SlowToLoad:
        def __reduce__(self) -> Any:
            import time

            return (time.sleep, (3,))  # unpickling takes 3 s

    slow_to_load = SlowToLoad()

    def quick_call(frame: pd.DataFrame) -> pd.DataFrame:
        assert slow_to_load is None  # unpickled as sleep()'s None
        return frame.assign(score=1)

    d = deployer.deploy(quick_call, name="cold", timeout=2, quiet=True)
    assert d.invoke(pd.DataFrame({"x": [1]})).score.tolist() == [1]


def test_a_load_over_its_own_limit_says_so(
    deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class SlowToLoad:
        def __reduce__(self) -> Any:
            import time

            return (time.sleep, (5,))

    slow_to_load = SlowToLoad()

    def quick_call(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(score=slow_to_load)

    deployer.deploy(quick_call, name="cold", timeout=60, quiet=True)
    monkeypatch.setattr(local, "LOAD_TIMEOUT_SECONDS", 1)
    invocation = deployer.api.invoke("cold", pd.DataFrame({"x": [1]}))
    assert invocation.http_status == 500
    assert invocation.body["error"]["type"] == "LoadTimeout"
    assert "load limit" in invocation.body["error"]["message"]
    assert deployer.read_runs("cold").error_type.tolist() == ["LoadTimeout"]


# -- 10. tokens -----------------------------------------------------------------


def test_the_token_file_is_made_private_and_loose_or_empty_tokens_are_refused(
    deployer_home: Path,
) -> None:
    server = LocalServer(port=0, log=lambda line: None)
    assert len(server.token) >= 32
    assert token_path().stat().st_mode & 0o777 == 0o600
    token_path().chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        LocalServer(port=0, log=lambda line: None)
    token_path().write_text("")
    token_path().chmod(0o600)
    with pytest.raises(ConfigError, match="delete the file"):
        LocalServer(port=0, log=lambda line: None)


# -- 11. bundle integrity lives outside the bundle -------------------------------


def test_a_bundle_edited_on_disk_is_refused_and_a_redeploy_repairs_it(
    deployer_home: Path,
) -> None:
    import hashlib

    deployer.deploy(predict, name="scores", quiet=True)
    entry = local.read_entry("scores")
    assert entry is not None
    bundle_dir = Path(entry["bundle_dir"])
    # Swap the pickle and fix the manifest's sha256 to match: self-consistent.
    import cloudpickle

    def other(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(score=-1)

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    pickled = cloudpickle.dumps({"function": other, "metrics": {}, "checks": {}})
    (bundle_dir / manifest["function"]["file"]).write_bytes(pickled)
    manifest["function"]["sha256"] = hashlib.sha256(pickled).hexdigest()
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))

    invocation = deployer.api.invoke("scores", pd.DataFrame({"x": [1]}))
    assert invocation.http_status == 500
    assert invocation.body["error"]["type"] == "BundleModified"

    plan = deployer.plan(predict, name="scores", quiet=True)
    assert any("restore the unpacked bundle" in str(action) for action in plan.actions)
    deployer.deploy(predict, name="scores", quiet=True)
    assert deployer.api.invoke("scores", pd.DataFrame({"x": [1]})).body["predictions"] == [
        {"x": 1, "score": 2}
    ]


def test_a_planted_pyc_counts_as_a_modified_bundle(deployer_home: Path) -> None:
    deployer.deploy(predict, name="scores", quiet=True)
    d = deployer.get("scores")
    assert d.invoke(pd.DataFrame({"x": [1]})).score.tolist() == [2]
    entry = local.read_entry("scores")
    assert entry is not None
    cache = Path(entry["bundle_dir"]) / "deployer_runtime" / "__pycache__"
    # The worker runs with -B: loading wrote nothing into the bundle.
    assert not cache.exists()
    cache.mkdir()
    (cache / "core.cpython-311.pyc").write_bytes(b"planted")
    invocation = deployer.api.invoke("scores", pd.DataFrame({"x": [1]}))
    assert invocation.body["error"]["type"] == "BundleModified"


# -- 12. concurrency hygiene ------------------------------------------------------


def test_a_second_serve_on_the_same_home_refuses_to_start(deployer_home: Path) -> None:
    first = LocalServer(port=0, log=lambda line: None)
    first.start()
    try:
        second = LocalServer(port=0, log=lambda line: None)
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            second.start()
    finally:
        first.stop()
    third = LocalServer(port=0, log=lambda line: None)
    third.start()  # the lock went with the first server
    third.stop()


def test_memory_is_capped_locally(deployer_home: Path) -> None:
    def hungry(frame: pd.DataFrame) -> pd.DataFrame:
        block = bytearray(2 * 2**30)
        return frame.assign(score=len(block))

    deployer.deploy(hungry, name="hungry", memory=512, quiet=True)
    invocation = deployer.api.invoke("hungry", pd.DataFrame({"x": [1]}))
    assert invocation.http_status == 500
    assert invocation.body["error"]["type"] == "MemoryError"


def test_the_log_is_rotated(deployer_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def chatty(frame: pd.DataFrame) -> pd.DataFrame:
        import sys

        for _ in range(2000):
            print("x" * 999, file=sys.stderr)
        return frame

    monkeypatch.setattr(local, "LOG_MAX_BYTES", 200_000)
    d = deployer.deploy(chatty, name="chatty", quiet=True)
    d.invoke(pd.DataFrame({"x": [1]}))
    log = local.log_path("chatty")
    sizes = [path.stat().st_size for path in sorted(log.parent.glob("chatty.log*"))]
    assert len(sizes) == 1 + local.LOG_BACKUPS
    assert max(sizes) <= 200_000
    # The last line is the run's end marker; the one before it the last print.
    assert "x" * 999 in d.logs(lines=2).splitlines()[0]


def test_a_crashed_worker_says_what_it_printed_last(deployer_home: Path) -> None:
    def crash(frame: pd.DataFrame) -> None:
        import os
        import sys

        print("loading weights from /models/v3", file=sys.stderr, flush=True)
        os._exit(7)

    deployer.deploy(crash, name="crashy", quiet=True)
    invocation = deployer.api.invoke("crashy", pd.DataFrame({"x": [1]}))
    message = invocation.body["error"]["message"]
    assert "exited with code 7" in message
    assert "loading weights from /models/v3" in message
