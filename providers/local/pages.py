"""The pages `deployer serve` shows a browser: the functions (/), each one's
report (/functions/NAME), and the login in front of both.

A browser signs in once, with the serve token typed into a form or with the
one-time link `serve` prints at start (a code good for one use and ten
minutes, never the token), and then carries a session cookie: HttpOnly,
SameSite=Strict, held in the server's memory only. Scripts and curl keep
sending ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote

SESSION_COOKIE = "deployer_session"
SESSION_SECONDS = 12 * 3600
LOGIN_CODE_SECONDS = 600
LOGIN_PATH = "/login"
REPORT_PREFIX = "/functions/"
# The report has inline styles and one inline script; nothing is fetched.
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Sessions:
    """Browser sessions and one-time login codes, in memory, with their expiry."""

    def __init__(self) -> None:
        self._sessions: dict[str, float] = {}
        self._codes: dict[str, float] = {}
        self._lock = threading.Lock()

    def new_code(self) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = time.monotonic() + LOGIN_CODE_SECONDS
        return code

    def redeem(self, code: str) -> str | None:
        """A new session for a valid code, which is then spent; None otherwise."""
        with self._lock:
            expiry = self._codes.pop(code, None)
        if expiry is None or expiry < time.monotonic():
            return None
        return self.new_session()

    def new_session(self) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {key: end for key, end in self._sessions.items() if end > now}
            self._sessions[session] = now + SESSION_SECONDS
        return session

    def valid(self, cookie_header: str | None) -> bool:
        session = session_of(cookie_header)
        if session is None:
            return False
        with self._lock:
            expiry = self._sessions.get(session)
        return expiry is not None and expiry > time.monotonic()


def session_of(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except CookieError:
        return None
    morsel = cookies.get(SESSION_COOKIE)
    return None if morsel is None else morsel.value


def session_cookie(session: str) -> str:
    return (
        f"{SESSION_COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
    )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(next_path: str, *, failed: bool = False) -> str:
    problem = '<p class="problem">That is not this server\'s token.</p>' if failed else ""
    return _page(
        "deployer: sign in",
        f"""<h1>Sign in</h1>
<p>Paste the token of this <code>deployer serve</code> (the file named when it
started, <code>.deployer/local/token</code> by default), or open the one-time
link it printed.</p>
{problem}
<form method="post" action="{LOGIN_PATH}">
  <input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
  <label>token <input type="password" name="token" autocomplete="current-password"
    autofocus size="48"></label>
  <button type="submit">Sign in</button>
</form>""",
    )


def index_page(functions: Iterable[Mapping[str, Any]]) -> str:
    """The deployed functions with their last run; each links to its report."""
    rows = []
    for function in functions:
        name = html.escape(str(function["name"]))
        status = html.escape(str(function.get("status") or "no runs yet"))
        when = html.escape(str(function.get("started") or ""))
        triggers = html.escape(", ".join(function.get("triggers") or []))
        rows.append(
            f'<tr><td><a href="{REPORT_PREFIX}{quote(str(function["name"]))}">{name}</a></td>'
            f'<td class="status {status}">{status}</td><td>{when}</td><td>{triggers}</td></tr>'
        )
    body = (
        "<table><thead><tr><th>function</th><th>last run</th><th>started (UTC)</th>"
        "<th>triggers</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p>No functions are deployed here yet.</p>"
    )
    return _page("deployer: functions", f"<h1>Deployed functions</h1>{body}")


def message_page(title: str, message: str) -> str:
    shown = f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
    return _page(f"deployer: {title}", shown)


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
  padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e3e3; }}
.status.succeeded {{ color: #1a7f37; }} .status.warned {{ color: #9a6700; }}
.status.failed, .status.check_failed, .status.lost {{ color: #cf222e; }}
.problem {{ color: #cf222e; }}
</style></head><body>{body}</body></html>"""
