"""bytes + file name -> `ParsedDocument`, through `unstructured` partitioners, offline.

Strategies recorded in `ParsedDocument.strategy`:

- ``fast``: the format's own text (PDF text layer, DOCX/PPTX/XLSX/HTML/... structure).
- ``ocr_only``: tesseract on page images (images, scanned PDFs, PDFs with a garbled text layer).
- ``fast+ocr_only``: PDF text layer, plus OCR for its image-only pages.
- ``libreoffice+fast``: legacy DOC/PPT/XLS (and ODS/ODP) converted by headless LibreOffice.

Every failure is a `BadDocument` (or `UnsupportedType`) whose reason says what to do.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from typing import Any

from core.errors import BadDocument, UnsupportedType, ZhikuError
from core.types import ParsedDocument, ParsedElement
from ingest import elements as el_conv
from ingest import mail, ocr
from ingest.detect import (
    IMAGE_KINDS,
    MEDIA_TYPES,
    decode_text,
    detect_type,
    extension_kind,
)
from ingest.jsontext import json_elements
from ingest.office import PASSWORD_REASON, convert_with_libreoffice, is_encrypted_office
from ingest.offline import ensure_offline
from ingest.pdf import OcrLimits, Outcome, parse_pdf
from ingest.quality import JUNK_THRESHOLD, MIN_GOOD_CHARS, text_quality

# Exceptions a celery worker uses to stop a task: never turn them into "bad document".
_PASS_THROUGH = frozenset({"SoftTimeLimitExceeded", "TimeLimitExceeded", "Terminated"})
_CORRUPT = (zipfile.BadZipFile, EOFError, struct.error, KeyError, UnicodeDecodeError)
_LEGACY_TARGET = {"doc": "docx", "ppt": "pptx", "xls": "xlsx", "ods": "xlsx", "odp": "pptx"}
_MAX_ATTACHMENT_DEPTH = 1
_MAX_PARTS_BYTES = 2 * 1024**3  # a DOCX/XLSX/... whose parts expand beyond this is refused
_MAX_PART_RATIO = 1000
# unstructured's per-element language detection (langdetect) costs a fifth of a text parse and
# its result is not used: retrieval analyses Chinese and English itself.
NO_LANGUAGE_DETECTION = [""]
LARGE_TEXT_CHARS = 1_000_000  # plain text above this skips unstructured's (slow) classifier


@dataclass(frozen=True)
class _Options:
    limits: OcrLimits
    pdf_strategy: str
    depth: int = 0


@dataclass
class _Result:
    elements: list[ParsedElement]
    strategy: str = "fast"
    page_count: int | None = None
    warnings: list[str] = field(default_factory=list)


def parse_document(
    data: bytes,
    filename: str,
    *,
    ocr_languages: str = "eng+chi_sim",
    pdf_strategy: str = "auto",
    max_ocr_pages: int = 50,
    ocr_time_budget: float = 900.0,
) -> ParsedDocument:
    """Parse one file. Raises `BadDocument`/`UnsupportedType` with an actionable reason.

    `pdf_strategy`: "auto" (text layer, OCR where there is none), "fast" or "ocr_only".
    `max_ocr_pages` caps the pages OCR reads per document (image frames or PDF pages);
    `ocr_time_budget` (seconds) stops OCR of a long scan early. Both leave a warning.
    """
    if pdf_strategy not in ("auto", "fast", "ocr_only"):
        raise ValueError(f"pdf_strategy must be auto, fast or ocr_only, not {pdf_strategy!r}")
    limits = OcrLimits(
        languages=ocr_languages, max_pages=max_ocr_pages, time_budget=ocr_time_budget
    )
    return _parse(data, filename, _Options(limits=limits, pdf_strategy=pdf_strategy))


def _parse(data: bytes, filename: str, opts: _Options) -> ParsedDocument:
    if not data:
        raise BadDocument("file is empty")
    kind = detect_type(data, filename)
    ensure_offline()
    try:
        result = _HANDLERS.get(kind, _unsupported)(data, kind, opts)
    except ZhikuError:
        raise
    except MemoryError:
        raise BadDocument(
            "could not be read: it needs more memory than this server has; "
            "split it into smaller files"
        ) from None
    except Exception as exc:
        if type(exc).__name__ in _PASS_THROUGH:
            raise
        raise BadDocument(_failure_reason(exc)) from exc
    claimed = extension_kind(filename)
    if claimed is not None and claimed != kind:
        suffix = PurePath(filename).suffix.lower()
        result.warnings.insert(
            0,
            f"the file name says {suffix} but the content is "
            f"{kind.upper()}; it was read as {kind.upper()}",
        )
    _check_text(result, kind)
    return ParsedDocument(
        elements=[_clean(e) for e in result.elements],
        media_type=MEDIA_TYPES[kind],
        page_count=result.page_count,
        strategy=result.strategy,
        warnings=result.warnings,
    )


# C0 control characters other than tab and newlines: NUL breaks PostgreSQL text columns, and
# none of them carries meaning in a passage.
_CONTROL = {c: None for c in range(32) if chr(c) not in "\t\n\r"} | {0x7F: None}


def _clean(element: ParsedElement) -> ParsedElement:
    text = element.text.translate(_CONTROL)
    return element if text == element.text else replace(element, text=text)


def _failure_reason(exc: Exception) -> str:
    summary = f"{type(exc).__name__}: {str(exc).strip()[:300]}".rstrip(": ")
    name = type(exc).__name__
    if (
        isinstance(exc, _CORRUPT)
        or "PDFSyntax" in name
        or "XMLSyntax" in name
        or name in ("PackageNotFoundError", "PSEOF", "PdfiumError", "PdfReadError")
    ):
        return f"could not be read: looks corrupt ({summary})"
    if name == "UnprocessableEntityError" and "password" in str(exc).lower():
        return PASSWORD_REASON
    return f"could not be read ({summary})"


def _check_text(result: _Result, kind: str) -> None:
    text = "\n".join(e.text for e in result.elements)
    if not text.strip():
        if kind in IMAGE_KINDS or result.strategy == "ocr_only":
            raise BadDocument(
                "no text could be extracted: OCR found no text in this "
                "scan/image; upload a clearer scan or a text version"
            )
        raise BadDocument("no text could be extracted from this file")
    if result.strategy == "ocr_only":
        quality = text_quality(text)
        if quality.good_chars < MIN_GOOD_CHARS:
            raise BadDocument(
                f"no text could be extracted: OCR found almost no text ({quality.total_chars} "
                "characters); upload a clearer scan or a text version"
            )
        if quality.score < JUNK_THRESHOLD:
            raise BadDocument(
                f"no text could be extracted: OCR output looks like noise ({quality.describe()});"
                " upload a clearer scan (300 dpi, upright) or a text version"
            )


def _max_page(elements: list[ParsedElement]) -> int | None:
    pages = [e.page for e in elements if e.page is not None]
    return max(pages) if pages else None


# -- handlers ---------------------------------------------------------------------------------


def _unsupported(data: bytes, kind: str, opts: _Options) -> _Result:
    if kind == "zip":
        raise UnsupportedType(
            "this is a zip archive: upload it as a library archive to import "
            "the documents inside it one by one"
        )
    raise UnsupportedType(f"{kind} files are not supported")


def _pdf(data: bytes, kind: str, opts: _Options) -> _Result:
    out: Outcome = parse_pdf(data, strategy=opts.pdf_strategy, limits=opts.limits)
    return _Result(out.elements, out.strategy, out.page_count, out.warnings)


def _image(data: bytes, kind: str, opts: _Options) -> _Result:
    languages, warnings = ocr.require_tesseract("image", opts.limits.languages)
    frames, pages = ocr.image_frames(data, opts.limits.max_pages)
    result = ocr.ocr_pages(
        pages, languages, time_budget=opts.limits.time_budget, page_timeout=opts.limits.page_timeout
    )
    warnings += result.warnings
    if frames > opts.limits.max_pages:
        warnings.append(
            f"only the first {opts.limits.max_pages} of {frames} image frames "
            "were read (OCR page limit)"
        )
    return _Result(result.elements, "ocr_only", frames, warnings)


def _check_office_encryption(data: bytes) -> None:
    if is_encrypted_office(data):
        raise BadDocument(PASSWORD_REASON)


def _check_zip(data: bytes, kind: str) -> None:
    """OOXML/ODF/EPUB are zip files: say "corrupt" plainly when the zip itself is broken."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as exc:
        raise BadDocument(
            f"could not be read: looks corrupt ({kind.upper()} files are zip "
            f"archives and this one is damaged: {exc})"
        ) from None
    total = sum(i.file_size for i in infos)
    bomb = any(
        i.file_size >= 1024**2 and i.file_size > _MAX_PART_RATIO * max(i.compress_size, 1)
        for i in infos
    )
    if total > _MAX_PARTS_BYTES or bomb:
        raise BadDocument(
            f"could not be read: this {kind.upper()} file would expand to "
            f"{total / 1024**3:.1f} GiB (it looks like a zip bomb)"
        )


