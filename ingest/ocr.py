"""OCR with tesseract through unstructured's `ocr_only` strategy, one page image at a time.

We feed page images ourselves (PDF pages rendered with PDFium, image frames from Pillow) so
that multi-frame TIFFs get every frame, pages can be capped, each tesseract call has a timeout
and the whole document has a time budget. `hi_res` is never used.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from core.errors import BadDocument
from core.types import ParsedElement
from ingest import elements as el_conv
from ingest.offline import ensure_offline
from ingest.quality import JUNK_THRESHOLD, text_quality

log = logging.getLogger(__name__)

OCR_DPI = 300
MAX_PAGE_PIXELS = 30_000_000  # pages are scaled down to this before OCR (A3 at 300 dpi fits)
_state: dict[str, float] = {"page_timeout": 120.0}


@dataclass
class OcrResult:
    elements: list[ParsedElement] = field(default_factory=list)
    pages_done: int = 0
    warnings: list[str] = field(default_factory=list)


def tesseract_cmd() -> str | None:
    """Path of the tesseract binary, or None when it is not installed."""
    import unstructured_pytesseract

    return shutil.which(unstructured_pytesseract.pytesseract.tesseract_cmd)


@lru_cache(maxsize=4)
def installed_languages(cmd: str) -> frozenset[str]:
    try:
        out = subprocess.run([cmd, "--list-langs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


def require_tesseract(what: str, ocr_languages: str) -> tuple[str, list[str]]:
    """The tesseract language string to use, and warnings. BadDocument when OCR is impossible."""
    cmd = tesseract_cmd()
    if cmd is None:
        raise BadDocument(f"{what}, OCR not available: install tesseract-ocr")
    wanted = [lang for lang in ocr_languages.split("+") if lang]
    have = installed_languages(cmd)
    usable = [lang for lang in wanted if lang in have]
    warnings = []
    missing = [lang for lang in wanted if lang not in have]
    if missing:
        warnings.append(
            f"OCR language data not installed: {', '.join(missing)} "
            f"(install tesseract-ocr-{missing[0].replace('_', '-')})"
        )
    if not usable:
        raise BadDocument(
            f"{what}, OCR not available: tesseract has none of the languages "
            f"{ocr_languages!r}; install tesseract-ocr-eng / tesseract-ocr-chi-sim"
        )
    return "+".join(usable), warnings


def _install_tesseract_timeout() -> None:
    """Give every tesseract call unstructured makes a timeout (it passes none)."""
    from unstructured_pytesseract import pytesseract as pt

    original = pt.run_tesseract
    if getattr(original, "_zhiku_timeout", False):
        return

    def run_tesseract(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("timeout"):
            kwargs["timeout"] = _state["page_timeout"]
        return original(*args, **kwargs)

    run_tesseract._zhiku_timeout = True  # type: ignore[attr-defined]
    pt.run_tesseract = run_tesseract

    # One OpenMP thread per tesseract process (it takes every core by default, and pages run
    # in parallel workers); only its own environment, not this process's (ingest.offline).
    original_args = pt.subprocess_args

    def subprocess_args(include_stdout: bool = True) -> dict[str, Any]:
        kwargs: dict[str, Any] = original_args(include_stdout)
        kwargs["env"] = {**kwargs.get("env", os.environ), "OMP_THREAD_LIMIT": "1"}
        return kwargs

    pt.subprocess_args = subprocess_args


def _prepare(image: Any) -> Any:
    """RGB/greyscale, at most MAX_PAGE_PIXELS."""
    from PIL import Image

    if image.mode == "P":  # palette images may carry transparency: go through RGBA
        image = image.convert("RGBA")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    pixels = image.width * image.height
    if pixels > MAX_PAGE_PIXELS:
        scale = math.sqrt(MAX_PAGE_PIXELS / pixels)
        image = image.resize(
            (max(1, int(image.width * scale)), max(1, int(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
    return image


def _osd_rotation(image: Any) -> int:
    """Clockwise degrees the page should be rotated to be upright (tesseract OSD), or 0."""
    import unstructured_pytesseract

    try:
        osd = unstructured_pytesseract.image_to_osd(image, timeout=_state["page_timeout"])
    except Exception:  # no osd data, too little text, timeout
        return 0
    for line in str(osd).splitlines():
        if line.startswith("Rotate:"):
            try:
                return int(line.split(":", 1)[1].strip()) % 360
            except ValueError:
                return 0
    return 0


def _ocr_one(image: Any, page: int, languages: str) -> list[Any]:
    from unstructured.partition.image import partition_image

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    buf.seek(0)
    return list(
        partition_image(
            file=buf, strategy="ocr_only", languages=languages.split("+"), starting_page_number=page
        )
    )


def _page_text(elements: list[Any]) -> str:
    return "\n".join(str(e.text or "") for e in elements)


def ocr_pages(
    pages: Iterator[tuple[int, Any]],
    languages: str,
    *,
    time_budget: float,
    page_timeout: float = 120.0,
    on_page: Callable[[int], None] | None = None,
) -> OcrResult:
    """OCR (page number, PIL image) pairs until they run out or the time budget is spent."""
    ensure_offline()
    _install_tesseract_timeout()
    _state["page_timeout"] = page_timeout
    result = OcrResult()
    deadline = time.monotonic() + time_budget
    for page, image in pages:
        if time.monotonic() > deadline:
            result.warnings.append(
                f"OCR stopped at page {page}: the time budget of {time_budget:.0f}s was spent; "
                "later pages are not searchable"
            )
            break
        try:
            prepared = _prepare(image)
            found = _ocr_one(prepared, page, languages)
            if text_quality(el_conv.join_cjk(_page_text(found))).score < JUNK_THRESHOLD:
                rotation = _osd_rotation(prepared)
                if rotation:
                    rotated = prepared.rotate(-rotation, expand=True)
                    retry = _ocr_one(rotated, page, languages)
                    if len(_page_text(retry)) > 0:
                        found = retry
        except RuntimeError as exc:
            if "timeout" in str(exc).lower():
                result.warnings.append(f"page {page}: OCR timed out after {page_timeout:.0f}s")
                continue
            raise
        finally:
            image.close()
        result.elements.extend(el_conv.convert(found, ocr=True))
        result.pages_done += 1
        if on_page is not None:
            on_page(page)
    return result


def pdf_page_images(data: bytes, page_numbers: list[int]) -> Iterator[tuple[int, Any]]:
    """Render the given 1-based PDF pages at OCR_DPI (as displayed, /Rotate applied)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        for number in page_numbers:
            page = pdf[number - 1]
            try:
                width, height = page.get_size()
                scale = OCR_DPI / 72
                if width * height * scale * scale > MAX_PAGE_PIXELS:
                    scale = math.sqrt(MAX_PAGE_PIXELS / (width * height))
                bitmap = page.render(scale=scale)
                image = bitmap.to_pil()
                yield number, image
            finally:
                page.close()
    finally:
        pdf.close()


def image_frames(data: bytes, max_pages: int) -> tuple[int, Iterator[tuple[int, Any]]]:
    """Number of frames and an iterator of (1-based frame, image) for up to max_pages frames."""
    from pi_heif import register_heif_opener
    from PIL import Image, UnidentifiedImageError

    register_heif_opener()
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as exc:
        raise BadDocument(f"image is too large to read safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadDocument(f"could not be read: looks corrupt ({exc})") from exc
    frames = int(getattr(image, "n_frames", 1) or 1)

    def gen() -> Iterator[tuple[int, Any]]:
        for index in range(min(frames, max_pages)):
            image.seek(index)
            yield index + 1, image.copy()
        image.close()

    return frames, gen()
