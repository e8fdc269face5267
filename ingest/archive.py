"""Safe expansion of an uploaded .zip library, one member at a time.

    with open_zip(path) as archive:          # BadArchive if the archive as a whole is unsafe
        report(archive.skipped)              # entries left out, each with a reason
        for member in archive:               # a handle; nothing is decompressed yet
            data = member.read()             # bounded, counted read of this one member

or `iter_zip_members(path, ArchiveLimits(...))`, which yields one `ArchiveMember` at a time:
its bytes, or the reason it was skipped.

Checked before anything is decompressed: the number of entries, declared sizes (total, per
member) and compression ratios (zip bombs); unsafe names (absolute, drive letters, `..`),
symlinks and encrypted entries are skipped with a reason, as are macOS/Windows system files and
nested archives. While reading, actual bytes are counted against the declarations and limits.
Names that are not flagged UTF-8 (bit 11) are decoded from the Info-ZIP Unicode Path field when
present, else tried as UTF-8, then GBK/GB18030 (Chinese Windows), then CP437.
"""

from __future__ import annotations

import posixpath
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from core.errors import BadArchive

MAX_MEMBERS = 10_000
MAX_TOTAL_UNCOMPRESSED = 2 * 1024**3
MAX_RATIO = 200
MAX_MEMBER_BYTES = 200 * 1024**2
RATIO_MIN_BYTES = 1024**2  # ratios are only judged for members at least this big
_CHUNK = 1024**2

_SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini", ".localized"})
_NESTED_ARCHIVES = (".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zipx")
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNICODE_PATH_EXTRA = 0x7075


@dataclass(frozen=True)
class SkippedMember:
    name: str
    reason: str
    code: str  # system | unsafe_path | symlink | encrypted | too_large | nested_archive |
    #            duplicate | unreadable


@dataclass
class _Budget:
    max_total: int
    used: int = 0


@dataclass
class ZipMember:
    """One regular file of the archive. `read()` only while the archive is open."""

    folder: str  # "/"-separated folder inside the archive, "" at the top
    filename: str
    size: int  # declared uncompressed size
    _zf: zipfile.ZipFile = field(repr=False)
    _info: zipfile.ZipInfo = field(repr=False)
    _max_bytes: int = field(repr=False, default=MAX_MEMBER_BYTES)
    _budget: _Budget | None = field(repr=False, default=None)

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.filename}" if self.folder else self.filename

    def stream(self) -> Iterator[bytes]:
        """The member's bytes in chunks, counted against its declared size and the limits."""
        limit = min(self.size, self._max_bytes)
        seen = 0
        try:
            with self._zf.open(self._info) as fh:
                while chunk := fh.read(_CHUNK):
                    seen += len(chunk)
                    if self._budget is not None:
                        self._budget.used += len(chunk)
                        if self._budget.used > self._budget.max_total:
                            raise BadArchive(
                                "archive expands to more than "
                                f"{_human(self._budget.max_total)}: split it into smaller archives"
                            )
                    if seen > limit:
                        raise BadArchive(
                            f"{self.path!r} expands beyond its declared size "
                            f"({_human(self.size)}): the archive looks like a zip bomb or is "
                            "damaged"
                        )
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise MemberUnreadable(f"could not be read from the archive ({exc})") from exc

    def read(self) -> bytes:
        return b"".join(self.stream())


class MemberUnreadable(Exception):
    """One member is damaged (bad CRC, unsupported compression); the rest may be fine."""


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


# -- names ------------------------------------------------------------------------------------


def _unicode_path_extra(info: zipfile.ZipInfo, raw: bytes) -> str | None:
    extra, pos = info.extra, 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == _UNICODE_PATH_EXTRA and len(body) > 5 and body[0] == 1:
            (crc,) = struct.unpack_from("<I", body, 1)
            if crc == zlib.crc32(raw):
                try:
                    return body[5:].decode("utf-8")
                except UnicodeDecodeError:
                    return None
        pos += 4 + size
    return None


def decode_member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as its author saw it."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        raw = info.orig_filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    from_extra = _unicode_path_extra(info, raw)
    if from_extra:
        return from_extra
    if raw.isascii():
        return raw.decode("ascii")
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return info.filename  # CP437, as zipfile decoded it


def _safe_parts(name: str) -> list[str] | None:
    """Path components of a relative, traversal-free name; None when unsafe."""
    name = name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name) or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        return None
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _system_file(parts: list[str]) -> bool:
    if parts[0] == "__MACOSX" or any(p.startswith("._") for p in parts):
        return True
    return parts[-1].lower() in _SYSTEM_FILES


# -- the archive ------------------------------------------------------------------------------


