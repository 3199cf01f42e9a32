"""A loopback fake of the Azure Resource Manager APIs the Azure provider calls.

There is no emulator for Azure Resource Manager, so the tests that use this
fake are contract tests, and are named so (``test_contract_...``). The
official clients (azure-mgmt-web, azure-mgmt-storage,
azure-mgmt-authorization) and azure-identity's DefaultAzureCredential are
pointed at it by configuration alone: ``AZURE_RESOURCE_MANAGER_URL`` (the ARM
endpoint), ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` (an App Service managed
identity endpoint, the first credential DefaultAzureCredential finds),
``DEPLOYER_AZURE_SCM_URL`` (the Kudu host of an app) and
``REQUESTS_CA_BUNDLE`` (the fake's own certificate: azure-core sends bearer
tokens over TLS only, so the fake serves HTTPS on 127.0.0.1). The fake keeps
the resources in memory and records every request (method, path, query, JSON
body), so a test can assert both the resources that result and the exact
calls that made them. Errors use ARM's format, ``{"error": {"code",
"message"}}``.

Served (paths as the clients send them; {rg} = /subscriptions/{s}/resourceGroups/{g}):

    identity      GET    /msi/token?resource=...                (App Service MI protocol)
    Web           GET    {rg}/providers/Microsoft.Web/sites
                  GET    {rg}/providers/Microsoft.Web/sites/{app}
                  PUT    {rg}/providers/Microsoft.Web/sites/{app}           (200, synchronous)
                  DELETE {rg}/providers/Microsoft.Web/sites/{app}
                  POST   {rg}/providers/Microsoft.Web/sites/{app}/config/appsettings/list
                  GET    {rg}/providers/Microsoft.Web/sites/{app}/functions
                  POST   {rg}/providers/Microsoft.Web/sites/{app}/functions/{fn}/listkeys
                  POST   {rg}/providers/Microsoft.Web/sites/{app}/host/default/listkeys
                  GET    {rg}/providers/Microsoft.Web/serverfarms/{plan}
                  PUT    {rg}/providers/Microsoft.Web/serverfarms/{plan}     (202 +
                         Azure-AsyncOperation: done on the first poll)
                  DELETE {rg}/providers/Microsoft.Web/serverfarms/{plan}
                  POST   /subscriptions/{s}/providers/Microsoft.Web/checknameavailability
    Storage       GET    /subscriptions/{s}/providers/Microsoft.Storage/storageAccounts
                  GET    {rg}/providers/Microsoft.Storage/storageAccounts/{account}
                  PUT    {rg}/providers/Microsoft.Storage/storageAccounts/{account}  (202 +
                         Location: done on the first poll, then the account is read)
                  DELETE {rg}/providers/Microsoft.Storage/storageAccounts/{account}
                  PUT    .../storageAccounts/{account}/blobServices/default/containers/{c}
                  GET    .../storageAccounts/{account}/blobServices/default/containers/{c}
                  POST   /subscriptions/{s}/providers/Microsoft.Storage/checkNameAvailability
                  GET    /operations/{id}                       (the pollers' URLs)
    Authorization PUT    {scope}/providers/Microsoft.Authorization/roleAssignments/{guid}
                  GET    {scope}/providers/Microsoft.Authorization/roleAssignments/{guid}
                  DELETE {scope}/providers/Microsoft.Authorization/roleAssignments/{guid}
                  GET    /subscriptions/{s}/providers/Microsoft.Authorization/roleAssignments
                         ?$filter=principalId eq '...'
    Key Vault     GET    /subscriptions/{s}/providers/Microsoft.KeyVault/vaults
                  GET    {rg}/providers/Microsoft.KeyVault/vaults/{vault}/secrets/{secret}
                         (ARM's view of a secret: its metadata, never its value)
    Kudu (SCM)    POST   /scm/{app}/api/publish?RemoteBuild=false    (202; 409 while busy)
                  GET    /scm/{app}/api/deployments/latest
    Blob Storage  PUT    /blob/{account}/{container}/{blob}     (Put Blob; ?comp=block,
                         ?comp=blocklist: a blob in blocks; If-None-Match: *)
                  GET    /blob/{account}/{container}/{blob}     (x-ms-range: 206)
                  DELETE /blob/{account}/{container}/{blob}
                  GET    /blob/{account}/{container}?restype=container&comp=list&prefix=...
    function URL  POST   /sites/{app}/api/{route}               (x-functions-key unless anonymous)
    App Insights  POST   /v1/apps/{applicationId}/query         (its query API: traces)

It checks what Azure documents and deployer relies on: a site's plan and its
deployment container exist, a role assignment names a principal that exists
(``unsettled`` makes the next N assignments for an existing one fail with
PrincipalNotFound, as Entra ID does for a few seconds after an identity is
made), the same principal, role and scope cannot be assigned twice, and a
publish carries a zip with a bearer token, a role assignment's scope exists
(a storage account, a container, a key vault or one of its secrets), a
site's ``scaleAndConcurrency`` holds only the settings Flex has, within its
limits (400 otherwise). It does not run anything: a
publish registers the functions the bundle's manifest (inside the zip) says
``function_app.py`` declares, one HTTP function and one timer per schedule,
unless ``register_nothing`` is set (as Azure does when the host cannot load
the app: the publish "succeeds" and no function appears). A function's URL
echoes the records it was sent as the predictions.

Blob Storage is the data plane of the storage accounts in the fake: an account's
``primaryEndpoints.blob`` (what ARM says its blob endpoint is) is
``{endpoint}/blob/{account}/``, path-style, as Azurite's is. It serves the
containers ARM made, to the bearer token above (shared keys are off on the
accounts deployer makes) and only with ``x-ms-version``; errors are Blob
Storage's XML with ``x-ms-error-code``. ``blob_access = False`` refuses every
call with 403 AuthorizationPermissionMismatch, as Blob Storage does for an
identity without a data role (Contributor and Owner have none). Blobs are kept
in ``blobs`` (container id -> name -> FakeBlob).

Application Insights (``DEPLOYER_AZURE_APP_INSIGHTS_URL``) holds the traces tests
put there (``add_trace``). Its query API answers the Kusto queries deployer
sends, stages joined by a line break and ``| ``: ``traces``, ``where
cloud_RoleName == "APP"``, ``where timestamp >= datetime(ISO)`` (or ``<=``),
``where message contains "TEXT"``, ``top N by timestamp asc`` and ``project``
of traces' columns; and the body's ``timespan`` ("START/END"). Any other
stage is answered 400 BadArgumentError, so a query the fake does not
understand never passes as one that matched.

``fail_next(method, contains, status, code, message)`` makes the next request
whose method matches and whose path contains ``contains`` fail with that
error, after it is recorded.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import io
import ipaddress
import itertools
import json
import re
import ssl
import tempfile
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from forwarding import pass_on

IDENTITY_HEADER = "fake-identity-header"
TENANT = "72f988bf-0000-0000-0000-000000000000"
# Who the fake's managed identity is (its token's claims, as Entra ID puts them in a
# managed identity's token): what deployer records as who deployed.
DEPLOYING_IDENTITY = "deployer-ci"
DEPLOYING_PRINCIPAL = "5f1c9c3e-0000-4000-8000-00000000d3b1"


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    """A token shaped like Entra ID's (header.claims.signature, base64url): deployer
    reads its claims; the fake compares it whole."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.fake-signature"


