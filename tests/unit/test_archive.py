"""Safe zip expansion: bombs, traversal, symlinks, many members, non-UTF-8 names."""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from core.errors import BadArchive
from ingest.archive import (
    ArchiveLimits,
    ArchiveMember,
    decode_member_name,
    iter_zip_members,
    open_zip,
)

MiB = 1024**2


def _write(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _files(items: list[ArchiveMember]) -> dict[str, bytes]:
    return {m.path: m.data for m in items if m.data is not None}


def _skips(items: list[ArchiveMember]) -> dict[str, str]:
    return {m.path: str(m.code) for m in items if m.skipped is not None}


def test_plain_archive_with_folders(tmp_path: Path) -> None:
    z = _write(
        tmp_path / "lib.zip",
        {
            "readme.txt": b"hello",
            "policies/hr/leave.md": b"# Leave",
            "policies/": b"",
        },
    )
    items = list(iter_zip_members(z))
    assert _files(items) == {"readme.txt": b"hello", "policies/hr/leave.md": b"# Leave"}
    leave = next(m for m in items if m.filename == "leave.md")
    assert leave.folder == "policies/hr"
    assert not _skips(items)  # directories are not reported


def test_traversal_and_absolute_names_are_skipped(tmp_path: Path) -> None:
    z = _write(
        tmp_path / "evil.zip",
        {
            "../../etc/passwd": b"x",
            "/abs/path.txt": b"x",
            "C:/Windows/win.ini": b"x",
            "a/../../up.txt": b"x",
            "..\\..\\win.txt": b"x",
            "ok/fine.txt": b"fine",
        },
    )
    items = list(iter_zip_members(z))
    assert _files(items) == {"ok/fine.txt": b"fine"}
    skipped = [m for m in items if m.skipped]
    assert len(skipped) == 5
    assert all(m.code == "unsafe_path" and "unsafe path" in str(m.skipped) for m in skipped)


def test_symlink_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("docs/passwd-link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
        zf.writestr("docs/real.txt", "real")
    items = list(iter_zip_members(path))
    assert _files(items) == {"docs/real.txt": b"real"}
    assert _skips(items) == {"docs/passwd-link": "symlink"}


def test_system_files_and_nested_archives_are_skipped(tmp_path: Path) -> None:
    z = _write(
        tmp_path / "mac.zip",
        {
            "__MACOSX/._a.txt": b"x",
            "folder/.DS_Store": b"x",
            "folder/._b.txt": b"x",
            "Thumbs.db": b"x",
            "inner.zip": b"PK\x05\x06" + b"\x00" * 18,
            "a.txt": b"a",
        },
    )
    items = list(iter_zip_members(z))
    assert _files(items) == {"a.txt": b"a"}
    codes = _skips(items)
    assert codes.pop("inner.zip") == "nested_archive"
    assert set(codes.values()) == {"system"} and len(codes) == 4


def test_ratio_bomb_is_refused_before_expanding(tmp_path: Path) -> None:
    z = _write(tmp_path / "bomb.zip", {"zeros.txt": b"\x00" * (20 * MiB)})
    assert z.stat().st_size < 100_000
    with pytest.raises(BadArchive, match="zip bomb"):
        list(iter_zip_members(z))


def test_total_size_bomb_is_refused(tmp_path: Path) -> None:
    # many members, each modest and with a normal ratio, but too much in total
    import random

    r = random.Random(1)
    members = {f"part{i}.bin": r.randbytes(2 * MiB) for i in range(4)}
    z = _write(tmp_path / "big.zip", members)
    with pytest.raises(BadArchive, match="expands to more than"):
        list(iter_zip_members(z, max_total_uncompressed=5 * MiB))
    # and the ArchiveLimits form the api uses
    with pytest.raises(BadArchive, match="expands to more than"):
        list(iter_zip_members(z, ArchiveLimits(max_total_uncompressed=5 * MiB)))


def test_member_larger_than_limit_is_skipped_not_fatal(tmp_path: Path) -> None:
    import random

    z = _write(
        tmp_path / "one-big.zip",
        {"big.bin": random.Random(2).randbytes(3 * MiB), "small.txt": b"ok"},
    )
    items = list(iter_zip_members(z, max_member_bytes=1 * MiB))
    assert _files(items) == {"small.txt": b"ok"}
    assert _skips(items) == {"big.bin": "too_large"}


def _forge_declared_size(path: Path, name: str, declared: int) -> None:
    """Make the central directory under-declare a member's uncompressed size."""
    data = bytearray(path.read_bytes())
    pos = data.rfind(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == name.encode():
            struct.pack_into("<I", data, pos + 24, declared)
            break
        pos = data.rfind(b"PK\x01\x02", 0, pos)
    path.write_bytes(bytes(data))


def test_actual_bytes_never_exceed_declared_size(tmp_path: Path) -> None:
    z = _write(tmp_path / "liar.zip", {"liar.txt": b"A" * 100_000, "ok.txt": b"fine"})
    _forge_declared_size(z, "liar.txt", 10)
    items = list(iter_zip_members(z))
    liar = next(m for m in items if m.filename == "liar.txt")
    # zipfile stops at the declared size and the CRC then fails: reported, never expanded
    assert liar.data is None and liar.code == "unreadable"
    assert _files(items) == {"ok.txt": b"fine"}


def test_too_many_members(tmp_path: Path) -> None:
    z = _write(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(30)})
    with pytest.raises(BadArchive, match="30 entries; at most 20"):
        list(iter_zip_members(z, max_members=20))


def test_five_thousand_files_stream_one_at_a_time(tmp_path: Path) -> None:
    z = _write(
        tmp_path / "5k.zip",
        {f"dept{i % 50}/doc{i}.txt": f"document {i}".encode() for i in range(5000)},
    )
    count = 0
    with open_zip(z) as archive:
        assert len(archive.members) == 5000 and not archive.skipped
        for member in archive:  # handles: nothing decompressed until read()
            assert member.read() == f"document {member.filename[3:-4]}".encode()
            count += 1
    assert count == 5000
    gen = iter_zip_members(z)
    first = next(gen)  # the generator holds one member's bytes at a time
    assert first.data is not None
    del gen


def _raw_zip(entries: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """A stored zip with names written as the given bytes, flag bit 11 clear (as Chinese
    Windows tools write them); entries are (raw name, extra field, data)."""
    out, central = bytearray(), bytearray()
    for name, extra, data in entries:
        crc, offset = zlib.crc32(data), len(out)
        out += (
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                0,
                0,
                0,
                0,
                crc,
                len(data),
                len(data),
                len(name),
                len(extra),
            )
            + name
            + extra
            + data
        )
        central += (
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                crc,
                len(data),
                len(data),
                len(name),
                len(extra),
                0,
                0,
                0,
                0,
                offset,
            )
            + name
            + extra
        )
    start = len(out)
    out += central
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), start, 0
    )
    return bytes(out)


