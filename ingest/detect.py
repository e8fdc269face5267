"""What kind of document is this? Content sniffing reconciled with the file name.

`detect_type` trusts the bytes over the extension: a `.pdf` that is really a PNG is a `png`,
a `.docx` that is really plain text is a `txt`. It refuses (``UnsupportedType``) content that is
not a document we can read, whatever its name says. Pass at least the first 64 KiB; passing the
whole file lets zip and OLE2 containers (DOCX/XLSX/PPTX/ODT/EPUB, DOC/XLS/PPT/MSG) be told apart
by their member/stream names rather than by a scan of the head.

`decode_text` turns the bytes of a text format into `str`, guessing the encoding.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import struct
import zipfile
from pathlib import PurePath

from core.errors import BadDocument, UnsupportedType

# kind -> MIME type. The keys are the kinds `detect_type` can return.
MEDIA_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "doc": "application/msword",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "ppt": "application/vnd.ms-powerpoint",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xls": "application/vnd.ms-excel",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "rtf": "application/rtf",
    "epub": "application/epub+zip",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "html": "text/html",
    "md": "text/markdown",
    "rst": "text/x-rst",
    "org": "text/x-org",
    "txt": "text/plain",
    "json": "application/json",
    "eml": "message/rfc822",
    "msg": "application/vnd.ms-outlook",
    "png": "image/png",
    "jpg": "image/jpeg",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "zip": "application/zip",
}
SUPPORTED_KINDS: frozenset[str] = frozenset(MEDIA_TYPES)
IMAGE_KINDS = frozenset({"png", "jpg", "tiff", "bmp", "gif", "webp", "heic"})
TEXT_KINDS = frozenset({"csv", "tsv", "html", "md", "rst", "org", "txt", "json", "eml"})
OOXML_KINDS = frozenset({"docx", "xlsx", "pptx"})
OLE_KINDS = frozenset({"doc", "xls", "ppt", "msg"})

# extension (lower case, no dot) -> kind
_EXTENSIONS: dict[str, str] = {
    **{k: k for k in MEDIA_TYPES},
    "docm": "docx",
    "dotx": "docx",
    "dot": "doc",
    "wps": "doc",
    "xlsm": "xlsx",
    "xltx": "xlsx",
    "xlt": "xls",
    "et": "xls",
    "pptm": "pptx",
    "potx": "pptx",
    "ppsx": "pptx",
    "pps": "ppt",
    "pot": "ppt",
    "dps": "ppt",
    "htm": "html",
    "xhtml": "html",
    "shtml": "html",
    "markdown": "md",
    "mdown": "md",
    "mkd": "md",
    "text": "txt",
    "log": "txt",
    "asc": "txt",
    "jsonl": "json",
    "ndjson": "json",
    "geojson": "json",
    "jpeg": "jpg",
    "jpe": "jpg",
    "jfif": "jpg",
    "tif": "tiff",
    "heif": "heic",
    "dib": "bmp",
    "tab": "tsv",
    "mht": "eml",
    "mhtml": "eml",
}

# Things people upload that we recognise but cannot read, by magic number.
_UNSUPPORTED_MAGIC: list[tuple[bytes, str]] = [
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Java class file or Mach-O binary"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg audio/video file"),
    (b"fLaC", "a FLAC audio file"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"%!PS", "a PostScript file"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"wOFF", "a web font"),
    (b"\x00asm", "a WebAssembly module"),
]

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEAD_TEXT_BYTES = 64 * 1024


def supported_kinds_text() -> str:
    """The human list of supported kinds used in error messages."""
    return ", ".join(sorted(SUPPORTED_KINDS))


def extension_kind(filename: str) -> str | None:
    """The kind the file name claims, or None when the extension means nothing to us."""
    suffix = PurePath(filename).suffix.lower().lstrip(".")
    return _EXTENSIONS.get(suffix) if suffix else None


def detect_type(data_head: bytes, filename: str) -> str:
    """Return the canonical kind of a document (a key of `MEDIA_TYPES`).

    Raises `BadDocument` for an empty file and `UnsupportedType` for content we can't read.
    """
    if not data_head:
        raise BadDocument("file is empty")
    claimed = extension_kind(filename)
    name = PurePath(filename).name or "the file"
    sniffed = _sniff_binary(data_head, claimed)
    if sniffed is not None:
        return sniffed
    unsupported = _sniff_unsupported(data_head)
    if unsupported is not None:
        raise UnsupportedType(
            f"{name} is {unsupported}, not a supported document type; "
            f"supported: {supported_kinds_text()}"
        )
    if _looks_like_text(data_head):
        return _sniff_text_kind(data_head, claimed)
    if claimed is None:
        raise UnsupportedType(
            f"{name} is not a supported document type (unrecognised binary content); "
            f"supported: {supported_kinds_text()}"
        )
    raise UnsupportedType(
        f"{name} is named .{PurePath(filename).suffix.lower().lstrip('.')} but its content is "
        f"not a {claimed.upper()} file (unrecognised binary data); it may be damaged or "
        f"mislabelled — save it again in a supported format ({supported_kinds_text()})"
    )


# -- binary formats ---------------------------------------------------------------------------


def _sniff_binary(head: bytes, claimed: str | None) -> str | None:
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _sniff_zip(head, claimed)
    if head.startswith(_OLE_MAGIC):
        return _sniff_ole(head, claimed)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 14 and _plausible_bmp(head):
        return "bmp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (
        b"heic",
        b"heix",
        b"heif",
        b"mif1",
        b"msf1",
        b"hevc",
        b"heim",
        b"heis",
    ):
        return "heic"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if claimed in (None, "pdf") and b"%PDF-" in head[:1024] and not _sniff_unsupported(head):
        return "pdf"  # readers accept junk (e.g. a mail header) before the PDF header
    return None


def _plausible_bmp(head: bytes) -> bool:
    # BITMAPFILEHEADER: reserved fields are zero, DIB header size is one of the known sizes.
    reserved = struct.unpack_from("<I", head, 6)[0]
    dib_size = struct.unpack_from("<I", head, 14)[0] if len(head) >= 18 else 40
    return reserved == 0 and dib_size in (12, 40, 52, 56, 64, 108, 124)


def _zip_names(head: bytes) -> tuple[list[str], bytes | None]:
    """Member names and the `mimetype` member's content, from a whole zip or just its head."""
    try:
        with zipfile.ZipFile(io.BytesIO(head)) as zf:
            names = zf.namelist()
            mimetype = None
            if "mimetype" in names and zf.getinfo("mimetype").file_size < 200:
                mimetype = zf.read("mimetype")
            return names, mimetype
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError):
        pass
    # Only the head: walk the local file headers we have.
    names, mimetype, pos = [], None, 0
    while pos + 30 <= len(head) and head[pos : pos + 4] == b"PK\x03\x04":
        (_, _, method, _, _, _, csize, _, nlen, xlen) = struct.unpack_from(
            "<HHHHHIIIHH", head, pos + 4
        )
        name = head[pos + 30 : pos + 30 + nlen].decode("utf-8", "replace")
        names.append(name)
        data_start = pos + 30 + nlen + xlen
        if name == "mimetype" and method == 0:
            mimetype = head[data_start : data_start + csize]
        if csize == 0:  # sizes are in a data descriptor; we can't walk further
            break
        pos = data_start + csize
    if len(names) <= 1:  # a big first member: fall back to a plain scan for well-known names
        for marker in (b"word/", b"xl/", b"ppt/", b"META-INF/container.xml"):
            if marker in head:
                names.append(marker.decode())
    return names, mimetype


