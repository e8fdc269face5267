"""Calibrate the evidence threshold (serving/evidence.py) on the development QA sets.

For each question: the signals of its positive passage (it should pass) and the best signals
over passages written for other questions (they should not). Prints, per signal and data set,
the share of positives and of negatives that each candidate threshold lets through, and the
combined rule's rates with the shipped thresholds.

    .venv/bin/python scripts/calibrate_evidence.py ../shared/eval [--per-set 100]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.language import text_language
from retrieval.embedders import load_embedder, query_text
from serving.evidence import EvidenceThresholds, coverage

WINDOW = 700


def windows(text: str) -> list[str]:
    return [text[i : i + WINDOW] for i in range(0, max(len(text), 1), WINDOW // 2)] or [text]


def off_topic(folder: Path, rng: random.Random, n: int = 120) -> list[str]:
    """Windows of another data set's documents: a library about something else entirely."""
    docs = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").read_text().splitlines()]
    return [w for t in rng.sample(docs, min(n, len(docs))) for w in windows(t)[:2]]


def load(folder: Path, n: int, rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """(question, positive passage, other passages) triples."""
    docs = {
        d["doc_id"]: d["text"]
        for d in map(json.loads, (folder / "corpus.jsonl").read_text().splitlines())
    }
    qs = [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines()]
    rng.shuffle(qs)
    qs = qs[:n]
    out = []
    for q in qs:
        pos_text = docs[q["positive_doc_ids"][0]]
        answers = [a if isinstance(a, str) else a[0] for a in q["answers"]]
        wins = windows(pos_text)
        positive = next((w for w in wins if any(a in w for a in answers)), wins[0])
        others = [
            docs[o["positive_doc_ids"][0]]
            for o in qs
            if o is not q and set(o["positive_doc_ids"]).isdisjoint(q["positive_doc_ids"])
        ]
        others = [w for t in rng.sample(others, min(60, len(others))) for w in windows(t)[:3]]
        out.append((q["question"], positive, others))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return b @ a


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--per-set", type=int, default=100)
    ap.add_argument("--sets", default="rgb_zh,rgb_en,covidqa_en")
    args = ap.parse_args()
    rng = random.Random(7)
    use = load_embedder("use-multilingual")
    bge = load_embedder("bge-small-en")
    th = EvidenceThresholds()
    grid = {
        "dense": [0.3, 0.35, 0.4, 0.45, 0.5, 0.55],
        "dense_en": [0.6, 0.65, 0.7, 0.72, 0.75, 0.8],
        "coverage": [0.3, 0.4, 0.5, 0.6, 0.7],
    }
    other_set = {"rgb_zh": "covidqa_en", "rgb_en": "covidqa_en", "covidqa_en": "rgb_en"}
    for name in args.sets.split(","):
        triples = load(args.eval_dir / name, args.per_set, rng)
        foreign = off_topic(args.eval_dir / other_set[name], rng)
        f_use = use.embed(foreign)
        f_bge = bge.embed(foreign)
        f_cov_tokens = foreign
        rule_off = 0
        pos: dict[str, list[float]] = {k: [] for k in grid}
        neg: dict[str, list[float]] = {k: [] for k in grid}
        rule_pos = rule_neg = 0
        for question, positive, others in triples:
            texts = [positive, *others]
            q_use = use.embed([query_text(use, question)])[0]
            s_use = cosine(q_use, use.embed(texts))
            if text_language(question) == "en":
                q_bge = bge.embed([query_text(bge, question)])[0]
                s_bge = cosine(q_bge, bge.embed(texts))
            else:
                s_bge = np.full(len(texts), -1.0)
            cov = np.array([coverage(question, t) for t in texts])
            for key, arr in (("dense", s_use), ("dense_en", s_bge), ("coverage", cov)):
                pos[key].append(float(arr[0]))
                neg[key].append(float(arr[1:].max()))
            cov_th = th.coverage if text_language(question) == "zh" else th.coverage_en
            passes = (s_use >= th.dense) | (s_bge >= th.dense_en) | (cov >= cov_th)
            rule_pos += bool(passes[0])
            rule_neg += bool(passes[1:].any())
            o_use = cosine(q_use, f_use)
            o_bge = (
                cosine(q_bge, f_bge)
                if text_language(question) == "en"
                else np.full(len(foreign), -1.0)
            )
            o_cov = np.array([coverage(question, t) for t in f_cov_tokens])
            rule_off += bool(
                ((o_use >= th.dense) | (o_bge >= th.dense_en) | (o_cov >= cov_th)).any()
            )
        n = len(triples)
        print(f"\n== {name} ({n} questions)")
        for key, values in grid.items():
            if key == "dense_en" and name == "rgb_zh":
                continue
            cells = []
            for v in values:
                tp = sum(x >= v for x in pos[key]) / n
                fp = sum(x >= v for x in neg[key]) / n
                cells.append(f"{v}: pos {tp:.2f} neg {fp:.2f}")
            print(f"  {key:9s} " + " | ".join(cells))
        print(
            f"  shipped rule {th}: positives kept {rule_pos / n:.2f}, "
            f"best same-domain unrelated passage passes {rule_neg / n:.2f}, "
            f"best passage of an off-topic library passes {rule_off / n:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
