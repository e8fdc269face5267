"""Write small, valid PDFs in tests: pages of given sizes with lines of text (Helvetica, a real
text layer that pdfminer and unstructured read) and optionally a filled black rectangle.

No PDF library needed: the objects, the cross-reference table and its offsets are written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Page:
    width: int = 612
    height: int = 792
    lines: list[str] = field(default_factory=list)
    # (x, y, w, h) in points from the lower left corner, filled black
    box: tuple[int, int, int, int] | None = None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[Page]) -> bytes:
    objects: list[bytes] = []  # object n is objects[n - 1]
    font = 3 + 2 * len(pages)  # after catalog, pages tree, and a (page, content) pair each
    kids = []
    for i, page in enumerate(pages):
        page_obj, content_obj = 3 + 2 * i, 4 + 2 * i
        kids.append(f"{page_obj} 0 R")
        ops = []
        if page.box is not None:
            x, y, w, h = page.box
            ops.append(f"0 0 0 rg {x} {y} {w} {h} re f")
        if page.lines:
            ops.append(f"BT /F1 11 Tf 14 TL 50 {page.height - 60} Td")
            ops += [f"({_escape(line)}) Tj T*" for line in page.lines]
            ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {page.width} {page.height}] "
            f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {content_obj} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    head = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode(),
    ]
    tail = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    objects = head + objects + tail
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:16]
    assert png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
