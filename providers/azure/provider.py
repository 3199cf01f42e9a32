"""The Azure provider: Azure Functions on the Flex Consumption plan, Blob Storage, RBAC.

State lives in Azure itself, never in a local file: the function app's tags
carry deployer's ownership marker, the function's name, its code_hash,
deps_hash, output, inputs, timeout and one tag per trigger; its Flex
configuration carries the memory and Python version. So a deploy from a
laptop and one from CI plan against the same truth.

What deployer makes per deployed function ``name``, in the configured
subscription, resource group and location (names derived, never chosen):

- a storage account ``dpl<21 hex>`` (a hash of subscription, resource group
  and name: storage account names are global, 3-24 lowercase alphanumerics)
  for the app's host (``AzureWebJobsStorage`` through its identity, no keys:
  shared-key access is off) and the deployment container ``app-package``
  that Flex Consumption runs the published zip from;
- a Flex Consumption plan (FC1) and the function app ``{name}-{10 hex}`` on
  it (a hash of subscription and resource group: app names are global DNS
  labels), Linux, Python, with a system-assigned managed identity;
- role assignments for that identity, with names derived from identity,
  role and scope (so a retry is idempotent): Storage Blob Data Owner on its
  own storage account (what the host needs for its locks, keys and timer
  state, and the deployment container), Storage Blob Data Contributor on the
  output's container, Storage Blob Data Reader on the inputs' container.
  Azure's data-plane RBAC scopes to a container at the narrowest (a
  condition on the blob path would be narrower, but conditions are not
  available on every role and account kind): the function can write the
  whole output container, not only ``{output}/{name}/``. With ``secrets=``,
  Key Vault Secrets User on exactly each secret (``{vault id}/secrets/{name}``).

Settings: ``env=`` are app settings beside deployer's own; ``secrets=`` are app
settings holding Key Vault references (``@Microsoft.KeyVault(SecretUri=...)``)
that the platform resolves with the app's identity when the app starts, so no
secret's value passes through deployer. A redeploy keeps every setting it did
not make (the portal's, Application Insights') and removes the user's that are
no longer wanted (DEPLOYER_MANAGED names them). ``max_concurrency=N`` is the
Flex configuration: at most N instances of the HTTP functions, each taking one
call at a time.

A resource with one of these names that deployer did not make for this
function (its tags say so) is never adopted: planning stops, naming it.

Code ships as the app zip the data plane builds (providers/azure/app_package.py:
function_app.py, host.json, the bundle, Linux wheels in
.python_packages), published without a remote build to Kudu's OneDeploy
endpoint (``POST {scm}/api/publish?RemoteBuild=false``, as ``az functionapp
deployment source config-zip`` does for Flex) with the deploying identity's
ARM token. Kudu reports success even when the host then cannot load the app
(a missing dependency: nothing registers), so apply checks that Azure lists
the functions the zip declares before recording the new code_hash. Schedules
and the HTTP function's auth level are decorators in function_app.py: any
trigger change publishes the zip again, and the plan says so.

Configuration: subscription, resource group and location from
``provider_options`` or AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP,
AZURE_LOCATION; credentials from azure-identity's DefaultAzureCredential.
Endpoints come from configuration only: AZURE_RESOURCE_MANAGER_URL (another
cloud's ARM, or the tests' fake) and DEPLOYER_AZURE_SCM_URL (a Kudu URL
template with ``{app}``; default: the app's own ``.scm.`` host name).

Apply carries out the plan's steps in order: package the zip (before any
call) -> the storage account and its deployment container -> the plan and
the app (its tags do not claim any code yet) -> role assignments -> the
first step that changes what is in the zip publishes it once (code,
dependencies, triggers and the settings the manifest carries ride
together) -> memory and Python are site updates -> last, one site update
records the new tags and app settings, only after everything before
succeeded. A failure anywhere leaves tags that still describe what runs, so
the next deploy plans the rest again.

Versions and rollback: Flex Consumption keeps only the current package, so
every deploy that changes something keeps its own version in the app's
deployment container, under ``versions/`` (Blob Storage, through the
deploying identity: it needs Storage Blob Data Contributor, which Contributor
and Owner do not give, as the account takes no shared keys). The zip is kept
as ``versions/{sha256}.zip`` before it is published (a deploy whose copy
cannot be kept changes nothing live), and ``versions/{id}.json`` records the
deploy (hashes, when, by whom as the token names it, and the settings deploy
manages; secrets as their references, alert URLs never) before the tags claim
it; a setting-only deploy records a version that runs the zip already kept.
Deploys remove the oldest versions beyond ``keep_versions`` (never the live
one nor the one live before) and the zips no kept version runs. The live
version is the one whose code and dependencies the app's tags name (of
several, the one whose settings are the app's). ``rollback`` publishes the
kept zip again, nothing built, with that version's settings and the alert
URLs deployed now; as the schedules and the HTTP function's auth level are
declared by function_app.py inside the zip, the triggers come back as that
version deployed them, and the tags say so.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

# Imported at module load: a missing extra is reported by the registry.
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import (
    BlobContainer,
    Sku,
    StorageAccountCheckNameAvailabilityParameters,
    StorageAccountCreateParameters,
    StorageAccountPropertiesCreateParameters,
)
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.v2024_04_01.models import (
    AppServicePlan,
    FunctionAppConfig,
    FunctionEnvelope,
    FunctionsDeployment,
    FunctionsDeploymentStorage,
    FunctionsDeploymentStorageAuthentication,
    FunctionsRuntime,
    FunctionsScaleAndConcurrency,
    FunctionsScaleAndConcurrencyTriggers,
    FunctionsScaleAndConcurrencyTriggersHttp,
    ManagedServiceIdentity,
    NameValuePair,
    Site,
    SiteConfig,
    SkuDescription,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from deployer.errors import ConfigError, ProviderError
from deployer.providers.azure.app_package import (
    HTTP_FUNCTION,
    app_zip,
    azure_platform,
    install_app_dependencies,
)
from deployer.providers.azure.options import AzureOptions
from deployer.providers.azure.target import timer_schedule
from deployer.providers.base import (
    CREATE,
    DELETE,
    UPDATE_CONFIG,
    BaseProvider,
    CreateFunction,
    Deployed,
    DeploymentState,
    Invocation,
    LogEvent,
    LogPage,
    LogQuery,
    Plan,
    Step,
    TriggerStep,
    UpdateCode,
    UpdateConfig,
    Version,
    describe_trigger,
    invocation_from_reply,
    invoke_body,
    is_schedule,
    merged_environment,
    next_log_start,
    own_variables,
    parse_rfc3339,
    posting_shards,
    refuse_public_map,
    require_readable_buckets,
    rfc3339,
    secret_references,
    trigger_changes,
    user_environment,
    utc_now,
)
from deployer.runtimes import fanout
from deployer.runtimes.core import ALERTS_VARIABLE
from deployer.spec import DeploySpec
from deployer.triggers import Cron, Every, trigger_from_dict

if TYPE_CHECKING:
    from deployer.bundle import Bundle
    from deployer.console import Reporter

T = TypeVar("T")

ARM_URL_VARIABLE = "AZURE_RESOURCE_MANAGER_URL"
SCM_URL_VARIABLE = "DEPLOYER_AZURE_SCM_URL"
ARM_URL = "https://management.azure.com"
SUBSCRIPTION_VARIABLE = "AZURE_SUBSCRIPTION_ID"
RESOURCE_GROUP_VARIABLE = "AZURE_RESOURCE_GROUP"
LOCATION_VARIABLE = "AZURE_LOCATION"
STORAGE_ACCOUNT_VARIABLE = "AZURE_STORAGE_ACCOUNT_NAME"  # what runtimes/storage.py reads
# Logs: Azure Functions sends what a function prints to the Application Insights
# whose connection string is this app setting (deployer does not make one), and
# its query API reads them back. DEPLOYER_AZURE_APP_INSIGHTS_URL: another API
# endpoint (the tests' fake).
APP_INSIGHTS_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
APP_INSIGHTS_URL_VARIABLE = "DEPLOYER_AZURE_APP_INSIGHTS_URL"
APP_INSIGHTS_API = "https://api.applicationinsights.io"
LOG_PAGE_ROWS = 1000
LOG_QUERY_TIMEOUT_SECONDS = 60

# Flex Consumption enforces no maximum run time, but a run is only given 60
# minutes to finish when the app scales in (functions-timeout-duration.md).
MAX_TIMEOUT_SECONDS = 3600
# An HTTP-triggered run must answer within 230 s (Azure Load Balancer's idle timeout).
HTTP_RESPONSE_LIMIT_SECONDS = 230
INSTANCE_MEMORY_MB = (512, 2048, 4096)  # the sizes Flex Consumption offers
MAXIMUM_INSTANCE_COUNT = 100  # Flex's default scale limit per app
# The highest maximum instance count Flex takes; its lowest is 1 (it was 40 in
# the preview): event-driven-scaling.md, "Limit scale-out".
INSTANCE_COUNT_LIMIT = 1000
DEPLOYMENT_CONTAINER = "app-package"
TAG_VALUE_LIMIT = 256  # ARM tag values; names may not contain < > % & \ ? /
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,58}[a-z0-9]$")  # 2-60, a DNS label
APP_HASH_LENGTH = 10
ACCOUNT_PREFIX = "dpl"

MANAGED_BY_TAG = "managed-by"
MANAGED_BY = "deployer"
NAME_TAG = "deployer-name"
CODE_HASH_TAG = "deployer-code-hash"
DEPS_HASH_TAG = "deployer-deps-hash"
OUTPUT_TAG = "deployer-output"
INPUTS_TAG = "deployer-inputs"
TIMEOUT_TAG = "deployer-timeout"
# max_concurrency as deployed: without it the scale settings are the platform's default.
MAX_CONCURRENCY_TAG = "deployer-max-concurrency"
QUALNAME_TAG = "deployer-qualname"
TRIGGER_TAG_PREFIX = "deployer-trigger-"
APP_TAG = "deployer-app"  # on the storage account and the plan: the app they belong to

# Built-in role definitions (the same GUIDs in every tenant).
BLOB_OWNER = "Storage Blob Data Owner"
BLOB_CONTRIBUTOR = "Storage Blob Data Contributor"
BLOB_READER = "Storage Blob Data Reader"
SECRETS_USER = "Key Vault Secrets User"  # reads a secret's value (Azure RBAC vaults only)
ROLE_IDS = {
    BLOB_OWNER: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    BLOB_CONTRIBUTOR: "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    BLOB_READER: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    SECRETS_USER: "4633458b-17de-408a-b874-0445c86b69e6",
}
ASSIGNMENT_NAMESPACE = uuid.UUID("6f0c3c1e-5d2a-4f0e-9b7e-2f1d4d2c0a11")

# App settings of the host that deployer sets, replaced whole on every update (with
# its DEPLOYER_* ones); every other setting that deployer did not set is kept.
HOST_SETTING_PREFIXES = ("AzureWebJobsStorage", "AzureFunctionsJobHost__")
STORAGE_ACCOUNT_SETTING = STORAGE_ACCOUNT_VARIABLE
# App settings the Functions platform reads or sets itself (functions-app-settings.md;
# matched ignoring case, as app setting names are): a user's env= or secrets= name
# may not take one, nor the one deployer sets from provider_options.
PLATFORM_SETTING_PREFIXES = (
    "FUNCTIONS_",
    "AZUREWEBJOBS",
    "AZUREFUNCTIONSJOBHOST__",
    "WEBSITE_",
    "SCM_",
    "APPLICATIONINSIGHTS_",
    "APPINSIGHTS_",
)
# Key Vault references: a secret's URL, as `az keyvault secret show --query id`
# prints it (with its version) or without the version (the platform then takes
# the newest, refetched within 24 hours of a change). Vault names are 3-24
# letters, digits and hyphens; secret names 1-127 letters, digits and hyphens.
SECRET_URL = re.compile(
    r"^https://(?P<vault>[A-Za-z0-9-]{3,24})\.(?P<suffix>vault\.azure\.net|vault\.azure\.cn|"
    r"vault\.usgovcloudapi\.net|vault\.microsoftazure\.de)/secrets/"
    r"(?P<secret>[A-Za-z0-9-]{1,127})(?:/(?P<version>[0-9a-fA-F]{32}))?/?$"
)
SECRET_URL_FORM = "https://<vault>.vault.azure.net/secrets/<secret>[/<version>]"
# Microsoft.KeyVault's ARM API (vaults, and secrets' metadata: ARM never returns a value).
KEY_VAULT_API_VERSION = "2023-07-01"
ENVIRONMENT_NAME = "DEPLOYER_NAME"
ENVIRONMENT_OUTPUT = "DEPLOYER_OUTPUT"
ENVIRONMENT_INPUTS = "DEPLOYER_INPUTS"

# What changes inside the zip: its manifest carries name, output, inputs and
# timeout, function_app.py the triggers, .python_packages the dependencies.
ZIP_SETTINGS = ("name", "output", "inputs", "timeout", "dependencies")
# Settings of the site itself (its Flex configuration), changed without a publish.
SITE_SETTINGS = ("memory", "python", "max concurrency")

PUBLISH_BUSY_SECONDS = 300  # how long a deploy already running (409) is waited for
UPLOAD_TIMEOUT_SECONDS = 15 * 60
DEPLOYMENT_TIMEOUT_SECONDS = 15 * 60
REGISTRATION_TIMEOUT_SECONDS = 180  # the host loads the new zip and lists its functions
PRINCIPAL_SETTLE_SECONDS = 120  # a new identity reaches Entra ID's replicas

# Versions for rollback. Flex Consumption keeps only the current package, so deployer
# keeps every deployed app zip itself, in the app's deployment container under
# versions/ (Flex runs the one blob its publish writes there, and deployer never
# writes that one): versions/{sha256}.zip is a zip, shared by the versions that run
# it; versions/{id}.json is one deploy and what it set. Nothing secret is kept:
# secrets are Key Vault references, and alert URLs are not kept at all.
VERSIONS_PREFIX = "versions/"
VERSION_FORMAT = 1
VERSION_ID_FORMAT = "%Y%m%dT%H%M%S%fZ"  # a version's id: when it was deployed, UTC
# A kept zip that no version names (its deploy failed before recording it) is
# removed by a later deploy once it is this old: one running now may record it yet.
UNRECORDED_ZIP_SECONDS = 24 * 3600

NO_CREDENTIALS = (
    "no Azure credentials found: run `az login` (and `az account set --subscription ...`), "
    "or set AZURE_CLIENT_ID, AZURE_CLIENT_SECRET and AZURE_TENANT_ID for a service principal"
)
NO_SUBSCRIPTION = (
    "no Azure subscription is configured: pass provider_options={'subscription_id': '...'} "
    f"(CLI: --provider-option subscription_id=...), or set {SUBSCRIPTION_VARIABLE}"
)
NO_RESOURCE_GROUP = (
    "no Azure resource group is configured: pass provider_options={'resource_group': 'ml'} "
    f"(CLI: --provider-option resource_group=ml), or set {RESOURCE_GROUP_VARIABLE}"
)
NO_LOCATION = (
    "no Azure location is configured for the resources deployer makes: pass "
    "provider_options={'location': 'westeurope'} (CLI: --provider-option location=westeurope), "
    f"or set {LOCATION_VARIABLE} (a region that offers Flex Consumption: "
    "`az functionapp list-flexconsumption-locations`)"
)
PERMISSIONS = (
    "the deploying identity needs Contributor on the resource group, and Role Based Access "
    "Control Administrator (or User Access Administrator) on it and on the output and inputs "
    "storage accounts (and the key vaults of secrets=), to grant the app's identity its roles; "
    "and Storage Blob Data Contributor on the resource group, to keep each version's app zip "
    "for rollback in the storage account deployer makes there"
)


# -- names -------------------------------------------------------------------


def app_name(name: str, subscription: str, resource_group: str) -> str:
    """The function app's name: ``{name}-{10 hex}``, a hash of subscription and group.

    App names are global (``{app}.azurewebsites.net``): the hash keeps the same
    function in two resource groups from colliding, and someone else's app
    from being the one deployer finds.
    """
    digest = hashlib.sha256(f"{subscription.lower()}/{resource_group.lower()}".encode())
    app = f"{name}-{digest.hexdigest()[:APP_HASH_LENGTH]}"
    if not APP_NAME.fullmatch(app):
        raise ConfigError(
            f"function name {name!r} makes the Azure app name {app!r}, which Azure refuses: an "
            "app name is 2-60 lowercase letters, digits and hyphens, starting and ending with a "
            f"letter or digit; choose a name of at most {60 - APP_HASH_LENGTH - 1} characters"
        )
    return app


def storage_account_name(name: str, subscription: str, resource_group: str) -> str:
    """The app's own storage account: ``dpl`` + 21 hex characters (24, Azure's maximum)."""
    digest = hashlib.sha256(f"{subscription.lower()}/{resource_group.lower()}/{name}".encode())
    return f"{ACCOUNT_PREFIX}{digest.hexdigest()[: 24 - len(ACCOUNT_PREFIX)]}"


def assignment_name(principal: str, role: str, scope: str) -> str:
    """The role assignment's name (a GUID), derived, so that a retry finds its own."""
    return str(uuid.uuid5(ASSIGNMENT_NAMESPACE, f"{principal}|{ROLE_IDS[role]}|{scope.lower()}"))


