"""`ravana-db export TABLE|all|backup`: every table in every format reads back to the stored
rows; time filters; no internal table ever; output files appear complete or not at all; a
backup under a concurrent writer process holds every committed row."""

import contextlib
import csv
import io
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest
from conftest import one_line_error
from typer.testing import CliRunner

from ravana_db import export
from ravana_db.cli import app
from ravana_db.db import open_db
from ravana_db.errors import RavanaError
from ravana_db.schema import migrations
from ravana_db.sql import driver
from ravana_db.tables import TABLES

FORMATS = ["json", "jsonl", "csv", "markdown"]
TRICKY = [
    'comma, "double" and \'single\' quotes',
    "line one\nline two\r\nline three\rend",
    "pipes | in | cells, an escaped \\| pipe and a trailing backslash\\",
    "unicode: café, 東京, 🧠, مرحبا, e\u0301",
    "<br> &amp; &lt; &#13; literal markup & < >",
    "  leading and trailing spaces  ",
    "",
    "tab\there",
    '"',
    "|",
    "\\",
    "---",
    "NULL",
    "plain",
]
TIMES = [f"2026-0{m}-15T12:00:00.000Z" for m in (1, 2, 3)]


def text(i, column):
    return TRICKY[(3 * column + i) % len(TRICKY)]


def obj(i):
    """A JSON object as text: ravana-db's own form, and a hand-written one with odd spacing."""
    if i == 1:
        return '{ "a" :1 ,"b":"x|y\\n,z" , "c": [ ] }'
    return json.dumps({"note": text(i, 9), "n": [1, 2.5, None, True], "deep": {"k": "東京"}},
                      ensure_ascii=False)


