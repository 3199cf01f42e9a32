"""Issue 9: a failed run can be debugged from the tools, and no user mistake ends
in a traceback. Through click's runner (in process) and, where a real process
matters (a port in use), a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import deployer
from deployer.cli import main
from deployer.errors import RunError


def cli(*arguments: str) -> Result:
    return CliRunner().invoke(main, list(arguments))


def broken(frame: pd.DataFrame) -> pd.DataFrame:
    print(f"looking at {len(frame)} rows")
    if (frame.x < 0).any():
        raise ValueError("negative x: the model was trained on x >= 0")
    return frame.assign(y=frame.x * 2)


def last_run_id(name: str) -> str:
    return str(deployer.read_runs(name).run_id.iloc[-1])


def test_a_failed_run_is_shown_in_full_and_its_log_is_its_own(deployer_home: Path) -> None:
    deployer.deploy(broken, name="broken", quiet=True)
    assert cli("invoke", "broken", "--data", '[{"x": 1}, {"x": 2}, {"x": 3}]').exit_code == 0
    failed = cli("invoke", "broken", "--data", '[{"x": -1}]')
    assert failed.exit_code == 1
    run_id = last_run_id("broken")
    shown = cli("runs", "broken", run_id)
    assert shown.exit_code == 0, shown.output
    assert f"run {run_id} of broken: failed" in shown.output
    assert "ValueError: negative x: the model was trained on x >= 0" in shown.output
    assert "in broken" in shown.output  # the traceback, down to the user's function
    assert f"deployer logs broken --run {run_id}" in shown.output
    record = json.loads(cli("runs", "broken", run_id, "--json").output)
    assert record["error"]["type"] == "ValueError" and "Traceback" in record["error"]["traceback"]
    # The log of that run alone: its print, not the first run's.
    logged = cli("logs", "broken", "--run", run_id)
    assert logged.exit_code == 0, logged.output
    assert "looking at 1 rows" in logged.output
    assert "looking at 3 rows" not in logged.output
    as_json = json.loads(cli("logs", "broken", "--run", run_id, "--json").output)
    assert any("looking at 1 rows" in line for line in as_json["lines"])
    unknown = cli("runs", "broken", "20260101T000000Z-nope")
    assert unknown.exit_code == 2 and run_id in unknown.output  # names the runs there are


def test_a_name_without_runs_says_so_and_names_those_with_runs(deployer_home: Path) -> None:
    deployer.deploy(broken, name="scored", quiet=True)
    deployer.get("scored").invoke(pd.DataFrame({"x": [1]}))
    deployer.deploy(broken, name="quiet", quiet=True)
    for command in ("runs", "outputs"):
        result = cli(command, "quiet")
        assert result.exit_code == 1
        assert "quiet has no runs" in result.output and "scored" in result.output


def test_outputs_shows_a_bounded_preview_and_writes_everything_on_request(
    deployer_home: Path, tmp_path: Path
) -> None:
    d = deployer.deploy(broken, name="many", quiet=True)
    d.invoke(pd.DataFrame({"x": range(100)}))
    d.invoke(pd.DataFrame({"x": range(100, 130)}))
    preview = cli("outputs", "many", "--json")
    rows = json.loads(preview.output)
    assert len(rows) == 20 and {row["x"] for row in rows} <= set(range(100, 130))
    five = json.loads(cli("outputs", "many", "--limit", "5", "--json").output)
    assert len(five) == 5
    target = tmp_path / "all.parquet"
    written = cli("outputs", "many", "--to", str(target))
    assert written.exit_code == 0 and "130 rows" in written.output
    assert sorted(pd.read_parquet(target).x) == list(range(130))
    assert cli("outputs", "many", "--to", str(tmp_path / "all.xlsx")).exit_code == 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["runs", "x", "--last", "0"], "0 is not in the range x>=1"),
        (["runs", "x", "--last", "-1"], "-1 is not in the range x>=1"),
        (["runs", "x", "--since", "yesterday"], "'yesterday' is not an ISO date or time"),
        (["invoke", "x", "--data", "@missing.csv"], "missing.csv does not exist"),
        (["list", "--provider", "heroku"], "Invalid value for '--provider'"),
    ],
)
def test_mistakes_get_a_message_not_a_traceback(
    deployer_home: Path, arguments: list[str], message: str
) -> None:
    result = cli(*arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_error_while_importing_the_module_names_its_file_and_line(tmp_path: Path) -> None:
    module = tmp_path / "model.py"
    module.write_text("import os\n\nraise RuntimeError('no model file')\n\ndef predict(x): ...\n")
    result = cli("deploy", f"{module}:predict", "--name", "m")
    assert result.exit_code == 1
    assert f"{module}, line 3" in result.output and "RuntimeError: no model file" in result.output
    module.write_text("def predict(x:\n    return x\n")
    result = cli("build", f"{module}:predict", "--name", "m")
    assert result.exit_code == 1 and f"{module}, line 1" in result.output
    assert "Traceback" not in result.output


def test_h_is_help_and_every_read_command_takes_json(deployer_home: Path) -> None:
    assert "Deploy prediction functions" in cli("-h").output
    assert "Run history of NAME" in cli("runs", "-h").output
    deployer.deploy(broken, name="listed", quiet=True)
    listed = json.loads(cli("list", "--json").output)
    assert [state["name"] for state in listed] == ["listed"]
    for command in ("runs", "outputs", "logs", "quality", "list"):
        assert "--json" in cli(command, "-h").output, command


def test_serve_on_a_port_in_use_says_so(deployer_home: Path) -> None:
    import os

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "deployer.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DEPLOYER_HOME": str(deployer_home)},
        )
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_committed_files_are_what_other_tools_read(deployer_home: Path) -> None:
    import pyarrow.dataset as ds

    d = deployer.deploy(broken, name="shared", quiet=True)
    d.invoke(pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(deployer.RunError):
        d.invoke(pd.DataFrame({"x": [-1]}))
    d.invoke(pd.DataFrame({"x": [3]}))
    # A run that started and never committed: its output must not be read.
    runs = deployer_home / "store" / "shared" / "runs"
    ghost = runs / "20990101T000000Z-ghost"
    ghost.mkdir()
    pd.DataFrame({"x": [99], "y": [198]}).to_parquet(ghost / "output.parquet")
    files = deployer.committed_files("shared")
    assert len(files) == 2 and all(path.endswith("/output.parquet") for path in files)
    assert "ghost" not in "".join(files)
    # What DuckDB's read_parquet(files, filename=true) or polars' scan_parquet does.
    table = ds.dataset(files, format="parquet").to_table()
    assert sorted(table.column("y").to_pylist()) == [2, 4, 6]
    run_ids = {Path(path).parent.name for path in files}
    assert run_ids == set(deployer.read_outputs("shared").run_id)


def test_a_local_http_deploy_says_how_to_serve_when_nothing_listens(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv("DEPLOYER_PORT", str(free))
    module = tmp_path / "served.py"
    module.write_text("def predict(frame):\n    return frame\n")
    result = cli("deploy", f"{module}:predict", "--name", "served", "--http")
    assert result.exit_code == 0, result.output
    assert "nothing answers there yet: start `deployer serve`" in result.output


MODEL_SCRIPT = """
import pandas as pd
import deployer

