"""Feed ingest benchmarks: every figure a median over runs, next to a baseline measured in
the same run.

    .venv/bin/python bench/feeds_bench.py [--runs N] [--items N] [--only NAME ...]

NAME: parse, embed, lock.
  parse  items/s of feeds.fetch_all + feeds.store(..., embedder=None) on a 1,000-item RSS 2.0 file
         (fresh database each run), next to feedparser.parse() of the same bytes (goal: >= 0.8x).
  embed  items/s of the same with the real Embedder, next to store.write of as many Memory
         records with the same searchable texts (title and summary), fresh database each run.
  lock   the write lock's longest hold during feeds.ingest of that feed (embedded): time
         between BEGIN IMMEDIATE and COMMIT, next to the whole ingest and to the hold of
         store.write of the same texts as memories.

Texts are real: sentences from the docstrings of the installed Python sources (corpus.py), as
titles and summaries. The model is loaded (and warmed up) once, outside every timing. Results
are printed as JSON.
"""

import argparse
import html
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import sentences

from ravana_db import feeds
from ravana_db.db import open_db
from ravana_db.embed import Embedder


def median(values):
    return statistics.median(values)


def feed_file(folder, n):
    """An RSS 2.0 file of n items with real sentences; returns (path, [searchable texts])."""
    texts = sentences(2 * n)
    if len(texts) < 2 * n:
        sys.exit(f"only {len(texts)} sentences found, {2 * n} wanted")
    items, searchable = [], []
    for i in range(n):
        title, summary = texts[i][:200], texts[n + i]
        searchable.append(f"{title}\n{summary}")
        day, minute = 1 + i % 28, i % 1440
        items.append(
            f"<item><title>{html.escape(title)}</title>"
            f"<link>https://bench.example/news/{i}</link>"
            f'<guid isPermaLink="false">bench-{i}</guid>'
            f"<description>{html.escape(summary)}</description>"
            f"<pubDate>{day:02d} Nov 2026 {minute // 60:02d}:{minute % 60:02d}:00 GMT"
            "</pubDate></item>")
    path = Path(folder) / "bench-feed.xml"
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
                    "<title>Bench Wire</title><link>https://bench.example/</link>"
                    + "\n".join(items) + "</channel></rss>\n", encoding="utf-8")
    return path, searchable


def fresh_db(folder, name):
    path = Path(folder) / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return open_db(path)


def ingest_once(folder, path, embedder, run):
    """fetch + store of the feed into a fresh database: (seconds, report)."""
    db = fresh_db(folder, f"feed-{run}.db")
    (row,) = feeds.subscribe(db, [path.as_uri()])
    start = time.perf_counter()
    (fetched,) = feeds.fetch_all([row])
    report = feeds.store(db, fetched, embedder=embedder)
    seconds = time.perf_counter() - start
    db.close()
    assert report["status"] == "ok" and report["new"] == len(fetched.entries), report
    return seconds, report


def bench_parse(folder, path, n, runs, **_):
    import feedparser

    body = path.read_bytes()
    ours, theirs = [], []
    for run in range(runs + 1):  # the first round warms imports and caches up
        start = time.perf_counter()
        parsed = feedparser.parse(body)
        t_parse = time.perf_counter() - start
        assert len(parsed.entries) == n
        t_ours, _ = ingest_once(folder, path, None, run)
        if run:
            theirs.append(t_parse)
            ours.append(t_ours)
    rate, base = n / median(ours), n / median(theirs)
    return {"what": f"fetch + store (no embedding, fresh file) of a {n}-item RSS 2.0 file, "
                    "next to feedparser.parse() of the same bytes",
            "items": n, "ingest_items_per_s": round(rate, 1),
            "feedparser_items_per_s": round(base, 1), "ratio": round(rate / base, 3),
            "goal_ratio": 0.8, "ingest_median_s": round(median(ours), 4),
            "feedparser_median_s": round(median(theirs), 4), "runs": len(ours)}