def rows_for_every_table():
    """{table: [row dicts]}: a few rows of every table, with tricky text and JSON in each."""
    n = range(3)

    def uuid(kind, i):
        return f"{kind}-{i}"

    return {
        "feed": [dict(id=i + 1, url=f"https://feeds.example/{i}?a=1,b=2", title=text(i, 0),
                      etag=text(i, 1), last_modified=None, last_fetched=TIMES[i],
                      last_status="ok", last_error=text(i, 2), failures=i,
                      next_attempt=None) for i in n],
        "article": [dict(id=i + 1, title=text(i, 1) or "t", link=f"https://a.example/{i}",
                         published=TIMES[i] if i != 1 else None, source=text(i, 2),
                         fetched_at=TIMES[i], feed_id=i + 1, guid=f"g,{i}|\"",
                         summary=text(i, 3), content=text(i, 4), content_hash=None,
                         cluster_id=i) for i in n],
        "event": [dict(id=i + 1, timestamp=TIMES[i], description=text(i, 2) or "d",
                       keywords=text(i, 5), cluster_id=i) for i in n],
        "event_article": [dict(event_id=i + 1, article_id=i + 1) for i in n],
        "summary": [dict(id=i + 1, timestamp=TIMES[i], summary_text=text(i, 3) or "s",
                         source=text(i, 4), category=text(i, 6), content_hash=f"h{i}")
                    for i in n],
        "actionlog": [dict(id=i + 1, timestamp=TIMES[i], action_name=text(i, 4),
                           params=obj(i), status=("success", "failure")[i % 2],
                           result=(obj(i), '"just a string"', None)[i]) for i in n],
        "moodlog": [dict(id=i + 1, timestamp=TIMES[i], mood_vector=obj(i)) for i in n],
        "situationlog": [dict(id=i + 1, timestamp=TIMES[i], situation_type=text(i, 5),
                              prompt=text(i, 6), context=obj(i)) for i in n],
        "decisionlog": [dict(id=i + 1, timestamp=TIMES[i], situation_id=i + 1,
                             raw_response=text(i, 7)) for i in n],
        "experimentlog": [dict(id=i + 1, timestamp=TIMES[i], hypothesis=text(i, 8),
                               results=("[1, 2]", obj(i), "3.25")[i]) for i in n],
        "memory": [dict(id=i + 1, key=(f"k,{i}", "", None)[i], text=text(i, 9) or "m",
                        memory_type="episodic", created_at=TIMES[i], last_accessed=None,
                        access_count=2 ** 62 + i, importance=(0.1, 1 / 3, 1.0)[i],
                        source=text(i, 10), metadata=obj(i), content_hash=None) for i in n],
        "very_long_term_memories": [dict(
            id=i + 1, memory_id=uuid("vltm", i), memory_type="critical_failure",
            created_at=TIMES[i], last_accessed=TIMES[i], promoted_at=TIMES[i], access_count=i,
            importance_score=0.5, strategic_value=1e-300, compressed_content=obj(i),
            metadata_info=obj(i + 1), source_session=text(i, 11),
            related_memories='["a", "b|c"]', retention_category=text(i, 12)) for i in n],
        "memory_patterns": [dict(
            id=i + 1, pattern_id=uuid("pattern", i), pattern_type="temporal",
            pattern_description=text(i, 12) or "p", confidence_score=0.7, pattern_data=obj(i),
            discovered_at=TIMES[i], supporting_memories="[]", validation_count=i,
            last_validated=None, source_memory_id=uuid("vltm", i)) for i in n],
        "memory_consolidations": [dict(
            id=i + 1, consolidation_id=uuid("cons", i), consolidation_date=TIMES[i],
            consolidation_type="daily", memories_processed=10 * i, patterns_extracted=i,
            compression_ratio=0.25, consolidation_results=obj(i),
            processing_time_seconds=1.5, success=i % 2, error_message=text(i, 13))
            for i in n],
        "strategic_knowledge": [dict(
            id=i + 1, knowledge_id=uuid("know", i), knowledge_domain=text(i, 0),
            knowledge_summary=text(i, 1) or "k", confidence_level=0.9, last_updated=TIMES[i],
            source_patterns='["pattern-0"]', knowledge_structure=obj(i),
            validation_score=0.0, application_count=i) for i in n],
        "consolidation_patterns": [dict(consolidation_id=uuid("cons", i),
                                        pattern_id=uuid("pattern", i),
                                        extraction_confidence=0.5) for i in n],
        "pattern_strategic_knowledge": [dict(pattern_id=uuid("pattern", i),
                                             knowledge_id=uuid("know", i),
                                             contribution_weight=1.0) for i in n],
        "consolidation_metrics": [dict(
            id=i + 1, metric_id=uuid("metric", i), consolidation_id=uuid("cons", i),
            metric_name=text(i, 2), metric_value=-12345.678, metric_unit=text(i, 3),
            timestamp=TIMES[i]) for i in n],
        "retention_policies": [dict(memory_type="failed_experiment", retention_days=30,
                                    compress_after_days=None, description=text(0, 4),
                                    updated_at=TIMES[0])],
        "memory_link": [dict(memory_id=1, related_id=2, similarity=0.93, reason=text(0, 5),
                             consolidation_id=uuid("cons", 0), created_at=TIMES[0])],
        "memory_merge": [dict(consolidation_id=uuid("cons", 0), memory_id=2, survivor_id=1,
                              role="merged", reason=text(1, 5), before='{"merged_into":null}',
                              after='{"merged_into":1}')],
        "consolidation_policy": [dict(key=text(2, 6) or "k", value='{"x": 1}',
                                      description=text(0, 7), updated_at=TIMES[0])],
    }


def insert(conn, table, rows):
    for row in rows:
        conn.execute(f"INSERT INTO [{table}] ({', '.join(row)}) VALUES "
                     f"({', '.join('?' * len(row))})", list(row.values()))


def stored(path, table):
    """(columns, rows as tuples) of a table, in rowid order, through Python's own sqlite3."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        cursor = conn.execute(f"SELECT * FROM [{table}] ORDER BY rowid")
        return [d[0] for d in cursor.description], cursor.fetchall()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A file with rows in every table of the agent's (made once per module; tests only read)."""
    path = tmp_path_factory.mktemp("export") / "filled.db"
    db = open_db(path)
    with contextlib.closing(db.conn):
        db.conn.execute("BEGIN")
        for table, rows in rows_for_every_table().items():
            insert(db.conn, table, rows)
        db.conn.execute("COMMIT")
    assert all(stored(path, t)[1] for t in TABLES)
    return path


def invoke(db, *args):
    return CliRunner().invoke(app, ["--db", str(db), *map(str, args)], catch_exceptions=False)


def ok(result):
    assert result.exit_code == 0, result.stderr
    return result


def read_back(data, fmt):
    """(columns, rows) parsed from an export's text. CSV and markdown give text: see cell()."""
    if fmt in ("json", "jsonl"):
        records = json.loads(data) if fmt == "json" else [
            json.loads(line) for line in data.split("\n") if line]
        return None, [tuple(r.values()) for r in records], [list(r) for r in records]
    if fmt == "csv":
        header, *rows = list(csv.reader(io.StringIO(data, newline="")))
        return header, [tuple(r) for r in rows], None
    return read_markdown(data)


