"""The Azure app zip (providers/azure/app_package.py) and what runs in it (runtimes/azure.py).

The slow tests build the app for a pandas + scikit-learn function with real
manylinux wheels from the index, unzip it alone into a folder, and run it in
a fresh virtualenv that has nothing but ``azure-functions`` (the library the
Functions Python worker brings): a process puts the app root and
``.python_packages/lib/site-packages`` on sys.path as the worker does, imports
``function_app``, finds the functions with ``app.get_functions()`` and calls
them with real ``func.HttpRequest`` objects and timer requests decoded by
azure.functions' own converter, writing to Azurite. deployer then reads the
same runs from this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from azurite import Azurite, azure_storage, azurite  # noqa: F401  (fixtures)

import deployer
from deployer import Cron, Every, Http
from deployer.bundle import Bundle
from deployer.console import Reporter
from deployer.errors import BundleError, ConfigError
from deployer.packaging import METADATA_FILE
from deployer.providers.azure.app_package import (
    SITE_PACKAGES,
    SUPPORTED_PYTHONS,
    app_zip,
    azure_platform,
    function_app_source,
    function_timeout,
    install_app_dependencies,
)
from deployer.runtimes import storage

NAME = "churn-scores"
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
# A wheel of azure-functions for offline runs; PyPI otherwise.
AZURE_FUNCTIONS_WHEELS = Path("/tmp/azf")
FEATURES = ["radius", "texture"]

needs_azure_python = pytest.mark.skipif(
    LOCAL_PYTHON not in SUPPORTED_PYTHONS,
    reason=f"Azure Functions has no Python {LOCAL_PYTHON} (it runs {', '.join(SUPPORTED_PYTHONS)})",
)


def train() -> Any:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"radius": [10.0, 12.0, 18.0, 21.0], "texture": [14.0, 15.0, 20.0, 24.0]})
    return LogisticRegression().fit(frame[FEATURES], [0, 0, 1, 1])


def make_predict(model: Any, *, offset: float = 0.0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A prediction function; another ``offset`` is a change of code alone."""

    def predict(batch: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"score": model.predict_proba(batch[FEATURES])[:, 1] + offset})

    return predict


def make_flagging(model: Any) -> Callable[..., pd.DataFrame]:
    """A prediction function with run parameters: rows whose radius is over ``cut`` are
    flagged ``label``."""

    def flag(batch: pd.DataFrame, *, cut: float = 12.0, label: str = "high") -> pd.DataFrame:
        return pd.DataFrame(
            {
                "score": model.predict_proba(batch[FEATURES])[:, 1],
                "flag": (batch.radius > cut).map({True: label, False: "low"}),
            }
        )

    return flag


def build_bundle(
    function: Callable[..., Any], container: str = "predictions", triggers: Any = None
) -> Bundle:
    built = deployer.build(
        function,
        name=NAME,
        provider="local",
        output=f"az://{container}/runs",
        inputs=f"az://{container}/features.parquet",
        triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()] if triggers is None else triggers,
    )
    return built.bundle


# -- the harness: the app alone, in a virtualenv with only azure-functions --------------

HARNESS = r"""
import json, sys, time
started = time.perf_counter()
app_root, actions = sys.argv[1], json.loads(sys.argv[2])
# As the Functions Python worker: the app root and its vendored packages.
sys.path[:0] = [app_root, app_root + "/.python_packages/lib/site-packages"]
import azure.functions as func
from azure.functions.meta import Datum
from azure.functions.timer import TimerRequestConverter
import function_app

functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
report = {
    "import_seconds": time.perf_counter() - started,
    "functions": {name: json.loads(f.get_function_json()) for name, f in functions.items()},
    "results": [],
}
for action in actions:
    begun = time.perf_counter()
    if "http" in action:
        request = action["http"]
        response = functions["http"].get_user_function()(
            func.HttpRequest(
                method=request.get("method", "POST"),
                url="http://localhost/api/" + request.get("route", ""),
                headers=request.get("headers", {}),
                body=request.get("body", "").encode(),
            )
        )
        body = response.get_body().decode()
        result = {"status": response.status_code, "mimetype": response.mimetype, "text": body}
    else:
        timer = action["timer"]
        # What the Functions host sends a timer function, decoded as the worker decodes it.
        payload = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {"Last": timer["last"], "Next": timer["next"],
                               "LastUpdated": timer["last"]},
            "IsPastDue": timer.get("past_due", False),
        }
        request = TimerRequestConverter.decode(
            Datum(value=json.dumps(payload), type="json"), trigger_metadata={}
        )
        try:
            functions[timer["function"]].get_user_function()(request)
            result = {"raised": None}
        except Exception as error:
            result = {"raised": f"{type(error).__name__}: {error}"}
    result["seconds"] = time.perf_counter() - begun
    report["results"].append(result)
print(json.dumps(report))
"""


