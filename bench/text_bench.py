"""What reading stored text safely costs: the connections' text_factory (U+FFFD for text that is
not UTF-8, text.decode) against the driver's own str, and CSV's formula guard (text.csv_cell)
against the plain writer, each measured in turn in one process on the same data.

    .venv/bin/python bench/text_bench.py [--rows N] [--queries N] [--runs N]

The file holds N memories (default 100,000 real sentences, bench/corpus.py), written with
plain SQL (no embedding: FTS queries and reads need none). Figures are medians:
  fts_query   search(mode=fts, top 10) of held-out sentences, with each text_factory in turn
  read_all    SELECT * FROM memory, every row fetched (the shape of export), each factory
  csv         export's CSV writer over those rows into memory, with and without csv_cell
  reindex_fts `reindex --fts`'s sync and rebuild (index.sync_docs checks every text is UTF-8)
Results are printed as JSON and written to bench/results/text.json.
"""

import argparse
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent.parent), str(Path(__file__).parent)]

from corpus import sentences  # noqa: E402

from ravana_db.db import open_db, transaction  # noqa: E402
from ravana_db.export import formats  # noqa: E402
from ravana_db.index import sync_docs  # noqa: E402
from ravana_db.search import search  # noqa: E402
from ravana_db.search.query import Query  # noqa: E402
from ravana_db.text import decode  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "text.json"


def build(path, texts):
    db = open_db(path)
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO memory(text, memory_type, source, created_at) VALUES (?, ?, ?, ?)",
            [(t, "fact", f"source-{i % 7}", f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z")
             for i, t in enumerate(texts)])
    return db


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def in_turn(db, fn, runs):
    """fn timed with the driver's str and with text.decode, alternately."""
    times = {"str": [], "decode": []}
    for _ in range(runs):
        for name, factory in (("str", str), ("decode", decode)):
            db.conn.text_factory = factory
            times[name].append(timed(fn))
    db.conn.text_factory = decode
    return times


def plain_csv(out, columns, rows):
    """export.formats.write_csv as it was before the formula guard (the baseline)."""
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        if "" in row or bytes in map(type, row):
            out.write(",".join(map(formats.csv_field, row)) + "\r\n")
        else:
            writer.writerow(row)


def report(times, unit=1000):
    a, b = statistics.median(times[0]), statistics.median(times[1])
    return {"baseline_median_ms": round(a * unit, 3), "ours_median_ms": round(b * unit, 3),
            "ratio": round(b / a, 3), "runs": len(times[0])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    texts = sentences(args.rows + args.queries)
    stored, held_out = texts[:args.rows], texts[args.rows:]
    results = {"rows": len(stored)}
    with tempfile.TemporaryDirectory() as tmp:
        db = build(Path(tmp) / "text.db", stored)

        def queries():
            for text in held_out:
                search(db, Query(text, mode="fts", top_n=10), embedder=None, touch=False)

        t = in_turn(db, queries, args.runs)
        results["fts_query"] = {"what": f"{len(held_out)} fts queries, top 10, per query",
                                **report((t["str"], t["decode"]), unit=1000 / len(held_out))}

        def read_all():
            db.execute("SELECT * FROM memory").fetchall()

        t = in_turn(db, read_all, args.runs)
        results["read_all"] = {"what": "SELECT * FROM memory, fetched",
                               **report((t["str"], t["decode"]))}

        cursor = db.execute("SELECT * FROM memory")
        columns = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
        times = ([], [])
        for _ in range(args.runs):
            times[0].append(timed(lambda: plain_csv(io.StringIO(), columns, rows)))
            times[1].append(timed(lambda: formats.write_csv(io.StringIO(), columns, rows)))
        results["csv"] = {"what": "export's CSV writer, rows in memory; baseline without "
                                  "csv_cell", **report(times)}

        def reindex_fts():
            with transaction(db):
                sync_docs(db)
                db.execute("INSERT INTO doc_fts(doc_fts) VALUES ('rebuild')")

        def rebuild_only():
            with transaction(db):
                db.execute("INSERT INTO doc_fts(doc_fts) VALUES ('rebuild')")

        times = ([], [])
        for _ in range(args.runs):
            times[0].append(timed(rebuild_only))
            times[1].append(timed(reindex_fts))
        results["reindex_fts"] = {"what": "sync_docs + FTS rebuild; baseline: the FTS rebuild "
                                          "alone", **report(times)}
        db.close()
    print(json.dumps(results, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