def write_memories(folder, texts, embedder, run, trace=None):
    """store.write of len(texts) memories with these texts into a fresh file: seconds."""
    from ravana_db.models import Memory
    from ravana_db.store import write

    db = fresh_db(folder, f"memories-{run}.db")
    if trace is not None:
        db.conn.set_trace_callback(trace)
    records = [Memory(text=t) for t in texts]
    start = time.perf_counter()
    write(db, records, embedder=embedder)
    seconds = time.perf_counter() - start
    db.close()
    return seconds


def bench_embed(folder, path, n, runs, embedder, texts, **_):
    ours, theirs = [], []
    for run in range(runs):
        ours.append(ingest_once(folder, path, embedder, run)[0])
        theirs.append(write_memories(folder, texts, embedder, run))
    rate, base = n / median(ours), n / median(theirs)
    return {"what": f"fetch + store with the real Embedder (fresh file) of the {n}-item feed, "
                    f"next to store.write of {n} memories with the same texts (title and "
                    "summary), embedded, fresh file",
            "items": n, "ingest_items_per_s": round(rate, 1),
            "write_path_items_per_s": round(base, 1), "ratio": round(rate / base, 3),
            "ingest_median_s": round(median(ours), 3),
            "write_path_median_s": round(median(theirs), 3), "runs": len(ours)}


def lock_holds(marks):
    """(BEGIN IMMEDIATE, COMMIT) pairs from traced statements: the seconds each held."""
    holds, begun = [], None
    for sql, t in marks:
        if sql == "BEGIN IMMEDIATE":
            begun = t
        elif sql in ("COMMIT", "ROLLBACK") and begun is not None:
            holds.append(t - begun)
            begun = None
    return holds


def bench_lock(folder, path, n, runs, embedder, texts, **_):
    longest, totals, transactions, memory_holds = [], [], [], []
    for run in range(runs):
        db = fresh_db(folder, f"lock-{run}.db")
        marks = []
        db.conn.set_trace_callback(
            lambda sql, marks=marks: marks.append((sql, time.perf_counter())))
        start = time.perf_counter()
        rows = feeds.subscribe(db, [path.as_uri()])
        (report,) = feeds.ingest(db, rows, embedder=embedder)
        totals.append(time.perf_counter() - start)
        db.close()
        assert report["new"] == n, report
        holds = lock_holds(marks)
        longest.append(max(holds))
        transactions.append(len(holds))
        mem_marks = []
        write_memories(folder, texts, embedder, f"lock-{run}",
                       trace=lambda sql, m=mem_marks: m.append((sql, time.perf_counter())))
        memory_holds.append(max(lock_holds(mem_marks)))
    return {"what": f"feeds.subscribe + feeds.ingest (embedded, fresh file) of the {n}-item "
                    "feed: the longest time between BEGIN IMMEDIATE and COMMIT, next to the "
                    f"whole call and to the hold of store.write of {n} memories with the same "
                    "texts",
            "lock_held_longest_median_s": round(median(longest), 3),
            "ingest_total_median_s": round(median(totals), 3),
            "lock_share": round(median(longest) / median(totals), 4),
            "write_path_lock_held_median_s": round(median(memory_holds), 3),
            "ratio_to_write_path": round(median(longest) / median(memory_holds), 3),
            "transactions_per_ingest": max(transactions), "runs": len(longest)}


BENCHES = {"parse": bench_parse, "embed": bench_embed, "lock": bench_lock}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--runs", type=int, default=3, help="runs of each timing (>= 3)")
    parser.add_argument("--items", type=int, default=1000, help="items in the feed")
    args = parser.parse_args()
    runs = max(args.runs, 3)
    results = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as folder:
        path, texts = feed_file(folder, args.items)
        embedder = Embedder()
        embedder.embed(["warm up"])  # model load excluded from every timing
        for name in args.only:
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = BENCHES[name](folder=folder, path=path, n=args.items, runs=runs,
                                          embedder=embedder, texts=texts)
            print(json.dumps({name: results[name]}, indent=2), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
