"""Environment, secrets and max concurrency on the local provider: what the function
sees, what is refused before anything is written, and that a secret's value is in
no file deployer writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer import ConfigError
from deployer.cli import main

SECRET_VALUE = "tok-7f3a9c1e-never-written-anywhere"


SECRET_DIGEST = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()


def settings_seen(frame: pd.DataFrame) -> pd.DataFrame:
    # Reports the secret's digest, never the secret: neither the function's code
    # nor its output may hold the value.
    token = os.environ.get("DB_TOKEN", "")
    return frame.assign(
        level=os.environ.get("LEVEL", "-"),
        token_digest=hashlib.sha256(token.encode()).hexdigest(),
    )


def files_under(*roots: Path) -> list[Path]:
    return [path for root in roots for path in root.rglob("*") if path.is_file()]


def test_env_and_a_secret_reach_the_function_and_the_value_is_written_nowhere(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_DB_TOKEN", SECRET_VALUE)
    store = tmp_path / "store"
    options = {
        "name": "settings",
        "output": str(store),
        "env": {"LEVEL": "strict"},
        "secrets": {"DB_TOKEN": "env:MY_DB_TOKEN"},
    }
    plan = deployer.plan(settings_seen, **options, quiet=True)
    d = deployer.deploy(settings_seen, **options, quiet=True)
    seen = d.invoke(pd.DataFrame({"x": [1]}))
    assert seen.level.tolist() == ["strict"]
    assert seen.token_digest.tolist() == [SECRET_DIGEST]
    artifacts = deployer.write_artifacts(
        deployer.build(settings_seen, **options), tmp_path / "dist", quiet=True
    )
    logs = d.logs()
    assert "run" in logs  # the log has the run's lines: it is searched below
    secret = SECRET_VALUE.encode()
    written = files_under(deployer_home, store, tmp_path / "dist")
    assert written and set(artifacts) <= set(written)
    assert [path for path in written if secret in path.read_bytes()] == []
    assert SECRET_VALUE not in str(plan) + logs
    run_id = deployer.read_runs("settings", output=str(store)).run_id.iloc[0]
    record = deployer.read_run("settings", run_id, output=str(store))
    assert SECRET_VALUE not in repr(record)


def test_a_secret_comes_from_the_env_file_when_the_environment_lacks_it(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_DB_TOKEN", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(f"# local settings\nexport MY_DB_TOKEN='{SECRET_VALUE}'\n")
    monkeypatch.chdir(project)
    d = deployer.deploy(
        settings_seen, name="settings", secrets={"DB_TOKEN": "env:MY_DB_TOKEN"}, quiet=True
    )
    assert d.invoke(pd.DataFrame({"x": [1]})).token_digest.tolist() == [SECRET_DIGEST]


def test_a_missing_secret_is_refused_before_anything_is_written(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MY_DB_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        deployer.deploy(
            settings_seen,
            name="settings",
            output=str(tmp_path / "store"),
            secrets={"DB_TOKEN": "env:MY_DB_TOKEN"},
            quiet=True,
        )
    assert str(refused.value) == (
        "secrets=: DB_TOKEN: MY_DB_TOKEN is neither in this environment nor in ./.env: "
        "export it, or add it to .env, where deployer serve and invoke run"
    )
    assert deployer.list_deployments() == []
    assert not (tmp_path / "store").exists()


def test_a_secret_gone_by_the_time_a_worker_starts_fails_with_its_name(
    deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_DB_TOKEN", SECRET_VALUE)
    d = deployer.deploy(
        settings_seen, name="settings", secrets={"DB_TOKEN": "env:MY_DB_TOKEN"}, quiet=True
    )
    monkeypatch.delenv("MY_DB_TOKEN")
    with pytest.raises(deployer.DeployerError) as failed:
        d.invoke(pd.DataFrame({"x": [1]}))
    assert "secret DB_TOKEN (env:MY_DB_TOKEN) is not set where the function runs" in str(
        failed.value
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"env": {"DEPLOYER_X": "1"}}, "env=: DEPLOYER_X is set by deployer or the runtime"),
        ({"env": {"PATH": "/x"}}, "env=: PATH is set by deployer or the runtime"),
        ({"env": {"1X": "1"}}, "env=: '1X' is not an environment variable name"),
        ({"env": {"N": 5}}, "env=: the value of N must be text"),
        ({"env": ["N=5"]}, "env= must be a dict of NAME -> text"),
        ({"secrets": {"T": "MY_TOKEN"}}, "secrets=: T: 'MY_TOKEN' is not a local secret reference"),
        ({"secrets": {"T": ""}}, "secrets=: T has an empty reference"),
        (
            {"env": {"T": "1"}, "secrets": {"T": "env:T"}},
            "T is in both env= and secrets=",
        ),
        ({"max_concurrency": 0}, "max_concurrency must be a whole number of runs from 1 to 1000"),
    ],
)
def test_bad_settings_are_refused_when_building(
    deployer_home: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        deployer.build(settings_seen, name="settings", **options)  # type: ignore[arg-type]


def test_a_redeploy_plans_a_settings_change_only_when_one_changed(
    deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_DB_TOKEN", SECRET_VALUE)
    options = {
        "name": "settings",
        "env": {"LEVEL": "strict"},
        "secrets": {"DB_TOKEN": "env:MY_DB_TOKEN"},
        "max_concurrency": 2,
    }
    deployer.deploy(settings_seen, **options, quiet=True)  # type: ignore[arg-type]
    assert deployer.plan(settings_seen, **options, quiet=True).changes_nothing  # type: ignore[arg-type]
    changed = deployer.plan(
        settings_seen,
        **{**options, "env": {"LEVEL": "lenient"}},
        quiet=True,  # type: ignore[arg-type]
    )
    assert [str(step) for step in changed.actions] == [
        "update config: env: {'LEVEL': 'strict'} -> {'LEVEL': 'lenient'}"
    ]
    d = deployer.deploy(
        settings_seen,
        **{**options, "env": {"LEVEL": "lenient"}},
        quiet=True,  # type: ignore[arg-type]
    )
    assert d.invoke(pd.DataFrame({"x": [1]})).level.tolist() == ["lenient"]


def test_the_cli_takes_env_secret_and_max_concurrency(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_DB_TOKEN", SECRET_VALUE)
    source = tmp_path / "model.py"
    source.write_text(
        "import os\n\n"
        "def seen(frame):\n"
        "    return frame.assign(level=os.environ['LEVEL'], n=len(os.environ['DB_TOKEN']))\n"
    )
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "deploy",
            f"{source}:seen",
            "--name",
            "settings",
            "--env",
            "LEVEL=strict",
            "--secret",
            "DB_TOKEN=env:MY_DB_TOKEN",
            "--max-concurrency",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert SECRET_VALUE not in result.output
    invoked = runner.invoke(main, ["invoke", "settings", "--data", '[{"x": 1}]', "--json"])
    assert '"level": "strict"' in invoked.stdout and f'"n": {len(SECRET_VALUE)}' in invoked.stdout
    bad = runner.invoke(main, ["deploy", f"{source}:seen", "--name", "s2", "--secret", "sekrit"])
    assert bad.exit_code == 2 and "sekrit" not in bad.output
    assert "each value must be NAME=REFERENCE" in bad.output


@pytest.mark.slow
def test_max_concurrency_caps_a_map_run(deployer_home: Path, tmp_path: Path) -> None:
    d = deployer.deploy(lambda frame: frame, name="capped", max_concurrency=1, quiet=True)
    frame = pd.DataFrame({"x": range(40)})
    run = d.map(frame, rows_per_shard=10, progress=False)
    record = deployer.read_run("capped", run.run_id)
    assert record["map"]["concurrency"] == 1
    assert run.status == "succeeded"
