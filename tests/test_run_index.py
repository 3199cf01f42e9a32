"""The run index: reading many runs costs a listing and one GET, not one per run,
and it never shows what the commit markers do not."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from deployer import read_runs, store
from deployer.quality import read_quality
from deployer.run_index import INDEX_FILE
from deployer.runtimes import core, storage
from tests.test_store import loaded_bundle


@pytest.fixture
def history(tmp_path: Path) -> tuple[str, list[str]]:
    output = str(tmp_path / "store")
    loaded = loaded_bundle(tmp_path, output)
    run_ids = [
        core.run(loaded, trigger="manual", payload=[{"x": index}]).run_id for index in range(30)
    ]
    return output, run_ids


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    original = storage.read_bytes

    def counting(filesystem: object, path: str) -> bytes:
        read.append(path)
        return original(filesystem, path)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "read_bytes", counting)
    return read


def test_a_second_read_of_many_runs_is_one_get(
    history: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    output, run_ids = history
    read = count_reads(monkeypatch)
    first = read_runs("scores", output=output)
    assert len(read) >= 2 * len(run_ids)  # run.json and metrics.json of each, once
    assert Path(output, "scores", INDEX_FILE).exists()
    read.clear()
    second = read_runs("scores", output=output)
    assert read == [storage.join(output, "scores", INDEX_FILE)]
    pd.testing.assert_frame_equal(first, second)
    assert second.run_id.tolist() == run_ids
    # Quality rows are indexed too, on the first read_quality.
    read_quality("scores", output=output)
    read.clear()
    read_quality("scores", output=output)
    assert len(read) <= 2  # the index, for the records and for the quality rows


def test_a_rewritten_record_is_read_again_and_a_deleted_run_disappears(
    history: tuple[str, list[str]],
) -> None:
    output, run_ids = history
    read_runs("scores", output=output)  # indexes every run
    rewritten = Path(output, "scores", "runs", run_ids[3], "run.json")
    record = json.loads(rewritten.read_text())
    record["status"] = "failed"
    record["error"] = {"type": "Timeout", "message": "rewritten", "traceback": None}
    rewritten.write_text(json.dumps(record) + "\n" * 7)  # another size
    stat = rewritten.stat()
    os.utime(rewritten, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    shutil.rmtree(Path(output, "scores", "runs", run_ids[5]))  # e.g. retention
    runs = read_runs("scores", output=output).set_index("run_id")
    assert runs.loc[run_ids[3], "status"] == "failed"
    assert runs.loc[run_ids[3], "error_message"] == "rewritten"
    assert run_ids[5] not in runs.index
    indexed = json.loads(gzip.decompress(Path(output, "scores", INDEX_FILE).read_bytes()))
    assert run_ids[5] not in indexed["runs"]
    assert indexed["runs"][run_ids[3]]["record"]["status"] == "failed"


def test_an_index_that_cannot_be_read_or_written_only_costs_speed(
    history: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    output, run_ids = history
    index = Path(output, "scores", INDEX_FILE)
    index.write_bytes(b"not gzip at all")
    assert read_runs("scores", output=output).run_id.tolist() == run_ids
    index.unlink()
    original = storage.write_bytes

    def refusing(filesystem: object, path: str, data: bytes) -> None:
        if path.endswith(INDEX_FILE):
            raise PermissionError("read-only store")
        original(filesystem, path, data)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "write_bytes", refusing)
    assert read_runs("scores", output=output).run_id.tolist() == run_ids
    assert not index.exists()
    assert store.count_runs("scores", output=output) == len(run_ids)


def test_outputs_of_many_runs_read_as_one_dataset_in_run_order(
    history: tuple[str, list[str]],
) -> None:
    from deployer import read_outputs

    output, run_ids = history
    frame = read_outputs("scores", output=output)
    assert frame.columns.tolist() == ["run_id", "x", "score"]
    assert frame.run_id.tolist() == run_ids
    assert frame.x.tolist() == list(range(30))
    assert frame.score.tolist() == pytest.approx([x / 10 for x in range(30)])


def test_the_last_runs_of_a_history_on_s3_are_read_from_its_newest_folders(
    tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = f"s3://{s3_bucket}/predictions"
    loaded = loaded_bundle(tmp_path, output)
    run_ids = [core.run(loaded, trigger="manual", payload=[{"x": x}]).run_id for x in range(12)]
    # A run that has started and not committed: in the history, not among committed runs.
    running = run_ids[-1].replace("Z-", "Z-zz", 1)
    filesystem, root = storage.filesystem(output)
    storage.write_json(
        filesystem,
        storage.join(storage.runs_path(root, "scores"), running, storage.STARTED_FILE),
        {"run_id": running, "name": "scores", "trigger": "manual",
         "started": "2026-11-29T00:00:00+00:00", "timeout_seconds": 300},
    )  # fmt: skip
    full = read_runs("scores", output=output)
    listed: list[bool] = []
    original = store._listed_runs

    def recursive_listing(*arguments: object) -> object:
        listed.append(True)
        return original(*arguments)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_listed_runs", recursive_listing)
    # A dozen runs stand for a long history: a few asked for, the newest looked at.
    monkeypatch.setattr(store, "QUICK_LISTING_FACTOR", 3)
    last = read_runs("scores", output=output, last=3)
    assert listed == []  # the run folders, not every file
    pd.testing.assert_frame_equal(last.reset_index(drop=True), full.tail(3).reset_index(drop=True))
    committed = store.committed_runs("scores", output=output, last=2)
    assert [record["run_id"] for record in committed] == run_ids[-2:]
    # A record rewritten since the index was made is read again in this mode too.
    rewritten = storage.join(storage.runs_path(root, "scores"), run_ids[-1], storage.RUN_FILE)
    record = json.loads(storage.read_bytes(filesystem, rewritten))
    record["status"] = "failed"
    record["error"] = {"type": "Timeout", "message": "rewritten", "traceback": None}
    storage.write_bytes(filesystem, rewritten, (json.dumps(record) + " " * 40).encode())
    newest = store.committed_runs("scores", output=output, last=1)[0]
    assert newest["status"] == "failed" and newest["error"]["message"] == "rewritten"
    # Many runs asked for: one listing of every file is cheaper than two HEADs a run.
    assert len(read_runs("scores", output=output, last=10)) == 10 and listed == [True]
