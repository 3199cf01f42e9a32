"""How long `import deployer` takes, and what it imports (python -X importtime).

python bench/import_time.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys


def cumulative_microseconds(module: str) -> tuple[int, list[str]]:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0
    imported = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        imported.append(name)
        if name == module:
            total = int(cumulative)
    return total, imported


def main() -> None:
    samples = [cumulative_microseconds("deployer")[0] for _ in range(7)]
    _, imported = cumulative_microseconds("deployer")
    heavy = sorted(
        {name.split(".")[0] for name in imported}
        & {"pandas", "pyarrow", "numpy", "boto3", "cloudpickle", "croniter", "rich"}
    )
    pandas_total = statistics.median(cumulative_microseconds("pandas")[0] for _ in range(3))
    print(
        f"import deployer: median {statistics.median(samples) / 1000:.1f} ms "
        f"(min {min(samples) / 1000:.1f}) over {len(samples)} runs, "
        f"{len(imported)} modules, heavy modules: {heavy or 'none'}"
    )
    print(f"for comparison, import pandas: {pandas_total / 1000:.1f} ms")


if __name__ == "__main__":
    main()
