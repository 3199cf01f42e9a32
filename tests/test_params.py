"""Parameters: keyword-only parameters of the function set per call, per HTTP body and
per schedule, checked against the signature before anything runs, recorded in run.json."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

import deployer
from deployer import ConfigError, Cron, Every, Http
from deployer.capture import capture
from deployer.cli import main
from deployer.errors import TriggerError
from deployer.providers.local.server import LocalServer
from deployer.runtimes import core
from deployer.triggers import trigger_from_dict, trigger_to_dict


def flag(frame: pd.DataFrame, *, threshold: float = 0.5, label: str = "high") -> pd.DataFrame:
    return frame.assign(flag=(frame.x > threshold).map({True: label, False: "low"}))


def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [0.2, 0.6, 0.8]})


# --- what a run may set, from the signature ------------------------------------------------


def annotated(
    frame: pd.DataFrame,
    *,
    cut: float = 0.5,
    n: int = 3,
    name: str | None = None,
    on: bool = False,
    extra: dict[str, int] | None = None,
    untyped=1,  # noqa: ANN001
) -> pd.DataFrame:
    return frame


def test_the_settable_parameters_and_their_kinds_come_from_the_signature() -> None:
    assert capture(annotated).params == {
        "cut": "float",
        "n": "int",
        "name": "str?",
        "on": "bool",
        "extra": "any",
        "untyped": "any",
    }
    # Positional parameters are the input, not params.
    assert capture(lambda frame, limit=3: frame).params == {}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cutoff": 1}, "no keyword-only parameter cutoff: the ones a run may set are cut, "),
        (
            {"cut": "high"},
            'params.cut must be a number (annotated() annotates it float), got a string: "high"',
        ),
        ({"n": 2.5}, "params.n must be a whole number"),
        ({"n": True}, "params.n must be a whole number"),
        ({"on": 1}, "params.on must be true or false"),
        ({"name": 3}, "params.name must be a string or null"),
        ([1, 2], "params must be an object of parameter names to values, got a list"),
    ],
)
def test_a_wrong_parameter_is_named_with_what_would_be_right(params: Any, message: str) -> None:
    kinds = capture(annotated).params
    with pytest.raises(core.PayloadError) as refused:
        core.check_params(params, "annotated", kinds)
    assert message in str(refused.value)


def test_right_parameters_pass_as_given() -> None:
    kinds = capture(annotated).params
    given = {"cut": 1, "n": 2, "name": None, "on": True, "extra": {"a": [1]}, "untyped": "x"}
    assert core.check_params(given, "annotated", kinds) == given
    assert core.check_params(None, "annotated", kinds) == {}


def test_a_function_without_keyword_only_parameters_says_how_to_get_one() -> None:
    with pytest.raises(core.PayloadError, match=r"score\(\) has none: give it keyword-only"):
        core.check_params({"threshold": 1}, "score", {})


@pytest.mark.parametrize(
    ("body", "split"),
    [
        ({"data": [{"x": 1}], "params": {"t": 1}}, ([{"x": 1}], {"t": 1})),
        ({"params": {"t": 1}}, (core.NO_PAYLOAD, {"t": 1})),
        # Plain-data bodies keep their meaning: columns are lists, a record's
        # values are not objects, rows are a list.
        ({"data": [1, 2], "params": [3, 4]}, ({"data": [1, 2], "params": [3, 4]}, None)),
        ({"params": 1, "x": 2}, ({"params": 1, "x": 2}, None)),
        ([{"params": {"t": 1}}], ([{"params": {"t": 1}}], None)),
        ({"data": [1], "params": {}, "x": 1}, ({"data": [1], "params": {}, "x": 1}, None)),
    ],
)
def test_only_a_body_of_data_and_params_sets_params(body: Any, split: tuple[Any, Any]) -> None:
    assert core.split_params(body) == split


# --- schedules -----------------------------------------------------------------------------


def test_a_schedules_params_round_trip_and_name_the_schedule_only_when_set() -> None:
    plain = Cron("0 6 * * *")
    strict = Cron("0 6 * * *", params={"threshold": 0.7})
    assert trigger_to_dict(plain) == {"type": "cron", "expr": "0 6 * * *", "tz": "UTC"}
    assert trigger_to_dict(strict)["params"] == {"threshold": 0.7}
    assert trigger_from_dict(trigger_to_dict(strict)) == strict != plain
    assert hash(strict)  # still usable in sets


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("threshold", 1)], "params must be a dict of parameter names to values"),
        ({"when": datetime(2026, 1, 1)}, "params must be plain JSON values"),
        ({"x": float("nan")}, "params must be plain JSON values"),
    ],
)
def test_a_schedule_refuses_params_that_are_not_json(params: Any, message: str) -> None:
    with pytest.raises(TriggerError, match=message):
        Every(minutes=5, params=params)


def test_a_map_schedule_refuses_params_with_the_alternative() -> None:
    with pytest.raises(TriggerError, match="functools.partial"):
        Cron("0 6 * * *", map=True, params={"threshold": 0.7})


def test_a_schedules_params_are_checked_against_the_signature_before_anything_is_written(
    deployer_home: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "features.parquet"
    frame().to_parquet(inputs)
    store = tmp_path / "store"
    for params, message in (
        (
            {"treshold": 0.7},
            "no keyword-only parameter treshold: the ones a run may set are label, threshold",
        ),
        ({"threshold": "0.7"}, "params.threshold must be a number"),
    ):
        with pytest.raises(ConfigError) as refused:
            deployer.deploy(
                flag,
                name="flags",
                inputs=str(inputs),
                output=str(store),
                triggers=[Cron("0 6 * * *", params=params)],
                quiet=True,
            )
        assert str(refused.value).startswith("cron '0 6 * * *' (UTC) with t")
        assert message in str(refused.value)
    assert not store.exists()
    assert deployer.list_deployments() == []


# --- local, end to end ---------------------------------------------------------------------


def test_invoke_sets_params_and_the_run_records_them(deployer_home: Path) -> None:
    d = deployer.deploy(flag, name="flags", quiet=True)
    assert d.invoke(frame()).flag.tolist() == ["low", "high", "high"]
    strict = d.invoke(frame(), params={"threshold": 0.7, "label": "alert"})
    assert strict.flag.tolist() == ["low", "low", "alert"]
    runs = deployer.read_runs("flags")
    assert runs["param.threshold"].tolist()[1] == 0.7
    assert pd.isna(runs["param.threshold"].tolist()[0])
    record = deployer.read_run("flags", runs.run_id.iloc[1])
    assert record["params"] == {"threshold": 0.7, "label": "alert"}
    assert "params" not in deployer.read_run("flags", runs.run_id.iloc[0])


def test_a_wrong_parameter_is_refused_before_the_run_and_leaves_nothing(
    deployer_home: Path,
) -> None:
    d = deployer.deploy(flag, name="flags", quiet=True)
    with pytest.raises(ConfigError) as refused:
        d.invoke(frame(), params={"treshold": 0.7})
    assert str(refused.value) == (
        "flags refused the request: flag() has no keyword-only parameter treshold: the "
        "ones a run may set are label, threshold"
    )
    with pytest.raises(ConfigError, match="params.threshold must be a number"):
        d.invoke(frame(), params={"threshold": [1]})
    with pytest.raises(ConfigError, match="params must be plain JSON values"):
        d.invoke(frame(), params={"threshold": object()})
    assert deployer.read_runs("flags").empty


def test_the_cli_sets_params_with_key_value_pairs(deployer_home: Path, tmp_path: Path) -> None:
    deployer.deploy(flag, name="flags", quiet=True)
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"x": 0.6}]))
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "invoke",
            "flags",
            "--data",
            f"@{data}",
            "-p",
            "threshold=0.7",
            "-p",
            "label=alert",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["predictions"] == [{"x": 0.6, "flag": "low"}]
    run_id = body["run_id"]
    shown = runner.invoke(main, ["runs", "flags", run_id])
    assert "params         label='alert', threshold=0.7" in shown.output
    refused = runner.invoke(main, ["invoke", "flags", "--data", f"@{data}", "-p", "threshold"])
    assert refused.exit_code == 2 and "is not KEY=VALUE" in refused.output
    wrong = runner.invoke(main, ["invoke", "flags", "--data", f"@{data}", "-p", "cut=1"])
    assert wrong.exit_code == 2
    assert "error: flags refused the request: flag() has no keyword-only parameter cut" in (
        wrong.output
    )


def post(server: LocalServer, path: str, body: bytes, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {server.token}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.slow
def test_http_bodies_and_served_invokes_carry_params(deployer_home: Path) -> None:
    server = LocalServer(port=0, log=lambda line: None)
    server.start()
    try:
        d = deployer.deploy(flag, name="flags", triggers=[Http()], quiet=True)
        json_type = {"Content-Type": "application/json"}
        envelope = {"data": [{"x": 0.6}], "params": {"threshold": 0.7}}
        status, body = post(server, "/v1/functions/flags", json.dumps(envelope).encode(), json_type)
        assert status == 200 and body["predictions"] == [{"x": 0.6, "flag": "low"}]
        # The plain-data body keeps working, with the defaults.
        status, body = post(server, "/v1/functions/flags", b'[{"x": 0.6}]', json_type)
        assert body["predictions"] == [{"x": 0.6, "flag": "high"}]
        status, body = post(
            server,
            "/v1/functions/flags",
            json.dumps({"data": [{"x": 0.6}], "params": {"cut": 1}}).encode(),
            json_type,
        )
        assert status == 400 and "no keyword-only parameter cut" in body["error"]["message"]
        # d.invoke goes through the server: a DataFrame travels as Parquet, its
        # params in a header.
        assert d.invoke(frame(), params={"label": "alert"}).flag.tolist() == [
            "low",
            "alert",
            "alert",
        ]
        with pytest.raises(ConfigError, match="params.label must be a string"):
            d.invoke(frame(), params={"label": 1})
    finally:
        server.stop()
    runs = deployer.read_runs("flags")
    assert runs.trigger.tolist() == ["http", "http", "manual"]
    assert runs["param.threshold"].tolist()[0] == 0.7
    assert runs["param.label"].tolist()[2] == "alert"


@pytest.mark.slow
def test_a_schedule_runs_with_its_params(deployer_home: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "features.parquet"
    frame().to_parquet(inputs)
    deployer.deploy(
        flag,
        name="flags",
        inputs=str(inputs),
        triggers=[Every(minutes=5, params={"threshold": 0.7}), Every(minutes=10)],
        quiet=True,
    )
    scheduler = LocalServer(port=0, log=lambda line: None)
    start = datetime(2026, 11, 27, 6, 1, tzinfo=timezone.utc)
    assert scheduler.tick(start) == []
    fired = scheduler.tick(datetime(2026, 11, 27, 6, 10, tzinfo=timezone.utc))
    assert len(fired) == 2
    for thread in fired:
        thread.join(timeout=120)
    scheduler.stop()
    runs = deployer.read_runs("flags")
    assert len(runs) == 2
    flags = {}
    for run_id in runs.run_id:
        record = deployer.read_run("flags", run_id)
        outputs = deployer.read_outputs("flags", run_id=run_id)
        flags[json.dumps(record.get("params"))] = outputs.flag.tolist()
    assert flags == {
        '{"threshold": 0.7}': ["low", "low", "high"],
        "null": ["low", "high", "high"],
    }


def test_a_schedules_params_must_fit_in_the_schedulers_description() -> None:
    Cron("0 6 * * *", params={"labels": ["x" * 10] * 20})  # 263 characters: fits
    with pytest.raises(
        TriggerError, match="params are 3[0-9][0-9] characters of JSON, over the 300"
    ):
        Cron("0 6 * * *", params={"labels": ["x" * 10] * 25})


@pytest.mark.slow
def test_a_map_run_sets_params_on_every_shard_and_records_them(deployer_home: Path) -> None:
    d = deployer.deploy(flag, name="flags", quiet=True)
    frame = pd.DataFrame({"x": [0.2, 0.6, 0.8, 0.9] * 5})
    run = d.map(frame, rows_per_shard=5, params={"threshold": 0.7}, progress=False)
    outputs = deployer.read_outputs("flags", run_id=run.run_id)
    assert sorted(outputs.flag.tolist()) == sorted(["low", "low", "high", "high"] * 5)
    assert deployer.read_run("flags", run.run_id)["params"] == {"threshold": 0.7}
    with pytest.raises(deployer.RunError) as failed:
        d.map(frame, rows_per_shard=5, params={"treshold": 0.7}, progress=False)
    assert "no keyword-only parameter treshold" in str(failed.value)


@pytest.mark.slow
def test_deployer_map_takes_params(deployer_home: Path, tmp_path: Path) -> None:
    deployer.deploy(flag, name="flags", quiet=True)
    data = tmp_path / "rows.parquet"
    pd.DataFrame({"x": [0.6, 0.8]}).to_parquet(data)
    result = CliRunner().invoke(main, ["map", "flags", str(data), "-p", "threshold=0.7", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["params"] == {"threshold": 0.7}
    assert sorted(deployer.read_outputs("flags").flag) == ["high", "low"]
