"""Per-run column profiles, drift against a reference, and schema change.

Runs inside every deployed function, so it uses only numpy, pandas and pyarrow
(no scipy), costs time linear in rows, and writes a bounded amount per column.
Every function here is pure: profiles in, plain JSON-able dicts out.

A profile (``profile_frame``) is what ``profile.json`` holds for one frame::

    {
      "format": 1,
      "rows": 1000,
      "duplicate_columns": [],
      "columns": {
        "score": {
          "type": "double", "dtype": "float64", "kind": "numeric", "rows": 1000,
          "bins_from": "self", "nulls": 0, "null_fraction": 0.0, "infinite": 0,
          "min": -3.1, "max": 2.9, "mean": 0.01, "std": 0.99,
          "histogram": {"cuts": [-1.28, -0.84, ...], "counts": [100, 100, ...]}
        },
        "segment": {
          "type": "large_string", "dtype": "str", "kind": "categorical", "rows": 1000,
          "bins_from": "self", "nulls": 3, "null_fraction": 0.003, "distinct": 3,
          "histogram": {"categories": ["a", "b", "c"], "counts": [500, 300, 197], "other": 0}
        },
        "tags": {
          "type": "list<item: int64>", "dtype": "object", "kind": "unsupported",
          "rows": 1000, "nulls": 0, "null_fraction": 0.0,
          "reason": "list<item: int64> values are not profiled"
        }
      }
    }

Kinds: ``numeric`` (ints, floats, decimals; durations in seconds),
``datetime`` (min/max as ISO strings, histogram over epoch seconds, tz-naive
read as UTC), ``categorical`` (strings, categories, booleans: the top-k values
as labels, the rest counted as "other"), ``null`` (no value to infer a type
from) and ``unsupported`` (lists, dicts, mixed objects, ...: type and reason,
never an exception). Histograms count the non-null values only; nulls are the
``nulls`` count. A numeric histogram has ``len(cuts) + 1`` bins: bin ``i``
holds ``cuts[i-1] <= x < cuts[i]``, and the first and last bins are open to
-inf and +inf, so later runs' out-of-range values (and infinities) land in the
end bins and JSON never holds an infinity. ``min``/``max``/``mean``/``std``
(population, ddof=0) are over the finite values; ``None`` when there are none.

Bins are decided once, by the reference: profiled without ``reference=``, a
column gets quantile cuts (numeric) or its own top-k (categorical); profiled
with one, it is counted on the reference's cuts and categories. Histograms on
the same bins are comparable and merge by addition (``merge_profiles``), so a
reference window is the sum of runs and drift costs O(bins).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FORMAT = 1
# Ten quantile bins: at 1,000 rows against a 1,000-row reference, sampling
# noise alone puts the JS distance of an unchanged column above 0.1 in about
# 0.1% of runs with 10 bins, but in about 10% with 20 bins (JS divergence is
# roughly (bins - 1) * (1/n + 1/m) / (8 ln 2) under no change). A 0.5 standard
# deviation shift still reads about 0.2. Evidently's 30 bins would cry wolf.
DEFAULT_BINS = 10
DEFAULT_TOP_K = 20
MAX_BINS = 1000
MAX_LABEL_CHARS = 100  # longer values are cut to this and end in "…"
# PSI is infinite for a bin empty on one side; as Evidently does, an empty
# bin's share is taken as 0.0001 (not renormalised). JS needs no epsilon.
PSI_EPSILON = 1e-4
# More cuts than this are counted with one binary search per value instead of
# one vectorised comparison per cut.
_COMPARISON_PASSES = 16
# 64K float64 values (512 KiB) fit a core's L2 cache.
_SLICE = 1 << 16


class ProfileError(ValueError):
    """A profile this runtime cannot read, or arguments it cannot use."""


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When a column's drift statistics make it ``warn`` or ``drift``.

    ``drift`` when JS distance >= ``js`` or PSI >= ``psi_drift``; otherwise
    ``warn`` when PSI >= ``psi_warn``; otherwise ``ok``. The defaults are
    Evidently's (JS 0.1; PSI 0.1, with 0.25 the usual "significant shift").
    JS is the primary test: it is bounded, symmetric and needs no epsilon; PSI
    adds the familiar warn band and catches shifts concentrated in one bin.

    Sampling noise alone gives a JS distance of about
    sqrt((bins - 1) * (1/n + 1/m) / (8 ln 2)): 0.06 for 10 bins at 1,000 rows
    against 1,000, but 0.13 at 100 rows, where every column reads as drift. The
    result carries both counts (``values``, ``reference_values``) to judge by.
    """

    js: float = 0.1
    psi_warn: float = 0.1
    psi_drift: float = 0.25

    def verdict(self, js: float, psi: float) -> str:
        """``"ok"``, ``"warn"`` or ``"drift"`` for one column's statistics."""
        if js >= self.js or psi >= self.psi_drift:
            return "drift"
        if psi >= self.psi_warn:
            return "warn"
        return "ok"


