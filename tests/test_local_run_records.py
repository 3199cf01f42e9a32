"""Every local run keeps a record: when the store refuses it, and when the run is killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer import api, cli, store
from deployer.providers.local import provider as local

pytestmark = pytest.mark.slow

RUN_ID = "20261127T060000Z-0000abcd"


def add_one(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x + 1)


def sleeper(request: pd.DataFrame) -> pd.DataFrame:
    import time

    time.sleep(float(request.seconds.iloc[0]))
    return request


def test_record_the_store_refuses_is_kept_on_this_machine_and_shown_by_runs(
    deployer_home: Path,
) -> None:
    deployer.deploy(add_one, name="adder", quiet=True)
    entry = local.read_entry("adder")
    assert entry is not None
    directory = Path(entry["output"]) / "adder" / "runs" / RUN_ID
    (directory / "run.json").mkdir(parents=True)  # run.json cannot be written there
    worker = local.Worker(entry)
    message = {"trigger": "http", "payload": [{"x": 1}], "run_id": RUN_ID}
    try:
        invocation = local.run_request(worker, entry, message, 60)
        assert worker.alive  # a refusing store costs no cold start
    finally:
        worker.stop()
    assert invocation.http_status == 500
    assert invocation.body["run_id"] == RUN_ID
    assert invocation.body["error"]["type"] == "StoreWriteError"
    spooled = deployer_home / "local" / "spool" / "adder" / f"{RUN_ID}.json"
    assert json.loads(spooled.read_text())["status"] == "failed"
    # No temporary file and no output of the run that never committed.
    assert sorted(path.name for path in directory.iterdir()) == ["run.json", "started.json"]

    runs = deployer.read_runs("adder", output=entry["output"])
    assert runs.run_id.tolist() == [RUN_ID]
    assert runs.status.tolist() == ["failed"]
    assert runs.error_type.tolist() == ["StoreWriteError"]
    assert "the store refused to write run.json" in runs.error_message[0]
    assert str(directory) in runs.error_message[0]
    shown = CliRunner().invoke(cli.main, ["runs", "adder"])
    assert shown.exit_code == 0, shown.output
    assert f"{RUN_ID} failed: the store refused to write run.json" in shown.output


def test_bucket_that_vanished_is_a_500_and_the_run_is_kept_on_this_machine(
    deployer_home: Path, s3_bucket: str
) -> None:
    output = f"s3://{s3_bucket}/predictions"
    deployer.deploy(add_one, name="adder", output=output, quiet=True)
    # Deploy's write probe leaves an empty folder marker (pyarrow on S3).
    boto3.resource("s3").Bucket(s3_bucket).objects.all().delete()
    boto3.client("s3").delete_bucket(Bucket=s3_bucket)
    invocation = api.invoke("adder", pd.DataFrame({"x": [1]}))
    assert invocation.http_status == 500
    run_id = invocation.body["run_id"]
    assert invocation.body["error"]["type"] == "StoreWriteError"
    runs = deployer.read_runs("adder", output=output)
    assert runs.run_id.tolist() == [run_id]
    assert runs.status.tolist() == ["failed"]
    assert f"{output}/adder/runs/{run_id}" in runs.error_message[0]
    assert "NO_SUCH_BUCKET" in runs.error_message[0]


def test_run_killed_with_its_host_shows_as_running_then_lost(
    deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer.deploy(sleeper, name="sleeper", timeout=3, quiet=True)
    runs_dir = deployer_home / "store" / "sleeper" / "runs"
    # The host (`deployer invoke`) and its worker, in a process group of their
    # own: killing the group is a machine or platform stopping the run.
    host = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pandas as pd; from deployer import api; "
            "api.invoke('sleeper', pd.DataFrame({'seconds': [60]}))",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(runs_dir.glob("*/started.json")):
            assert host.poll() is None, "the host ended before the run started"
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.pid, signal.SIGKILL)
        host.wait()
    for _ in range(100):  # the worker, too, is gone with its group
        try:
            os.killpg(host.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker survived its host")
    [marker] = runs_dir.glob("*/started.json")
    assert not (marker.parent / "run.json").exists()

    running = deployer.read_runs("sleeper")
    assert running.status.tolist() == ["running"]
    assert running.run_id.tolist() == [marker.parent.name]
    assert running.error_type.isna().all()

    monkeypatch.setattr(store, "LOST_GRACE_SECONDS", 0)
    started = datetime.fromisoformat(json.loads(marker.read_text())["started"])
    while datetime.now(started.tzinfo) <= started + timedelta(seconds=3.2):
        time.sleep(0.1)
    lost = deployer.read_runs("sleeper")
    assert lost.status.tolist() == ["lost"]
    assert lost.trigger.tolist() == ["manual"]
    assert lost.error_type.tolist() == ["Lost"]
    assert "within its 3 s timeout" in lost.error_message[0]
    assert "deployer logs sleeper" in lost.error_message[0]
    assert deployer.read_outputs("sleeper").empty
    shown = CliRunner().invoke(cli.main, ["runs", "sleeper"])
    assert shown.exit_code == 0, shown.output
    assert f"{marker.parent.name} lost: the run started" in shown.output