TOKEN = _unsigned_jwt(
    {
        "aud": "https://management.azure.com",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "tid": TENANT,
        "oid": DEPLOYING_PRINCIPAL,
        "appid": "0c3e1f5a-0000-4000-8000-0000000000c1",
        "xms_mirid": (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/ci/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/{DEPLOYING_IDENTITY}"
        ),
    }
)

RG = r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
SITE = rf"{RG}/providers/Microsoft\.Web/sites/(?P<app>[^/]+)"
ACCOUNT = rf"{RG}/providers/Microsoft\.Storage/storageAccounts/(?P<account>[^/]+)"
ASSIGNMENT = r"(?P<scope>/.+)/providers/Microsoft\.Authorization/roleAssignments/(?P<id>[^/]+)"
VAULT = rf"{RG}/providers/Microsoft\.KeyVault/vaults/(?P<vault>[^/]+)"
BLOB = r"/blob/(?P<account>[^/]+)/(?P<container>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/msi/token$"), "token"),
    ("GET", re.compile(rf"^{RG}/providers/Microsoft\.Web/sites$"), "list_sites"),
    ("GET", re.compile(rf"^{SITE}$"), "get_site"),
    ("PUT", re.compile(rf"^{SITE}$"), "put_site"),
    ("DELETE", re.compile(rf"^{SITE}$"), "delete_site"),
    ("POST", re.compile(rf"^{SITE}/config/appsettings/list$"), "list_settings"),
    ("GET", re.compile(rf"^{SITE}/functions$"), "list_functions"),
    ("POST", re.compile(rf"^{SITE}/functions/(?P<function>[^/]+)/listkeys$"), "list_keys"),
    ("POST", re.compile(rf"^{SITE}/host/default/listkeys$"), "list_host_keys"),
    (
        "GET",
        re.compile(rf"^{RG}/providers/Microsoft\.Web/serverfarms/(?P<plan>[^/]+)$"),
        "get_plan",
    ),
    (
        "PUT",
        re.compile(rf"^{RG}/providers/Microsoft\.Web/serverfarms/(?P<plan>[^/]+)$"),
        "put_plan",
    ),
    (
        "DELETE",
        re.compile(rf"^{RG}/providers/Microsoft\.Web/serverfarms/(?P<plan>[^/]+)$"),
        "delete_plan",
    ),
    (
        "POST",
        re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Web/checknameavailability$"),
        "check_site_name",
    ),
    (
        "GET",
        re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Storage/storageAccounts$"),
        "list_accounts",
    ),
    ("GET", re.compile(rf"^{ACCOUNT}$"), "get_account"),
    ("PUT", re.compile(rf"^{ACCOUNT}$"), "put_account"),
    ("DELETE", re.compile(rf"^{ACCOUNT}$"), "delete_account"),
    (
        "PUT",
        re.compile(rf"^{ACCOUNT}/blobServices/default/containers/(?P<container>[^/]+)$"),
        "put_container",
    ),
    (
        "GET",
        re.compile(rf"^{ACCOUNT}/blobServices/default/containers/(?P<container>[^/]+)$"),
        "get_container",
    ),
    (
        "POST",
        re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Storage/checkNameAvailability$"),
        "check_account_name",
    ),
    ("GET", re.compile(r"^/operations/(?P<id>[^/]+)$"), "get_operation"),
    (
        "GET",
        re.compile(
            r"^/subscriptions/(?P<subscription>[^/]+)/providers/Microsoft\.Authorization/"
            r"roleAssignments$"
        ),
        "list_assignments",
    ),
    ("PUT", re.compile(rf"^{ASSIGNMENT}$"), "put_assignment"),
    ("GET", re.compile(rf"^{ASSIGNMENT}$"), "get_assignment"),
    ("DELETE", re.compile(rf"^{ASSIGNMENT}$"), "delete_assignment"),
    (
        "GET",
        re.compile(
            r"^/subscriptions/(?P<subscription>[^/]+)/providers/Microsoft\.KeyVault/vaults$"
        ),
        "list_vaults",
    ),
    ("GET", re.compile(rf"^{VAULT}/secrets/(?P<secret>[^/]+)$"), "get_secret"),
    ("POST", re.compile(r"^/scm/(?P<app>[^/]+)/api/publish$"), "publish"),
    ("GET", re.compile(r"^/scm/(?P<app>[^/]+)/api/deployments/latest$"), "latest_deployment"),
    ("POST", re.compile(r"^/sites/(?P<app>[^/]+)/api/(?P<route>.+)$"), "invoke"),
    ("POST", re.compile(r"^/v1/apps/(?P<application>[^/]+)/query$"), "query"),
    ("PUT", re.compile(rf"^{BLOB}/(?P<blob>.+)$"), "put_blob"),
    ("GET", re.compile(rf"^{BLOB}/(?P<blob>.+)$"), "get_blob"),
    ("DELETE", re.compile(rf"^{BLOB}/(?P<blob>.+)$"), "delete_blob"),
    ("GET", re.compile(rf"^{BLOB}$"), "list_blobs"),
]
# The stages of a traces query the fake understands (see the module docstring).
STRING = r'"(?:[^"\\]|\\.)*"'
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,7})?Z"
QUERY_STAGES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^where cloud_RoleName == (?P<value>{STRING})$"), "role"),
    (re.compile(rf"^where timestamp >= datetime\((?P<value>{TIME})\)$"), "from"),
    (re.compile(rf"^where timestamp <= datetime\((?P<value>{TIME})\)$"), "to"),
    (re.compile(rf"^where message contains (?P<value>{STRING})$"), "contains"),
    (re.compile(r"^top (?P<value>\d+) by timestamp asc$"), "top"),
    (re.compile(r"^project (?P<value>[A-Za-z_]+(?:, [A-Za-z_]+)*)$"), "project"),
]
TRACE_COLUMNS = {
    "timestamp": "datetime",
    "itemId": "string",
    "message": "string",
    "cloud_RoleName": "string",
    "cloud_RoleInstance": "string",
    "severityLevel": "int",
}

