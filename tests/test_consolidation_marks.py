"""m015: a consolidated memory's marks are integers (the 64-bit duplicate key, the run's number
in the file) and the run's marks have no index; a file consolidated before m015 migrates in
place (one transaction: SIGKILL leaves it as it was) and `consolidate --undo` still undoes
its runs; export and import keep which run consolidated a memory."""

import json
import os
import shutil
import signal
import sqlite3

from conftest import jsonl, run_status

from ravana_db.consolidate.duplicates import key
from ravana_db.db import open_db

MEMORIES = [
    {"key": "a", "text": "The user prefers green tea.", "created_at": "20d"},
    {"key": "b", "text": "the user prefers green tea", "created_at": "19d"},
    {"key": "c", "text": "The deploy script needs the staging flag.", "created_at": "18d"},
    {"key": "d", "text": "Backups run every night at two.", "created_at": "17d"},
]


def plain(path, sql, params=()):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


def consolidate(cli, *args):
    result = cli("consolidate", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def logged(cli):
    result = cli("log", "memory", "--stdin", input=jsonl(*MEMORIES))
    assert result.exit_code == 0, result.stderr


def marks(path):
    return plain(path, "SELECT m.id, m.dup_key, c.consolidation_id FROM memory m "
                       "LEFT JOIN memory_consolidations c ON c.id = m.consolidated_in "
                       "ORDER BY m.id")


def as_previous(path):
    """The file as the release before m015 left it: dup_key 16 hex digits, consolidated_in
    the run's id, both TEXT, and the index of the runs' marks; no record of m015."""
    marked = plain(path, "SELECT m.id, m.dup_key, c.consolidation_id FROM memory m "
                         "LEFT JOIN memory_consolidations c ON c.id = m.consolidated_in "
                         "WHERE m.dup_key IS NOT NULL")
    with sqlite3.connect(path) as conn:
        for name in ("idx_memory_dup_key", "idx_memory_due"):
            conn.execute(f"DROP INDEX {name}")
        conn.execute("DROP TRIGGER memory_text_reconsolidate")
        for column in ("consolidated_in", "dup_key"):
            conn.execute(f"ALTER TABLE memory DROP COLUMN {column}")
        for column in ("dup_key", "consolidated_in"):
            conn.execute(f"ALTER TABLE memory ADD COLUMN {column} TEXT")
        conn.executemany("UPDATE memory SET dup_key = ?, consolidated_in = ? WHERE id = ?",
                         [((k & (1 << 64) - 1).to_bytes(8, "big").hex(), run, i)
                          for i, k, run in marked])
        conn.execute("CREATE INDEX idx_memory_due ON memory(merged_into) WHERE dup_key IS NULL")
        conn.execute("CREATE INDEX idx_memory_dup_key ON memory(dup_key) "
                     "WHERE dup_key IS NOT NULL")
        conn.execute("CREATE INDEX idx_memory_consolidated_in ON memory(consolidated_in) "
                     "WHERE consolidated_in IS NOT NULL")
        conn.execute("CREATE TRIGGER memory_text_reconsolidate AFTER UPDATE OF text ON memory "
                     "WHEN new.text IS NOT old.text AND new.dup_key IS NOT NULL BEGIN "
                     "UPDATE memory SET dup_key = NULL, consolidated_in = NULL "
                     "WHERE id = new.id; END")
        conn.execute("DELETE FROM _sqlite_migrations "
                     "WHERE name = 'm015_consolidation_marks_as_numbers'")


def test_a_run_marks_memories_with_integers_and_undo_clears_them(cli, db_path):
    logged(cli)
    report = consolidate(cli, "--type", "event_triggered")
    assert report["merged"] == 1
    rows = plain(db_path, "SELECT text, typeof(dup_key), dup_key, typeof(consolidated_in) "
                          "FROM memory")
    assert {(t, d) for t, _, d, _ in rows} == {(m["text"], key(m["text"])) for m in MEMORIES}
    assert {(a, b) for _, a, _, b in rows} == {("integer", "integer")}
    assert {run for _, _, run in marks(db_path)} == {report["run_id"]}
    names = [n for n, in plain(db_path, "SELECT name FROM sqlite_master "
                                        "WHERE tbl_name = 'memory' AND type = 'index'")]
    assert "idx_memory_consolidated_in" not in names and "idx_memory_dup_key" in names
    consolidate(cli, "--undo", report["run_id"])
    assert plain(db_path, "SELECT count(*) FROM memory WHERE dup_key IS NOT NULL "
                          "OR consolidated_in IS NOT NULL") == [(0,)]


def test_a_file_consolidated_before_migrates_and_its_run_can_be_undone(cli, db_path):
    logged(cli)
    first = consolidate(cli, "--type", "event_triggered")
    expected = marks(db_path)
    as_previous(db_path)
    assert plain(db_path, "SELECT typeof(dup_key), typeof(consolidated_in) FROM memory "
                          "LIMIT 1") == [("text", "text")]
    assert consolidate(cli, "--list")  # opening migrates
    assert marks(db_path) == expected
    assert plain(db_path, "SELECT count(*) FROM sqlite_master "
                          "WHERE name = 'idx_memory_consolidated_in'") == [(0,)]
    # a new duplicate of a migrated memory is found by the migrated key
    result = cli("log", "memory", "--stdin", input=jsonl(
        {"key": "e", "text": "The user prefers GREEN tea!", "created_at": "1d"}))
    assert result.exit_code == 0, result.stderr
    second = consolidate(cli, "--type", "event_triggered")
    assert second["merged"] == 1
    consolidate(cli, "--undo", second["run_id"])
    consolidate(cli, "--undo", first["run_id"])
    assert plain(db_path, "SELECT count(*) FROM memory WHERE dup_key IS NOT NULL "
                          "OR consolidated_in IS NOT NULL OR merged_into IS NOT NULL") == [(0,)]
    assert plain(db_path, "PRAGMA integrity_check") == [("ok",)]


def test_export_and_import_keep_the_run_that_consolidated_a_memory(cli, db_path, tmp_path):
    logged(cli)
    report = consolidate(cli, "--type", "event_triggered")
    folder = tmp_path / "export"
    result = cli("export", "all", "--format", "jsonl", "--output", folder)
    assert result.exit_code == 0, result.stderr
    other = tmp_path / "other.db"  # its own run first: the runs' numbers differ
    result = cli("--db", other, "init", db=False)
    assert result.exit_code == 0, result.stderr
    result = cli("--db", other, "consolidate", "--format", "json", db=False)
    assert result.exit_code == 0, result.stderr
    result = cli("--db", other, "ingest", "dir", folder, db=False)
    assert result.exit_code == 0, result.stderr
    assert marks(other) == marks(db_path)
    result = cli("--db", other, "consolidate", "--undo", report["run_id"], "--format", "json",
                 db=False)
    assert result.exit_code == 0, result.stderr
    assert plain(other, "SELECT count(*) FROM memory WHERE consolidated_in IS NOT NULL") == \
        [(0,)]
    # an export made before m015: hex keys, the run's id; keys found again, the run's not
    lines = [json.loads(line) for line in (folder / "memory.jsonl").read_text().splitlines()]
    for row in lines:
        row["dup_key"] = (row["dup_key"] & (1 << 64) - 1).to_bytes(8, "big").hex() * 4
        row["consolidated_in"] = report["run_id"]
    (folder / "memory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    third = tmp_path / "third.db"
    result = cli("--db", third, "ingest", "dir", folder, db=False)
    assert result.exit_code == 0, result.stderr
    assert plain(third, "SELECT text, dup_key, consolidated_in FROM memory") == \
        [(m["text"], key(m["text"]), None) for m in MEMORIES]



def test_sigkill_during_the_migration_leaves_the_file_before(cli, db_path, tmp_path):
    """m015 rewrites memory's columns in the migration's one transaction: a process killed
    during it leaves the file as the release before had it; the next open migrates it."""
    logged(cli)
    consolidate(cli, "--type", "event_triggered")
    expected = marks(db_path)
    with sqlite3.connect(db_path) as conn:  # enough rows for the migration to take a while
        conn.executemany("INSERT INTO memory(text, memory_type, created_at, dup_key) "
                         "VALUES (?, 'fact', '2026-01-01T00:00:00Z', ?)",
                         ((f"grown memory number {i}", i) for i in range(200_000)))
    as_previous(db_path)
    reference = tmp_path / "reference" / "agent.db"  # the same file, migrated unharmed
    reference.parent.mkdir()
    shutil.copyfile(db_path, reference)
    before = plain(db_path, "SELECT sql FROM sqlite_master ORDER BY name")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAVANA_DB")}
    whole, code = run_status(reference, env)
    assert code == 0 and whole > 0.05, whole
    for share in (0.1, 0.3, 0.5):
        for old in tmp_path.glob("agent.db.bak-*"):
            old.unlink()
        _, code = run_status(db_path, env, kill_after=share * whole)
        assert code == -signal.SIGKILL, "the migration ended before it was killed"
        assert plain(db_path, "SELECT sql FROM sqlite_master ORDER BY name") == before
        assert plain(db_path, "SELECT count(*) FROM _sqlite_migrations "
                              "WHERE name = 'm015_consolidation_marks_as_numbers'") == [(0,)]
    db = open_db(db_path)  # the next open migrates, as the unharmed copy
    db.close()
    assert marks(db_path) == marks(reference)
    assert marks(db_path)[:len(expected)] == expected
    assert plain(db_path, "PRAGMA integrity_check") == [("ok",)]
