"""Referenced modules -> pinned requirements; refusals with a fix."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from deployer import RequirementsError
from deployer import requirements as requirements_module
from deployer.capture import capture
from deployer.requirements import resolve


def pins(function: Any, **options: Any) -> dict[str, str]:
    resolved = resolve(capture(function), **options)
    return {requirement.name: requirement.specifier for requirement in resolved.all}


def test_model_libraries_are_pinned_to_the_installed_versions() -> None:
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])

    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(score=model.predict_proba(frame[["x"]])[:, 1])

    resolved = pins(predict)
    assert resolved["scikit-learn"] == f"=={metadata.version('scikit-learn')}"
    assert resolved["numpy"] == f"=={metadata.version('numpy')}"
    assert resolved["pandas"] == f"=={metadata.version('pandas')}"
    assert resolved["cloudpickle"] == f"=={metadata.version('cloudpickle')}"


def test_runtime_only_packages_are_ranges_not_pins() -> None:
    resolved = resolve(capture(lambda: None))
    runtime = {requirement.name: requirement.specifier for requirement in resolved.runtime}
    assert runtime == {"pyarrow": ">=14", "pandas": ">=2.1"}
    assert [requirement.name for requirement in resolved.pinned] == ["cloudpickle"]


def test_standard_library_is_dropped() -> None:
    def uses_stdlib() -> list[dict]:
        import json
        import statistics

        return [{"x": statistics.mean(json.loads("[1, 2]"))}]

    assert set(pins(uses_stdlib)) == {"cloudpickle", "pandas", "pyarrow"}


def test_user_requirements_add_and_override() -> None:
    model = LogisticRegression()

    def predict() -> Any:
        return model

    resolved = resolve(capture(predict), user_requirements=["scikit-learn==1.5.2", "requests>=2"])
    by_name = {requirement.name: requirement for requirement in resolved.all}
    assert str(by_name["scikit-learn"]) == "scikit-learn==1.5.2"
    assert by_name["scikit-learn"].reason == "requirements="
    assert str(by_name["requests"]) == "requests>=2"


def test_lines_are_sorted_and_stable() -> None:
    resolved = resolve(capture(lambda: None), user_requirements=["zzz-package==1", "aaa==2"])
    assert resolved.lines() == sorted(resolved.lines())
    assert (
        resolved.lines()
        == resolve(capture(lambda: None), user_requirements=["aaa==2", "zzz-package==1"]).lines()
    )


def test_preinstalled_packages_are_dropped() -> None:
    resolved = resolve(capture(lambda: None), preinstalled=["pyarrow"])
    assert "pyarrow" not in {requirement.name for requirement in resolved.all}


@pytest.fixture
def editable_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution whose direct_url.json says it is editable."""
    (tmp_path / "editable_thing").mkdir()
    (tmp_path / "editable_thing" / "__init__.py").write_text("VALUE = 1\n")
    info = tmp_path / "editable_thing-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: editable-thing\nVersion: 0.1\n")
    (info / "top_level.txt").write_text("editable_thing\n")
    (info / "direct_url.json").write_text(
        json.dumps({"url": f"file://{tmp_path}/src", "dir_info": {"editable": True}})
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    requirements_module._module_index.cache_clear()
    yield "editable_thing"
    sys.modules.pop("editable_thing", None)
    requirements_module._module_index.cache_clear()


def test_editable_dependency_is_refused_naming_package_and_fix(editable_package: str) -> None:
    import editable_thing

    def uses_it() -> list[dict]:
        return [{"value": editable_thing.VALUE}]

    with pytest.raises(RequirementsError) as raised:
        resolve(capture(uses_it))
    message = str(raised.value)
    assert "editable-thing" in message and "editable install" in message
    assert "requirements=" in message


def test_editable_dependency_may_be_overridden_by_a_released_pin(editable_package: str) -> None:
    import editable_thing

    def uses_it() -> list[dict]:
        return [{"value": editable_thing.VALUE}]

    resolved = resolve(capture(uses_it), user_requirements=["editable-thing==0.1"])
    assert "editable-thing==0.1" in resolved.lines()


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("-e ./src", "editable"),
        ("thing @ file:///home/me/thing", "path on this machine"),
        ("not a requirement!!", "not a valid requirement"),
    ],
)
def test_unusable_user_requirements_are_refused(line: str, fragment: str) -> None:
    with pytest.raises(RequirementsError, match=fragment):
        resolve(capture(lambda: None), user_requirements=[line])


def test_module_no_package_provides_is_refused() -> None:
    def uses_missing() -> None:
        import surely_not_installed_anywhere  # noqa: F401

    with pytest.raises(RequirementsError, match="surely_not_installed_anywhere"):
        resolve(capture(uses_missing))