def read_markdown(data):
    lines = data.split("\n")
    assert lines.pop() == ""
    header, separator, *body = lines
    assert separator == "|" + " --- |" * len(markdown_cells(header))
    return markdown_cells(header), [tuple(markdown_cells(line)) for line in body], None


def markdown_cells(line):
    """A row's cells: split on unescaped pipes, one space of padding off each side, unescaped."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells, cell, i, inner = [], "", 0, line[1:-1]
    while i < len(inner):
        if inner[i] == "\\":
            cell, i = cell + inner[i:i + 2], i + 2
        elif inner[i] == "|":
            cells, cell, i = cells + [cell], "", i + 1
        else:
            cell, i = cell + inner[i], i + 1
    entities = {"<br>": "\n", "&#13;": "\r", "&lt;": "<", "&amp;": "&"}
    return [re.sub(r"<br>|&#13;|&lt;|&amp;|\\(.)", lambda m: entities.get(m[0]) or m[1],
                   c[1:-1]) for c in cells + [cell]]


def as_text(row, fmt=None):
    """A stored row as CSV and markdown hold it: text, NULL as empty; in CSV, text that a
    spreadsheet would take for a formula starts with `'`."""
    def formula(v):
        return fmt == "csv" and isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r")

    return tuple("" if v is None else "'" + v if formula(v) else str(v) for v in row)


def assert_reads_back(data, fmt, columns, rows, table=""):
    header, parsed, keys = read_back(data, fmt)
    if fmt in ("json", "jsonl"):
        assert all(k == columns for k in keys), table
        assert parsed == rows, table
    else:
        assert header == columns, table
        assert parsed == [as_text(r, fmt) for r in rows], table


# 1. Every table, every format ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_table_in_every_format_reads_back_to_the_stored_rows(filled, tmp_path, fmt):
    for table in TABLES:
        result = ok(invoke(filled, "export", table, "--format", fmt))
        data = result.stdout_bytes.decode("utf-8")  # .stdout would turn \r\n into \n
        columns, rows = stored(filled, table)
        assert_reads_back(data, fmt, columns, rows, table)
        assert result.stderr == f"{table}: {len(rows)} row{'s' if len(rows) != 1 else ''}\n"
    # All of them into a folder: the same bytes as each table alone.
    ok(invoke(filled, "export", "all", "--format", fmt, "--output", tmp_path / "all"))
    suffix = {"markdown": ".md"}.get(fmt, "." + fmt)
    assert sorted(os.listdir(tmp_path / "all")) == sorted(
        [t + suffix for t in TABLES] + ["manifest.json"])
    for table in ("memory", "actionlog", "event_article"):
        alone = invoke(filled, "export", table, "--format", fmt).stdout_bytes
        assert (tmp_path / "all" / (table + suffix)).read_bytes() == alone


def test_json_columns_keep_their_stored_text_byte_for_byte(filled):
    result = ok(invoke(filled, "export", "actionlog"))  # jsonl by default
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[1]["params"] == '{ "a" :1 ,"b":"x|y\\n,z" , "c": [ ] }'
    assert [r["result"] for r in records][1:] == ['"just a string"', None]
    assert json.loads(records[0]["params"])["deep"] == {"k": "東京"}
    assert "東京" in result.stdout  # UTF-8, not \u escapes


def test_csv_tells_null_from_empty_text(filled):
    data = ok(invoke(filled, "export", "memory", "--format", "csv")).stdout_bytes.decode()
    lines = data.split("\r\n")
    assert lines[0].startswith("id,key,text,")
    assert lines[2].startswith('2,"",') and lines[3].startswith("3,,")  # key "" and NULL


def test_markdown_renders_pipes_and_line_breaks_escaped(filled):
    data = ok(invoke(filled, "export", "feed", "--format", "markdown")).stdout
    assert "pipes \\| in \\| cells, an escaped \\\\\\| pipe" in data
    assert "line one<br>line two&#13;<br>line three&#13;end" in data
    assert "&lt;br> &amp;amp; &amp;lt; &amp;#13; literal markup &amp; &lt; >" in data


def test_a_blob_or_an_infinity_from_a_plain_client_is_still_valid_json(tmp_path):
    db = tmp_path / "agent.db"
    open_db(db).close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("INSERT INTO memory(text, source) VALUES ('m', X'00ff10')")
        insert(conn, "memory_consolidations", [dict(consolidation_id="c",
                                                    consolidation_type="daily")])
        conn.execute("INSERT INTO consolidation_metrics(metric_id, consolidation_id, "
                     "metric_name, metric_value) VALUES ('m1', 'c', 'x', 1e999), "
                     "('m2', 'c', 'y', -1e999)")
        conn.commit()
    memory = json.loads(ok(invoke(db, "export", "memory")).stdout)
    assert memory["source"] == {"$base64": True, "encoded": "AP8Q"}
    metrics = json.loads(ok(invoke(db, "export", "consolidation_metrics", "-f", "json")).stdout)
    assert [m["metric_value"] for m in metrics] == [float("inf"), float("-inf")]
    assert ",AP8Q," in ok(invoke(db, "export", "memory", "-f", "csv")).stdout


# 2. `all`: a folder and a manifest, read back into a new file ----------------------------------


def test_all_writes_one_file_per_table_and_a_manifest(filled, tmp_path):
    out = tmp_path / "dump"
    result = ok(invoke(filled, "export", "all", "--output", out))
    total = sum(len(stored(filled, t)[1]) for t in TABLES)
    assert result.stderr == f"exported {total} rows of {len(TABLES)} tables to {out}/ " \
                            "(manifest.json lists them)\n"
    assert result.stdout == ""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "jsonl" and manifest["json_columns"] == "text"
    assert manifest["schema_version"] == len(migrations._migrations)
    assert manifest["last_migration"] == migrations._migrations[-1].name
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", manifest["exported_at"])
    assert [t["table"] for t in manifest["tables"]] == list(TABLES)
    for entry in manifest["tables"]:
        columns, rows = stored(filled, entry["table"])
        assert (entry["file"], entry["rows"], entry["columns"]) == (
            entry["table"] + ".jsonl", len(rows), columns)
        assert_reads_back((out / entry["file"]).read_text(), "jsonl", columns, rows)
    assert os.stat(out).st_mode & 0o777 == 0o700
    assert {os.stat(p).st_mode & 0o777 for p in out.iterdir()} == {0o600}
    assert os.listdir(tmp_path) == ["dump"]  # no temporary folder left


def test_all_reads_back_into_a_new_file_as_the_same_rows(filled, tmp_path):
    """What `ingest dir` will do: the manifest's order satisfies every foreign key."""
    out = tmp_path / "dump"
    ok(invoke(filled, "export", "all", "--output", out))
    manifest = json.loads((out / "manifest.json").read_text())
    copy = tmp_path / "copy.db"
    db = open_db(copy)
    with contextlib.closing(db.conn):
        db.conn.execute("BEGIN")
        for entry in manifest["tables"]:
            records = [json.loads(line) for line in (out / entry["file"]).open()]
            db.conn.executemany(
                f"INSERT OR REPLACE INTO [{entry['table']}] ({', '.join(entry['columns'])}) "
                f"VALUES ({', '.join('?' * len(entry['columns']))})",
                [list(r.values()) for r in records])
        db.conn.execute("COMMIT")
        assert db.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    for table in TABLES:
        assert stored(copy, table) == stored(filled, table), table


