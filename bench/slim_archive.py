"""The slim archive's format, chosen by measurement: size and time of zstd levels
against gzip.

For the sample classifier's dependency tree for Lambda python3.11 (pandas,
pyarrow, scikit-learn: about 323 MB, 4,200 files), each candidate is written
and then unpacked from the local file with the runtime's own reader
(runtimes/aws.py ``unpack_tree``, as Lambda does once the bytes are there).
zstd is deployer's writer (deployer.archive.write_tar_zst: zstd's workers on
every core); gzip is the standard library's tarfile on one core, what the
runtime could read without shipping a decompressor. Unpacking goes to a memory
filesystem (/dev/shm) when there is one, and to this machine's disk, flushed
first (os.sync) so that one candidate's deletions are not billed to the next:
the disk column still varies by seconds between runs here. The last column is what a cold
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


def unpack_seconds(kind: str, archive: Path, under: Path) -> float:
    target = under / f"bench-unpacked-{os.getpid()}"
    shutil.rmtree(target, ignore_errors=True)
    os.sync()  # the last unpack's writes and deletions reach the disk before timing
    started = time.perf_counter()
    with open(archive, "rb") as raw, reader(kind)(raw) as decompressed:
        unpack_tree(decompressed, str(target))
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    return seconds


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
            archive = scratch / f"{kind}{level}"
            writes, unpacks, on_disk = [], [], []
            for _ in range(repeats):
                started = time.perf_counter()
                if kind == "gzip":
                    size = write_tar_gz(entries, archive, level)
                else:
                    size = write_tar_zst(entries, archive, level=level)
                writes.append(time.perf_counter() - started)
                unpacks.append(unpack_seconds(kind, archive, memory))
                on_disk.append(unpack_seconds(kind, archive, scratch))
            unpack = statistics.median(unpacks)
            cold = max(unpack, size / DOWNLOAD_BYTES_PER_SECOND)
            chosen = "  <- deployer" if kind == "zstd" and level == SLIM_LEVEL else ""
            print(
                f"{kind:>6} {level:>5} {statistics.median(writes):>8.2f} {size / 2**20:>6.0f} "
                f"{unpack:>9.2f} {statistics.median(on_disk):>8.2f} {cold:>7.2f}{chosen}"
            )
    finally:
        stack.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
