"""Prediction quality end to end on the local provider: reference, profiles, drift,
schema change, severities, alerts, and reading them back.

The statistics themselves are tested against scipy in test_profile.py; alert
delivery in test_alerts.py. Here runs go through the real worker and store.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer import Check, CheckFailed, ConfigError, Drift, Http, Metric, QualityWarning
from deployer.cli import EXIT_CHECK_FAILED, main
from deployer.providers.base import UPDATE_CODE

RNG = np.random.default_rng(20261129)
TRAIN = pd.DataFrame({"x": RNG.normal(size=3000), "segment": RNG.choice(list("abc"), 3000)})


def features(rows: int = 2000, *, shift: float = 0.0, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"x": rng.normal(loc=shift, size=rows), "segment": rng.choice(list("abc"), rows)}
    )


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=1 / (1 + np.exp(-frame.x)))


def run_files(home: Path, name: str) -> list[Path]:
    return sorted((home / "store" / name / "runs").iterdir())


def record_of(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())


def deploy(**options: Any) -> deployer.Deployment:
    options.setdefault("name", "churn")
    options.setdefault("triggers", [Http()])
    return deployer.deploy(score, quiet=True, **options)


def quiet_invoke(deployment: deployer.Deployment, frame: pd.DataFrame) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        return deployment.invoke(frame)


def test_drift_against_the_deploy_time_reference_warns_and_names_the_column(
    deployer_home: Path,
) -> None:
    d = deploy(reference=TRAIN)
    assert len(quiet_invoke(d, features())) == 2000
    with pytest.warns(QualityWarning, match=r"input drift in x"):
        d.invoke(features(shift=0.5, seed=2))
    good, drifted = (record_of(run) for run in run_files(deployer_home, "churn"))
    assert good["status"] == "succeeded" and "drift" not in good
    assert drifted["status"] == "warned"
    assert drifted["drift"]["columns"]["input:x"]["verdict"] == "drift"
    assert "input:segment" not in drifted["drift"]["columns"]  # unchanged column
    profile = json.loads((run_files(deployer_home, "churn")[1] / "profile.json").read_text())
    assert profile["input"]["profile"]["columns"]["x"]["rows"] == 2000
    assert profile["input"]["drift"]["columns"]["x"]["js"] > 0.1
    # The output's x is the input's, passed through: profiled and judged once.
    assert profile["output"]["passthrough"] == ["x", "segment"]
    assert profile["output"]["profile"]["columns"]["x"]["passthrough"] is True
    assert set(profile["output"]["drift"]["columns"]) == {"score"}
    quality = deployer.read_quality("churn")
    flagged = quality[quality.drifted]
    assert set(zip(flagged.side, flagged.column, strict=True)) >= {("input", "x")}
    assert set(flagged.run_id) == {drifted["run_id"]}
    assert d.quality(last=1).equals(deployer.read_quality("churn", last=1))
    assert set(d.quality(last=1).run_id) == {drifted["run_id"]}


def test_a_schema_change_warns_against_the_reference_and_the_previous_run(
    deployer_home: Path,
) -> None:
    d = deploy(reference=TRAIN)
    quiet_invoke(d, features())
    changed = features(seed=3).assign(x=lambda frame: frame.x.astype("float32"), extra=1)
    with pytest.warns(QualityWarning, match="input column 'extra' added"):
        d.invoke(changed)
    record = record_of(run_files(deployer_home, "churn")[-1])
    input_changes = {
        (change["column"], change["change"], change["against"])
        for change in record["schema_changes"]
        if change["side"] == "input"
    }
    assert input_changes == {
        ("x", "type", "reference"),
        ("extra", "added", "reference"),
        ("x", "type", "previous run"),
        ("extra", "added", "previous run"),
    }


def test_small_batches_are_not_judged_for_drift(deployer_home: Path) -> None:
    d = deploy(reference=TRAIN)
    quiet_invoke(d, features(rows=50, shift=3.0))
    record = record_of(run_files(deployer_home, "churn")[-1])
    assert record["status"] == "succeeded"
    profile = json.loads((run_files(deployer_home, "churn")[-1] / "profile.json").read_text())
    assert "fewer than the 1000 needed" in profile["input"]["drift_skipped"]
    # The threshold is the user's to lower.
    deploy(reference=TRAIN, drift=Drift(min_rows=20))
    with pytest.warns(QualityWarning, match=r"input drift in .*\bx\b"):
        deployer.get("churn").invoke(features(rows=50, shift=3.0))


def test_without_a_reference_the_first_good_run_is_one_and_a_user_can_choose_another(
    deployer_home: Path,
) -> None:
    d = deploy()
    quiet_invoke(d, features(seed=4))
    reference = json.loads((deployer_home / "store" / "churn" / "reference.json").read_text())
    first = record_of(run_files(deployer_home, "churn")[0])["run_id"]
    assert reference["run_id"] == first and reference["explicit"] is False
    with pytest.warns(QualityWarning, match="drift in x"):
        d.invoke(features(shift=1.0, seed=5))
    shifted = record_of(run_files(deployer_home, "churn")[1])["run_id"]
    # Measured against the shifted run from now on: the same shift is no drift.
    deployer.set_reference("churn", shifted)
    quiet_invoke(d, features(shift=1.0, seed=6))
    assert record_of(run_files(deployer_home, "churn")[2])["status"] == "succeeded"


def test_bounds_and_severities_decide_the_status_and_a_raising_metric_keeps_predictions(
    deployer_home: Path,
) -> None:
    d = deploy(
        metrics={
            "mean_score": Metric(lambda out: out.score.mean(), lower=0.4, upper=0.6),
            "rows": lambda out: len(out),
            "broken": Metric(lambda out: out.no_such_column.mean(), severity="warning"),
        },
        checks={"in_range": Check(lambda out: out.score.between(0, 1).all())},
    )
    with pytest.warns(QualityWarning, match="metric 'broken' failed"):
        kept = d.invoke(features(rows=100))
    assert len(kept) == 100
    with pytest.raises(CheckFailed, match="metric 'mean_score' failed") as failed:
        d.invoke(features(rows=100, shift=2.0))
    assert failed.value.predictions is not None and len(failed.value.predictions) == 100
    warned, check_failed = (record_of(run) for run in run_files(deployer_home, "churn"))
    assert warned["status"] == "warned"
    assert warned["bounds"]["broken"]["error"].startswith("AttributeError")
    assert check_failed["status"] == "check_failed"
    assert check_failed["bounds"]["mean_score"]["value"] > 0.6
    runs = deployer.read_runs("churn")
    assert list(runs.status) == ["warned", "check_failed"]
    assert list(runs["metric.rows"]) == [100, 100]
    # Predictions of a run that failed a check are kept, and left out unless asked.
    assert set(deployer.read_outputs("churn").run_id) == {warned["run_id"]}
    everything = deployer.read_outputs("churn", include_failed_checks=True)
    assert set(everything.run_id) == {warned["run_id"], check_failed["run_id"]}


def test_the_reference_and_thresholds_are_code(deployer_home: Path) -> None:
    deploy(reference=TRAIN)
    assert deployer.plan(
        score, name="churn", triggers=[Http()], reference=TRAIN, quiet=True
    ).changes_nothing
    other = TRAIN.assign(x=TRAIN.x + 1)
    assert deployer.plan(
        score, name="churn", triggers=[Http()], reference=other, quiet=True
    ).kinds() == [UPDATE_CODE]
    assert deployer.plan(
        score, name="churn", triggers=[Http()], reference=TRAIN, drift=Drift(js=0.2), quiet=True
    ).kinds() == [UPDATE_CODE]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"metrics": {"m": Metric(len, lower=2, upper=1)}}, "lower=2 is above upper=1"),
        ({"checks": {"c": Check(len, severity="fatal")}}, "severity must be 'error' or 'warning'"),
        ({"drift": Drift(psi_warn=0.3, psi_drift=0.2)}, "drift is the higher band"),
        ({"reference": "no/such/file.parquet"}, "cannot be read"),
        ({"reference": TRAIN.iloc[:0]}, "has no rows"),
        (
            {"alerts": ["ftp://hooks.example.com/T0/B0/secret"]},
            r"alert webhook 1 \(hooks.example.com\) must start",
        ),
    ],
)
def test_bad_quality_settings_are_refused_before_anything_is_written(
    deployer_home: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        deploy(**options)
    assert "secret" not in str(refused.value)
    assert not (deployer_home / "local" / "functions" / "churn.json").exists()


# -- alerts ----------------------------------------------------------------------


class Receiver:
    """A webhook on loopback that answers from a script of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(json.loads(body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/s3cr3t-token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    webhook = Receiver([])
    yield webhook
    webhook.close()


def test_one_alert_per_run_that_needs_one_retried_after_a_500(
    deployer_home: Path, receiver: Receiver
) -> None:
    d = deploy(
        reference=TRAIN,
        alerts=[receiver.url],
        checks={"few_high": Check(lambda out: (out.score > 0.9).mean() < 0.2)},
    )
    quiet_invoke(d, features())
    assert receiver.received == []  # a clean run alerts no one
    receiver.statuses = [500]
    with pytest.raises(CheckFailed):
        d.invoke(features(shift=1.5, seed=7))
    assert len(receiver.received) == 2  # the 500, then the delivered retry
    alert = receiver.received[-1]
    assert "few_high" in alert["text"] and "x (input)" in alert["text"]
    assert alert["deployer"]["status"] == "check_failed"
    record = record_of(run_files(deployer_home, "churn")[-1])
    [delivery] = record["alerts"]
    assert delivery["delivered"] and delivery["attempts"] == 2
    # The URL is a secret: not in the record, the bundle or the log.
    assert "s3cr3t-token" not in json.dumps(record)
    assert not any(
        b"s3cr3t-token" in path.read_bytes()
        for path in (deployer_home / "local" / "bundles").rglob("*")
        if path.is_file()
    )
    assert "s3cr3t-token" not in d.logs()


def test_an_unreachable_webhook_is_recorded_and_the_run_keeps_its_status(
    deployer_home: Path, receiver: Receiver
) -> None:
    url = receiver.url
    receiver.close()  # nothing listens there any more
    d = deploy(alerts=[url], checks={"never": Check(lambda out: False, severity="warning")})
    with pytest.warns(QualityWarning):
        predictions = d.invoke(features(rows=10))
    assert len(predictions) == 10
    record = record_of(run_files(deployer_home, "churn")[-1])
    assert record["status"] == "warned"
    [delivery] = record["alerts"]
    assert delivery["delivered"] is False and delivery["error"]
    assert "s3cr3t-token" not in json.dumps(record)


# -- the CLI -----------------------------------------------------------------------


def test_cli_invoke_exits_with_its_own_code_and_quality_and_reference_read_back(
    deployer_home: Path, tmp_path: Path
) -> None:
    d = deploy(checks={"high": Check(lambda out: out.score.mean() < 0.7)})
    quiet_invoke(d, features())
    data = tmp_path / "shifted.parquet"
    features(shift=2.0, seed=8).to_parquet(data)
    runner = CliRunner()
    result = runner.invoke(main, ["invoke", "churn", "--data", f"@{data}"])
    assert result.exit_code == EXIT_CHECK_FAILED, result.output
    assert "check 'high' failed" in result.output
    shown = runner.invoke(main, ["quality", "churn", "--json"])
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    assert {(row["side"], row["column"]) for row in rows if row["drifted"]} >= {("input", "x")}
    first = record_of(run_files(deployer_home, "churn")[0])["run_id"]
    chosen = runner.invoke(main, ["reference", "churn", "--run", first])
    assert chosen.exit_code == 0 and first in chosen.output
    missing = runner.invoke(main, ["reference", "churn", "--run", "no-such-run"])
    assert missing.exit_code == 2 and "has no committed run 'no-such-run'" in missing.output


def test_drift_false_profiles_nothing_and_the_builtin_metrics_stay(deployer_home: Path) -> None:
    quiet_invoke(deploy(drift=False), features(rows=10))
    [run] = run_files(deployer_home, "churn")
    assert not (run / "profile.json").exists()
    assert not (deployer_home / "store" / "churn" / "reference.json").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["columns"]) == {"x", "segment", "score"}
    assert metrics["schema"]["score"] == "double"
    # With profiling, the same metrics come from the output's profile.
    quiet_invoke(deploy(), features(rows=10))
    profiled = json.loads((run_files(deployer_home, "churn")[-1] / "metrics.json").read_text())
    frame = score(features(rows=10))
    assert profiled["columns"]["score"]["mean"] == pytest.approx(frame.score.mean())
    assert profiled["columns"]["x"]["min"] == pytest.approx(frame.x.min())
    assert profiled["columns"]["segment"] == {"null_fraction": 0.0}
    assert profiled["schema"] == metrics["schema"]