# 3. Time filters --------------------------------------------------------------------------------


def test_since_and_until_filter_each_table_by_its_own_time(filled):
    def ids(table, *window):
        return [json.loads(line)["id"] for line in
                ok(invoke(filled, "export", table, *window)).stdout.splitlines()]

    assert ids("memory", "--since", "2026-02-15T12:00:00Z") == [2, 3]
    assert ids("memory", "--until", "2026-02-15T12:00:00Z") == [1, 2]  # inclusive
    assert ids("memory", "--since", "2026-02-01", "--until", "2026-02-28") == [2]
    assert ids("memory", "--since", "7d") == []
    assert ids("memory", "--until", "7d") == [1, 2, 3]
    # article: published, else fetched_at (article 2 has no published date)
    assert ids("article", "--since", "2026-02-01", "--until", "2026-02-28") == [2]
    for table in ("memory_patterns", "memory_consolidations", "strategic_knowledge",
                  "very_long_term_memories", "actionlog", "consolidation_metrics"):
        assert ids(table, "--since", "2026-03-01") == [3], table


def test_a_table_without_a_time_cannot_be_filtered(filled):
    for table in ("feed", "event_article", "consolidation_patterns"):
        stderr = one_line_error(invoke(filled, "export", table, "--since", "7d"))
        assert stderr.startswith(f"error: {table} has no time column: --since/--until cannot "
                                 "filter it (they can: article, event,")
    assert one_line_error(invoke(filled, "export", "memory", "--since", "yesterday")) == (
        "error: since: 'yesterday' is not an ISO-8601 time (2024-05-01, 2024-05-01T12:00:00Z) "
        "or an age like 7d\n")


