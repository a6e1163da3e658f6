"""The file itself: path resolution, opening, migrations, init and status."""

import os
import re
import sqlite3 as stdlib_sqlite3
from pathlib import Path

from ravana_db.db import open_db, resolve_path
from ravana_db.schema import migrations
from ravana_db.sql import driver

# DESIGN.md section 2: every table with the original's column names.
ORIGINAL_COLUMNS = {
    "article": "id title link published source fetched_at",
    "event": "id timestamp description keywords cluster_id",
    "summary": "id timestamp summary_text source category content_hash",
    "actionlog": "id timestamp action_name params status result",
    "moodlog": "id timestamp mood_vector",
    "situationlog": "id timestamp situation_type prompt context",
    "decisionlog": "id timestamp situation_id raw_response",
    "experimentlog": "id timestamp hypothesis results",
    "memory": "id text memory_type created_at last_accessed access_count importance source "
              "metadata content_hash key",
    "very_long_term_memories": "memory_id memory_type created_at last_accessed promoted_at "
                               "access_count importance_score strategic_value "
                               "compressed_content metadata_info source_session "
                               "related_memories retention_category",
    "memory_patterns": "pattern_id pattern_type pattern_description confidence_score "
                       "pattern_data discovered_at supporting_memories validation_count "
                       "last_validated source_memory_id",
    "memory_consolidations": "consolidation_id consolidation_date consolidation_type "
                             "memories_processed patterns_extracted compression_ratio "
                             "consolidation_results processing_time_seconds success "
                             "error_message",
    "strategic_knowledge": "knowledge_id knowledge_domain knowledge_summary confidence_level "
                           "last_updated source_patterns knowledge_structure validation_score "
                           "application_count",
    "consolidation_patterns": "consolidation_id pattern_id extraction_confidence",
    "pattern_strategic_knowledge": "pattern_id knowledge_id contribution_weight",
    "consolidation_metrics": "metric_id consolidation_id metric_name metric_value metric_unit "
                             "timestamp",
    "retention_policies": "memory_type retention_days compress_after_days",
}


def test_init_creates_owner_only_file_with_every_original_table(cli, db_path):
    result = cli("init")
    assert result.exit_code == 0
    assert result.stdout.strip() == str(db_path)
    assert "created" in result.stderr
    assert os.stat(db_path).st_mode & 0o777 == 0o600
    # Checked with the plain stdlib driver: the file is an ordinary SQLite database.
    with stdlib_sqlite3.connect(db_path) as conn:
        for table, columns in ORIGINAL_COLUMNS.items():
            have = {r[1] for r in conn.execute(f"PRAGMA table_info([{table}])")}
            assert set(columns.split()) <= have, (table, set(columns.split()) - have)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_vec_loads_on_this_python(db_path):
    # This Python's stdlib sqlite3 cannot load extensions; the driver we use can.
    if not hasattr(stdlib_sqlite3.Connection, "enable_load_extension"):
        assert driver() is not stdlib_sqlite3
    db = open_db(db_path)
    (version,) = db.execute("SELECT vec_version()").fetchone()
    assert version.startswith("v")
    assert db.execute("SELECT vec_length(vec_f32('[1, 2, 3]'))").fetchone()[0] == 3
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_migrations_apply_once_and_reopen_is_a_no_op(db_path):
    db = open_db(db_path)
    names = [m.name for m in migrations.applied(db)]
    schema = db.execute("SELECT group_concat(sql) FROM sqlite_master").fetchone()[0]
    db.close()
    db = open_db(db_path)
    assert [m.name for m in migrations.applied(db)] == names
    assert db.execute("SELECT group_concat(sql) FROM sqlite_master").fetchone()[0] == schema
    assert names == [m.name for m in migrations._migrations]
    assert not list(db_path.parent.glob("*.bak-*"))


def test_path_resolution_order(monkeypatch, tmp_path):
    assert resolve_path(None) == Path("ravana_agi.db")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from_url.db")
    assert resolve_path(None) == Path("from_url.db")
    monkeypatch.setenv("RAVANA_DB", "from_env.db")
    assert resolve_path(None) == Path("from_env.db")
    assert resolve_path("flag.db") == Path("flag.db")


