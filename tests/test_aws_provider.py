"""The AWS provider against moto in server mode: plans, apply, reconcile, delete.

Dependencies are really installed for Lambda's platform (pip, manylinux wheels
for the target glibc); moto stands in for AWS's control plane. Execution of
what is built is in test_aws_runtime.py (awslambdaric) and below for slim mode.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import deployer
from deployer import ConfigError, Cron, Http, ProviderError, RequirementsError, TriggerError
from deployer.bundle import python_version
from deployer.providers.aws import provider as aws_provider
from deployer.providers.aws.provider import (
    ALIAS,
    AwsProvider,
    _legacy_role_names,
    _role_name,
    _scheduler_role_name,
    invoke_event,
)
from deployer.providers.base import (
    ADD_TRIGGER,
    CREATE,
    DELETE,
    INSTALL_DEPENDENCIES,
    REMOVE_TRIGGER,
    UPDATE_CODE,
)
from deployer.spec import NAME_PATTERN
from deployer.triggers import describe

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
    # No data there: an empty bucket is what the role tests count on.
    options.setdefault("allow_missing_inputs", True)
    return deployer.deploy(function, provider="aws", output=output, quiet=True, **options)


def plan(function: Any, output: str, **options: Any) -> Any:
    options.setdefault("name", "scores")
    options.setdefault("inputs", f"{output.rsplit('/', 1)[0]}/features.parquet")
    options.setdefault("allow_missing_inputs", True)
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


def role_tags(role_name: str) -> dict[str, str]:
    role = boto3.client("iam").get_role(RoleName=role_name)["Role"]
    return {tag["Key"]: tag["Value"] for tag in role.get("Tags", [])}


def test_first_deploy_creates_function_layer_alias_schedule_url_and_role(output: str) -> None:
    first = plan(predict, output, triggers=[DAILY, Http()])
    assert first.kinds() == [INSTALL_DEPENDENCIES, CREATE, CREATE, CREATE, ADD_TRIGGER, ADD_TRIGGER]
    lines = [str(action) for action in first.actions]
    assert lines[1] == "create: IAM role deployer-function.scores (execution role of scores)"
    assert lines[2].startswith("create: Lambda function scores")
    assert lines[3] == "create: IAM role deployer-scheduler.scores (scheduler role of scores)"
    deployment = deploy(predict, output, triggers=[DAILY, Http()])

    function = lambda_client().get_function(FunctionName="scores")
    configuration = function["Configuration"]
    assert configuration["Runtime"] == f"python{python_version()}"
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

    assert configuration["Role"].endswith(":role/deployer-function.scores")
    for role_name, kind in (
        ("deployer-function.scores", "execution"),
        ("deployer-scheduler.scores", "scheduler"),
    ):
        assert role_tags(role_name) == {"deployer:name": "scores", "deployer:role": kind}
    policy = boto3.client("iam").get_role_policy(
        RoleName="deployer-function.scores", PolicyName="deployer"
    )
    statements = policy["PolicyDocument"]["Statement"]
    bucket = output.split("/")[2]
    writes = [s for s in statements if "s3:PutObject" in s["Action"]]
    assert [s["Resource"] for s in writes] == [f"arn:aws:s3:::{bucket}/predictions/scores/*"]
    assert not any(s.get("Resource") == "*" for s in statements)
    scheduler_policy = boto3.client("iam").get_role_policy(
        RoleName="deployer-scheduler.scores", PolicyName="deployer"
    )["PolicyDocument"]
    assert scheduler_policy["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": schedule["Target"]["Arn"],
        }
    ]
    assert schedule["Target"]["RoleArn"].endswith(":role/deployer-scheduler.scores")


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


def schedule_changes(planned: Any) -> list[str]:
    return [
        str(action) for action in planned.actions if action.kind in (ADD_TRIGGER, REMOVE_TRIGGER)
    ]


def test_a_schedules_params_are_in_its_target_input_and_a_change_replaces_it(
    output: str,
) -> None:
    strict = Cron("0 6 * * *", tz="Europe/Berlin", params={"threshold": 0.7})
    hourly = Cron("0 * * * *")
    deploy(flag, output, triggers=[strict, hourly])
    events = {
        schedule["ScheduleExpression"]: json.loads(schedule["Target"]["Input"])["deployer"]
        for schedule in schedules()
    }
    assert events["cron(0 6 * * ? *)"]["params"] == {"threshold": 0.7}
    assert events["cron(0 6 * * ? *)"]["trigger"] == "schedule"
    assert "params" not in events["cron(0 * * * ? *)"]
    # The same params read back from the schedule: no schedule to change.
    assert schedule_changes(plan(flag, output, triggers=[strict, hourly])) == []

    stricter = Cron("0 6 * * *", tz="Europe/Berlin", params={"threshold": 0.9})
    assert schedule_changes(plan(flag, output, triggers=[stricter, hourly])) == [
        f"{ADD_TRIGGER}: {describe(stricter)}",
        f"{REMOVE_TRIGGER}: {describe(strict)}",
    ]
    deploy(flag, output, triggers=[stricter, hourly])
    inputs = {
        schedule["ScheduleExpression"]: json.loads(schedule["Target"]["Input"])["deployer"]
        for schedule in schedules()
    }
    assert len(schedules()) == 2
    assert inputs["cron(0 6 * * ? *)"]["params"] == {"threshold": 0.9}


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

    # AWS refuses PublishVersion (through botocore's own hook, on every client
    # of this process): nothing of deployer is patched.
    from botocore.awsrequest import AWSResponse

    refused = {
        "Error": {"Code": "ServiceException", "Message": "simulated: publish failed"},
        "ResponseMetadata": {"HTTPStatusCode": 500},
    }
    response = AWSResponse("https://lambda.us-east-1.amazonaws.com", 500, {}, None)

    def refuse(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return response, refused

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_MAX_ATTEMPTS", "1")
        original = boto3.session.Session.client

        def refusing_client(session: Any, service: str, *args: Any, **kwargs: Any) -> Any:
            client = original(session, service, *args, **kwargs)
            client.meta.events.register("before-call.lambda.PublishVersion", refuse)
            return client

        patch.setattr(boto3.session.Session, "client", refusing_client)
        with pytest.raises(ProviderError, match="AWS refused PublishVersion while deploying"):
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
    for role in ("deployer-function.scores", "deployer-scheduler.scores"):
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
    assert AwsProvider().get("scores") == state
    assert AwsProvider().get("missing") is None
    assert deployer.get("scores", provider="aws").code_hash == state.code_hash


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


def flag(frame: pd.DataFrame, *, threshold: float = 0.5, label: str = "high") -> pd.DataFrame:
    return frame.assign(flag=(frame.x > threshold).map({True: label, False: "low"}))


def test_schedule_params_that_do_not_fit_the_signature_are_refused_before_anything_is_created(
    output: str,
) -> None:
    strict = Cron("0 6 * * *", params={"treshold": 0.7})
    with pytest.raises(ConfigError) as refused:
        deploy(flag, output, triggers=[Http(), strict])
    assert str(refused.value) == (
        "cron '0 6 * * *' (UTC) with treshold=0.7: flag() has no keyword-only parameter "
        "treshold: the ones a run may set are label, threshold"
    )
    assert nothing_created()
    assert schedules() == []
    assert boto3.client("s3").list_objects_v2(Bucket=output.split("/")[2])["KeyCount"] == 0


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
    assert x86.manifest.platform == "manylinux_2_26_x86_64"
    assert arm.manifest.platform == "manylinux_2_26_aarch64"
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


# --- IAM roles: names that cannot collide, and only deployer's own roles touched ----

NAMES = st.from_regex(NAME_PATTERN, fullmatch=True)
LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
FOREIGN_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
            "Action": "sts:AssumeRole",
        }
    ],
}
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def roles_of(name: str) -> dict[str, str]:
    return {"execution": _role_name(name), "scheduler": _scheduler_role_name(name)}


def neighbours(name: str) -> list[str]:
    """Names whose roles would be the likeliest to meet ``name``'s."""
    candidates = [
        f"{name}-scheduler",
        name.removesuffix("-scheduler"),
        f"fn-{name}",
        f"function-{name}",
        f"scheduler-{name}",
        name.removeprefix("function-"),
        name.removeprefix("scheduler-"),
    ]
    return [candidate for candidate in candidates if NAME_PATTERN.match(candidate)]


