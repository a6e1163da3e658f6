"""Values a plain SQLite client can store but PostgreSQL refuses reach the server as the
nearest value it takes (postgres/rows.py); the binary COPY encoder (rows.encode) against a real
server; two syncs of one file at once."""

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid

import psycopg
from conftest import ROOT
from test_sync import assert_same, sync

from ravana_db.postgres import rows as values

DEEP = "[" * 5000 + "]" * 5000
# metadata text as a plain client stores it -> the JSON value the server holds
METADATA = {
    '{"a": "x\\u0000y"}': '{"a": "x\\u0000y"}',  # jsonb refuses \u0000: a JSON string
    '{"a": "\\ud800"}': '{"a": "\\ud800"}',  # a lone surrogate
    '{"a": 1e999999}': '{"a": 1e999999}',  # beyond any number type
    '{"a": 1e-999999}': '{"a": 1e-999999}',
    '{"a": NaN}': '{"a": NaN}',
    '{"a": [Infinity]}': '{"a": [Infinity]}',
    '{"a":' + DEEP + "}": '{"a":' + DEEP + "}",  # deeper than a parser's stack
    '{"a": "nul\x00char"}': {"a": "nulchar"},  # a NUL character itself: dropped
    '{"a": "ok", "b": [1, 2.5, {"c": null}]}': {"a": "ok", "b": [1, 2.5, {"c": None}]},
    '{"big": 123456789012345678901234567890}': {"big": 123456789012345678901234567890},
    '{"a": 1': '{"a": 1',  # not JSON at all
}


def plain_client(path):
    """A sqlite3 connection that, like a careless client, checks nothing."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("PRAGMA foreign_keys = OFF")
    return contextlib.closing(conn)


def test_hostile_values_reach_the_server_as_the_nearest_value_it_takes(cli, db_path, pg_url):
    assert cli("log", "memory", "--text", "a first memory").exit_code == 0
    ids = {}
    with plain_client(db_path) as conn, conn:
        for i, metadata in enumerate(METADATA, start=100):
            conn.execute("INSERT INTO memory (id, text, metadata) VALUES (?, ?, ?)",
                         (i, f"memory {i}", metadata))
            ids[i] = metadata
        conn.execute("INSERT INTO memory (id, text, created_at, last_accessed, access_count, "
                     "importance, source) VALUES (200, ?, 'yesterday', "
                     "'2026-13-45T99:00:00Z', 'many', 'high', ?)",
                     ("nul\x00in text", b"\xff\xfebytes"))
        conn.execute("INSERT INTO memory (id, text, access_count, importance) "
                     "VALUES (201, 'huge', ?, 1e308)", (2.0 ** 70,))
        conn.execute("INSERT INTO memory_link (memory_id, related_id, reason) "
                     "VALUES ('abc', 200, 'a key the server cannot store')")
        conn.execute("INSERT INTO memory_link (memory_id, related_id, reason) "
                     "VALUES (100, 200, 'fine')")
        conn.execute("INSERT INTO actionlog (action_name, params, result) "
                     "VALUES (?, '{\"p\": NaN}', '[1e999999]')", ("act\x00ion",))
    report = sync(cli, pg_url)
    assert report["skipped"] == 1
    with psycopg.connect(pg_url) as conn:
        stored = dict(conn.execute("SELECT id, metadata FROM memory WHERE id >= 100"))
        for i, metadata in ids.items():
            assert stored[i] == METADATA[metadata], metadata[:40]
        row = conn.execute("SELECT text, created_at, last_accessed, access_count, importance, "
                           "source FROM memory WHERE id = 200").fetchone()
        assert row == ("nulin text", None, None, None, None, "\ufffd\ufffdbytes")
        assert conn.execute("SELECT access_count, importance FROM memory WHERE id = 201"
                            ).fetchone() == (None, 1e308)
        assert conn.execute("SELECT memory_id, related_id FROM memory_link").fetchall() == \
            [(100, 200)]
        assert conn.execute("SELECT action_name, params, result FROM actionlog").fetchone() == \
            ("action", '{"p": NaN}', "[1e999999]")
    assert_same(db_path, pg_url)
    assert sync(cli, pg_url)["rows"] == 0


def test_the_encoder_sends_every_column_type_the_server_reads_back(pg_url):
    kinds = ["BIGINT", "DOUBLE PRECISION", "TEXT", "TIMESTAMPTZ", "JSONB", "memorytype",
             "int4", "tsvector", "mood"]
    rows = [
        (1, 0.5, "text", "2026-01-02T03:04:05.678Z", '{"a": 1}', "code_pattern", 7,
         _tsvector({"cat": [1], "sat": [2, 5]}), "calm"),
        (2**63 - 1, -1e300, "", "1999-12-31T23:59:59+02:00", "[]", "no such type", 2**40,
         _tsvector({}), None),
        (None, None, None, None, None, None, None, None, "x\x00y"),
    ]
    file_id = uuid.uuid4()
    data = values.encode_columns(kinds, rows, file_id)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TYPE memorytype AS ENUM ('code_pattern', 'fact')")
        conn.execute("CREATE TABLE t (file_id uuid, a bigint, b float8, c text, d timestamptz, "
                     "e jsonb, f memorytype, g int4, h tsvector, i text)")
        with conn.cursor().copy("COPY t FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data)
        conn.execute("SET TIME ZONE 'UTC'")
        got = conn.execute("SELECT file_id, a, b, c, d::text, e::text, f::text, g, h::text, i "
                           "FROM t ORDER BY a NULLS LAST").fetchall()
    assert got == [
        (file_id, 1, 0.5, "text", "2026-01-02 03:04:05.678+00", '{"a": 1}', "code_pattern", 7,
         "'cat':1 'sat':2,5", "calm"),
        (file_id, 2**63 - 1, -1e300, "", "1999-12-31 21:59:59+00", "[]", None, None, "", None),
        (file_id, None, None, None, None, None, None, None, None, "xy"),
    ]


def _tsvector(lexemes):
    """A tsvector in PostgreSQL's binary form (as postgres/words.py computes it)."""
    out = len(lexemes).to_bytes(4, "big")
    for word, positions in sorted(lexemes.items()):
        out += word.encode() + b"\x00" + len(positions).to_bytes(2, "big")
        out += b"".join(p.to_bytes(2, "big") for p in positions)
    return out


def test_two_syncs_of_one_file_at_once_end_equal_without_an_error(cli, embedded, pg_url):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ravana_db", "--db", str(embedded), "sync", pg_url,
               "--batch", "7", "--format", "json"]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    assert sorted(r["full"] for r in reports) == [False, True]
    assert_same(embedded, pg_url)
    assert sync(cli, pg_url)["rows"] == 0


def test_a_pipelined_sync_reports_its_steps_and_restores_the_switch_interval(embedded, pg_url):
    from ravana_db.db import open_db
    from ravana_db.postgres.sync import sync as run

    before = sys.getswitchinterval()
    db = open_db(embedded)
    report = run(db, embedded, pg_url, batch=20)
    db.close()
    assert sys.getswitchinterval() == before
    assert {"start", "read", "encode", "send", "wait", "advance"} <= report.timings.keys()
    assert report.full and report.batches > 3 and report.rows > 100
    assert_same(embedded, pg_url)
