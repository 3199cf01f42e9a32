"""The scikit-learn sample as a Cloud Function on this machine: source build, venv, cold, warm.

    python bench/gcp_function.py [requests]

Measures, for the sample's classifier (bench/model.py):
- building the bundle (capture, pinning, bundle) and its source zip, and the zip's size;
- creating the function's venv from requirements.txt with uv, as Cloud Build
  does, once with an empty uv cache (everything downloaded) and once warm;
- cold start: from launching ``functions-framework`` in that venv to the first
  successful prediction (framework import, then on the first request: unpickling
  the model, importing pandas and scikit-learn, running, writing the run);
- warm request latency over ``requests`` predictions of 10 rows.

Runs are written to gcp-storage-emulator through gs://, as deployed functions
write to GCS. Everything lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from gcp_emulators import (  # noqa: E402
    cloud_function,
    function_environment,
    storage_emulator,
    unzip,
)
from model import make_predict, train  # noqa: E402

import deployer  # noqa: E402
from deployer.providers.gcp.source import ENTRY_POINT, source_zip  # noqa: E402


def milliseconds(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000
    return f"p50 {p50:7.2f} ms   p95 {p95:7.2f} ms"


def timed_environment(requirements: Path, cache: Path, uv_cache: Path | None) -> tuple[Path, float]:
    """A new venv for ``requirements`` and the seconds it took; ``uv_cache`` None: uv's default."""
    previous = os.environ.get("UV_CACHE_DIR")
    if uv_cache is not None:
        os.environ["UV_CACHE_DIR"] = str(uv_cache)
    try:
        started = time.perf_counter()
        environment = function_environment(requirements, cache)
        return environment, time.perf_counter() - started
    finally:
        if uv_cache is not None:
            if previous is None:
                os.environ.pop("UV_CACHE_DIR")
            else:
                os.environ["UV_CACHE_DIR"] = previous


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-gcp-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    try:
        model, columns, features = train()
        predict = make_predict(model, columns)
        batch = features.head(10)

        with storage_emulator(scratch / "gcs") as gcs:
            os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            gcs.create_bucket(bucket)

            started = time.perf_counter()
            built = deployer.build(predict, name="churn-scores", output=f"gs://{bucket}/runs")
            built_at = time.perf_counter()
            archive = source_zip(built.bundle)
            zipped_at = time.perf_counter()
            source = unzip(archive, scratch / "source")
            requirements = source / "requirements.txt"
            print(f"bundle build (capture, pin, bundle)   {built_at - started:8.3f} s")
            print(f"source zip                            {(zipped_at - built_at) * 1000:8.1f} ms")
            print(f"source zip size                       {len(archive) / 1024:8.1f} KiB")
            print("requirements.txt:", ", ".join(requirements.read_text().split()))

            # An empty uv cache is what a Cloud Build worker starts from.
            _, cold_venv = timed_environment(requirements, scratch / "venv-cold", scratch / "uv")
            environment, warm_venv = timed_environment(requirements, scratch / "venv-warm", None)
            print(f"venv, empty uv cache (downloads)      {cold_venv:8.2f} s")
            print(f"venv, warm uv cache                   {warm_venv:8.2f} s")

            body = batch.to_json(orient="records")
            emulator = {"STORAGE_EMULATOR_HOST": gcs.endpoint}
            with cloud_function(source, environment, emulator, target=ENTRY_POINT) as function:
                listening = time.perf_counter() - function.started
                reply = function.request(body, headers={"Content-Type": "application/json"})
                first = time.perf_counter() - function.started
                if reply.status != 200:
                    raise SystemExit(f"the first prediction failed: {reply.status} {reply.text}")
                latencies = []
                for _ in range(count):
                    request_started = time.perf_counter()
                    reply = function.request(body, headers={"Content-Type": "application/json"})
                    latencies.append(time.perf_counter() - request_started)
                    if reply.status != 200:
                        raise SystemExit(f"a warm prediction failed: {reply.status} {reply.text}")
            print(f"cold: functions-framework listening   {listening:8.2f} s")
            print(f"cold: first successful prediction     {first:8.2f} s (from process start)")
            print(f"warm: {count} predictions of {len(batch)} rows   {milliseconds(latencies)}")
            runs = deployer.read_runs("churn-scores", output=f"gs://{bucket}/runs")
            print(f"runs committed to gs://{bucket}/runs: {len(runs)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