# What the provider may put on a site, besides tags, that the fake keeps as sent.
PLAN_KIND = "functionapp"
# Flex Consumption's scale settings and their limits (event-driven-scaling.md,
# flex-consumption-how-to.md): anything else in scaleAndConcurrency is refused.
SCALE_KEYS = {"maximumInstanceCount", "instanceMemoryMB", "triggers", "alwaysReady"}
INSTANCE_COUNTS = range(1, 1001)
INSTANCE_MEMORY_MB = (512, 2048, 4096)
HTTP_CONCURRENCY = range(1, 1001)


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any  # the JSON body, or None
    headers: dict[str, str] = field(repr=False)
    data: bytes = field(default=b"", repr=False)  # the raw body

    @property
    def call(self) -> str:
        """ "METHOD path", for assertions on the sequence of calls."""
        return f"{self.method} {self.path}"

    @property
    def changes(self) -> bool:
        """Whether Azure would change something for it (reads that are POSTs are not)."""
        reads = ("/list", "/listkeys", "/checknameavailability", "/checkNameAvailability")
        return self.method in ("PUT", "POST", "DELETE", "PATCH") and not self.path.endswith(reads)


class FakeError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as is (Blob Storage's bytes and XML), not as JSON


@dataclass
class FakeBlob:
    """A block blob as Blob Storage keeps it."""

    data: bytes
    content_type: str
    etag: str
    modified: datetime.datetime

    @property
    def last_modified(self) -> str:
        return email.utils.format_datetime(self.modified, usegmt=True)


FORWARDED_HEADERS = ("content-type", "x-deployer-trigger")


@dataclass(frozen=True)
class Forward:
    """A function call to pass on to the app's Functions host."""

    url: str


def _not_found(kind: str, name: str) -> FakeError:
    return FakeError(404, "ResourceNotFound", f"The Resource '{kind}/{name}' was not found.")


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the fake's TLS identity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azure-fake")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path = directory / "fake-azure.pem"
    key_path = directory / "fake-azure-key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path


class FakeAzure:
    """The fake's state and its HTTPS server on a free loopback port."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._directory = Path(tempfile.mkdtemp(prefix="azure-fake-"))
        self.certificate, key = _certificate(self._directory)
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def scm_url(self) -> str:
        """The template DEPLOYER_AZURE_SCM_URL takes: an app's Kudu on this fake."""
        return f"{self.endpoint}/scm/{{app}}"

    def start(self) -> FakeAzure:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests: list[Recorded] = []
            self.groups: set[tuple[str, str]] = set()  # (subscription, group) that exist
            self.sites: dict[str, dict[str, Any]] = {}  # ARM id (lower) -> site
            self.settings: dict[str, dict[str, str]] = {}  # site id (lower) -> app settings
            self.functions: dict[str, list[dict[str, Any]]] = {}  # site id -> registered
            self.keys: dict[str, str] = {}  # site id / function -> default key
            self.packages: dict[str, bytes] = {}  # site id -> the published zip
            self.deployments: dict[str, dict[str, Any]] = {}  # app name -> latest deployment
            self.plans: dict[str, dict[str, Any]] = {}
            self.accounts: dict[str, dict[str, Any]] = {}  # ARM id (lower) -> account
            self.containers: dict[str, dict[str, Any]] = {}  # container id (lower) -> container
            self.assignments: dict[str, dict[str, Any]] = {}  # assignment id (lower) -> it
            self.vaults: dict[str, dict[str, Any]] = {}  # vault id (lower) -> vault
            self.secrets: dict[str, dict[str, Any]] = {}  # secret id (lower) -> its metadata
            # Secret id (lower) -> its value: kept, as Key Vault's data plane would, and
            # never served (ARM has no call that answers it).
            self.secret_values: dict[str, str] = {}
            self.operations: dict[str, dict[str, Any]] = {}
            self.taken_site_names: set[str] = set()  # names taken in someone else's subscription
            self.taken_account_names: set[str] = set()
            self.unsettled = 0  # assignments for an existing principal still refused
            self.busy = 0  # publishes answered 409 (a deployment is in progress)
            self.register_nothing = False  # the next publishes register no function
            self._failures: list[tuple[str, str, FakeError]] = []
            # App name -> URL of a Functions host serving its zip (tests/azure_host.py):
            # calls of its function URL go there once their key is checked.
            self.backends: dict[str, str] = {}
            # Application Insights application id -> its traces, as added.
            self.traces: dict[str, list[dict[str, Any]]] = {}
            # Blob Storage: container id (lower) -> blob name -> blob; the blocks staged
            # for a blob (container id, blob name) -> block id -> bytes.
            self.blobs: dict[str, dict[str, FakeBlob]] = {}
            self.blocks: dict[tuple[str, str], dict[str, bytes]] = {}
            self.blob_access = True  # the deploying identity holds a blob data role

    # -- hooks and queries for tests --------------------------------------------

    def add_resource_group(self, subscription: str, group: str) -> None:
        self.groups.add((subscription, group.lower()))

    def fail_next(
        self,
        method: str,
        contains: str,
        *,
        status: int = 500,
        code: str = "InternalServerError",
        message: str = "injected failure",
    ) -> None:
        """The next ``method`` request whose path contains ``contains`` fails so."""
        self._failures.append((method, contains, FakeError(status, code, message)))

    def add_storage_account(
        self,
        subscription: str,
        group: str,
        name: str,
        *,
        containers: tuple[str, ...] = (),
        tags: dict[str, str] | None = None,
    ) -> str:
        """An account someone else made (a data account, or one deployer did not make)."""
        self.add_resource_group(subscription, group)
        account_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.Storage/storageAccounts/{name}"
        )
        self.accounts[account_id.lower()] = self._account_body(
            account_id, name, {"location": "westeurope", "tags": tags or {}}
        )
        for container in containers:
            container_id = f"{account_id}/blobServices/default/containers/{container}"
            self.containers[container_id.lower()] = {
                "id": container_id,
                "name": container,
                "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
                "properties": {"publicAccess": "None"},
            }
        return account_id

    def add_key_vault(self, subscription: str, group: str, name: str, *, rbac: bool = True) -> str:
        """A key vault someone made; ``rbac``: it grants access through Azure RBAC
        (False: through access policies)."""
        self.add_resource_group(subscription, group)
        vault_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.KeyVault/vaults/{name}"
        )
        self.vaults[vault_id.lower()] = {
            "id": vault_id,
            "name": name,
            "type": "Microsoft.KeyVault/vaults",
            "location": "westeurope",
            "tags": {},
            "properties": {
                "tenantId": TENANT,
                "sku": {"family": "A", "name": "standard"},
                "vaultUri": f"https://{name}.vault.azure.net/",
                "enableRbacAuthorization": rbac,
                "provisioningState": "Succeeded",
            },
        }
        return vault_id

    def add_secret(self, vault_id: str, name: str, value: str, *, enabled: bool = True) -> str:
        """A secret of the vault ``vault_id`` with ``value`` (which the fake never serves)."""
        vault = self.vaults[vault_id.lower()]
        secret_id = f"{vault['id']}/secrets/{name}"
        uri = f"https://{vault['name']}.vault.azure.net/secrets/{name}"
        self.secrets[secret_id.lower()] = {
            "id": secret_id,
            "name": name,
            "type": "Microsoft.KeyVault/vaults/secrets",
            "location": vault["location"],
            "properties": {
                "attributes": {"enabled": enabled, "created": 1767225600, "updated": 1767225600},
                "secretUri": uri,
                "secretUriWithVersion": f"{uri}/{uuid.uuid4().hex}",
            },
        }
        self.secret_values[secret_id.lower()] = value
        return secret_id

    def add_trace(
        self,
        application_id: str,
        app: str,
        message: str,
        timestamp: str,
        *,
        instance: str = "instance-1",
        item_id: str | None = None,
    ) -> None:
        """A line function app ``app`` printed at ``timestamp`` (ISO, UTC, "Z")."""
        with self._lock:
            self.traces.setdefault(application_id, []).append(
                {
                    "timestamp": timestamp,
                    "itemId": item_id or str(uuid.uuid4()),
                    "message": message,
                    "cloud_RoleName": app,
                    "cloud_RoleInstance": instance,
                    "severityLevel": 1,
                }
            )

    def calls(self, *, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [
            request
            for request in self.requests
            if (method is None or request.method == method) and contains in request.path
        ]

    def changing_calls(self) -> list[Recorded]:
        """The requests that would change something in Azure."""
        return [request for request in self.requests if request.changes]

    # -- serving ----------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        data = handler.rfile.read(length) if length else b""
        body: Any = None
        if data and "json" in (handler.headers.get("Content-Type") or ""):
            body = json.loads(data)
        query = {key: values[0] for key, values in parse_qs(split.query).items()}
        path = unquote(split.path)
        recorded = Recorded(
            method=handler.command,
            path=path,
            query=query,
            body=body,
            headers={key.lower(): value for key, value in handler.headers.items()},
            data=data,
        )
        reply = Reply(404, {"error": {"code": "NoRoute", "message": f"no route {path}"}})
        forward: Forward | None = None
        with self._lock:
            self.requests.append(recorded)
            try:
                self._authorize(recorded)
                self._injected(recorded)
                for method, pattern, action in ROUTES:
                    match = pattern.match(path)
                    if method == handler.command and match:
                        result = getattr(self, f"_{action}")(recorded, **match.groupdict())
                        if isinstance(result, Forward):
                            forward = result
                            break
                        reply = result if isinstance(result, Reply) else Reply(200, result)
                        break
            except FakeError as error:
                reply = _error_reply(path, error)
        if forward is not None:  # outside the lock: calls of a function run concurrently
            # The key was checked by the route: the call goes on without it.
            pass_on(handler, forward.url, data, recorded.headers, FORWARDED_HEADERS)
            return
        if reply.raw is not None:
            encoded = reply.raw
        else:
            encoded = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", **reply.headers}
        handler.send_response(reply.status)
        handler.send_header("Content-Length", str(len(encoded)))
        handler.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(encoded)

    def _authorize(self, request: Recorded) -> None:
        if request.path == "/msi/token":
            if request.headers.get("x-identity-header") != IDENTITY_HEADER:
                raise FakeError(401, "Unauthorized", "wrong X-IDENTITY-HEADER")
            return
        if request.path.startswith("/sites/"):
            return  # a function's URL: its key is checked by the route
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            raise FakeError(
                401, "AuthenticationFailed", "Authentication failed: no valid bearer token."
            )

    def _injected(self, request: Recorded) -> None:
        for index, (method, contains, error) in enumerate(self._failures):
            if method == request.method and contains in request.path:
                del self._failures[index]
                raise error

    def _group(self, subscription: str, group: str) -> None:
        if (subscription, group.lower()) not in self.groups:
            raise FakeError(
                404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found."
            )

    def _operation(self, result: dict[str, Any] | None = None) -> str:
        operation_id = f"op-{next(self._counter)}"
        self.operations[operation_id] = {"status": "Succeeded", **(result or {})}
        return f"{self.endpoint}/operations/{operation_id}"

    def _get_operation(self, request: Recorded, id: str) -> Any:
        if id not in self.operations:
            raise _not_found("operations", id)
        return self.operations[id]

    # -- identity ---------------------------------------------------------------

    def _token(self, request: Recorded) -> dict[str, Any]:
        return {
            "access_token": TOKEN,
            "expires_on": str(int(datetime.datetime.now().timestamp()) + 3600),
            "resource": request.query.get("resource", ""),
            "token_type": "Bearer",
        }

    # -- Microsoft.Web ------------------------------------------------------------

    @staticmethod
    def _site_id(subscription: str, group: str, app: str) -> str:
        return (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Web/sites/"
            + app
        )

    def _list_sites(self, request: Recorded, subscription: str, group: str) -> dict[str, Any]:
        self._group(subscription, group)
        prefix = f"/subscriptions/{subscription}/resourcegroups/{group.lower()}/"
        return {"value": [site for key, site in self.sites.items() if key.startswith(prefix)]}

    def _site(self, subscription: str, group: str, app: str) -> dict[str, Any]:
        self._group(subscription, group)
        site = self.sites.get(self._site_id(subscription, group, app).lower())
        if site is None:
            raise _not_found("Microsoft.Web/sites", app)
        return site

    def _get_site(self, request: Recorded, subscription: str, group: str, app: str) -> Any:
        return self._site(subscription, group, app)

    def _put_site(self, request: Recorded, subscription: str, group: str, app: str) -> Any:
        self._group(subscription, group)
        site_id = self._site_id(subscription, group, app)
        body = request.body or {}
        existing = self.sites.get(site_id.lower())
        if existing is None and app.lower() in self.taken_site_names:
            raise FakeError(409, "Conflict", f"Website with given name {app} already exists.")
        properties = dict(body.get("properties") or {})
        plan = str(properties.get("serverFarmId") or "")
        if plan.lower() not in self.plans:
            raise FakeError(400, "BadRequest", f"Server farm {plan!r} does not exist.")
        storage = properties.get("functionAppConfig", {}).get("deployment", {}).get("storage", {})
        self._check_deployment_container(str(storage.get("value") or ""))
        _check_scale(properties.get("functionAppConfig", {}).get("scaleAndConcurrency") or {})
        site_config = dict(properties.pop("siteConfig", None) or {})
        settings = {
            item["name"]: item["value"] for item in site_config.pop("appSettings", None) or []
        }
        identity = body.get("identity") or {}
        if identity.get("type") == "SystemAssigned":
            kept = (existing or {}).get("identity") or {}
            identity = {
                "type": "SystemAssigned",
                "principalId": kept.get("principalId") or str(uuid.uuid4()),
                "tenantId": TENANT,
            }
        site = {
            "id": site_id,
            "name": app,
            "type": "Microsoft.Web/sites",
            "kind": body.get("kind"),
            "location": body.get("location"),
            "tags": body.get("tags") or {},
            "identity": identity or None,
            "properties": {
                **properties,
                "siteConfig": {**site_config, "appSettings": None},  # GET never shows them
                "state": "Running",
                "defaultHostName": f"{app}.azurewebsites.net",
                "enabledHostNames": [f"{app}.azurewebsites.net", f"{app}.scm.azurewebsites.net"],
                "lastModifiedTimeUtc": f"2026-01-01T00:00:{next(self._counter) % 60:02d}",
                "provisioningState": "Succeeded",
            },
        }
        self.sites[site_id.lower()] = site
        self.settings[site_id.lower()] = settings
        self.functions.setdefault(site_id.lower(), [])
        return Reply(200, site)  # Web answers a site PUT synchronously

    def _check_deployment_container(self, url: str) -> None:
        match = re.match(r"^https://([a-z0-9]+)\.blob\.core\.windows\.net/([^/]+)/?$", url)
        if not match:
            raise FakeError(400, "BadRequest", f"invalid deployment storage value {url!r}")
        account, container = match.groups()
        for key in self.containers:
            if key.endswith(
                f"/storageaccounts/{account}/blobservices/default/containers/{container}"
            ):
                return
        raise FakeError(400, "BadRequest", f"deployment container {url} does not exist")

    def _delete_site(self, request: Recorded, subscription: str, group: str, app: str) -> Any:
        site = self._site(subscription, group, app)
        key = site["id"].lower()
        for table in (self.sites, self.settings, self.functions, self.packages):
            table.pop(key, None)  # type: ignore[attr-defined]
        self.deployments.pop(app, None)
        return None

    def _list_settings(self, request: Recorded, subscription: str, group: str, app: str) -> Any:
        site = self._site(subscription, group, app)
        return {
            "id": f"{site['id']}/config/appsettings",
            "name": "appsettings",
            "properties": dict(self.settings[site["id"].lower()]),
        }

    def _list_functions(self, request: Recorded, subscription: str, group: str, app: str) -> Any:
        site = self._site(subscription, group, app)
        return {"value": self.functions.get(site["id"].lower(), [])}

    def _list_keys(
        self, request: Recorded, subscription: str, group: str, app: str, function: str
    ) -> Any:
        site = self._site(subscription, group, app)
        names = {entry["properties"]["name"] for entry in self.functions[site["id"].lower()]}
        if function not in names:
            raise _not_found(f"Microsoft.Web/sites/{app}/functions", function)
        key = self.keys.setdefault(f"{site['id'].lower()}/{function}", f"key-{uuid.uuid4().hex}")
        return {"properties": {"default": key}}

    def _list_host_keys(self, request: Recorded, subscription: str, group: str, app: str) -> Any:
        site = self._site(subscription, group, app)
        key = self.keys.setdefault(f"{site['id'].lower()}/_master", f"master-{uuid.uuid4().hex}")
        return {"masterKey": key, "functionKeys": {}, "systemKeys": {}}

    def _plan_id(self, subscription: str, group: str, plan: str) -> str:
        group_id = f"/subscriptions/{subscription}/resourceGroups/{group}"
        return f"{group_id}/providers/Microsoft.Web/serverfarms/{plan}"

    def _get_plan(self, request: Recorded, subscription: str, group: str, plan: str) -> Any:
        self._group(subscription, group)
        found = self.plans.get(self._plan_id(subscription, group, plan).lower())
        if found is None:
            raise _not_found("Microsoft.Web/serverFarms", plan)
        return found

    def _put_plan(self, request: Recorded, subscription: str, group: str, plan: str) -> Any:
        self._group(subscription, group)
        body = request.body or {}
        plan_id = self._plan_id(subscription, group, plan)
        self.plans[plan_id.lower()] = {
            "id": plan_id,
            "name": plan,
            "type": "Microsoft.Web/serverfarms",
            "kind": body.get("kind"),
            "location": body.get("location"),
            "tags": body.get("tags") or {},
            "sku": body.get("sku"),
            "properties": {**(body.get("properties") or {}), "provisioningState": "Succeeded"},
        }
        # Created asynchronously: done on the first poll, then read.
        return Reply(
            202,
            self.plans[plan_id.lower()],
            {"Azure-AsyncOperation": self._operation(), "Retry-After": "0"},
        )

    def _delete_plan(self, request: Recorded, subscription: str, group: str, plan: str) -> Any:
        found = self._get_plan(request, subscription, group, plan)
        if any(
            site["properties"].get("serverFarmId", "").lower() == found["id"].lower()
            for site in self.sites.values()
        ):
            raise FakeError(409, "Conflict", f"Server farm {plan} still hosts a site.")
        del self.plans[found["id"].lower()]
        return None

    def _check_site_name(self, request: Recorded) -> Any:
        name = str((request.body or {}).get("name", "")).lower()
        taken = name in self.taken_site_names or any(
            site["name"].lower() == name for site in self.sites.values()
        )
        return {
            "nameAvailable": not taken,
            "reason": "AlreadyExists" if taken else None,
            "message": f"Hostname '{name}' already exists." if taken else None,
        }

    # -- Microsoft.Storage ----------------------------------------------------------

    def _account_body(self, account_id: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": account_id,
            "name": name,
            "type": "Microsoft.Storage/storageAccounts",
            "location": body.get("location"),
            "kind": body.get("kind", "StorageV2"),
            "sku": body.get("sku") or {"name": "Standard_LRS"},
            "tags": body.get("tags") or {},
            "properties": {
                **(body.get("properties") or {}),
                "provisioningState": "Succeeded",
                # Path-style on the fake, as Azurite's: {name}.blob.core.windows.net in Azure.
                "primaryEndpoints": {"blob": f"{self.endpoint}/blob/{name}/"},
            },
        }

    def _account(self, subscription: str, group: str, account: str) -> dict[str, Any]:
        self._group(subscription, group)
        account_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.Storage/storageAccounts/{account}"
        )
        found = self.accounts.get(account_id.lower())
        if found is None:
            raise _not_found("Microsoft.Storage/storageAccounts", account)
        return found

    def _list_accounts(self, request: Recorded) -> Any:
        return {"value": list(self.accounts.values())}

    def _get_account(self, request: Recorded, subscription: str, group: str, account: str) -> Any:
        return self._account(subscription, group, account)

    def _put_account(self, request: Recorded, subscription: str, group: str, account: str) -> Any:
        self._group(subscription, group)
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise FakeError(400, "AccountNameInvalid", f"{account} is not a valid account name.")
        if account in self.taken_account_names:
            raise FakeError(409, "StorageAccountAlreadyTaken", f"{account} is already taken.")
        account_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.Storage/storageAccounts/{account}"
        )
        self.accounts[account_id.lower()] = self._account_body(
            account_id, account, request.body or {}
        )
        # Storage creates accounts asynchronously: 202 and a Location to poll.
        return Reply(202, None, {"Location": self._operation(), "Retry-After": "0"})

    def _delete_account(
        self, request: Recorded, subscription: str, group: str, account: str
    ) -> Any:
        found = self._account(subscription, group, account)
        del self.accounts[found["id"].lower()]
        prefix = f"{found['id'].lower()}/"
        for key in [key for key in self.containers if key.startswith(prefix)]:
            del self.containers[key]
            self.blobs.pop(key, None)  # a container's blobs go with it
        return None

    def _put_container(
        self, request: Recorded, subscription: str, group: str, account: str, container: str
    ) -> Any:
        found = self._account(subscription, group, account)
        container_id = f"{found['id']}/blobServices/default/containers/{container}"
        existed = container_id.lower() in self.containers
        self.containers[container_id.lower()] = {
            "id": container_id,
            "name": container,
            "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
            "properties": {**((request.body or {}).get("properties") or {})},
        }
        return Reply(200 if existed else 201, self.containers[container_id.lower()])

    def _get_container(
        self, request: Recorded, subscription: str, group: str, account: str, container: str
    ) -> Any:
        found = self._account(subscription, group, account)
        container_id = f"{found['id']}/blobServices/default/containers/{container}"
        if container_id.lower() not in self.containers:
            raise FakeError(404, "ContainerNotFound", "The specified container does not exist.")
        return self.containers[container_id.lower()]

    def _check_account_name(self, request: Recorded) -> Any:
        name = str((request.body or {}).get("name", ""))
        taken = name in self.taken_account_names or any(
            account["name"] == name for account in self.accounts.values()
        )
        return {
            "nameAvailable": not taken,
            "reason": "AlreadyExists" if taken else None,
            "message": f"The storage account named {name} is already taken." if taken else None,
        }

    # -- Microsoft.Authorization ------------------------------------------------------

    def _principals(self) -> set[str]:
        return {
            str((site.get("identity") or {}).get("principalId"))
            for site in self.sites.values()
            if (site.get("identity") or {}).get("principalId")
        }

    def _scope_exists(self, scope: str) -> bool:
        scope = scope.lower()
        tables = (self.accounts, self.containers, self.vaults, self.secrets)
        return any(scope in table for table in tables)

    def _put_assignment(self, request: Recorded, scope: str, id: str) -> Any:
        properties = (request.body or {}).get("properties") or {}
        principal = str(properties.get("principalId") or "")
        role = str(properties.get("roleDefinitionId") or "")
        if not self._scope_exists(scope):
            raise FakeError(404, "ResourceNotFound", f"scope {scope} does not exist")
        if principal not in self._principals() or self.unsettled > 0:
            if principal in self._principals():
                self.unsettled -= 1
            raise FakeError(
                400,
                "PrincipalNotFound",
                f"Principal {principal} does not exist in the directory {TENANT}.",
            )
        key = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{id}".lower()
        for other_key, other in self.assignments.items():
            same = (
                other["properties"]["principalId"] == principal
                and other["properties"]["roleDefinitionId"].lower() == role.lower()
                and other["properties"]["scope"].lower() == scope.lower()
            )
            if same and other_key != key:
                raise FakeError(409, "RoleAssignmentExists", "The role assignment already exists.")
        assignment = {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{id}",
            "name": id,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": role,
                "principalId": principal,
                "principalType": properties.get("principalType"),
                "scope": scope,
                "description": properties.get("description"),
            },
        }
        existed = key in self.assignments
        self.assignments[key] = assignment
        return Reply(200 if existed else 201, assignment)

    def _get_assignment(self, request: Recorded, scope: str, id: str) -> Any:
        key = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{id}".lower()
        if key not in self.assignments:
            raise FakeError(404, "RoleAssignmentNotFound", "The role assignment was not found.")
        return self.assignments[key]

    def _delete_assignment(self, request: Recorded, scope: str, id: str) -> Any:
        key = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{id}".lower()
        found = self.assignments.pop(key, None)
        if found is None:
            return Reply(204, None)
        return found

    def _list_assignments(self, request: Recorded, subscription: str) -> Any:
        wanted = re.fullmatch(r"principalId eq '([^']+)'", request.query.get("$filter", ""))
        return {
            "value": [
                assignment
                for assignment in self.assignments.values()
                if assignment["properties"]["scope"].startswith(f"/subscriptions/{subscription}")
                and (wanted is None or assignment["properties"]["principalId"] == wanted.group(1))
            ]
        }

    # -- Microsoft.KeyVault (its ARM API: vaults, and secrets' metadata) ---------------------

    @staticmethod
    def _require_api_version(request: Recorded) -> None:
        if set(request.query) != {"api-version"}:
            wrong = f"the fake takes api-version only, not {request.query}"
            raise FakeError(400, "InvalidQueryParameter", wrong)

    def _list_vaults(self, request: Recorded, subscription: str) -> Any:
        self._require_api_version(request)
        prefix = f"/subscriptions/{subscription}/".lower()
        return {"value": [vault for key, vault in self.vaults.items() if key.startswith(prefix)]}

    def _get_secret(
        self, request: Recorded, subscription: str, group: str, vault: str, secret: str
    ) -> Any:
        self._require_api_version(request)
        self._group(subscription, group)
        vault_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.KeyVault/vaults/{vault}"
        )
        if vault_id.lower() not in self.vaults:
            raise _not_found("Microsoft.KeyVault/vaults", vault)
        found = self.secrets.get(f"{vault_id}/secrets/{secret}".lower())
        if found is None:
            raise _not_found("Microsoft.KeyVault/vaults/secrets", f"{vault}/{secret}")
        return found  # never its value: ARM does not answer it

    # -- Kudu ---------------------------------------------------------------------------

    def _site_by_name(self, app: str) -> dict[str, Any]:
        for site in self.sites.values():
            if site["name"] == app:
                return site
        raise _not_found("Microsoft.Web/sites", app)

    def _publish(self, request: Recorded, app: str) -> Any:
        site = self._site_by_name(app)
        if request.query.get("RemoteBuild") != "false":
            raise FakeError(400, "BadRequest", "deployer publishes without a remote build")
        if request.headers.get("content-type") != "application/zip":
            raise FakeError(415, "UnsupportedMediaType", "send application/zip")
        if self.busy > 0:
            self.busy -= 1
            raise FakeError(409, "Conflict", "There is a deployment currently in progress.")
        try:
            archive = zipfile.ZipFile(io.BytesIO(request.data))
        except zipfile.BadZipFile:
            raise FakeError(400, "BadRequest", "the body is not a zip") from None
        key = site["id"].lower()
        self.packages[key] = request.data
        deployment_id = uuid.uuid4().hex
        self.deployments[app] = {
            "id": deployment_id,
            "status": 4,  # success: Kudu says so even when the host registers nothing
            "complete": True,
            "status_text": "",
        }
        self.functions[key] = (
            [] if self.register_nothing else _registered(site, archive, self.endpoint)
        )
        return Reply(202, deployment_id)

    def _latest_deployment(self, request: Recorded, app: str) -> Any:
        self._site_by_name(app)
        if app not in self.deployments:
            raise FakeError(404, "NotFound", "no deployment yet")
        return self.deployments[app]

    # -- Blob Storage (the accounts' data plane) -------------------------------------------

    def _blob_container(
        self, request: Recorded, account: str, container: str
    ) -> tuple[str, dict[str, FakeBlob]]:
        """The container's id and blobs; what Blob Storage refuses before any operation."""
        if not request.headers.get("x-ms-version"):
            raise FakeError(400, "MissingRequiredHeader", "x-ms-version is required.")
        if not self.blob_access:
            raise FakeError(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )
        suffix = f"/storageaccounts/{account}/blobservices/default/containers/{container}"
        for key in self.containers:
            if key.endswith(suffix):
                return key, self.blobs.setdefault(key, {})
        raise FakeError(404, "ContainerNotFound", "The specified container does not exist.")

    def _stored(self, data: bytes, request: Recorded) -> FakeBlob:
        return FakeBlob(
            data=data,
            content_type=request.headers.get("x-ms-blob-content-type")
            or "application/octet-stream",
            etag=f'"0x{uuid.uuid4().hex[:15].upper()}"',
            modified=datetime.datetime.now(datetime.timezone.utc),
        )

    def _put_blob(self, request: Recorded, account: str, container: str, blob: str) -> Any:
        key, blobs = self._blob_container(request, account, container)
        comp = request.query.get("comp")
        if comp == "block":
            block_id = request.query.get("blockid")
            if not block_id:
                raise FakeError(400, "InvalidQueryParameterValue", "blockid is required.")
            self.blocks.setdefault((key, blob), {})[block_id] = request.data
            return Reply(201, None, {"Content-Type": "application/xml"}, raw=b"")
        if comp == "blocklist":
            staged = self.blocks.get((key, blob), {})
            try:
                ids = [element.text or "" for element in ElementTree.fromstring(request.data)]
            except ElementTree.ParseError:
                raise FakeError(400, "InvalidXmlDocument", "the block list is not XML") from None
            if any(block_id not in staged for block_id in ids):
                raise FakeError(400, "InvalidBlockList", "The specified block list is invalid.")
            data = b"".join(staged[block_id] for block_id in ids)
        elif comp is None:
            if request.headers.get("x-ms-blob-type") != "BlockBlob":
                raise FakeError(400, "InvalidHeaderValue", "the fake keeps block blobs only")
            data = request.data
        else:
            raise FakeError(400, "InvalidQueryParameterValue", f"the fake has no comp={comp}")
        if request.headers.get("if-none-match") == "*" and blob in blobs:
            raise FakeError(409, "BlobAlreadyExists", "The specified blob already exists.")
        stored = blobs[blob] = self._stored(data, request)
        self.blocks.pop((key, blob), None)
        return Reply(
            201,
            None,
            {
                "Content-Type": "application/xml",
                "ETag": stored.etag,
                "Last-Modified": stored.last_modified,
                "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
                "x-ms-request-server-encrypted": "true",
            },
            raw=b"",
        )

    def _get_blob(self, request: Recorded, account: str, container: str, blob: str) -> Any:
        _, blobs = self._blob_container(request, account, container)
        found = blobs.get(blob)
        if found is None:
            raise FakeError(404, "BlobNotFound", "The specified blob does not exist.")
        if request.headers.get("if-match") not in (None, "*", found.etag):
            raise FakeError(412, "ConditionNotMet", "The condition specified was not met.")
        headers = {
            "Content-Type": found.content_type,
            "ETag": found.etag,
            "Last-Modified": found.last_modified,
            "x-ms-blob-type": "BlockBlob",
            "Accept-Ranges": "bytes",
        }
        wanted = request.headers.get("x-ms-range") or request.headers.get("range")
        if wanted is None:
            return Reply(200, None, headers, raw=found.data)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
        if match is None:
            raise FakeError(400, "InvalidRange", f"the fake does not read range {wanted!r}")
        size = len(found.data)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            raise FakeError(416, "InvalidRange", "The range specified is invalid.")
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Reply(206, None, headers, raw=found.data[start : end + 1])

    def _delete_blob(self, request: Recorded, account: str, container: str, blob: str) -> Any:
        _, blobs = self._blob_container(request, account, container)
        if blobs.pop(blob, None) is None:
            raise FakeError(404, "BlobNotFound", "The specified blob does not exist.")
        return Reply(202, None, {"x-ms-delete-type-permanent": "true"}, raw=b"")

    def _list_blobs(self, request: Recorded, account: str, container: str) -> Any:
        if request.query.get("restype") != "container" or request.query.get("comp") != "list":
            raise FakeError(400, "InvalidQueryParameterValue", "the fake lists blobs only")
        if set(request.query) - {"restype", "comp", "prefix", "include", "maxresults"}:
            raise FakeError(400, "InvalidQueryParameterValue", f"the fake takes {request.query}")
        _, blobs = self._blob_container(request, account, container)
        prefix = request.query.get("prefix", "")
        items = "".join(
            f"<Blob><Name>{escape(name)}</Name><Properties>"
            f"<Creation-Time>{blob.last_modified}</Creation-Time>"
            f"<Last-Modified>{blob.last_modified}</Last-Modified>"
            f"<Etag>{escape(blob.etag)}</Etag>"
            f"<Content-Length>{len(blob.data)}</Content-Length>"
            f"<Content-Type>{escape(blob.content_type)}</Content-Type>"
            "<BlobType>BlockBlob</BlobType></Properties></Blob>"
            for name, blob in sorted(blobs.items())
            if name.startswith(prefix)
        )
        document = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="{self.endpoint}/blob/{account}/" '
            f'ContainerName="{escape(container)}"><Prefix>{escape(prefix)}</Prefix>'
            f"<Blobs>{items}</Blobs><NextMarker /></EnumerationResults>"
        )
        return Reply(200, None, {"Content-Type": "application/xml"}, raw=document.encode())

    def blob_names(self, account: str, container: str, prefix: str = "") -> list[str]:
        """The names of the blobs in ``container`` of ``account`` (a test's view)."""
        suffix = f"/storageaccounts/{account}/blobservices/default/containers/{container}"
        for key, blobs in self.blobs.items():
            if key.endswith(suffix):
                return sorted(name for name in blobs if name.startswith(prefix))
        return []

    def blob(self, account: str, container: str, name: str) -> bytes:
        suffix = f"/storageaccounts/{account}/blobservices/default/containers/{container}"
        return next(blobs[name].data for key, blobs in self.blobs.items() if key.endswith(suffix))

    # -- a function's URL -----------------------------------------------------------------

    def _invoke(self, request: Recorded, app: str, route: str) -> Any:
        site = self._site_by_name(app)
        key = site["id"].lower()
        for entry in self.functions.get(key, []):
            bindings = entry["properties"]["config"]["bindings"]
            http = next((b for b in bindings if b["type"] == "httpTrigger"), None)
            if http is None or http.get("route") != route:
                continue
            given = request.headers.get("x-functions-key") or request.query.get("code")
            master = self.keys.get(f"{key}/_master")
            if http.get("authLevel") == "function":
                wanted = self.keys.get(f"{key}/{entry['properties']['name']}")
                if given is None or given not in (wanted, master):
                    raise FakeError(401, "Unauthorized", "a function key is needed")
            elif http.get("authLevel") == "admin" and (given is None or given != master):
                raise FakeError(401, "Unauthorized", "the master key is needed")
            if app in self.backends:
                return Forward(f"{self.backends[app]}/api/{route}")
            return {"run_id": "fake-run", "status": "succeeded", "predictions": request.body}
        raise _not_found("functions", route)

    # -- Application Insights' query API ---------------------------------------------------

    def _query(self, request: Recorded, application: str) -> Any:
        if application not in self.traces:
            raise FakeError(404, "PathNotFoundError", f"application {application} not found")
        body = request.body or {}
        stages = str(body.get("query") or "").split("\n| ")
        if stages[0] != "traces":
            raise FakeError(400, "BadArgumentError", f"the fake reads traces, not {stages[0]!r}")
        rows = list(self.traces[application])
        columns = list(TRACE_COLUMNS)
        timespan = body.get("timespan")
        if timespan is not None:
            start, _, end = str(timespan).partition("/")
            if not (re.fullmatch(TIME, start) and re.fullmatch(TIME, end)):
                raise FakeError(400, "BadArgumentError", f"timespan {timespan!r}: START/END")
            rows = [row for row in rows if _at(start) <= _at(row["timestamp"]) <= _at(end)]
        for stage in stages[1:]:
            for pattern, kind in QUERY_STAGES:
                match = pattern.match(stage)
                if match is not None:
                    rows, columns = _apply_stage(kind, match.group("value"), rows, columns)
                    break
            else:
                raise FakeError(400, "BadArgumentError", f"the fake does not know {stage!r}")
        return {
            "tables": [
                {
                    "name": "PrimaryResult",
                    "columns": [{"name": name, "type": TRACE_COLUMNS[name]} for name in columns],
                    "rows": [[row[name] for name in columns] for row in rows],
                }
            ]
        }


