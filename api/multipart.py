"""Streaming multipart reader for uploads.

Each file part is written to a temporary file while its sha256 and size are computed; a part
over the size limit stops the upload at once with 413, before the rest is read. Starlette's
form parser would spool the whole body first.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from core.errors import TooLarge, ZhikuError
from core.storage import disk_full, is_disk_full


@dataclass
class ReceivedFile:
    field: str
    filename: str
    path: Path
    size: int
    sha256: str


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    file: IO[bytes] | None = None
    path: Path | None = None
    hasher: hashlib._Hash | None = None
    size: int = 0
    field_name: str = ""
    filename: str | None = None


class UploadReader:
    def __init__(self, tmp_dir: Path, max_file_bytes: int, max_files: int = 10_000):
        self.tmp_dir = tmp_dir
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.files: list[ReceivedFile] = []
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""
        self._error: ZhikuError | None = None

    def cleanup(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)
        if self._part.file is not None and not self._part.file.closed:
            # flushing the rest may fail (a full disk): the file goes anyway
            with contextlib.suppress(OSError):
                self._part.file.close()
        if self._part.path is not None:
            self._part.path.unlink(missing_ok=True)

    async def read(self, request: Request) -> list[ReceivedFile]:
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        if ctype != b"multipart/form-data" or b"boundary" not in params:
            raise ZhikuError(
                "send the files as multipart/form-data in the field 'files'",
                code="bad_upload",
                status=415,
            )
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        parser = MultipartParser(
            params[b"boundary"],
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )
        try:
            async for block in request.stream():
                parser.write(block)
                if self._error is not None:
                    raise self._error
            parser.finalize()
        except OSError as exc:
            self.cleanup()
            if is_disk_full(exc):  # the temporary copy could not be written
                raise disk_full() from exc
            raise
        except BaseException:
            self.cleanup()
            raise
        return self.files

    # Callbacks (python-multipart calls them synchronously inside write()).
    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        disp = self._part.headers.get(b"content-disposition", b"")
        _, params = parse_options_header(disp)
        self._part.field_name = params.get(b"name", b"").decode("utf-8", "replace")
        raw = params.get(b"filename")
        if raw is not None:
            if len(self.files) >= self.max_files:
                self._error = ZhikuError(
                    f"too many files in one upload (limit {self.max_files}); send a zip instead",
                    code="too_many_files",
                    status=413,
                )
                return
            self._part.filename = raw.decode("utf-8", "replace")
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
            self._part.path = Path(name)
            self._part.file = open(fd, "wb")  # noqa: SIM115 (closed in on_part_end/cleanup)
            self._part.hasher = hashlib.sha256()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is None or part.hasher is None or self._error is not None:
            return
        chunk = data[start:end]
        part.size += len(chunk)
        if part.size > self.max_file_bytes:
            part.file.close()
            self._error = TooLarge(
                f"{part.filename!r} is larger than the upload limit of "
                f"{self.max_file_bytes // (1024 * 1024)} MB; split it or ask an admin to raise "
                "ZHIKU_MAX_UPLOAD_BYTES"
            )
            return
        part.file.write(chunk)
        part.hasher.update(chunk)

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is None or part.path is None or part.hasher is None or self._error:
            return
        part.file.close()
        self.files.append(
            ReceivedFile(
                field=part.field_name,
                filename=part.filename or "",
                path=part.path,
                size=part.size,
                sha256=part.hasher.hexdigest(),
            )
        )
        self._part = _Part()
