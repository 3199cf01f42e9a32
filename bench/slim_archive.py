"""The slim archive's format, chosen by measurement: size and time of zstd levels
against gzip.

For the sample classifier's dependency tree for Lambda python3.11 (pandas,
pyarrow, scikit-learn: about 323 MB, 4,200 files), each candidate is written
and then unpacked from the local file with the runtime's own reader
(runtimes/aws.py ``unpack_tree``, as Lambda does once the bytes are there).
zstd is deployer's writer (deployer.archive.write_tar_zst: zstd's workers on
every core); gzip is the standard library's tarfile on one core, what the
runtime could read without shipping a decompressor. Unpacking goes to a memory
filesystem (/dev/shm) when there is one, and once to this machine's disk,
flushed first (os.sync), with nothing on the disk deleted until the end (here,
files created soon after others were deleted take up to ten times as long):
the disk column still varies between runs. The last column is what a cold
start would spend with the download streamed alongside at 100 MB/s (one S3
connection; Lambda's ranged GETs go faster): the larger of the two, on memory.

    python bench/slim_archive.py [repeats]
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).parent))

from aws_package import TimingReporter, resolve_pins  # noqa: E402

from deployer import packaging  # noqa: E402
from deployer.archive import write_tar_zst, zstd_module  # noqa: E402
from deployer.providers.aws.lambda_package import SLIM_LEVEL, lambda_target  # noqa: E402
from deployer.runtimes.aws import unpack_tree  # noqa: E402

DOWNLOAD_BYTES_PER_SECOND = 100 * 2**20
CANDIDATES = [("gzip", 1), ("gzip", 6), ("zstd", 1), ("zstd", 3), ("zstd", 6), ("zstd", 9)]


def write_tar_gz(entries: list[tuple[str, Path]], path: Path, level: int) -> int:
    with tarfile.open(path, "w:gz", compresslevel=level) as archive:
        for name, source in entries:
            archive.add(source, arcname=name, recursive=False)
    return path.stat().st_size


def reader(kind: str) -> Callable[[IO[bytes]], Any]:
    if kind == "gzip":
        return lambda raw: gzip.GzipFile(fileobj=raw)
    zstd = zstd_module()
    return lambda raw: zstd.ZstdFile(raw)


def unpack_seconds(kind: str, archive: Path, target: Path) -> float:
    os.sync()  # what came before reaches the disk before timing
    started = time.perf_counter()
    with open(archive, "rb") as raw, reader(kind)(raw) as decompressed:
        unpack_tree(decompressed, str(target))
    return time.perf_counter() - started


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    stack = contextlib.ExitStack()
    scratch = Path(tempfile.mkdtemp(prefix="bench-slim-archive-"))
    try:
        target = lambda_target("3.11")
        pins = resolve_pins(target, scratch)
        building = packaging.scratch_dependencies(
            pins, target.platform, deps_hash="bench-slim-archive", reporter=TimingReporter()
        )
        dependencies = stack.enter_context(building)
        entries = list(dependencies.files())
        tree = sum(path.stat().st_size for _, path in entries)
        cores = os.cpu_count() or 1
        print(f"{len(entries):,} files, {tree / 2**20:.0f} MB; {cores} cores; medians of {repeats}")
        print(
            f"{'format':>6} {'level':>5} {'write s':>8} {'MB':>6} {'unpack s':>9} "
            f"{'on disk':>8} {'cold s':>7}"
        )
        memory = Path("/dev/shm") if Path("/dev/shm").is_dir() else scratch
        for kind, level in CANDIDATES:
            writes, unpacks = [], []
            for attempt in range(repeats):
                archive = scratch / f"{kind}{level}-{attempt}"
                started = time.perf_counter()
                if kind == "gzip":
                    size = write_tar_gz(entries, archive, level)
                else:
                    size = write_tar_zst(entries, archive, level=level)
                writes.append(time.perf_counter() - started)
                in_memory = memory / f"bench-unpacked-{os.getpid()}"
                unpacks.append(unpack_seconds(kind, archive, in_memory))
                shutil.rmtree(in_memory)
            on_disk = unpack_seconds(kind, archive, scratch / f"unpacked-{kind}{level}")
            unpack = statistics.median(unpacks)
            cold = max(unpack, size / DOWNLOAD_BYTES_PER_SECOND)
            chosen = "  <- deployer" if kind == "zstd" and level == SLIM_LEVEL else ""
            print(
                f"{kind:>6} {level:>5} {statistics.median(writes):>8.2f} {size / 2**20:>6.0f} "
                f"{unpack:>9.2f} {on_disk:>8.2f} {cold:>7.2f}{chosen}"
            )
    finally:
        stack.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
