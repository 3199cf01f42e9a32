"""The GCP provider: Cloud Functions (2nd gen), Cloud Scheduler, Cloud Run IAM, GCS, IAM.

State lives in Google Cloud itself, never in a local file: the function's
labels carry deployer's name and hashes (and whether it serves HTTP), its
environment carries the output and inputs, Cloud Scheduler jobs are found by
a name derived from the function's, and "public" is read from the IAM policy
of the function's Cloud Run service. So a deploy from a laptop and one from CI
plan against the same truth.

Identities (least privilege, never the project's default compute account,
which is often a project Editor). deployer makes two service accounts per
function, with ids derived from its region and name (``dpl-fn-<hash>``,
``dpl-sch-<hash>``: ids are at most 30 characters, names up to 40) and a
description that names the function they belong to:

- the function's: what it runs as; it may read the inputs bucket and write
  the output bucket, nothing else. ``provider_options={'service_account':
  ...}`` replaces it with the user's own account, to which deployer grants
  nothing.
- the scheduler's, made when there is a schedule: the only account Cloud
  Scheduler's jobs call the function as, and an invoker of the function's
  Cloud Run service only. The runtime is told its email and the audience of
  its tokens through the function's environment, and treats a request as a
  scheduled run only with that account's token (runtimes/gcp.py).

An account with one of those ids that deployer did not make for this function
is never adopted: planning stops, naming it, before anything is uploaded.
``delete`` removes the accounts with the function.

Credentials and project come from Application Default Credentials and the
standard environment. Every client speaks REST, in production as in tests, so
the contract tests exercise the transport users run: the official clients for
Cloud Functions, Cloud Scheduler, Cloud Run and Cloud Storage, and the IAM
REST API through google-auth's authorized session for service accounts
(google-cloud-iam's admin client has no REST transport). For the tests, each
control plane's endpoint can be overridden (``DEPLOYER_GCP_FUNCTIONS_ENDPOINT``,
``DEPLOYER_GCP_SCHEDULER_ENDPOINT``, ``DEPLOYER_GCP_RUN_ENDPOINT``,
``DEPLOYER_GCP_IAM_ENDPOINT``, ``DEPLOYER_GCP_STORAGE_ENDPOINT``,
``DEPLOYER_GCP_LOGGING_ENDPOINT``, ``DEPLOYER_GCP_SECRETS_ENDPOINT``); an
overridden client uses anonymous credentials, a real one never does.

Settings. ``env=`` are plain variables of the function, beside deployer's own
DEPLOYER_* ones; a variable someone else set (the console, a script) is kept
by a redeploy, and DEPLOYER_MANAGED names the ones deployer set, so that a name
dropped from env= goes. ``secrets=`` are Cloud Functions' own secret
variables: the platform reads Secret Manager when an instance starts, so a
value is never in the source, the variables, labels, plan or logs, and
deployer never reads one. The plan checks that each secret exists, and the
function's account (when deployer made it) is granted
roles/secretmanager.secretAccessor on exactly those secrets, in each secret's
own policy, before the function names them; a dropped secret's grant is taken
back after the function stops naming it, and all of them on delete.
``max_concurrency`` is the function's maximum instance count (a 2nd gen
function serves one request per instance by default).

Apply carries out the plan's steps in the order planned, chosen so that a
failure at any step leaves the previous version serving: make the source zip
(before any call) -> service accounts and bucket grants -> (an Http trigger
that stops being public: revoke allUsers first) -> upload the source, create
or update the function and wait for the operation (Cloud Build installs the
requirements; Cloud Functions moves traffic only once the new revision is
ready) -> identity settings -> invokers -> schedules. The hash
labels ride on the same update; if the operation fails they are put back, so
the next plan still sees the old code and offers the update again. A new
function learns its own URL (the audience of the scheduler's tokens) only once
created, so its first deploy ends with a second, configuration-only update.

Versions. Every deploy that updates the function keeps its source zip and a
record of its settings (source.py ``KeptSource``: hashes, when and by whom,
env=, secrets= references, memory, timeout, max_concurrency; never a secret
value nor an alert URL) under ``.deployer-artifacts/versions/PROJECT/REGION/NAME/``
beside the output. The output bucket is the one place deployer owns a part of
already (the runs; AWS keeps its dependency archives there too), the deploying
account may write it already, and it outlives a deploy: the bucket
generateUploadUrl hands out is Cloud Functions' own staging area, and the source
Cloud Functions keeps is only the current one. ``rollback`` uploads the kept zip
again, checked against the sha256 recorded, and updates the function with the
version's settings: Cloud Build rebuilds exactly that source. Who the function
runs as, its triggers and its alert URLs stay as deployed now. The live version
is the newest whose hashes and settings are the function's (by its labels and
configuration). ``keep_versions`` bounds what is kept; the oldest go first, never
the live one nor the one live before it.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

# Imported at module load: a missing extra is reported by the registry.
import google.auth
import requests
from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import functions_v2, run_v2, scheduler_v1
from google.cloud.storage import Client as StorageClient
from google.iam.v1 import policy_pb2
from google.protobuf import field_mask_pb2

from deployer.archive import write_atomically
from deployer.errors import ConfigError, ProviderError
from deployer.providers.base import (
    CREATE,
    DELETE,
    FUNCTION_STEPS,
    UPDATE_CONFIG,
    AddTrigger,
    BaseProvider,
    CreateFunction,
    Deployed,
    DeploymentState,
    Invocation,
    LogEvent,
    LogPage,
    LogQuery,
    Plan,
    RemoveTrigger,
    Step,
    TriggerStep,
    UpdateCode,
    UpdateConfig,
    Version,
    describe_trigger,
    invocation_from_reply,
    invoke_body,
    is_schedule,
    is_schedule_of,
    managed_names,
    merged_environment,
    next_log_start,
    own_variables,
    parse_rfc3339,
    posting_shards,
    refuse_public_map,
    require_readable_buckets,
    rfc3339,
    schedule_id,
    secret_references,
    split_bucket_url,
    trigger_changes,
    user_environment,
)
from deployer.providers.gcp.source import (
    ENTRY_POINT,
    KeptSource,
    check_kept_zip,
    gcp_runtime,
    kept_source,
    source_zip,
)
from deployer.providers.gcp.target import (
    GcpOptions,
    SecretReference,
    check_variable_names,
    parse_secret_reference,
    to_cloud_scheduler,
)
from deployer.runtimes import fanout
from deployer.runtimes.core import ALERTS_VARIABLE
from deployer.runtimes.gcp import (
    AUTHENTICATED,
    HTTP_ACCESS_VARIABLE,
    MANUAL_HEADER,
    MAP_TRIGGER,
    SCHEDULER_ACCOUNT_VARIABLE,
    SCHEDULER_AUDIENCE_VARIABLE,
)
from deployer.spec import DeploySpec, check_cloud_spec
from deployer.triggers import Cron, Every, trigger_from_dict

if TYPE_CHECKING:
    from deployer.bundle import Bundle
    from deployer.console import Reporter

MAX_MEMORY_MB = 32768
# Cloud Functions (2nd gen) lets an HTTP function run for up to 60 minutes.
MAX_TIMEOUT_SECONDS = 3600
# Cloud Scheduler waits for an HTTP target between 15 s and 30 min per attempt.
SCHEDULER_DEADLINE_SECONDS = (15, 1800)
OPERATION_TIMEOUT_SECONDS = 30 * 60
SCHEDULE_RETRIES = 2
UPLOAD_TIMEOUT_SECONDS = 15 * 60
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Invoking a 2nd gen function is Cloud Run's run.invoker on its service
# (roles/cloudfunctions.invoker only governs 1st gen functions).
INVOKER_ROLE = "roles/run.invoker"
PUBLIC_MEMBER = "allUsers"

LABEL_PREFIX = "deployer-"
NAME_LABEL = "deployer-name"
CODE_HASH_LABEL = "deployer-code-hash"
DEPS_HASH_LABEL = "deployer-deps-hash"
HTTP_LABEL = "deployer-http"  # "authenticated" | "public"; absent: no Http trigger
# max_concurrency as deployer set it. Cloud Functions reads an unset maximum
# instance count back as its default (100): without this label deployer could
# not tell max_concurrency=None from 100, nor a count someone else set.
MAX_CONCURRENCY_LABEL = "deployer-max-concurrency"
DESCRIPTION_PREFIX = "deployer: "  # followed by the function's qualname

ENVIRONMENT_NAME = "DEPLOYER_NAME"
ENVIRONMENT_OUTPUT = "DEPLOYER_OUTPUT"
ENVIRONMENT_INPUTS = "DEPLOYER_INPUTS"
# What the runtime checks a scheduled run's token against (runtimes/gcp.py).
ENVIRONMENT_SCHEDULER_ACCOUNT = SCHEDULER_ACCOUNT_VARIABLE
ENVIRONMENT_SCHEDULER_AUDIENCE = SCHEDULER_AUDIENCE_VARIABLE
ENVIRONMENT_HTTP_ACCESS = HTTP_ACCESS_VARIABLE  # "authenticated" | "public"

FUNCTIONS_ENDPOINT = "DEPLOYER_GCP_FUNCTIONS_ENDPOINT"
SCHEDULER_ENDPOINT = "DEPLOYER_GCP_SCHEDULER_ENDPOINT"
RUN_ENDPOINT = "DEPLOYER_GCP_RUN_ENDPOINT"
IAM_ENDPOINT = "DEPLOYER_GCP_IAM_ENDPOINT"
STORAGE_ENDPOINT = "DEPLOYER_GCP_STORAGE_ENDPOINT"
LOGGING_ENDPOINT = "DEPLOYER_GCP_LOGGING_ENDPOINT"
SECRETS_ENDPOINT = "DEPLOYER_GCP_SECRETS_ENDPOINT"
ENDPOINT_VARIABLES = (
    FUNCTIONS_ENDPOINT,
    SCHEDULER_ENDPOINT,
    RUN_ENDPOINT,
    IAM_ENDPOINT,
    STORAGE_ENDPOINT,
    LOGGING_ENDPOINT,
    SECRETS_ENDPOINT,
)
IAM_API = "https://iam.googleapis.com"
# Secret Manager's REST API through google-auth's session, as for IAM: deployer
# reads a secret's metadata and IAM policy, never a value, and
# google-cloud-secret-manager would be one more dependency for three calls.
SECRETS_API = "https://secretmanager.googleapis.com"
# What the function's account may do with each of its secrets: read its values.
SECRET_ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"
IAM_TIMEOUT_SECONDS = 60
# Cloud Logging's REST API (entries:list), read through google-auth's session:
# google-cloud-logging would be one more dependency for one call.
LOGGING_API = "https://logging.googleapis.com"
LOG_PAGE_ENTRIES = 1000  # entries:list's largest page
# Where each deployed version's source and settings are kept, beside the output
# (see the module docstring), as AWS keeps its dependency archives.
ARTIFACTS_DIRECTORY = ".deployer-artifacts"
VERSIONS_DIRECTORY = "versions"

# The two accounts deployer makes per function (see the module docstring).
FUNCTION_ROLE = "function"
SCHEDULER_ROLE = "scheduler"
ACCOUNT_PREFIXES = {FUNCTION_ROLE: "dpl-fn-", SCHEDULER_ROLE: "dpl-sch-"}
# 20 hex characters (80 bits) keep "dpl-sch-" + hash within IAM's 30.
ACCOUNT_HASH_LENGTH = 20
# What the function's account may do with its buckets. objectAdmin: read,
# write and replace the run files. bucketViewer (storage.buckets.get): pyarrow
# reads the bucket's metadata when it writes under a prefix that has no
# directory marker yet (arrow's GcsFileSystem CreateDir), e.g. on the first run.
OUTPUT_BUCKET_ROLES = ("roles/storage.objectAdmin", "roles/storage.bucketViewer")
INPUTS_BUCKET_ROLES = ("roles/storage.objectViewer",)
# IAM is eventually consistent: an account made a moment ago may be refused
# as unknown by the policies that name it, for a few seconds.
ACCOUNT_SETTLE_SECONDS = 60
# A ready identity token for invoke, e.g. $(gcloud auth print-identity-token):
# the one way to call a function as a user whose ADC cannot mint one.
IDENTITY_TOKEN = "DEPLOYER_GCP_IDENTITY_TOKEN"

PROJECT_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
REGION_VARIABLES = ("FUNCTION_REGION", "CLOUDSDK_FUNCTIONS_REGION", "GOOGLE_CLOUD_REGION")

NO_CREDENTIALS = (
    "no Google Cloud credentials found: run `gcloud auth application-default login`, or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
)
NO_PROJECT = (
    "no Google Cloud project is configured: pass provider_options={'project': 'my-project'} "
    "(CLI: --provider-option project=my-project), or set GOOGLE_CLOUD_PROJECT"
)
NO_REGION = (
    "no Google Cloud region is configured: pass provider_options={'region': 'europe-west1'} "
    "(CLI: --provider-option region=europe-west1), or set GOOGLE_CLOUD_REGION "
    "(or CLOUDSDK_FUNCTIONS_REGION)"
)


def encode_hash(hex_digest: str) -> str:
    """A sha256 hex digest as a label value: base32, lowercase, 52 characters.

    Label values are at most 63 characters of [a-z0-9_-]; 64 hex characters do
    not fit, and a prefix would make the state's hashes differ from the bundle's.
    """
    return base64.b32encode(bytes.fromhex(hex_digest)).decode().rstrip("=").lower()


def decode_hash(label: str) -> str:
    """The hex digest ``encode_hash`` wrote; "" for anything else."""
    padded = label.upper() + "=" * (-len(label) % 8)
    try:
        return base64.b32decode(padded).hex()
    except (binascii.Error, ValueError):
        return ""


def _memory(memory_mb: int) -> str:
    """Cloud Run's memory quantity: whole GiB as "2Gi" (what deploys before
    memory= read back as), else MiB."""
    return f"{memory_mb // 1024}Gi" if memory_mb % 1024 == 0 else f"{memory_mb}Mi"


def account_id(role: str, region: str, name: str) -> str:
    """The id of the service account deployer makes for function ``name`` in ``region``.

    IAM allows 6-30 characters of ``[a-z]([-a-z0-9]*[a-z0-9])``; function names
    take up to 40, and the same name may live in two regions of one project,
    so the id holds a hash of both: no two functions share an account.
    """
    digest = hashlib.sha256(f"{region}/{name}".encode()).hexdigest()[:ACCOUNT_HASH_LENGTH]
    return f"{ACCOUNT_PREFIXES[role]}{digest}"


def account_marker(role: str, region: str, name: str) -> str:
    """How an account's description says deployer made it, for which function and role."""
    return f"deployer:{role}:{region}/{name}"


