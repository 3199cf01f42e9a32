"""The Lambda entry (runtimes/aws.py) run by AWS's own awslambdaric, against moto's S3.

Each test builds a real bundle, unpacks it alone as the task root and starts
one Lambda execution environment for it (tests/lambda_harness.py): only the
bundle, its dependency layer, Lambda's runtime directory (awslambdaric, boto3)
and the standard library are importable there.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import sysconfig
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from lambda_harness import (
    LambdaFunction,
    LambdaInitError,
    install_layer,
    install_runtime,
    lambda_function,
)

import deployer
from deployer.archive import write_tar_zst
from deployer.providers.aws.lambda_package import SLIM_LEVEL, decompressor_wheel, lambda_target

pytestmark = pytest.mark.slow

NAME = "scores"
METRICS = {"mean_score": lambda out: out.score.mean()}
CHECKS = {"scores_in_range": lambda out: out.score.between(0, 1).all()}


def score(features: pd.DataFrame) -> pd.DataFrame:
    return features.assign(score=features.x / 10)


def broken(features: pd.DataFrame) -> pd.DataFrame:
    raise ValueError("no model for region 'north'")


def nap(request: pd.DataFrame) -> pd.DataFrame:
    import time

    time.sleep(float(request.seconds.iloc[0]))
    return request.assign(score=0.5)


def nap_for(seconds: float) -> dict[str, Any]:
    return {"deployer": {"trigger": "manual", "payload": [{"seconds": seconds}]}}


def import_origins(modules: pd.DataFrame) -> list[dict[str, Any]]:
    import importlib

    # The names arrive in the request, so no scan of the function can see
    # them: a module imports only if the environment really has it.
    return [
        {"module": name, "file": importlib.import_module(name).__file__} for name in modules.module
    ]


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lambda's /var/runtime: awslambdaric and boto3, outside the user's code."""
    return install_runtime(tmp_path_factory.mktemp("lambda-runtime"))


@pytest.fixture(scope="session")
def layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lambda-layers")


def moto_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def output_url(bucket: str) -> str:
    return f"s3://{bucket}/predictions"


def build_task_root(
    function: Callable[..., Any], directory: Path, bucket: str, **options: Any
) -> Path:
    """Build ``function`` (with the score metrics and checks unless told) and unpack it."""
    options.setdefault("metrics", METRICS)
    options.setdefault("checks", CHECKS)
    built = deployer.build(function, name=NAME, output=output_url(bucket), **options)
    return built.bundle.extract(directory)


StartLambda = Callable[..., AbstractContextManager[LambdaFunction]]


@pytest.fixture
def start_lambda(
    tmp_path: Path, s3_bucket: str, moto_server: str, lambda_runtime: Path, layer_cache: Path
) -> StartLambda:
    """Build ``function`` into a bundle writing to the test's bucket and run it on Lambda."""

    @contextmanager
    def start(function: Callable[..., Any], **options: Any) -> Iterator[LambdaFunction]:
        # What the provider sets in the function's configuration besides the bundle.
        extra_environment = options.pop("environment", {})
        task_root = build_task_root(function, tmp_path / "task", s3_bucket, **options)
        layer = install_layer(task_root / "requirements.txt", layer_cache)
        environment = {**moto_environment(moto_server), **extra_environment}
        with lambda_function(
            task_root, [layer], environment, runtime=lambda_runtime, name=NAME
        ) as running:
            yield running

    return start


def scheduled(fire_time: str) -> dict[str, Any]:
    """What deployer's EventBridge Scheduler target sends."""
    return {"deployer": {"trigger": "schedule", "schedule": "daily", "scheduled_time": fire_time}}


def function_url_request(body: str, *, base64_encoded: bool = False) -> dict[str, Any]:
    """A Lambda function URL POST, payload format 2.0."""
    if base64_encoded:
        body = base64.b64encode(body.encode()).decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.on.aws"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:06:00:00 +0000",
            "timeEpoch": 1795759200000,
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def http_reply(outcome: tuple[str, Any]) -> tuple[int, dict[str, Any]]:
    kind, reply = outcome
    assert kind == "response", reply
    assert reply["headers"] == {"content-type": "application/json"}
    return reply["statusCode"], json.loads(reply["body"])


