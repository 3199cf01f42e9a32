"""Deploy times of the sample model on the local provider.

    python bench/deploy_times.py

1. first deploy on a new machine: no environment and an empty uv download
   cache, so every wheel comes from the package index;
   then the first deploy of a new set of dependencies on a machine whose uv
   cache has the wheels (no environment yet);
2. a second deploy under another name with the same dependencies (must
   install nothing);
3. a code-only change of the first function;
4. a redeploy with nothing changed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from model import make_predict, train  # noqa: E402

import deployer  # noqa: E402
from deployer import Http  # noqa: E402


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    os.environ["DEPLOYER_CACHE"] = str(scratch / "cache")
    model, columns, _ = train()
    rows = []

    def measure(label: str, name: str, offset: float) -> None:
        predict = make_predict(model, columns, offset=offset)
        plan = deployer.plan(predict, name=name, triggers=[Http()], quiet=True)
        started = time.perf_counter()
        deployer.deploy(predict, name=name, triggers=[Http()], quiet=True)
        seconds = time.perf_counter() - started
        rows.append((label, seconds, ", ".join(plan.kinds()) or "nothing"))

    os.environ["UV_CACHE_DIR"] = str(scratch / "uv-cache")
    measure("first deploy, new machine (downloads)", "bench-new", 0.0)
    del os.environ["UV_CACHE_DIR"]
    os.environ["DEPLOYER_CACHE"] = str(scratch / "cache-2")
    measure("first deploy, environment cold", "bench-a", 0.0)
    measure("same dependencies, new function", "bench-b", 0.0)
    measure("code-only change", "bench-a", 0.001)
    measure("nothing changed", "bench-a", 0.001)
    print(f"{'case':<40} {'seconds':>8}  plan")
    for label, seconds, kinds in rows:
        print(f"{label:<40} {seconds:>8.2f}  {kinds}")


if __name__ == "__main__":
    main()
