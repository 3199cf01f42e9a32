"""The slim archive's format, chosen by measurement: size and time against gzip level and threads.

For the sample classifier's dependency tree for Lambda python3.11 (pandas,
pyarrow, scikit-learn: about 323 MB, 4,200 files), each candidate is written
with deployer.archive.write_tar_gz (gzip members of 4 MB blocks, compressed on
``threads`` threads) and unpacked from the local file with the runtime's own
reader (runtimes/aws.py ``unpack_tree``, as Lambda does once the bytes are
there). Level 0 stores (no compression). Unpacking goes to a memory
filesystem (/dev/shm) when there is one: writing 4,200 files to this machine's
disk costs more than any format difference and varies by seconds between
runs, and it is the same for every format. The last column is what a cold
start would spend with the download streamed alongside at 100 MB/s (one S3
connection; Lambda's ranged GETs go faster): the larger of the two.

    python bench/slim_archive.py [repeats]
"""

from __future__ import annotations

import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from aws_package import TimingReporter, resolve_pins  # noqa: E402

from deployer.archive import write_tar_gz  # noqa: E402
from deployer.providers.aws.lambda_package import (  # noqa: E402
    SLIM_LEVEL,
    install_dependencies,
    lambda_target,
)
from deployer.runtimes.aws import unpack_tree  # noqa: E402

DOWNLOAD_BYTES_PER_SECOND = 100 * 2**20
CANDIDATES = [(6, 1), (1, 1), (0, None), (1, None), (3, None), (6, None), (9, None)]


def unpack_seconds(archive: Path, scratch: Path) -> float:
    memory = Path("/dev/shm")
    target = (memory if memory.is_dir() else scratch) / f"bench-unpacked-{os.getpid()}"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw) as inflated:
        unpack_tree(inflated, str(target))
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    return seconds


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    scratch = Path(tempfile.mkdtemp(prefix="bench-slim-archive-"))
    cache = Path(os.environ.get("DEPLOYER_CACHE", Path.home() / ".cache" / "deployer"))
    try:
        target = lambda_target("3.11")
        pins = resolve_pins(target, scratch)
        dependencies = install_dependencies(
            pins,
            target,
            deps_hash="bench-slim-archive",
            cache_dir=cache / "bench-slim-archive",
            reporter=TimingReporter(),
        )
        entries = list(dependencies.files())
        tree = sum(path.stat().st_size for _, path in entries)
        cores = os.cpu_count() or 1
        print(f"{len(entries):,} files, {tree / 2**20:.0f} MB; {cores} cores; medians of {repeats}")
        print(f"{'level':>5} {'threads':>7} {'write s':>8} {'MB':>6} {'unpack s':>9} {'cold s':>7}")
        for level, threads in CANDIDATES:
            archive = scratch / f"level{level}-{threads}.tar.gz"
            writes, unpacks = [], []
            for _ in range(repeats):
                started = time.perf_counter()
                size = write_tar_gz(entries, archive, level=level, threads=threads)
                writes.append(time.perf_counter() - started)
                unpacks.append(unpack_seconds(archive, scratch))
            unpack = statistics.median(unpacks)
            cold = max(unpack, size / DOWNLOAD_BYTES_PER_SECOND)
            chosen = "  <- deployer" if level == SLIM_LEVEL and threads is None else ""
            print(
                f"{level:>5} {threads or cores:>7} {statistics.median(writes):>8.2f} "
                f"{size / 2**20:>6.0f} {unpack:>9.2f} {cold:>7.2f}{chosen}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(cache / "bench-slim-archive", ignore_errors=True)


if __name__ == "__main__":
    main()
