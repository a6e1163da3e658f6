"""`ravana-db timeline`: every table's rows in one stream, newest first, read by index; rows
other clients wrote (other UTC offsets, garbage, blobs) never break it."""

import contextlib
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys

import sqlite_utils
import sqlite_vec
from conftest import ROOT, one_line_error

from ravana_db.db import open_db
from ravana_db.schema import migrations
from ravana_db.sql import driver
from ravana_db.tables import TIMELINE_KINDS
from ravana_db.timeline import TEXT_CHARS, Span, kind_query, timeline

# One row of every kind, as another client would write them: (kind, table, columns, time).
# Times are in several offsets; in UTC they fall one hour apart, kind by kind, from 00:00 on.
ROWS = [
    ("article", "INSERT INTO article(title, link, feed_id, guid, source, published) "
     "VALUES ('Harbour opens', 'http://x/1', 1, 'g1', 'News', ?)", "2026-03-01T05:00:00+05:00"),
    ("event", "INSERT INTO event(description, timestamp) VALUES ('storm', ?)",
     "2026-02-28T17:00:00-08:00"),
    ("action", "INSERT INTO actionlog(action_name, timestamp) VALUES ('search', ?)",
     "2026-03-01T02:00:00Z"),
    ("mood", "INSERT INTO moodlog(mood_vector, timestamp) VALUES ('{\"calm\": 1}', ?)",
     "2026-03-01 03:00:00"),
    ("situation", "INSERT INTO situationlog(situation_type, prompt, timestamp) "
     "VALUES ('curiosity', 'why?', ?)", "2026-03-01T09:00:00+05:00"),
    ("decision", "INSERT INTO decisionlog(raw_response, timestamp) VALUES ('go', ?)",
     "2026-02-28T21:00:00-08:00"),
    ("experiment", "INSERT INTO experimentlog(hypothesis, timestamp) VALUES ('cache', ?)",
     "2026-03-01T06:00:00.000Z"),
    ("memory", "INSERT INTO memory(text, created_at) VALUES ('remember me', ?)",
     "2026-03-01T12:00:00+05:00"),
    ("summary", "INSERT INTO summary(summary_text, content_hash, timestamp) "
     "VALUES ('in short', 'h1', ?)", "2026-03-01T08:00:00Z"),
    ("vltm", "INSERT INTO very_long_term_memories(memory_id, memory_type, compressed_content, "
     "created_at) VALUES ('v1', 'code_pattern', '{\"text\": \"kept long\"}', ?)",
     "2026-03-01T01:00:00-08:00"),
    ("pattern", "INSERT INTO memory_patterns(pattern_id, pattern_type, pattern_description, "
     "confidence_score, discovered_at) VALUES ('p1', 'temporal', 'after midnight', 0.7, ?)",
     "2026-03-01T10:00:00Z"),
    ("knowledge", "INSERT INTO strategic_knowledge(knowledge_id, knowledge_domain, "
     "knowledge_summary, confidence_level, last_updated) VALUES ('k1', 'ops', 'batch', 0.9, ?)",
     "2026-03-01T16:00:00+05:00"),
    ("consolidation", "INSERT INTO memory_consolidations(consolidation_id, consolidation_type, "
     "consolidation_results, consolidation_date) VALUES ('c1', 'daily', "
     "'{\"operation\": \"consolidate\"}', ?)", "2026-03-01T12:00:00Z"),
    ("compression", "INSERT INTO memory_consolidations(consolidation_id, consolidation_type, "
     "consolidation_results, consolidation_date) VALUES ('c2', 'weekly', "
     "'{\"operation\": \"compress\"}', ?)", "2026-03-01T05:00:00-08:00"),
    ("feed_failure", "UPDATE feed SET failures = 3, last_error = 'HTTP 500', last_fetched = ? "
     "WHERE id = 1", "2026-03-01T14:00:00Z"),
]
NEWEST_FIRST = [kind for kind, _, _ in ROWS][::-1]


