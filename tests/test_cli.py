"""The CLI: thin commands over the library, human tables and --json."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from deployer.cli import main

MODEL = """
import pandas as pd

from thresholds import above

def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=above(frame.score).astype(int))

METRICS = {"positives": lambda out: int(out.label.sum())}
"""


@pytest.fixture
def model_file(deployer_home: Path) -> Path:
    path = deployer_home.parent / "model.py"
    path.write_text(MODEL)
    (path.parent / "thresholds.py").write_text(
        "def above(score, limit=0.5):\n    return score >= limit\n"
    )
    return path


def run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(arguments), catch_exceptions=False)
    # --json output is stdout alone, as a pipe sees it (hints and warnings go to stderr).
    return result.exit_code, result.stdout if "--json" in arguments else result.output


def test_build_writes_the_zip_and_lists_contents_and_size(model_file: Path) -> None:
    out_dir = model_file.parent / "dist"
    code, output = run("build", f"{model_file}:predict", "--name", "labels", "-o", str(out_dir))
    assert code == 0, output
    [out] = list(out_dir.iterdir())
    assert out.name.startswith("labels-") and out.suffix == ".zip"
    assert "function.pkl" in output and "manifest.json" in output
    assert f"{out.stat().st_size:>12,}  {out}" in output
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = archive.namelist()
    # predict() travels by value; the local module it imports is shipped as source.
    assert "thresholds.py" in names and "model.py" not in names
    assert manifest["name"] == "labels"
    assert f"code_hash {manifest['code_hash']}" in output


def test_bad_input_is_one_line_without_traceback(model_file: Path) -> None:
    code, output = run("build", f"{model_file}:predict", "--name", "Bad_Name")
    assert code == 2
    assert "error: invalid function name 'Bad_Name'" in output
    assert "Traceback" not in output


def test_dry_run_prints_the_plan_and_deploys_nothing(model_file: Path, deployer_home: Path) -> None:
    code, output = run("deploy", f"{model_file}:predict", "--name", "labels", "--http", "--dry-run")
    assert code == 0, output
    assert re.search(r"create\s+function labels \([0-9a-f]{12}\)", output), output
    assert re.search(r"add trigger\s+http \(authenticated\)", output), output
    assert "is deployed" not in output
    assert not (deployer_home / "local" / "functions").exists()


@pytest.mark.slow
def test_deploy_invoke_and_read_back(model_file: Path, deployer_home: Path) -> None:
    pd.DataFrame({"score": [0.2, 0.7, 0.9]}).to_parquet(model_file.parent / "features.parquet")
    code, output = run(
        "deploy",
        f"{model_file}:predict",
        "--name",
        "labels",
        "--http",
        "--cron",
        "0 6 * * *",
        "--tz",
        "Europe/Berlin",
        "--inputs",
        str(model_file.parent / "features.parquet"),
        "--metrics",
        f"{model_file}:METRICS",
    )
    assert code == 0, output

    code, output = run("list", "--json")
    listed = json.loads(output)
    assert [item["name"] for item in listed] == ["labels"]
    assert [trigger["type"] for trigger in listed[0]["triggers"]] == ["cron", "http"]

    code, output = run("invoke", "labels", "--json", "--data", '[{"score": 0.6}]')
    assert code == 0, output
    assert json.loads(output)["predictions"] == [{"score": 0.6, "label": 1}]
    code, output = run("invoke", "labels")  # no body: reads --inputs, like the schedule
    assert code == 0 and "succeeded" in output

    code, output = run("runs", "labels", "--json")
    runs = json.loads(output)
    assert [run["status"] for run in runs] == ["succeeded", "succeeded"]
    assert sorted(run["metric.positives"] for run in runs) == [1, 2]
    code, output = run("outputs", "labels", "--json", "--last", "1")
    assert [row["label"] for row in json.loads(output)] == [0, 1, 1]
    code, output = run("outputs", "labels")
    assert "labels" in output and "run_id" in output

    code, output = run("delete", "labels")
    assert code == 0
    code, output = run("list", "--json")
    assert json.loads(output) == []


@pytest.mark.slow
def test_invoke_of_a_failing_run_exits_nonzero(model_file: Path) -> None:
    run("deploy", f"{model_file}:predict", "--name", "labels")
    code, output = run("invoke", "labels", "--data", '[{"other": 1}]')
    assert code == 1
    assert "AttributeError" in output


def test_provider_options_reach_the_provider(deployer_home: Path) -> None:
    code, output = run("list", "--provider-option", "region=europe-west1")
    assert code == 2
    assert "provider 'local' does not take these options" in output
    code, output = run("list", "--provider-option", "no-equals-sign")
    assert code == 2 and "KEY=VALUE" in output
