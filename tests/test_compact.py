"""The compact file: int8 re-rank vectors (vectors.py), integer content keys, and the migration
(m012) that brings a file of the previous release to them without re-embedding."""

import gzip
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_status

from ravana_db import vectors
from ravana_db.db import open_db
from ravana_db.hashing import sha256

PREVIOUS = ROOT / "fixtures" / "previous-release"
EXPECTED = json.loads((PREVIOUS / "expected.json").read_text())


@pytest.fixture
def previous(db_path):
    """The previous release's file (fixtures/previous-release) at the `cli` fixture's path."""
    with gzip.open(PREVIOUS / "previous-release.db.gz") as src, open(db_path, "wb") as out:
        shutil.copyfileobj(src, out)
    db_path.chmod(0o600)
    return db_path


def plain(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def answer(cli, args):
    result = cli("query", "--no-touch", "--top-n", "5", "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    return [[r["kind"], r["id"], r["similarity"]] for r in json.loads(result.stdout)]


def test_encode_keeps_direction_and_norm():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((200, 384)).astype(np.float32)
    v[:100] /= np.linalg.norm(v[:100], axis=1, keepdims=True)
    blobs = vectors.encode(v)
    assert {len(b) for b in blobs} == {386}
    back = vectors.decode(blobs)
    assert back.dtype == np.float32 and back.shape == v.shape
    cos = (back * v).sum(axis=1) / np.linalg.norm(back, axis=1) / np.linalg.norm(v, axis=1)
    assert cos.min() > 0.9995
    assert np.allclose(np.linalg.norm(back, axis=1), np.linalg.norm(v, axis=1), rtol=1e-3)
    zero = vectors.decode(vectors.encode(np.zeros((1, 8), np.float32)))
    assert not zero.any()
    assert vectors.decode([]).shape == (0, 0)


def test_key_is_the_first_64_bits_of_the_sha256():
    for text in ("", "héllo", "x" * 1000):
        digest = sha256(text)
        assert vectors.key(text) == vectors.key_of_hex(digest)
        assert vectors.key(text).to_bytes(8, "big", signed=True).hex() == digest[:16]
    assert -(1 << 63) <= vectors.key("a") < 1 << 63


def test_a_new_file_stores_compact_vectors(cli, embedded):
    (schema,) = plain(embedded, "SELECT sql FROM sqlite_master WHERE name = 'doc_vec'")[0]
    assert "content_hash INTEGER" in schema
    rows = plain(embedded, "SELECT d.text, v.content_hash, length(v.embedding), "
                           "typeof(v.content_hash) FROM doc_vec v JOIN doc d ON d.id = v.doc_id")
    assert rows and {r[2:] for r in rows} == {(386, "integer")}
    assert all(vectors.key(text) == digest for text, digest, *_ in rows)
    indexes = {r[0] for r in plain(embedded, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_doc_article_ts" in indexes
    assert "idx_doc_ts" not in indexes and "idx_memory_created_at" in indexes


def test_the_previous_release_migrates_and_answers_the_same(cli, previous, tmp_path):
    before = plain(previous, "SELECT doc_id, content_hash, embedding FROM doc_vec ORDER BY doc_id")
    counts = plain(previous, "SELECT (SELECT count(*) FROM doc), (SELECT count(*) FROM memory)")
    assert {len(r[2]) for r in before} == {384 * 4}
    for args, expected in EXPECTED:
        got = answer(cli, args)
        assert [r[:2] for r in got[:3]] == [r[:2] for r in expected[:3]], args
        assert sorted(r[:2] for r in got) == sorted(r[:2] for r in expected), args
        for (_, _, sim), (_, _, old) in zip(sorted(got), sorted(expected)):
            assert (sim is None) == (old is None) and (sim is None or abs(sim - old) < 2e-3)
    # migrated on the first open: every vector converted, none re-embedded, a backup kept
    after = plain(previous, "SELECT doc_id, content_hash, embedding FROM doc_vec ORDER BY doc_id")
    assert [r[0] for r in after] == [r[0] for r in before]
    assert [r[1] for r in after] == [vectors.key_of_hex(r[1]) for r in before]
    old = np.frombuffer(b"".join(r[2] for r in before), np.float32).reshape(len(before), -1)
    new = vectors.decode(r[2] for r in after)
    assert ((old * new).sum(axis=1) / np.linalg.norm(new, axis=1)).min() > 0.9995
    assert plain(previous, "SELECT (SELECT count(*) FROM doc), (SELECT count(*) FROM memory)") \
        == counts
    assert plain(previous, "SELECT count(*) FROM embed_queue") == [(0,)]
    indexes = {r[0] for r in plain(previous, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "idx_doc_article_ts" in indexes
    assert "idx_doc_ts" not in indexes and "idx_memory_created_at" in indexes
    assert len(list(tmp_path.glob("agent.db.bak-*"))) == 1
    status = json.loads(cli("status", "--format", "json").stdout)
    assert status["index"]["whole"] is True, status
    assert status["last_migration"] >= "m012_compact_vectors"  # m012 and any later one


def test_reindex_vacuum_gives_the_space_back(cli, previous):
    size = previous.stat().st_size
    result = cli("reindex", "--vacuum", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["embedded"] == 0 and report["vacuumed"] is True
    assert previous.stat().st_size < size
    assert plain(previous, "PRAGMA integrity_check") == [("ok",)]
    # reindex rebuilds every vector: a changed text gets its new compact vector
    plain(previous, "UPDATE memory SET text = 'The GPU ran out of memory twice.' WHERE id = 3")
    assert json.loads(cli("reindex", "--format", "json").stdout)["embedded"] == 1
    assert answer(cli, ["--mode=vector", "--", "GPU ran out of memory"])[0][:2] == ["memory", 3]


def test_rows_the_migration_cannot_convert_are_queued_for_embedding(cli, previous):
    plain(previous, "UPDATE doc_vec SET embedding = x'0102' WHERE doc_id = 1")
    plain(previous, "UPDATE doc_vec SET content_hash = 'not hex' WHERE doc_id = 2")
    db = open_db(previous)
    try:
        assert db.execute("SELECT doc_id FROM doc_vec WHERE doc_id IN (1, 2)").fetchall() == []
        assert db.execute("SELECT doc_id FROM embed_queue").fetchall() == [(1,), (2,)]
    finally:
        db.close()
    assert json.loads(cli("reindex", "--vectors", "--format", "json").stdout)["embedded"] == 2
    assert plain(previous, "SELECT count(*) FROM doc_vec WHERE doc_id IN (1, 2)") == [(2,)]


def grow_previous(path, rows):
    """rows more memories in the previous release's layout, written as plain sqlite3 would:
    each with its search entry (the file's triggers) and a float32 vector under a hex key."""
    rng = np.random.default_rng(7)
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO memory(text, memory_type, created_at) "
                         "VALUES (?, 'fact', '2026-01-01T00:00:00Z')",
                         ((f"grown memory number {i}",) for i in range(rows)))
        docs = conn.execute("SELECT d.id, d.text FROM doc d LEFT JOIN doc_vec v "
                            "ON v.doc_id = d.id WHERE v.doc_id IS NULL").fetchall()
        vecs = rng.standard_normal((len(docs), 384)).astype(np.float32)
        conn.executemany("INSERT INTO doc_vec(doc_id, content_hash, embedding) VALUES (?, ?, ?)",
                         ((d, sha256(t), v.tobytes()) for (d, t), v in zip(docs, vecs)))
        conn.execute("DELETE FROM embed_queue")


def test_sigkill_during_the_migration_leaves_the_previous_file(cli, previous, tmp_path):
    """m012 runs in one transaction: a process killed while it converts leaves the file as
    the previous release had it, and the next open migrates it and answers the same."""
    grow_previous(previous, 12_000)
    reference = tmp_path / "reference" / "agent.db"  # the same file, migrated unharmed
    reference.parent.mkdir()
    shutil.copyfile(previous, reference)
    before = plain(previous, "SELECT doc_id, content_hash, embedding FROM doc_vec ORDER BY doc_id")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAVANA_DB")}

    # How long the migration takes here and now, to its commit (the unharmed copy's, as a
    # plain reader sees it): the kills land in it.
    took, code = run_status(reference, env, done=lambda: plain(
        reference, "SELECT count(*) FROM _sqlite_migrations "
                   "WHERE name = 'm012_compact_vectors'") == [(1,)])
    assert code == 0
    mid = 0
    for share in (0.0, 0.3, 0.6):
        for old in tmp_path.glob("agent.db.bak-*"):
            old.unlink()
        _, code = run_status(previous, env, kill_after=share * took)
        assert code == -signal.SIGKILL, "the migration ended before it was killed"
        wal = Path(f"{previous}-wal")
        mid += wal.exists() and wal.stat().st_size > 0  # it had written pages of m012
        # plain sqlite3 sees the previous release's file: the killed transaction is gone
        assert plain(previous, "SELECT doc_id, content_hash, embedding FROM doc_vec "
                               "ORDER BY doc_id") == before
        assert plain(previous, "SELECT count(*) FROM _sqlite_migrations "
                               "WHERE name = 'm012_compact_vectors'") == [(0,)]
    assert mid, "no kill landed inside the migration"
    for args, _ in EXPECTED:  # the next open migrates, and answers as the unharmed copy
        assert answer(cli, args) == answer(cli, ["--db", reference, *args]), args
    after = plain(previous, "SELECT doc_id, length(embedding) FROM doc_vec ORDER BY doc_id")
    assert [r[0] for r in after] == [r[0] for r in before] and {r[1] for r in after} == {386}
    assert plain(previous, "PRAGMA integrity_check") == [("ok",)]
