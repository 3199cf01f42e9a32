"""A run's quality, judged inside the function: metric bounds, check severities,
profiles of the input and the output, drift and schema change.

The configuration comes from the manifest's ``quality`` object (written by
deployer/quality.py on the host); the reference from the bundle
(``reference.json``, profiled at deploy time) and from the store
(``{output}/{name}/reference.json``: the first successful run, or the run a
user chose with ``deployer reference``). Nothing here raises for the user's
data or code: a metric or check that fails is recorded as such, a column that
cannot be profiled is named in the profile.

Severities (Aqueduct's model): a failed ``error`` check or bound makes the run
``check_failed``; a ``warning`` one, drift or a schema change makes it
``warned``. Drift is judged only on runs of at least ``min_rows`` rows: below
that, sampling noise alone reads as drift.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

ERROR = "error"
WARNING = "warning"
REFERENCE_FILE = "reference.json"  # in the bundle, and under {output}/{name}/ in the store
SCHEMA_FILE = "schema.json"  # under {output}/{name}/: the last committed run's columns
PROFILE_FILE = "profile.json"  # in each run
DEFAULT_MIN_ROWS = 1000


def plain(value: Any) -> Any:
    """A metric's value as JSON data: numpy scalars become Python numbers."""
    if hasattr(value, "item") and callable(value.item):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    return value


