"""m014: `doc_bits` keeps kind, type and source as integer codes (schema.bits_code), memory's
unused type index goes and its due index holds no time; a file of the release before migrates
in place, resumably, and answers the same."""

import json
import os
import shutil
import signal
import sqlite3

import numpy as np
from conftest import run_status

from ravana_db import vectors
from ravana_db.db import open_db
from ravana_db.schema import bits_code, part_of
from ravana_db.schema.history import BITS_M008
from ravana_db.sql import driver

QUERIES = [
    ["--mode=vector", "--", "GPU out of memory"],
    ["--mode=vector", "--kind", "memory", "--", "what does the user like"],
    ["--mode=vector", "--kind", "memory,summary", "--", "writes"],
    ["--mode=vector", "--type", "preference", "--", "how should replies look"],
    ["--mode=vector", "--source", "chat", "--", "user"],
    ["--mode=vector", "--since", "2026-01-01", "--", "memory"],
    ["--mode=hybrid", "--kind", "memory", "--", "GPU out of memory"],
    ["--mode=fts", "--", "user prefers short answers"],
]


def plain(path, sql):
    """sql's rows, read as a plain client reads (this package's driver, no extension)."""
    conn = driver().connect(str(path))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def plain_write(path, sql):
    conn = driver().connect(str(path))
    try:
        with conn:
            conn.execute(sql)
    finally:
        conn.close()


