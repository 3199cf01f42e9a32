"""`deployer logs`: --since, --run and --follow on every provider.

Local end to end (real workers writing their log); AWS against moto in server
mode (CloudWatch Logs); GCP and Azure against their control-plane fakes
(tests/gcp_fake.py: Cloud Logging's entries:list; tests/azure_fake.py:
Application Insights' query API), so those are contract tests. The CLI through
click's runner, and Ctrl-C through a real process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from click.testing import CliRunner, Result

import deployer
from deployer import ProviderError
from deployer.cli import main
from deployer.providers.base import LogEvent
from deployer.providers.local import provider as local

MARKER = "deployer: run"


def cli(*arguments: str) -> Result:
    return CliRunner().invoke(main, list(arguments))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def texts(events: Any) -> list[str]:
    return [event.text for event in events]


class Follower:
    """Consumes a follow in a thread (as a user's terminal would), until it ends
    by itself or ``until`` says enough."""

    def __init__(self, events: Iterator[LogEvent], until: Any = None) -> None:
        self.seen: queue.Queue[str] = queue.Queue()
        self.lines: list[str] = []
        self.ended_by_itself = False
        self._until = until or (lambda lines: False)
        self._thread = threading.Thread(target=self._consume, args=(events,), daemon=True)
        self._thread.start()

    def _consume(self, events: Iterator[LogEvent]) -> None:
        for event in events:
            self.lines.append(event.text)
            self.seen.put(event.text)
            if self._until(self.lines):
                return
        self.ended_by_itself = True

    def wait_for(self, needle: str, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while not any(needle in line for line in self.lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{needle!r} never came; got {self.lines}")
            with contextlib.suppress(queue.Empty):
                self.seen.get(timeout=remaining)

    def join(self, seconds: float = 10) -> None:
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"the follow did not end; got {self.lines}"


# -- local: real workers, their real log ---------------------------------------------------


def counted(frame: pd.DataFrame) -> pd.DataFrame:
    print(f"counting {len(frame)} rows")
    return frame.assign(y=frame.x + 1)


def slow_steps(frame: pd.DataFrame) -> pd.DataFrame:
    import time

    print("step one", flush=True)
    time.sleep(float(frame.pause.iloc[0]))
    print("step two", flush=True)
    return frame


def run_ids(name: str) -> list[str]:
    return deployer.read_runs(name).run_id.tolist()


@pytest.mark.slow
def test_local_since_leaves_out_what_was_printed_before(deployer_home: Path) -> None:
    deployment = deployer.deploy(counted, name="counted", quiet=True)
    deployment.invoke(pd.DataFrame({"x": [1]}))
    between = datetime.now(timezone.utc)
    time.sleep(0.01)
    deployment.invoke(pd.DataFrame({"x": [1, 2, 3]}))
    provider = local.LocalProvider()
    after = texts(provider.log_events("counted", since=between))
    assert "counting 3 rows" in after and "counting 1 rows" not in after
    everything = texts(provider.log_events("counted", since=between - timedelta(hours=1)))
    assert everything.index("counting 1 rows") < everything.index("counting 3 rows")
    # The file carries each line's time; what logs shows is the line as printed.
    raw = local.log_path("counted").read_text()
    assert local.LOG_TIME.match(raw.encode()) is not None
    assert all(not line.startswith("20") for line in after)
    shown = cli("logs", "counted", "--since", iso(between))
    assert shown.exit_code == 0, shown.output
    assert "counting 3 rows" in shown.output and "counting 1 rows" not in shown.output
    recent = cli("logs", "counted", "--since", "1h")
    assert "counting 1 rows" in recent.output and "counting 3 rows" in recent.output


@pytest.mark.slow
def test_local_follow_prints_each_new_line_once_in_order(deployer_home: Path) -> None:
    deployment = deployer.deploy(counted, name="counted", quiet=True)
    deployment.invoke(pd.DataFrame({"x": [1]}))
    provider = local.LocalProvider()
    follower = Follower(
        provider.log_events("counted", follow=True, poll_seconds=0.05),
        until=lambda lines: (
            sum("counting 3 rows" in line for line in lines) >= 1
            and sum(line.endswith(" ended") for line in lines) >= 3
        ),
    )
    follower.wait_for("counting 1 rows")  # what was there first
    deployment.invoke(pd.DataFrame({"x": [1, 2]}))
    deployment.invoke(pd.DataFrame({"x": [1, 2, 3]}))
    follower.join()
    ids = run_ids("counted")
    assert len(ids) == 3
    starts = [line for line in follower.lines if "started" in line and MARKER in line]
    assert [line.split()[2] for line in starts] == ids  # in order, each once
    assert [line for line in follower.lines if line.startswith("counting")] == [
        "counting 1 rows",
        "counting 2 rows",
        "counting 3 rows",
    ]


@pytest.mark.slow
def test_local_follow_of_a_run_stops_at_its_end(deployer_home: Path) -> None:
    deployment = deployer.deploy(slow_steps, name="stepper", quiet=True)
    deployment.invoke(pd.DataFrame({"pause": [0.0]}))  # another run, before
    first = run_ids("stepper")[0]
    provider = local.LocalProvider()
    watcher = Follower(
        provider.log_events(
            "stepper", since=datetime.now(timezone.utc), follow=True, poll_seconds=0.05
        ),
        until=lambda lines: any("step one" in line for line in lines),
    )
    running = threading.Thread(
        target=deployment.invoke, args=(pd.DataFrame({"pause": [1.5]}),), daemon=True
    )
    running.start()
    watcher.wait_for("step one")
    started = next(line for line in watcher.lines if "started" in line)
    run_id = started.split()[2]
    assert run_id != first
    # Follow the run while it runs: what it printed so far, then the rest, then stop.
    follower = Follower(
        provider.log_events("stepper", run_id=run_id, follow=True, poll_seconds=0.05)
    )
    follower.join()
    assert follower.ended_by_itself
    assert follower.lines[0] == started
    assert "step one" in follower.lines and "step two" in follower.lines
    assert follower.lines[-1] == f"{MARKER} {run_id} ended"
    assert all(first not in line for line in follower.lines)
    running.join(10)


def test_local_follow_reads_across_a_rotation(deployer_home: Path) -> None:
    """Lines written just before and after the log is rotated are each read once."""
    path = local.log_path("rotating")
    path.parent.mkdir(parents=True)
    provider = local.LocalProvider()
    source = path  # what log_source gives for a deployed function

    def write(*lines: str) -> None:
        with open(path, "ab") as log:
            log.write(local._stamped("\n".join(lines).encode() + b"\n"))

    write("one", "two")
    page = provider.log_page(source, local.LogQuery(), None)
    assert texts(page.events) == ["one", "two"]
    write("three")
    local._rotate(path)  # "three" now sits in .1, unread
    write("four")
    local._rotate(path)
    write("five")
    with open(path, "ab") as log:
        log.write(b"six, still being writ")  # no line break yet: not a line yet
    after = provider.log_page(source, local.LogQuery(), page.cursor)
    assert texts(after.events) == ["three", "four", "five"]
    with open(path, "ab") as log:
        log.write(b"ten\n")
    last = provider.log_page(source, local.LogQuery(), after.cursor)
    assert texts(last.events) == ["six, still being written"]
    assert len({event.event_id for event in [*page.events, *after.events]}) == 5


# -- AWS: CloudWatch Logs in moto -----------------------------------------------------------


GROUP = "/aws/lambda/scores"


def lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture
def aws_function(aws: str, deployer_home: Path) -> Any:
    """A function deployer owns (its tags say so) and its log group, in moto."""
    import boto3

    from deployer.providers.aws.provider import TAG_PREFIX

    role = boto3.client("iam").create_role(
        RoleName="logs-test",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    boto3.client("lambda").create_function(
        FunctionName="scores",
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": lambda_zip()},
        Tags={f"{TAG_PREFIX}name": "scores", f"{TAG_PREFIX}output": "s3://b/p"},
    )
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=GROUP)
    for stream in ("instance-a", "instance-b"):
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    return logs


def put(logs: Any, stream: str, *events: tuple[datetime, str]) -> None:
    logs.put_log_events(
        logGroupName=GROUP,
        logStreamName=stream,
        logEvents=[
            {"timestamp": int(at.timestamp() * 1000), "message": message + "\n"}
            for at, message in events
        ],
    )


@pytest.mark.slow
def test_aws_since_reads_every_page_from_that_time(
    aws_function: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.providers.aws import provider as aws_provider

    monkeypatch.setattr(aws_provider, "LOG_PAGE_EVENTS", 2)  # nextToken is followed
    now = datetime.now(timezone.utc).replace(microsecond=0)
    put(
        aws_function,
        "instance-a",
        *[(now - timedelta(minutes=10 - i), f"line {i}") for i in range(7)],
    )
    put(aws_function, "instance-b", (now - timedelta(minutes=6, seconds=30), "from b"))
    provider = aws_provider.AwsProvider()
    since = now - timedelta(minutes=7)
    found = texts(provider.log_events("scores", since=since))
    assert found == ["line 3", "from b", "line 4", "line 5", "line 6"]
    # Without --since: the last lines (not the first), in order.
    assert provider.logs("scores", lines=2) == "line 5\nline 6\n"
    result = cli("logs", "scores", "--provider", "aws", "--since", "8m", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["lines"] == found


@pytest.mark.slow
def test_aws_follow_of_a_run_dedupes_overlapping_polls_and_stops_at_its_end(
    aws_function: Any,
) -> None:
    from deployer.providers.aws.provider import AwsProvider

    now = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-1a2b3c4d"
    put(
        aws_function,
        "instance-a",
        (now, f"{MARKER} {run_id} started (manual)"),
        (now + timedelta(milliseconds=5), "scoring"),
    )
    put(aws_function, "instance-b", (now + timedelta(milliseconds=6), "another call, elsewhere"))
    follower = Follower(
        AwsProvider().log_events("scores", run_id=run_id, follow=True, poll_seconds=0.1)
    )
    follower.wait_for("scoring")
    time.sleep(0.5)  # several polls, each reading the last 30 s again
    put(
        aws_function,
        "instance-a",
        (now + timedelta(milliseconds=7), "scored 3 rows"),
        (now + timedelta(milliseconds=8), f"{MARKER} {run_id} ended"),
        (now + timedelta(milliseconds=9), "the next call"),
    )
    follower.join()
    assert follower.ended_by_itself
    assert follower.lines == [
        f"{MARKER} {run_id} started (manual)",
        "scoring",
        "scored 3 rows",
        f"{MARKER} {run_id} ended",
    ]


# -- GCP: Cloud Logging through the fake (contract) ------------------------------------------

PROJECT = "acme-ml"
REGION = "europe-west1"


@pytest.fixture(scope="module")
def google() -> Iterator[Any]:
    from gcp_fake import FakeGoogleCloud

    fake = FakeGoogleCloud().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gcp(google: Any, deployer_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The fake with one function deployer made, every GCP endpoint pointed at it."""
    from deployer.providers.gcp.provider import ENDPOINT_VARIABLES

    google.reset()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    for variable in ENDPOINT_VARIABLES:
        monkeypatch.setenv(variable, google.endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("GOOGLE_CLOUD_REGION", REGION)
    location = f"projects/{PROJECT}/locations/{REGION}"
    google.functions[f"{location}/functions/scores"] = {
        "name": f"{location}/functions/scores",
        "labels": {"deployer-name": "scores"},
        "serviceConfig": {"service": f"{location}/services/scores"},
        "state": "ACTIVE",
    }
    return google


def test_contract_gcp_logs_are_the_services_entries_from_since_page_by_page(
    gcp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.providers.gcp import provider as gcp_provider

    monkeypatch.setattr(gcp_provider, "LOG_PAGE_ENTRIES", 2)
    now = datetime.now(timezone.utc)
    for minutes in range(6, 0, -1):
        at = iso(now - timedelta(minutes=minutes)).replace("Z", "123Z")  # nanoseconds
        gcp.add_log_entry("scores", f"{minutes} minutes ago\n", at, project=PROJECT)
    gcp.add_log_entry("other", "not ours", iso(now - timedelta(minutes=2)), project=PROJECT)
    since = now - timedelta(minutes=4, seconds=30)
    found = texts(gcp_provider.GcpProvider().log_events("scores", since=since))
    assert found == ["4 minutes ago", "3 minutes ago", "2 minutes ago", "1 minutes ago"]
    [first, *rest] = gcp.calls(contains="entries:list")
    assert first.body["filter"] == (
        'resource.type="cloud_run_revision" AND resource.labels.service_name="scores" '
        f'AND timestamp>="{iso(since)}"'
    )
    assert first.body["orderBy"] == "timestamp asc"
    assert [call.body.get("pageToken") is not None for call in rest] == [True]


def test_contract_gcp_follow_of_a_run_prints_each_entry_once_and_stops_at_its_end(
    gcp: Any,
) -> None:
    from deployer.providers.gcp.provider import GcpProvider

    now = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-0ab12345"
    gcp.add_log_entry("scores", f"{MARKER} {run_id} started (http)", iso(now), project=PROJECT)
    gcp.add_log_entry(
        "scores",
        "a call on another instance",
        iso(now + timedelta(milliseconds=1)),
        project=PROJECT,
        instance="instance-2",
    )
    follower = Follower(
        GcpProvider().log_events("scores", run_id=run_id, follow=True, poll_seconds=0.05)
    )
    follower.wait_for("started")
    time.sleep(0.3)  # polls that read the same entries again
    gcp.add_log_entry("scores", "scoring", iso(now + timedelta(milliseconds=2)), project=PROJECT)
    gcp.add_log_entry(
        "scores", f"{MARKER} {run_id} ended", iso(now + timedelta(milliseconds=3)), project=PROJECT
    )
    follower.join()
    assert follower.lines == [
        f"{MARKER} {run_id} started (http)",
        "scoring",
        f"{MARKER} {run_id} ended",
    ]
    marker_filter = gcp.calls(contains="entries:list")[0].body["filter"]
    assert marker_filter.endswith(f'AND textPayload:"{MARKER} {run_id}"')


def test_contract_the_gcp_fake_refuses_a_filter_it_does_not_understand(gcp: Any) -> None:
    body = {
        "resourceNames": [f"projects/{PROJECT}"],
        "filter": 'resource.type="cloud_run_revision" AND severity>=ERROR',
        "orderBy": "timestamp asc",
    }
    response = requests.post(f"{gcp.endpoint}/v2/entries:list", json=body, timeout=10)
    assert response.status_code == 400 and "severity>=ERROR" in response.text
    body["filter"] = 'resource.type="cloud_run_revision"'
    body["orderBy"] = "timestamp desc"
    assert (
        requests.post(f"{gcp.endpoint}/v2/entries:list", json=body, timeout=10).status_code == 400
    )


# -- Azure: Application Insights through the fake (contract) -------------------------------

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
RESOURCE_GROUP = "ml"
APPLICATION_ID = "5e3f6a0c-0000-4000-8000-00000000ab12"
CONNECTION = (
    "InstrumentationKey=11111111-2222-3333-4444-555555555555;"
    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
    f"ApplicationId={APPLICATION_ID}"
)


@pytest.fixture(scope="module")
def azure_cloud() -> Iterator[Any]:
    from azure_fake import FakeAzure

    fake = FakeAzure().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def azure(
    azure_cloud: Any, deployer_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """The fake with one function app deployer made, connected to Application Insights."""
    from azure_fake import IDENTITY_HEADER

    from deployer.providers.azure.provider import (
        APP_INSIGHTS_SETTING,
        APP_INSIGHTS_URL_VARIABLE,
        ARM_URL_VARIABLE,
        app_name,
    )

    for variable in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(ARM_URL_VARIABLE, azure_cloud.endpoint)
    monkeypatch.setenv(APP_INSIGHTS_URL_VARIABLE, azure_cloud.endpoint)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{azure_cloud.endpoint}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure_cloud.certificate))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", RESOURCE_GROUP)
    azure_cloud.reset()
    azure_cloud.add_resource_group(SUBSCRIPTION, RESOURCE_GROUP)
    app = app_name("scores", SUBSCRIPTION, RESOURCE_GROUP)
    site_id = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"Microsoft.Web/sites/{app}"
    )
    azure_cloud.sites[site_id.lower()] = {
        "id": site_id,
        "name": app,
        "type": "Microsoft.Web/sites",
        "kind": "functionapp,linux",
        "location": "westeurope",
        "tags": {"managed-by": "deployer", "deployer-name": "scores"},
        "properties": {"state": "Running", "defaultHostName": f"{app}.azurewebsites.net"},
    }
    azure_cloud.settings[site_id.lower()] = {APP_INSIGHTS_SETTING: CONNECTION}
    azure_cloud.traces[APPLICATION_ID] = []
    azure_cloud.app = app
    azure_cloud.site_id = site_id.lower()
    return azure_cloud


def test_contract_azure_logs_are_the_apps_traces_from_since(azure: Any) -> None:
    from deployer.providers.azure.provider import AzureProvider

    now = datetime.now(timezone.utc)
    for minutes in (5, 3, 1):
        at = iso(now - timedelta(minutes=minutes)).replace("Z", "4Z")  # 7 decimals, as Kusto
        azure.add_trace(APPLICATION_ID, azure.app, f"{minutes} minutes ago", at)
    azure.add_trace(APPLICATION_ID, "another-app", "not ours", iso(now - timedelta(minutes=2)))
    since = now - timedelta(minutes=4)
    assert texts(AzureProvider().log_events("scores", since=since)) == [
        "3 minutes ago",
        "1 minutes ago",
    ]
    [query] = azure.calls(contains="/query")
    assert query.path == f"/v1/apps/{APPLICATION_ID}/query"
    assert f"where timestamp >= datetime({iso(since)})" in query.body["query"]
    assert query.body["timespan"].startswith(iso(since) + "/")


def test_contract_azure_follow_of_a_run_stops_at_its_end(azure: Any) -> None:
    from deployer.providers.azure.provider import AzureProvider

    now = datetime.now(timezone.utc).replace(microsecond=0)
    run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-0ab12345"
    azure.add_trace(APPLICATION_ID, azure.app, f"{MARKER} {run_id} started (timer)", iso(now))
    follower = Follower(
        AzureProvider().log_events("scores", run_id=run_id, follow=True, poll_seconds=0.05)
    )
    follower.wait_for("started")
    time.sleep(0.3)  # polls that read the last five minutes again
    azure.add_trace(APPLICATION_ID, azure.app, "scoring", iso(now + timedelta(milliseconds=1)))
    azure.add_trace(
        APPLICATION_ID, azure.app, f"{MARKER} {run_id} ended", iso(now + timedelta(milliseconds=2))
    )
    follower.join()
    assert follower.lines == [
        f"{MARKER} {run_id} started (timer)",
        "scoring",
        f"{MARKER} {run_id} ended",
    ]


def test_contract_an_azure_app_without_application_insights_says_how_to_connect_one(
    azure: Any,
) -> None:
    from deployer.providers.azure.provider import AzureProvider

    azure.settings[azure.site_id] = {}
    with pytest.raises(ProviderError, match="APPLICATIONINSIGHTS_CONNECTION_STRING") as raised:
        AzureProvider().logs("scores")
    assert f"az functionapp config appsettings set --name {azure.app}" in str(raised.value)
    assert azure.calls(contains="/query") == []


def test_contract_the_azure_fake_refuses_a_query_it_does_not_understand(azure: Any) -> None:
    from azure_fake import TOKEN

    response = requests.post(
        f"{azure.endpoint}/v1/apps/{APPLICATION_ID}/query",
        json={"query": "traces\n| where severityLevel > 2"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
        verify=str(azure.certificate),
    )
    assert response.status_code == 400 and "severityLevel" in response.text


# -- the command ---------------------------------------------------------------------------


@pytest.mark.parametrize("since", ["yesterday", "1w", "2026-13-01"])
def test_a_since_that_is_neither_an_age_nor_a_time_is_refused_naming_the_forms(
    deployer_home: Path, since: str
) -> None:
    result = cli("logs", "counted", "--since", since)
    assert result.exit_code == 2
    assert "use e.g. 30s, 15m, 1h, 2d" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_follow_of_an_ended_run_prints_it_and_exits_as_json_lines(deployer_home: Path) -> None:
    deployment = deployer.deploy(counted, name="counted", quiet=True)
    deployment.invoke(pd.DataFrame({"x": [1, 2]}))
    [run_id] = run_ids("counted")
    result = cli("logs", "counted", "--run", run_id, "--follow", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert records[0]["line"].startswith(f"{MARKER} {run_id} started")
    assert records[-1]["line"] == f"{MARKER} {run_id} ended"
    assert "counting 2 rows" in [record["line"] for record in records]
    assert all(record["name"] == "counted" and record["time"] for record in records)


@pytest.mark.slow
def test_ctrl_c_ends_a_follow_quietly(deployer_home: Path) -> None:
    deployer.deploy(counted, name="counted", quiet=True).invoke(pd.DataFrame({"x": [1]}))
    # This checkout first on the path, wherever the test runs from.
    checkout = str(Path(deployer.__file__).parents[1])
    path = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-m", "deployer.cli", "logs", "counted", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the backlog is printed, then it waits
        assert first.strip()
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "Traceback" not in errors and "Aborted" not in errors