def trigger_tag(trigger: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(dict(trigger), sort_keys=True).encode()).hexdigest()
    return f"{TRIGGER_TAG_PREFIX}{digest[:10]}"


def instance_memory(memory_mb: int) -> int:
    """The smallest Flex instance size with at least ``memory_mb``."""
    return next(size for size in INSTANCE_MEMORY_MB if size >= memory_mb)


@dataclass(frozen=True)
class BlobLocation:
    """Where an ``az://`` or ``abfs://`` URL points: a storage account's container."""

    account: str
    container: str


def blob_location(url: str, default_account: str | None) -> BlobLocation:
    """``abfs://container@account.dfs.core.windows.net/path`` names its account;
    ``az://container/path`` takes the configured one."""
    parsed = urlsplit(url)
    container, _, host = parsed.netloc.partition("@")
    account = host.split(".", 1)[0] if host else default_account
    if not account:
        raise ConfigError(
            f"{url!r} names no storage account: pass provider_options={{'storage_account': "
            f"'<account>'}} (CLI: --provider-option storage_account=<account>), set "
            f"{STORAGE_ACCOUNT_VARIABLE}, or write abfs://{container}@<account>.dfs.core."
            "windows.net/..."
        )
    return BlobLocation(account, container)


def _is_blob_url(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme in ("az", "abfs", "abfss") and bool(rest.split("/", 1)[0].split("@")[0])


@dataclass(frozen=True)
class SecretReference:
    """A Key Vault secret, as secrets= names it (its URL)."""

    vault: str  # the vault's name, lower case
    secret: str
    version: str | None  # None: the newest version
    suffix: str = "vault.azure.net"  # the cloud's (Azure China's: vault.azure.cn)

    @property
    def url(self) -> str:
        # Trailing slash without a version, as Azure's own examples write a reference.
        return f"https://{self.vault}.{self.suffix}/secrets/{self.secret}/{self.version or ''}"

    @property
    def setting(self) -> str:
        """The app setting's value: a reference the platform resolves as the app's identity."""
        return f"@Microsoft.KeyVault(SecretUri={self.url})"


def secret_reference(name: str, reference: str) -> SecretReference:
    """The secret ``reference`` (of variable ``name``) points to; ConfigError otherwise.

    The reference is never quoted: a value typed there by mistake stays out of logs."""
    match = SECRET_URL.match(reference.strip())
    if match is None:
        raise ConfigError(
            f"secrets=: {name} is not the URL of a Key Vault secret (not shown here, in case it "
            f"is the secret itself): on azure a secret is given as {SECRET_URL_FORM}, as `az "
            "keyvault secret show --vault-name <vault> --name <secret> --query id` prints it"
        )
    vault = match.group("vault").lower()
    if not re.fullmatch(r"[a-z](?:[a-z0-9]|-(?!-))*[a-z0-9]", vault):
        raise ConfigError(
            f"secrets=: {name} names key vault {vault!r}, which cannot exist: a vault name "
            "starts with a letter, ends with a letter or digit and has no two hyphens in a row"
        )
    return SecretReference(
        vault, match.group("secret"), match.group("version"), match.group("suffix").lower()
    )


def _setting_name_error(name: str, what: str) -> str | None:
    """Why variable ``name`` of ``what`` (env= or secrets=) cannot be an app setting."""
    if name.upper().startswith(PLATFORM_SETTING_PREFIXES):
        return (
            f"{what}: {name} is an app setting the Azure Functions platform reads or sets "
            "itself (FUNCTIONS_*, AzureWebJobs*, WEBSITE_*, SCM_*, APPLICATIONINSIGHTS_*): "
            "choose another name"
        )
    if name.upper() == STORAGE_ACCOUNT_SETTING:
        return (
            f"{what}: {name} is set by deployer (the storage account of az:// URLs): pass "
            "provider_options={'storage_account': '<account>'} instead"
        )
    return None


def _triggers_of(tags: Mapping[str, str]) -> builtins.list[dict[str, Any]]:
    triggers = []
    for key, value in tags.items():
        if key.startswith(TRIGGER_TAG_PREFIX):
            try:
                trigger = json.loads(value)
            except ValueError:
                trigger = {"type": "unreadable", "tag": key}
            triggers.append(trigger)
    return sorted(triggers, key=lambda trigger: json.dumps(trigger, sort_keys=True))


def _http_trigger(triggers: Any) -> dict[str, Any] | None:
    return next((dict(t) for t in triggers if t.get("type") == "http"), None)


def _bindings(function: FunctionEnvelope) -> builtins.list[dict[str, Any]]:
    config = function.config if isinstance(function.config, dict) else {}
    bindings = config.get("bindings") or []
    return [binding for binding in bindings if isinstance(binding, dict)]


def _is_http(function: FunctionEnvelope) -> bool:
    return any(binding.get("type") == "httpTrigger" for binding in _bindings(function))


def _is_timer(function: FunctionEnvelope) -> bool:
    return any(binding.get("type") == "timerTrigger" for binding in _bindings(function))


def _function_name(function: FunctionEnvelope) -> str:
    return str(function.name or "").rsplit("/", 1)[-1]


# -- versions kept for rollback ---------------------------------------------------


@dataclass(frozen=True)
class Release:
    """What a publish makes live: the app zip's code and dependencies, and what its
    manifest and function_app.py declare (of a bundle being deployed, or a kept version)."""

    code_hash: str
    deps_hash: str
    qualname: str
    python: str
    triggers: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, bundle: Bundle) -> Release:
        manifest = bundle.manifest
        return cls(
            bundle.code_hash,
            bundle.deps_hash,
            manifest.function.qualname,
            manifest.python,
            tuple(dict(trigger) for trigger in manifest.triggers),
        )


@dataclass(frozen=True)
class KeptZip:
    """An app zip kept for rollback, named by its sha256 (checked when it is read back)."""

    sha256: str
    size: int

    @property
    def blob(self) -> str:
        return f"{VERSIONS_PREFIX}{self.sha256}.zip"