def test_all_filters_what_has_a_time_and_says_what_it_left_whole(filled, tmp_path):
    out = tmp_path / "march"
    result = ok(invoke(filled, "export", "all", "--since", "2026-03-01", "--output", out))
    assert result.stderr.splitlines()[0] == (
        "note: --since/--until do not apply to feed, event_article, consolidation_patterns, "
        "pattern_strategic_knowledge, memory_merge (no time column): exported whole")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["since"] == "2026-03-01T00:00:00.000Z" and manifest["until"] is None
    entries = {t["table"]: t for t in manifest["tables"]}
    assert (entries["memory"]["rows"], entries["memory"]["filtered"]) == (1, True)
    assert (entries["feed"]["rows"], entries["feed"]["filtered"]) == (3, False)
    assert entries["article"]["time"] == "coalesce(published, fetched_at)"


# 4. Never an internal table ---------------------------------------------------------------------


def test_internal_tables_are_never_exported(filled, tmp_path):
    with contextlib.closing(sqlite3.connect(filled)) as conn:
        internal = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")} - set(TABLES)
    assert {"doc", "doc_fts", "doc_fts_data", "doc_vec", "doc_bits", "embed_queue",
            "bits_queue", "meta", "_sqlite_migrations", "memory_search"} <= internal
    for name in sorted(internal) + ["sqlite_master", "Memory", "memories", "feeds.csv"]:
        stderr = one_line_error(invoke(filled, "export", name, "--format", "csv"))
        assert f"error: export: {name!r} is not a table of the agent's" in stderr
        assert "the search index's and bookkeeping tables are never exported" in stderr
    assert "(did you mean memory?)" in one_line_error(invoke(filled, "export", "memories"))
    ok(invoke(filled, "export", "all", "--output", tmp_path / "dump"))
    exported = {name.split(".")[0] for name in os.listdir(tmp_path / "dump")}
    assert exported == set(TABLES) | {"manifest"}


def test_export_help_names_every_table_and_each_table_has_help(filled):
    shown = ok(invoke(filled, "export", "--help")).stdout
    assert "TABLE|all|backup|feeds" in shown and "retention_policies" in " ".join(shown.split())
    for table in TABLES:
        assert table in " ".join(shown.split())
    memory = ok(invoke(filled, "export", "memory", "--help")).stdout
    assert "--since/--until compare with created_at" in memory
    assert "Example: ravana-db export memory --format csv" in memory
    assert "It has no time column" in ok(invoke(filled, "export", "feed", "--help")).stdout
    assert "Example: ravana-db export all --output" in ok(
        invoke(filled, "export", "all", "--help")).stdout


def test_table_commands_take_db_after_their_name_and_refuse_a_missing_file(filled, tmp_path):
    other = tmp_path / "other.db"
    result = CliRunner().invoke(app, ["--db", str(other), "export", "moodlog", "--db",
                                      str(filled)], catch_exceptions=False)
    assert len(ok(result).stdout.splitlines()) == 3 and not other.exists()
    missing = tmp_path / "missing.db"
    for args in (["moodlog"], ["all", "--output", tmp_path / "d"], ["backup", tmp_path / "b"]):
        assert one_line_error(invoke(missing, "export", *args)) == (
            f"error: no database at {missing}: run `ravana-db init` or pass --db PATH\n")
    assert os.listdir(tmp_path) == []


# 5. Output files: complete or not at all --------------------------------------------------------


def test_output_file_is_private_and_its_format_follows_its_suffix(filled, tmp_path):
    for name, fmt in (("m.csv", "csv"), ("m.md", "markdown"), ("m.json", "json"),
                      ("m.ndjson", "jsonl"), ("m.txt", "jsonl")):
        result = ok(invoke(filled, "export", "memory", "--output", tmp_path / name))
        assert result.stdout == "" and result.stderr == \
            f"memory: 3 rows written to {tmp_path / name}\n"
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600
        assert_reads_back((tmp_path / name).read_bytes().decode(), fmt, *stored(filled, "memory"))
    assert ok(invoke(filled, "export", "memory", "-o", "-", "-f", "csv")).stdout.startswith("id,")
    assert sorted(os.listdir(tmp_path)) == ["m.csv", "m.json", "m.md", "m.ndjson", "m.txt"]


