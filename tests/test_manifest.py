"""The bundle manifest (runtimes/manifest.py): one typed definition, format 4, read strictly."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pandas as pd
import pytest

import deployer
from deployer import Cron, Http, bundle
from deployer.providers import base
from deployer.runtimes import core, manifest
from deployer.runtimes.manifest import (
    FORMAT,
    MANIFEST_FILE,
    CreatedWith,
    FunctionEntry,
    Manifest,
    ManifestError,
)


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=1.0)


def sample(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "scores",
        "python": "3.11",
        "platform": "linux_x86_64",
        "function": FunctionEntry(
            file="function.pkl",
            sha256="ab" * 32,
            qualname="score",
            signature="(frame: pd.DataFrame) -> pd.DataFrame",
            takes_input=True,
            requires_input=True,
            input_kind="dataframe",
        ),
        "source": "def score(frame): ...",
        "requirements": ("pandas==2.2.3", "pyarrow==18.1.0"),
        "local_modules": ("thresholds.py",),
        "inputs": None,
        "output": "s3://acme/predictions",
        "triggers": ({"type": "cron", "expr": "0 6 * * *", "tz": "Europe/Berlin"},),
        "timeout_seconds": 60,
        "metrics": ("mean",),
        "checks": (),
        "quality": {"metrics": {"mean": {"lower": 0, "upper": 1, "severity": "error"}}},
        "code_hash": "c" * 64,
        "deps_hash": "d" * 64,
        "created_with": CreatedWith(deployer="0.1.0", cloudpickle="3.1.0", python="3.11"),
    }
    fields.update(changes)
    return Manifest(**fields)


def as_data(value: Manifest) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(value.to_json())
    return data


def test_a_built_bundles_manifest_round_trips_through_its_file(tmp_path: Path) -> None:
    built = deployer.build(
        score,
        name="scores",
        output=str(tmp_path),
        triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()],
        inputs=str(tmp_path / "features.parquet"),
        metrics={"mean": lambda out: out.score.mean()},
    )
    written = dict(built.bundle.files)[MANIFEST_FILE]
    read = Manifest.from_json(written)
    assert read == built.bundle.manifest
    assert read.to_json() == written
    assert read.triggers == (
        {"type": "cron", "expr": "0 6 * * *", "tz": "Europe/Berlin"},
        {"type": "http", "public": False},
    )
    assert read.inputs == str(tmp_path / "features.parquet")


def test_every_field_survives_the_round_trip() -> None:
    original = sample(inputs="gs://acme/features.parquet", source=None, checks=("in_range",))
    assert Manifest.from_json(original.to_json()) == original
    assert Manifest.from_json(original.to_json().decode()) == original


def test_json_has_sorted_keys_two_space_indent_and_a_final_newline() -> None:
    raw = sample().to_json()
    assert raw.endswith(b"}\n") and not raw.endswith(b"\n\n")
    data = json.loads(raw)
    assert raw == (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    assert data["format"] == FORMAT == 4
    assert data["function"]["qualname"] == "score"
    assert data["requirements"] == ["pandas==2.2.3", "pyarrow==18.1.0"]


def test_equal_manifests_give_identical_bytes_whatever_the_trigger_key_order() -> None:
    forwards = sample(triggers=({"type": "every", "minutes": 5, "hours": 0, "days": 0},))
    backwards = sample(triggers=({"days": 0, "hours": 0, "minutes": 5, "type": "every"},))
    assert forwards.to_json() == backwards.to_json()
    assert sample().to_json() != sample(timeout_seconds=61).to_json()


def test_a_bundle_built_twice_has_the_same_manifest_bytes(tmp_path: Path) -> None:
    first = deployer.build(score, name="scores", output=str(tmp_path)).bundle
    second = deployer.build(score, name="scores", output=str(tmp_path)).bundle
    assert dict(first.files)[MANIFEST_FILE] == dict(second.files)[MANIFEST_FILE]
    assert first.code_hash == second.code_hash


@pytest.mark.parametrize("found", [3, 5])
def test_another_format_is_refused_by_name(found: int) -> None:
    data = as_data(sample())
    data["format"] = found
    with pytest.raises(ManifestError) as refused:
        Manifest.from_json(json.dumps(data))
    assert str(refused.value) == (
        f"this bundle's manifest format {found} is not one this runtime reads (it reads 4): "
        "redeploy with this version of deployer"
    )


@pytest.mark.parametrize("found", [None, "4", 4.0, True])
def test_a_missing_or_mistyped_format_is_refused(found: object) -> None:
    data = as_data(sample())
    if found is None:
        del data["format"]
    else:
        data["format"] = found
    with pytest.raises(ManifestError, match="is not one this runtime reads"):
        Manifest.from_json(json.dumps(data))


def test_format_is_not_settable_when_building_one() -> None:
    fields = {field.name: getattr(sample(), field.name) for field in dataclasses.fields(Manifest)}
    assert fields.pop("format") == FORMAT
    assert Manifest(**fields) == sample()
    with pytest.raises(TypeError, match="format"):
        Manifest(format=1, **fields)


@pytest.mark.parametrize(
    ("path", "named"),
    [
        (("timeout_seconds",), "'timeout_seconds'"),
        (("function", "qualname"), "'function.qualname'"),
    ],
)
def test_a_missing_field_is_named(path: tuple[str, ...], named: str) -> None:
    data = as_data(sample())
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(ManifestError) as refused:
        Manifest.from_json(json.dumps(data))
    assert f"manifest.json has no field {named}" in str(refused.value)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("timeout_seconds",), "60", "'timeout_seconds' must be a whole number"),
        (("timeout_seconds",), True, "'timeout_seconds' must be a whole number"),
        (("function", "takes_input"), "yes", "'function.takes_input' must be true or false"),
        (("requirements",), "pandas", "'requirements' must be a list of strings"),
        (("requirements",), ["pandas", 1], "'requirements' must be a list of strings"),
        (("output",), None, "'output' must be a string"),
        (("triggers",), [{"expr": "0 6 * * *"}], "'triggers' must be a list of objects"),
        (("created_with",), "0.1.0", "'created_with' must be an object"),
    ],
)
def test_a_mistyped_field_is_named(path: tuple[str, ...], value: object, expected: str) -> None:
    data = as_data(sample())
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(ManifestError, match=expected):
        Manifest.from_json(json.dumps(data))


def test_a_field_the_format_does_not_define_is_refused() -> None:
    data = as_data(sample())
    data["function"]["entry"] = "main"
    with pytest.raises(ManifestError, match="does not define \\('function.entry'\\)"):
        Manifest.from_json(json.dumps(data))


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_file_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(ManifestError, match="manifest.json"):
        Manifest.from_json(raw)


class _LeavesAMark:
    """Unpickling this makes a directory: proof that a pickle was loaded."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.mark),))


