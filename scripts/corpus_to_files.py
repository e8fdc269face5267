"""Write an evaluation corpus (corpus.jsonl: {"doc_id", "title", "text", "lang"}) out as one
.txt file per document, so `zhiku bench ingest --docs DIR` can ingest it like a user's folder.

Usage: python scripts/corpus_to_files.py CORPUS_JSONL OUT_DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def main(corpus: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            name = re.sub(r"[^\w.-]+", "_", doc["doc_id"])[:120]
            (out / f"{name}.txt").write_text(doc["text"], encoding="utf-8")
            n += 1
    print(f"wrote {n} documents to {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