def test_output_errors_are_one_line_and_write_nothing(filled, tmp_path):
    before = filled.read_bytes()
    (tmp_path / "taken.jsonl").write_text("mine\n")
    (tmp_path / "folder").mkdir()
    cases = {
        ("memory", "-o", tmp_path / "nope" / "m.jsonl"):
            f"cannot write {tmp_path}/nope/m.jsonl: folder {tmp_path}/nope does not exist",
        ("memory", "-o", tmp_path / "taken.jsonl"):
            f"{tmp_path}/taken.jsonl exists: pass --force to replace it",
        ("memory", "-o", tmp_path / "folder"):
            f"{tmp_path}/folder is a folder: give a file name (a folder is for `export all`)",
        ("memory", "-o", filled, "--force"): f"{filled} is the database itself: give another file",
        ("memory", "-o", f"{filled}-wal", "--force"):
            f"{filled}-wal is the database itself: give another file",
        ("memory", "--format", "yaml"): "--format: 'yaml' is not one of json, jsonl, csv, markdown",
        ("all",): "export all writes a file per table and a manifest: give --output DIR",
        ("all", "-o", tmp_path / "nope" / "d"):
            f"cannot write {tmp_path}/nope/d: folder {tmp_path}/nope does not exist",
        ("all", "-o", tmp_path / "taken.jsonl"):
            f"{tmp_path}/taken.jsonl exists and is not a folder",
        ("backup", tmp_path / "taken.jsonl"):
            f"{tmp_path}/taken.jsonl exists: pass --force to replace it",
        ("backup", tmp_path / "nope" / "b.db"):
            f"cannot write {tmp_path}/nope/b.db: folder {tmp_path}/nope does not exist",
        ("backup", filled, "--force"): f"{filled} is the database itself: give another file",
        ("backup", tmp_path / "folder", "--force"):
            f"{tmp_path}/folder is a folder: give a file name (a folder is for `export all`)",
    }
    for args, expected in cases.items():
        assert one_line_error(invoke(filled, "export", *args)) == f"error: {expected}\n", args
    assert (tmp_path / "taken.jsonl").read_text() == "mine\n"
    assert sorted(os.listdir(tmp_path)) == ["folder", "taken.jsonl"]
    assert os.listdir(tmp_path / "folder") == [] and filled.read_bytes() == before


def test_force_replaces_a_file_and_only_an_earlier_export_folder(filled, tmp_path):
    (tmp_path / "taken.csv").write_text("old\n")
    ok(invoke(filled, "export", "moodlog", "-o", tmp_path / "taken.csv", "--force"))
    assert (tmp_path / "taken.csv").read_text().startswith("id,timestamp,mood_vector")

    out = tmp_path / "dump"
    out.mkdir()  # an existing empty folder is used
    ok(invoke(filled, "export", "all", "-o", out, "-f", "csv"))
    assert "error: " + f"{out} is not empty: pass --force to replace an earlier export there\n" \
        == one_line_error(invoke(filled, "export", "all", "-o", out))
    csv = sorted(os.listdir(out))
    ok(invoke(filled, "export", "all", "-o", out, "--force"))  # jsonl now: the csv files stay
    assert sorted(os.listdir(out)) == sorted(csv + [t + ".jsonl" for t in TABLES])
    assert json.loads((out / "manifest.json").read_text())["format"] == "jsonl"


def test_force_replaces_only_the_files_the_export_writes(filled, tmp_path):
    """A user's files and folders in an export folder are never deleted, even one named as a
    table's file of another format; a folder where the export must write a file is refused,
    and nothing changes."""
    out = tmp_path / "dump"
    ok(invoke(filled, "export", "all", "-o", out))
    (out / "notes.txt").write_text("mine")
    (out / "memory.csv").mkdir()
    (out / "memory.csv" / "kept.txt").write_text("mine too")
    (out / "moodlog.jsonl").write_text("stale\n")
    ok(invoke(filled, "export", "all", "-o", out, "--force"))
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "memory.csv" / "kept.txt").read_text() == "mine too"
    assert (out / "moodlog.jsonl").read_text() != "stale\n"
    (out / "memory.jsonl").unlink()
    (out / "memory.jsonl").mkdir()
    (out / "memory.jsonl" / "kept.txt").write_text("mine three")
    before = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)}
    assert one_line_error(invoke(filled, "export", "all", "-o", out, "--force")) == (
        f"error: {out}/memory.jsonl is a folder, where the export writes a file: move it, or "
        "give another folder\n")
    assert (out / "memory.jsonl" / "kept.txt").read_text() == "mine three"
    assert {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)} == before
    assert [n for n in os.listdir(tmp_path) if n.startswith(".dump")] == []  # no temporaries