def _office(data: bytes, kind: str, opts: _Options) -> _Result:
    _check_office_encryption(data)
    _check_zip(data, kind)
    found: list[Any]
    if kind == "docx":
        from unstructured.partition.docx import partition_docx

        found = partition_docx(file=io.BytesIO(data), infer_table_structure=True)
    elif kind == "pptx":
        from unstructured.partition.pptx import partition_pptx

        found = partition_pptx(file=io.BytesIO(data), infer_table_structure=True)
    else:
        from unstructured.partition.xlsx import partition_xlsx

        found = partition_xlsx(file=io.BytesIO(data), infer_table_structure=True)
    elements = el_conv.convert(found)
    return _Result(elements, "fast", _max_page(elements))


def _legacy(data: bytes, kind: str, opts: _Options) -> _Result:
    _check_office_encryption(data)
    target = _LEGACY_TARGET[kind]
    converted = convert_with_libreoffice(data, kind, target)
    result = _office(converted, target, opts)
    result.strategy = "libreoffice+fast"
    return result


def _pandoc_kind(data: bytes, kind: str, opts: _Options) -> _Result:
    from unstructured.partition.epub import partition_epub
    from unstructured.partition.odt import partition_odt
    from unstructured.partition.org import partition_org
    from unstructured.partition.rst import partition_rst
    from unstructured.partition.rtf import partition_rtf

    partitioners: dict[str, Callable[..., list[Any]]] = {
        "epub": partition_epub,
        "odt": partition_odt,
        "rtf": partition_rtf,
        "rst": partition_rst,
        "org": partition_org,
    }
    if kind in ("epub", "odt"):
        _check_zip(data, kind)
    found = partitioners[kind](file=io.BytesIO(data))
    return _Result(el_conv.convert(found))


