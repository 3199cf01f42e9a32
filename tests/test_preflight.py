"""Deploy refuses what would fail every run: a signature the run's call does not fit,
inputs a run cannot read, an output it cannot write. `deployer build` stays offline."""

from __future__ import annotations

import functools
import os
import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from click.testing import CliRunner
from gcp_emulators import GcsEmulator, gcs_bucket, gcs_emulator

import deployer
from deployer import ConfigError, Cron, Http, preflight
from deployer.cli import main
from deployer.providers.local import provider as local

# Fixtures defined in gcp_emulators: importing them is how pytest finds them here.
EMULATOR_FIXTURES = (gcs_emulator, gcs_bucket)

DAILY = Cron("0 6 * * *")


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def score_above(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    return frame.assign(score=frame.x > threshold)


def parquet_bytes() -> bytes:
    return pd.DataFrame({"x": [1, 2, 3]}).to_parquet()


@pytest.fixture
def features(tmp_path: Path) -> Path:
    path = tmp_path / "features.parquet"
    path.write_bytes(parquet_bytes())
    return path


def plan(function: Any = score, **options: Any) -> deployer.Plan:
    options.setdefault("name", "scores")
    return deployer.plan(function, quiet=True, **options)


def nothing_deployed(home: Path) -> bool:
    return not (home / "local" / "functions").exists() and not (home / "store").exists()


def probes_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if preflight.PROBE_PREFIX in path.name]


# -- the signature -----------------------------------------------------------------


def keyword_only(frame: pd.DataFrame, *, threshold: float) -> pd.DataFrame:
    return frame


