"""The read commands against a real PostgreSQL + pgvector (pgserver): files synced with the real
`ravana-db sync`, then query, status, export and timeline asked of the server, compared with
the same commands on the file."""

import json

import pytest
from conftest import ROOT, copy_db, one_line_error
from typer.testing import CliRunner

from ravana_db.cli import app

EVAL = [json.loads(line)["query"] for line in
        (ROOT / "fixtures" / "search_eval.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def server(embedded_template, pg_server, tmp_path_factory):
    """Two files synced into one server database, once for this module (its tests only read
    it): `agent` (the embedded fixture: 60 memories, a feed's articles, a log row of each
    kind) and `scout` (two memories of its own). Returns the database's URL."""
    import psycopg

    folder = tmp_path_factory.mktemp("pg_read")
    agent, scout = copy_db(embedded_template, folder / "agent.db"), folder / "scout.db"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pg_read")
        conn.execute("CREATE DATABASE pg_read")
    url = pg_server.replace("/postgres?", "/pg_read?", 1)
    memories = [{"text": "The deploy to staging failed because the migration locked the users "
                         "table for nine minutes.", "memory_type": "episodic", "key": "s-1"},
                {"text": "Scout learned that the harbour cranes stop when the wind passes 60 "
                         "km/h.", "memory_type": "fact", "key": "s-2"}]
    runs = [(["--db", scout, "log", "memory", "--stdin"],
             "".join(json.dumps(m) + "\n" for m in memories)),
            (["--db", agent, "sync", url, "--name", "agent"], None),
            (["--db", scout, "sync", url, "--name", "scout"], None)]
    with pytest.MonkeyPatch.context() as env:
        for name in ("RAVANA_DB", "DATABASE_URL", "RAVANA_DB_MODEL"):
            env.delenv(name, raising=False)
        for args, stdin in runs:
            result = CliRunner().invoke(app, [str(a) for a in args], input=stdin,
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
    return url


def on(cli, url, *args, input=None):
    return cli("--db", url, *args, db=False, input=input)


def results(result):
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_query_on_the_server_finds_rows_of_both_files_and_file_limits_it(cli, server):
    found = results(on(cli, server, "query", "deploy to staging failed", "-n", "10"))
    assert {r["file"] for r in found} == {"agent", "scout"}
    scout = next(r for r in found if r["file"] == "scout")
    assert scout["key"] == "s-1" and scout["bm25_rank"] and scout["vector_rank"]
    for limit in (["--file", "agent"], ["--file", "scout"]):
        only = results(on(cli, server, "query", "deploy to staging failed", "-n", "10", *limit))
        assert only and {r["file"] for r in only} == {limit[1]}
    both = results(on(cli, server, "query", "deploy", "-n", "10", "--file", "agent,scout"))
    assert {r["file"] for r in both} == {"agent", "scout"}
    stderr = one_line_error(on(cli, server, "query", "deploy", "--file", "nobody"))
    assert "no synced file is named 'nobody' (synced: agent, scout)" in stderr
    refused = on(cli, server, "query", "deploy", "--distinct")
    assert refused.exit_code == 2 and "--distinct reads a file" in one_line_error(refused)


def test_filters_and_csv_on_the_server(cli, server):
    articles = results(on(cli, server, "query", "port", "--kind", "article", "-n", "3"))
    assert articles and {r["kind"] for r in articles} == {"article"}
    facts = results(on(cli, server, "query", "wind cranes", "--type", "fact", "-m", "fts"))
    assert [(r["file"], r["key"]) for r in facts] == [("scout", "s-2")]
    assert results(on(cli, server, "query", "deploy", "--until", "2000-01-01")) == []
    rows = on(cli, server, "query", "deploy", "-f", "csv", "-n", "2").stdout.splitlines()
    assert rows[0].startswith("file,kind,id,key,text,timestamp,score,") and len(rows) == 3
    ranked = results(on(cli, server, "query", "deploy", "--recency", "30d", "--importance", "1"))
    assert all({"relevance", "recency", "importance"} <= set(r) for r in ranked)
    like = results(on(cli, server, "query", "--like", "s-1", "--file", "scout", "-n", "3"))
    assert like and ("scout", "s-1") not in [(r["file"], r["key"]) for r in like]
    assert "name one with --file" in one_line_error(on(cli, server, "query", "--like", "1"))


def test_the_same_queries_on_the_file_and_on_the_server_rank_alike(cli, server, embedded):
    """The repository's evaluation queries through one `query --stdin` on each side: exact
    modes (vector, fts: the file's tokens and bm25() on the server) identical, ids and order,
    and fts scores too; hybrid overlap@10 >= 0.9."""
    queries = "".join(q + "\n" for q in EVAL)
    for mode in ("vector", "hybrid", "fts"):
        args = ["query", "--stdin", "-m", mode, "-n", "10"]
        there = on(cli, server, *args, "--file", "agent", input=queries)
        local = cli("--db", embedded, *args, "--no-touch", db=False, input=queries)
        assert there.exit_code == local.exit_code == 0, there.stderr + local.stderr
        pairs = list(zip(*([[(r["kind"], r["id"]) for r in json.loads(line)["results"]]
                            for line in side.stdout.splitlines()] for side in (there, local))))
        scores = list(zip(*([[r["bm25"] for r in json.loads(line)["results"]]
                             for line in side.stdout.splitlines()] for side in (there, local))))
        assert len(pairs) == len(EVAL)
        overlap = sum(len(set(a) & set(b)) / max(len(b), 1) for a, b in pairs) / len(pairs)
        if mode == "hybrid":
            assert overlap >= 0.9, overlap
        else:
            assert all(a == b for a, b in pairs), mode
        if mode == "fts":
            assert sum(map(len, (a for a, _ in pairs))) > 100
            assert all(a == b for a, b in scores)


def test_status_export_and_timeline_on_the_server(cli, server, tmp_path):
    status = results(on(cli, server, "status"))
    assert [f["name"] for f in status["files"]] == ["agent", "scout"]
    agent = status["files"][0]
    assert agent["rows"]["memory"] == 60 and agent["vectors"] == agent["searchable"] > 60
    assert agent["last_sync"] and status["schema_version"] >= 1
    assert [f["name"] for f in results(on(cli, server, "status", "--file", "scout"))["files"]] \
        == ["scout"]
    lines = on(cli, server, "export", "memory", "-f", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 62 and list(rows[0])[:3] == ["file", "id", "key"]
    assert rows[-1]["file"] == "scout" and rows[-1]["key"] == "s-2"
    assert rows[0]["created_at"].endswith("Z")
    out = tmp_path / "actions.json"
    assert on(cli, server, "export", "actionlog", "--file", "agent", "-o", out).exit_code == 0
    (action,) = json.loads(out.read_text())
    assert action["file"] == "agent" and json.loads(action["params"]) == {"feeds": 3}
    one_line_error(on(cli, server, "export", "all", "-o", tmp_path / "all"))
    line = results(on(cli, server, "timeline", "-n", "3", "--kind", "memory"))
    assert [r["kind"] for r in line] == ["memory"] * 3 and {"time", "file", "id"} <= set(line[0])
    moods = results(on(cli, server, "timeline", "--kind", "mood,action"))
    assert {r["kind"] for r in moods} == {"mood", "action"}


@pytest.mark.parametrize("command", [["log", "memory", "--text", "x"], ["init"],
                                     ["consolidate"], ["reindex"], ["export", "backup", "b.db"]])
def test_write_commands_given_a_server_url_say_where_writes_go(cli, monkeypatch, command):
    url = "postgresql://agent:s3cr3t@db.example/memory?sslmode=require"
    for given in ("--db", "DATABASE_URL"):
        if given == "DATABASE_URL":
            monkeypatch.setenv("DATABASE_URL", url)
        result = cli(*(["--db", url] if given == "--db" else []), *command, db=False)
        stderr = one_line_error(result)
        assert "writes go to a file" in stderr and "`ravana-db sync`" in stderr
        assert "s3cr3t" not in stderr and "sslmode=***" in stderr


def test_file_is_for_servers_and_a_bad_server_is_one_line_without_its_password(cli, embedded):
    assert "--file chooses among the files synced into a server" in one_line_error(
        cli("query", "x", "--file", "agent"))
    result = cli("--db", "postgresql://agent:s3cr3t@127.0.0.1:9/x", "status", db=False)
    stderr = one_line_error(result, code=1)
    assert "cannot connect to postgresql://agent:***@127.0.0.1:9/x" in stderr
    assert "s3cr3t" not in stderr


def test_a_merged_memory_leaves_the_servers_results_as_the_files(cli, embedded, pg_url):
    """A memory merged into another (here by a plain sqlite3 client, as consolidate does)
    leaves the file's index; after the next sync the server's results lose it too."""
    import sqlite3

    ask = ["query", "Helm chart referenced a missing secret", "-m", "fts", "-n", "20"]
    assert cli("--db", embedded, "sync", pg_url, db=False).exit_code == 0
    before = {r["key"] for r in results(on(cli, pg_url, *ask))}
    assert "mem-006" in before
    with sqlite3.connect(embedded) as conn:
        conn.execute("UPDATE memory SET merged_into = 8 WHERE key = 'mem-006'")
    assert cli("--db", embedded, "sync", pg_url, db=False).exit_code == 0
    there = [r["key"] for r in results(on(cli, pg_url, *ask))]
    here = [r["key"] for r in results(cli("--db", embedded, *ask, "--no-touch", db=False))]
    assert "mem-006" not in there and set(there) == set(here) == before - {"mem-006"}
