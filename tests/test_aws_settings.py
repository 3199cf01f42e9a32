"""Environment, secrets and max concurrency on AWS: deployed to moto, then the deployed
configuration run with awslambdaric, which reads the secrets from moto's Secrets
Manager and SSM at cold start."""

from __future__ import annotations

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
from test_aws_end_to_end import lambda_environment, rebuilt_task_root
from test_history import add_one, add_three, add_two

import deployer
from deployer import ConfigError

pytestmark = pytest.mark.slow

PASSWORD = "pw-41c9e2-in-secrets-manager-only"
API_KEY = "key-9d07aa-in-parameter-store-only"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def seen(frame: pd.DataFrame) -> pd.DataFrame:
    # Digests, never the values: the function's code and output must not hold them.
    return frame.assign(
        level=os.environ.get("LEVEL", "-"),
        password=hashlib.sha256(os.environ.get("DB_PASSWORD", "").encode()).hexdigest(),
        api_key=hashlib.sha256(os.environ.get("API_KEY", "").encode()).hexdigest(),
    )


@pytest.fixture(scope="session")
def lambda_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_runtime(tmp_path_factory.mktemp("lambda-runtime"))


@pytest.fixture
def stored_secrets(deployer_home: Path, s3_bucket: str) -> dict[str, str]:
    secret = boto3.client("secretsmanager").create_secret(
        Name="prod/db", SecretString=json.dumps({"password": PASSWORD, "user": "scorer"})
    )
    boto3.client("ssm").put_parameter(Name="/prod/api-key", Value=API_KEY, Type="SecureString")
    return {"secret_arn": secret["ARN"], "bucket": s3_bucket}


def options_for(bucket: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": "settings",
        "output": f"s3://{bucket}/predictions",
        "env": {"LEVEL": "strict"},
        "secrets": {
            "DB_PASSWORD": "secretsmanager:prod/db#password",
            "API_KEY": "ssm:/prod/api-key",
        },
        "max_concurrency": 5,
        **changes,
    }


def layer_of(name: str, deps_hash: str, directory: Path) -> Path:
    layer_zip = Path(os.environ["DEPLOYER_CACHE"]) / "lambda-artifacts" / f"{deps_hash}-layer.zip"
    with zipfile.ZipFile(layer_zip) as archive:
        archive.extractall(directory)
    return directory


def run_deployed(
    options: dict[str, Any], deps_hash: str, runtime: Path, directory: Path
) -> tuple[str, Any, str]:
    """One manual invoke of what is deployed as "settings", with its configuration
    (environment included), under awslambdaric: (kind, reply, the process's output)."""
    task_root = rebuilt_task_root(seen, options, directory)
    layer = layer_of("settings", deps_hash, directory / "opt")
    with lambda_function(
        task_root, [layer], lambda_environment("settings"), runtime=runtime, name="settings"
    ) as running:
        kind, reply = running.invoke({"deployer": {"trigger": "manual", "payload": [{"x": 1}]}})
        return kind, reply, running.output()


