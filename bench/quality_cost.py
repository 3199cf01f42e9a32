"""What prediction quality adds to a whole run: the same bundle's run with
profiling, drift and schema change (the default) against one deployed with
drift=False, on the local store, side by side in one process.

A run here is what runs inside the function: the payload frame -> the function
(it adds a score column) -> metrics -> Parquet -> run.json, plus, with quality,
profile.json for the input and the output binned on a deploy-time reference.
One column in ten holds strings. The target: <= 15% at 1M rows x 20 columns.

    python bench/quality_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from profile_cost import make_frame  # noqa: E402

import deployer  # noqa: E402
from deployer.runtimes import core  # noqa: E402

SHAPES = [(100_000, 10), (100_000, 200), (1_000_000, 10), (1_000_000, 20)]
TARGET_SHAPE, TARGET_RATIO = (1_000_000, 20), 0.15


def score(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.iloc[:, 0] * 0.5)


def loaded_bundle(directory: Path, reference: pd.DataFrame, *, profiled: bool) -> core.Loaded:
    built = deployer.build(
        score,
        name="bench",
        output=str(directory / "store"),
        reference=reference if profiled else None,
        drift=None if profiled else False,
    )
    bundle_dir = directory / ("profiled" if profiled else "plain")
    built.bundle.extract(bundle_dir)
    return core.load(str(bundle_dir))


def run_seconds(loaded: core.Loaded, frame: pd.DataFrame) -> float:
    started = time.perf_counter()
    result = core.run(loaded, trigger="manual", payload=frame)
    elapsed = time.perf_counter() - started
    assert result.committed and result.status in ("succeeded", "warned"), result.record
    return elapsed


def interleaved_medians(
    plain: core.Loaded, profiled: core.Loaded, frame: pd.DataFrame, rounds: int
) -> tuple[float, float]:
    """Median seconds of each, run alternately so that both see the same machine
    (this 2-core machine's Parquet write alone varies by 2x from run to run)."""
    run_seconds(plain, frame)  # warm-up: page cache, allocator, imports
    run_seconds(profiled, frame)
    without, with_quality = [], []
    for _ in range(rounds):
        without.append(run_seconds(plain, frame))
        with_quality.append(run_seconds(profiled, frame))
    return statistics.median(without), statistics.median(with_quality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 100,000-row shapes")
    options = parser.parse_args()
    shapes = [shape for shape in SHAPES if not options.quick or shape[0] <= 100_000]
    print(f"{'rows':>9} {'cols':>4} {'plain s':>8} {'quality s':>9} {'added':>6}")
    for rows, columns in shapes:
        with tempfile.TemporaryDirectory(prefix="deployer-bench-") as scratch:
            directory = Path(scratch)
            reference = make_frame(min(rows, 100_000), columns, seed=1)
            frame = make_frame(rows, columns, seed=2)
            plain = loaded_bundle(directory, reference, profiled=False)
            profiled = loaded_bundle(directory, reference, profiled=True)
            rounds = 9 if rows <= 100_000 else 7
            without, with_quality = interleaved_medians(plain, profiled, frame, rounds)
        added = with_quality / without - 1
        mark = ""
        if (rows, columns) == TARGET_SHAPE:
            mark = "  <= target" if added <= TARGET_RATIO else f"  > target {TARGET_RATIO:.0%}"
        print(f"{rows:>9,} {columns:>4} {without:>8.2f} {with_quality:>9.2f} {added:>6.1%}{mark}")


if __name__ == "__main__":
    main()
