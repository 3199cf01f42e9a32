"""The slim archive's format (deployer.archive.write_tar_zst: a tar compressed by
zstd on several workers) and its unpacking in Lambda (runtimes/aws.py
unpack_tree), without Lambda: the harness tests run both there."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from deployer.archive import write_tar_zst, zstd_module
from deployer.runtimes.aws import unpack_tree


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_the_archive_unpacks_to_the_same_tree_and_is_the_same_bytes_on_any_thread_count(
    tmp_path: Path,
) -> None:
    source = tmp_path / "python"
    (source / "pkg" / "sub").mkdir(parents=True)
    (source / "pkg" / "__init__.py").write_text("x = 1\n")
    big = source / "pkg" / "sub" / "lib.so"
    # Incompressible and over zstd's job size at level 3 (several MB), so the
    # workers each get a part: what they write must still come out in order.
    big.write_bytes(random_bytes(24 * 2**20))
    big.chmod(0o755)
    (source / "empty.txt").write_bytes(b"")
    entries = [(name, source / name) for name in tree(source)]
    one = tmp_path / "one.tar.zst"
    many = tmp_path / "many.tar.zst"
    write_tar_zst(entries, one, level=3, threads=1)
    write_tar_zst(entries, many, level=3, threads=4)
    assert one.read_bytes() == many.read_bytes()
    zstd = zstd_module()
    with (
        zstd.ZstdFile(one, "rb") as decompressed,
        tarfile.open(fileobj=decompressed, mode="r|") as standard,
    ):
        assert [member.name for member in standard] == sorted(name for name, _ in entries)
    with zstd.ZstdFile(one, "rb") as decompressed:
        unpack_tree(decompressed, str(tmp_path / "out"))
    assert tree(tmp_path / "out") == {
        name: (content, 0o755 if mode & 0o111 else 0o644)
        for name, (content, mode) in tree(source).items()
    }


def random_bytes(size: int) -> bytes:
    import random

    return random.Random(15).randbytes(size)


def tar_with(member: tarfile.TarInfo, data: bytes = b"") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../outside.py"),
        tarfile.TarInfo("/etc/cron.d/job"),
        tarfile.TarInfo("pkg/../../outside.py"),
    ],
)
def test_names_outside_the_folder_are_refused_before_anything_is_written(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    with pytest.raises(RuntimeError, match="only files and folders inside their root"):
        unpack_tree(tar_with(member, b"import os\n"), str(tmp_path / "deps"))
    assert not (tmp_path / "outside.py").exists()
    assert not (tmp_path / "deps").exists() or not any((tmp_path / "deps").rglob("*"))


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes) -> None:
    member = tarfile.TarInfo("pkg/link")
    member.type = kind
    member.linkname = "/etc/passwd"
    with pytest.raises(RuntimeError, match="only files and folders"):
        unpack_tree(tar_with(member), str(tmp_path / "deps"))
    assert not (tmp_path / "deps" / "pkg" / "link").exists()


def test_a_code_zip_without_the_decompressor_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.runtimes import aws

    # As in a code zip deployed without it, on a Python before 3.14.
    monkeypatch.setitem(sys.modules, "compression", None)
    monkeypatch.setitem(sys.modules, "backports", None)
    with pytest.raises(RuntimeError, match="neither compression.zstd .* nor backports.zstd"):
        aws._zstd()