def test_secrets_are_read_at_cold_start_by_exactly_their_role_and_written_nowhere(
    stored_secrets: dict[str, str], lambda_runtime: Path, tmp_path: Path
) -> None:
    bucket = stored_secrets["bucket"]
    options = options_for(bucket)
    plan = deployer.plan(seen, provider="aws", quiet=True, **options)
    deployment = deployer.deploy(seen, provider="aws", quiet=True, **options)

    lambda_client = boto3.client("lambda")
    function = lambda_client.get_function(FunctionName="settings")
    variables = function["Configuration"]["Environment"]["Variables"]
    assert variables["LEVEL"] == "strict"
    assert json.loads(variables["DEPLOYER_SECRETS"]) == {
        "API_KEY": "ssm:/prod/api-key",
        "DB_PASSWORD": "secretsmanager:prod/db#password",
    }
    assert variables["DEPLOYER_MANAGED"] == "API_KEY,DB_PASSWORD,LEVEL"
    assert function["Concurrency"]["ReservedConcurrentExecutions"] == 5

    account = boto3.client("sts").get_caller_identity()["Account"]
    policy = boto3.client("iam").get_role_policy(
        RoleName=function["Configuration"]["Role"].rsplit("/", 1)[1], PolicyName="deployer"
    )["PolicyDocument"]
    reads = {
        statement["Action"]: statement["Resource"]
        for statement in policy["Statement"]
        if statement["Action"] in ("secretsmanager:GetSecretValue", "ssm:GetParameter")
    }
    assert reads == {
        "secretsmanager:GetSecretValue": [
            f"arn:aws:secretsmanager:us-east-1:{account}:secret:prod/db-??????"
        ],
        "ssm:GetParameter": [f"arn:aws:ssm:us-east-1:{account}:parameter/prod/api-key"],
    }

    kind, reply, logs = run_deployed(options, deployment.deps_hash, lambda_runtime, tmp_path)
    assert kind == "response", (reply, logs)
    [row] = reply["body"]["predictions"]
    assert row["level"] == "strict"
    assert row["password"] == digest(PASSWORD)
    assert row["api_key"] == digest(API_KEY)

    # Neither value is in anything deployer wrote or showed.
    artifacts = deployer.write_artifacts(
        deployer.build(seen, provider="aws", **options), tmp_path / "dist", quiet=True
    )
    blobs = [path.read_bytes() for path in artifacts]
    blobs.append(json.dumps(function, default=str).encode())
    blobs.append(
        json.dumps(
            lambda_client.list_tags(Resource=function["Configuration"]["FunctionArn"])
        ).encode()
    )
    blobs.append(str(plan).encode())
    blobs.append(logs.encode())
    blobs.append(json.dumps(policy).encode())
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    blobs += [
        boto3.client("s3").get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listing
    ]
    for value in (PASSWORD, API_KEY):
        assert [blob[:60] for blob in blobs if value.encode() in blob] == []


