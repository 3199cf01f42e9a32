"""The run report: how long it takes and how big it is, for 100 and 500 runs of
30 columns, from a local store and from S3 (moto in server mode), the first
time (no run index yet: every run read one by one) and again (the index).

    python bench/report_cost.py [runs ...]      # default: 100 500
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from aws_deploy import start_moto  # noqa: E402

from deployer import api  # noqa: E402
from deployer.quality import Drift  # noqa: E402
from deployer.report import report_html  # noqa: E402
from deployer.run_index import INDEX_FILE  # noqa: E402
from deployer.runtimes import core, storage  # noqa: E402

COLUMNS = 30
ROWS = 200


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.f00 * 0.1 + frame.f01 * 0.2)


def write_runs(output: str, runs: int, scratch: Path) -> None:
    built = api.build(
        predict,
        name="bench",
        output=output,
        metrics={"mean_score": lambda out: float(out.score.mean())},
        drift=Drift(min_rows=100),
    )
    loaded = core.load(str(built.bundle.extract(scratch / "bundle")))
    generator = np.random.default_rng(0)
    for index in range(runs):
        shift = 0.0 if index < runs * 0.8 else 0.5  # the last fifth drifts
        frame = pd.DataFrame(
            {f"f{column:02d}": generator.normal(shift, 1, ROWS) for column in range(COLUMNS - 1)}
        )
        core.run(loaded, trigger="schedule", payload=frame)


def counted_report(output: str, last: int) -> tuple[float, int, int]:
    """Seconds, GETs and bytes of one report."""
    reads = 0
    original = storage.read_bytes

    def counting(filesystem, path):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return original(filesystem, path)

    storage.read_bytes = counting
    try:
        started = time.perf_counter()
        page = report_html("bench", output=output, last=last)
        seconds = time.perf_counter() - started
    finally:
        storage.read_bytes = original
    return seconds, reads, len(page.encode())


def drop_index(output: str) -> None:
    filesystem, root = storage.filesystem(output)
    storage.delete_quietly(filesystem, storage.join(root, "bench", INDEX_FILE))


def main() -> None:
    sizes = [int(argument) for argument in sys.argv[1:]] or [100, 500]
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    moto, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        print(f"{COLUMNS} columns, {ROWS} rows a run; report of the last N runs")
        print(f"{'store':<6} {'runs':>5} {'size':>9} {'first':>8} {'GETs':>6} "
              f"{'again':>8} {'GETs':>5} {'first/again':>12}")  # fmt: skip
        for runs in sizes:
            local = str(scratch / f"store-{runs}")
            write_runs(local, runs, scratch / f"build-{runs}")
            from pyarrow import fs as pafs

            s3 = f"s3://bench/runs-{runs}"
            s3_filesystem, s3_root = storage.filesystem(s3)
            drop_index(local)
            pafs.copy_files(local, s3_root, destination_filesystem=s3_filesystem)
            for label, output in (("local", local), ("s3", s3)):
                drop_index(output)
                first, first_reads, size = counted_report(output, runs)
                again, again_reads, _ = counted_report(output, runs)
                print(
                    f"{label:<6} {runs:>5} {size / 1024:>7.0f}KB {first:>7.2f}s {first_reads:>6} "
                    f"{again:>7.2f}s {again_reads:>5} {first / again:>11.1f}x"
                )
    finally:
        moto.terminate()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