def _http_trigger(triggers: builtins.list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((trigger for trigger in triggers if trigger["type"] == "http"), None)


def _schedule_triggers(triggers: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
    return [trigger for trigger in triggers if trigger["type"] in ("cron", "every")]


def _is_public(triggers: builtins.list[dict[str, Any]]) -> bool:
    http = _http_trigger(triggers)
    return http is not None and bool(http.get("public"))


class _FreshToken:
    """An identity token, minted again before it expires (they last an hour) so
    that a map run longer than that keeps calling."""

    LIFETIME_SECONDS = 45 * 60

    def __init__(self, mint: Callable[[], str]) -> None:
        self._mint = mint
        self._token = ""
        self._minted = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            if not self._token or time.monotonic() - self._minted > self.LIFETIME_SECONDS:
                self._token, self._minted = self._mint(), time.monotonic()
            return self._token


def _url(function: functions_v2.Function) -> str:
    url: str = function.url or function.service_config.uri
    return url


@dataclass(frozen=True)
class FunctionSource:
    """What Cloud Build builds a function from: an uploaded zip, on a runtime, and
    whose function the description names (a deploy's bundle, or a kept version)."""

    storage_source: functions_v2.StorageSource
    runtime: str
    qualname: str


class AccessStep(Step):
    """A plan step about who the function is and who may call it: a service
    account, a grant, the caller checks in the runtime's environment. Applied
    without uploading or rebuilding the function."""

    kind = UPDATE_CONFIG


class CreateAccount(AccessStep):
    kind = CREATE


class GrantBucketAccess(AccessStep):
    """The function's account gets what it needs on its output and inputs buckets."""


class SetInvokers(AccessStep):
    """Who may call the function's Cloud Run service (the scheduler's account, allUsers)."""


class UpdateIdentity(AccessStep):
    """The account the function runs as, or whom its runtime believes to be the scheduler."""


class RetargetSchedule(TriggerStep):
    """A kept Cloud Scheduler job whose URL, caller or deadline no longer fits the function."""

    kind = UPDATE_CONFIG


@dataclass(frozen=True)
class GrantSecretAccess(AccessStep):
    """The function's account may read the values of one secret (``secret``: its name)."""

    secret: str = ""


@dataclass(frozen=True)
class RevokeSecretAccess(AccessStep):
    """The function's account may no longer read a secret the function stopped naming."""

    secret: str = ""


@dataclass(frozen=True)
class DeleteAccount(Step):
    kind: ClassVar[str] = DELETE
    email: str = ""


@dataclass(frozen=True)
class ForgetVersions(Step):
    """The versions kept for rollback: code, so they go with the function (its
    outputs, beside them, stay)."""

    kind: ClassVar[str] = DELETE


class RestApi:
    """A Google REST API v1 through an (authorized) session.

    Errors are google.api_core exceptions, as the official clients raise them.
    """

    def __init__(self, session: requests.Session, endpoint: str) -> None:
        self._session = session
        self._endpoint = endpoint.rstrip("/")

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        response = self._session.request(
            method,
            f"{self._endpoint}/v1/{path}",
            json=body,
            params=params,
            timeout=IAM_TIMEOUT_SECONDS,
        )
        if response.status_code >= 400:
            raise google_exceptions.from_http_response(response)
        return response.json() if response.content else {}


_Api = TypeVar("_Api", bound=RestApi)


class ServiceAccounts(RestApi):
    """Service accounts through the IAM REST API v1 (projects.serviceAccounts)."""

    def get(self, project: str, email: str) -> dict[str, Any] | None:
        try:
            account: dict[str, Any] = self._call(
                "GET", f"projects/{project}/serviceAccounts/{email}"
            )
        except google_exceptions.NotFound:
            return None
        return account

    def create(
        self, project: str, account_id: str, *, display_name: str, description: str
    ) -> dict[str, Any]:
        account: dict[str, Any] = self._call(
            "POST",
            f"projects/{project}/serviceAccounts",
            {
                "accountId": account_id,
                "serviceAccount": {"displayName": display_name, "description": description},
            },
        )
        return account

    def delete(self, project: str, email: str) -> None:
        self._call("DELETE", f"projects/{project}/serviceAccounts/{email}")


class Secrets(RestApi):
    """Secret Manager's REST API v1 (projects.secrets): whether a secret exists, and its
    IAM policy. There is no call here that reads a value: the platform does that,
    where the function runs."""

    def exists(self, secret: str) -> bool:
        """Whether the secret ``projects/P/secrets/S`` exists (its metadata only)."""
        try:
            self._call("GET", secret)
        except google_exceptions.NotFound:
            return False
        return True

    def get_policy(self, secret: str) -> dict[str, Any]:
        # Version 3: a policy with conditional bindings is returned whole, and
        # set back whole.
        policy: dict[str, Any] = self._call(
            "GET", f"{secret}:getIamPolicy", params={"options.requestedPolicyVersion": "3"}
        )
        return policy

    def set_policy(self, secret: str, policy: dict[str, Any]) -> dict[str, Any]:
        """Set the policy read by ``get_policy``: its etag makes a change made in
        between fail (409) rather than be overwritten."""
        result: dict[str, Any] = self._call("POST", f"{secret}:setIamPolicy", {"policy": policy})
        return result


class GcpProvider(BaseProvider):
    name = "gcp"
    Options = GcpOptions
    # Cloud Build installs everything requirements.txt lists: nothing is there already.
    preinstalled = frozenset[str]()

    def __init__(
        self,
        *,
        project: str | None = None,
        region: str | None = None,
        service_account: str | None = None,
    ) -> None:
        """``project`` and ``region``: where the function lives (default: the standard
        environment). ``service_account``: the email of an existing account the
        function runs as, instead of the one deployer makes for it (deployer
        grants it nothing: it needs to read the inputs and write the output).
        Cloud Scheduler always calls as the scheduler account deployer makes."""
        self._project_option = project
        self._region_option = region
        self.service_account = service_account
        self._default_credentials: tuple[Credentials, str | None] | None = None
        self._clients: dict[str, Any] = {}

    # -- project, region, credentials, clients --------------------------------

    def _overridden(self) -> bool:
        """True when every control plane is a test double: no real credentials are needed."""
        return all(os.environ.get(variable) for variable in ENDPOINT_VARIABLES)

    def _adc(self) -> tuple[Credentials, str | None]:
        if self._default_credentials is None:
            try:
                credentials, project = google.auth.default(scopes=[SCOPE])
            except DefaultCredentialsError:
                raise ProviderError(NO_CREDENTIALS) from None
            self._default_credentials = (credentials, project)
        return self._default_credentials

    @property
    def project(self) -> str:
        project = self._project_option or next(
            (os.environ[variable] for variable in PROJECT_VARIABLES if os.environ.get(variable)),
            None,
        )
        if not project and not self._overridden():
            project = self._adc()[1]  # gcloud's configured project, or the key file's
        if not project:
            raise ProviderError(NO_PROJECT)
        return project

    @property
    def region(self) -> str:
        region = self._region_option or next(
            (os.environ[variable] for variable in REGION_VARIABLES if os.environ.get(variable)),
            None,
        )
        if not region:
            raise ProviderError(NO_REGION)
        return region

    @property
    def location(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def _function_name(self, name: str) -> str:
        return f"{self.location}/functions/{name}"

    def _client(self, kind: str, variable: str, factory: Any) -> Any:
        if kind not in self._clients:
            endpoint = os.environ.get(variable)
            if endpoint:
                self._clients[kind] = factory(
                    credentials=AnonymousCredentials(),
                    transport="rest",
                    client_options=ClientOptions(api_endpoint=endpoint),
                )
            else:
                self._clients[kind] = factory(credentials=self._adc()[0], transport="rest")
        return self._clients[kind]

    @property
    def functions(self) -> functions_v2.FunctionServiceClient:
        client: functions_v2.FunctionServiceClient = self._client(
            "functions", FUNCTIONS_ENDPOINT, functions_v2.FunctionServiceClient
        )
        return client

    @property
    def scheduler(self) -> scheduler_v1.CloudSchedulerClient:
        client: scheduler_v1.CloudSchedulerClient = self._client(
            "scheduler", SCHEDULER_ENDPOINT, scheduler_v1.CloudSchedulerClient
        )
        return client

    @property
    def run(self) -> run_v2.ServicesClient:
        client: run_v2.ServicesClient = self._client("run", RUN_ENDPOINT, run_v2.ServicesClient)
        return client

    @property
    def service_accounts(self) -> ServiceAccounts:
        accounts: ServiceAccounts = self._rest("iam", IAM_ENDPOINT, IAM_API, ServiceAccounts)
        return accounts

    @property
    def secrets(self) -> Secrets:
        found: Secrets = self._rest("secrets", SECRETS_ENDPOINT, SECRETS_API, Secrets)
        return found

    def _rest(self, key: str, override: str, api: str, kind: type[_Api]) -> _Api:
        """One client per REST API: at ``$override`` anonymously (an emulator or a
        fake, as for every override), else at ``api`` with the default credentials."""
        if key not in self._clients:
            endpoint = os.environ.get(override)
            if endpoint:
                session: requests.Session = requests.Session()
            else:
                session = AuthorizedSession(self._adc()[0])
                endpoint = api
            self._clients[key] = kind(session, endpoint)
        client: _Api = self._clients[key]
        return client

    @property
    def storage(self) -> StorageClient:
        if "storage" not in self._clients:
            endpoint = os.environ.get(STORAGE_ENDPOINT)
            if endpoint:
                self._clients["storage"] = StorageClient(
                    project=self.project,
                    credentials=AnonymousCredentials(),
                    client_options=ClientOptions(api_endpoint=endpoint),
                )
            else:
                self._clients["storage"] = StorageClient(
                    project=self.project, credentials=self._adc()[0]
                )
        client: StorageClient = self._clients["storage"]
        return client

    # -- identities ------------------------------------------------------------

    def _account_email(self, role: str, name: str) -> str:
        identifier = account_id(role, self.region, name)
        project = self.project
        if ":" in project:  # a domain-scoped project, "example.com:my-project"
            domain, project_id = project.split(":", 1)
            return f"{identifier}@{project_id}.{domain}.iam.gserviceaccount.com"
        return f"{identifier}@{project}.iam.gserviceaccount.com"

    def _function_account(self, name: str) -> str:
        """The email the function runs as: the user's own, or the one deployer makes."""
        return self.service_account or self._account_email(FUNCTION_ROLE, name)

    def _scheduler_account(self, name: str) -> str:
        """The email Cloud Scheduler calls the function as (the runtime checks for it)."""
        return self._account_email(SCHEDULER_ROLE, name)

    def _wanted_accounts(
        self, name: str, triggers: builtins.list[dict[str, Any]]
    ) -> builtins.list[tuple[str, str, str]]:
        """(role, email, purpose) of each account deployer makes for this deploy."""
        wanted = []
        if not self.service_account:
            wanted.append(
                (FUNCTION_ROLE, self._account_email(FUNCTION_ROLE, name), f"{name} runs as it")
            )
        if _schedule_triggers(triggers):
            wanted.append(
                (
                    SCHEDULER_ROLE,
                    self._scheduler_account(name),
                    f"Cloud Scheduler calls {name} as it",
                )
            )
        return wanted

    def _owned_account(
        self, role: str, name: str, *, refuse_foreign: bool = True
    ) -> dict[str, Any] | None:
        """The account deployer made for ``name`` in ``role``; None when there is none.

        An account with that id that deployer did not make for this function is
        never adopted: its permissions are someone else's business. Planning a
        deploy stops on one (ProviderError); deleting leaves it alone
        (``refuse_foreign=False``: None).
        """
        email = self._account_email(role, name)
        with self._google_errors(f"reading service account {email}"):
            account = self.service_accounts.get(self.project, email)
        if account is None:
            return None
        marker = account_marker(role, self.region, name)
        description = str(account.get("description") or "")
        if description.split(" ", 1)[0] != marker:
            if not refuse_foreign:
                return None
            fix = (
                "or pass provider_options={'service_account': '<email>'} to run as an "
                "account of your own"
                if role == FUNCTION_ROLE
                else "or deploy the function under another name"
            )
            raise ProviderError(
                f"service account {email} exists but was not made by deployer for the {role} "
                f"of {name} in {self.region} (its description is {description!r}): deployer "
                f"does not take over accounts it did not make. Delete it (`gcloud iam "
                f"service-accounts delete {email}`) if nothing else uses it, {fix}"
            )
        return account

    def _bucket_roles(self, spec: DeploySpec) -> dict[str, tuple[str, ...]]:
        """Bucket -> the roles the function's account needs on it."""
        output_bucket, _ = split_bucket_url(spec.output)
        roles: dict[str, tuple[str, ...]] = {output_bucket: OUTPUT_BUCKET_ROLES}
        if spec.inputs:
            inputs_bucket, _ = split_bucket_url(spec.inputs)
            # The output bucket's objectAdmin already reads.
            roles.setdefault(inputs_bucket, INPUTS_BUCKET_ROLES)
        return roles

    def _bucket_policy(self, bucket: str) -> Any:
        with self._google_errors(f"reading who may use gs://{bucket}"):
            try:
                return self.storage.bucket(bucket).get_iam_policy(requested_policy_version=3)
            except google_exceptions.NotFound:
                raise ProviderError(
                    f"bucket gs://{bucket} does not exist: create it first "
                    f"(`gcloud storage buckets create gs://{bucket} --location {self.region}`)"
                ) from None

    @staticmethod
    def _policy_members(policy: Any, role: str) -> set[str]:
        return {
            member
            for binding in policy.bindings
            if binding["role"] == role and not binding.get("condition")
            for member in binding["members"]
        }

    def _missing_bucket_roles(self, spec: DeploySpec, email: str) -> dict[str, builtins.list[str]]:
        member = f"serviceAccount:{email}"
        missing = {}
        for bucket, roles in self._bucket_roles(spec).items():
            policy = self._bucket_policy(bucket)
            lacking = [role for role in roles if member not in self._policy_members(policy, role)]
            if lacking:
                missing[bucket] = lacking
        return missing

    def _ensure_access(
        self, spec: DeploySpec, triggers: builtins.list[dict[str, Any]], reporter: Reporter
    ) -> None:
        """Make the accounts this deploy needs and grant the function's its buckets."""
        for role, email, purpose in self._wanted_accounts(spec.name, triggers):
            if self._owned_account(role, spec.name) is not None:
                continue
            marker = account_marker(role, self.region, spec.name)
            with self._google_errors(f"creating service account {email}"):
                self.service_accounts.create(
                    self.project,
                    account_id(role, self.region, spec.name),
                    display_name=f"deployer {spec.name} ({role})"[:100],
                    description=(
                        f"{marker} made by deployer: {purpose}; deleted with the function"
                    )[:256],
                )
            reporter.say(f"created service account {email}: {purpose}")
        if self.service_account:
            return
        email = self._function_account(spec.name)
        member = f"serviceAccount:{email}"
        for bucket, roles in self._missing_bucket_roles(spec, email).items():
            policy = self._bucket_policy(bucket)
            for role in roles:
                binding = next(
                    (
                        binding
                        for binding in policy.bindings
                        if binding["role"] == role and not binding.get("condition")
                    ),
                    None,
                )
                if binding is None:
                    policy.bindings.append({"role": role, "members": {member}})
                else:
                    binding["members"] = set(binding["members"]) | {member}
            bucket_handle = self.storage.bucket(bucket)
            with self._google_errors(f"granting {email} access to gs://{bucket}"):
                _settling(partial(bucket_handle.set_iam_policy, policy), email)
            reporter.say(f"granted {', '.join(roles)} on gs://{bucket} to {email}")

    def _revoke_bucket_access(self, email: str, buckets: builtins.list[str]) -> None:
        """Take every role on ``buckets`` from the account (before it is deleted)."""
        member = f"serviceAccount:{email}"
        for bucket in dict.fromkeys(buckets):
            with self._google_errors(f"revoking {email}'s access to gs://{bucket}"):
                handle = self.storage.bucket(bucket)
                try:
                    policy = handle.get_iam_policy(requested_policy_version=3)
                except google_exceptions.NotFound:
                    continue  # the bucket is gone, and its policy with it
                if not any(member in binding["members"] for binding in policy.bindings):
                    continue
                kept = []
                for binding in policy.bindings:
                    members = set(binding["members"]) - {member}
                    if members:
                        kept.append({**binding, "members": members})
                policy.bindings = kept
                handle.set_iam_policy(policy)

    # -- secrets: the function's account may read exactly the ones it names ---

    def _secret_references(self, spec: DeploySpec) -> dict[str, SecretReference]:
        """Variable name -> the secret version secrets= names it after (check() validated)."""
        return {name: parse_secret_reference(name, reference) for name, reference in spec.secrets}

    def _secret_variables(
        self, spec: DeploySpec, function: functions_v2.Function | None
    ) -> builtins.list[functions_v2.SecretEnvVar]:
        """The function's secret variables after this deploy: the user's secrets=, and
        those someone else set, unless env= or secrets= now takes their name."""
        wanted = [
            functions_v2.SecretEnvVar(
                key=name,
                project_id=reference.project or self.project,
                secret=reference.secret,
                version=reference.version,
            )
            for name, reference in self._secret_references(spec).items()
        ]
        if function is None:
            return wanted
        service = function.service_config
        managed = managed_names(service.environment_variables)
        taken = {name for name, _ in (*spec.env, *spec.secrets)}
        kept = [
            variable
            for variable in service.secret_environment_variables
            if variable.key not in managed and variable.key not in taken
        ]
        return sorted([*kept, *wanted], key=lambda variable: variable.key)

    def _named_secrets(self, variables: Iterable[functions_v2.SecretEnvVar]) -> builtins.list[str]:
        """The secrets (resource names) that secret variables read, each once."""
        return list(
            dict.fromkeys(
                f"projects/{variable.project_id or self.project}/secrets/{variable.secret}"
                for variable in variables
            )
        )

    def _deployed_secrets(self, function: functions_v2.Function) -> dict[str, str]:
        """The user's secrets= as deployed: each secret variable deployer set, as the
        reference it was given (SECRETS_VARIABLE keeps them) while that still names
        the secret version the variable reads, else by the version's full name."""
        service = function.service_config
        environment = service.environment_variables
        managed = managed_names(environment)
        given = secret_references(environment)
        found = {}
        for variable in service.secret_environment_variables:
            if variable.key not in managed:
                continue  # someone else's
            project = variable.project_id or self.project
            current = SecretReference(variable.secret, variable.version or "latest", project)
            reference = str(given.get(variable.key) or "")
            try:
                parsed = parse_secret_reference(variable.key, reference)
            except ConfigError:
                parsed = None
            same = (
                parsed is not None
                and (parsed.secret, parsed.version) == (current.secret, current.version)
                # Google may answer with the project's number for its id.
                and ((parsed.project or self.project) == project or project.isdigit())
            )
            found[variable.key] = reference if same else current.render(project)
        return dict(sorted(found.items()))

    def _require_secret(self, secret: str, names: builtins.list[str]) -> None:
        """Refuse a secret that does not exist, before anything is made or changed."""
        project, secret_id = secret.split("/")[1], secret.rsplit("/", 1)[-1]
        variables = ", ".join(names)
        with self._google_errors(f"reading secret {secret}"):
            try:
                found = self.secrets.exists(secret)
            except google_exceptions.Forbidden:
                raise ProviderError(
                    f"secrets=: cannot see secret {secret} (for {variables}): permission "
                    "denied: the deploying account needs roles/secretmanager.viewer on it, and "
                    "roles/secretmanager.admin to let the function's account read it"
                ) from None
        if not found:
            raise ProviderError(
                f"secrets=: secret {secret_id} does not exist in project {project} (for "
                f"{variables}): create it with its value first, `gcloud secrets create "
                f"{secret_id} --project {project} --data-file=-` (the value on stdin), or "
                "correct the reference"
            )

    def _secret_policy(self, secret: str) -> dict[str, Any] | None:
        """The secret's IAM policy; None when the secret is gone."""
        with self._google_errors(f"reading who may read secret {secret}"):
            try:
                return self.secrets.get_policy(secret)
            except google_exceptions.NotFound:
                return None

    @staticmethod
    def _secret_members(policy: dict[str, Any] | None, role: str | None = None) -> set[str]:
        """Members of ``role`` (unconditionally), or of any role, in a secret's policy."""
        return {
            member
            for binding in (policy or {}).get("bindings", [])
            if role is None or (binding.get("role") == role and not binding.get("condition"))
            for member in binding.get("members", [])
        }

    def _secret_steps(
        self, spec: DeploySpec, function: functions_v2.Function | None
    ) -> tuple[builtins.list[Step], builtins.list[Step]]:
        """Grants on the secrets the function will read, applied before it names them
        (Cloud Functions checks that its account may read them), and revocations on
        those it stops reading, applied after (the serving revision reads them
        until then). A secret that does not exist stops the plan here."""
        wanted: dict[str, list[str]] = {}
        for name, reference in self._secret_references(spec).items():
            wanted.setdefault(reference.resource(self.project), []).append(name)
        for secret, names in wanted.items():
            self._require_secret(secret, names)
        if self.service_account:
            return [], []  # the user's own account: deployer grants it nothing
        email = self._function_account(spec.name)
        member = f"serviceAccount:{email}"
        grants: list[Step] = [
            GrantSecretAccess(
                f"grant {SECRET_ACCESSOR_ROLE} on secret {secret} to {email} "
                f"(for {', '.join(names)})",
                secret=secret,
            )
            for secret, names in wanted.items()
            if member not in self._secret_members(self._secret_policy(secret), SECRET_ACCESSOR_ROLE)
        ]
        if function is None:
            return grants, []
        service = function.service_config
        managed = managed_names(service.environment_variables)
        read_before = self._named_secrets(
            variable for variable in service.secret_environment_variables if variable.key in managed
        )
        still_read = set(self._named_secrets(self._secret_variables(spec, function)))
        revocations: list[Step] = [
            RevokeSecretAccess(f"revoke {email}'s access to secret {secret}", secret=secret)
            for secret in read_before
            if secret not in still_read
            and member in self._secret_members(self._secret_policy(secret))
        ]
        return grants, revocations

    def _grant_secret(self, secret: str, email: str, reporter: Reporter) -> None:
        """Add the account to the secret's accessors; every other binding stays as it is."""
        member = f"serviceAccount:{email}"
        with self._google_errors(f"granting {email} access to secret {secret}"):
            policy = self.secrets.get_policy(secret)
            bindings = policy.setdefault("bindings", [])
            binding = next(
                (
                    binding
                    for binding in bindings
                    if binding.get("role") == SECRET_ACCESSOR_ROLE and not binding.get("condition")
                ),
                None,
            )
            if binding is None:
                bindings.append({"role": SECRET_ACCESSOR_ROLE, "members": [member]})
            elif member in binding.get("members", []):
                return
            else:
                binding["members"] = sorted({*binding.get("members", []), member})
            _settling(partial(self.secrets.set_policy, secret, policy), email)
        reporter.say(f"granted {SECRET_ACCESSOR_ROLE} on secret {secret} to {email}")

    def _revoke_secret(self, secret: str, email: str, reporter: Reporter) -> None:
        """Take the account out of every binding of the secret's policy (deployer made
        the account: whatever it holds there, deployer granted)."""
        member = f"serviceAccount:{email}"
        with self._google_errors(f"revoking {email}'s access to secret {secret}"):
            try:
                policy = self.secrets.get_policy(secret)
            except google_exceptions.NotFound:
                return  # the secret is gone, and its policy with it
            if member not in self._secret_members(policy):
                return
            kept = []
            for binding in policy.get("bindings", []):
                members = [other for other in binding.get("members", []) if other != member]
                if members:
                    kept.append({**binding, "members": members})
            policy["bindings"] = kept
            self.secrets.set_policy(secret, policy)
        reporter.say(f"revoked {email}'s access to secret {secret}")

    # -- validation ----------------------------------------------------------

    def default_output(self) -> str:
        raise ConfigError(
            "provider 'gcp' needs output='gs://<bucket>/<prefix>': runs are written to "
            "Cloud Storage"
        )

    def platform(self, python: str) -> str | None:
        # Cloud Build installs requirements.txt on the runtime's own image:
        # Ubuntu 22.04 (glibc 2.35) for python310-313, 24.04 (glibc 2.39) for
        # python314, x86_64. Naming it keeps deps_hash independent of the
        # machine that deploys.
        if gcp_runtime(python) == "python314":
            return "manylinux_2_39_x86_64"
        return "manylinux_2_35_x86_64"

    def check(self, spec: DeploySpec) -> DeploySpec:
        """Everything that can be wrong is found here, before any request or upload."""
        from deployer.bundle import python_version

        check_cloud_spec(
            spec,
            scheme="gs",
            runs_on="an HTTP Cloud Function",
            store="Cloud Storage",
            max_timeout_seconds=MAX_TIMEOUT_SECONDS,
            max_memory_mb=MAX_MEMORY_MB,
        )
        gcp_runtime(python_version())
        check_variable_names([name for name, _ in spec.env], "env")
        check_variable_names([name for name, _ in spec.secrets], "secrets")
        for name, reference in spec.secrets:
            parse_secret_reference(name, reference)  # ConfigError naming the forms it takes
        for trigger in spec.triggers:
            if isinstance(trigger, (Cron, Every)):
                to_cloud_scheduler(trigger)  # TriggerError if Cloud Scheduler cannot express it
        # No project, region or credentials here: building needs none (plan checks them).
        return spec

    def write_artifacts(self, bundle: Bundle, directory: Path, reporter: Reporter) -> list[Path]:
        """The source zip Cloud Build builds the function from, byte for byte."""
        path = directory / f"{bundle.name}-{bundle.code_hash[:12]}-source.zip"
        write_atomically(path, source_zip(bundle))
        return [path]

    def require_access(self) -> None:
        """Project, region and credentials, named when missing, before the first request."""
        _ = self.project
        _ = self.region
        if not self._overridden():
            self._adc()

    # -- state ---------------------------------------------------------------

    def _function(self, name: str) -> functions_v2.Function | None:
        try:
            return self.functions.get_function(name=self._function_name(name))
        except google_exceptions.NotFound:
            return None

    def _jobs(self, name: str) -> dict[str, scheduler_v1.Job]:
        """Job id -> job, for this function's schedules."""
        found = {}
        for job in self.scheduler.list_jobs(parent=self.location):
            job_id = job.name.rsplit("/", 1)[-1]
            if is_schedule_of(name, job_id):
                found[job_id] = job
        return found

    @staticmethod
    def _job_trigger(job: scheduler_v1.Job) -> dict[str, Any]:
        """The trigger a job was made from (kept in its description)."""
        try:
            trigger: dict[str, Any] = json.loads(job.description or "{}")
        except json.JSONDecodeError:
            return {}
        return trigger

    def _policy(self, function: functions_v2.Function) -> policy_pb2.Policy | None:
        service = function.service_config.service
        if not service:
            return None  # a function whose first build never finished has no service
        return self.run.get_iam_policy(request={"resource": service})

    @staticmethod
    def _invokers(policy: policy_pb2.Policy | None) -> set[str]:
        if policy is None:
            return set()
        return {
            member
            for binding in policy.bindings
            if binding.role == INVOKER_ROLE
            for member in binding.members
        }

    def _current_triggers(self, function: functions_v2.Function) -> builtins.list[dict[str, Any]]:
        name = function.name.rsplit("/", 1)[-1]
        triggers = [self._job_trigger(job) for job in self._jobs(name).values()]
        if HTTP_LABEL in function.labels:
            public = PUBLIC_MEMBER in self._invokers(self._policy(function))
            triggers.append({"type": "http", "public": public})
        return triggers

    def _state(self, function: functions_v2.Function) -> DeploymentState:
        labels = function.labels
        environment = function.service_config.environment_variables
        qualname = function.description
        return DeploymentState(
            name=labels[NAME_LABEL],
            provider=self.name,
            url=(function.url or function.service_config.uri) if HTTP_LABEL in labels else None,
            code_hash=decode_hash(labels.get(CODE_HASH_LABEL, "")),
            deps_hash=decode_hash(labels.get(DEPS_HASH_LABEL, "")),
            output=environment.get(ENVIRONMENT_OUTPUT, ""),
            inputs=environment.get(ENVIRONMENT_INPUTS) or None,
            triggers=tuple(self._current_triggers(function)),
            deployed_at=function.update_time.isoformat() if function.update_time else "",
            qualname=qualname[len(DESCRIPTION_PREFIX) :]
            if qualname.startswith(DESCRIPTION_PREFIX)
            else "",
        )

    def get(self, name: str) -> DeploymentState | None:
        function = self._function(name)
        if function is None or NAME_LABEL not in function.labels:
            return None
        return self._state(function)

    def list(self) -> builtins.list[DeploymentState]:
        return [
            self._state(function)
            for function in self.functions.list_functions(parent=self.location)
            if NAME_LABEL in function.labels
        ]

    # -- plan ----------------------------------------------------------------

    def _wanted_environment(
        self, spec: DeploySpec, triggers: builtins.list[dict[str, Any]], url: str | None
    ) -> dict[str, str]:
        # The runtime reads its manifest; name, output and inputs say the same
        # for people reading the console, and are where get() finds the
        # function's store. The scheduler's account and audience, and whether
        # Cloud Run checks every caller, are what the runtime checks a
        # scheduled run's token against (runtimes/gcp.py): they come from
        # here, never from a request. The audience is the function's URL,
        # which a new function has only once it is created.
        environment = {ENVIRONMENT_NAME: spec.name, ENVIRONMENT_OUTPUT: spec.output}
        if spec.inputs:
            environment[ENVIRONMENT_INPUTS] = spec.inputs
        environment[ENVIRONMENT_SCHEDULER_ACCOUNT] = self._scheduler_account(spec.name)
        if url:
            environment[ENVIRONMENT_SCHEDULER_AUDIENCE] = url
        environment[ENVIRONMENT_HTTP_ACCESS] = "public" if _is_public(triggers) else AUTHENTICATED
        environment.update(own_variables(spec))
        return environment

    def _environment(
        self,
        spec: DeploySpec,
        triggers: builtins.list[dict[str, Any]],
        url: str | None,
        current: Mapping[str, str],
    ) -> dict[str, str]:
        """The function's variables after this deploy: deployer's own and env=, over
        what someone else set (the console, a script), which a redeploy keeps. A
        name secrets= takes is a secret variable, never a plain one too."""
        environment = merged_environment(
            current,
            self._wanted_environment(spec, triggers, url),
            [name for name, _ in (*spec.env, *spec.secrets)],
        )
        for name, _ in spec.secrets:
            environment.pop(name, None)
        return environment

    @property
    def where(self) -> str:
        return f"on gcp in {self.location}"

    def deployed(self, name: str) -> Deployed | None:
        function = self._function(name)
        if function is None:
            return None
        labels = function.labels
        if NAME_LABEL not in labels:
            raise ProviderError(
                f"a Cloud Function named {name!r} exists in {self.location} but was not "
                "deployed by deployer: choose another name, or delete it yourself"
            )
        return Deployed(
            code_hash=decode_hash(labels.get(CODE_HASH_LABEL, "")),
            deps_hash=decode_hash(labels.get(DEPS_HASH_LABEL, "")),
            settings=self._deployed_settings(function),
            triggers=tuple(self._current_triggers(function)),
        )

    def _deployed_settings(self, function: functions_v2.Function) -> dict[str, Any]:
        """The function's settings as ``wanted_settings`` renders them."""
        service = function.service_config
        environment = service.environment_variables
        return {
            "name": environment.get(ENVIRONMENT_NAME),
            "output": environment.get(ENVIRONMENT_OUTPUT),
            "inputs": environment.get(ENVIRONMENT_INPUTS),
            "timeout": service.timeout_seconds,
            "memory": service.available_memory,
            "env": user_environment(
                environment, [variable.key for variable in service.secret_environment_variables]
            ),
            "secrets": self._deployed_secrets(function),
            # Unset, the count reads back as the platform's default: the label
            # says whether deployer set it.
            "max concurrency": service.max_instance_count
            if MAX_CONCURRENCY_LABEL in function.labels
            else None,
        }

    def wanted_settings(self, spec: DeploySpec) -> dict[str, Any]:
        return {
            "name": spec.name,
            "output": spec.output,
            "inputs": spec.inputs,
            "timeout": spec.timeout_seconds,
            "memory": _memory(spec.memory_mb),
            "env": dict(spec.env),
            "secrets": dict(spec.secrets),
            "max concurrency": spec.max_concurrency,
        }

    def require_python(self, python: str) -> None:
        gcp_runtime(python)

    def plan(self, bundle: Bundle, spec: DeploySpec) -> Plan:
        self.require_python(bundle.manifest.python)
        self.require_access()
        observed = self.observe(spec.name)
        deployed = self.deployed(spec.name)
        function = self._function(spec.name) if deployed is not None else None
        wanted = list(bundle.manifest.triggers)
        # Identities first, as apply makes them: a foreign account or a missing
        # secret stops the plan here, before anything is uploaded.
        steps: list[Step] = self._identity_steps(spec, wanted)
        secret_grants, secret_revocations = self._secret_steps(spec, function)
        steps += secret_grants
        existing = list(deployed.triggers) if deployed is not None else []
        http_steps = [
            step
            for step in trigger_changes(wanted, existing)
            if step.trigger.get("type") == "http"  # type: ignore[attr-defined]
        ]
        closing = function is not None and not _is_public(wanted) and _is_public(existing)
        if closing:
            # allUsers goes before the runtime is told (by a rebuild, say) that
            # every caller is authenticated, and so believes Cloud Run's check.
            steps += http_steps
        if function is None:
            steps.append(
                CreateFunction(
                    f"Cloud Function {spec.name} in {self.region} ({bundle.code_hash[:12]}; "
                    f"Cloud Build installs {len(bundle.manifest.requirements)} packages)"
                )
            )
        elif function.state != functions_v2.Function.State.ACTIVE:
            steps.append(
                UpdateCode(
                    f"redeploy {bundle.code_hash[:12]}: the function is "
                    f"{function.state.name} (a previous deploy did not finish)"
                )
            )
        else:
            steps += self.function_steps(deployed, bundle, spec)
            steps += self._identity_config_steps(function, bundle, spec)
        steps += secret_revocations
        steps += self._caller_steps(spec, wanted, function)
        if not closing:
            steps += http_steps
        steps += [step for step in trigger_changes(wanted, existing) if step not in http_steps]
        return self.make_plan(bundle, spec, steps, observed)

    def _identity_steps(
        self, spec: DeploySpec, triggers: builtins.list[dict[str, Any]]
    ) -> builtins.list[Step]:
        steps: list[Step] = []
        for role, email, purpose in self._wanted_accounts(spec.name, triggers):
            if self._owned_account(role, spec.name) is None:
                steps.append(CreateAccount(f"service account {email}: {purpose}"))
        if not self.service_account:
            email = self._function_account(spec.name)
            for bucket, roles in self._missing_bucket_roles(spec, email).items():
                steps.append(
                    GrantBucketAccess(f"grant {', '.join(roles)} on gs://{bucket} to {email}")
                )
        return steps

    def _caller_steps(
        self,
        spec: DeploySpec,
        triggers: builtins.list[dict[str, Any]],
        function: functions_v2.Function | None,
    ) -> builtins.list[Step]:
        """Cloud Scheduler's account as an invoker, and kept jobs whose target moved."""
        steps: list[Step] = []
        scheduler = self._scheduler_account(spec.name)
        member = f"serviceAccount:{scheduler}"
        schedules = _schedule_triggers(triggers)
        invokers = self._invokers(self._policy(function)) if function is not None else set()
        if schedules and member not in invokers:
            steps.append(SetInvokers(f"grant {INVOKER_ROLE} on {spec.name} to {scheduler}"))
        elif not schedules and member in invokers:
            steps.append(SetInvokers(f"revoke {INVOKER_ROLE} on {spec.name} from {scheduler}"))
        if function is None:
            return steps
        for job in self._jobs(spec.name).values():
            trigger = self._job_trigger(job)
            if trigger not in schedules:
                continue
            changes = _target_changes(job, self._job(spec, function, trigger))
            if changes:
                steps.append(
                    RetargetSchedule(
                        f"schedule {describe_trigger(trigger)}: {'; '.join(changes)}",
                        trigger=trigger,
                    )
                )
        return steps

    def _identity_config_steps(
        self, function: functions_v2.Function, bundle: Bundle, spec: DeploySpec
    ) -> builtins.list[Step]:
        """Who the function is and whom it believes to be the scheduler: applied
        without a rebuild. (Whether every caller is authenticated follows the
        Http trigger, whose change is a step of its own.)"""
        steps: list[Step] = []
        service = function.service_config
        account = self._function_account(spec.name)
        if service.service_account_email != account:
            steps.append(
                UpdateIdentity(
                    f"service account: {service.service_account_email or None!r} -> {account!r}"
                )
            )
        environment = service.environment_variables
        wanted_environment = self._wanted_environment(
            spec, list(bundle.manifest.triggers), _url(function)
        )
        for key, label in (
            (ENVIRONMENT_SCHEDULER_ACCOUNT, "scheduler account"),
            (ENVIRONMENT_SCHEDULER_AUDIENCE, "scheduler audience"),
        ):
            if environment.get(key) != wanted_environment.get(key):
                steps.append(
                    UpdateIdentity(
                        f"{label}: {environment.get(key)!r} -> {wanted_environment.get(key)!r}"
                    )
                )
        return steps

    # -- apply ---------------------------------------------------------------

    def _labels_for(
        self, bundle: Bundle, spec: DeploySpec, current: dict[str, str]
    ) -> dict[str, str]:
        return self._labels(
            spec, bundle.code_hash, bundle.deps_hash, list(bundle.manifest.triggers), current
        )

    def _labels(
        self,
        spec: DeploySpec,
        code_hash: str,
        deps_hash: str,
        triggers: builtins.list[dict[str, Any]],
        current: dict[str, str],
    ) -> dict[str, str]:
        # Labels someone else put on the function (gcloud's deployment-tool, a
        # team's cost centre) are kept; deployer owns only its own prefix.
        labels = {key: value for key, value in current.items() if not key.startswith(LABEL_PREFIX)}
        labels[NAME_LABEL] = spec.name
        labels[CODE_HASH_LABEL] = encode_hash(code_hash)
        labels[DEPS_HASH_LABEL] = encode_hash(deps_hash)
        if spec.max_concurrency is not None:
            labels[MAX_CONCURRENCY_LABEL] = str(spec.max_concurrency)
        http = _http_trigger(triggers)
        if http is not None:
            labels[HTTP_LABEL] = "public" if http.get("public") else "authenticated"
        return labels

    def execute(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        bundle, spec = plan.bundle, plan.spec
        assert bundle is not None and spec is not None
        triggers = list(bundle.manifest.triggers)
        # One update of the function carries its code and every setting. A
        # config change ships new source too: the runtime reads output, inputs
        # and timeout from the manifest inside it. The zip is made before any
        # request, so a bundle that cannot be shipped (a local module called
        # main.py) stops the deploy with nothing changed.
        function_steps = plan.of_type(*FUNCTION_STEPS)
        source = source_zip(bundle) if function_steps else None
        function = self._function(spec.name)
        accessed = False
        for step in plan.steps:
            if isinstance(step, (CreateAccount, GrantBucketAccess)):
                if not accessed:
                    self._ensure_access(spec, triggers, reporter)
                    accessed = True
            elif isinstance(step, GrantSecretAccess):
                self._grant_secret(step.secret, self._function_account(spec.name), reporter)
            elif isinstance(step, RevokeSecretAccess):
                self._revoke_secret(step.secret, self._function_account(spec.name), reporter)
            elif function_steps and step is function_steps[0]:
                assert source is not None
                current_labels = dict(function.labels) if function is not None else {}
                labels = self._labels_for(bundle, spec, current_labels)
                kept_before = self._kept_versions(spec.output, spec.name)
                was_live = (
                    self._live_version(function, kept_before) if function is not None else None
                )
                # Kept before the function changes: a deploy that cannot keep its
                # version for rollback changes nothing of the function.
                kept = self._keep_version(spec, bundle, source)
                created = function is None
                changed = {step.setting for step in plan.steps if isinstance(step, UpdateConfig)}
                try:
                    built = FunctionSource(
                        self._upload(source, reporter), kept.runtime, kept.qualname
                    )
                    function = self._deploy_function(
                        spec,
                        built,
                        triggers,
                        labels,
                        function,
                        current_labels,
                        reporter,
                        changed=changed,
                    )
                except ProviderError:
                    self._forget_failed(spec.output, kept)
                    raise
                self._prune_versions(spec, kept_before, was_live, reporter)
                if created:
                    # The function's URL exists only now: the audience of the
                    # scheduler's tokens, told to the runtime.
                    function = self._update_service(spec, triggers, function, labels, reporter)
            elif isinstance(step, (AddTrigger, RemoveTrigger)) and not is_schedule(step.trigger):
                # The runtime believes Cloud Run checked every caller only while
                # allUsers may not call: closing revokes first, opening tells first.
                assert function is not None
                if not _is_public(triggers):
                    self._reconcile_invokers(function, spec.name, triggers, reporter)
                labels = self._labels_for(bundle, spec, dict(function.labels))
                function = self._update_service(spec, triggers, function, labels, reporter)
                self._reconcile_invokers(function, spec.name, triggers, reporter)
            elif isinstance(step, SetInvokers):
                assert function is not None
                self._reconcile_invokers(function, spec.name, triggers, reporter)
            elif isinstance(step, UpdateIdentity):
                assert function is not None
                labels = self._labels_for(bundle, spec, dict(function.labels))
                function = self._update_service(spec, triggers, function, labels, reporter)
            elif isinstance(step, (AddTrigger, RetargetSchedule)):
                assert function is not None
                self._put_job(spec, function, dict(step.trigger), reporter)
            elif isinstance(step, RemoveTrigger):
                self._delete_job(spec.name, step.trigger, reporter)
        assert function is not None
        return self._state(self._function(spec.name) or function)

    def _upload(self, source: bytes, reporter: Reporter) -> functions_v2.StorageSource:
        """Upload the source zip to a signed URL Cloud Functions hands out."""
        with self._google_errors("getting an upload URL"):
            target = self.functions.generate_upload_url(
                request=functions_v2.GenerateUploadUrlRequest(parent=self.location)
            )
        with reporter.status(f"uploading source ({len(source) / 1e3:.0f} kB)"):
            try:
                # The signed URL is signed for exactly this content type.
                response = requests.put(
                    target.upload_url,
                    data=source,
                    headers={"content-type": "application/zip"},
                    timeout=UPLOAD_TIMEOUT_SECONDS,
                )
            except requests.RequestException as error:
                raise ProviderError(f"uploading the source failed: {error}") from None
        if not response.ok:
            raise ProviderError(
                f"uploading the source failed: HTTP {response.status_code} {response.text[:300]}"
            )
        return target.storage_source

    def _function_resource(
        self,
        spec: DeploySpec,
        built: FunctionSource,
        triggers: builtins.list[dict[str, Any]],
        labels: dict[str, str],
        function: functions_v2.Function | None,
    ) -> functions_v2.Function:
        current = function.service_config.environment_variables if function is not None else {}
        service_config = functions_v2.ServiceConfig(
            available_memory=_memory(spec.memory_mb),
            timeout_seconds=spec.timeout_seconds,
            environment_variables=self._environment(
                spec,
                triggers,
                _url(function) if function is not None else None,
                current,
            ),
            # Read from Secret Manager by the platform when an instance starts.
            secret_environment_variables=self._secret_variables(spec, function),
            # One request per instance: the instances are the runs at once. 0:
            # the platform's default.
            max_instance_count=spec.max_concurrency or 0,
            ingress_settings=functions_v2.ServiceConfig.IngressSettings.ALLOW_ALL,
            # The new revision takes all traffic once it is ready, never before.
            all_traffic_on_latest_revision=True,
            service_account_email=self._function_account(spec.name),
        )
        return functions_v2.Function(
            name=self._function_name(spec.name),
            description=f"{DESCRIPTION_PREFIX}{built.qualname}"[:4096],
            environment=functions_v2.Environment.GEN_2,
            build_config=functions_v2.BuildConfig(
                runtime=built.runtime,
                entry_point=ENTRY_POINT,
                source=functions_v2.Source(storage_source=built.storage_source),
            ),
            service_config=service_config,
            labels=labels,
        )

    def _deploy_function(
        self,
        spec: DeploySpec,
        built: FunctionSource,
        triggers: builtins.list[dict[str, Any]],
        labels: dict[str, str],
        function: functions_v2.Function | None,
        previous_labels: dict[str, str],
        reporter: Reporter,
        *,
        changed: Iterable[str] = (),
    ) -> functions_v2.Function:
        """Create the function, or update it whole; ``changed``: the settings the plan
        found changed."""
        resource = self._function_resource(spec, built, triggers, labels, function)
        if function is None:
            with self._google_errors(f"creating {spec.name}"):
                operation = _settling(
                    partial(
                        self.functions.create_function,
                        parent=self.location,
                        function=resource,
                        function_id=spec.name,
                    ),
                    resource.service_config.service_account_email,
                )
            message = f"creating {spec.name} (Cloud Build installs the requirements)"
        else:
            paths = [
                "build_config.runtime",
                "build_config.entry_point",
                "build_config.source",
                "service_config.available_memory",
                "service_config.timeout_seconds",
                "service_config.environment_variables",
                "service_config.ingress_settings",
                "service_config.all_traffic_on_latest_revision",
                "service_config.service_account_email",
                "labels",
                "description",
            ]
            # Secret variables and the instance count are sent only when they
            # change: a count set in the console (or the platform's default)
            # stays while max_concurrency is None and was never set by deployer.
            current, wanted = function.service_config, resource.service_config
            if _secret_keys(current.secret_environment_variables) != _secret_keys(
                wanted.secret_environment_variables
            ):
                paths.append("service_config.secret_environment_variables")
            if "max concurrency" in changed or (
                spec.max_concurrency is not None
                and current.max_instance_count != spec.max_concurrency
            ):
                paths.append("service_config.max_instance_count")
            with self._google_errors(f"updating {spec.name}"):
                operation = _settling(
                    partial(
                        self.functions.update_function,
                        function=resource,
                        update_mask=field_mask_pb2.FieldMask(paths=paths),
                    ),
                    resource.service_config.service_account_email,
                )
            message = f"updating {spec.name} (Cloud Build installs the requirements)"
        try:
            result: functions_v2.Function = self._wait(operation, message, reporter)
        except ProviderError:
            if function is not None:
                # The previous revision still serves; its labels must say so, or
                # the next plan would believe the new code is deployed.
                self._restore_labels(spec.name, previous_labels)
            raise
        return result

    def _restore_labels(self, name: str, labels: dict[str, str]) -> None:
        try:
            operation = self.functions.update_function(
                function=functions_v2.Function(name=self._function_name(name), labels=labels),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            )
            _poll(operation, f"restoring the labels of {name}")
        except (google_exceptions.GoogleAPICallError, ProviderError):
            # The deploy already failed with a clearer error; a plan that still
            # differs is caught by the state check (the function is not ACTIVE).
            pass

    def _update_service(
        self,
        spec: DeploySpec,
        triggers: builtins.list[dict[str, Any]],
        function: functions_v2.Function,
        labels: dict[str, str],
        reporter: Reporter,
    ) -> functions_v2.Function:
        """Bring the labels, the environment and the service account up to date, without
        a rebuild; only what differs is sent. Returns the function as it is now."""
        service = function.service_config
        # Variables someone else set on the function are kept; deployer's own
        # are exactly the wanted ones.
        current_environment = dict(service.environment_variables)
        environment = self._environment(spec, triggers, _url(function), current_environment)
        account = self._function_account(spec.name)
        paths = []
        if dict(function.labels) != labels:
            paths.append("labels")
        if current_environment != environment:
            paths.append("service_config.environment_variables")
        if service.service_account_email != account:
            paths.append("service_config.service_account_email")
        if not paths:
            return function
        resource = functions_v2.Function(
            name=function.name,
            labels=labels,
            service_config=functions_v2.ServiceConfig(
                environment_variables=environment, service_account_email=account
            ),
        )
        with self._google_errors(f"configuring {spec.name}"):
            operation = _settling(
                partial(
                    self.functions.update_function,
                    function=resource,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                account,
            )
        result: functions_v2.Function = self._wait(operation, f"configuring {spec.name}", reporter)
        return result

    def _wait(self, operation: Any, message: str, reporter: Reporter) -> Any:
        with reporter.status(message), self._google_errors(message):
            return _poll(operation, message)

    @contextmanager
    def _google_errors(self, action: str) -> Iterator[None]:
        """Turn a Google API error into a ProviderError that says what was being done."""
        try:
            yield
        except google_exceptions.Forbidden as error:
            raise ProviderError(
                f"{action}: permission denied in {self.location} ({error.message}): the "
                "deploying account needs roles/cloudfunctions.developer, "
                "roles/cloudscheduler.admin, roles/run.admin, roles/iam.serviceAccountAdmin "
                "(deployer makes the function's and the scheduler's service accounts), "
                "roles/iam.serviceAccountUser on those accounts, and roles/storage.admin on "
                "the output and inputs buckets and roles/secretmanager.admin on its secrets "
                "(to grant the function's account access)"
            ) from None
        except google_exceptions.GoogleAPICallError as error:
            raise ProviderError(f"{action} failed: {error.message}") from None
        except requests.RequestException as error:
            raise ProviderError(f"{action} failed: {error}") from None

    def _reconcile_invokers(
        self,
        function: functions_v2.Function,
        name: str,
        triggers: builtins.list[dict[str, Any]],
        reporter: Reporter,
    ) -> None:
        """Who may call the function: allUsers only for Http(public=True); the
        scheduler's service account only when there are schedules.

        The policy is set on the function's Cloud Run service because that is
        what decides on 2nd gen functions (it is what `gcloud functions
        add-invoker-policy-binding` changes); an invoker binding on the
        function itself would be ignored.
        """
        policy = self._policy(function)
        if policy is None:
            raise ProviderError(
                f"{function.name} has no Cloud Run service after deploying: see the "
                "function's build logs in the console"
            )
        wanted: set[str] = set()
        unwanted: set[str] = set()
        http = _http_trigger(triggers)
        if http is not None and http.get("public"):
            wanted.add(PUBLIC_MEMBER)
        else:
            unwanted.add(PUBLIC_MEMBER)
        scheduler = self._scheduler_account(name)
        if _schedule_triggers(triggers):
            wanted.add(f"serviceAccount:{scheduler}")
        else:
            unwanted.add(f"serviceAccount:{scheduler}")
        members = self._invokers(policy)
        if wanted <= members and not (unwanted & members):
            return
        bindings = [binding for binding in policy.bindings if binding.role != INVOKER_ROLE]
        invokers = sorted((members | wanted) - unwanted)
        if invokers:
            bindings.append(policy_pb2.Binding(role=INVOKER_ROLE, members=invokers))
        del policy.bindings[:]
        policy.bindings.extend(bindings)
        with self._google_errors(f"setting who may invoke {function.name}"):
            _settling(
                lambda: self.run.set_iam_policy(
                    request={"resource": function.service_config.service, "policy": policy}
                ),
                scheduler,
            )
        if PUBLIC_MEMBER in wanted - members:
            reporter.say("the function URL is public: anyone can call it")
        elif PUBLIC_MEMBER in members & unwanted:
            reporter.say("the function URL requires authentication again")

    def _job(
        self, spec: DeploySpec, function: functions_v2.Function, trigger: dict[str, Any]
    ) -> scheduler_v1.Job:
        schedule = trigger_from_dict(trigger)
        assert isinstance(schedule, (Cron, Every))
        expression, time_zone = to_cloud_scheduler(schedule)
        url = _url(function)
        low, high = SCHEDULER_DEADLINE_SECONDS
        return scheduler_v1.Job(
            name=f"{self.location}/jobs/{schedule_id(spec.name, trigger)}",
            description=json.dumps(trigger, sort_keys=True),
            schedule=expression,
            time_zone=time_zone,
            http_target=scheduler_v1.HttpTarget(
                uri=url,
                # The token of the scheduler's own account tells the runtime
                # this is a scheduled run, and Scheduler's X-CloudScheduler-*
                # headers which firing it is. The body carries only the
                # schedule's params and overlap, when it sets them.
                http_method=scheduler_v1.HttpMethod.POST,
                body=_job_body(schedule),
                oidc_token=scheduler_v1.OidcToken(
                    service_account_email=self._scheduler_account(spec.name), audience=url
                ),
            ),
            # Scheduler gives up on an attempt after this long (default 3 min);
            # a run may take as long as the function's timeout.
            attempt_deadline=timedelta(seconds=min(max(spec.timeout_seconds, low), high)),
            # Scheduler's default is no retry. A failed run answers 500; a retry
            # of the same firing carries the same schedule time, so it
            # overwrites that run instead of adding one.
            retry_config=scheduler_v1.RetryConfig(retry_count=SCHEDULE_RETRIES),
        )

    def _job_of(self, name: str, trigger: Mapping[str, Any]) -> scheduler_v1.Job | None:
        """The job made from ``trigger`` (found by the trigger it records)."""
        for job in self._jobs(name).values():
            if self._job_trigger(job) == dict(trigger):
                return job
        return None

    def _put_job(
        self,
        spec: DeploySpec,
        function: functions_v2.Function,
        trigger: dict[str, Any],
        reporter: Reporter,
    ) -> None:
        """Create the job for ``trigger``, or point a kept one at the function again
        (its URL, caller or deadline moved: a new service account, a longer timeout)."""
        job = self._job(spec, function, trigger)
        described = describe_trigger(trigger)
        existing = self._job_of(spec.name, trigger)
        if existing is None:
            with self._google_errors(f"creating schedule {job.name.rsplit('/', 1)[-1]}"):
                _settling(
                    partial(self.scheduler.create_job, parent=self.location, job=job),
                    self._scheduler_account(spec.name),
                )
            reporter.say(f"added schedule {described}: {job.schedule} ({job.time_zone})")
            return
        job.name = existing.name
        with self._google_errors(f"updating schedule {existing.name}"):
            self.scheduler.update_job(
                job=job,
                update_mask=field_mask_pb2.FieldMask(
                    paths=["http_target", "attempt_deadline", "retry_config"]
                ),
            )
        reporter.say(f"schedule {described} now calls {spec.name} as planned")

    def _delete_job(self, name: str, trigger: Mapping[str, Any], reporter: Reporter) -> None:
        job = self._job_of(name, trigger)
        if job is None:
            return
        with self._google_errors(f"deleting schedule {job.name}"):
            self.scheduler.delete_job(name=job.name)
        reporter.say(f"removed schedule {describe_trigger(trigger)}")

    # -- versions: each deployed source kept for rollback ---------------------

    def _versions_prefix(self, output: str, name: str) -> tuple[str, str]:
        """(bucket, prefix) where the versions of ``name`` are kept, beside ``output``;
        per project and region, as a name may be deployed in several.

        The function's own account may write there too (objectAdmin on the output
        bucket): the sha256 a record keeps tells a damaged or swapped zip, not a
        record the function itself rewrote."""
        bucket, prefix = split_bucket_url(output)
        parts = (prefix, ARTIFACTS_DIRECTORY, VERSIONS_DIRECTORY, self.project, self.region, name)
        return bucket, "/".join(part for part in parts if part) + "/"

    def _kept_versions(self, output: str, name: str) -> builtins.list[KeptSource]:
        """The versions of ``name`` kept beside ``output``, newest first."""
        bucket, prefix = self._versions_prefix(output, name)
        kept = []
        with self._google_errors(f"reading the versions of {name} kept in gs://{bucket}/{prefix}"):
            for blob in self.storage.list_blobs(bucket, prefix=prefix):
                if not blob.name.endswith(".json"):
                    continue
                try:
                    record = KeptSource.from_json(blob.download_as_bytes())
                    if f"{prefix}{record.version}.json" != blob.name or record.name != name:
                        raise ValueError("it names another version or function than its path")
                except ValueError as error:
                    raise ProviderError(
                        f"gs://{bucket}/{blob.name} is not a version deployer kept ({error}): "
                        f"delete it (`gcloud storage rm gs://{bucket}/{blob.name}`)"
                    ) from None
                kept.append(record)
        return sorted(kept, key=lambda record: (record.deployed_at, record.version), reverse=True)

    def _keep_version(self, spec: DeploySpec, bundle: Bundle, source: bytes) -> KeptSource:
        """Keep ``source`` and the record of deploying it with ``spec``."""
        kept = kept_source(
            bundle,
            spec,
            source,
            deployed_at=datetime.now(timezone.utc),
            deployed_by=None if self._overridden() else credentials_email(self._adc()[0]),
        )
        bucket, prefix = self._versions_prefix(spec.output, spec.name)
        handle = self.storage.bucket(bucket)
        with self._google_errors(f"keeping the source of {spec.name} in gs://{bucket}/{prefix}"):
            # The zip first: the record, written last, is what makes it a version.
            handle.blob(f"{prefix}{kept.version}.zip").upload_from_string(
                source, content_type="application/zip"
            )
            handle.blob(f"{prefix}{kept.version}.json").upload_from_string(
                kept.to_json(), content_type="application/json"
            )
        return kept

    def _forget(self, output: str, versions: Iterable[KeptSource]) -> None:
        for kept in versions:
            bucket, prefix = self._versions_prefix(output, kept.name)
            handle = self.storage.bucket(bucket)
            # The record first: history never lists a version whose zip is gone.
            for suffix in (".json", ".zip"):
                with suppress(google_exceptions.NotFound):
                    handle.blob(f"{prefix}{kept.version}{suffix}").delete()

    def _forget_failed(self, output: str, kept: KeptSource) -> None:
        """Remove the version of a deploy that failed: it was never live."""
        # The deploy already failed with a clearer error; a version left behind
        # is listed, never live, and pruned by a later deploy.
        with suppress(google_exceptions.GoogleAPICallError, requests.RequestException):
            self._forget(output, [kept])

    def _prune_versions(
        self,
        spec: DeploySpec,
        kept_before: builtins.list[KeptSource],
        was_live: KeptSource | None,
        reporter: Reporter,
    ) -> None:
        """Keep ``keep_versions`` in all, the one just deployed included: the oldest
        go first, the one live before it last (what a rollback most likely wants)."""
        surplus = len(kept_before) - (spec.keep_versions - 1)
        if surplus <= 0:
            return
        oldest_first = sorted(
            kept_before, key=lambda kept: (kept is was_live, kept.deployed_at, kept.version)
        )
        with self._google_errors(f"removing old versions of {spec.name}"):
            self._forget(spec.output, oldest_first[:surplus])
        reporter.say(f"removed {surplus} old version(s), keeping {spec.keep_versions} for rollback")

    def _kept_spec(self, kept: KeptSource, alerts: tuple[str, ...] = ()) -> DeploySpec:
        """The settings ``kept`` was deployed with, as a spec (its triggers: none)."""
        return DeploySpec(
            name=kept.name,
            output=kept.output,
            inputs=kept.inputs,
            triggers=(),
            timeout_seconds=kept.timeout_seconds,
            memory_mb=kept.memory_mb,
            alerts=alerts,
            env=kept.env,
            secrets=kept.secrets,
            max_concurrency=kept.max_concurrency,
        )

    def _live_version(
        self, function: functions_v2.Function, kept: builtins.list[KeptSource]
    ) -> KeptSource | None:
        """The kept version the function runs: the newest with its code and dependencies
        (its labels) and its settings; failing those (a setting changed in the
        console), the newest with its code and dependencies."""
        labels = function.labels
        hashes = (
            decode_hash(labels.get(CODE_HASH_LABEL, "")),
            decode_hash(labels.get(DEPS_HASH_LABEL, "")),
        )
        matching = [record for record in kept if (record.code_hash, record.deps_hash) == hashes]
        settings = self._deployed_settings(function)
        same = [
            record
            for record in matching
            if self.wanted_settings(self._kept_spec(record)) == settings
        ]
        return next(iter(same or matching), None)

    def history(self, name: str) -> builtins.list[Version]:
        function = self._require(name)
        output = function.service_config.environment_variables.get(ENVIRONMENT_OUTPUT, "")
        kept = self._kept_versions(output, name)
        live = self._live_version(function, kept)
        return [
            Version(
                version=record.version,
                code_hash=record.code_hash,
                deps_hash=record.deps_hash,
                deployed_at=record.deployed_at,
                deployed_by=record.deployed_by,
                live=record is live,
            )
            for record in kept
        ]

    def _kept_zip(self, output: str, kept: KeptSource) -> bytes:
        """The source ``kept`` was deployed from, as it was deployed (checked)."""
        bucket, prefix = self._versions_prefix(output, kept.name)
        key = f"{prefix}{kept.version}.zip"
        with self._google_errors(f"reading gs://{bucket}/{key}"):
            try:
                source: bytes = self.storage.bucket(bucket).blob(key).download_as_bytes()
            except google_exceptions.NotFound:
                raise ProviderError(
                    f"the source of version {kept.version} of {kept.name} is gone from "
                    f"gs://{bucket}/{key}: deploy that code again instead"
                ) from None
        try:
            check_kept_zip(kept, source)
        except ValueError as error:
            raise ProviderError(
                f"gs://{bucket}/{key} is not the source version {kept.version} of {kept.name} "
                f"was deployed from ({error}): nothing was changed; deploy that code again "
                "instead"
            ) from None
        return source

    def make_live(self, name: str, version: Version, reporter: Reporter) -> None:
        """Rebuild the kept source of ``version`` with its settings: it is uploaded
        again and Cloud Build installs its requirements again (Cloud Functions runs
        builds of an uploaded source, nothing older). Who the function runs as, its
        triggers (schedules, HTTP access) and its alert URLs stay as deployed now.
        Everything that can stop it is checked before anything changes."""
        function = self._require(name)
        account = self._function_account(name)
        if function.service_config.service_account_email != account:
            raise ConfigError(
                f"{name} runs as {function.service_config.service_account_email}, not as "
                f"{account}: roll back with the provider options it was deployed with "
                "(service_account=)"
            )
        environment = function.service_config.environment_variables
        output = environment.get(ENVIRONMENT_OUTPUT, "")
        kept = next(
            (
                record
                for record in self._kept_versions(output, name)
                if record.version == version.version
            ),
            None,
        )
        if kept is None:
            raise ProviderError(
                f"version {version.version} of {name} is no longer kept: see `deployer history "
                f"{name} --provider gcp`"
            )
        source = self._kept_zip(output, kept)
        spec = self._kept_spec(kept, alerts=_deployed_alerts(environment))
        triggers = self._current_triggers(function)
        # A secret of the version that is gone stops the rollback here.
        grants, revocations = self._secret_steps(spec, function)
        # The kept records are in the output bucket, which the function's own
        # account may write: a rollback therefore never grants anything a record
        # asks for (another secret, another bucket); a deploy does that.
        inputs = environment.get(ENVIRONMENT_INPUTS) or None
        if grants or spec.output != output or spec.inputs != inputs:
            needs = [str(getattr(step, "secret", step)) for step in grants]
            if spec.output != output or spec.inputs != inputs:
                needs.append(f"output {spec.output} / inputs {spec.inputs}")
            raise ConfigError(
                f"version {version.version} of {name} needs access its account does not have "
                f"now ({'; '.join(needs)}); a rollback grants nothing: deploy that code again "
                "instead"
            )
        labels = self._labels(spec, kept.code_hash, kept.deps_hash, triggers, dict(function.labels))
        built = FunctionSource(self._upload(source, reporter), kept.runtime, kept.qualname)
        concurrency = self._deployed_settings(function)["max concurrency"]
        self._deploy_function(
            spec,
            built,
            triggers,
            labels,
            function,
            dict(function.labels),
            reporter,
            changed={"max concurrency"} if concurrency != kept.max_concurrency else set(),
        )
        for step in revocations:
            assert isinstance(step, RevokeSecretAccess)
            self._revoke_secret(step.secret, account, reporter)
        if spec.alerts:
            reporter.say("alerts: the webhooks deployed now stay (versions never keep them)")

    # -- invoke, logs, delete ------------------------------------------------

    def _require(self, name: str) -> functions_v2.Function:
        self.require(name)
        function = self._function(name)
        assert function is not None
        return function

    def _identity_token(self, audience: str) -> str:
        """An OIDC identity token for the function URL, as Cloud Run requires."""
        ready = os.environ.get(IDENTITY_TOKEN)
        if ready:
            return ready
        import google.auth.transport.requests
        import google.oauth2.id_token

        request = google.auth.transport.requests.Request()
        try:
            # A service account key, the metadata server, or impersonation.
            token: str = google.oauth2.id_token.fetch_id_token(request, audience)
            return token
        except (DefaultCredentialsError, GoogleAuthError, ValueError):
            pass
        # User credentials from `gcloud auth application-default login` carry
        # an ID token of their own after a refresh.
        credentials = self._adc()[0]
        try:
            credentials.refresh(request)
        except GoogleAuthError as error:
            raise ProviderError(f"refreshing the Google credentials failed: {error}") from None
        token = getattr(credentials, "id_token", None) or ""
        if not token:
            raise ProviderError(
                "these credentials cannot mint an identity token to call the function: set "
                "GOOGLE_APPLICATION_CREDENTIALS to a service account key, or set "
                f"{IDENTITY_TOKEN}=$(gcloud auth print-identity-token)"
            )
        return token

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout_seconds: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Invocation:
        function = self._require(name)
        url = _url(function)
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {self._identity_token(url)}",
            # Recorded as a manual run, not an HTTP-triggered one (runtimes/gcp.py).
            "x-deployer-trigger": "manual",
        }
        # Leave the function its whole timeout, plus time for a cold start.
        timeout = (timeout_seconds or function.service_config.timeout_seconds or 300) + 60
        try:
            response = requests.post(
                url, data=invoke_body(payload, params), headers=headers, timeout=timeout
            )
        except requests.RequestException as error:
            raise ProviderError(f"calling {name} at {url} failed: {error}") from None
        if response.status_code in (401, 403):
            raise ProviderError(
                f"{name} refused the call (HTTP {response.status_code}): the caller needs "
                f"{INVOKER_ROLE} on the function's Cloud Run service: `gcloud functions "
                f"add-invoker-policy-binding {name} --region {self.region} "
                "--member user:<you>`"
            )
        return invocation_from_reply(response.status_code, response.text)

    map_concurrency = 20  # below Cloud Functions' default of 100 instances

    @contextmanager
    def map_dispatcher(self, name: str, *, concurrency: int) -> Iterator[fanout.Dispatch]:
        """Each shard is one authenticated POST to the function's URL; Cloud Run's 429
        and 503 (no instance free yet) are retried with backoff, not counted against
        the shard. A public function is refused: its URL would take anyone's shards."""
        function = self._require(name)
        url = _url(function)
        token = _FreshToken(lambda: self._identity_token(url))

        def headers() -> dict[str, str]:
            return {
                "content-type": "application/json",
                "authorization": f"Bearer {token.get()}",
                MANUAL_HEADER: MAP_TRIGGER,
            }

        timeout = (function.service_config.timeout_seconds or 300) + 60
        with posting_shards(url, headers, timeout=timeout, concurrency=concurrency) as dispatch:
            yield dispatch

    def check_map_data(self, name: str, urls: Iterable[str]) -> None:
        """A public function takes no shards (its URL would take anyone's), and its
        account may read its output and inputs buckets only."""
        state = self.require(name)
        refuse_public_map(name, state)
        require_readable_buckets(name, urls, state, "account")

    # Cloud Logging: entries are usually listed seconds after their timestamp.
    log_lag = timedelta(seconds=30)
    # entries:list allows 60 reads a minute per project: a follow takes half.
    log_poll_seconds = 2.0

    def log_source(self, name: str) -> str:
        """The function's Cloud Run service (a 2nd gen function runs as one)."""
        function = self._require(name)
        return function.service_config.service.rsplit("/", 1)[-1] or name

    def _logging_session(self) -> tuple[requests.Session, str]:
        if "logging" not in self._clients:
            endpoint = os.environ.get(LOGGING_ENDPOINT)
            if endpoint:
                session: requests.Session = requests.Session()  # anonymous, as for every override
            else:
                session = AuthorizedSession(self._adc()[0])
                endpoint = LOGGING_API
            self._clients["logging"] = (session, endpoint.rstrip("/"))
        found: tuple[requests.Session, str] = self._clients["logging"]
        return found

    def log_page(self, source: str, query: LogQuery, cursor: Any) -> LogPage:
        """One entries:list page of what the service ``source`` printed. The cursor is
        the time the pages are read from and the page token; after the last page,
        the time moves to the newest entry seen, less ``log_lag``."""
        start, token = cursor if cursor is not None else (query.since, None)
        clauses = [
            'resource.type="cloud_run_revision"',
            f"resource.labels.service_name={_quoted(source)}",
        ]
        if start is not None:
            clauses.append(f'timestamp>="{rfc3339(start)}"')
        if query.until is not None:
            clauses.append(f'timestamp<="{rfc3339(query.until)}"')
        if query.contains:
            clauses.append(f"textPayload:{_quoted(query.contains.strip())}")  # re-checked
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{self.project}"],
            "filter": " AND ".join(clauses),
            "orderBy": "timestamp asc",
            "pageSize": LOG_PAGE_ENTRIES,
        }
        if token:
            body["pageToken"] = token
        session, endpoint = self._logging_session()
        with self._google_errors(f"reading the logs of {source}"):
            response = session.post(
                f"{endpoint}/v2/entries:list", json=body, timeout=IAM_TIMEOUT_SECONDS
            )
            if response.status_code == 403:
                raise ProviderError(
                    f"reading the logs of {source} in project {self.project}: permission "
                    "denied: the account needs roles/logging.viewer on the project"
                )
            if response.status_code >= 400:
                raise google_exceptions.from_http_response(response)
        reply = response.json()
        events = tuple(
            LogEvent(
                parse_rfc3339(entry["timestamp"]),
                entry.get("insertId") or f"{entry['timestamp']}/{text}",
                text.removesuffix("\n"),
                (entry.get("labels") or {}).get("instanceId", ""),
            )
            for entry in reply.get("entries", [])
            if (text := _entry_text(entry)) is not None
        )
        if reply.get("nextPageToken"):
            return LogPage(events, (start, reply["nextPageToken"]), more=True)
        return LogPage(events, (next_log_start(events, start, query.since, self.log_lag), None))

    def _owned_accounts(self, name: str) -> dict[str, str]:
        """Role -> email of the accounts deployer made for ``name`` that exist."""
        return {
            role: self._account_email(role, name)
            for role in (FUNCTION_ROLE, SCHEDULER_ROLE)
            if self._owned_account(role, name, refuse_foreign=False) is not None
        }

    def delete_steps(self, name: str, state: DeploymentState) -> builtins.list[Step]:
        steps: list[Step] = [
            DeleteAccount(f"service account {email} (the {role}'s)", email=email)
            for role, email in self._owned_accounts(name).items()
        ]
        kept = self._kept_versions(state.output, name) if state.output.startswith("gs://") else []
        if kept:
            bucket, prefix = self._versions_prefix(state.output, name)
            steps.append(
                ForgetVersions(
                    f"{len(kept)} version(s) kept for rollback in gs://{bucket}/{prefix}"
                )
            )
        return steps

    def execute_delete(self, plan: Plan, state: DeploymentState, reporter: Reporter) -> None:
        name = plan.name
        function = self._require(name)
        environment = function.service_config.environment_variables
        # Schedules first: a job left behind would keep calling a missing URL.
        for job in self._jobs(name).values():
            with self._google_errors(f"deleting schedule {job.name}"):
                self.scheduler.delete_job(name=job.name)
        # Then the identities the plan named, each checked again (what the
        # function's account was granted on its buckets first), and the
        # function last: while it exists, a delete that failed halfway can be
        # run again.
        accounts = self._owned_accounts(name)
        planned = {step.email for step in plan.of_type(DeleteAccount)}  # type: ignore[attr-defined]
        if accounts.get(FUNCTION_ROLE) in planned:
            buckets = [
                split_bucket_url(environment[key])[0]
                for key in (ENVIRONMENT_OUTPUT, ENVIRONMENT_INPUTS)
                if environment.get(key, "").startswith("gs://")
            ]
            self._revoke_bucket_access(accounts[FUNCTION_ROLE], buckets)
            for secret in self._named_secrets(function.service_config.secret_environment_variables):
                self._revoke_secret(secret, accounts[FUNCTION_ROLE], reporter)
        for email in accounts.values():
            if email in planned:
                with self._google_errors(f"deleting service account {email}"):
                    self.service_accounts.delete(self.project, email)
        with self._google_errors(f"deleting {name}"):
            operation = self.functions.delete_function(name=function.name)
        # The Cloud Run service and its IAM policy go with the function.
        self._wait(operation, f"deleting {name}", reporter)
        if plan.of_type(ForgetVersions):
            output = environment.get(ENVIRONMENT_OUTPUT, state.output)
            self._forget(output, self._kept_versions(output, name))


def credentials_email(credentials: Any) -> str | None:
    """Whom ``credentials`` belong to, as far as they tell without a request: a service
    account's email (a key, impersonation, the metadata server once used), a user's
    account as gcloud records it, or the email in the ID token a user's credentials
    carry once refreshed. None when they do not say."""
    for candidate in (
        getattr(credentials, "service_account_email", None),
        getattr(credentials, "account", None),
    ):
        if isinstance(candidate, str) and "@" in candidate:
            return candidate
    token = getattr(credentials, "id_token", None)
    if not isinstance(token, str) or not token:
        return None
    from google.auth import jwt

    try:
        # Not verified: it names who deployed, for people; it grants nothing.
        claims = jwt.decode(token, verify=False)
    except (ValueError, GoogleAuthError):
        return None
    email = claims.get("email") if isinstance(claims, dict) else None
    return email if isinstance(email, str) and "@" in email else None


def _deployed_alerts(environment: Mapping[str, str]) -> tuple[str, ...]:
    """The alert URLs a function was deployed with (ALERTS_VARIABLE)."""
    try:
        urls = json.loads(environment.get(ALERTS_VARIABLE) or "[]")
    except ValueError:
        return ()
    return tuple(url for url in urls if isinstance(url, str)) if isinstance(urls, list) else ()


def _secret_keys(
    variables: Iterable[functions_v2.SecretEnvVar],
) -> builtins.list[tuple[str, str, str, str]]:
    return sorted(
        (variable.key, variable.project_id, variable.secret, variable.version)
        for variable in variables
    )


def _job_body(schedule: Cron | Every) -> bytes:
    """What a scheduled request carries for runtimes/gcp.py ``_scheduled``."""
    options: dict[str, Any] = {}
    if schedule.params:
        options["params"] = dict(schedule.params)
    if not schedule.overlap:
        options["overlap"] = False
    return json.dumps(options).encode() if options else b""


def _target_changes(existing: scheduler_v1.Job, wanted: scheduler_v1.Job) -> list[str]:
    """What differs between a job's target and the one deployer would make, in words."""
    changes = []
    current, target = existing.http_target, wanted.http_target
    if current.uri != target.uri:
        changes.append(f"URL {current.uri or None!r} -> {target.uri!r}")
    caller = current.oidc_token.service_account_email
    if caller != target.oidc_token.service_account_email:
        changes.append(
            f"calls as {target.oidc_token.service_account_email} (was {caller or 'nobody'})"
        )
    if current.oidc_token.audience != target.oidc_token.audience:
        changes.append(f"token audience -> {target.oidc_token.audience!r}")
    if existing.attempt_deadline != wanted.attempt_deadline:
        changes.append(
            f"attempt deadline {existing.attempt_deadline.total_seconds():.0f} s -> "
            f"{wanted.attempt_deadline.total_seconds():.0f} s"
        )
    if existing.retry_config.retry_count != wanted.retry_config.retry_count:
        changes.append(
            f"retries {existing.retry_config.retry_count} -> {wanted.retry_config.retry_count}"
        )
    return changes


def _settling(call: Callable[[], Any], email: str) -> Any:
    """``call()``, tried again while IAM does not know the account ``email`` yet.

    A service account made a moment ago can be refused as unknown by the
    policies and jobs that name it, for a few seconds; any other error, or the
    same one for longer than ACCOUNT_SETTLE_SECONDS, is raised.
    """
    deadline = time.monotonic() + ACCOUNT_SETTLE_SECONDS
    delay = 0.25
    while True:
        try:
            return call()
        except (google_exceptions.BadRequest, google_exceptions.NotFound) as error:
            if email not in str(error.message) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _quoted(value: str) -> str:
    """A string in Cloud Logging's filter language (JSON's escapes are its own)."""
    return json.dumps(value, ensure_ascii=False)


def _entry_text(entry: dict[str, Any]) -> str | None:
    """What a log entry says: a print is textPayload, a structured line has a message;
    a request log has neither (None)."""
    if "textPayload" in entry:
        return str(entry["textPayload"])
    message = (entry.get("jsonPayload") or {}).get("message")
    return None if message is None else str(message)


def _poll(operation: Any, message: str) -> Any:
    """Wait on a long-running operation: quick polls first (tests, small updates),
    then every 10 s (a Cloud Build takes minutes)."""
    deadline = time.monotonic() + OPERATION_TIMEOUT_SECONDS
    delay = 0.25
    while not operation.done():
        if time.monotonic() > deadline:
            raise ProviderError(
                f"{message}: still running after {OPERATION_TIMEOUT_SECONDS // 60} minutes; "
                f"see operation {operation.operation.name} in the console"
            )
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
    return operation.result()
