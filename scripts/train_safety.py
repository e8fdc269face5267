"""Train the embedded safety classifier (serving/safety_classifier.py) and measure it.

    .venv/bin/python scripts/train_safety.py            # train, write serving/data/safety_model.*
    .venv/bin/python scripts/train_safety.py --cv       # cross-validated numbers, write nothing
    .venv/bin/python scripts/train_safety.py --ablation # the table of feature options (slow)

Training data
-------------
* ``serving/data/safety_train.jsonl`` — written by us for this product (1,185 texts, Chinese
  and English, mostly short questions plus ~70 answer-length passages so that long, ordinary
  text is not mistaken for a jailbreak; six paragraphs come from this repository's ADRs):
  unsafe requests across violence, weapons, drugs, self-harm, sexual
  content involving minors, crime and fraud how-to, privacy/doxxing (category ``harmful``);
  insults and attacks on people and on groups by region, gender, race, religion, sexuality and
  disability (``offensive``); prompt injection and jailbreaks, including system-prompt
  extraction and Chinese ones (``injection``); and many SAFE look-alikes: enterprise
  questions (HR, IT, finance, contracts, safety rules, hospital dosage guidelines), homonyms
  ("kill a Python process"), definitions ("什么是洗钱"), history, fiction and games, public or
  fictional people's details, nonsense "discrimination", neutral or anti-bias comments about
  regions, genders and races.
* ``--dev PATH`` (default ``../shared/eval/safety_dev.jsonl`` when it exists; ``--no-dev``
  turns it off): the development set (XSTest en, COLD zh, Giskard prompt injections) is ADDED
  to the training data. **The shipped model is trained on the development set too** (the meta
  records it under ``"trained_on"``). Therefore every number reported for that set is
  cross-validated: ``--cv`` runs stratified 5-fold CV over the development set (strata =
  source × label) in which each fold's model is trained on our own data plus the other four
  folds and scored on the held-out fold, repeated with 3 seeds; it also reports the model
  trained on our own data only (scored on the whole development set, which it never saw) and
  a cross-source check (leave one source out: train on our data + the other two sources).

Model
-----
Features and scoring are in `serving.safety_classifier` (USE of the text, max over its
clauses' USE, optional bge-small-en, hashed char/word n-gram tf-idf). The binary head is an
L2-regularised logistic regression and the category head a softmax over
injection/offensive/harmful, both fitted here with a small numpy L-BFGS (deterministic: fixed
data order, no random initialisation; the CV folds use fixed seeds). Thresholds are per
language, chosen on the out-of-fold predictions of the CV (the F1-optimal one in [0.5, 0.7],
moved towards fewer false alarms when that costs less than 0.005 F1) and stored in the meta.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from serving.safety_classifier import (  # noqa: E402
    CATEGORIES,
    DATA_DIR,
    FORMAT_VERSION,
    MODEL_NPZ,
    FeatureSpec,
    dense_features,
    sparse_rows,
    tfidf_rows,
)

DEFAULT_DEV = REPO.parent / "shared" / "eval" / "safety_dev.jsonl"
OWN_DATA = DATA_DIR / "safety_train.jsonl"
SEED = 20261121

# The shipped configuration (chosen with --ablation, see the docstring of the report).
SHIPPED = FeatureSpec(use=True, clause_max=True, bge=False, ngram_dim=1 << 18)
SHIPPED_C = 10.0
# Weight of a development-set item relative to one of ours in the loss.
DEV_WEIGHT = 2.0


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Item:
    text: str
    unsafe: bool
    category: str  # injection | offensive | harmful | safe
    lang: str
    source: str  # own | xstest | cold | prompt_injection


def coarse_category(label: str, category: str) -> str:
    if label != "unsafe":
        return "safe"
    if category in CATEGORIES:
        return category
    if category.startswith("prompt_injection"):
        return "injection"
    if category.startswith("cold") or category == "xstest:contrast_discr":
        return "offensive"
    return "harmful"


def read_items(path: Path, source: str | None = None) -> list[Item]:
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            cat = str(r.get("category") or "")
            items.append(
                Item(
                    text=str(r["text"]),
                    unsafe=r["label"] == "unsafe",
                    category=coarse_category(str(r["label"]), cat),
                    lang=str(r.get("lang") or ""),
                    source=source or (cat.split(":", 1)[0] if ":" in cat else "own"),
                )
            )
    return items


# ---------------------------------------------------------------------------- features


class Features:
    """Dense blocks computed once; sparse n-gram counts computed once; tf-idf per fit."""

    def __init__(
        self,
        texts: Sequence[str],
        spec: FeatureSpec,
        embed: Callable[[list[str]], np.ndarray],
        embed_en: Callable[[list[str]], np.ndarray] | None,
    ) -> None:
        self.n = len(texts)
        self.spec = spec
        self.dense = dense_features(texts, replace(spec, dense_scale=1.0), embed, embed_en)
        self.rows, self.cols, self.vals = sparse_rows(texts, spec.ngram_dim)
        widths = {"use": 512, "clause_max": 512, "bge": 384}
        self.layout: list[tuple[str, int, int]] = []
        start = 0
        for name in ("use", "clause_max", "bge"):
            if getattr(spec, name):
                self.layout.append((name, start, start + widths[name]))
                start += widths[name]
        assert start == self.dense.shape[1], (start, self.dense.shape)

    def subset(
        self, idx: np.ndarray, spec: FeatureSpec, idf: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(dense, rows, cols, tfidf values) of the rows `idx`, renumbered 0..len(idx)-1."""
        pos = np.full(self.n, -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        keep = pos[self.rows] >= 0
        rows = pos[self.rows[keep]]
        cols = self.cols[keep]
        order = np.argsort(rows, kind="stable")
        rows, cols, vals = rows[order], cols[order], self.vals[keep][order]
        vals = tfidf_rows(rows, cols, vals, idf, len(idx), spec.ngram_scale)
        dense = self.dense_for(spec)[idx]
        return dense, rows, cols, vals

    def dense_for(self, spec: FeatureSpec) -> np.ndarray:
        """The dense blocks `spec` asks for, out of those computed (same order)."""
        blocks = [self.dense[:, a:b] for name, a, b in self.layout if getattr(spec, name)]
        if not blocks:
            return np.zeros((self.n, 0), dtype=np.float32)
        return np.hstack(blocks) * np.float32(spec.dense_scale)

    def idf(self, idx: np.ndarray) -> np.ndarray:
        """Smoothed idf over the documents `idx` (sklearn's formula): log((1+n)/(1+df)) + 1."""
        keep = np.isin(self.rows, idx)
        df = np.bincount(self.cols[keep], minlength=self.spec.ngram_dim).astype(np.float64)
        n = len(idx)
        return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)