def _planted_bundle(tmp_path: Path, manifest_format: int) -> tuple[Path, Path]:
    """A built bundle whose pickle leaves a mark when loaded, its sha256 matching."""
    built = deployer.build(score, name="scores", output=str(tmp_path / "store"))
    directory = built.bundle.extract(tmp_path / f"bundle-{manifest_format}")
    mark = tmp_path / f"unpickled-{manifest_format}"
    pickled = cloudpickle.dumps(_LeavesAMark(mark))
    (directory / "function.pkl").write_bytes(pickled)
    data = json.loads((directory / MANIFEST_FILE).read_text())
    data["function"]["sha256"] = hashlib.sha256(pickled).hexdigest()
    data["format"] = manifest_format
    (directory / MANIFEST_FILE).write_text(json.dumps(data))
    return directory, mark


def test_the_runtime_refuses_another_format_before_unpickling(tmp_path: Path) -> None:
    directory, mark = _planted_bundle(tmp_path, manifest_format=1)
    with pytest.raises(ManifestError, match="manifest format 1 is not one this runtime reads"):
        core.load(str(directory))
    assert not mark.exists()
    # The same bundle in the format it reads is unpickled: the mark is a real witness.
    directory, mark = _planted_bundle(tmp_path, manifest_format=FORMAT)
    with pytest.raises(TypeError):  # os.mkdir returned None, not the function payload
        core.load(str(directory))
    assert mark.exists()


def test_the_manifest_file_name_is_written_once_in_the_code() -> None:
    assert bundle.MANIFEST_FILE == core.MANIFEST_FILE == "manifest.json"
    packages = {Path(module.__file__).resolve().parent for module in (deployer, core, base)}
    sources = {path.resolve() for package in packages for path in package.rglob("*.py")}
    spelled = sorted(
        f"{path.parent.name}/{path.name}"
        for path in sources
        if '"manifest.json"' in path.read_text()
    )
    assert spelled == ["runtimes/manifest.py"]


def test_the_manifest_module_imports_only_the_standard_library() -> None:
    # It ships alone inside every bundle as deployer_runtime/manifest.py.
    tree = ast.parse(Path(manifest.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import would reach into the runtime package"
            imported.add(str(node.module).split(".")[0])
    assert imported, "the walk found no imports at all"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