WEIGHT = 0.5


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * WEIGHT)


if __name__ == "__main__":
    deployer.deploy(predict, name="alternating", triggers=[deployer.Http()])
"""


def test_the_same_script_gets_the_same_code_hash_run_or_named_to_the_cli(
    deployer_home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "model.py"
    script.write_text(MODEL_SCRIPT)

    def deployed_hash() -> str:
        return deployer.get("alternating").code_hash

    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, cwd=tmp_path)
    first = deployed_hash()
    through_cli = subprocess.run(
        [sys.executable, "-m", "deployer.cli", "deploy", "model.py:predict"]
        + ["--name", "alternating", "--http"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert through_cli.returncode == 0, through_cli.stderr
    assert "up to date, nothing to change" in through_cli.stderr
    assert deployed_hash() == first
    again = subprocess.run(
        [sys.executable, "model.py"], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert "up to date, nothing to change" in again.stderr and deployed_hash() == first


def test_build_of_a_module_that_deploys_when_imported_refuses_and_deploys_nothing(
    deployer_home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "big.py"
    script.write_text(
        "import pandas as pd\nimport deployer\n\n"
        "def predict(frame: pd.DataFrame) -> pd.DataFrame:\n    return frame\n\n"
        'd = deployer.deploy(predict, name="big")\n'
    )
    for command in (
        ["build", "big.py:predict", "--out-dir", str(tmp_path / "out")],
        ["deploy", "big.py:predict"],
    ):
        result = cli(*command, "--name", "big")
        assert result.exit_code == 1, result.output
        assert f"{script}, line 7: the module calls deployer.deploy() when imported" in (
            result.output
        )
        assert 'if __name__ == "__main__":' in result.output
    assert deployer.list_deployments() == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_requirements_say_which_are_pinned_and_which_are_ranges() -> None:
    from deployer.console import pin_kind

    assert pin_kind("==3.1.3") == "pinned"
    assert pin_kind(">=14") == "range"
    assert pin_kind("==2.*") == "range"
    assert pin_kind(">=1,<2") == "range"
    assert pin_kind(None) == "any"


def raises_on_negative(frame: pd.DataFrame) -> pd.DataFrame:
    scaled = frame.x * 2
    if (scaled < 0).any():
        raise ValueError("negative input reached the model")
    return frame.assign(y=scaled)


def test_a_failed_runs_traceback_shows_the_users_lines_not_the_runtimes(
    deployer_home: Path,
) -> None:
    d = deployer.deploy(raises_on_negative, name="lines", quiet=True)
    with pytest.raises(RunError):
        d.invoke(pd.DataFrame({"x": [-1]}))
    record = deployer.read_run("lines", last_run_id("lines"))
    shown = record["error"]["traceback"]
    import inspect

    line = inspect.getsourcelines(raises_on_negative)[1] + 3
    assert f'File "{Path(__file__).name}", line {line}, in raises_on_negative' in shown
    assert 'raise ValueError("negative input reached the model")' in shown
    assert "<dynamic-code>" not in shown and "deployer_runtime" not in shown
