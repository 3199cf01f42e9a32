"""Alerts: a Slack-compatible JSON POST to each webhook for a run that needs a person.

A run needs one when it failed, failed a check or metric bound, warned, drifted
or changed schema (``alert_payload`` decides, and returns None for a clean
run). ``send_alerts`` delivers the payload and never raises: what happened to
each webhook is a small record for run.json, because an alert that cannot be
delivered must never fail the run, nor make it outlive its deadline.

Runs inside every deployed function, so it uses the standard library only.

A webhook URL is a secret (a Slack one embeds its token in the path): nothing
this module returns, raises or writes holds more of it than its scheme, host
and port, and error text from urllib is scrubbed of it before it is kept.

    >>> payload = alert_payload(record, read_command="deployer runs churn-scores")
    >>> if payload is not None:
    ...     record["alerts"] = send_alerts(manifest.alerts, payload, deadline=deadline)
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

# Slack renders a message's text in full up to 40,000 characters, but a person
# reads the first screen; a section block (should a receiver build one from
# `text`) holds at most 3,000.
MAX_TEXT_CHARS = 3000
MAX_LISTED = 20  # entries per list in the text and in the structured fields
MAX_NAME_CHARS = 80  # a check, metric or column name as shown
MAX_MESSAGE_CHARS = 300  # an error message: its first line, cut to this
MAX_DETAIL_CHARS = 200  # why a delivery failed, as recorded

# An attempt with less time than this left before the deadline is not started:
# it could only time out.
MIN_ATTEMPT_SECONDS = 0.05
# A receiver that asks to be retried later than this (429/503 Retry-After) is
# not retried: the run would wait for it.
MAX_RETRY_AFTER_SECONDS = 5.0
# Path and query pieces at least this long are scrubbed from error text (a
# token, a team id); shorter ones ("v1", "api") would scrub ordinary words.
MIN_SECRET_CHARS = 4

SCHEMES = ("http", "https")
USER_AGENT = "deployer-alerts/1"

STATUS_PHRASES = {
    "failed": "failed",
    "check_failed": "failed its checks",
    "warned": "passed with warnings",
    "succeeded": "succeeded",
}
SIDE_NAMES = {"input": "input", "output": "output"}
AGAINST_PHRASES = {"reference": "vs the reference", "previous": "vs the previous run"}


# --- what to say -------------------------------------------------------------


def alert_text(record: Mapping[str, Any], *, read_command: str | None = None) -> str | None:
    """The alert's message for a run record (run.json), or None when the run needs none.

    ``read_command`` is where to look (default ``deployer runs NAME``). At most
    MAX_TEXT_CHARS long; names, scores and the first line of an error message,
    never a traceback.

        >>> alert_text({"name": "scores", "run_id": "r1", "status": "succeeded"}) is None
        True
    """
    facts = _Facts.of(record)
    if not facts.reasons:
        return None
    command = read_command or f"deployer runs {facts.name}"
    return _text(facts, command)


def alert_payload(record: Mapping[str, Any], *, read_command: str) -> dict[str, Any] | None:
    """The JSON body POSTed to each webhook for this run, or None when the run needs no alert.

    Slack reads ``text``; other receivers can route on ``deployer``, which holds
    the same facts as plain data (each list capped at MAX_LISTED entries, the
    number cut in ``truncated``).

        >>> alert_payload(record, read_command="deployer runs churn-scores")["deployer"]["reasons"]
        ['check_failed', 'drift']
    """
    facts = _Facts.of(record)
    if not facts.reasons:
        return None
    truncated = {
        field: len(entries) - MAX_LISTED
        for field, entries in (
            ("failed_checks", facts.failed_checks),
            ("failed_bounds", facts.failed_bounds),
            ("drifted_columns", facts.drifted_columns),
            ("schema_changes", facts.schema_changes),
        )
        if len(entries) > MAX_LISTED
    }
    return {
        "text": _text(facts, read_command),
        "deployer": {
            "name": facts.name,
            "run_id": facts.run_id,
            "status": facts.status,
            "reasons": list(facts.reasons),
            "failed_checks": facts.failed_checks[:MAX_LISTED],
            "failed_bounds": facts.failed_bounds[:MAX_LISTED],
            "drifted_columns": facts.drifted_columns[:MAX_LISTED],
            "dataset_drift": facts.dataset_drift,
            "schema_changes": facts.schema_changes[:MAX_LISTED],
            "error_type": facts.error_type,
            "truncated": truncated,
            "read_command": _cut(read_command, MAX_MESSAGE_CHARS),
        },
    }


@dataclass(frozen=True)
class _Facts:
    """What an alert says about a run, read defensively: a malformed record
    must not turn into an exception in the run's last step."""

    name: str
    run_id: str
    status: str
    error_type: str | None
    error_message: str | None
    failed_checks: list[dict[str, Any]]
    failed_bounds: list[dict[str, Any]]
    drifted_columns: list[dict[str, Any]]
    dataset_drift: bool
    schema_changes: list[dict[str, Any]]
    reasons: tuple[str, ...]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _Facts:
        status = str(record.get("status") or "unknown")
        error = _mapping(record.get("error"))
        error_type = _cut(str(error["type"]), MAX_NAME_CHARS) if error.get("type") else None
        message = error.get("message")
        failed_checks = _failed_checks(_mapping(record.get("checks")))
        failed_bounds = _failed_bounds(_mapping(record.get("bounds")))
        drift = _mapping(record.get("drift"))
        drifted_columns = _drifted_columns(_mapping(drift.get("columns")))
        dataset_drift = drift.get("dataset_drift") is True
        schema_changes = _schema_changes(record.get("schema_changes"))
        reasons = [status] if status != "succeeded" else []
        if (failed_checks or failed_bounds) and status not in ("check_failed", "warned"):
            reasons.append("check_failed")
        if drifted_columns or dataset_drift:
            reasons.append("drift")
        if schema_changes:
            reasons.append("schema_change")
        return cls(
            name=_cut(str(record.get("name") or "?"), MAX_NAME_CHARS),
            run_id=_cut(str(record.get("run_id") or "?"), MAX_NAME_CHARS),
            status=status,
            error_type=error_type,
            error_message=_first_line(str(message)) if message else None,
            failed_checks=failed_checks,
            failed_bounds=failed_bounds,
            drifted_columns=drifted_columns,
            dataset_drift=dataset_drift,
            schema_changes=schema_changes,
            reasons=tuple(reasons),
        )


