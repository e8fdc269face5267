"""Type detection and text decoding (pure, fast)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from core.errors import BadDocument, UnsupportedType
from ingest.detect import MEDIA_TYPES, decode_text, detect_encoding, detect_type

DOCS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "docs"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _zip(members: dict[str, bytes], first: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if first:
            zf.writestr(first, members.pop(first), compress_type=zipfile.ZIP_STORED)
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _manifest() -> list[dict[str, str]]:
    lines = (DOCS / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# What each eval file really is (content, not just its name).
EXPECTED_KIND = {
    "docx": "docx",
    "xlsx": "xlsx",
    "pptx": "pptx",
    "doc": "doc",
    "ppt": "ppt",
    "xls": "xls",
    "pdf": "pdf",
    "odt": "odt",
    "rtf": "rtf",
    "epub": "epub",
    "csv": "csv",
    "html": "html",
    "md": "md",
    "txt": "txt",
    "eml": "eml",
    "msg": "msg",
    "jpeg": "jpg",
    "jpg": "jpg",
    "tiff": "tiff",
    "heic": "heic",
}


@pytest.mark.parametrize("entry", _manifest(), ids=lambda e: e["file"])
def test_eval_docs_detected_as_their_real_type(entry: dict[str, str]) -> None:
    path = DOCS / entry["file"]
    data = path.read_bytes()
    if not data:
        with pytest.raises(BadDocument, match="file is empty"):
            detect_type(data, path.name)
        return
    kind = detect_type(data, path.name)
    assert kind == EXPECTED_KIND[path.suffix.lower().lstrip(".")]
    assert kind in MEDIA_TYPES
    # the first 64 KiB are enough for every one of them
    assert detect_type(data[:65536], path.name) == kind


def test_empty_file() -> None:
    with pytest.raises(BadDocument, match="file is empty"):
        detect_type(b"", "x.pdf")


@pytest.mark.parametrize(
    ("data", "name", "what"),
    [
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "report.pdf", "ELF executable"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "tool", "ELF executable"),
        (
            b"MZ\x90\x00" + b"\x00" * 56 + b"\x80\x00\x00\x00" + b"\x00" * 64 + b"PE\x00\x00",
            "setup.exe",
            "Windows executable",
        ),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "data.docx", "gzip"),
        (b"Rar!\x1a\x07\x00" + b"\x00" * 20, "x.rar", "RAR"),
    ],
)
def test_unsupported_binaries_rejected(data: bytes, name: str, what: str) -> None:
    with pytest.raises(UnsupportedType) as exc:
        detect_type(data, name)
    assert what in exc.value.reason
    assert "not a supported document type" in exc.value.reason
    assert "supported:" in exc.value.reason and "pdf" in exc.value.reason


def test_unknown_binary_with_document_extension_is_rejected_with_reason() -> None:
    junk = bytes(range(256)) * 8
    with pytest.raises(UnsupportedType) as exc:
        detect_type(junk, "contract.pdf")
    assert ".pdf" in exc.value.reason and "not a PDF" in exc.value.reason


def test_pdf_that_is_really_a_png() -> None:
    assert detect_type(PNG, "scan.pdf") == "png"


def test_docx_that_is_really_plain_text() -> None:
    assert detect_type(b"Just some notes.\nSecond line.\n", "notes.docx") == "txt"


def test_text_content_sniffed_when_extension_lies() -> None:
    assert detect_type(b"<!DOCTYPE html><html><body>x</body></html>", "page.pdf") == "html"
    assert detect_type(b'{"a": [1, 2, 3]}', "data.bin") == "json"
    eml = b"From: a@b.c\nTo: d@e.f\nSubject: hi\n\nbody\n"
    assert detect_type(eml, "mail.doc") == "eml"


def test_extension_aliases() -> None:
    text = b"hello world\n"
    assert detect_type(text, "README.markdown") == "md"
    assert detect_type(text, "page.htm") == "html"
    assert detect_type(text, "rows.tsv") == "tsv"
    assert detect_type(b"\xff\xd8\xff\xe0" + b"\x00" * 32, "photo.jpeg") == "jpg"


def test_zip_family() -> None:
    ooxml = {"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"}
    assert detect_type(_zip(dict(ooxml)), "a.docx") == "docx"
    assert detect_type(_zip(dict(ooxml)), "a.zip") == "docx"  # content wins
    xl = {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"}
    assert detect_type(_zip(xl), "book.xlsx") == "xlsx"
    odt = {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}
    assert detect_type(_zip(odt, first="mimetype"), "a.odt") == "odt"
    epub = {"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<c/>"}
    assert detect_type(_zip(epub, first="mimetype"), "book.epub") == "epub"
    assert detect_type(_zip({"a.txt": b"x", "b/c.pdf": b"%PDF-1.4"}), "lib.zip") == "zip"


def test_encrypted_ooxml_envelope() -> None:
    data = (DOCS / "password_protected.xlsx").read_bytes()
    assert detect_type(data, "password_protected.xlsx") == "xlsx"
    with pytest.raises(BadDocument, match="password-protected"):
        detect_type(data, "mystery.bin")


def test_chinese_filename() -> None:
    data = (DOCS / "1. 股东会-会议通知.docx").read_bytes()
    assert detect_type(data, "1. 股东会-会议通知.docx") == "docx"
    assert detect_type("中文内容".encode(), "说明.txt") == "txt"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Grüße aus Köln — 15,50 €", "cp1252"),
        ("知识库是企业的记忆。我们的革命要有不领错路和一定成功的把握。", "gb18030"),
        ("知识库是企业的记忆。", "gbk"),
        ("plain ascii", "utf-8"),
        ("ünïcödé and 中文", "utf-8"),
        ("ünïcödé and 中文", "utf-8-sig"),
        ("Stanley Cups, Team, Location", "utf-16"),
        ("Stanley Cups, Team, Location", "utf-16-le"),
        ("Stanley Cups, Team, Location", "utf-16-be"),
    ],
)
def test_decode_text_round_trips(text: str, encoding: str) -> None:
    assert decode_text(text.encode(encoding)) == text


def test_decode_text_cp1252_umlauts_are_not_taken_for_chinese() -> None:
    assert detect_encoding("können äöüß".encode("cp1252")) == "cp1252"
    assert decode_text((DOCS / "umlauts-non-utf8.md").read_bytes()).count("können") == 2


def test_decode_text_never_fails() -> None:
    assert isinstance(decode_text(bytes(range(256))), str)
    assert decode_text(b"\x81\x8d\x8f\x90\x9d") == "\x81\x8d\x8f\x90\x9d"  # cp1252 holes


def test_utf8_text_with_literal_replacement_characters_is_text() -> None:
    # Text that went through a lossy conversion once: U+FFFD is written in it, as UTF-8.
    text = "\ufffd\ufffd宣言」倡議全球的資訊科技業者抵制第二屆世界互聯網大會。[39]"
    assert detect_type(text.encode("utf-8"), "news.txt") == "txt"