class NeedsTwo:
    def __call__(self, frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
        return frame


def three(scale: float, frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    return frame


@pytest.mark.parametrize(
    "function, shown",
    [
        (score_above, "score_above(frame, threshold) cannot be deployed"),
        (keyword_only, "keyword_only(frame, *, threshold) cannot be deployed"),
        (NeedsTwo(), "NeedsTwo(frame, threshold) cannot be deployed"),
        (functools.partial(three, 2.0), "partial(three)(frame, threshold) cannot be deployed"),
    ],
    ids=["two-required", "keyword-only", "callable-object", "partial-leaving-two"],
)
def test_a_parameter_runs_cannot_fill_is_refused_before_anything_is_written(
    deployer_home: Path, features: Path, function: Any, shown: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        deployer.deploy(function, name="scores", triggers=[DAILY], inputs=str(features), quiet=True)
    message = str(refused.value)
    assert shown in message
    assert "`threshold` would have no value" in message
    assert "a default (threshold=...)" in message and "functools.partial(" in message
    assert nothing_deployed(deployer_home)


def test_the_fix_names_a_plain_function_to_bind(deployer_home: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("functools.partial(score_above, threshold=")):
        plan(score_above)


def test_several_unfilled_parameters_are_all_named(deployer_home: Path) -> None:
    def blend(frame: pd.DataFrame, weight: float, bias: float, *, clip: bool) -> pd.DataFrame:
        return frame

    with pytest.raises(ConfigError, match="`weight`, `bias` and `clip` would have no value"):
        plan(blend)


def test_a_function_without_parameters_given_inputs_is_refused(
    deployer_home: Path, features: Path
) -> None:
    def constant() -> pd.DataFrame:
        return pd.DataFrame({"score": [1.0]})

    with pytest.raises(ConfigError, match=r"takes no positional argument, but inputs=.*drop"):
        plan(constant, triggers=[DAILY], inputs=str(features))
    assert nothing_deployed(deployer_home)


class Model:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(score=frame.x * self.factor)

    def __call__(self, frame: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
        return frame.assign(score=frame.x > threshold)


def with_default(frame: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    return frame.assign(score=frame.x > threshold)


def all_positional(*frames: pd.DataFrame) -> pd.DataFrame:
    return frames[0]


def keyword_bound(frame: pd.DataFrame, *, threshold: float) -> pd.DataFrame:
    return frame.assign(score=frame.x > threshold)


@pytest.mark.parametrize(
    "function",
    [
        score,
        with_default,
        all_positional,
        Model(3).predict,
        Model(3),
        functools.partial(score_above, threshold=0.7),
        functools.partial(keyword_bound, threshold=0.7),
        functools.partial(three, 2.0, threshold=0.1),
    ],
    ids=[
        "one-parameter",
        "default",
        "star-args",
        "bound-method",
        "callable-object",
        "partial",
        "partial-keyword-only",
        "partial-positional-and-keyword",
    ],
)
def test_signatures_a_run_can_call_are_accepted(
    deployer_home: Path, features: Path, function: Any
) -> None:
    planned = plan(function, triggers=[DAILY, Http()], inputs=str(features))
    assert planned.name == "scores" and not planned.changes_nothing


def test_a_function_without_parameters_and_without_inputs_is_accepted(
    deployer_home: Path,
) -> None:
    def constant() -> pd.DataFrame:
        return pd.DataFrame({"score": [1.0]})

    assert plan(constant, triggers=[DAILY]).name == "scores"


# -- inputs ------------------------------------------------------------------------


def test_missing_inputs_are_refused_naming_them_and_the_way_out(
    deployer_home: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "later" / "features.parquet"
    with pytest.raises(ConfigError) as refused:
        deployer.deploy(score, name="scores", triggers=[DAILY], inputs=str(missing), quiet=True)
    message = str(refused.value)
    assert f"inputs {str(missing)!r} does not exist" in message
    assert "allow_missing_inputs=True" in message
    assert nothing_deployed(deployer_home)


def test_plan_refuses_missing_inputs_too(deployer_home: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        plan(inputs=str(tmp_path / "nowhere.parquet"))


def test_allow_missing_inputs_plans_with_inputs_that_do_not_exist_yet(
    deployer_home: Path, tmp_path: Path
) -> None:
    planned = plan(
        triggers=[DAILY], inputs=str(tmp_path / "tomorrow.parquet"), allow_missing_inputs=True
    )
    assert planned.spec is not None and planned.spec.inputs == str(tmp_path / "tomorrow.parquet")


@pytest.mark.slow
def test_allow_missing_inputs_deploys(deployer_home: Path, tmp_path: Path) -> None:
    later = tmp_path / "tomorrow.parquet"
    deployment = deployer.deploy(
        score,
        name="scores",
        triggers=[DAILY],
        inputs=str(later),
        allow_missing_inputs=True,
        quiet=True,
    )
    entry = local.read_entry("scores")
    assert entry is not None and entry["inputs"] == str(later)
    later.write_bytes(parquet_bytes())  # the data set arrives; the next run reads it
    assert deployment.invoke().score.tolist() == [2, 4, 6]


def test_allow_missing_inputs_still_refuses_inputs_that_are_there_but_unreadable(
    deployer_home: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "features.parquet"
    wrong.write_text("x\n1\n")
    with pytest.raises(ConfigError, match="is not a Parquet file"):
        plan(inputs=str(wrong), allow_missing_inputs=True)


@pytest.mark.parametrize(
    "files",
    [{}, {"_SUCCESS": b"", ".part-0.parquet.crc": b"", "_temporary/part-0.parquet": b"PAR1"}],
    ids=["empty", "only-skipped-files"],
)
def test_a_folder_without_data_files_is_refused(
    deployer_home: Path, tmp_path: Path, files: dict[str, bytes]
) -> None:
    folder = tmp_path / "features"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        plan(inputs=str(folder))
    assert f"inputs {str(folder)!r} is a folder with no data files" in str(refused.value)
    assert "allow_missing_inputs=True" in str(refused.value)


def test_a_folder_of_parquet_files_is_accepted(deployer_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "features"
    (folder / "day=2026-11-27").mkdir(parents=True)
    (folder / "day=2026-11-27" / "part-0.parquet").write_bytes(parquet_bytes())
    (folder / "_SUCCESS").write_bytes(b"")
    assert plan(inputs=str(folder)).spec.inputs == str(folder)  # type: ignore[union-attr]


def test_a_folder_whose_data_files_are_not_parquet_is_refused_naming_one(
    deployer_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "features"
    folder.mkdir()
    (folder / "part-0.csv").write_text("x\n1\n")
    with pytest.raises(ConfigError, match=r"part-0\.csv, its first file, is not a Parquet"):
        plan(inputs=str(folder))


@pytest.mark.parametrize(
    "name, content",
    [
        ("features.parquet", b"x,y\n1,2\n"),
        ("features.json", b'[{"x": 1}]'),
        ("features.parquet", b""),
    ],
    ids=["csv-named-parquet", "json", "empty-file"],
)
def test_a_file_that_is_not_parquet_or_csv_is_refused(
    deployer_home: Path, tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        plan(inputs=str(path))
    assert f"inputs {str(path)!r} is not a Parquet file" in str(refused.value)
    assert "to_parquet" in str(refused.value)
    assert nothing_deployed(deployer_home)


def test_a_csv_file_is_accepted_and_an_empty_one_refused(
    deployer_home: Path, tmp_path: Path
) -> None:
    good = tmp_path / "features.csv"
    good.write_text("x\n1\n2\n")
    assert plan(inputs=str(good)).name == "scores"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"'.*empty\.csv' cannot be read as CSV"):
        plan(inputs=str(empty))


def test_s3_inputs_missing_are_refused_and_existing_accepted(
    deployer_home: Path, s3_bucket: str
) -> None:
    url = f"s3://{s3_bucket}/features/latest.parquet"
    with pytest.raises(ConfigError, match=re.escape(f"inputs {url!r} does not exist")):
        plan(inputs=url)
    boto3.client("s3").put_object(
        Bucket=s3_bucket, Key="features/latest.parquet", Body=parquet_bytes()
    )
    assert plan(inputs=url).name == "scores"
    assert plan(inputs=f"s3://{s3_bucket}/features").name == "scores"  # the prefix


def test_s3_inputs_that_are_not_parquet_are_refused(deployer_home: Path, s3_bucket: str) -> None:
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="features.parquet", Body=b"not parquet")
    with pytest.raises(ConfigError, match="is not a Parquet file"):
        plan(inputs=f"s3://{s3_bucket}/features.parquet")


def test_gcs_inputs_missing_are_refused_and_existing_accepted(
    deployer_home: Path, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    url = f"gs://{gcs_bucket}/features.parquet"
    with pytest.raises(ConfigError, match=re.escape(f"inputs {url!r} does not exist")):
        plan(inputs=url)
    gcs_emulator.put(gcs_bucket, "features.parquet", parquet_bytes())
    assert plan(inputs=url).name == "scores"


# -- output ------------------------------------------------------------------------


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_a_read_only_output_folder_is_refused_naming_it(
    deployer_home: Path, tmp_path: Path
) -> None:
    output = tmp_path / "readonly"
    output.mkdir()
    output.chmod(0o500)
    try:
        with pytest.raises(ConfigError) as refused:
            deployer.deploy(score, name="scores", output=str(output), quiet=True)
    finally:
        output.chmod(0o700)
    assert f"output {str(output)!r} is not writable" in str(refused.value)
    assert "permission denied" in str(refused.value)
    assert not (deployer_home / "local" / "functions").exists()


def test_an_output_bucket_that_does_not_exist_is_refused_naming_it(
    deployer_home: Path, aws: str
) -> None:
    output = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/predictions"
    with pytest.raises(ConfigError) as refused:
        deployer.deploy(score, name="scores", output=output, quiet=True)
    message = str(refused.value)
    assert f"output {output!r} is not writable: its bucket does not exist" in message
    assert "NO_SUCH_BUCKET" in message and "Create the bucket" in message
    assert not (deployer_home / "local" / "functions").exists()


def test_a_plan_leaves_no_trace_in_a_local_output(deployer_home: Path) -> None:
    plan(score)
    assert not (deployer_home / "store").exists()


def test_the_probe_is_gone_from_s3_and_gcs_after_a_plan(
    deployer_home: Path, s3_bucket: str, gcs_bucket: str, gcs_emulator: GcsEmulator
) -> None:
    plan(score, output=f"s3://{s3_bucket}/predictions")
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert [item["Key"] for item in listed if preflight.PROBE_PREFIX in item["Key"]] == []
    plan(score, output=f"gs://{gcs_bucket}/predictions")
    assert gcs_emulator.keys(gcs_bucket) == []


@pytest.mark.slow
def test_no_probe_is_left_after_a_deploy(deployer_home: Path, s3_bucket: str) -> None:
    deployer.deploy(score, name="scores", triggers=[Http()], quiet=True)
    assert local.read_entry("scores") is not None
    assert probes_under(deployer_home) == []
    s3_output = f"s3://{s3_bucket}/predictions"
    deployer.deploy(score, name="s3-scores", output=s3_output, quiet=True)
    keys = [
        item["Key"]
        for item in boto3.client("s3").list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    ]
    assert not any(preflight.PROBE_PREFIX in key for key in keys), keys


def test_a_probe_that_cannot_be_deleted_is_named_in_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight.storage, "delete_quietly", lambda filesystem, path: False)
    monkeypatch.setattr(preflight.time, "sleep", lambda seconds: None)
    with pytest.warns(UserWarning, match="could not be deleted: it may still be at") as warned:
        preflight.check_output_writable(str(tmp_path / "store"), "scores")
    [left] = probes_under(tmp_path / "store")
    assert str(left) in str(warned[0].message)  # the warning is true, and names it


def test_a_write_that_fails_after_storing_leaves_no_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_bytes = preflight.storage.write_bytes

    def stored_then_failed(filesystem: Any, path: str, data: bytes) -> None:
        write_bytes(filesystem, path, data)
        raise OSError("connection reset while reading the reply")

    monkeypatch.setattr(preflight.storage, "write_bytes", stored_then_failed)
    output = tmp_path / "store"
    output.mkdir()
    with pytest.raises(ConfigError, match="connection reset") as refused:
        preflight.check_output_writable(str(output), "scores")
    assert "may still be at" not in str(refused.value)
    assert probes_under(output) == []
    assert list(output.iterdir()) == []  # the folder made for the probe is gone too


# -- build stays offline -----------------------------------------------------------


MODEL = """
import pandas as pd

def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)
"""


@pytest.fixture
def model_file(deployer_home: Path) -> Path:
    path = deployer_home.parent / "model.py"
    path.write_text(MODEL)
    return path


def test_cli_build_does_not_check_inputs_or_output(model_file: Path, deployer_home: Path) -> None:
    missing = model_file.parent / "missing.parquet"
    arguments = ["build", f"{model_file}:predict", "--name", "scores", "--cron", "0 6 * * *"]
    arguments += ["--inputs", str(missing), "-o", str(model_file.parent / "dist")]
    result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "code_hash" in result.output
    assert not (deployer_home / "store").exists()  # no probe either


def test_cli_dry_run_checks_inputs(model_file: Path, deployer_home: Path) -> None:
    missing = model_file.parent / "missing.parquet"
    arguments = ["deploy", f"{model_file}:predict", "--name", "scores", "--cron", "0 6 * * *"]
    arguments += ["--inputs", str(missing), "--dry-run"]
    result = CliRunner().invoke(main, arguments, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"error: inputs {str(missing)!r} does not exist" in result.output
    assert "Traceback" not in result.output


def test_build_checks_the_signature_but_not_the_store(deployer_home: Path, tmp_path: Path) -> None:
    built = deployer.build(
        score, name="scores", triggers=[DAILY], inputs=str(tmp_path / "missing.parquet")
    )
    assert built.spec.inputs == str(tmp_path / "missing.parquet")
    assert not (deployer_home / "store").exists()
    with pytest.raises(ConfigError, match="`threshold` would have no value"):
        deployer.build(score_above, name="scores")