def _sniff_zip(head: bytes, claimed: str | None) -> str:
    names, mimetype = _zip_names(head)
    if mimetype:
        mt = mimetype.strip().decode("ascii", "replace")
        odf = {
            "application/epub+zip": "epub",
            "application/vnd.oasis.opendocument.text": "odt",
            "application/vnd.oasis.opendocument.spreadsheet": "ods",
            "application/vnd.oasis.opendocument.presentation": "odp",
        }
        if mt in odf:
            return odf[mt]
    if any(n.startswith("word/") for n in names):
        return "docx"
    if any(n.startswith("xl/") for n in names):
        return "xlsx"
    if any(n.startswith("ppt/") for n in names):
        return "pptx"
    if "META-INF/container.xml" in names and claimed == "epub":
        return "epub"
    if claimed in OOXML_KINDS and "[Content_Types].xml" in names:
        return claimed  # an OOXML file whose parts we could not see in the head
    return "zip"


def _ole_streams(head: bytes) -> set[str] | None:
    try:
        import olefile

        with olefile.OleFileIO(io.BytesIO(head)) as ole:
            return {"/".join(parts) for parts in ole.listdir(streams=True, storages=True)}
    except Exception:  # only the head, or a damaged container
        return None


def _sniff_ole(head: bytes, claimed: str | None) -> str:
    streams = _ole_streams(head)
    if streams is None:
        # Only a head: look for UTF-16 stream names in the directory sectors we have.
        def has(stream: str) -> bool:
            return stream.encode("utf-16-le") in head

        streams = {
            s
            for s in (
                "WordDocument",
                "Workbook",
                "Book",
                "PowerPoint Document",
                "EncryptedPackage",
                "__substg1.0_",
            )
            if has(s)
        }
        streams |= {"__substg1.0_x"} if "__substg1.0_" in streams else set()
    tops = {s.split("/")[0] for s in streams}
    if "EncryptedPackage" in tops:
        # An encrypted OOXML file lives in an OLE2 envelope; only the name says which one.
        if claimed in OOXML_KINDS:
            return claimed
        raise BadDocument("password-protected Office file; remove the password and upload again")
    if "WordDocument" in tops:
        return "doc"
    if "Workbook" in tops or "Book" in tops:
        return "xls"
    if "PowerPoint Document" in tops:
        return "ppt"
    if any(t.startswith("__substg1.0_") for t in tops):
        return "msg"
    if claimed in OLE_KINDS:
        return claimed
    raise UnsupportedType(
        "this is an OLE2 compound file but not a Word, Excel, PowerPoint or Outlook document; "
        f"supported: {supported_kinds_text()}"
    )


