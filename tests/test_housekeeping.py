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
    make(cache / ("c" * 64), 4 * 2**20, days_ago=60)  # a Lambda tree nobody asked for lately
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["cache", "--json"]).output)
    by_hash = {row["deps_hash"]: row for row in listed}
    assert by_hash[used[:12]]["used_by"] == "scores"
    assert by_hash[used[:12]]["size_mb"] == 3.0
    assert by_hash["c" * 12]["kind"] == "lambda dependencies"
    assert [row["deps_hash"] for row in listed][0] == "c" * 12  # largest first
    pruned = runner.invoke(main, ["cache", "--prune"])
    assert pruned.exit_code == 0, pruned.output
    assert "removed 2 items, 6 MB" in pruned.output
    assert sorted(path.name for path in (cache / "envs").iterdir()) == sorted([used, new_unused])
    assert not (cache / ("c" * 64)).exists()


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
