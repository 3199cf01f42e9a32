"""Versions and rollback on the local provider: the kept bundle becomes live again without
building anything, and the next deploy deploys as usual."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer import ConfigError, Http
from deployer.cli import main
from deployer.providers.local import provider as local


def add_one(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x + 1)


def add_two(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x + 2)


def add_three(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x + 3)


def y_of(name: str = "scores") -> list[int]:
    return deployer.get(name).invoke(pd.DataFrame({"x": [1]})).y.tolist()  # type: ignore[union-attr]


def bundles(home: Path) -> set[str]:
    folder = home / "local" / "bundles"
    return {path.name for path in folder.iterdir() if path.is_dir() and path.name[0] != "."}


def test_a_rollback_serves_the_previous_code_and_the_next_deploy_deploys(
    deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = deployer.deploy(add_one, name="scores", env={"MODE": "a"}, quiet=True)
    second = deployer.deploy(
        add_two, name="scores", env={"MODE": "b"}, triggers=[Http()], quiet=True
    )
    versions = deployer.history("scores")
    assert [(version.code_hash, version.live) for version in versions] == [
        (second.code_hash, True),
        (first.code_hash, False),
    ]
    assert versions[0].deployed_at > versions[1].deployed_at
    assert versions[0].deployed_by and "@" in versions[0].deployed_by
    before = bundles(deployer_home)

    back = deployer.rollback("scores", quiet=True)
    assert back.code_hash == first.code_hash
    assert bundles(deployer_home) == before  # nothing unpacked, nothing removed
    assert y_of() == [2]
    state = deployer.get("scores")
    assert state is not None and state.code_hash == first.code_hash
    # The settings are the version's; the triggers stay as deployed now.
    entry = local.read_entry("scores")
    assert entry is not None and entry["env"] == {"MODE": "a"}
    assert entry["triggers"] == [{"type": "http", "public": False}]
    assert [version.code_hash for version in deployer.history("scores") if version.live] == [
        first.code_hash
    ]

    third = deployer.deploy(add_three, name="scores", quiet=True)
    assert y_of() == [4]
    assert [version.code_hash for version in deployer.history("scores")] == [
        third.code_hash,
        first.code_hash,
        second.code_hash,
    ]
    # Forward again, by hash.
    deployer.rollback("scores", to=second.code_hash[:8], quiet=True)
    assert y_of() == [3]


def test_rollback_refuses_what_it_cannot_do_naming_the_kept_versions(
    deployer_home: Path,
) -> None:
    first = deployer.deploy(add_one, name="scores", quiet=True)
    with pytest.raises(ConfigError, match="scores has no version before the live one"):
        deployer.rollback("scores", quiet=True)
    deployer.deploy(add_two, name="scores", quiet=True)
    with pytest.raises(ConfigError) as unknown:
        deployer.rollback("scores", to="0000ffff", quiet=True)
    assert str(unknown.value).startswith(
        f"scores keeps no version with code 0000ffff: the kept ones are {first.code_hash[:12]} ("
    )
    live = deployer.history("scores")[0].code_hash
    with pytest.raises(ConfigError, match="is live already"):
        deployer.rollback("scores", to=live[:6], quiet=True)
    with pytest.raises(ConfigError, match="at least 4 characters"):
        deployer.rollback("scores", to="ab", quiet=True)
    with pytest.raises(ConfigError, match="no function named 'other'"):
        deployer.rollback("other", quiet=True)
    assert y_of() == [3]  # nothing changed


def test_keep_versions_bounds_what_is_kept_and_the_rest_is_removed(deployer_home: Path) -> None:
    deployer.deploy(add_one, name="scores", keep_versions=2, quiet=True)
    deployer.deploy(add_two, name="scores", keep_versions=2, quiet=True)
    two = bundles(deployer_home)
    third = deployer.deploy(add_three, name="scores", keep_versions=2, quiet=True)
    versions = deployer.history("scores")
    assert len(versions) == 2 and versions[0].code_hash == third.code_hash
    assert len(bundles(deployer_home)) == 2 and len(two & bundles(deployer_home)) == 1
    with pytest.raises(ConfigError, match="keep_versions must be a whole number from 1"):
        deployer.deploy(add_one, name="scores", keep_versions=0, quiet=True)


def test_the_cli_lists_versions_and_rolls_back(deployer_home: Path) -> None:
    first = deployer.deploy(add_one, name="scores", quiet=True)
    second = deployer.deploy(add_two, name="scores", quiet=True)
    runner = CliRunner()
    listed = runner.invoke(main, ["history", "scores", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(row["code_hash"], row["live"]) for row in json.loads(listed.stdout)] == [
        (second.code_hash, True),
        (first.code_hash, False),
    ]
    shown = runner.invoke(main, ["history", "scores"])
    assert first.code_hash[:12] in shown.output and "versions of scores" in shown.output
    rolled = runner.invoke(main, ["rollback", "scores"])
    assert rolled.exit_code == 0, rolled.output
    assert f"code {first.code_hash[:12]}" in rolled.output and "is live again" in rolled.output
    assert y_of() == [2]
    refused = runner.invoke(main, ["rollback", "scores", "--to", "zzzz"])
    assert refused.exit_code == 2 and "keeps no version with code zzzz" in refused.output
