"""The runtime as it runs inside every deployed function: load, run, write."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deployer import api, read_outputs, read_runs
from deployer.runtimes import core


def load(tmp_path: Path, function: Any, **options: Any) -> core.Loaded:
    options.setdefault("output", str(tmp_path / "store"))
    built = api.build(function, name="scores", **options)
    directory = built.bundle.extract(tmp_path / "bundle")
    return core.load(str(directory))


def run_files(tmp_path: Path, run_id: str) -> dict[str, Path]:
    directory = tmp_path / "store" / "scores" / "runs" / run_id
    return {path.name: path for path in directory.iterdir()}


def double(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def test_run_writes_output_metrics_and_run_record(tmp_path: Path) -> None:
    loaded = load(tmp_path, double, metrics={"mean_score": lambda out: out.score.mean()})
    result = core.run(loaded, trigger="manual", payload=pd.DataFrame({"x": [1.0, 2.0, None]}))
    assert result.status == "succeeded"
    files = run_files(tmp_path, result.run_id)
    assert set(files) == {
        "started.json",
        "output.parquet",
        "metrics.json",
        "profile.json",
        "run.json",
    }
    written = pq.read_table(files["output.parquet"]).to_pandas()
    assert written.score.tolist()[:2] == [2.0, 4.0]
    metrics = json.loads(files["metrics.json"].read_text())
    assert metrics["rows_in"] == 3 and metrics["rows_out"] == 3
    assert metrics["columns"]["score"]["null_fraction"] == pytest.approx(1 / 3)
    assert metrics["columns"]["score"]["min"] == 2.0
    assert metrics["columns"]["score"]["max"] == 4.0
    assert metrics["columns"]["score"]["mean"] == 3.0
    assert metrics["schema"] == {"x": "double", "score": "double"}
    assert metrics["user"] == {"mean_score": 3.0}
    record = json.loads(files["run.json"].read_text())
    assert record["status"] == "succeeded" and record["trigger"] == "manual"
    assert record["rows_in"] == 3 and record["rows_out"] == 3
    assert record["code_hash"] == loaded.manifest.code_hash
    assert record["duration_ms"] >= 0


def test_tampered_pickle_is_refused_before_loading(tmp_path: Path) -> None:
    built = api.build(double, name="scores", output=str(tmp_path / "store"))
    directory = built.bundle.extract(tmp_path / "bundle")
    (directory / "function.pkl").write_bytes(b"not the deployed pickle")
    with pytest.raises(core.BundleIntegrityError, match="sha256"):
        core.load(str(directory))


@pytest.mark.parametrize(
    "returned",
    [
        pa.table({"score": [1, 2]}),
        [{"score": 1}, {"score": 2}],
        {"score": [1, 2]},
    ],
    ids=["arrow-table", "records", "columns"],
)
def test_accepted_return_types_become_parquet(tmp_path: Path, returned: Any) -> None:
    loaded = load(tmp_path, lambda: returned)
    result = core.run(loaded, trigger="manual")
    assert result.status == "succeeded"
    written = pq.read_table(run_files(tmp_path, result.run_id)["output.parquet"])
    assert written.column("score").to_pylist() == [1, 2]


def test_returning_none_writes_no_output_but_commits_the_run(tmp_path: Path) -> None:
    loaded = load(tmp_path, lambda: None)
    result = core.run(loaded, trigger="manual")
    assert result.status == "succeeded"
    assert set(run_files(tmp_path, result.run_id)) == {"started.json", "metrics.json", "run.json"}


def test_unsupported_return_type_fails_the_run_listing_accepted_types(tmp_path: Path) -> None:
    loaded = load(tmp_path, lambda: "a string")
    result = core.run(loaded, trigger="manual")
    assert result.status == "failed"
    assert "builtins.str" in result.record["error"]["message"]
    assert "pyarrow Table" in result.record["error"]["message"]


def test_function_that_raises_gives_failed_record_with_traceback(tmp_path: Path) -> None:
    def broken(frame: pd.DataFrame) -> pd.DataFrame:
        raise ValueError("model file is corrupt")

    loaded = load(tmp_path, broken)
    result = core.run(loaded, trigger="manual", payload=[{"x": 1}])
    assert result.status == "failed"
    error = result.record["error"]
    assert error["type"] == "ValueError" and error["message"] == "model file is corrupt"
    assert "in broken" in error["traceback"]
    assert "output.parquet" not in run_files(tmp_path, result.run_id)
    status, body = core.response_body(result)
    assert status == 500
    assert body["error"] == {"type": "ValueError", "message": "model file is corrupt"}
    assert "traceback" not in json.dumps(body).lower()


def test_failed_check_marks_run_and_keeps_output(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        double,
        checks={
            "positive": lambda out: (out.score > 0).all(),
            "raises": lambda out: out.missing_column.all(),
        },
    )
    result = core.run(loaded, trigger="manual", payload=[{"x": -1}, {"x": 2}])
    assert result.status == "check_failed"
    assert result.record["checks"]["positive"] == {"passed": False, "severity": "error"}
    assert result.record["checks"]["raises"]["passed"] is False
    assert "missing_column" in result.record["checks"]["raises"]["error"]
    assert "output.parquet" in run_files(tmp_path, result.run_id)


def test_passing_checks_succeed(tmp_path: Path) -> None:
    loaded = load(tmp_path, double, checks={"positive": lambda out: (out.score > 0).all()})
    result = core.run(loaded, trigger="manual", payload=[{"x": 1}])
    assert result.status == "succeeded"
    assert result.record["checks"] == {"positive": {"passed": True, "severity": "error"}}


def test_inputs_data_set_is_read_when_there_is_no_body(tmp_path: Path) -> None:
    inputs = tmp_path / "features.parquet"
    pd.DataFrame({"x": [1.0, 5.0]}).to_parquet(inputs)
    loaded = load(tmp_path, double, inputs=str(inputs))
    result = core.run(loaded, trigger="schedule")
    assert result.status == "succeeded"
    assert result.output.score.tolist() == [2.0, 10.0]


def test_csv_inputs_are_read(tmp_path: Path) -> None:
    inputs = tmp_path / "features.csv"
    inputs.write_text("x\n3\n4\n")
    loaded = load(tmp_path, double, inputs=str(inputs))
    assert core.run(loaded, trigger="schedule").output.score.tolist() == [6, 8]


def test_missing_inputs_fail_the_run_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "features.parquet"
    loaded = load(tmp_path, double, inputs=str(missing))
    result = core.run(loaded, trigger="schedule")
    assert result.status == "failed"
    assert str(missing) in result.record["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [[{"x": 1}, {"x": 2}], {"x": [1, 2]}],
    ids=["records", "columns"],
)
def test_json_bodies_become_dataframes(tmp_path: Path, body: Any) -> None:
    loaded = load(tmp_path, double)
    assert core.run(loaded, trigger="http", payload=body).output.score.tolist() == [2, 4]


def test_single_record_body_is_one_row(tmp_path: Path) -> None:
    loaded = load(tmp_path, double)
    assert core.run(loaded, trigger="http", payload={"x": 4}).output.score.tolist() == [8]


@pytest.mark.parametrize("body", ["text", [1, 2], {"x": [1, 2], "y": [1]}])
def test_body_that_is_no_table_is_a_payload_error(tmp_path: Path, body: Any) -> None:
    loaded = load(tmp_path, double)
    with pytest.raises(core.PayloadError):
        core.run(loaded, trigger="http", payload=body)
    assert not (tmp_path / "store" / "scores").exists()


def test_json_function_gets_the_raw_body(tmp_path: Path) -> None:
    def echo(body: dict) -> list[dict]:
        return [{"keys": ",".join(sorted(body))}]

    loaded = load(tmp_path, echo)
    assert core.run(loaded, trigger="http", payload={"b": 1, "a": 2}).output["keys"][0] == "a,b"


def test_function_needing_input_fails_clearly_without_one(tmp_path: Path) -> None:
    loaded = load(tmp_path, double)
    result = core.run(loaded, trigger="manual")
    assert result.status == "failed"
    assert "needs an input" in result.record["error"]["message"]


def test_retry_of_the_same_scheduled_event_overwrites_one_run(tmp_path: Path) -> None:
    loaded = load(tmp_path, lambda: [{"n": 1}])
    fire_time = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
    first = core.run(loaded, trigger="schedule", fire_time=fire_time, event_id="event-1")
    second = core.run(loaded, trigger="schedule", fire_time=fire_time, event_id="event-1")
    other = core.run(loaded, trigger="schedule", fire_time=fire_time, event_id="event-2")
    assert first.run_id == second.run_id != other.run_id
    assert first.run_id.startswith("20261127T060000Z-")
    runs = read_runs("scores", output=str(tmp_path / "store"))
    assert len(runs) == 2
    assert len(read_outputs("scores", output=str(tmp_path / "store"))) == 2


def test_runs_within_one_second_sort_in_the_order_they_started() -> None:
    from datetime import timedelta

    from deployer.runtimes.storage import new_run_id

    start = datetime(2026, 11, 27, 6, 0, 0, 1000, tzinfo=timezone.utc)
    ids = [new_run_id(start + timedelta(milliseconds=step * 7)) for step in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100


# -- the store refuses a write ------------------------------------------------

RUN_ID = "20261127T060000Z-0000abcd"
# What the owner searches the platform's log for (CloudWatch, Cloud Logging).
NOT_COMMITTED_EVENT = "deployer.run_not_committed"


def logged_uncommitted_runs(stderr: str) -> list[dict[str, Any]]:
    """The tagged JSON lines a run wrote to its log for records the store refused."""
    found = []
    for line in stderr.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("event") == NOT_COMMITTED_EVENT:
            found.append(value)
    return found


def test_store_refusing_the_commit_marker_fails_the_run_leaving_no_partial_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = load(tmp_path, double)
    directory = tmp_path / "store" / "scores" / "runs" / RUN_ID
    (directory / "run.json").mkdir(parents=True)  # run.json cannot be written there
    result = core.run(loaded, trigger="http", payload=[{"x": 1}], run_id=RUN_ID)
    assert result.status == "failed" and not result.committed
    error = result.record["error"]
    assert error["type"] == "StoreWriteError"
    assert "run.json" in error["message"] and str(directory) in error["message"]
    # No temporary file and no output of a run that never committed.
    assert sorted(path.name for path in directory.iterdir()) == ["run.json", "started.json"]
    status, body = core.response_body(result)
    assert status == 500
    assert body["run_id"] == RUN_ID and body["error"]["type"] == "StoreWriteError"
    # The whole record is in the log, as one tagged JSON line.
    [logged] = logged_uncommitted_runs(capsys.readouterr().err)
    assert logged["record"]["run_id"] == RUN_ID
    assert logged["record"]["status"] == "failed"
    assert logged["record"]["rows_out"] == 1
    assert logged["record"]["error"]["type"] == "StoreWriteError"


def test_store_refusing_the_metrics_commits_the_run_as_failed_without_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = load(tmp_path, double)
    directory = tmp_path / "store" / "scores" / "runs" / RUN_ID
    (directory / "metrics.json").mkdir(parents=True)  # written after output.parquet
    result = core.run(loaded, trigger="http", payload=[{"x": 1}], run_id=RUN_ID)
    assert result.status == "failed" and result.committed
    record = json.loads((directory / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"]["type"] == "StoreWriteError"
    assert "metrics.json" in record["error"]["message"]
    assert sorted(path.name for path in directory.iterdir()) == [
        "metrics.json",
        "run.json",
        "started.json",
    ]
    assert logged_uncommitted_runs(capsys.readouterr().err) == []


def test_commit_is_retried_after_a_transient_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.runtimes import storage

    loaded = load(tmp_path, double)
    refused: list[str] = []
    write_bytes = storage.write_bytes

    def refuse_once(filesystem: Any, path: str, data: bytes) -> None:
        if path.endswith("/run.json") and not refused:
            refused.append(path)
            raise OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your rate")
        write_bytes(filesystem, path, data)

    monkeypatch.setattr(storage, "write_bytes", refuse_once)
    result = core.run(loaded, trigger="manual", payload=[{"x": 1}])
    assert refused
    assert result.status == "succeeded" and result.committed
    assert json.loads(run_files(tmp_path, result.run_id)["run.json"].read_text())["status"] == (
        "succeeded"
    )


def test_bucket_that_vanishes_mid_run_is_a_500_with_the_run_id_and_the_record_in_the_log(
    tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3_bucket

    def drop_bucket_and_score(frame: pd.DataFrame) -> pd.DataFrame:
        import boto3

        s3 = boto3.client("s3")
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)
        return frame.assign(score=frame.x * 2)

    output = f"s3://{bucket}/predictions"
    loaded = load(tmp_path, drop_bucket_and_score, output=output)
    result = core.run(loaded, trigger="http", payload=[{"x": 1}], run_id=RUN_ID)
    assert result.status == "failed" and not result.committed
    status, body = core.response_body(result)
    assert status == 500
    assert body["run_id"] == RUN_ID and body["error"]["type"] == "StoreWriteError"
    [logged] = logged_uncommitted_runs(capsys.readouterr().err)
    record = logged["record"]
    assert record["run_id"] == RUN_ID and record["name"] == "scores"
    assert f"{output}/scores/runs/{RUN_ID}" in record["error"]["message"]
    assert "NO_SUCH_BUCKET" in record["error"]["message"]


# -- deadlines and the started marker -------------------------------------------


def test_every_run_writes_a_started_marker_before_calling_the_function(tmp_path: Path) -> None:
    marker = tmp_path / "store" / "scores" / "runs" / RUN_ID / "started.json"

    def peek() -> list[dict[str, str]]:
        return [{"marker": marker.read_text()}]

    loaded = load(tmp_path, peek, timeout=42)
    result = core.run(loaded, trigger="manual", run_id=RUN_ID)
    assert result.status == "succeeded", result.record
    assert json.loads(result.output.marker[0]) == {
        "run_id": RUN_ID,
        "name": "scores",
        "trigger": "manual",
        "started": result.record["started"],
        "timeout_seconds": 42,
        "code_hash": loaded.manifest.code_hash,
    }


def test_run_near_its_deadline_is_recorded_as_a_timeout_and_overwritten_if_it_finishes(
    tmp_path: Path,
) -> None:
    import time

    run_record = tmp_path / "store" / "scores" / "runs" / RUN_ID / "run.json"

    def outlive_the_deadline() -> list[dict[str, Any]]:
        import time

        # Still running when the timer armed from the deadline fires: look at
        # what a reader would see if the platform stopped the run right then.
        for _ in range(200):
            if run_record.exists():
                break
            time.sleep(0.05)
        seen = json.loads(run_record.read_text()) if run_record.exists() else {}
        error = seen.get("error") or {}
        return [
            {"seen_at": time.monotonic(), "status": seen.get("status"), **error},
        ]

    loaded = load(tmp_path, outlive_the_deadline, timeout=7)
    started = time.monotonic()
    result = core.run(loaded, trigger="manual", run_id=RUN_ID, deadline=started + 2.0)
    seen = result.output.iloc[0]
    assert seen.status == "failed" and seen.type == "Timeout"
    assert "7 s timeout" in seen.message and "longer timeout" in seen.message
    # Written with a margin before the deadline, so that the write lands in time.
    assert seen.seen_at < started + 1.5
    # The run finished after all: its own record replaced the timeout.
    assert result.status == "succeeded"
    assert json.loads(run_record.read_text())["status"] == "succeeded"
