"""Issue 9, item 5: tables people can read at 80 columns and when piped."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer.cli import main
from deployer.errors import CheckFailed, RunError
from deployer.tables import fit, format_value

ANSI = re.compile(r"\x1b\[[0-9;]*m")

METRICS = {
    "mean_score_of_everything": lambda out: float(out.score.mean()),
    "tiny": lambda out: 0.000012345678,
}
CHECKS = {"scores_positive": lambda out: bool((out.score > 0).all())}


def score(frame: pd.DataFrame) -> pd.DataFrame:
    if "boom" in frame.columns:
        raise ValueError("boom")
    return frame.assign(score=frame.x * 0.123456789)


def on_a_terminal(*arguments: str, columns: int) -> str:
    """Run the CLI with stdout on a real pseudo-terminal of ``columns`` width."""
    leader, follower = pty.openpty()
    environment = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "deployer.cli", *arguments],
        stdout=follower,
        stderr=follower,
        env=environment,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


def deploy_with_runs() -> None:
    d = deployer.deploy(score, name="scored-with-a-long-name", metrics=METRICS, checks=CHECKS)
    d.invoke(pd.DataFrame({"x": [1.5, 2.0]}))
    with pytest.raises(CheckFailed):
        d.invoke(pd.DataFrame({"x": [-1.5]}))
    with pytest.raises(RunError):
        d.invoke(pd.DataFrame({"x": [1.0], "boom": [1]}))


def test_at_80_columns_headers_stay_whole_and_what_does_not_fit_is_named(
    deployer_home: Path,
) -> None:
    deploy_with_runs()
    shown = on_a_terminal("runs", "scored-with-a-long-name", columns=80)
    lines = shown.rstrip("\n").splitlines()
    assert all(len(line) <= 80 for line in lines), shown
    header = lines[1]
    # The columns a person scans first, each header in full; none squeezed to "s…".
    assert header.split() == ["run_id", "status", "took", "rows", "why"], shown
    assert "…" not in header
    assert "checks: scores_positive" in shown  # the failed check, by name
    assert "ValueError" in shown
    note = " ".join(lines[-2:])  # wrapped at 80 too
    assert "not shown at 80 columns: trigger, started, mean_score_of_everything, tiny" in note


def test_piped_every_column_in_full_without_colour_and_rounded(deployer_home: Path) -> None:
    deploy_with_runs()
    piped = subprocess.run(
        [sys.executable, "-m", "deployer.cli", "runs", "scored-with-a-long-name"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        check=True,
    ).stdout
    assert "\x1b[" not in piped
    header = piped.splitlines()[1].split()
    assert header == [
        "run_id",
        "status",
        "trigger",
        "started",
        "took",
        "rows",
        "why",
        "mean_score_of_everything",
        "tiny",
    ]
    succeeded = next(line for line in piped.splitlines() if " succeeded " in line)
    # 0.123456789 * 1.75 to 4 significant digits; --json keeps every digit.
    assert "0.216 " in succeeded and "1.235e-05" in succeeded
    assert "0.2160493" not in piped
    as_json = CliRunner().invoke(main, ["runs", "scored-with-a-long-name", "--json"]).output
    runs = json.loads(as_json)
    assert abs(runs[0]["metric.mean_score_of_everything"] - 0.123456789 * 1.75) < 1e-9


def test_columns_are_taken_by_importance_and_keep_their_order() -> None:
    widths = {"run_id": 25, "status": 12, "trigger": 7, "started": 16, "took": 5, "why": 23}
    priorities = {"why": 1, "started": 2, "took": 3, "trigger": 4}
    fitted = fit(widths, 80, priorities)
    # run_id, status, why (64 with gaps); started would pass 80; took and trigger fit.
    assert fitted.columns == ["run_id", "status", "trigger", "took", "why"]
    assert fitted.left_out == ["started"]
    assert fit(widths, 500, priorities).left_out == []
    # However narrow, the first column is shown.
    assert fit(widths, 10, priorities).columns == ["run_id"]


def test_cells_are_rounded_and_missing_values_blank() -> None:
    assert format_value(0.123456789) == "0.1235"
    assert format_value(2.0) == "2"
    assert format_value(float("nan")) == "" and format_value(None) == ""
    assert format_value(pd.NaT) == ""
    assert format_value(["a", "b"]) == "a, b"
    assert format_value(1234567.891) == "1.235e+06"