@given(name=NAMES, data=st.data())
def test_role_names_never_collide_for_any_two_function_names(name: str, data: Any) -> None:
    other = data.draw(st.sampled_from(neighbours(name)) | NAMES, label="other")
    ours = roles_of(name)
    for kind, role_name in ours.items():
        assert len(role_name) <= 64 and re.fullmatch(r"[\w+=,.@-]+", role_name)
        for other_kind, other_role in roles_of(other).items():
            # IAM role names ignore case.
            same = role_name.lower() == other_role.lower()
            assert same == ((kind, name) == (other_kind, other))
        # Nor any role a deployment of the previous version may still have.
        assert role_name.lower() not in {legacy.lower() for legacy in _legacy_role_names(other)}


def test_the_previous_role_names_did_collide() -> None:
    # What the property above guards against: "x-scheduler"'s execution role was
    # "x"'s scheduler role.
    assert _legacy_role_names("x-scheduler")[0] == _legacy_role_names("x")[1]
    assert roles_of("x-scheduler")["execution"] != roles_of("x")["scheduler"]


def test_execution_role_of_x_scheduler_is_not_the_scheduler_role_of_x(output: str) -> None:
    deploy(predict, output, name="x", triggers=[DAILY])
    deploy(predict, output, name="x-scheduler")
    iam = boto3.client("iam")
    [schedule] = schedules("x")
    x_scheduler_role = schedule["Target"]["RoleArn"]
    x_role = lambda_client().get_function_configuration(FunctionName="x")["Role"]
    other_role = lambda_client().get_function_configuration(FunctionName="x-scheduler")["Role"]
    assert len({x_scheduler_role, x_role, other_role}) == 3
    assert x_role.endswith(":role/deployer-function.x")
    assert other_role.endswith(":role/deployer-function.x-scheduler")
    assert x_scheduler_role.endswith(":role/deployer-scheduler.x")
    scheduler_policy = iam.get_role_policy(RoleName="deployer-scheduler.x", PolicyName="deployer")

    deployer.get("x-scheduler", provider="aws").delete(quiet=True)

    kept = iam.get_role(RoleName="deployer-scheduler.x")["Role"]
    assert kept["Arn"] == x_scheduler_role
    assert kept["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "scheduler.amazonaws.com"
    }
    policy = iam.get_role_policy(RoleName="deployer-scheduler.x", PolicyName="deployer")
    assert policy["PolicyDocument"] == scheduler_policy["PolicyDocument"]
    assert policy["PolicyDocument"]["Statement"][0]["Resource"] == schedule["Target"]["Arn"]
    assert iam.get_role(RoleName="deployer-function.x")["Role"]["Arn"] == x_role
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="deployer-function.x-scheduler")


