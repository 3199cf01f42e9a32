"""Deploy to AWS (moto), then run exactly what was uploaded with awslambdaric.

The code zip is rebuilt locally (bundles are deterministic, and the test checks
the hash matches the deployed tag); the layer zip or slim archive is the one
deployer built and uploaded (checked against the sha256 AWS recorded). The run
itself goes through tests/lambda_harness.py: awslambdaric, a local Runtime API,
and a process that sees only the bundle, the dependencies and the stdlib.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from lambda_harness import install_runtime, lambda_function

import deployer
from deployer import Cron, Http, ProviderError

pytestmark = pytest.mark.slow

DAILY = Cron("0 6 * * *", tz="Europe/Berlin")


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def classify(frame: pd.DataFrame) -> pd.DataFrame:
    # Trained at call time, so no pickled model ties the run to one
    # scikit-learn version; the imports make scikit-learn a real dependency.
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    return frame.assign(score=model.predict_proba(frame[["x"]])[:, 1])


# Newest versions with wheels for Lambda python3.11 (Amazon Linux 2, glibc 2.26);
# the versions installed here are newer and have only manylinux_2_27/2_28 wheels.
LAMBDA_311_PINS = ["scikit-learn==1.7.2", "numpy==2.2.6"]


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_runtime(tmp_path_factory.mktemp("lambda-runtime"))


@pytest.fixture
def bucket(deployer_home: Path, s3_bucket: str) -> str:
    features = pd.DataFrame({"x": [1.0, 2.0, 5.0]})
    boto3.client("s3").put_object(
        Bucket=s3_bucket, Key="features.parquet", Body=features.to_parquet(index=False)
    )
    return s3_bucket


def rebuilt_task_root(function: Any, options: dict[str, Any], directory: Path) -> Path:
    built = deployer.build(function, provider="aws", **options)
    tags = boto3.client("lambda").get_function(FunctionName=options["name"])["Tags"]
    assert tags["deployer:code_hash"] == built.bundle.code_hash
    return built.bundle.extract(directory / "task")


def lambda_environment(name: str) -> dict[str, str]:
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=name)
    environment = dict(configuration.get("Environment", {}).get("Variables", {}))
    for variable in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        environment[variable] = os.environ[variable]
    return environment


def scheduled_event(name: str, scheduled_time: str) -> dict[str, Any]:
    """The event the deployed schedule sends, with Scheduler's placeholder filled in."""
    scheduler = boto3.client("scheduler")
    [summary] = scheduler.list_schedules(NamePrefix=f"deployer-{name}-")["Schedules"]
    text = scheduler.get_schedule(Name=summary["Name"])["Target"]["Input"]
    return json.loads(text.replace("<aws.scheduler.scheduled-time>", scheduled_time))


