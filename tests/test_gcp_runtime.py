"""The Cloud Functions entry (runtimes/gcp.py) served by Google's functions-framework.

Each scenario builds a real bundle, turns it into the source zip Cloud
Functions receives (providers/gcp/source.py), unpacks it into a source
directory, installs its requirements.txt into a fresh venv with uv (what Cloud
Build does) and starts ``functions-framework --target handle`` from that venv
in the source directory. Runs land in gcp-storage-emulator, where
read_runs/read_outputs read them back through gs://.

Cloud Scheduler's calls carry an ID token of the scheduler's account, signed
here by a test key whose certificate a loopback server serves in place of
Google's (``google_certificates``; the function finds it through
DEPLOYER_GCP_CERTS_URL, a variable only tests set). The function's environment
names the scheduler's account and audience as deployer sets them.

Bundles are built with the default provider: the gcp provider's checks need a
project and credentials, and the bundle itself is the same for every provider.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sysconfig
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from gcp_emulators import (
    CloudFunction,
    GcsEmulator,
    GoogleCertificates,
    Reply,
    cloud_function,
    function_environment,
    gcs_bucket,
    gcs_emulator,
    google_certificates,
    mint_token,
    scheduler_headers,
    unzip,
)

import deployer
from deployer.api import Built
from deployer.errors import ProviderError
from deployer.providers.gcp.source import (
    ENTRY_POINT,
    FUNCTIONS_FRAMEWORK,
    GCP_RUNTIMES,
    GOOGLE_AUTH,
    REQUESTS,
    gcp_runtime,
    source_files,
    source_zip,
)
from deployer.runtimes import gcp as gcp_runtime_entry
from deployer.runtimes.gcp import parse_schedule_time

pytestmark = pytest.mark.slow
# Fixtures defined in gcp_emulators: importing them is how pytest finds them here.
EMULATOR_FIXTURES = (gcs_emulator, gcs_bucket, google_certificates)

NAME = "scores"
JOB = "projects/acme/locations/europe-west1/jobs/deployer-scores-0"
# What deployer puts in the function's environment (providers/gcp/provider.py).
SCHEDULER_ACCOUNT = "dpl-sch-0123456789abcdef0123@acme.iam.gserviceaccount.com"
AUDIENCE = "https://europe-west1-acme.cloudfunctions.net/scores"
METRICS = {"mean_score": lambda out: out.score.mean()}
CHECKS = {"scores_in_range": lambda out: out.score.between(0, 1).all()}


def score(features: pd.DataFrame) -> pd.DataFrame:
    return features.assign(score=features.x / 10)


def constant_scores() -> pd.DataFrame:
    return pd.DataFrame({"score": [0.5]})


def broken(features: pd.DataFrame) -> pd.DataFrame:
    raise ValueError("no model for region 'north'")


def import_origins(modules: pd.DataFrame) -> list[dict[str, Any]]:
    import importlib

    # The names arrive in the request, so no scan of the function can see
    # them: a module imports only if the environment really has it.
    return [
        {"module": name, "file": importlib.import_module(name).__file__} for name in modules.module
    ]


def output_url(bucket: str) -> str:
    return f"gs://{bucket}/predictions"


def build(function: Callable[..., Any], bucket: str, **options: Any) -> Built:
    """Build ``function`` (with the score metrics and checks unless told) writing to ``bucket``."""
    options.setdefault("metrics", METRICS)
    options.setdefault("checks", CHECKS)
    return deployer.build(function, name=NAME, output=output_url(bucket), **options)


def put_parquet(gcs: GcsEmulator, bucket: str, key: str, frame: pd.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return gcs.put(bucket, key, buffer.getvalue())


@pytest.fixture(scope="session")
def function_environments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Venvs made from source requirements.txt files, one per distinct text, for the session."""
    return tmp_path_factory.mktemp("gcp-function-environments")


StartFunction = Callable[..., AbstractContextManager[CloudFunction]]


