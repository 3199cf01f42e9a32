"""Alerts: what a run's alert says, and how it reaches a webhook (a real loopback receiver)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deployer.runtimes.alerts import (
    MAX_LISTED,
    MAX_TEXT_CHARS,
    alert_payload,
    alert_text,
    send_alerts,
    validate_alert_urls,
)

# The part of a Slack webhook URL that is its secret.
TOKEN = "xoxTOKEN1234secret"
SECRET_PATH = f"/services/T0TEAM42/B0HOOK42/{TOKEN}"
READ = "deployer runs churn-scores 20261129T060000Z-ab12"


# --- a webhook receiver ------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """Records each POST and answers from ``script`` in order (then 200 ok)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer | int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), json.loads(raw))
                    )
                    answer = receiver.script.pop(0) if receiver.script else Answer()
                answer = Answer(answer) if isinstance(answer, int) else answer
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:  # the client gave up waiting: that is the test
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits for one, once per test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fast(**options: Any) -> dict[str, Any]:
    return {"timeout": 2.0, "backoff": 0.01, **options}


# --- run records -------------------------------------------------------------


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "churn-scores",
        "run_id": "20261129T060000Z-ab12",
        "status": "succeeded",
        "checks": {"row_count_positive": {"passed": True, "severity": "error"}},
    }
    return {**base, **fields}


PAYLOAD = alert_payload(record(status="failed"), read_command=READ) or {}


# --- when to alert and what it says ------------------------------------------


def test_clean_succeeded_run_has_no_alert() -> None:
    clean = record(
        drift={
            "dataset_drift": False,
            "columns": {"age": {"verdict": "warn", "js": 0.08, "psi": 0.12}},
        },
        schema_changes=[],
    )
    assert alert_payload(clean, read_command=READ) is None
    assert alert_text(clean) is None


def test_failed_run_names_the_error_but_never_its_traceback() -> None:
    failed = record(
        status="failed",
        error={
            "type": "ValueError",
            "message": "x must not be negative\nTraceback (most recent call last):\n  File x",
            "traceback": 'Traceback (most recent call last):\n  File "predict.py", line 3',
        },
    )
    payload = alert_payload(failed, read_command=READ)
    assert payload is not None
    text = payload["text"]
    assert "churn-scores" in text and "20261129T060000Z-ab12" in text and "failed" in text
    assert "ValueError: x must not be negative" in text
    assert "Traceback" not in json.dumps(payload)
    assert READ in text
    assert payload["deployer"]["error_type"] == "ValueError"
    assert payload["deployer"]["reasons"] == ["failed"]


def test_check_failed_run_names_each_failing_check_and_bound() -> None:
    run = record(
        status="check_failed",
        checks={
            "row_count_positive": {"passed": True, "severity": "error"},
            "fresh_data": {"passed": False, "severity": "warning", "error": "KeyError: 'ts'"},
            "no_negative_scores": {"passed": False, "severity": "error"},
        },
        bounds={
            "mean_score": {
                "value": 0.93,
                "lower": 0.1,
                "upper": 0.9,
                "severity": "error",
                "passed": False,
            },
            "rows": {"value": 10, "lower": 1, "upper": None, "severity": "error", "passed": True},
        },
    )
    payload = alert_payload(run, read_command=READ)
    assert payload is not None
    text = payload["text"]
    assert "failed its checks" in text
    assert "no_negative_scores (error), fresh_data (warning: KeyError: 'ts')" in text
    assert "row_count_positive" not in text
    assert "mean_score = 0.93 not in [0.1, 0.9] (error)" in text
    assert "rows =" not in text
    assert [check["name"] for check in payload["deployer"]["failed_checks"]] == [
        "no_negative_scores",
        "fresh_data",
    ]
    assert payload["deployer"]["failed_bounds"][0]["metric"] == "mean_score"


def test_warned_run_says_it_passed_with_warnings() -> None:
    run = record(status="warned", checks={"few_nulls": {"passed": False, "severity": "warning"}})
    text = alert_text(run, read_command=READ)
    assert text is not None
    assert "passed with warnings" in text
    assert "few_nulls (warning)" in text


