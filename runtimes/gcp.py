"""Entry of the GCP provider for Google's functions-framework: ``deployer_runtime.gcp.handle``.

Cloud Functions (2nd gen) calls ``handle`` with a flask Request. Requests it answers:

- A scheduled run: a POST carrying ``X-CloudScheduler: true`` AND an OIDC ID
  token of the scheduler's own service account (see "Who is Cloud
  Scheduler" below). ``X-CloudScheduler-ScheduleTime`` (RFC 3339) and
  ``X-CloudScheduler-JobName`` then give the fire time and the job: the run id
  comes from both, so Scheduler's retry of the same firing overwrites one run
  instead of adding a second. The run reads the deployed ``inputs``. A failed
  run answers 500, which Scheduler counts as a failed attempt and retries.
- Any other POST is an HTTP prediction: JSON in, JSON out, 400 on a body that
  is not JSON or not a table. ``X-CloudScheduler*`` headers on a request
  without the scheduler's token are ignored (and logged): anyone allowed to
  call the URL can set headers. A POST with no body is a 400 ("send the
  function's input as a JSON body"), unless the function takes no input, in
  which case it is called without one: an HTTP request never runs over the
  deployed inputs, so it never returns predictions for the whole data set
  nor writes a run that looks scheduled. ``deployer invoke`` without data is
  therefore refused too; a run over the inputs is Scheduler's to start
  (``gcloud scheduler jobs run``).

No answer ever carries a traceback; a failed run's traceback is in its run.json.

Who is Cloud Scheduler. deployer gives each function a scheduler service
account of its own and tells the runtime, at deploy time, its email
(``DEPLOYER_SCHEDULER_ACCOUNT``), the audience Scheduler's tokens are minted
for (``DEPLOYER_SCHEDULER_AUDIENCE``, the function URL) and whether every
caller passes Cloud Run's IAM check (``DEPLOYER_HTTP_ACCESS``:
``authenticated``, or ``public`` with an allUsers invoker). Nothing about
who may schedule comes from the request. The token is read from
``X-Serverless-Authorization`` when present, else ``Authorization``: that is
the header Cloud Run authenticates. Its claims must say issuer
accounts.google.com, audience = the configured one, not expired,
``email`` = the configured account and ``email_verified`` true. Two tokens
qualify:

- a token Google signed, verified here with google-auth against Google's
  certificates (cached for their Cache-Control max-age);
- a token whose signature Cloud Run replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``
  after verifying it, which is how Cloud Run hands a private service the token
  it checked (cloud.google.com/run/docs/troubleshooting#signature-removed).
  Such a token is believed only when ``DEPLOYER_HTTP_ACCESS`` is
  ``authenticated``: without an allUsers invoker every request went through
  Cloud Run's check, so the claims are the ones Google signed. On a public
  function anyone could send such a token, so only a signed one counts there.
  (This trusts the Cloud Run service's IAM check to be on, as deployer leaves
  it; a service whose invoker check someone turns off by hand would also
  pass such tokens unchecked.)

``DEPLOYER_GCP_CERTS_URL`` is a test hook: it points certificate fetching at
a loopback server holding a test key. deployer never sets it, and any value
that is not an http(s) URL on a loopback address is ignored.

The source root (``/workspace`` on Cloud Functions) holds ``main.py``, the
bundle's files and this package. Only the standard library is imported when
this module loads; google-auth (listed in requirements.txt by deployer) only
when a request claims to be Cloud Scheduler's, and flask objects arrive as
arguments.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

SCHEDULER_HEADER = "X-CloudScheduler"
JOB_NAME_HEADER = "X-CloudScheduler-JobName"
SCHEDULE_TIME_HEADER = "X-CloudScheduler-ScheduleTime"
MANUAL_HEADER = "X-Deployer-Trigger"  # "manual" (deployer invoke) or "map" (a shard)
MAP_TRIGGER = "map"
# Cloud Run authenticates this header instead of Authorization when both are
# present, and then passes Authorization through unchecked.
SERVERLESS_AUTHORIZATION_HEADER = "X-Serverless-Authorization"
AUTHORIZATION_HEADER = "Authorization"
JSON_HEADERS = {"Content-Type": "application/json"}

# Set by deployer on the function's service config (providers/gcp/provider.py).
SCHEDULER_ACCOUNT_VARIABLE = "DEPLOYER_SCHEDULER_ACCOUNT"
SCHEDULER_AUDIENCE_VARIABLE = "DEPLOYER_SCHEDULER_AUDIENCE"
HTTP_ACCESS_VARIABLE = "DEPLOYER_HTTP_ACCESS"  # "authenticated" | "public"
AUTHENTICATED = "authenticated"
# Test hook only (see the module docstring).
CERTS_URL_VARIABLE = "DEPLOYER_GCP_CERTS_URL"

# Google's certificates for the ID tokens it signs, as x.509 PEM by key id.
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
SIGNATURE_REMOVED = "SIGNATURE_REMOVED_BY_GOOGLE"
CLOCK_SKEW_SECONDS = 10
CERTS_TIMEOUT_SECONDS = 10

_certificates: Any = None
_certificates_lock = threading.Lock()

# RFC 3339 allows any number of fractional digits and a "Z"; fromisoformat
# before Python 3.11 takes neither.
_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})$"
)
_MAX_AGE = re.compile(r"max-age=(\d+)")


class NotFromScheduler(Exception):
    """The request does not carry Cloud Scheduler's identity; the message says why."""


