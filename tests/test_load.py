"""`ravana-db ingest jsonl|dir|ravana`: an export read into a new file gives the same rows in
every table (ids aside, references mapped by natural keys); reading it again adds nothing; bad
lines are one error and nothing stored; the original system's database is imported read-only,
its quirks mapped, twice to the same counts."""

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import contents, copy_db, jsonl, one_line_error
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.db import open_db
from ravana_db.hashing import sha256
from ravana_db.load import table_info
from ravana_db.tables import NATURAL, TABLES

FIXTURES = Path(__file__).parent.parent / "fixtures"
STORY = [FIXTURES / "feeds" / "story" / f"outlet-{x}.xml" for x in "abc"]
spec = importlib.util.spec_from_file_location("make_original",
                                              FIXTURES / "ravana" / "make_original.py")
original = importlib.util.module_from_spec(spec)
spec.loader.exec_module(original)


def invoke(db, *args, input=None):
    return CliRunner().invoke(app, ["--db", str(db), *map(str, args)], input=input,
                              catch_exceptions=False)


def ok(result):
    assert result.exit_code == 0, result.stderr
    return result


def report(result):
    """{table: counts} of a report written with --format json."""
    return {r.pop("table"): r for r in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A file with rows in every table, written the ways users write them: feeds fetched and
    grouped into events, `log` of every kind, and the tables no command writes yet by SQL.
    Exported once to `dump/` beside it."""
    folder = tmp_path_factory.mktemp("source")
    db = folder / "source.db"
    ok(invoke(db, "ingest", "feeds", *STORY))
    ok(invoke(db, "log", "situation", "--stdin", input=jsonl(
        {"situation_type": "curiosity", "prompt": "Why do bridges fail?",
         "context": {"topic": "engineering"}, "timestamp": "2024-05-01T09:00:00Z"},
        {"situation_type": "reflection", "prompt": "Was the fetch slow?"})))
    ok(invoke(db, "log", "decision", "--stdin", input=jsonl(
        {"situation_id": 2, "raw_response": "Retry later"},
        {"situation_id": 1, "raw_response": "Read the inspection reports"},
        {"raw_response": "A decision without a situation"})))
    ok(invoke(db, "log", "action", "--action-name", "search", "--params", '{ "q" :"bridge"}',
              "--result", '"plain"'))
    ok(invoke(db, "log", "mood", "--mood-vector", '{"curious": 0.8}'))
    ok(invoke(db, "log", "experiment", "--hypothesis", "Caching helps", "--results", "[1, 2]"))
    ok(invoke(db, "log", "summary", "--summary-text", "Bridges need inspection.",
              "--category", "compression"))
    ok(invoke(db, "log", "memory", "--stdin", input=jsonl(
        {"text": "The user prefers short answers", "key": "pref", "importance": 0.9,
         "metadata": {"from": "chat", "東京": [1, 2.5]}},
        {"text": "A memory without a key, line one\nand line two",
         "created_at": "2024-05-02T10:00:00Z"},
        {"text": "Another without a key"})))
    ok(invoke(db, "log", "vltm", "--memory-id", "vltm-1", "--memory-type", "critical_failure",
              "--compressed-content", "Friday deploys broke the build"))
    ok(invoke(db, "log", "pattern", "--pattern-id", "pattern-1", "--pattern-type", "temporal",
              "--pattern-description", "Failures cluster on Fridays", "--confidence-score",
              "0.7", "--source-memory-id", "vltm-1"))
    ok(invoke(db, "log", "knowledge", "--knowledge-id", "know-1", "--knowledge-domain",
              "deploys", "--knowledge-summary", "Ship early in the week",
              "--confidence-level", "0.9", "--source-patterns", '["pattern-1"]'))
    ok(invoke(db, "query", "user answers", "--kind", "memory", "-n", "1"))  # touches a memory
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript("""
            INSERT INTO memory_consolidations(consolidation_id, consolidation_type,
                consolidation_results, success) VALUES ('cons-1', 'daily', '{"n": 1}', 0);
            INSERT INTO consolidation_patterns VALUES ('cons-1', 'pattern-1', 0.5);
            INSERT INTO pattern_strategic_knowledge VALUES ('pattern-1', 'know-1', 0.25);
            INSERT INTO consolidation_metrics(metric_id, consolidation_id, metric_name,
                metric_value, metric_unit) VALUES ('metric-1', 'cons-1', 'ratio', 0.5, NULL);
            INSERT INTO retention_policies(memory_type, retention_days, description)
                VALUES ('failed_experiment', 30, 'a month');
            UPDATE retention_policies SET compress_after_days = 45
                WHERE memory_type = 'code_pattern';
            UPDATE actionlog SET params = '{ "q" :"bridge"}';  -- as a plain client writes JSON
        """)
    if "memory_link" in TABLES:  # consolidate's tables: ids of memories, one forward
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.executescript("""
                UPDATE memory SET merged_into = 3 WHERE id = 2;
                INSERT INTO memory_link(memory_id, related_id, similarity, reason)
                    VALUES (1, 3, 0.91, 'similar');
                INSERT INTO memory_merge VALUES ('cons-1', 2, 3, 'merged', NULL, '{}', '{}');
            """)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0], table
        assert conn.execute("SELECT count(*) FROM event_article").fetchone()[0] >= 2
        assert conn.execute("SELECT count(DISTINCT cluster_id) FROM article").fetchone()[0] > 1
    ok(invoke(db, "export", "all", "--output", folder / "dump"))
    return db


@pytest.fixture(scope="module")
def loaded(source, tmp_path_factory):
    """The source's export read into a new file (made once; tests copy it to change it)."""
    db = tmp_path_factory.mktemp("loaded") / "loaded.db"
    result = ok(invoke(db, "ingest", "dir", source.parent / "dump", "--format", "json"))
    counts = report(result)
    assert list(counts) == list(TABLES)
    assert all(c["refused"] == 0 for c in counts.values()), counts
    return db, counts


def exported(db, folder):
    ok(invoke(db, "export", "all", "--output", folder))
    return {t: [json.loads(line) for line in (folder / f"{t}.jsonl").open()] for t in TABLES}


def open_new(path):
    open_db(path).close()
    return path


def natural(tables):
    """Every table's rows with what must differ between files taken out: the integer ids
    that number rows in one file (each table's `id`), and every reference through one
    replaced by the referenced row's natural key (a feed's url, an article's feed url and
    guid, an event's cluster's article, a situation's time and prompt)."""
    feeds = {r["id"]: r["url"] for r in tables["feed"]}
    articles = {r["id"]: (feeds[r["feed_id"]], r["guid"]) for r in tables["article"]}
    situations = {r["id"]: (r["timestamp"], r["prompt"]) for r in tables["situationlog"]}
    events = {r["id"]: articles[r["cluster_id"]] for r in tables["event"]}
    memories = {r["id"]: (r["key"], r["created_at"], r["text"]) for r in tables["memory"]}
    refs = {"feed_id": feeds, "cluster_id": articles, "situation_id": situations,
            "event_id": events, "article_id": articles, "merged_into": memories,
            "related_id": memories, "survivor_id": memories}
    result = {}
    for table, rows in tables.items():
        mine = {**refs, "memory_id": memories} if table in ("memory_link", "memory_merge") \
            else refs
        result[table] = sorted(json.dumps({
            k: (mine[k][v] if k in mine and v is not None else v)
            for k, v in row.items() if k != "id"}, sort_keys=True) for row in rows)
    return result


# 1. ingest dir: the same rows in a new file ----------------------------------------------------


def test_an_export_read_into_a_new_file_gives_the_same_rows_in_every_table(source, loaded,
                                                                           tmp_path):
    db, counts = loaded
    before = exported(source, tmp_path / "a")
    after = exported(db, tmp_path / "b")
    assert natural(after) == natural(before)
    # The new file was empty: every row is new, but the policies its migrations wrote, which
    # the export's rows update (edited, or stamped at another time).
    seeded = {t: len(rows) for t, rows in contents(open_new(tmp_path / "new.db")).items()
              if t in TABLES and rows}
    for table, c in counts.items():
        assert c["read"] == len(before[table]), table
        n = seeded.get(table, 0)
        assert (c["new"], c["updated"], c["existing"]) == (len(before[table]) - n, n, 0), table
    # JSON text is kept byte for byte, and hashes are those of the text.
    action = after["actionlog"][0]
    assert (action["params"], action["result"]) == ('{ "q" :"bridge"}', '"plain"')
    assert all(m["content_hash"] == sha256(m["text"]) for m in after["memory"])


def test_clusters_and_event_links_point_at_the_same_articles(source, loaded):
    db, _ = loaded
    sql = """SELECT e.description, f.url, a.guid, c.guid FROM event_article l
             JOIN event e ON e.id = l.event_id JOIN article a ON a.id = l.article_id
             JOIN feed f ON f.id = a.feed_id JOIN article c ON c.id = a.cluster_id
             ORDER BY 1, 2, 3"""
    links = [sqlite3.connect(path).execute(sql).fetchall() for path in (source, db)]
    assert links[0] and links[0] == links[1]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        # A cluster's id is its first article's id here too.
        assert conn.execute("SELECT count(*) FROM article a JOIN article c ON "
                            "c.id = a.cluster_id WHERE c.cluster_id != c.id").fetchone() == (0,)


def test_the_new_file_is_searchable_by_words_and_meaning(loaded):
    db, _ = loaded
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM embed_queue").fetchone() == (0,)
        docs = conn.execute("SELECT count(*) FROM doc").fetchone()[0]
        assert docs and conn.execute("SELECT count(*) FROM doc_vec").fetchone()[0] == docs
    hits = json.loads(ok(invoke(db, "query", "bridge collapsed in Italy", "--mode", "vector",
                                "--kind", "article", "--no-touch")).stdout)
    assert "Bologna" in hits[0]["text"]
    hits = json.loads(ok(invoke(db, "query", "short answers", "--kind", "memory",
                                "--no-touch")).stdout)
    assert hits[0]["key"] == "pref"


def test_reading_the_same_export_again_adds_nothing(source, loaded, tmp_path):
    db = copy_db(loaded[0], tmp_path / "again.db")
    before = contents(db)
    counts = report(ok(invoke(db, "ingest", "dir", source.parent / "dump", "--format", "json")))
    assert all(c["new"] == c["updated"] == 0 and c["existing"] == c["read"]
               for c in counts.values()), counts
    assert contents(db) == before


def test_a_file_that_holds_rows_gets_the_export_mapped_onto_its_own_ids(source, tmp_path):
    db = tmp_path / "busy.db"
    # Rows of its own first: other ids everywhere, and one of the export's feeds already.
    ok(invoke(db, "log", "situation", "--situation-type", "x", "--prompt", "its own"))
    ok(invoke(db, "log", "decision", "--situation-id", "1", "--raw-response", "its own"))
    ok(invoke(db, "log", "memory", "--text", "its own memory", "--key", "mine"))
    ok(invoke(db, "ingest", "feeds", STORY[1], "--no-events"))
    counts = report(ok(invoke(db, "ingest", "dir", source.parent / "dump", "--format", "json")))
    assert counts["feed"] == dict(read=3, new=2, updated=1, existing=0, refused=0)  # state
    # STORY[1]'s articles, found by feed url and guid, get the export's clusters.
    assert (counts["article"]["new"], counts["article"]["updated"]) == (7, 4)

    def rows(path, sql):
        return sorted(sqlite3.connect(path).execute(sql).fetchall())

    sql = ("SELECT d.raw_response, s.prompt FROM decisionlog d "
           "LEFT JOIN situationlog s ON s.id = d.situation_id")
    assert set(rows(source, sql)) < set(rows(db, sql))
    assert ("its own", "its own") in rows(db, sql)
    sql = "SELECT f.url, a.guid, a.title FROM article a JOIN feed f ON f.id = a.feed_id"
    assert rows(db, sql) == rows(source, sql)
    assert rows(db, "SELECT key FROM memory WHERE key IS NOT NULL") == [("mine",), ("pref",)]
    assert sqlite3.connect(db).execute("PRAGMA foreign_key_check").fetchall() == []


def test_an_interrupted_run_keeps_its_batches_and_a_second_run_completes(source, loaded,
                                                                         tmp_path, monkeypatch):
    from ravana_db import store
    from ravana_db.load import loader

    db, write, calls = tmp_path / "resumed.db", store.write, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return write(*args, **kwargs)

    monkeypatch.setattr(loader, "BATCH", 2)
    monkeypatch.setattr(store, "write", interrupted)
    assert invoke(db, "ingest", "dir", source.parent / "dump").exit_code == 130
    monkeypatch.setattr(store, "write", write)
    stored = contents(db)
    assert 0 < len(stored["article"]) < len(contents(source)["article"])
    counts = report(ok(invoke(db, "ingest", "dir", source.parent / "dump", "--format", "json")))
    assert counts["feed"]["existing"] == 3 and counts["article"]["existing"] == len(
        stored["article"])
    assert natural(exported(db, tmp_path / "a")) == natural(exported(loaded[0], tmp_path / "b"))


def test_an_incomplete_or_foreign_folder_is_refused(source, tmp_path, cli, db_path):
    dump = tmp_path / "dump"
    shutil.copytree(source.parent / "dump", dump)
    with (dump / "memory.jsonl").open("a") as f:
        f.write('{"text": "one more than the manifest says"}\n')
    assert "memory.jsonl holds 4 rows, manifest.json says 3" in one_line_error(
        cli("ingest", "dir", dump))
    (dump / "manifest.json").unlink()
    assert "has no manifest.json" in one_line_error(cli("ingest", "dir", dump))
    assert "is not a folder" in one_line_error(cli("ingest", "dir", tmp_path / "nowhere"))
    assert not db_path.exists() or contents(db_path)["memory"] == []


# 2. ingest jsonl ------------------------------------------------------------------------------


def test_one_table_from_stdin_and_again(source, cli, rows):
    # (Without consolidate's merged_into: a memory's id in another file means nothing here.)
    lines = "".join(json.dumps({k: v for k, v in json.loads(line).items()
                                if k != "merged_into"}, ensure_ascii=False) + "\n"
                    for line in ok(invoke(source, "export", "memory")).stdout.splitlines())
    first = ok(cli("ingest", "jsonl", "-", "--table", "memory", "--format", "json",
                   input=lines))
    assert report(first)["memory"] == dict(read=3, new=3, updated=0, existing=0, refused=0)
    again = ok(cli("ingest", "jsonl", "-", "-t", "memory", "-f", "json", input=lines))
    assert report(again)["memory"]["existing"] == 3
    stored = [{k: v for k, v in r.items() if k not in ("id", "merged_into")}
              for r in rows("memory")]
    assert stored == [{k: v for k, v in json.loads(line).items() if k != "id"}
                      for line in lines.splitlines()]


def test_without_format_the_report_is_a_table_on_stderr(tmp_path, cli):
    path = tmp_path / "moods.jsonl"
    path.write_text(jsonl({"mood_vector": {"calm": 0.5}, "timestamp": "2024-01-01"}))
    result = ok(cli("ingest", "jsonl", path, "--table", "moodlog"))
    assert result.stdout == ""
    assert "moodlog" in result.stderr and "existing" in result.stderr


@pytest.mark.parametrize("line, error", [
    ('{"text": "x", "importance": 2}', "line 3: CHECK constraint failed: importance"),
    ('{"text": "x", "colour": "red"}', "line 3: colour: unknown field"),
    ('{"text": "x", "metadata": "[1]"}', "line 3: metadata: must be a JSON object"),
    ('{"text": "x", "created_at": "soon"}', "line 3: created_at: 'soon' is not an ISO-8601"),
    ('{"text": "x"', "line 3: not valid JSON"),
    ('["text"]', "line 3: expected a JSON object, got list"),
    ('{"id": "seven", "text": "x"}', "line 3: id: 'seven' is not an integer"),
])
def test_a_bad_line_is_one_error_and_nothing_is_stored(cli, db_path, line, error):
    good = jsonl({"text": "fine", "key": "a"}, {"text": "fine too"})
    result = cli("ingest", "jsonl", "-", "--table", "memory", input=good + line + "\n")
    assert error in one_line_error(result)
    assert contents(db_path)["memory"] == []


def test_references_are_this_files_ids_and_must_exist(cli, db_path, tmp_path):
    path = tmp_path / "decisions.jsonl"
    path.write_text(jsonl({"raw_response": "ok"}, {"situation_id": 5, "raw_response": "no"}))
    error = one_line_error(cli("ingest", "jsonl", path, "--table", "decisionlog"))
    assert error == (f"error: {path} line 2: situation_id: no situationlog row with id 5 in "
                     "this file\n")
    assert contents(db_path)["decisionlog"] == []


def test_unknown_table_and_missing_file_are_refused(cli, tmp_path):
    assert "did you mean memory?" in one_line_error(
        cli("ingest", "jsonl", "-", "--table", "memroy", input="{}\n"))
    assert "no such file" in one_line_error(
        cli("ingest", "jsonl", tmp_path / "none.jsonl", "--table", "memory"))
    assert "no rows to ingest" in one_line_error(
        cli("ingest", "jsonl", "-", "--table", "memory", input="\n"))


def test_a_line_over_the_limit_is_refused_naming_it_without_reading_on(cli, db_path, rows):
    """/dev/zero is one endless line: refused at the limit, at once (no MemoryError)."""
    run = subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(db_path), "ingest",
                          "jsonl", "/dev/zero", "--table", "memory"], capture_output=True,
                         timeout=120)
    assert one_line_error(run) == ("error: /dev/zero line 1: longer than 16 MiB, the most a "
                                   "line may hold\n")
    cli("log", "memory", "--text", "kept", "--key", "k")
    big = jsonl({"text": "fine"}) + '{"text": "' + "x" * (16 << 20) + '"}\n'
    error = one_line_error(cli("ingest", "jsonl", "-", "--table", "memory", input=big))
    assert error == "error: line 2: longer than 16 MiB, the most a line may hold\n"
    ok(cli("export", "all", "--output", "dump"))
    Path("dump/memory.jsonl").write_text(big)
    error = one_line_error(cli("ingest", "dir", "dump"))
    assert error == "error: memory.jsonl line 2: longer than 16 MiB, the most a line may hold\n"
    assert [r["text"] for r in rows("memory")] == ["kept"]


