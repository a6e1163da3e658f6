"""The search index heals: `reindex` rebuilds any piece a file lost (an FTS or vec0 table, a
trigger, a trigger of another body), and `status` says whether the index is whole and what
work waits. Damage is done the way it happens in the field: with plain SQL from another client.
"""

import contextlib
import json
import sqlite3

import pytest
from conftest import copy_db, jsonl, one_line_error
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.db import open_db

MEMORIES = {
    "tea": "The user prefers green tea and dislikes coffee.",
    "deploy": "The Friday deploy broke the build and paged the on-call engineer.",
    "trip": "The user plans a trip to Kyoto in April for cherry blossoms.",
}
# Written by a plain client while a piece of the index is missing.
CAT = "The office cat sleeps on the warm server rack."
# Queries that share no word with the memory they should find: only meaning finds them.
BY_MEANING = {
    "tea": "which hot beverage does the person enjoy",
    "trip": "vacation to Japan in spring",
    "cat": "a kitten napping on computer hardware",
    "deploy": "the release on the last workday failed to compile",
}
HEALTHY = {"missing": [], "outdated": [], "waiting_for_vectors": 0,
           "waiting_for_signatures": 0, "without_vectors": 0, "vectors_without_doc": 0,
           "whole": True}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A small file written by the CLI, every text embedded (built once per module)."""
    path = tmp_path_factory.mktemp("index-template") / "agent.db"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        result = CliRunner().invoke(
            app, ["--db", str(path), "log", "memory", "--stdin"], catch_exceptions=False,
            input=jsonl(*({"key": k, "text": t} for k, t in MEMORIES.items())))
    assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def agent(template, db_path):
    """The template, copied to the `cli` fixture's file."""
    return copy_db(template, db_path)


