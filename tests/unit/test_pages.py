"""Page images of PDFs with poppler's pdftoppm (the real one, no fakes)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ZhikuError
from core.storage import PageCache
from ingest import pages
from ingest.pages import PageRenderError, render_pdf_page
from tests.pdf_maker import Page, make_pdf, png_size


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    path = tmp_path / "three.pdf"
    path.write_bytes(
        make_pdf(
            [
                Page(lines=["First page"]),
                Page(width=300, height=200, box=(0, 0, 300, 200)),
                Page(width=144, height=720, lines=["Third"]),
            ]
        )
    )
    return path


def _mean(png: bytes) -> float:
    img = Image.open(io.BytesIO(png)).convert("L")
    hist = img.histogram()
    return sum(i * n for i, n in enumerate(hist)) / sum(hist)


def test_renders_the_requested_page_at_110_dpi(pdf: Path) -> None:
    first, second, third = (render_pdf_page(pdf, n) for n in (1, 2, 3))
    assert png_size(first) == (935, 1210)  # 612 x 792 pt at 110 dpi
    assert png_size(second)[0] in (458, 459) and png_size(second)[1] in (305, 306)
    assert png_size(third) == (220, 1100)
    assert _mean(second) < 10 < 240 < _mean(first)  # the black page and a white one
    assert png_size(render_pdf_page(pdf, 2, dpi=72)) == (300, 200)


def test_a_page_beyond_the_last_or_before_the_first_is_refused(pdf: Path) -> None:
    with pytest.raises(PageRenderError) as info:
        render_pdf_page(pdf, 4)
    assert info.value.status == 422 and "page 4 could not be rendered" in info.value.reason
    with pytest.raises(PageRenderError):
        render_pdf_page(pdf, 0)


def test_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4\nthis is no PDF at all\n")
    with pytest.raises(PageRenderError) as info:
        render_pdf_page(bad, 1)
    assert info.value.code == "render_failed"


def test_a_slow_renderer_is_stopped_at_the_time_limit(
    tmp_path: Path, pdf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renderer that hangs is killed (with anything it started) after `timeout`."""
    slow = tmp_path / "bin" / "pdftoppm"
    slow.parent.mkdir()
    nap = f"{30 + os.getpid() % 1000 / 1000:.3f}"  # a sleep only this test starts
    slow.write_text(f"#!/bin/sh\n(sleep {nap}; true) &\nsleep {nap}\n")
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{slow.parent}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    with pytest.raises(ZhikuError) as info:
        render_pdf_page(pdf, 1, timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.code == "render_timeout" and info.value.status == 503
    assert "longer than 0.5 s" in info.value.reason
    left = subprocess.run(["pgrep", "-f", f"sleep {nap}"], capture_output=True, check=False)
    assert left.stdout == b"", "the renderer's children outlived it"


def test_no_renderer_installed(pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "PDFTOPPM", "no-such-pdftoppm")
    with pytest.raises(ZhikuError) as info:
        render_pdf_page(pdf, 1)
    assert info.value.code == "renderer_missing" and "poppler-utils" in info.value.reason


def test_leaves_no_temporary_files(tmp_path: Path, pdf: Path) -> None:
    work = tmp_path / "tmp"
    render_pdf_page(pdf, 1, tmp_dir=work)
    assert list(work.iterdir()) == []


def test_page_cache_by_document_version_and_page(tmp_path: Path) -> None:
    cache = PageCache(tmp_path / "pages")
    assert cache.get(5, 1, 2) is None
    cache.put(5, 1, 2, b"png of v1")
    cache.put(5, 2, 2, b"png of v2")
    cache.put(6, 1, 2, b"other document")
    assert (cache.get(5, 1, 2), cache.get(5, 2, 2), cache.get(5, 2, 3)) == (
        b"png of v1",
        b"png of v2",
        None,
    )
    cache.purge(5)
    assert cache.get(5, 1, 2) is None and cache.get(5, 2, 2) is None
    assert cache.get(6, 1, 2) == b"other document"
    cache.purge(5)  # twice is fine
