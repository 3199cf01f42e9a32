"""Map runs on the local provider: shards planned from footers, run on warm
workers, retried, merged and committed as one run (runtimes/fanout.py)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import deployer
from deployer import Check, ConfigError, Metric, RunError
from deployer.cli import main
from deployer.runtimes import fanout, profile

pytestmark = pytest.mark.slow


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 0.5 + frame.k, label=np.where(frame.x > 0, "up", "down"))


def poisoned(frame: pd.DataFrame) -> pd.DataFrame:
    if (frame.x == -999.0).any():
        raise ValueError("row with x=-999 has no score")
    return frame.assign(score=frame.x * 0.5)


def dies_once(frame: pd.DataFrame) -> pd.DataFrame:
    import signal

    marker = frame.marker.iloc[0]
    if (frame.x == -999.0).any() and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # the platform killing an invocation
    return frame.assign(score=frame.x * 0.5)


def features(rows: int, seed: int = 0) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": generator.normal(size=rows),
            "k": generator.integers(0, 100, rows),
            "region": generator.choice(["north", "south", "east", "west"], rows),
        }
    )


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def run_folder(home: Path, name: str, run_id: str) -> Path:
    return home / "store" / name / "runs" / run_id


# --- planning --------------------------------------------------------------------


def test_plan_packs_row_groups_from_footers_without_reading_the_data(tmp_path: Path) -> None:
    frame = features(10_000)
    path = write_parquet(frame, tmp_path / "data" / "a.parquet", row_group_size=1_000)
    write_parquet(frame.head(2_500), tmp_path / "data" / "sub" / "b.parquet", 1_000)
    (tmp_path / "data" / "_SUCCESS").write_text("")  # a marker file, not data
    metadata = pq.ParquetFile(path).metadata
    # Wreck every data page, keep the footer: a plan that read data would fail.
    first_page = metadata.row_group(0).column(0).data_page_offset
    footer_start = path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[-8:-4], "little")
    raw = bytearray(path.read_bytes())
    raw[first_page:footer_start] = b"\0" * (footer_start - first_page)
    path.write_bytes(bytes(raw))

    plan = fanout.plan_shards(str(tmp_path / "data"), rows_per_shard=3_000)

    assert plan.rows == 12_500 and plan.files == 2
    assert [shard.rows for shard in plan.shards] == [3_000, 3_000, 3_000, 3_000, 500]
    assert plan.shards[0].pieces == (fanout.Piece(str(path), (0, 1, 2)),)
    # A shard may span files, in order: the last row group of a, the first two of b.
    other = str(tmp_path / "data" / "sub" / "b.parquet")
    assert plan.shards[3].pieces == (fanout.Piece(str(path), (9,)), fanout.Piece(other, (0, 1)))
    assert all(len(json.dumps(shard.to_json())) < 500 for shard in plan.shards)
    with pytest.raises(Exception):  # noqa: B017 - the data really is unreadable
        pq.read_table(path)


def test_a_row_group_larger_than_a_shard_is_one_shard_and_the_plan_says_so(
    tmp_path: Path,
) -> None:
    path = write_parquet(features(5_000), tmp_path / "one.parquet", row_group_size=5_000)
    plan = fanout.plan_shards(str(path), rows_per_shard=1_000)
    assert [shard.rows for shard in plan.shards] == [5_000]
    assert "row group 0 holds 5,000 rows" in plan.notes[0] and len(plan.notes) == 1
    assert "row_group_size" in plan.notes[0]


def test_csv_is_split_by_files(tmp_path: Path) -> None:
    for index in range(3):
        features(100, seed=index).to_csv(tmp_path / f"day{index}.csv", index=False)
    plan = fanout.plan_shards(str(tmp_path), rows_per_shard=10)
    assert [shard.pieces[0].format for shard in plan.shards] == ["csv"] * 3
    assert plan.rows is None and not plan.notes
    # A CSV file larger than a shard stays one (a row may span any byte range): said.
    plan = fanout.plan_shards(str(tmp_path), bytes_per_shard=1_000)
    assert len(plan.shards) == 3 and "is one shard: CSV is split by files only" in plan.notes[0]
    assert "(and 2 more)" in plan.notes[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: (d / "x").mkdir() or (d / "x" / "notes.txt").write_text("hi"), "no .parquet"),
        (
            lambda d: (
                write_parquet(features(10), d / "x" / "a.parquet", 10),
                features(10).to_csv(d / "x" / "b.csv", index=False),
            ),
            "mixes Parquet and CSV",
        ),
        (
            lambda d: (
                write_parquet(features(10), d / "x" / "a.parquet", 10),
                write_parquet(features(10).assign(k=1.5), d / "x" / "b.parquet", 10),
            ),
            "k: int64 vs double",
        ),
    ],
)
def test_data_that_cannot_be_mapped_is_refused_before_anything_runs(
    tmp_path: Path, make: object, message: str
) -> None:
    make(tmp_path)  # type: ignore[operator]
    with pytest.raises(fanout.MapError, match=message):
        fanout.plan_shards(str(tmp_path / "x"), rows_per_shard=5)


# --- running -----------------------------------------------------------------------


def test_two_million_rows_over_two_workers_equal_one_process_row_for_row(
    deployer_home: Path, tmp_path: Path
) -> None:
    frame = features(2_000_000)
    write_parquet(frame, tmp_path / "big" / "features.parquet", row_group_size=100_000)
    deployment = deployer.deploy(
        score,
        name="scores",
        metrics={
            "mean_score": Metric(lambda out: out.score.mean(), merge="mean"),
            "rows": Metric(lambda out: len(out), merge="sum"),
            "per_shard_max": Metric(lambda out: out.score.max()),
        },
        checks={"finite": Check(lambda out: np.isfinite(out.score).all())},
        quiet=True,
    )

    run = deployment.map(
        str(tmp_path / "big"), concurrency=2, rows_per_shard=100_000, progress=False
    )

    assert (run.status, run.shards, run.rows_in, run.rows_out) == (
        "succeeded",
        20,
        2_000_000,
        2_000_000,
    )
    got = deployer.read_outputs("scores", run_id=run.run_id).drop(columns="run_id")
    pd.testing.assert_frame_equal(got, score(frame), check_dtype=True)
    # One run, committed once, listing its 20 parts, and no other file left behind.
    runs = deployer.read_runs("scores")
    assert runs.run_id.tolist() == [run.run_id] and runs.trigger.tolist() == ["map"]
    folder = run_folder(deployer_home, "scores", run.run_id)
    parts = sorted(path.name for path in folder.glob("part-*.parquet"))
    assert parts == [f"part-{index:05d}.parquet" for index in range(20)]
    assert [entry["file"] for entry in run.record["parts"]] == parts
    assert not (folder / fanout.MAP_REFERENCE_FILE).exists()
    # Merged metrics are exact where the metric says how; the rest are per shard.
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["user"]["mean_score"] == pytest.approx(score(frame).score.mean(), rel=1e-12)
    assert metrics["user"]["rows"] == 2_000_000
    assert "per_shard_max" not in metrics["user"]
    assert len(metrics["user_by_part"]["per_shard_max"]) == 20
    assert run.record["checks"]["finite"]["passed"] is True
    # Histograms add: the merged profile counts every row once, on the first shard's bins.
    document = json.loads((folder / "profile.json").read_text())
    merged_x = document["input"]["profile"]["columns"]["x"]
    assert merged_x["rows"] == 2_000_000 and sum(merged_x["histogram"]["counts"]) == 2_000_000
    whole = profile.profile_frame(frame, reference=document["input"]["profile"])
    assert whole["columns"]["x"]["histogram"]["counts"] == merged_x["histogram"]["counts"]
    assert merged_x["mean"] == pytest.approx(frame.x.mean(), rel=1e-9)
    assert merged_x["std"] == pytest.approx(frame.x.std(ddof=0), rel=1e-9)
    # The first committed run is the function's reference, as for any run.
    reference = json.loads((deployer_home / "store" / "scores" / "reference.json").read_text())
    assert reference["run_id"] == run.run_id and reference["input"]["rows"] == 2_000_000


def test_a_shard_killed_mid_run_is_retried_and_the_run_commits_once(
    deployer_home: Path, tmp_path: Path
) -> None:
    frame = features(4_000).assign(marker=str(tmp_path / "killed-once"))
    frame.loc[2_500, "x"] = -999.0  # in the third shard
    write_parquet(frame, tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployment = deployer.deploy(dies_once, name="fragile", quiet=True)

    run = deployment.map(str(tmp_path / "data"), concurrency=2, progress=False)

    assert run.status == "succeeded" and run.rows_out == 4_000
    assert (tmp_path / "killed-once").exists()
    attempts = {entry["part"]: entry["attempts"] for entry in run.record["parts"]}
    assert attempts == {0: 1, 1: 1, 2: 2, 3: 1}
    assert run.record["map"]["retried"] == 1
    got = deployer.read_outputs("fragile", run_id=run.run_id).drop(columns="run_id")
    pd.testing.assert_frame_equal(got, frame.assign(score=frame.x * 0.5))
    assert deployer.read_runs("fragile").run_id.tolist() == [run.run_id]


def test_a_shard_that_always_fails_fails_the_run_and_leaves_nothing_to_read(
    deployer_home: Path, tmp_path: Path
) -> None:
    frame = features(4_000)
    frame.loc[3_500, "x"] = -999.0  # the last shard
    write_parquet(frame, tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployment = deployer.deploy(poisoned, name="poisoned", quiet=True)

    with pytest.raises(RunError, match="1 of 4 shards failed.*ValueError: row with x=-999"):
        deployment.map(str(tmp_path / "data"), concurrency=2, retries=1, progress=False)

    runs = deployer.read_runs("poisoned")
    assert runs.status.tolist() == ["failed"] and runs.error_type.tolist() == ["MapFailed"]
    run_id = runs.run_id.iloc[0]
    record = deployer.read_run("poisoned", run_id)
    assert [shard["part"] for shard in record["failed_shards"]] == [3]
    assert record["failed_shards"][0]["attempts"] == 2
    assert record["failed_shards"][0]["pieces"][0]["row_groups"] == [3]
    assert "raise ValueError" in record["failed_shards"][0]["error"]["traceback"]
    folder = run_folder(deployer_home, "poisoned", run_id)
    assert sorted(path.name for path in folder.iterdir()) == ["run.json"]
    shown = CliRunner().invoke(main, ["runs", "poisoned", run_id])
    assert "4 shards of" in shown.output and "0 committed" in shown.output
    assert "shard 3 failed after 2 attempts: ValueError: row with x=-999" in shown.output
    assert "row groups [3]" in shown.output
    assert deployer.read_outputs("poisoned").empty


def test_the_failure_budget_lets_a_run_commit_without_the_failed_shard(
    deployer_home: Path, tmp_path: Path
) -> None:
    frame = features(4_000)
    frame.loc[1_200, "x"] = -999.0  # the second shard
    write_parquet(frame, tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployment = deployer.deploy(poisoned, name="budget", quiet=True)

    with pytest.warns(deployer.QualityWarning, match="1 of 4 shards failed"):
        run = deployment.map(
            str(tmp_path / "data"), concurrency=2, retries=0, failure_budget=1, progress=False
        )

    assert run.status == "warned" and run.rows_in == 3_000
    assert [shard["part"] for shard in run.failed_shards] == [1]
    got = deployer.read_outputs("budget", run_id=run.run_id)
    assert len(got) == 3_000 and -999.0 not in got.x.tolist()
    folder = run_folder(deployer_home, "budget", run.run_id)
    assert not (folder / "part-00001.parquet").exists()


def test_a_dataframe_is_staged_to_the_store_and_the_staging_removed(
    deployer_home: Path,
) -> None:
    frame = features(10_000)
    deployment = deployer.deploy(score, name="staged", quiet=True)
    run = deployment.map(frame, concurrency=2, progress=False)
    assert run.shards == 2 * 4  # SHARDS_PER_WORKER shards per worker
    got = deployer.read_outputs("staged", run_id=run.run_id).drop(columns="run_id")
    pd.testing.assert_frame_equal(got, score(frame))
    staging = deployer_home / "store" / "staged" / "staging"
    assert not staging.exists() or not any(staging.rglob("*.parquet"))


def test_cancelling_leaves_no_run_and_no_files(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_parquet(features(20_000), tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployer.deploy(score, name="cancelled", quiet=True)
    cancel = threading.Event()
    from deployer import fanout as host

    def cancel_after_the_first_shard(bar: object, seen: fanout.MapProgress) -> None:
        if seen.done >= 1:
            cancel.set()  # what Ctrl-C does

    monkeypatch.setattr(host._ProgressBar, "update", cancel_after_the_first_shard)

    with pytest.raises(RunError, match="cancelled after .* nothing was committed"):
        deployer.map(
            "cancelled",
            str(tmp_path / "data"),
            rows_per_shard=1_000,
            concurrency=1,
            cancel=cancel,
            progress=False,
        )

    assert deployer.read_runs("cancelled").empty
    runs = deployer_home / "store" / "cancelled" / "runs"
    assert not runs.exists() or not any(path.is_file() for path in runs.rglob("*"))


def test_map_from_the_cli_prints_the_run_and_bad_input_gets_a_message(
    deployer_home: Path, tmp_path: Path
) -> None:
    write_parquet(features(3_000), tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployer.deploy(score, name="cli-map", quiet=True)

    def cli(*arguments: str) -> Result:
        return CliRunner().invoke(main, list(arguments))

    done = cli("map", "cli-map", str(tmp_path / "data"), "--rows-per-shard", "1000")
    assert done.exit_code == 0, done.output
    assert "succeeded, 3,000 rows in 3 shards" in done.stdout
    run_id = done.stdout.split()[1].rstrip(":")
    shown = cli("outputs", "cli-map", "--run", run_id, "--json", "--limit", "5000")
    assert len(json.loads(shown.stdout)) == 3_000

    missing = cli("map", "cli-map", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2  # a usage mistake, as for every command
    assert "does not exist" in missing.stderr and "Traceback" not in missing.output
    assert len(deployer.read_runs("cli-map")) == 1


def test_map_options_are_checked_before_anything_runs(deployer_home: Path, tmp_path: Path) -> None:
    write_parquet(features(100), tmp_path / "f.parquet", row_group_size=100)
    deployer.deploy(score, name="checked", quiet=True)
    for options, message in [
        ({"concurrency": 0}, "concurrency=0"),
        ({"rows_per_shard": -1}, "rows_per_shard=-1"),
        ({"failure_budget": -1}, "failure_budget=-1"),
        ({"retries": -1}, "retries=-1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            deployer.map("checked", str(tmp_path / "f.parquet"), progress=False, **options)
    with pytest.raises(ConfigError, match="no function named 'nope'"):
        deployer.map("nope", str(tmp_path / "f.parquet"))
    with pytest.raises(ConfigError, match="merge='median' is not one of"):
        deployer.build(score, name="x", metrics={"m": Metric(len, merge="median")})
    assert deployer.read_runs("checked").empty


def test_shard_requests_are_validated_before_any_path_is_touched() -> None:
    good = {"run_id": "20261129T060000Z-0123abcd", "part": 3, "pieces": [{"path": "/d/f.parquet"}]}
    assert fanout.parse_shard_request(good).part == 3
    for bad, message in [
        ({**good, "run_id": "../../etc"}, "not a deployer run id"),
        ({**good, "part": -1}, "not a part number"),
        ({**good, "part": True}, "not a part number"),
        ({**good, "pieces": []}, "at least one piece"),
        ({**good, "pieces": [{"path": "ftp://x/y"}]}, "unsupported storage scheme"),
        ({**good, "pieces": [{"path": "/f", "format": "xlsx"}]}, "format 'xlsx'"),
        ({**good, "pieces": [{"path": "/f", "row_groups": ["1"]}]}, "row_groups"),
    ]:
        with pytest.raises(fanout.ShardRequestError, match=message):
            fanout.parse_shard_request(bad)


def test_a_map_schedule_fans_its_inputs_out_with_the_firing_s_run_id(
    deployer_home: Path, tmp_path: Path
) -> None:
    from datetime import datetime, timezone

    from deployer import Every
    from deployer.providers.local.server import LocalServer

    frame = features(6_000)
    write_parquet(frame, tmp_path / "in" / "f.parquet", row_group_size=1_000)
    deployer.deploy(
        score,
        name="nightly",
        inputs=str(tmp_path / "in"),
        triggers=[Every(minutes=5, map=True)],
        quiet=True,
    )
    scheduler = LocalServer(port=0, log=lambda line: None)
    scheduler.tick(datetime(2026, 11, 27, 6, 1, tzinfo=timezone.utc))
    [fired] = scheduler.tick(datetime(2026, 11, 27, 6, 5, tzinfo=timezone.utc))
    fired.join(timeout=300)
    scheduler.stop()

    [record] = [
        deployer.read_run("nightly", run_id) for run_id in deployer.read_runs("nightly").run_id
    ]
    assert record["run_id"].startswith("20261127T060500Z-")
    assert (record["trigger"], record["status"], record["rows_out"]) == (
        "schedule",
        "succeeded",
        6_000,
    )
    assert len(record["parts"]) > 1 and record["map"]["source"] == str(tmp_path / "in")
    got = deployer.read_outputs("nightly").drop(columns="run_id")
    pd.testing.assert_frame_equal(got, score(frame))


def test_a_map_schedule_needs_inputs_and_a_provider_that_runs_it() -> None:
    from deployer import Cron

    with pytest.raises(ConfigError, match="map=True fans the inputs data set out"):
        deployer.build(score, name="x", triggers=[Cron("0 6 * * *", map=True)])
    with pytest.raises(ConfigError, match="do not run on gcp yet"):
        deployer.build(
            score,
            name="x",
            provider="gcp",
            output="gs://b/p",
            inputs="gs://b/in/",
            triggers=[Cron("0 6 * * *", map=True)],
        )
    with pytest.raises(deployer.TriggerError, match="map must be True or False"):
        Cron("0 6 * * *", map="yes")  # type: ignore[arg-type]


def test_a_map_run_that_fails_a_check_is_alerted_from_the_function(
    deployer_home: Path, tmp_path: Path
) -> None:
    from test_alerts import Receiver

    receiver = Receiver()
    receiver.thread.start()
    try:
        write_parquet(features(3_000), tmp_path / "data" / "f.parquet", row_group_size=1_000)
        deployment = deployer.deploy(
            score,
            name="alerted",
            checks={"small_scores": Check(lambda out: (out.score < 40).all())},
            alerts=[receiver.url()],
            quiet=True,
        )
        with pytest.raises(deployer.CheckFailed, match="small_scores"):
            deployment.map(str(tmp_path / "data"), rows_per_shard=1_000, progress=False)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    [post] = receiver.received
    assert post.body["deployer"]["reasons"] == ["check_failed"]
    run_id = post.body["deployer"]["run_id"]
    record = deployer.read_run("alerted", run_id)
    assert record["checks"]["small_scores"]["failed_parts"] == [0, 1, 2]
    assert [delivery["status"] for delivery in record["alerts"]] == [200]


def test_metric_bounds_are_judged_on_the_merged_value_or_on_every_shard(
    deployer_home: Path, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": np.arange(3_000, dtype=float), "k": 0, "region": "north"})
    write_parquet(frame, tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployment = deployer.deploy(
        score,
        name="bounded",
        metrics={
            # The mean of all 3,000 scores is 749.75: inside; no shard's is.
            "mean_score": Metric(lambda out: out.score.mean(), lower=700, upper=800, merge="mean"),
            # Without a merge, each shard is judged: the last two are above 500.
            "max_score": Metric(lambda out: out.score.max(), upper=500, severity="warning"),
        },
        quiet=True,
    )
    with pytest.warns(deployer.QualityWarning, match="max_score"):
        run = deployment.map(str(tmp_path / "data"), rows_per_shard=1_000, progress=False)
    assert run.status == "warned"
    bounds = run.record["bounds"]
    assert bounds["mean_score"]["passed"] is True
    assert bounds["mean_score"]["value"] == pytest.approx(749.75)
    assert (bounds["max_score"]["passed"], bounds["max_score"]["failed_parts"]) == (False, [1, 2])


def slow(frame: pd.DataFrame) -> pd.DataFrame:
    import time

    time.sleep(0.5)
    return frame.assign(score=frame.x)


def test_ctrl_c_drops_the_shards_not_started_and_leaves_no_run(
    deployer_home: Path, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    write_parquet(features(40_000), tmp_path / "data" / "f.parquet", row_group_size=1_000)
    deployer.deploy(slow, name="interrupted", quiet=True)
    runs = deployer_home / "store" / "interrupted" / "runs"
    command = [sys.executable, "-m", "deployer.cli", "map", "interrupted", str(tmp_path / "data")]
    command += ["--rows-per-shard", "1000", "--concurrency", "1"]
    process = subprocess.Popen(
        command,
        env={**os.environ, "DEPLOYER_HOME": str(deployer_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/part-00001.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(runs.glob("*/part-00001.parquet")), "no shard finished in time"
    process.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 1, stderr
    assert "cancelled after" in stderr and "nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert deployer.read_runs("interrupted").empty
    assert not any(path.is_file() for path in runs.rglob("*"))
