"""Deterministic archives: identical input gives identical bytes, on any machine.

Everything that varies between two builds of the same content is fixed here:
entries are sorted by name, timestamps are the earliest a format can hold,
owners and modes are normalised, and compression settings are constant. So a
rebuild of an unchanged bundle or dependency tree has the same sha256, which is
how providers tell "nothing changed" without uploading anything.

Trees of dependencies reach 300-400 MB, so :func:`write_zip` and
:func:`write_tar_zst` stream each file from disk in chunks instead of holding
the archive (or a large shared library) in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

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


def write_tar_zst(
    entries: Iterable[tuple[str, Path]],
    path: Path,
    *,
    level: int,
    threads: int | None = None,
) -> int:
    """A zstd-compressed tar at ``path`` of files streamed from disk; returns its size.

    Beyond sorted names: mtime 0, uid/gid 0 with empty owner names, modes
    0o644 or 0o755. zstd compresses on ``threads`` workers (all cores unless
    told) while this thread writes the tar stream; with one worker or more,
    zstd's output depends only on the content and the level, so the same tree
    gives the same bytes on any machine.
    """
    zstd = zstd_module()
    options = {
        zstd.CompressionParameter.compression_level: level,
        zstd.CompressionParameter.nb_workers: max(1, threads or os.cpu_count() or 1),
    }
    ordered = _sorted_unique(entries)
    with (
        _replacing(path) as temporary,
        open(temporary, "wb") as raw,
        zstd.ZstdFile(raw, "w", options=options) as compressed,
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


def zstd_module() -> Any:
    """The standard library's zstd (Python 3.14+) or its backport, named when missing."""
    try:
        from compression import zstd  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[no-redef,unused-ignore]
        except ImportError:
            raise BundleError(
                "packing dependencies for slim mode needs zstd, which this Python "
                f"{sys.version_info.major}.{sys.version_info.minor} lacks: "
                "pip install 'deployer[aws]' (it brings backports.zstd)"
            ) from None
    return zstd


def extend_zip(base: Path, entries: Iterable[tuple[str, Path | bytes]], path: Path) -> int:
    """A zip at ``path`` holding ``base``'s entries, then ``entries`` (sorted).

    For an artifact whose large part changes rarely (the dependencies, cached
    per deps_hash as a zip) and whose small part changes often (the code): only
    the small part is compressed again. The same base and entries give the same
    bytes. Atomic like write_zip; returns the size in bytes.
    """
    added = _sorted_unique(entries)
    with zipfile.ZipFile(base) as existing:
        _refuse_clashes(existing, added)
    with _replacing(path) as temporary:
        shutil.copyfile(base, temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            _add_entries(archive, added)
    return path.stat().st_size


def extend_zip_bytes(base: bytes, entries: Iterable[tuple[str, bytes]]) -> bytes:
    """``extend_zip`` in memory: the zip ``base`` with ``entries`` (sorted) after its own."""
    added = _sorted_unique(entries)
    buffer = io.BytesIO(base)
    with zipfile.ZipFile(buffer, "a") as archive:
        _refuse_clashes(archive, added)
        _add_entries(archive, added)
    return buffer.getvalue()


def _refuse_clashes(existing: zipfile.ZipFile, added: Sequence[tuple[str, object]]) -> None:
    clashes = sorted({name for name, _ in added} & set(existing.namelist()))
    if clashes:
        raise BundleError(
            f"archive entries {', '.join(map(repr, clashes[:5]))} are in the base archive "
            "already: an archive holds one file per name, so rename them"
        )


def _write_zip_entries(entries: Iterable[tuple[str, Path | bytes]], stream: IO[bytes]) -> None:
    with zipfile.ZipFile(stream, "w") as archive:
        _add_entries(archive, _sorted_unique(entries))


def _add_entries(archive: zipfile.ZipFile, ordered: Sequence[tuple[str, Path | bytes]]) -> None:
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
