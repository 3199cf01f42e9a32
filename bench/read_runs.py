"""Reading many runs back: read_runs() of a long history on a local store and on
S3 (moto in server mode) the first time (no run index: every run read one by
one) and again (the index); read_runs(last=10) at a short and a long history;
read_outputs() of every run against the pyarrow.dataset floor (one dataset of
the committed files, one to_pandas).

    python bench/read_runs.py [runs]       # default 1000 (and 100 for last=10)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).parent))

from aws_deploy import start_moto  # noqa: E402

import deployer  # noqa: E402
from deployer import api  # noqa: E402
from deployer.run_index import INDEX_FILE  # noqa: E402
from deployer.runtimes import core, storage  # noqa: E402

ROWS = 100


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 0.5)


def write_runs(output: str, runs: int, scratch: Path) -> None:
    built = api.build(score, name="history", output=output, drift=False)
    loaded = core.load(str(built.bundle.extract(scratch / "bundle")))
    frame = pd.DataFrame({"x": range(ROWS), "segment": ["a", "b"] * (ROWS // 2)})
    for _ in range(runs):
        core.run(loaded, trigger="schedule", payload=frame)


def timed(action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def drop_index(output: str) -> None:
    filesystem, root = storage.filesystem(output)
    storage.delete_quietly(filesystem, storage.join(root, "history", INDEX_FILE))


def floor_outputs(output: str) -> pd.DataFrame:
    filesystem, _ = storage.filesystem(output)
    files = [path for path in deployer.committed_files("history", output=output)]
    paths = [storage.filesystem(path)[1] for path in files]
    return ds.dataset(paths, filesystem=filesystem, format="parquet").to_table().to_pandas()


def measure(label: str, output: str, runs: int) -> None:
    drop_index(output)
    first, frame = timed(lambda: deployer.read_runs("history", output=output))
    again, _ = timed(lambda: deployer.read_runs("history", output=output))
    last, _ = timed(lambda: deployer.read_runs("history", output=output, last=10))
    assert len(frame) == runs
    floor, rows = timed(lambda: floor_outputs(output))
    ours, outputs = timed(lambda: deployer.read_outputs("history", output=output))
    assert len(outputs) == len(rows) == runs * ROWS
    print(
        f"{label:<6} {runs:>5} {first:>8.2f}s {again:>7.2f}s {first / again:>6.1f}x "
        f"{last:>8.2f}s {ours:>8.2f}s {floor:>7.2f}s {ours / floor:>6.2f}x"
    )


def main() -> None:
    long = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)
    moto, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        import boto3
        from pyarrow import fs as pafs

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        print(f"{ROWS} rows a run; read_runs first (no index) / again (index); last=10; "
              "read_outputs() of all runs / the pyarrow.dataset floor")  # fmt: skip
        print(f"{'store':<6} {'runs':>5} {'first':>9} {'again':>8} {'ratio':>7} "
              f"{'last=10':>9} {'outputs':>9} {'floor':>8} {'ratio':>7}")  # fmt: skip
        for runs in (100, long):
            local = str(scratch / f"store-{runs}")
            write_runs(local, runs, scratch / f"build-{runs}")
            drop_index(local)
            s3 = f"s3://bench/runs-{runs}"
            s3_filesystem, s3_root = storage.filesystem(s3)
            pafs.copy_files(local, s3_root, destination_filesystem=s3_filesystem)
            measure("local", local, runs)
            measure("s3", s3, runs)
    finally:
        moto.terminate()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
