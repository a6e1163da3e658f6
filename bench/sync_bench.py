"""`ravana-db sync` into PostgreSQL 16 + pgvector (pgserver), next to baselines in this run.

    .venv/bin/python bench/sync_bench.py [--rows N] [--runs N]

- full: the first sync of a file of N memories (bench/run.py's build: bench/cache/db-N.db, real
  sentences and their real vectors) into a server whose schema is made (and timed) beforehand,
  as a server shared by many files has it: rows/s (every row written: memories, their search
  entries, the file's policy rows) and vectors/s over the load, the HNSW build after it on its
  own, and where the load's time went (sync's Report.timings: reading the file, encoding,
  the server's transactions, the main thread waiting for them). Baseline: a bare binary COPY
  of the same memory and doc rows, read from the same migrated copy of the file and encoded
  beforehand (not timed), into the same empty tables, and (in the first run) the same HNSW build.
- incremental: 1% of the memories changed (importance) then synced, next to the full sync.
- empty: a sync with nothing to send.
- tracking: inserting 10,000 memories in one transaction with tracking on (a server
  registered) vs off, and 4x as many, to show the cost per row does not grow.

Every figure is the median of --runs (3), with the load average before and after; results are
printed as JSON and written to bench/results/sync.json. Skipped, with one line, where pgserver
cannot start a server.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import build  # noqa: E402

from ravana_db.db import open_db, transaction  # noqa: E402
from ravana_db.postgres import rows as values  # noqa: E402
from ravana_db.postgres import schema, write  # noqa: E402
from ravana_db.postgres.server import connect  # noqa: E402
from ravana_db.postgres.sync import index_memory, sync  # noqa: E402

ROOT = Path(__file__).parent.parent
STEPS = ("start", "read", "encode", "send", "wait", "advance")


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
    # The server's schema is made once per server, not per file: made beforehand, as for the
    # bare COPY, and timed on its own.
    started = time.perf_counter()
    with connect(url) as conn:
        schema.migrate(conn)
    migrate = time.perf_counter() - started
    db = open_db(path)
    started = time.perf_counter()
    report = sync(db, path, url)
    total = time.perf_counter() - started
    db.close()
    index = report.timings.get("vector_index", 0.0)
    steps = {f"{k}_seconds": v for k, v in report.timings.items() if k != "vector_index"}
    return {"seconds": total, "load_seconds": total - index, "index_seconds": index,
            "migrate_seconds": migrate, "rows": report.rows, "vectors": report.vectors,
            **steps}, path, url


def bare_copy(path, admin_url, run):
    """The same memory and doc rows, read from the synced copy at path and encoded
    beforehand, COPYed into empty tables."""
    import sqlite3

    url = fresh_database(admin_url, f"bare_{run}")
    file_id = uuid.uuid4()
    payloads, rows, vectors = {}, 0, 0
    with sqlite3.connect(path) as file:
        for table in ("memory", "doc"):
            cols = ", ".join(f"t.[{n}]" for n, _ in schema.columns(table))
            if table == "doc":
                found = file.execute(f"SELECT {cols}, v.embedding FROM doc t "
                                     "LEFT JOIN doc_vec v ON v.doc_id = t.id").fetchall()
            else:
                found = file.execute(f"SELECT {cols} FROM [{table}] t").fetchall()
            payloads[table], sent, vecs, _ = values.encode(table, found, file_id)
            rows, vectors = rows + sent, vectors + vecs
    with connect(url) as conn:
        schema.migrate(conn)
        conn.execute(f"DROP INDEX {schema.HNSW}")
        conn.execute("INSERT INTO ravana_file (file_id, name) VALUES (%s, 'bare')", (file_id,))
        started = time.perf_counter()
        with conn.transaction():
            for table, data in payloads.items():
                write.copy(conn, table, table, data)
        load = time.perf_counter() - started
        index = None
        if run == 0:  # the same build as the sync's: once is enough to compare
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(f"SET LOCAL maintenance_work_mem = '{index_memory(conn)}kB'")
                conn.execute(schema.VECTOR_INDEX)
            index = time.perf_counter() - started
    return {"load_seconds": load, "index_seconds": index, "rows": rows, "vectors": vectors}


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
    load_before = os.getloadavg()
    fulls, bares, incs = [], [], []
    for i in range(args.runs):
        full, path, url = full_sync(source, admin_url, folder, i)
        fulls.append(full)
        bares.append(bare_copy(path, admin_url, i))
        incs.append(incremental(path, url))
        print(f"  run {i + 1}/{args.runs}: full {full['seconds']:.1f} s, "
              f"bare COPY {bares[-1]['load_seconds']:.1f} s", file=sys.stderr, flush=True)
    load, bare_load = median_of(fulls, "load_seconds"), median_of(bares, "load_seconds")
    rows, vectors = fulls[0]["rows"], fulls[0]["vectors"]
    small = [tracking(folder, 10_000) for _ in range(args.runs)]
    large = [tracking(folder, 40_000) for _ in range(args.runs)]
    return {
        "memories": args.rows, "runs": args.runs,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "full": {
            "rows": rows, "vectors": vectors,
            "seconds": median_of(fulls, "seconds"),
            "load_seconds": load, "hnsw_seconds": median_of(fulls, "index_seconds"),
            "rows_per_s": round(rows / load), "vectors_per_s": round(vectors / load),
            "rows_per_s_with_hnsw": round(rows / median_of(fulls, "seconds")),
            "schema_seconds": round(median_of(fulls, "migrate_seconds"), 2),
            "steps_seconds": {k[:-8]: round(median_of(fulls, k), 2) for k in fulls[0]
                              if k.endswith("_seconds") and k[:-8] in STEPS},
        },
        "bare_copy": {
            "rows": bares[0]["rows"], "load_seconds": bare_load,
            "hnsw_seconds": bares[0]["index_seconds"],
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