def test_drifted_run_names_the_columns_with_rounded_scores() -> None:
    run = record(
        drift={
            "dataset_drift": True,
            "columns": {
                "age": {"verdict": "drift", "js": 0.312345, "psi": 0.845678, "side": "input"},
                "income": {"verdict": "warn", "js": 0.05, "psi": 0.15, "side": "input"},
                "score": {"verdict": "drift", "js": 0.5, "psi": 2.0, "side": "output"},
            },
        }
    )
    payload = alert_payload(run, read_command=READ)
    assert payload is not None
    text = payload["text"]
    assert "Drifted columns: score (output) JS 0.5 PSI 2, age (input) JS 0.312 PSI 0.846" in text
    assert "income" not in text
    assert "data set drifted" in text
    assert payload["deployer"]["reasons"] == ["drift"]
    assert payload["deployer"]["drifted_columns"][1] == {
        "column": "age",
        "side": "input",
        "js": 0.312,
        "psi": 0.846,
    }


def test_schema_change_is_described_column_by_column() -> None:
    run = record(
        schema_changes=[
            {
                "column": "tenure",
                "change": "removed",
                "old_type": "int64",
                "side": "input",
                "against": "reference",
            },
            {
                "column": "region",
                "change": "added",
                "type": "string",
                "side": "input",
                "against": "reference",
            },
            {
                "column": "score",
                "change": "type",
                "old_type": "int64",
                "new_type": "double",
                "side": "output",
                "against": "previous",
            },
        ]
    )
    payload = alert_payload(run, read_command=READ)
    assert payload is not None
    text = payload["text"]
    assert "input column tenure removed (was int64) vs the reference" in text
    assert "input column region added (string) vs the reference" in text
    assert "output column score changed type int64 → double vs the previous run" in text
    assert payload["deployer"]["reasons"] == ["schema_change"]
    assert len(payload["deployer"]["schema_changes"]) == 3


def test_long_lists_are_capped_and_the_text_stays_short() -> None:
    long_name = "feature_" + "x" * 200
    run = record(
        status="check_failed",
        error={"type": "ValueError", "message": "y" * 5000},
        checks={f"check_{i}": {"passed": False, "severity": "error"} for i in range(50)},
        drift={
            "dataset_drift": True,
            "columns": {
                f"{long_name}{i}": {"verdict": "drift", "js": i / 100, "psi": 1.0}
                for i in range(50)
            },
        },
        schema_changes=[{"column": f"c{i}", "change": "added", "type": "int64"} for i in range(45)],
    )
    payload = alert_payload(run, read_command=READ)
    assert payload is not None
    facts = payload["deployer"]
    assert len(facts["failed_checks"]) == MAX_LISTED
    assert len(facts["drifted_columns"]) == MAX_LISTED
    assert facts["truncated"] == {"failed_checks": 30, "drifted_columns": 30, "schema_changes": 25}
    assert facts["drifted_columns"][0]["js"] == 0.49  # the worst are the ones kept
    assert len(payload["text"]) <= MAX_TEXT_CHARS
    assert payload["text"].endswith(f"`{READ}`")  # where to look survives the cut
    assert "and 30 more" in payload["text"]
    assert len(json.dumps(payload)) < 20_000


def test_names_from_the_data_cannot_mention_a_slack_channel() -> None:
    run = record(status="check_failed", checks={"<!channel> & co": {"passed": False}})
    text = alert_text(run)
    assert text is not None
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; &amp; co (error)" in text


# --- delivery ----------------------------------------------------------------


def test_one_post_per_url_with_the_payload_as_json(receiver: Receiver) -> None:
    urls = [receiver.url("/first/" + TOKEN), receiver.url("/second/" + TOKEN)]
    results = send_alerts(urls, PAYLOAD, **fast())
    assert [request.path for request in receiver.received] == [
        f"/first/{TOKEN}",
        f"/second/{TOKEN}",
    ]
    for request in receiver.received:
        assert request.headers["Content-Type"] == "application/json"
        assert request.body == PAYLOAD
        assert (
            request.body["text"] and request.body["deployer"]["run_id"] == "20261129T060000Z-ab12"
        )
    assert results == [
        {
            "webhook": f"webhook {index} (http://127.0.0.1:{receiver.port})",
            "delivered": True,
            "attempts": 1,
            "status": 200,
            "error": None,
        }
        for index in (1, 2)
    ]


