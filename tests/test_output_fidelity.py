"""Issue 9, item 6: what a run writes reads back as it was, and a change of the
output's columns is said, never coerced silently."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer.cli import main
from deployer.errors import RunError, SchemaChangeWarning


def integer_names(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(np.c_[frame.x, frame.x * 2])


def mixed_types(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=["a", 3, "b"][: len(frame)])


def version_one(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=frame.x.astype("int64"))


def version_two(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=frame.x * 1.5, extra=frame.x.astype("int64"))


def version_two_again(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=frame.x * 2.5, extra=frame.x.astype("int64") + 1)


def fails(frame: pd.DataFrame) -> pd.DataFrame:
    raise ValueError("the model file is missing")


def test_integer_column_names_are_refused_naming_them_and_nothing_is_stored(
    deployer_home: Path,
) -> None:
    d = deployer.deploy(integer_names, name="proba", quiet=True)
    with pytest.raises(RunError, match=r"output column names must be strings, and 0 \(int\)"):
        d.invoke(pd.DataFrame({"x": [1.0, 2.0]}))
    run = deployer.read_runs("proba").iloc[-1]
    record = deployer.read_run("proba", run.run_id)
    assert record["error"]["type"] == "OutputError"
    assert "out.columns = out.columns.astype(str)" in record["error"]["message"]
    # The message is the whole story: no traceback through deployer's frames.
    assert record["error"]["traceback"] is None
    assert deployer.read_outputs("proba").empty


def test_a_mixed_type_column_is_named_with_an_example(deployer_home: Path) -> None:
    d = deployer.deploy(mixed_types, name="mixed", quiet=True)
    with pytest.raises(RunError) as raised:
        d.invoke(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    message = str(raised.value)
    assert "output column 'label' mixes types (str in 2 rows, int in 1 rows; e.g. row 1: 3)" in (
        message
    )
    assert "ArrowTypeError" not in message and "Conversion failed" not in message


def test_reading_runs_of_two_schemas_warns_and_keeps_integers(deployer_home: Path) -> None:
    deployer.deploy(version_one, name="scores", quiet=True).invoke(pd.DataFrame({"x": [1, 2]}))
    deployer.deploy(version_two, name="scores", quiet=True).invoke(pd.DataFrame({"x": [3]}))
    with pytest.warns(SchemaChangeWarning) as caught:
        frame = deployer.read_outputs("scores")
    message = str(caught[0].message)
    assert "label int64 -> double" in message and "+extra int64" in message
    # Nothing coerced behind the user's back: x stayed integers though a run lacks
    # nothing, extra is null where it did not exist and still an integer column.
    assert str(frame.x.dtype) == "Int64" and frame.x.tolist() == [1, 2, 3]
    assert str(frame.extra.dtype) == "Int64"
    assert frame.extra.isna().tolist() == [True, True, False]
    assert frame.label.tolist() == [1.0, 2.0, 4.5]
    # One run's outputs alone: one schema, no warning, its own types.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = deployer.read_outputs("scores", run_id=frame.run_id.iloc[0])
    assert first.label.dtype == np.int64 and first.label.tolist() == [1, 2]
    # The CLI says it in one line on stderr.
    shown = CliRunner().invoke(main, ["outputs", "scores", "--json"])
    assert shown.exit_code == 0
    assert "warning: the outputs of scores changed schema between runs" in shown.stderr


def test_one_schema_reads_without_a_warning(deployer_home: Path) -> None:
    d = deployer.deploy(version_one, name="same", quiet=True)
    d.invoke(pd.DataFrame({"x": [1]}))
    d.invoke(pd.DataFrame({"x": [2]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = deployer.read_outputs("same")
    assert frame.label.dtype == np.int64


def test_the_plan_warns_when_new_code_changes_the_output_columns(
    deployer_home: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "features.parquet"
    pd.DataFrame({"x": range(500)}).to_parquet(inputs)
    deployer.deploy(version_one, name="nightly", inputs=str(inputs), quiet=True).invoke()
    with pytest.warns(SchemaChangeWarning) as caught:
        deployer.deploy(version_two, name="nightly", inputs=str(inputs), quiet=True)
    message = str(caught[0].message)
    assert "the output's columns change from the last run" in message
    assert "label int64 -> double, +extra int64" in message
    assert "100 rows of inputs" in message  # a sample, not the data set
    # Same columns as the last run: nothing to say. Code that raises: said.
    deployer.get("nightly").invoke()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaChangeWarning)
        deployer.plan(version_two_again, name="nightly", inputs=str(inputs), quiet=True)
    with pytest.warns(SchemaChangeWarning, match="fails on the first 100 rows of inputs, as "):
        deployer.plan(fails, name="nightly", inputs=str(inputs), quiet=True)
