"""The AWS provider: Lambda, layers, EventBridge Scheduler, function URLs, S3.

State lives in AWS itself, never in a local file: the function's tags carry
deployer's name and hashes, the ``live`` alias points at the serving version,
schedules are found by name prefix and the URL by the alias. So a deploy from a
laptop and one from CI plan against the same truth.

Every call goes through boto3's standard credential chain and honours
``AWS_ENDPOINT_URL``, which is how the tests point it at moto.

Apply carries out the plan's steps in the order planned, chosen so that a
failure at any step leaves the previous version serving: packaging (before
any call) -> the execution role -> the function in one update (layer or slim
archive, code and configuration, wait, publish a version, move the ``live``
alias, tags) -> the scheduler role -> schedules and the URL -> roles of the
previous naming. Nothing points at a new version before it is active.

IAM roles: each function runs as ``deployer-function.{name}`` and its schedules
as ``deployer-scheduler.{name}``. Function names cannot contain a dot, so no
two of these names are equal for different functions or kinds, nor equal to a
name the previous version used (``deployer-{name}``, ``deployer-{name}-scheduler``:
the execution role of "x-scheduler" was the scheduler role of "x"). A role is
deployer's only if its tags say ``deployer:name`` = the function and
``deployer:role`` = "execution" or "scheduler"; any other role under one of
these names stops the plan, and is never modified or deleted. Roles of the
previous naming are deleted once the function has moved off them, only if
their ``deployer:name`` tag names this function and nothing else runs as them.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import boto3  # imported at module load: a missing extra is reported by the registry
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from deployer.archive import copy_atomically, extend_zip_bytes, write_atomically
from deployer.cache import cache_root
from deployer.errors import ConfigError, ProviderError
from deployer.providers.aws.lambda_package import (
    DIRECT_UPLOAD_LIMIT_BYTES,
    LAYER_LIMIT_BYTES,
    SLIM_SUFFIX,
    DependencyArtifact,
    LambdaTarget,
    decompressor_wheel,
    dependency_artifact,
    lambda_target,
)
from deployer.providers.aws.target import AwsOptions, to_eventbridge
from deployer.providers.base import (
    CREATE,
    DELETE,
    FUNCTION_STEPS,
    UPDATE_CONFIG,
    AddTrigger,
    BaseProvider,
    Deployed,
    DeploymentState,
    InstallDependencies,
    Invocation,
    LogEvent,
    LogPage,
    LogQuery,
    Plan,
    RemoveTrigger,
    Step,
    TriggerStep,
    Version,
    describe_trigger,
    encode_payload,
    is_schedule,
    is_schedule_of,
    merged_environment,
    next_log_start,
    own_variables,
    schedule_id,
    schedule_prefix,
    secret_references,
    split_bucket_url,
    trigger_changes,
    user_environment,
)
from deployer.runtimes import aws as aws_runtime
from deployer.runtimes import fanout
from deployer.spec import check_cloud_spec
from deployer.triggers import Cron, Every, describe, trigger_from_dict

if TYPE_CHECKING:
    from deployer.bundle import Bundle
    from deployer.console import Reporter
    from deployer.spec import DeploySpec

ALIAS = "live"
VERSION_PREFIX = "deployer"  # the description of a version deployer published
# Variables Lambda sets itself (besides AWS_* and LAMBDA_*), which a function
# may not set: https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html
LAMBDA_RESERVED_ENV = frozenset({"_HANDLER", "_X_AMZN_TRACE_ID", "TZ"})
HANDLER = "deployer_runtime.aws.handler"
MAX_MEMORY_MB = 10240
MAX_TIMEOUT_SECONDS = 900
TAG_PREFIX = "deployer:"
# Lambda's Python runtimes already have these; shipping them again only costs size.
LAMBDA_PREINSTALLED = frozenset({"boto3", "botocore", "s3transfer", "jmespath"})
ARTIFACTS_DIRECTORY = ".deployer-artifacts"
# Events per FilterLogEvents page (CloudWatch's own limit).
LOG_PAGE_EVENTS = 10_000


@dataclass(frozen=True)
class Packaged:
    """Dependencies built for Lambda, and how they will be delivered."""

    dependencies: DependencyArtifact  # the layer zip or the slim tar.zst
    # What the code zip is made on, with the bundle added: slim mode's decompressor
    # (a wheel, which is a zip), or nothing.
    code_base: Path | None = None

    @property
    def mode(self) -> str:  # "layer" | "slim"
        return self.dependencies.mode

    @property
    def artifact(self) -> Path:
        return self.dependencies.path

    @property
    def artifact_sha256(self) -> str:
        return self.dependencies.sha256

    def code_zip(self, bundle: Bundle) -> bytes:
        """The zip Lambda runs: the bundle, plus what this delivery needs beside it."""
        if self.code_base is None:
            return bundle.zip_bytes()
        return extend_zip_bytes(self.code_base.read_bytes(), bundle.files)


def _trigger_of(schedule: dict[str, Any]) -> dict[str, Any]:
    """The trigger dict a schedule was made from, kept in its Description."""
    try:
        trigger = json.loads(schedule.get("Description") or "{}")
    except json.JSONDecodeError:
        return {}
    return trigger if isinstance(trigger, dict) else {}


def _layer_name(deps_hash: str) -> str:
    return f"deployer-deps-{deps_hash[:24]}"


EXECUTION = "execution"
SCHEDULER = "scheduler"
ASSUMED_BY = {EXECUTION: "lambda.amazonaws.com", SCHEDULER: "scheduler.amazonaws.com"}


def _role_name(name: str) -> str:
    # The dot cannot occur in a function name, so it ends the prefix: see the
    # module docstring for why the previous "deployer-{name}" collided.
    return f"deployer-function.{name}"


def _scheduler_role_name(name: str) -> str:
    return f"deployer-scheduler.{name}"


def _legacy_role_names(name: str) -> tuple[str, str]:
    """Execution and scheduler role names of deployments made before the rename."""
    return f"deployer-{name}", f"deployer-{name}-scheduler"


def _role_name_of(arn: str) -> str:
    """The role name in an ARN, lower-cased: IAM role names ignore case."""
    return arn.rsplit("/", 1)[-1].lower()


def _trust_policy(kind: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ASSUMED_BY[kind]},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _scheduler_policy(alias_arn: str) -> dict[str, Any]:
    """Scheduler's role may invoke this function's alias and nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": alias_arn}
        ],
    }


def _policy_document(document: Any) -> Any:
    """A policy as IAM returns it (boto3 decodes it; URL-encoded JSON if it could not)."""
    if isinstance(document, str):
        return json.loads(unquote(document))
    return document


def _role_tags(role: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in role.get("Tags") or []}


def _made_for(role: dict[str, Any], name: str, kind: str) -> bool:
    tags = _role_tags(role)
    return tags.get(f"{TAG_PREFIX}name") == name and tags.get(f"{TAG_PREFIX}role") == kind


def _foreign_role(role_name: str, name: str, kind: str) -> ProviderError:
    return ProviderError(
        f"IAM role {role_name!r} exists but is not the {kind} role deployer made for "
        f"function {name!r} (its tags are not {TAG_PREFIX}name={name} and "
        f"{TAG_PREFIX}role={kind}), and deployer never changes or deletes a role it does "
        "not own: delete that role yourself if nothing needs it (IAM cannot rename "
        "roles), or deploy under another function name"
    )


