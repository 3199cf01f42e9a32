"""What profiling a run's frame costs, as a share of writing that frame.

The floor of every run is converting its output to Arrow and writing Parquet;
profiling (runtimes/profile.py, binned on a reference's bins as in a deployed
function) is measured against it. One column in ten holds strings (50 values),
the rest are floats. The target: profiling <= 15% of the write at 1M x 20.

    python bench/profile_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deployer.runtimes.profile import profile_frame

SHAPES = [(100_000, 10), (100_000, 200), (1_000_000, 10), (1_000_000, 20), (1_000_000, 200)]
TARGET_SHAPE = (1_000_000, 20)
TARGET_RATIO = 0.15


def make_frame(rows: int, columns: int, seed: int) -> pd.DataFrame:
    generator = np.random.default_rng(seed)
    labels = np.array([f"segment-{index:02d}" for index in range(50)])
    data: dict[str, object] = {}
    for index in range(columns):
        if index % 10 == 9:
            data[f"c{index:03d}"] = labels[generator.integers(0, len(labels), rows)]
        else:
            data[f"c{index:03d}"] = generator.normal(index, 1 + index % 7, rows)
    return pd.DataFrame(data)


def write_parquet(frame: pd.DataFrame) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame), sink)


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def measure(rows: int, columns: int) -> tuple[float, float, float]:
    """Seconds to write, seconds to profile, and profile.json bytes per column."""
    # The reference is profiled on the host at deploy time; not timed.
    reference = profile_frame(make_frame(100_000, columns, seed=1))
    frame = make_frame(rows, columns, seed=2)
    repeats = 5 if rows * columns <= 2_000_000 else 3
    write = median_seconds(lambda: write_parquet(frame), repeats)
    profile = median_seconds(lambda: profile_frame(frame, reference=reference), repeats)
    size = len(json.dumps(profile_frame(frame, reference=reference)).encode()) / columns
    return write, profile, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 100,000-row shapes")
    options = parser.parse_args()
    shapes = [shape for shape in SHAPES if not options.quick or shape[0] <= 100_000]

    header = ("rows", "cols", "write ms", "profile ms", "ratio", "json B/col")
    print("{:>9} {:>4} {:>9} {:>10} {:>6} {:>10}".format(*header))
    for rows, columns in shapes:
        write, profile, size = measure(rows, columns)
        ratio = profile / write
        mark = ""
        if (rows, columns) == TARGET_SHAPE:
            mark = "  <= target" if ratio <= TARGET_RATIO else f"  > target {TARGET_RATIO:.0%}"
        print(
            f"{rows:>9,} {columns:>4} {write * 1000:>9.1f} {profile * 1000:>10.1f} "
            f"{ratio:>6.1%} {size:>10.0f}{mark}"
        )


if __name__ == "__main__":
    main()
