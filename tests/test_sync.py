"""`ravana-db sync` into a real PostgreSQL 16 + pgvector (pgserver): every row of every file
on the server, changes of every kind replicated, SIGKILL anywhere then a rerun makes them equal
again, passwords never shown."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest
from conftest import ROOT, copy_db, jsonl, one_line_error

from ravana_db import index
from ravana_db.postgres import rows as values
from ravana_db.postgres import schema
from ravana_db.postgres.sync import SERVER_VALUES
from ravana_db.tables import TABLES
from ravana_db.text import decode


def sync(cli, url, *args, db=None):
    argv = (["--db", str(db)] if db else []) + ["sync", url, *args, "--format", "json"]
    result = cli(*argv, db=db is None)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def file_rows(path, table):
    """A file's rows of table as the server should hold them: {key: {column: value}}."""
    names = [n for n, _ in schema.columns(table)]
    kinds = dict(schema.columns(table))
    convert = values.converters(table)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.text_factory = decode
        cols = ", ".join(SERVER_VALUES.get((table, n), f"t.[{n}]") for n in names)
        if table == "doc":
            found = conn.execute(f"SELECT {cols}, v.embedding FROM doc t "
                                 "LEFT JOIN doc_vec v ON v.doc_id = t.id").fetchall()
        else:
            found = conn.execute(f"SELECT {cols} FROM [{table}] t").fetchall()
    out = {}
    for row in found:
        record = {n: _plain(kinds[n], f(v)) for n, f, v in zip(names, convert, row)}
        if table == "doc":
            blob = row[-1]
            record["embedding"] = None if blob is None else \
                index.decode_vectors([blob])[0].tolist()
        key = tuple(record[k] for k in schema.key(table))
        if None not in key:
            out[key] = record
    return out


def _plain(kind, value):
    return json.loads(value) if kind == "JSONB" and value is not None else value


def server_rows(url, file_id, table):
    names = [n for n, _ in schema.columns(table)]
    cols = ", ".join(schema.quoted(n) for n in names)
    extra = ", embedding::text" if table == "doc" else ""
    with psycopg.connect(url) as conn:
        found = conn.execute(f"SELECT {cols}{extra} FROM {schema.quoted(table)} "
                             "WHERE file_id = %s", (file_id,)).fetchall()
    out = {}
    for row in found:
        record = dict(zip(names, row))
        if table == "doc":
            record["embedding"] = None if row[-1] is None else \
                np.array(json.loads(row[-1]), dtype=np.float32).tolist()
        out[tuple(record[k] for k in schema.key(table))] = record
    return out


