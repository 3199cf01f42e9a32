"""A loopback fake of the Google Cloud control planes the GCP provider calls.

No emulator exists for Cloud Functions, Cloud Scheduler, Cloud Run's IAM or
IAM's service accounts, so the tests that use this fake are contract tests,
and are named so
(``test_contract_...``): the official client libraries, speaking REST as they
do in production, send their requests here; the fake keeps the resources in
memory and records every request (method, path, query, JSON body), so a test
can assert both the resources that result and the exact calls that made them.
It checks only what Google documents and deployer relies on: a function builds
from an object uploaded to the URL generateUploadUrl handed out, names are
unique, a missing resource is a 404 in Google's error format. It does not
build or run anything.

Served (paths as the clients send them with ``transport="rest"``):

    Cloud Functions v2   POST   /v2/{location}/functions:generateUploadUrl
                         POST   /v2/{location}/functions?functionId=ID
                         GET    /v2/{location}/functions
                         GET    /v2/{location}/functions/ID
                         PATCH  /v2/{location}/functions/ID?updateMask=a.b,c
                         DELETE /v2/{location}/functions/ID
                         GET    /v2/{location}/operations/ID   (always done)
    Cloud Run v2 IAM     GET    /v2/{location}/services/ID:getIamPolicy
                         POST   /v2/{location}/services/ID:setIamPolicy
    IAM v1               GET    /v1/projects/{project}/serviceAccounts/EMAIL
                         POST   /v1/projects/{project}/serviceAccounts
                         DELETE /v1/projects/{project}/serviceAccounts/EMAIL
    Cloud Logging v2     POST   /v2/entries:list
    Secret Manager v1    GET    /v1/projects/{project}/secrets/ID
                         GET    /v1/projects/{project}/secrets/ID:getIamPolicy
                         POST   /v1/projects/{project}/secrets/ID:setIamPolicy
    Cloud Scheduler v1   POST   /v1/{location}/jobs
                         GET    /v1/{location}/jobs
                         GET    /v1/{location}/jobs/ID
                         PATCH  /v1/{location}/jobs/ID?updateMask=...
                         DELETE /v1/{location}/jobs/ID
    the signed URL       PUT    /upload/ID
    a function's URL     POST   /invoke/{project}/{region}/ID

A function's URL answers like the deployed runtime would (JSON in, JSON out),
echoing the records it was sent as the predictions; without a bearer token it
answers 401, as Cloud Run does.

Like Google, the fake refuses a function, an invoker binding or a job that
names a service account of the project (``...@{project}.iam.gserviceaccount.com``)
that does not exist (400 "Service account ... does not exist"), so the order
in which deployer makes accounts and uses them is checked. ``unsettled`` makes
the next N such references to an account that does exist fail the same way,
as IAM does for a few seconds after an account is made.

Log entries are what tests put there (``add_log_entry``). entries:list serves
them the way Cloud Logging does for the filter deployer sends, clauses joined by
`` AND ``: ``resource.type="cloud_run_revision"``,
``resource.labels.service_name="ID"``, ``timestamp>="RFC3339"``,
``timestamp<="RFC3339"`` and ``textPayload:"TEXT"``; ``orderBy`` "timestamp
asc" only, ``pageSize`` up to 1000, and a ``pageToken`` only with the request
that was given it. Any other clause, order or project is answered 400, so a
filter the fake does not understand never passes as one that matched.

Secrets are what tests put there (``add_secret``, with their values as
versions). Their values are never served: the fake has no route that reads
one, so a deploy that tried would fail. A secret's policy is set whole, with
the etag it was read with (another is answered 409, as IAM does for a change
made in between), and names only accounts that exist. A function's
``secretEnvironmentVariables`` ({key, projectId, secret, version} each, and
nothing else; no ``secretVolumes``) must name secrets and versions that exist,
that its account may read (roles/secretmanager.secretAccessor on the secret,
as Cloud Functions checks when it deploys), under keys that are not also plain
variables. ``maxInstanceCount`` is a positive number, and reads back as 100,
the platform's default, when unset.

Operations are returned not done and are done on the first poll, so waiting
on them is exercised. ``fail_next_build`` makes the next create or update
operation fail the way a failed Cloud Build does, after the update was stored.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from forwarding import pass_on, reply

DEFAULT_SERVICE_ACCOUNT = "123456789012-compute@developer.gserviceaccount.com"
FUNCTION_TYPE = "type.googleapis.com/google.cloud.functions.v2.Function"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"

LOCATION = r"projects/(?P<project>[^/]+)/locations/(?P<region>[^/:]+)"
ACCOUNTS = r"^/v1/projects/(?P<project>[^/]+)/serviceAccounts"
SECRET = r"^/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/:]+)"
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
SECRET_VARIABLE_FIELDS = frozenset({"key", "projectId", "secret", "version"})
DEFAULT_MAX_INSTANCES = 100  # what Cloud Functions reads an unset count back as
# IAM's rule for account ids.
ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
INVOKE_ROUTE = re.compile(r"^/invoke/(?P<project>[^/]+)/(?P<region>[^/]+)/(?P<id>[^/]+)$")
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(rf"{ACCOUNTS}/(?P<email>[^/:]+)$"), "get_account"),
    ("POST", re.compile(rf"{ACCOUNTS}$"), "create_account"),
    ("DELETE", re.compile(rf"{ACCOUNTS}/(?P<email>[^/:]+)$"), "delete_account"),
    ("POST", re.compile(rf"^/v2/{LOCATION}/functions:generateUploadUrl$"), "generate_upload_url"),
    ("POST", re.compile(rf"^/v2/{LOCATION}/functions$"), "create_function"),
    ("GET", re.compile(rf"^/v2/{LOCATION}/functions$"), "list_functions"),
    ("GET", re.compile(rf"^/v2/{LOCATION}/functions/(?P<id>[^/:]+)$"), "get_function"),
    ("PATCH", re.compile(rf"^/v2/{LOCATION}/functions/(?P<id>[^/:]+)$"), "update_function"),
    ("DELETE", re.compile(rf"^/v2/{LOCATION}/functions/(?P<id>[^/:]+)$"), "delete_function"),
    ("GET", re.compile(rf"^/v2/{LOCATION}/operations/(?P<id>[^/:]+)$"), "get_operation"),
    ("GET", re.compile(rf"^/v2/{LOCATION}/services/(?P<id>[^/:]+):getIamPolicy$"), "get_policy"),
    ("POST", re.compile(rf"^/v2/{LOCATION}/services/(?P<id>[^/:]+):setIamPolicy$"), "set_policy"),
    ("POST", re.compile(r"^/v2/entries:list$"), "list_entries"),
    ("GET", re.compile(rf"{SECRET}$"), "get_secret"),
    ("GET", re.compile(rf"{SECRET}:getIamPolicy$"), "get_secret_policy"),
    ("POST", re.compile(rf"{SECRET}:setIamPolicy$"), "set_secret_policy"),
    ("POST", re.compile(rf"^/v1/{LOCATION}/jobs$"), "create_job"),
    ("GET", re.compile(rf"^/v1/{LOCATION}/jobs$"), "list_jobs"),
    ("GET", re.compile(rf"^/v1/{LOCATION}/jobs/(?P<id>[^/:]+)$"), "get_job"),
    ("PATCH", re.compile(rf"^/v1/{LOCATION}/jobs/(?P<id>[^/:]+)$"), "update_job"),
    ("DELETE", re.compile(rf"^/v1/{LOCATION}/jobs/(?P<id>[^/:]+)$"), "delete_job"),
    ("PUT", re.compile(r"^/upload/(?P<id>[^/]+)$"), "upload"),
    ("POST", INVOKE_ROUTE, "invoke"),
]


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


class FakeError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def _not_found(what: str) -> FakeError:
    return FakeError(404, "NOT_FOUND", f"{what} not found")


def _camel(path: str) -> str:
    return ".".join(
        re.sub(r"_([a-z])", lambda match: match.group(1).upper(), part) for part in path.split(".")
    )


def _apply_mask(target: dict[str, Any], source: dict[str, Any], mask: str) -> None:
    """Copy the masked fields of ``source`` into ``target``, as a PATCH does."""
    for path in filter(None, mask.split(",")):
        parts = _camel(path).split(".")
        into, origin = target, source
        for part in parts[:-1]:
            into = into.setdefault(part, {})
            origin = origin.get(part, {}) if isinstance(origin, dict) else {}
        if isinstance(origin, dict) and parts[-1] in origin:
            into[parts[-1]] = copy.deepcopy(origin[parts[-1]])
        else:
            into.pop(parts[-1], None)


class FakeGoogleCloud:
    """The fake's state and its HTTP server on a free loopback port."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.reset()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeGoogleCloud:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests: list[Recorded] = []
            self.functions: dict[str, dict[str, Any]] = {}  # full name -> resource
            self.operations: dict[str, dict[str, Any]] = {}
            self.policies: dict[str, dict[str, Any]] = {}  # service name -> policy
            self.jobs: dict[str, dict[str, Any]] = {}  # full name -> job
            self.uploads: dict[str, bytes] = {}  # object name -> zip bytes
            self.accounts: dict[str, dict[str, Any]] = {}  # email -> service account
            self.unsettled = 0  # references to an existing account still refused
            self.refused: list[str] = []  # accounts a reference to was refused for
            self.fail_next_build: str | None = None
            # Function id -> URL of a functions-framework serving it: its calls go there.
            self.backends: dict[str, str] = {}
            self.log_entries: list[dict[str, Any]] = []  # LogEntry resources, as added
            self.secrets: dict[str, dict[str, Any]] = {}  # projects/P/secrets/S -> secret
            self.secret_values: dict[str, list[bytes]] = {}  # its versions' values, 1, 2...
            self.secret_policies: dict[str, dict[str, Any]] = {}  # its IAM policy

    def add_secret(self, project: str, secret: str, *values: bytes) -> str:
        """A secret someone made, with a version for each value; its resource name."""
        name = f"projects/{project}/secrets/{secret}"
        with self._lock:
            self.secrets[name] = {
                "name": name,
                "replication": {"automatic": {}},
                "createTime": "2026-01-01T00:00:00Z",
                "etag": '"1"',
            }
            self.secret_values[name] = list(values)
        return name

    def add_log_entry(
        self,
        service: str,
        text: str,
        timestamp: str,
        *,
        project: str = "",
        instance: str = "instance-1",
        insert_id: str | None = None,
    ) -> dict[str, Any]:
        """A line the Cloud Run service ``service`` printed at ``timestamp`` (RFC 3339)."""
        entry = {
            "logName": f"projects/{project}/logs/run.googleapis.com%2Fstderr",
            "resource": {
                "type": "cloud_run_revision",
                "labels": {"service_name": service, "project_id": project},
            },
            "labels": {"instanceId": instance},
            "textPayload": text,
            "timestamp": timestamp,
            "receiveTimestamp": timestamp,
            "insertId": insert_id or f"insert-{next(self._counter)}",
        }
        with self._lock:
            self.log_entries.append(entry)
        return entry

    # -- queries for tests ----------------------------------------------------

    def calls(self, *, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [
            request
            for request in self.requests
            if (method is None or request.method == method) and contains in request.path
        ]

    # -- serving ----------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        data = handler.rfile.read(length) if length else b""
        body: Any = None
        if data and "json" in (handler.headers.get("Content-Type") or ""):
            body = json.loads(data)
        query = {key: values[0] for key, values in parse_qs(split.query).items()}
        recorded = Recorded(
            method=handler.command,
            path=split.path,
            query=query,
            body=body,
            headers={key.lower(): value for key, value in handler.headers.items()},
            data=data,
        )
        status, reply = 404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no route"}}
        if self._forward(handler, recorded):
            return
        with self._lock:
            self.requests.append(recorded)
            for method, pattern, action in ROUTES:
                match = pattern.match(split.path)
                if method == handler.command and match:
                    try:
                        status, reply = (
                            200,
                            getattr(self, f"_{action}")(recorded, **match.groupdict()),
                        )
                    except FakeError as error:
                        status = error.code
                        reply = {
                            "error": {
                                "code": error.code,
                                "status": error.status,
                                "message": error.message,
                            }
                        }
                    break
        encoded = json.dumps(reply).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(encoded)))
        handler.end_headers()
        handler.wfile.write(encoded)

    def _forward(self, handler: BaseHTTPRequestHandler, recorded: Recorded) -> bool:
        """A call of a function URL whose function runs for real (``backends``): Cloud
        Run's part (an identity token is required), then the request as it came, to
        functions-framework; outside the lock, so that calls run concurrently."""
        match = INVOKE_ROUTE.match(recorded.path)
        backend = self.backends.get(match.group("id")) if match else None
        if backend is None:
            return False
        with self._lock:
            self.requests.append(recorded)
        if not recorded.headers.get("authorization", "").startswith("Bearer "):
            reply(handler, 401, b"Unauthorized", "text/plain")  # Cloud Run's own answer
        else:
            keep = ("content-type", "authorization", "x-deployer-trigger")
            pass_on(handler, backend, recorded.data, recorded.headers, keep)
        return True

    def _operation(self, project: str, region: str, result: dict[str, Any]) -> dict[str, Any]:
        name = f"projects/{project}/locations/{region}/operations/operation-{next(self._counter)}"
        self.operations[name] = {"name": name, "done": True, **result}
        return {"name": name, "done": False}

    def _function_result(self, project: str, region: str, function: dict[str, Any]) -> dict:
        if self.fail_next_build is not None:
            message, self.fail_next_build = self.fail_next_build, None
            return self._operation(project, region, {"error": {"code": 9, "message": message}})
        return self._operation(
            project, region, {"response": {"@type": FUNCTION_TYPE, **copy.deepcopy(function)}}
        )

    # -- Cloud Functions v2 -------------------------------------------------------

    def _generate_upload_url(self, request: Recorded, project: str, region: str) -> dict:
        token = f"upload-{next(self._counter)}"
        return {
            "uploadUrl": f"{self.endpoint}/upload/{token}",
            "storageSource": {
                "bucket": f"gcf-v2-uploads-{project}-{region}",
                "object": f"{token}.zip",
            },
        }

    def _upload(self, request: Recorded, id: str) -> dict:
        if request.headers.get("content-type") != "application/zip":
            raise FakeError(403, "PERMISSION_DENIED", "the URL is signed for application/zip")
        self.uploads[f"{id}.zip"] = request.data
        return {}

    def _check_source(self, function: dict[str, Any]) -> None:
        source = function.get("buildConfig", {}).get("source", {}).get("storageSource", {})
        if source.get("object") not in self.uploads:
            raise FakeError(400, "INVALID_ARGUMENT", f"source {source!r} was never uploaded")

    def _finish(self, function: dict[str, Any], project: str, region: str, id: str) -> None:
        """Fill in the output-only fields Google sets."""
        service = function.setdefault("serviceConfig", {})
        url = f"{self.endpoint}/invoke/{project}/{region}/{id}"
        service["service"] = f"projects/{project}/locations/{region}/services/{id}"
        service["uri"] = url
        service.setdefault("serviceAccountEmail", DEFAULT_SERVICE_ACCOUNT)
        service.setdefault("maxInstanceCount", DEFAULT_MAX_INSTANCES)
        service["revision"] = f"{id}-{next(self._counter):05d}-abc"
        function["url"] = url
        function["state"] = "ACTIVE"
        function["updateTime"] = f"2026-01-01T00:00:{next(self._counter) % 60:02d}Z"

    def _check_accounts(self, project: str, emails: list[str]) -> None:
        """Refuse a reference to an account of the project that IAM does not know (yet)."""
        for email in emails:
            if not email.endswith(f"@{project}.iam.gserviceaccount.com"):
                continue  # Google's own accounts, other projects'
            if email not in self.accounts or self.unsettled > 0:
                if email in self.accounts:
                    self.unsettled -= 1
                self.refused.append(email)
                raise FakeError(400, "INVALID_ARGUMENT", f"Service account {email} does not exist.")

    def _check_service(self, project: str, function: dict[str, Any]) -> None:
        """The secret variables and the instance count, as Cloud Functions checks them."""
        service = function.get("serviceConfig", {})
        if "secretVolumes" in service:
            raise FakeError(400, "INVALID_ARGUMENT", "the fake does not serve secretVolumes")
        count = service.get("maxInstanceCount", DEFAULT_MAX_INSTANCES)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise FakeError(400, "INVALID_ARGUMENT", f"maxInstanceCount {count!r}")
        account = service.get("serviceAccountEmail") or DEFAULT_SERVICE_ACCOUNT
        plain = set(service.get("environmentVariables", {}))
        keys: set[str] = set()
        for variable in service.get("secretEnvironmentVariables", []):
            unknown = set(variable) - SECRET_VARIABLE_FIELDS
            if unknown or not {"key", "secret", "version"} <= set(variable):
                raise FakeError(400, "INVALID_ARGUMENT", f"secret variable {variable!r}")
            key = variable["key"]
            if key in keys or key in plain:
                raise FakeError(400, "INVALID_ARGUMENT", f"variable {key} is set twice")
            keys.add(key)
            name = f"projects/{variable.get('projectId') or project}/secrets/{variable['secret']}"
            version = variable["version"]
            if name not in self.secrets or not (
                version == "latest"
                and self.secret_values[name]
                or version.isdigit()
                and 1 <= int(version) <= len(self.secret_values[name])
            ):
                raise FakeError(
                    400, "INVALID_ARGUMENT", f"Secret {name}/versions/{version} was not found"
                )
            readers = {
                member
                for binding in self.secret_policies.get(name, {}).get("bindings", [])
                if binding["role"] == SECRET_ACCESSOR and not binding.get("condition")
                for member in binding["members"]
            }
            if f"serviceAccount:{account}" not in readers:
                raise FakeError(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission denied on secret: {name}/versions/{version} for Revision "
                    f"service account {account}. The service account used must be granted "
                    f"the 'Secret Manager Secret Accessor' role ({SECRET_ACCESSOR})",
                )

    def _create_function(self, request: Recorded, project: str, region: str) -> dict:
        id = request.query.get("functionId", "")
        name = f"projects/{project}/locations/{region}/functions/{id}"
        if name in self.functions:
            raise FakeError(409, "ALREADY_EXISTS", f"function {name} already exists")
        function = copy.deepcopy(request.body)
        self._check_source(function)
        account = function.get("serviceConfig", {}).get("serviceAccountEmail")
        self._check_accounts(project, [account] if account else [])
        self._check_service(project, function)
        function["name"] = name
        function["createTime"] = "2026-01-01T00:00:00Z"
        self._finish(function, project, region, id)
        self.functions[name] = function
        return self._function_result(project, region, function)

    def _list_functions(self, request: Recorded, project: str, region: str) -> dict:
        prefix = f"projects/{project}/locations/{region}/functions/"
        return {"functions": [f for name, f in self.functions.items() if name.startswith(prefix)]}

    def _get_function(self, request: Recorded, project: str, region: str, id: str) -> dict:
        name = f"projects/{project}/locations/{region}/functions/{id}"
        if name not in self.functions:
            raise _not_found(f"function {name}")
        return self.functions[name]

    def _update_function(self, request: Recorded, project: str, region: str, id: str) -> dict:
        function = self._get_function(request, project, region, id)
        mask = request.query.get("updateMask", "")
        if not mask:
            raise FakeError(400, "INVALID_ARGUMENT", "deployer always sends an update mask")
        updated = copy.deepcopy(function)
        _apply_mask(updated, request.body, mask)
        if "buildConfig.source" in mask:
            self._check_source(updated)
        if "serviceConfig.serviceAccountEmail" in mask:
            account = updated.get("serviceConfig", {}).get("serviceAccountEmail")
            self._check_accounts(project, [account] if account else [])
        self._check_service(project, updated)
        self._finish(updated, project, region, id)
        self.functions[function["name"]] = updated
        return self._function_result(project, region, updated)

    def _delete_function(self, request: Recorded, project: str, region: str, id: str) -> dict:
        function = self._get_function(request, project, region, id)
        del self.functions[function["name"]]
        self.policies.pop(function["serviceConfig"]["service"], None)
        return self._operation(project, region, {"response": {"@type": EMPTY_TYPE}})

    def _get_operation(self, request: Recorded, project: str, region: str, id: str) -> dict:
        name = f"projects/{project}/locations/{region}/operations/{id}"
        if name not in self.operations:
            raise _not_found(f"operation {name}")
        return self.operations[name]

    # -- Cloud Run v2 IAM -------------------------------------------------------------

    def _service(self, project: str, region: str, id: str) -> str:
        name = f"projects/{project}/locations/{region}/services/{id}"
        if not any(f["serviceConfig"]["service"] == name for f in self.functions.values()):
            raise _not_found(f"service {name}")
        return name

    def _get_policy(self, request: Recorded, project: str, region: str, id: str) -> dict:
        service = self._service(project, region, id)
        return self.policies.get(service, {"version": 1, "etag": "BwAAAAAAAAA="})

    def _set_policy(self, request: Recorded, project: str, region: str, id: str) -> dict:
        service = self._service(project, region, id)
        policy = copy.deepcopy(request.body["policy"])
        self._check_accounts(
            project,
            [
                member.split(":", 1)[1]
                for binding in policy.get("bindings", [])
                for member in binding.get("members", [])
                if member.startswith("serviceAccount:")
            ],
        )
        policy["etag"] = base64.b64encode(
            hashlib.sha256(json.dumps(policy).encode()).digest()[:8]
        ).decode()
        self.policies[service] = policy
        return policy

    # -- Cloud Logging v2 ----------------------------------------------------------------

    def _list_entries(self, request: Recorded) -> dict:
        body = request.body or {}
        names = body.get("resourceNames") or []
        if len(names) != 1 or not re.match(r"^projects/[^/]+$", names[0]):
            raise FakeError(400, "INVALID_ARGUMENT", f"resourceNames {names!r}: one project")
        project = names[0].split("/", 1)[1]
        if body.get("orderBy", "timestamp asc") != "timestamp asc":
            raise FakeError(400, "INVALID_ARGUMENT", f"orderBy {body['orderBy']!r} unsupported")
        size = int(body.get("pageSize") or 50)
        if not 0 < size <= 1000:
            raise FakeError(400, "INVALID_ARGUMENT", f"pageSize {size} is not in 1..1000")
        matches = _entry_filter(str(body.get("filter") or ""))
        found = sorted(
            (
                entry
                for entry in self.log_entries
                if entry["logName"].startswith(f"projects/{project}/") and matches(entry)
            ),
            key=lambda entry: _log_time(entry["timestamp"]),
        )
        start = 0
        query = json.dumps({key: body.get(key) for key in ("resourceNames", "filter", "orderBy")})
        if body.get("pageToken"):
            token_query, _, offset = str(body["pageToken"]).rpartition("|")
            if token_query != hashlib.sha256(query.encode()).hexdigest()[:16]:
                raise FakeError(400, "INVALID_ARGUMENT", "pageToken of another request")
            start = int(offset)
        reply: dict[str, Any] = {"entries": copy.deepcopy(found[start : start + size])}
        if start + size < len(found):
            digest = hashlib.sha256(query.encode()).hexdigest()[:16]
            reply["nextPageToken"] = f"{digest}|{start + size}"
        return reply

    # -- Secret Manager v1 ----------------------------------------------------------------

    def _secret(self, project: str, secret: str) -> str:
        name = f"projects/{project}/secrets/{secret}"
        if name not in self.secrets:
            raise _not_found(f"Secret [{name}]")
        return name

    def _get_secret(self, request: Recorded, project: str, secret: str) -> dict:
        return self.secrets[self._secret(project, secret)]

    def _get_secret_policy(self, request: Recorded, project: str, secret: str) -> dict:
        name = self._secret(project, secret)
        version = request.query.get("options.requestedPolicyVersion", "0")
        if version not in ("0", "1", "3") or set(request.query) - {
            "options.requestedPolicyVersion"
        }:
            raise FakeError(400, "INVALID_ARGUMENT", f"getIamPolicy query {request.query!r}")
        return self.secret_policies.get(name, {"version": 1, "etag": "ACAB"})

    def _set_secret_policy(self, request: Recorded, project: str, secret: str) -> dict:
        name = self._secret(project, secret)
        body = request.body or {}
        policy = copy.deepcopy(body.get("policy") or {})
        if set(body) - {"policy", "updateMask"} or set(policy) - {"version", "etag", "bindings"}:
            raise FakeError(400, "INVALID_ARGUMENT", f"setIamPolicy body {body!r}")
        for binding in policy.get("bindings", []):
            if set(binding) - {"role", "members", "condition"} or not binding.get("members"):
                raise FakeError(400, "INVALID_ARGUMENT", f"binding {binding!r}")
        current = self.secret_policies.get(name, {"etag": "ACAB"})
        if policy.get("etag") not in (None, current["etag"]):
            raise FakeError(409, "ABORTED", "There were concurrent policy changes.")
        self._check_accounts(
            project,
            [
                member.split(":", 1)[1]
                for binding in policy.get("bindings", [])
                for member in binding["members"]
                if member.startswith("serviceAccount:")
            ],
        )
        policy.setdefault("version", 1)
        policy["etag"] = base64.b64encode(
            hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).digest()[:8]
        ).decode()
        self.secret_policies[name] = policy
        return policy

    # -- Cloud Scheduler v1 -------------------------------------------------------------

    def _create_job(self, request: Recorded, project: str, region: str) -> dict:
        job = copy.deepcopy(request.body)
        parent = f"projects/{project}/locations/{region}/jobs/"
        if not job.get("name", "").startswith(parent):
            raise FakeError(400, "INVALID_ARGUMENT", f"job name must start with {parent}")
        if job["name"] in self.jobs:
            raise FakeError(409, "ALREADY_EXISTS", f"job {job['name']} already exists")
        self._check_accounts(project, [_job_account(job)])
        job["state"] = "ENABLED"
        job["userUpdateTime"] = "2026-01-01T00:00:00Z"
        self.jobs[job["name"]] = job
        return job

    def _list_jobs(self, request: Recorded, project: str, region: str) -> dict:
        prefix = f"projects/{project}/locations/{region}/jobs/"
        return {"jobs": [job for name, job in self.jobs.items() if name.startswith(prefix)]}

    def _get_job(self, request: Recorded, project: str, region: str, id: str) -> dict:
        name = f"projects/{project}/locations/{region}/jobs/{id}"
        if name not in self.jobs:
            raise _not_found(f"job {name}")
        return self.jobs[name]

    def _update_job(self, request: Recorded, project: str, region: str, id: str) -> dict:
        job = copy.deepcopy(self._get_job(request, project, region, id))
        _apply_mask(job, request.body, request.query.get("updateMask", ""))
        self._check_accounts(project, [_job_account(job)])
        self.jobs[job["name"]] = job
        return job

    def _delete_job(self, request: Recorded, project: str, region: str, id: str) -> dict:
        job = self._get_job(request, project, region, id)
        del self.jobs[job["name"]]
        return {}

    # -- IAM v1 service accounts --------------------------------------------------------

    def _get_account(self, request: Recorded, project: str, email: str) -> dict:
        email = unquote(email)
        if email not in self.accounts or self.accounts[email]["projectId"] != project:
            raise _not_found(f"service account projects/{project}/serviceAccounts/{email}")
        return self.accounts[email]

    def _create_account(self, request: Recorded, project: str) -> dict:
        account_id = request.body.get("accountId", "")
        if not (6 <= len(account_id) <= 30 and ACCOUNT_ID.match(account_id)):
            raise FakeError(400, "INVALID_ARGUMENT", f"invalid account id {account_id!r}")
        details = request.body.get("serviceAccount", {})
        if len(details.get("displayName", "")) > 100:
            raise FakeError(400, "INVALID_ARGUMENT", "displayName is longer than 100")
        if len(details.get("description", "")) > 256:
            raise FakeError(400, "INVALID_ARGUMENT", "description is longer than 256")
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            raise FakeError(409, "ALREADY_EXISTS", f"service account {email} already exists")
        self.accounts[email] = {
            "name": f"projects/{project}/serviceAccounts/{email}",
            "projectId": project,
            "uniqueId": str(100000000000000000000 + next(self._counter)),
            "email": email,
            "displayName": details.get("displayName", ""),
            "description": details.get("description", ""),
        }
        return self.accounts[email]

    def _delete_account(self, request: Recorded, project: str, email: str) -> dict:
        account = self._get_account(request, project, email)
        del self.accounts[account["email"]]
        return {}

    # -- a function's URL -------------------------------------------------------------

    def _invoke(self, request: Recorded, project: str, region: str, id: str) -> dict:
        if f"projects/{project}/locations/{region}/functions/{id}" not in self.functions:
            raise _not_found(f"function {id}")
        if not request.headers.get("authorization", "").startswith("Bearer "):
            raise FakeError(401, "UNAUTHENTICATED", "no identity token")
        return {"run_id": "fake-run", "status": "succeeded", "predictions": request.body}


