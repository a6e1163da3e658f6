"""`ravana-db explain`: provenance both ways, on a file built through the real commands, and
on rows other clients wrote (cycles, fan-out, dangling links)."""

import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
import sqlite_utils
import sqlite_vec
from conftest import ROOT
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.db import open_db
from ravana_db.errors import InputError
from ravana_db.explain import PROVENANCE, explain, flatten
from ravana_db.schema import migrations
from ravana_db.sql import driver

DEMO = sorted((ROOT / "fixtures" / "feeds" / "demo").iterdir())
ENV = ("RAVANA_DB", "DATABASE_URL", "RAVANA_DB_MODEL")


def ago(days):
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def memory(key, text, source, days=3, importance=0.95):
    return json.dumps({"key": key, "text": text, "importance": importance,
                       "created_at": ago(days), "from": source})


CRANE = "The harbour crane outage crashed the loading system on pier {} for two hours"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """ingest feeds -> log memories from articles (and log rows) -> consolidate -> a memory
    more -> consolidate -> compress: every hop explain shows, made by the real commands."""
    path = tmp_path_factory.mktemp("explain") / "agent.db"
    memories = "\n".join([
        memory("crane-1", CRANE.format(1), "article:1"),
        memory("crane-2", CRANE.format(2), "article:1"),
        memory("crane-3", CRANE.format(3), "article:9"),
        memory("crane-dup", CRANE.format(1).lower() + ".", "article:1", importance=0.6)])
    steps = [
        (["ingest", "feeds", *DEMO], None),
        (["log", "memory", "--stdin"], memories),
        *[(["log", "action", "--action-name", name], None)
          for _ in range(3) for name in ("fetch", "parse", "store")],
        (["log", "summary", "--summary-text", "Ports were attacked. Cargo stopped."], None),
        (["log", "summary", "--summary-text", "Cranes failed twice. Piers were closed."], None),
        (["consolidate", "--type", "event_triggered", "-q"], None),
        (["log", "memory", "--key", "crane-dup2", "--text", CRANE.format(2) + "!",
          "--importance", "0.95", "--created-at", ago(2), "--from", "memory:2"], None),
        (["consolidate", "--type", "event_triggered", "-q"], None),
        (["compress", "-q"], None),
    ]
    with pytest.MonkeyPatch.context() as env:
        for name in ENV:
            env.delenv(name, raising=False)
        for args, stdin in steps:
            result = CliRunner().invoke(app, ["--db", str(path), *map(str, args)], input=stdin,
                                        catch_exceptions=False)
            assert result.exit_code == 0, (args, result.stderr)
    return path


@pytest.fixture
def copy(built, db_path):
    shutil.copy(built, db_path)
    return db_path


def runs(path):
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT consolidation_id, consolidation_date FROM "
                                 "memory_consolidations ORDER BY consolidation_date"))


def ids(path, sql, *params):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchone()


def walk(node, *steps):
    """The node reached by links (relation, direction, kind), each the first that matches."""
    for relation, direction, kind in steps:
        node = next(link for link in node["links"] if link["relation"] == relation and
                    link["direction"] == direction and link["node"]["kind"] == kind)["node"]
    return node


