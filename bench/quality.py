"""Search quality for fts, vector and hybrid.

    python bench/quality.py [--verbose]    # labelled fixture: nDCG@10, MRR, hit@1 (in-process)
    python bench/quality.py --public       # NFCorpus (BEIR) test set: nDCG@10, recall@100

--public goes through the CLI: the corpus is logged with one `ravana-db log memory --stdin`
(cached in bench/cache/nfcorpus.db; the first run embeds 3,633 abstracts), then each mode
answers all test queries in one `ravana-db query --stdin` process.
"""

import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ravana_db.db import open_db
from ravana_db.embed import Embedder
from ravana_db.models import Memory, validate
from ravana_db.search import Query, search
from ravana_db.store import write

FIXTURES = Path(__file__).parent.parent / "fixtures"
NFCORPUS = Path("/work/shared/eval/nfcorpus")
CACHE = Path(__file__).parent / "cache"
RAVANA = Path(sys.executable).parent / "ravana-db"
BM25_BASELINE = {"ndcg@10": 0.3216, "recall@100": 0.2475, "empty": 15}  # NFCORPUS/README.md


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


def trec_ndcg(found, grades, k=10):
    """nDCG@k as trec_eval's ndcg_cut: qrels grades as gains, unjudged documents gain 0."""
    dcg = sum(grades.get(key, 0) / math.log2(rank + 2) for rank, key in enumerate(found[:k]))
    ideal = sum(g / math.log2(rank + 2)
                for rank, g in enumerate(sorted(grades.values(), reverse=True)[:k]))
    return dcg / ideal


def nfcorpus_db():
    """The NFCorpus database, built once through `ravana-db log memory --stdin`."""
    path = CACHE / "nfcorpus.db"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    with gzip.open(NFCORPUS / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    lines = "".join(json.dumps({"key": d["_id"], "text": d["title"] + "\n" + d["text"]}) + "\n"
                    for d in docs)
    start = time.perf_counter()
    subprocess.run([RAVANA, "--db", tmp, "--quiet", "log", "memory", "--stdin"], input=lines,
                   text=True, stdout=subprocess.DEVNULL, check=True)
    print(f"built {path} from {len(docs)} docs in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    os.replace(tmp, path)
    return path


def public():
    """nDCG@10 and recall@100 on NFCorpus's test queries, each mode through one CLI process."""
    qrels = {}
    with open(NFCORPUS / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, doc, grade = line.rstrip("\r\n").split("\t")
            if int(grade) > 0:
                qrels.setdefault(qid, {})[doc] = int(grade)
    queries = (NFCORPUS / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    texts = {q["_id"]: q["text"] for q in map(json.loads, queries)}
    qids = sorted(qrels)
    # One JSON line per query, so the CLI's `line` n is qids[n - 1].
    lines = "".join(json.dumps({"text": texts[qid]}) + "\n" for qid in qids)
    db = nfcorpus_db()
    report = {}
    for mode in ("fts", "vector", "hybrid"):
        start = time.perf_counter()
        out = subprocess.run([RAVANA, "--db", db, "query", "--stdin", "--kind", "memory",
                              "--top-n", "100", "--no-touch", "--mode", mode, "--format", "jsonl"],
                             input=lines, text=True, capture_output=True, check=True).stdout
        seconds = time.perf_counter() - start
        found = {qid: [] for qid in qids}
        for row in map(json.loads, out.splitlines()):
            found[qids[row["line"] - 1]].append(row["key"])
        report[mode] = {
            "ndcg@10": sum(trec_ndcg(found[q], qrels[q]) for q in qids) / len(qids),
            "recall@100": sum(len(set(found[q][:100]) & qrels[q].keys()) / len(qrels[q])
                              for q in qids) / len(qids),
            "empty": sum(not found[q] for q in qids),
            "seconds": seconds,
        }
    return report, len(qids)


if __name__ == "__main__":
    if "--public" in sys.argv:
        report, n = public()
        print(f"NFCorpus test, {n} queries, each mode in one `ravana-db query --stdin` process")
        print("mode                   nDCG@10  recall@100  empty  run total s  per query ms")
        for mode, r in report.items():
            print(f"{mode:21}  {r['ndcg@10']:.4f}   {r['recall@100']:.4f}     {r['empty']:5}  "
                  f"{r['seconds']:11.1f}  {1000 * r['seconds'] / n:12.1f}")
        print(f"{'BM25 baseline (FTS5)':21}  {BM25_BASELINE['ndcg@10']:.4f}   "
              f"{BM25_BASELINE['recall@100']:.4f}     {BM25_BASELINE['empty']:5}  (published, NFCorpus README)")
    else:
        for mode, figures in evaluate("--verbose" in sys.argv).items():
            print(f"{mode:7}", "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
