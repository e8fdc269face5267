"""PDF: text layer first (`fast`), OCR (`ocr_only`) for pages without text, never `hi_res`."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field, replace

from core.errors import BadDocument
from core.types import ParsedElement
from ingest import elements as el_conv
from ingest import ocr
from ingest.office import PASSWORD_REASON
from ingest.quality import JUNK_THRESHOLD, SUSPECT_THRESHOLD, text_quality

log = logging.getLogger(__name__)

PDF_STRATEGIES = ("auto", "fast", "ocr_only")
SCAN_COVERAGE = 0.7  # an image covering this share of a page makes it a scanned page
OCR_SAMPLE_PAGES = 2  # pages OCR'd to judge whether OCR beats a dubious text layer
OCR_MARGIN = 0.05  # OCR must read this much better (quality score) to replace a text layer


@dataclass
class PdfInfo:
    page_count: int
    rotated: bool
    image_pages: set[int]  # pages with at least one image
    scan_pages: set[int]  # pages mostly covered by one image (a scan, maybe with an OCR layer)


@dataclass
class Outcome:
    elements: list[ParsedElement]
    strategy: str
    page_count: int | None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OcrLimits:
    languages: str = "eng+chi_sim"
    max_pages: int = 50
    time_budget: float = 900.0
    page_timeout: float = 120.0


def inspect_pdf(data: bytes) -> PdfInfo:
    """Open the PDF with PDFium: page count, rotation, pages with images; errors explained."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower():
            raise BadDocument(PASSWORD_REASON) from None
        if "security" in message.lower():
            raise BadDocument(
                "encrypted with an unsupported method; save an unencrypted copy and upload again"
            ) from None
        raise BadDocument(f"could not be read: looks corrupt ({message})") from None
    try:
        rotated = False
        image_pages: set[int] = set()
        scan_pages: set[int] = set()
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                rotated = rotated or page.get_rotation() != 0
                width, height = page.get_size()
                area = max(width * height, 1.0)
                for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
                    image_pages.add(index + 1)
                    left, bottom, right, top = image.get_bounds()
                    if (right - left) * (top - bottom) / area >= SCAN_COVERAGE:
                        scan_pages.add(index + 1)
                        break
            finally:
                page.close()
        return PdfInfo(len(pdf), rotated, image_pages, scan_pages)
    finally:
        pdf.close()