def _error_reply(path: str, error: FakeError) -> Reply:
    """ARM's JSON error; Blob Storage's XML one, its code also in x-ms-error-code."""
    if not path.startswith("/blob/"):
        return Reply(error.status, {"error": {"code": error.code, "message": error.message}})
    document = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message></Error>"
    )
    headers = {"Content-Type": "application/xml", "x-ms-error-code": error.code}
    return Reply(error.status, None, headers, raw=document.encode())


def _check_scale(scale: dict[str, Any]) -> None:
    """A site's scaleAndConcurrency as Flex takes it (400, naming what is wrong, otherwise)."""
    triggers = scale.get("triggers") or {}
    http = triggers.get("http") or {}
    unknown = [
        *sorted(set(scale) - SCALE_KEYS),
        *sorted(f"triggers.{key}" for key in set(triggers) - {"http"}),
        *sorted(f"triggers.http.{key}" for key in set(http) - {"perInstanceConcurrency"}),
    ]
    if unknown:
        raise FakeError(400, "BadRequest", f"scaleAndConcurrency has no {unknown[0]!r}")
    for key, value, allowed in (
        ("maximumInstanceCount", scale.get("maximumInstanceCount"), INSTANCE_COUNTS),
        ("instanceMemoryMB", scale.get("instanceMemoryMB"), INSTANCE_MEMORY_MB),
        ("http perInstanceConcurrency", http.get("perInstanceConcurrency"), HTTP_CONCURRENCY),
    ):
        if value is not None and value not in allowed:
            raise FakeError(400, "BadRequest", f"{key} {value!r} is out of Flex's range")