@dataclass(frozen=True)
class KeptVersion:
    """One deploy of a function app, as versions/{version}.json keeps it: the zip it
    published (or kept running) and the settings deploy manages (env=, the references of
    secrets=, timeout, memory, max_concurrency). Alert URLs are secrets: not kept."""

    version: str  # VERSION_ID_FORMAT
    code_hash: str
    deps_hash: str
    deployed_at: str  # ISO 8601, UTC
    deployed_by: str | None
    zip: KeptZip
    qualname: str
    python: str
    triggers: tuple[dict[str, Any], ...]  # what the zip's function_app.py declares
    output: str
    inputs: str | None
    timeout_seconds: int
    memory_mb: int  # the Flex instance size
    max_concurrency: int | None
    env: Mapping[str, str]
    secrets: Mapping[str, str]  # name -> Key Vault secret URL
    storage_account: str | None  # the account of az:// URLs when it was deployed

    @property
    def blob(self) -> str:
        return f"{VERSIONS_PREFIX}{self.version}.json"

    @property
    def release(self) -> Release:
        return Release(self.code_hash, self.deps_hash, self.qualname, self.python, self.triggers)

    def settings(self) -> dict[str, Any]:
        """Its settings keyed and rendered as ``AzureProvider.deployed`` reads them back."""
        return {
            "output": self.output,
            "inputs": self.inputs,
            "timeout": self.timeout_seconds,
            "memory": self.memory_mb,
            "python": self.python,
            "env": dict(self.env),
            "secrets": dict(self.secrets),
            "max concurrency": self.max_concurrency,
        }

    def as_version(self, *, live: bool) -> Version:
        return Version(
            self.version, self.code_hash, self.deps_hash, self.deployed_at, self.deployed_by, live
        )

    def to_json(self) -> bytes:
        record = {
            "format": VERSION_FORMAT,
            "version": self.version,
            "code_hash": self.code_hash,
            "deps_hash": self.deps_hash,
            "deployed_at": self.deployed_at,
            "deployed_by": self.deployed_by,
            "zip": {"sha256": self.zip.sha256, "size": self.zip.size},
            "qualname": self.qualname,
            "python": self.python,
            "triggers": list(self.triggers),
            "output": self.output,
            "inputs": self.inputs,
            "timeout_seconds": self.timeout_seconds,
            "memory_mb": self.memory_mb,
            "max_concurrency": self.max_concurrency,
            "env": dict(self.env),
            "secrets": dict(self.secrets),
            "storage_account": self.storage_account,
        }
        return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> KeptVersion:
        """The record in ``raw``; ValueError if it is not one deployer can read."""
        record = json.loads(raw)
        if not isinstance(record, dict) or record.get("format") != VERSION_FORMAT:
            found = record.get("format") if isinstance(record, dict) else None
            raise ValueError(f"format {found!r}, not {VERSION_FORMAT}")
        try:
            return cls(
                version=str(record["version"]),
                code_hash=str(record["code_hash"]),
                deps_hash=str(record["deps_hash"]),
                deployed_at=str(record["deployed_at"]),
                deployed_by=record.get("deployed_by"),
                zip=KeptZip(str(record["zip"]["sha256"]), int(record["zip"]["size"])),
                qualname=str(record["qualname"]),
                python=str(record["python"]),
                triggers=tuple(dict(trigger) for trigger in record["triggers"]),
                output=str(record["output"]),
                inputs=record.get("inputs"),
                timeout_seconds=int(record["timeout_seconds"]),
                memory_mb=int(record["memory_mb"]),
                max_concurrency=record.get("max_concurrency"),
                env=dict(record["env"]),
                secrets=dict(record["secrets"]),
                storage_account=record.get("storage_account"),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"no {error}") from None


@dataclass(frozen=True)
class KeptVersions:
    """What versions/ holds: the versions, oldest first, and the zips (blob name -> when
    it was written)."""

    versions: tuple[KeptVersion, ...] = ()
    zips: Mapping[str, datetime] = field(default_factory=dict)

    def adding(self, version: KeptVersion) -> KeptVersions:
        return KeptVersions((*self.versions, version), self.zips)


# -- steps -------------------------------------------------------------------


@dataclass(frozen=True)
class CreateStorage(Step):
    """The app's own storage account and its deployment container."""

    kind: ClassVar[str] = CREATE
    account: str = ""


@dataclass(frozen=True)
class Grant(Step):
    """A role for the app's identity on a scope (a storage account or container)."""

    kind: ClassVar[str] = UPDATE_CONFIG
    role: str = ""
    scope: str = ""


@dataclass(frozen=True)
class Revoke(Step):
    """A role deployer granted the app's identity that it no longer needs (inputs moved)."""

    kind: ClassVar[str] = UPDATE_CONFIG
    assignment_id: str = ""


@dataclass(frozen=True)
class DeleteAssignment(Step):
    kind: ClassVar[str] = DELETE
    assignment_id: str = ""


@dataclass(frozen=True)
class DeleteStorage(Step):
    kind: ClassVar[str] = DELETE
    account: str = ""


def _ships_zip(step: Step) -> bool:
    """Whether carrying out ``step`` means publishing the app zip."""
    if isinstance(step, (UpdateCode, TriggerStep)):
        return True
    return isinstance(step, UpdateConfig) and step.setting in ZIP_SETTINGS


