"""Passing a function call on, for the control-plane fakes whose function URLs
lead to a function really running (functions-framework, a Functions host)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler


def pass_on(
    handler: BaseHTTPRequestHandler,
    url: str,
    data: bytes,
    headers: Mapping[str, str],
    keep: Iterable[str],
) -> None:
    """POST ``data`` with the ``keep`` headers to ``url``; answer ``handler`` with the reply."""
    kept = {key: value for key, value in headers.items() if key in set(keep)}
    forwarded = urllib.request.Request(url, data=data, method="POST", headers=kept)
    try:
        with urllib.request.urlopen(forwarded, timeout=300) as response:
            status, replied, answer = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, replied, answer = error.code, dict(error.headers), error.read()
    reply(handler, status, answer, replied.get("Content-Type", "text/plain"))


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