def _failed_checks(checks: Mapping[str, Any]) -> list[dict[str, Any]]:
    failed = []
    for name, result in checks.items():
        result = _mapping(result)
        if result.get("passed") is not False:
            continue
        entry: dict[str, Any] = {
            "name": _cut(str(name), MAX_NAME_CHARS),
            "severity": str(result.get("severity") or "error"),
        }
        if result.get("error"):
            entry["error"] = _first_line(str(result["error"]), MAX_DETAIL_CHARS)
        failed.append(entry)
    # Errors first: they are what made the run check_failed.
    return sorted(failed, key=lambda entry: entry["severity"] != "error")


def _failed_bounds(bounds: Mapping[str, Any]) -> list[dict[str, Any]]:
    failed = []
    for metric, result in bounds.items():
        result = _mapping(result)
        if result.get("passed") is not False:
            continue
        failed.append(
            {
                "metric": _cut(str(metric), MAX_NAME_CHARS),
                "value": _number(result.get("value")),
                "lower": _number(result.get("lower")),
                "upper": _number(result.get("upper")),
                "severity": str(result.get("severity") or "error"),
            }
        )
    return sorted(failed, key=lambda entry: entry["severity"] != "error")


def _drifted_columns(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    drifted = []
    for column, result in columns.items():
        result = _mapping(result)
        if result.get("verdict") != "drift":
            continue
        drifted.append(
            {
                "column": _cut(str(column), MAX_NAME_CHARS),
                "side": str(result["side"]) if result.get("side") else None,
                "js": _score(result.get("js")),
                "psi": _score(result.get("psi")),
            }
        )
    # The worst first, so a capped list still names the columns that moved most.
    return sorted(drifted, key=lambda entry: (-(entry["js"] or 0.0), -(entry["psi"] or 0.0)))


def _schema_changes(changes: Any) -> list[dict[str, Any]]:
    if not isinstance(changes, list):
        return []
    kept = []
    for change in changes:
        change = _mapping(change)
        if not change.get("column") or not change.get("change"):
            continue
        entry = {"column": _cut(str(change["column"]), MAX_NAME_CHARS)}
        for key in ("change", "old_type", "new_type", "type", "side", "against"):
            if change.get(key) is not None:
                entry[key] = _cut(str(change[key]), MAX_NAME_CHARS)
        kept.append(entry)
    return kept


def _text(facts: _Facts, read_command: str) -> str:
    phrase = STATUS_PHRASES.get(facts.status, f"ended with status {facts.status!r}")
    head = f"*{_escape(facts.name)}*: run {_escape(facts.run_id)} {_escape(phrase)}"
    lines = []
    if facts.error_type or facts.error_message:
        lines.append(
            "Error: "
            + _escape(": ".join(part for part in (facts.error_type, facts.error_message) if part))
        )
    if facts.failed_checks:
        lines.append("Failed checks: " + _listing(_check_phrase(c) for c in facts.failed_checks))
    if facts.failed_bounds:
        lines.append("Metrics out of bounds: " + _listing(map(_bound_phrase, facts.failed_bounds)))
    if facts.drifted_columns:
        lines.append("Drifted columns: " + _listing(map(_drift_phrase, facts.drifted_columns)))
    if facts.dataset_drift:
        lines.append("The data set drifted: at least half of its columns moved")
    if facts.schema_changes:
        lines.append("Schema changes: " + _listing(map(_schema_phrase, facts.schema_changes)))
    tail = f"See: `{_escape(_cut(read_command, MAX_MESSAGE_CHARS))}`"
    text = "\n".join([head, *lines, tail])
    if len(text) <= MAX_TEXT_CHARS:
        return text
    room = MAX_TEXT_CHARS - len(head) - len(tail) - 3  # two newlines and the ellipsis
    return "\n".join([head, "\n".join(lines)[:room].rstrip() + "…", tail])


def _check_phrase(check: Mapping[str, Any]) -> str:
    detail = check["severity"] + (f": {check['error']}" if check.get("error") else "")
    return _escape(f"{check['name']} ({detail})")


def _bound_phrase(bound: Mapping[str, Any]) -> str:
    lower, upper = bound["lower"], bound["upper"]
    if lower is not None and upper is not None:
        expected = f"not in [{_shown(lower)}, {_shown(upper)}]"
    elif lower is not None:
        expected = f"below {_shown(lower)}"
    elif upper is not None:
        expected = f"above {_shown(upper)}"
    else:
        expected = "out of bounds"
    return _escape(f"{bound['metric']} = {_shown(bound['value'])} {expected} ({bound['severity']})")


def _drift_phrase(column: Mapping[str, Any]) -> str:
    side = f" ({column['side']})" if column["side"] else ""
    return _escape(
        f"{column['column']}{side} JS {_shown(column['js'])} PSI {_shown(column['psi'])}"
    )


def _schema_phrase(change: Mapping[str, Any]) -> str:
    side = SIDE_NAMES.get(change.get("side", ""), "")
    subject = f"{side} column {change['column']}".lstrip()
    kind = change["change"]
    if kind == "added":
        phrase = f"{subject} added ({change.get('new_type') or change.get('type') or '?'})"
    elif kind == "removed":
        phrase = f"{subject} removed (was {change.get('old_type') or change.get('type') or '?'})"
    elif kind == "type":
        old, new = change.get("old_type") or "?", change.get("new_type") or "?"
        phrase = f"{subject} changed type {old} → {new}"
    else:
        phrase = f"{subject} {kind}"
    against = AGAINST_PHRASES.get(change.get("against", ""))
    return _escape(f"{phrase} {against}" if against else phrase)


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _escape(text: str) -> str:
    # Slack reads <...> as links and mentions (<!channel>): a column or check
    # named by the data must not page a whole channel.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _score(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else round(float(number), 3)


def _shown(value: float | int | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    lines = text.strip().splitlines()
    return _cut(lines[0] if lines else "", limit)


# --- where to send it --------------------------------------------------------


def webhook_label(url: object, index: int) -> str:
    """What a record or an error may say of webhook ``index`` (1-based): scheme and host.

    >>> webhook_label("https://hooks.slack.com/services/T0/B0/secret", 1)
    'webhook 1 (https://hooks.slack.com)'
    """
    if not isinstance(url, str):
        return f"webhook {index} (not a URL)"
    location = _location(url)
    return f"webhook {index} ({location})" if location else f"webhook {index}"


def validate_alert_urls(urls: object) -> tuple[str, ...]:
    """The webhook URLs, checked at deploy time; ValueError naming the first problem.

    Messages name a URL by its position and host only: the rest may be a token.

        >>> validate_alert_urls(["https://hooks.slack.com/services/T0/B0/secret"])
        ('https://hooks.slack.com/services/T0/B0/secret',)
        >>> validate_alert_urls(["hooks.slack.com/services/T0/B0/secret"])
        Traceback (most recent call last):
        ValueError: alert webhook 1 must start with https:// or http://
    """
    if isinstance(urls, (str, bytes)) or not isinstance(urls, Sequence):
        raise ValueError(
            f"alerts must be a list of webhook URLs, not {type(urls).__name__}: "
            'write alerts=["https://hooks.slack.com/services/..."]'
        )
    checked = []
    for index, url in enumerate(urls, start=1):
        if not isinstance(url, str):
            raise ValueError(
                f"alert webhook {index} must be a URL string, not {type(url).__name__}"
            )
        url = url.strip()
        problem = _url_problem(url)
        if problem is not None:
            raise ValueError(f"alert {webhook_label(url, index)} {problem}")
        checked.append(url)
    return tuple(checked)


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be POSTed to, without quoting it; None when it can."""
    if any(character.isspace() or not character.isprintable() for character in url):
        return "contains spaces or control characters"
    split = _split(url)
    if split is None:
        return "is not a valid URL (check its host and port)"
    parts, _ = split
    if parts.scheme.lower() not in SCHEMES:
        return "must start with https:// or http://"
    if not parts.hostname:
        return "has no host"
    return None


def _location(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL: never its user, password, path or query."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        port = parts.port
    except ValueError:  # said by _url_problem; the host is still worth naming
        port = None
    host = f"[{host}]" if ":" in host else host
    scheme = parts.scheme.lower()
    location = f"{scheme}://{host}" if scheme in SCHEMES else host
    return _cut(location + (f":{port}" if port else ""), MAX_NAME_CHARS)


def _split(url: str) -> tuple[SplitResult, int | None] | None:
    """The URL's parts and port; None when its port is not a number."""
    try:
        parts = urlsplit(url)
        return parts, parts.port  # .port is parsed (and refused) only when read
    except ValueError:
        return None


# --- sending it --------------------------------------------------------------


class Opener(Protocol):
    """What sends a request: ``urllib.request.OpenerDirector`` or a test's stand-in.

    ``open`` returns a response (a context manager with ``status``) or raises
    ``urllib.error.HTTPError`` for a status other than 2xx, as urllib does.
    """

    def open(self, request: urllib.request.Request, /, *, timeout: float) -> Any: ...


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A webhook that redirects is misconfigured: urllib would follow a 302 as
    # a GET without the body and report success. Not following it leaves the
    # 3xx as an HTTPError, recorded as not delivered.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def default_opener() -> Opener:
    """urllib's opener (proxies from the environment), redirects not followed."""
    return urllib.request.build_opener(_NoRedirects())


def send_alerts(
    urls: Sequence[str],
    payload: Mapping[str, Any],
    *,
    deadline: float | None = None,
    timeout: float = 5.0,
    retries: int = 1,
    backoff: float = 0.5,
    opener: Opener | None = None,
) -> list[dict[str, Any]]:
    """POST ``payload`` as JSON to each URL in turn; one record per URL, never raises.

    Each record is ``{"webhook": "webhook 1 (https://hooks.slack.com)",
    "delivered": bool, "attempts": int, "status": int | None, "error": str |
    None}``. A 5xx, a 429, a timeout or a connection error is retried up to
    ``retries`` times, after ``backoff`` seconds, doubling (or the receiver's
    Retry-After, if longer and at most MAX_RETRY_AFTER_SECONDS); a 2xx, a 3xx or
    any other 4xx is final. ``deadline`` is a ``time.monotonic()`` value (the
    run's): no attempt or pause starts past it, and an attempt's ``timeout``
    shrinks to the time left. ``timeout`` bounds each wait on the socket
    (connect, send, each read), as urllib does.

        >>> send_alerts(["https://hooks.slack.com/services/T0/B0/secret"], payload)
        [{'webhook': 'webhook 1 (https://hooks.slack.com)', 'delivered': True,
          'attempts': 1, 'status': 200, 'error': None}]
    """
    if isinstance(urls, str):  # one URL passed bare: not a list of its characters
        urls = [urls]
    try:
        listed = list(urls)
    except TypeError:
        return [_record("webhooks (not a list)", error="not a list of URLs; nothing was sent")]
    records = []
    try:
        body: bytes | None = json.dumps(payload, default=str).encode("utf-8")
        body_problem = None
    except (TypeError, ValueError) as error:
        body, body_problem = None, f"the payload is not JSON: {type(error).__name__}"
    for index, url in enumerate(listed, start=1):
        try:
            records.append(
                _deliver(
                    index,
                    url,
                    body,
                    body_problem,
                    deadline=deadline,
                    timeout=timeout,
                    retries=retries,
                    backoff=backoff,
                    opener=opener,
                )
            )
        except Exception as error:  # a bug here must cost the alert, never the run
            records.append(
                _record(
                    webhook_label(url, index),
                    error=_scrubbed(f"{type(error).__name__}: {error}", url),
                )
            )
    return records


@dataclass(frozen=True)
class _Attempt:
    delivered: bool
    status: int | None
    error: str | None
    retryable: bool
    retry_after: float | None = None


def _deliver(
    index: int,
    url: object,
    body: bytes | None,
    body_problem: str | None,
    *,
    deadline: float | None,
    timeout: float,
    retries: int,
    backoff: float,
    opener: Opener | None,
) -> dict[str, Any]:
    label = webhook_label(url, index)
    if not isinstance(url, str):
        return _record(label, error="not a URL string; nothing was sent")
    url = url.strip()
    problem = _url_problem(url) or body_problem
    if problem is not None or body is None:
        return _record(label, error=f"{problem}; nothing was sent")
    target, headers = _target(url)
    opener = opener or default_opener()
    attempts, pause = 0, max(backoff, 0.0)
    last = _Attempt(delivered=False, status=None, error=None, retryable=True)
    while True:
        attempt_timeout = _time_for_attempt(timeout, deadline)
        if attempt_timeout is None:
            stopped = "no time left before the run's deadline"
            error = f"{last.error}; {stopped} to retry" if last.error else f"{stopped}; not sent"
            return _record(label, attempts=attempts, status=last.status, error=error)
        attempts += 1
        request = urllib.request.Request(target, data=body, headers=headers, method="POST")
        last = _attempt(opener, request, attempt_timeout, url)
        if last.delivered:
            return _record(label, delivered=True, attempts=attempts, status=last.status)
        if not last.retryable or attempts > max(retries, 0):
            break
        wait = max(pause, last.retry_after or 0.0)
        if last.retry_after is not None and last.retry_after > MAX_RETRY_AFTER_SECONDS:
            last = _replace_error(last, f"asked to retry after {last.retry_after:g} s: not retried")
            break
        if deadline is not None and time.monotonic() + wait + MIN_ATTEMPT_SECONDS >= deadline:
            last = _replace_error(last, "no time left before the run's deadline to retry")
            break
        time.sleep(wait)
        pause *= 2
    return _record(label, attempts=attempts, status=last.status, error=last.error)


def _record(
    label: str,
    *,
    delivered: bool = False,
    attempts: int = 0,
    status: int | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "webhook": label,
        "delivered": delivered,
        "attempts": attempts,
        "status": status,
        "error": error,
    }


def _replace_error(attempt: _Attempt, note: str) -> _Attempt:
    return _Attempt(
        delivered=False, status=attempt.status, error=f"{attempt.error}; {note}", retryable=False
    )


def _time_for_attempt(timeout: float, deadline: float | None) -> float | None:
    """The timeout of the next attempt, or None when there is no time to start one."""
    timeout = max(timeout, MIN_ATTEMPT_SECONDS)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    return None if left < MIN_ATTEMPT_SECONDS else min(timeout, left)


def _target(url: str) -> tuple[str, dict[str, str]]:
    """The URL to request and its headers; a user:password in the URL becomes Basic auth
    (urllib would otherwise take it for part of the host)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, headers
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    credentials = f"{unquote(user)}:{unquote(password)}".encode()
    headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), headers


def _attempt(opener: Opener, request: urllib.request.Request, timeout: float, url: str) -> _Attempt:
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(getattr(response, "status", None) or response.getcode())
            if 200 <= status < 300:
                return _Attempt(delivered=True, status=status, error=None, retryable=False)
            return _refused(status, _excerpt(response, url), response.headers)
    except urllib.error.HTTPError as error:
        try:
            return _refused(error.code, _excerpt(error, url), error.headers)
        finally:
            error.close()  # it holds the connection
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            return _timed_out(timeout)
        if isinstance(reason, ssl.CertificateError):  # not going to change on a retry
            return _Attempt(
                delivered=False,
                status=None,
                error=_scrubbed(f"TLS certificate not accepted: {reason}", url),
                retryable=False,
            )
        return _connection_error(reason, url)
    except TimeoutError:
        return _timed_out(timeout)
    except (OSError, http.client.HTTPException) as error:
        return _connection_error(error, url)
    except Exception as error:
        return _Attempt(
            delivered=False,
            status=None,
            error=_scrubbed(f"{type(error).__name__}: {error}", url),
            retryable=False,
        )


def _refused(status: int, excerpt: str, headers: Any) -> _Attempt:
    retryable = status == 429 or status >= 500
    retry_after = _retry_after(headers) if retryable else None
    note = " (redirects are not followed)" if 300 <= status < 400 else ""
    return _Attempt(
        delivered=False,
        status=status,
        error=f"HTTP {status}{note}" + (f": {excerpt}" if excerpt else ""),
        retryable=retryable,
        retry_after=retry_after,
    )


def _timed_out(timeout: float) -> _Attempt:
    return _Attempt(
        delivered=False, status=None, error=f"timed out after {timeout:.2g} s", retryable=True
    )


def _connection_error(error: object, url: str) -> _Attempt:
    name = type(error).__name__ if isinstance(error, BaseException) else "error"
    return _Attempt(
        delivered=False,
        status=None,
        error=_scrubbed(f"could not connect ({name}: {error})", url),
        retryable=True,
    )


def _retry_after(headers: Any) -> float | None:
    try:
        value = float(headers.get("Retry-After"))
    except (AttributeError, TypeError, ValueError):  # absent, or an HTTP date
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _excerpt(response: Any, url: str) -> str:
    """The start of a refusal's body (Slack says why: "no_service", "invalid_payload")."""
    try:
        raw = response.read(MAX_DETAIL_CHARS)
    except Exception:
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return _scrubbed(_first_line(text, MAX_DETAIL_CHARS), url)


def _scrubbed(text: str, url: object) -> str:
    """``text`` without any part of ``url`` that may be secret (an error page or
    urllib may quote the URL), printable and at most MAX_DETAIL_CHARS long."""
    url = url if isinstance(url, str) else ""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    pieces = {url, parts.path, parts.query, parts.fragment, userinfo, *userinfo.split(":")}
    for separator_part in (parts.path, parts.query, parts.fragment):
        for piece in separator_part.replace("&", "/").replace("=", "/").split("/"):
            pieces.add(piece)
            pieces.add(unquote(piece))
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= MIN_SECRET_CHARS:
            text = text.replace(piece, "…")
    text = "".join(character if character.isprintable() else " " for character in text)
    return _cut(text, MAX_DETAIL_CHARS)
