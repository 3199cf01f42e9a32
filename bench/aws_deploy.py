"""Deploy times against moto and Lambda cold starts from the built artifacts.

    python bench/aws_deploy.py

A function needing pandas + pyarrow + scikit-learn, on python3.11 (Amazon Linux
2 wheels, slim mode: this stack is over Lambda's 250 MB limit):
- first deploy (dependency cache as it is; run twice to see it warm),
  no-op redeploy, code-only redeploy, all against moto in server mode;
- cold start with AWS's awslambdaric and a local Runtime API (tests/
  lambda_harness.py): process start -> first response, with the precompiled
  .pyc files deployer ships, and with them removed;
- slim cold start: the same with the code zip deploy uploads, the archive
  downloaded from moto, decompressed and unpacked into Lambda's /tmp, here
  once on this machine's disk and once on /dev/shm (3 runs each), as a ratio
  to the tree already on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import boto3

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from lambda_harness import install_runtime, lambda_function  # noqa: E402

import deployer  # noqa: E402
from deployer.archive import zstd_module  # noqa: E402

SLIM_REPEATS = 3
PINS = ["scikit-learn==1.7.2", "numpy==2.2.6"]  # newest with python3.11 Lambda wheels


def classify(frame):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    return frame.assign(score=model.predict_proba(frame[["x"]])[:, 1])


def classify_v2(frame):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=0.5).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    return frame.assign(score=model.predict_proba(frame[["x"]])[:, 1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}"


def timed_deploy(function, output: str) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    deployer.deploy(
        function,
        name="classify",
        provider="aws",
        output=output,
        requirements=PINS,
        provider_options={"slim": True},
        quiet=True,
    )
    return time.perf_counter() - started


def cold_start(task_root: Path, deps: Path, runtime: Path, keep_pyc: bool, layers: Path) -> float:
    environment = {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
    layers.mkdir(exist_ok=True)
    layer = Path(tempfile.mkdtemp(prefix="layer-", dir=layers))  # removed at the end
    shutil.copytree(deps, layer / "python")
    if not keep_pyc:
        for cached in layer.rglob("__pycache__"):
            shutil.rmtree(cached)
        # Lambda's code directory is read-only: nothing can be cached at run time.
        for path in layer.rglob("*"):
            if path.is_dir():
                path.chmod(0o555)
    started = time.perf_counter()
    with lambda_function(
        task_root, [layer], environment, runtime=runtime, name="classify"
    ) as function:
        kind, reply = function.invoke({"deployer": {"trigger": "manual", "payload": [{"x": 2.5}]}})
        elapsed = time.perf_counter() - started
    for path in layer.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    assert kind == "response", reply
    return elapsed


def slim_cold_start(task_root: Path, runtime: Path, lambda_tmp: Path) -> float:
    """One cold start in slim mode, with ``lambda_tmp`` as Lambda's /tmp.

    Run before the layer cases, with the disk flushed first (os.sync), and
    nothing deleted until every case has run: a fresh Lambda sandbox starts on
    an idle disk, while on this machine's disk files created soon after others
    were deleted take ten times as long (4,235 empty files: 0.07 s on an idle
    disk, 0.85 s after removing such a tree), so the bench's own clean-up would
    be billed to the cold start.
    """
    lambda_client = boto3.client("lambda", region_name="us-east-1")
    configuration = lambda_client.get_function_configuration(FunctionName="classify")
    environment = dict(configuration["Environment"]["Variables"])
    environment.update(
        AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        DEPLOYER_SLIM_DIR=tempfile.mkdtemp(prefix="deployer-bench-tmp-", dir=lambda_tmp),
    )
    os.sync()
    started = time.perf_counter()
    with lambda_function(task_root, [], environment, runtime=runtime, name="classify") as function:
        kind, reply = function.invoke({"deployer": {"trigger": "manual", "payload": [{"x": 2.5}]}})
        elapsed = time.perf_counter() - started
        logged = function.stdout + function.stderr
    assert kind == "response", reply
    unpacked = re.search(r"dependencies fetched and unpacked in ([0-9.]+) s", logged)
    if unpacked:
        print(f"  slim: of {elapsed:.2f} s, {unpacked.group(1)} s fetching and unpacking")
    return elapsed


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-aws-"))
    os.environ.setdefault("DEPLOYER_CACHE", str(Path.home() / ".cache" / "deployer"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    moto, endpoint = start_moto()
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
    )
    try:
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench")
        output = "s3://bench/predictions"
        rows = [
            ("first deploy (slim, dependency cache as found)", timed_deploy(classify, output)),
            ("no-op redeploy", timed_deploy(classify, output)),
            ("code-only redeploy", timed_deploy(classify_v2, output)),
        ]
        built = deployer.build(
            classify_v2,
            name="classify",
            provider="aws",
            output=output,
            requirements=PINS,
            provider_options={"slim": True},
        )
        # The code zip as deploy uploads it: the bundle and the zstd decompressor.
        code_zip, archive = deployer.write_artifacts(built, scratch / "artifacts", quiet=True)
        task_root = scratch / "task"
        with zipfile.ZipFile(code_zip) as code:
            code.extractall(task_root)
        deps = scratch / "deps"
        with (
            zstd_module().ZstdFile(archive) as decompressed,
            tarfile.open(fileobj=decompressed, mode="r|") as unpacking,
        ):
            unpacking.extractall(deps, filter="data")
        runtime = install_runtime(scratch / "runtime")
        places = [("this disk", scratch / "lambda-tmp")]
        if Path("/dev/shm").is_dir():
            places.append(
                ("memory", Path(tempfile.mkdtemp(prefix="deployer-bench-tmp-", dir="/dev/shm")))
            )
        for label, lambda_tmp in places:
            lambda_tmp.mkdir(exist_ok=True)
            print(f"slim cold starts, /tmp on {label}:")
            slim = [slim_cold_start(task_root, runtime, lambda_tmp) for _ in range(SLIM_REPEATS)]
            rows.append(
                (
                    f"cold start, slim, /tmp on {label} (median of {SLIM_REPEATS})",
                    statistics.median(slim),
                )
            )
        layers = scratch / "layers"
        for label, keep_pyc in (("cold start, shipped .pyc", True), ("cold start, no .pyc", False)):
            rows.append((label, cold_start(task_root, deps, runtime, keep_pyc, layers)))
        size = sum(path.stat().st_size for path in deps.rglob("*") if path.is_file())
        print(
            f"dependencies: {size / 2**20:.0f} MB unzipped, "
            f"slim archive {archive.stat().st_size / 2**20:.0f} MB"
        )
        print(f"{'case':<52} {'seconds':>8}")
        for label, seconds in rows:
            print(f"{label:<52} {seconds:>8.2f}")
        on_disk = dict(rows)["cold start, shipped .pyc"]
        for label, seconds in rows:
            if label.startswith("cold start, slim"):
                print(f"{label.split(' (')[0]}: {seconds / on_disk:.1f}x the tree already on disk")
    finally:
        moto.terminate()
        shutil.rmtree(scratch, ignore_errors=True)
        for place in Path("/dev/shm").glob("deployer-bench-tmp-*"):
            shutil.rmtree(place, ignore_errors=True)


if __name__ == "__main__":
    main()
