"""The Cloud Functions entry (runtimes/gcp.py) served by Google's functions-framework.

Each scenario builds a real bundle, turns it into the source zip Cloud
Functions receives (providers/gcp_source.py), unpacks it into a source
directory, installs its requirements.txt into a fresh venv with uv (what Cloud
Build does) and starts ``functions-framework --target handle`` from that venv
in the source directory. Runs land in gcp-storage-emulator, where
read_runs/read_outputs read them back through gs://.

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
    Reply,
    cloud_function,
    function_environment,
    gcs_bucket,
    gcs_emulator,
    scheduler_headers,
    unzip,
)

import deployer
from deployer.api import Built
from deployer.errors import ProviderError
from deployer.providers.gcp_source import (
    ENTRY_POINT,
    FUNCTIONS_FRAMEWORK,
    GCP_RUNTIMES,
    gcp_runtime,
    source_files,
    source_zip,
)
from deployer.runtimes.gcp import parse_schedule_time

pytestmark = pytest.mark.slow
# Fixtures defined in gcp_emulators: importing them is how pytest finds them here.
EMULATOR_FIXTURES = (gcs_emulator, gcs_bucket)

NAME = "scores"
JOB = "projects/acme/locations/europe-west1/jobs/deployer-scores-0"
METRICS = {"mean_score": lambda out: out.score.mean()}
CHECKS = {"scores_in_range": lambda out: out.score.between(0, 1).all()}


def score(features: pd.DataFrame) -> pd.DataFrame:
    return features.assign(score=features.x / 10)


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
    tmp_path: Path, gcs_bucket: str, gcs_emulator: GcsEmulator, function_environments: Path
) -> StartFunction:
    """Build ``function`` into a source zip writing to the test's bucket and serve it."""

    @contextmanager
    def start(
        function: Callable[..., Any],
        *,
        change_source: Callable[[Path], object] | None = None,
        **options: Any,
    ) -> Iterator[CloudFunction]:
        archive = source_zip(build(function, gcs_bucket, **options).bundle)
        source = unzip(archive, tmp_path / "source")
        if change_source is not None:
            change_source(source)
        environment = function_environment(source / "requirements.txt", function_environments)
        emulator = {"STORAGE_EMULATOR_HOST": gcs_emulator.endpoint}
        with cloud_function(source, environment, emulator, target=ENTRY_POINT) as running:
            yield running

    return start


def json_reply(reply: Reply) -> tuple[int, dict[str, Any]]:
    assert reply.headers["Content-Type"] == "application/json", reply
    return reply.status, reply.json()


