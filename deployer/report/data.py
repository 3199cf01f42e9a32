"""What the report shows, read from the store: plain data, no drawing.

``report_data`` gathers it (deployer/report/data.py, reading through the run
index of deployer/store.py); ``render`` (deployer/report/render.py) draws it.
Every chart's data is a field here, so tests compare what is plotted with
what the store holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("succeeded", "warned", "check_failed", "failed")


@dataclass
class FailedCheck:
    name: str
    severity: str  # "error" | "warn"
    error: str | None  # what the check raised, if it raised


@dataclass
class RunSummary:
    run_id: str
    status: str  # one of STATUSES (or "running" / "lost" for unfinished runs)
    trigger: str  # "schedule" | "http" | "manual" | "map"
    started: str  # ISO 8601, UTC
    duration_ms: float | None
    rows_in: int | None
    rows_out: int | None
    code_hash: str
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    failed_checks: list[FailedCheck] = field(default_factory=list)
    # Why a run warned or failed a check, in words (bounds, drift, schema).
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)  # user metrics
    schema_changes: list[str] = field(default_factory=list)  # "output: +extra int64", ...
    # The first rows of its predictions (records), for the newest runs only.
    sample: list[dict[str, Any]] | None = None


@dataclass
class MetricSeries:
    name: str
    run_ids: list[str]
    started: list[str]  # ISO 8601, one per value
    values: list[float | None]
    lower: float | None = None  # the metric's bounds (Metric(min=, max=)), drawn as a band
    upper: float | None = None
    severity: str | None = None


@dataclass
class DriftMatrix:
    """Runs x columns: the drift score (Jensen-Shannon distance, 0..1) of each
    column in each run against the reference, and its verdict."""

    run_ids: list[str]  # rows, oldest first
    columns: list[str]  # "input.x", "output.score"
    scores: list[list[float | None]]  # [run][column]; None: not profiled / not comparable
    verdicts: list[list[str | None]]  # "ok" | "warn" | "drift" | None
    # (run index, column index, what changed) for schema changes against the previous run
    schema_changes: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass
class Histogram:
    """One column in the latest profiled run against the reference."""

    column: str  # "output.score"
    kind: str  # "numeric" | "categorical"
    labels: list[str]  # one per bar: "[0.1, 0.2)" or a category
    current: list[float]  # fractions of rows, summing to 1 (or 0 when empty)
    reference: list[float] | None  # same bins; None without a reference
    js: float | None = None
    verdict: str | None = None


@dataclass
class DeploymentInfo:
    provider: str
    triggers: list[str]  # in words, with time zone: "daily at 06:00 (Europe/Berlin)"
    code_hash: str
    deps_hash: str | None
    deployed_at: str | None
    url: str | None = None


@dataclass
class ReportData:
    name: str
    output: str  # the store read
    generated_at: str  # ISO 8601, UTC
    runs: list[RunSummary]  # oldest first, at most the last N
    metrics: list[MetricSeries]
    drift: DriftMatrix | None  # None when no run has a profile
    histograms: list[Histogram]  # the latest profiled run, most drifted first
    deployment: DeploymentInfo | None  # None when the function is not deployed (store only)
    total_runs: int = 0  # runs in the store; ``runs`` holds the last N of them
