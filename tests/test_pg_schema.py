"""The server's schema (ravana_db/postgres/schema.py) on a real PostgreSQL 16 + pgvector."""

import contextlib
import sqlite3
import uuid

import pytest

from ravana_db.db import open_db
from ravana_db.errors import RavanaError
from ravana_db.postgres import schema
from ravana_db.postgres.server import connect
from ravana_db.tables import TABLES


def test_migrate_makes_every_table_once_and_records_its_version(pg_url):
    with contextlib.closing(connect(pg_url)) as conn:
        assert schema.migrate(conn) == list(range(1, schema.VERSION + 1))
        assert schema.migrate(conn) == []
        assert schema.version(conn) == schema.VERSION
        names = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        assert names >= {*TABLES, "doc", "ravana_file", "ravana_schema"}
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert {"doc_tsv", schema.HNSW, "memory_metadata_gin",
                "very_long_term_memories_memory_type_importance_score"} <= indexes
        enum = conn.execute("SELECT enum_range(NULL::memorytype)::text").fetchone()[0]
        assert enum == "{" + ",".join(schema.MEMORY_TYPES) + "}"


def test_server_columns_are_the_files_columns(db_path, pg_url):
    open_db(db_path).close()
    with contextlib.closing(sqlite3.connect(db_path)) as file, \
            contextlib.closing(connect(pg_url)) as conn:
        schema.migrate(conn)
        for table in TABLES:
            ours = [r[1] for r in file.execute(f"PRAGMA table_info([{table}])")]
            assert [name for name, _ in schema.columns(table)] == ours, table
            theirs = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", (table,))]
            assert theirs == ["file_id", *ours], table
            pk = set(schema.key(table))
            assert pk <= set(ours), table


def test_doc_rows_are_searched_by_words_and_by_meaning(pg_url):
    with contextlib.closing(connect(pg_url)) as conn:
        schema.migrate(conn)
        file_id = uuid.uuid4()
        conn.execute("INSERT INTO ravana_file (file_id, name) VALUES (%s, 'a')", (file_id,))
        near, far = [1.0] + [0.0] * 383, [0.0] * 383 + [1.0]
        for doc_id, text, vector in ((1, "ships stuck in the harbour", near),
                                     (2, "a quiet afternoon", far)):
            conn.execute("INSERT INTO doc (file_id, id, kind, ref, text, embedding) "
                         "VALUES (%s, %s, 'memory', %s, %s, %s::vector)",
                         (file_id, doc_id, str(doc_id), text, str(vector)))
        words = conn.execute("SELECT id FROM doc WHERE tsv @@ plainto_tsquery('english', "
                             "'ship harbours')").fetchall()
        assert words == [(1,)]
        meaning = conn.execute("SELECT id FROM doc ORDER BY embedding <=> %s::vector LIMIT 1",
                               (str(near),)).fetchall()
        assert meaning == [(1,)]


def test_a_newer_server_schema_is_refused_in_one_line(pg_url):
    with contextlib.closing(connect(pg_url)) as conn:
        schema.migrate(conn)
        conn.execute("UPDATE ravana_schema SET version = 99")
        with pytest.raises(RavanaError, match="version 99, newer than this ravana-db"):
            schema.migrate(conn)


def test_a_server_that_cannot_be_reached_is_named_without_its_password(pg_server):
    url = "postgresql://agent:s3cret@127.0.0.1:1/memory?sslmode=disable&connect_timeout=2"
    with pytest.raises(RavanaError) as caught:
        connect(url)
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message
    assert message.startswith("cannot connect to postgresql://agent:***@127.0.0.1:1/memory?")
