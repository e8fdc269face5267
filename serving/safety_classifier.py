"""The embedded safety classifier: screens a question or an answer without a guard model.

A logistic regression (numpy, weights in ``serving/data/safety_model.npz``, meta in
``safety_model.json``) over

* the multilingual USE embedding of the whole text (``embed``, 512 dims, Chinese and
  English), and the element-wise max of the USE embeddings of its clauses (an insult or an
  injection buried in one clause of a long comment still shows);
* optionally the bge-small-en embedding (``embed_en``) when the model was trained with it;
* hashed character 1–3-grams and ASCII word 1–2-grams of the normalised text (NFKC,
  casefolded), sub-linear tf × idf, L2-normalised: Chinese insults and slurs, "ignore previous
  instructions", "DAN", …

A second, three-way softmax over the same features names the coarse category of an unsafe
text: ``injection`` (prompt injection, jailbreak, system-prompt extraction), ``offensive``
(insults, hate, regional/gender/racial attacks) or ``harmful`` (violence, weapons, drugs,
self-harm, sexual content involving minors, crime how-to, privacy/doxxing).

`serving` never imports `retrieval`: the embedders are injected callables
(``list[str] -> float32 array (n, dim)``, rows L2-normalised); the composition roots pass the
retrieval package's USE and bge embedders. The weights are trained by
``scripts/train_safety.py`` (which states what data it used; the meta records it too) and are
plain numpy arrays, never a pickle. How it was chosen and measured: the training script's
docstring, ``--cv`` and ``--ablation``.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.guard import Verdict

__all__ = [
    "CATEGORIES",
    "DATA_DIR",
    "FeatureSpec",
    "SafetyClassifier",
    "dense_features",
    "detect_lang",
    "hashed_ngrams",
    "head_tail",
    "needs_embed_en",
    "normalize_text",
    "split_clauses",
]

Embed = Callable[[list[str]], np.ndarray]

DATA_DIR = Path(__file__).resolve().parent / "data"
MODEL_NPZ = DATA_DIR / "safety_model.npz"
MODEL_META = DATA_DIR / "safety_model.json"
CATEGORIES: tuple[str, ...] = ("injection", "offensive", "harmful")
FORMAT_VERSION = 1
EMBED_CHARS = 1000

# ---------------------------------------------------------------------------- text features

_WS = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9']+")
_CLAUSE_SPLIT = re.compile(r"[，。！？!?；;\n…~]+|(?<=[.,:])\s+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def normalize_text(text: str) -> str:
    """NFKC + casefold + whitespace collapsed to one space."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def detect_lang(text: str) -> str:
    """ "zh" when Han characters are at least a fifth of the letters, else "en"."""
    han = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if han and han * 5 >= han + latin else "en"


def split_clauses(text: str, max_clauses: int = 8, max_chars: int = 200) -> list[str]:
    """Clauses of `text` (split at sentence and clause punctuation), each cut to `max_chars`:
    all of them up to `max_clauses`, else the first ones and the last two (an injection often
    sits at the end of a long text); the whole text (cut) when it has no split point."""
    parts = [c.strip() for c in _CLAUSE_SPLIT.split(text)]
    clauses = [c[:max_chars] for c in parts if len(c) >= 2]
    if len(clauses) > max_clauses:
        clauses = clauses[: max_clauses - 2] + clauses[-2:]
    return clauses or [text[:max_chars] or " "]


def head_tail(text: str, max_chars: int) -> str:
    """`text` itself, or its first three quarters and last quarter of `max_chars` characters."""
    if len(text) <= max_chars:
        return text
    head = max_chars * 3 // 4
    return text[:head] + " " + text[len(text) - (max_chars - head) :]


def _bucket(token: str, dim: int) -> int:
    return zlib.crc32(token.encode("utf-8")) % dim