def direct_reply(outcome: tuple[str, Any]) -> tuple[int, dict[str, Any]]:
    kind, reply = outcome
    assert kind == "response", reply
    return reply["http_status"], reply["body"]


def stored_keys(bucket: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="predictions/")
    return [item["Key"] for item in listing.get("Contents", [])]


def put_parquet(bucket: str, key: str, frame: pd.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    return f"s3://{bucket}/{key}"


def test_scheduled_event_commits_one_run_per_fire_time(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    features = put_parquet(s3_bucket, "features/latest.parquet", pd.DataFrame({"x": [2.0, 4.0]}))
    with start_lambda(score, inputs=features) as function:
        status, body = direct_reply(function.invoke(scheduled("2026-11-27T06:00:00Z")))
        assert status == 200 and body["status"] == "succeeded"
        assert body["predictions"] == [{"x": 2.0, "score": 0.2}, {"x": 4.0, "score": 0.4}]
        first_run = body["run_id"]
        assert first_run.startswith("20261127T060000Z-")
        runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
        assert runs.run_id.tolist() == [first_run]
        assert runs.status.tolist() == ["succeeded"] and runs.trigger.tolist() == ["schedule"]
        assert runs.rows_in.tolist() == [2] and runs.rows_out.tolist() == [2]
        assert runs["metric.mean_score"].tolist() == [pytest.approx(0.3)]
        outputs = deployer.read_outputs(NAME, output=output_url(s3_bucket))
        assert outputs.to_dict("records") == [
            {"run_id": first_run, "x": 2.0, "score": 0.2},
            {"run_id": first_run, "x": 4.0, "score": 0.4},
        ]

        # Scheduler's retry of the same firing: the same run, written over.
        _, retried = direct_reply(function.invoke(scheduled("2026-11-27T06:00:00Z")))
        assert retried["run_id"] == first_run
        assert deployer.read_runs(NAME, output=output_url(s3_bucket)).run_id.tolist() == [first_run]

        _, next_day = direct_reply(function.invoke(scheduled("2026-11-28T06:00:00Z")))
        assert next_day["run_id"].startswith("20261128T060000Z-")
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert runs.run_id.tolist() == [first_run, next_day["run_id"]]
    keys = stored_keys(s3_bucket)
    assert len({key.rsplit("/", 1)[0] for key in keys if "/runs/" in key}) == 2
    # Each run's profile, and beside the runs what the next run compares with:
    # the first run's profiles as the reference, the last run's columns.
    assert {key for key in keys if key.endswith("profile.json")} == {
        f"predictions/scores/runs/{run_id}/profile.json" for run_id in runs.run_id
    }
    assert {key for key in keys if "/runs/" not in key} == {
        "predictions/scores/reference.json",
        "predictions/scores/schema.json",
        "predictions/scores/run-index.json.gzip",  # kept by read_runs above
    }


def test_function_url_answers_json_and_base64_bodies_with_predictions(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(score) as function:
        records = json.dumps([{"x": 1.0}, {"x": 5.0}])
        status, body = http_reply(function.invoke(function_url_request(records)))
        assert status == 200
        assert body["status"] == "succeeded"
        assert body["predictions"] == [{"x": 1.0, "score": 0.1}, {"x": 5.0, "score": 0.5}]
        assert body["metrics"] == {"mean_score": pytest.approx(0.3)}
        assert body["checks"] == {"scores_in_range": {"passed": True, "severity": "error"}}

        columns = json.dumps({"x": [3.0]})
        status, encoded = http_reply(
            function.invoke(function_url_request(columns, base64_encoded=True))
        )
        assert status == 200 and encoded["predictions"] == [{"x": 3.0, "score": 0.3}]
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert sorted(runs.run_id) == sorted([body["run_id"], encoded["run_id"]])
    assert runs.trigger.tolist() == ["http", "http"]
    assert sorted(deployer.read_outputs(NAME, output=output_url(s3_bucket)).score) == [
        pytest.approx(0.1),
        pytest.approx(0.3),
        pytest.approx(0.5),
    ]


def test_function_url_rejects_bodies_that_are_not_a_table_without_writing_a_run(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(score) as function:
        status, not_json = http_reply(function.invoke(function_url_request("x=1&x=2")))
        assert status == 400
        assert not_json["error"]["type"] == "BadRequest"
        assert not_json["error"]["message"].startswith("the body is not JSON")

        status, not_table = http_reply(function.invoke(function_url_request("[1, 2, 3]")))
        assert status == 400
        assert "takes a DataFrame" in not_table["error"]["message"]

        status, nested = http_reply(function.invoke(function_url_request('{"x": {"a": 1}}')))
        assert status == 400 and nested["error"]["type"] == "BadRequest"
    assert stored_keys(s3_bucket) == []
    assert deployer.read_runs(NAME, output=output_url(s3_bucket)).empty


def test_function_url_failure_is_a_500_without_traceback_and_the_failed_run_keeps_it(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(broken) as function:
        kind, reply = function.invoke(function_url_request('[{"x": 1.0}]'))
    assert kind == "response", reply  # a failed run is an answer, not a crashed function
    assert reply["statusCode"] == 500
    assert "Traceback" not in reply["body"]
    body = json.loads(reply["body"])
    assert body["status"] == "failed"
    # A function URL's caller gets the type and the run, not the message.
    assert body["error"]["type"] == "ValueError"
    assert "north" not in reply["body"]
    run_json = f"predictions/{NAME}/runs/{body['run_id']}/run.json"
    stored = boto3.client("s3").get_object(Bucket=s3_bucket, Key=run_json)["Body"].read()
    record = json.loads(stored)
    assert record["status"] == "failed" and record["trigger"] == "http"
    assert record["error"] == {
        "type": "ValueError",
        "message": "no model for region 'north'",
        "traceback": record["error"]["traceback"],
    }
    assert record["error"]["traceback"].startswith("Traceback (most recent call last)")
    assert "in broken" in record["error"]["traceback"]
    assert deployer.read_runs(NAME, output=output_url(s3_bucket)).error_type.tolist() == [
        "ValueError"
    ]


def test_failed_scheduled_run_is_a_lambda_error_and_its_retry_overwrites_it(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    features = put_parquet(s3_bucket, "features.parquet", pd.DataFrame({"x": [1.0]}))
    with start_lambda(broken, inputs=features) as function:
        first = function.invoke(scheduled("2026-11-27T06:00:00Z"))
        retry = function.invoke(scheduled("2026-11-27T06:00:00Z"))
    # An error Lambda sees (metrics, alarms, its own retry of the event)...
    assert first[0] == "error" and retry[0] == "error"
    assert first[1]["errorType"] == "ScheduledRunFailed"
    assert "ValueError" in first[1]["errorMessage"]
    # ...whose retry lands on the same run instead of adding one.
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert runs.status.tolist() == ["failed"]
    assert runs.run_id[0].startswith("20261127T060000Z-")


def test_direct_invoke_runs_the_payload_and_refuses_one_that_is_not_a_table(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(score) as function:
        manual = {"deployer": {"trigger": "manual", "payload": [{"x": 7.0}]}}
        status, body = direct_reply(function.invoke(manual))
        assert status == 200 and body["status"] == "succeeded"
        assert body["predictions"] == [{"x": 7.0, "score": 0.7}]
        assert body["metrics"] == {"mean_score": pytest.approx(0.7)}

        refused = {"deployer": {"trigger": "manual", "payload": "seven"}}
        status, error = direct_reply(function.invoke(refused))
        assert status == 400 and error["error"]["type"] == "BadRequest"
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert runs.run_id.tolist() == [body["run_id"]]
    assert runs.trigger.tolist() == ["manual"]


def flag(frame: pd.DataFrame, *, threshold: float = 0.5, label: str = "high") -> pd.DataFrame:
    return frame.assign(flag=(frame.x > threshold).map({True: label, False: "low"}))


def test_function_url_body_with_params_sets_them_and_the_run_records_them(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(flag, metrics={}, checks={}) as function:
        envelope = {
            "data": [{"x": 0.6}, {"x": 0.8}],
            "params": {"threshold": 0.7, "label": "alert"},
        }
        status, strict = http_reply(function.invoke(function_url_request(json.dumps(envelope))))
        assert status == 200, function.output()
        assert strict["predictions"] == [{"x": 0.6, "flag": "low"}, {"x": 0.8, "flag": "alert"}]
        # A plain-data body keeps its meaning, with the defaults.
        status, plain = http_reply(function.invoke(function_url_request('[{"x": 0.6}]')))
        assert status == 200 and plain["predictions"] == [{"x": 0.6, "flag": "high"}]
        wrong = {"data": [{"x": 0.6}], "params": {"treshold": 0.7}}
        status, refused = http_reply(function.invoke(function_url_request(json.dumps(wrong))))
    assert status == 400
    assert refused == {
        "error": {
            "type": "BadRequest",
            "message": "flag() has no keyword-only parameter treshold: the ones a run may set "
            "are label, threshold",
        }
    }
    output = output_url(s3_bucket)
    runs = deployer.read_runs(NAME, output=output).set_index("run_id")
    assert sorted(runs.index) == sorted([strict["run_id"], plain["run_id"]])  # none refused
    assert runs.loc[strict["run_id"], "param.threshold"] == 0.7
    assert runs.loc[strict["run_id"], "param.label"] == "alert"
    assert pd.isna(runs.loc[plain["run_id"], "param.threshold"])
    record = deployer.read_run(NAME, strict["run_id"], output=output)
    assert record["trigger"] == "http"
    assert record["params"] == {"threshold": 0.7, "label": "alert"}
    assert "params" not in deployer.read_run(NAME, plain["run_id"], output=output)


def test_direct_invoke_and_scheduled_events_set_params_and_the_runs_record_them(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    features = put_parquet(s3_bucket, "features.parquet", pd.DataFrame({"x": [0.2, 0.6, 0.8]}))
    with start_lambda(flag, inputs=features, metrics={}, checks={}) as function:
        manual = {
            "deployer": {"trigger": "manual", "payload": [{"x": 0.6}], "params": {"label": "alert"}}
        }
        status, invoked = direct_reply(function.invoke(manual))
        assert status == 200, function.output()
        assert invoked["predictions"] == [{"x": 0.6, "flag": "alert"}]
        # What the provider's schedule target sends for Cron(..., params=...).
        event = scheduled("2026-11-27T06:00:00Z")
        event["deployer"]["params"] = {"threshold": 0.7}
        status, fired = direct_reply(function.invoke(event))
        assert status == 200 and fired["status"] == "succeeded", function.output()
        assert [row["flag"] for row in fired["predictions"]] == ["low", "low", "high"]
        refused = {
            "deployer": {"trigger": "manual", "payload": [{"x": 0.6}], "params": {"label": 1}}
        }
        status, error = direct_reply(function.invoke(refused))
    assert status == 400 and error["error"]["type"] == "BadRequest"
    assert "params.label must be a string" in error["error"]["message"]
    output = output_url(s3_bucket)
    runs = deployer.read_runs(NAME, output=output).set_index("run_id")
    assert sorted(runs.index) == sorted([invoked["run_id"], fired["run_id"]])
    assert runs.loc[fired["run_id"], "trigger"] == "schedule"
    assert runs.loc[fired["run_id"], "param.threshold"] == 0.7
    assert deployer.read_run(NAME, invoked["run_id"], output=output)["params"] == {"label": "alert"}
    assert deployer.read_run(NAME, fired["run_id"], output=output)["params"] == {"threshold": 0.7}


def test_function_sees_only_its_bundle_layer_runtime_and_the_standard_library(
    start_lambda: StartLambda, lambda_runtime: Path, layer_cache: Path
) -> None:
    import hypothesis  # installed here, so only isolation can keep it out

    assert hypothesis.__file__
    with start_lambda(import_origins, metrics={}, checks={}) as function:
        where = {
            "deployer": {"trigger": "manual", "payload": {"module": ["pandas", "boto3", "json"]}}
        }
        status, body = direct_reply(function.invoke(where))
        assert status == 200, body
        origins = {row["module"]: Path(row["file"]) for row in body["predictions"]}
        for leaked in ("hypothesis", "deployer"):
            payload = {"module": [leaked]}
            status, failed = direct_reply(
                function.invoke({"deployer": {"trigger": "manual", "payload": payload}})
            )
            assert status == 500
            assert failed["error"]["type"] == "ModuleNotFoundError"
            assert leaked in failed["error"]["message"]
    assert origins["pandas"].is_relative_to(layer_cache)
    assert origins["boto3"].is_relative_to(lambda_runtime)
    assert origins["json"].is_relative_to(sysconfig.get_paths()["stdlib"])


def test_missing_handler_is_an_init_error_that_names_it(
    tmp_path: Path, lambda_runtime: Path
) -> None:
    task_root = build_task_root(score, tmp_path / "task", "never-written")
    handler = "deployer_runtime.aws.no_such_handler"
    with (
        lambda_function(task_root, [], {}, handler, runtime=lambda_runtime) as function,
        pytest.raises(LambdaInitError, match="Handler 'no_such_handler' missing"),
    ):
        function.invoke(scheduled("2026-11-27T06:00:00Z"), timeout=30)
    assert function.process.returncode not in (None, 0)


def pack_archive(directory: Path, archive: Path) -> str:
    """A tar.zst of ``directory``'s contents as slim mode ships them; returns its sha256."""
    files = [path for path in directory.rglob("*") if path.is_file()]
    slim = [(str(path.relative_to(directory)), path) for path in files]
    write_tar_zst(slim, archive, level=SLIM_LEVEL)
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def add_decompressor(task_root: Path, cache: Path) -> None:
    """What deploy adds to a slim function's code zip: the zstd decompressor's wheel,
    which the harness's isolated Python (``-I -S``) can only find there."""
    wheel = decompressor_wheel(
        lambda_target(f"{sys.version_info.major}.{sys.version_info.minor}"), cache
    )
    assert wheel is not None
    with zipfile.ZipFile(wheel) as content:
        content.extractall(task_root)


def test_slim_dependencies_are_fetched_once_per_execution_environment(
    tmp_path: Path,
    s3_bucket: str,
    moto_server: str,
    lambda_runtime: Path,
    layer_cache: Path,
) -> None:
    task_root = build_task_root(score, tmp_path / "task", s3_bucket)
    add_decompressor(task_root, layer_cache)
    layer = install_layer(task_root / "requirements.txt", layer_cache)
    archive = tmp_path / "deps.tar.zst"
    sha256 = pack_archive(layer / "python", archive)
    s3 = boto3.client("s3")
    s3.upload_file(str(archive), s3_bucket, "deps/deps.tar.zst")
    slim_dir = tmp_path / "lambda-tmp"  # Lambda's /tmp
    slim_dir.mkdir()
    env = {
        **moto_environment(moto_server),
        "DEPLOYER_SLIM_ARCHIVE": f"s3://{s3_bucket}/deps/deps.tar.zst",
        "DEPLOYER_SLIM_SHA256": sha256,
        "DEPLOYER_SLIM_DIR": str(slim_dir),
    }
    request = function_url_request(json.dumps([{"x": 2.0}]))
    with lambda_function(task_root, [], env, runtime=lambda_runtime, name=NAME) as function:
        status, cold = http_reply(function.invoke(request))
        assert status == 200, function.output()
        assert cold["predictions"] == [{"x": 2.0, "score": 0.2}]
        # Gone from S3: a warm instance must not need it again.
        s3.delete_object(Bucket=s3_bucket, Key="deps/deps.tar.zst")
        status, warm = http_reply(function.invoke(request))
        assert status == 200 and warm["predictions"] == cold["predictions"]
    unpacked = slim_dir / f"deps-{sha256[:16]}"
    assert (unpacked / ".complete").exists()
    assert (unpacked / "pandas" / "__init__.py").exists()
    assert sorted(path.name for path in slim_dir.iterdir()) == [unpacked.name]  # archive removed
    # Lambda restarts a runtime that crashed or timed out in the same execution
    # environment, /tmp kept: the unpacked dependencies are used, not fetched.
    with lambda_function(task_root, [], env, runtime=lambda_runtime, name=NAME) as restarted:
        status, again = http_reply(restarted.invoke(request))
        assert status == 200, restarted.output()
        assert again["predictions"] == cold["predictions"]
    assert len(deployer.read_runs(NAME, output=output_url(s3_bucket))) == 3


def test_slim_archive_with_another_sha256_is_refused_and_nothing_of_it_is_kept(
    tmp_path: Path, s3_bucket: str, moto_server: str, lambda_runtime: Path, layer_cache: Path
) -> None:
    task_root = build_task_root(score, tmp_path / "task", s3_bucket)
    add_decompressor(task_root, layer_cache)
    content = tmp_path / "content"
    content.mkdir()
    (content / "replaced.py").write_text("print('not the deployed dependencies')\n")
    archive = tmp_path / "deps.tar.zst"
    actual = pack_archive(content, archive)
    boto3.client("s3").upload_file(str(archive), s3_bucket, "deps/deps.tar.zst")
    expected = hashlib.sha256(b"the archive that was deployed").hexdigest()
    slim_dir = tmp_path / "lambda-tmp"
    slim_dir.mkdir()
    env = {
        **moto_environment(moto_server),
        "DEPLOYER_SLIM_ARCHIVE": f"s3://{s3_bucket}/deps/deps.tar.zst",
        "DEPLOYER_SLIM_SHA256": expected,
        "DEPLOYER_SLIM_DIR": str(slim_dir),
    }
    with lambda_function(task_root, [], env, runtime=lambda_runtime, name=NAME) as function:
        for _ in range(2):  # and stays refused: nothing half-loaded is kept
            kind, error = function.invoke(function_url_request('[{"x": 1.0}]'))
            assert kind == "error", error
            assert error["errorType"] == "RuntimeError"
            assert f"has sha256 {actual}, expected {expected}" in error["errorMessage"]
            assert "redeploy" in error["errorMessage"]
        assert "[ERROR] RuntimeError" in function.stdout
    # Unpacked as it came down, then deleted: nothing is left, nothing was imported.
    assert list(slim_dir.iterdir()) == []
    assert "not the deployed dependencies" not in function.stdout + function.stderr
    assert stored_keys(s3_bucket) == []


# What the owner searches CloudWatch for: one JSON line per record the store refused.
NOT_COMMITTED_EVENT = "deployer.run_not_committed"


def logged_uncommitted_runs(function: LambdaFunction) -> list[dict[str, Any]]:
    found = []
    for line in (function.stdout + function.stderr).splitlines():
        if NOT_COMMITTED_EVENT not in line:
            continue
        value = json.loads(line[line.index("{") :])
        if value.get("event") == NOT_COMMITTED_EVENT:
            found.append(value)
    return found


def test_store_that_vanished_is_a_500_with_the_run_id_and_the_record_in_the_log(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(score) as function:
        boto3.client("s3").delete_bucket(Bucket=s3_bucket)  # deleted after the deploy
        outcome = function.invoke(function_url_request('[{"x": 1.0}]'))
    status, body = http_reply(outcome)
    assert status == 500
    assert body["status"] == "failed" and body["error"]["type"] == "StoreWriteError"
    assert "Traceback" not in json.dumps(body)
    [logged] = logged_uncommitted_runs(function)
    record = logged["record"]
    assert record["run_id"] == body["run_id"]
    assert record["status"] == "failed" and record["trigger"] == "http"
    assert record["rows_out"] == 1
    assert f"{output_url(s3_bucket)}/{NAME}/runs/{body['run_id']}" in record["error"]["message"]
    assert record["error"]["traceback"].startswith("Traceback")


def test_run_that_lambda_times_out_is_recorded_as_failed_before_lambda_stops_it(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(nap, timeout=3) as function:
        # A first call loads the function, so that the timed call is warm.
        status, warm = direct_reply(function.invoke(nap_for(0)))
        assert status == 200, function.output()
        kind, error = function.invoke(nap_for(60), function_timeout=3)
        assert kind == "error" and error["errorType"] == "Sandbox.Timedout"
    assert "recorded it as failed (Timeout)" in function.stderr
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert runs.run_id[0] == warm["run_id"]
    assert runs.status.tolist() == ["succeeded", "failed"]
    timed_out = runs.iloc[1]
    assert timed_out.trigger == "manual" and timed_out.error_type == "Timeout"
    assert "within its 3 s timeout" in timed_out.error_message
    assert "longer timeout" in timed_out.error_message
    assert timed_out.duration_ms < 3000


def test_run_that_finishes_after_its_timeout_record_replaces_it_with_its_own(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    with start_lambda(nap, timeout=3) as function:
        # 0.0, not 0: an integer column there would be a schema change from the
        # next run's float one, and the run would be "warned".
        status, _ = direct_reply(function.invoke(nap_for(0.0)))
        assert status == 200, function.output()
        # Past the point (1 s before the deadline) where the timeout is recorded.
        status, late = direct_reply(function.invoke(nap_for(2.3), function_timeout=3))
        assert status == 200 and late["status"] == "succeeded", function.output()
    assert "recorded it as failed (Timeout)" in function.stderr
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert runs.status.tolist() == ["succeeded", "succeeded"]
    assert runs.run_id[1] == late["run_id"]


# -- prediction quality inside Lambda ------------------------------------------------


def logistic(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=1 / (1 + 2.718281828**-frame.x))


def records(rows: int, *, shift: float, seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    payload = [{"x": float(value)} for value in rng.normal(loc=shift, size=rows)]
    return {"deployer": {"trigger": "manual", "payload": payload}}


def test_drift_against_the_deploy_time_reference_is_judged_in_lambda_and_alerted(
    start_lambda: StartLambda, s3_bucket: str
) -> None:
    import numpy as np
    from test_quality import Receiver

    from deployer import Drift

    reference = pd.DataFrame({"x": np.random.default_rng(0).normal(size=2000)})
    receiver = Receiver([500])  # the first delivery fails, the retry lands
    try:
        with start_lambda(
            logistic,
            reference=reference,
            drift=Drift(min_rows=200),
            alerts=[receiver.url],
            environment={"DEPLOYER_ALERTS": json.dumps([receiver.url])},
        ) as function:
            status, good = direct_reply(function.invoke(records(500, shift=0.0, seed=1)))
            assert (status, good["status"]) == (200, "succeeded"), function.output()
            assert receiver.received == []
            status, drifted = direct_reply(function.invoke(records(500, shift=1.0, seed=2)))
            assert (status, drifted["status"]) == (200, "warned"), function.output()
            # x passes through unchanged: judged once, on the input side.
            assert drifted["quality"] == ["input drift in x", "output drift in score"]
    finally:
        receiver.close()
    assert len(receiver.received) == 2
    assert "x (input)" in receiver.received[-1]["text"]
    quality = deployer.read_quality(NAME, output=output_url(s3_bucket))
    flagged = quality[quality.drifted]
    assert set(zip(flagged.side, flagged.column, strict=True)) == {
        ("input", "x"),
        ("output", "score"),
    }
    runs = deployer.read_runs(NAME, output=output_url(s3_bucket))
    assert runs.status.tolist() == ["succeeded", "warned"]