def test_a_500_is_retried_once_then_delivered(receiver: Receiver) -> None:
    receiver.script = [500, 200]
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast(retries=1))
    assert len(receiver.received) == 2
    assert result["delivered"] and result["attempts"] == 2 and result["status"] == 200


def test_retries_stop_after_the_limit(receiver: Receiver) -> None:
    receiver.script = [503, 503, 503, 200]
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast(retries=2))
    assert len(receiver.received) == 3
    assert not result["delivered"] and result["attempts"] == 3 and result["status"] == 503
    assert result["error"].startswith("HTTP 503")


def test_a_success_is_never_retried(receiver: Receiver) -> None:
    receiver.script = [201]
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast(retries=3))
    assert len(receiver.received) == 1
    assert result["delivered"] and result["attempts"] == 1 and result["status"] == 201


def test_a_404_is_not_retried_and_its_body_is_kept_without_the_token(receiver: Receiver) -> None:
    receiver.script = [Answer(404, body=f"no_service at {SECRET_PATH}".encode())]
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast(retries=3))
    assert len(receiver.received) == 1
    assert not result["delivered"] and result["attempts"] == 1 and result["status"] == 404
    assert result["error"].startswith("HTTP 404: no_service")
    assert TOKEN not in result["error"] and "T0TEAM42" not in result["error"]


def test_a_429_is_retried(receiver: Receiver) -> None:
    receiver.script = [Answer(429, headers={"Retry-After": "0"}), 200]
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast())
    assert len(receiver.received) == 2
    assert result["delivered"] and result["attempts"] == 2


def test_a_429_asking_for_a_long_wait_is_not_waited_for(receiver: Receiver) -> None:
    receiver.script = [Answer(429, headers={"Retry-After": "30"})]
    started = time.monotonic()
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast(retries=3))
    assert time.monotonic() - started < 1.0
    assert len(receiver.received) == 1
    assert not result["delivered"] and "retry after 30 s" in result["error"]


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.script = [Answer(302, headers={"Location": receiver.url("/elsewhere")})]
    [result] = send_alerts([receiver.url()], PAYLOAD, **fast())
    assert [request.path for request in receiver.received] == [SECRET_PATH]
    assert not result["delivered"] and result["status"] == 302 and result["attempts"] == 1


def test_an_unreachable_webhook_is_recorded_without_its_secret(
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}{SECRET_PATH}?token={TOKEN}"
    [result] = send_alerts([url], PAYLOAD, **fast(retries=1))
    assert result["webhook"] == f"webhook 1 (http://127.0.0.1:{port})"
    assert not result["delivered"] and result["attempts"] == 2 and result["status"] is None
    assert "could not connect" in result["error"]
    printed = capfd.readouterr()
    shown = json.dumps(result) + printed.out + printed.err
    for secret in (TOKEN, "T0TEAM42", "B0HOOK42", "/services"):
        assert secret not in shown


def test_error_text_quoting_the_url_is_scrubbed() -> None:
    class Quoting:
        def open(self, request: urllib.request.Request, /, *, timeout: float) -> Any:
            raise OSError(f"cannot reach {request.full_url} (user pw)")

    url = f"https://user:pw-secret@hooks.example.com{SECRET_PATH}"
    [result] = send_alerts([url], PAYLOAD, **fast(opener=Quoting()))
    assert result["webhook"] == "webhook 1 (https://hooks.example.com)"
    assert result["attempts"] == 2  # a connection error is retried
    assert "cannot reach" in result["error"]
    for secret in (TOKEN, "T0TEAM42", "pw-secret", "/services"):
        assert secret not in json.dumps(result)


