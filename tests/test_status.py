"""`ravana-db status` (status.py): what it says about a file, checked against the file itself,
in JSON and in a table, and that asking writes nothing."""

import contextlib
import json
import os
import sqlite3

from conftest import DEMO_FEED, contents, one_line_error

import ravana_db
from ravana_db.tables import TABLES


def status(cli, *args):
    result = cli("status", "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def counts(path):
    """Each of our tables' row count, and the migrations applied, read with Python's sqlite3."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = {t: conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in TABLES}
        applied = [name for (name,) in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'ravana_db' ORDER BY id")]
    return rows, applied


def size(path):
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))


def test_a_new_file_is_described_from_what_it_holds(cli, db_path):
    assert cli("init").exit_code == 0
    described = status(cli)
    rows, applied = counts(db_path)
    assert described["path"] == str(db_path)
    assert described["size_bytes"] == size(db_path)
    assert (described["schema_version"], described["last_migration"]) == (len(applied),
                                                                          applied[-1])
    assert described["ravana_db_version"] == ravana_db.__version__
    assert described["sqlite_vec_version"].startswith("v")
    assert described["rows"] == rows
    assert list(described["rows"]) == list(TABLES)  # ours only, in the schema's order
    assert rows["consolidation_policy"] and rows["retention_policies"]  # seeded by migrations
    assert (described["last_consolidation"], described["feeds"]) == (
        None, {"subscribed": 0, "paused": 0})
    assert described["consolidation"] == {
        "runs": 0, "failed_runs": 0, "last_run": None, "memories_merged": 0,
        "memories_waiting": 0, "links": 0, "very_long_term_memories": 0, "patterns": 0,
        "knowledge": 0}


def test_an_embedded_file_is_counted(cli, embedded):
    described = status(cli)
    rows, _ = counts(embedded)
    assert described["rows"] == rows
    assert (rows["memory"], rows["article"], rows["feed"]) == (60, 8, 1)
    assert (described["embedding_model"], described["embedding_dim"]) == (
        "ravana-db/all-MiniLM-L6-v2-int8", 384)
    assert described["index"]["whole"] is True
    assert described["feeds"] == {"subscribed": 1, "paused": 0}
    assert described["consolidation"]["memories_waiting"] == 60  # none consolidated yet


def test_asking_writes_nothing(cli, embedded):
    before = contents(embedded)
    for fmt in ("json", "table", "jsonl", "csv"):
        assert cli("status", "--format", fmt).exit_code == 0
    assert contents(embedded) == before


def test_runs_of_consolidate_are_counted_and_the_last_of_any_is_shown(cli, embedded, rows):
    done = cli("consolidate", "--type", "event_triggered", "--format", "json")
    assert done.exit_code == 0, done.stderr
    (run,) = rows("memory_consolidations")
    described = status(cli)
    assert described["last_consolidation"] == {
        "date": run["consolidation_date"], "type": "event_triggered", "success": True}
    consolidation = described["consolidation"]
    assert (consolidation["runs"], consolidation["failed_runs"], consolidation["last_run"]) == (
        1, 0, run["consolidation_date"])
    merged = rows("SELECT count(*) AS n FROM memory WHERE merged_into IS NOT NULL")[0]["n"]
    waiting = rows("SELECT count(*) AS n FROM memory WHERE dup_key IS NULL")[0]["n"]
    links = rows("SELECT count(*) AS n FROM memory_link")[0]["n"]
    assert (consolidation["memories_merged"], consolidation["memories_waiting"],
            consolidation["links"]) == (merged, waiting, links)
    assert waiting < 60
    # A compress run is the latest run, but not a consolidation.
    assert cli("compress", "--format", "json").exit_code == 0
    again = status(cli)
    latest = rows("SELECT consolidation_date FROM memory_consolidations ORDER BY id DESC")[0]
    assert again["last_consolidation"]["date"] == latest["consolidation_date"]
    assert again["consolidation"]["runs"] == 1


def test_paused_and_removed_feeds(cli, embedded):
    assert cli("feeds", "pause", DEMO_FEED).exit_code == 0
    assert status(cli)["feeds"] == {"subscribed": 1, "paused": 1}
    assert cli("feeds", "remove", DEMO_FEED).exit_code == 0
    assert status(cli)["feeds"] == {"subscribed": 0, "paused": 0}


def test_a_damaged_dimension_is_shown_as_recorded(cli, embedded):
    with contextlib.closing(sqlite3.connect(embedded)) as conn:
        conn.execute("UPDATE meta SET value = 'three' WHERE key = 'embedding_dim'")
        conn.commit()
    assert status(cli)["embedding_dim"] == "three"


def test_status_for_people_is_one_line_per_field(cli, embedded, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the path on one line
    table = cli("status", "--format", "table").stdout
    lines = {" ".join(line.split()) for line in table.splitlines()}
    assert {"rows.memory 60", "rows.article 8", "feeds.subscribed 1", "index.whole True",
            "embedding_dim 384", f"path {embedded}"} <= lines
    assert not any(line.startswith(("rows.doc", "rows._")) for line in lines)


def test_status_of_a_missing_file_is_one_line(cli, db_path):
    assert "ravana-db init" in one_line_error(cli("status"))
    assert not db_path.exists()