def file_id_of(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'sync_file_id'").fetchone()[0]


def assert_same(path, url):
    """Every table of the file equals the server's copy, row by row."""
    file_id = file_id_of(path)
    for table in (*TABLES, "doc"):
        mine, theirs = file_rows(path, table), server_rows(url, file_id, table)
        assert mine.keys() == theirs.keys(), table
        for key, record in mine.items():
            assert record == theirs[key], (table, key)


@pytest.fixture
def second(embedded_template, tmp_path):
    """Another agent's file (the same fixture: same ids, other file id)."""
    return copy_db(embedded_template, tmp_path / "other.db")


def test_two_files_share_one_server_each_row_keyed_by_its_file(cli, embedded, second, pg_url):
    first = sync(cli, pg_url)
    assert first["full"] and first["rows"] > 100 and first["vectors"] > 60
    assert first["name"] == "agent" and first["deleted"] == first["skipped"] == 0
    other = sync(cli, pg_url, "--name", "scout", db=second)
    assert other["name"] == "scout" and other["file_id"] != first["file_id"]
    assert_same(embedded, pg_url)
    assert_same(second, pg_url)
    with psycopg.connect(pg_url) as conn:
        names = conn.execute("SELECT name, position FROM ravana_file ORDER BY name").fetchall()
        assert [n for n, _ in names] == ["agent", "scout"]
        counts = conn.execute("SELECT count(DISTINCT file_id), count(*) FROM memory").fetchone()
        assert counts == (2, 120)
        # The first sync into the empty server built the vector index, graph parameters set.
        options = conn.execute("SELECT reloptions FROM pg_class "
                               "WHERE relname = 'doc_embedding_hnsw'").fetchone()[0]
        assert options == ["m=16", "ef_construction=128"]
    again = sync(cli, pg_url)
    assert (again["full"], again["rows"], again["deleted"], again["batches"]) == (False, 0, 0, 0)


def test_updates_deletes_merges_and_plain_sqlite_writes_reach_the_server(cli, embedded, pg_url):
    sync(cli, pg_url)
    dups = [{"key": f"dup-{i}", "text": text, "created_at": "20d"} for i, text in enumerate(
        ["The user prefers green tea.", "the user prefers green tea",
         "The user   prefers GREEN tea!!"])]
    assert cli("log", "memory", "--stdin", input=jsonl(*dups)).exit_code == 0
    merged = cli("consolidate", "--type", "event_triggered", "--format", "json")
    assert merged.exit_code == 0, merged.stderr
    with contextlib.closing(sqlite3.connect(embedded)) as conn, conn:
        conn.execute("UPDATE memory SET importance = 0.95, text = 'edited by hand' "
                     "WHERE id = 1")
        conn.execute("DELETE FROM memory WHERE id = 2")
        conn.execute("INSERT INTO moodlog (timestamp, mood_vector) "
                     "VALUES ('not a time', '{\"calm\": 1}')")
        conn.execute("UPDATE retention_policies SET memory_type = 'code_pattern', "
                     "retention_days = 10 WHERE memory_type = 'code_pattern'")
        conn.execute("DELETE FROM consolidation_policy WHERE key = 'limits'")
    report = sync(cli, pg_url)
    assert not report["full"] and report["deleted"] >= 3  # memory 2, its doc, a policy row
    assert_same(embedded, pg_url)
    with psycopg.connect(pg_url) as conn:
        merged_rows = conn.execute("SELECT count(*) FROM memory WHERE merged_into IS NOT NULL"
                                   ).fetchone()[0]
        assert merged_rows == 2
        assert conn.execute("SELECT count(*) FROM memory_merge").fetchone()[0] == 3
        run = json.loads(merged.stdout)["run_id"]  # the run's id, not its number in the file
        assert conn.execute("SELECT DISTINCT consolidated_in FROM memory WHERE "
                            "consolidated_in IS NOT NULL").fetchall() == [(run,)]
        assert conn.execute("SELECT text FROM memory WHERE id = 1").fetchone()[0] == \
            "edited by hand"
        assert conn.execute("SELECT count(*) FROM doc WHERE tsv @@ "
                            "plainto_tsquery('english', 'edited hand')").fetchone()[0] == 1
    undone = cli("consolidate", "--undo", json.loads(merged.stdout)["run_id"])
    assert undone.exit_code == 0, undone.stderr
    sync(cli, pg_url)
    assert_same(embedded, pg_url)
    assert sync(cli, pg_url)["rows"] == 0


def test_a_sync_killed_anywhere_then_rerun_leaves_the_server_equal(cli, embedded, pg_url):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ravana_db", "--db", str(embedded), "sync", pg_url,
               "--batch", "7", "-q"]
    lines = [{"text": f"memory number {i} about kills and reruns"} for i in range(40)]
    for delay in (0.0, 0.3, 0.6, 0.9, 1.2):
        assert cli("log", "memory", "--stdin", input=jsonl(*lines[:8])).exit_code == 0
        del lines[:8]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        _wait_for_server_row(pg_url, child)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
    done = subprocess.run(command[:-1] + ["--format", "json"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert_same(embedded, pg_url)
    assert sync(cli, pg_url)["rows"] == 0


def _wait_for_server_row(url, child, timeout=20):
    """Until the child's sync has registered the file on the server (or ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        with contextlib.suppress(psycopg.Error), psycopg.connect(url) as conn:
            if conn.execute("SELECT to_regclass('ravana_file') IS NOT NULL AND EXISTS "
                            "(SELECT 1 FROM ravana_file)").fetchone()[0]:
                return
        time.sleep(0.02)


def test_status_shows_the_lag_and_the_server_without_its_password(cli, embedded, pg_url):
    url = pg_url.replace("postgres:@", "postgres:hunter2@", 1)
    sync(cli, url)
    assert cli("log", "memory", "--text", "one more").exit_code == 0
    status = json.loads(cli("status", "--format", "json").stdout)
    (server,) = status["sync"]
    assert server["pending_rows"] == 2  # the memory and its search entry (with its vector)
    assert server["name"] == "agent" and server["seconds_since_sync"] >= 0
    assert "hunter2" not in json.dumps(status) and "postgres:***@" in server["server"]
    result = cli("sync", url)
    assert "hunter2" not in result.stderr and "2 rows written (1 vectors)" in result.stderr
    assert json.loads(cli("status", "--format", "json").stdout)["sync"][0]["pending_rows"] == 0


def test_errors_are_one_line_without_the_password(cli, embedded, monkeypatch):
    url = "postgresql://agent:s3cret@127.0.0.1:1/memory?connect_timeout=2"
    error = one_line_error(cli("sync", url), code=1)
    assert "s3cret" not in error and "agent:***@" in error
    monkeypatch.delenv("RAVANA_DB_SYNC_URL", raising=False)
    assert "RAVANA_DB_SYNC_URL" in one_line_error(cli("sync"))
    assert "not a postgresql:// URL" in one_line_error(cli("sync", "mysql://a:b@c/d"))


def test_tracking_costs_each_write_the_same_however_many_are_pending(tmp_path):
    """The triggers look a change up by its index: 4x the rows in one transaction take about
    4x the time, not 16x (a key compared across affinities would scan sync_change)."""
    from ravana_db.db import open_db, transaction

    def insert(n):
        db = open_db(tmp_path / f"{n}.db")
        with transaction(db):
            db.execute("INSERT INTO sync_server (url_hash, url, name) VALUES ('h', 'u', 'n')")
        started = time.perf_counter()
        with transaction(db):
            db.conn.executemany("INSERT INTO memory (text) VALUES (?)",
                                [(f"memory {i}",) for i in range(n)])
            db.conn.executemany("UPDATE memory SET importance = 0.9 WHERE id = ?",
                                [(i,) for i in range(1, n + 1)])
            db.conn.executemany("INSERT INTO memory_link (memory_id, related_id, reason) "
                                "VALUES (?, ?, 'test')", [(i, i + 1) for i in range(1, n)])
        seconds = time.perf_counter() - started
        assert db.execute("SELECT count(*) FROM sync_change").fetchone()[0] == 3 * n - 1
        db.close()
        return seconds

    small, large = insert(1500), insert(6000)
    assert large < 8 * small, (small, large)


def test_a_vector_made_after_a_sync_follows_at_the_next(cli, embedded, pg_url):
    with contextlib.closing(sqlite3.connect(embedded)) as conn, conn:
        conn.execute("INSERT INTO memory (text) VALUES ('written by a plain client')")
    sync(cli, pg_url)
    query = "SELECT d.embedding IS NULL FROM doc d WHERE d.text = 'written by a plain client'"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(query).fetchone() == (True,)
    assert cli("log", "memory", "--text", "this write embeds the waiting text").exit_code == 0
    assert sync(cli, pg_url)["vectors"] == 2
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(query).fetchone() == (False,)
    assert_same(embedded, pg_url)
