"""Read what the report shows from the store and the provider: ``report_data``.

Round trips: one listing of the runs, the run index (deployer/run_index.py)
for their records and quality rows, and a few GETs more: the newest profiled
run's profile and the reference (the histograms), and the first rows of the
newest runs' predictions. Not one per run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from deployer.report.data import (
    DeploymentInfo,
    DriftMatrix,
    FailedCheck,
    Histogram,
    MetricSeries,
    ReportData,
    RunSummary,
)

DEFAULT_RUNS = 100
# The newest runs whose first predictions the report shows, and how many rows.
SAMPLED_RUNS = 5
SAMPLE_ROWS = 5


def report_data(
    name: str,
    *,
    output: str | None = None,
    provider: str = "local",
    provider_options: Mapping[str, Any] | None = None,
    last: int = DEFAULT_RUNS,
) -> ReportData:
    """Everything the report of ``name`` draws, from its last ``last`` runs."""
    from deployer import store
    from deployer.quality import read_quality
    from deployer.runtimes import storage

    deployment = _deployment(name, provider, provider_options)
    if output is None:
        output = deployment.output if deployment is not None else None
    location = output or store.default_output()
    records = store.run_history(name, output=location, last=last)
    runs = [_summary(record) for record in records]
    quality = read_quality(name, output=location, last=last)
    drift = _drift(quality, [run.run_id for run in runs])
    for run in runs:
        run.schema_changes = _schema_changes_of(quality, run.run_id)
    _attach_samples(name, location, runs, records)
    return ReportData(
        name=name,
        output=location,
        generated_at=storage.utc_now().isoformat(),
        runs=runs,
        metrics=_metric_series(records),
        drift=drift,
        histograms=_histograms(name, location, records, quality),
        deployment=None if deployment is None else deployment.info,
        total_runs=store.count_runs(name, output=location),
    )


# -- the deployment ------------------------------------------------------------------


class _Deployment:
    def __init__(self, info: DeploymentInfo, output: str) -> None:
        self.info = info
        self.output = output


def _deployment(
    name: str, provider: str, provider_options: Mapping[str, Any] | None
) -> _Deployment | None:
    """What the provider says is deployed, or None (not deployed, or not reachable:
    the report still draws the runs in the store)."""
    from deployer.errors import DeployerError
    from deployer.registry import get_provider

    try:
        state = get_provider(provider, provider_options).get(name)
    except (DeployerError, OSError):
        return None
    if state is None:
        return None
    info = DeploymentInfo(
        provider=state.provider,
        triggers=[trigger_in_words(trigger) for trigger in state.triggers],
        code_hash=state.code_hash,
        deps_hash=state.deps_hash,
        deployed_at=state.deployed_at,
        url=state.url,
    )
    return _Deployment(info, state.output)


def trigger_in_words(trigger: Mapping[str, Any]) -> str:
    """ "At 06:00, Monday through Friday (Europe/Berlin)" for a cron; the plan's words else."""
    from deployer.providers.base import describe_trigger

    if trigger.get("type") == "cron":
        try:
            from cron_descriptor import Options, get_description
        except ImportError:
            return describe_trigger(trigger)
        options = Options()
        options.use_24hour_time_format = True
        try:
            words = get_description(str(trigger.get("expr")), options)
        except Exception:  # cron_descriptor's own errors: the expression as it is
            return describe_trigger(trigger)
        return f"{words} ({trigger.get('tz', 'UTC')}), cron '{trigger.get('expr')}'"
    return describe_trigger(trigger)


# -- runs --------------------------------------------------------------------------


def _summary(record: Mapping[str, Any]) -> RunSummary:
    error = record.get("error") or {}
    checks = record.get("checks") or {}
    metrics = (record.get("metrics") or {}).get("user") or {}
    return RunSummary(
        run_id=str(record["run_id"]),
        status=str(record.get("status")),
        trigger=str(record.get("trigger")),
        started=str(record.get("started")),
        duration_ms=record.get("duration_ms"),
        rows_in=record.get("rows_in"),
        rows_out=record.get("rows_out"),
        code_hash=str(record.get("code_hash") or ""),
        error_type=error.get("type"),
        error_message=error.get("message"),
        traceback=error.get("traceback"),
        failed_checks=[
            FailedCheck(check, str(result.get("severity") or "error"), result.get("error"))
            for check, result in checks.items()
            if not result.get("passed")
        ],
        reasons=[str(reason) for reason in record.get("quality") or []],
        metrics={metric: _number(value) for metric, value in metrics.items()},
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _metric_series(records: Sequence[Mapping[str, Any]]) -> list[MetricSeries]:
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys((record.get("metrics") or {}).get("user") or {}))
    series = []
    for metric in names:
        with_metric = [
            record
            for record in records
            if metric in ((record.get("metrics") or {}).get("user") or {})
        ]
        # The band: the bounds the newest run was checked against.
        bound = (
            next(
                (
                    (record.get("bounds") or {}).get(metric)
                    for record in reversed(with_metric)
                    if (record.get("bounds") or {}).get(metric)
                ),
                None,
            )
            or {}
        )
        series.append(
            MetricSeries(
                name=metric,
                run_ids=[str(record["run_id"]) for record in with_metric],
                started=[str(record.get("started")) for record in with_metric],
                values=[_number(record["metrics"]["user"][metric]) for record in with_metric],
                lower=_number(bound.get("lower")),
                upper=_number(bound.get("upper")),
                severity=bound.get("severity"),
            )
        )
    return series


