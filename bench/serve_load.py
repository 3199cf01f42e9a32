"""Throughput and latency of `deployer serve` under concurrent clients.

Deploys the bench model with an HTTP trigger, starts `deployer serve` in its own
process, and sends the same 10-row prediction from 1, 8 and 32 concurrent
keep-alive clients. Prints requests per second, p50 and p99 latency, and how
many requests failed (connection resets, refused connections, non-200s).
The load is bounded: each level sends a fixed number of requests, on loopback.

    python bench/serve_load.py [requests-per-level]
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from model import make_predict, train  # noqa: E402

import deployer  # noqa: E402
from deployer import Http  # noqa: E402

LEVELS = (1, 8, 32)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"deployer serve exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("deployer serve did not start in 30 s")


def client(
    port: int, body: bytes, headers: dict[str, str], count: int, latencies: list[float]
) -> int:
    """Send ``count`` requests on one keep-alive connection; returns the failures."""
    failures = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        started = time.perf_counter()
        try:
            connection.request("POST", "/v1/functions/load", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failures += 1
                continue
        except (OSError, http.client.HTTPException):
            failures += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        latencies.append(time.perf_counter() - started)
    connection.close()
    return failures


def run_level(port: int, body: bytes, headers: dict[str, str], clients: int, total: int) -> str:
    per_client = max(1, total // clients)
    latencies: list[float] = []
    failures: list[int] = []

    def one() -> None:
        failures.append(client(port, body, headers, per_client, latencies))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000
    return (
        f"{clients:3d} clients  {len(latencies) / elapsed:8.1f} req/s   "
        f"p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   failed {sum(failures)}/{per_client * clients}"
    )


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    scratch = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    os.environ["DEPLOYER_HOME"] = str(scratch / "home")
    os.environ.setdefault("DEPLOYER_CACHE", str(Path.home() / ".cache" / "deployer"))
    model, columns, features = train()
    deployer.deploy(make_predict(model, columns), name="load", triggers=[Http()], quiet=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "deployer.cli", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(port, server)
        token = (scratch / "home" / "local" / "token").read_text().strip()
        body = json.dumps(features.head(10).to_dict(orient="records")).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        client(port, body, headers, 5, [])  # starts the warm worker
        print(f"{total} requests per level, 10 rows each, one warm worker")
        for clients in LEVELS:
            print(run_level(port, body, headers, clients, total))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