def test_gbk_member_names(tmp_path: Path) -> None:
    names = ["财务制度/报销流程.txt", "人事/员工手册.docx"]
    path = tmp_path / "gbk.zip"
    path.write_bytes(_raw_zip([(n.encode("gbk"), b"", n.encode()) for n in names]))
    items = list(iter_zip_members(path))
    assert _files(items) == {n: n.encode() for n in names}
    member = next(m for m in items if m.filename == "报销流程.txt")
    assert member.folder == "财务制度"


def test_info_zip_unicode_path_field_wins(tmp_path: Path) -> None:
    raw = b"?????.txt"  # what some tools store when the name does not fit the code page
    real = "会议纪要.txt".encode()
    extra = struct.pack("<HHBI", 0x7075, 5 + len(real), 1, zlib.crc32(raw)) + real
    path = tmp_path / "unicode-extra.zip"
    path.write_bytes(_raw_zip([(raw, extra, b"minutes")]))
    assert _files(list(iter_zip_members(path))) == {"会议纪要.txt": b"minutes"}


def test_gbk_names_decode_helper() -> None:
    info = zipfile.ZipInfo("placeholder")
    info.flag_bits = 0
    info.orig_filename = "员工手册.txt".encode("gbk").decode("cp437")
    info.filename = info.orig_filename
    assert decode_member_name(info) == "员工手册.txt"
    info.orig_filename = "Übersicht.txt".encode().decode("cp437")
    assert decode_member_name(info) == "Übersicht.txt"  # UTF-8 without the flag
    info.orig_filename = "caf\x82.txt"  # CP437 'é' that is neither UTF-8 nor GBK
    info.filename = "caf\x82.txt"
    assert decode_member_name(info).startswith("caf")


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip at all")
    with pytest.raises(BadArchive, match="not a readable zip archive"):
        list(iter_zip_members(bad))


def test_encrypted_member_is_skipped(tmp_path: Path) -> None:
    z = _write(tmp_path / "enc.zip", {"secret.txt": b"s", "open.txt": b"o"})
    data = bytearray(z.read_bytes())
    # set the "encrypted" flag on secret.txt in the central directory
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == b"secret.txt":
            flags = struct.unpack_from("<H", data, pos + 8)[0] | 0x1
            struct.pack_into("<H", data, pos + 8, flags)
        pos = data.find(b"PK\x01\x02", pos + 4)
    z.write_bytes(bytes(data))
    items = list(iter_zip_members(z))
    assert _files(items) == {"open.txt": b"o"}
    assert _skips(items) == {"secret.txt": "encrypted"}
