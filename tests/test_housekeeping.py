"""Issue 9, item 9: `deployer cache` shows the dependency cache and prunes what no
local deployment uses and nothing used for a while."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer.cli import main


def double(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x * 2)


def make(path: Path, size: int, *, days_ago: float) -> None:
    path.mkdir(parents=True)
    (path / "blob").write_bytes(b"\0" * size)
    (path / ".last-used").touch()
    moment = time.time() - days_ago * 86400
    os.utime(path / ".last-used", (moment, moment))


def test_cache_lists_sizes_and_users_and_prunes_only_the_unused_and_old(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = deployer.deploy(double, name="scores", quiet=True).deps_hash
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEPLOYER_CACHE", str(cache))
    old_unused, new_unused = "a" * 64, "b" * 64
    make(cache / "envs" / used, 3 * 2**20, days_ago=90)  # old, but scores runs with it
    make(cache / "envs" / old_unused, 2 * 2**20, days_ago=90)
    make(cache / "envs" / new_unused, 1 * 2**20, days_ago=1)
    # A Lambda tree where earlier versions kept them, nobody asked for lately.
    make(cache / "lambda" / ("c" * 64), 4 * 2**20, days_ago=60)
    # A Lambda record, and the slim archive made of that tree, both in use.
    (cache / "lambda" / f"{'d' * 64}.json").write_text("{}")
    (cache / "lambda-artifacts").mkdir()
    (cache / "lambda-artifacts" / f"{'d' * 64}-slim.tar.zst").write_bytes(b"\0" * 2**19)
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["cache", "--json"]).output)
    by_hash = {row["deps_hash"]: row for row in listed}
    assert by_hash[used[:12]]["used_by"] == "scores"
    assert by_hash[used[:12]]["size_mb"] == 3.0
    assert by_hash["c" * 12]["kind"] == "lambda dependencies"
    assert sorted(row["kind"] for row in listed if row["deps_hash"] == "d" * 12) == [
        "lambda artifact",
        "lambda dependencies",
    ]
    assert [row["deps_hash"] for row in listed][0] == "c" * 12  # largest first
    pruned = runner.invoke(main, ["cache", "--prune"])
    assert pruned.exit_code == 0, pruned.output
    assert "removed 2 items, 6 MB" in pruned.output
    assert sorted(path.name for path in (cache / "envs").iterdir()) == sorted([used, new_unused])
    assert not (cache / "lambda" / ("c" * 64)).exists()
    assert (cache / "lambda" / f"{'d' * 64}.json").exists()


def test_a_pickle_over_50_mb_gets_a_warning_suggesting_storage(deployer_home: Path) -> None:
    weights = bytes(51 * 2**20)

    def heavy(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(y=len(weights))

    with pytest.warns(UserWarning, match=r"heavy\(\) pickles to 51 MB .* object storage"):
        deployer.build(heavy, name="heavy")
    light = {"w": 1}

    def small(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(y=light["w"])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        deployer.build(small, name="small")


def triple(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x * 3)


def bundles(home: Path) -> set[str]:
    root = home / "local" / "bundles"
    return {path.name for path in root.iterdir() if not path.name.startswith(".")}


def test_a_redeploy_and_a_delete_remove_the_bundles_nothing_uses(deployer_home: Path) -> None:
    first = deployer.deploy(double, name="scored", quiet=True)
    kept = deployer.deploy(double, name="other", quiet=True)
    before = bundles(deployer_home)
    assert len(before) == 2
    # keep_versions=1: no version is kept for rollback (test_history.py keeps them).
    second = deployer.deploy(triple, name="scored", keep_versions=1, quiet=True)
    assert first.code_hash != second.code_hash
    after = bundles(deployer_home)
    assert len(after) == 2 and len(after - before) == 1  # the replaced one went
    assert deployer.get("scored").invoke(pd.DataFrame({"x": [1]})).y.tolist() == [3]
    deployer.delete("scored", quiet=True)
    assert len(bundles(deployer_home)) == 1
    assert kept.invoke(pd.DataFrame({"x": [1]})).y.tolist() == [2]  # the other's stays


def test_a_bundle_a_warm_worker_runs_stays_until_the_server_retires_it(
    deployer_home: Path,
) -> None:
    from deployer.providers.local.server import LocalServer

    lines: list[str] = []
    server = LocalServer(port=0, log=lines.append)
    server.start()
    try:
        d = deployer.deploy(double, name="warm", quiet=True)
        assert d.invoke(pd.DataFrame({"x": [1]})).y.tolist() == [2]  # the server's worker
        old = bundles(deployer_home)
        deployer.deploy(triple, name="warm", keep_versions=1, quiet=True)
        assert old <= bundles(deployer_home)  # still running in the warm worker
        assert d.invoke(pd.DataFrame({"x": [1]})).y.tolist() == [3]  # retires the old one
        deadline = time.monotonic() + 30
        while old & bundles(deployer_home) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not old & bundles(deployer_home), lines
        assert len(bundles(deployer_home)) == 1
    finally:
        server.stop()


def test_nothing_is_removed_while_an_entry_cannot_be_read(deployer_home: Path) -> None:
    deployer.deploy(double, name="scored", quiet=True)
    (deployer_home / "local" / "functions" / "broken.json").write_text("{not json")
    before = bundles(deployer_home)
    deployer.deploy(triple, name="scored", quiet=True)
    assert before <= bundles(deployer_home)
