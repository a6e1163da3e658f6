"""Search quality on the labelled fixture: nDCG@10, MRR and hit@1 for fts, vector and hybrid.

Usage: python bench/quality.py [--verbose]
"""

import json
import math
import sys
import tempfile
from pathlib import Path

from ravana_db.db import open_db
from ravana_db.embed import Embedder
from ravana_db.models import Memory, validate
from ravana_db.search import Query, search
from ravana_db.store import write

FIXTURES = Path(__file__).parent.parent / "fixtures"


def ndcg(found, relevant, k=10):
    # Graded: the first-listed relevant item counts most (gain len..1).
    gains = {key: len(relevant) - i for i, key in enumerate(relevant)}
    dcg = sum(gains.get(key, 0) / math.log2(rank + 2) for rank, key in enumerate(found[:k]))
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(gains.values(),
                                                                        reverse=True)[:k]))
    return dcg / ideal


def evaluate(verbose=False):
    embedder = Embedder()
    cases = [json.loads(line) for line in (FIXTURES / "search_eval.jsonl").open()]
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "quality.db")
        records = [validate(Memory, json.loads(line))
                   for line in (FIXTURES / "memories.jsonl").open()]
        write(db, records, embedder=embedder)
        report = {}
        for mode in ("fts", "vector", "hybrid"):
            scores = {"ndcg@10": [], "mrr": [], "hit@1": []}
            for case in cases:
                found = [r["key"] for r in search(db, Query(case["query"], mode=mode, top_n=10),
                                                  embedder=embedder, touch=False)]
                rr = next((1 / (i + 1) for i, key in enumerate(found) if key in case["relevant"]),
                          0.0)
                scores["ndcg@10"].append(ndcg(found, case["relevant"]))
                scores["mrr"].append(rr)
                scores["hit@1"].append(float(bool(found) and found[0] in case["relevant"]))
                if verbose and rr < 1:
                    print(f"{mode:6} {case['style']:10} rr={rr:.2f} {case['query']!r} "
                          f"want {case['relevant']} got {found[:3]}", file=sys.stderr)
            report[mode] = {name: round(sum(v) / len(v), 3) for name, v in scores.items()}
        db.close()
    return report


if __name__ == "__main__":
    for mode, figures in evaluate("--verbose" in sys.argv).items():
        print(f"{mode:7}", "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