def test_knowledge_goes_back_to_patterns_memories_articles_feeds_and_logs(copy, cli):
    result = cli("explain", "knowledge:1", "--depth", "6", "--format", "json")
    assert result.exit_code == 0, result.stderr
    root = json.loads(result.stdout)
    assert set(root) == {"kind", "id", "key", "text", "time", "links"}
    assert root["kind"] == "knowledge" and "\n" not in root["text"]
    known = runs(copy)
    for link in flatten_links(root):
        assert set(link) <= {"relation", "direction", "run", "time", "node"}
        assert link.get("run") is None or link["run"] in known
    # knowledge <- pattern <- vltm <- memory <- (merged) memory <- article <- feed
    survivor = walk(root, ("derived", "source", "pattern"), ("supports", "source", "vltm"),
                    ("promoted", "source", "memory"))
    assert survivor["key"] == "crane-dup"
    merged = walk(survivor, ("merged", "source", "memory"))
    assert merged["key"] == "crane-1"
    link = next(x for x in survivor["links"] if x["relation"] == "merged")
    assert link["run"] == next(iter(known)) and link["time"] == known[link["run"]]
    article = walk(merged, ("remembered", "source", "article"))
    assert article["id"] == 1
    feed = walk(article, ("fetched", "source", "feed"))
    assert feed["key"].endswith("atlas-business.xml")
    # the second run's memory came from another memory, and merged it
    pattern = [x["node"] for x in root["links"] if "4 related" in x["node"]["text"]][0]
    later = walk(pattern, ("supports", "source", "vltm"), ("promoted", "source", "memory"))
    assert later["key"] == "crane-dup2"
    assert {(x["relation"], x["node"]["key"]) for x in later["links"]} == {
        ("merged", "crane-2"), ("remembered", "crane-2")}


def flatten_links(node):
    for link in node["links"]:
        yield link
        yield from flatten_links(link["node"])


def test_a_memory_goes_up_to_its_article_and_down_to_knowledge(copy, cli):
    root = json.loads(cli("explain", "crane-1", "--json").stdout)
    assert (root["kind"], root["key"]) == ("memory", "crane-1")
    relations = {(x["relation"], x["direction"], x["node"]["kind"]) for x in root["links"]}
    assert relations == {("merged", "derived", "memory"), ("linked", "related", "memory"),
                         ("remembered", "source", "article")}
    survivor = walk(root, ("merged", "derived", "memory"))
    vltm = walk(survivor, ("promoted", "derived", "vltm"))
    promoted = next(x for x in survivor["links"] if x["relation"] == "promoted")
    assert promoted["run"] in runs(copy)
    knowledge = walk(vltm, ("supports", "derived", "pattern"), ("derived", "derived",
                                                                 "knowledge"))
    assert knowledge["text"].startswith("Critical failure:")
    assert all(x["node"]["cut"] == "related" for x in root["links"]
               if x["relation"] == "linked")


def test_an_article_shows_its_feed_its_event_and_the_memories_made_of_it(copy, cli):
    root = json.loads(cli("explain", "article:1", "--json").stdout)
    kinds = sorted((x["relation"], x["direction"], x["node"]["kind"]) for x in root["links"])
    assert ("clustered", "derived", "event") in kinds
    assert ("fetched", "source", "feed") in kinds
    remembered = {x["node"]["key"] for x in root["links"] if x["relation"] == "remembered"}
    assert remembered == {"crane-1", "crane-2", "crane-dup"}
    event = walk(root, ("clustered", "derived", "event"))
    back = json.loads(cli("explain", f"event:{event['id']}", "--json").stdout)
    assert {1, 9} <= {x["node"]["id"] for x in back["links"]}
    assert {(x["relation"], x["direction"], x["node"]["kind"]) for x in back["links"]} == {
        ("clustered", "source", "article")}


def test_a_log_row_shows_the_pattern_that_counts_it_and_a_summary_its_compression(copy, cli):
    root = json.loads(cli("explain", "action:1", "--json").stdout)
    pattern = walk(root, ("supports", "derived", "pattern"))
    assert pattern["text"].startswith("fetch -> parse -> store")
    down = json.loads(cli("explain", f"pattern:{pattern['key']}", "--json").stdout)
    assert sorted(x["node"]["id"] for x in down["links"]) == list(range(1, 10))
    summary = json.loads(cli("explain", "summary:1", "--json").stdout)
    compression = walk(summary, ("compressed", "derived", "summary"))
    link = summary["links"][0]
    assert link["run"] in runs(copy)
    up = json.loads(cli("explain", f"summary:{compression['id']}", "--json").stdout)
    assert {x["node"]["id"] for x in up["links"]} == {1, 2}


