"""Prediction quality, on the host: how a user states it (Metric, Check, Drift,
reference=) and how it is read back (read_quality, set_reference).

What a run does with it is runtimes/quality.py; the statistics are
runtimes/profile.py.

    deployer.deploy(
        predict, name="churn-scores", inputs="s3://acme/features/latest.parquet",
        reference=X_train,                                  # profiled here, shipped in the bundle
        metrics={"mean_score": Metric(lambda out: out.score.mean(), lower=0.1, upper=0.6)},
        checks={"no_nulls": Check(lambda out: out.score.notna().all(), severity="warning")},
        drift=Drift(js=0.15, columns={"age": Drift(js=0.3)}),
    )
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import pandas as pd

SEVERITIES = ("error", "warning")


def _severity(severity: str, owner: str) -> str:
    if severity not in SEVERITIES:
        raise ConfigError(f"{owner}: severity must be 'error' or 'warning', not {severity!r}")
    return severity


@dataclass(frozen=True)
class Metric:
    """A metric of the function's output with optional bounds.

    A value outside ``[lower, upper]`` (or a metric that raises) fails the run's
    quality with ``severity``: "error" makes it ``check_failed``, "warning"
    makes it ``warned``. A plain callable is a Metric without bounds.

    ``merge``: how a map run combines the shards' values into the run's value
    (``"sum"``, ``"mean"`` weighted by each shard's output rows, ``"min"``,
    ``"max"``); exact for a sum, a count, an extreme, or a mean of per-row
    values. Without it a map run reports the metric per shard, and a bound
    fails when any shard is outside it.
    """

    fn: Callable[[Any], Any]
    lower: float | None = None
    upper: float | None = None
    severity: str = "error"
    merge: str | None = None


@dataclass(frozen=True)
class Check:
    """A check of the function's output: true passes. A plain callable is
    ``Check(fn)`` (severity "error": a failed check makes the run ``check_failed``)."""

    fn: Callable[[Any], Any]
    severity: str = "error"


@dataclass(frozen=True)
class Drift:
    """When a column drifts from the reference (see runtimes/profile.py, Thresholds).

    ``js``: Jensen-Shannon distance at which a column drifts; ``psi_warn`` /
    ``psi_drift``: PSI at which it warns / drifts; ``min_rows``: runs with
    fewer rows are not judged (sampling noise alone reads as drift);
    ``columns``: per-column overrides.
    """

    js: float = 0.1
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    min_rows: int = 1000
    columns: Mapping[str, Drift] = field(default_factory=dict)

    def as_config(self) -> dict[str, Any]:
        for label, value in (("js", self.js), ("psi_warn", self.psi_warn)):
            if value <= 0:
                raise ConfigError(f"Drift({label}={value!r}): a threshold must be above 0")
        if self.psi_drift < self.psi_warn:
            raise ConfigError(
                f"Drift(psi_drift={self.psi_drift!r}) is below psi_warn={self.psi_warn!r}: "
                "drift is the higher band"
            )
        if self.min_rows < 1:
            raise ConfigError(f"Drift(min_rows={self.min_rows!r}) must be at least 1")
        config: dict[str, Any] = {
            "js": self.js,
            "psi_warn": self.psi_warn,
            "psi_drift": self.psi_drift,
            "min_rows": self.min_rows,
        }
        columns = {}
        for column, override in self.columns.items():
            if not isinstance(override, Drift):
                raise ConfigError(f"Drift(columns={{{column!r}: ...}}) must be a Drift(...)")
            values = override.as_config()
            columns[column] = {key: values[key] for key in ("js", "psi_warn", "psi_drift")}
        if columns:
            config["columns"] = columns
        return config


@dataclass(frozen=True)
class QualityConfig:
    """What the bundle carries: plain callables (pickled) and the settings (manifest)."""

    metric_functions: dict[str, Callable[[Any], Any]]
    check_functions: dict[str, Callable[[Any], Any]]
    settings: dict[str, Any]


def check_alerts(alerts: Any) -> tuple[str, ...]:
    """The webhook URLs, validated; errors name the URL by position and host only."""
    from deployer.runtimes.alerts import validate_alert_urls

    if isinstance(alerts, str):
        alerts = [alerts]
    try:
        return validate_alert_urls(list(alerts or ()))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"alerts=: {error}") from None


def quality_config(
    metrics: Mapping[str, Any] | None,
    checks: Mapping[str, Any] | None,
    drift: Drift | bool | None,
    *,
    alerts: tuple[str, ...] = (),
) -> QualityConfig:
    """Split Metric/Check objects into the callables to pickle and the settings."""
    metric_functions: dict[str, Callable[[Any], Any]] = {}
    check_functions: dict[str, Callable[[Any], Any]] = {}
    settings: dict[str, Any] = {"metrics": {}, "checks": {}}
    for name, value in (metrics or {}).items():
        if isinstance(value, Metric):
            owner = f"metric {name!r}"
            if value.lower is not None and value.upper is not None and value.lower > value.upper:
                raise ConfigError(f"{owner}: lower={value.lower!r} is above upper={value.upper!r}")
            settings["metrics"][name] = {
                "lower": value.lower,
                "upper": value.upper,
                "severity": _severity(value.severity, owner),
            }
            if value.merge is not None:
                from deployer.runtimes.fanout import MERGES

                if value.merge not in MERGES:
                    raise ConfigError(
                        f"{owner}: merge={value.merge!r} is not one of {', '.join(MERGES)}"
                    )
                settings["metrics"][name]["merge"] = value.merge
            value = value.fn
        metric_functions[name] = value
    for name, value in (checks or {}).items():
        if isinstance(value, Check):
            settings["checks"][name] = {"severity": _severity(value.severity, f"check {name!r}")}
            value = value.fn
        check_functions[name] = value
    if drift is not None and drift is not False and not isinstance(drift, Drift):
        raise ConfigError(
            f"drift= must be a deployer.Drift(...) or False, not {type(drift).__name__}"
        )
    # drift=False: runs are not profiled at all (no profile.json, drift or schema change).
    settings["profile"] = drift is not False
    settings["drift"] = (drift or Drift()).as_config()
    # How many webhooks, and a digest that changes code_hash when they change:
    # the URLs themselves are secrets and travel in the function's environment.
    digest = hashlib.sha256(json.dumps(list(alerts)).encode()).hexdigest()
    settings["alerts"] = {"count": len(alerts), "sha256": digest if alerts else None}
    return QualityConfig(metric_functions, check_functions, settings)


def reference_profile(reference: Any) -> dict[str, Any] | None:
    """``reference=`` (a DataFrame, or a path/URL of Parquet or CSV) profiled on the host:
    the input side of the bundle's reference.json."""
    if reference is None:
        return None
    frame = _reference_frame(reference)
    if len(frame) == 0:
        raise ConfigError("reference= has no rows: give the data the model was trained on")
    from deployer.runtimes import profile

    return {"input": profile.profile_frame(frame)}