def test_database_url_is_used_by_the_cli(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/url.db")
    assert cli("init", db=False).stdout.strip() == f"{tmp_path}/url.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/x")
    result = cli("init", db=False)
    assert result.exit_code == 2
    assert "DATABASE_URL" in result.stderr and "sqlite:///" in result.stderr


def test_default_path_is_ravana_agi_db_in_the_working_folder(cli, tmp_path):
    assert cli("init", db=False).exit_code == 0
    assert (tmp_path / "ravana_agi.db").exists()


def test_status_on_a_missing_file_fails_without_creating_it(cli, db_path):
    result = cli("status")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "ravana-db init" in result.stderr
    assert not db_path.exists()


def test_a_file_that_is_not_sqlite_is_one_clear_error(cli, db_path):
    db_path.write_bytes(b"this is not a database, just some text" * 100)
    result = cli("status")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {db_path} is not a SQLite database (if it is an encrypted "
                             "one, give its key: --key-file, RAVANA_DB_KEY_FILE or "
                             "RAVANA_DB_KEY)\n")


def test_a_foreign_sqlite_file_is_not_taken_over(cli, db_path):
    with stdlib_sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE notes(x)")
    result = cli("init")
    assert result.exit_code == 2
    assert "not a ravana-db one" in result.stderr


def test_status_reports_versions_counts_and_last_consolidation(cli, rows):
    import json

    cli("log", "action", "--action-name", "a")
    cli("log", "memory", "--text", "hello")
    db = open_db(Path("agent.db"))
    db.execute("INSERT INTO memory_consolidations(consolidation_id, consolidation_date, "
               "consolidation_type) VALUES ('c1', '2026-01-02T00:00:00.000Z', 'daily')")
    db.close()
    status = json.loads(cli("status", "--format", "json").stdout)
    assert status["rows"]["actionlog"] == 1 and status["rows"]["memory"] == 1
    assert status["rows"]["retention_policies"] == 4
    assert status["schema_version"] == len(migrations._migrations)
    assert re.match(r"3\.\d+", status["sqlite_version"])
    assert status["sqlite_vec_version"].startswith("v")
    assert status["last_consolidation"] == {
        "date": "2026-01-02T00:00:00.000Z", "type": "daily", "success": True}
    assert status["size_bytes"] > 0
    # Internal tables (FTS shadow tables, vec0 chunks, migrations) are not listed.
    assert not any(t.startswith(("doc", "_", "sqlite")) for t in status["rows"])


def test_retention_policies_are_seeded_as_data(rows):
    from ravana_db.db import open_db as o

    o(Path("agent.db")).close()
    policies = {r["memory_type"]: (r["retention_days"], r["compress_after_days"])
                for r in rows("retention_policies")}
    assert policies == {
        "strategic_knowledge": (None, 90), "critical_failure": (None, 30),
        "successful_improvement": (730, 180), "code_pattern": (365, 90)}


def test_sqlite_utils_and_our_code_share_one_driver():
    import sqlite_utils.utils

    assert sqlite_utils.utils.sqlite3.IntegrityError is driver().IntegrityError
    assert sqlite_utils.utils.sqlite3.OperationalError is driver().OperationalError


def test_a_driver_that_cannot_load_extensions_is_one_clear_error(cli, monkeypatch, db_path):
    import ravana_db.db

    monkeypatch.setattr(ravana_db.db, "driver", lambda: stdlib_sqlite3)
    result = cli("init")
    if hasattr(stdlib_sqlite3.Connection, "enable_load_extension"):
        assert result.exit_code == 0  # a Python built with extension loading works as is
    else:
        assert result.exit_code == 1
        assert result.stderr == ("error: this Python's sqlite3 cannot load extensions "
                                 "(sqlite-vec): install pysqlite3-binary "
                                 "(`pip install pysqlite3-binary`)\n")