def create_foreign_role(role_name: str, tags: dict[str, str]) -> dict[str, Any]:
    """A role someone else made under a name deployer uses; returns what must not change."""
    iam = boto3.client("iam")
    iam.create_role(
        RoleName=role_name,
        AssumeRolePolicyDocument=json.dumps(FOREIGN_TRUST),
        Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
    )
    iam.put_role_policy(
        RoleName=role_name, PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY)
    )
    return role_snapshot(role_name)


def role_snapshot(role_name: str) -> dict[str, Any]:
    iam = boto3.client("iam")
    role = iam.get_role(RoleName=role_name)["Role"]
    policies = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    return {
        "arn": role["Arn"],
        "trust": role["AssumeRolePolicyDocument"],
        "tags": role.get("Tags", []),
        "policies": {
            policy: iam.get_role_policy(RoleName=role_name, PolicyName=policy)["PolicyDocument"]
            for policy in policies
        },
    }


@pytest.mark.parametrize(
    "role_name, triggers",
    [("deployer-function.scores", []), ("deployer-scheduler.scores", [DAILY])],
    ids=["execution", "scheduler"],
)
@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"deployer:name": "scores"},  # the previous version's tag alone
        {"deployer:name": "other", "deployer:role": "execution"},
        {"deployer:name": "scores", "deployer:role": "nothing"},
    ],
    ids=["untagged", "name-only", "other-function", "other-kind"],
)
def test_role_deployer_does_not_own_stops_the_deploy_before_anything_changes(
    output: str, role_name: str, triggers: list[Any], tags: dict[str, str]
) -> None:
    before = create_foreign_role(role_name, tags)
    with pytest.raises(ProviderError, match=rf"{re.escape(role_name)}.*another function name"):
        plan(predict, output, triggers=triggers)
    with pytest.raises(ProviderError, match=re.escape(role_name)):
        deploy(predict, output, triggers=triggers)
    assert lambda_client().list_functions()["Functions"] == []
    assert layer_versions() == []
    assert boto3.client("s3").list_objects_v2(Bucket=output.split("/")[2])["KeyCount"] == 0
    assert schedules() == []
    assert role_snapshot(role_name) == before
    roles = [role["RoleName"] for role in boto3.client("iam").list_roles()["Roles"]]
    assert roles == [role_name]


