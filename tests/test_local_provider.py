"""The local provider: environments per deps_hash, isolated runs, plans, concurrency."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest

import deployer
from deployer import Cron, Every, Http, RunError, api
from deployer.cache import cache_root
from deployer.providers.base import (
    ADD_TRIGGER,
    CREATE,
    INSTALL_DEPENDENCIES,
    REMOVE_TRIGGER,
    UPDATE_CODE,
)
from deployer.providers.local import provider as local

pytestmark = pytest.mark.slow


def add_one(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x + 1)


def add_two(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(y=frame.x + 2)


def test_deploy_and_invoke_runs_in_the_bundle_environment(deployer_home: Path) -> None:
    deployment = deployer.deploy(add_one, name="adder", triggers=[Http()], quiet=True)
    assert deployment.url is not None and deployment.url.endswith("/v1/functions/adder")
    predictions = deployment.invoke(pd.DataFrame({"x": [1, 2]}))
    assert predictions.y.tolist() == [2, 3]
    runs = deployment.runs()
    assert runs.status.tolist() == ["succeeded"] and runs.trigger.tolist() == ["manual"]
    assert deployment.outputs().y.tolist() == [2, 3]
    entry = local.read_entry("adder")
    assert entry is not None
    assert entry["python"].startswith(str(cache_root()))


def test_second_deploy_with_same_dependencies_installs_nothing(deployer_home: Path) -> None:
    deployer.deploy(add_one, name="first", quiet=True)
    environment = local.environment_path(local.read_entry("first")["deps_hash"])
    marker = environment / "marker"
    marker.write_text("unchanged")
    plan = deployer.plan(add_two, name="second", quiet=True)
    assert INSTALL_DEPENDENCIES not in plan.kinds()
    assert plan.kinds() == [CREATE]
    deployer.deploy(add_two, name="second", quiet=True)
    assert local.read_entry("second")["deps_hash"] == local.read_entry("first")["deps_hash"]
    assert marker.read_text() == "unchanged"


def test_redeploy_plans_nothing_then_code_then_trigger_changes(deployer_home: Path) -> None:
    schedule = Cron("0 6 * * *", tz="Europe/Berlin")
    inputs = str(deployer_home.parent / "in.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(inputs)
    deployer.deploy(add_one, name="adder", triggers=[schedule, Http()], inputs=inputs, quiet=True)
    unchanged = deployer.plan(
        add_one, name="adder", triggers=[schedule, Http()], inputs=inputs, quiet=True
    )
    assert unchanged.changes_nothing
    code_only = deployer.plan(
        add_two, name="adder", triggers=[schedule, Http()], inputs=inputs, quiet=True
    )
    assert code_only.kinds() == [UPDATE_CODE]
    fewer = deployer.plan(
        add_one, name="adder", triggers=[Http(), Every(minutes=5)], inputs=inputs, quiet=True
    )
    assert sorted(fewer.kinds()) == [ADD_TRIGGER, REMOVE_TRIGGER]
    deployer.deploy(add_one, name="adder", triggers=[Http()], quiet=True)
    assert [trigger["type"] for trigger in local.read_entry("adder")["triggers"]] == ["http"]


def test_package_not_in_the_bundle_is_not_importable(deployer_home: Path) -> None:
    def sneaky() -> list[dict]:
        import importlib

        # A name built at run time, which no static scan can see: the only
        # way it could import is by leaking the user's environment.
        module = importlib.import_module("hypo" + "thesis")
        return [{"version": module.__version__}]

    deployer.deploy(sneaky, name="sneaky", quiet=True)
    invocation = api.invoke("sneaky")
    assert invocation.http_status == 500
    assert invocation.body["error"]["type"] == "ModuleNotFoundError"
    assert "hypothesis" in invocation.body["error"]["message"]


def test_run_failure_raises_run_error_from_invoke(deployer_home: Path) -> None:
    def broken(frame: pd.DataFrame) -> pd.DataFrame:
        raise KeyError("score")

    deployment = deployer.deploy(broken, name="broken", quiet=True)
    with pytest.raises(RunError, match="KeyError"):
        deployment.invoke(pd.DataFrame({"x": [1]}))
    assert deployment.runs().error_type.tolist() == ["KeyError"]


def test_hanging_function_times_out_as_a_failed_run(deployer_home: Path) -> None:
    def slow() -> None:
        import time

        time.sleep(60)

    deployer.deploy(slow, name="slow", timeout=2, quiet=True)
    invocation = api.invoke("slow")
    assert invocation.http_status == 500
    assert invocation.body["error"]["type"] == "Timeout"
    runs = deployer.read_runs("slow")
    assert runs.status.tolist() == ["failed"] and runs.error_type.tolist() == ["Timeout"]


def test_prints_go_to_the_log_not_the_reply(deployer_home: Path) -> None:
    def chatty() -> list[dict]:
        print("hello from the function")
        return [{"ok": 1}]

    deployer.deploy(chatty, name="chatty", quiet=True)
    assert api.invoke("chatty").body["predictions"] == [{"ok": 1}]
    assert "hello from the function" in local.LocalProvider().logs("chatty")


def test_delete_removes_function_and_keeps_outputs(deployer_home: Path) -> None:
    deployment = deployer.deploy(add_one, name="adder", quiet=True)
    deployment.invoke(pd.DataFrame({"x": [1]}))
    deployment.delete(quiet=True)
    assert local.read_entry("adder") is None
    assert deployer.read_outputs("adder").y.tolist() == [2]
    with pytest.raises(deployer.ConfigError, match="no function named 'adder'"):
        api.invoke("adder")


def test_concurrent_deploys_of_one_name_lose_nothing_silently(deployer_home: Path) -> None:
    """Each deploy either reports success and is what is deployed when it returns,
    or says that another deploy ran in between; the registry stays readable."""
    from deployer.providers.base import ConcurrentChange

    deployer.deploy(add_one, name="warm", quiet=True)  # environment made once, outside the race
    errors: list[BaseException] = []
    succeeded: list[str] = []
    record = threading.Lock()
    hashes = {
        function: deployer.build(function, name="raced").bundle.code_hash
        for function in (add_one, add_two)
    }

    def deploy(function: object) -> None:
        try:
            deployer.deploy(function, name="raced", quiet=True)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            return
        with record:
            succeeded.append(hashes[function])

    threads = [threading.Thread(target=deploy, args=(function,)) for function in (add_one, add_two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(error, ConcurrentChange) for error in errors), errors
    assert len(succeeded) + len(errors) == 2 and succeeded
    entry = json.loads((deployer_home / "local" / "functions" / "raced.json").read_text())
    assert entry["code_hash"] == succeeded[-1]
    result = api.invoke("raced", pd.DataFrame({"x": [0]}))
    assert (
        result.body["predictions"][0]["y"]
        == {hashes[add_one]: 1, hashes[add_two]: 2}[entry["code_hash"]]
    )
    assert [
        path.name
        for path in (deployer_home / "local" / "functions").iterdir()
        if path.name.startswith(".")
    ] == []


def test_unreachable_store_is_a_failed_invoke_naming_it(deployer_home: Path, aws: str) -> None:
    import boto3

    # The bucket exists at deploy (deploy checks it), and is gone when the run writes.
    boto3.client("s3").create_bucket(Bucket="no-such-bucket-here")
    deployer.deploy(add_one, name="adder", output="s3://no-such-bucket-here/runs", quiet=True)
    boto3.resource("s3").Bucket("no-such-bucket-here").objects.all().delete()
    boto3.client("s3").delete_bucket(Bucket="no-such-bucket-here")
    invocation = api.invoke("adder", pd.DataFrame({"x": [1]}))
    assert invocation.http_status == 500
    assert invocation.body["status"] == "failed"
    assert "no-such-bucket-here" in invocation.body["error"]["message"]
    # The worker answered the failure itself instead of dying with it.
    assert invocation.body["error"]["type"] != "WorkerCrashed"


def test_runs_land_in_s3_when_output_is_s3(deployer_home: Path, s3_bucket: str) -> None:
    deployment = deployer.deploy(
        add_one, name="adder", output=f"s3://{s3_bucket}/predictions", quiet=True
    )
    deployment.invoke(pd.DataFrame({"x": [41]}))
    assert deployer.read_outputs("adder", output=f"s3://{s3_bucket}/predictions").y.tolist() == [42]