def test_the_tree_for_people(copy, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    result = cli("explain", "crane-1", "--format", "table")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"memory 1 [crane-1]: {CRANE.format(1)}  (")
    text = "\n".join(lines)
    for part in ("├── -> merged memory 4 [crane-dup]: ", "│   └── -> promoted vltm ",
                 "supports pattern ", "-> derived knowledge 1: Critical failure",
                 "~ linked memory 2 [crane-2]", "└── <- remembered article 1: ",
                 "<- fetched feed 1 [file://"):
        assert part in text, part
    assert "(shown above)" in text
    assert ", run " in text


def test_jsonl_and_csv_give_a_row_per_node(copy, cli):
    rows = [json.loads(line) for line in
            cli("explain", "article:9", "--format", "jsonl").stdout.splitlines()]
    assert rows[0]["depth"] == 0 and rows[0]["kind"] == "article"
    assert {"depth", "relation", "direction", "run", "link_time", "kind", "id", "key", "text",
            "time", "cut"} == set(rows[0])
    csv = cli("explain", "article:9", "--format", "csv").stdout.splitlines()
    assert csv[0].startswith("depth,relation,direction") and len(csv) == len(rows) + 1


def test_depth_zero_is_the_row_alone(copy, cli):
    root = json.loads(cli("explain", "1", "--depth", "0", "--json").stdout)
    assert root["links"] == [] and root["cut"] == "depth"


@pytest.mark.parametrize("ref, message", [
    ("memory:999", "error: no memory '999'"),
    ("no-such-key", "error: no memory 'no-such-key'"),
    ("knowledge:00000000-0000-0000-0000-000000000000",
     "error: no knowledge '00000000-0000-0000-0000-000000000000'"),
    ("https://nowhere.example/feed", "error: no feed 'https://nowhere.example/feed'"),
    ("  ", "error: give what to explain: [KIND:]ID or a memory's KEY"),
    ("x" * 100_000, "error: no memory '" + "x" * 80 + "'...\n"),
    ("memory:", "error: give the memory's id after 'memory:'\n"),
    ("planet:3", "error: no memory with the key 'planet:3', and 'planet' is not a kind: "
                 "memory, article, event"),
])
def test_what_is_not_there_is_one_line_and_exit_2(copy, cli, ref, message):
    result = cli("explain", ref)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_a_missing_file_is_not_created(cli, db_path):
    result = cli("explain", "1")
    assert result.exit_code == 2 and not db_path.exists()


def test_log_memory_from_a_row_that_is_not_there_writes_nothing(copy, cli):
    before = ids(copy, "SELECT count(*), (SELECT count(*) FROM provenance) FROM memory")
    for source, message in [("article:999", "error: no article '999'"),
                            ("article", "error: from: 'article' is not KIND:ID"),
                            ("planet:3", "error: from: 'planet:3' is not KIND:ID")]:
        result = cli("log", "memory", "--text", "from nowhere", "--from", source)
        assert result.exit_code == 2 and result.stderr.startswith(message), result.stderr
    line = json.dumps({"text": "a line from nowhere", "from": "event:77"})
    result = cli("log", "memory", "--stdin", input=line + "\n")
    assert result.exit_code == 2 and result.stderr == "error: line 1: no event '77'\n"
    assert ids(copy, "SELECT count(*), (SELECT count(*) FROM provenance) FROM memory") == \
        before


def plain(path):
    """A connection as another client opens the file: the stdlib's sqlite3, nothing of ours."""
    return sqlite3.connect(path, isolation_level=None)


