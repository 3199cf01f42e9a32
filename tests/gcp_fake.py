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

    def _create_function(self, request: Recorded, project: str, region: str) -> dict:
        id = request.query.get("functionId", "")
        name = f"projects/{project}/locations/{region}/functions/{id}"
        if name in self.functions:
            raise FakeError(409, "ALREADY_EXISTS", f"function {name} already exists")
        function = copy.deepcopy(request.body)
        self._check_source(function)
        account = function.get("serviceConfig", {}).get("serviceAccountEmail")
        self._check_accounts(project, [account] if account else [])
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


def _job_account(job: dict[str, Any]) -> str:
    return str(job.get("httpTarget", {}).get("oidcToken", {}).get("serviceAccountEmail", ""))
