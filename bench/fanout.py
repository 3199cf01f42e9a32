"""Map runs on the local provider against the floor of one process, and planning cost.

- Throughput: 2M rows x 10 columns in 20 row groups, scored by a vectorised
  function. The floor is one process doing what a map run does for the whole
  file, without deployer: read the Parquet, call the function, write Parquet.
  The map runs it over 1 and 2 warm workers (workers started by the run, as
  `deployer map` does: their start is in the figure), with profiling and
  metrics on, committed as one run. Rows per second, and each as a ratio of
  the floor, from the medians of the repeats, in one run.
- Planning: 1,000 Parquet files of 4 row groups each, planned into shards from
  their footers alone (the first and the repeated planning).
- On paper: 10,000 shards on Lambda, from the per-worker rate measured here.

    python bench/fanout.py [repeats]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 2_000_000
ROW_GROUPS = 20
FILES = 1_000
TREES = 200  # score_heavy: about 1.5 us per row on this machine

# AWS Lambda list prices (us-east-1, x86): requests and GB-seconds; S3 requests.
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_PER_GB_SECOND = 0.0000166667
S3_PER_GET = 0.0004 / 1_000
S3_PER_PUT = 0.005 / 1_000


def score(frame: pd.DataFrame) -> pd.DataFrame:
    risk = 0.3 * frame.c0 - 0.2 * frame.c1 + 0.1 * frame.c2 * frame.c3
    return pd.DataFrame({"id": frame.id, "score": 1 / (1 + np.exp(-risk))})


def score_heavy(frame: pd.DataFrame) -> pd.DataFrame:
    """A model costing a few microseconds per row (an ensemble of small trees
    costs that much): where a map run pays for its workers."""
    columns = [frame[f"c{index}"].to_numpy() for index in range(8)]
    total = np.zeros(len(frame))
    for tree in range(TREES):
        split = columns[tree % 8] > (tree % 5 - 2) * 0.3
        total += np.where(split, np.tanh(columns[(tree + 3) % 8]), -0.01 * tree)
    return pd.DataFrame({"id": frame.id, "score": 1 / (1 + np.exp(-total / TREES))})


def make_frame(rows: int) -> pd.DataFrame:
    generator = np.random.default_rng(0)
    data: dict[str, object] = {"id": np.arange(rows)}
    for index in range(8):
        data[f"c{index}"] = generator.normal(size=rows)
    data["region"] = generator.choice(["north", "south", "east", "west"], rows)
    return pd.DataFrame(data)


def floor(source: Path, target: Path, model: Callable[[pd.DataFrame], pd.DataFrame]) -> float:
    started = time.perf_counter()
    frame = pq.read_table(source).to_pandas()
    out = model(frame)
    pq.write_table(pa.Table.from_pandas(out, preserve_index=False), target)
    return time.perf_counter() - started


def mapped(source: Path, workers: int, name: str) -> float:
    import deployer

    started = time.perf_counter()
    run = deployer.map(
        name,
        str(source),
        concurrency=workers,
        rows_per_shard=ROWS // ROW_GROUPS,
        progress=False,
    )
    seconds = time.perf_counter() - started
    assert run.status == "succeeded" and run.rows_out == ROWS, run.record
    return seconds


def planning(directory: Path) -> tuple[float, float, int]:
    from deployer.runtimes import fanout

    directory.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(1)
    small = pd.DataFrame({"a": generator.normal(size=400), "b": generator.integers(0, 9, 400)})
    table = pa.Table.from_pandas(small, preserve_index=False)
    for index in range(FILES):
        pq.write_table(table, directory / f"part-{index:04d}.parquet", row_group_size=100)
    started = time.perf_counter()
    plan = fanout.plan_shards(str(directory), rows_per_shard=10_000)
    first = time.perf_counter() - started
    started = time.perf_counter()
    fanout.plan_shards(str(directory), rows_per_shard=10_000)
    again = time.perf_counter() - started
    return first, again, len(plan.shards)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    scratch = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    try:
        import deployer

        source = scratch / "features.parquet"
        frame = make_frame(ROWS)
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False),
            source,
            row_group_size=ROWS // ROW_GROUPS,
        )
        print(
            f"{ROWS:,} rows x 10 columns in {ROW_GROUPS} row groups, {repeats} repeats, "
            f"{os.cpu_count()} cores; a map run starts its workers and profiles every shard"
        )
        rates = {}
        for model in (score, score_heavy):
            name = f"bench-{model.__name__.replace('_', '-')}"
            deployer.deploy(model, name=name, quiet=True)
            base = statistics.median(
                floor(source, scratch / "floor.parquet", model) for _ in range(repeats)
            )
            print(
                f"{model.__name__}: floor (one process: read, score, write) "
                f"{ROWS / base:12,.0f} rows/s {base:6.2f} s"
            )
            medians = {}
            for workers in (1, 2):
                seconds = statistics.median(mapped(source, workers, name) for _ in range(repeats))
                medians[workers] = seconds
                print(
                    f"{model.__name__}: map, {workers} worker{'s' if workers > 1 else ' '}"
                    f"{'':17}{ROWS / seconds:12,.0f} rows/s {seconds:6.2f} s  "
                    f"{base / seconds:.2f}x the floor's rate"
                )
            print(f"{model.__name__}: 2 workers / 1 worker {medians[1] / medians[2]:.2f}x")
            rates[model.__name__] = ROWS / medians[1]

        first, again, shards = planning(scratch / "many")
        print(
            f"planning {FILES:,} files ({FILES * 4:,} row groups -> {shards} shards) from "
            f"footers: {first * 1000:.0f} ms first, {again * 1000:.0f} ms again "
            f"({first / FILES * 1e6:.0f} us per file, local disk)"
        )

        # On paper: 10,000 shards of 200k rows (2 billion rows) on Lambda at 1,769 MB
        # (one vCPU), each shard as fast as one worker here with the heavier model.
        shards, rows_per_shard, memory_mb, concurrency = 10_000, 200_000, 1769, 100
        per_shard = rows_per_shard / rates["score_heavy"] + 0.1  # + the invoke
        waves = -(-shards // concurrency)
        compute = shards * per_shard * memory_mb / 1024 * LAMBDA_PER_GB_SECOND
        requests = shards * LAMBDA_PER_REQUEST
        storage_cost = shards * (3 * S3_PER_GET + S3_PER_PUT)
        print(
            f"on paper, 10,000 shards x {rows_per_shard:,} rows on Lambda "
            f"({memory_mb} MB, concurrency {concurrency}): {shards:,} invocations "
            f"(+1 coordinator when scheduled), {waves} waves of {per_shard:.1f} s = about "
            f"{waves * per_shard / 60:.0f} min; ${requests:.4f} requests + ${compute:.2f} "
            f"compute + ${storage_cost:.3f} S3 requests"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