def _text_kind(data: bytes, kind: str, opts: _Options) -> _Result:
    text = decode_text(data)
    if not text.strip():
        raise BadDocument("no text could be extracted: the file contains only whitespace")
    found: list[Any]
    if kind == "html":
        from unstructured.partition.html import partition_html

        found = partition_html(text=text, languages=NO_LANGUAGE_DETECTION)
    elif kind == "md":
        from unstructured.partition.md import partition_md

        found = partition_md(text=text, languages=NO_LANGUAGE_DETECTION)
    elif kind in ("csv", "tsv"):
        from unstructured.partition.csv import partition_csv
        from unstructured.partition.tsv import partition_tsv

        utf8 = io.BytesIO(text.encode("utf-8"))
        found = (
            partition_csv(file=utf8, encoding="utf-8")
            if kind == "csv"
            else partition_tsv(file=utf8)
        )
    elif len(text) > LARGE_TEXT_CHARS:
        return _Result(
            _plain_paragraphs(text),
            "fast",
            None,
            [
                f"large text file ({len(text):,} characters): split into paragraphs without "
                "title/list detection"
            ],
        )
    else:
        from unstructured.partition.text import partition_text

        found = partition_text(text=text, languages=NO_LANGUAGE_DETECTION)
    return _Result(el_conv.convert(found))


def _plain_paragraphs(text: str) -> list[ParsedElement]:
    """Blank-line paragraphs (long ones cut at line ends): unstructured classifies every
    paragraph with spaCy, about 20 KB/s of English, too slow for multi-megabyte logs/dumps."""
    out: list[ParsedElement] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        piece: list[str] = []
        size = 0
        for line in block.split("\n"):
            piece.append(line)
            size += len(line) + 1
            if size >= 4000:
                out.append(ParsedElement(category="NarrativeText", text="\n".join(piece).strip()))
                piece, size = [], 0
        if "".join(piece).strip():
            out.append(ParsedElement(category="NarrativeText", text="\n".join(piece).strip()))
    return [e for e in out if e.text]


def _json(data: bytes, kind: str, opts: _Options) -> _Result:
    elements, warnings = json_elements(decode_text(data))
    return _Result(elements, "fast", None, warnings)


def _mail(data: bytes, kind: str, opts: _Options) -> _Result:
    if not decode_text(data[:65536]).strip() and kind == "eml":
        raise BadDocument("no text could be extracted: the e-mail is empty")
    result = _Result(mail.partition_body(data, kind))
    if opts.depth >= _MAX_ATTACHMENT_DEPTH:
        return result
    child = replace(opts, depth=opts.depth + 1)
    for att in mail.attachments(data, kind):
        try:
            parsed = _parse(att.data, att.filename, child)
        except ZhikuError as exc:
            result.warnings.append(f"attachment {att.filename!r} skipped: {exc.reason}")
            continue
        result.elements += el_conv.annotate(parsed.elements, attachment=att.filename)
        result.warnings += [f"attachment {att.filename!r}: {w}" for w in parsed.warnings]
    return result


_HANDLERS: dict[str, Callable[[bytes, str, _Options], _Result]] = {
    "pdf": _pdf,
    **{k: _image for k in IMAGE_KINDS},
    **{k: _office for k in ("docx", "pptx", "xlsx")},
    **{k: _legacy for k in _LEGACY_TARGET},
    **{k: _pandoc_kind for k in ("epub", "odt", "rtf", "rst", "org")},
    **{k: _text_kind for k in ("html", "md", "csv", "tsv", "txt")},
    "json": _json,
    "eml": _mail,
    "msg": _mail,
}
