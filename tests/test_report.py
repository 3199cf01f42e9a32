"""The report's data is what the store holds; `deployer report` writes it and
`deployer serve` shows it behind its token (issue 11)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer.cli import main
from deployer.errors import CheckFailed
from deployer.providers.local.server import LocalServer
from deployer.quality import Check, Drift, Metric
from deployer.report.gather import report_data


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=1 / (1 + np.exp(-frame.x)), label=np.where(frame.x > 0, "a", "b"))


def deploy_with_history() -> deployer.Deployment:
    d = deployer.deploy(
        score,
        name="scored",
        metrics={
            "mean_score": Metric(lambda out: out.score.mean(), lower=0.3, upper=0.8),
            "rows": lambda out: float(len(out)),
        },
        checks={"enough_rows": Check(lambda out: len(out) >= 100, severity="error")},
        drift=Drift(min_rows=50),
        quiet=True,
    )
    generator = np.random.default_rng(7)
    for shift in (0.0, 0.0, 0.2, 1.5):
        d.invoke(pd.DataFrame({"x": generator.normal(shift, 1, 400)}))
    with pytest.raises(CheckFailed):
        d.invoke(pd.DataFrame({"x": generator.normal(0, 1, 20)}))
    return d


def test_what_the_report_draws_is_what_the_store_holds(deployer_home: Path) -> None:
    deploy_with_history()
    data = report_data("scored")
    runs = deployer.read_runs("scored")
    assert [run.run_id for run in data.runs] == runs.run_id.tolist()
    assert [run.status for run in data.runs] == runs.status.tolist()
    assert data.total_runs == len(runs)
    assert data.runs[-1].failed_checks[0].name == "enough_rows"
    # Each metric's points are the runs' values; its band is its bounds.
    mean_score = next(series for series in data.metrics if series.name == "mean_score")
    assert mean_score.values == pytest.approx(runs["metric.mean_score"].tolist())
    assert (mean_score.lower, mean_score.upper) == (0.3, 0.8)
    # The heatmap is read_quality's scores, run by run and column by column.
    quality = deployer.read_quality("scored")
    assert data.drift is not None
    for row in quality.itertuples():
        at = data.drift.run_ids.index(row.run_id)
        column = data.drift.columns.index(f"{row.side}.{row.column}")
        shown = data.drift.scores[at][column]
        assert (shown is None and math.isnan(row.js)) or shown == pytest.approx(row.js)
    assert "drift" in {verdict for line in data.drift.verdicts for verdict in line}
    # The histograms: the newest profiled run against the reference, most drifted first.
    assert data.histograms and data.histograms[0].js == max(h.js or 0 for h in data.histograms)
    for histogram in data.histograms:
        assert sum(histogram.current) == pytest.approx(1.0)
        assert histogram.reference is None or len(histogram.reference) == len(histogram.current)
    # Samples: the first predictions of the newest runs, as stored.
    newest = next(run for run in reversed(data.runs) if run.sample)
    stored = deployer.read_outputs("scored", run_id=newest.run_id, include_failed_checks=True).drop(
        columns="run_id"
    )
    assert newest.sample == json.loads(stored.head(len(newest.sample)).to_json(orient="records"))
    # The deployment, its triggers in words.
    assert data.deployment is not None
    assert data.deployment.code_hash == deployer.get("scored").code_hash


def test_report_command_writes_one_file_and_refuses_a_name_without_runs(
    deployer_home: Path, tmp_path: Path
) -> None:
    deploy_with_history()
    target = tmp_path / "scored.html"
    written = CliRunner().invoke(main, ["report", "scored", "-o", str(target), "--last", "3"])
    assert written.exit_code == 0, written.output
    page = target.read_text()
    assert page.startswith("<!doctype html>") or page.lower().startswith("<!doctype html>")
    assert page.count('id="run-') == 3
    deployer.deploy(score, name="idle", quiet=True)
    idle = CliRunner().invoke(main, ["report", "idle"])
    assert idle.exit_code == 1 and "idle has no runs" in idle.output


def test_a_deployment_writes_its_report_outside_a_notebook(
    deployer_home: Path, tmp_path: Path
) -> None:
    d = deploy_with_history()
    written = d.report(last=2, path=tmp_path / "mine.html")
    assert written == (tmp_path / "mine.html").resolve()
    assert written.read_text().count('id="run-') == 2


def test_cron_triggers_are_described_in_words_with_their_time_zone() -> None:
    from deployer.report.gather import trigger_in_words

    words = trigger_in_words({"type": "cron", "expr": "0 6 * * 1-5", "tz": "Europe/Berlin"})
    assert words.startswith("At 06:00, Monday through Friday (Europe/Berlin)")


@pytest.fixture
def served(deployer_home: Path) -> Iterator[tuple[LocalServer, list[str]]]:
    lines: list[str] = []
    server = LocalServer(port=0, log=lines.append)
    server.start()
    yield server, lines
    server.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(
    server: LocalServer, path: str, *, data: bytes | None = None, cookie: str | None = None
) -> tuple[int, dict[str, str], str]:
    headers = {"Cookie": cookie} if cookie else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", data=data, headers=headers
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_serve_shows_reports_behind_its_token_to_a_signed_in_browser(
    served: tuple[LocalServer, list[str]],
) -> None:
    server, lines = served
    deploy_with_history()
    # A stranger gets the sign-in form, never the report.
    status, headers, body = fetch(server, "/functions/scored")
    assert status == 401 and 'name="token"' in body and "scored</h1>" not in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    # The one-time link serve logged (it holds a code, never the token).
    link = next(line for line in lines if "/login?code=" in line)
    assert server.token not in "\n".join(lines)
    path = link[link.index("/login?code=") :].split()[0]
    status, headers, _ = fetch(server, path)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert fetch(server, path)[0] == 401  # spent
    status, _, body = fetch(server, "/", cookie=cookie)
    assert status == 200 and '/functions/scored"' in body and "check_failed" in body
    status, _, body = fetch(server, "/functions/scored", cookie=cookie)
    assert status == 200 and body.count('id="run-') == 5
    assert fetch(server, "/functions/nope", cookie=cookie)[0] == 404
    assert fetch(server, "/functions/scored", cookie="deployer_session=forged")[0] == 401


def test_the_login_form_takes_the_token_and_never_redirects_off_site(
    served: tuple[LocalServer, list[str]],
) -> None:
    server, _ = served

    def sign_in(token: str, next_path: str) -> tuple[int, dict[str, str], str]:
        form = urllib.parse.urlencode({"token": token, "next": next_path}).encode()
        return fetch(server, "/login", data=form)

    status, _, body = sign_in("wrong", "/")
    assert status == 401 and "not this server" in body
    status, headers, _ = sign_in(server.token, "//evil.example/x")
    assert status == 303 and headers["Location"] == "/"
    status, headers, _ = sign_in(server.token, "/functions/scored")
    assert status == 303 and headers["Location"] == "/functions/scored"
    assert headers["Set-Cookie"].startswith("deployer_session=")