def _scalar(value: Any) -> float | int | bool | None:
    value = plain(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    raise TypeError(f"returned {type(value).__name__}, not a number")


def evaluate_metrics(
    metrics: Mapping[str, Callable[[Any], Any]], frame: Any, config: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values, bounds): each metric's value, and each bounded metric's verdict.

    A metric that raises or returns something that is not a number is recorded
    with its error, as a failed bound of its severity; the run keeps its
    predictions.
    """
    specs = config.get("metrics", {})
    values: dict[str, Any] = {}
    bounds: dict[str, Any] = {}
    for name, metric in metrics.items():
        spec = specs.get(name, {})
        lower, upper = spec.get("lower"), spec.get("upper")
        severity = spec.get("severity", ERROR)
        try:
            value = _scalar(metric(frame))
        except Exception as error:  # the user's metric: recorded, never fatal
            values[name] = None
            bounds[name] = {
                "passed": False,
                "severity": severity,
                "error": f"{type(error).__name__}: {error}"[:500],
            }
            continue
        values[name] = value
        if lower is None and upper is None:
            continue
        bounds[name] = bound_verdict(value, spec)
    return values, bounds


def bound_verdict(value: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a metric's value is inside its bounds (a number, not a bool)."""
    lower, upper = spec.get("lower"), spec.get("upper")
    inside = isinstance(value, (int, float)) and not isinstance(value, bool)
    inside = inside and (lower is None or value >= lower) and (upper is None or value <= upper)
    return {
        "passed": bool(inside),
        "value": value,
        "lower": lower,
        "upper": upper,
        "severity": spec.get("severity", ERROR),
    }


def evaluate_checks(
    checks: Mapping[str, Callable[[Any], Any]], frame: Any, config: Mapping[str, Any]
) -> dict[str, Any]:
    specs = config.get("checks", {})
    results: dict[str, Any] = {}
    for name, check in checks.items():
        severity = specs.get(name, {}).get("severity", ERROR)
        try:
            results[name] = {"passed": bool(check(frame)), "severity": severity}
        except Exception as error:  # a check that cannot run has not passed
            results[name] = {
                "passed": False,
                "severity": severity,
                "error": f"{type(error).__name__}: {error}"[:500],
            }
    return results


def reference_for(
    bundled: Mapping[str, Any] | None, stored: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The reference of each side: one a user set explicitly wins, then the
    deploy-time one (input only), then the first successful run's."""
    reference: dict[str, Any] = {}
    for side in ("input", "output"):
        if stored and stored.get("explicit") and stored.get(side):
            reference[side] = stored[side]
        elif bundled and bundled.get(side):
            reference[side] = bundled[side]
        elif stored and stored.get(side):
            reference[side] = stored[side]
    return reference


def profile_run(
    frames: Mapping[str, Any],
    reference: Mapping[str, Any],
    previous_schema: Mapping[str, Any] | None,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """profile.json of a run: per side, its profile, drift against the reference,
    and schema changes against the reference and the previous run."""
    return judge_sides(profile_sides(frames, reference), reference, previous_schema, config)


def profile_sides(frames: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Each side's profile, binned on the reference's edges where it has one.

    Output columns that are the input's own, unchanged (df.assign(score=...)),
    are profiled once, on the input side, and marked ``passthrough`` on the
    output side: their drift is the input's.
    """
    from . import profile as profiling

    profiles: dict[str, Any] = {}
    for side, frame in frames.items():
        if not _is_frame(frame):
            continue
        kept = _passthrough(frames.get("input"), frame) if side == "output" else []
        own = frame.drop(columns=kept) if kept else frame
        judged = profiling.profile_frame(own, reference=reference.get(side))
        profiles[side] = _with_passthrough(judged, frame, kept, profiles.get("input"))
    return profiles


def judge_sides(
    profiles: Mapping[str, Any],
    reference: Mapping[str, Any],
    previous_schema: Mapping[str, Any] | None,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """profile.json from each side's profile (one run's, or a map run's shards
    merged): drift against the reference, schema changes against the reference
    and the previous run."""
    from . import profile as profiling

    drift_config = config.get("drift", {})
    thresholds = profiling.Thresholds(**_thresholds(drift_config))
    per_column = {
        column: profiling.Thresholds(**_thresholds(values))
        for column, values in drift_config.get("columns", {}).items()
    }
    min_rows = int(drift_config.get("min_rows", DEFAULT_MIN_ROWS))
    document: dict[str, Any] = {"format": 1}
    for side, profile in profiles.items():
        side_reference = reference.get(side)
        kept = [name for name, column in profile["columns"].items() if column.get("passthrough")]
        judged = profile
        if kept:
            own = {name: column for name, column in profile["columns"].items() if name not in kept}
            judged = {**profile, "columns": own}
        entry: dict[str, Any] = {"profile": profile, "schema_changes": []}
        if kept:
            entry["passthrough"] = kept
        if side_reference:
            entry["schema_changes"] += [
                {**change, "against": "reference"}
                for change in profiling.schema_changes(profile, side_reference)
            ]
            rows = int(profile.get("rows") or 0)
            if rows >= min_rows:
                entry["drift"] = profiling.drift(
                    judged, side_reference, thresholds=thresholds, column_thresholds=per_column
                )
            else:
                entry["drift_skipped"] = (
                    f"{rows} rows, fewer than the {min_rows} needed to judge drift"
                )
        previous = (previous_schema or {}).get(side)
        if previous:
            entry["schema_changes"] += [
                {**change, "against": "previous run"}
                for change in profiling.schema_changes(profile, _as_profile(previous))
            ]
        document[side] = entry
    return document


def schema_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """Each side's column -> Arrow type, kept for the next run's comparison."""
    return {
        side: {name: column.get("type") for name, column in entry["profile"]["columns"].items()}
        for side, entry in document.items()
        if isinstance(entry, Mapping) and "profile" in entry
    }


def reference_from(document: Mapping[str, Any], run_id: str, *, explicit: bool) -> dict[str, Any]:
    """A store reference made of a run's profiles."""
    reference: dict[str, Any] = {"run_id": run_id, "explicit": explicit}
    for side in ("input", "output"):
        entry = document.get(side)
        if isinstance(entry, Mapping) and "profile" in entry:
            reference[side] = entry["profile"]
    return reference


def status_of(
    checks: Mapping[str, Any], bounds: Mapping[str, Any], document: Mapping[str, Any]
) -> tuple[str, list[str]]:
    """The run's status and what made it so, in words."""
    errors: list[str] = []
    warnings: list[str] = []
    for kind, results in (("check", checks), ("metric", bounds)):
        for name, result in results.items():
            if result.get("passed"):
                continue
            reason = f"{kind} {name!r} failed" + (
                f" ({result['error']})" if result.get("error") else ""
            )
            (errors if result.get("severity", ERROR) == ERROR else warnings).append(reason)
    for side in ("input", "output"):
        entry = document.get(side)
        if not isinstance(entry, Mapping):
            continue
        drifted = sorted(
            name
            for name, column in (entry.get("drift") or {}).get("columns", {}).items()
            if column.get("verdict") == "drift"
        )
        if drifted:
            warnings.append(f"{side} drift in {', '.join(drifted)}")
        for change in entry.get("schema_changes", []):
            warnings.append(
                f"{side} column {change['column']!r} {change['change']} "
                f"(against the {change['against']})"
            )
    if errors:
        return "check_failed", errors + warnings
    if warnings:
        return "warned", warnings
    return "succeeded", []


def _passthrough(source: Any, frame: Any) -> list[str]:
    """Columns of ``frame`` that hold the very data of ``source``'s column of that name."""
    if not _is_frame(source):
        return []
    kept = []
    for name in frame.columns:
        if name not in source.columns or frame[name].dtype != source[name].dtype:
            continue
        mine, theirs = frame[name].array, source[name].array
        shared = getattr(mine, "_pa_array", None)  # Arrow-backed (strings): the same chunks
        if shared is not None and shared is getattr(theirs, "_pa_array", None):
            kept.append(str(name))
            continue
        try:
            import numpy as np

            if np.shares_memory(np.asarray(mine), np.asarray(theirs)) and len(mine) == len(theirs):
                kept.append(str(name))
        except (TypeError, ValueError):
            continue
    return kept


def _with_passthrough(
    judged: dict[str, Any], frame: Any, kept: list[str], source: dict[str, Any] | None
) -> dict[str, Any]:
    """The side's profile in the frame's column order, passthrough columns copied
    from the input's profile and marked."""
    if not kept or source is None:
        return judged
    columns = {}
    for name in (str(label) for label in frame.columns):
        if name in kept and name in source["columns"]:
            columns[name] = {**source["columns"][name], "passthrough": True}
        elif name in judged["columns"]:
            columns[name] = judged["columns"][name]
    return {**judged, "columns": columns}


def _thresholds(values: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(values[key]) for key in ("js", "psi_warn", "psi_drift") if key in values}


def _as_profile(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "format": 1,
        "rows": 0,
        "duplicate_columns": [],
        "columns": {name: {"type": arrow_type} for name, arrow_type in schema.items()},
    }


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")