def _sniff_unsupported(head: bytes) -> str | None:
    for magic, what in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            if magic == b"MZ" and len(head) > 0x40 and not _is_pe(head):
                continue
            return what
    if head[4:8] == b"ftyp":
        return "an AVIF image" if head[8:12] in (b"avif", b"avis") else "an audio/video file"
    if head[:4] == b"RIFF":
        return "an audio/video file (RIFF)"
    return None


def _is_pe(head: bytes) -> bool:
    offset = struct.unpack_from("<I", head, 0x3C)[0]
    return head[offset : offset + 4] == b"PE\x00\x00" if offset + 4 <= len(head) else True


# -- text formats -----------------------------------------------------------------------------


def _utf16_without_bom(head: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the NUL pattern says so (mostly-ASCII UTF-16 text)."""
    sample = head[:4096]
    if len(sample) < 4:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) / 2
    if odd_nuls > 0.3 * half and even_nuls < 0.05 * half:
        return "utf-16-le"
    if even_nuls > 0.3 * half and odd_nuls < 0.05 * half:
        return "utf-16-be"
    return None


_BOMS: list[tuple[bytes, str]] = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


def detect_encoding(data: bytes) -> str:
    """Best guess of the text encoding: BOM, UTF-16 pattern, UTF-8, GB18030, else cp1252."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return enc
    utf16 = _utf16_without_bom(data)
    if utf16 is not None:
        return utf16
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut off at the end of a head is still UTF-8.
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
    if _looks_like_gb18030(data):
        return "gb18030"
    return "cp1252"


def _looks_like_gb18030(data: bytes) -> bool:
    """Chinese text in GBK/GB18030: it decodes, and nearly all of it is common GB2312 text.

    Latin-1/cp1252 text with accents often *decodes* as GB18030 (almost any byte pair does), so
    decodability alone proves nothing; GB2312's common range (both bytes >= 0xA1) does.
    """
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:
            return False
        text = data[: exc.start].decode("gb18030", "ignore")
    wide = [ch for ch in text if ord(ch) > 0x7F]
    if not wide:
        return False
    common = sum(1 for ch in wide if _encodes_in_gb2312(ch))
    return common / len(wide) >= 0.9


def _encodes_in_gb2312(ch: str) -> bool:
    try:
        ch.encode("gb2312")
        return True
    except UnicodeEncodeError:
        return False


def _cp1252_lenient(exc: UnicodeError) -> tuple[str, int]:
    # cp1252 leaves 0x81, 0x8D, 0x8F, 0x90, 0x9D undefined; map them as Latin-1 does.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("zhiku-cp1252", _cp1252_lenient)


def decode_text(data: bytes) -> str:
    """Decode text bytes to `str` (BOM stripped, newlines left as they are)."""
    enc = detect_encoding(data)
    for bom, bom_enc in _BOMS:
        if enc == bom_enc and data.startswith(bom):
            data = data[len(bom) :]
            break
    if enc == "cp1252":
        return data.decode("cp1252", "zhiku-cp1252")
    return data.decode(enc, "replace")


def _looks_like_text(head: bytes) -> bool:
    sample = head[:_HEAD_TEXT_BYTES]
    enc = detect_encoding(sample)
    if enc.startswith(("utf-16", "utf-32")):
        text = sample.decode(enc, "replace")
    else:
        if b"\x00" in sample:
            return False
        text = (
            sample.decode(enc, "replace")
            if enc != "cp1252"
            else sample.decode("cp1252", "zhiku-cp1252")
        )
    if not text:
        return False
    bad = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b") or ch == "\ufffd")
    if enc.replace("_", "-").lower() in ("utf-8", "utf-8-sig", "ascii"):
        # U+FFFD written into a UTF-8 file (text that went through a lossy conversion once)
        # is text, not a decoding failure.
        bad -= sample.count("\ufffd".encode())
    return bad / len(text) < 0.02


_EMAIL_HEADER = re.compile(
    r"^(received|from|to|subject|date|message-id|mime-version|return-path|delivered-to|"
    r"x-[\w-]+|content-type):[ \t]",
    re.IGNORECASE,
)


def _sniff_text_kind(head: bytes, claimed: str | None) -> str:
    text = decode_text(head[:_HEAD_TEXT_BYTES]).lstrip("\ufeff \t\r\n")
    lower = text[:2048].lower()
    if claimed in TEXT_KINDS:
        return claimed
    # The name says nothing useful, or it claims a binary format: trust the content.
    if lower.startswith(("<!doctype html", "<html")) or re.search(
        r"<(html|body|head)[\s>]", lower[:1024]
    ):
        return "html"
    if _looks_like_email(text):
        return "eml"
    if text[:1] in "{[" and _parses_as_json(head):
        return "json"
    if claimed == "rtf":
        return "txt"  # an .rtf without the {\rtf header is just text
    return "txt"


def _looks_like_email(text: str) -> bool:
    lines = text.splitlines()[:40]
    if lines and lines[0].startswith("From "):  # mbox separator line
        lines = lines[1:]
    headers = sum(1 for line in lines if _EMAIL_HEADER.match(line))
    return headers >= 2 and bool(lines) and bool(_EMAIL_HEADER.match(lines[0]))


def _parses_as_json(head: bytes) -> bool:
    text = decode_text(head)
    try:
        json.loads(text)
        return True
    except ValueError:
        pass
    # Possibly JSON Lines, or a truncated head: accept when the first line is a JSON value.
    first = text.split("\n", 1)[0].strip()
    try:
        json.loads(first)
        return len(first) > 1
    except ValueError:
        return False
