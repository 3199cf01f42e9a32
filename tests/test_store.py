"""Reading runs back: only committed runs, from the local store and from S3 (moto)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from pyarrow import fs as pafs

from deployer import StoreError, api, read_outputs, read_runs, store
from deployer.runtimes import core, storage
from deployer.runtimes.storage import new_run_id


def scores(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x / 10)


def loaded_bundle(tmp_path: Path, output: str) -> core.Loaded:
    built = api.build(
        scores, name="scores", output=output, metrics={"mean_score": lambda out: out.score.mean()}
    )
    return core.load(str(built.bundle.extract(tmp_path / "bundle")))


def test_run_without_run_record_is_invisible(tmp_path: Path) -> None:
    output = str(tmp_path / "store")
    loaded = loaded_bundle(tmp_path, output)
    committed = core.run(loaded, trigger="manual", payload=[{"x": 1}])
    # A run that died after writing its output but before its commit marker.
    half_written = tmp_path / "store" / "scores" / "runs" / "20991231T000000Z-deadbeef"
    half_written.mkdir(parents=True)
    pd.DataFrame({"x": [9], "score": [0.9]}).to_parquet(half_written / "output.parquet")
    (half_written / "metrics.json").write_text("{}")
    runs = read_runs("scores", output=output)
    assert runs.run_id.tolist() == [committed.run_id]
    assert read_outputs("scores", output=output).score.tolist() == [0.1]


def test_outputs_are_concatenated_with_run_id_and_filtered_by_last(tmp_path: Path) -> None:
    output = str(tmp_path / "store")
    loaded = loaded_bundle(tmp_path, output)
    run_ids = []
    for value in (1, 2, 3):
        fire_time = datetime(2026, 11, value, 6, tzinfo=timezone.utc)
        result = core.run(
            loaded,
            trigger="schedule",
            payload=[{"x": value}, {"x": value}],
            fire_time=fire_time,
            event_id="e",
        )
        run_ids.append(result.run_id)
    outputs = read_outputs("scores", output=output)
    assert outputs.run_id.tolist() == [run_ids[0]] * 2 + [run_ids[1]] * 2 + [run_ids[2]] * 2
    assert read_outputs("scores", output=output, last=1).run_id.unique().tolist() == [run_ids[2]]
    since = read_outputs("scores", output=output, since="2026-11-02T00:00:00+00:00")
    assert since.run_id.unique().tolist() == run_ids[1:]


def test_runs_have_status_trigger_timing_and_metrics(tmp_path: Path) -> None:
    output = str(tmp_path / "store")
    loaded = loaded_bundle(tmp_path, output)
    core.run(loaded, trigger="http", payload=[{"x": 4}, {"x": 6}])
    core.run(loaded, trigger="manual")  # fails: needs an input
    runs = read_runs("scores", output=output)
    assert sorted(runs.status) == ["failed", "succeeded"]
    succeeded = runs[runs.status == "succeeded"].iloc[0]
    assert succeeded.trigger == "http"
    assert succeeded["metric.mean_score"] == pytest.approx(0.5)
    assert succeeded.rows_in == 2 and succeeded.rows_out == 2
    assert isinstance(succeeded.started, pd.Timestamp)
    failed = runs[runs.status == "failed"].iloc[0]
    assert failed.error_type == "TypeError"


def test_no_runs_gives_empty_frames(tmp_path: Path) -> None:
    output = str(tmp_path / "empty")
    assert read_runs("scores", output=output).empty
    assert list(read_outputs("scores", output=output).columns) == ["run_id"]


def test_unsupported_scheme_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="ftp"):
        read_runs("scores", output="ftp://host/path")


def test_runs_written_to_s3_are_read_back(tmp_path: Path, s3_bucket: str) -> None:
    output = f"s3://{s3_bucket}/predictions"
    loaded = loaded_bundle(tmp_path, output)
    result = core.run(loaded, trigger="manual", payload=[{"x": 5}])
    assert result.status == "succeeded"
    import boto3

    keys = {
        item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    }
    prefix = f"predictions/scores/runs/{result.run_id}"
    assert keys == {
        f"{prefix}/started.json",
        f"{prefix}/output.parquet",
        f"{prefix}/metrics.json",
        f"{prefix}/profile.json",
        f"{prefix}/run.json",
        # Beside the runs: the first good run is the reference; the last run's columns.
        "predictions/scores/reference.json",
        "predictions/scores/schema.json",
    }
    outputs = read_outputs("scores", output=output)
    assert outputs.score.tolist() == [0.5]
    assert outputs.run_id.tolist() == [result.run_id]
    runs = read_runs("scores", output=output)
    assert runs.status.tolist() == ["succeeded"]
    assert (
        json.loads(
            boto3.client("s3").get_object(Bucket=s3_bucket, Key=f"{prefix}/run.json")["Body"].read()
        )["status"]
        == "succeeded"
    )


def write_started_marker(
    store_dir: Path, run_id: str, *, started: datetime, timeout_seconds: int
) -> None:
    """What a run writes first; alone, it is a run the platform stopped or that still runs."""
    directory = store_dir / "scores" / "runs" / run_id
    directory.mkdir(parents=True)
    marker = {
        "run_id": run_id,
        "name": "scores",
        "trigger": "schedule",
        "started": started.isoformat(),
        "timeout_seconds": timeout_seconds,
        "code_hash": "c0de",
    }
    (directory / "started.json").write_text(json.dumps(marker))


def test_started_run_without_record_is_running_within_its_timeout_then_lost(
    tmp_path: Path,
) -> None:
    output = str(tmp_path / "store")
    loaded = loaded_bundle(tmp_path, output)
    committed = core.run(loaded, trigger="manual", payload=[{"x": 1}])
    # The marker of a committed run is never read: a broken one changes nothing.
    (tmp_path / "store" / "scores" / "runs" / committed.run_id / "started.json").write_text("{")
    now = datetime.now(timezone.utc)
    killed = now - timedelta(hours=2)
    lost_id = new_run_id(killed)
    write_started_marker(tmp_path / "store", lost_id, started=killed, timeout_seconds=900)
    # Past its timeout by less than the grace a commit and clock skew get.
    late = now - timedelta(seconds=910)
    late_id = new_run_id(late)
    write_started_marker(tmp_path / "store", late_id, started=late, timeout_seconds=900)
    running_id = new_run_id(now + timedelta(seconds=1))
    write_started_marker(tmp_path / "store", running_id, started=now, timeout_seconds=900)

    runs = read_runs("scores", output=output)
    assert runs.run_id.tolist() == [lost_id, late_id, committed.run_id, running_id]
    assert runs.status.tolist() == ["lost", "running", "succeeded", "running"]
    lost = runs.iloc[0]
    assert lost.trigger == "schedule" and lost.code_hash == "c0de"
    assert lost.started == pd.Timestamp(killed)
    assert pd.isna(lost.ended)
    assert lost.error_type == "Lost"
    assert "900 s timeout" in lost.error_message
    assert "timeout or out of memory" in lost.error_message
    assert "logs" in lost.error_message
    assert runs.error_type.iloc[1:].isna().all()
    assert read_runs("scores", output=output, last=1).run_id.tolist() == [running_id]
    # Predictions are only ever read from committed runs.
    assert read_outputs("scores", output=output).run_id.unique().tolist() == [committed.run_id]
    assert read_outputs("scores", output=output, last=1).run_id.tolist() == [committed.run_id]


def test_spooled_run_shows_as_failed_for_the_store_it_was_meant_for(
    tmp_path: Path, deployer_home: Path
) -> None:
    output = str(tmp_path / "store")
    run_id = new_run_id(datetime.now(timezone.utc))
    record = core.failure_record(
        name="scores",
        run_id=run_id,
        trigger="http",
        started=datetime.now(timezone.utc),
        code_hash="c0de",
        error_type="StoreWriteError",
        message=f"the store refused to write run.json to {output}/scores/runs/{run_id}",
    )
    spooled = store.spool_run(record, output=output)
    assert spooled == deployer_home / "local" / "spool" / "scores" / f"{run_id}.json"
    # A started marker of the same run does not make it a second, lost, run.
    write_started_marker(
        tmp_path / "store",
        run_id,
        started=datetime(2020, 1, 1, tzinfo=timezone.utc),
        timeout_seconds=1,
    )
    runs = read_runs("scores", output=output)
    assert runs.run_id.tolist() == [run_id]
    assert runs.status.tolist() == ["failed"]
    assert runs.error_type.tolist() == ["StoreWriteError"]
    assert f"{output}/scores/runs/{run_id}" in runs.error_message[0]
    # Another store's history does not show it.
    assert read_runs("scores", output=str(tmp_path / "other")).empty


class _FolderRemovedAfterCreating(pafs.LocalFileSystem):
    """A local disk where, the first ``times`` times a folder is created, something
    else removes it again before the file is opened: what a concurrent plan does
    with the folders its write test created (preflight._removing_created_folders)."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    def create_dir(self, path: str, *, recursive: bool = True) -> None:
        super().create_dir(path, recursive=recursive)
        if self.times > 0:
            self.times -= 1
            os.rmdir(path)


def test_a_local_write_whose_folder_is_removed_meanwhile_creates_it_again(tmp_path: Path) -> None:
    filesystem = _FolderRemovedAfterCreating(times=2)
    target = tmp_path / "store" / "scores" / "probe"
    storage.write_bytes(filesystem, str(target), b"written")
    assert target.read_bytes() == b"written"
    assert [path.name for path in target.parent.iterdir()] == ["probe"]  # no temporary left
    always = _FolderRemovedAfterCreating(times=storage.LOCAL_OPEN_ATTEMPTS)
    with pytest.raises(FileNotFoundError):
        storage.write_bytes(always, str(tmp_path / "other" / "probe"), b"x")