def test_credentials_in_the_url_are_sent_as_basic_auth(receiver: Receiver) -> None:
    url = f"http://alerts:pa%40ss@127.0.0.1:{receiver.port}/hook"
    [result] = send_alerts([url], PAYLOAD, **fast())
    assert result["delivered"]
    assert result["webhook"] == f"webhook 1 (http://127.0.0.1:{receiver.port})"
    expected = base64.b64encode(b"alerts:pa@ss").decode()
    assert receiver.received[0].headers["Authorization"] == f"Basic {expected}"


def test_a_slow_receiver_times_out_is_retried_and_the_wait_is_bounded(receiver: Receiver) -> None:
    receiver.script = [Answer(delay=1.5), Answer(delay=1.5)]
    started = time.monotonic()
    [result] = send_alerts([receiver.url()], PAYLOAD, timeout=0.2, retries=1, backoff=0.01)
    elapsed = time.monotonic() - started
    assert not result["delivered"] and result["attempts"] == 2
    assert "timed out" in result["error"]
    assert elapsed < 1.0
    assert len(receiver.received) == 2


def test_an_attempt_is_cut_to_the_time_left_before_the_deadline(receiver: Receiver) -> None:
    receiver.script = [Answer(delay=1.5)]
    started = time.monotonic()
    [result] = send_alerts(
        [receiver.url()], PAYLOAD, deadline=started + 0.3, timeout=5.0, retries=3, backoff=0.01
    )
    assert time.monotonic() - started < 0.8
    assert not result["delivered"] and result["attempts"] == 1
    assert "deadline" in result["error"]


def test_a_passed_deadline_sends_nothing(receiver: Receiver) -> None:
    [result] = send_alerts([receiver.url()], PAYLOAD, deadline=time.monotonic() - 1, **fast())
    assert receiver.received == []
    assert not result["delivered"] and result["attempts"] == 0
    assert "deadline" in result["error"]


@pytest.mark.parametrize(
    "scheme_url", ["ftp://127.0.0.1:{port}/x", "file:///etc/passwd", "127.0.0.1:{port}/x"]
)
def test_only_http_and_https_are_requested(receiver: Receiver, scheme_url: str) -> None:
    [result] = send_alerts([scheme_url.format(port=receiver.port)], PAYLOAD, **fast())
    assert receiver.received == []
    assert not result["delivered"] and result["attempts"] == 0
    assert "https:// or http://" in result["error"]


def test_sending_never_raises_on_junk_input() -> None:
    assert send_alerts([None, 42], PAYLOAD) == [  # type: ignore[list-item]
        {
            "webhook": f"webhook {index} (not a URL)",
            "delivered": False,
            "attempts": 0,
            "status": None,
            "error": "not a URL string; nothing was sent",
        }
        for index in (1, 2)
    ]
    assert send_alerts(None, PAYLOAD)[0]["delivered"] is False  # type: ignore[arg-type]


# --- validation at deploy time -----------------------------------------------


def test_valid_urls_come_back_stripped() -> None:
    url = "https://hooks.slack.com" + SECRET_PATH
    assert validate_alert_urls([f" {url}\n", "http://10.0.0.5:8080/hook"]) == (
        url,
        "http://10.0.0.5:8080/hook",
    )
    assert validate_alert_urls(()) == ()


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("https://hooks.slack.com" + SECRET_PATH, "must be a list of webhook URLs, not str"),
        (["https://ok.example/x", 3], "alert webhook 2 must be a URL string, not int"),
        (["hooks.slack.com" + SECRET_PATH], "alert webhook 1 must start with https://"),
        (["ftp://files.example" + SECRET_PATH], "alert webhook 1 (files.example) must start with"),
        (["https://" + SECRET_PATH], "alert webhook 1 has no host"),
        (
            ["https://hooks.slack.com:port" + SECRET_PATH],
            "webhook 1 (https://hooks.slack.com) is not a valid URL",
        ),
        (["https://hooks.slack.com/a b" + SECRET_PATH], "contains spaces"),
    ],
)
def test_invalid_urls_are_refused_without_echoing_them(urls: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        validate_alert_urls(urls)
    assert message in str(raised.value)
    assert TOKEN not in str(raised.value) and "T0TEAM42" not in str(raised.value)