class AzureProvider(BaseProvider):
    name = "azure"
    Options = AzureOptions
    function_noun = "function app"
    # The app zip vendors every dependency: nothing is taken from the worker's image.
    preinstalled = frozenset[str]()

    def __init__(
        self,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        location: str | None = None,
        storage_account: str | None = None,
    ) -> None:
        """Where function apps live (default: AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP,
        AZURE_LOCATION) and the storage account of ``az://`` URLs (default:
        AZURE_STORAGE_ACCOUNT_NAME)."""
        self._subscription_option = subscription_id
        self._resource_group_option = resource_group
        self._location_option = location
        self._storage_account_option = storage_account
        self._credential: Any = None
        self._clients: dict[str, Any] = {}
        self._accounts: dict[str, str] | None = None  # storage account name -> ARM id
        self._vaults: dict[str, dict[str, Any]] | None = None  # key vault name -> the vault
        # Function name -> its deployment container, where its versions are kept.
        self._version_containers: dict[str, ContainerClient] = {}

    # -- configuration, credentials, clients ---------------------------------------

    @property
    def subscription(self) -> str:
        subscription = self._subscription_option or os.environ.get(SUBSCRIPTION_VARIABLE)
        if not subscription:
            raise ConfigError(NO_SUBSCRIPTION)
        return subscription

    @property
    def resource_group(self) -> str:
        group = self._resource_group_option or os.environ.get(RESOURCE_GROUP_VARIABLE)
        if not group:
            raise ConfigError(NO_RESOURCE_GROUP)
        return group

    @property
    def location(self) -> str:
        location = self._location_option or os.environ.get(LOCATION_VARIABLE)
        if not location:
            raise ConfigError(NO_LOCATION)
        return location

    @property
    def data_account(self) -> str | None:
        return self._storage_account_option or os.environ.get(STORAGE_ACCOUNT_VARIABLE) or None

    @property
    def where(self) -> str:
        return f"on azure in resource group {self.resource_group}"

    @property
    def _arm_url(self) -> str:
        return (os.environ.get(ARM_URL_VARIABLE) or ARM_URL).rstrip("/")

    @property
    def _scope(self) -> str:
        # The audience of ARM tokens is ARM's own URL (another cloud's, its own).
        return f"{self._arm_url}/.default"

    @property
    def credential(self) -> Any:
        if self._credential is None:
            self._credential = DefaultAzureCredential()
        return self._credential

    def _token(self) -> str:
        """An ARM token (also what Kudu accepts for a publish); no credentials: ConfigError."""
        try:
            token: str = self.credential.get_token(self._scope).token
        except ClientAuthenticationError:
            raise ConfigError(NO_CREDENTIALS) from None
        return token

    def _client(self, kind: str, factory: Callable[..., T]) -> T:
        if kind not in self._clients:
            self._clients[kind] = factory(
                self.credential,
                self.subscription,
                base_url=self._arm_url,
                credential_scopes=[self._scope],
            )
        client: T = self._clients[kind]
        return client

    @property
    def web(self) -> WebSiteManagementClient:
        return self._client("web", WebSiteManagementClient)

    @property
    def storage(self) -> StorageManagementClient:
        return self._client("storage", StorageManagementClient)

    @property
    def authorization(self) -> AuthorizationManagementClient:
        return self._client("authorization", AuthorizationManagementClient)

    def require_access(self) -> None:
        """Subscription, resource group and credentials, named when missing, before any request."""
        _ = self.subscription
        _ = self.resource_group
        self._token()

    def require_python(self, python: str) -> None:
        azure_platform(python)

    @contextmanager
    def _azure_errors(self, action: str) -> Iterator[None]:
        """Turn an Azure error into one that says what was being done, and what to do."""
        try:
            yield
        except ClientAuthenticationError:
            raise ConfigError(NO_CREDENTIALS) from None
        except HttpResponseError as error:
            code = _error_code(error)
            if code == "ResourceGroupNotFound":
                raise ConfigError(
                    f"resource group {self.resource_group!r} does not exist in subscription "
                    f"{self.subscription}: create it (`az group create --name "
                    f"{self.resource_group} --location <location>`) or configure another"
                ) from None
            if code in ("AuthorizationFailed", "LinkedAuthorizationFailed") or (
                error.status_code == 403
            ):
                raise ProviderError(
                    f"{action}: permission denied ({_error_message(error)}): {PERMISSIONS}"
                ) from None
            raise ProviderError(f"{action} failed: {_error_message(error)}") from None
        except (ServiceRequestError, requests.RequestException) as error:
            raise ProviderError(f"{action} failed: {error}") from None

    # -- names and state ---------------------------------------------------------

    def app(self, name: str) -> str:
        return app_name(name, self.subscription, self.resource_group)

    def host_account(self, name: str) -> str:
        return storage_account_name(name, self.subscription, self.resource_group)

    def _site(self, name: str) -> Site | None:
        app = self.app(name)
        with self._azure_errors(f"reading function app {app}"):
            try:
                site: Site = self.web.web_apps.get(self.resource_group, app)
            except ResourceNotFoundError as error:
                if _error_code(error) == "ResourceGroupNotFound":
                    raise
                return None
        return site

    @staticmethod
    def _owned(tags: Mapping[str, str] | None, name: str) -> bool:
        tags = tags or {}
        return tags.get(MANAGED_BY_TAG) == MANAGED_BY and tags.get(NAME_TAG) == name

    def _functions(self, name: str) -> builtins.list[FunctionEnvelope]:
        app = self.app(name)
        with self._azure_errors(f"listing the functions of {app}"):
            return list(self.web.web_apps.list_functions(self.resource_group, app))

    def _http_function(self, name: str) -> FunctionEnvelope | None:
        """The app's HTTP function (every app has one: with no Http trigger, only the
        master key may call it, which is how ``deployer invoke`` runs it)."""
        return next((f for f in self._functions(name) if _function_name(f) == HTTP_FUNCTION), None)

    def _state(self, site: Site) -> DeploymentState:
        tags = site.tags or {}
        name = tags[NAME_TAG]
        triggers = _triggers_of(tags)
        url = None
        if _http_trigger(triggers) is not None:
            function = self._http_function(name)
            url = function.invoke_url_template if function is not None else None
        modified = site.last_modified_time_utc
        return DeploymentState(
            name=name,
            provider=self.name,
            url=url,
            code_hash=tags.get(CODE_HASH_TAG, ""),
            deps_hash=tags.get(DEPS_HASH_TAG, ""),
            output=tags.get(OUTPUT_TAG, ""),
            inputs=tags.get(INPUTS_TAG) or None,
            triggers=tuple(triggers),
            deployed_at=modified.isoformat() if modified else "",
            qualname=tags.get(QUALNAME_TAG, ""),
        )

    def get(self, name: str) -> DeploymentState | None:
        site = self._site(name)
        if site is None or not self._owned(site.tags, name):
            return None
        return self._state(site)

    def list(self) -> builtins.list[DeploymentState]:
        with self._azure_errors(f"listing the function apps of {self.resource_group}"):
            sites = list(self.web.web_apps.list_by_resource_group(self.resource_group))
        return [
            self._state(site)
            for site in sites
            if (site.tags or {}).get(MANAGED_BY_TAG) == MANAGED_BY
            and (site.tags or {}).get(NAME_TAG)
        ]

    def deployed(self, name: str) -> Deployed | None:
        site = self._site(name)
        if site is None:
            return None
        if not self._owned(site.tags, name):
            raise ProviderError(
                f"a function app named {site.name!r} exists in resource group "
                f"{self.resource_group} but was not deployed by deployer for {name!r} (its tags "
                "say so): deployer does not take over apps it did not make. Choose another "
                "name, or delete it yourself (`az functionapp delete --name "
                f"{site.name} --resource-group {self.resource_group}`)"
            )
        tags = site.tags or {}
        config = site.function_app_config or FunctionAppConfig()
        scale = config.scale_and_concurrency or FunctionsScaleAndConcurrency()
        runtime = config.runtime or FunctionsRuntime()
        timeout = tags.get(TIMEOUT_TAG, "")
        current = self._current_app_settings(site)
        references = secret_references(current)
        return Deployed(
            code_hash=tags.get(CODE_HASH_TAG, ""),
            deps_hash=tags.get(DEPS_HASH_TAG, ""),
            settings={
                "name": tags.get(NAME_TAG),
                "output": tags.get(OUTPUT_TAG),
                "inputs": tags.get(INPUTS_TAG) or None,
                "timeout": int(timeout) if timeout.isdigit() else timeout,
                "memory": scale.instance_memory_mb,
                "python": runtime.version,
                "env": user_environment(current, references),
                # A secret counts as deployed while its app setting holds its reference.
                "secrets": {
                    name: reference
                    for name, reference in references.items()
                    if current.get(name) == _reference_setting(name, reference)
                },
                "max concurrency": _max_concurrency(scale, tags),
            },
            triggers=tuple(_triggers_of(tags)),
        )

    def wanted_settings(self, spec: DeploySpec) -> dict[str, Any]:
        return {
            "name": spec.name,
            "output": spec.output,
            "inputs": spec.inputs,
            "timeout": spec.timeout_seconds,
            "memory": instance_memory(spec.memory_mb),
            "env": dict(spec.env),
            "secrets": dict(spec.secrets),
            "max concurrency": spec.max_concurrency,
        }

    # -- validation and artifacts (no network) ----------------------------------

    def default_output(self) -> str:
        raise ConfigError(
            "provider 'azure' needs output='az://<container>/<prefix>' (or "
            "abfs://<container>@<account>.dfs.core.windows.net/<prefix>): runs are written to "
            "Azure Blob Storage"
        )

    def platform(self, python: str) -> str | None:
        # The newest wheel tag the Functions image takes names the target (part of deps_hash).
        return azure_platform(python).platform_tags[0]

    def check(self, spec: DeploySpec) -> DeploySpec:
        """Everything that can be wrong is found here, before any request or upload."""
        from deployer.bundle import python_version

        runs_on = "an Azure Functions app (Flex Consumption)"
        if not _is_blob_url(spec.output):
            raise ConfigError(
                f"output {spec.output!r}: {runs_on} writes to Azure Blob Storage, so use "
                "output='az://<container>/<prefix>' or "
                "'abfs://<container>@<account>.dfs.core.windows.net/<prefix>'"
            )
        if spec.inputs is not None and not _is_blob_url(spec.inputs):
            raise ConfigError(
                f"inputs {spec.inputs!r}: {runs_on} reads from Azure Blob Storage, so upload "
                "the data set and pass inputs='az://<container>/<key>'"
            )
        for label, value in (("output", spec.output), ("inputs", spec.inputs)):
            if value is not None and len(value) > TAG_VALUE_LIMIT:
                raise ConfigError(
                    f"{label} {value[:60]!r}... is {len(value)} characters: deployer records "
                    f"it in a tag of the app, and Azure tag values hold at most "
                    f"{TAG_VALUE_LIMIT}; use a shorter path"
                )
        if spec.timeout_seconds > MAX_TIMEOUT_SECONDS:
            raise ConfigError(
                f"timeout {spec.timeout_seconds} s is over the {MAX_TIMEOUT_SECONDS} s "
                f"{runs_on} guarantees a run (Flex Consumption gives a run 60 minutes when the "
                f"app scales in): use timeout={MAX_TIMEOUT_SECONDS} or less"
            )
        if spec.memory_mb > INSTANCE_MEMORY_MB[-1]:
            raise ConfigError(
                f"memory {spec.memory_mb} MB is over the {INSTANCE_MEMORY_MB[-1]} MB of the "
                f"largest Flex Consumption instance: use memory={INSTANCE_MEMORY_MB[-1]} or less"
            )
        if spec.max_concurrency is not None and spec.max_concurrency > INSTANCE_COUNT_LIMIT:
            raise ConfigError(
                f"max_concurrency {spec.max_concurrency}: a Flex Consumption app runs on at most "
                f"{INSTANCE_COUNT_LIMIT} instances: use max_concurrency={INSTANCE_COUNT_LIMIT} or "
                "less"
            )
        self._check_settings(spec)
        azure_platform(python_version())
        for trigger in spec.triggers:
            if isinstance(trigger, (Cron, Every)):
                timer_schedule(trigger)  # TriggerError if the timer trigger cannot run it
        # No subscription, group or credentials here: building needs none (plan checks them).
        return spec

    @staticmethod
    def _check_settings(spec: DeploySpec) -> None:
        """env= and secrets= can be app settings of the app, and each secret is a URL."""
        seen: dict[str, str] = {}
        for what, pairs in (("env=", spec.env), ("secrets=", spec.secrets)):
            for name, _ in pairs:
                error = _setting_name_error(name, what)
                if error is not None:
                    raise ConfigError(error)
                # App setting names ignore case: DB_URL and db_url would be one setting.
                other = seen.setdefault(name.upper(), name)
                if other != name:
                    raise ConfigError(
                        f"{what}: {other} and {name} would be one app setting (Azure ignores "
                        "the case of their names): keep one"
                    )
        for name, reference in spec.secrets:
            secret_reference(name, reference)

    def write_artifacts(
        self, bundle: Bundle, directory: Path, reporter: Reporter
    ) -> builtins.list[Path]:
        """The app zip that deploy publishes."""
        path = directory / f"{bundle.name}-{bundle.code_hash[:12]}-app.zip"
        site_packages = install_app_dependencies(bundle, reporter)
        app_zip(bundle, site_packages, path)
        return [path]

    def _package(self, bundle: Bundle, reporter: Reporter) -> bytes:
        site_packages = install_app_dependencies(bundle, reporter)
        with tempfile.TemporaryDirectory(prefix="deployer-azure-") as directory:
            path = Path(directory) / "app.zip"
            app_zip(bundle, site_packages, path)
            return path.read_bytes()

    # -- access: the app identity's roles ------------------------------------------

    def _account_ids(self) -> dict[str, str]:
        """Storage account name -> ARM id, for every account of the subscription."""
        if self._accounts is None:
            with self._azure_errors(f"listing the storage accounts of {self.subscription}"):
                self._accounts = {
                    str(account.name): str(account.id)
                    for account in self.storage.storage_accounts.list()
                }
        return self._accounts

    def _container_scope(self, location: BlobLocation, url: str) -> str:
        account_id = self._account_ids().get(location.account)
        if account_id is None:
            raise ConfigError(
                f"{url!r}: storage account {location.account!r} is not in subscription "
                f"{self.subscription} (or this identity cannot see it): create it, or name "
                "the right one"
            )
        return f"{account_id}/blobServices/default/containers/{location.container}"

    # -- Key Vault: the secrets of secrets= (that they exist; never their values) ----

    def _key_vault_read(self, path: str, action: str) -> dict[str, Any] | None:
        """A GET of Microsoft.KeyVault's ARM API; None when there is nothing there.

        Sent through the storage client's pipeline (its credential, retries and
        endpoint): azure-mgmt-keyvault would be one more dependency for two reads.
        ARM answers a secret's metadata only: its value is the data plane's, which
        deployer never calls."""
        params = {} if "api-version=" in path else {"api-version": KEY_VAULT_API_VERSION}
        with self._azure_errors(action):
            response = self.storage.send_request(HttpRequest("GET", path, params=params))
            if response.status_code == 404:
                return None
            if response.status_code == 403:
                raise ProviderError(
                    f"{action}: permission denied: the identity you deploy with needs Reader on "
                    "the key vault (deployer looks up that the secret exists, never its value)"
                )
            response.raise_for_status()
            found: dict[str, Any] = response.json()
        return found

    def _key_vaults(self) -> dict[str, dict[str, Any]]:
        """Key vault name (lower case) -> the vault, for every vault of the subscription."""
        if self._vaults is None:
            vaults: dict[str, dict[str, Any]] = {}
            path = f"/subscriptions/{self.subscription}/providers/Microsoft.KeyVault/vaults"
            while path:
                page = self._key_vault_read(
                    path, f"listing the key vaults of subscription {self.subscription}"
                )
                for vault in (page or {}).get("value") or []:
                    vaults[str(vault.get("name", "")).lower()] = vault
                path = str((page or {}).get("nextLink") or "")
            self._vaults = vaults
        return self._vaults

    def _secret_scope(self, name: str, reference: SecretReference) -> str:
        """The ARM id of the secret variable ``name`` refers to: the scope of the app
        identity's Key Vault Secrets User role. ConfigError, naming it, when the vault
        or the secret is missing, or the vault ignores Azure RBAC."""
        vault = self._key_vaults().get(reference.vault)
        if vault is None:
            raise ConfigError(
                f"secrets=: {name}: key vault {reference.vault!r} is not in subscription "
                f"{self.subscription} (or the identity you deploy with cannot see it): create "
                f"it (`az keyvault create --name {reference.vault} --resource-group <group> "
                "--enable-rbac-authorization true`), or name the vault the secret is in"
            )
        if not (vault.get("properties") or {}).get("enableRbacAuthorization"):
            raise ConfigError(
                f"secrets=: {name}: key vault {reference.vault} grants access through access "
                "policies, which ignore the role deployer gives the app's identity on the "
                f"secret: switch it to Azure RBAC (`az keyvault update --name {reference.vault} "
                "--enable-rbac-authorization true`; its access policies then stop applying)"
            )
        path = f"{vault['id']}/secrets/{reference.secret}"
        secret = self._key_vault_read(
            path, f"looking up secret {reference.secret} of key vault {reference.vault}"
        )
        if secret is None:
            raise ConfigError(
                f"secrets=: {name}: key vault {reference.vault} has no secret "
                f"{reference.secret!r}: add it (`az keyvault secret set --vault-name "
                f"{reference.vault} --name {reference.secret} --file <file>`), or name the "
                "right one"
            )
        attributes = (secret.get("properties") or {}).get("attributes") or {}
        if attributes.get("enabled") is False:
            raise ConfigError(
                f"secrets=: {name}: secret {reference.secret} of key vault {reference.vault} is "
                "disabled, and the platform cannot read it: enable it (`az keyvault secret "
                f"set-attributes --vault-name {reference.vault} --name {reference.secret} "
                "--enabled true`)"
            )
        return str(secret.get("id") or path)

    def _host_account_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.Storage/storageAccounts/{self.host_account(name)}"
        )

    def _wanted_roles(self, spec: DeploySpec) -> builtins.list[tuple[str, str, str]]:
        """(role, scope, what it is for, in words) the app's identity needs."""
        account = self.host_account(spec.name)
        wanted = [
            (BLOB_OWNER, self._host_account_id(spec.name), f"its own storage account {account}")
        ]
        output = blob_location(spec.output, self.data_account)
        output_scope = self._container_scope(output, spec.output)
        # The narrowest scope Azure's data-plane RBAC offers is a container: the
        # function may write all of it, not only {output}/{name}/.
        wanted.append(
            (
                BLOB_CONTRIBUTOR,
                output_scope,
                f"container {output.container} of storage account {output.account} (output)",
            )
        )
        if spec.inputs is not None:
            inputs = blob_location(spec.inputs, self.data_account)
            inputs_scope = self._container_scope(inputs, spec.inputs)
            if inputs_scope.lower() != output_scope.lower():  # Contributor already reads
                wanted.append(
                    (
                        BLOB_READER,
                        inputs_scope,
                        f"container {inputs.container} of storage account {inputs.account} "
                        "(inputs)",
                    )
                )
        for name, reference in spec.secrets:
            secret = secret_reference(name, reference)
            scope = self._secret_scope(name, secret)
            if any(role == SECRETS_USER and s.lower() == scope.lower() for role, s, _ in wanted):
                continue  # two variables of one secret
            wanted.append(
                (SECRETS_USER, scope, f"secret {secret.secret} of key vault {secret.vault}")
            )
        return wanted

    def _role_definition(self, role: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/providers/Microsoft.Authorization/"
            f"roleDefinitions/{ROLE_IDS[role]}"
        )

    def _assignments(self, principal: str) -> dict[str, Any]:
        """Id -> role assignment deployer made for ``principal`` (names it derived)."""
        with self._azure_errors("listing the app identity's role assignments"):
            found = list(
                self.authorization.role_assignments.list_for_subscription(
                    filter=f"principalId eq '{principal}'"
                )
            )
        mine = {}
        for assignment in found:
            role = next(
                (
                    role
                    for role, role_id in ROLE_IDS.items()
                    if str(assignment.role_definition_id or "").lower().endswith(role_id)
                ),
                None,
            )
            if role is None:
                continue
            if assignment.name == assignment_name(principal, role, str(assignment.scope)):
                mine[str(assignment.id)] = assignment
        return mine

    def _access_steps(self, spec: DeploySpec, principal: str | None) -> builtins.list[Step]:
        wanted = self._wanted_roles(spec)
        existing = self._assignments(principal) if principal else {}
        have = {
            (str(a.scope).lower(), str(a.role_definition_id).lower().rsplit("/", 1)[-1])
            for a in existing.values()
        }
        steps: list[Step] = []
        for role, scope, what in wanted:
            if (scope.lower(), ROLE_IDS[role]) not in have:
                steps.append(Grant(f"grant {role} on {what} to the app's identity", role, scope))
        wanted_keys = {(scope.lower(), ROLE_IDS[role]) for role, scope, _ in wanted}
        for assignment_id, assignment in existing.items():
            key = (
                str(assignment.scope).lower(),
                str(assignment.role_definition_id).lower().rsplit("/", 1)[-1],
            )
            if key not in wanted_keys:
                steps.append(
                    Revoke(
                        f"revoke the app identity's role on {assignment.scope} (no longer needed)",
                        assignment_id=assignment_id,
                    )
                )
        return steps

    # -- plan ----------------------------------------------------------------------

    def _owned_account(self, name: str) -> Any:
        """The app's storage account when deployer made it for ``name``; None when absent.

        One with that name that deployer did not make is never adopted."""
        account_name = self.host_account(name)
        with self._azure_errors(f"reading storage account {account_name}"):
            try:
                account = self.storage.storage_accounts.get_properties(
                    self.resource_group, account_name
                )
            except ResourceNotFoundError as error:
                if _error_code(error) == "ResourceGroupNotFound":
                    raise
                return None
        tags = account.tags or {}
        if tags.get(MANAGED_BY_TAG) != MANAGED_BY or tags.get(NAME_TAG) != name:
            raise ProviderError(
                f"storage account {account_name} exists in resource group {self.resource_group} "
                f"but was not made by deployer for {name!r} (its tags say so): deployer does not "
                "take over resources it did not make; delete it yourself or deploy under "
                "another name"
            )
        return account

    def _require_names_free(self, name: str, *, site: bool, account: bool) -> None:
        """The global names deployer will create are not someone else's."""
        if site:
            app = self.app(name)
            with self._azure_errors(f"checking that the app name {app} is free"):
                answer = self.web.check_name_availability(name=app, type="Microsoft.Web/sites")
            if not answer.name_available:
                raise ConfigError(
                    f"the function app name {app} (derived from {name!r} and this subscription "
                    f"and resource group) is taken elsewhere in Azure ({answer.message}): "
                    "deploy under another name"
                )
        if account:
            account_name = self.host_account(name)
            with self._azure_errors(f"checking that storage account name {account_name} is free"):
                result = self.storage.storage_accounts.check_name_availability(
                    StorageAccountCheckNameAvailabilityParameters(name=account_name)
                )
            if not result.name_available:
                raise ConfigError(
                    f"the storage account name {account_name} (derived from {name!r}) is taken "
                    f"elsewhere in Azure ({result.message}): deploy under another name"
                )

    def plan(self, bundle: Bundle, spec: DeploySpec) -> Plan:
        self.require_python(bundle.manifest.python)
        self.require_access()
        app = self.app(spec.name)
        observed = self.observe(spec.name)
        deployed = self.deployed(spec.name)  # a foreign app stops the plan here
        account = self._owned_account(spec.name)  # and a foreign storage account
        site = self._site(spec.name) if deployed is not None else None
        python = bundle.manifest.python
        steps: list[Step] = []
        if account is None or site is None:
            _ = self.location  # named when missing, before anything is made
            self._require_names_free(spec.name, site=site is None, account=account is None)
        if account is None:
            steps.append(
                CreateStorage(
                    f"storage account {self.host_account(spec.name)} in {self.location} (the "
                    f"app's host storage and its deployment container {DEPLOYMENT_CONTAINER})",
                    account=self.host_account(spec.name),
                )
            )
        principal = None
        if site is None:
            steps.append(
                CreateFunction(
                    f"function app {app} on a Flex Consumption plan in {self.location} (Python "
                    f"{python}, {instance_memory(spec.memory_mb)} MB instances, its own "
                    "managed identity)"
                )
            )
        else:
            principal = site.identity.principal_id if site.identity else None
        steps += self._access_steps(spec, principal)
        if site is None or deployed is None:  # (both or neither)
            steps.append(
                UpdateCode(
                    f"publish the app zip ({bundle.code_hash[:12]}, dependencies "
                    f"{bundle.deps_hash[:12]} vendored; no remote build)"
                )
            )
            existing: builtins.list[dict[str, Any]] = []
        else:
            current_python = deployed.settings.get("python")
            if current_python != python:
                steps.append(
                    UpdateConfig(f"python: {current_python!r} -> {python!r}", setting="python")
                )
            for step in self.function_steps(deployed, bundle, spec):
                if isinstance(step, UpdateConfig) and step.setting in ZIP_SETTINGS:
                    step = replace(
                        step, description=f"{step.description} (in the app zip: published again)"
                    )
                elif isinstance(step, UpdateCode):
                    step = replace(step, description=f"publish the app zip: {step.description}")
                steps.append(step)
            existing = list(deployed.triggers)
        for step in trigger_changes(list(bundle.manifest.triggers), existing):
            note = (
                "function_app.py declares it: in the published app zip"
                if site is None
                else "function_app.py declares the triggers: the app zip is published again"
            )
            steps.append(replace(step, description=f"{step.description} ({note})"))
        return self.make_plan(bundle, spec, steps, observed)

    # -- apply ---------------------------------------------------------------------

    def execute(self, plan: Plan, reporter: Reporter) -> DeploymentState:
        bundle, spec = plan.bundle, plan.spec
        assert bundle is not None and spec is not None
        release = Release.of(bundle)
        # The zip is built before any request: a wheel that cannot be installed
        # for the Azure image stops the deploy with nothing changed.
        package = self._package(bundle, reporter) if any(map(_ships_zip, plan.steps)) else None
        site = self._site(spec.name)
        storage_exists = not plan.of_type(CreateStorage)
        # The versions kept so far, and the one live now, read before anything
        # changes: Blob Storage refusing the deploying identity stops here.
        kept = self._kept(spec.name) if storage_exists else KeptVersions()
        was_live = self._live_version(kept, self.deployed(spec.name)) if kept.versions else None
        # The zip is kept before it is published: a rollback never lacks the zip of a
        # version that went live, and one that cannot be kept changes nothing live.
        zip_kept = None
        if package is not None and storage_exists:
            zip_kept = self._keep_zip(spec.name, package, reporter)
        published = False
        for step in plan.steps:
            if isinstance(step, CreateStorage):
                self._create_storage(spec.name, reporter)
                if package is not None:
                    zip_kept = self._keep_zip(spec.name, package, reporter)
            elif isinstance(step, CreateFunction):
                site = self._create_app(spec, release, reporter)
            elif isinstance(step, Grant):
                assert site is not None
                self._grant(site, step, reporter)
            elif isinstance(step, Revoke):
                self._revoke(step.assignment_id, reporter)
            elif isinstance(step, UpdateConfig) and step.setting in SITE_SETTINGS:
                assert site is not None
                # Before the zip: a new Python's wheels need the new worker.
                site = self._put_site(spec, release, site, tags=dict(site.tags or {}))
                reporter.say(f"{spec.name}: {step.description}")
            elif _ships_zip(step) and not published:
                assert site is not None and package is not None
                self._publish(spec, release, site, package, reporter)
                published = True
        assert site is not None
        # Recorded before the tags claim it: a failure in between leaves tags that
        # name the code before, so the next deploy publishes and records again.
        # A deploy that publishes nothing (a setting) runs the zip of the version before.
        running = zip_kept if zip_kept is not None else was_live.zip if was_live else None
        version = self._record_version(spec, release, running)
        if version is None:
            reporter.say(
                f"{spec.name}: this deploy is not kept for rollback: it changed settings only, "
                "and the app zip it runs was published before deployer kept versions (the next "
                "deploy of new code is kept)"
            )
        # Last, and only now: the tags say what runs, and the settings follow.
        tags = self._tags(spec, release, current=dict(site.tags or {}), published=published)
        current = self._current_app_settings(site)
        settings = self._merged_app_settings(spec, current)
        if tags != dict(site.tags or {}) or settings != current:
            site = self._put_site(spec, release, site, tags=tags, settings=settings)
        if version is not None:
            self._prune(spec.name, kept.adding(version), spec.keep_versions, was_live, reporter)
        state = self.get(spec.name)
        assert state is not None
        return state

    def _tags(
        self, spec: DeploySpec, release: Release, *, current: dict[str, str], published: bool
    ) -> dict[str, str]:
        """The app's tags: the user's own kept; deployer's describe what runs.

        Code, dependencies and triggers are claimed only once a publish of them
        succeeded (``published``); until then they stay what they were."""
        tags = {
            key: value
            for key, value in current.items()
            if key != MANAGED_BY_TAG and not key.startswith("deployer-")
        }
        tags[MANAGED_BY_TAG] = MANAGED_BY
        tags[NAME_TAG] = spec.name
        tags[OUTPUT_TAG] = spec.output
        if spec.inputs:
            tags[INPUTS_TAG] = spec.inputs
        tags[TIMEOUT_TAG] = str(spec.timeout_seconds)
        if spec.max_concurrency is not None:
            tags[MAX_CONCURRENCY_TAG] = str(spec.max_concurrency)
        if published:
            tags[CODE_HASH_TAG] = release.code_hash
            tags[DEPS_HASH_TAG] = release.deps_hash
            tags[QUALNAME_TAG] = release.qualname[:TAG_VALUE_LIMIT]
            for trigger in release.triggers:
                tags[trigger_tag(trigger)] = json.dumps(trigger, sort_keys=True)
        else:
            for key in (CODE_HASH_TAG, DEPS_HASH_TAG, QUALNAME_TAG):
                tags[key] = current.get(key, "")
            for key, value in current.items():
                if key.startswith(TRIGGER_TAG_PREFIX):
                    tags[key] = value
        return tags

    def _wanted_app_settings(self, spec: DeploySpec, *, secrets: bool = True) -> dict[str, str]:
        """What the runtime, the Functions host and the user's function read from the
        app's settings: deployer's own, env=, and (unless ``secrets`` is False) a Key
        Vault reference per secret, with DEPLOYER_MANAGED naming the user's."""
        settings = {
            # The host's storage through the app's identity: no key anywhere.
            "AzureWebJobsStorage__accountName": self.host_account(spec.name),
            ENVIRONMENT_NAME: spec.name,
            ENVIRONMENT_OUTPUT: spec.output,
        }
        if spec.inputs:
            settings[ENVIRONMENT_INPUTS] = spec.inputs
        if self.data_account:
            # The account of az:// URLs, as runtimes/storage.py reads it.
            settings[STORAGE_ACCOUNT_SETTING] = self.data_account
        settings.update(own_variables(spec, secrets=secrets))
        names = [name for name, _ in spec.env]
        if secrets and spec.secrets:
            for name, reference in spec.secrets:
                settings[name] = secret_reference(name, reference).setting
            names += [name for name, _ in spec.secrets]
        return merged_environment({}, settings, names)

    def _current_app_settings(self, site: Site) -> dict[str, str]:
        with self._azure_errors(f"reading the app settings of {site.name}"):
            found = self.web.web_apps.list_application_settings(self.resource_group, site.name)
        return dict(found.properties or {})

    def _merged_app_settings(self, spec: DeploySpec, current: Mapping[str, str]) -> dict[str, str]:
        """Settings someone else put on the app (the portal's, Application Insights')
        are kept; deployer's own and the user's are exactly the wanted: one the user
        no longer wants goes (DEPLOYER_MANAGED of ``current`` names them)."""
        others = {
            key: value
            for key, value in current.items()
            if not key.startswith(HOST_SETTING_PREFIXES) and key != STORAGE_ACCOUNT_SETTING
        }
        wanted = self._wanted_app_settings(spec)
        user_names = [name for name, _ in (*spec.env, *spec.secrets)]
        return merged_environment(others, wanted, user_names)

    def _site_resource(
        self,
        spec: DeploySpec,
        release: Release,
        settings: Mapping[str, str],
        tags: Mapping[str, str],
        location: str,
    ) -> Site:
        app = self.app(spec.name)
        account = self.host_account(spec.name)
        plan_id = (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.Web/serverfarms/{app}"
        )
        return Site(
            location=location,
            kind="functionapp,linux",
            tags=dict(tags),
            identity=ManagedServiceIdentity(type="SystemAssigned"),
            server_farm_id=plan_id,
            reserved=True,
            https_only=True,
            site_config=SiteConfig(
                app_settings=[NameValuePair(name=k, value=v) for k, v in sorted(settings.items())],
                min_tls_version="1.2",
                ftps_state="Disabled",
            ),
            function_app_config=FunctionAppConfig(
                deployment=FunctionsDeployment(
                    storage=FunctionsDeploymentStorage(
                        type="blobContainer",
                        value=f"https://{account}.blob.core.windows.net/{DEPLOYMENT_CONTAINER}",
                        # The app reads its package as itself: Storage Blob Data
                        # Owner on its account (a grant of this plan) covers it.
                        authentication=FunctionsDeploymentStorageAuthentication(
                            type="SystemAssignedIdentity"
                        ),
                    )
                ),
                runtime=FunctionsRuntime(name="python", version=release.python),
                scale_and_concurrency=_scale(spec),
            ),
        )

    def _put_site(
        self,
        spec: DeploySpec,
        release: Release,
        site: Site,
        *,
        tags: Mapping[str, str],
        settings: Mapping[str, str] | None = None,
    ) -> Site:
        """One update of the app: its whole configuration, as ``az functionapp update``
        does (read, change, PUT): Flex settings, app settings (the user's kept), tags."""
        if settings is None:
            settings = self._merged_app_settings(spec, self._current_app_settings(site))
        resource = self._site_resource(spec, release, settings, tags, str(site.location))
        with self._azure_errors(f"updating function app {site.name}"):
            poller = self.web.web_apps.begin_create_or_update(
                self.resource_group, str(site.name), resource
            )
            updated: Site = poller.result()
        return updated

    def _create_storage(self, name: str, reporter: Reporter) -> None:
        account = self.host_account(name)
        tags = {MANAGED_BY_TAG: MANAGED_BY, NAME_TAG: name, APP_TAG: self.app(name)}
        with (
            self._azure_errors(f"creating storage account {account}"),
            reporter.status(f"creating storage account {account}"),
        ):
            self.storage.storage_accounts.begin_create(
                self.resource_group,
                account,
                StorageAccountCreateParameters(
                    sku=Sku(name="Standard_LRS"),
                    kind="StorageV2",
                    location=self.location,
                    tags=tags,
                    properties=StorageAccountPropertiesCreateParameters(
                        # Identity only: the host and the deployment use the app's identity.
                        allow_shared_key_access=False,
                        allow_blob_public_access=False,
                        minimum_tls_version="TLS1_2",
                    ),
                ),
            ).result()
        with self._azure_errors(f"creating container {DEPLOYMENT_CONTAINER} in {account}"):
            self.storage.blob_containers.create(
                self.resource_group, account, DEPLOYMENT_CONTAINER, BlobContainer()
            )
        reporter.say(f"created storage account {account} and its {DEPLOYMENT_CONTAINER} container")

    def _create_app(self, spec: DeploySpec, release: Release, reporter: Reporter) -> Site:
        app = self.app(spec.name)
        owner = {MANAGED_BY_TAG: MANAGED_BY, NAME_TAG: spec.name, APP_TAG: app}
        with (
            self._azure_errors(f"creating the Flex Consumption plan {app}"),
            reporter.status(f"creating the Flex Consumption plan {app}"),
        ):
            # Flex Consumption hosts one app per plan.
            self.web.app_service_plans.begin_create_or_update(
                self.resource_group,
                app,
                AppServicePlan(
                    location=self.location,
                    kind="functionapp",
                    reserved=True,  # Linux
                    sku=SkuDescription(name="FC1", tier="FlexConsumption"),
                    tags=owner,
                ),
            ).result()
        tags = self._tags(spec, release, current={}, published=False)
        # Without the secrets: the platform resolves their references when the app
        # starts, and its identity is granted them only once it exists. The last
        # update of this deploy sets them, and restarts the app.
        settings = self._wanted_app_settings(spec, secrets=False)
        resource = self._site_resource(spec, release, settings, tags, self.location)
        with (
            self._azure_errors(f"creating function app {app}"),
            reporter.status(f"creating function app {app}"),
        ):
            site: Site = self.web.web_apps.begin_create_or_update(
                self.resource_group, app, resource
            ).result()
        reporter.say(f"created function app {app} (Flex Consumption, {self.location})")
        return site

    def _grant(self, site: Site, step: Grant, reporter: Reporter) -> None:
        principal = site.identity.principal_id if site.identity else None
        if not principal:
            raise ProviderError(
                f"function app {site.name} has no managed identity to grant {step.role} to: "
                "deploy again"
            )
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=self._role_definition(step.role),
            principal_id=principal,
            # Said outright: a principal made a moment ago may not have reached
            # every Entra ID replica yet, and ARM would fail to look it up.
            principal_type="ServicePrincipal",
            description=f"deployer: {site.name}",
        )
        name = assignment_name(principal, step.role, step.scope)
        deadline = time.monotonic() + PRINCIPAL_SETTLE_SECONDS
        delay = 0.5
        with self._azure_errors(f"granting {step.role} to {site.name}'s identity"):
            while True:
                try:
                    self.authorization.role_assignments.create(step.scope, name, parameters)
                    break
                except HttpResponseError as error:
                    if _error_code(error) == "RoleAssignmentExists":
                        break  # made by the try that failed to answer
                    if _error_code(error) != "PrincipalNotFound" or (
                        time.monotonic() + delay > deadline
                    ):
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        reporter.say(step.description)

    def _revoke(self, assignment_id: str, reporter: Reporter) -> None:
        with self._azure_errors(f"deleting role assignment {assignment_id}"):
            self.authorization.role_assignments.delete_by_id(assignment_id)
        reporter.say(f"revoked {assignment_id}")

    # -- publishing ------------------------------------------------------------------

    def _scm_url(self, site: Site) -> str:
        template = os.environ.get(SCM_URL_VARIABLE)
        if template:
            return template.format(app=site.name).rstrip("/")
        names: builtins.list[str] = list(site.enabled_host_names or [])
        host = next(
            (name for name in names if ".scm." in name), f"{site.name}.scm.azurewebsites.net"
        )
        return f"https://{host}"

    def _publish(
        self, spec: DeploySpec, release: Release, site: Site, package: bytes, reporter: Reporter
    ) -> None:
        """OneDeploy the zip without a remote build, wait for Kudu, then for the host
        to list the functions (Kudu says "success" also when the host loads nothing)."""
        scm = self._scm_url(site)
        headers = {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/zip"}
        deadline = time.monotonic() + PUBLISH_BUSY_SECONDS
        delay = 0.5
        with reporter.status(
            f"publishing the app zip ({len(package) / 1e6:.1f} MB) to {site.name}"
        ):
            while True:
                try:
                    response = requests.post(
                        f"{scm}/api/publish",
                        params={"RemoteBuild": "false"},
                        data=package,
                        headers=headers,
                        timeout=UPLOAD_TIMEOUT_SECONDS,
                    )
                except requests.RequestException as error:
                    raise ProviderError(
                        f"publishing the app zip to {site.name} failed: {error}"
                    ) from None
                # 409: another deployment of this app is running; Kudu takes one at a time.
                if response.status_code != 409 or time.monotonic() + delay > deadline:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
            if response.status_code not in (200, 202):
                raise ProviderError(
                    f"publishing the app zip to {site.name} failed: HTTP {response.status_code} "
                    f"{response.text[:300]}"
                )
            self._wait_for_deployment(site, scm, headers)
        self._wait_for_functions(spec, release, site)
        reporter.say(f"published the app zip ({release.code_hash[:12]}) to {site.name}")

    def _wait_for_deployment(self, site: Site, scm: str, headers: Mapping[str, str]) -> None:
        deadline = time.monotonic() + DEPLOYMENT_TIMEOUT_SECONDS
        delay = 0.25
        while True:
            try:
                response = requests.get(
                    f"{scm}/api/deployments/latest",
                    headers={"Authorization": headers["Authorization"]},
                    timeout=60,
                )
            except requests.RequestException as error:
                raise ProviderError(
                    f"reading the deployment of {site.name} failed: {error}"
                ) from None
            deployment = response.json() if response.ok else {}
            # Kudu's statuses: 0 pending, 1 building, 2 deploying, 3 failed, 4 success.
            if deployment.get("complete") and deployment.get("status") == 4:
                return
            if deployment.get("status") == 3:
                raise ProviderError(
                    f"the deployment of the app zip to {site.name} failed: "
                    f"{deployment.get('status_text') or 'see its log'} ({scm}/api/deployments/"
                    f"{deployment.get('id', 'latest')}/log)"
                )
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"the deployment of the app zip to {site.name} is not done after "
                    f"{DEPLOYMENT_TIMEOUT_SECONDS // 60} minutes: see {scm}/api/deployments/latest"
                )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _wait_for_functions(self, spec: DeploySpec, release: Release, site: Site) -> None:
        # function_app.py declares the HTTP function and one timer per schedule.
        timers = sum(1 for trigger in release.triggers if is_schedule(trigger))
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
        delay = 0.5
        while True:
            functions = self._functions(spec.name)
            has_http = any(_function_name(f) == HTTP_FUNCTION and _is_http(f) for f in functions)
            if has_http and sum(map(_is_timer, functions)) == timers:
                return
            if time.monotonic() + delay > deadline:
                listed = ", ".join(sorted(map(_function_name, functions))) or "none"
                raise ProviderError(
                    f"the app zip was published to {site.name}, but the Functions host lists "
                    f"{listed} of its functions after {REGISTRATION_TIMEOUT_SECONDS} s: it could "
                    "not load function_app.py, most often a dependency missing from "
                    ".python_packages or built for another platform. Flex Consumption keeps only "
                    "the current package, so the app serves nothing until a deploy succeeds; the "
                    "app's tags still name the previous code, so deploying again publishes again. "
                    "See the host's errors in Application Insights, or `az functionapp "
                    f"log deployment show --name {site.name} --resource-group "
                    f"{self.resource_group}`"
                )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    # -- versions and rollback --------------------------------------------------------

    def _versions_container(self, name: str) -> ContainerClient:
        """The app's deployment container, on the blob endpoint ARM names for its account."""
        if name not in self._version_containers:
            account = self._owned_account(name)
            if account is None:
                raise ProviderError(
                    f"storage account {self.host_account(name)} of {name} is gone, and the "
                    "versions kept there with it: deploy again"
                )
            endpoints = account.primary_endpoints
            endpoint = (endpoints.blob if endpoints is not None else None) or (
                f"https://{account.name}.blob.core.windows.net/"
            )
            service = BlobServiceClient(account_url=endpoint, credential=self.credential)
            self._version_containers[name] = service.get_container_client(DEPLOYMENT_CONTAINER)
        return self._version_containers[name]

    @contextmanager
    def _blob_errors(self, name: str, action: str) -> Iterator[None]:
        """Blob Storage's errors, said as what was being done and what to do."""
        try:
            yield
        except HttpResponseError as error:
            if error.status_code == 403:
                raise ProviderError(self._blob_refusal(name, action, error)) from None
            if isinstance(error, ClientAuthenticationError):
                raise ConfigError(NO_CREDENTIALS) from None
            message = str(error.message or error).splitlines()[0]
            raise ProviderError(f"{action} failed: {message}") from None
        except ServiceRequestError as error:
            raise ProviderError(f"{action} failed: {error}") from None

    def _blob_refusal(self, name: str, action: str, error: HttpResponseError) -> str:
        code = getattr(error, "error_code", None) or "HTTP 403"
        _, object_id = self._caller()
        return (
            f"{action}: Blob Storage refused the identity you deploy with ({code}). deployer "
            f"keeps each deployed version of {name}'s app zip, for `deployer rollback`, in "
            f"container {DEPLOYMENT_CONTAINER} of the storage account it made for it, "
            f"{self.host_account(name)}, which takes a data role that Contributor and Owner do "
            "not give. Give it once for the resource group (it covers every function deployed "
            'there): `az role assignment create --role "Storage Blob Data Contributor" '
            f"--assignee {object_id or '<your object id>'} --scope /subscriptions/"
            f"{self.subscription}/resourceGroups/{self.resource_group}`, then try again (a new "
            "role takes a few minutes to apply)"
        )

    def _caller(self) -> tuple[str | None, str | None]:
        """Who deploys, as the claims of the ARM token name them: (a name for people, the
        object id). Read, not verified: the token is the one this process was given."""
        try:
            payload = self._token().split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):  # not a JWT: nothing said
            return None, None
        if not isinstance(claims, dict):
            return None, None
        # A user's sign-in name; else a managed identity's resource name; else an app's id.
        person = claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username")
        identity = str(claims.get("xms_mirid") or "").rsplit("/", 1)[-1]
        application = f"app {claims['appid']}" if claims.get("appid") else None
        who = person or identity or application
        object_id = claims.get("oid")
        return (str(who)[:120] if who else None), (str(object_id) if object_id else None)

    def _kept(self, name: str) -> KeptVersions:
        """The versions of ``name`` kept in versions/ (each record read), oldest first."""
        container = self._versions_container(name)
        versions: list[KeptVersion] = []
        zips: dict[str, datetime] = {}
        with self._blob_errors(name, f"reading the versions of {name} kept for rollback"):
            for blob in container.list_blobs(name_starts_with=VERSIONS_PREFIX):
                if blob.name.endswith(".zip"):
                    zips[blob.name] = blob.last_modified
                elif blob.name.endswith(".json"):
                    raw = container.download_blob(blob.name).readall()
                    try:
                        versions.append(KeptVersion.from_json(raw))
                    except ValueError as error:
                        raise ProviderError(
                            f"{blob.name} in container {DEPLOYMENT_CONTAINER} of storage account "
                            f"{self.host_account(name)} is not a version deployer can read "
                            f"({error}): it was written by another deployer version, or by hand"
                        ) from None
        versions.sort(key=lambda version: (version.deployed_at, version.version))
        return KeptVersions(tuple(versions), zips)

    @staticmethod
    def _live_version(kept: KeptVersions, deployed: Deployed | None) -> KeptVersion | None:
        """The kept version the app runs: the app's tags name its code and dependencies;
        of the versions with both, the newest whose settings are the app's (one of them
        may be a rollback's, to a version as old as the code)."""
        if deployed is None:
            return None
        running = [
            version
            for version in kept.versions
            if (version.code_hash, version.deps_hash) == (deployed.code_hash, deployed.deps_hash)
        ]

        def as_deployed(version: KeptVersion) -> bool:
            return all(
                deployed.settings.get(key) == value for key, value in version.settings().items()
            )

        return max(running, key=lambda v: (as_deployed(v), v.deployed_at), default=None)

    def _keep_zip(self, name: str, package: bytes, reporter: Reporter) -> KeptZip:
        kept = KeptZip(hashlib.sha256(package).hexdigest(), len(package))
        container = self._versions_container(name)
        with (
            self._blob_errors(name, f"keeping a copy of {name}'s app zip for rollback"),
            reporter.status(f"keeping a copy of the app zip ({kept.size / 1e6:.1f} MB)"),
            # Already there: the same bytes (the name is their sha256), kept by a deploy before.
            contextlib.suppress(ResourceExistsError),
        ):
            container.upload_blob(
                kept.blob,
                package,
                overwrite=False,
                content_settings=ContentSettings(content_type="application/zip"),
            )
        return kept

    def _record_version(
        self, spec: DeploySpec, release: Release, kept_zip: KeptZip | None
    ) -> KeptVersion | None:
        """versions/{id}.json for this deploy; None without a kept zip it runs."""
        if kept_zip is None:
            return None
        moment = utc_now()
        version = KeptVersion(
            version=moment.strftime(VERSION_ID_FORMAT),
            code_hash=release.code_hash,
            deps_hash=release.deps_hash,
            deployed_at=moment.isoformat(),
            deployed_by=self._caller()[0],
            zip=kept_zip,
            qualname=release.qualname,
            python=release.python,
            triggers=release.triggers,
            output=spec.output,
            inputs=spec.inputs,
            timeout_seconds=spec.timeout_seconds,
            memory_mb=instance_memory(spec.memory_mb),
            max_concurrency=spec.max_concurrency,
            env=dict(spec.env),
            secrets=dict(spec.secrets),
            storage_account=self.data_account,
        )
        container = self._versions_container(spec.name)
        with self._blob_errors(spec.name, f"recording version {version.version} of {spec.name}"):
            container.upload_blob(
                version.blob,
                version.to_json(),
                overwrite=False,
                content_settings=ContentSettings(content_type="application/json"),
            )
        return version

    def _prune(
        self,
        name: str,
        kept: KeptVersions,
        keep: int,
        was_live: KeptVersion | None,
        reporter: Reporter,
    ) -> None:
        """Remove the oldest versions beyond ``keep`` (never the live one, the newest,
        nor the one live before it: what a rollback most likely wants), then the zips
        no kept version runs."""
        live = kept.versions[-1]
        spared = {live.version, was_live.version if was_live is not None else ""}
        surplus = len(kept.versions) - keep
        removed = [version for version in kept.versions if version.version not in spared]
        removed = removed[: max(0, surplus)]
        gone = {version.version for version in removed}
        in_use = {version.zip.blob for version in kept.versions if version.version not in gone}
        stale = utc_now() - timedelta(seconds=UNRECORDED_ZIP_SECONDS)
        zips = {version.zip.blob for version in removed}
        zips |= {blob for blob, written in kept.zips.items() if written < stale}
        container = self._versions_container(name)
        with self._blob_errors(name, f"removing old versions of {name}"):
            # The records first: a kept record never names a zip that is gone.
            for blob in [*(version.blob for version in removed), *sorted(zips - in_use)]:
                with contextlib.suppress(ResourceNotFoundError):  # another deploy's prune
                    container.delete_blob(blob)
        if removed:
            reporter.say(
                f"removed {len(removed)} old version(s) of {name}, keeping "
                f"{len(kept.versions) - len(removed)} for rollback"
            )

    def _read_zip(self, name: str, version: KeptVersion) -> bytes:
        container = self._versions_container(name)
        with self._blob_errors(name, f"reading the app zip of version {version.version}"):
            try:
                package: bytes = container.download_blob(version.zip.blob).readall()
            except ResourceNotFoundError:
                package = b""
        if hashlib.sha256(package).hexdigest() != version.zip.sha256:
            raise ProviderError(
                f"the kept app zip of version {version.version} of {name} "
                f"({version.zip.blob}) is {'damaged' if package else 'gone'}: deploy that "
                "code again instead"
            )
        return package

    def history(self, name: str) -> builtins.list[Version]:
        self.require(name)
        kept = self._kept(name)
        live = self._live_version(kept, self.deployed(name))
        return [
            version.as_version(live=live is not None and version.version == live.version)
            for version in reversed(kept.versions)
        ]

    # On Azure the triggers come back too: the schedules and the HTTP function's auth
    # level are declared by function_app.py, in the zip, which is republished as it
    # was (one regenerated for today's triggers would call that version's runtime
    # with today's deployer's arguments).
    rollback_note = (
        "with the settings and triggers it was deployed with (on Azure the schedules are "
        "part of the app zip); alerts stay as deployed now"
    )

    def make_live(self, name: str, version: Version, reporter: Reporter) -> None:
        """The kept zip of ``version`` is published again (nothing built or installed),
        unless the app runs those very bytes (a version that changed settings only); its
        settings are set, the registered functions checked as a deploy checks them, and
        the tags claim it. A rollback grants nothing: a version whose output, inputs
        or secrets need a role the app's identity lacks now is refused (a kept record
        must not be a way to widen what the app may read); none is revoked either
        (the next deploy revokes what it no longer needs). Everything is read and
        checked first."""
        kept = self._kept(name)
        live = self._live_version(kept, self.deployed(name))
        chosen = next((item for item in kept.versions if item.version == version.version), None)
        site = self._site(name)
        if chosen is None or site is None:
            raise ConfigError(
                f"version {version.version} of {name} is no longer kept: see `deployer history "
                f"{name} --provider azure`"
            )
        current = self._current_app_settings(site)
        spec = self._spec_of(name, chosen, current)
        release = chosen.release
        self._check_settings(spec)
        principal = site.identity.principal_id if site.identity else None
        grants = [step for step in self._access_steps(spec, principal) if isinstance(step, Grant)]
        if grants:
            raise ConfigError(
                f"version {version.version} of {name} needs access its identity does not have "
                f"now ({'; '.join(str(grant) for grant in grants)}); a rollback grants nothing: "
                "deploy that code again instead"
            )
        publish = live is None or live.zip != chosen.zip
        package = self._read_zip(name, chosen) if publish else b""
        triggers_before = _triggers_of(site.tags or {})
        # Read and checked: from here on, changes.
        runtime = (site.function_app_config or FunctionAppConfig()).runtime or FunctionsRuntime()
        if runtime.version != release.python:
            # Before the zip: its wheels need that Python's worker.
            site = self._put_site(spec, release, site, tags=dict(site.tags or {}))
        if publish:
            self._publish(spec, release, site, package, reporter)
        tags = self._tags(spec, release, current=dict(site.tags or {}), published=True)
        settings = self._merged_app_settings(spec, current)
        self._put_site(spec, release, site, tags=tags, settings=settings)
        changed = [
            *(f"+ {describe_trigger(t)}" for t in release.triggers if t not in triggers_before),
            *(f"- {describe_trigger(t)}" for t in triggers_before if t not in release.triggers),
        ]
        if changed:
            reporter.say(f"{name}: the triggers are that version's again: {'; '.join(changed)}")

    def _spec_of(self, name: str, version: KeptVersion, current: Mapping[str, str]) -> DeploySpec:
        """The deploy of ``version`` (its settings) with the alerts deployed now."""
        if version.storage_account and self.data_account not in (None, version.storage_account):
            raise ConfigError(
                f"version {version.version} of {name} was deployed with storage account "
                f"{version.storage_account} for az:// URLs, and this configuration names "
                f"{self.data_account}: roll back with provider_options={{'storage_account': "
                f"'{version.storage_account}'}}"
            )
        try:
            alerts = json.loads(current.get(ALERTS_VARIABLE) or "[]")
        except ValueError:
            alerts = []
        return DeploySpec(
            name=name,
            output=version.output,
            inputs=version.inputs,
            triggers=tuple(trigger_from_dict(dict(trigger)) for trigger in version.triggers),
            timeout_seconds=version.timeout_seconds,
            memory_mb=version.memory_mb,
            alerts=tuple(str(url) for url in alerts) if isinstance(alerts, list) else (),
            env=tuple(sorted(version.env.items())),
            secrets=tuple(sorted(version.secrets.items())),
            max_concurrency=version.max_concurrency,
        )

    # -- invoke, logs, delete --------------------------------------------------------

    map_concurrency = 20

    @contextmanager
    def map_dispatcher(self, name: str, *, concurrency: int) -> Iterator[fanout.Dispatch]:
        """Each shard one POST to the app's HTTP function with its key (the master
        key when the app has no Http trigger). Azure's front end drops a request
        after 230 s, so a shard must finish within that: give smaller shards."""
        url, headers = self._calling(name, trigger="map")
        with posting_shards(
            url,
            lambda: headers,
            timeout=HTTP_RESPONSE_LIMIT_SECONDS + 30,
            concurrency=concurrency,
        ) as dispatch:
            yield dispatch

    def check_map_data(self, name: str, urls: Iterable[str]) -> None:
        """A public app takes no shards (its URL would take anyone's), and its
        identity may read its output's and inputs' containers only."""
        state = self.require(name)
        refuse_public_map(name, state)
        require_readable_buckets(name, urls, state, "identity")

    def invoke(
        self,
        name: str,
        payload: Any = None,
        *,
        timeout_seconds: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Invocation:
        # Recorded as a manual run, not an HTTP-triggered one.
        url, headers = self._calling(name, trigger="manual")
        # Azure's load balancer drops an HTTP request after 230 s, whatever the timeout.
        timeout = min(timeout_seconds or HTTP_RESPONSE_LIMIT_SECONDS, HTTP_RESPONSE_LIMIT_SECONDS)
        try:
            response = requests.post(
                url, data=invoke_body(payload, params), headers=headers, timeout=timeout + 30
            )
        except requests.RequestException as error:
            raise ProviderError(f"calling {name} at {url} failed: {error}") from None
        if response.status_code in (401, 403):
            raise ProviderError(
                f"{name} refused the call (HTTP {response.status_code}): its function key was "
                "not accepted; `az functionapp function keys list` shows the keys"
            )
        return invocation_from_reply(response.status_code, response.text)

    def _calling(self, name: str, *, trigger: str) -> tuple[str, dict[str, str]]:
        """The URL of ``name``'s HTTP function and the headers of a call marked as
        ``trigger``: its key unless the function is public (the master key when
        the app has no Http trigger)."""
        http = _http_trigger(self.require(name).triggers)
        function = self._http_function(name)
        if function is None or not function.invoke_url_template:
            raise ProviderError(
                f"{name}'s app lists no HTTP function: the last publish did not load; deploy again"
            )
        headers = {"content-type": "application/json", "x-deployer-trigger": trigger}
        if http is None or not http.get("public"):
            headers["x-functions-key"] = self._key(name, function, master=http is None)
        return str(function.invoke_url_template), headers

    def _key(self, name: str, function: FunctionEnvelope, *, master: bool) -> str:
        """The HTTP function's default key (Http()); the host's master key when the app
        has no Http trigger (the function's auth level is ADMIN: only invoke calls it)."""
        app = self.app(name)
        with self._azure_errors(f"reading the keys of {app}"):
            if master:
                host_keys = self.web.web_apps.list_host_keys(self.resource_group, app)
                key = host_keys.master_key
            else:
                keys = self.web.web_apps.list_function_keys(
                    self.resource_group, app, _function_name(function)
                )
                key = (keys.properties or {}).get("default")
        if not key:
            raise ProviderError(
                f"{app} has no {'master' if master else 'default function'} key yet: see "
                f"`az functionapp keys list --name {app} --resource-group {self.resource_group}`"
            )
        return str(key)

    # Application Insights: traces are queryable minutes after their timestamp.
    log_lag = timedelta(minutes=5)
    log_poll_seconds = 2.0

    def log_source(self, name: str) -> tuple[str, str]:
        """The app's name (traces' cloud_RoleName) and the Application Insights
        application its connection string names."""
        self.require(name)
        app = self.app(name)
        site = self._site(name)
        assert site is not None
        connection = self._current_app_settings(site).get(APP_INSIGHTS_SETTING, "")
        if not connection:
            raise ProviderError(
                f"{app} sends its logs nowhere deployer can read: Azure Functions keeps what "
                "a function prints in Application Insights, and this app has none (deployer "
                "does not make one). Turn it on in the portal (function app "
                f"{app} > Settings > Application Insights), or point the app at an existing one: "
                f"`az functionapp config appsettings set --name {app} --resource-group "
                f"{self.resource_group} --settings {APP_INSIGHTS_SETTING}=<its connection "
                "string>` (deployer keeps settings it did not make); runs after that are in "
                f"`deployer logs`. Until then: `func azure functionapp logstream {app}`"
            )
        fields = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
        application_id = fields.get("ApplicationId", "")
        if not application_id:
            raise ProviderError(
                f"the {APP_INSIGHTS_SETTING} of {app} names no ApplicationId, which reading "
                "its logs needs: set it to the full connection string the portal shows "
                "(Application Insights > Overview > Connection String)"
            )
        return app, application_id

    def log_page(self, source: tuple[str, str], query: LogQuery, cursor: Any) -> LogPage:
        """Up to LOG_PAGE_ROWS traces of the app, oldest first, from Application
        Insights' query API. The cursor is the time the next query starts at: the
        newest trace of a full page, else that less ``log_lag``."""
        app, application_id = source
        start = cursor if cursor is not None else query.since
        stages = ["traces", f"where cloud_RoleName == {_kql_string(app)}"]
        body: dict[str, Any] = {}
        if start is not None:
            stages.append(f"where timestamp >= datetime({rfc3339(start)})")
            # The API's own window, which applies besides the query's.
            body["timespan"] = f"{rfc3339(start)}/{rfc3339(utc_now() + timedelta(days=1))}"
        if query.until is not None:
            stages.append(f"where timestamp <= datetime({rfc3339(query.until)})")
        if query.contains:
            stages.append(f"where message contains {_kql_string(query.contains.strip())}")
        stages.append(f"top {LOG_PAGE_ROWS} by timestamp asc")
        stages.append("project timestamp, itemId, message, cloud_RoleInstance")
        body["query"] = "\n| ".join(stages)
        rows = self._query_traces(app, application_id, body)
        events = tuple(
            LogEvent(
                parse_rfc3339(row["timestamp"]),
                str(row["itemId"]),
                str(row["message"]).removesuffix("\n"),
                str(row.get("cloud_RoleInstance") or ""),
            )
            for row in rows
        )
        if len(events) == LOG_PAGE_ROWS:
            newest = max(event.timestamp for event in events)
            if start is not None and newest <= start:  # a page of one instant: step over it
                newest = start + timedelta(microseconds=1)
            return LogPage(events, newest, more=True)
        return LogPage(events, next_log_start(events, start, query.since, self.log_lag))

    def _query_traces(
        self, app: str, application_id: str, body: dict[str, Any]
    ) -> builtins.list[dict[str, Any]]:
        api = (os.environ.get(APP_INSIGHTS_URL_VARIABLE) or APP_INSIGHTS_API).rstrip("/")
        try:
            token = self.credential.get_token(f"{api}/.default").token
        except ClientAuthenticationError:
            raise ConfigError(NO_CREDENTIALS) from None
        try:
            response = requests.post(
                f"{api}/v1/apps/{application_id}/query",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=LOG_QUERY_TIMEOUT_SECONDS,
            )
        except requests.RequestException as error:
            raise ProviderError(f"reading the logs of {app} failed: {error}") from None
        if response.status_code in (401, 403):
            raise ProviderError(
                f"reading the logs of {app}: Application Insights {application_id} refused "
                f"(HTTP {response.status_code}): the identity you deploy with needs Reader (or "
                "Monitoring Reader) on that Application Insights resource"
            )
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ProviderError(
                f"reading the logs of {app} from Application Insights failed "
                f"(HTTP {response.status_code}): {message}"
            )
        table = response.json()["tables"][0]
        columns = [column["name"] for column in table["columns"]]
        return [dict(zip(columns, row, strict=True)) for row in table["rows"]]

    def delete_steps(self, name: str, state: DeploymentState) -> builtins.list[Step]:
        steps: list[Step] = []
        site = self._site(name)
        principal = site.identity.principal_id if site is not None and site.identity else None
        if principal:
            for assignment_id, assignment in self._assignments(principal).items():
                steps.append(
                    DeleteAssignment(
                        f"role assignment of the app's identity on {assignment.scope}",
                        assignment_id=assignment_id,
                    )
                )
        try:
            account = self._owned_account(name)
        except ProviderError:
            account = None  # someone else's: left alone
        if account is not None:
            steps.append(
                DeleteStorage(
                    f"storage account {account.name} (the app's host storage, its deployment "
                    "container and the versions kept there for rollback; outputs are elsewhere "
                    "and stay)",
                    account=str(account.name),
                )
            )
        return steps

    def execute_delete(self, plan: Plan, state: DeploymentState, reporter: Reporter) -> None:
        name = plan.name
        app = self.app(name)
        # Role assignments first, while the identity they name exists; then the
        # app (its timers and HTTP function go with it), its plan, its storage.
        for step in plan.of_type(DeleteAssignment):
            assert isinstance(step, DeleteAssignment)
            with self._azure_errors(f"deleting role assignment {step.assignment_id}"):
                self.authorization.role_assignments.delete_by_id(step.assignment_id)
        with self._azure_errors(f"deleting function app {app}"):
            self.web.web_apps.delete(self.resource_group, app)
        with self._azure_errors(f"deleting the Flex Consumption plan {app}"):
            try:
                plan_resource = self.web.app_service_plans.get(self.resource_group, app)
            except ResourceNotFoundError:
                plan_resource = None
            if plan_resource is not None and self._owned(plan_resource.tags, name):
                self.web.app_service_plans.delete(self.resource_group, app)
        for step in plan.of_type(DeleteStorage):
            assert isinstance(step, DeleteStorage)
            if self._owned_account(name) is None:
                continue
            with self._azure_errors(f"deleting storage account {step.account}"):
                self.storage.storage_accounts.delete(self.resource_group, step.account)
        reporter.say(f"deleted function app {app} and what deployer made for it")


def _kql_string(value: str) -> str:
    """A string literal of the Kusto query language (JSON's escapes are its own)."""
    return json.dumps(value, ensure_ascii=False)


def _scale(spec: DeploySpec) -> FunctionsScaleAndConcurrency:
    """Flex's scale settings. max_concurrency=N: at most N instances of the HTTP
    functions (Flex scales them as one group), each given one call at a time, so
    at most N calls run at once; the per-instance limit is set outright, as its
    default depends on the language and the instance size. A schedule's timer
    runs once at a time whatever the scale (a singleton, in a group of its own).
    None: the platform's defaults."""
    triggers = None
    if spec.max_concurrency is not None:
        triggers = FunctionsScaleAndConcurrencyTriggers(
            http=FunctionsScaleAndConcurrencyTriggersHttp(per_instance_concurrency=1)
        )
    return FunctionsScaleAndConcurrency(
        maximum_instance_count=spec.max_concurrency or MAXIMUM_INSTANCE_COUNT,
        instance_memory_mb=instance_memory(spec.memory_mb),
        triggers=triggers,
    )


def _reference_setting(name: str, reference: str) -> str | None:
    """The app setting a secret's reference becomes (None: not a reference, edited by hand)."""
    try:
        return secret_reference(name, reference).setting
    except ConfigError:
        return None


def _max_concurrency(scale: FunctionsScaleAndConcurrency, tags: Mapping[str, str]) -> Any:
    """max_concurrency as the Flex configuration has it: its instances when each takes one
    call at a time; None while deployer leaves the scale to the platform (no tag)."""
    if MAX_CONCURRENCY_TAG not in tags:
        return None
    http = scale.triggers.http if scale.triggers is not None else None
    per_instance = http.per_instance_concurrency if http is not None else None
    if per_instance == 1:
        return scale.maximum_instance_count
    # Changed elsewhere (the portal): shown as it is, so that the plan sets it back.
    return f"{scale.maximum_instance_count} instances of {per_instance} calls each"


def _error_code(error: HttpResponseError) -> str:
    inner = getattr(error, "error", None)
    code = getattr(inner, "code", None)
    if code:
        return str(code)
    try:
        body = json.loads(error.response.text()) if error.response is not None else {}
    except (ValueError, AttributeError):
        body = {}
    return str((body.get("error") or {}).get("code", "")) if isinstance(body, dict) else ""


def _error_message(error: HttpResponseError) -> str:
    inner = getattr(error, "error", None)
    message = getattr(inner, "message", None)
    return str(message or error.message or error)
