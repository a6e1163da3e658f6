"""Query latency on the server (files synced into PostgreSQL + pgvector) against the same
queries on the file, in the same run; and the HNSW index's recall against exact search.

    .venv/bin/python bench/pg_read_bench.py [--sizes 100000,1000000] [--queries N] [--fresh]

For each size, bench/run.py's build(n) makes the file (cached in bench/cache/); a copy of it
(bench/cache/pgread-db-N.db: sync registers the server in the file it reads) is synced with
the real `ravana-db sync` into a pgserver (PostgreSQL 16 + pgvector from PyPI) kept in
bench/cache/pg-read/ and its database bench_N. Both are reused by the next run, whose sync
then has nothing to send (a 1M-row sync and its HNSW build take minutes); --fresh drops them
and syncs again. Where that server cannot start, the benchmark says so in one line and ends.

Figures, medians over --queries held-out sentences (their vectors are the model's, looked up
instead of recomputed on both sides, so that search alone is measured):
  file_*/server_*  search.search on the file; postgres.read.search on the server (one
                   connection), for fts, vector and hybrid, and vector with --kind memory
  ratio_*          the server's median over the file's
  fts_identical    share of the queries whose fts top 10 on the server is the file's, ids
                   and order (an exact mode: the file's tokens and bm25() on both sides)
  fts_overlap_at_10, hybrid_overlap_at_10, hybrid_identical
                   mean share of the file's top 10 the server returns; identical share
  recall_at_10     the server's vector top 10 (HNSW, ef_search as read.py sets it) against
                   exact (the same query without the index), mean over the queries; also for
                   a few other ef_search values
  plan_*           the first lines of EXPLAIN of the vector query, without and with filters
Results are printed as JSON and written to bench/results/pg_read.json.
"""

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import CachedEmbedder, build, corpus  # noqa: E402

from ravana_db.db import open_db  # noqa: E402
from ravana_db.postgres import read  # noqa: E402
from ravana_db.postgres.connect import open_server  # noqa: E402
from ravana_db.search import search  # noqa: E402
from ravana_db.search.query import Query  # noqa: E402

ROOT = Path(__file__).parent.parent
CACHE = ROOT / "bench" / "cache"
SERVER = CACHE / "pg-read"
CASES = {"fts": {"mode": "fts"}, "vector": {"mode": "vector"}, "hybrid": {"mode": "hybrid"},
         "vector_kind": {"mode": "vector", "kind": "memory"}}
EF_VALUES = (40, 100, 200, 400)


def start_server(folder):
    """A pgserver in folder, or None (said in one line) where it cannot start."""
    try:
        import pgserver

        return pgserver.get_server(folder, cleanup_mode="stop")
    except Exception as e:  # noqa: BLE001 (any failure to start ends the benchmark, said once)
        print(f"skipped: no PostgreSQL server: pgserver cannot start here ({str(e)[:80]})")
        return None


def synced(n, url, fresh):
    """The file of n memories, copied and synced into url; returns (copy, sync seconds,
    whether the copy and its server database were reused)."""
    source = build(n)
    copy = CACHE / f"pgread-db-{n}.db"
    reused = copy.exists() and not fresh
    if not reused:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(source, copy)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(copy), "sync", url,
                    "--name", f"bench-{n}"], check=True, stdout=subprocess.DEVNULL)
    return copy, time.perf_counter() - start, reused


def latencies(fn, queries):
    """Median seconds of fn(text) over the queries, after one warm-up."""
    fn(queries[0])
    times = []
    for text in queries:
        start = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def recall(server, vectors, efs):
    """{ef: mean share of the exact top 10 that the HNSW top 10 finds at ef_search = ef}."""
    conn, found = server.conn, {ef: [] for ef in efs}
    for vector in vectors:
        text = read.vector_text(vector)
        exact = {r[0] for r in conn.execute(
            "SELECT id FROM doc ORDER BY (embedding <=> %s::vector) + 0 LIMIT 10", [text])}
        for ef in efs:
            with conn.transaction():
                conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                approx = {r[0] for r in conn.execute(
                    "SELECT id FROM doc ORDER BY embedding <=> %s::vector LIMIT 10", [text])}
            found[ef].append(len(approx & exact) / 10)
    return {ef: round(statistics.mean(f), 4) for ef, f in found.items()}


