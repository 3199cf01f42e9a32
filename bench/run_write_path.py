"""One run's write path against the floor of writing its output with pyarrow.

A run here: a DataFrame payload in memory -> the function (which returns its
input, so the function costs nothing) -> metrics -> Parquet -> run.json, on a
local store, without profiling (drift=False) and with it (the default). The
floor: ``pa.Table.from_pandas`` + ``pq.write_table`` with default options, of
the same frame, to the same disk. Ratios are medians of the repeats.

    python bench/run_write_path.py [repeats] [--big]     # --big adds 2M x 200
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deployer import api
from deployer.runtimes import core


def same(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def make_frame(rows: int, columns: int) -> pd.DataFrame:
    generator = np.random.default_rng(0)
    data: dict[str, object] = {}
    for index in range(columns):
        kind = index % 5
        if kind == 4:  # every fifth column is a low-cardinality string, as features are
            data[f"c{index:03d}"] = generator.choice(["red", "green", "blue", "grey"], rows)
        elif kind == 3:
            data[f"c{index:03d}"] = generator.integers(0, 1000, rows)
        else:
            data[f"c{index:03d}"] = generator.normal(size=rows)
    return pd.DataFrame(data)


def floor(frame: pd.DataFrame, path: Path) -> float:
    started = time.perf_counter()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return time.perf_counter() - started


def one_run(loaded: core.Loaded, frame: pd.DataFrame) -> tuple[float, int]:
    """Seconds of one run, and the size of the output it wrote."""
    started = time.perf_counter()
    result = core.run(loaded, trigger="manual", payload=frame)
    seconds = time.perf_counter() - started
    assert result.status in ("succeeded", "warned"), result.record.get("error")
    written = Path(loaded.manifest.output, loaded.manifest.name, "runs", result.run_id)
    return seconds, (written / "output.parquet").stat().st_size


def main() -> None:
    arguments = [argument for argument in sys.argv[1:] if not argument.startswith("--")]
    repeats = int(arguments[0]) if arguments else 3
    shapes = [(100_000, 10), (100_000, 200), (2_000_000, 10)]
    if "--big" in sys.argv:
        shapes.append((2_000_000, 200))
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    try:
        loaded = {}
        for drift in (False, True):
            built = api.build(
                same,
                name=f"write-{str(drift).lower()}",
                output=str(scratch / "store"),
                drift=None if drift else False,
            )
            loaded[drift] = core.load(str(built.bundle.extract(scratch / f"bundle-{drift}")))
        print(f"{'rows':>9} {'cols':>4} {'floor':>8} {'run':>8} {'ratio':>6} "
              f"{'+profile':>9} {'ratio':>6} {'floor MB':>9} {'run MB':>7}")  # fmt: skip
        for rows, columns in shapes:
            frame = make_frame(rows, columns)
            floors, plain, profiled = [], [], []
            for repeat in range(repeats):
                path = scratch / f"floor-{repeat}.parquet"
                floors.append(floor(frame, path))
                size = path.stat().st_size
                path.unlink()
                seconds, ours = one_run(loaded[False], frame)
                plain.append(seconds)
                profiled.append(one_run(loaded[True], frame)[0])
            base = statistics.median(floors)
            run = statistics.median(plain)
            with_profile = statistics.median(profiled)
            print(
                f"{rows:>9,} {columns:>4} {base:>7.3f}s {run:>7.3f}s {run / base:>5.2f}x "
                f"{with_profile:>8.3f}s {with_profile / base:>5.2f}x {size / 2**20:>9.1f} "
                f"{ours / 2**20:>7.1f}"
            )
            del frame
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
