"""Synthetic report data: what a function with a long history looks like.

``synthetic_report`` is deterministic for a seed, so the report tests and the
size bench draw the same page. The history is shaped like a real one: a daily
schedule with some HTTP and manual runs, a few failures with tracebacks, checks
that fail, three metrics with bounds, columns that start to drift halfway, two
schema changes and a histogram for every profiled column.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from deployer.report.data import (
    DeploymentInfo,
    DriftMatrix,
    FailedCheck,
    Histogram,
    MetricSeries,
    ReportData,
    RunSummary,
)

START = datetime(2024, 1, 1, 6, 0, tzinfo=timezone.utc)
STATUS_CHOICES = ["succeeded", "warned", "check_failed", "failed"]

# name -> (lower, upper, severity, typical value, spread)
METRICS = {
    "mean_score": (0.2, 0.6, "error", 0.4, 0.08),
    "null_fraction": (None, 0.05, "warning", 0.01, 0.015),
    "positive_rate": (0.05, None, "warning", 0.12, 0.04),
}

TRACEBACK = """Traceback (most recent call last):
  File "/var/task/deployer_runtime/core.py", line 212, in run
    predictions = function(inputs)
  File "/var/task/bundle/predict.py", line 31, in predict
    features = encode(frame[COLUMNS])
  File "/var/task/bundle/predict.py", line 18, in encode
    return frame.assign(region=frame.region.map(REGIONS).astype("int64"))
  File "/var/task/pandas/core/generic.py", line 6643, in astype
    new_data = self._mgr.astype(dtype=dtype, copy=copy, errors=errors)
{error_type}: {error_message}"""

FAILURES = [
    ("ValueError", "cannot convert float NaN to integer"),
    ("KeyError", "'region'"),
    ("TimeoutError", "reading s3://acme/features/latest.parquet took longer than 300 s"),
]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _columns(count: int) -> list[str]:
    """``count`` profiled columns: inputs first, the outputs last."""
    outputs = ["output.score", "output.label"][: max(0, min(2, count - 1))]
    inputs = [f"input.feature_{index:02d}" for index in range(count - len(outputs))]
    return inputs + outputs


def _run(index: int, rng: random.Random) -> RunSummary:
    trigger = rng.choices(["schedule", "http", "manual", "map"], weights=[80, 12, 6, 2])[0]
    # Scheduled runs fire at 06:00; the others arrive during the day.
    offset = timedelta(seconds=rng.randint(0, 40))
    if trigger != "schedule":
        offset += timedelta(hours=rng.randint(1, 15), minutes=rng.randint(0, 59))
    started = START + timedelta(days=index) + offset
    status = rng.choices(STATUS_CHOICES, weights=[82, 8, 4, 6])[0]
    rows_in = rng.randint(9_000, 12_000)
    run = RunSummary(
        run_id=f"{started:%Y%m%dT%H%M%S}-{rng.getrandbits(24):06x}",
        status=status,
        trigger=trigger,
        started=_iso(started),
        duration_ms=rng.lognormvariate(8.6, 0.35),
        rows_in=rows_in,
        rows_out=rows_in,
        code_hash="3f9a0c1be27d" if index < 40 else "a81c5e07d4b2",
    )
    if status == "failed":
        error_type, error_message = rng.choice(FAILURES)
        run.error_type = error_type
        run.error_message = error_message
        run.traceback = TRACEBACK.format(error_type=error_type, error_message=error_message)
        run.rows_out = None
        return run
    run.metrics = {name: _metric_value(name, status, rng) for name in METRICS}
    if status == "check_failed":
        run.failed_checks = [FailedCheck("scores_in_unit_interval", "error", None)]
        run.reasons = ["check scores_in_unit_interval failed"]
        if rng.random() < 0.5:
            run.failed_checks.append(
                FailedCheck("no_duplicate_ids", "error", "KeyError: 'customer_id'")
            )
            run.reasons.append("check no_duplicate_ids raised KeyError: 'customer_id'")
    if status == "warned":
        run.failed_checks = [FailedCheck("enough_rows", "warn", None)]
        run.reasons = ["check enough_rows failed", "input.feature_03 drifted (JS 0.34 > 0.15)"]
    return run


def _metric_value(name: str, status: str, rng: random.Random) -> float | None:
    lower, upper, _, typical, spread = METRICS[name]
    if name == "positive_rate" and rng.random() < 0.03:
        return None  # the metric raised
    value = rng.gauss(typical, spread)
    if status in ("warned", "check_failed") and rng.random() < 0.5:
        # Runs that warned are the ones whose metric left its band.
        value = (upper + spread) if upper is not None else (lower or 0) - spread
    return max(0.0, value)


def _drift(runs: list[RunSummary], columns: list[str], rng: random.Random) -> DriftMatrix:
    profiled = [run for run in runs if run.status != "failed"]
    drifting = set(columns[3 : 3 + max(1, len(columns) // 8)])
    added_at = len(profiled) * 2 // 3  # the last column appears two thirds in
    scores: list[list[float | None]] = []
    verdicts: list[list[str | None]] = []
    for position in range(len(profiled)):
        row_scores: list[float | None] = []
        row_verdicts: list[str | None] = []
        for column_index, column in enumerate(columns):
            if column_index == len(columns) - 1 and position < added_at and len(columns) > 2:
                row_scores.append(None)
                row_verdicts.append(None)
                continue
            score = abs(rng.gauss(0.05, 0.03))
            if column in drifting and position > len(profiled) // 2:
                score += 0.45 * (position - len(profiled) // 2) / max(1, len(profiled) // 2)
            score = min(1.0, score)
            row_scores.append(round(score, 4))
            row_verdicts.append("drift" if score > 0.3 else "warn" if score > 0.15 else "ok")
        scores.append(row_scores)
        verdicts.append(row_verdicts)
    schema_changes: list[tuple[int, int, str]] = []
    if len(profiled) > 2 and len(columns) > 2:
        schema_changes.append((added_at, len(columns) - 1, f"{columns[-1]}: added (int64)"))
        schema_changes.append((len(profiled) // 3, 1, f"{columns[1]}: int64 -> float64"))
        for run_index, _, change in schema_changes:
            profiled[run_index].schema_changes.append(change)
    return DriftMatrix(
        run_ids=[run.run_id for run in profiled],
        columns=columns,
        scores=scores,
        verdicts=verdicts,
        schema_changes=schema_changes,
    )


def _histogram(column: str, js: float | None, verdict: str | None, rng: random.Random) -> Histogram:
    if column == "output.label":
        labels = ["churn", "stay", "unknown"]
        reference = [0.12, 0.85, 0.03]
    else:
        edges = [round(0.1 * step, 1) for step in range(21)]
        labels = [f"[{low}, {high})" for low, high in zip(edges, edges[1:], strict=False)]
        weights = [2.718 ** (-((step - 10) ** 2) / 18) for step in range(20)]
        reference = [weight / sum(weights) for weight in weights]
    shift = (js or 0) * 3
    current_weights = [
        max(0.0, share * (1 + shift * (position / len(labels) - 0.5)) + rng.uniform(0, 0.005))
        for position, share in enumerate(reference)
    ]
    total = sum(current_weights)
    return Histogram(
        column=column,
        kind="categorical" if column == "output.label" else "numeric",
        labels=labels,
        current=[weight / total for weight in current_weights],
        reference=reference,
        js=js,
        verdict=verdict,
    )


def synthetic_report(runs: int = 100, columns: int = 30, seed: int = 0) -> ReportData:
    """A report of the last ``runs`` runs of a function profiling ``columns`` columns."""
    rng = random.Random(seed)
    history = [_run(index, rng) for index in range(runs)]
    names = _columns(columns)
    drift = _drift(history, names, rng) if names else None
    for run in history[-5:]:
        if run.status != "failed":
            run.sample = [
                {"customer_id": 1000 + row, "score": rng.random(), "label": rng.choice("AB")}
                for row in range(5)
            ]
    metrics = [
        MetricSeries(
            name=name,
            run_ids=[run.run_id for run in history if run.status != "failed"],
            started=[run.started for run in history if run.status != "failed"],
            values=[run.metrics[name] for run in history if run.status != "failed"],
            lower=lower,
            upper=upper,
            severity=severity,
        )
        for name, (lower, upper, severity, _, _) in METRICS.items()
    ]
    histograms: list[Histogram] = []
    if drift is not None and drift.scores:
        latest_scores, latest_verdicts = drift.scores[-1], drift.verdicts[-1]
        histograms = [
            _histogram(column, latest_scores[index], latest_verdicts[index], rng)
            for index, column in enumerate(drift.columns)
            if latest_scores[index] is not None
        ]
        histograms.sort(key=lambda histogram: -(histogram.js or 0))
    return ReportData(
        name="churn-scores",
        output="s3://acme-ml/deployer",
        generated_at=_iso(START + timedelta(days=runs, hours=2)),
        runs=history,
        metrics=metrics,
        drift=drift,
        histograms=histograms,
        deployment=DeploymentInfo(
            provider="aws",
            triggers=["daily at 06:00 (Europe/Berlin)", "HTTP: POST to the function URL"],
            code_hash="a81c5e07d4b29f0e6c1d2b3a4f5e6d7c",
            deps_hash="77e0f3a9c2b1d4e5f60718293a4b5c6d",
            deployed_at=_iso(START + timedelta(days=40, hours=3)),
            url="https://abcdefgh.lambda-url.eu-central-1.on.aws/",
        ),
        total_runs=runs + 37,
    )