def hashed_ngrams(text: str, dim: int, max_chars: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Sparse bag of hashed n-grams of `text`: sorted unique bucket ids and their sub-linear
    term frequencies (1 + log count). Character 1–3-grams of the normalised text (spaces
    kept, so word edges count) and ASCII word 1–2-grams (prefixed so they never collide by
    construction with character grams of the same spelling). Long texts keep their head and
    tail (`max_chars` in all). The hash is CRC-32, stable across processes and platforms."""
    norm = head_tail(normalize_text(text), max_chars)
    counts: dict[int, int] = {}
    padded = f" {norm} "
    n = len(padded)
    for size in (1, 2, 3):
        for i in range(n - size + 1):
            gram = padded[i : i + size]
            if gram.isspace():
                continue
            b = _bucket("c" + gram, dim)
            counts[b] = counts.get(b, 0) + 1
    words = _WORD.findall(norm)
    for i, w in enumerate(words):
        b = _bucket("w" + w, dim)
        counts[b] = counts.get(b, 0) + 1
        if i + 1 < len(words):
            b = _bucket("w" + w + " " + words[i + 1], dim)
            counts[b] = counts.get(b, 0) + 1
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    val = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    order = np.argsort(idx)
    return idx[order], (1.0 + np.log(val[order])).astype(np.float32)


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature blocks a model uses and how they are scaled (stored in the meta)."""

    use: bool = True
    clause_max: bool = True
    bge: bool = False
    ngram_dim: int = 1 << 18
    ngram_scale: float = 1.0
    dense_scale: float = 1.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def dense_features(
    texts: Sequence[str], spec: FeatureSpec, embed: Embed, embed_en: Embed | None = None
) -> np.ndarray:
    """The dense blocks for `texts`, float32 (n, d): [USE | clause-max USE | bge].

    The whole-text embeddings see at most `EMBED_CHARS` characters (head and tail): USE's
    cost grows with length (≈130 ms for a 4,700-character jailbreak on this 2-core box) and a
    long text's vector washes out anyway; the clause block covers the rest."""
    items = [t if t.strip() else " " for t in texts]
    blocks: list[np.ndarray] = []
    if spec.use:
        blocks.append(np.asarray(embed([head_tail(t, EMBED_CHARS) for t in items]), np.float32))
    if spec.clause_max:
        clauses: list[str] = []
        owner: list[int] = []
        for i, t in enumerate(items):
            cs = split_clauses(t)
            clauses.extend(cs)
            owner.extend([i] * len(cs))
        vecs = np.asarray(embed(clauses), dtype=np.float32)
        pooled = np.full((len(items), vecs.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(pooled, np.asarray(owner), vecs)
        blocks.append(pooled)
    if spec.bge:
        if embed_en is None:
            raise ValueError("this safety model needs the bge-small-en embedder (embed_en)")
        blocks.append(np.asarray(embed_en([head_tail(t, EMBED_CHARS) for t in items]), np.float32))
    if not blocks:
        return np.zeros((len(items), 0), dtype=np.float32)
    return np.hstack(blocks).astype(np.float32) * np.float32(spec.dense_scale)


def sparse_rows(texts: Sequence[str], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR-like (row ids, bucket ids, tf values) of the hashed n-grams of `texts`."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for r, t in enumerate(texts):
        idx, val = hashed_ngrams(t, dim)
        rows.append(np.full(len(idx), r, dtype=np.int64))
        cols.append(idx)
        vals.append(val)
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def tfidf_rows(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, idf: np.ndarray, n: int, scale: float
) -> np.ndarray:
    """Apply idf and L2-normalise each row (times `scale`); returns the new values."""
    weighted = vals * idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=weighted.astype(np.float64) ** 2, minlength=n))
    norms[norms == 0] = 1.0
    return (weighted / norms[rows] * scale).astype(np.float32)


# ---------------------------------------------------------------------------- classifier


def _read_meta(npz_path: Path) -> dict[str, Any]:
    meta_path = npz_path.with_suffix(".json")
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: unsupported safety model format {meta.get('format')}")
    return meta


def needs_embed_en(path: Path | str | None = None) -> bool:
    """Whether the model (the shipped one by default) needs the bge-small-en embedder."""
    meta = _read_meta(Path(path) if path is not None else MODEL_NPZ)
    return bool(FeatureSpec.from_json(meta["features"]).bge)


class SafetyClassifier:
    """Load with `SafetyClassifier.load(embed=...)`; then `check(text)` / `check_many(texts)`.

    `threshold` (from the meta, per language) turns the unsafe probability into a decision;
    a caller may pass its own `threshold` to `load` to trade recall for fewer blocked staff.
    """

    def __init__(
        self,
        *,
        spec: FeatureSpec,
        w_dense: np.ndarray,
        w_sparse: np.ndarray,
        bias: float,
        idf: np.ndarray,
        cat_dense: np.ndarray,
        cat_sparse: np.ndarray,
        cat_bias: np.ndarray,
        thresholds: dict[str, float],
        embed: Embed,
        embed_en: Embed | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if spec.bge and embed_en is None:
            raise ValueError("this safety model was trained with bge-small-en: pass embed_en")
        self.spec = spec
        self.w_dense = w_dense.astype(np.float32)
        self.w_sparse = w_sparse.astype(np.float32)
        self.bias = float(bias)
        self.idf = idf.astype(np.float32)
        self.cat_dense = cat_dense.astype(np.float32)
        self.cat_sparse = cat_sparse.astype(np.float32)
        self.cat_bias = cat_bias.astype(np.float32)
        self.thresholds = dict(thresholds)
        self.embed = embed
        self.embed_en = embed_en
        self.meta = meta or {}

    # -- loading

    @classmethod
    def load(
        cls,
        embed: Embed,
        embed_en: Embed | None = None,
        *,
        path: Path | str | None = None,
        threshold: float | None = None,
    ) -> SafetyClassifier:
        """Load the shipped model (or the one at `path`, an ``.npz`` with a ``.json`` beside it).

        `embed` is the multilingual USE embedder; `embed_en` the bge-small-en one, needed only
        when the meta says the model uses it. `threshold` overrides the trained thresholds.
        """
        npz_path = Path(path) if path is not None else MODEL_NPZ
        meta = _read_meta(npz_path)
        spec = FeatureSpec.from_json(meta["features"])
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if arrays["w_sparse"].shape != (spec.ngram_dim,):
            raise ValueError(f"{npz_path}: sparse weights do not match ngram_dim")
        thresholds = {str(k): float(v) for k, v in meta["thresholds"].items()}
        if threshold is not None:
            thresholds = {k: float(threshold) for k in thresholds}
        return cls(
            spec=spec,
            w_dense=arrays["w_dense"],
            w_sparse=arrays["w_sparse"],
            bias=float(arrays["bias"]),
            idf=arrays["idf"],
            cat_dense=arrays["cat_dense"],
            cat_sparse=arrays["cat_sparse"],
            cat_bias=arrays["cat_bias"],
            thresholds=thresholds,
            embed=embed,
            embed_en=embed_en,
            meta=meta,
        )

    # -- scoring

    def _logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        n = len(texts)
        dense = dense_features(texts, self.spec, self.embed, self.embed_en)
        if dense.shape[1] != self.w_dense.shape[0]:
            raise ValueError(
                f"embedders give {dense.shape[1]} dense features, the model expects "
                f"{self.w_dense.shape[0]} (wrong embedder injected?)"
            )
        rows, cols, vals = sparse_rows(texts, self.spec.ngram_dim)
        vals = tfidf_rows(rows, cols, vals, self.idf, n, self.spec.ngram_scale)
        binary = dense @ self.w_dense + self.bias
        binary += np.bincount(rows, weights=vals * self.w_sparse[cols], minlength=n)
        cat = dense @ self.cat_dense + self.cat_bias
        for k in range(cat.shape[1]):
            cat[:, k] += np.bincount(rows, weights=vals * self.cat_sparse[k, cols], minlength=n)
        return binary, cat

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Probability that each text is unsafe, float64 (n,)."""
        if not texts:
            return np.zeros(0)
        binary, _ = self._logits(texts)
        return 1.0 / (1.0 + np.exp(-binary))

    def threshold_for(self, text: str) -> float:
        return self.thresholds.get(detect_lang(text), self.thresholds.get("default", 0.5))

    def check_many(self, texts: Sequence[str]) -> list[Verdict]:
        """Verdicts for `texts` (one embedding batch). Empty texts are safe."""
        if isinstance(texts, str):
            raise TypeError("check_many() takes a sequence of strings, not a single str")
        items = list(texts)
        out: list[Verdict | None] = [None] * len(items)
        todo = [i for i, t in enumerate(items) if t and t.strip()]
        for i, t in enumerate(items):
            if not (t and t.strip()):
                out[i] = Verdict(safe=True, categories=[], score=0.0, source="classifier")
        if todo:
            binary, cat = self._logits([items[i] for i in todo])
            probs = 1.0 / (1.0 + np.exp(-binary))
            for j, i in enumerate(todo):
                p = float(probs[j])
                unsafe = p >= self.threshold_for(items[i])
                cats = [CATEGORIES[int(np.argmax(cat[j]))]] if unsafe else []
                out[i] = Verdict(safe=not unsafe, categories=cats, score=p, source="classifier")
        return [v for v in out if v is not None]

    def check(self, text: str) -> Verdict:
        """The verdict on one text."""
        return self.check_many([text])[0]

    def timed_check(self, text: str) -> tuple[Verdict, float]:
        """`check` plus its wall time in milliseconds."""
        started = time.perf_counter()
        verdict = self.check(text)
        return verdict, (time.perf_counter() - started) * 1000.0