# What each public method is doing, for the message of an AWS error it meets.
_DOING = {
    "get": "reading the function",
    "list": "listing functions",
    "plan": "planning the deploy",
    "apply": "deploying",
    "invoke": "invoking the function",
    "logs": "reading the logs",
    "log_page": "reading the logs",
    "plan_delete": "planning the delete",
    "delete": "deleting",
}
_Method = TypeVar("_Method", bound=Callable[..., Any])
_Result = TypeVar("_Result")


def _background(action: Callable[..., _Result], *arguments: Any) -> Future[_Result]:
    """``action(*arguments)`` started on a thread of its own; its result when asked for."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(action, *arguments)
    finally:
        pool.shutdown(wait=False)


def _reports_aws_errors(method: _Method) -> _Method:
    """An AWS error in ``method`` becomes one ProviderError naming the operation and the fix."""

    @functools.wraps(method)
    def reported(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ClientError as error:
            details = error.response.get("Error", {})
            code = details.get("Code", "error")
            if "AccessDenied" in code or code in ("UnauthorizedOperation", "AccessDeniedException"):
                fix = (
                    "the AWS identity you deploy with lacks that permission (the message "
                    "names the action and resource): grant it, or deploy with another profile"
                )
            elif method.__name__ == "apply":
                fix = (
                    "nothing half-done is served: the previous version stays live, and "
                    "deploying again resumes from what exists"
                )
            else:
                fix = "nothing was changed"
            raise ProviderError(
                f"AWS refused {error.operation_name} while {_DOING[method.__name__]} "
                f"({code}: {details.get('Message', '')}): {fix}"
            ) from error

    return reported  # type: ignore[return-value]


def _milliseconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _from_milliseconds(milliseconds: int | None) -> datetime | None:
    return (
        None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, timezone.utc)
    )


@contextmanager
def _iam_errors(operation: str, role_name: str) -> Iterator[None]:
    """Report a refused or failed IAM call by operation and role, not as a traceback."""
    try:
        yield
    except ClientError as error:
        details = error.response.get("Error", {})
        code = details.get("Code", "error")
        advice = ""
        if "AccessDenied" in code or code == "UnauthorizedOperation":
            advice = (
                f": the AWS identity that deploys needs iam:{operation} on "
                f"arn:aws:iam::<account>:role/{role_name}"
            )
        raise ProviderError(
            f"IAM {operation} on role {role_name!r} failed ({code}: "
            f"{details.get('Message', '')}){advice}"
        ) from error


@dataclass(frozen=True)
class RoleStep(Step):
    """A plan step on one IAM role; apply acts on exactly the role it names."""

    role_name: str = ""
    role_kind: str = EXECUTION


class CreateRole(RoleStep):
    kind = CREATE


class UpdateRole(RoleStep):
    kind = UPDATE_CONFIG


class DeleteRole(RoleStep):
    kind = DELETE


class MoveSchedule(TriggerStep):
    """A kept schedule that runs as another role (the previous naming) moves to ours."""

    kind = UPDATE_CONFIG


class AwsProvider(BaseProvider):
    name = "aws"
    function_noun = "Lambda function"
    Options = AwsOptions
    preinstalled = LAMBDA_PREINSTALLED

    def __init__(self, *, architecture: str = "x86_64", slim: bool = False) -> None:
        """``architecture``: "x86_64" or "arm64". ``slim``: allow dependencies over
        Lambda's 250 MB limit, shipped as one archive in S3 that the runtime
        unpacks into /tmp on a cold start (slower cold starts, any size)."""
        lambda_target("3.11", architecture)  # validates the architecture
        self.architecture = architecture
        self.slim = slim
        self._session: boto3.session.Session | None = None
        self._identity: dict[str, Any] | None = None

    # -- clients -------------------------------------------------------------

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            # boto3 reads AWS_DEFAULT_REGION; AWS_REGION is what Lambda and most
            # tools set, so honour it too.
            self._session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
        return self._session

    def client(self, service: str) -> Any:
        try:
            return self.session.client(service)
        except NoRegionError:
            raise ProviderError(
                "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION), "
                "or a region in your AWS profile"
            ) from None

    def _caller_identity(self) -> dict[str, Any]:
        """STS's answer for the credentials in use, asked once per provider."""
        if self._identity is None:
            try:
                self._identity = dict(self.client("sts").get_caller_identity())
            except NoCredentialsError:
                raise ProviderError(
                    "no AWS credentials found: configure them as for the AWS CLI "
                    "(aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                ) from None
        return self._identity

    def _account(self) -> str:
        return str(self._caller_identity()["Account"])

    @property
    def region(self) -> str:
        region = self.session.region_name
        if not region:
            raise ProviderError(
                "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION), "
                "or a region in your AWS profile"
            )
        return region

    # -- validation ----------------------------------------------------------

    def default_output(self) -> str:
        raise ConfigError(
            "provider 'aws' needs output='s3://<bucket>/<prefix>': runs are written to S3"
        )

    def platform(self, python: str) -> str | None:
        # The newest tag names the target: x86_64 and arm64, Amazon Linux 2 and
        # 2023 get different dependency trees, so different deps_hash values.
        return self.target(python).platform_tags[0]

    def target(self, python: str) -> LambdaTarget:
        return lambda_target(python, self.architecture)

    def check(self, spec: DeploySpec) -> DeploySpec:
        """Everything that can be wrong is found here, before any upload."""
        from deployer.bundle import python_version

        check_cloud_spec(
            spec,
            scheme="s3",
            runs_on="a Lambda function",
            store="S3",
            max_timeout_seconds=MAX_TIMEOUT_SECONDS,
            max_memory_mb=MAX_MEMORY_MB,
        )
        self.target(python_version())
        for trigger in spec.triggers:
            if isinstance(trigger, (Cron, Every)):
                to_eventbridge(trigger)  # raises TriggerError if AWS cannot express it
        for name, reference in spec.secrets:
            try:
                aws_runtime.parse_secret_reference(reference)
            except ValueError as error:
                raise ConfigError(f"secrets=: {name}: {error}") from None
        reserved = [name for name, _ in (*spec.env, *spec.secrets) if name in LAMBDA_RESERVED_ENV]
        reserved += [
            name for name, _ in (*spec.env, *spec.secrets) if name.startswith(("AWS_", "LAMBDA_"))
        ]
        if reserved:
            raise ConfigError(
                f"{sorted(set(reserved))[0]} is set by Lambda itself and cannot be changed: "
                "choose another name"
            )
        # No region or credentials here: building needs neither (plan checks them).
        return spec

    def write_artifacts(self, bundle: Bundle, directory: Path, reporter: Reporter) -> list[Path]:
        """The code zip, and the dependency layer or slim archive, as deploy uploads them.

        Installing the dependencies reads the package index; nothing calls AWS.
        """
        packaged = self.package(bundle, reporter, code_bytes=bundle.size)
        code = directory / f"{bundle.name}-{bundle.code_hash[:12]}-code.zip"
        write_atomically(code, packaged.code_zip(bundle))
        dependencies = directory / packaged.artifact.name
        copy_atomically(packaged.artifact, dependencies)
        return [code, dependencies]

    def require_access(self) -> None:
        """A region and credentials, named when missing, before the first AWS call of a plan."""
        _ = self.region
        self._account()

    # -- state ---------------------------------------------------------------

    def _function(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.client("lambda").get_function(FunctionName=name)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        return found

    def _tags(self, function: dict[str, Any]) -> dict[str, str]:
        tags = function.get("Tags") or {}
        return {
            key[len(TAG_PREFIX) :]: value
            for key, value in tags.items()
            if key.startswith(TAG_PREFIX)
        }

    def _schedule_records(self, name: str) -> dict[str, dict[str, Any]]:
        """Schedule name -> the schedule as Scheduler describes it, for function ``name``."""
        scheduler = self.client("scheduler")
        found = {}
        paginator = scheduler.get_paginator("list_schedules")
        for page in paginator.paginate(NamePrefix=schedule_prefix(name)):
            for summary in page["Schedules"]:
                if is_schedule_of(name, summary["Name"]):
                    found[summary["Name"]] = scheduler.get_schedule(Name=summary["Name"])
        return found

    def _schedules(self, name: str) -> dict[str, dict[str, Any]]:
        """Schedule name -> the trigger dict it was made from (kept in its Description)."""
        return {
            schedule_name: _trigger_of(schedule)
            for schedule_name, schedule in self._schedule_records(name).items()
        }

    def _url(self, name: str) -> dict[str, Any] | None:
        try:
            config: dict[str, Any] = self.client("lambda").get_function_url_config(
                FunctionName=name, Qualifier=ALIAS
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return None
            raise
        return config

    def _current_triggers(self, name: str) -> list[dict[str, Any]]:
        triggers = list(self._schedules(name).values())
        url = self._url(name)
        if url is not None:
            triggers.append({"type": "http", "public": url.get("AuthType") == "NONE"})
        return triggers

    def _state(self, function: dict[str, Any]) -> DeploymentState:
        configuration = function["Configuration"]
        tags = self._tags(function)
        name = configuration["FunctionName"]
        url = self._url(name)
        return DeploymentState(
            name=name,
            provider=self.name,
            url=url["FunctionUrl"] if url else None,
            code_hash=tags.get("code_hash", ""),
            deps_hash=tags.get("deps_hash", ""),
            output=tags.get("output", ""),
            inputs=tags.get("inputs") or None,
            triggers=tuple(self._current_triggers(name)),
            deployed_at=configuration.get("LastModified", ""),
            qualname=tags.get("qualname", ""),
        )

    @_reports_aws_errors
    def get(self, name: str) -> DeploymentState | None:
        function = self._function(name)
        if function is None or "name" not in self._tags(function):
            return None
        return self._state(function)

    @_reports_aws_errors
    def list(self) -> list[DeploymentState]:
        states = []
        paginator = self.client("lambda").get_paginator("list_functions")
        for page in paginator.paginate():
            for configuration in page["Functions"]:
                state = self.get(configuration["FunctionName"])
                if state is not None:
                    states.append(state)
        return states

    # -- IAM roles -----------------------------------------------------------

    def _role(self, role_name: str) -> dict[str, Any] | None:
        with _iam_errors("GetRole", role_name):
            try:
                role: dict[str, Any] = self.client("iam").get_role(RoleName=role_name)["Role"]
            except ClientError as error:
                if error.response["Error"]["Code"] == "NoSuchEntity":
                    return None
                raise
        return role

    def _owned_role(self, name: str, kind: str) -> dict[str, Any] | None:
        """Function ``name``'s role of ``kind``, None if there is none yet; any other
        role under that name stops here, before anything is uploaded or changed."""
        role_name = _role_name(name) if kind == EXECUTION else _scheduler_role_name(name)
        role = self._role(role_name)
        if role is not None and not _made_for(role, name, kind):
            raise _foreign_role(role_name, name, kind)
        return role

    def _role_out_of_date(
        self, role: dict[str, Any], kind: str, policy: dict[str, Any] | None
    ) -> bool:
        """Whether the role's trust, or its ``deployer`` policy (if known), differs from
        what deployer writes: a hand edit is undone by the next deploy."""
        if _policy_document(role.get("AssumeRolePolicyDocument")) != _trust_policy(kind):
            return True
        if policy is None:
            return False
        role_name = role["RoleName"]
        with _iam_errors("GetRolePolicy", role_name):
            try:
                current = self.client("iam").get_role_policy(
                    RoleName=role_name, PolicyName="deployer"
                )["PolicyDocument"]
            except ClientError as error:
                if error.response["Error"]["Code"] == "NoSuchEntity":
                    return True
                raise
        return bool(_policy_document(current) != json.loads(json.dumps(policy)))

    def _roles_in_use(self, excluding: str) -> set[str]:
        """Lower-cased names of the roles any Lambda function version other than
        ``excluding``'s, or any deployer schedule other than its own, runs as."""
        in_use = set()
        lambda_paginator = self.client("lambda").get_paginator("list_functions")
        # Every version, not only $LATEST: an alias may serve an older one.
        for page in lambda_paginator.paginate(FunctionVersion="ALL"):
            for configuration in page["Functions"]:
                if configuration["FunctionName"] != excluding:
                    in_use.add(_role_name_of(configuration.get("Role", "")))
        scheduler = self.client("scheduler")
        for page in scheduler.get_paginator("list_schedules").paginate(NamePrefix="deployer-"):
            for summary in page["Schedules"]:
                group = summary.get("GroupName") or "default"
                if group == "default" and is_schedule_of(excluding, summary["Name"]):
                    continue
                schedule = scheduler.get_schedule(Name=summary["Name"], GroupName=group)
                in_use.add(_role_name_of(schedule.get("Target", {}).get("RoleArn", "")))
        in_use.discard("")
        return in_use

    def _removable_roles(self, name: str, role_names: Iterable[str]) -> builtins.list[str]:
        """Of ``role_names``, the roles deployer made for function ``name`` that nothing
        but ``name``'s own function and schedules runs as.

        A role of the previous naming carries only ``deployer:name``; its name alone
        proves nothing ("deployer-x-scheduler" was also the execution role of
        "x-scheduler"), so the tag must name this function and no other function
        or schedule may still run as it.
        """
        owned = []
        for role_name in role_names:
            role = self._role(role_name)
            if role is None:
                continue
            if role_name in _legacy_role_names(name):
                mine = _role_tags(role).get(f"{TAG_PREFIX}name") == name
            else:
                mine = _made_for(
                    role, name, EXECUTION if role_name == _role_name(name) else SCHEDULER
                )
            if mine:
                owned.append(role_name)
        if not owned:
            return []
        in_use = self._roles_in_use(excluding=name)
        return [role_name for role_name in owned if role_name.lower() not in in_use]

    def _role_steps(
        self, name: str, kind: str, role: dict[str, Any] | None, policy: dict[str, Any] | None
    ) -> builtins.list[Step]:
        role_name = _role_name(name) if kind == EXECUTION else _scheduler_role_name(name)
        if role is None:
            return [CreateRole(f"IAM role {role_name} ({kind} role of {name})", role_name, kind)]
        if self._role_out_of_date(role, kind, policy):
            return [
                UpdateRole(
                    f"IAM role {role_name}: reset its trust and permissions to what {name} needs",
                    role_name,
                    kind,
                )
            ]
        return []

    def _schedule_moves(
        self, name: str, wanted: builtins.list[dict[str, Any]]
    ) -> builtins.list[Step]:
        """Kept schedules that run as another role (the previous naming) move to ours."""
        role_name = _scheduler_role_name(name)
        records = self._schedule_records(name)
        steps: builtins.list[Step] = []
        for trigger in wanted:
            record = records.get(schedule_id(name, trigger))
            if record is None:
                continue
            current = record.get("Target", {}).get("RoleArn", "")
            if _role_name_of(current) != role_name.lower():
                steps.append(
                    MoveSchedule(
                        f"schedule {describe_trigger(trigger)}: run as {role_name} "
                        f"(was {current.rsplit('/', 1)[-1] or 'none'})",
                        trigger=trigger,
                    )
                )
        return steps

    def _delete_role(self, role_name: str) -> None:
        iam = self.client("iam")
        with _iam_errors("ListAttachedRolePolicies", role_name):
            attached = [
                policy["PolicyArn"]
                for page in iam.get_paginator("list_attached_role_policies").paginate(
                    RoleName=role_name
                )
                for policy in page["AttachedPolicies"]
            ]
        for policy_arn in attached:
            with _iam_errors("DetachRolePolicy", role_name):
                iam.detach_role_policy(RoleName=role_name, PolicyArn=policy_arn)
        with _iam_errors("ListRolePolicies", role_name):
            inline = [
                policy_name
                for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name)
                for policy_name in page["PolicyNames"]
            ]
        for policy_name in inline:
            with _iam_errors("DeleteRolePolicy", role_name):
                iam.delete_role_policy(RoleName=role_name, PolicyName=policy_name)
        with _iam_errors("DeleteRole", role_name):
            iam.delete_role(RoleName=role_name)

    def _delete_planned_role(self, step: DeleteRole, name: str, reporter: Reporter) -> None:
        """Delete a role the plan named, checked again just before: one that has
        since changed hands or come into use is kept."""
        if self._removable_roles(name, [step.role_name]):
            self._delete_role(step.role_name)
            reporter.say(f"deleted IAM role {step.role_name}")
        else:
            reporter.say(
                f"kept IAM role {step.role_name}: since the plan it is gone, no longer tagged "
                f"for {name}, or something else runs as it"
            )

    # -- plan ----------------------------------------------------------------

    def _layer_arn(self, deps_hash: str) -> str | None:
        versions = self.client("lambda").list_layer_versions(LayerName=_layer_name(deps_hash))
        for version in versions.get("LayerVersions", []):
            return str(version["LayerVersionArn"])
        return None

    @_reports_aws_errors
    def deployed(self, name: str) -> Deployed | None:
        function = self._function(name)
        if function is None:
            return None
        tags = self._tags(function)
        if "name" not in tags:
            raise ProviderError(
                f"a Lambda function named {name!r} exists but was not deployed by "
                "deployer: choose another name, or delete it yourself"
            )
        timeout = tags.get("timeout", "")
        variables = function["Configuration"].get("Environment", {}).get("Variables", {})
        secrets = secret_references(variables)
        return Deployed(
            code_hash=tags.get("code_hash", ""),
            deps_hash=tags.get("deps_hash", ""),
            settings={
                "output": tags.get("output", ""),
                "inputs": tags.get("inputs") or None,
                "timeout": int(timeout) if timeout.isdigit() else timeout,
                "memory": function["Configuration"].get("MemorySize"),
                "env": user_environment(variables, secrets),
                "secrets": secrets,
                "max concurrency": function.get("Concurrency", {}).get(
                    "ReservedConcurrentExecutions"
                ),
                "execution role": _role_name_of(function["Configuration"].get("Role", "")),
            },
            triggers=tuple(self._current_triggers(name)),
        )

    def wanted_settings(self, spec: DeploySpec) -> dict[str, Any]:
        # IAM role names are case-insensitive; the ARN's is compared lower-cased.
        return {**super().wanted_settings(spec), "execution role": _role_name(spec.name).lower()}

    @_reports_aws_errors
    def require_python(self, python: str) -> None:
        self.target(python)

    @_reports_aws_errors
    def plan(self, bundle: Bundle, spec: DeploySpec) -> Plan:
        self.require_python(bundle.manifest.python)
        self.require_access()
        self._require_secrets(spec)
        observed = self.observe(spec.name)
        deployed = self.deployed(spec.name)
        wanted = list(bundle.manifest.triggers)
        wants_schedules = any(is_schedule(trigger) for trigger in wanted)
        # A role deployer does not own stops the plan here, before anything is
        # built, uploaded or changed.
        execution_role = self._owned_role(spec.name, EXECUTION)
        scheduler_role = self._owned_role(spec.name, SCHEDULER) if wants_schedules else None
        steps: list[Step] = []
        if self._layer_arn(bundle.deps_hash) is None and not self._slim_exists(
            spec, bundle.deps_hash
        ):
            count = len(bundle.manifest.requirements)
            steps.append(
                InstallDependencies(
                    f"build and upload dependencies {bundle.deps_hash[:12]} ({count} packages)"
                )
            )
        steps += self._role_steps(
            spec.name, EXECUTION, execution_role, self.execution_policy(spec, self._account())
        )
        steps += self.function_steps(deployed, bundle, spec)
        if wants_schedules:
            steps += self._role_steps(
                spec.name, SCHEDULER, scheduler_role, _scheduler_policy(self._alias_arn(spec.name))
            )
            steps += self._schedule_moves(spec.name, wanted)
        steps += trigger_changes(wanted, deployed.triggers if deployed else ())
        steps += [
            DeleteRole(f"IAM role {role_name} (the previous naming, no longer used)", role_name)
            for role_name in self._removable_roles(spec.name, _legacy_role_names(spec.name))
        ]
        return self.make_plan(bundle, spec, steps, observed)

    def _alias_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self._account()}:function:{name}:{ALIAS}"

    # -- packaging -----------------------------------------------------------

    def _artifact_key(self, spec: DeploySpec, file_name: str) -> tuple[str, str]:
        bucket, prefix = split_bucket_url(spec.output)
        key = "/".join(part for part in (prefix, ARTIFACTS_DIRECTORY, file_name) if part)
        return bucket, key

    def _slim_exists(self, spec: DeploySpec, deps_hash: str) -> bool:
        bucket, key = self._artifact_key(spec, f"deps-{deps_hash}{SLIM_SUFFIX}")
        try:
            self.client("s3").head_object(Bucket=bucket, Key=key)
        except ClientError:
            return False
        return True

    def package(self, bundle: Bundle, reporter: Reporter, *, code_bytes: int) -> Packaged:
        """Install for the Lambda target and choose layer or slim mode by size."""
        target = self.target(bundle.manifest.python)
        # Slim mode's decompressor is fetched while pip installs (once per platform).
        decompressing = _background(decompressor_wheel, target, cache_root()) if self.slim else None

        def mode_for(unzipped_bytes: int) -> str:
            total = unzipped_bytes + code_bytes
            if total <= LAYER_LIMIT_BYTES:
                return "layer"
            if not self.slim:
                raise ProviderError(
                    f"the dependencies are {unzipped_bytes / 2**20:.0f} MB unzipped "
                    f"(with the code {total / 2**20:.0f} MB), over Lambda's "
                    f"{LAYER_LIMIT_BYTES / 2**20:.0f} MB limit for code and layers: deploy with "
                    "provider_options={'slim': True} (CLI: --provider-option slim=true) to ship "
                    "them as one archive unpacked into /tmp on cold start, or need fewer packages"
                )
            reporter.say(
                f"dependencies are {unzipped_bytes / 2**20:.0f} MB unzipped, over "
                f"Lambda's {LAYER_LIMIT_BYTES / 2**20:.0f} MB limit for code and layers: "
                "slim mode (one archive in S3, unpacked into /tmp on cold start)"
            )
            return "slim"

        artifact = dependency_artifact(
            bundle.manifest.requirements,
            target,
            deps_hash=bundle.deps_hash,
            cache_dir=cache_root(),
            reporter=reporter,
            mode_for=mode_for,
        )
        if artifact.mode == "slim" and decompressing is not None:
            return Packaged(artifact, decompressing.result())
        return Packaged(artifact)

    # -- apply ---------------------------------------------------------------

    @_reports_aws_errors
    def apply(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        return super().apply(plan, reporter)

    def execute(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        bundle, spec = plan.bundle, plan.spec
        assert bundle is not None and spec is not None
        # Packaging runs first: a size or wheel problem stops the deploy before
        # anything in AWS is created or changed. One Lambda update carries the
        # code and every setting, so the function steps are done together.
        # (Dependencies alone: the layer is gone, the function is redeployed with a new one.)
        function_steps = plan.of_type(*FUNCTION_STEPS) or plan.of_type(InstallDependencies)
        deploy_at = function_steps[0] if function_steps else None
        packaged = (
            self.package(bundle, reporter, code_bytes=bundle.size) if function_steps else None
        )
        account = self._account()
        if any(is_schedule(trigger) for trigger in bundle.manifest.triggers):
            # Ours when planned; checked again before anything is uploaded.
            self._owned_role(spec.name, SCHEDULER)
        for step in plan.steps:
            if isinstance(step, (CreateRole, UpdateRole)):
                policy = (
                    self.execution_policy(spec, account)
                    if step.role_kind == EXECUTION
                    else _scheduler_policy(self._alias_arn(spec.name))
                )
                self._ensure_role(spec.name, step.role_kind, policy)
                reporter.say(str(step))
            elif step is deploy_at:
                assert packaged is not None
                self._deploy_function(spec, bundle, packaged, reporter)
            elif isinstance(step, MoveSchedule | AddTrigger) and is_schedule(step.trigger):
                self._put_schedule(spec.name, step.trigger, reporter)
            elif isinstance(step, RemoveTrigger) and is_schedule(step.trigger):
                self._delete_schedule(spec.name, step.trigger, reporter)
            elif isinstance(step, AddTrigger):
                self._put_url(spec.name, public=bool(step.trigger.get("public")))
            elif isinstance(step, RemoveTrigger):
                self._remove_url(spec.name, step.trigger, bundle.manifest.triggers, reporter)
            elif isinstance(step, DeleteRole):
                self._delete_planned_role(step, spec.name, reporter)
        state = self.get(spec.name)
        assert state is not None
        return state

    def _deploy_function(
        self, spec: DeploySpec, bundle: Bundle, packaged: Packaged, reporter: Reporter
    ) -> None:
        """Dependencies, then code and configuration, a new version, the alias, the tags."""
        # The secrets' references only: the runtime reads the values at cold start.
        environment = own_variables(spec)
        layers: list[str] = []
        ephemeral_mb = 512
        if packaged.mode == "layer":
            layers = [self._ensure_layer(bundle.deps_hash, packaged, spec, reporter)]
        else:
            bucket, key = self._ensure_slim(bundle.deps_hash, packaged, spec, reporter)
            environment.update(
                DEPLOYER_SLIM_ARCHIVE=f"s3://{bucket}/{key}",
                DEPLOYER_SLIM_SHA256=packaged.artifact_sha256,
            )
            # Room in /tmp for the unpacked tree, the archive while it is
            # unpacked, and the function's own scratch space.
            needed = packaged.dependencies.unzipped_bytes * 1.1 + packaged.artifact.stat().st_size
            ephemeral_mb = min(10240, max(512, int(needed / 2**20) + 512))
        role = self._role(_role_name(spec.name))
        if role is None:
            raise ProviderError(
                f"the execution role {_role_name(spec.name)} is gone since the plan was made: "
                "deploy again"
            )
        function = self._function(spec.name)
        current = (function or {}).get("Configuration", {}).get("Environment", {})
        environment = merged_environment(
            current.get("Variables", {}),
            environment,
            [name for name, _ in (*spec.env, *spec.secrets)],
        )
        self._upload_code(
            spec,
            bundle,
            packaged.code_zip(bundle),
            str(role["Arn"]),
            layers,
            environment,
            ephemeral_mb,
            function,
            reporter,
        )
        self._set_concurrency(spec, function, reporter)
        was_live = self._live_version(spec.name) if function is not None else None
        version = self._publish(spec.name, bundle, reporter)
        self._point_alias(spec.name, version)
        self._prune_versions(spec.name, spec.keep_versions, was_live, reporter)
        lambda_client = self.client("lambda")
        function_arn = lambda_client.get_function(FunctionName=spec.name)["Configuration"][
            "FunctionArn"
        ]
        lambda_client.tag_resource(Resource=function_arn, Tags=self._tags_for(bundle, spec))

    def _tags_for(self, bundle: Bundle, spec: DeploySpec) -> dict[str, str]:
        tags = {
            "name": spec.name,
            "code_hash": bundle.code_hash,
            "deps_hash": bundle.deps_hash,
            "output": spec.output,
            "inputs": spec.inputs or "",
            "timeout": str(spec.timeout_seconds),
            "qualname": bundle.manifest.function.qualname[:200],
        }
        return {f"{TAG_PREFIX}{key}": value for key, value in tags.items()}

    def _ensure_role(self, name: str, kind: str, policy: dict[str, Any]) -> str:
        """Function ``name``'s role of ``kind``, trusting only its service and holding
        exactly ``policy`` as its ``deployer`` policy; returns its ARN.

        Both are rewritten on every apply, so a narrower output or a new inputs
        location is reflected in what the role may do, and a trust edited by hand
        (letting some other principal assume the role) does not survive a deploy.
        """
        role_name = _role_name(name) if kind == EXECUTION else _scheduler_role_name(name)
        iam = self.client("iam")
        trust = json.dumps(_trust_policy(kind))
        role = self._owned_role(name, kind)
        if role is None:
            with _iam_errors("CreateRole", role_name):
                role = iam.create_role(
                    RoleName=role_name,
                    AssumeRolePolicyDocument=trust,
                    Description=f"deployer: {kind} role of function {name}",
                    Tags=[
                        {"Key": f"{TAG_PREFIX}name", "Value": name},
                        {"Key": f"{TAG_PREFIX}role", "Value": kind},
                    ],
                )["Role"]
        else:
            with _iam_errors("UpdateAssumeRolePolicy", role_name):
                iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=trust)
        with _iam_errors("PutRolePolicy", role_name):
            iam.put_role_policy(
                RoleName=role_name, PolicyName="deployer", PolicyDocument=json.dumps(policy)
            )
        return str(role["Arn"])

    def _secret_statements(self, spec: DeploySpec, account: str) -> builtins.list[dict[str, Any]]:
        """Read access to exactly the function's secrets."""
        secret_arns: builtins.list[str] = []
        parameter_arns: builtins.list[str] = []
        for _, reference in spec.secrets:
            service, identifier, _ = aws_runtime.parse_secret_reference(reference)
            if identifier.startswith("arn:"):
                # An ARN names one secret (with its suffix) or parameter exactly.
                arn = identifier
            elif service == "secretsmanager":
                # Secrets Manager appends "-" and 6 characters to a secret's name.
                arn = f"arn:aws:secretsmanager:{self.region}:{account}:secret:{identifier}-??????"
            else:
                arn = f"arn:aws:ssm:{self.region}:{account}:parameter/{identifier.lstrip('/')}"
            (secret_arns if service == "secretsmanager" else parameter_arns).append(arn)
        statements: list[dict[str, Any]] = []
        if secret_arns:
            statements.append(
                {
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": sorted(set(secret_arns)),
                }
            )
        if parameter_arns:
            statements.append(
                {
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": sorted(set(parameter_arns)),
                }
            )
        return statements

    def execution_policy(self, spec: DeploySpec, account: str) -> dict[str, Any]:
        """Least privilege: its own logs, read its inputs and its dependency
        archive, write and list only under ``{output}/{name}/``."""
        bucket, prefix = split_bucket_url(spec.output)
        runs_prefix = "/".join(part for part in (prefix, spec.name) if part)
        artifacts_bucket, artifacts_key = self._artifact_key(spec, "deps-*")
        statements: list[dict[str, Any]] = [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": (
                    f"arn:aws:logs:{self.region}:{account}:log-group:/aws/lambda/{spec.name}:*"
                ),
            },
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": f"arn:aws:s3:::{bucket}/{runs_prefix}/*",
            },
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{runs_prefix}/*", f"{runs_prefix}"]}},
            },
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{artifacts_bucket}/{artifacts_key}",
            },
        ]
        if any(getattr(trigger, "map", False) for trigger in spec.triggers):
            # A scheduled map run: the function invokes itself, once per shard.
            function_arn = f"arn:aws:lambda:{self.region}:{account}:function:{spec.name}"
            statements.append(
                {
                    "Effect": "Allow",
                    "Action": "lambda:InvokeFunction",
                    "Resource": [function_arn, f"{function_arn}:{ALIAS}"],
                }
            )
        statements += self._secret_statements(spec, account)
        if spec.inputs:
            inputs_bucket, inputs_key = split_bucket_url(spec.inputs)
            statements += [
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": [
                        f"arn:aws:s3:::{inputs_bucket}/{inputs_key}",
                        f"arn:aws:s3:::{inputs_bucket}/{inputs_key}/*",
                    ],
                },
                {
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": f"arn:aws:s3:::{inputs_bucket}",
                    "Condition": {"StringLike": {"s3:prefix": [inputs_key, f"{inputs_key}/*"]}},
                },
            ]
        return {"Version": "2012-10-17", "Statement": statements}

    def _upload_artifact(self, bucket: str, key: str, path: Path, reporter: Reporter) -> None:
        with reporter.status(
            f"uploading {path.name} ({path.stat().st_size / 1e6:.1f} MB) to s3://{bucket}/{key}"
        ):
            self.client("s3").upload_file(str(path), bucket, key)

    def _ensure_layer(
        self, deps_hash: str, packaged: Packaged, spec: DeploySpec, reporter: Reporter
    ) -> str:
        existing = self._layer_arn(deps_hash)
        if existing is not None:
            return existing
        from deployer.bundle import python_version

        content: dict[str, Any]
        if packaged.artifact.stat().st_size > DIRECT_UPLOAD_LIMIT_BYTES:
            bucket, key = self._artifact_key(spec, f"layer-{deps_hash}.zip")
            self._upload_artifact(bucket, key, packaged.artifact, reporter)
            content = {"S3Bucket": bucket, "S3Key": key}
        else:
            content = {"ZipFile": packaged.artifact.read_bytes()}
        with reporter.status(f"publishing layer {_layer_name(deps_hash)}"):
            published = self.client("lambda").publish_layer_version(
                LayerName=_layer_name(deps_hash),
                Description=f"deployer dependencies {deps_hash}",
                Content=content,
                CompatibleRuntimes=[self.target(python_version()).runtime],
                CompatibleArchitectures=[self.architecture],
            )
        return str(published["LayerVersionArn"])

    def _ensure_slim(
        self, deps_hash: str, packaged: Packaged, spec: DeploySpec, reporter: Reporter
    ) -> tuple[str, str]:
        bucket, key = self._artifact_key(spec, f"deps-{deps_hash}{SLIM_SUFFIX}")
        if not self._slim_exists(spec, deps_hash):
            self._upload_artifact(bucket, key, packaged.artifact, reporter)
        return bucket, key

    def _upload_code(
        self,
        spec: DeploySpec,
        bundle: Bundle,
        code: bytes,
        role_arn: str,
        layers: builtins.list[str],
        environment: dict[str, str],
        ephemeral_mb: int,
        function: dict[str, Any] | None,
        reporter: Reporter,
    ) -> None:
        lambda_client = self.client("lambda")
        code_source: dict[str, Any]
        if len(code) > DIRECT_UPLOAD_LIMIT_BYTES:
            bucket, key = self._artifact_key(spec, f"code-{bundle.code_hash}.zip")
            self.client("s3").put_object(Bucket=bucket, Key=key, Body=code)
            code_source = {"S3Bucket": bucket, "S3Key": key}
        else:
            code_source = {"ZipFile": code}
        configuration = {
            "Role": role_arn,
            "Handler": HANDLER,
            "Runtime": self.target(bundle.manifest.python).runtime,
            "Timeout": spec.timeout_seconds,
            "MemorySize": spec.memory_mb,
            "Layers": layers,
            "Environment": {"Variables": environment},
            "EphemeralStorage": {"Size": ephemeral_mb},
        }
        with reporter.status(f"uploading code ({len(code) / 1e3:.0f} kB)"):
            if function is None:
                lambda_client.create_function(
                    FunctionName=spec.name,
                    Code=code_source,
                    Architectures=[self.architecture],
                    Tags={f"{TAG_PREFIX}name": spec.name},
                    **configuration,
                )
                lambda_client.get_waiter("function_active_v2").wait(FunctionName=spec.name)
            else:
                lambda_client.update_function_configuration(FunctionName=spec.name, **configuration)
                lambda_client.get_waiter("function_updated_v2").wait(FunctionName=spec.name)
                lambda_client.update_function_code(FunctionName=spec.name, **code_source)
                lambda_client.get_waiter("function_updated_v2").wait(FunctionName=spec.name)

    def _set_concurrency(
        self, spec: DeploySpec, function: dict[str, Any] | None, reporter: Reporter
    ) -> None:
        """Reserved concurrency: at most ``max_concurrency`` runs at once (a run over
        it is throttled, which direct invokes and map shards retry)."""
        lambda_client = self.client("lambda")
        current = (function or {}).get("Concurrency", {}).get("ReservedConcurrentExecutions")
        if spec.max_concurrency == current:
            return
        if spec.max_concurrency is None:
            lambda_client.delete_function_concurrency(FunctionName=spec.name)
            reporter.say("max concurrency: the account's (no reservation)")
        else:
            lambda_client.put_function_concurrency(
                FunctionName=spec.name, ReservedConcurrentExecutions=spec.max_concurrency
            )
            reporter.say(f"max concurrency: {spec.max_concurrency} runs at once")

    def _require_secrets(self, spec: DeploySpec) -> None:
        """Each secret exists (its metadata, never its value), before anything changes."""
        for name, reference in spec.secrets:
            service, identifier, _ = aws_runtime.parse_secret_reference(reference)
            try:
                if service == "secretsmanager":
                    self.client("secretsmanager").describe_secret(SecretId=identifier)
                    continue
                found = self.client("ssm").describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Values": [_parameter_name(identifier)]}]
                )["Parameters"]
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code not in ("ResourceNotFoundException", "ParameterNotFound"):
                    raise
                found = []
            if not found:
                create = (
                    f"aws secretsmanager create-secret --name {identifier}"
                    if service == "secretsmanager"
                    else f"aws ssm put-parameter --type SecureString --name {identifier}"
                )
                raise ConfigError(
                    f"secrets=: {name}: {reference} does not exist in {self.region}: create it "
                    f"first (`{create} ...`) or fix the reference"
                )

    def _publish(self, name: str, bundle: Bundle, reporter: Reporter) -> str:
        # The description names the version's code and dependencies (and who
        # deployed it): `deployer history` reads them back, `rollback` by them.
        description = (
            f"{VERSION_PREFIX} code={bundle.code_hash} deps={bundle.deps_hash} by={self._caller()}"
        )
        with reporter.status("publishing version"):
            version = str(
                self.client("lambda").publish_version(
                    FunctionName=name, Description=description[:256]
                )["Version"]
            )
            self.client("lambda").get_waiter("published_version_active").wait(
                FunctionName=name, Qualifier=version
            )
        return version

    def _caller(self) -> str:
        """Who deploys: the last part of the caller's ARN (a user, or a role's session)."""
        arn = str(self._caller_identity().get("Arn", "?"))
        return arn.split(":", 5)[-1].split("/", 1)[-1][:80]

    def _versions(self, name: str) -> builtins.list[dict[str, Any]]:
        """The published versions deployer made, oldest first."""
        found = []
        paginator = self.client("lambda").get_paginator("list_versions_by_function")
        for page in paginator.paginate(FunctionName=name):
            for version in page["Versions"]:
                if version["Version"] != "$LATEST" and str(
                    version.get("Description", "")
                ).startswith(VERSION_PREFIX):
                    found.append(version)
        return sorted(found, key=lambda version: int(version["Version"]))

    def _live_version(self, name: str) -> str | None:
        try:
            alias = self.client("lambda").get_alias(FunctionName=name, Name=ALIAS)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            return None
        return str(alias["FunctionVersion"])

    @_reports_aws_errors
    def history(self, name: str) -> builtins.list[Version]:
        self.require(name)
        live = self._live_version(name)
        versions = []
        for version in reversed(self._versions(name)):
            fields = dict(
                part.split("=", 1) for part in version["Description"].split()[1:] if "=" in part
            )
            versions.append(
                Version(
                    version=version["Version"],
                    code_hash=fields.get("code", ""),
                    deps_hash=fields.get("deps", ""),
                    deployed_at=_utc_iso(version.get("LastModified", "")),
                    deployed_by=fields.get("by"),
                    live=version["Version"] == live,
                )
            )
        return versions

    @_reports_aws_errors
    def rollback(self, name: str, to: str | None, reporter: Reporter) -> Version:
        return super().rollback(name, to, reporter)

    def make_live(self, name: str, version: Version, reporter: Reporter) -> None:
        """The alias moves to the kept version: its code, layer and configuration
        serve again, with nothing built or uploaded."""
        self._point_alias(name, version.version)
        lambda_client = self.client("lambda")
        configuration = lambda_client.get_function_configuration(
            FunctionName=name, Qualifier=version.version
        )
        tags = {
            "code_hash": version.code_hash,
            "deps_hash": version.deps_hash,
            "timeout": str(configuration.get("Timeout", "")),
        }
        lambda_client.tag_resource(
            Resource=configuration["FunctionArn"].rsplit(":", 1)[0],
            Tags={f"{TAG_PREFIX}{key}": value for key, value in tags.items()},
        )

    def _prune_versions(
        self, name: str, keep: int, was_live: str | None, reporter: Reporter
    ) -> None:
        """Delete the oldest versions beyond ``keep``: never the live one, nor the one
        live before it (what a rollback most likely wants, even if older)."""
        live = self._live_version(name)
        versions = [version for version in self._versions(name) if version["Version"] != live]
        versions.sort(key=lambda version: (version["Version"] == was_live, int(version["Version"])))
        surplus = len(versions) - (keep - 1)
        for version in versions[: max(0, surplus)]:
            self.client("lambda").delete_function(FunctionName=name, Qualifier=version["Version"])
        if surplus > 0:
            reporter.say(f"removed {surplus} old version(s), keeping {keep} for rollback")

    def _point_alias(self, name: str, version: str) -> None:
        lambda_client = self.client("lambda")
        try:
            lambda_client.update_alias(FunctionName=name, Name=ALIAS, FunctionVersion=version)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            lambda_client.create_alias(FunctionName=name, Name=ALIAS, FunctionVersion=version)

    def _schedule_named(self, name: str, trigger: Mapping[str, Any]) -> str | None:
        """The schedule made from ``trigger`` (found by the trigger it records)."""
        for schedule_name, recorded in self._schedules(name).items():
            if recorded == dict(trigger):
                return schedule_name
        return None

    def _put_schedule(self, name: str, trigger: Mapping[str, Any], reporter: Reporter) -> None:
        """Create the schedule for ``trigger``, or make an existing one run as our role."""
        scheduler = self.client("scheduler")
        schedule_name = self._schedule_named(name, trigger) or schedule_id(name, trigger)
        schedule = trigger_from_dict(dict(trigger))
        assert isinstance(schedule, (Cron, Every))
        expression, time_zone = to_eventbridge(schedule)
        role = self._owned_role(name, SCHEDULER)
        if role is None:
            raise ProviderError(
                f"the scheduler role {_scheduler_role_name(name)} is gone since the plan was "
                "made: deploy again"
            )
        event: dict[str, Any] = {
            "deployer": {
                "trigger": "schedule",
                "schedule": schedule_name,
                # Substituted by EventBridge Scheduler at each firing.
                "scheduled_time": "<aws.scheduler.scheduled-time>",
            }
        }
        if schedule.map:  # the function coordinates a map run over its inputs
            event["deployer"]["map"] = True
        if schedule.params:
            event["deployer"]["params"] = dict(schedule.params)
        if not schedule.overlap:
            event["deployer"]["overlap"] = False
        definition: dict[str, Any] = {
            "Name": schedule_name,
            "Description": json.dumps(dict(trigger), sort_keys=True),
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": time_zone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {
                "Arn": self._alias_arn(name),
                "RoleArn": role["Arn"],
                "Input": json.dumps(event),
            },
            "State": "ENABLED",
        }
        if schedule_name in self._schedule_records(name):
            scheduler.update_schedule(**definition)
            reporter.say(f"schedule {describe(schedule)} now runs as {role['RoleName']}")
        else:
            scheduler.create_schedule(**definition)
            reporter.say(f"added schedule {describe(schedule)}: {expression} ({time_zone})")

    def _delete_schedule(self, name: str, trigger: Mapping[str, Any], reporter: Reporter) -> None:
        schedule_name = self._schedule_named(name, trigger)
        if schedule_name is not None:
            self.client("scheduler").delete_schedule(Name=schedule_name)
            reporter.say(f"removed schedule {describe_trigger(trigger)}")

    def _put_url(self, name: str, *, public: bool) -> None:
        lambda_client = self.client("lambda")
        auth_type = "NONE" if public else "AWS_IAM"
        current = self._url(name)
        if current is None:
            lambda_client.create_function_url_config(
                FunctionName=name, Qualifier=ALIAS, AuthType=auth_type
            )
        elif current.get("AuthType") != auth_type:
            lambda_client.update_function_url_config(
                FunctionName=name, Qualifier=ALIAS, AuthType=auth_type
            )
        if public:
            # A public URL also needs a resource policy letting anyone call it.
            try:
                lambda_client.add_permission(
                    FunctionName=name,
                    Qualifier=ALIAS,
                    StatementId="deployer-public-url",
                    Action="lambda:InvokeFunctionUrl",
                    Principal="*",
                    FunctionUrlAuthType="NONE",
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ResourceConflictException":
                    raise

    def _remove_url(
        self,
        name: str,
        removed: Mapping[str, Any],
        wanted: Iterable[Mapping[str, Any]],
        reporter: Reporter,
    ) -> None:
        """Remove the URL, or (when an Http trigger stays, with other access) the
        public permission the removed one had."""
        lambda_client = self.client("lambda")
        stays = any(trigger.get("type") == "http" for trigger in wanted)
        if removed.get("public"):
            try:
                lambda_client.remove_permission(
                    FunctionName=name, Qualifier=ALIAS, StatementId="deployer-public-url"
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
        if not stays and self._url(name) is not None:
            lambda_client.delete_function_url_config(FunctionName=name, Qualifier=ALIAS)
            reporter.say("removed function URL")

    # -- invoke, logs, delete ------------------------------------------------

    @_reports_aws_errors
    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout_seconds: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Invocation:
        self.require(name)
        response = self.client("lambda").invoke(
            FunctionName=name,
            Qualifier=ALIAS,
            Payload=json.dumps(invoke_event(payload, params), default=str).encode(),
        )
        reply = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            return Invocation(
                500,
                {
                    "status": "failed",
                    "error": {
                        "type": reply.get("errorType", "LambdaError"),
                        "message": reply.get("errorMessage", ""),
                    },
                },
            )
        return Invocation(int(reply.get("http_status", 500)), reply.get("body", {}))

    map_concurrency = 100  # of the account's 1,000 concurrent executions by default
    scheduled_map = True  # the scheduled invocation coordinates, invoking itself

    @contextmanager
    def map_dispatcher(self, name: str, *, concurrency: int) -> Iterator[fanout.Dispatch]:
        """Each shard is one synchronous invoke of the live alias (a request of a few
        hundred bytes, inside Lambda's 6 MB); throttling is retried here, with
        backoff, and does not count as a failed attempt of the shard."""
        import botocore.config

        self.require(name)
        configuration = self.client("lambda").get_function_configuration(FunctionName=name)
        wait = int(configuration.get("Timeout") or MAX_TIMEOUT_SECONDS) + 60
        client = self.session.client(
            "lambda",
            config=botocore.config.Config(
                max_pool_connections=concurrency,
                read_timeout=wait,
                connect_timeout=10,
                retries={"max_attempts": 1},  # throttling: below, where it is counted
            ),
        )

        yield aws_runtime.invoke_shards(client, name, ALIAS)

    def check_map_data(self, name: str, urls: Iterable[str]) -> None:
        """The execution role reads only the function's inputs and its own output
        folder (least privilege): data elsewhere would fail in every shard."""
        state = self.require(name)
        readable = [f"{state.output.rstrip('/')}/{name}/"]
        if state.inputs:
            readable += [state.inputs.rstrip("/"), state.inputs.rstrip("/") + "/"]
        outside = [
            url
            for url in urls
            if not any(url == prefix or url.startswith(prefix) for prefix in readable if prefix)
        ]
        if outside:
            raise ConfigError(
                f"{outside[0]} is outside what {name}'s role may read "
                f"({', '.join(readable[:2])}): deploy it with inputs= the prefix to map "
                f"(e.g. inputs='{_prefix_of(outside[0])}'), or pass a DataFrame, which is "
                "staged under its output"
            )

    # CloudWatch Logs: events can be searchable some seconds after their timestamp.
    log_lag = timedelta(seconds=30)

    def log_source(self, name: str) -> str:
        self.require(name)
        return f"/aws/lambda/{name}"

    @_reports_aws_errors
    def log_page(self, source: str, query: LogQuery, cursor: Any) -> LogPage:
        """One FilterLogEvents page of the log group ``source``. The cursor is the
        start time (ms) the pages are read from and CloudWatch's nextToken; after the
        last page, the start moves to the newest event seen, less ``log_lag``."""
        start, token = cursor if cursor is not None else (_milliseconds(query.since), None)
        arguments: dict[str, Any] = {"logGroupName": source, "limit": LOG_PAGE_EVENTS}
        if start is not None:
            arguments["startTime"] = start
        if query.until is not None:
            arguments["endTime"] = _milliseconds(query.until)
        if query.contains:
            arguments["filterPattern"] = json.dumps(query.contains.strip())  # a phrase
        if token:
            arguments["nextToken"] = token
        try:
            reply = self.client("logs").filter_log_events(**arguments)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ResourceNotFoundException":
                return LogPage((), cursor)  # the function has not logged anything yet
            raise
        events = tuple(
            LogEvent(
                datetime.fromtimestamp(event["timestamp"] / 1000, timezone.utc),
                event["eventId"],
                event["message"].removesuffix("\n"),
                event.get("logStreamName", ""),
            )
            for event in reply.get("events", [])
        )
        if reply.get("nextToken"):
            return LogPage(events, (start, reply["nextToken"]), more=True)
        resume = next_log_start(events, _from_milliseconds(start), query.since, self.log_lag)
        return LogPage(events, (_milliseconds(resume), None))

    @property
    def where(self) -> str:
        return f"on aws in {self.region}"

    def delete_steps(self, name: str, state: DeploymentState) -> builtins.list[Step]:
        role_names = (_role_name(name), _scheduler_role_name(name), *_legacy_role_names(name))
        return [
            DeleteRole(f"IAM role {role_name}", role_name)
            for role_name in self._removable_roles(name, role_names)
        ]

    @_reports_aws_errors
    def plan_delete(self, name: str) -> Plan:
        return super().plan_delete(name)

    @_reports_aws_errors
    def delete(self, plan: Plan, reporter: Reporter) -> None:
        super().delete(plan, reporter)

    def execute_delete(self, plan: Plan, state: DeploymentState, reporter: Reporter) -> None:
        """The function with its URL and every schedule, then the roles the plan named."""
        name = plan.name
        lambda_client = self.client("lambda")
        scheduler = self.client("scheduler")
        for schedule_name in self._schedules(name):
            scheduler.delete_schedule(Name=schedule_name)
        if self._url(name) is not None:
            lambda_client.delete_function_url_config(FunctionName=name, Qualifier=ALIAS)
        layers = [layer["Arn"] for layer in self._function(name)["Configuration"].get("Layers", [])]  # type: ignore[index]
        lambda_client.delete_function(FunctionName=name)
        for step in plan.of_type(DeleteRole):
            assert isinstance(step, DeleteRole)
            self._delete_planned_role(step, name, reporter)
        self._delete_unused_layers(layers)

    def _delete_unused_layers(self, layer_arns: builtins.list[str]) -> None:
        """Delete the dependency layers no other deployer function still uses."""
        if not layer_arns:
            return
        lambda_client = self.client("lambda")
        in_use: set[str] = set()
        for page in lambda_client.get_paginator("list_functions").paginate():
            for configuration in page["Functions"]:
                in_use.update(layer["Arn"] for layer in configuration.get("Layers", []))
        for arn in layer_arns:
            if arn in in_use or ":layer:deployer-deps-" not in arn:
                continue
            layer_name, version = arn.rsplit(":", 2)[-2:]
            lambda_client.delete_layer_version(LayerName=layer_name, VersionNumber=int(version))


def _prefix_of(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/"


def invoke_event(payload: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event a direct invoke sends (see runtimes/aws.py)."""
    request: dict[str, Any] = {"trigger": "manual"}
    if payload is not None:
        request["payload"] = encode_payload(payload)
    if params is not None:
        request["params"] = params
    return {"deployer": request}


def _parameter_name(identifier: str) -> str:
    """An SSM parameter's name from its name or ARN (``.../parameter/a/b`` -> ``/a/b``)."""
    if identifier.startswith("arn:"):
        path = identifier.split(":parameter", 1)[1]
        return path if path.count("/") > 1 else path.lstrip("/")
    return identifier


def _utc_iso(last_modified: str) -> str:
    """Lambda's LastModified (2026-11-30T06:00:00.000+0000) as ISO 8601 in UTC."""
    from datetime import datetime, timezone

    try:
        moment = datetime.strptime(last_modified, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return last_modified
    return moment.astimezone(timezone.utc).isoformat()