def test_many_batches_are_checked_before_any_is_written(cli, db_path):
    """Lines are checked in a first pass that holds one batch at a time: a bad line after
    two batches still stores nothing; good ones from stdin are all stored, once."""
    good = "".join(json.dumps({"text": f"note {i}", "key": f"k{i}"}) + "\n" for i in range(1100))
    bad = cli("ingest", "jsonl", "-", "--table", "memory", input=good + '{"text": 5}\n')
    assert "line 1101: text" in one_line_error(bad)
    assert contents(db_path)["memory"] == []
    first = ok(cli("ingest", "jsonl", "-", "-t", "memory", "-f", "json", input=good + good))
    assert report(first)["memory"] == dict(read=2200, new=1100, updated=0, existing=1100,
                                           refused=0)
    assert len(contents(db_path)["memory"]) == 1100


# 3. ingest ravana: the original system's database ----------------------------------------------


@pytest.fixture
def ravana(tmp_path):
    return original.make(tmp_path / "ravana_agi.db")


def fingerprint(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def test_the_original_is_imported_read_only_and_twice_to_the_same_rows(ravana, cli, db_path):
    before = fingerprint(ravana)
    first = report(ok(cli("ingest", "ravana", ravana, "--format", "json")))
    assert first["article"] == dict(read=5, new=4, updated=0, existing=1, refused=0)
    assert first["event"] == dict(read=3, new=2, updated=0, existing=0, refused=1)
    assert first["summary"] == dict(read=3, new=2, updated=0, existing=1, refused=0)
    assert first["actionlog"]["refused"] == 1
    assert all(first[t]["new"] == 1 for t in ("memory_patterns", "strategic_knowledge",
                                              "consolidation_patterns", "consolidation_metrics"))
    stored = contents(db_path)
    second = report(ok(cli("ingest", "ravana", ravana, "--format", "json")))
    assert all(c["new"] == c["updated"] == 0 for c in second.values()), second
    assert contents(db_path) == stored
    assert fingerprint(ravana) == before  # and no -wal, -shm or -journal beside it
    assert [n for n in os.listdir(ravana.parent) if n.startswith("ravana")] == [ravana.name]


def test_the_originals_quirks_are_mapped(ravana, cli, rows):
    result = ok(cli("ingest", "ravana", ravana, "--format", "json"))
    assert "event id 3: timestamp: 'the day after' is not a time" in result.stderr
    assert "actionlog id 4: status 'maybe' is neither success nor failure" in result.stderr
    articles = {r["guid"]: r for r in rows("article")}
    (feed,) = rows("feed")
    assert (feed["url"], articles["https://news.example/chips"]["feed_id"]) == (
        "unknown:", feed["id"])
    chips = articles["https://news.example/chips"]  # twice in the original: the first kept
    assert (chips["title"], chips["published"]) == (
        "Chipmakers rally as export curbs ease", "2024-05-06T10:00:00.000Z")  # RFC 822
    assert chips["fetched_at"] == "2024-05-06T10:05:00.123Z"
    assert articles["https://news.example/rates"]["published"] is None  # 'Unknown'
    assert articles["https://news.example/strike"]["published"] == "2024-05-07T06:30:00.000Z"
    assert articles["ravana:article:5"]["link"] == ""  # no link: its id is its identity
    assert articles["ravana:article:5"]["published"] is None  # 'yesterday'
    events = rows("event")
    assert [(e["description"], e["keywords"], e["cluster_id"]) for e in events] == [
        ("chips, export, curbs", "chips, export, curbs", None),
        ("Harbour strike ends", "harbour, strike", None)]
    summaries = rows("summary")
    assert [s["content_hash"] for s in summaries] == [sha256(s["summary_text"])
                                                      for s in summaries]
    assert (summaries[0]["source"], summaries[0]["category"]) == ("unknown", "misc")
    actions = {a["action_name"]: a for a in rows("actionlog")}
    assert actions["search"]["timestamp"] == "2024-05-06T10:00:00.000Z"
    assert json.loads(actions["fetch"]["params"]) == {"url": "https://news.example", "n": 2}
    assert (actions["fetch"]["status"], json.loads(actions["fetch"]["result"])) == (
        "failure", "Timed out after 20 s")
    assert json.loads(actions["think"]["params"]) == {"_raw": "not json at all"}
    assert [m["mood_vector"] for m in rows("moodlog")][1] == "{}"
    assert json.loads(rows("situationlog")[1]["context"]) == {"_raw": "{broken json"}
    decisions = rows("SELECT d.raw_response, s.prompt FROM decisionlog d "
                     "LEFT JOIN situationlog s ON s.id = d.situation_id ORDER BY d.id")
    assert [d["prompt"] for d in decisions] == [
        "Why do chip stocks move together?", "What went wrong with the fetch?", None]
    assert json.loads(rows("experimentlog")[1]["results"]) == "inconclusive"
    vltm = {v["memory_id"]: v for v in rows("very_long_term_memories")}
    first, second = vltm[original.VLTM], vltm[original.VLTM2]
    assert (first["created_at"], first["retention_category"]) == (
        "2024-05-01T10:00:00.000Z", "permanent")
    assert json.loads(second["compressed_content"]) == {
        "text": "Prefer small deploys early in the week"}
    assert rows("memory_consolidations")[0]["success"] == 1  # Postgres' 't'
    hits = json.loads(ok(cli("query", "friday deploys", "--kind", "vltm", "--no-touch")).stdout)
    assert hits[0]["id"] == original.VLTM


def test_a_wal_original_is_read_with_its_wal_and_its_folder_untouched(tmp_path, cli, rows):
    """The original left as a running system leaves it: WAL mode, rows still in its -wal,
    one summary whose text is not UTF-8. Its folder holds the same files, byte for byte and
    mtime, after the import; the WAL's rows are read; the bad row alone is refused, counted."""
    made = original.make(tmp_path / "ravana_agi.db")
    folder = tmp_path / "original"
    folder.mkdir()
    with contextlib.closing(sqlite3.connect(made)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("INSERT INTO summary (id, timestamp, summary_text) VALUES "
                     "(10, '2024-05-08T10:00:00', 'Only in the WAL: ports reopened.'), "
                     "(11, '2024-05-08T11:00:00', CAST(X'6e6f74207574662d3820ff' AS TEXT))")
        conn.commit()
        for name in os.listdir(tmp_path):
            if name.startswith("ravana_agi.db") and not name.endswith("-shm"):
                shutil.copy2(tmp_path / name, folder / name)
    path = folder / "ravana_agi.db"
    before = {name: fingerprint(folder / name) for name in os.listdir(folder)}
    assert sorted(before) == ["ravana_agi.db", "ravana_agi.db-wal"]
    result = ok(cli("ingest", "ravana", path, "--format", "json"))
    assert report(result)["summary"] == dict(read=5, new=3, updated=0, existing=1, refused=1)
    assert "summary id 11: summary_text: not valid UTF-8 text" in result.stderr
    assert "Only in the WAL: ports reopened." in [r["summary_text"] for r in rows("summary")]
    assert {name: fingerprint(folder / name) for name in os.listdir(folder)} == before


def test_an_original_without_the_very_long_term_tables(tmp_path, cli, rows):
    path = original.make(tmp_path / "core.db", vltm=False)
    counts = report(ok(cli("ingest", "ravana", path, "--format", "json")))
    assert "very_long_term_memories" not in counts and counts["decisionlog"]["new"] == 3
    assert rows("very_long_term_memories") == []


def test_what_is_not_the_originals_database_is_refused(tmp_path, cli, db_path, source):
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, but long enough to have a header\n")
    assert one_line_error(cli("ingest", "ravana", text)) == \
        f"error: {text} is not a SQLite database\n"
    assert "no such file" in one_line_error(cli("ingest", "ravana", tmp_path / "missing.db"))
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE stuff (x)")
    assert "holds none of the original's tables" in one_line_error(
        cli("ingest", "ravana", other))
    assert "is a ravana-db file" in one_line_error(cli("ingest", "ravana", source))
    open_db(db_path).close()
    assert "is the database being written" in one_line_error(cli("ingest", "ravana", db_path))


# 4. Identity lookups use indexes ----------------------------------------------------------------


def test_every_identity_lookup_is_served_by_an_index(loaded):
    """The write path finds stored rows by `(identity) IN (VALUES ...)`: for every table and
    identity, SQLite must search an index, never scan the table."""
    db = open_db(loaded[0], create=False)
    with contextlib.closing(db.conn):
        for table in TABLES:
            info = table_info(db, table)
            identities = [i for i in info.models if i]
            assert identities == (NATURAL.get(table) or identities), table
            for identity in identities:
                group = "(" + ", ".join("?" * len(identity)) + ")"
                plan = db.execute(
                    f"EXPLAIN QUERY PLAN SELECT * FROM [{table}] WHERE "
                    f"({', '.join(identity)}) IN (VALUES {group}, {group})",
                    [None] * 2 * len(identity)).fetchall()
                first = plan[0][3]
                assert first.startswith(f"SEARCH {table} USING ") and "INDEX" in first, \
                    (table, identity, plan)


# 5. Bounded memory: rows spooled to disk, written in batches ---------------------------------

# Runs a command and prints its exit code and peak RSS (KiB). A child forked from a large
# process (pytest) starts with that process's peak, so the command is started from this small
# one instead.
LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
            "_, status, usage = os.wait4(p.pid, 0); "
            "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def peak_rss(db, *args):
    """(exit code, peak resident memory in MiB) of `ravana-db --db DB ARGS` in a subprocess."""
    run = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-m", "ravana_db",
                          "--db", str(db), "--quiet", *map(str, args)],
                         capture_output=True, text=True, timeout=600)
    code, kib = map(int, run.stdout.split()[-2:])
    assert code == 0, run.stderr
    return kib / 1024


