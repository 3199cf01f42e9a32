"""The AWS provider against moto in server mode: plans, apply, reconcile, delete.

Dependencies are really installed for Lambda's platform (pip, manylinux wheels
for the target glibc); moto stands in for AWS's control plane. Execution of
what is built is in test_aws_runtime.py (awslambdaric) and below for slim mode.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest

import deployer
from deployer import ConfigError, Cron, Http, ProviderError, RequirementsError, TriggerError
from deployer.providers.aws import ALIAS, AwsProvider, invoke_event
from deployer.providers.base import (
    ADD_TRIGGER,
    CREATE,
    INSTALL_DEPENDENCIES,
    REMOVE_TRIGGER,
    UPDATE_CODE,
)

pytestmark = pytest.mark.slow

DAILY = Cron("0 6 * * *", tz="Europe/Berlin")


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def predict_v2(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 3)


@pytest.fixture
def output(deployer_home: Path, s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/predictions"


def deploy(function: Any, output: str, **options: Any) -> deployer.Deployment:
    options.setdefault("name", "scores")
    options.setdefault("inputs", f"{output.rsplit('/', 1)[0]}/features.parquet")
    return deployer.deploy(function, provider="aws", output=output, quiet=True, **options)


def plan(function: Any, output: str, **options: Any) -> Any:
    options.setdefault("name", "scores")
    options.setdefault("inputs", f"{output.rsplit('/', 1)[0]}/features.parquet")
    return deployer.plan(function, provider="aws", output=output, quiet=True, **options)


def lambda_client() -> Any:
    return boto3.client("lambda")


def versions(name: str) -> list[str]:
    listed = lambda_client().list_versions_by_function(FunctionName=name)["Versions"]
    return [version["Version"] for version in listed if version["Version"] != "$LATEST"]


def layer_versions() -> list[str]:
    arns = []
    for layer in lambda_client().list_layers()["Layers"]:
        for version in lambda_client().list_layer_versions(LayerName=layer["LayerName"])[
            "LayerVersions"
        ]:
            arns.append(version["LayerVersionArn"])
    return sorted(arns)


def schedules(name: str = "scores") -> list[dict[str, Any]]:
    scheduler = boto3.client("scheduler")
    found = scheduler.list_schedules(NamePrefix=f"deployer-{name}-")["Schedules"]
    described = [scheduler.get_schedule(Name=item["Name"]) for item in found]
    for schedule in described:
        schedule.pop("ResponseMetadata")
    return described


def test_first_deploy_creates_function_layer_alias_schedule_url_and_role(output: str) -> None:
    first = plan(predict, output, triggers=[DAILY, Http()])
    assert first.kinds() == [INSTALL_DEPENDENCIES, CREATE, ADD_TRIGGER, ADD_TRIGGER]
    deployment = deploy(predict, output, triggers=[DAILY, Http()])

    function = lambda_client().get_function(FunctionName="scores")
    configuration = function["Configuration"]
    assert configuration["Runtime"] == "python3.11"
    assert configuration["Handler"] == "deployer_runtime.aws.handler"
    assert configuration["Architectures"] == ["x86_64"]
    assert [layer["Arn"].split(":")[-2] for layer in configuration["Layers"]] == [
        f"deployer-deps-{deployment.deps_hash[:24]}"
    ]
    tags = function["Tags"]
    assert tags["deployer:code_hash"] == deployment.code_hash
    assert tags["deployer:deps_hash"] == deployment.deps_hash
    alias = lambda_client().get_alias(FunctionName="scores", Name=ALIAS)
    assert alias["FunctionVersion"] == versions("scores")[-1]

    [schedule] = schedules()
    assert schedule["ScheduleExpression"] == "cron(0 6 * * ? *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert schedule["Target"]["Arn"].endswith(f":function:scores:{ALIAS}")
    event = json.loads(schedule["Target"]["Input"])
    assert event["deployer"]["scheduled_time"] == "<aws.scheduler.scheduled-time>"

    url = lambda_client().get_function_url_config(FunctionName="scores", Qualifier=ALIAS)
    assert url["AuthType"] == "AWS_IAM"
    assert deployment.url == url["FunctionUrl"]

    policy = boto3.client("iam").get_role_policy(RoleName="deployer-scores", PolicyName="deployer")
    statements = policy["PolicyDocument"]["Statement"]
    bucket = output.split("/")[2]
    writes = [s for s in statements if "s3:PutObject" in s["Action"]]
    assert [s["Resource"] for s in writes] == [f"arn:aws:s3:::{bucket}/predictions/scores/*"]
    assert not any(s.get("Resource") == "*" for s in statements)
    scheduler_policy = boto3.client("iam").get_role_policy(
        RoleName="deployer-scores-scheduler", PolicyName="deployer"
    )["PolicyDocument"]
    assert scheduler_policy["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": schedule["Target"]["Arn"],
        }
    ]
    assert schedule["Target"]["RoleArn"].endswith(":role/deployer-scores-scheduler")


def test_redeploy_with_nothing_changed_uploads_and_changes_nothing(output: str) -> None:
    deploy(predict, output, triggers=[DAILY, Http()])
    before = (versions("scores"), layer_versions(), schedules())
    assert plan(predict, output, triggers=[DAILY, Http()]).changes_nothing
    deploy(predict, output, triggers=[DAILY, Http()])
    assert (versions("scores"), layer_versions(), schedules()) == before


def test_code_only_change_uploads_only_code_and_moves_the_alias(output: str) -> None:
    first = deploy(predict, output, triggers=[Http()])
    layers_before = layer_versions()
    code_only = plan(predict_v2, output, triggers=[Http()])
    assert code_only.kinds() == [UPDATE_CODE]
    second = deploy(predict_v2, output, triggers=[Http()])
    assert second.deps_hash == first.deps_hash and second.code_hash != first.code_hash
    assert layer_versions() == layers_before
    assert len(versions("scores")) == 2
    alias = lambda_client().get_alias(FunctionName="scores", Name=ALIAS)
    assert alias["FunctionVersion"] == versions("scores")[-1]


def test_removed_schedule_is_deleted_on_redeploy(output: str) -> None:
    deploy(predict, output, triggers=[DAILY, Http()])
    assert len(schedules()) == 1
    assert plan(predict, output, triggers=[Http()]).kinds() == [REMOVE_TRIGGER]
    deploy(predict, output, triggers=[Http()])
    assert schedules() == []


def test_public_http_has_no_auth_and_a_public_permission(output: str) -> None:
    deploy(predict, output, triggers=[Http(public=True)])
    url = lambda_client().get_function_url_config(FunctionName="scores", Qualifier=ALIAS)
    assert url["AuthType"] == "NONE"
    policy = json.loads(
        lambda_client().get_policy(FunctionName="scores", Qualifier=ALIAS)["Policy"]
    )
    assert any(
        statement["Action"] == "lambda:InvokeFunctionUrl" for statement in policy["Statement"]
    )
    deploy(predict, output, triggers=[])
    with pytest.raises(lambda_client().exceptions.ResourceNotFoundException):
        lambda_client().get_function_url_config(FunctionName="scores", Qualifier=ALIAS)


def test_failed_apply_leaves_the_previous_version_serving(output: str) -> None:
    first = deploy(predict, output, triggers=[Http()])
    serving = lambda_client().get_alias(FunctionName="scores", Name=ALIAS)["FunctionVersion"]

    def publish_fails(self: AwsProvider, name: str, reporter: Any) -> str:
        raise ProviderError("simulated: publish_version failed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AwsProvider, "_publish", publish_fails)
        with pytest.raises(ProviderError, match="simulated"):
            deploy(predict_v2, output, triggers=[Http()])
    assert (
        lambda_client().get_alias(FunctionName="scores", Name=ALIAS)["FunctionVersion"] == serving
    )
    tags = lambda_client().get_function(FunctionName="scores")["Tags"]
    assert tags["deployer:code_hash"] == first.code_hash
    assert plan(predict_v2, output, triggers=[Http()]).kinds() == [UPDATE_CODE]


def test_delete_removes_function_roles_schedules_url_and_unused_layers(output: str) -> None:
    deployment = deploy(predict, output, triggers=[DAILY, Http()])
    bucket = output.split("/")[2]
    boto3.client("s3").put_object(
        Bucket=bucket, Key="predictions/scores/runs/x/run.json", Body=b"{}"
    )
    assert layer_versions() != []
    deployment.delete(quiet=True)
    with pytest.raises(lambda_client().exceptions.ResourceNotFoundException):
        lambda_client().get_function(FunctionName="scores")
    assert schedules() == []
    iam = boto3.client("iam")
    for role in ("deployer-scores", "deployer-scores-scheduler"):
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_role(RoleName=role)
    assert not [arn for arn in layer_versions() if deployment.deps_hash[:24] in arn]
    kept = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="predictions/scores/runs/")
    assert kept["KeyCount"] == 1


def test_layer_still_used_by_another_function_is_kept_on_delete(output: str) -> None:
    first = deploy(predict, output, name="first")
    deploy(predict, output, name="second")
    first.delete(quiet=True)
    assert [arn for arn in layer_versions() if first.deps_hash[:24] in arn]


def test_list_and_get_read_the_state_from_aws(output: str) -> None:
    deploy(predict, output, triggers=[DAILY])
    [state] = AwsProvider().list()
    assert state.name == "scores" and state.output == output
    assert [trigger["type"] for trigger in state.triggers] == ["cron"]


def test_logs_come_from_cloudwatch(output: str) -> None:
    deploy(predict, output)
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/lambda/scores")
    logs.create_log_stream(logGroupName="/aws/lambda/scores", logStreamName="s")
    logs.put_log_events(
        logGroupName="/aws/lambda/scores",
        logStreamName="s",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "scored 3 rows"}],
    )
    assert AwsProvider().logs("scores") == "scored 3 rows\n"


def test_invoke_event_carries_a_dataframe_as_records() -> None:
    frame = pd.DataFrame({"x": [1, 2], "when": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    event = invoke_event(frame)
    assert event["deployer"]["trigger"] == "manual"
    assert event["deployer"]["payload"][0]["x"] == 1
    assert event["deployer"]["payload"][1]["when"].startswith("2026-01-02")
    assert invoke_event(None) == {"deployer": {"trigger": "manual"}}


# --- bad input: refused before anything exists in AWS ------------------------------


def nothing_created() -> bool:
    functions = lambda_client().list_functions()["Functions"]
    roles = [role["RoleName"] for role in boto3.client("iam").list_roles()["Roles"]]
    return functions == [] and not [role for role in roles if role.startswith("deployer-")]


def test_unsupported_python_is_refused_naming_what_works(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("deployer.bundle.python_version", lambda: "3.7")
    with pytest.raises(ProviderError, match=r"3\.7.*python3\.1"):
        deploy(predict, output)
    assert nothing_created()


def test_pinned_version_without_a_lambda_wheel_is_refused(output: str) -> None:
    with pytest.raises(RequirementsError, match=r"numpy.*2\.4\.6.*python3\.11"):
        deploy(predict, output, requirements=["numpy==2.4.6"])
    assert nothing_created()


@pytest.mark.parametrize(
    "schedule, fragment",
    [
        (Cron("0 6 1 * MON"), "either"),
        (Cron("30 2 * * *", tz="Europe/Berlin"), "clock"),
    ],
)
def test_schedules_eventbridge_cannot_run_exactly_are_refused(
    output: str, schedule: Cron, fragment: str
) -> None:
    with pytest.raises(TriggerError, match=fragment):
        deploy(predict, output, triggers=[schedule])
    assert nothing_created()


def test_output_must_be_s3(deployer_home: Path, aws: str) -> None:
    with pytest.raises(ConfigError, match="s3://"):
        deployer.deploy(predict, name="scores", provider="aws", output="/tmp/x", quiet=True)
    with pytest.raises(ConfigError, match="output='s3://"):
        deployer.deploy(predict, name="scores", provider="aws", quiet=True)


def test_timeout_over_lambdas_limit_is_refused(output: str) -> None:
    with pytest.raises(ConfigError, match="900"):
        deploy(predict, output, timeout=1800)


def test_missing_region_is_named(
    deployer_home: Path, aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(ProviderError, match="AWS_REGION"):
        deployer.deploy(predict, name="scores", provider="aws", output="s3://b/p", quiet=True)


def test_missing_credentials_are_named(
    deployer_home: Path, aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ProviderError, match="credentials"):
        deployer.deploy(predict, name="scores", provider="aws", output="s3://b/p", quiet=True)


def test_unknown_architecture_is_refused(output: str) -> None:
    with pytest.raises(ProviderError, match="arm64"):
        deploy(predict, output, provider_options={"architecture": "sparc"})


def test_architecture_and_amazon_linux_version_are_part_of_deps_hash(output: str) -> None:
    options = {"name": "scores", "provider": "aws", "output": output}
    x86 = deployer.build(predict, **options).bundle
    arm = deployer.build(predict, provider_options={"architecture": "arm64"}, **options).bundle
    assert x86.manifest["platform"] == "manylinux_2_26_x86_64"
    assert arm.manifest["platform"] == "manylinux_2_26_aarch64"
    assert x86.deps_hash != arm.deps_hash
    assert x86.code_hash == arm.code_hash


def test_schedules_of_a_function_whose_name_extends_another_are_left_alone(output: str) -> None:
    deploy(predict, output, name="scores-v2", triggers=[DAILY])
    deploy(predict, output, name="scores", triggers=[DAILY])
    deploy(predict, output, name="scores", triggers=[])
    assert schedules("scores-v2") != []
    assert [item["Name"] for item in schedules("scores")] == [
        item["Name"] for item in schedules("scores-v2")
    ]  # the prefix listing still shows scores-v2's one schedule, and only it