DEFAULT_THRESHOLDS = Thresholds()


# --- profiling ---------------------------------------------------------------


def profile_frame(
    frame: pd.DataFrame,
    *,
    reference: Mapping[str, Any] | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Profile every column of ``frame`` into a JSON-able dict (see the module doc).

    Without ``reference`` numeric columns get ``bins`` quantile bins and
    categorical ones their ``top_k`` most frequent values. With a reference
    profile, a column of the same kind there is counted on its bins instead
    (``bins`` and ``top_k`` then do not apply to it). A column that cannot be
    profiled is recorded as ``"kind": "unsupported"`` with a reason; this never
    raises because of the data.

        >>> reference = profile_frame(training_frame)
        >>> run = profile_frame(batch, reference=reference)
        >>> drift(run, reference)["dataset_drift"]
        False
    """
    if not 1 <= bins <= MAX_BINS:
        raise ProfileError(f"bins={bins}: use between 1 and {MAX_BINS} bins")
    if not 1 <= top_k <= MAX_BINS:
        raise ProfileError(f"top_k={top_k}: use between 1 and {MAX_BINS} values")
    reference_columns = _columns_of(reference, "reference") if reference is not None else {}
    columns: dict[str, dict[str, Any]] = {}
    duplicates: list[str] = []
    for position, label in enumerate(frame.columns):
        name = str(label)
        if name in columns:
            # A JSON object holds a name once; the first column is the one compared.
            duplicates.append(name)
            continue
        columns[name] = _profile_column(
            frame.iloc[:, position], reference_columns.get(name), bins=bins, top_k=top_k
        )
    return {
        "format": FORMAT,
        "rows": len(frame),
        "duplicate_columns": duplicates,
        "columns": columns,
    }


def _profile_column(
    series: pd.Series, reference: Mapping[str, Any] | None, *, bins: int, top_k: int
) -> dict[str, Any]:
    arrow_type, type_error = _arrow_type(series)
    column: dict[str, Any] = {
        "type": arrow_type,
        "dtype": str(series.dtype),
        "kind": _kind(series, arrow_type),
        "rows": len(series),
    }
    try:
        column.update(_profile_values(series, column["kind"], reference, bins=bins, top_k=top_k))
    except Exception as error:
        # Recorded in the profile, not raised: a run never fails because of its profile.
        column["kind"] = "unsupported"
        column["reason"] = f"{type(error).__name__}: {error}"[:500]
    if column["kind"] == "unsupported" and "reason" not in column:
        column["reason"] = type_error or f"{arrow_type or column['dtype']} values are not profiled"
    return column


def _profile_values(
    series: pd.Series, kind: str, reference: Mapping[str, Any] | None, *, bins: int, top_k: int
) -> dict[str, Any]:
    if kind not in ("numeric", "datetime", "categorical"):
        return _nulls(int(series.isna().sum()), len(series))
    reference_bins = _reference_bins(reference, kind)
    bins_from = {"bins_from": "self" if reference_bins is None else "reference"}
    # Infinities and overflow are accounted for; numpy need not warn about them.
    with np.errstate(all="ignore"):
        if kind == "numeric":
            profile = _numeric_profile(_numeric_values(series), reference_bins, bins=bins)
            if pd.api.types.is_integer_dtype(series.dtype) and profile["min"] is not None:
                profile["min"], profile["max"] = _integer_extremes(series, profile)
        elif kind == "datetime":
            profile = _datetime_profile(series, reference_bins, bins=bins)
        else:
            profile = _categorical_profile(series, reference_bins, top_k=top_k)
    return bins_from | profile


def _arrow_type(series: pd.Series) -> tuple[str | None, str | None]:
    """The column's Arrow type as pyarrow would write it, or None and why not."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return str(pa.from_numpy_dtype(dtype)), None
    try:
        schema = pa.Schema.from_pandas(series.to_frame(name="column"), preserve_index=False)
    except Exception as error:  # mixed objects: pyarrow cannot write them either
        return None, f"pyarrow cannot convert it: {error}"[:500]
    return str(schema.field(0).type), None


def _kind(series: pd.Series, arrow_type: str | None) -> str:
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        # The values decide: pyarrow's inferred type says what they all are.
        if arrow_type is None:
            return "unsupported"
        if arrow_type in ("string", "large_string", "string_view", "bool"):
            return "categorical"
        if re.fullmatch(r"u?int\d+|halffloat|float|double|decimal\d*\(.*\)", arrow_type):
            return "numeric"
        if arrow_type.startswith(("timestamp", "date")):
            return "datetime"
        return "null" if arrow_type == "null" else "unsupported"
    if pd.api.types.is_bool_dtype(dtype):
        return "categorical"
    if pd.api.types.is_complex_dtype(dtype):
        return "unsupported"
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        return "categorical"
    return "unsupported"


def _reference_bins(reference: Mapping[str, Any] | None, kind: str) -> list[Any] | None:
    """The reference's cuts or categories for a column of this kind, if it has them."""
    if reference is None or reference.get("kind") != kind:
        return None
    key = "categories" if kind == "categorical" else "cuts"
    return list(reference["histogram"][key])


def _nulls(nulls: int, rows: int) -> dict[str, Any]:
    # Zero rows have no nulls: the fraction is 0.0 rather than undefined.
    return {"nulls": nulls, "null_fraction": nulls / rows if rows else 0.0}


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _numeric_values(series: pd.Series) -> np.ndarray:
    """Float64 values, NaN for nulls; durations in seconds."""
    dtype = series.dtype
    if pd.api.types.is_timedelta64_dtype(dtype):
        return series.dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(dtype, np.dtype) and dtype.kind == "O":  # Python ints, floats or Decimals
        return pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(dtype, np.dtype):
        return series.to_numpy().astype(np.float64, copy=False)
    return series.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable, Arrow-backed


def _integer_extremes(series: pd.Series, profile: Mapping[str, Any]) -> tuple[int, int]:
    # float64 holds every integer up to 2**53 exactly; past it, ask the integers.
    if max(abs(profile["min"]), abs(profile["max"])) < 2**53:
        return int(profile["min"]), int(profile["max"])
    return int(series.min()), int(series.max())


def _numeric_profile(
    values: np.ndarray, reference_cuts: list[float] | None, *, bins: int
) -> dict[str, Any]:
    rows = len(values)
    if reference_cuts is None:
        cuts = _quantile_cuts(_finite_values(values), bins)
    else:
        cuts = reference_cuts
    scan = _scan(values, cuts)
    nulls = 0
    finite, stats = values, scan
    if not math.isfinite(scan.total):
        # Some NaN or infinity (or an overflow): the statistics are taken again
        # over the finite values. The counts below the cuts stand: NaN compares
        # false and the infinities fall below every cut or none.
        nulls = int(np.count_nonzero(np.isnan(values)))
        finite = _finite_values(values)
        stats = _scan(finite, [])
    count = len(finite)
    minimum = maximum = mean = std = None
    if count:
        minimum, maximum = _finite(stats.minimum), _finite(stats.maximum)
        mean = _finite(stats.total / count)
        if mean is not None:
            std = _standard_deviation(finite, mean, stats.squares / count)
    # The last bin counts down from the non-null total, so NaN is in no bin.
    counts = np.diff(scan.below, prepend=0, append=rows - nulls)
    return {
        **_nulls(nulls, rows),
        "infinite": rows - nulls - count,
        "min": minimum,
        "max": maximum,
        "mean": mean,
        "std": std,
        "histogram": {"cuts": cuts, "counts": [int(value) for value in counts]},
    }


QUANTILE_SAMPLE = 100_000


class _Scan(NamedTuple):
    total: float
    squares: float
    minimum: float
    maximum: float
    below: np.ndarray  # per cut, how many values are below it


def _scan(values: np.ndarray, cuts: list[float]) -> _Scan:
    """Sum, sum of squares, min, max and the counts below each cut, in one trip.

    The values are read in slices that stay in a core's cache, so a dozen
    vectorised operations cost about one trip to memory: half the time of
    whole-array passes. A few comparisons per slice beat a binary search per
    value (np.searchsorted) by ~10x; past _COMPARISON_PASSES cuts, they don't.
    """
    total = squares = 0.0
    minimum, maximum = math.inf, -math.inf
    below = np.zeros(len(cuts), dtype=np.int64)
    compare = len(cuts) <= _COMPARISON_PASSES
    flags = np.empty(min(len(values), _SLICE), dtype=bool)
    for start in range(0, len(values), _SLICE):
        part = values[start : start + _SLICE]
        total += float(np.add.reduce(part))
        # einsum, not np.dot: BLAS threads spin and stall when the CPU is shared.
        squares += float(np.einsum("i,i->", part, part))
        minimum = min(minimum, float(part.min()))
        maximum = max(maximum, float(part.max()))
        if compare:
            smaller = flags[: len(part)]
            for index, cut in enumerate(cuts):
                np.less(part, cut, out=smaller)
                below[index] += np.count_nonzero(smaller)
    if cuts and not compare:
        positions = np.searchsorted(np.asarray(cuts), values, side="right")
        below = np.cumsum(np.bincount(positions, minlength=len(cuts) + 1))[:-1]
    return _Scan(total, squares, minimum, maximum, below)


def _finite_values(values: np.ndarray) -> np.ndarray:
    if math.isfinite(float(np.add.reduce(values))):
        return values
    return values[np.isfinite(values)]


def _standard_deviation(finite: np.ndarray, mean: float, mean_square: float) -> float | None:
    """Population std; from the sum of squares unless that loses precision."""
    variance = mean_square - mean * mean
    # Cancellation costs about log2(n) * 2e-16 * mean_square / variance of
    # relative precision; past 1e4 (a mean over 100 stds, as epoch times have)
    # the deviations are summed instead, in a second pass.
    if not (math.isfinite(variance) and variance > 1e-4 * mean_square):
        deviations = finite - mean
        variance = float(np.einsum("i,i->", deviations, deviations)) / len(finite)
    return _finite(math.sqrt(variance))


def _quantile_cuts(finite: np.ndarray, bins: int) -> list[float]:
    """Bin edges at the quantiles of the values; of every k-th value past
    QUANTILE_SAMPLE (the counts in the bins are still of every value): the
    quantiles of 2M values cost 50 ms a column, of 100k 2 ms, and edges only
    need to spread the values out, not to be exact quantiles."""
    if not len(finite) or bins < 2:
        return []
    if len(finite) > QUANTILE_SAMPLE:
        finite = finite[:: -(-len(finite) // QUANTILE_SAMPLE)]
    # inverted_cdf picks observed values: no interpolation that could overflow,
    # and discrete data gets cuts on its own values.
    cuts = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
    return [float(cut) for cut in np.unique(cuts)]


def _datetime_profile(
    series: pd.Series, reference_cuts: list[float] | None, *, bins: int
) -> dict[str, Any]:
    utc = pd.to_datetime(series, utc=True)  # tz-naive values are read as UTC
    unit = utc.dt.unit
    ticks = utc.dt.tz_localize(None).to_numpy().view(np.int64)
    missing = utc.isna().to_numpy()
    present = ticks[~missing]
    seconds = ticks / (np.timedelta64(1, "s") / np.timedelta64(1, unit))
    seconds[missing] = np.nan
    profile = _numeric_profile(seconds, reference_cuts, bins=bins)
    timezone = getattr(series.dtype, "tz", None)

    def iso(tick: int) -> str:
        moment = pd.Timestamp(tick, unit=unit)
        return (moment.tz_localize("UTC").tz_convert(timezone) if timezone else moment).isoformat()

    return {
        "nulls": profile["nulls"],
        "null_fraction": profile["null_fraction"],
        "min": iso(int(present.min())) if len(present) else None,
        "max": iso(int(present.max())) if len(present) else None,
        "histogram": profile["histogram"],
    }


def _categorical_profile(
    series: pd.Series, reference_categories: list[str] | None, *, top_k: int
) -> dict[str, Any]:
    rows = len(series)
    values = series.value_counts(dropna=True, sort=False)
    values = values[values > 0]  # a categorical lists its unused categories too
    counts = pd.Series(values.to_numpy(dtype=np.int64), index=_labels(values.index))
    if not counts.index.is_unique:  # long values that share their first characters
        counts = counts.groupby(level=0, sort=False).sum()
    non_null = int(counts.sum())
    if reference_categories is not None:
        categories = reference_categories
        kept = [int(count) for count in counts.reindex(categories, fill_value=0)]
    else:
        categories, kept = _top(counts, top_k)
    return {
        **_nulls(rows - non_null, rows),
        "distinct": len(values),
        "histogram": {"categories": categories, "counts": kept, "other": non_null - sum(kept)},
    }


def _labels(index: pd.Index) -> pd.Index:
    text = index.astype(str)
    long = text.str.len() > MAX_LABEL_CHARS
    if long.any():
        text = text.where(~long, text.str.slice(0, MAX_LABEL_CHARS) + "…")
    return text


def _top(counts: pd.Series, top_k: int) -> tuple[list[str], list[int]]:
    """The top_k labels by count, ties by label, so equal data gives equal bins."""
    table = pa.table(
        {
            "label": pa.array(counts.index.to_numpy(dtype=object), type=pa.large_string()),
            "count": pa.array(counts.to_numpy(dtype=np.int64)),
        }
    )
    order = pc.select_k_unstable(
        table, k=min(top_k, len(table)), sort_keys=[("count", "descending"), ("label", "ascending")]
    )
    top = table.take(order)
    return top.column("label").to_pylist(), top.column("count").to_pylist()


# --- drift -------------------------------------------------------------------


def jensen_shannon_distance(counts: Sequence[float], other: Sequence[float]) -> float:
    """Jensen–Shannon distance (base 2, so in [0, 1]) between two histograms' shares."""
    first, second = _shares(counts), _shares(other)
    middle = (first + second) / 2

    def divergence(shares: np.ndarray) -> float:
        present = shares > 0  # 0 * log 0 = 0
        return float(np.sum(shares[present] * np.log2(shares[present] / middle[present])))

    return math.sqrt(min(max((divergence(first) + divergence(second)) / 2, 0.0), 1.0))


def population_stability_index(
    counts: Sequence[float], expected: Sequence[float], *, epsilon: float = PSI_EPSILON
) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins' shares; an empty bin's share is ``epsilon``."""
    actual = np.maximum(_shares(counts), epsilon)
    wanted = np.maximum(_shares(expected), epsilon)
    return float(np.sum((actual - wanted) * np.log(actual / wanted)))


def _shares(counts: Sequence[float]) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    if not total > 0:
        raise ProfileError("a histogram with no values has no distribution to compare")
    return values / total


def drift(
    run_profile: Mapping[str, Any],
    reference_profile: Mapping[str, Any],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    column_thresholds: Mapping[str, Thresholds] | None = None,
    dataset_share: float = 0.5,
) -> dict[str, Any]:
    """Per-column and data-set drift of a run against the reference, on shared bins.

    Each column in both profiles with the same bins gets its JS distance, PSI
    and a verdict from ``column_thresholds[name]`` or else ``thresholds`` (see
    ``Thresholds``). The data set drifts when at least ``dataset_share`` of the
    compared columns drift. Columns that cannot be compared are in ``skipped``
    with the reason.

        >>> result = drift(run, reference, column_thresholds={"age": Thresholds(js=0.2)})
        >>> result["columns"]["age"]["verdict"], result["skipped"]
        ('ok', {'tags': 'unsupported in the run: list<item: string> values are not profiled'})
    """
    run_columns = _columns_of(run_profile, "run")
    reference_columns = _columns_of(reference_profile, "reference")
    overrides = column_thresholds or {}
    columns: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, column in run_columns.items():
        if name not in reference_columns:
            skipped[name] = "not in the reference"
            continue
        reference = reference_columns[name]
        reason = _incomparable(column, reference)
        if reason is not None:
            skipped[name] = reason
            continue
        run_counts, reference_counts = _distribution(column), _distribution(reference)
        limits = overrides.get(name, thresholds)
        js = jensen_shannon_distance(run_counts, reference_counts)
        psi = population_stability_index(run_counts, reference_counts)
        columns[name] = {
            "kind": column["kind"],
            "js": js,
            "psi": psi,
            "verdict": limits.verdict(js, psi),
            "bins": len(run_counts),
            "values": int(sum(run_counts)),
            "reference_values": int(sum(reference_counts)),
        }
        if name in overrides:
            columns[name]["thresholds"] = asdict(limits)
    for name in reference_columns:
        if name not in run_columns:
            skipped[name] = "not in the run"
    drifted = [name for name, result in columns.items() if result["verdict"] == "drift"]
    share = len(drifted) / len(columns) if columns else 0.0
    return {
        "format": FORMAT,
        "thresholds": asdict(thresholds),
        "columns": columns,
        "skipped": skipped,
        "drifted": drifted,
        "drift_share": share,
        "dataset_drift": bool(columns) and share >= dataset_share,
    }


def _incomparable(column: Mapping[str, Any], reference: Mapping[str, Any]) -> str | None:
    for side, profile in (("run", column), ("reference", reference)):
        if profile["kind"] not in ("numeric", "datetime", "categorical"):
            return f"{profile['kind']} in the {side}: {profile.get('reason', 'no values')}"
    if column["kind"] != reference["kind"]:
        return f"{reference['kind']} in the reference but {column['kind']} in the run"
    run_bins, reference_bins = _bin_keys(column), _bin_keys(reference)
    if run_bins != reference_bins:
        return "not on the reference's bins: profile the run with reference="
    for side, profile in (("run", column), ("reference", reference)):
        if sum(_distribution(profile)) == 0:
            return f"no non-null values in the {side}"
    if len(_distribution(reference)) < 2:
        return "the reference has a single bin: nothing to compare"
    return None


def _bin_keys(column: Mapping[str, Any]) -> list[Any]:
    histogram = column["histogram"]
    return list(histogram["categories" if column["kind"] == "categorical" else "cuts"])


def _distribution(column: Mapping[str, Any]) -> list[int]:
    """A column's histogram as bin counts; a categorical's "other" is its last bin."""
    histogram = column["histogram"]
    counts = list(histogram["counts"])
    return counts + [histogram["other"]] if column["kind"] == "categorical" else counts


# --- schema change -----------------------------------------------------------

# Storage variants of the same values; telling pandas' str from object strings,
# or a categorical with 200 categories from one with 100, is not a schema change.
_SAME_VALUES = (
    (re.compile(r"\blarge_(string|binary|list)\b"), r"\1"),
    (re.compile(r"\b(string|binary)_view\b"), r"\1"),
    (re.compile(r", indices=\w+"), ""),
    (re.compile(r"\b(timestamp|duration)\[\w+(, )?"), r"\1["),
)


def schema_changes(
    current_profile: Mapping[str, Any], other_profile: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Columns added to, removed from, or changed in type in ``current_profile``
    compared with ``other_profile`` (the reference or the previous run).

    In ``current_profile``'s column order, then removed columns in
    ``other_profile``'s order. Types are Arrow type strings; storage variants
    (large_string vs string, dictionary index width, timestamp unit) are not
    changes.

        >>> schema_changes(run, reference)
        [{'column': 'age', 'change': 'type', 'old_type': 'int64', 'new_type': 'double'}]
    """
    current = _columns_of(current_profile, "current")
    other = _columns_of(other_profile, "other")
    changes: list[dict[str, Any]] = []
    for name, column in current.items():
        if name not in other:
            changes.append({"column": name, "change": "added", "type": column["type"]})
        elif _values_type(column["type"]) != _values_type(other[name]["type"]):
            changes.append(
                {
                    "column": name,
                    "change": "type",
                    "old_type": other[name]["type"],
                    "new_type": column["type"],
                }
            )
    for name, column in other.items():
        if name not in current:
            changes.append({"column": name, "change": "removed", "type": column["type"]})
    return changes


def _values_type(arrow_type: str | None) -> str | None:
    if arrow_type is None:
        return None
    for pattern, replacement in _SAME_VALUES:
        arrow_type = pattern.sub(replacement, arrow_type)
    return arrow_type.replace("[]", "")


# --- merging -----------------------------------------------------------------


def merge_profiles(profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One profile of all the given profiles' rows: counts and histograms added.

    A reference window is the merge of its runs. A column merges only where its
    profiles share a kind and bins (runs profiled against the same reference);
    otherwise it is ``unsupported`` in the result with the reason, and drift
    skips it. A column missing from some profiles merges the ones that have it.
    """
    if not profiles:
        raise ProfileError("merge_profiles needs at least one profile")
    tables = [_columns_of(profile, f"profile {index}") for index, profile in enumerate(profiles)]
    names = list(dict.fromkeys(name for table in tables for name in table))
    columns = {
        name: _merge_column([table[name] for table in tables if name in table]) for name in names
    }
    duplicates = [name for profile in profiles for name in profile["duplicate_columns"]]
    return {
        "format": FORMAT,
        "rows": sum(int(profile["rows"]) for profile in profiles),
        "duplicate_columns": list(dict.fromkeys(duplicates)),
        "columns": columns,
    }


def _merge_column(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    rows = sum(int(part["rows"]) for part in parts)
    nulls = sum(int(part.get("nulls") or 0) for part in parts)
    # A run where the column held no value at all adds rows and nulls only.
    parts = [part for part in parts if part["kind"] != "null"] or parts
    last = parts[-1]
    merged: dict[str, Any] = {
        "type": last["type"],
        "dtype": last["dtype"],
        "kind": last["kind"],
        "rows": rows,
        **_nulls(nulls, rows),
    }
    kinds = {part["kind"] for part in parts}
    if kinds <= {"unsupported", "null"}:
        if merged["kind"] == "unsupported":
            merged["reason"] = last.get("reason", "")
        return merged
    if len(kinds) > 1 or len({repr(_bin_keys(part)) for part in parts}) > 1:
        merged["kind"] = "unsupported"
        merged["reason"] = "kinds or bins differ across the merged profiles"
        return merged
    counts = np.sum([part["histogram"]["counts"] for part in parts], axis=0)
    histogram = dict(last["histogram"], counts=[int(count) for count in counts])
    merged["bins_from"] = last.get("bins_from", "self")
    if merged["kind"] == "categorical":
        histogram["other"] = sum(int(part["histogram"]["other"]) for part in parts)
        # Distinct values cannot be added; the largest is a lower bound.
        merged["distinct"] = max(int(part["distinct"]) for part in parts)
    elif merged["kind"] == "datetime":
        present = [part for part in parts if part["min"] is not None]
        merged["min"] = min((part["min"] for part in present), key=_epoch, default=None)
        merged["max"] = max((part["max"] for part in present), key=_epoch, default=None)
    else:
        merged.update(_merge_moments(parts))
    merged["histogram"] = histogram
    return merged


def _merge_moments(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Min, max, mean and population std of the union of the parts' finite values.

    The union's sum of squared deviations is each part's plus its size times
    its mean's squared distance from the union's mean (Chan et al.).
    """
    infinite = sum(int(part["infinite"]) for part in parts)
    groups = [
        (int(part["rows"]) - int(part["nulls"]) - int(part["infinite"]), part)
        for part in parts
        if part["mean"] is not None
    ]
    count = sum(size for size, _ in groups)
    minimum = min((part["min"] for part in parts if part["min"] is not None), default=None)
    maximum = max((part["max"] for part in parts if part["max"] is not None), default=None)
    mean = std = None
    if count:
        mean = sum(size * part["mean"] for size, part in groups) / count
        squares = sum(
            size * ((part["std"] or 0.0) ** 2 + (part["mean"] - mean) ** 2) for size, part in groups
        )
        mean, std = _finite(mean), _finite(math.sqrt(squares / count))
    return {"infinite": infinite, "min": minimum, "max": maximum, "mean": mean, "std": std}


def _epoch(iso: str) -> float:
    moment = pd.Timestamp(iso)
    return (moment if moment.tzinfo else moment.tz_localize("UTC")).timestamp()


def _columns_of(profile: Mapping[str, Any], role: str) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(profile, Mapping) or profile.get("format") != FORMAT:
        found = profile.get("format") if isinstance(profile, Mapping) else type(profile).__name__
        raise ProfileError(
            f"the {role} profile is format {found!r}; this runtime reads format {FORMAT}: "
            "profile it again with this version of deployer"
        )
    columns: Mapping[str, Mapping[str, Any]] = profile["columns"]
    return columns