@pytest.fixture
def start_function(
    tmp_path: Path,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    function_environments: Path,
    google_certificates: GoogleCertificates,
) -> StartFunction:
    """Build ``function`` into a source zip writing to the test's bucket and serve it, with
    the environment deployer gives it (``environment`` overrides or, as None, removes)."""

    @contextmanager
    def start(
        function: Callable[..., Any],
        *,
        change_source: Callable[[Path], object] | None = None,
        environment: dict[str, str | None] | None = None,
        **options: Any,
    ) -> Iterator[CloudFunction]:
        archive = source_zip(build(function, gcs_bucket, **options).bundle)
        source = unzip(archive, tmp_path / "source")
        if change_source is not None:
            change_source(source)
        venv = function_environment(source / "requirements.txt", function_environments)
        variables: dict[str, str | None] = {
            "STORAGE_EMULATOR_HOST": gcs_emulator.endpoint,
            "DEPLOYER_SCHEDULER_ACCOUNT": SCHEDULER_ACCOUNT,
            "DEPLOYER_SCHEDULER_AUDIENCE": AUDIENCE,
            "DEPLOYER_HTTP_ACCESS": "authenticated",
            "DEPLOYER_GCP_CERTS_URL": google_certificates.url,
            **(environment or {}),
        }
        env = {key: value for key, value in variables.items() if value is not None}
        with cloud_function(source, venv, env, target=ENTRY_POINT) as running:
            yield running

    return start


def json_reply(reply: Reply) -> tuple[int, dict[str, Any]]:
    assert reply.headers["Content-Type"] == "application/json", reply
    return reply.status, reply.json()


def scheduler_token(certificates: GoogleCertificates, **overrides: Any) -> str:
    """The ID token Cloud Scheduler sends for the scheduler's account (``overrides``: claims)."""
    claims = {"email": SCHEDULER_ACCOUNT, **overrides}
    return certificates.token(email=claims.pop("email"), audience=AUDIENCE, **claims)


def scheduled(
    function: CloudFunction,
    certificates: GoogleCertificates,
    schedule_time: str,
    job: str = JOB,
    body: str | None = None,
) -> Reply:
    """A POST as Cloud Scheduler sends it: its headers, its account's token and the
    job's body (deployer's jobs have one only for a schedule with params)."""
    token = scheduler_token(certificates)
    return function.request(body, headers=scheduler_headers(schedule_time, job, token))


def stripped(token: str) -> str:
    """``token`` as Cloud Run hands it to the container after checking it."""
    return token.rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"


def run_keys(gcs: GcsEmulator, bucket: str) -> list[str]:
    return gcs.keys(bucket, f"predictions/{NAME}/")


# The source Cloud Functions receives.