# ---------------------------------------------------------------------------- optimiser


def lbfgs(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    max_iter: int = 500,
    memory: int = 10,
    tol: float = 1e-6,
) -> np.ndarray:
    """Minimise a smooth convex `f` (returning value and gradient) with L-BFGS and a
    backtracking Armijo line search. Deterministic."""
    x = x0.astype(np.float64).copy()
    fx, g = f(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        gnorm = float(np.max(np.abs(g)))
        if gnorm < tol:
            break
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(yv @ s)
            a = rho * float(s @ q)
            alphas.append((a, rho, s, yv))
            q -= a * yv
        if s_hist:
            gamma = float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
            q *= gamma
        else:
            q *= 1.0 / max(1.0, float(np.linalg.norm(g)))
        for a, rho, s, yv in reversed(alphas):
            b = rho * float(yv @ q)
            q += s * (a - b)
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            d = -g
            slope = float(g @ d)
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = f(x_new)
            if f_new <= fx + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s = x_new - x
        yv = g_new - g
        if float(s @ yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        if abs(fx - f_new) <= tol * max(1.0, abs(fx)):
            x, fx, g = x_new, f_new, g_new
            break
        x, fx, g = x_new, f_new, g_new
    return x


@dataclass
class Head:
    w_dense: np.ndarray  # (d,) or (d, K)
    w_sparse: np.ndarray  # (dim,) or (K, dim)
    bias: np.ndarray  # () or (K,)


def _sparse_dot(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, w: np.ndarray, n: int
) -> np.ndarray:
    return np.bincount(rows, weights=vals * w[cols], minlength=n)


def fit_binary(
    dense: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    dim: int,
    C: float,
) -> Head:
    """L2 logistic regression: minimise C·Σ wᵢ·logloss + ½‖w‖² (bias not penalised)."""
    n, d = dense.shape
    used = np.unique(cols)  # optimise only the buckets that occur (the rest stay exactly 0)
    remap = np.full(dim, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    c = remap[cols]
    m = len(used)
    yf = y.astype(np.float64)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        wd, ws, b = theta[:d], theta[d : d + m], theta[d + m]
        z = dense @ wd + np.bincount(rows, weights=vals * ws[c], minlength=n) + b
        # log(1 + exp(-s z)) with s = ±1, stable
        s = 2 * yf - 1
        loss = np.logaddexp(0.0, -s * z)
        p = 1.0 / (1.0 + np.exp(-z))
        r = C * weights * (p - yf)
        value = float(np.sum(C * weights * loss) + 0.5 * (wd @ wd + ws @ ws))
        grad = np.empty_like(theta)
        grad[:d] = dense.T @ r + wd
        grad[d : d + m] = np.bincount(c, weights=vals * r[rows], minlength=m) + ws
        grad[d + m] = r.sum()
        return value, grad

    theta = lbfgs(f, np.zeros(d + m + 1))
    w_sparse = np.zeros(dim, dtype=np.float32)
    w_sparse[used] = theta[d : d + m]
    return Head(theta[:d].astype(np.float32), w_sparse, np.asarray(theta[d + m], np.float32))


def fit_softmax(
    dense: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    labels: np.ndarray,
    k: int,
    dim: int,
    C: float,
) -> Head:
    """Multinomial L2 logistic regression over `k` classes (labels 0..k-1)."""
    n, d = dense.shape
    used = np.unique(cols)
    remap = np.full(dim, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    c = remap[cols]
    m = len(used)
    onehot = np.eye(k)[labels]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        wd = theta[: d * k].reshape(d, k)
        ws = theta[d * k : (d + m) * k].reshape(m, k)
        b = theta[(d + m) * k :]
        z = dense @ wd + b
        for j in range(k):
            z[:, j] += np.bincount(rows, weights=vals * ws[c, j], minlength=n)
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = float(-C * np.sum(onehot * logp) + 0.5 * (np.sum(wd**2) + np.sum(ws**2)))
        r = C * (np.exp(logp) - onehot)
        gwd = dense.T @ r + wd
        gws = np.empty_like(ws)
        for j in range(k):
            gws[:, j] = np.bincount(c, weights=vals * r[rows, j], minlength=m)
        gws += ws
        return value, np.concatenate([gwd.ravel(), gws.ravel(), r.sum(axis=0)])

    theta = lbfgs(f, np.zeros((d + m + 1) * k))
    wd = theta[: d * k].reshape(d, k).astype(np.float32)
    ws_used = theta[d * k : (d + m) * k].reshape(m, k)
    w_sparse = np.zeros((k, dim), dtype=np.float32)
    w_sparse[:, used] = ws_used.T
    return Head(wd, w_sparse, theta[(d + m) * k :].astype(np.float32))


# ---------------------------------------------------------------------------- fit / predict


@dataclass
class Model:
    spec: FeatureSpec
    idf: np.ndarray
    binary: Head
    category: Head


def fit(
    feats: Features,
    idx: np.ndarray,
    items: Sequence[Item],
    spec: FeatureSpec,
    C: float,
    with_category: bool = True,
) -> Model:
    idf = feats.idf(idx)
    dense, rows, cols, vals = feats.subset(idx, spec, idf)
    y = np.array([items[i].unsafe for i in idx])
    weights = np.array([1.0 if items[i].source == "own" else DEV_WEIGHT for i in idx])
    binary = fit_binary(dense, rows, cols, vals, y, weights, spec.ngram_dim, C)
    if with_category:
        unsafe = np.where(y)[0]
        labels = np.array([CATEGORIES.index(items[idx[i]].category) for i in unsafe])
        pos = np.full(len(idx), -1, dtype=np.int64)
        pos[unsafe] = np.arange(len(unsafe))
        keep = pos[rows] >= 0
        category = fit_softmax(
            dense[unsafe],
            pos[rows[keep]],
            cols[keep],
            vals[keep],
            labels,
            len(CATEGORIES),
            spec.ngram_dim,
            C,
        )
    else:
        category = Head(np.zeros((dense.shape[1], 3)), np.zeros((3, 1)), np.zeros(3))
    return Model(spec, idf, binary, category)


def predict(model: Model, feats: Features, idx: np.ndarray) -> np.ndarray:
    dense, rows, cols, vals = feats.subset(idx, model.spec, model.idf)
    h = model.binary
    z = dense @ h.w_dense + _sparse_dot(rows, cols, vals, h.w_sparse, len(idx)) + float(h.bias)
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------- evaluation


def prf(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(pred & y))
    p = tp / max(1.0, float(np.sum(pred)))
    r = tp / max(1.0, float(np.sum(y)))
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def stratified_folds(strata: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    by: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        by.setdefault(s, []).append(i)
    offset = 0
    for s in sorted(by):
        members = np.array(by[s])
        rng.shuffle(members)
        for j, i in enumerate(members):
            folds[(j + offset) % k].append(int(i))
        offset += len(members)
    return [np.array(sorted(f)) for f in folds]


def report(
    name: str, items: Sequence[Item], idx: np.ndarray, p: np.ndarray, th: dict[str, float]
) -> dict[str, tuple[float, float, float]]:
    y = np.array([items[i].unsafe for i in idx])
    langs = np.array([items[i].lang for i in idx])
    pred = np.array([p[j] >= th.get(langs[j], th.get("default", 0.5)) for j in range(len(idx))])
    out = {"all": prf(y, pred)}
    for lang in ("zh", "en"):
        m = langs == lang
        out[lang] = prf(y[m], pred[m])
    cells = "  ".join(f"{g}: P {a:.3f} R {b:.3f} F1 {c:.3f}" for g, (a, b, c) in out.items())
    print(f"{name:<44} {cells}", flush=True)
    return out


def choose_thresholds(items: Sequence[Item], idx: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Per language: the F1-optimal threshold on out-of-fold scores, then the highest one
    (fewest false alarms) within 0.005 F1 of it, searched on a 0.05 grid in [0.5, 0.7]. Never
    below 0.5: blocking staff's ordinary questions is the costlier error, and a lower
    threshold tuned on 393 items would buy a little dev F1 with many more false alarms."""
    grid = np.round(np.arange(0.50, 0.701, 0.05), 2)
    out: dict[str, float] = {}
    y = np.array([items[i].unsafe for i in idx])
    langs = np.array([items[i].lang for i in idx])
    for lang in ("zh", "en"):
        m = langs == lang
        f1s = [prf(y[m], p[m] >= t)[2] for t in grid]
        best = max(f1s)
        out[lang] = float(max(t for t, f in zip(grid, f1s, strict=True) if f >= best - 0.005))
    out["default"] = 0.5
    return out


def cross_validate(
    feats: Features,
    items: Sequence[Item],
    own: np.ndarray,
    dev: np.ndarray,
    spec: FeatureSpec,
    C: float,
    seeds: Sequence[int] = (SEED, SEED + 1, SEED + 2),
    label: str = "",
    thresholds: dict[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Out-of-fold scores on the dev items (averaged over `seeds`); prints the report."""
    strata = [f"{items[i].source}/{items[i].unsafe}" for i in dev]
    oof = np.zeros(len(dev))
    for seed in seeds:
        for fold in stratified_folds(strata, 5, seed):
            train = np.concatenate([own, np.delete(dev, fold)])
            model = fit(feats, train, items, spec, C, with_category=False)
            oof[fold] += predict(model, feats, dev[fold]) / len(seeds)
    th = thresholds or {"default": 0.5}
    report(f"CV {label} @0.5", items, dev, oof, {"default": 0.5})
    if thresholds is None:
        th = choose_thresholds(items, dev, oof)
        report(f"CV {label} @{th['zh']:.2f}/{th['en']:.2f}", items, dev, oof, th)
    return oof, th


def own_only(
    feats: Features,
    items: Sequence[Item],
    own: np.ndarray,
    dev: np.ndarray,
    spec: FeatureSpec,
    C: float,
    label: str,
    th: dict[str, float],
) -> None:
    model = fit(feats, own, items, spec, C, with_category=False)
    report(f"own-data-only {label}", items, dev, predict(model, feats, dev), th)


def cross_source(
    feats: Features,
    items: Sequence[Item],
    own: np.ndarray,
    dev: np.ndarray,
    spec: FeatureSpec,
    C: float,
    label: str,
    th: dict[str, float],
) -> None:
    p = np.zeros(len(dev))
    sources = np.array([items[i].source for i in dev])
    for s in sorted(set(sources)):
        test = sources == s
        model = fit(feats, np.concatenate([own, dev[~test]]), items, spec, C, with_category=False)
        p[test] = predict(model, feats, dev[test])
    report(f"cross-source {label}", items, dev, p, th)


# ---------------------------------------------------------------------------- main


Embed = Callable[[list[str]], np.ndarray]


def load_embedders(need_bge: bool) -> tuple[Embed, Embed | None]:
    from retrieval.embedders import load_embedder

    use = load_embedder("use", threads=1)
    bge = load_embedder("bge-small-en", threads=1) if need_bge else None
    return (lambda t: use.embed(t)), (None if bge is None else (lambda t: bge.embed(t)))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    ap.add_argument("--no-dev", action="store_true", help="train on our own data only")
    ap.add_argument("--cv", action="store_true", help="report CV numbers, write nothing")
    ap.add_argument("--ablation", action="store_true", help="CV every feature option")
    ap.add_argument("--out", type=Path, default=MODEL_NPZ)
    args = ap.parse_args(argv)

    items = read_items(OWN_DATA, source="own")
    own = np.arange(len(items))
    use_dev = not args.no_dev and args.dev.is_file()
    if use_dev:
        items += read_items(args.dev)
    dev = np.arange(len(own), len(items))
    texts = [it.text for it in items]
    print(f"{len(own)} own items, {len(dev)} dev items", flush=True)

    full = replace(SHIPPED, bge=args.ablation or SHIPPED.bge)
    embed, embed_en = load_embedders(full.bge)
    started = time.perf_counter()
    feats = Features(texts, full, embed, embed_en)
    print(f"features in {time.perf_counter() - started:.1f}s", flush=True)

    if args.ablation:
        if not use_dev:
            raise SystemExit("--ablation needs the development set")
        off = FeatureSpec(use=False, clause_max=False, bge=False)
        options = [
            ("USE", replace(off, use=True), 1.0, 0.0),
            ("USE+bge", replace(off, use=True, bge=True), 1.0, 0.0),
            ("USE+ngrams", replace(off, use=True), 1.0, 1.0),
            ("USE+clause", replace(off, use=True, clause_max=True), 1.0, 0.0),
            ("USE+clause+ngrams", replace(off, use=True, clause_max=True), 1.0, 1.0),
            ("USE+bge+ngrams", replace(off, use=True, bge=True), 1.0, 1.0),
            ("USE+clause+bge+ngrams", replace(off, use=True, clause_max=True, bge=True), 1.0, 1.0),
        ]
        for name, spec, dscale, nscale in options:
            for C in (1.0, 10.0):
                sp = replace(spec, dense_scale=dscale, ngram_scale=nscale)
                label = f"{name} C={C:g}"
                _, th = cross_validate(feats, items, own, dev, sp, C, label=label)
                own_only(feats, items, own, dev, sp, C, label, th)
        return

    spec, C = SHIPPED, SHIPPED_C
    thresholds = {"zh": 0.5, "en": 0.5, "default": 0.5}
    if use_dev:
        _, thresholds = cross_validate(feats, items, own, dev, spec, C, label="shipped")
        own_only(feats, items, own, dev, spec, C, "shipped", thresholds)
        cross_source(feats, items, own, dev, spec, C, "shipped", thresholds)
    if args.cv:
        return

    train = np.concatenate([own, dev])
    started = time.perf_counter()
    model = fit(feats, train, items, spec, C)
    print(f"trained on {len(train)} items in {time.perf_counter() - started:.1f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        w_dense=model.binary.w_dense,
        w_sparse=model.binary.w_sparse,
        bias=model.binary.bias,
        idf=model.idf,
        cat_dense=model.category.w_dense,
        cat_sparse=model.category.w_sparse,
        cat_bias=model.category.bias,
    )
    meta = {
        "format": FORMAT_VERSION,
        "features": spec.to_json(),
        "C": C,
        "thresholds": thresholds,
        "categories": list(CATEGORIES),
        "trained_on": {
            "own": {"path": "serving/data/safety_train.jsonl", "items": len(own)},
            "dev": {"path": "shared/eval/safety_dev.jsonl", "items": len(dev)} if use_dev else None,
        },
        "embedders": {
            "embed": "use-multilingual-v3",
            "embed_en": "bge-small-en-v1.5-int8" if spec.bge else None,
        },
        "seed": SEED,
    }
    args.out.with_suffix(".json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