def big_experiments(n, size):
    """n experiments of about size characters each (no search text: the model stays out)."""
    return [(i + 1, f"2024-01-01T00:00:{i:02d}Z", f"experiment {i} " + "x" * size)
            for i in range(n)]


def export_folder(folder, experiments):
    folder.mkdir()
    with (folder / "experimentlog.jsonl").open("w") as f:
        for id, timestamp, hypothesis in experiments:
            f.write(json.dumps({"id": id, "timestamp": timestamp, "hypothesis": hypothesis,
                                "results": "{}"}) + "\n")
    (folder / "manifest.json").write_text(json.dumps({
        "export_version": 1, "format": "jsonl", "json_columns": "text", "tables": [
            {"table": "experimentlog", "file": "experimentlog.jsonl",
             "rows": len(experiments)}]}))
    return folder


def original_file(path, experiments):
    conn = sqlite3.connect(path)
    with contextlib.closing(conn):
        conn.execute(original.SCHEMA.split(";")[-2])  # experimentlog, as the original has it
        conn.executemany("INSERT INTO experimentlog VALUES (?, ?, ?, '{}')", experiments)
        conn.commit()
    return path


@pytest.mark.parametrize("command", ["dir", "ravana", "jsonl"])
def test_peak_memory_does_not_grow_with_the_input(tmp_path, command):
    """48 rows of 2 MiB: every row is checked before any is written, yet what is held at once
    is a batch, not the input (held whole, the input alone is twice the bound)."""
    small, big = big_experiments(1, 10), big_experiments(48, 2 << 20)
    sources = {
        "dir": lambda name, rows: ["ingest", "dir", export_folder(tmp_path / name, rows)],
        "ravana": lambda name, rows: ["ingest", "ravana",
                                      original_file(tmp_path / f"{name}.db", rows)],
        "jsonl": lambda name, rows: ["ingest", "jsonl", export_folder(tmp_path / name, rows) /
                                     "experimentlog.jsonl", "--table", "experimentlog"],
    }
    baseline = peak_rss(tmp_path / "small-target.db", *sources[command]("small", small))
    peak = peak_rss(tmp_path / "target.db", *sources[command]("big", big))
    assert peak - baseline < 48, (baseline, peak)
    assert sqlite3.connect(tmp_path / "target.db").execute(
        "SELECT count(*), sum(length(hypothesis)) FROM experimentlog").fetchone() == (
        48, sum(len(h) for _, _, h in big))


