"""Latency of one prediction: in-process call vs HTTP through `deployer serve`
(warm worker) vs `invoke` while serve runs (its warm worker) vs `invoke`
without a server (new process per call).

    python bench/invoke_latency.py [requests]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from model import make_predict, train  # noqa: E402

import deployer  # noqa: E402
from deployer import Http  # noqa: E402
from deployer.providers.local.server import LocalServer  # noqa: E402


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    return f"p50 {p50:8.2f} ms   p95 {p95:8.2f} ms"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    os.environ.setdefault("DEPLOYER_CACHE", str(Path.home() / ".cache" / "deployer"))
    model, columns, features = train()
    predict = make_predict(model, columns)
    batch = features.head(10)
    deployer.deploy(predict, name="latency", triggers=[Http()], quiet=True)

    in_process = []
    for _ in range(count):
        started = time.perf_counter()
        predict(batch)
        in_process.append(time.perf_counter() - started)

    server = LocalServer(port=0, log=lambda line: None)
    server.start()
    body = json.dumps(batch.to_dict(orient="records")).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/functions/latency",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
    )
    urllib.request.urlopen(request).read()  # the first request starts the worker
    through_server = []
    for _ in range(count):
        started = time.perf_counter()
        urllib.request.urlopen(request).read()
        through_server.append(time.perf_counter() - started)
    deployer.api.invoke("latency", batch)  # the first invoke, as a user's first
    invoke_served = []
    for _ in range(count):
        started = time.perf_counter()
        deployer.api.invoke("latency", batch)
        invoke_served.append(time.perf_counter() - started)
    server.stop()

    cold = []
    for _ in range(min(count, 5)):
        started = time.perf_counter()
        deployer.api.invoke("latency", batch)
        cold.append(time.perf_counter() - started)

    print(f"{count} requests of {len(batch)} rows")
    print(f"in-process call                 {percentiles(in_process)}")
    print(f"HTTP via serve (warm worker)    {percentiles(through_server)}")
    print(f"invoke via serve (warm worker)  {percentiles(invoke_served)}")
    print(f"invoke, no server (cold, n={len(cold)})  {percentiles(cold)}")
    ratio = statistics.median(cold) / statistics.median(invoke_served)
    print(f"invoke via serve is {ratio:.0f}x faster than a new worker (median)")


if __name__ == "__main__":
    main()
