"""`timeline`'s first page on 1M rows across the tables, next to one table's own first page.

    .venv/bin/python bench/timeline_bench.py [--rows N] [--runs N] [--cli-runs N]

The file (bench/cache/timeline-N.db, built once) holds N rows spread over every timeline kind
(40% memories, 25% actions, then articles, events, moods, ...), written with plain SQL in one
transaction (the search triggers are dropped meanwhile and put back after: the index is not
what is measured). Times fall over the last year; one row in ten carries +05:00 and one in ten
-08:00, as other clients write them.

Figures (medians of --runs in one process, after one warm-up; the CLI of --cli-runs processes):
  timeline       list(timeline(db, Span(limit=100))): every kind, merged
  timeline_since the same with --since 7d
  memory_only    the same with --kind memory
  baseline       SELECT id, created_at, text FROM memory ORDER BY julianday(created_at) DESC
                 LIMIT 100 (m010's idx_memory_timeline: one table)
  union_all      every kind in one statement, UNION ALL ... ORDER BY julianday(time) DESC
                 LIMIT 100: SQLite merges the arms' index walks itself (MERGE (UNION ALL)),
                 an alternative plan to timeline's heapq.merge (without timeline's tie-break
                 by kind and id: with it, each arm sorts its last two terms in a temp B-tree)
  cli            `ravana-db --db F timeline --format json` end to end
  cli_baseline   `ravana-db --db F status --format json` (start-up, open, a small read)
  write_cost     what m010's index costs a write: 100k actionlog rows inserted by plain SQL in
                 one transaction (rolled back), with idx_actionlog_timeline against without it;
                 times random over a year, and in order (as an agent appends: write_cost_ordered)
Results are printed as JSON and written to bench/results/timeline.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ravana_db.db import open_db
from ravana_db.schema import install_index
from ravana_db.tables import TIMELINE
from ravana_db.timeline import Span, timeline

ROOT = Path(__file__).parent.parent
CACHE = ROOT / "bench" / "cache"
RAVANA = str(Path(sys.executable).parent / "ravana-db")
SHARES = {  # of N rows
    "memory": 0.40, "actionlog": 0.25, "article": 0.10, "event": 0.05, "moodlog": 0.05,
    "situationlog": 0.03, "decisionlog": 0.03, "experimentlog": 0.02, "summary": 0.02,
    "very_long_term_memories": 0.02, "memory_patterns": 0.01, "strategic_knowledge": 0.01,
    "memory_consolidations": 0.01,
}
# Seconds back from now (over a year), then written as other clients might.
TIME = ("CASE i % 10 WHEN 0 THEN strftime('%Y-%m-%dT%H:%M:%S', s, 'unixepoch', '+5 hours') "
        "|| '+05:00' WHEN 1 THEN strftime('%Y-%m-%dT%H:%M:%S', s, 'unixepoch', '-8 hours') "
        "|| '-08:00' ELSE strftime('%Y-%m-%dT%H:%M:%fZ', s, 'unixepoch') END")
INSERTS = {
    "memory": "INSERT INTO memory(text, created_at) SELECT 'memory ' || i, t FROM rows",
    "actionlog": "INSERT INTO actionlog(action_name, params, timestamp) "
                 "SELECT 'act' || (i % 50), '{\"n\": ' || i || '}', t FROM rows",
    "article": "INSERT INTO article(title, link, feed_id, guid, published) "
               "SELECT 'article ' || i, 'http://x/' || i, 1, 'g' || i, t FROM rows",
    "event": "INSERT INTO event(description, timestamp) SELECT 'event ' || i, t FROM rows",
    "moodlog": "INSERT INTO moodlog(mood_vector, timestamp) "
               "SELECT '{\"calm\": 0.5}', t FROM rows",
    "situationlog": "INSERT INTO situationlog(situation_type, prompt, timestamp) "
                    "SELECT 'curiosity', 'why ' || i, t FROM rows",
    "decisionlog": "INSERT INTO decisionlog(raw_response, timestamp) "
                   "SELECT 'decided ' || i, t FROM rows",
    "experimentlog": "INSERT INTO experimentlog(hypothesis, timestamp) "
                     "SELECT 'hypothesis ' || i, t FROM rows",
    "summary": "INSERT INTO summary(summary_text, content_hash, timestamp) "
               "SELECT 'summary ' || i, 'h' || i, t FROM rows",
    "very_long_term_memories": "INSERT INTO very_long_term_memories(memory_id, memory_type, "
                               "compressed_content, created_at) SELECT 'v' || i, 'code_pattern', "
                               "'{\"text\": \"kept ' || i || '\"}', t FROM rows",
    "memory_patterns": "INSERT INTO memory_patterns(pattern_id, pattern_type, "
                       "pattern_description, confidence_score, discovered_at) "
                       "SELECT 'p' || i, 'temporal', 'pattern ' || i, 0.7, t FROM rows",
    "strategic_knowledge": "INSERT INTO strategic_knowledge(knowledge_id, knowledge_domain, "
                           "knowledge_summary, confidence_level, last_updated) "
                           "SELECT 'k' || i, 'ops', 'knowledge ' || i, 0.9, t FROM rows",
    "memory_consolidations": "INSERT INTO memory_consolidations(consolidation_id, "
                             "consolidation_type, consolidation_results, consolidation_date) "
                             "SELECT 'c' || i, 'daily', CASE i % 2 WHEN 0 THEN "
                             "'{\"operation\": \"compress\"}' ELSE '{}' END, t FROM rows",
}
BASELINE = ("SELECT id, created_at, text FROM memory ORDER BY julianday(created_at) DESC "
            "LIMIT 100")


def build(path, n):
    """The bench file: n rows over the tables, by plain SQL in one transaction."""
    if path.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.unlink(missing_ok=True)
    db = open_db(part)
    conn = db.conn
    tables = set(SHARES)
    triggers = [(name, sql) for name, table, sql in conn.execute(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
        if table in tables]
    conn.execute("BEGIN")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER [{name}]")
    conn.execute("INSERT INTO feed(id, url, last_error, failures, last_fetched) "
                 "VALUES (1, 'http://x/feed', 'HTTP 500', 3, strftime('%Y-%m-%dT%H:%M:%fZ'))")
    for table, share in SHARES.items():
        count = int(n * share)
        conn.execute(
            f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {count}),"
            f" r AS (SELECT i, unixepoch('now') - abs(random()) % 31536000 AS s FROM c),"
            f" rows AS (SELECT i, {TIME} AS t FROM r) {INSERTS[table]}")
    conn.execute("COMMIT")
    install_index(db)
    db.close()
    part.rename(path)


def median_ms(fn, runs):
    fn()  # warm-up: pages in the cache, statements prepared
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def union_all():
    """Every kind in one statement: SQLite merges the arms' index walks."""
    parts = []
    for kind, (table, line) in TIMELINE.items():
        where = f" WHERE {line.where}" if line.where else ""
        parts.append(f"SELECT julianday({line.time}) AS day, '{kind}' AS kind, id, {line.text} "
                     f"AS text FROM [{table.name}]{where}")
    return " UNION ALL ".join(parts) + " ORDER BY day DESC LIMIT 100"


