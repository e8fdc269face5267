"""parse_document over the real evaluation documents and over bad inputs.

Uses the real unstructured partitioners, tesseract and LibreOffice (no fakes), offline: any
attempt to open an internet socket during these tests fails them.
"""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadDocument, UnsupportedType
from core.types import ParsedDocument
from ingest import office
from ingest.parse import parse_document

DOCS = Path(__file__).resolve().parents[3] / "shared" / "eval" / "docs"


def _manifest() -> list[dict[str, Any]]:
    lines = (DOCS / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Record (and refuse) any outbound IP connection or DNS lookup: telemetry and model
    downloads run in background threads that swallow errors, so check the record after."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect {address!r}")
            raise OSError("network disabled in tests")
        return real_connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(f"getaddrinfo {host!r}")
        raise socket.gaierror("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield
    assert not attempts, f"network access attempted during parsing: {attempts}"


@cache
def _parse(name: str) -> ParsedDocument | BadDocument:
    try:
        return parse_document((DOCS / name).read_bytes(), name)
    except BadDocument as exc:
        return exc


def parsed(name: str) -> ParsedDocument:
    result = _parse(name)
    assert isinstance(result, ParsedDocument), f"{name}: {result}"
    return result


def text_of(doc: ParsedDocument) -> str:
    return "\n".join(e.text for e in doc.elements)


# Files that must fail, and the reason they must give.
MUST_FAIL = {
    "password.pdf": "password-protected; remove the password and upload again",
    "password_protected.xlsx": "password-protected; remove the password and upload again",
    "empty.txt": "file is empty",
    "empty.eml": "no text could be extracted",
}

# Edge files that are legitimately readable, and something they must contain.
EDGE_BUT_READABLE = {
    "copy-protected.pdf": "LayoutParser",  # only copy/print restricted: the text is readable
    "invalid-pdf-structure-pdfminer-one-page.pdf": "Cybersecurity",
    "rotated-page-90.pdf": "Hello World Test Text",  # whole line, not scattered letters
    "layout-parser-paper-with-empty-pages.pdf": "LayoutParser",
    "fake-power-point-malformed.pptx": "Test Slide",
    "stanley-cups-utf-16.csv": "Maple Leafs | TOR | 13",
    "fake-html-cp1252.html": "Die schöne Frau",
    "umlauts-non-utf8.md": "können",
    "fake-text-utf-16.txt": "This is a test document to use for unit tests.",
    "DA-1p.heic": "Abomination",  # HEIC is decoded (pi-heif) and OCR'd
}


@pytest.mark.parametrize("entry", _manifest(), ids=lambda e: e["file"])
def test_every_eval_document(entry: dict[str, Any]) -> None:
    name = entry["file"]
    result = _parse(name)
    if name in MUST_FAIL:
        assert isinstance(result, BadDocument), f"{name} should fail"
        assert MUST_FAIL[name] in result.reason
        return
    assert isinstance(result, ParsedDocument), f"{name} failed: {result}"
    assert result.elements, name
    assert all(e.text.strip() for e in result.elements)
    assert result.strategy
    if name in EDGE_BUT_READABLE:
        assert EDGE_BUT_READABLE[name] in text_of(result)
    if name.endswith(".pdf"):
        assert result.page_count and result.page_count >= 1
        assert all(
            e.page is not None and 1 <= e.page <= result.page_count for e in result.elements
        ), "every PDF element has a page"
    if entry["kind"].startswith("image"):
        assert result.strategy == "ocr_only"
        assert {e.page for e in result.elements} == {1}


# -- content ----------------------------------------------------------------------------------


def test_pdf_text_layer_uses_fast_and_keeps_pages() -> None:
    doc = parsed("layout-parser-paper-fast.pdf")
    assert doc.strategy == "fast" and doc.page_count == 2
    assert {e.page for e in doc.elements} == {1, 2}
    assert doc.media_type == "application/pdf"


def test_pdf_without_text_layer_is_ocred() -> None:
    doc = parsed("loremipsum-flat.pdf")
    assert doc.strategy == "ocr_only"
    assert "Lorem ipsum dolor sit amet" in text_of(doc)
    assert all(e.metadata.get("ocr") for e in doc.elements)


def test_pdf_with_garbled_ocr_layer_is_read_again() -> None:
    doc = parsed("pdf-with-ocr-text.pdf")
    assert doc.strategy == "ocr_only"
    assert "accepting membership" in text_of(doc)
    assert any("garbled" in w for w in doc.warnings)


def test_pdf_empty_pages_are_just_empty() -> None:
    doc = parsed("layout-parser-paper-with-empty-pages.pdf")
    assert doc.page_count == 4
    assert {e.page for e in doc.elements} == {1, 4}


def test_rotated_page_reads_as_lines() -> None:
    doc = parsed("rotated-page-90.pdf")
    assert [e.text for e in doc.elements] == [
        "Hello World Test Text",
        "Second line of text here",
        "Rotated page fixture",
    ]


def test_docx_tables_keep_header_row_and_html() -> None:
    doc = parsed("docx-tables.docx")
    tables = [e for e in doc.elements if e.category == "Table"]
    assert tables[0].text.splitlines()[0] == "Header Col 1 | Header Col 2"
    assert tables[0].html and "<table>" in tables[0].html


def test_chinese_docx_with_chinese_filename() -> None:
    doc = parsed("1. 股东会-会议通知.docx")
    body = text_of(doc)
    assert "根据《公司法》及《公司章程》的规定" in body
    assert any(e.category == "Table" for e in doc.elements)


def test_xlsx_page_is_sheet_number() -> None:
    doc = parsed("2023-half-year-analyses-by-segment.xlsx")
    assert doc.page_count == 5
    assert {e.page for e in doc.elements} == {1, 2, 3, 4, 5}
    assert all(e.metadata.get("page_name") for e in doc.elements)
    zh = parsed("zh-test.xlsx")
    table = next(e for e in zh.elements if e.category == "Table")
    assert table.text.splitlines()[0] == "战争阶段 | 阶段描述 | 时间"


def test_pptx_slides_are_pages_and_titles_have_levels() -> None:
    doc = parsed("sample-presentation.pptx")
    assert doc.page_count == 4
    titles = [e for e in doc.elements if e.category == "Title"]
    assert titles[0].text == "Title Slide" and titles[0].level == 0


def test_markdown_titles_have_levels() -> None:
    doc = parsed("zh-test.md")
    assert [(e.text, e.level) for e in doc.elements if e.category == "Title"][:2] == [
        ("标题1", 2),
        ("标题2", 1),
    ]


def test_legacy_office_via_libreoffice() -> None:
    for name, needle in [
        ("simple.doc", "These are a few of my favorite things"),
        ("fake-power-point.ppt", "Adding a Bullet Slide"),
        ("tests-example.xls", "MC | Multiple Choice"),
    ]:
        doc = parsed(name)
        assert doc.strategy == "libreoffice+fast", name
        assert needle in text_of(doc), name
    assert parsed("tests-example.xls").page_count == 3


def test_html_scripts_and_styles_are_dropped() -> None:
    body = text_of(parsed("example-with-scripts.html"))
    for noise in ("switchTo5x", "GoogleAnalyticsObject", "jQuery", "@import"):
        assert noise not in body


def test_email_subject_body_and_attachment() -> None:
    doc = parsed("fake-email-attachment.eml")
    assert doc.elements[0].category == "Title"
    assert doc.elements[0].text == "Fake email with attachment"
    assert any(e.metadata.get("attachment") == "fake-attachment.txt" for e in doc.elements)
    msg = parsed("fake-email-attachment.msg")
    assert "Here's the attachments!" in text_of(msg)
    assert any(e.metadata.get("attachment") for e in msg.elements)


def test_email_inline_images_are_not_ocred() -> None:
    doc = parsed("email-no-utf8-2014-03-17.111517.eml")
    assert "password for your Google Account" in text_of(doc)
    assert not any(e.metadata.get("attachment") for e in doc.elements)


def test_chinese_ocr_is_readable_and_unspaced() -> None:
    doc = parsed("chi_sim_image.jpeg")
    body = text_of(doc)
    assert "肌肤" in body and "适用人群" in body
    assert "肌 肤" not in body


def test_scanned_table_page_ocr() -> None:
    body = text_of(parsed("maoxuan_intro_with_table.jpg"))
    assert "Mao Zedong" in body and "Sino-Japanese" in body


# -- bad inputs -------------------------------------------------------------------------------


def test_empty_file() -> None:
    with pytest.raises(BadDocument, match="file is empty"):
        parse_document(b"", "nothing.pdf")


def test_whitespace_only_text() -> None:
    with pytest.raises(BadDocument, match="no text could be extracted"):
        parse_document(b"  \n\t\n  ", "blank.txt")


def test_unsupported_types() -> None:
    with pytest.raises(UnsupportedType, match="not a supported document type"):
        parse_document(b"\x7fELF\x02\x01\x01" + b"\x00" * 200, "tool.pdf")
    with pytest.raises(UnsupportedType, match="zip archive"):
        buf = io.BytesIO()
        import zipfile

        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.txt", "hello")
        parse_document(buf.getvalue(), "library.zip")


def test_truncated_pdf_is_corrupt() -> None:
    data = (DOCS / "layout-parser-paper-fast.pdf").read_bytes()
    with pytest.raises(BadDocument, match=r"could not be read: looks corrupt \("):
        parse_document(data[: len(data) // 2], "half.pdf")


def test_truncated_docx_is_corrupt() -> None:
    data = (DOCS / "handbook-1p.docx").read_bytes()
    with pytest.raises(BadDocument, match=r"could not be read: looks corrupt \("):
        parse_document(data[: len(data) // 2], "half.docx")


def test_password_protected_pdf_made_here() -> None:
    import pypdf

    reader = pypdf.PdfReader(DOCS / "layout-parser-paper-fast.pdf")
    writer = pypdf.PdfWriter(clone_from=reader)
    writer.encrypt(user_password="secret", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(BadDocument, match="password-protected; remove the password"):
        parse_document(buf.getvalue(), "secret.pdf")


def _encrypt_ooxml(path: Path) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(path.read_bytes())).encrypt("secret", out)
    return out.getvalue()


@pytest.mark.parametrize("name", ["handbook-1p.docx", "vodafone.xlsx", "sample-presentation.pptx"])
def test_password_protected_ooxml(name: str) -> None:
    data = _encrypt_ooxml(DOCS / name)
    with pytest.raises(BadDocument, match="password-protected; remove the password"):
        parse_document(data, name)


def test_extension_that_lies_png_named_pdf() -> None:
    data = (DOCS / "chi_sim_image.jpeg").read_bytes()
    doc = parse_document(data, "invoice.pdf")
    assert doc.media_type == "image/jpeg" and doc.strategy == "ocr_only"
    assert "the file name says .pdf but the content is JPG" in doc.warnings[0]


def test_extension_that_lies_text_named_docx() -> None:
    doc = parse_document(b"Meeting notes\n\nWe agreed to ship on Friday.\n", "notes.docx")
    assert doc.media_type == "text/plain"
    assert "ship on Friday" in text_of(doc)
    assert ".docx" in doc.warnings[0]


def test_chinese_filename_and_gbk_text() -> None:
    text = "知识库说明\n\n本系统在企业内部离线运行，所有数据不出内网。\n"
    doc = parse_document(text.encode("gb18030"), "说明文档.txt")
    assert "所有数据不出内网" in text_of(doc)


def test_json_rendered_as_paths() -> None:
    data = {"company": {"name": "知库", "staff": [{"name": "Li", "role": "admin"}]}, "ok": True}
    doc = parse_document(json.dumps(data, ensure_ascii=False).encode(), "config.json")
    body = text_of(doc)
    assert "company.name: 知库" in body
    assert "company.staff[0].role: admin" in body
    assert "ok: true" in body


def test_big_and_deep_json_do_not_crash() -> None:
    big = json.dumps([{"id": i, "v": "x" * 20} for i in range(150_000)]).encode()
    start = time.monotonic()
    doc = parse_document(big, "big.json")
    assert time.monotonic() - start < 30
    assert doc.elements and any("more than" in w for w in doc.warnings)
    assert len(doc.elements) < 5000  # small records share elements
    with pytest.raises(BadDocument, match="nested too deeply"):
        parse_document(b"[" * 100_000 + b"]" * 100_000, "deep.json")
    lines = b'{"a": 1}\n{"a": 2}\n'
    assert "[1].a: 2" in text_of(parse_document(lines, "rows.jsonl"))


def test_unexpected_errors_become_bad_document(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest import parse as parse_mod

    def boom(data: bytes, kind: str, opts: Any) -> Any:
        raise RuntimeError("partitioner exploded")

    monkeypatch.setitem(parse_mod._HANDLERS, "txt", boom)
    with pytest.raises(BadDocument, match="RuntimeError: partitioner exploded"):
        parse_document(b"some text", "a.txt")


def test_ocr_noise_is_rejected() -> None:
    import random

    from PIL import Image

    rnd = random.Random(7)
    img = Image.new("L", (600, 300))
    img.putdata([rnd.choice((0, 255)) for _ in range(600 * 300)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with pytest.raises(BadDocument, match="no text could be extracted"):
        parse_document(buf.getvalue(), "noise.png")


def _text_image(text: str) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (1400, 200), "white")
    ImageDraw.Draw(img).text((40, 60), text, fill="black", font=ImageFont.load_default(size=48))
    return img


def test_multi_frame_tiff_every_frame_is_a_page_and_pages_are_capped() -> None:
    frames = [_text_image(f"Quarterly report page {n} revenue grew") for n in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    doc = parse_document(buf.getvalue(), "scan.tiff", max_ocr_pages=2)
    assert doc.page_count == 3
    assert {e.page for e in doc.elements} == {1, 2}
    assert "page 2 revenue" in text_of(doc)
    assert any("only the first 2 of 3" in w for w in doc.warnings)


def test_without_tesseract_scans_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find
    with pytest.raises(
        BadDocument, match="scanned document, OCR not available: install tesseract-ocr"
    ):
        parse_document((DOCS / "loremipsum-flat.pdf").read_bytes(), "scan.pdf")
    with pytest.raises(BadDocument, match="OCR not available: install tesseract-ocr"):
        parse_document((DOCS / "chi_sim_image.jpeg").read_bytes(), "photo.jpg")
    # a PDF with a text layer needs no OCR
    assert parse_document((DOCS / "layout-parser-paper-fast.pdf").read_bytes(), "a.pdf").elements


def test_libreoffice_timeout_is_enforced() -> None:
    data = (DOCS / "simple.doc").read_bytes()
    start = time.monotonic()
    with pytest.raises(BadDocument, match="did not finish converting"):
        office.convert_with_libreoffice(data, "doc", "docx", timeout=0.5)
    assert time.monotonic() - start < 20


def test_hi_res_is_refused() -> None:
    with pytest.raises(ValueError, match="pdf_strategy"):
        parse_document(b"%PDF-1.4", "a.pdf", pdf_strategy="hi_res")


def test_tsv_and_large_plain_text() -> None:
    tsv = "名称\t数量\n苹果\t3\n香蕉\t5\n".encode()
    doc = parse_document(tsv, "库存.tsv")
    assert doc.elements[0].category == "Table"
    assert doc.elements[0].text == "名称 | 数量\n苹果 | 3\n香蕉 | 5"
    big = ("Quarterly figures were stable across all regions.\n\n" * 25_000).encode()
    start = time.monotonic()
    doc = parse_document(big, "dump.txt")
    assert time.monotonic() - start < 30
    assert any("large text file" in w for w in doc.warnings)
    assert all(e.text for e in doc.elements)


def test_offline_setup_is_idempotent_and_patches_spacy() -> None:
    import os

    from ingest import offline

    offline.ensure_offline()
    offline.ensure_offline()
    from unstructured.nlp import tokenize

    assert tokenize._load_spacy_model is offline.load_spacy_model
    for var in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert os.environ[var] == "1"
    with pytest.raises(offline.OfflineSetupError):
        tokenize._install_spacy_model()
    assert tokenize.pos_tag("The report was approved.")  # the bundled model answers


def test_docx_zip_bomb_is_refused() -> None:
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", b" " * (64 * 1024**2))
    with pytest.raises(BadDocument, match="zip bomb"):
        parse_document(buf.getvalue(), "bomb.docx")


def test_control_characters_never_reach_the_elements() -> None:
    """A NUL inside a document's text would make PostgreSQL refuse the chunk."""
    doc = parse_document(
        b'{"title": "Quarterly report", "note": "Revenue grew\\u0000 by twelve percent\\u0007"}',
        "report.json",
    )
    text = "\n".join(e.text for e in doc.elements)
    assert "Revenue grew by twelve percent" in text
    assert not any(ord(c) < 32 and c not in "\t\n\r" for c in text)
