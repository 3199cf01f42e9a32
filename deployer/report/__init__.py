"""The run report: one self-contained HTML page per function.

    deployer report churn-scores -o report.html --open
    d.report()                      # inline in Jupyter; elsewhere writes a file
    deployer serve                  # /functions/churn-scores, behind the token

``gather.report_data`` reads the store (through the run index: a few round
trips, not one per run); ``render.render`` draws it with matplotlib as inline
SVG, so the page needs no network and prints as it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deployer.report.gather import DEFAULT_RUNS


def report_html(
    name: str,
    *,
    output: str | None = None,
    provider: str = "local",
    provider_options: Mapping[str, Any] | None = None,
    last: int = DEFAULT_RUNS,
) -> str:
    """The report of ``name``'s last ``last`` runs as one HTML document."""
    from deployer.report.gather import report_data
    from deployer.report.render import render

    data = report_data(
        name, output=output, provider=provider, provider_options=provider_options, last=last
    )
    return render(data)


def write_report(
    name: str,
    path: str | Path | None = None,
    *,
    output: str | None = None,
    provider: str = "local",
    provider_options: Mapping[str, Any] | None = None,
    last: int = DEFAULT_RUNS,
) -> Path:
    """Write the report to ``path`` (default ``{name}-report.html``) and return it."""
    from deployer.archive import write_atomically

    document = report_html(
        name, output=output, provider=provider, provider_options=provider_options, last=last
    )
    target = Path(path if path is not None else f"{name}-report.html")
    write_atomically(target, document.encode())
    return target.resolve()


__all__ = ["DEFAULT_RUNS", "report_html", "write_report"]