LOG_CLAUSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'^resource\.type="(?P<value>[^"]*)"$'), "type"),
    (re.compile(r'^resource\.labels\.service_name="(?P<value>[^"]*)"$'), "service"),
    (re.compile(r'^timestamp>="(?P<value>[^"]+)"$'), "from"),
    (re.compile(r'^timestamp<="(?P<value>[^"]+)"$'), "to"),
    (re.compile(r"^textPayload:(?P<value>\"(?:[^\"\\]|\\.)*\")$"), "text"),
]


def _log_time(text: str) -> tuple[str, int]:
    """An RFC 3339 UTC time as a sortable key (nanoseconds kept)."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$", text)
    if match is None:
        raise FakeError(400, "INVALID_ARGUMENT", f"invalid timestamp {text!r}")
    return match.group(1), int((match.group(2) or "").ljust(9, "0"))


def _entry_filter(text: str) -> Any:
    """The predicate of a filter of the forms deployer sends; 400 for anything else."""
    tests = []
    for clause in filter(None, text.split(" AND ")):
        for pattern, kind in LOG_CLAUSES:
            match = pattern.match(clause)
            if match is not None:
                tests.append((kind, match.group("value")))
                break
        else:
            raise FakeError(400, "INVALID_ARGUMENT", f"the fake does not know filter {clause!r}")
        if kind in ("from", "to"):
            _log_time(tests[-1][1])

    def matches(entry: dict[str, Any]) -> bool:
        for kind, value in tests:
            if kind == "type" and entry["resource"]["type"] != value:
                return False
            if kind == "service" and entry["resource"]["labels"].get("service_name") != value:
                return False
            if kind == "from" and _log_time(entry["timestamp"]) < _log_time(value):
                return False
            if kind == "to" and _log_time(entry["timestamp"]) > _log_time(value):
                return False
            if kind == "text" and json.loads(value) not in entry.get("textPayload", ""):
                return False
        return True

    return matches


def _job_account(job: dict[str, Any]) -> str:
    return str(job.get("httpTarget", {}).get("oidcToken", {}).get("serviceAccountEmail", ""))
