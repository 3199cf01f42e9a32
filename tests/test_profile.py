"""Per-run profiles, drift and schema change (runtimes/profile.py).

Statistics are checked against independent computations (scipy, numpy, a hand
formula), never against numbers the module produced itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon

from deployer.runtimes import profile
from deployer.runtimes.profile import (
    FORMAT,
    MAX_LABEL_CHARS,
    PSI_EPSILON,
    ProfileError,
    Thresholds,
    drift,
    jensen_shannon_distance,
    merge_profiles,
    population_stability_index,
    profile_frame,
    schema_changes,
)


def round_trip(value: dict[str, Any]) -> dict[str, Any]:
    """As profile.json stores it: strict JSON, no NaN or infinity."""
    loaded: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    return loaded


def hand_psi(actual: Sequence[float], expected: Sequence[float]) -> float:
    total_actual, total_expected = sum(actual), sum(expected)
    result = 0.0
    for count_actual, count_expected in zip(actual, expected, strict=True):
        share_actual = count_actual / total_actual or PSI_EPSILON
        share_expected = count_expected / total_expected or PSI_EPSILON
        result += (share_actual - share_expected) * math.log(share_actual / share_expected)
    return result


def independent_counts(values: np.ndarray, cuts: list[float]) -> list[int]:
    """Bin i holds cuts[i-1] <= x < cuts[i]; NaN in none; ends open to infinity."""
    present = values[~np.isnan(values)]
    lows = [-np.inf, *cuts]
    highs = [*cuts, np.inf]
    counts = [
        int(np.sum((present >= low) & (present < high)))
        for low, high in zip(lows, highs, strict=True)
    ]
    counts[-1] += int(np.sum(present == np.inf))  # x < inf is false for +inf itself
    return counts


def distribution(column: dict[str, Any]) -> list[int]:
    histogram = column["histogram"]
    if column["kind"] == "categorical":
        return [*histogram["counts"], histogram["other"]]
    return list(histogram["counts"])


# --- the two statistics ------------------------------------------------------

HISTOGRAMS = [
    ([10, 20, 30, 40], [40, 30, 20, 10]),
    ([5, 0, 5, 0, 90], [0, 5, 5, 90, 0]),
    ([1, 0], [0, 1]),
    ([7, 7, 7], [7, 7, 7]),
    ([100, 1, 0, 3], [97, 2, 1, 4]),
]


@pytest.mark.parametrize(("counts", "other"), HISTOGRAMS)
def test_js_distance_equals_scipys_base_2(counts: list[int], other: list[int]) -> None:
    expected = jensenshannon(np.array(counts, float), np.array(other, float), base=2)
    assert jensen_shannon_distance(counts, other) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= jensen_shannon_distance(counts, other) <= 1.0


def test_js_distance_equals_scipys_on_random_histograms() -> None:
    generator = np.random.default_rng(7)
    for _ in range(50):
        counts = generator.integers(0, 50, 12) * (generator.random(12) < 0.8)
        other = generator.integers(0, 50, 12)
        expected = jensenshannon(counts.astype(float), other.astype(float), base=2)
        assert jensen_shannon_distance(list(counts), list(other)) == pytest.approx(expected)


@pytest.mark.parametrize(("counts", "other"), HISTOGRAMS)
def test_psi_equals_the_hand_formula_with_epsilon_for_empty_bins(
    counts: list[int], other: list[int]
) -> None:
    expected = hand_psi(counts, other)
    assert population_stability_index(counts, other) == pytest.approx(expected, abs=1e-12)


def test_a_histogram_without_values_cannot_be_compared() -> None:
    with pytest.raises(ProfileError):
        jensen_shannon_distance([0, 0], [1, 2])


def test_drift_computes_both_statistics_on_the_profiles_shared_bins() -> None:
    generator = np.random.default_rng(3)
    reference_frame = pd.DataFrame(
        {"x": generator.normal(size=2000), "s": generator.choice(["a", "b", "c", "d"], 2000)}
    )
    run_frame = pd.DataFrame(
        {"x": generator.normal(0.3, 1.2, 800), "s": generator.choice(["a", "b", "z"], 800)}
    )
    reference = round_trip(profile_frame(reference_frame))
    run = round_trip(profile_frame(run_frame, reference=reference))
    result = drift(run, reference)
    for name in ("x", "s"):
        run_counts = distribution(run["columns"][name])
        reference_counts = distribution(reference["columns"][name])
        expected_js = jensenshannon(
            np.array(run_counts, float), np.array(reference_counts, float), base=2
        )
        assert result["columns"][name]["js"] == pytest.approx(expected_js)
        assert result["columns"][name]["psi"] == pytest.approx(
            hand_psi(run_counts, reference_counts)
        )


# --- verdicts and thresholds -------------------------------------------------


@pytest.mark.parametrize(
    ("js", "psi", "verdict"),
    [
        (0.05, 0.05, "ok"),
        (0.05, 0.1, "warn"),
        (0.09, 0.24, "warn"),
        (0.1, 0.0, "drift"),
        (0.05, 0.25, "drift"),
        (0.3, 0.3, "drift"),
    ],
)
def test_verdict_is_drift_on_js_or_high_psi_and_warn_on_psi(
    js: float, psi: float, verdict: str
) -> None:
    assert Thresholds().verdict(js, psi) == verdict


def shifted_profiles(shift: float) -> tuple[dict[str, Any], dict[str, Any]]:
    generator = np.random.default_rng(11)
    reference = profile_frame(pd.DataFrame({"x": generator.normal(size=5000)}))
    run = profile_frame(pd.DataFrame({"x": generator.normal(shift, 1, 5000)}), reference=reference)
    return run, reference


def test_thresholds_can_be_raised_globally_and_per_column() -> None:
    run, reference = shifted_profiles(0.5)
    assert drift(run, reference)["columns"]["x"]["verdict"] == "drift"
    lenient = Thresholds(js=0.9, psi_warn=5, psi_drift=10)
    assert drift(run, reference, thresholds=lenient)["columns"]["x"]["verdict"] == "ok"
    per_column = drift(run, reference, column_thresholds={"x": lenient})["columns"]["x"]
    assert per_column["verdict"] == "ok"
    assert per_column["thresholds"]["js"] == 0.9


def test_data_set_drifts_when_at_least_half_the_columns_drift() -> None:
    generator = np.random.default_rng(5)
    names = [f"f{index}" for index in range(10)]
    reference = profile_frame(pd.DataFrame({name: generator.normal(size=3000) for name in names}))

    def run_with(shifted: int) -> dict[str, Any]:
        frame = pd.DataFrame(
            {
                name: generator.normal(2.0 if index < shifted else 0.0, 1, 3000)
                for index, name in enumerate(names)
            }
        )
        return drift(profile_frame(frame, reference=reference), reference)

    five, four = run_with(5), run_with(4)
    assert five["drifted"] == names[:5] and five["dataset_drift"] is True
    assert four["drifted"] == names[:4] and four["dataset_drift"] is False
    assert five["drift_share"] == 0.5


# --- power and false positives -----------------------------------------------

RESAMPLES = 100
FEATURES = 10
ROWS = 1000


def test_half_a_standard_deviation_shift_is_flagged_and_no_shift_is_not() -> None:
    generator = np.random.default_rng(20261129)
    names = [f"f{index}" for index in range(FEATURES)]
    flagged_shifted = flagged_unshifted = data_set_drifts = 0
    for _ in range(RESAMPLES):
        reference = profile_frame(
            pd.DataFrame({name: generator.normal(size=ROWS) for name in names})
        )
        unshifted = pd.DataFrame({name: generator.normal(size=ROWS) for name in names})
        shifted = unshifted.assign(f0=generator.normal(0.5, 1, ROWS))
        with_shift = drift(profile_frame(shifted, reference=reference), reference)
        without = drift(profile_frame(unshifted, reference=reference), reference)
        flagged_shifted += with_shift["columns"]["f0"]["verdict"] == "drift"
        flagged_unshifted += without["columns"]["f0"]["verdict"] == "drift"
        data_set_drifts += with_shift["dataset_drift"] + without["dataset_drift"]
    assert flagged_shifted >= 95
    assert flagged_unshifted <= 5
    assert data_set_drifts == 0


def test_categorical_shift_is_flagged_and_no_shift_is_not() -> None:
    generator = np.random.default_rng(1129)
    names = [f"c{index}" for index in range(FEATURES)]
    values = np.array(["red", "green", "blue"])
    before, after = [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]

    def draw(probabilities: list[float]) -> np.ndarray:
        return values[generator.choice(3, size=ROWS, p=probabilities)]

    flagged_shifted = flagged_unshifted = data_set_drifts = 0
    for _ in range(RESAMPLES):
        reference = profile_frame(pd.DataFrame({name: draw(before) for name in names}))
        unshifted = pd.DataFrame({name: draw(before) for name in names})
        shifted = unshifted.assign(c0=draw(after))
        with_shift = drift(profile_frame(shifted, reference=reference), reference)
        without = drift(profile_frame(unshifted, reference=reference), reference)
        flagged_shifted += with_shift["columns"]["c0"]["verdict"] == "drift"
        flagged_unshifted += without["columns"]["c0"]["verdict"] == "drift"
        data_set_drifts += with_shift["dataset_drift"] + without["dataset_drift"]
    assert flagged_shifted >= 95
    assert flagged_unshifted <= 5
    assert data_set_drifts == 0


# --- profiles: numbers -------------------------------------------------------


def test_numeric_statistics_match_numpy_over_the_finite_values() -> None:
    generator = np.random.default_rng(2)
    values = generator.normal(5, 3, 10_000)
    values[::97] = np.nan
    values[::101] = np.inf
    values[::103] = -np.inf
    column = round_trip(profile_frame(pd.DataFrame({"x": values})))["columns"]["x"]
    finite = values[np.isfinite(values)]
    assert column["kind"] == "numeric" and column["type"] == "double"
    assert column["nulls"] == int(np.isnan(values).sum())
    assert column["null_fraction"] == pytest.approx(np.isnan(values).mean())
    assert column["infinite"] == int(np.isinf(values).sum())
    assert column["min"] == finite.min() and column["max"] == finite.max()
    assert column["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert column["std"] == pytest.approx(finite.std(), rel=1e-9)
    counts = column["histogram"]["counts"]
    assert counts == independent_counts(values, column["histogram"]["cuts"])
    # -inf lands in the first bin and +inf in the last, never in the middle.
    assert counts[0] >= int((values == -np.inf).sum())
    assert counts[-1] >= int((values == np.inf).sum())


def test_std_is_precise_for_a_large_mean_and_a_small_spread() -> None:
    generator = np.random.default_rng(4)
    values = 1.7e9 + generator.normal(0, 0.5, 50_000)  # epoch seconds, say
    column = profile_frame(pd.DataFrame({"t": values}))["columns"]["t"]
    assert column["std"] == pytest.approx(values.std(), rel=1e-6)


def test_reference_bins_are_quantiles_and_a_run_is_counted_on_them() -> None:
    generator = np.random.default_rng(8)
    reference = round_trip(profile_frame(pd.DataFrame({"x": generator.exponential(size=10_000)})))
    cuts = reference["columns"]["x"]["histogram"]["cuts"]
    assert len(cuts) == profile.DEFAULT_BINS - 1
    assert all(950 <= count <= 1050 for count in reference["columns"]["x"]["histogram"]["counts"])
    run_values = generator.exponential(2.0, size=5_000)
    run = round_trip(profile_frame(pd.DataFrame({"x": run_values}), reference=reference))
    assert run["columns"]["x"]["histogram"]["cuts"] == cuts
    assert run["columns"]["x"]["bins_from"] == "reference"
    assert run["columns"]["x"]["histogram"]["counts"] == independent_counts(run_values, cuts)


@pytest.mark.parametrize("bins", [2, 12, 40])
def test_many_cuts_count_the_same_as_a_few(bins: int) -> None:
    generator = np.random.default_rng(bins)
    values = np.concatenate([generator.normal(size=70_000), [np.inf, -np.inf, np.nan]])
    column = profile_frame(pd.DataFrame({"x": values}), bins=bins)["columns"]["x"]
    cuts = column["histogram"]["cuts"]
    assert len(cuts) == bins - 1
    assert column["histogram"]["counts"] == independent_counts(values, cuts)


def test_large_integers_keep_their_exact_extremes() -> None:
    values = pd.Series([2**62 + 1, 2**62 + 3, -(2**60) - 7], dtype="int64")
    column = round_trip(profile_frame(values.to_frame("id")))["columns"]["id"]
    assert (column["min"], column["max"]) == (int(values.min()), int(values.max()))
    assert column["type"] == "int64"


def test_nullable_integers_count_their_nulls() -> None:
    values = pd.Series([1, None, 3, None], dtype="Int64")
    column = profile_frame(values.to_frame("n"))["columns"]["n"]
    assert column["kind"] == "numeric"
    assert (column["nulls"], column["min"], column["max"]) == (2, 1, 3)
    assert sum(column["histogram"]["counts"]) == 2


def test_datetimes_report_iso_extremes_in_their_zone() -> None:
    moments = pd.Series(
        pd.date_range("2026-03-01", periods=500, freq="h", tz="Europe/Berlin")
    ).where(lambda series: series.dt.hour != 3)
    column = round_trip(profile_frame(moments.to_frame("at")))["columns"]["at"]
    assert column["kind"] == "datetime"
    assert column["min"] == moments.min().isoformat()
    assert column["max"] == moments.max().isoformat()
    assert column["nulls"] == int(moments.isna().sum())
    epoch = np.array([moment.timestamp() for moment in moments.dropna()])
    assert column["histogram"]["counts"] == independent_counts(epoch, column["histogram"]["cuts"])


# --- profiles: categories ----------------------------------------------------


def test_categories_are_counted_exactly_with_the_rest_as_other() -> None:
    generator = np.random.default_rng(6)
    values = pd.Series(generator.choice(list("abcdefghij"), 5000)).where(
        lambda series: generator.random(5000) > 0.1
    )
    column = round_trip(profile_frame(values.to_frame("s"), top_k=4))["columns"]["s"]
    expected = values.value_counts()
    histogram = column["histogram"]
    assert len(histogram["categories"]) == 4
    assert histogram["counts"] == [int(expected[label]) for label in histogram["categories"]]
    assert histogram["counts"] == sorted(expected.to_list(), reverse=True)[:4]
    assert histogram["other"] == int(expected.sum()) - sum(histogram["counts"])
    assert column["nulls"] == int(values.isna().sum())
    assert column["distinct"] == values.nunique()


def test_a_run_is_counted_on_the_references_categories() -> None:
    reference = profile_frame(pd.DataFrame({"s": ["a"] * 5 + ["b"] * 3 + ["c"]}), top_k=2)
    run_values = ["b"] * 4 + ["c"] * 2 + ["new"] * 3 + [None]
    run = profile_frame(pd.DataFrame({"s": run_values}), reference=reference)
    histogram = run["columns"]["s"]["histogram"]
    assert histogram["categories"] == ["a", "b"]
    assert histogram["counts"] == [0, 4]
    assert histogram["other"] == 5


def test_ties_in_the_top_k_are_broken_by_label() -> None:
    labels = [f"v{index:03d}" for index in range(50)]
    shuffled = np.random.default_rng(0).permutation(labels)
    column = profile_frame(pd.DataFrame({"s": shuffled}), top_k=5)["columns"]["s"]
    assert column["histogram"]["categories"] == sorted(labels)[:5]


def test_booleans_and_pandas_categoricals_are_categorical() -> None:
    frame = pd.DataFrame(
        {
            "flag": [True, False, True, True],
            "grade": pd.Categorical(["x", "y", "x", "x"], categories=["x", "y", "unused"]),
        }
    )
    columns = profile_frame(frame)["columns"]
    assert columns["flag"]["histogram"]["categories"] == ["True", "False"]
    assert columns["flag"]["histogram"]["counts"] == [3, 1]
    assert columns["grade"]["histogram"]["categories"] == ["x", "y"]
    assert columns["grade"]["kind"] == "categorical"


def test_a_hundred_thousand_distinct_strings_stay_bounded() -> None:
    values = pd.Series([f"{index:06d}-" + "x" * 500 for index in range(100_000)])
    column = round_trip(profile_frame(values.to_frame("s"), top_k=20))["columns"]["s"]
    histogram = column["histogram"]
    assert len(histogram["categories"]) <= 20
    assert all(len(label) <= MAX_LABEL_CHARS + 1 for label in histogram["categories"])
    assert sum(histogram["counts"]) + histogram["other"] == 100_000
    assert len(json.dumps(column)) < 20 * (MAX_LABEL_CHARS + 20) + 1000


# --- profiles: edge cases never raise ----------------------------------------


def test_an_empty_frame_profiles_every_column() -> None:
    frame = pd.DataFrame({"x": pd.Series([], dtype=float), "s": pd.Series([], dtype=str), "b": []})
    result = round_trip(profile_frame(frame))
    assert result["rows"] == 0 and list(result["columns"]) == ["x", "s", "b"]
    assert result["columns"]["x"]["histogram"]["counts"] == [0]
    assert result["columns"]["x"]["mean"] is None
    assert round_trip(profile_frame(pd.DataFrame())) == {
        "format": FORMAT,
        "rows": 0,
        "duplicate_columns": [],
        "columns": {},
    }


def test_all_null_constant_and_single_row_columns() -> None:
    frame = pd.DataFrame(
        {"nothing": [np.nan] * 4, "none": [None] * 4, "same": [7.0] * 4, "text": ["k"] * 4}
    )
    columns = round_trip(profile_frame(frame))["columns"]
    assert columns["nothing"]["null_fraction"] == 1.0
    assert columns["nothing"]["min"] is None and columns["nothing"]["std"] is None
    assert columns["none"]["kind"] == "null" and columns["none"]["nulls"] == 4
    assert (columns["same"]["min"], columns["same"]["max"], columns["same"]["std"]) == (7, 7, 0)
    assert sum(columns["same"]["histogram"]["counts"]) == 4
    single = round_trip(profile_frame(frame.iloc[:1]))["columns"]["same"]
    assert (single["mean"], single["std"]) == (7.0, 0.0)


def test_only_infinities_give_no_statistics_but_count() -> None:
    frame = pd.DataFrame({"x": [np.inf, -np.inf, np.inf, np.nan]})
    column = round_trip(profile_frame(frame))["columns"]["x"]
    assert (column["infinite"], column["nulls"], column["mean"]) == (3, 1, None)
    assert sum(column["histogram"]["counts"]) == 3


def test_huge_values_do_not_leak_infinity_into_json() -> None:
    frame = pd.DataFrame({"x": [1e308, 1e308, -1e308, 5.0]})
    column = round_trip(profile_frame(frame))["columns"]["x"]
    assert column["max"] == 1e308 and column["min"] == -1e308


@pytest.mark.parametrize(
    "values",
    [
        [[1, 2], [3]],
        [{"a": 1}, {"b": 2}],
        [1, "one"],
        [1 + 2j, 3j],
        [b"\x00", b"\x01"],
    ],
    ids=["lists", "dicts", "mixed", "complex", "bytes"],
)
def test_unprofilable_columns_are_recorded_as_unsupported(values: list[Any]) -> None:
    frame = pd.DataFrame({"odd": values, "x": [1.0, 2.0]})
    result = round_trip(profile_frame(frame))
    column = result["columns"]["odd"]
    assert column["kind"] == "unsupported"
    assert column["reason"]
    assert column["rows"] == 2
    assert result["columns"]["x"]["kind"] == "numeric"


def test_a_list_columns_type_is_its_arrow_type() -> None:
    frame = pd.DataFrame({"tags": [["a"], ["b", "c"]]})
    column = profile_frame(frame)["columns"]["tags"]
    assert column["type"] == str(pa.Schema.from_pandas(frame, preserve_index=False).field(0).type)


def test_duplicate_column_names_are_listed() -> None:
    frame = pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])
    result = profile_frame(frame)
    assert result["duplicate_columns"] == ["a"]
    assert result["columns"]["a"]["mean"] == 1.0


def test_bad_arguments_and_foreign_profiles_are_refused() -> None:
    with pytest.raises(ProfileError, match="bins"):
        profile_frame(pd.DataFrame({"x": [1.0]}), bins=0)
    foreign = {"format": FORMAT + 1, "columns": {}}
    with pytest.raises(ProfileError, match="format"):
        profile_frame(pd.DataFrame({"x": [1.0]}), reference=foreign)
    with pytest.raises(ProfileError, match="format"):
        drift(profile_frame(pd.DataFrame({"x": [1.0]})), foreign)


# --- what drift skips --------------------------------------------------------


def test_columns_that_cannot_be_compared_are_skipped_with_a_reason() -> None:
    generator = np.random.default_rng(9)
    reference = profile_frame(
        pd.DataFrame(
            {
                "x": generator.normal(size=500),
                "kind_changes": generator.normal(size=500),
                "tags": [["a"]] * 500,
                "empty": np.nan,
                "gone": 1.0,
            }
        )
    )
    run = profile_frame(
        pd.DataFrame(
            {
                "x": generator.normal(size=500),
                "kind_changes": generator.choice(["a", "b"], 500),
                "tags": [["a"]] * 500,
                "empty": np.nan,
                "new": 1.0,
            }
        ),
        reference=reference,
    )
    result = drift(run, reference)
    assert list(result["columns"]) == ["x"]
    assert set(result["skipped"]) == {"kind_changes", "tags", "empty", "new", "gone"}
    assert "categorical" in result["skipped"]["kind_changes"]
    assert "unsupported" in result["skipped"]["tags"]
    assert "no non-null values" in result["skipped"]["empty"]
    assert result["skipped"]["new"] == "not in the reference"
    assert result["skipped"]["gone"] == "not in the run"


def test_a_run_not_binned_on_the_reference_is_skipped() -> None:
    generator = np.random.default_rng(10)
    reference = profile_frame(pd.DataFrame({"x": generator.normal(size=500)}))
    run = profile_frame(pd.DataFrame({"x": generator.normal(size=500)}))  # its own quantiles
    assert "reference=" in drift(run, reference)["skipped"]["x"]


# --- schema change -----------------------------------------------------------


def arrow_type(frame: pd.DataFrame, name: str) -> str:
    return str(pa.Schema.from_pandas(frame[[name]], preserve_index=False).field(0).type)


def test_schema_changes_name_added_removed_and_retyped_columns() -> None:
    before = pd.DataFrame(
        {"count": [1, 2], "label": ["a", "b"], "same": [1.0, 2.0], "dropped": [True, False]}
    )
    after = pd.DataFrame(
        {"count": [1.5, 2.0], "label": [3, 4], "same": [3.0, 4.0], "added": ["x", "y"]}
    )
    changes = schema_changes(profile_frame(after), profile_frame(before))
    assert changes == [
        {"column": "count", "change": "type", "old_type": "int64", "new_type": "double"},
        {
            "column": "label",
            "change": "type",
            "old_type": arrow_type(before, "label"),
            "new_type": "int64",
        },
        {"column": "added", "change": "added", "type": arrow_type(after, "added")},
        {"column": "dropped", "change": "removed", "type": "bool"},
    ]
    assert arrow_type(before, "label") in ("string", "large_string")


def test_storage_variants_of_the_same_values_are_not_schema_changes() -> None:
    before = pd.DataFrame(
        {
            "text": pd.Series(["a", "b"], dtype=object),
            "grade": pd.Categorical(["x", "y"]),
            "at": pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02"])).astype("datetime64[ns]"),
        }
    )
    after = pd.DataFrame(
        {
            "text": pd.Series(["c", "d"], dtype="str"),
            "grade": pd.Categorical([f"g{index}" for index in range(300)][:2]).set_categories(
                [f"g{index}" for index in range(300)]
            ),
            "at": pd.Series(pd.to_datetime(["2026-02-01", "2026-02-02"])).astype("datetime64[us]"),
        }
    )
    before_profile, after_profile = profile_frame(before), profile_frame(after)
    assert before_profile["columns"]["at"]["type"] != after_profile["columns"]["at"]["type"]
    assert schema_changes(after_profile, before_profile) == []


def test_a_timezone_change_is_a_schema_change() -> None:
    naive = pd.DataFrame({"at": pd.to_datetime(["2026-01-01"])})
    aware = pd.DataFrame({"at": pd.to_datetime(["2026-01-01"]).tz_localize(timezone.utc)})
    changes = schema_changes(profile_frame(aware), profile_frame(naive))
    assert [change["change"] for change in changes] == ["type"]


# --- merging -----------------------------------------------------------------


def test_merged_runs_equal_one_profile_of_all_their_rows() -> None:
    generator = np.random.default_rng(12)
    frame = pd.DataFrame(
        {
            "x": np.where(generator.random(3000) < 0.05, np.nan, generator.normal(3, 2, 3000)),
            "s": generator.choice(["a", "b", "c", "d"], 3000),
            "at": pd.date_range(datetime(2026, 1, 1), periods=3000, freq="min"),
        }
    )
    reference = profile_frame(frame.sample(1000, random_state=1), top_k=3)
    parts = [frame.iloc[:1000], frame.iloc[1000:1700], frame.iloc[1700:]]
    merged = round_trip(
        merge_profiles([profile_frame(part, reference=reference) for part in parts])
    )
    whole = frame["x"].dropna()
    x = merged["columns"]["x"]
    assert merged["rows"] == 3000
    assert x["nulls"] == int(frame["x"].isna().sum())
    assert x["mean"] == pytest.approx(whole.mean(), rel=1e-12)
    assert x["std"] == pytest.approx(whole.std(ddof=0), rel=1e-9)
    assert (x["min"], x["max"]) == (whole.min(), whole.max())
    assert x["histogram"]["counts"] == independent_counts(
        frame["x"].to_numpy(), x["histogram"]["cuts"]
    )
    s = merged["columns"]["s"]["histogram"]
    counts = frame["s"].value_counts()
    assert s["counts"] == [int(counts[label]) for label in s["categories"]]
    assert s["other"] == 3000 - sum(s["counts"])
    at = merged["columns"]["at"]
    assert (at["min"], at["max"]) == (frame["at"].min().isoformat(), frame["at"].max().isoformat())


def test_merging_profiles_on_different_bins_marks_the_column() -> None:
    generator = np.random.default_rng(13)
    first = profile_frame(pd.DataFrame({"x": generator.normal(size=100)}))
    second = profile_frame(pd.DataFrame({"x": generator.normal(size=100)}))
    merged = merge_profiles([first, second])
    assert merged["columns"]["x"]["kind"] == "unsupported"
    assert "bins differ" in merged["columns"]["x"]["reason"]
    assert merged["columns"]["x"]["rows"] == 200
