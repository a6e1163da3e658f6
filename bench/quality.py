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
from ravana_db.search import search
from ravana_db.search.query import Query
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


def corpus():
    with gzip.open(NFCORPUS / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def cached_db(name, memories):
    """A database in bench/cache built once through `ravana-db log memory --stdin`."""
    path = CACHE / name
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    lines = "".join(json.dumps(m) + "\n" for m in memories)
    start = time.perf_counter()
    subprocess.run([RAVANA, "--db", tmp, "--quiet", "log", "memory", "--stdin"], input=lines,
                   text=True, stdout=subprocess.DEVNULL, check=True)
    print(f"built {path} from {len(memories)} memories in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    os.replace(tmp, path)
    return path


def nfcorpus_db():
    """NFCorpus as memories: title and abstract."""
    return cached_db("nfcorpus.db", [{"key": d["_id"], "text": d["title"] + "\n" + d["text"]}
                                     for d in corpus()])


def long_queries():
    """The long-query check: each NFCorpus title (a sentence of 13 words on median, like a
    claim) asks for its own abstract, indexed without the title (a known-item search:
    grade 1 for that abstract). Titles under 6 words or shared by two papers are left out;
    every third remaining title is asked."""
    docs = corpus()
    counts = {}
    for d in docs:
        counts[d["title"].lower()] = counts.get(d["title"].lower(), 0) + 1
    asked = [d for d in docs
             if len(d["title"].split()) >= 6 and counts[d["title"].lower()] == 1][::3]
    db = cached_db("nfcorpus-abstracts.db", [{"key": d["_id"], "text": d["text"]} for d in docs])
    return db, {d["_id"]: d["title"] for d in asked}, {d["_id"]: {d["_id"]: 1} for d in asked}


def nfcorpus_test():
    """NFCorpus's test set: the shared database, the queries and their graded judgements."""
    qrels = {}
    with open(NFCORPUS / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, doc, grade = line.rstrip("\r\n").split("\t")
            if int(grade) > 0:
                qrels.setdefault(qid, {})[doc] = int(grade)
    queries = (NFCORPUS / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    texts = {q["_id"]: q["text"] for q in map(json.loads, queries)}
    return nfcorpus_db(), {qid: texts[qid] for qid in qrels}, qrels


def through_cli(db, texts, qrels, modes=("fts", "vector", "hybrid")):
    """nDCG@10 and recall@100 of each mode, all queries asked through one `query --stdin`."""
    qids = sorted(qrels)
    # One JSON line per query, so the CLI's `line` n is qids[n - 1].
    lines = "".join(json.dumps({"text": texts[qid]}) + "\n" for qid in qids)
    report = {}
    for mode in modes:
        start = time.perf_counter()
        out = subprocess.run([RAVANA, "--db", db, "query", "--stdin", "--kind", "memory",
                              "--top-n", "100", "--no-touch", "--mode", mode, "--format", "jsonl"],
                             input=lines, text=True, capture_output=True, check=True).stdout
        seconds = time.perf_counter() - start
        found = {qids[a["line"] - 1]: [r["key"] for r in a["results"]]
                 for a in map(json.loads, out.splitlines())}
        report[mode] = {
            "ndcg@10": sum(trec_ndcg(found[q], qrels[q]) for q in qids) / len(qids),
            "recall@100": sum(len(set(found[q][:100]) & qrels[q].keys()) / len(qrels[q])
                              for q in qids) / len(qids),
            "empty": sum(not found[q] for q in qids),
            "seconds": seconds,
        }
    return report, len(qids)


def print_report(title, report, n):
    print(title)
    print("mode                   nDCG@10  recall@100  empty  run total s  per query ms")
    for mode, r in report.items():
        print(f"{mode:21}  {r['ndcg@10']:.4f}   {r['recall@100']:.4f}     {r['empty']:5}  "
              f"{r['seconds']:11.1f}  {1000 * r['seconds'] / n:12.1f}")


if __name__ == "__main__":
    if "--public" in sys.argv:
        report, n = through_cli(*nfcorpus_test())
        print_report(f"NFCorpus test, {n} queries, each mode in one `ravana-db query --stdin` "
                     f"process", report, n)
        print(f"{'BM25 baseline (FTS5)':21}  {BM25_BASELINE['ndcg@10']:.4f}   "
              f"{BM25_BASELINE['recall@100']:.4f}     {BM25_BASELINE['empty']:5}  "
              f"(published, NFCorpus README)")
        report, n = through_cli(*long_queries())
        print_report(f"\nLong queries: {n} NFCorpus titles, each asking for its own abstract "
                     f"(known item)", report, n)
    else:
        for mode, figures in evaluate("--verbose" in sys.argv).items():
            print(f"{mode:7}", "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