def answer(cli, args):
    result = cli("query", "--no-touch", "--top-n", "5", "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    return [[r["kind"], r["id"], r["similarity"]] for r in json.loads(result.stdout)]


def indexes(path):
    return dict(plain(path, "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                            "AND tbl_name = 'memory'"))


def grow(path, rows):
    """rows more memories written as plain sqlite3 would, each with a (random) compact vector,
    so the signature table is large enough for a migration to take a while."""
    rng = np.random.default_rng(7)
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO memory(text, memory_type, source, created_at) "
                         "VALUES (?, 'fact', ?, '2026-01-01T00:00:00Z')",
                         ((f"grown memory number {i}", f"source-{i % 5}") for i in range(rows)))
        docs = conn.execute("SELECT d.id, d.text FROM doc d LEFT JOIN doc_vec v "
                            "ON v.doc_id = d.id WHERE v.doc_id IS NULL").fetchall()
        blobs = vectors.encode(rng.standard_normal((len(docs), 384)).astype(np.float32))
        conn.executemany("INSERT INTO doc_vec(doc_id, content_hash, embedding) VALUES (?, ?, ?)",
                         ((d, vectors.key(t), b) for (d, t), b in zip(docs, blobs)))
        conn.execute("DELETE FROM embed_queue")
        conn.execute("INSERT OR IGNORE INTO bits_queue(doc_id) SELECT doc_id FROM doc_vec "
                     "WHERE doc_id NOT IN (SELECT doc_id FROM doc_bits_rowids)")


def as_previous(path):
    """The file as the release before m014 left it: text filter columns in doc_bits (every
    doc with a vector signed, from its vector), memory's type index and time-keyed due index,
    no record of m014."""
    from ravana_db.index import signature

    db = open_db(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute("SELECT d.id, v.embedding, d.kind, d.type, d.source, d.ts "
                          "FROM doc d JOIN doc_vec v ON v.doc_id = d.id").fetchall()
        sigs = signature(vectors.decode(r[1] for r in rows))
        db.execute("DROP TABLE doc_bits")
        db.execute(BITS_M008)
        db.conn.executemany(
            f"INSERT INTO doc_bits(doc_id, embedding, part, kind, type, source, ts) VALUES "
            f"(?1, vec_quantize_binary(?2), {part_of('?1')}, ?3, ?4, ?5, "
            f"coalesce(unixepoch(?6), 0))",
            [(r[0], s.tobytes(), r[2], r[3] or "", r[4] or "", r[5]) for r, s in zip(rows, sigs)])
        db.execute("DELETE FROM bits_queue")
        db.execute("CREATE INDEX idx_memory_type ON memory(memory_type)")
        db.execute("CREATE INDEX idx_memory_importance ON memory(importance)")
        db.execute("DROP INDEX idx_memory_due")
        db.execute("CREATE INDEX idx_memory_due ON memory(created_at) WHERE dup_key IS NULL")
        db.execute("DROP INDEX idx_memory_dup_key")
        db.execute("CREATE INDEX idx_memory_dup_key ON memory(dup_key)")
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm014_coded_filters'")
        db.execute("COMMIT")
    finally:
        db.close()


def test_bits_code_is_the_text_key_and_null_is_empty():
    assert bits_code("memory") == vectors.key("memory")
    assert bits_code(None) == bits_code("") == vectors.key("")
    assert bits_code("fact") != bits_code("episodic")


def test_a_new_file_stores_integer_codes(embedded):
    (sql,) = plain(embedded, "SELECT sql FROM sqlite_master WHERE name = 'doc_bits'")[0]
    assert "kind INTEGER, type INTEGER, source INTEGER" in sql
    assert plain(embedded, "SELECT name FROM sqlite_master WHERE name LIKE "
                           "'doc_bits_metadatatext%'") == []
    names = indexes(embedded)
    assert "idx_memory_type" not in names and "idx_memory_importance" not in names
    assert "(merged_into) WHERE dup_key IS NULL" in names["idx_memory_due"]
    assert "(dup_key) WHERE dup_key IS NOT NULL" in names["idx_memory_dup_key"]
    db = open_db(embedded, create=False, write=False)
    try:
        for doc_id, kind, type, source in db.execute(
                "SELECT d.id, d.kind, d.type, d.source FROM doc d").fetchall()[:20]:
            assert db.execute("SELECT kind, type, source FROM doc_bits WHERE doc_id = ?",
                              [doc_id]).fetchone() == (bits_code(kind), bits_code(type),
                                                       bits_code(source))
    finally:
        db.close()


def test_the_file_before_migrates_and_answers_the_same(cli, embedded, tmp_path):
    expected = [answer(cli, args) for args in QUERIES]
    assert any(len(e) == 5 for e in expected[1:5])
    as_previous(embedded)
    digest = "ab" * 32  # a duplicate key as the release before wrote it: the whole SHA-256
    plain_write(embedded, f"UPDATE memory SET dup_key = '{digest}' WHERE id IN (1, 2)")
    assert "kind TEXT" in plain(embedded, "SELECT sql FROM sqlite_master "
                                          "WHERE name = 'doc_bits'")[0][0]
    signatures = plain(embedded, "SELECT count(*) FROM doc_vec")
    assert [answer(cli, args) for args in QUERIES] == expected
    assert "kind INTEGER" in plain(embedded, "SELECT sql FROM sqlite_master "
                                             "WHERE name = 'doc_bits'")[0][0]
    assert plain(embedded, "SELECT count(*) FROM _sqlite_migrations "
                           "WHERE name = 'm014_coded_filters'") == [(1,)]
    assert plain(embedded, "SELECT id, dup_key FROM memory WHERE dup_key IS NOT NULL") == \
        [(1, digest[:16]), (2, digest[:16])]
    names = indexes(embedded)
    assert "idx_memory_type" not in names and "idx_memory_importance" not in names
    assert "IS NOT NULL" in names["idx_memory_dup_key"]
    db = open_db(embedded, create=False, write=False)
    try:
        assert db.execute("SELECT count(*) FROM doc_bits").fetchall() == signatures
    finally:
        db.close()
    # `reindex` rebuilds the table from nothing, with codes
    db = open_db(embedded)
    try:
        db.execute("DROP TABLE doc_bits")
    finally:
        db.close()
    result = cli("reindex", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [answer(cli, args) for args in QUERIES] == expected



def test_sigkill_during_the_migration_leaves_the_file_before(cli, embedded, tmp_path):
    """m014 runs in one transaction: a process killed at any point of it (its backup copy,
    the signatures' copy, the commit) leaves the file as the release before had it; the next
    open migrates it and answers the same."""
    grow(embedded, 40_000)
    result = cli("reindex", "--format", "json")  # sign the grown rows
    assert result.exit_code == 0, result.stderr
    as_previous(embedded)
    reference = tmp_path / "reference" / "agent.db"  # the same file, migrated unharmed
    reference.parent.mkdir()
    shutil.copyfile(embedded, reference)
    before = plain(embedded, "SELECT sql FROM sqlite_master ORDER BY name")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAVANA_DB")}
    whole, code = run_status(reference, env)
    assert code == 0 and whole > 0.05, whole
    for share in (0.1, 0.4, 0.7):
        for old in tmp_path.glob("agent.db.bak-*"):
            old.unlink()
        _, code = run_status(embedded, env, kill_after=share * whole)
        assert code == -signal.SIGKILL, "the migration ended before it was killed"
        # a plain client sees the file before: the killed transaction is gone
        assert plain(embedded, "SELECT sql FROM sqlite_master ORDER BY name") == before
        assert plain(embedded, "SELECT count(*) FROM _sqlite_migrations "
                               "WHERE name = 'm014_coded_filters'") == [(0,)]
    for args in QUERIES:  # the next open migrates, and answers as the unharmed copy
        assert answer(cli, args) == answer(cli, ["--db", reference, *args]), args
    assert "kind INTEGER" in plain(embedded, "SELECT sql FROM sqlite_master "
                                             "WHERE name = 'doc_bits'")[0][0]
    assert plain(embedded, "PRAGMA integrity_check") == [("ok",)]


def test_memory_queries_use_the_indexes_m014_keeps(embedded):
    """The due memories are found through idx_memory_due, duplicates by key through
    idx_memory_dup_key, and the promotion pass scans in id order: the indexes m014 dropped
    or narrowed served none of these."""
    from ravana_db.consolidate.read import MEMORY_COLUMNS

    db = open_db(embedded, create=False, write=False)
    try:
        def plan(sql, params):
            return " | ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params))

        due = ("dup_key IS NULL AND merged_into IS NULL AND created_at <= ? "  # read._window
               "AND importance >= ?")
        for where, params in ((due, ["2026-06-01", 0.0]),
                              (due + " AND created_at >= ?", ["2026-06-01", 0.6, "2026-05-01"])):
            assert "idx_memory_due" in plan(f"SELECT {MEMORY_COLUMNS} FROM memory WHERE {where} "
                                            f"ORDER BY created_at, id LIMIT 10", params)
            assert "idx_memory_due" in plan(f"SELECT count(*) FROM memory WHERE {where}", params)
        assert "idx_memory_dup_key" in plan("SELECT id FROM memory WHERE dup_key IN (?, ?) "
                                            "AND merged_into IS NULL", ["a", "b"])
        assert plan("SELECT id FROM memory WHERE importance >= ? AND merged_into IS NULL "
                    "ORDER BY id", [0.6]) == "SCAN memory"
    finally:
        db.close()
