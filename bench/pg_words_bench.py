"""Word search on the server against the same file, no model needed: how often the server's
fts results are the file's (ids, order and bm25), and the latency of each, in the same run.

    .venv/bin/python bench/pg_words_bench.py [--n 100000] [--queries 200] [--budget N]

The file holds n real sentences (bench/corpus.py's, without vectors: written by plain SQL),
cached at bench/cache/pgwords-N.db; a copy of it (its name holds this process's id) is synced
with `ravana-db sync` into a pgserver started in a temporary folder. Queries are 6 words drawn
from sentences of the file (a fixed seed). --budget sets the postings budget on both sides
(search.POSTINGS_BUDGET, words.POSTINGS_BUDGET) to exercise the two-step path.

Figures: fts_identical (share of queries whose results are the file's, ids, order and bm25),
fts_same_ids (ids and order alone),
file_fts_ms, server_fts_ms (medians), ratio_fts, sync_s (the sync of the copy). Printed as JSON.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import sentences  # noqa: E402
from pg_read_bench import pg_connection, start_server  # noqa: E402

import ravana_db.search as file_search  # noqa: E402
from ravana_db.db import open_db  # noqa: E402
from ravana_db.postgres import read  # noqa: E402
from ravana_db.postgres.connect import open_server  # noqa: E402
from ravana_db.search.query import Query  # noqa: E402

CACHE = Path(__file__).parent / "cache"


def built(n):
    """The file of n sentences (cached), and the sentences."""
    texts = sentences(n)[:n]
    path = CACHE / f"pgwords-{n}.db"
    if not path.exists():
        partial = CACHE / f"pgwords-{n}-{os.getpid()}.partial"
        db = open_db(partial)
        with db.conn:
            db.conn.executemany("INSERT INTO memory (text) VALUES (?)", [(t,) for t in texts])
        db.close()
        partial.rename(path)
    return path, texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--budget", type=int, default=None)
    args = parser.parse_args()
    if args.budget is not None:
        from ravana_db.postgres import words

        file_search.POSTINGS_BUDGET = words.POSTINGS_BUDGET = args.budget
    source, texts = built(args.n)
    rng = random.Random(1)
    queries = [" ".join(rng.sample(texts[i].split(), min(6, len(texts[i].split()))))
               for i in rng.sample(range(len(texts)), args.queries)]
    copy = CACHE / f"pgwords-{os.getpid()}-{args.n}.db"
    shutil.copyfile(source, copy)
    with tempfile.TemporaryDirectory(prefix="pgwords-") as folder:
        pg = start_server(folder)
        if pg is None:
            return
        try:
            with pg_connection(pg.get_uri()) as conn:
                conn.execute("CREATE DATABASE words")
            url = pg.get_uri().replace("/postgres?", "/words?", 1)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(copy), "sync", url],
                           check=True, stdout=subprocess.DEVNULL)
            result = {"n": args.n, "sync_s": round(time.perf_counter() - start, 1)}
            result.update(compare(copy, url, queries))
            print(json.dumps(result, indent=2))
        finally:
            pg.cleanup()
            copy.unlink(missing_ok=True)


def compare(path, url, queries):
    db = open_db(path, create=False, write=False)
    server = open_server(url)
    same, same_ids, file_s, server_s = [], [], [], []
    for text in queries:
        q = Query(text, mode="fts", top_n=10)
        started = time.perf_counter()
        here = [(r["id"], r["bm25"]) for r in file_search.search(db, q, touch=False)]
        middle = time.perf_counter()
        there = [(r["id"], r["bm25"]) for r in read.search(server, q)]
        file_s.append(middle - started)
        server_s.append(time.perf_counter() - middle)
        same.append(here == there)
        same_ids.append([d for d, _ in here] == [d for d, _ in there])
    server.close()
    db.close()
    file_ms, server_ms = statistics.median(file_s) * 1000, statistics.median(server_s) * 1000
    return {"queries": len(queries), "fts_identical": round(statistics.mean(same), 4),
            "fts_same_ids": round(statistics.mean(same_ids), 4),
            "file_fts_ms": round(file_ms, 2), "server_fts_ms": round(server_ms, 2),
            "ratio_fts": round(server_ms / file_ms, 2)}


if __name__ == "__main__":
    main()
