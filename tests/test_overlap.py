"""Schedules with overlap=False: a firing while the previous run still runs is recorded
as skipped, naming that run, and writes no output."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer import Cron, Every
from deployer.cli import main
from deployer.providers.azure.app_package import function_app_source
from deployer.providers.gcp.provider import _job_body
from deployer.providers.local.server import LocalServer
from deployer.runtimes import core, storage
from deployer.triggers import describe, trigger_from_dict, trigger_to_dict


def score(frame: pd.DataFrame, *, threshold: float = 0.5) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2, high=frame.x > threshold)


@pytest.fixture
def loaded(tmp_path: Path) -> core.Loaded:
    inputs = tmp_path / "features.parquet"
    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(inputs)
    built = deployer.build(score, name="scores", output=str(tmp_path / "store"), inputs=str(inputs))
    return core.load(str(built.bundle.extract(tmp_path / "bundle")))


def lease_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "scores" / core.LEASE_FILE


def put_lease(tmp_path: Path, run_id: str, expires: datetime) -> None:
    lease_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    lease = {
        "run_id": run_id,
        "started": "2026-11-30T06:00:00+00:00",
        "expires": expires.isoformat(),
    }
    lease_path(tmp_path).write_text(json.dumps(lease))


def scheduled(loaded: core.Loaded, *, overlap: bool = False) -> core.RunResult:
    return core.run(
        loaded,
        trigger="schedule",
        fire_time=storage.utc_now().replace(microsecond=0),
        event_id="test:daily",
        overlap=overlap,
    )


def test_a_run_holds_the_lease_while_it_runs_and_releases_it(
    loaded: core.Loaded, tmp_path: Path
) -> None:
    result = scheduled(loaded)
    assert result.status == "succeeded"
    assert not lease_path(tmp_path).exists()


def test_a_firing_while_another_run_holds_the_lease_is_skipped_naming_it(
    loaded: core.Loaded, tmp_path: Path
) -> None:
    put_lease(tmp_path, "20261130T060000Z-aaaaaaaa", storage.utc_now() + timedelta(minutes=5))
    result = scheduled(loaded)
    assert result.status == "skipped" and result.committed
    record = deployer.read_run("scores", result.run_id, output=str(tmp_path / "store"))
    assert record["status"] == "skipped"
    assert record["skipped"]["running"] == "20261130T060000Z-aaaaaaaa"
    assert "still runs, and this schedule does not overlap" in record["skipped"]["message"]
    run_dir = tmp_path / "store" / "scores" / "runs" / result.run_id
    assert not (run_dir / storage.OUTPUT_FILE).exists()
    # The lease stays the running run's.
    assert json.loads(lease_path(tmp_path).read_text())["run_id"] == "20261130T060000Z-aaaaaaaa"
    runs = deployer.read_runs("scores", output=str(tmp_path / "store"))
    assert runs.status.tolist() == ["skipped"]
    assert deployer.read_outputs("scores", output=str(tmp_path / "store")).empty
    assert core.response_body(result)[0] == 200
    store = str(tmp_path / "store")
    listed = CliRunner().invoke(main, ["runs", "scores", "--output", store])
    assert "previous run still running" in listed.output
    shown = CliRunner().invoke(main, ["runs", "scores", result.run_id, "--output", store])
    assert "skipped        run 20261130T060000Z-aaaaaaaa (started " in shown.output


def test_an_expired_lease_or_one_whose_run_committed_does_not_stop_a_run(
    loaded: core.Loaded, tmp_path: Path
) -> None:
    put_lease(tmp_path, "20261130T060000Z-aaaaaaaa", storage.utc_now() - timedelta(seconds=1))
    assert scheduled(loaded).status == "succeeded"  # killed without releasing: expired
    first = scheduled(loaded, overlap=True)  # runs whatever the lease
    put_lease(tmp_path, first.run_id, storage.utc_now() + timedelta(minutes=5))
    assert scheduled(loaded).status == "succeeded"  # its run committed: the release was lost


def test_overlap_true_ignores_a_lease(loaded: core.Loaded, tmp_path: Path) -> None:
    put_lease(tmp_path, "20261130T060000Z-aaaaaaaa", storage.utc_now() + timedelta(minutes=5))
    assert scheduled(loaded, overlap=True).status == "succeeded"


def test_overlap_is_part_of_the_schedule_only_when_false() -> None:
    strict = Every(minutes=5, overlap=False)
    assert trigger_to_dict(Every(minutes=5)) == {
        "type": "every",
        "minutes": 5,
        "hours": 0,
        "days": 0,
    }
    assert trigger_to_dict(strict)["overlap"] is False
    assert trigger_from_dict(trigger_to_dict(strict)) == strict
    assert describe(strict) == "every 5 minutes, never overlapping"
    with pytest.raises(deployer.errors.TriggerError, match="overlap must be True or False"):
        Cron("0 6 * * *", overlap="no")  # type: ignore[arg-type]


def test_each_cloud_schedule_carries_overlap_false_to_its_runtime(tmp_path: Path) -> None:
    strict = Cron("0 6 * * *", overlap=False, params={"threshold": 0.7})
    assert json.loads(_job_body(strict)) == {"params": {"threshold": 0.7}, "overlap": False}
    assert _job_body(Cron("0 6 * * *")) == b""
    built = deployer.build(
        score,
        name="scores",
        output="az://predictions/runs",
        inputs="az://predictions/features.parquet",
        triggers=[strict],
    )
    source = function_app_source(built.bundle)
    assert "overlap=False" in source and "params={'threshold': 0.7}" in source


def sleepy(frame: pd.DataFrame) -> pd.DataFrame:
    import time

    time.sleep(4)
    return frame


@pytest.mark.slow
def test_a_local_schedule_that_fires_during_its_previous_run_is_skipped(
    deployer_home: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "features.parquet"
    pd.DataFrame({"x": [1.0]}).to_parquet(inputs)
    deployer.deploy(
        sleepy,
        name="slow",
        inputs=str(inputs),
        triggers=[Every(minutes=1, overlap=False)],
        quiet=True,
    )
    scheduler = LocalServer(port=0, log=lambda line: None)
    start = datetime(2026, 11, 30, 6, 0, 30, tzinfo=timezone.utc)
    assert scheduler.tick(start) == []
    first = scheduler.tick(start + timedelta(seconds=30))
    time.sleep(1.5)  # the first run is under way in the warm worker
    second = scheduler.tick(start + timedelta(seconds=90))
    for thread in [*first, *second]:
        thread.join(timeout=120)
    scheduler.stop()
    runs = deployer.read_runs("slow").sort_values("run_id")
    assert runs.status.tolist() == ["succeeded", "skipped"]
    skipped = deployer.read_run("slow", runs.run_id.iloc[1])
    assert skipped["skipped"]["running"] == runs.run_id.iloc[0]
