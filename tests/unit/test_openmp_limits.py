"""OpenMP thread caps: one thread for each tesseract process, none for this process.

OpenMP reads OMP_THREAD_LIMIT once, when a library first loads it. A cap of 1 in this
process's environment (unstructured's OCR module sets one unless the variable is set) made
torch and FAISS compute on one core, and a vLLM CPU server started by a `zhiku` command inherited
it and hung on its first answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_ingest_side_caps_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
    code = (
        "import os, ingest.offline, ingest.ocr;"
        "import unstructured.partition.utils.ocr_models.tesseract_ocr;"
        "print(os.environ['OMP_THREAD_LIMIT'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(os.cpu_count() or 1)


def test_each_tesseract_process_gets_one_thread() -> None:
    from unstructured_pytesseract import pytesseract as pt

    from ingest.ocr import _install_tesseract_timeout

    _install_tesseract_timeout()
    _install_tesseract_timeout()  # idempotent
    kwargs = pt.subprocess_args()
    assert kwargs["env"]["OMP_THREAD_LIMIT"] == "1"
    assert kwargs["env"]["PATH"] == os.environ["PATH"]
    assert os.environ.get("OMP_THREAD_LIMIT") != "1"
