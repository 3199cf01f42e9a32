"""Reading runs back: only committed runs, from the local store and from S3 (moto)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from deployer import StoreError, api, read_outputs, read_runs
from deployer.runtimes import core


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
    assert keys == {f"{prefix}/output.parquet", f"{prefix}/metrics.json", f"{prefix}/run.json"}
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