def _at(text: str) -> tuple[str, int]:
    """An ISO time as a sortable key (its fraction to 7 digits, as Kusto keeps it)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    return head, int(fraction.ljust(7, "0"))


def _apply_stage(
    kind: str, value: str, rows: list[dict[str, Any]], columns: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    if kind == "role":
        return [row for row in rows if row["cloud_RoleName"] == json.loads(value)], columns
    if kind == "from":
        return [row for row in rows if _at(row["timestamp"]) >= _at(value)], columns
    if kind == "to":
        return [row for row in rows if _at(row["timestamp"]) <= _at(value)], columns
    if kind == "contains":
        needle = json.loads(value).lower()  # Kusto's contains ignores case
        return [row for row in rows if needle in row["message"].lower()], columns
    if kind == "top":
        return sorted(rows, key=lambda row: _at(row["timestamp"]))[: int(value)], columns
    projected = value.split(", ")
    unknown = [name for name in projected if name not in TRACE_COLUMNS]
    if unknown:
        raise FakeError(400, "BadArgumentError", f"traces has no column {unknown[0]!r}")
    return rows, projected


def _registered(
    site: dict[str, Any], archive: zipfile.ZipFile, endpoint: str
) -> list[dict[str, Any]]:
    """The functions Azure would list once the host loaded the app: those
    function_app.py declares for the bundle's manifest (providers/azure/app_package.py)."""
    triggers: list[dict[str, Any]] = []
    manifest_name = ""
    for name in archive.namelist():
        if name.endswith("manifest.json"):
            try:
                manifest = json.loads(archive.read(name))
            except ValueError:
                continue
            if isinstance(manifest, dict) and "triggers" in manifest and "code_hash" in manifest:
                triggers = list(manifest["triggers"])
                manifest_name = manifest.get("name", "")
                break
    app = site["name"]
    # function_app.py always declares the HTTP function: with no Http trigger
    # its auth level is admin (only the master key, which invoke uses, may call it).
    http = next((trigger for trigger in triggers if trigger.get("type") == "http"), None)
    level = "admin" if http is None else "anonymous" if http.get("public") else "function"
    route = str(manifest_name)
    functions: list[tuple[str, dict[str, Any], str]] = [
        (
            "http",
            {
                "type": "httpTrigger",
                "direction": "in",
                "name": "req",
                "route": route,
                "authLevel": level,
                "methods": ["post"],
            },
            # Azure names the app's own host; here, the fake.
            f"{endpoint}/sites/{app}/api/{route}",
        )
    ]
    schedules = [trigger for trigger in triggers if trigger.get("type") in ("cron", "every")]
    for index, _ in enumerate(schedules):
        functions.append(
            (
                f"schedule_{index}",
                {"type": "timerTrigger", "direction": "in", "name": "timer"},
                "",
            )
        )
    return [
        {
            "id": f"{site['id']}/functions/{name}",
            "name": f"{app}/{name}",
            "type": "Microsoft.Web/sites/functions",
            "properties": {
                "name": name,
                "config": {"bindings": [binding]},
                "invoke_url_template": url,
                "language": "python",
                "isDisabled": False,
            },
        }
        for name, binding, url in functions
    ]