def scheduled(function: CloudFunction, schedule_time: str, job: str = JOB) -> Reply:
    return function.request(headers=scheduler_headers(schedule_time, job))


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
    assert files["requirements.txt"].decode().splitlines() == [
        *bundle.manifest["requirements"],
        FUNCTIONS_FRAMEWORK,
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
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    features = put_parquet(
        gcs_emulator, gcs_bucket, "features/latest.parquet", pd.DataFrame({"x": [2.0, 4.0]})
    )
    with start_function(score, inputs=features) as function:
        status, body = json_reply(scheduled(function, "2026-11-27T06:00:00Z"))
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
        _, retried = json_reply(scheduled(function, "2026-11-27T07:00:00+01:00"))
        assert retried["run_id"] == first_run
        runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
        assert runs.run_id.tolist() == [first_run]

        _, next_day = json_reply(scheduled(function, "2026-11-28T06:00:00Z"))
        assert next_day["run_id"].startswith("20261128T060000Z-")
        # A second schedule firing at the same minute is a run of its own.
        _, other_job = json_reply(scheduled(function, "2026-11-28T06:00:00Z", f"{JOB}-1"))
        assert other_job["run_id"].startswith("20261128T060000Z-")
        assert other_job["run_id"] != next_day["run_id"]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert sorted(runs.run_id) == sorted([first_run, next_day["run_id"], other_job["run_id"]])
    record = json.loads(
        gcs_emulator.get(gcs_bucket, f"predictions/{NAME}/runs/{first_run}/run.json")
    )
    assert record["fire_time"] == "2026-11-27T06:00:00+00:00"
    assert record["trigger"] == "schedule"


def test_http_post_answers_json_predictions_and_refuses_bodies_that_are_not_a_table(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    with start_function(score) as function:
        status, records = json_reply(function.post_json([{"x": 1.0}, {"x": 5.0}]))
        assert status == 200
        assert records["status"] == "succeeded"
        assert records["predictions"] == [{"x": 1.0, "score": 0.1}, {"x": 5.0, "score": 0.5}]
        assert records["metrics"] == {"mean_score": pytest.approx(0.3)}
        assert records["checks"] == {"scores_in_range": {"passed": True}}
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
            "bad schedule time": function.request(
                headers=scheduler_headers("yesterday at six", JOB)
            ),
        }
        for case, reply in refused.items():
            status, body = json_reply(reply)
            assert status == 400, case
            assert body["error"]["type"] == "BadRequest", case
        assert refused["not JSON"].json()["error"]["message"].startswith("the body is not JSON")
        assert "takes a DataFrame" in refused["not a table"].json()["error"]["message"]
        assert "X-CloudScheduler-ScheduleTime" in refused["bad schedule time"].text

        not_post = function.request(method="GET")
        assert not_post.status == 405 and not_post.headers["Allow"] == "POST"
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert sorted(runs.run_id) == sorted([records["run_id"], columns["run_id"]])
    # `deployer invoke` marks its calls as manual; a plain POST is the HTTP trigger.
    assert runs.set_index("run_id").trigger.to_dict() == {
        records["run_id"]: "http",
        columns["run_id"]: "manual",
    }
    # Three objects per run (output, metrics, run.json) and nothing for the refusals.
    assert len(gcs_emulator.keys(gcs_bucket, "predictions/")) == 6


def test_failed_http_run_is_a_500_without_traceback_and_its_run_json_keeps_it(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    with start_function(broken) as function:
        reply = function.post_json([{"x": 1.0}])
    assert reply.status == 500
    assert "Traceback" not in reply.text
    status, body = json_reply(reply)
    assert body["status"] == "failed"
    assert body["error"] == {"type": "ValueError", "message": "no model for region 'north'"}
    record = json.loads(
        gcs_emulator.get(gcs_bucket, f"predictions/{NAME}/runs/{body['run_id']}/run.json")
    )
    assert record["status"] == "failed" and record["trigger"] == "http"
    assert record["error"]["type"] == "ValueError"
    assert record["error"]["traceback"].startswith("Traceback (most recent call last)")
    assert "in broken" in record["error"]["traceback"]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert runs.error_type.tolist() == ["ValueError"]


def test_failed_scheduled_run_is_a_500_so_scheduler_retries_onto_the_same_run(
    start_function: StartFunction, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    features = put_parquet(gcs_emulator, gcs_bucket, "features.parquet", pd.DataFrame({"x": [1.0]}))
    with start_function(broken, inputs=features) as function:
        first = scheduled(function, "2026-11-27T06:00:00Z")
        retry = scheduled(function, "2026-11-27T06:00:00Z")
    for reply in (first, retry):
        status, body = json_reply(reply)
        assert status == 500 and body["status"] == "failed"
        assert body["error"] == {"type": "ValueError", "message": "no model for region 'north'"}
        assert "Traceback" not in reply.text
    assert first.json()["run_id"] == retry.json()["run_id"]
    runs = deployer.read_runs(NAME, output=output_url(gcs_bucket))
    assert runs.status.tolist() == ["failed"] and runs.trigger.tolist() == ["schedule"]
    assert runs.run_id[0].startswith("20261127T060000Z-")


def test_function_sees_only_its_source_its_requirements_and_the_standard_library(
    start_function: StartFunction, tmp_path: Path, function_environments: Path
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
            assert leaked in failed["error"]["message"]
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
        assert "modified after it was built; redeploy" in body["error"]["message"]
        assert "Traceback" not in reply.text
    assert log.count("Traceback (most recent call last)") == 2
    assert "BundleIntegrityError" in log
    assert gcs_emulator.keys(gcs_bucket) == []
