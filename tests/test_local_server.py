"""`deployer serve`: HTTP triggers, schedules, and surviving crashing functions."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import deployer
from deployer import Every, Http
from deployer.providers.local.server import LocalServer

pytestmark = pytest.mark.slow


@pytest.fixture
def server(deployer_home: Path) -> Iterator[LocalServer]:
    running = LocalServer(port=0, log=lambda line: None)
    running.start()
    yield running
    running.stop()


def post(
    server: LocalServer, name: str, body: bytes | Any, *, token: str | None = "server"
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {server.token if token == 'server' else token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/functions/{name}", data=data, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    if (frame.x < 0).any():
        raise ValueError("x must not be negative")
    return frame.assign(score=frame.x * 10)


def test_http_trigger_returns_predictions_and_records_the_run(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    status, body = post(server, "scores", [{"x": 1}, {"x": 2}])
    assert status == 200
    assert body["status"] == "succeeded"
    assert [row["score"] for row in body["predictions"]] == [10, 20]
    runs = deployer.read_runs("scores")
    assert runs.trigger.tolist() == ["http"] and runs.run_id.tolist() == [body["run_id"]]


def test_authenticated_trigger_refuses_requests_without_the_token(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    assert post(server, "scores", [{"x": 1}], token=None)[0] == 401
    assert post(server, "scores", [{"x": 1}], token="wrong")[0] == 401


def test_public_trigger_needs_no_token(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http(public=True)], quiet=True)
    assert post(server, "scores", [{"x": 1}], token=None)[0] == 200


def test_function_without_http_trigger_is_not_reachable(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", quiet=True)
    status, body = post(server, "scores", [{"x": 1}])
    assert status == 404 and "Http()" in body["error"]["message"]


def test_malformed_json_is_400_and_nothing_runs(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    status, body = post(server, "scores", b"{not json")
    assert status == 400 and body["error"]["type"] == "BadRequest"
    status, body = post(server, "scores", ["not", "records"])
    assert status == 400
    assert deployer.read_runs("scores").empty


def test_raising_function_is_500_and_the_server_keeps_serving(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    status, body = post(server, "scores", [{"x": -1}])
    assert status == 500
    assert body["error"]["type"] == "ValueError"
    assert body["run_id"]
    # The caller learns the type and the run; the message stays with the owner.
    assert "negative" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)
    failed = deployer.read_runs("scores")
    assert failed.error_message.tolist() == ["x must not be negative"]
    assert failed.run_id.tolist() == [body["run_id"]]
    assert post(server, "scores", [{"x": 3}])[0] == 200


def test_crashing_and_hanging_functions_do_not_take_the_server_down(server: LocalServer) -> None:
    def crash(body: dict) -> None:
        import os
        import time

        if body.get("mode") == "exit":
            os._exit(3)
        if body.get("mode") == "hang":
            time.sleep(60)

    deployer.deploy(crash, name="crashy", triggers=[Http()], timeout=2, quiet=True)
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    status, body = post(server, "crashy", {"mode": "exit"})
    assert status == 500 and body["error"]["type"] == "WorkerCrashed"
    status, body = post(server, "crashy", {"mode": "hang"})
    assert status == 500 and body["error"]["type"] == "Timeout"
    assert post(server, "crashy", {"mode": "fine"})[0] == 200
    assert post(server, "scores", [{"x": 1}])[0] == 200
    statuses = deployer.read_runs("crashy").status.tolist()
    assert statuses.count("failed") == 2 and statuses.count("succeeded") == 1


def test_worker_stays_warm_and_is_replaced_after_a_redeploy(server: LocalServer) -> None:
    deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
    post(server, "scores", [{"x": 1}])
    slot = server.slot("scores")
    assert slot is not None and slot.worker.process is not None
    first_pid = slot.worker.process.pid
    post(server, "scores", [{"x": 1}])
    assert server.slot("scores").worker.process.pid == first_pid

    def predict_v2(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(score=-frame.x)

    deployer.deploy(predict_v2, name="scores", triggers=[Http()], quiet=True)
    status, body = post(server, "scores", [{"x": 1}])
    assert body["predictions"][0]["score"] == -1
    assert server.slot("scores").worker.process.pid != first_pid


def test_schedule_fires_at_its_time_with_a_run_id_from_the_fire_time(deployer_home: Path) -> None:
    deployer.deploy(lambda: [{"tick": 1}], name="ticker", triggers=[Every(minutes=5)], quiet=True)
    scheduler = LocalServer(port=0, log=lambda line: None)
    start = datetime(2026, 11, 27, 6, 1, tzinfo=timezone.utc)
    assert scheduler.tick(start) == []  # learns the next fire time: 06:05
    assert scheduler.tick(start + timedelta(minutes=3)) == []
    fired = scheduler.tick(datetime(2026, 11, 27, 6, 5, tzinfo=timezone.utc))
    assert len(fired) == 1
    fired[0].join(timeout=120)
    scheduler.stop()
    runs = deployer.read_runs("ticker")
    assert runs.trigger.tolist() == ["schedule"]
    assert runs.run_id[0].startswith("20261127T060500Z-")
    assert deployer.read_outputs("ticker").tick.tolist() == [1]


def test_serve_command_listens_on_loopback_and_stops_on_interrupt(deployer_home: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from conftest import free_port, wait_for_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "deployer.cli", "serve", "--port", str(port)],
        env={**os.environ, "DEPLOYER_HOME": str(deployer_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert json.load(reply) == {"status": "ok", "scheduler": "running"}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"serving on http://127.0.0.1:{port}" in stderr.decode()
    assert b"Traceback" not in stderr


def test_a_refused_request_is_logged_as_refused_not_as_a_run_of_none(
    deployer_home: Path,
) -> None:
    lines: list[str] = []
    running = LocalServer(port=0, log=lines.append)
    running.start()
    try:
        deployer.deploy(predict, name="scores", triggers=[Http()], quiet=True)
        assert post(running, "scores", ["not", "records"])[0] == 400
        assert post(running, "scores", [{"x": 1}])[0] == 200
    finally:
        running.stop()
    served = [line for line in lines if line.startswith("scores:")]
    assert served[0] == ("scores: http request refused with HTTP 400 (BadRequest); no run was made")
    assert served[1].startswith("scores: http run ") and served[1].endswith("-> succeeded")
    assert not any("None" in line for line in served)


def which_process(frame: pd.DataFrame) -> pd.DataFrame:
    import os

    return frame.assign(pid=os.getpid(), day=frame.when.dt.day_name())


def test_invoke_goes_through_a_running_serve_and_keeps_dataframe_types(
    deployer_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    running = LocalServer(port=0, log=lines.append)
    running.start()
    try:
        d = deployer.deploy(which_process, name="warm", quiet=True)  # no Http trigger needed
        frame = pd.DataFrame({"when": pd.to_datetime(["2026-11-29", "2026-11-30"])})
        first = d.invoke(frame)
        second = d.invoke(frame)
    finally:
        running.stop()
    # One warm worker made both runs: the server's, which logged them.
    assert first.pid.iloc[0] == second.pid.iloc[0]
    assert sum(": manual run " in line and "-> succeeded" in line for line in lines) == 2
    # Parquet, not JSON, carried the frame: timestamps arrived as timestamps.
    assert second.day.tolist() == ["Sunday", "Monday"]
    assert "invoke uses its warm workers" not in capfd.readouterr().err
    runs = deployer.read_runs("warm")
    assert runs.trigger.tolist() == ["manual", "manual"]
    # With the server stopped, a fresh worker runs it (another process), and
    # the hint to start serve is given once per home, not at every invoke.
    third = d.invoke(frame)
    d.invoke(frame)
    assert third.pid.iloc[0] != first.pid.iloc[0]
    assert capfd.readouterr().err.count("invoke uses its warm workers") == 1


def test_a_server_that_was_killed_is_not_used(deployer_home: Path) -> None:
    from deployer.providers.local.server import serving, serving_path

    d = deployer.deploy(which_process, name="stale", quiet=True)
    serving_path().parent.mkdir(parents=True, exist_ok=True)
    serving_path().write_text(json.dumps({"host": "127.0.0.1", "port": 9}))  # nobody's lock
    assert serving() is None
    frame = pd.DataFrame({"when": pd.to_datetime(["2026-11-29"])})
    assert d.invoke(frame).day.tolist() == ["Sunday"]


def test_the_invoke_route_needs_the_token_even_for_a_public_function(
    server: LocalServer,
) -> None:
    deployer.deploy(predict, name="open", triggers=[Http(public=True)], quiet=True)
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/invoke/open",
        data=json.dumps([{"x": 1}]).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    assert deployer.read_runs("open").empty