def insert_ms(drop_index, runs, *, ordered=False):
    """Median time to insert 100k actionlog rows in a new file, with or without m010's index;
    times random over a year, or ordered (as an agent appends its log)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        db = open_db(Path(folder) / "w.db")
        if drop_index:
            db.conn.execute("DROP INDEX idx_actionlog_timeline")
        back = "100000 + i" if ordered else "abs(random()) % 31536000"
        sql = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000),"
               f" r AS (SELECT i, unixepoch('now') - {back} AS s FROM c),"
               f" rows AS (SELECT i, {TIME} AS t FROM r) {INSERTS['actionlog']}")

        def once():
            db.conn.execute("BEGIN")
            db.conn.execute(sql)
            db.conn.execute("ROLLBACK")
        result = median_ms(once, runs)
        db.close()
    return result


def cli(path, *args, runs):
    def once():
        subprocess.run([RAVANA, "--db", str(path), *args], check=True, capture_output=True)
    return median_ms(once, runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cli-runs", type=int, default=10)
    args = parser.parse_args()
    path = CACHE / f"timeline-{args.rows}.db"
    start = time.perf_counter()
    build(path, args.rows)
    built = round(time.perf_counter() - start, 1)
    db = open_db(path, create=False)
    rows = db.conn.execute("SELECT " + " + ".join(
        f"(SELECT count(*) FROM [{t}])" for t in SHARES)).fetchone()[0]
    first = list(timeline(db, Span(limit=100)))
    assert len(first) == 100
    results = {
        "rows": rows, "build_seconds": built, "runs": args.runs,
        "timeline_ms": median_ms(lambda: list(timeline(db, Span(limit=100))), args.runs),
        "timeline_since_ms": median_ms(
            lambda: list(timeline(db, Span(since="7d", limit=100))), args.runs),
        "memory_only_ms": median_ms(
            lambda: list(timeline(db, Span(kinds="memory", limit=100))), args.runs),
        "baseline_ms": median_ms(lambda: db.conn.execute(BASELINE).fetchall(), args.runs),
        "union_all_ms": median_ms(lambda: db.conn.execute(union_all()).fetchall(), args.runs),
    }
    db.close()
    results["cli_ms"] = cli(path, "timeline", "--format", "json", runs=args.cli_runs)
    results["cli_baseline_ms"] = cli(path, "status", "--format", "json", runs=args.cli_runs)
    results["insert_100k_ms"] = insert_ms(False, 5)
    results["insert_100k_without_index_ms"] = insert_ms(True, 5)
    results["write_cost"] = round(
        results["insert_100k_ms"] / results["insert_100k_without_index_ms"], 2)
    ordered = [insert_ms(drop, 5, ordered=True) for drop in (False, True)]
    results["insert_100k_ordered_ms"], results["insert_100k_ordered_without_index_ms"] = ordered
    results["write_cost_ordered"] = round(ordered[0] / ordered[1], 2)
    results["timeline_vs_baseline"] = round(results["timeline_ms"] / results["baseline_ms"], 2)
    results["union_all_vs_timeline"] = round(results["union_all_ms"] / results["timeline_ms"], 2)
    results["cli_vs_baseline"] = round(results["cli_ms"] / results["cli_baseline_ms"], 2)
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "timeline.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