@pytest.mark.parametrize("command", ["dir", "ravana", "jsonl"])
def test_a_tiny_batch_stores_exactly_what_the_default_does(source, ravana, tmp_path,
                                                           monkeypatch, command):
    """One row per batch (and per reference check) against the default: the same rows, ids,
    index and report."""
    from ravana_db.load import loader

    memories = tmp_path / "memory.jsonl"
    memories.write_text("".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "merged_into"}) + "\n"
        for line in (source.parent / "dump" / "memory.jsonl").read_text().splitlines()))
    args = {"dir": ["ingest", "dir", source.parent / "dump"],
            "ravana": ["ingest", "ravana", ravana],
            "jsonl": ["ingest", "jsonl", memories, "--table", "memory"]}[command]
    default = ok(invoke(tmp_path / "default.db", *args, "--format", "json"))
    monkeypatch.setattr(loader, "BATCH", 1)
    monkeypatch.setattr(loader, "BATCH_BYTES", 1)
    tiny = ok(invoke(tmp_path / "tiny.db", *args, "--format", "json"))
    assert tiny.stdout == default.stdout
    assert tiny.stderr.replace("tiny.db", "default.db") == default.stderr
    # Times taken at the run (the migrations' default rows, the original's missing times)
    # differ by the seconds between the two runs.
    today = re.escape(time.strftime("%Y-%m-%d", time.gmtime()))

    def settled(value):
        return re.sub(today + r"T[0-9:.]+Z", "now", value) if isinstance(value, str) else value

    stored = [{table: [tuple(map(settled, row)) for row in rows]
               for table, rows in contents(tmp_path / f"{name}.db").items()}
              for name in ("default", "tiny")]
    assert stored[0] == stored[1]