def other_client(path, statements):
    """Run statements on path with Python's own sqlite3, as another program would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()


def every_kind(path):
    other_client(path, [("INSERT INTO feed(id, url) VALUES (1, 'http://x/feed')", ())]
                 + [(sql, (time,)) for _, sql, time in ROWS])


def lines(result):
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_mixed_kinds_and_offsets_in_one_order(cli, db_path):
    assert cli("init").exit_code == 0
    every_kind(db_path)
    rows = lines(cli("timeline", "--format", "jsonl"))
    assert [r["kind"] for r in rows] == NEWEST_FIRST
    assert [r["time"] for r in rows] == [
        f"2026-03-01T{hour:02d}:00:00.000Z" for hour in range(14, -1, -1)]
    assert {r["kind"]: r["text"] for r in rows}["article"] == "Harbour opens (News)"
    assert {r["kind"]: r["text"] for r in rows}["feed_failure"] == (
        "http://x/feed: 3 failures: HTTP 500")
    assert {r["kind"]: r["text"] for r in rows}["vltm"] == "code_pattern: kept long"


def test_since_until_kind_limit(cli, db_path):
    assert cli("init").exit_code == 0
    every_kind(db_path)
    got = lines(cli("timeline", "-f", "jsonl", "--since", "2026-03-01T03:00:00Z",
                    "--until", "2026-03-01T10:00:00+05:00"))  # 03:00 to 05:00 UTC, inclusive
    assert [r["kind"] for r in got] == ["decision", "situation", "mood"]
    got = lines(cli("timeline", "-f", "jsonl", "--kind", "memory, action,feed_failure"))
    assert [r["kind"] for r in got] == ["feed_failure", "memory", "action"]
    assert [r["kind"] for r in lines(cli("timeline", "-f", "jsonl", "-n", "2"))] == (
        NEWEST_FIRST[:2])
    assert len(lines(cli("timeline", "-f", "jsonl", "--limit", "0"))) == len(ROWS)
    assert lines(cli("timeline", "-f", "jsonl", "--since", "1d")) == []


def test_refuses_unknown_kinds_and_bad_times(cli, db_path):
    assert cli("init").exit_code == 0
    error = one_line_error(cli("timeline", "--kind", "memory,memories"))
    assert "'memories' is not a timeline kind" in error
    assert ", ".join(TIMELINE_KINDS) in error
    one_line_error(cli("timeline", "--kind", ","))
    assert "since" in one_line_error(cli("timeline", "--since", "last tuesday"))
    assert "limit" in one_line_error(cli("timeline", "--limit", "-1"))
    assert "limit" in one_line_error(cli("timeline", "--limit", str(2**64)))


def test_json_and_csv_fields(cli, db_path):
    assert cli("init").exit_code == 0
    every_kind(db_path)
    rows = json.loads(cli("timeline", "--json", "-n", "1").stdout)
    assert rows == [{"time": "2026-03-01T14:00:00.000Z", "kind": "feed_failure", "id": 1,
                     "text": "http://x/feed: 3 failures: HTTP 500"}]
    table = list(csv.reader(io.StringIO(cli("timeline", "-f", "csv", "-n", "2").stdout)))
    assert table[0] == ["time", "kind", "id", "text"]
    assert table[2][:3] == ["2026-03-01T13:00:00.000Z", "compression", "2"]


def test_local_time_on_a_terminal_unless_utc(db_path, tmp_path):
    """A table shows local time (TZ decides), --utc keeps UTC; JSON is UTC regardless."""
    subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(db_path), "init"],
                   check=True, capture_output=True)
    every_kind(db_path)
    env = {**os.environ, "TZ": "XYZ-5", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(db_path),
                               "timeline", "-n", "1", *args], env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    local = run("--format", "table")
    assert "2026-03-01 19:00:00" in local and "XYZ, UTC+05:00" in local
    assert "2026-03-01T14:00:00.000Z" in run("--format", "table", "--utc")
    assert json.loads(run("--json"))[0]["time"] == "2026-03-01T14:00:00.000Z"


def test_empty_and_missing_files(cli, db_path):
    assert cli("init").exit_code == 0
    result = cli("timeline", "--json")
    assert (result.exit_code, result.stdout) == (0, "[]\n")
    result = cli("timeline", "--format", "table")
    assert (result.exit_code, result.stdout) == (0, "")
    os.remove(db_path)
    one_line_error(cli("timeline"))
    assert not db_path.exists()


def test_hostile_rows(cli, db_path):
    """Unreadable times come last, as stored; blobs, huge and multi-line texts become one
    short line; control characters are escaped on a terminal."""
    assert cli("init").exit_code == 0
    huge = "word " * 1_000_000
    other_client(db_path, [
        ("INSERT INTO feed(id, url, last_error) VALUES (1, 'http://x', 'down')", ()),
        ("INSERT INTO memory(text, created_at) VALUES ('garbage time', 'garbage')", ()),
        ("INSERT INTO memory(text, created_at) VALUES ('empty time', '')", ()),
        ("INSERT INTO memory(text, created_at) VALUES ('number time', 12)", ()),
        ("INSERT INTO memory(text, created_at) VALUES (?, '2026-01-01T00:00:00Z')",
         (b"\xffblob\x01",)),
        ("INSERT INTO memory(text, created_at) VALUES (?, '2026-01-02T00:00:00Z')", (huge,)),
        ("INSERT INTO memory(text, created_at) VALUES (?, '2026-01-03T00:00:00Z')",
         ("two\nlines\x1b[31m red",)),
        ("INSERT INTO actionlog(action_name, timestamp) VALUES ('a', '2026-01-04T00:00:00Z')",
         ()),
    ])
    rows = lines(cli("timeline", "-f", "jsonl", "--limit", "0"))
    assert [r["time"] for r in rows[:4]] == [
        "2026-01-04T00:00:00.000Z", "2026-01-03T00:00:00.000Z", "2026-01-02T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z"]
    assert rows[1]["text"] == "episodic: two lines\x1b[31m red"
    assert len(rows[2]["text"]) == TEXT_CHARS and rows[2]["text"].endswith("…")
    assert rows[3]["text"] == "episodic: \ufffdblob\x01"
    last = {r["text"]: r["time"] for r in rows[4:]}
    assert last == {"episodic: number time": "12", "episodic: empty time": "",
                    "episodic: garbage time": "garbage", "http://x: 0 failures: down": None}
    shown = cli("timeline", "-f", "table", "--utc", "--kind", "memory").stdout
    assert "\\x1b[31m" in shown and "\x1b" not in shown
    assert len(lines(cli("timeline", "-f", "jsonl", "--since", "2000-01-01"))) == 4


def test_every_query_reads_its_index(tmp_path):
    """Each kind's query, with and without --since/--until, walks m010's index newest first:
    no sort, no scan without an index."""
    db = open_db(tmp_path / "plan.db")
    for span in (Span(), Span(since="30d", until="1d"), Span(limit=0)):
        for kind in TIMELINE_KINDS:
            sql, params = kind_query(kind, span)
            plan = [row[3] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert len(plan) == 1 and "USING INDEX" in plan[0], (kind, plan)
            assert "_timeline" in plan[0] and "TEMP B-TREE" not in plan[0], (kind, plan)
    db.close()


def test_the_library_streams(cli, db_path):
    assert cli("init").exit_code == 0
    every_kind(db_path)
    db = open_db(db_path, create=False)
    stream = timeline(db, Span(kinds="memory,knowledge", limit=0))
    assert next(stream)["kind"] == "knowledge"
    assert db.conn.in_transaction  # one snapshot while it is read
    assert [r["kind"] for r in stream] == ["memory"]
    assert not db.conn.in_transaction
    db.close()


def test_a_file_at_m009_with_rows_migrates(cli, db_path):
    conn = driver().connect(str(db_path), isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    old = sqlite_utils.Database(conn)
    migrations.apply(old, stop_before="m010_timeline_indexes")
    old.close()
    every_kind(db_path)
    rows = lines(cli("timeline", "-f", "jsonl"))
    assert [r["kind"] for r in rows] == NEWEST_FIRST
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"idx_memory_timeline", "idx_feed_timeline", "idx_article_timeline"} <= names
        assert conn.execute("SELECT count(*) FROM memory").fetchone() == (1,)