class CertificatesUnavailable(Exception):
    """Google's certificates could not be fetched, so no signed token can be checked now."""


def _source_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load() -> Any:
    from . import core

    return core.load_once(_source_root())


def parse_schedule_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; ValueError when it is not one."""
    match = _RFC3339.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp")
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    moment = datetime.fromisoformat(f"{match['base'].replace('t', 'T')}.{fraction}{offset}")
    return moment.astimezone(timezone.utc)


# -- who is Cloud Scheduler -----------------------------------------------------


def certificates_url() -> str:
    """Where Google's ID-token certificates are fetched: Google, or a loopback test server."""
    override = os.environ.get(CERTS_URL_VARIABLE, "")
    if override:
        parsed = urlparse(override)
        try:
            loopback = ipaddress.ip_address(parsed.hostname or "").is_loopback
        except ValueError:
            loopback = parsed.hostname == "localhost"
        if parsed.scheme in ("http", "https") and loopback:
            return override
        print(
            f"deployer: ignoring {CERTS_URL_VARIABLE}={override!r}: it is a test hook and "
            "only ever points at a loopback address",
            file=sys.stderr,
        )
    return GOOGLE_CERTS_URL


class _RememberingRequest:
    """google-auth's requests transport, remembering each certificate answer for its max-age.

    ``verify_token`` fetches the certificates on every call; Google's answer
    says how long they stay valid (hours), so a warm instance asks once in
    that time instead of once per scheduled run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, Any]] = {}

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        # A transport (and its requests session) per fetch: requests arrive on
        # several threads, and a fetch happens once per max-age.
        from google.auth.transport.requests import Request

        if method != "GET":
            return Request()(
                url, method=method, body=body, headers=headers, timeout=timeout, **kwargs
            )
        with self._lock:
            remembered = self._answers.get(url)
        if remembered is not None and remembered[0] > time.monotonic():
            return remembered[1]
        response = Request()(
            url, method="GET", headers=headers, timeout=timeout or CERTS_TIMEOUT_SECONDS
        )
        if response.status == 200:
            match = _MAX_AGE.search(response.headers.get("cache-control", "") or "")
            if match:
                with self._lock:
                    self._answers[url] = (time.monotonic() + int(match[1]), response)
        return response


def _certificate_request() -> Any:
    global _certificates
    if _certificates is None:
        with _certificates_lock:
            if _certificates is None:
                _certificates = _RememberingRequest()
    return _certificates


def _unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT whose signature Cloud Run already checked (and removed)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as error:
        raise NotFromScheduler(f"the token cannot be read: {error}") from None
    if not isinstance(claims, dict):
        raise NotFromScheduler("the token's payload is not a JSON object")
    return claims


def _check_claims(claims: dict[str, Any], account: str, audience: str) -> None:
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise NotFromScheduler(f"issuer {claims.get('iss')!r} is not Google")
    if claims.get("aud") != audience:
        raise NotFromScheduler(f"audience {claims.get('aud')!r} is not {audience!r}")
    now = time.time()
    try:
        expires, issued = float(claims["exp"]), float(claims["iat"])
    except (KeyError, TypeError, ValueError):
        raise NotFromScheduler("the token has no valid exp and iat") from None
    if expires < now - CLOCK_SKEW_SECONDS:
        raise NotFromScheduler("the token has expired")
    if issued > now + CLOCK_SKEW_SECONDS:
        raise NotFromScheduler("the token is issued in the future")
    if claims.get("email") != account:
        raise NotFromScheduler(f"the token is {claims.get('email')!r}'s, not the scheduler's")
    if claims.get("email_verified") not in (True, "true"):
        raise NotFromScheduler("the token's email is not verified")


def scheduler_claims(headers: Any) -> dict[str, Any]:
    """The claims of Cloud Scheduler's ID token on a request; NotFromScheduler when
    the request does not carry one (CertificatesUnavailable when that cannot be told now).

    ``headers`` is the request's headers (a flask EnvironHeaders or a dict).
    """
    account = os.environ.get(SCHEDULER_ACCOUNT_VARIABLE, "")
    audience = os.environ.get(SCHEDULER_AUDIENCE_VARIABLE, "")
    if not account or not audience:
        raise NotFromScheduler(
            f"{SCHEDULER_ACCOUNT_VARIABLE} and {SCHEDULER_AUDIENCE_VARIABLE} are not both set "
            "(deploy again with deployer)"
        )
    authorization = headers.get(SERVERLESS_AUTHORIZATION_HEADER) or headers.get(
        AUTHORIZATION_HEADER, ""
    )
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotFromScheduler("there is no bearer token")
    if token.count(".") == 2 and token.rsplit(".", 1)[1] == SIGNATURE_REMOVED:
        if os.environ.get(HTTP_ACCESS_VARIABLE) != AUTHENTICATED:
            raise NotFromScheduler(
                "the token has no signature and this function is public, so Cloud Run did "
                "not check it"
            )
        claims = _unverified_claims(token)
    else:
        from google.auth import exceptions as auth_exceptions
        from google.oauth2 import id_token

        try:
            claims = dict(
                id_token.verify_token(
                    token,
                    _certificate_request(),
                    audience=audience,
                    certs_url=certificates_url(),
                    clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
                )
            )
        except auth_exceptions.TransportError as error:
            raise CertificatesUnavailable(str(error)) from None
        except (ValueError, TypeError, KeyError, auth_exceptions.GoogleAuthError) as error:
            raise NotFromScheduler(f"the token does not verify: {error}") from None
    _check_claims(claims, account, audience)
    return claims


# -- requests -------------------------------------------------------------------


def _reply(status: int, body: dict[str, Any]) -> tuple[str, int, dict[str, str]]:
    return json.dumps(body, default=str), status, dict(JSON_HEADERS)


def _bad_request(message: Any) -> tuple[str, int, dict[str, str]]:
    from . import core

    return _reply(400, core.bad_request(message))


def handle(request: Any) -> tuple[str, int, dict[str, str]]:
    """The Cloud Functions entry point: one request, one run (or a 4xx before any run)."""
    if request.method != "POST":
        body, status, headers = _reply(
            405,
            {"error": {"type": "MethodNotAllowed", "message": "send a POST with a JSON body"}},
        )
        return body, status, {**headers, "Allow": "POST"}
    arrived = time.monotonic()
    try:
        # Cloud Functions stops a request at the function's timeout without a
        # word; the run records its own Timeout just before (core.run's deadline).
        deadline = arrived + _load().manifest.timeout_seconds
        if request.headers.get(SCHEDULER_HEADER, "").lower() == "true":
            try:
                scheduler_claims(request.headers)
            except NotFromScheduler as reason:
                # Worth a line in the log: either a misconfigured deploy or
                # someone trying to pass for the scheduler.
                print(
                    f"deployer: a request with {SCHEDULER_HEADER} is not Cloud Scheduler's "
                    f"({reason}); it is answered as an HTTP request",
                    file=sys.stderr,
                )
            else:
                return _scheduled(request, deadline)
        if request.headers.get(MANUAL_HEADER, "").lower() == MAP_TRIGGER:
            return _map_shard(request)
        return _prediction(request, deadline)
    except CertificatesUnavailable as error:
        # Not the caller's fault: 503, so that Scheduler tries this firing again.
        print(f"deployer: cannot fetch Google's certificates: {error}", file=sys.stderr)
        return _reply(
            503,
            {
                "error": {
                    "type": "CertificatesUnavailable",
                    "message": "the caller's token cannot be checked now; try again",
                }
            },
        )
    except Exception as error:
        from . import core

        return _reply(*core.failure_outside_run(error))


def _map_shard(request: Any) -> tuple[str, int, dict[str, str]]:
    """One shard of a map run (runtimes/fanout.py). Only for a function whose every
    caller Cloud Run authenticated as an invoker: a shard names files for the
    function to read with its own account, which a public URL must not offer."""
    from . import fanout

    if os.environ.get(HTTP_ACCESS_VARIABLE) != AUTHENTICATED:
        return _reply(
            403,
            {
                "error": {
                    "type": "Forbidden",
                    "message": "this function is public: it takes no map shards; map with "
                    "a function deployed without Http(public=True)",
                }
            },
        )
    try:
        shard = json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        return _bad_request("a map shard is a JSON object")
    try:
        return _reply(200, {"map": fanout.run_shard(_load(), shard)})
    except fanout.ShardRequestError as error:
        return _bad_request(error)


def _scheduled(request: Any, deadline: float) -> tuple[str, int, dict[str, str]]:
    from . import core

    job_name = request.headers.get(JOB_NAME_HEADER, "")
    raw_time = request.headers.get(SCHEDULE_TIME_HEADER)
    fire_time = None
    if raw_time:
        try:
            fire_time = parse_schedule_time(raw_time)
        except ValueError as error:
            return _bad_request(f"{SCHEDULE_TIME_HEADER}: {error}")
    # A scheduled run reads the deployed inputs data set; of the body the job
    # sends (deployer writes it), only the schedule's params and overlap are read.
    try:
        body = core.parse_body(request.get_data(cache=False))
        options = body if isinstance(body, dict) else {}
        result = core.run(
            _load(),
            trigger="schedule",
            fire_time=fire_time,
            event_id=f"gcp:{job_name}",
            deadline=deadline,
            params=options.get("params"),
            overlap=options.get("overlap", True) is not False,
        )
    except core.PayloadError as error:
        return _bad_request(error)
    # A failed run is a 500 so that Scheduler records the attempt as failed and
    # retries; the retry derives the same run id and overwrites this run.
    return _reply(*core.response_body(result))


def _prediction(request: Any, deadline: float) -> tuple[str, int, dict[str, str]]:
    from . import core

    # `deployer invoke` marks its calls, so they are recorded as manual runs
    # like on every other provider; anything else is an HTTP trigger.
    manual = request.headers.get(MANUAL_HEADER, "").lower() == "manual"
    trigger = "manual" if manual else "http"
    try:
        payload, params = core.split_params(core.parse_body(request.get_data(cache=False)))
        loaded = _load()
        if payload is core.NO_PAYLOAD:
            if loaded.manifest.function.takes_input:
                return _bad_request(
                    "send the function's input as a JSON body: a request without one does "
                    "not run over the deployed inputs (only Cloud Scheduler's calls do)"
                )
            # None, not NO_PAYLOAD: the function is called without input and
            # the inputs data set is never read.
            payload = None
        result = core.run(
            loaded, trigger=trigger, payload=payload, params=params, deadline=deadline
        )
    except core.PayloadError as error:
        return _bad_request(error)
    # The caller may be anyone the function lets in (or anyone, when public):
    # a failed run's message stays in its record.
    status, body = core.response_body(result)
    return _reply(*core.for_http_caller(status, body, loaded.manifest.name))