class SafeZip:
    """A zip opened for safe expansion. Use as a context manager."""

    def __init__(
        self,
        source: str | Path | IO[bytes],
        *,
        max_members: int = MAX_MEMBERS,
        max_total_uncompressed: int = MAX_TOTAL_UNCOMPRESSED,
        max_ratio: float = MAX_RATIO,
        max_member_bytes: int = MAX_MEMBER_BYTES,
    ) -> None:
        try:
            self._zf = zipfile.ZipFile(source)
        except zipfile.BadZipFile as exc:
            raise BadArchive(
                f"not a readable zip archive ({exc}); create it again and upload"
            ) from None
        except (OSError, ValueError, struct.error) as exc:
            raise BadArchive(f"could not open the archive ({exc})") from None
        self.max_member_bytes = max_member_bytes
        self.skipped: list[SkippedMember] = []
        self.members: list[ZipMember] = []
        self._budget = _Budget(max_total=max_total_uncompressed)
        try:
            self._plan(max_members, max_total_uncompressed, max_ratio)
        except BaseException:
            self._zf.close()
            raise

    def _plan(self, max_members: int, max_total: int, max_ratio: float) -> None:
        infos = self._zf.infolist()
        if len(infos) > max_members:
            raise BadArchive(
                f"archive has {len(infos)} entries; at most {max_members} are "
                "accepted: split it into smaller archives"
            )
        seen: set[str] = set()
        total = 0
        for info in infos:
            name = decode_member_name(info)
            if info.is_dir() or name.replace("\\", "/").endswith("/"):
                continue
            parts = _safe_parts(name)
            reason = self._reject(info, name, parts, seen)
            if reason is not None:
                self.skipped.append(SkippedMember(name, reason[1], reason[0]))
                continue
            assert parts is not None
            path = "/".join(parts)
            seen.add(path.lower())
            if info.file_size >= RATIO_MIN_BYTES and info.file_size > max_ratio * max(
                info.compress_size, 1
            ):
                ratio = info.file_size / max(info.compress_size, 1)
                raise BadArchive(
                    f"{name!r} would expand {ratio:.0f}× (to {_human(info.file_size)}); "
                    "the archive looks like a zip bomb and was not expanded"
                )
            total += info.file_size
            if total > max_total:
                raise BadArchive(
                    f"archive expands to more than {_human(max_total)}: split it "
                    "into smaller archives"
                )
            self.members.append(
                ZipMember(
                    folder=posixpath.dirname(path),
                    filename=parts[-1],
                    size=info.file_size,
                    _zf=self._zf,
                    _info=info,
                    _max_bytes=self.max_member_bytes,
                    _budget=self._budget,
                )
            )

    def _reject(
        self, info: zipfile.ZipInfo, name: str, parts: list[str] | None, seen: set[str]
    ) -> tuple[str, str] | None:
        if parts is None:
            return "unsafe_path", "unsafe path (absolute, drive letter or '..'); not extracted"
        if _is_symlink(info):
            return "symlink", "symbolic link; not extracted"
        if _system_file(parts):
            return "system", "system file (macOS/Windows metadata)"
        if info.flag_bits & 0x1:
            return (
                "encrypted",
                "password-protected entry; extract it and upload it without a password",
            )
        if info.file_size > self.max_member_bytes:
            return "too_large", (
                f"larger than {_human(self.max_member_bytes)} "
                f"({_human(info.file_size)}); upload it on its own"
            )
        if parts[-1].lower().endswith(_NESTED_ARCHIVES):
            return (
                "nested_archive",
                "archive inside the archive; extract it and upload its contents",
            )
        if "/".join(parts).lower() in seen:
            return "duplicate", "duplicate name in the archive; the first one was kept"
        return None

    def __iter__(self) -> Iterator[ZipMember]:
        return iter(self.members)

    def close(self) -> None:
        self._zf.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_zip(
    source: str | Path | IO[bytes],
    *,
    max_members: int = MAX_MEMBERS,
    max_total_uncompressed: int = MAX_TOTAL_UNCOMPRESSED,
    max_ratio: float = MAX_RATIO,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> SafeZip:
    return SafeZip(
        source,
        max_members=max_members,
        max_total_uncompressed=max_total_uncompressed,
        max_ratio=max_ratio,
        max_member_bytes=max_member_bytes,
    )


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = MAX_MEMBERS
    max_total_uncompressed: int = MAX_TOTAL_UNCOMPRESSED
    max_ratio: float = MAX_RATIO
    max_member_bytes: int = MAX_MEMBER_BYTES


@dataclass(frozen=True)
class ArchiveMember:
    """What `iter_zip_members` yields: a file's bytes, or why it was skipped."""

    folder: str  # "/"-separated folder inside the archive, "" at the top
    filename: str
    data: bytes | None = None
    skipped: str | None = None  # the reason, when not extracted
    code: str | None = None  # SkippedMember.code, when skipped

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.filename}" if self.folder else self.filename


def _skipped(name: str, reason: str, code: str) -> ArchiveMember:
    folder, _, filename = name.replace("\\", "/").rstrip("/").rpartition("/")
    return ArchiveMember(folder, filename or name, skipped=reason, code=code)


def iter_zip_members(
    source: str | Path | IO[bytes],
    limits: ArchiveLimits | None = None,
    *,
    max_members: int = MAX_MEMBERS,
    max_total_uncompressed: int = MAX_TOTAL_UNCOMPRESSED,
    max_ratio: float = MAX_RATIO,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> Iterator[ArchiveMember]:
    """Yield each file (its bytes, one member at a time) or the reason it was skipped:
    skipped entries first, then the files in archive order.

    `limits`, when given, replaces the keyword limits. Raises `BadArchive` (before the first
    item, or while reading) when the archive as a whole is unsafe.
    """
    lim = limits or ArchiveLimits(max_members, max_total_uncompressed, max_ratio, max_member_bytes)
    with open_zip(
        source,
        max_members=lim.max_members,
        max_total_uncompressed=lim.max_total_uncompressed,
        max_ratio=lim.max_ratio,
        max_member_bytes=lim.max_member_bytes,
    ) as archive:
        for skip in archive.skipped:
            yield _skipped(skip.name, skip.reason, skip.code)
        for member in archive:
            try:
                data = member.read()
            except MemberUnreadable as exc:
                yield ArchiveMember(
                    member.folder, member.filename, skipped=str(exc), code="unreadable"
                )
                continue
            yield ArchiveMember(member.folder, member.filename, data=data)