def plan(server, vector, where):
    """The first lines of the vector query's plan under `where`."""
    text = read.vector_text(vector)
    rows = server.conn.execute(
        f"EXPLAIN SELECT id FROM doc d WHERE d.embedding IS NOT NULL AND {where} "
        "ORDER BY d.embedding <=> %s::vector LIMIT 20", [text]).fetchall()
    return [re.sub(r"'\[[^]]*\]'", "'[...]'", line.strip()) for (line,) in rows[:4]]


def run_size(n, url, queries, vectors, embedder, fresh):
    copy, sync_s, reused = synced(n, url, fresh)
    db = open_db(copy, create=False, write=False)
    server = open_server(url)
    result = {"rows": n, "sync_s": round(sync_s, 1), "reused": reused}
    for name, options in CASES.items():
        def on_file(text, options=options):
            return search(db, Query(text, top_n=10, **options), embedder=embedder, touch=False)

        def on_server(text, options=options):
            return read.search(server, Query(text, top_n=10, **options), embedder=embedder)

        file_s, server_s = latencies(on_file, queries), latencies(on_server, queries)
        result[f"file_{name}_ms"] = round(file_s * 1000, 2)
        result[f"server_{name}_ms"] = round(server_s * 1000, 2)
        result[f"ratio_{name}"] = round(server_s / file_s, 2)
    result.update(agreement(db, server, queries, embedder))
    # At 1M (the 100k vectors ten times, each copy with noise) a query's neighbours are
    # clusters of near-copies: a harder test of the index than 100k distinct sentences.
    result["ef_search"] = read.EF_SEARCH
    result["recall_at_10"] = recall(server, vectors[:50], sorted({*EF_VALUES, read.EF_SEARCH}))
    result["plan_vector"] = plan(server, vectors[0], "true")
    result["plan_vector_kind_file"] = plan(
        server, vectors[0], f"d.kind = 'memory' AND d.file_id = '{next(iter(server.names))}'")
    server.close()
    db.close()
    return result


def sizes(values):
    """--sizes: numbers separated by commas or spaces."""
    return [int(v) for value in values for v in value.split(",") if v]


def agreement(db, server, queries, embedder):
    """How often the server's top 10 is the file's, fts and hybrid, over the queries."""
    found = {}
    for mode in ("fts", "hybrid"):
        same, overlap = [], []
        for text in queries:
            q = Query(text, top_n=10, mode=mode)
            here = [(r["kind"], r["id"]) for r in search(db, q, embedder=embedder, touch=False)]
            there = [(r["kind"], r["id"]) for r in read.search(server, q, embedder=embedder)]
            same.append(here == there)
            overlap.append(len(set(here) & set(there)) / len(here) if here else float(not there))
        found[f"{mode}_identical"] = round(statistics.mean(same), 4)
        found[f"{mode}_overlap_at_10"] = round(statistics.mean(overlap), 4)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["100000,1000000"])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--fresh", action="store_true",
                        help="drop the kept server databases and file copies, sync again")
    args = parser.parse_args()
    SERVER.mkdir(parents=True, exist_ok=True)
    pg = start_server(SERVER)
    if pg is None:
        return
    try:
        texts, vectors, query_texts, query_vectors = corpus()
        embedder = CachedEmbedder([*texts, *query_texts], [*vectors, *query_vectors])
        queries = query_texts[:args.queries]
        results = {}
        for n in sizes(args.sizes):
            # A database per size: each server database holds one file.
            copy = CACHE / f"pgread-db-{n}.db"
            with pg_connection(pg.get_uri()) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (f"bench_{n}",)).fetchone()
                if args.fresh or not exists or not copy.exists():
                    conn.execute(f"DROP DATABASE IF EXISTS bench_{n} WITH (FORCE)")
                    conn.execute(f"CREATE DATABASE bench_{n}")
            fresh = args.fresh or not exists
            url = pg.get_uri().replace("/postgres?", f"/bench_{n}?", 1)
            results[str(n)] = run_size(n, url, queries, query_vectors[:args.queries],
                                       embedder, fresh)
            print(json.dumps({n: results[str(n)]}, indent=2), flush=True)
    finally:
        pg.cleanup()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "pg_read.json").write_text(json.dumps(results, indent=2) + "\n")


def pg_connection(url):
    import psycopg

    return psycopg.connect(url, autocommit=True)


if __name__ == "__main__":
    main()