def failing_select(after, error):
    """export._select whose rows raise `error` after `after` rows (a read error mid-table)."""
    real = export._select

    def select(db, table, since, until):
        columns, cursor = real(db, table, since, until)

        def rows():
            for n, row in enumerate(cursor):
                if n == after:
                    raise error
                yield row
        return columns, rows()

    return select


@pytest.mark.parametrize("error,code", [(driver().OperationalError("disk I/O error"), 1),
                                        (KeyboardInterrupt(), 130)], ids=["read error", "^C"])
def test_a_failure_midway_leaves_nothing_behind(filled, tmp_path, monkeypatch, error, code):
    monkeypatch.setattr(export, "_select", failing_select(2, error))
    for fmt in FORMATS:
        result = invoke(filled, "export", "memory", "-f", fmt, "-o", tmp_path / "m.out")
        assert result.exit_code == code and result.stdout == ""
    result = invoke(filled, "export", "all", "-o", tmp_path / "dump")
    assert result.exit_code == code
    if code == 1:
        assert result.stderr == "error: database: disk I/O error\n"
    (tmp_path / "earlier").mkdir()  # an earlier export survives a failed --force
    (tmp_path / "earlier" / "memory.jsonl").write_text("kept\n")
    assert invoke(filled, "export", "all", "-o", tmp_path / "earlier", "--force").exit_code == code
    assert sorted(os.listdir(tmp_path)) == ["earlier"]
    assert os.listdir(tmp_path / "earlier") == ["memory.jsonl"]


def test_progress_hears_the_total_then_every_row(filled, tmp_path):
    db = open_db(filled, create=False, write=False)
    with contextlib.closing(db.conn):
        calls = []

        def progress(n, total=None):
            calls.append((n, total))

        (mapped,) = db.execute("PRAGMA mmap_size").fetchone()
        report = export.run(db, export.Export("all", output=tmp_path / "d"), progress=progress)
        assert db.execute("PRAGMA mmap_size").fetchone() == (mapped,)  # restored after the scan
    total = sum(t["rows"] for t in report["tables"])
    assert calls[0] == (0, total) and sum(n for n, _ in calls[1:]) == total