def _reference_frame(reference: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(reference, pd.DataFrame):
        return reference
    if not isinstance(reference, str):
        raise ConfigError(
            "reference= takes a DataFrame or the path/URL of a Parquet or CSV file, not "
            f"{type(reference).__name__}"
        )
    from deployer.runtimes import storage

    try:
        filesystem, path = storage.filesystem(reference)
        if path.endswith(".csv"):
            with filesystem.open_input_file(path) as handle:
                return pd.read_csv(handle)
        import pyarrow.parquet as pq

        return pq.read_table(path, filesystem=filesystem).to_pandas()
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"reference={reference!r} cannot be read ({error}): give an existing Parquet or "
            "CSV file, or a DataFrame"
        ) from None


def reference_json(profile: Mapping[str, Any]) -> bytes:
    """Deterministic bytes: the reference is part of code_hash."""
    return (json.dumps(profile, sort_keys=True, separators=(",", ":")) + "\n").encode()


# -- reading -------------------------------------------------------------------


def read_quality(name: str, *, output: str | None = None, last: int | None = None) -> pd.DataFrame:
    """One row per run x side x column: drift scores and verdict, null fraction,
    and the run's schema changes; runs without a profile are left out.

    >>> deployer.read_quality("churn-scores", output="s3://acme/predictions", last=10)
    """
    import pandas as pd

    from deployer.run_index import RunIndex
    from deployer.runtimes import quality, storage
    from deployer.store import _open, committed_runs

    filesystem, root = _open(output)
    records = committed_runs(name, output=output, last=last)
    # Each run's rows are kept in the run index: one GET for all runs, not one each.
    index = RunIndex(filesystem, root, name)
    rows = []
    for record in records:
        found = index.quality(record["run_id"], record.get("_stamp"))
        if found is None:
            path = storage.join(record["_directory"], quality.PROFILE_FILE)
            try:
                document = json.loads(storage.read_bytes(filesystem, path))
            except FileNotFoundError:
                document = {}
            found = quality_rows(document)
            index.put_quality(record["run_id"], record.get("_stamp"), found)
        rows += [
            {"run_id": record["run_id"], "status": record.get("status"), **row} for row in found
        ]
    index.save()
    columns = [
        "run_id", "status", "side", "column", "type", "null_fraction", "js", "psi",
        "verdict", "drifted", "schema_change", "schema_against",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def quality_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A run's profile.json as rows of side x column: type, null fraction, drift
    scores and verdict, schema change (what read_quality shows, without the run)."""
    rows = []
    for side in ("input", "output"):
        entry = document.get(side)
        if not isinstance(entry, dict):
            continue
        drifts = (entry.get("drift") or {}).get("columns", {})
        changes: dict[str, list[dict[str, Any]]] = {}
        for change in entry.get("schema_changes", []):
            changes.setdefault(change["column"], []).append(change)
        columns = entry.get("profile", {}).get("columns", {})
        for column in dict.fromkeys([*columns, *changes]):
            profiled = columns.get(column, {})
            scores = drifts.get(column, {})
            found = changes.get(column, [])
            rows.append(
                {
                    "side": side,
                    "column": column,
                    "type": profiled.get("type"),
                    "null_fraction": profiled.get("null_fraction"),
                    "js": scores.get("js"),
                    "psi": scores.get("psi"),
                    "verdict": scores.get("verdict"),
                    "drifted": scores.get("verdict") == "drift",
                    "schema_change": found[0]["change"] if found else None,
                    "schema_against": ", ".join(c["against"] for c in found) or None,
                }
            )
    return rows


def stored_reference(name: str, *, output: str | None = None) -> dict[str, Any] | None:
    """The reference kept in the store for ``name`` (``{output}/{name}/reference.json``)."""
    from deployer.runtimes import quality, storage
    from deployer.store import _open

    filesystem, root = _open(output)
    try:
        document = json.loads(
            storage.read_bytes(filesystem, storage.join(root, name, quality.REFERENCE_FILE))
        )
    except FileNotFoundError:
        return None
    return document if isinstance(document, dict) else None


def set_reference(name: str, run_id: str, *, output: str | None = None) -> dict[str, Any]:
    """Make run ``run_id``'s profiles the reference of ``name``'s next runs.

    >>> deployer.set_reference("churn-scores", "20261129T060000Z-ab12", output="s3://acme/runs")
    """
    from deployer.runtimes import quality, storage
    from deployer.store import _open, committed_runs

    filesystem, root = _open(output)
    record = next(
        (run for run in committed_runs(name, output=output) if run["run_id"] == run_id), None
    )
    if record is None:
        raise StoreError(
            f"{name} has no committed run {run_id!r} in {root}: see `deployer runs {name}`"
        )
    try:
        document = json.loads(
            storage.read_bytes(filesystem, storage.join(record["_directory"], quality.PROFILE_FILE))
        )
    except FileNotFoundError:
        raise StoreError(
            f"run {run_id} of {name} has no profile (it failed, or was made before profiles): "
            "choose a run that succeeded"
        ) from None
    reference = quality.reference_from(document, run_id, explicit=True)
    storage.write_bytes(
        filesystem, storage.join(root, name, quality.REFERENCE_FILE), storage.json_bytes(reference)
    )
    return reference
