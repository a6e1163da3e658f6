"""`ravana-db sync` into PostgreSQL 16 + pgvector (pgserver), next to baselines in this run.

    .venv/bin/python bench/sync_bench.py [--rows N] [--runs N]

- full: the first sync of a file of N memories (default 100,000, real sentences and their real
  vectors, bench/corpus.py): rows/s (every row written: memories, their search entries, the
  file's policy rows) and vectors/s over the load, the HNSW build after it on its own. Baseline:
  a bare binary COPY of the same memory and doc rows (values converted beforehand, not timed)
  into the same empty tables, and the same HNSW build.
- incremental: 1% of the memories changed (importance) then synced, next to the full sync.
- empty: a sync with nothing to send.
- tracking: inserting 10,000 memories in one transaction with tracking on (a server
  registered) vs off, and 4x as many, to show the cost per row does not grow.

Every figure is the median of --runs (3); results are printed as JSON and written to
bench/results/sync.json. Skipped, with one line, where pgserver cannot start a server.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CACHE  # noqa: E402
from run import CachedEmbedder, corpus  # noqa: E402

from ravana_db.db import open_db, transaction  # noqa: E402
from ravana_db.index import apply, prepare  # noqa: E402
from ravana_db.postgres import rows as values  # noqa: E402
from ravana_db.postgres import schema  # noqa: E402
from ravana_db.postgres.server import connect  # noqa: E402
from ravana_db.postgres.sync import sync  # noqa: E402

ROOT = Path(__file__).parent.parent


def build(n):
    """A file of n memories with their vectors (cached as bench/cache/sync-db-N.db)."""
    path = CACHE / f"sync-db-{n}.db"
    if path.exists():
        return path
    texts, vectors, _, _ = corpus()
    texts, vectors = texts[:n], vectors[:n]
    tmp = path.with_suffix(".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    db = open_db(tmp)
    embedder = CachedEmbedder(texts, vectors)
    step = 50_000
    for start in range(0, n, step):
        with transaction(db):
            db.conn.executemany(
                "INSERT INTO memory(text, memory_type, source, created_at, metadata) "
                "VALUES (?, ?, ?, ?, ?)",
                [(t, "fact" if i % 3 else "episodic", f"source-{i % 7}",
                  f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00.000Z",
                  json.dumps({"n": i, "tags": ["bench"]}))
                 for i, t in enumerate(texts[start:start + step], start)])
        with transaction(db):
            apply(db, prepare(db, embedder, backlog=step))
        print(f"  built {min(start + step, n)}/{n}", file=sys.stderr, flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    tmp.rename(path)
    return path


def fresh_copy(source, folder, name):
    import sqlite3

    target = Path(folder) / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(source) as a, sqlite3.connect(target) as b:
        a.backup(b)
    return target


def fresh_database(admin_url, name):
    with connect(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.replace("/postgres?", f"/{name}?", 1)


def full_sync(source, admin_url, folder, run):
    path = fresh_copy(source, folder, f"sync-full-{run}.db")
    url = fresh_database(admin_url, f"full_{run}")
    db = open_db(path)
    started = time.perf_counter()
    report = sync(db, path, url)
    total = time.perf_counter() - started
    db.close()
    index = report.timings.get("vector_index", 0.0)
    return {"seconds": total, "load_seconds": total - index, "index_seconds": index,
            "rows": report.rows, "vectors": report.vectors}, path, url


def bare_copy(source, admin_url, run):
    """The same memory and doc rows, converted beforehand, COPYed into empty tables."""
    import sqlite3

    url = fresh_database(admin_url, f"bare_{run}")
    file_id = uuid.uuid4()
    staged = {}
    with sqlite3.connect(source) as file:
        for table in ("memory", "doc"):
            names = [n for n, _ in schema.columns(table)]
            convert = values.converters(table)
            cols = ", ".join(f"t.[{n}]" for n in names)
            if table == "doc":
                found = file.execute(f"SELECT {cols}, v.embedding FROM doc t "
                                     "LEFT JOIN doc_vec v ON v.doc_id = t.id").fetchall()
                vecs = values.vectors([r[-1] for r in found], schema.DIM)
                staged[table] = [[file_id, *(f(v) for f, v in zip(convert, r)), e]
                                 for r, e in zip(found, vecs)]
            else:
                found = file.execute(f"SELECT {cols} FROM [{table}] t").fetchall()
                staged[table] = [[file_id, *(f(v) for f, v in zip(convert, r))] for r in found]
    with connect(url) as conn:
        schema.migrate(conn)
        values.register(conn)
        conn.execute(f"DROP INDEX {schema.HNSW}")
        conn.execute("INSERT INTO ravana_file (file_id, name) VALUES (%s, 'bare')", (file_id,))
        started = time.perf_counter()
        with conn.transaction():
            for table, rows in staged.items():
                names = ["file_id", *(n for n, _ in schema.columns(table))]
                names += ["embedding"] if table == "doc" else []
                cols = ", ".join(schema.quoted(n) for n in names)
                with conn.cursor().copy(f"COPY {schema.quoted(table)} ({cols}) FROM STDIN "
                                        "(FORMAT BINARY)") as copy:
                    copy.set_types(values.copy_types(conn, table))
                    for row in rows:
                        copy.write_row(row)
        load = time.perf_counter() - started
        started = time.perf_counter()
        with conn.transaction():
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            conn.execute(schema.VECTOR_INDEX)
        index = time.perf_counter() - started
    rows = sum(len(r) for r in staged.values())
    return {"load_seconds": load, "index_seconds": index, "rows": rows,
            "vectors": sum(1 for r in staged["doc"] if r[-1] is not None)}


def incremental(path, url, fraction=0.01):
    db = open_db(path)
    n = db.execute("SELECT count(*) FROM memory").fetchone()[0]
    step = round(1 / fraction)
    with transaction(db):
        db.execute("UPDATE memory SET importance = abs(importance - 0.25) WHERE id % ? = 0",
                   (step,))
    started = time.perf_counter()
    report = sync(db, path, url)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    empty = sync(db, path, url)
    empty_seconds = time.perf_counter() - started
    db.close()
    assert empty.rows == 0
    return {"changed": n // step, "rows": report.rows, "seconds": seconds,
            "empty_seconds": empty_seconds}


def tracking(folder, n):
    """Seconds to insert n memories in one transaction, untracked and tracked."""
    out = {}
    for tracked in (False, True):
        path = Path(folder) / f"track-{n}-{tracked}.db"
        db = open_db(path)
        if tracked:
            with transaction(db):
                db.execute("INSERT INTO sync_server (url_hash, url, name) VALUES ('h', 'u', 'n')")
        rows = [(f"memory {i} about tracking costs", f"2026-01-01T00:00:{i % 60:02d}Z")
                for i in range(n)]
        started = time.perf_counter()
        with transaction(db):
            db.conn.executemany("INSERT INTO memory (text, created_at) VALUES (?, ?)", rows)
        out["tracked" if tracked else "untracked"] = time.perf_counter() - started
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return out


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    try:
        import pgserver
    except ImportError:
        print("sync_bench: skipped: pgserver is not installed (pip install '.[test]')")
        return
    folder = tempfile.mkdtemp(prefix="ravana-sync-bench-")
    try:
        server = pgserver.get_server(Path(folder) / "pg", cleanup_mode="stop")
    except Exception as e:  # noqa: BLE001 (any failure to start is a skip, in one line)
        print(f"sync_bench: skipped: no PostgreSQL server starts here ({str(e)[:80]})")
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        results = run(args, server.get_uri(), folder)
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "sync.json").write_text(json.dumps(results, indent=2) + "\n")


def run(args, admin_url, folder):
    source = build(args.rows)
    fulls, bares, incs = [], [], []
    for i in range(args.runs):
        full, path, url = full_sync(source, admin_url, folder, i)
        fulls.append(full)
        incs.append(incremental(path, url))
        bares.append(bare_copy(source, admin_url, i))
        print(f"  run {i + 1}/{args.runs}: full {full['seconds']:.1f} s, "
              f"bare COPY {bares[-1]['load_seconds']:.1f} s", file=sys.stderr, flush=True)
    load, bare_load = median_of(fulls, "load_seconds"), median_of(bares, "load_seconds")
    rows, vectors = fulls[0]["rows"], fulls[0]["vectors"]
    small = [tracking(folder, 10_000) for _ in range(args.runs)]
    large = [tracking(folder, 40_000) for _ in range(args.runs)]
    return {
        "memories": args.rows, "runs": args.runs,
        "full": {
            "rows": rows, "vectors": vectors,
            "seconds": median_of(fulls, "seconds"),
            "load_seconds": load, "hnsw_seconds": median_of(fulls, "index_seconds"),
            "rows_per_s": round(rows / load), "vectors_per_s": round(vectors / load),
            "rows_per_s_with_hnsw": round(rows / median_of(fulls, "seconds")),
        },
        "bare_copy": {
            "rows": bares[0]["rows"], "load_seconds": bare_load,
            "hnsw_seconds": median_of(bares, "index_seconds"),
            "rows_per_s": round(bares[0]["rows"] / bare_load),
        },
        "full_load_vs_bare_copy": round(load / bare_load, 2),
        "incremental": {
            "changed_memories": incs[0]["changed"], "rows": incs[0]["rows"],
            "seconds": median_of(incs, "seconds"),
            "vs_full": round(median_of(incs, "seconds") / median_of(fulls, "seconds"), 4),
        },
        "empty_sync_seconds": median_of(incs, "empty_seconds"),
        "tracking_insert_10k": {
            "untracked_s": median_of(small, "untracked"), "tracked_s": median_of(small, "tracked"),
            "ratio": round(median_of(small, "tracked") / median_of(small, "untracked"), 2)},
        "tracking_insert_40k": {
            "untracked_s": median_of(large, "untracked"), "tracked_s": median_of(large, "tracked"),
            "ratio": round(median_of(large, "tracked") / median_of(large, "untracked"), 2)},
    }


if __name__ == "__main__":
    main()
