"""Bad input to deploy(): a clear DeployerError, raised before anything is written."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import deployer
from deployer import CaptureError, ConfigError, Cron, Every, ProviderError, TriggerError


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def assert_nothing_written(home: Path) -> None:
    assert not home.exists(), f"{home} was written: {list(home.rglob('*'))}"


@pytest.mark.parametrize("name", ["Churn", "churn_scores", "9lives", "", "a" * 41, "x-"])
def test_invalid_name_states_the_allowed_pattern(deployer_home: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="lowercase letters, digits and hyphens"):
        deployer.deploy(predict, name=name, quiet=True)
    assert_nothing_written(deployer_home)


def test_not_a_callable_is_a_capture_error(deployer_home: Path) -> None:
    with pytest.raises(CaptureError, match="callable"):
        deployer.deploy(42, name="scores", quiet=True)  # type: ignore[arg-type]
    assert_nothing_written(deployer_home)


def test_unpicklable_capture_names_the_variable(deployer_home: Path) -> None:
    lock = threading.Lock()

    def guarded(frame: pd.DataFrame) -> pd.DataFrame:
        with lock:
            return frame

    with pytest.raises(CaptureError, match="'lock'"):
        deployer.deploy(guarded, name="scores", quiet=True)
    assert_nothing_written(deployer_home)


@pytest.mark.parametrize(
    "output, scheme",
    [("ftp://host/predictions", "ftp"), ("http://example.com/x", "http")],
)
def test_unsupported_output_scheme(deployer_home: Path, output: str, scheme: str) -> None:
    with pytest.raises(ConfigError, match=f"'{scheme}://'.*s3://"):
        deployer.deploy(predict, name="scores", output=output, quiet=True)
    assert_nothing_written(deployer_home)


@pytest.mark.parametrize(
    "trigger, fragment",
    [
        (lambda: Cron("61 * * * *"), "minute"),
        (lambda: Cron("0 6 * * *", tz="Mars/Olympus"), "Mars/Olympus"),
        (lambda: Every(minutes=0), "minutes"),
        (lambda: Every(hours=-1), "hours"),
    ],
)
def test_invalid_triggers_name_the_field(deployer_home: Path, trigger: Any, fragment: str) -> None:
    with pytest.raises(TriggerError, match=fragment):
        deployer.deploy(predict, name="scores", triggers=[trigger()], quiet=True)
    assert_nothing_written(deployer_home)


def test_not_a_trigger_is_refused(deployer_home: Path) -> None:
    with pytest.raises(
        TriggerError, match=r"triggers\[0\] is '0 6 \* \* \*' \(str\), not a trigger"
    ):
        deployer.deploy(predict, name="scores", triggers=["0 6 * * *"], quiet=True)
    assert_nothing_written(deployer_home)


def test_schedule_without_inputs_for_a_function_needing_input(deployer_home: Path) -> None:
    with pytest.raises(ConfigError, match="inputs="):
        deployer.deploy(predict, name="scores", triggers=[Cron("0 6 * * *")], quiet=True)
    assert_nothing_written(deployer_home)


@pytest.mark.parametrize("timeout", [0, -5, 3601, 1.5])
def test_invalid_timeout(deployer_home: Path, timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        deployer.deploy(predict, name="scores", timeout=timeout, quiet=True)


def test_unknown_provider_lists_the_known_ones(deployer_home: Path) -> None:
    with pytest.raises(ConfigError, match="local, aws, gcp, azure"):
        deployer.deploy(predict, name="scores", provider="heroku", quiet=True)


def test_provider_not_built_yet_says_so(
    deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.registry import PROVIDERS

    monkeypatch.setitem(PROVIDERS, "mars", ("deployer.providers.mars.provider:MarsProvider", None))
    with pytest.raises(ProviderError, match="'mars'"):
        deployer.deploy(predict, name="scores", provider="mars", quiet=True)
    assert_nothing_written(deployer_home)