def test_cycles_and_dangling_links_other_clients_wrote_never_loop(db_path, cli):
    open_db(db_path).close()
    conn = plain(db_path)
    conn.execute("INSERT INTO very_long_term_memories(memory_id, memory_type, "
                 "compressed_content) VALUES ('v', 'code_pattern', '{\"level\": 2}')")
    conn.execute("INSERT INTO provenance VALUES ('memory', '3', 'vltm', 'v', 'promoted', NULL, "
                 "'2026-01-01T00:00:00Z')")
    conn.executemany("INSERT INTO memory(id, text) VALUES (?, ?)",
                     [(1, "one"), (2, "two"), (3, "three")])
    conn.execute("UPDATE memory SET merged_into = 2 WHERE id = 1")
    conn.execute("UPDATE memory SET merged_into = 1 WHERE id = 2")
    conn.executemany("INSERT INTO provenance(from_kind, from_id, to_kind, to_id, relation) "
                     "VALUES (?, ?, ?, ?, ?)", [
                         ("memory", "2", "memory", "3", "remembered"),
                         ("memory", "3", "memory", "2", "remembered"),
                         ("article", "404", "memory", "3", "remembered"),
                         ("planet", "x", "memory", "3", "remembered"),
                         ("memory", "not a number", "memory", "3", "remembered")])
    conn.close()
    result = cli("explain", "memory:3", "--depth", "50", "--json")
    assert result.exit_code == 0, result.stderr
    root = json.loads(result.stdout)
    nodes = [link["node"] for link in flatten_links(root)]
    assert len(nodes) < 10
    assert {"kind": "vltm", "id": 1, "key": "v", "text": '{"level": 2}'}.items() <= \
        nodes[-1].items()
    assert any(n.get("cut") == "seen" for n in nodes)


def test_a_huge_fan_out_is_cut_with_a_count(db_path, cli):
    open_db(db_path).close()
    conn = plain(db_path)
    conn.execute("INSERT INTO feed(id, url) VALUES (1, 'https://big.example/feed')")
    conn.executemany("INSERT INTO article(title, link, feed_id, guid) VALUES (?, ?, 1, ?)",
                     [(f"story {i}", f"https://big.example/{i}", str(i)) for i in range(5000)])
    conn.executemany("INSERT INTO actionlog(id, action_name) VALUES (?, 'read')",
                     [(i,) for i in range(1, 3001)])
    conn.executemany("INSERT INTO provenance(from_kind, from_id, to_kind, to_id, relation) "
                     "VALUES ('article', '7', 'action', ?, 'remembered')",
                     [(str(i),) for i in range(1, 3001)])
    conn.close()
    root = json.loads(cli("explain", "https://big.example/feed", "--json").stdout)
    assert len(root["links"]) == 10
    assert root["more"] == [{"relation": "fetched", "direction": "derived", "count": 4990}]
    article = json.loads(cli("explain", "article:7", "--json").stdout)
    assert article["more"] == [{"relation": "remembered", "direction": "derived",
                                "count": 2990}]
    result = cli("explain", "feed:1", "--format", "table")
    assert "... and 4990 more fetched (->)" in result.stdout


def test_provenance_reads_by_index_both_ways(db_path):
    db = open_db(db_path)
    for direction, index in (("source", "idx_provenance_to"),
                             ("derived", "sqlite_autoindex_provenance_1")):
        plan = " ".join(row[-1] for row in db.execute(
            "EXPLAIN QUERY PLAN " + PROVENANCE[direction], ["memory", "1"]))
        assert index in plan, plan
    plan = " ".join(row[-1] for row in db.execute(
        "EXPLAIN QUERY PLAN DELETE FROM provenance WHERE to_kind = ? AND to_id = ? AND "
        "relation = ?", ["vltm", "x", "promoted"]))
    assert "idx_provenance_to" in plan


