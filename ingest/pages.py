"""One page of a PDF as a PNG image, rendered by poppler's `pdftoppm` (Debian `poppler-utils`).

Pure: a file in, PNG bytes out; no database, no network. The caller caches the result.
`pdftoppm` runs in a process group of its own with a time limit, so a pathological page cannot
hold a request (or leave a renderer behind) for longer than `timeout` seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from core.errors import ZhikuError

PDFTOPPM = "pdftoppm"
DPI = 110
TIMEOUT_S = 30.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageRenderError(ZhikuError):
    """The page could not be rendered (a broken file, a renderer that crashed)."""

    code = "render_failed"
    status = 422


def render_pdf_page(
    pdf: Path, page: int, *, dpi: int = DPI, timeout: float = TIMEOUT_S, tmp_dir: Path | None = None
) -> bytes:
    """PNG bytes of the 1-based `page` of the PDF file `pdf` at `dpi` dots per inch."""
    if page < 1:
        raise PageRenderError(f"page {page} does not exist: pages are numbered from 1")
    exe = shutil.which(PDFTOPPM)
    if exe is None:
        raise ZhikuError(
            "page images need poppler's pdftoppm; install the poppler-utils package",
            code="renderer_missing",
            status=503,
        )
    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="page-") as work:
        prefix = Path(work) / "page"
        cmd = [exe, "-png", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile"]
        proc = subprocess.Popen(
            [*cmd, str(pdf), str(prefix)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ZhikuError(
                f"rendering page {page} took longer than {timeout:g} s; try again later",
                code="render_timeout",
                status=503,
            ) from None
        out = prefix.with_suffix(".png")
        if proc.returncode != 0 or not out.is_file():
            detail = err.decode("utf-8", "replace").strip().splitlines()
            reason = f"page {page} could not be rendered"
            if detail:
                reason += f": {detail[-1][:300]}"
            raise PageRenderError(reason)
        png = out.read_bytes()
    if not png.startswith(PNG_MAGIC):
        raise PageRenderError(f"page {page} could not be rendered: the renderer wrote no PNG")
    return png


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