def test_source_is_the_bundle_plus_main_and_requirements_with_functions_framework(
    tmp_path: Path,
) -> None:
    bundle = build(score, "never-written").bundle
    files = dict(source_files(bundle))
    assert set(files) == {path for path, _ in bundle.files} | {"main.py"}
    for path, content in bundle.files:
        if path != "requirements.txt":
            assert files[path] == content, path
    # functions-framework serves the entry; google-auth and requests check the
    # scheduler's token (functions-framework brings neither).
    assert files["requirements.txt"].decode().splitlines() == [
        *bundle.manifest.requirements,
        FUNCTIONS_FRAMEWORK,
        GOOGLE_AUTH,
        REQUESTS,
    ]
    main = files["main.py"].decode()
    assert "from deployer_runtime.gcp import handle" in main
    compile(main, "main.py", "exec")  # functions-framework imports it as is

    archive = source_zip(bundle)
    assert source_zip(build(score, "never-written").bundle) == archive
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        names = opened.namelist()
        assert names == sorted(names) == [path for path, _ in source_files(bundle)]
        assert {entry.date_time for entry in opened.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_a_pinned_functions_framework_replaces_the_default_range() -> None:
    bundle = build(score, "never-written", requirements=["functions-framework==3.9.2"]).bundle
    requirements = dict(source_files(bundle))["requirements.txt"].decode().splitlines()
    assert [line for line in requirements if "functions" in line] == ["functions-framework==3.9.2"]


def test_a_pinned_google_auth_replaces_the_default_range_and_requests_still_comes() -> None:
    bundle = build(score, "never-written", requirements=["google-auth==2.40.0"]).bundle
    requirements = dict(source_files(bundle))["requirements.txt"].decode().splitlines()
    assert [line for line in requirements if line.startswith("google-auth")] == [
        "google-auth==2.40.0"
    ]
    assert REQUESTS in requirements


def test_a_local_module_named_main_is_refused_before_upload() -> None:
    bundle = build(score, "never-written").bundle
    clashing = dataclasses.replace(bundle, files=(*bundle.files, ("main.py", b"x = 1\n")))
    with pytest.raises(ProviderError, match="local module main.py.*rename that module"):
        source_files(clashing)


def test_runtime_follows_the_local_python_minor_and_names_the_ones_that_work() -> None:
    assert gcp_runtime("3.11") == "python311"
    assert gcp_runtime("3.14") == "python314"
    assert list(GCP_RUNTIMES.values()) == [f"python3{minor}" for minor in range(10, 15)]
    for unsupported in ("3.9", "3.15", "2.7"):
        with pytest.raises(ProviderError) as raised:
            gcp_runtime(unsupported)
        message = str(raised.value)
        assert f"no runtime for Python {unsupported}" in message
        assert "3.10, 3.11, 3.12, 3.13, 3.14" in message


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2026-11-27T06:00:00Z", datetime(2026, 11, 27, 6, tzinfo=timezone.utc)),
        ("2026-11-27T07:00:00+01:00", datetime(2026, 11, 27, 6, tzinfo=timezone.utc)),
        (
            "2026-11-27T06:00:00.123456789Z",
            datetime(2026, 11, 27, 6, 0, 0, 123456, tzinfo=timezone.utc),
        ),
    ],
)
def test_schedule_time_header_is_read_as_rfc3339(header: str, expected: datetime) -> None:
    assert parse_schedule_time(header) == expected


def test_a_schedule_time_that_is_not_rfc3339_is_refused() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
        parse_schedule_time("27/Nov/2026:06:00:00")


# The function served by functions-framework.


def test_scheduler_posts_commit_one_run_per_schedule_time_and_job(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
) -> None:
    features = put_parquet(
        gcs_emulator, gcs_bucket, "features/latest.parquet", pd.DataFrame({"x": [2.0, 4.0]})
    )
    certificates = google_certificates
    with start_function(score, inputs=features) as function:
        status, body = json_reply(scheduled(function, certificates, "2026-11-27T06:00:00Z"))
        assert status == 200 and body["status"] == "succeeded"
        assert body["predictions"] == [{"x": 2.0, "score": 0.2}, {"x": 4.0, "score": 0.4}]
        first_run = body["run_id"]
        assert first_run.startswith("20261127T060000Z-")
        runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
        assert runs.run_id.tolist() == [first_run]
        assert runs.status.tolist() == ["succeeded"] and runs.trigger.tolist() == ["schedule"]
        assert runs.rows_in.tolist() == [2] and runs.rows_out.tolist() == [2]
        assert runs["metric.mean_score"].tolist() == [pytest.approx(0.3)]
        outputs = deployer.read_outputs(NAME, output=output_url(gcs_bucket))
        assert outputs.to_dict("records") == [
            {"run_id": first_run, "x": 2.0, "score": 0.2},
            {"run_id": first_run, "x": 4.0, "score": 0.4},
        ]

        # Scheduler's retry of the same firing, its time written with an offset:
        # the same run, written over.
        _, retried = json_reply(scheduled(function, certificates, "2026-11-27T07:00:00+01:00"))
        assert retried["run_id"] == first_run
        runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
        assert runs.run_id.tolist() == [first_run]

        _, next_day = json_reply(scheduled(function, certificates, "2026-11-28T06:00:00Z"))
        assert next_day["run_id"].startswith("20261128T060000Z-")
        # A second schedule firing at the same minute is a run of its own.
        _, other_job = json_reply(
            scheduled(function, certificates, "2026-11-28T06:00:00Z", f"{JOB}-1")
        )
        assert other_job["run_id"].startswith("20261128T060000Z-")
        assert other_job["run_id"] != next_day["run_id"]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert sorted(runs.run_id) == sorted([first_run, next_day["run_id"], other_job["run_id"]])
    record = json.loads(
        gcs_emulator.get(gcs_bucket, f"predictions/{NAME}/runs/{first_run}/run.json")
    )
    assert record["fire_time"] == "2026-11-27T06:00:00+00:00"
    assert record["trigger"] == "schedule"
    # Four tokens checked, Google's certificates fetched once: they are kept
    # for the max-age Google's answer gives.
    assert certificates.fetches == 1