def test_delete_leaves_roles_deployer_does_not_own(output: str) -> None:
    deployment = deploy(predict, output)
    # Under the scheduler role's name, and under both names of the previous version.
    foreign = {
        "deployer-scheduler.scores": create_foreign_role("deployer-scheduler.scores", {}),
        "deployer-scores": create_foreign_role("deployer-scores", {"deployer:name": "other"}),
        "deployer-scores-scheduler": create_foreign_role("deployer-scores-scheduler", {}),
    }
    planned = AwsProvider().plan_delete("scores")
    assert [str(action) for action in planned.actions] == [
        "delete: Lambda function scores",
        "delete: IAM role deployer-function.scores",
    ]
    deployment.delete(quiet=True)
    iam = boto3.client("iam")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="deployer-function.scores")
    for role_name, before in foreign.items():
        assert role_snapshot(role_name) == before


def test_delete_keeps_its_own_role_while_another_function_runs_as_it(output: str) -> None:
    deploy(predict, output, name="first")
    deploy(predict, output, name="second")
    own_role = lambda_client().get_function_configuration(FunctionName="first")["Role"]
    second_role = lambda_client().get_function_configuration(FunctionName="second")["Role"]
    # A published version of "second" runs as it, though "second"'s $LATEST no longer does.
    lambda_client().update_function_configuration(FunctionName="second", Role=own_role)
    lambda_client().publish_version(FunctionName="second")
    lambda_client().update_function_configuration(FunctionName="second", Role=second_role)
    assert [str(action) for action in AwsProvider().plan_delete("first").actions] == [
        "delete: Lambda function first"
    ]
    deployer.get("first", provider="aws").delete(quiet=True)
    assert boto3.client("iam").get_role(RoleName="deployer-function.first")["Role"]["Arn"] == (
        own_role
    )


def test_hand_edited_trust_and_policy_of_its_role_are_reset_by_the_next_deploy(
    output: str,
) -> None:
    deploy(predict, output, triggers=[DAILY])
    iam = boto3.client("iam")
    expected = role_snapshot("deployer-function.scores")
    iam.update_assume_role_policy(
        RoleName="deployer-function.scores", PolicyDocument=json.dumps(FOREIGN_TRUST)
    )
    iam.put_role_policy(
        RoleName="deployer-function.scores",
        PolicyName="deployer",
        PolicyDocument=json.dumps(ADMIN_POLICY),
    )
    repair = plan(predict, output, triggers=[DAILY])
    assert [str(action) for action in repair.actions] == [
        "update config: IAM role deployer-function.scores: reset its trust and permissions "
        "to what scores needs"
    ]
    code_versions = versions("scores")
    deploy(predict, output, triggers=[DAILY])
    assert role_snapshot("deployer-function.scores") == expected
    assert versions("scores") == code_versions  # a step on the role alone uploads no code
    assert plan(predict, output, triggers=[DAILY]).changes_nothing


