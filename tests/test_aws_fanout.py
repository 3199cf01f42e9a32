"""A map run on AWS: deployed to moto, each shard a Lambda Invoke run by awslambdaric.

boto3's Lambda client goes to tests/lambda_front.py, which hands each Invoke to
one of several execution environments (tests/lambda_harness.py) and passes
every other Lambda call on to moto; S3 is moto's. The front throttles the
first invokes as Lambda does when the account's concurrency is used up.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lambda_front import lambda_front
from lambda_harness import LambdaFunction, install_runtime, lambda_function
from test_aws_end_to_end import lambda_environment, rebuilt_task_root, scheduled_event

import deployer
from deployer import ConfigError, Cron, Metric

pytestmark = pytest.mark.slow

NAME = "scores"
ENVIRONMENTS = 3  # concurrent execution environments


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2 + frame.k)


def put_parquet(bucket: str, key: str, frame: pd.DataFrame, row_group_size: int) -> None:
    buffer = io.BytesIO()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=row_group_size
    )
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_runtime(tmp_path_factory.mktemp("lambda-runtime"))


def deployed_environment(
    options: dict[str, Any], tmp_path: Path, lambda_runtime: Path
) -> Callable[..., AbstractContextManager[LambdaFunction]]:
    """Deploy ``predict`` to moto; then each call starts one execution environment of
    exactly what was deployed (the code rebuilt, the layer uploaded), with extra variables."""
    deployment = deployer.deploy(predict, provider="aws", quiet=True, **options)
    task_root = rebuilt_task_root(predict, options, tmp_path)
    layers = Path(os.environ["DEPLOYER_CACHE"]) / "lambda-artifacts"
    opt = tmp_path / "opt"
    with zipfile.ZipFile(layers / f"{deployment.deps_hash}-layer.zip") as archive:
        archive.extractall(opt)

    def environment(**extra: str) -> AbstractContextManager[LambdaFunction]:
        return lambda_function(
            task_root,
            [opt],
            {**lambda_environment(NAME), **extra},
            runtime=lambda_runtime,
            name=NAME,
        )

    return environment


def test_a_map_run_fans_out_over_lambda_invokes_retries_throttling_and_commits_once(
    deployer_home: Path,
    s3_bucket: str,
    aws: str,
    lambda_runtime: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = np.random.default_rng(7)
    frames = [
        pd.DataFrame({"x": generator.normal(size=5_000), "k": generator.integers(0, 9, 5_000)})
        for _ in range(2)
    ]
    for index, frame in enumerate(frames):
        put_parquet(s3_bucket, f"features/2026-11/day{index}.parquet", frame, 1_000)
    output = f"s3://{s3_bucket}/predictions"
    options = {
        "name": NAME,
        "output": output,
        "inputs": f"s3://{s3_bucket}/features/2026-11/",
        "metrics": {"rows": Metric(len, merge="sum")},
    }
    environment = deployed_environment(options, tmp_path, lambda_runtime)
    deployment = deployer.get(NAME, provider="aws")

    with ExitStack() as stack:
        functions = [stack.enter_context(environment()) for _ in range(ENVIRONMENTS)]
        front = stack.enter_context(lambda_front(functions, aws))
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", front.endpoint)
        front.throttle(4)

        run = deployment.map(
            f"s3://{s3_bucket}/features/2026-11/",
            rows_per_shard=1_000,
            concurrency=ENVIRONMENTS,
            progress=False,
        )

        assert run.status == "succeeded", run.record
        assert (run.shards, run.rows_in, run.rows_out) == (10, 10_000, 10_000)
        # Throttled invokes were retried by the dispatcher, not counted as failed attempts.
        assert front.throttled == 4
        assert len(front.invoked) == 10
        assert all(entry["attempts"] == 1 for entry in run.record["parts"])
        assert front.most_at_once >= 2
        # Each invoke carried a reference to its shard, never its rows.
        assert max(len(json.dumps(event)) for event in front.invoked) < 600
        assert {event["deployer"]["trigger"] for event in front.invoked} == {"map"}

        # Data the function's role may not read is refused before any invoke.
        put_parquet(s3_bucket, "elsewhere/f.parquet", frames[0], 1_000)
        with pytest.raises(ConfigError, match="outside what scores's role may read"):
            deployment.map(f"s3://{s3_bucket}/elsewhere/", progress=False)
        assert len(front.invoked) == 10

    whole = predict(pd.concat(frames, ignore_index=True))
    got = deployer.read_outputs(NAME, output=output, run_id=run.run_id).drop(columns="run_id")
    pd.testing.assert_frame_equal(got, whole)
    record = deployer.read_run(NAME, run.run_id, output=output)
    assert record["trigger"] == "map" and record["metrics"]["user"]["rows"] == 10_000
    listing = boto3.client("s3").list_objects_v2(
        Bucket=s3_bucket, Prefix=f"predictions/{NAME}/runs/{run.run_id}/"
    )
    # (pyarrow keeps an empty marker object for the folder when it deletes a file in it)
    keys = [item["Key"].rsplit("/", 1)[1] for item in listing["Contents"]]
    files = sorted(key for key in keys if key)
    assert files == sorted(
        [f"part-{index:05d}.parquet" for index in range(10)]
        + ["metrics.json", "profile.json", "run.json", "started.json"]
    )


def test_a_map_schedule_coordinates_in_lambda_invoking_itself_per_shard(
    deployer_home: Path, s3_bucket: str, aws: str, lambda_runtime: Path, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": np.arange(4_000, dtype=float), "k": np.arange(4_000) % 5})
    put_parquet(s3_bucket, "features/latest/f.parquet", frame, 500)
    output = f"s3://{s3_bucket}/predictions"
    options = {
        "name": NAME,
        "output": output,
        "inputs": f"s3://{s3_bucket}/features/latest/",
        "triggers": [Cron("0 6 * * *", tz="Europe/Berlin", map=True)],
    }
    environment = deployed_environment(options, tmp_path, lambda_runtime)
    # The execution role may invoke the function itself: the coordinator does.
    role = boto3.client("lambda").get_function_configuration(FunctionName=NAME)["Role"]
    policy = boto3.client("iam").get_role_policy(
        RoleName=role.rsplit("/", 1)[1], PolicyName="deployer"
    )["PolicyDocument"]
    invoke = [s for s in policy["Statement"] if s["Action"] == "lambda:InvokeFunction"]
    assert invoke and invoke[0]["Resource"][1].endswith(f":function:{NAME}:live")
    event = scheduled_event(NAME, "2026-11-27T05:00:00Z")
    assert event["deployer"]["map"] is True

    with ExitStack() as stack:
        shards = [stack.enter_context(environment()) for _ in range(2)]
        front = stack.enter_context(lambda_front(shards, aws))
        coordinator = stack.enter_context(
            environment(AWS_ENDPOINT_URL_LAMBDA=front.endpoint, DEPLOYER_MAP_CONCURRENCY="2")
        )
        kind, reply = coordinator.invoke(event, function_timeout=300)
        assert kind == "response", (reply, coordinator.output())
        assert reply["body"]["status"] == "succeeded"
        assert len(front.invoked) == 8 and front.most_at_once == 2

    run_id = reply["body"]["run_id"]
    assert run_id.startswith("20261127T050000Z-")
    record = deployer.read_run(NAME, run_id, output=output)
    assert (record["trigger"], record["rows_out"], len(record["parts"])) == ("schedule", 4_000, 8)
    got = deployer.read_outputs(NAME, output=output, run_id=run_id).drop(columns="run_id")
    pd.testing.assert_frame_equal(got, predict(frame))