def make_venv(directory: Path) -> Path:
    """A virtualenv with azure-functions (and what it requires) alone; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    python = directory / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The local wheel first when there is one; what it requires (werkzeug) from the index.
    local = ["--find-links", str(AZURE_FUNCTIONS_WHEELS)] if AZURE_FUNCTIONS_WHEELS.is_dir() else []
    subprocess.run([*install, *local, "azure-functions"], check=True)
    return python


def run_app(
    python: Path, app_root: Path, actions: list[dict[str, Any]], environment: dict[str, str]
) -> dict[str, Any]:
    """Run ``actions`` in one process of the app (one cold start); its report and log."""
    completed = subprocess.run(
        [str(python), "-I", "-c", HARNESS, str(app_root), json.dumps(actions)],
        capture_output=True,
        text=True,
        cwd=app_root,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(app_root), **environment},
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    report["log"] = completed.stderr
    return report


def unzip_alone(archive: Path, directory: Path) -> Path:
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(directory)
    return directory


def timer(function: str, next_fire: str, last: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    return {"timer": {"function": function, "next": next_fire, "last": last}}


def http(body: str, **request: Any) -> dict[str, Any]:
    return {"http": {"body": body, "route": NAME, **request}}


@pytest.fixture(scope="session")
def app_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("azure-functions-venv") / "venv")


@pytest.fixture(scope="session")
def model() -> Any:
    return train()


# -- the platform ----------------------------------------------------------------------


def test_python_311_runs_on_debian_11_and_312_on_debian_12() -> None:
    assert azure_platform("3.11").glibc == (2, 31)
    assert azure_platform("3.12").glibc == (2, 36)
    assert azure_platform("3.11").platform_tags[0] == "manylinux_2_31_x86_64"
    assert "manylinux2014_x86_64" in azure_platform("3.10").platform_tags
    assert str(azure_platform("3.13")) == (
        "Azure Functions python3.13 on x86_64 (Debian 12, glibc 2.36)"
    )


@pytest.mark.parametrize("python", ["3.9", "3.14", "2.7"])
def test_python_azure_has_no_runtime_for_names_the_versions_that_work(python: str) -> None:
    with pytest.raises(ConfigError) as raised:
        azure_platform(python)
    assert f"Python {python}" in str(raised.value)
    for offered in SUPPORTED_PYTHONS:
        assert offered in str(raised.value)


# -- function_app.py and host.json -------------------------------------------------------


def test_function_app_declares_http_and_one_utc_timer_per_schedule(model: Any) -> None:
    bundle = build_bundle(
        make_predict(model),
        triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Every(minutes=15), Http()],
    )
    source = function_app_source(bundle)
    compile(source, "function_app.py", "exec")
    assert "route='churn-scores'" in source and "func.AuthLevel.FUNCTION" in source
    assert "schedule='0 0 4,5 * * *'" in source  # 06:00 Berlin is 04:00 or 05:00 UTC
    assert "handle_timer(timer, 0, cron='0 6 * * *', tz='Europe/Berlin')" in source
    assert "schedule='0 */15 * * * *'" in source
    assert "handle_timer(timer, 1)\n" in source  # Every fires exactly: nothing to check
    assert source.count("@app.timer_trigger(") == 2
    assert "run_on_startup=False, use_monitor=True" in source
    assert "@app.retry(strategy='fixed_delay'" in source


@pytest.mark.parametrize(
    "triggers, level", [([Http(public=True)], "ANONYMOUS"), ([], "ADMIN"), ([Http()], "FUNCTION")]
)
def test_http_function_auth_level_follows_the_http_trigger(
    model: Any, triggers: list[Any], level: str
) -> None:
    source = function_app_source(build_bundle(make_predict(model), triggers=triggers))
    assert f"auth_level=func.AuthLevel.{level})" in source
    assert "timer_trigger" not in source


def test_host_json_has_the_runs_timeout_and_extension_bundle_4(model: Any, tmp_path: Path) -> None:
    bundle = build_bundle(make_predict(model))
    with zipfile.ZipFile(app_zip(bundle, None, tmp_path / "app.zip")) as opened:
        host = json.loads(opened.read("host.json"))
    assert host["version"] == "2.0"
    assert host["functionTimeout"] == "00:05:00"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert function_timeout(3600) == "01:00:00"
    assert function_timeout(90061) == "1.01:01:01"


def test_app_zip_is_deterministic_and_has_the_bundle_at_its_root(
    model: Any, tmp_path: Path
) -> None:
    bundle = build_bundle(make_predict(model))
    tree = tmp_path / "site-packages"
    (tree / "tiny").mkdir(parents=True)
    (tree / "tiny" / "__init__.py").write_text("VALUE = 1\n")
    first = app_zip(bundle, tree, tmp_path / "first.zip")
    os.utime(tree / "tiny" / "__init__.py", (0, 0))
    second = app_zip(bundle, tree, tmp_path / "second" / "app.zip")
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    with zipfile.ZipFile(first) as opened:
        names = opened.namelist()
    assert names == sorted(names)
    for expected in (
        "function_app.py",
        "host.json",
        "manifest.json",
        "function.pkl",
        "deployer_runtime/azure.py",
        f"{SITE_PACKAGES}/tiny/__init__.py",
    ):
        assert expected in names


def test_a_bundle_file_named_like_the_apps_own_is_refused(model: Any, tmp_path: Path) -> None:
    bundle = build_bundle(make_predict(model))
    clashing = Bundle(
        manifest=bundle.manifest,
        files=(*bundle.files, ("host.json", b"{}")),
        code_hash=bundle.code_hash,
        deps_hash=bundle.deps_hash,
    )
    with pytest.raises(BundleError, match="host.json.*rename"):
        app_zip(clashing, None, tmp_path / "app.zip")


def test_runtime_module_imports_without_azure_functions() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['azure.functions'] = None; "
            "import deployer.runtimes.azure as a; print(a.fire_time_of(object()).second)",
        ],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "0"


def test_fire_time_is_the_timers_next_occurrence() -> None:
    from deployer.runtimes.azure import fire_time_of

    class Timer:
        schedule_status = {"Next": "2026-11-27T05:00:00.0000000+00:00"}

    assert fire_time_of(Timer()).isoformat() == "2026-11-27T05:00:00+00:00"
    Timer.schedule_status = {"Next": "2026-11-27T06:00:00"}  # the host's local time: UTC
    assert fire_time_of(Timer()).isoformat() == "2026-11-27T06:00:00+00:00"


# -- the app, run ------------------------------------------------------------------------


@pytest.fixture
def vendored(model: Any, deployer_home: Path) -> tuple[Bundle, Path]:
    """The app's bundle and its site-packages (installed once per session's cache)."""
    bundle = build_bundle(make_predict(model))
    site_packages = install_app_dependencies(bundle, Reporter(quiet=True))
    assert site_packages is not None
    return bundle, site_packages


@pytest.mark.slow
@needs_azure_python
def test_app_runs_http_and_timers_alone_and_deployer_reads_its_runs(
    model: Any,
    deployer_home: Path,
    azurite: Azurite,  # noqa: F811
    azure_storage: str,  # noqa: F811
    app_python: Path,
    tmp_path: Path,
) -> None:
    container = azure_storage
    output = f"az://{container}/runs"
    bundle = build_bundle(make_predict(model), container)
    site_packages = install_app_dependencies(bundle, Reporter(quiet=True))
    app_root = unzip_alone(app_zip(bundle, site_packages, tmp_path / "app.zip"), tmp_path / "app")
    installed = {path.name.split("-")[0] for path in (app_root / SITE_PACKAGES).glob("*.dist-info")}
    assert {"numpy", "pandas", "pyarrow", "scikit_learn", "cloudpickle", "tzdata"} <= installed
    assert "azure_functions" not in installed  # the worker brings it

    # The first firing finds no inputs: the run fails, and the timer raises so
    # that Azure's retry policy runs it again.
    november = timer("schedule_0", "2026-11-27T05:00:00+00:00")  # 06:00 in Berlin (CET)
    first = run_app(app_python, app_root, [november], azurite.environment)
    assert first["results"][0]["raised"].startswith("ScheduledRunFailed: run 20261127T050000Z-")
    assert set(first["functions"]) == {"http", "schedule_0"}
    [timer_binding] = first["functions"]["schedule_0"]["bindings"]
    assert timer_binding["type"] == "timerTrigger"
    assert timer_binding["schedule"] == "0 0 4,5 * * *"
    http_binding = first["functions"]["http"]["bindings"][0]
    assert (http_binding["route"], http_binding["authLevel"]) == (NAME, "FUNCTION")

    features = pd.DataFrame({"radius": [11.0, 20.0, 15.0], "texture": [14.0, 22.0, 18.0]})
    filesystem, path = storage.filesystem(f"az://{container}/features.parquet")
    storage.write_bytes(filesystem, path, features.to_parquet(index=False))
    records = features.to_dict(orient="records")
    second = run_app(
        app_python,
        app_root,
        [
            http(json.dumps(records)),
            http("not json {"),
            http(json.dumps([{"radius": 1.0}])),  # a column missing: the function fails
            http(""),  # no body: an HTTP request never runs over the inputs
            november,  # the retry: the same firing, now with inputs
            timer("schedule_0", "2026-07-01T04:00:00+00:00"),  # 06:00 in Berlin (CEST)
            timer("schedule_0", "2026-11-27T04:00:00+00:00"),  # 05:00 in Berlin: not a fire time
        ],
        azurite.environment,
    )
    answered, bad_json, failed, empty, retried, summer, skipped = second["results"]
    assert answered["status"] == 200 and answered["mimetype"] == "application/json"
    scores = [row["score"] for row in json.loads(answered["text"])["predictions"]]
    assert len(scores) == 3 and scores[0] < 0.5 < scores[1]
    assert bad_json["status"] == 400 and "not JSON" in bad_json["text"]
    assert failed["status"] == 500
    for answer in (bad_json, failed, empty):
        assert "Traceback" not in answer["text"] and "File " not in answer["text"]
    assert "texture" not in failed["text"] and "deployer runs" in failed["text"]
    assert empty["status"] == 400
    assert retried["raised"] is None and summer["raised"] is None and skipped["raised"] is None
    assert "does not fire at 2026-11-27T04:00Z" in second["log"]

    runs = deployer.read_runs(NAME, output=output)
    assert sorted(runs.trigger) == ["http", "http", "schedule", "schedule"]
    scheduled = runs[runs.trigger == "schedule"].sort_values("run_id")
    assert [run_id[:16] for run_id in scheduled.run_id] == ["20260701T040000Z", "20261127T050000Z"]
    assert set(scheduled.status) == {"succeeded"}  # the retry overwrote the failed run
    assert sorted(runs[runs.trigger == "http"].status) == ["failed", "succeeded"]
    outputs = deployer.read_outputs(NAME, output=output)
    november_run = scheduled.run_id.iloc[1]
    assert len(outputs[outputs.run_id == november_run]) == len(features)
    http_run = json.loads(answered["text"])["run_id"]
    assert outputs[outputs.run_id == http_run].score.tolist() == pytest.approx(scores)


@pytest.mark.slow
@needs_azure_python
def test_a_schedules_params_reach_its_timer_and_an_http_body_sets_params(
    model: Any,
    deployer_home: Path,
    azurite: Azurite,  # noqa: F811
    azure_storage: str,  # noqa: F811
    app_python: Path,
    tmp_path: Path,
) -> None:
    container = azure_storage
    output = f"az://{container}/runs"
    strict = Cron("0 6 * * *", tz="Europe/Berlin", params={"cut": 16.0, "label": "alert"})
    bundle = build_bundle(
        make_flagging(model), container, triggers=[strict, Every(minutes=15), Http()]
    )
    source = function_app_source(bundle)
    assert (
        "handle_timer(timer, 0, cron='0 6 * * *', tz='Europe/Berlin', "
        "params={'cut': 16.0, 'label': 'alert'})\n"
    ) in source
    assert "handle_timer(timer, 1)\n" in source  # no params, none passed
    site_packages = install_app_dependencies(bundle, Reporter(quiet=True))
    app_root = unzip_alone(app_zip(bundle, site_packages, tmp_path / "app.zip"), tmp_path / "app")
    features = pd.DataFrame({"radius": [11.0, 20.0, 15.0], "texture": [14.0, 22.0, 18.0]})
    filesystem, path = storage.filesystem(f"az://{container}/features.parquet")
    storage.write_bytes(filesystem, path, features.to_parquet(index=False))
    records = features.to_dict(orient="records")
    report = run_app(
        app_python,
        app_root,
        [
            timer("schedule_0", "2026-11-27T05:00:00+00:00"),  # 06:00 in Berlin
            timer("schedule_1", "2026-11-27T05:15:00+00:00"),
            http(json.dumps({"data": records, "params": {"cut": 16.0}})),
            http(json.dumps({"data": records, "params": {"cutoff": 16.0}})),
        ],
        azurite.environment,
    )
    with_params, plain, posted, refused = report["results"]
    assert with_params["raised"] is None and plain["raised"] is None, report["log"][-4000:]
    assert posted["status"] == 200, posted["text"]
    posted_run = json.loads(posted["text"])
    assert [row["flag"] for row in posted_run["predictions"]] == ["low", "high", "low"]
    assert refused["status"] == 400
    assert json.loads(refused["text"])["error"]["message"].endswith(
        ".flag() has no keyword-only parameter cutoff: the ones a run may set are cut, label"
    )

    runs = deployer.read_runs(NAME, output=output)
    assert len(runs) == 3  # nothing for the refused request
    by_start = {run_id[:16]: run_id for run_id in runs[runs.trigger == "schedule"].run_id}
    assert sorted(by_start) == ["20261127T050000Z", "20261127T051500Z"]
    fired, every = by_start["20261127T050000Z"], by_start["20261127T051500Z"]
    assert deployer.read_run(NAME, fired, output=output)["params"] == {
        "cut": 16.0,
        "label": "alert",
    }
    assert "params" not in deployer.read_run(NAME, every, output=output)
    assert deployer.read_run(NAME, posted_run["run_id"], output=output)["params"] == {"cut": 16.0}
    outputs = deployer.read_outputs(NAME, output=output)
    assert outputs[outputs.run_id == fired].flag.tolist() == ["low", "alert", "low"]
    assert outputs[outputs.run_id == every].flag.tolist() == ["low", "high", "high"]


@pytest.mark.slow
@needs_azure_python
def test_a_code_only_rebuild_reuses_the_vendored_packages(
    model: Any, vendored: tuple[Bundle, Path], tmp_path: Path
) -> None:
    bundle, site_packages = vendored
    metadata = site_packages.parent / METADATA_FILE
    installed_at = metadata.stat().st_mtime_ns
    changed = build_bundle(make_predict(model, offset=0.25))
    assert changed.code_hash != bundle.code_hash and changed.deps_hash == bundle.deps_hash
    started = time.perf_counter()
    again = install_app_dependencies(changed, Reporter(quiet=True))
    seconds = time.perf_counter() - started
    assert again == site_packages
    assert metadata.stat().st_mtime_ns == installed_at
    assert seconds < 1.0, f"a code-only rebuild took {seconds:.2f} s to find its packages"
    first = app_zip(bundle, site_packages, tmp_path / "first.zip")
    second = app_zip(changed, again, tmp_path / "second.zip")
    with zipfile.ZipFile(first) as before, zipfile.ZipFile(second) as after:
        differing = {
            info.filename
            for info in after.infolist()
            if before.getinfo(info.filename).CRC != info.CRC
        }
    assert differing <= {"function.pkl", "manifest.json", "sources.json"}