def limited(limit):
    """preexec_fn: files may not grow past `limit` bytes (a full disk; Python ignores SIGXFSZ,
    so a write fails with EFBIG)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A file with 20,000 action rows (about 3 MB), written with plain SQL."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    db = open_db(path)
    with contextlib.closing(db.conn):
        db.conn.execute("BEGIN")
        db.conn.executemany(
            "INSERT INTO actionlog(timestamp, action_name, params, result) VALUES (?, ?, ?, ?)",
            ((f"2026-01-01T00:00:{i % 60:02d}.000Z", f"action {i}, \"quoted\"",
              json.dumps({"i": i, "q": "x" * 50}), json.dumps([i, "ok"]))
             for i in range(20_000)))
        db.conn.execute("COMMIT")
    return path


@pytest.mark.parametrize("args", [["actionlog", "-o", "out.jsonl"], ["all", "-o", "dump"],
                                  ["backup", "copy.db"]], ids=lambda a: a[0])
def test_a_full_disk_leaves_nothing_behind(big, tmp_path, args):
    folder = tmp_path / "target"
    folder.mkdir()
    argv = [sys.executable, "-m", "ravana_db", "--db", big, "export", *args[:-1],
            folder / args[-1]]
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            preexec_fn=limited(256 << 10))
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert re.fullmatch(rf"error: (cannot write|cannot back up to) {folder}/\S+: "
                        r"(file too large|disk I/O error)\n", result.stderr)
    assert os.listdir(folder) == []


def test_rows_stream_to_the_file_without_being_held(big, tmp_path):
    tracemalloc.start()
    try:
        ok(invoke(big, "export", "actionlog", "-o", tmp_path / "a.jsonl"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = os.path.getsize(tmp_path / "a.jsonl")
    assert size > 2_500_000 and peak < size / 4, (peak, size)


# 6. Backup --------------------------------------------------------------------------------------


def test_backup_is_a_checked_private_copy_that_opens_anywhere(filled, tmp_path):
    copy = tmp_path / "copy.db"
    result = ok(invoke(filled, "export", "backup", copy))
    total = sum(len(stored(filled, t)[1]) for t in TABLES)
    assert result.stdout == "" and re.fullmatch(
        rf"backup: {copy} \([\d,]+ bytes, {total} rows, integrity_check ok\)\n", result.stderr)
    assert os.stat(copy).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["copy.db"]  # no temporary file, no -journal or -wal
    with contextlib.closing(sqlite3.connect(copy)) as conn:  # no sqlite-vec needed
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    for table in TABLES:
        assert stored(copy, table) == stored(filled, table), table
    db = open_db(copy, create=False, write=False)  # and ravana-db opens it, index and all
    with contextlib.closing(db.conn):
        assert db.execute("SELECT count(*) FROM doc_fts WHERE doc_fts MATCH 'plain'").fetchone()
    (tmp_path / "copy.db").write_bytes(b"old")
    ok(invoke(filled, "export", "backup", copy, "--force"))
    assert stored(copy, "memory") == stored(filled, "memory")


@pytest.mark.parametrize("error,code", [(RavanaError("injected"), 1), (KeyboardInterrupt(), 130)],
                         ids=["check fails", "^C"])
def test_backup_never_leaves_a_temporary_file(filled, tmp_path, monkeypatch, error, code):
    def check(*args):
        assert len([p for p in os.listdir(tmp_path) if p.endswith(".tmp")]) == 1
        raise error

    monkeypatch.setattr(export, "_check_copy", check)
    (tmp_path / "old.db").write_bytes(b"keep me")
    for args in (["new.db"], ["old.db", "--force"]):
        result = invoke(filled, "export", "backup", tmp_path / args[0], *args[1:])
        assert result.exit_code == code and result.stdout == ""
    assert os.listdir(tmp_path) == ["old.db"] and (tmp_path / "old.db").read_bytes() == b"keep me"


def test_a_damaged_copy_fails_the_check(filled, tmp_path):
    copy = tmp_path / "copy.db"
    ok(invoke(filled, "export", "backup", copy))
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'memory'").fetchone()
    data = bytearray(copy.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    at = data.index(TIMES[0][:13].encode(), (root - 1) * size, root * size)
    data[at + 9] = ord("6")  # a row's created_at no longer matches its index entry
    copy.write_bytes(bytes(data))
    db = open_db(filled, create=False, write=False)
    with contextlib.closing(db.conn), pytest.raises(RavanaError) as failed:
        export._check_copy(db, copy, "x.db")
    # Two indexes hold created_at (idx_memory_created_at; idx_memory_timeline, m010, its
    # Julian day).
    assert re.fullmatch(
        r"backup to x\.db failed PRAGMA integrity_check: row 1 missing from index "
        r"idx_memory_(created_at|due|timeline) \([123] problem\(s\)\); nothing was written",
        str(failed.value)), failed.value


WRITER = """
import sys
from ravana_db.db import open_db
from ravana_db.store import write
db = open_db(sys.argv[1])
n = 0
while True:
    key = f"w{n}"
    write(db, [{"key": key, "text": f"memory {n}, written while a backup runs"}], kind="memory")
    print(key, flush=True)  # after its commit
    n += 1
"""


def test_backup_under_a_concurrent_writer_holds_every_committed_row(big, tmp_path):
    db = tmp_path / "live.db"
    shutil.copy(big, db)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    committed = []
    reader = threading.Thread(target=lambda: committed.extend(writer.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while len(committed) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert committed, writer.stderr.read() if writer.poll() is not None else "no writes"
        for run in range(4):
            before = {key.strip() for key in list(committed)}
            copy = tmp_path / f"copy-{run}.db"
            ok(invoke(db, "export", "backup", copy))
            with contextlib.closing(sqlite3.connect(copy)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                keys = {k for (k,) in conn.execute("SELECT key FROM memory")}
                assert conn.execute("SELECT count(*) FROM actionlog").fetchone() == (20_000,)
            assert before <= keys, sorted(before - keys)[:5]
        written_during = len(committed) - len(before)
    finally:
        writer.kill()
        writer.wait()
        reader.join(5)
    assert writer.returncode == -9  # it was still writing, never failed
    assert written_during > 0
    assert sorted(p for p in os.listdir(tmp_path) if not p.startswith("live.db")) == [
        f"copy-{run}.db" for run in range(4)]
