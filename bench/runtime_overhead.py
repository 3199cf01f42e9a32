"""What the runtime adds to a run besides the user's function: load (once per
cold start), input conversion, metrics, checks and the three writes, for a
10,000-row output on the local store.

    python bench/runtime_overhead.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import deployer
from deployer.runtimes import core

ROWS = 10_000


def predict(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.assign(score=batch.a * 0.5 + batch.b)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    generator = np.random.default_rng(0)
    batch = pd.DataFrame(
        {
            "a": generator.normal(size=ROWS),
            "b": generator.normal(size=ROWS),
            "segment": generator.choice(["x", "y", "z"], size=ROWS),
        }
    )
    built = deployer.build(
        predict,
        name="overhead",
        output=str(scratch / "store"),
        metrics={"mean_score": lambda out: out.score.mean()},
        checks={"finite": lambda out: bool(np.isfinite(out.score).all())},
    )
    bundle_dir = built.bundle.extract(scratch / "bundle")

    # A cold start: a fresh interpreter imports the runtime and its libraries
    # and unpickles the function, as a new cloud function instance does.
    cold = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; started = time.perf_counter()\n"
            "from deployer.runtimes import core\n"
            f"core.load({str(bundle_dir)!r})\n"
            "print((time.perf_counter() - started) * 1000)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    load_ms = float(cold.stdout)
    loaded = core.load(str(bundle_dir))

    function_ms, total_ms = [], []
    for _ in range(runs):
        started = time.perf_counter()
        predict(batch)
        function_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        result = core.run(loaded, trigger="manual", payload=batch)
        total_ms.append((time.perf_counter() - started) * 1000)
        assert result.status == "succeeded"
    function = statistics.median(function_ms)
    total = statistics.median(total_ms)
    print(f"{ROWS:,}-row output, median of {runs} runs")
    print(f"cold load (new process)        {load_ms:8.2f} ms")
    print(f"function alone                 {function:8.2f} ms")
    print(f"run (function + runtime)       {total:8.2f} ms")
    print(f"runtime overhead per run       {total - function:8.2f} ms")


if __name__ == "__main__":
    main()