def plain(path, sql, *params):
    """One statement through Python's own sqlite3 (no sqlite-vec), committed."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(sql, params)
        conn.commit()


def read(path, sql, *params):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def status(cli):
    result = cli("status", "--format", "json")
    assert result.exit_code == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def reindex(cli, *args):
    result = cli("reindex", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def keys(cli, text, mode, top_n=5):
    """The keys `query` returns, best first (read only)."""
    result = cli("-q", "query", text, "--mode", mode, "--top-n", top_n, "--kind", "memory",
                 "--no-touch", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return [r["key"] for r in json.loads(result.stdout)]


def assert_searches_work(cli, present, absent=()):
    """Each present key is found first by its own words and by meaning alone; absent ones
    are found by neither (one `query --stdin` run: the model loads once)."""
    texts = {**MEMORIES, "cat": CAT}
    asked = [*((key, "first", {"text": texts[key], "mode": "fts"}) for key in present),
             *((key, "only", {"text": BY_MEANING[key], "mode": "vector", "top_n": 1})
               for key in present),
             *((key, "first", {"text": BY_MEANING[key], "mode": "hybrid"}) for key in present),
             *((key, "none", {"text": texts[key], "mode": mode})
               for key in absent for mode in ("fts", "vector", "hybrid"))]
    result = cli("-q", "query", "--stdin", "--kind", "memory", "--no-touch", "--format",
                 "jsonl", input=jsonl(*(line for _, _, line in asked)))
    assert result.exit_code == 0, result.stderr
    found = [[r["key"] for r in answer["results"]]
             for answer in map(json.loads, result.stdout.splitlines())]
    for (key, how, line), got in zip(asked, found):
        expected = {"first": key in got[:1], "only": got == [key], "none": key not in got}
        assert expected[how], (key, line, got)


# 1. A lost piece is rebuilt -----------------------------------------------------------------


def drop_fts(path):
    plain(path, "DROP TABLE doc_fts")
    # No plain client can write a searchable row now (the doc trigger feeds doc_fts): nothing
    # is written around it.
    with pytest.raises(sqlite3.OperationalError, match="doc_fts"):
        plain(path, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    return {"missing": ["doc_fts"], "outdated": []}, ["tea", "deploy", "trip"], []


def drop_bits(path):
    # A vec0 table: only a connection with sqlite-vec can drop it.
    db = open_db(path)
    try:
        db.execute("DROP TABLE doc_bits")
    finally:
        db.close()
    plain(path, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    return {"missing": ["doc_bits"], "outdated": []}, ["tea", "trip", "cat"], []


def drop_source_trigger(path):
    plain(path, "DROP TRIGGER memory_doc_ai")
    plain(path, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    return {"missing": ["memory_doc_ai"], "outdated": []}, ["tea", "trip", "cat"], []


def drop_delete_trigger(path):
    plain(path, "DROP TRIGGER doc_ad")
    plain(path, "DELETE FROM memory WHERE key = 'deploy'")
    plain(path, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    return {"missing": ["doc_ad"], "outdated": []}, ["tea", "trip", "cat"], ["deploy"]


def replace_source_trigger(path):
    plain(path, "DROP TRIGGER memory_doc_ai")
    plain(path, "CREATE TRIGGER memory_doc_ai AFTER INSERT ON memory BEGIN SELECT 1; END")
    plain(path, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    return {"missing": [], "outdated": ["memory_doc_ai"]}, ["tea", "trip", "cat"], []


DAMAGE = {"drop doc_fts": drop_fts, "drop doc_bits": drop_bits,
          "drop memory_doc_ai": drop_source_trigger, "drop doc_ad": drop_delete_trigger,
          "memory_doc_ai of another body": replace_source_trigger}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_reindex_rebuilds_a_lost_piece_and_search_finds_the_right_rows(cli, agent, damage):
    assert status(cli)["index"] == HEALTHY
    expected, present, absent = damage(agent)
    before = status(cli)["index"]
    assert {k: before[k] for k in ("missing", "outdated")} == expected
    assert before["whole"] is False

    report = reindex(cli)
    lost = expected["missing"] + expected["outdated"]
    assert set(lost) <= set(report["repaired"])
    assert status(cli)["index"] == HEALTHY
    assert_searches_work(cli, present, absent)
    # Healed: the index follows plain writes again, by words at once.
    plain(agent, "INSERT INTO memory(key, text) VALUES ('owl', 'A snowy owl nests on the roof.')")
    assert keys(cli, "snowy owl", "fts") == ["owl"]


def test_the_rows_a_missing_trigger_let_through_are_indexed_once(cli, agent):
    drop_source_trigger(agent)
    report = reindex(cli)
    assert (report["docs_added"], report["embedded"]) == (1, 1)
    again = reindex(cli)
    assert (again["docs_added"], again["docs_updated"], again["docs_removed"],
            again["embedded"]) == (0, 0, 0, 0)
    assert read(agent, "SELECT count(*) FROM doc WHERE kind = 'memory'") == [(4,)]


def test_index_objects_are_what_a_new_file_has(cli, db_path):
    """The health check compares with index_objects(): a new file must match it exactly."""
    from ravana_db.schema import index_objects

    cli("init")
    names = {name for (name,) in read(db_path, "SELECT name FROM sqlite_master")}
    assert set(index_objects()) <= names
    assert status(cli)["index"] == HEALTHY


def test_repaired_names_only_what_was_missing(cli, agent):
    assert reindex(cli)["repaired"] == []
    plain(agent, "DROP TRIGGER doc_ad")
    assert reindex(cli)["repaired"] == ["doc_ad"]


def test_a_row_deleted_without_doc_ad_leaves_no_vector_behind(cli, agent):
    plain(agent, "DROP TRIGGER doc_ad")
    plain(agent, "DELETE FROM memory WHERE key = 'trip'")  # the last doc: its id comes back
    reindex(cli)
    plain(agent, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    # The cat is not yet embedded: it must not be found by the deleted trip's meaning.
    assert "cat" not in keys(cli, BY_MEANING["trip"], "vector")
    assert status(cli)["index"]["without_vectors"] == 1


# 2. Waiting work ----------------------------------------------------------------------------


def test_status_reports_waiting_work_until_reindex_does_it(cli, agent):
    # Queued text: a row a plain client wrote.
    plain(agent, "INSERT INTO memory(key, text) VALUES ('cat', ?)", CAT)
    # A row whose vector is gone, with nothing queued for it.
    plain(agent, "DELETE FROM doc_vec WHERE doc_id = (SELECT id FROM doc WHERE ref = "
                 "(SELECT CAST(id AS TEXT) FROM memory WHERE key = 'tea'))")
    # Signature rows to rewrite (a changed filter) and to drop (a deleted row).
    plain(agent, "UPDATE memory SET memory_type = 'critical_failure' WHERE key = 'trip'")
    plain(agent, "DELETE FROM memory WHERE key = 'deploy'")
    assert status(cli)["index"] == {
        "missing": [], "outdated": [], "waiting_for_vectors": 1, "waiting_for_signatures": 2,
        "without_vectors": 2, "vectors_without_doc": 0, "whole": False}

    assert reindex(cli)["embedded"] == 2
    assert status(cli)["index"] == HEALTHY
    assert_searches_work(cli, ["tea", "trip", "cat"], ["deploy"])
    # The rewritten signature carries the new type: the vector side filters on it.
    result = cli("-q", "query", BY_MEANING["trip"], "--mode", "vector", "--type",
                 "critical_failure", "--no-touch", "--format", "json")
    assert [r["key"] for r in json.loads(result.stdout)] == ["trip"]


def test_waiting_signatures_alone_make_the_index_not_whole(cli, agent):
    plain(agent, "UPDATE memory SET source = 'chat' WHERE key = 'tea'")
    index = status(cli)["index"]
    assert (index["waiting_for_signatures"], index["waiting_for_vectors"],
            index["without_vectors"], index["whole"]) == (1, 0, 0, False)
    assert reindex(cli, "--vectors")["embedded"] == 0  # nothing to embed: the vector is reused
    assert status(cli)["index"] == HEALTHY


# 3. A damaged model record ------------------------------------------------------------------


def test_a_non_numeric_embedding_dim_is_reported_and_repaired(cli, agent, rows):
    plain(agent, "UPDATE meta SET value = 'abc' WHERE key = 'embedding_dim'")
    shown = status(cli)
    assert shown["embedding_dim"] == "abc"
    table = cli("status", "--format", "table")
    assert table.exit_code == 0 and "abc" in table.stdout

    for args in (["query", "green tea"], ["query", "green tea", "--mode", "vector"],
                 ["log", "memory", "--text", "A new note about owls"]):
        result = cli(*args)
        one_line_error(result, 1)
        assert "'abc'" in result.stderr and "reindex --vectors" in result.stderr
    assert [r["key"] for r in rows("memory")] == list(MEMORIES)  # nothing written
    assert keys(cli, "green tea", "fts")[0] == "tea"  # words need no model

    assert reindex(cli, "--vectors")["embedded"] == len(MEMORIES)
    shown = status(cli)
    assert shown["embedding_dim"] == 384 and shown["index"] == HEALTHY
    assert_searches_work(cli, ["tea", "trip"])
    assert cli("log", "memory", "--text", "A new note about owls").exit_code == 0


@pytest.mark.parametrize("value", [
    "", "3.5", "-1x",
    "\u00b2", b"\xff",
], ids=["empty", "3.5", "-1x", "superscript-two", "blob"])
def test_status_shows_any_damaged_embedding_dim(cli, agent, value):
    plain(agent, "UPDATE meta SET value = ? WHERE key = 'embedding_dim'", value)
    for fmt in ("json", "table"):
        result = cli("status", "--format", fmt)
        assert result.exit_code == 0 and result.stderr == "", result.stderr
    one_line_error(cli("query", "green tea"), 1)


# 4. Text with nothing to embed --------------------------------------------------------------


@pytest.mark.parametrize("blank", ["   ", "\t\n "])
def test_a_blank_row_from_a_plain_client_is_not_embedded_forever(cli, agent, blank):
    plain(agent, "INSERT INTO memory(text) VALUES (?)", blank)
    (memory_id,) = read(agent, "SELECT id FROM memory WHERE text = ?", blank)[0]
    assert reindex(cli)["embedded"] == 0
    assert reindex(cli)["embedded"] == 0
    assert status(cli)["index"] == HEALTHY
    for like in (str(memory_id), f"memory:{memory_id}"):
        for mode in ("hybrid", "vector"):
            result = cli("query", "--like", like, "--mode", mode)
            one_line_error(result, 2)
            assert result.stderr == f"error: like: {like} has no text to compare\n"
    assert read(agent, "SELECT access_count FROM memory WHERE id = ?", memory_id) == [(0,)]
