"""The file in other clients: plain `sqlite3` (no sqlite-vec), sqlite-utils and Datasette.

Plain clients read and write every user table; the search index never returns what they
deleted or changed, finds what they wrote by words at once, and by meaning after ravana-db's
next write or `reindex`.
"""

import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_db, jsonl
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.sql import driver
from ravana_db.tables import TABLES

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
SHELL = shutil.which("sqlite3")
MEMORIES = {
    "trip": "The user plans a trip to Kyoto in April for cherry blossoms.",
    "gpu": "Training crashed: CUDA out of memory at batch size 64.",
    "tea": "The user prefers green tea and dislikes coffee.",
}
# A row in each table that no `log` command fills.
OTHER_TABLES = """
INSERT INTO feed(url) VALUES ('https://example.com/feed');
INSERT INTO article(title, link, guid, summary, feed_id)
    VALUES ('Volcano erupts in Iceland', 'https://example.com/v', 'v-1', 'Flights grounded.', 1);
INSERT INTO event(description, keywords) VALUES ('Tariffs on steel doubled', 'trade');
INSERT INTO event_article(event_id, article_id) VALUES (1, 1);
INSERT INTO memory_consolidations(consolidation_id, consolidation_type) VALUES ('c-1', 'daily');
INSERT INTO consolidation_patterns(consolidation_id, pattern_id) VALUES ('c-1', 'pat-1');
INSERT INTO pattern_strategic_knowledge(pattern_id, knowledge_id) VALUES ('pat-1', 'k-1');
INSERT INTO consolidation_metrics(metric_id, consolidation_id, metric_name, metric_value)
    VALUES ('m-1', 'c-1', 'seconds', 1.5);
INSERT INTO memory_link(memory_id, related_id, reason) VALUES (1, 2, 'word order differs');
INSERT INTO memory_merge(consolidation_id, memory_id, survivor_id, role, before, after)
    VALUES ('c-1', 2, 1, 'merged', '{"merged_into": null}', '{"merged_into": 1}');
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A file written by the ravana-db CLI: rows of every `log` kind, every text embedded."""
    path = tmp_path_factory.mktemp("template") / "agent.db"
    logs = [
        ("memory", "--stdin"),
        ("summary", "--summary-text", "Markets fell on rate fears.", "--category", "compression"),
        ("vltm", "--memory-id", "vltm-1", "--memory-type", "critical_failure",
         "--compressed-content", "Friday deploys broke the build"),
        ("pattern", "--pattern-id", "pat-1", "--pattern-type", "temporal", "--confidence-score",
         "0.7", "--pattern-description", "Failures cluster after midnight"),
        ("knowledge", "--knowledge-id", "k-1", "--knowledge-domain", "performance",
         "--knowledge-summary", "Batch writes in one transaction", "--confidence-level", "0.9"),
        ("situation", "--situation-type", "curiosity", "--prompt", "Why is the sky blue?"),
        ("decision", "--situation-id", "1", "--raw-response", "Read about Rayleigh scattering"),
        ("action", "--action-name", "search"),
        ("mood", "--mood-vector", '{"calm": 0.5}'),
        ("experiment", "--hypothesis", "Caching halves latency"),
    ]
    memories = jsonl(*({"key": key, "text": text} for key, text in MEMORIES.items()))
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        for kind, *args in logs:
            result = CliRunner().invoke(app, ["--db", str(path), "log", kind, *args],
                                        input=memories, catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def agent(template, db_path):
    """The template, copied to the `cli` fixture's file."""
    return copy_db(template, db_path)


def python_sqlite3(path, sql):
    """Run a script through Python's own sqlite3, which has no sqlite-vec."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript("PRAGMA foreign_keys = on;\n" + sql)


def sqlite3_shell(path, sql):
    """Run a script through the sqlite3 shell; an error raises, as in the module."""
    done = subprocess.run([SHELL, "-bail", str(path)], input="PRAGMA foreign_keys = on;\n" + sql,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise sqlite3.OperationalError(done.stderr)


CLIENTS = [python_sqlite3, pytest.param(
    sqlite3_shell, marks=pytest.mark.skipif(not SHELL, reason="no sqlite3 shell here"))]


def read(path, sql):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def counts(path):
    return {t: read(path, f"SELECT count(*) FROM [{t}]")[0][0] for t in TABLES}


def assert_intact(path):
    """SQLite's checks, in the stdlib's SQLite and in ravana-db's (which also checks FTS5)."""
    for connect in (sqlite3.connect, driver().connect):
        with contextlib.closing(connect(path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            conn.execute("INSERT INTO doc_fts(doc_fts, rank) VALUES ('integrity-check', 1)")


def index(cli):
    result = cli("status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["index"]


def query(cli, *args):
    """One `ravana-db query`: its results and its stderr."""
    result = cli("query", *args, "--no-touch", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def queries(cli, *lines):
    """One `query --stdin` run (the model loads once): the results of each line, in order."""
    result = cli("query", "--stdin", "--no-touch", "--format", "jsonl", input=jsonl(*lines))
    assert result.exit_code == 0, result.stderr
    return [answer["results"] for answer in map(json.loads, result.stdout.splitlines())]


@pytest.mark.parametrize("client", CLIENTS)
def test_the_plain_clients_have_no_sqlite_vec(client, agent):
    with pytest.raises(sqlite3.OperationalError, match="no such module: vec0"):
        client(agent, "SELECT count(*) FROM doc_bits;")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_plain_client_inserts_updates_and_deletes_in_every_table(client, agent, cli, rows):
    client(agent, OTHER_TABLES)
    assert all(counts(agent).values()), counts(agent)
    client(agent, """
        UPDATE memory SET text = 'The user writes haiku', memory_type = 'fact', source = 'chat',
            created_at = '2020-01-01T00:00:00.000Z' WHERE key = 'tea';
        UPDATE summary SET summary_text = 'Rates held', category = 'news', source = 'rss',
            timestamp = '2020-01-02T00:00:00.000Z';
        UPDATE very_long_term_memories SET compressed_content = '{"text": "Tuesday deploys"}';
        UPDATE memory_patterns SET pattern_description = 'Failures cluster at noon';
        UPDATE strategic_knowledge SET knowledge_summary = 'Cache reads';
        UPDATE article SET title = 'Volcano sleeps';
        UPDATE event SET description = 'Tariffs cut';
    """)
    assert set(read(agent, "SELECT kind, text, type, source, ts FROM doc")) >= {
        ("memory", "The user writes haiku", "fact", "chat", "2020-01-01T00:00:00.000Z"),
        ("summary", "Rates held", "news", "rss", "2020-01-02T00:00:00.000Z"),
        ("vltm", "Tuesday deploys", "critical_failure", "unknown", read(
            agent, "SELECT created_at FROM very_long_term_memories")[0][0]),
        ("pattern", "Failures cluster at noon", "temporal", None, read(
            agent, "SELECT discovered_at FROM memory_patterns")[0][0])}
    docs = read(agent, "SELECT count(*) FROM doc")[0][0]
    # Children before parents, so that every DELETE itself finds rows.
    client(agent, "".join(f"DELETE FROM [{t}];\n" for t in reversed(TABLES)))
    assert counts(agent) == dict.fromkeys(TABLES, 0)
    assert read(agent, "SELECT (SELECT count(*) FROM doc) + (SELECT count(*) FROM doc_vec) + "
                       "(SELECT count(*) FROM doc_fts)") == [(0,)]
    assert_intact(agent)
    assert index(cli)["waiting_for_signatures"] == docs
    assert cli("log", "action", "--action-name", "tick").exit_code == 0
    assert index(cli)["whole"]
    assert rows("SELECT count(*) AS n FROM doc_bits") == [{"n": 0}]
    assert_intact(agent)


@pytest.mark.parametrize("catch_up", [("log", "action", "--action-name", "tick"), ("reindex",)],
                         ids=["next-write", "reindex"])
def test_rows_a_plain_client_inserts_are_found_by_words_at_once_by_meaning_after(
        agent, cli, catch_up):
    python_sqlite3(agent, OTHER_TABLES + """
        INSERT INTO memory(key, text) VALUES ('octopus', 'The octopus slipped out of its tank.');
    """)
    found, _ = query(cli, "octopus volcano tariffs", "--mode", "fts")
    assert {r["kind"] for r in found} == {"memory", "article", "event"}
    meaning = ("a sea creature escaped from the aquarium", "--top-n", "1")
    found, notes = query(cli, *meaning)
    assert found[0]["key"] != "octopus"
    assert "note: 3 text(s) wait for embedding" in notes
    assert not index(cli)["whole"]

    result = cli(*catch_up)
    assert result.exit_code == 0, result.stderr
    found, notes = query(cli, *meaning)
    assert found[0]["key"] == "octopus" and "wait for embedding" not in notes
    assert index(cli)["whole"]
    assert_intact(agent)


def test_a_query_never_returns_a_deleted_row_or_stale_text(agent, cli):
    python_sqlite3(agent, """
        UPDATE memory SET text = 'The quarterly budget review moved to Thursday.'
            WHERE key = 'trip';
        DELETE FROM memory WHERE key = 'gpu';
        UPDATE summary SET category = 'news';
    """)
    gone = ["Kyoto cherry blossoms", "travel to Japan to see spring flowers",
            "CUDA out of memory", "the GPU ran out of RAM while training a model"]
    modes = ("fts", "vector", "hybrid")
    old = [{"text": text, "mode": mode, "top_n": 20} for text in gone for mode in modes]
    new = [{"text": "quarterly budget review", "mode": mode} for mode in ("fts", "hybrid")]
    # The summary's signature still says `compression`; the filter reads the truth in `doc`.
    filtered = [{"text": "markets", "mode": mode, "kind": "summary", "type": "compression"}
                for mode in modes]
    found = queries(cli, *old, *new, *filtered)
    for line, results in zip(old, found):
        assert not {"trip", "gpu"} & {r["key"] for r in results}, line
    for results in found[len(old):-len(filtered)]:
        assert results[0]["text"] == "The quarterly budget review moved to Thursday."
    assert found[-len(filtered):] == [[]] * len(filtered)

    assert cli("reindex").exit_code == 0
    found = queries(cli, {"text": "the budget meeting was rescheduled", "mode": "vector"},
                    {"text": "markets", "mode": "vector", "kind": "summary", "type": "news"})
    assert found[0][0]["key"] == "trip" and len(found[1]) == 1
    assert index(cli)["whole"]
    assert_intact(agent)


def sqlite_utils(*args):
    done = subprocess.run([BIN / "sqlite-utils", *map(str, args)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_sqlite_utils_finds_the_full_text_index_without_sqlite_vec(agent):
    import sqlite_utils

    db = sqlite_utils.Database(sqlite3.connect(agent), execute_plugins=False)
    assert db["doc"].detect_fts() == "doc_fts"
    assert [r["text"] for r in db["doc"].search("cherry blossoms")] == [MEMORIES["trip"]]
    db.close()


def test_sqlite_utils_cli_searches_and_counts_every_table(agent):
    pytest.importorskip("sqlite_utils_sqlite_vec", reason="tables --counts needs sqlite-vec")
    found = sqlite_utils("search", agent, "doc", "cherry blossoms")
    assert [r["text"] for r in found] == [MEMORIES["trip"]]
    tables = {t["table"]: t["count"] for t in sqlite_utils("tables", agent, "--counts")}
    assert tables["memory"] == len(MEMORIES) and tables["doc_bits"] == tables["doc"]


def datasette_file(template, tmp_path):
    """The template plus an article, as ravana_agi.db: the database metadata.json names."""
    pytest.importorskip("datasette_sqlite_vec", reason="Datasette needs sqlite-vec")
    path = copy_db(template, tmp_path / "ravana_agi.db")
    python_sqlite3(path, OTHER_TABLES)
    return path


def test_datasette_searches_the_views_and_hides_the_index(template, tmp_path):
    path = datasette_file(template, tmp_path)
    from datasette.app import Datasette
    from datasette.utils.sqlite import using_pysqlite3

    assert using_pysqlite3  # Datasette's driver can load sqlite-vec
    ds = Datasette([str(path)], metadata=json.loads((ROOT / "metadata.json").read_text()))

    async def get(*urls):
        responses = [await ds.client.get(url) for url in urls]
        assert [r.status_code for r in responses] == [200] * len(urls)
        return [r.json() if ".json" in url else r.text for url, r in zip(urls, responses)]

    memories, summaries, articles, table, page, database = asyncio.run(get(
        "/ravana_agi/memory_search.json?_search=cherry+blossoms&_shape=array",
        "/ravana_agi/summary_search.json?_search=markets&_shape=array",
        "/ravana_agi/article_search.json?_search=volcano&_shape=array",
        "/ravana_agi/memory.json?_shape=array",
        "/ravana_agi/memory",
        "/ravana_agi.json"))
    assert [r["key"] for r in memories] == ["trip"]
    assert [r["summary_text"] for r in summaries] == ["Markets fell on rate fears."]
    assert [r["title"] for r in articles] == ["Volcano erupts in Iceland"]
    assert [r["key"] for r in table] == list(MEMORIES)
    assert MEMORIES["trip"] in page
    shown = {t["name"] for t in database["tables"] if not t["hidden"]}
    assert shown == set(TABLES)


def test_the_readme_datasette_command_answers_a_search(template, tmp_path):
    path = datasette_file(template, tmp_path)
    done = subprocess.run(
        [BIN / "datasette", path, "--metadata", ROOT / "metadata.json",
         "--get", "/ravana_agi/memory_search.json?_search=green+tea&_shape=array"],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert [r["key"] for r in json.loads(done.stdout)] == ["tea"]


@pytest.mark.parametrize("view", ["memory_search", "summary_search", "article_search"])
def test_a_search_through_a_view_is_driven_by_the_full_text_match(agent, view):
    # The query Datasette runs for ?_search= on a view with fts_table and fts_pk.
    sql = (f"EXPLAIN QUERY PLAN SELECT * FROM {view} WHERE doc_id IN "
           f"(SELECT rowid FROM doc_fts WHERE doc_fts MATCH 'tea')")
    with contextlib.closing(driver().connect(agent)) as conn:
        plan = [row[3] for row in conn.execute(sql)]
    assert plan[0] == "SEARCH d USING INTEGER PRIMARY KEY (rowid=?)", plan