def _attach_samples(
    name: str, output: str, runs: list[RunSummary], records: Sequence[Mapping[str, Any]]
) -> None:
    from deployer.store import first_rows_of_run

    sampled = 0
    for run, record in zip(reversed(runs), reversed(records), strict=True):
        if sampled >= SAMPLED_RUNS:
            break
        if run.status not in ("succeeded", "warned", "check_failed") or not run.rows_out:
            continue
        frame = first_rows_of_run(record, output, SAMPLE_ROWS)
        if frame is None:
            continue
        run.sample = json.loads(frame.to_json(orient="records", date_format="iso"))
        sampled += 1


# -- quality -----------------------------------------------------------------------


def _drift(quality: Any, run_ids: list[str]) -> DriftMatrix | None:
    if quality.empty:
        return None
    with_profile = set(quality.run_id)
    profiled = [run_id for run_id in run_ids if run_id in with_profile]
    if not profiled:
        return None
    labels = quality.side + "." + quality.column
    columns = list(dict.fromkeys(labels))
    row_of = {run_id: index for index, run_id in enumerate(profiled)}
    column_of = {column: index for index, column in enumerate(columns)}
    scores: list[list[float | None]] = [[None] * len(columns) for _ in profiled]
    verdicts: list[list[str | None]] = [[None] * len(columns) for _ in profiled]
    changes: list[tuple[int, int, str]] = []
    for row, label in zip(quality.itertuples(index=False), labels, strict=True):
        if row.run_id not in row_of:
            continue
        at, column = row_of[row.run_id], column_of[label]
        scores[at][column] = _number(row.js) if row.js == row.js else None  # NaN: none
        verdicts[at][column] = row.verdict if isinstance(row.verdict, str) else None
        if isinstance(row.schema_change, str):
            changes.append((at, column, f"{row.schema_change} (against {row.schema_against})"))
    return DriftMatrix(profiled, columns, scores, verdicts, changes)


def _schema_changes_of(quality: Any, run_id: str) -> list[str]:
    if quality.empty:
        return []
    changed = quality[(quality.run_id == run_id) & quality.schema_change.notna()]
    return [
        f"{row.side}.{row.column}: {row.schema_change} (against {row.schema_against})"
        for row in changed.itertuples(index=False)
    ]


def _histograms(
    name: str, output: str, records: Sequence[Mapping[str, Any]], quality: Any
) -> list[Histogram]:
    """Each column of the newest run scored for drift (else the newest profiled one)
    against the reference, most drifted first."""
    from deployer.quality import stored_reference
    from deployer.runtimes import quality as quality_files
    from deployer.runtimes import storage
    from deployer.store import _open

    if quality.empty:
        return []
    scored = quality[quality.js.notna()]
    newest = (scored if not scored.empty else quality).run_id.iloc[-1]
    record = next((record for record in records if record["run_id"] == newest), None)
    if record is None:
        return []
    filesystem, _ = _open(output)
    try:
        document = json.loads(
            storage.read_bytes(
                filesystem, storage.join(record["_directory"], quality_files.PROFILE_FILE)
            )
        )
    except FileNotFoundError:
        return []
    reference = stored_reference(name, output=output) or {}
    found = []
    for side in ("input", "output"):
        entry = document.get(side)
        if not isinstance(entry, dict):
            continue
        drifts = (entry.get("drift") or {}).get("columns", {})
        against = ((reference.get(side) or {}).get("columns")) or {}
        for column, profiled in (entry.get("profile") or {}).get("columns", {}).items():
            histogram = _histogram(f"{side}.{column}", profiled, against.get(column))
            if histogram is None:
                continue
            scores = drifts.get(column) or {}
            histogram.js = _number(scores.get("js"))
            histogram.verdict = scores.get("verdict")
            found.append(histogram)
    found.sort(key=lambda histogram: -(histogram.js or 0.0))
    return found


def _histogram(
    label: str, column: Mapping[str, Any], reference: Mapping[str, Any] | None
) -> Histogram | None:
    kind = column.get("kind")
    histogram = column.get("histogram")
    if kind not in ("numeric", "datetime", "categorical") or not isinstance(histogram, dict):
        return None
    if kind == "categorical":
        labels = [str(category) for category in histogram.get("categories", [])] + ["other"]
        counts = list(histogram.get("counts", [])) + [histogram.get("other", 0)]
    else:
        cuts = list(histogram.get("cuts", []))
        labels = _interval_labels(cuts, datetime=kind == "datetime")
        counts = list(histogram.get("counts", []))
    reference_counts = None
    if reference is not None and isinstance(reference.get("histogram"), dict):
        theirs = reference["histogram"]
        same_bins = (
            theirs.get("categories") == histogram.get("categories")
            if kind == "categorical"
            else theirs.get("cuts") == histogram.get("cuts")
        )
        if same_bins:
            extra = [theirs.get("other", 0)] if kind == "categorical" else []
            reference_counts = _fractions(list(theirs.get("counts", [])) + extra)
    return Histogram(
        column=label,
        kind="categorical" if kind == "categorical" else "numeric",
        labels=labels,
        current=_fractions(counts),
        reference=reference_counts,
    )


def _fractions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [float(count) / total if total else 0.0 for count in counts]


def _interval_labels(cuts: Sequence[float], *, datetime: bool) -> list[str]:
    """Bins of a histogram with cuts c0 < ... < cn: below c0, [c0, c1), ..., from cn."""

    def shown(value: float) -> str:
        if datetime:
            import pandas as pd

            return str(pd.Timestamp(value, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M"))
        return f"{value:.4g}"

    if not cuts:
        return ["all"]
    labels = [f"< {shown(cuts[0])}"]
    labels += [f"[{shown(low)}, {shown(high)})" for low, high in zip(cuts, cuts[1:], strict=False)]
    labels.append(f">= {shown(cuts[-1])}")
    return labels
