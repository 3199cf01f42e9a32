"""The bundle: manifest format 2, hashes, and a zip that is byte-for-byte reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pandas as pd

import deployer
from deployer import Cron, Http


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=1.0)


def other_score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=2.0)


def test_manifest_describes_the_bundle(tmp_path: Path) -> None:
    built = deployer.build(
        score,
        name="scores",
        output=str(tmp_path),
        triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()],
        inputs=str(tmp_path / "features.parquet"),
        metrics={"mean": lambda out: out.score.mean()},
    )
    manifest = built.bundle.manifest
    assert manifest.format == 4
    assert manifest.name == "scores"
    assert manifest.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    function = manifest.function
    pickled = dict(built.bundle.files)["function.pkl"]
    assert function.sha256 == hashlib.sha256(pickled).hexdigest()
    assert function.qualname == "score"
    assert "frame" in function.signature
    assert function.takes_input and function.requires_input
    assert function.input_kind == "dataframe"
    assert manifest.source is not None and "def score" in manifest.source
    assert manifest.triggers[0]["tz"] == "Europe/Berlin"
    assert manifest.metrics == ("mean",)
    assert manifest.requirements == tuple(built.requirements.lines())
    assert manifest.created_with.cloudpickle
    assert dict(built.bundle.files)["manifest.json"] == manifest.to_json()
    names = [path for path, _ in built.bundle.files]
    assert {
        "manifest.json",
        "function.pkl",
        "requirements.txt",
        "deployer_runtime/core.py",
        "deployer_runtime/local.py",
        "deployer_runtime/manifest.py",
    } <= set(names)


def test_zip_is_deterministic_and_sorted(tmp_path: Path) -> None:
    first = deployer.build(score, name="scores", output=str(tmp_path)).bundle.zip_bytes()
    second = deployer.build(score, name="scores", output=str(tmp_path)).bundle.zip_bytes()
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    with zipfile.ZipFile(BytesIO(first)) as archive:
        entries = archive.infolist()
    assert [entry.filename for entry in entries] == sorted(entry.filename for entry in entries)
    assert {entry.date_time for entry in entries} == {(1980, 1, 1, 0, 0, 0)}
    assert {entry.external_attr >> 16 for entry in entries} == {0o644}


def test_same_function_builds_identical_bytes_from_other_processes_and_checkouts(
    tmp_path: Path,
) -> None:
    module = (
        "import pandas as pd\n"
        "WEIGHTS = {'a': 0.5, 'b': 1.5}\n"
        "def predict(frame: pd.DataFrame) -> pd.DataFrame:\n"
        "    return frame.assign(score=sum(frame[c] * w for c, w in WEIGHTS.items()))\n"
    )
    digests = set()
    # Two checkouts of the same code (a laptop and CI) under different hash seeds.
    for checkout, seed in (("laptop", "1"), ("ci-runner", "2")):
        directory = tmp_path / checkout
        directory.mkdir()
        (directory / "model_module.py").write_text(module)
        script = (
            "import hashlib, sys, deployer\n"
            f"sys.path.insert(0, {str(directory)!r})\n"
            "from model_module import predict\n"
            "built = deployer.build(predict, name='scores', output='/tmp/out')\n"
            "print(hashlib.sha256(built.bundle.zip_bytes()).hexdigest())\n"
        )
        completed = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=directory,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        digests.add(completed.stdout)
    assert len(digests) == 1


def test_code_change_moves_code_hash_not_deps_hash(tmp_path: Path) -> None:
    first = deployer.build(score, name="scores", output=str(tmp_path)).bundle
    second = deployer.build(other_score, name="scores", output=str(tmp_path)).bundle
    assert first.code_hash != second.code_hash
    assert first.deps_hash == second.deps_hash


def test_requirement_change_moves_deps_hash_not_code_hash(tmp_path: Path) -> None:
    first = deployer.build(score, name="scores", output=str(tmp_path)).bundle
    second = deployer.build(
        score, name="scores", output=str(tmp_path), requirements=["requests==2.32.3"]
    ).bundle
    assert first.deps_hash != second.deps_hash
    assert first.code_hash == second.code_hash


def test_config_change_moves_neither_hash(tmp_path: Path) -> None:
    first = deployer.build(score, name="scores", output=str(tmp_path)).bundle
    second = deployer.build(score, name="scores", output=str(tmp_path), triggers=[Http()]).bundle
    assert (first.code_hash, first.deps_hash) == (second.code_hash, second.deps_hash)


def test_written_zip_is_the_same_bytes_as_the_in_memory_one(tmp_path: Path) -> None:
    bundle = deployer.build(score, name="scores", output=str(tmp_path)).bundle
    written = bundle.write_zip(tmp_path / "out" / "bundle.zip")
    assert written.read_bytes() == bundle.zip_bytes()
    assert [path.name for path in written.parent.iterdir()] == ["bundle.zip"]  # no leftovers