def test_m011_copies_the_links_a_file_at_m009_holds(db_path):
    conn = driver().connect(str(db_path), isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    old = sqlite_utils.Database(conn)
    migrations.apply(old, stop_before="m011_provenance")
    old.execute("INSERT INTO memory(id, text) VALUES (5, 'kept')")
    old.execute("INSERT INTO very_long_term_memories(memory_id, memory_type, "
                "compressed_content, metadata_info) VALUES ('v-1', 'code_pattern', "
                "'{\"text\": \"kept\"}', '{\"memory\": 5, \"consolidation_id\": \"run-1\"}')")
    old.execute("INSERT INTO memory_patterns(pattern_id, pattern_type, pattern_description, "
                "confidence_score, supporting_memories) VALUES ('p-1', 'structural', 'a', 0.9,"
                " '[\"v-1\", \"actionlog:3\", 7]')")
    old.execute("INSERT INTO memory_patterns(pattern_id, pattern_type, pattern_description, "
                "confidence_score, supporting_memories) VALUES ('p-2', 'causal', 'b', 0.9,"
                " '[1, {\"x\": [2]}]')")
    old.execute("PRAGMA ignore_check_constraints = ON")  # what a careless client can leave
    for i, (info, supporting) in enumerate([("not json", "not json"), ("[1]", "{}"),
                                            ("{\"memory\": \"5\"}", "[[\"v-1\"]]")]):
        old.execute("INSERT INTO very_long_term_memories(memory_id, memory_type, "
                    "compressed_content, metadata_info) VALUES (?, 'code_pattern', '{}', ?)",
                    [f"bad-{i}", info])
        old.execute("INSERT INTO memory_patterns(pattern_id, pattern_type, "
                    "pattern_description, confidence_score, supporting_memories) VALUES "
                    "(?, 'causal', 'x', 0.5, ?)", [f"bad-{i}", supporting])
    old.execute("INSERT INTO memory_patterns(pattern_id, pattern_type, pattern_description, "
                "confidence_score, supporting_memories) VALUES (?, 'causal', 'x', 0.5, ?)",
                [b"blob", b"[\"v-1\"]"])
    old.execute("PRAGMA ignore_check_constraints = OFF")
    old.execute("INSERT INTO strategic_knowledge(knowledge_id, knowledge_domain, "
                "knowledge_summary, confidence_level) VALUES ('k-1', 'code', 'c', 0.8)")
    old.execute("INSERT INTO pattern_strategic_knowledge(pattern_id, knowledge_id) "
                "VALUES ('p-1', 'k-1')")
    old.close()
    db = open_db(db_path)
    assert db.execute("SELECT text FROM memory").fetchall() == [("kept",)]
    assert sorted(db.execute("SELECT from_kind, from_id, to_kind, to_id, relation, run_id "
                             "FROM provenance")) == [
        ("action", "3", "pattern", "p-1", "supports", None),
        ("memory", "5", "vltm", "v-1", "promoted", "run-1"),
        ("pattern", "p-1", "knowledge", "k-1", "derived", None),
        ("vltm", "v-1", "pattern", "p-1", "supports", None)]
    root = explain(db, "knowledge:k-1", depth=5)
    # action 3 is not there: its link is not shown
    assert [r["kind"] for r in flatten(root)] == ["knowledge", "pattern", "vltm", "memory"]


def test_every_hop_reads_by_index(copy):
    """Each query explain makes, traced on the built file, searches an index; the only scans
    are the runs' JSON (a compression summary's run; runs are few) and sqlite_master."""
    db = open_db(copy)
    made = []
    db.conn.set_trace_callback(made.append)
    for ref in ("knowledge:1", "crane-1", "article:1", "event:1", "action:1", "summary:1",
                "feed:1", "summary:3"):
        try:
            explain(db, ref, depth=6)
        except InputError:  # a row not there: its lookups are traced all the same
            pass
    db.conn.set_trace_callback(None)
    scans = set()
    for sql in {s for s in made if s.lstrip().upper().startswith("SELECT")}:
        for row in db.execute("EXPLAIN QUERY PLAN " + sql):
            if row[-1].startswith("SCAN"):
                scans.add(row[-1].split()[1])
    assert scans <= {"memory_consolidations", "sqlite_master"}, scans
    assert len(made) > 20
