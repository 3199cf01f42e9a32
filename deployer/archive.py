"""Deterministic archives: identical input gives identical bytes, on any machine.

Everything that varies between two builds of the same content is fixed here:
entries are sorted by name, timestamps are the earliest a format can hold,
owners and modes are normalised, and compression settings are constant. So a
rebuild of an unchanged bundle or dependency tree has the same sha256, which is
how providers tell "nothing changed" without uploading anything.

Trees of dependencies reach 300-400 MB, so :func:`write_zip` and
:func:`write_tar_gz` stream each file from disk in chunks instead of holding
the archive (or a large shared library) in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

from deployer.errors import BundleError

# 1980-01-01 is the earliest time a zip entry can hold.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
COMPRESS_LEVEL = 6
FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755
UNIX = 3  # zip "made by" system; with it, unzip tools honour the mode bits
CHUNK_BYTES = 1024 * 1024

Source = TypeVar("Source")


def zip_bytes(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """A zip of in-memory ``(name, content)`` entries; every entry gets mode 0o644."""
    buffer = io.BytesIO()
    _write_zip_entries(entries, buffer)
    return buffer.getvalue()


def write_zip(entries: Iterable[tuple[str, Path | bytes]], path: Path) -> int:
    """A zip at ``path`` of entries given as content or as files to stream from disk.

    Files keep their executable bit (0o755) and nothing else of their stat.
    Written to a temporary sibling and renamed, so ``path`` is either complete
    or absent. Returns the archive's size in bytes.
    """
    with _replacing(path) as temporary, open(temporary, "wb") as stream:
        _write_zip_entries(entries, stream)
    return path.stat().st_size


def write_tar_gz(
    entries: Iterable[tuple[str, Path]],
    path: Path,
    *,
    level: int = COMPRESS_LEVEL,
    threads: int | None = None,
) -> int:
    """A gzipped tar at ``path`` of files streamed from disk; returns its size in bytes.

    Beyond sorted names: mtime 0, uid/gid 0 with empty owner names, modes
    0o644 or 0o755. The tar stream is cut into blocks of GZIP_BLOCK_BYTES, each
    compressed on its own thread into one gzip member (zlib gives up the GIL
    while it works, so ``threads`` cores compress at once); the members follow
    each other in order, which every gzip reader takes as one stream (Python's
    gzip module included). The blocks depend only on the content, so the same
    tree gives the same bytes whatever the number of threads.
    """
    ordered = _sorted_unique(entries)
    with (
        _replacing(path) as temporary,
        open(temporary, "wb") as raw,
        _GzipBlocks(raw, level, threads or os.cpu_count() or 1) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as archive,
    ):
        for name, source in ordered:
            stat = source.stat()
            info = tarfile.TarInfo(name)
            info.size = stat.st_size
            info.mtime = 0
            info.mode = _mode(stat.st_mode)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            with open(source, "rb") as content:
                archive.addfile(info, content)
    return path.stat().st_size


GZIP_BLOCK_BYTES = 4 * 1024 * 1024
# A gzip member's header, the same everywhere: deflate, no flags, mtime 0, OS
# "unknown" (zlib's own header names the OS it was built for: 3 Unix, 19 macOS).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class _GzipBlocks(io.RawIOBase):
    """A writable stream that gzips what it is given in blocks, several at once,
    and writes the members to ``sink`` in order."""

    def __init__(self, sink: IO[bytes], level: int, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._sink = sink
        self._level = level
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._pending: list[Future[bytes]] = []
        self._most_pending = 2 * threads  # bounds the memory held: blocks in flight

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) >= GZIP_BLOCK_BYTES:
            block = bytes(self._buffer[:GZIP_BLOCK_BYTES])
            del self._buffer[:GZIP_BLOCK_BYTES]
            self._submit(block)
        return len(data)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(_gzip_member, block, self._level))
        while len(self._pending) > self._most_pending:
            self._sink.write(self._pending.pop(0).result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buffer or not self._pending:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            for future in self._pending:
                self._sink.write(future.result())
            self._pending.clear()
        finally:
            self._pool.shutdown()
            super().close()


def _gzip_member(block: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate
    deflated = compressor.compress(block) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(block), len(block) & 0xFFFFFFFF)
    return GZIP_HEADER + deflated + trailer


def extend_zip(base: Path, entries: Iterable[tuple[str, Path | bytes]], path: Path) -> int:
    """A zip at ``path`` holding ``base``'s entries, then ``entries`` (sorted).

    For an artifact whose large part changes rarely (the dependencies, cached
    per deps_hash as a zip) and whose small part changes often (the code): only
    the small part is compressed again. The same base and entries give the same
    bytes. Atomic like write_zip; returns the size in bytes.
    """
    added = _sorted_unique(entries)
    with zipfile.ZipFile(base) as existing:
        clashes = sorted({name for name, _ in added} & set(existing.namelist()))
    if clashes:
        raise BundleError(
            f"archive entries {', '.join(map(repr, clashes[:5]))} are in the base archive "
            "already: an archive holds one file per name, so rename them"
        )
    with _replacing(path) as temporary:
        shutil.copyfile(base, temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            _add_entries(archive, added)
    return path.stat().st_size


def _write_zip_entries(entries: Iterable[tuple[str, Path | bytes]], stream: IO[bytes]) -> None:
    with zipfile.ZipFile(stream, "w") as archive:
        _add_entries(archive, _sorted_unique(entries))


def _add_entries(archive: zipfile.ZipFile, ordered: list[tuple[str, Path | bytes]]) -> None:
    for name, source in ordered:
        entry = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
        entry.compress_type = zipfile.ZIP_DEFLATED
        # The level attribute is private before Python 3.13 and an alias of
        # the public ``compress_level`` after; setting it keeps 6 explicit
        # rather than relying on zlib's default happening to be 6.
        setattr(entry, "_compresslevel", COMPRESS_LEVEL)  # noqa: B010
        entry.create_system = UNIX
        if isinstance(source, bytes):
            entry.external_attr = FILE_MODE << 16
            entry.file_size = len(source)
            with archive.open(entry, "w") as target:
                target.write(source)
        else:
            stat = source.stat()
            entry.external_attr = _mode(stat.st_mode) << 16
            # Known before writing, so zip64 is decided up front and the
            # same way as for in-memory content of the same size.
            entry.file_size = stat.st_size
            with open(source, "rb") as content, archive.open(entry, "w") as target:
                shutil.copyfileobj(content, target, CHUNK_BYTES)


def _mode(st_mode: int) -> int:
    return EXECUTABLE_MODE if st_mode & 0o111 else FILE_MODE


def _sorted_unique(entries: Iterable[tuple[str, Source]]) -> list[tuple[str, Source]]:
    ordered = sorted(entries, key=lambda entry: entry[0])
    for (name, _), (following, _) in zip(ordered, ordered[1:], strict=False):
        if name == following:
            raise BundleError(
                f"archive entry {name!r} is given twice: an archive holds one file per name, "
                "so rename one of them"
            )
    return ordered


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks (artifacts reach hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as content:
        for block in iter(lambda: content.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    with _replacing(path) as temporary:
        temporary.write_bytes(data)


def copy_atomically(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path``, streamed, so that ``path`` is complete or absent."""
    with _replacing(path) as temporary:
        shutil.copyfile(source, temporary)


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` that replaces it on success and vanishes on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