def _unrotated(data: bytes) -> bytes | None:
    """The PDF with /Rotate removed from every page, so pdfminer reads rotated pages' lines
    as lines (it applies /Rotate and then splits the now-vertical text into letters)."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            reader.decrypt("")
        writer = pypdf.PdfWriter(clone_from=reader)
        for page in writer.pages:
            if page.rotation:
                page.rotation = 0
        buf = io.BytesIO()
        writer.write(buf)
        return buf.getvalue()
    except Exception as exc:  # pypdf is stricter than PDFium; fall back to the original
        log.info("could not remove page rotation: %s", exc)
        return None


def _fast(data: bytes, info: PdfInfo, warnings: list[str]) -> list[ParsedElement]:
    from unstructured.partition.pdf import partition_pdf

    source = data
    if info.rotated:
        fixed = _unrotated(data)
        if fixed is None:
            warnings.append("rotated pages may read as scattered letters")
        else:
            source = fixed
    found = partition_pdf(file=io.BytesIO(source), strategy="fast")
    return el_conv.convert(found)


def _ocr(
    data: bytes, pages: list[int], limits: OcrLimits, what: str, warnings: list[str]
) -> ocr.OcrResult:
    languages, lang_warnings = ocr.require_tesseract(what, limits.languages)
    warnings.extend(lang_warnings)
    result = ocr.ocr_pages(
        ocr.pdf_page_images(data, pages[: limits.max_pages]),
        languages,
        time_budget=limits.time_budget,
        page_timeout=limits.page_timeout,
    )
    if len(pages) > limits.max_pages:
        result.warnings.append(
            f"only the first {limits.max_pages} of {len(pages)} pages needing OCR were read "
            "(OCR page limit)"
        )
    return result


def _text(elements: list[ParsedElement]) -> str:
    return "\n".join(e.text for e in elements)


def parse_pdf(data: bytes, *, strategy: str, limits: OcrLimits) -> Outcome:
    if strategy not in PDF_STRATEGIES:
        raise ValueError(
            f"pdf_strategy must be one of {PDF_STRATEGIES} (hi_res needs a model "
            f"hub and is never used), got {strategy!r}"
        )
    info = inspect_pdf(data)
    if info.page_count == 0:
        raise BadDocument("could not be read: the PDF has no pages")
    all_pages = list(range(1, info.page_count + 1))
    warnings: list[str] = []
    if strategy == "ocr_only":
        result = _ocr(data, all_pages, limits, "scanned document", warnings)
        return Outcome(result.elements, "ocr_only", info.page_count, warnings + result.warnings)

    fast = _fast(data, info, warnings)
    if strategy == "fast":
        return Outcome(fast, "fast", info.page_count, warnings)
    if not fast:
        result = _ocr(data, all_pages, limits, "scanned document", warnings)
        return Outcome(result.elements, "ocr_only", info.page_count, warnings + result.warnings)

    try:
        fast, strategy_used = _recheck_dubious_pages(data, fast, info, limits, warnings)
    except BadDocument as exc:  # OCR unusable here (e.g. no language data): keep the text
        warnings.append(f"OCR was not used: {exc.reason}")
        return Outcome(fast, "fast", info.page_count, warnings)
    try:
        return _fill_image_pages(data, fast, strategy_used, info, limits, warnings)
    except BadDocument as exc:
        warnings.append(f"image-only pages were not read: {exc.reason}")
        return Outcome(fast, strategy_used, info.page_count, warnings)


def _by_page(elements: list[ParsedElement]) -> dict[int, list[ParsedElement]]:
    pages: dict[int, list[ParsedElement]] = {}
    for e in elements:
        pages.setdefault(e.page or 0, []).append(e)
    return pages


def _recheck_dubious_pages(
    data: bytes, fast: list[ParsedElement], info: PdfInfo, limits: OcrLimits, warnings: list[str]
) -> tuple[list[ParsedElement], str]:
    """Scanned pages with an OCR text layer, and text layers that read as noise (broken font
    encodings, "(cid:123)" soup): OCR a sample and, if our OCR reads clearly better, OCR them
    all and use that instead."""
    by_page = _by_page(fast)
    if text_quality(_text(fast)).score < SUSPECT_THRESHOLD:
        dubious = sorted(p for p in by_page if p)
    else:
        dubious = sorted(p for p in info.scan_pages if p in by_page)
    if not dubious or ocr.tesseract_cmd() is None:
        return fast, "fast"
    sample = dubious[:OCR_SAMPLE_PAGES]
    trial = _ocr(data, sample, limits, "scanned document", [])
    layer = text_quality(_text([e for p in sample for e in by_page[p]]))
    ocr_q = text_quality(_text(trial.elements))
    if ocr_q.score < layer.score + OCR_MARGIN or ocr_q.good_chars < 0.5 * layer.good_chars:
        if layer.score < SUSPECT_THRESHOLD:
            warnings.append(
                f"the PDF's text looks partly garbled ({layer.score:.0%} readable);"
                f" OCR did not read it better ({ocr_q.score:.0%})"
            )
        return fast, "fast"
    rest = dubious[len(sample) :]
    ocr_elements = list(trial.elements)
    if rest:
        more = _ocr(
            data,
            rest,
            replace(limits, max_pages=max(limits.max_pages - len(sample), 0)),
            "scanned document",
            warnings,
        )
        warnings.extend(more.warnings)
        ocr_elements += more.elements
    done = {e.page for e in ocr_elements} | set(sample)
    warnings.append(
        f"the PDF's embedded text looked garbled on {len(done)} page(s) "
        f"({layer.score:.0%} readable); used OCR there instead "
        f"({ocr_q.score:.0%} readable)"
    )
    kept = [e for e in fast if e.page not in done]
    merged = sorted(kept + ocr_elements, key=lambda e: e.page or 0)
    return merged, "ocr_only" if not kept else "fast+ocr_only"


def _fill_image_pages(
    data: bytes,
    fast: list[ParsedElement],
    strategy: str,
    info: PdfInfo,
    limits: OcrLimits,
    warnings: list[str],
) -> Outcome:
    """OCR pages that have images but no text (scans inside an otherwise digital PDF)."""
    with_text = {e.page for e in fast if e.page is not None}
    missing = sorted(p for p in info.image_pages if p not in with_text)
    if not missing:
        return Outcome(fast, strategy, info.page_count, warnings)
    if ocr.tesseract_cmd() is None:
        warnings.append(
            f"{len(missing)} page(s) are images without text and were not read: "
            "OCR not available, install tesseract-ocr"
        )
        return Outcome(fast, strategy, info.page_count, warnings)
    result = _ocr(data, missing, limits, "scanned pages", warnings)
    warnings.extend(result.warnings)
    added = [e for e in result.elements if e.text]
    if not added:
        return Outcome(fast, strategy, info.page_count, warnings)
    if text_quality(_text(added)).score < JUNK_THRESHOLD:
        warnings.append(f"OCR of image-only pages {missing[:10]} gave no readable text; skipped")
        return Outcome(fast, strategy, info.page_count, warnings)
    merged = sorted(fast + added, key=lambda e: e.page or 0)  # stable: keeps in-page order
    return Outcome(merged, "fast+ocr_only", info.page_count, warnings)