def test_iam_access_denied_is_a_provider_error_naming_the_operation_and_role(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    make_client = AwsProvider.client

    def denied(**kwargs: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "PutRolePolicy"
        )

    def client(self: AwsProvider, service: str) -> Any:
        made = make_client(self, service)
        if service == "iam":
            made.meta.events.register("before-call.iam.PutRolePolicy", denied)
        return made

    monkeypatch.setattr(AwsProvider, "client", client)
    with pytest.raises(
        ProviderError, match=r"PutRolePolicy on role 'deployer-function\.scores'.*AccessDenied"
    ) as raised:
        deploy(predict, output)
    assert isinstance(raised.value.__cause__, ClientError)
    assert lambda_client().list_functions()["Functions"] == []


# --- moving deployments of the previous version to the new role names ------------


def deploy_as_previous_version(
    monkeypatch: pytest.MonkeyPatch, output: str, **options: Any
) -> None:
    """A deployment as the previous version made it: roles "deployer-{name}" and
    "deployer-{name}-scheduler", tagged with deployer:name only."""
    name = options.setdefault("name", "scores")
    with monkeypatch.context() as patch:
        patch.setattr(aws_provider, "_role_name", lambda name: _legacy_role_names(name)[0])
        patch.setattr(
            aws_provider, "_scheduler_role_name", lambda name: _legacy_role_names(name)[1]
        )
        deploy(predict, output, **options)
    iam = boto3.client("iam")
    for role_name in _legacy_role_names(name):
        with contextlib.suppress(iam.exceptions.NoSuchEntityException):  # no schedule, no role
            iam.untag_role(RoleName=role_name, TagKeys=["deployer:role"])
    role = lambda_client().get_function_configuration(FunctionName=name)["Role"]
    assert role.endswith(f":role/deployer-{name}")


def test_redeploy_moves_a_previous_deployment_to_the_new_roles_and_deletes_the_old(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy_as_previous_version(monkeypatch, output, triggers=[DAILY])
    migration = plan(predict, output, triggers=[DAILY])
    assert [str(action) for action in migration.actions] == [
        "create: IAM role deployer-function.scores (execution role of scores)",
        "update config: execution role: 'deployer-scores' -> 'deployer-function.scores'",
        "create: IAM role deployer-scheduler.scores (scheduler role of scores)",
        f"update config: schedule {describe(DAILY)}: run as deployer-scheduler.scores "
        "(was deployer-scores-scheduler)",
        "delete: IAM role deployer-scores (the previous naming, no longer used)",
        "delete: IAM role deployer-scores-scheduler (the previous naming, no longer used)",
    ]
    deploy(predict, output, triggers=[DAILY])

    role = lambda_client().get_function_configuration(FunctionName="scores")["Role"]
    assert role.endswith(":role/deployer-function.scores")
    alias = lambda_client().get_alias(FunctionName="scores", Name=ALIAS)
    served = lambda_client().get_function_configuration(
        FunctionName="scores", Qualifier=alias["FunctionVersion"]
    )
    assert served["Role"] == role
    [schedule] = schedules()
    assert schedule["Target"]["RoleArn"].endswith(":role/deployer-scheduler.scores")
    assert schedule["ScheduleExpression"] == "cron(0 6 * * ? *)"
    iam = boto3.client("iam")
    for legacy in _legacy_role_names("scores"):
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_role(RoleName=legacy)
    assert plan(predict, output, triggers=[DAILY]).changes_nothing


def test_delete_of_a_previous_deployment_deletes_its_old_roles(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy_as_previous_version(monkeypatch, output, triggers=[DAILY])
    deployer.get("scores", provider="aws").delete(quiet=True)
    roles = [role["RoleName"] for role in boto3.client("iam").list_roles()["Roles"]]
    assert roles == []


def test_old_role_another_function_runs_as_is_kept_until_nothing_does(
    output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The previous version's collision: "x" made "deployer-x-scheduler" for its
    # schedule, and "x-scheduler" was then deployed to run as that same role.
    deploy_as_previous_version(monkeypatch, output, name="x", triggers=[DAILY])
    deploy(predict, output, name="x-scheduler")
    shared = boto3.client("iam").get_role(RoleName="deployer-x-scheduler")["Role"]["Arn"]
    lambda_client().update_function_configuration(FunctionName="x-scheduler", Role=shared)

    moved = plan(predict, output, name="x", triggers=[DAILY])
    deletions = [str(action) for action in moved.actions if action.kind == DELETE]
    assert deletions == ["delete: IAM role deployer-x (the previous naming, no longer used)"]
    deploy(predict, output, name="x", triggers=[DAILY])
    assert boto3.client("iam").get_role(RoleName="deployer-x-scheduler")["Role"]["Arn"] == shared
    assert lambda_client().get_function_configuration(FunctionName="x-scheduler")["Role"] == shared
    [schedule] = schedules("x")
    assert schedule["Target"]["RoleArn"].endswith(":role/deployer-scheduler.x")

    # "x-scheduler" moves to its own role, but the old one is tagged for "x": kept.
    assert not [a for a in plan(predict, output, name="x-scheduler").actions if a.kind == DELETE]
    deploy(predict, output, name="x-scheduler")
    role = lambda_client().get_function_configuration(FunctionName="x-scheduler")["Role"]
    assert role.endswith(":role/deployer-function.x-scheduler")
    assert boto3.client("iam").get_role(RoleName="deployer-x-scheduler")

    # Now nothing runs as it, and "x"'s next deploy deletes it.
    assert [
        str(action) for action in plan(predict, output, name="x", triggers=[DAILY]).actions
    ] == ["delete: IAM role deployer-x-scheduler (the previous naming, no longer used)"]
    deploy(predict, output, name="x", triggers=[DAILY])
    with pytest.raises(boto3.client("iam").exceptions.NoSuchEntityException):
        boto3.client("iam").get_role(RoleName="deployer-x-scheduler")


def test_memory_is_the_functions_memory_size_and_a_change_is_config_only(output: str) -> None:
    deploy(predict, output, triggers=[Http()])
    configuration = lambda_client().get_function_configuration(FunctionName="scores")
    assert configuration["MemorySize"] == 1024
    more = plan(predict, output, triggers=[Http()], memory=2048)
    assert UPDATE_CODE not in more.kinds() and not more.changes_nothing
    deploy(predict, output, triggers=[Http()], memory=2048)
    configuration = lambda_client().get_function_configuration(FunctionName="scores")
    assert configuration["MemorySize"] == 2048


def test_memory_over_lambdas_limit_is_refused_before_anything_is_created(output: str) -> None:
    with pytest.raises(ConfigError, match="10240"):
        deploy(predict, output, memory=16384)
    assert nothing_created()


def test_build_needs_no_region_or_credentials_and_writes_what_deploy_uploads(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    built = deployer.build(predict, name="scores", provider="aws", output="s3://acme/runs")
    code, layer = deployer.write_artifacts(built, tmp_path / "dist", quiet=True)
    assert code.name == f"scores-{built.bundle.code_hash[:12]}-code.zip"
    assert code.read_bytes() == built.bundle.zip_bytes()
    assert layer.name == f"{built.bundle.deps_hash}-layer.zip"
    with zipfile.ZipFile(layer) as archive:
        assert any(name.startswith("python/pandas/") for name in archive.namelist())
    with pytest.raises(ProviderError, match="AWS_REGION"):
        deployer.deploy(predict, name="scores", provider="aws", output="s3://acme/runs", quiet=True)


def test_an_aws_error_is_a_provider_error_naming_the_operation(output: str) -> None:
    deploy(predict, output, triggers=[Http()])
    provider = deployer.registry.get_provider("aws")
    denied = {
        "Error": {
            "Code": "AccessDeniedException",
            "Message": "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: "
            "lambda:GetFunction",
        },
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    # botocore's own hook answers the call as AWS would refuse it; nothing of
    # deployer is patched.
    from botocore.awsrequest import AWSResponse

    refusal = AWSResponse("https://lambda.us-east-1.amazonaws.com", 403, {}, None)
    provider.session.events.register(
        "before-call.lambda.GetFunction", lambda **_: (refusal, denied), unique_id="deny"
    )
    with pytest.raises(ProviderError) as raised:
        provider.get("scores")
    message = str(raised.value)
    assert "AWS refused GetFunction while reading the function" in message
    assert "lambda:GetFunction" in message and "lacks that permission" in message