def test_http_post_answers_json_predictions_and_refuses_bodies_that_are_not_a_table(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    with start_function(score) as function:
        status, records = json_reply(function.post_json([{"x": 1.0}, {"x": 5.0}]))
        assert status == 200
        assert records["status"] == "succeeded"
        assert records["predictions"] == [{"x": 1.0, "score": 0.1}, {"x": 5.0, "score": 0.5}]
        assert records["metrics"] == {"mean_score": pytest.approx(0.3)}
        assert records["checks"] == {"scores_in_range": {"passed": True, "severity": "error"}}
        status, columns = json_reply(
            function.request(
                json.dumps({"x": [3.0]}).encode(),
                headers={"Content-Type": "application/json", "X-Deployer-Trigger": "manual"},
            )
        )
        assert status == 200 and columns["predictions"] == [{"x": 3.0, "score": 0.3}]

        refused = {
            "not JSON": function.request("x=1&x=2", headers={"Content-Type": "text/plain"}),
            "not UTF-8": function.request(b"\xff\xfe[]"),
            "not a table": function.post_json([1, 2, 3]),
            "nested": function.post_json({"x": {"a": 1}}),
            "no body": function.request(),
            "no body, manual": function.request(headers={"X-Deployer-Trigger": "manual"}),
        }
        for case, reply in refused.items():
            status, body = json_reply(reply)
            assert status == 400, case
            assert body["error"]["type"] == "BadRequest", case
        assert refused["not JSON"].json()["error"]["message"].startswith("the body is not JSON")
        assert "takes a DataFrame" in refused["not a table"].json()["error"]["message"]
        # An HTTP request never runs over the deployed inputs.
        for case in ("no body", "no body, manual"):
            message = refused[case].json()["error"]["message"]
            assert message.startswith("send the function's input as a JSON body"), case

        not_post = function.request(method="GET")
        assert not_post.status == 405 and not_post.headers["Allow"] == "POST"
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert sorted(runs.run_id) == sorted([records["run_id"], columns["run_id"]])
    # `deployer invoke` marks its calls as manual; a plain POST is the HTTP trigger.
    assert runs.set_index("run_id").trigger.to_dict() == {
        records["run_id"]: "http",
        columns["run_id"]: "manual",
    }
    # Objects for the two runs only (each committed by its run.json), nothing for the refusals.
    keys = gcs_emulator.keys(gcs_bucket, "predictions/")
    run_directories = {key.rsplit("/", 1)[0] for key in keys if "/runs/" in key}
    assert {key for key in keys if "/runs/" not in key} == {
        f"predictions/{NAME}/reference.json",
        f"predictions/{NAME}/schema.json",
        f"predictions/{NAME}/run-index.json.gzip",  # kept by read_runs above
    }
    assert run_directories == {
        f"predictions/{NAME}/runs/{run_id}" for run_id in (records["run_id"], columns["run_id"])
    }
    assert {f"{directory}/run.json" for directory in run_directories} <= set(keys)


def test_failed_http_run_is_a_500_without_traceback_and_its_run_json_keeps_it(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    with start_function(broken) as function:
        reply = function.post_json([{"x": 1.0}])
    assert reply.status == 500
    assert "Traceback" not in reply.text
    status, body = json_reply(reply)
    assert body["status"] == "failed"
    # The caller gets the type and the run id; the message stays in the record.
    assert body["error"]["type"] == "ValueError"
    assert "north" not in reply.text
    record = json.loads(
        gcs_emulator.get(gcs_bucket, f"predictions/{NAME}/runs/{body['run_id']}/run.json")
    )
    assert record["status"] == "failed" and record["trigger"] == "http"
    assert record["error"]["type"] == "ValueError"
    assert record["error"]["message"] == "no model for region 'north'"
    assert record["error"]["traceback"].startswith("Traceback (most recent call last)")
    assert "in broken" in record["error"]["traceback"]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert runs.error_type.tolist() == ["ValueError"]


def test_failed_scheduled_run_is_a_500_so_scheduler_retries_onto_the_same_run(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
) -> None:
    features = put_parquet(gcs_emulator, gcs_bucket, "features.parquet", pd.DataFrame({"x": [1.0]}))
    with start_function(broken, inputs=features) as function:
        first = scheduled(function, google_certificates, "2026-11-27T06:00:00Z")
        retry = scheduled(function, google_certificates, "2026-11-27T06:00:00Z")
    for reply in (first, retry):
        status, body = json_reply(reply)
        assert status == 500 and body["status"] == "failed"
        assert body["error"] == {"type": "ValueError", "message": "no model for region 'north'"}
        assert "Traceback" not in reply.text
    assert first.json()["run_id"] == retry.json()["run_id"]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert runs.status.tolist() == ["failed"] and runs.trigger.tolist() == ["schedule"]
    assert runs.run_id[0].startswith("20261127T060000Z-")


# Who is Cloud Scheduler: only a token of the scheduler's account makes a scheduled run.


def test_forged_scheduler_headers_run_nothing_over_the_inputs(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
) -> None:
    """Anyone who may call the URL can set X-CloudScheduler headers; without the
    scheduler's token they neither read the inputs nor write or backdate a run."""
    inputs_key = "features/latest.parquet"
    features = put_parquet(
        gcs_emulator, gcs_bucket, inputs_key, pd.DataFrame({"x": [2.0, 4.0, 6.0]})
    )
    requests_before = gcs_emulator.object_requests(gcs_bucket, inputs_key)
    # Signed by a key Google's certificates do not hold, with the right claims.
    not_googles = mint_token(
        "someone-elses-key",
        GoogleCertificates.claims(email=SCHEDULER_ACCOUNT, audience=AUDIENCE),
    )
    forged_tokens = {
        "no token": None,
        "not a JWT": "not-a-jwt",
        "signed by another key": not_googles,
    }
    with start_function(score, inputs=features) as function:
        for case, token in forged_tokens.items():
            reply = function.request(headers=scheduler_headers("2020-01-01T06:00:00Z", JOB, token))
            status, body = json_reply(reply)
            assert status == 400, (case, body)
            assert "predictions" not in body, case
            assert body["error"]["type"] == "BadRequest", case
            assert "JSON body" in body["error"]["message"], case
        assert run_keys(gcs_emulator, gcs_bucket) == []
        # Not even the object's metadata was asked for.
        assert gcs_emulator.object_requests(gcs_bucket, inputs_key) == requests_before

        # With a body, it is an ordinary HTTP run over that body: headers ignored.
        reply = function.request(
            json.dumps([{"x": 1.0}]),
            headers={
                **scheduler_headers("2020-01-01T06:00:00Z", JOB),
                "Content-Type": "application/json",
            },
        )
        log = function.log
    status, body = json_reply(reply)
    assert status == 200 and body["predictions"] == [{"x": 1.0, "score": 0.1}]
    assert not body["run_id"].startswith("20200101T060000Z")
    record = json.loads(
        gcs_emulator.get(gcs_bucket, f"predictions/{NAME}/runs/{body['run_id']}/run.json")
    )
    assert record["trigger"] == "http" and "fire_time" not in record
    assert record["rows_in"] == 1
    assert gcs_emulator.object_requests(gcs_bucket, inputs_key) == requests_before
    assert log.count("is not Cloud Scheduler's") == len(forged_tokens) + 1
    assert "there is no bearer token" in log and "does not verify" in log


def test_only_a_token_of_the_schedulers_account_for_this_function_makes_a_scheduled_run(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
) -> None:
    features = put_parquet(gcs_emulator, gcs_bucket, "features.parquet", pd.DataFrame({"x": [2.0]}))
    certificates = google_certificates
    now = int(datetime.now(timezone.utc).timestamp())
    signed_but_wrong = {
        "another account": {"email": "someone@acme.iam.gserviceaccount.com"},
        "another audience": {"aud": "https://europe-west1-acme.cloudfunctions.net/other"},
        "expired": {"iat": now - 7200, "exp": now - 3600},
        "email not verified": {"email_verified": False},
        "another issuer": {"iss": "https://issuer.example.com"},
    }
    with start_function(score, inputs=features) as function:
        for case, claims in signed_but_wrong.items():
            token = scheduler_token(certificates, **claims)
            reply = function.request(headers=scheduler_headers("2026-11-27T06:00:00Z", JOB, token))
            status, body = json_reply(reply)
            assert status == 400 and "predictions" not in body, (case, body)
        # A token Cloud Run checked is read from the header Cloud Run checks:
        # X-Serverless-Authorization when present, else Authorization.
        someone = stripped(
            scheduler_token(certificates, email="someone@acme.iam.gserviceaccount.com")
        )
        reply = function.request(
            headers={
                **scheduler_headers("2026-11-27T06:00:00Z", JOB, scheduler_token(certificates)),
                "X-Serverless-Authorization": f"Bearer {someone}",
            }
        )
        assert json_reply(reply)[0] == 400
        assert run_keys(gcs_emulator, gcs_bucket) == []

        bad_time = function.request(
            headers=scheduler_headers("yesterday at six", JOB, scheduler_token(certificates))
        )
        status, body = json_reply(bad_time)
        assert status == 400 and "X-CloudScheduler-ScheduleTime" in body["error"]["message"]

        status, body = json_reply(scheduled(function, certificates, "2026-11-27T06:00:00Z"))
    assert status == 200 and body["predictions"] == [{"x": 2.0, "score": 0.2}]
    record = json.loads(
        gcs_emulator.get(gcs_bucket, f"predictions/{NAME}/runs/{body['run_id']}/run.json")
    )
    assert record["trigger"] == "schedule"
    assert record["fire_time"] == "2026-11-27T06:00:00+00:00"
    assert body["run_id"].startswith("20261127T060000Z-")


@pytest.mark.parametrize(
    ("access", "scheduled_run"), [("authenticated", True), ("public", False), (None, False)]
)
def test_a_token_cloud_run_checked_counts_only_when_every_caller_is_authenticated(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
    access: str | None,
    scheduled_run: bool,
) -> None:
    """Cloud Run hands a private service the token it checked with the signature
    replaced; on a public service nothing checked it, so anyone could send one."""
    features = put_parquet(gcs_emulator, gcs_bucket, "features.parquet", pd.DataFrame({"x": [2.0]}))
    token = stripped(scheduler_token(google_certificates))
    with start_function(
        score, inputs=features, environment={"DEPLOYER_HTTP_ACCESS": access}
    ) as function:
        reply = function.request(headers=scheduler_headers("2026-11-27T06:00:00Z", JOB, token))
    status, body = json_reply(reply)
    if scheduled_run:
        assert status == 200 and body["run_id"].startswith("20261127T060000Z-")
        assert body["predictions"] == [{"x": 2.0, "score": 0.2}]
    else:
        assert status == 400 and "predictions" not in body
        assert run_keys(gcs_emulator, gcs_bucket) == []
    # Nothing signed was checked, so Google's certificates were never fetched.
    assert google_certificates.fetches == 0


def test_without_the_schedulers_account_and_audience_no_request_is_a_scheduled_run(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
) -> None:
    features = put_parquet(gcs_emulator, gcs_bucket, "features.parquet", pd.DataFrame({"x": [2.0]}))
    with start_function(
        score, inputs=features, environment={"DEPLOYER_SCHEDULER_AUDIENCE": None}
    ) as function:
        reply = scheduled(function, google_certificates, "2026-11-27T06:00:00Z")
        log = function.log
    assert json_reply(reply)[0] == 400
    assert run_keys(gcs_emulator, gcs_bucket) == []
    assert "DEPLOYER_SCHEDULER_AUDIENCE are not both set" in log


def flag(frame: pd.DataFrame, *, threshold: float = 0.5, label: str = "high") -> pd.DataFrame:
    return frame.assign(flag=(frame.x > threshold).map({True: label, False: "low"}))


def test_a_scheduler_jobs_body_and_an_http_body_set_params_and_the_runs_record_them(
    start_function: StartFunction,
    gcs_bucket: str,
    gcs_emulator: GcsEmulator,
    google_certificates: GoogleCertificates,
) -> None:
    features = put_parquet(
        gcs_emulator, gcs_bucket, "features.parquet", pd.DataFrame({"x": [0.2, 0.6, 0.8]})
    )
    fire_time = "2026-11-27T06:00:00Z"
    with start_function(flag, inputs=features, metrics={}, checks={}) as function:
        # The body deployer gives the job of Cron(..., params={"threshold": 0.7}).
        job_body = json.dumps({"params": {"threshold": 0.7}})
        status, strict = json_reply(
            scheduled(function, google_certificates, fire_time, JOB, job_body)
        )
        assert status == 200, function.log
        assert [row["flag"] for row in strict["predictions"]] == ["low", "low", "high"]
        # The job of a schedule without params sends no body: the defaults.
        status, plain = json_reply(scheduled(function, google_certificates, fire_time, f"{JOB}-1"))
        assert status == 200
        assert [row["flag"] for row in plain["predictions"]] == ["low", "high", "high"]
        wrong = json.dumps({"params": {"treshold": 0.7}})
        status, refused = json_reply(
            scheduled(function, google_certificates, fire_time, f"{JOB}-2", wrong)
        )
        assert status == 400 and refused["error"]["type"] == "BadRequest"
        assert "no keyword-only parameter treshold" in refused["error"]["message"]
        status, posted = json_reply(
            function.post_json({"data": [{"x": 0.6}], "params": {"label": "alert"}})
        )
        assert status == 200 and posted["predictions"] == [{"x": 0.6, "flag": "alert"}]
    output = output_url(gcs_bucket)
    runs = deployer.read_runs(NAME, output=output).set_index("run_id")
    assert sorted(runs.index) == sorted([strict["run_id"], plain["run_id"], posted["run_id"]])
    assert runs.trigger.to_dict() == {
        strict["run_id"]: "schedule",
        plain["run_id"]: "schedule",
        posted["run_id"]: "http",
    }
    assert runs.loc[strict["run_id"], "param.threshold"] == 0.7
    assert deployer.read_run(NAME, strict["run_id"], output=output)["params"] == {"threshold": 0.7}
    assert "params" not in deployer.read_run(NAME, plain["run_id"], output=output)
    assert deployer.read_run(NAME, posted["run_id"], output=output)["params"] == {"label": "alert"}


def test_a_body_less_request_calls_a_function_without_input(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    with start_function(constant_scores, metrics={}, checks={}) as function:
        status, body = json_reply(function.request())
    assert status == 200 and body["predictions"] == [{"score": 0.5}]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert runs.trigger.tolist() == ["http"]


def test_the_certificates_url_override_is_a_loopback_test_hook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DEPLOYER_GCP_CERTS_URL", raising=False)
    assert gcp_runtime_entry.certificates_url() == "https://www.googleapis.com/oauth2/v1/certs"
    for loopback in ("http://127.0.0.1:8123/certs", "http://localhost:8123/certs"):
        monkeypatch.setenv("DEPLOYER_GCP_CERTS_URL", loopback)
        assert gcp_runtime_entry.certificates_url() == loopback
    for elsewhere in ("https://certs.example.com/v1", "http://10.0.0.8/certs", "file:///tmp/c"):
        monkeypatch.setenv("DEPLOYER_GCP_CERTS_URL", elsewhere)
        assert gcp_runtime_entry.certificates_url() == "https://www.googleapis.com/oauth2/v1/certs"
    assert capsys.readouterr().err.count("it is a test hook") == 3


def test_function_sees_only_its_source_its_requirements_and_the_standard_library(
    start_function: StartFunction, tmp_path: Path, function_environments: Path, gcs_bucket: str
) -> None:
    import hypothesis  # installed here, so only isolation can keep it out

    assert hypothesis.__file__
    with start_function(import_origins, metrics={}, checks={}) as function:
        status, body = json_reply(
            function.post_json({"module": ["pandas", "deployer_runtime", "json"]})
        )
        assert status == 200, body
        origins = {row["module"]: Path(row["file"]) for row in body["predictions"]}
        for leaked in ("hypothesis", "deployer"):
            status, failed = json_reply(function.post_json({"module": [leaked]}))
            assert status == 500
            assert failed["error"]["type"] == "ModuleNotFoundError"
            # The HTTP caller gets the type; the message is in the run record.
            assert f"'{leaked}'" not in failed["error"]["message"]
            failures = deployer.read_runs(NAME, output=output_url(gcs_bucket))
            message = failures.set_index("run_id").loc[failed["run_id"], "error_message"]
            assert leaked in message
    assert origins["pandas"].is_relative_to(function_environments)
    assert origins["deployer_runtime"].is_relative_to(tmp_path / "source")
    assert origins["json"].is_relative_to(sysconfig.get_paths()["stdlib"])


def test_a_bundle_changed_after_build_is_a_500_and_the_log_keeps_the_traceback(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    def swap_pickle(source: Path) -> None:
        (source / "function.pkl").write_bytes(b"not the pickle that was built")

    with start_function(score, change_source=swap_pickle) as function:
        replies = [function.post_json([{"x": 1.0}]) for _ in range(2)]
        log = function.log
    for reply in replies:  # and stays refused: nothing half-loaded is kept
        status, body = json_reply(reply)
        assert status == 500
        assert body["error"]["type"] == "BundleIntegrityError"
        assert "modified after it was built" not in reply.text  # in the log, not the answer
        assert "Traceback" not in reply.text
    assert "modified after it was built; redeploy" in log
    assert log.count("Traceback (most recent call last)") == 2
    assert "BundleIntegrityError" in log
    assert gcs_emulator.keys(gcs_bucket) == []


def slow_score(frame: pd.DataFrame) -> pd.DataFrame:
    import time

    time.sleep(4)
    return frame.assign(score=1.0)


def test_a_run_past_its_timeout_is_recorded_as_failed_before_the_deadline(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    import threading
    import time

    replies: list[Reply] = []
    with start_function(slow_score, timeout=2) as function:
        caller = threading.Thread(target=lambda: replies.append(function.post_json([{"x": 1}])))
        caller.start()
        # Cloud Functions would stop the request at 2 s; before that, the run
        # wrote its own record of the timeout.
        record: dict[str, Any] = {}
        deadline = time.monotonic() + 3.5
        while not record and time.monotonic() < deadline:
            records = [key for key in gcs_emulator.keys(gcs_bucket) if key.endswith("/run.json")]
            if records:
                record = json.loads(gcs_emulator.get(gcs_bucket, records[0]))
            time.sleep(0.05)
        caller.join(timeout=30)
    assert caller.is_alive() is False and replies  # here nothing stopped it: it finished
    assert record["status"] == "failed" and record["error"]["type"] == "Timeout"
    assert "2 s timeout" in record["error"]["message"]