def url_event(body: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def aws_sha256(content: bytes) -> str:
    return base64.b64encode(hashlib.sha256(content).digest()).decode()


def test_layer_deployment_runs_schedule_and_http_and_writes_to_s3(
    bucket: str, lambda_runtime: Path, tmp_path: Path
) -> None:
    output = f"s3://{bucket}/predictions"
    options = {
        "name": "scores",
        "output": output,
        "inputs": f"s3://{bucket}/features.parquet",
        "triggers": [DAILY, Http()],
    }
    deployment = deployer.deploy(predict, provider="aws", quiet=True, **options)
    task_root = rebuilt_task_root(predict, options, tmp_path)

    layer_arn = boto3.client("lambda").get_function_configuration(FunctionName="scores")["Layers"][
        0
    ]["Arn"]
    layer_name, version = layer_arn.rsplit(":", 2)[-2:]
    uploaded = boto3.client("lambda").get_layer_version(
        LayerName=layer_name, VersionNumber=int(version)
    )
    layer_zip = (
        Path(os.environ["DEPLOYER_CACHE"])
        / "lambda-artifacts"
        / (f"{deployment.deps_hash}-layer.zip")
    )
    assert uploaded["Content"]["CodeSha256"] == aws_sha256(layer_zip.read_bytes())
    opt = tmp_path / "opt"
    with zipfile.ZipFile(layer_zip) as archive:
        archive.extractall(opt)

    with lambda_function(
        task_root, [opt], lambda_environment("scores"), runtime=lambda_runtime, name="scores"
    ) as function:
        event = scheduled_event("scores", "2026-11-27T05:00:00Z")
        kind, reply = function.invoke(event)
        assert kind == "response", (reply, function.output())
        assert reply["body"]["status"] == "succeeded"
        kind, retried = function.invoke(event)  # Scheduler retrying the same firing
        assert retried["body"]["run_id"] == reply["body"]["run_id"]
        kind, answer = function.invoke(url_event([{"x": 10.0}]))
        assert answer["statusCode"] == 200
        assert json.loads(answer["body"])["predictions"] == [{"x": 10.0, "score": 20.0}]

    runs = deployer.read_runs("scores", output=output)
    assert sorted(runs.trigger) == ["http", "schedule"]
    scheduled = runs[runs.trigger == "schedule"].iloc[0]
    assert scheduled.run_id.startswith("20261127T050000Z-")
    outputs = deployer.read_outputs("scores", output=output)
    assert outputs[outputs.run_id == scheduled.run_id].score.tolist() == [2.0, 4.0, 10.0]


def test_scikit_learn_stack_is_refused_over_the_limit_without_slim_mode(bucket: str) -> None:
    with pytest.raises(ProviderError, match="250 MB.*slim"):
        deployer.deploy(
            classify,
            name="classify",
            provider="aws",
            requirements=LAMBDA_311_PINS,
            output=f"s3://{bucket}/predictions",
            quiet=True,
        )
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert [role for role in boto3.client("iam").list_roles()["Roles"]] == []


def test_scikit_learn_stack_deploys_and_runs_in_slim_mode(
    bucket: str, lambda_runtime: Path, tmp_path: Path
) -> None:
    output = f"s3://{bucket}/predictions"
    options = {
        "name": "classify",
        "output": output,
        "requirements": LAMBDA_311_PINS,
        "provider_options": {"slim": True},
    }
    deployment = deployer.deploy(classify, provider="aws", quiet=True, **options)

    configuration = boto3.client("lambda").get_function_configuration(FunctionName="classify")
    assert configuration.get("Layers", []) == []
    assert configuration["EphemeralStorage"]["Size"] > 512
    environment = lambda_environment("classify")
    archive_url = environment["DEPLOYER_SLIM_ARCHIVE"]
    archive_bucket, _, archive_key = archive_url[len("s3://") :].partition("/")
    archive = boto3.client("s3").get_object(Bucket=archive_bucket, Key=archive_key)["Body"].read()
    assert hashlib.sha256(archive).hexdigest() == environment["DEPLOYER_SLIM_SHA256"]
    assert len(archive) > 50 * 2**20  # the whole scientific stack, compressed

    # The code zip as deploy builds it: the bundle and slim mode's decompressor.
    built = deployer.build(classify, provider="aws", **options)
    tags = boto3.client("lambda").get_function(FunctionName="classify")["Tags"]
    assert tags["deployer:code_hash"] == built.bundle.code_hash
    code_zip, _ = deployer.write_artifacts(built, tmp_path / "artifacts", quiet=True)
    task_root = tmp_path / "task"
    with zipfile.ZipFile(code_zip) as code:
        code.extractall(task_root)
        assert any(name.startswith("backports/zstd/") for name in code.namelist())
    environment["DEPLOYER_SLIM_DIR"] = str(tmp_path / "lambda-tmp")
    (tmp_path / "lambda-tmp").mkdir()
    with lambda_function(
        task_root, [], environment, runtime=lambda_runtime, name="classify"
    ) as function:
        kind, reply = function.invoke(
            {"deployer": {"trigger": "manual", "payload": [{"x": 0.0}, {"x": 3.0}]}}
        )
        assert kind == "response", (reply, function.output())
        scores = [row["score"] for row in reply["body"]["predictions"]]
        assert scores[0] < 0.5 < scores[1]
        # Warm: the archive is not fetched again (it is gone from S3 now).
        boto3.client("s3").delete_object(Bucket=archive_bucket, Key=archive_key)
        kind, again = function.invoke({"deployer": {"trigger": "manual", "payload": [{"x": 2.5}]}})
        assert kind == "response", (reply, function.output())
    assert len(deployer.read_runs("classify", output=output)) == 2
    assert deployment.deps_hash in archive_key
    unpacked = tmp_path / "lambda-tmp"
    assert any((path / "sklearn").is_dir() for path in unpacked.iterdir())