def test_a_redeploy_keeps_variables_set_outside_deployer_and_drops_its_own_old_ones(
    stored_secrets: dict[str, str],
) -> None:
    bucket = stored_secrets["bucket"]
    deployer.deploy(seen, provider="aws", quiet=True, **options_for(bucket))
    lambda_client = boto3.client("lambda")
    variables = lambda_client.get_function_configuration(FunctionName="settings")["Environment"][
        "Variables"
    ]
    lambda_client.update_function_configuration(
        FunctionName="settings",
        Environment={"Variables": {**variables, "SET_IN_CONSOLE": "yes"}},
    )
    assert deployer.plan(seen, provider="aws", quiet=True, **options_for(bucket)).changes_nothing
    changed = options_for(bucket, env={"MODE": "fast"}, secrets={}, max_concurrency=None)
    plan = deployer.plan(seen, provider="aws", quiet=True, **changed)
    assert {step.setting for step in plan.actions if hasattr(step, "setting")} >= {
        "env",
        "secrets",
        "max concurrency",
    }
    deployer.deploy(seen, provider="aws", quiet=True, **changed)
    function = lambda_client.get_function(FunctionName="settings")
    variables = function["Configuration"]["Environment"]["Variables"]
    assert {key: value for key, value in variables.items() if not key.startswith("DEPLOYER_")} == {
        "MODE": "fast",
        "SET_IN_CONSOLE": "yes",
    }
    assert variables["DEPLOYER_MANAGED"] == "MODE"
    assert "DEPLOYER_SECRETS" not in variables
    assert "Concurrency" not in function or not function["Concurrency"]
    role = function["Configuration"]["Role"].rsplit("/", 1)[1]
    policy = boto3.client("iam").get_role_policy(RoleName=role, PolicyName="deployer")
    assert "secretsmanager" not in json.dumps(policy["PolicyDocument"])


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (
            {"DB_PASSWORD": "secretsmanager:prod/missing"},
            "secrets=: DB_PASSWORD: secretsmanager:prod/missing does not exist in us-east-1: "
            "create it first (`aws secretsmanager create-secret --name prod/missing ...`)",
        ),
        (
            {"API_KEY": "ssm:/prod/missing"},
            "secrets=: API_KEY: ssm:/prod/missing does not exist in us-east-1: create it first "
            "(`aws ssm put-parameter --type SecureString --name /prod/missing ...`)",
        ),
    ],
)
def test_a_missing_secret_is_refused_before_anything_is_created(
    stored_secrets: dict[str, str], secrets: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        deployer.deploy(
            seen,
            provider="aws",
            quiet=True,
            **options_for(stored_secrets["bucket"], secrets=secrets),
        )
    assert str(refused.value).startswith(message)
    assert boto3.client("lambda").list_functions()["Functions"] == []
    assert boto3.client("iam").list_roles()["Roles"] == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secrets": {"DB": "prod/db"}}, "secrets=: DB: 'prod/db' is not a secret reference"),
        ({"secrets": {"DB": "ssm:/a#key"}}, "is not a secret reference"),
        ({"env": {"AWS_REGION": "x"}}, "AWS_REGION is set by Lambda itself"),
        ({"env": {"_HANDLER": "x"}}, "_HANDLER is set by Lambda itself"),
    ],
)
def test_bad_references_and_lambdas_own_names_are_refused_offline(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        deployer.build(seen, name="settings", provider="aws", output="s3://b/p", **options)


def test_a_secret_the_role_cannot_read_fails_the_cold_start_naming_it(
    stored_secrets: dict[str, str], lambda_runtime: Path, tmp_path: Path
) -> None:
    bucket = stored_secrets["bucket"]
    options = options_for(bucket)
    deployment = deployer.deploy(seen, provider="aws", quiet=True, **options)
    boto3.client("secretsmanager").delete_secret(
        SecretId="prod/db", ForceDeleteWithoutRecovery=True
    )
    kind, reply, output = run_deployed(options, deployment.deps_hash, lambda_runtime, tmp_path)
    assert kind == "error"
    assert "secret DB_PASSWORD (secretsmanager:prod/db#password) could not be read at cold " in (
        json.dumps(reply) + output
    )
    assert PASSWORD not in json.dumps(reply) + output


def test_a_schedule_that_does_not_overlap_tells_its_runs_so(stored_secrets: dict[str, str]) -> None:
    triggers = [deployer.Cron("0 6 * * *", overlap=False), deployer.Every(hours=1)]
    bucket = stored_secrets["bucket"]
    options = options_for(
        bucket, secrets={}, triggers=triggers, inputs=f"s3://{bucket}/features.parquet"
    )
    boto3.client("s3").put_object(
        Bucket=bucket,
        Key="features.parquet",
        Body=pd.DataFrame({"x": [1.0]}).to_parquet(index=False),
    )
    deployer.deploy(seen, provider="aws", quiet=True, **options)
    scheduler = boto3.client("scheduler")
    inputs = {
        json.loads(scheduler.get_schedule(Name=item["Name"])["Description"])["type"]: json.loads(
            scheduler.get_schedule(Name=item["Name"])["Target"]["Input"]
        )["deployer"]
        for item in scheduler.list_schedules(NamePrefix="deployer-settings-")["Schedules"]
    }
    assert inputs["cron"]["overlap"] is False
    assert "overlap" not in inputs["every"]


def test_history_lists_published_versions_and_rollback_moves_the_alias(
    stored_secrets: dict[str, str],
) -> None:
    options = options_for(stored_secrets["bucket"], secrets={}, keep_versions=2)
    first = deployer.deploy(add_one, provider="aws", quiet=True, **options)
    second = deployer.deploy(
        add_two, provider="aws", quiet=True, **{**options, "env": {"LEVEL": "lenient"}}
    )
    versions = deployer.history("settings", provider="aws")
    assert [(version.code_hash, version.live) for version in versions] == [
        (second.code_hash, True),
        (first.code_hash, False),
    ]
    assert versions[0].deployed_by  # the caller moto reports
    lambda_client = boto3.client("lambda")
    before = lambda_client.list_versions_by_function(FunctionName="settings")["Versions"]

    deployer.rollback("settings", provider="aws", quiet=True)
    alias = lambda_client.get_alias(FunctionName="settings", Name="live")
    assert alias["FunctionVersion"] == versions[1].version
    assert lambda_client.list_versions_by_function(FunctionName="settings")["Versions"] == before
    state = deployer.get("settings", provider="aws")
    assert state is not None and state.code_hash == first.code_hash
    live = lambda_client.get_function_configuration(FunctionName="settings", Qualifier="live")
    assert live["Environment"]["Variables"]["LEVEL"] == "strict"  # that version's settings

    # The next deploy of new code publishes and points the alias as usual, and
    # keeps two versions: the new one and the one live before it.
    third = deployer.deploy(add_three, provider="aws", quiet=True, **options)
    versions = deployer.history("settings", provider="aws")
    assert [(version.code_hash, version.live) for version in versions] == [
        (third.code_hash, True),
        (first.code_hash, False),
    ]
    with pytest.raises(ConfigError, match="keeps no version with code"):
        deployer.rollback("settings", provider="aws", to=second.code_hash[:8], quiet=True)
