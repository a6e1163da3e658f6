"""`ravana-db log KIND`: every kind stored and read back; bad input rejected, nothing written."""

import contextlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import jsonl, one_line_error

spec = importlib.util.spec_from_file_location(
    "make_original", Path(__file__).parent.parent / "fixtures" / "ravana" / "make_original.py")
make_original = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_original)


def test_action_from_options(cli, rows):
    result = cli("log", "action", "--action-name", "search", "--params", '{"q": "llm"}',
                 "--status", "failure", "--result", '{"hits": 0}',
                 "--timestamp", "2024-05-01T12:00:00+02:00")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "1\n"
    (row,) = rows("actionlog")
    assert row == {"id": 1, "timestamp": "2024-05-01T10:00:00.000Z", "action_name": "search",
                   "params": '{"q": "llm"}', "status": "failure", "result": '{"hits": 0}'}


def test_action_defaults(cli, rows):
    cli("log", "action", "--action-name", "noop")
    (row,) = rows("actionlog")
    assert row["status"] == "success" and row["params"] == "{}" and row["result"] is None
    assert row["timestamp"].endswith("Z")


def test_mood_situation_decision_experiment(cli, rows):
    assert cli("log", "mood", "--mood-vector", '{"curious": 0.8, "calm": 0.2}').exit_code == 0
    assert cli("log", "situation", "--situation-type", "curiosity", "--prompt", "Why?",
               "--context", '{"topic": "sky"}').stdout == "1\n"
    assert cli("log", "decision", "--situation-id", "1", "--raw-response", "look up").exit_code == 0
    assert cli("log", "experiment", "--hypothesis", "caching helps",
               "--results", '{"speedup": 1.9}').exit_code == 0
    assert json.loads(rows("moodlog")[0]["mood_vector"]) == {"curious": 0.8, "calm": 0.2}
    assert rows("situationlog")[0]["context"] == '{"topic": "sky"}'
    assert rows("decisionlog")[0]["situation_id"] == 1
    assert rows("decisionlog")[0]["raw_response"] == "look up"
    assert json.loads(rows("experimentlog")[0]["results"]) == {"speedup": 1.9}


def test_summary_is_deduplicated_by_sha256(cli, rows):
    import hashlib

    first = cli("log", "summary", "--summary-text", "Markets fell.", "--category", "compression")
    again = cli("log", "summary", "--summary-text", "Markets fell.", "--format", "json")
    assert first.stdout == "1\n"
    assert json.loads(again.stdout) == [
        {"kind": "summary", "line": None, "id": 1, "status": "existing"}]
    assert "already stored as summary 1" in again.stderr
    (row,) = rows("summary")
    assert row["content_hash"] == hashlib.sha256(b"Markets fell.").hexdigest()
    assert (row["source"], row["category"]) == ("unknown", "compression")


def test_memory_key_updates_instead_of_adding(cli, rows):
    cli("log", "memory", "--text", "likes tea", "--key", "pref", "--importance", "0.9",
        "--metadata", '{"from": "chat"}', "--created-at", "2023-01-01")
    result = cli("log", "memory", "--text", "likes coffee", "--key", "pref", "--format", "jsonl")
    assert json.loads(result.stdout) == {"kind": "memory", "line": None, "id": 1, "key": "pref",
                                         "status": "updated"}
    (row,) = rows("memory")
    assert row["text"] == "likes coffee"
    assert row["importance"] == 0.9  # fields not given again are kept
    assert row["created_at"] == "2023-01-01T00:00:00.000Z"
    assert json.loads(row["metadata"]) == {"from": "chat"}


def test_vltm_pattern_knowledge(cli, rows):
    result = cli("log", "vltm", "--memory-id", "m-1", "--memory-type", "critical_failure",
                 "--compressed-content", "Friday deploys broke the build",
                 "--importance-score", "0.9", "--related-memories", '["m-0"]')
    assert result.stdout == "m-1\n", result.stderr
    row = rows("very_long_term_memories")[0]
    assert json.loads(row["compressed_content"]) == {"text": "Friday deploys broke the build"}
    assert row["related_memories"] == '["m-0"]' and row["strategic_value"] == 0.5
    assert cli("log", "pattern", "--pattern-id", "p-1", "--pattern-type", "temporal",
               "--pattern-description", "failures after midnight", "--confidence-score", "0.7",
               "--source-memory-id", "m-1").exit_code == 0
    assert cli("log", "knowledge", "--knowledge-domain", "ops", "--knowledge-summary",
               "deploy early", "--confidence-level", "0.8", "--source-patterns",
               '["p-1"]').exit_code == 0
    assert rows("memory_patterns")[0]["source_memory_id"] == "m-1"
    knowledge = rows("strategic_knowledge")[0]
    assert len(knowledge["knowledge_id"]) == 36 and knowledge["source_patterns"] == '["p-1"]'


def test_stdin_takes_the_originals_rows_in_one_batch(cli, rows):
    # Rows as the original stored them: JSON columns as JSON text, ids kept.
    original = [
        {"id": 7, "timestamp": "2024-01-01T00:00:00", "situation_type": "reflection",
         "prompt": "What went wrong?", "context": '{"run": 3}'},
        {"id": 8, "timestamp": "2024-01-02T00:00:00", "situation_type": "curiosity",
         "prompt": "Why?", "context": "{}"},
    ]
    result = cli("log", "situation", "--stdin", input=jsonl(*original))
    assert result.stdout == "7\n8\n"
    assert cli("log", "decision", "--stdin", input=jsonl(
        {"situation_id": 7, "raw_response": "retry"})).exit_code == 0
    assert [r["context"] for r in rows("situationlog")] == ['{"run": 3}', "{}"]
    # Importing the same rows again changes nothing.
    cli("log", "situation", "--stdin", input=jsonl(*original))
    assert len(rows("situationlog")) == 2


def test_stdin_memories_with_blank_lines(cli, rows):
    records = [{"text": f"memory {i}", "key": f"k{i}", "importance": i / 10} for i in range(5)]
    result = cli("log", "memory", "--stdin", "--format", "json",
                 input=jsonl(*records[:2]) + "\n" + jsonl(*records[2:]))
    out = json.loads(result.stdout)
    assert [r["line"] for r in out] == [1, 2, 4, 5, 6]
    assert [r["key"] for r in rows("memory")] == [f"k{i}" for i in range(5)]
    assert "5 inserted" in result.stderr


def test_csv_output(cli):
    result = cli("log", "memory", "--text", "x", "--format", "csv")
    assert result.stdout.splitlines() == ["kind,line,id,key,status", "memory,,1,,inserted"]


BAD_OPTIONS = [
    (["memory", "--text", "x", "--importance", "1.5"], "--importance"),
    (["memory", "--text", "x", "--metadata", "[1]"], "--metadata"),
    (["memory", "--text", "x", "--metadata", "{oops"], "not valid JSON"),
    (["memory", "--importance", "0.5"], "--text: Field required"),
    (["memory", "--text", "x", "--created-at", "yesterday"], "--created-at"),
    (["action", "--action-name", "a", "--status", "maybe"], "--status"),
    (["action", "--action-name", "a", "--params", "not json"], "--params: not valid JSON"),
    (["mood", "--mood-vector", '{"calm": "very"}'], "--mood-vector"),
    (["vltm", "--memory-type", "daydream", "--compressed-content", "x"], "--memory-type"),
    (["vltm", "--memory-type", "code_pattern", "--compressed-content", "x",
      "--strategic-value", "-0.1"], "--strategic-value"),
    (["vltm", "--memory-type", "code_pattern", "--compressed-content", "x",
      "--related-memories", '{"a": 1}'], "--related-memories"),
    (["pattern", "--pattern-type", "random", "--pattern-description", "x",
      "--confidence-score", "0.5"], "--pattern-type"),
    (["pattern", "--pattern-type", "causal", "--pattern-description", "x",
      "--confidence-score", "0.5", "--source-memory-id", "nope"], "source_memory_id"),
    (["knowledge", "--knowledge-domain", "d", "--knowledge-summary", "s",
      "--confidence-level", "2"], "--confidence-level"),
    (["decision", "--situation-id", "99", "--raw-response", "r"], "situation_id"),
    (["summary", "--summary-text", ""], "--summary-text"),
]


@pytest.mark.parametrize("args,expected", BAD_OPTIONS)
def test_bad_options_exit_2_with_one_line_and_write_nothing(cli, rows, args, expected):
    cli("init")
    result = cli("log", *args)
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr
    for table in ("memory", "actionlog", "moodlog", "very_long_term_memories",
                  "memory_patterns", "strategic_knowledge", "decisionlog", "summary"):
        assert rows(table) == []


BAD_LINES = [
    ('{"text": "ok"}\n{"text": "bad", "importance": 7}\n', "line 2: importance"),
    ('{"text": "ok"}\n{"text": "ok2"\n', "line 2: not valid JSON"),
    ('{"text": "ok"}\n[1, 2]\n', "line 2: expected a JSON object"),
    ('{"text": "ok"}\n\n{"txt": "typo"}\n', "line 3: txt: unknown field"),
    ('{"text": "ok"}\n{"text": "x", "metadata": "[]"}\n', "line 2: metadata"),
    ("", "no records on stdin"),
]


@pytest.mark.parametrize("data,expected", BAD_LINES)
def test_one_bad_stdin_line_rejects_the_whole_batch(cli, rows, data, expected):
    cli("log", "memory", "--text", "already here")
    result = cli("log", "memory", "--stdin", input=data)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert [r["text"] for r in rows("memory")] == ["already here"]


def test_decision_batch_with_a_missing_situation_writes_nothing(cli, rows):
    cli("log", "situation", "--situation-type", "t", "--prompt", "p")
    result = cli("log", "decision", "--stdin", input=jsonl(
        {"situation_id": 1, "raw_response": "fine"}, {"situation_id": 5, "raw_response": "no"}))
    assert result.exit_code == 2
    assert result.stderr == "error: line 2: situation_id: no situationlog row with id 5\n"
    assert rows("decisionlog") == []


def test_an_id_already_taken_is_updated_not_duplicated(cli, rows):
    cli("log", "action", "--id", "3", "--action-name", "first")
    result = cli("log", "action", "--id", "3", "--action-name", "second")
    assert result.exit_code == 0
    assert [(r["id"], r["action_name"]) for r in rows("actionlog")] == [(3, "second")]


def test_options_and_stdin_together_is_a_usage_error(cli):
    result = cli("log", "memory", "--stdin", "--text", "x", input='{"text": "y"}\n')
    assert result.exit_code == 2 and "not both" in result.stderr


def test_stdin_is_bounded_a_line_a_text_and_the_whole(cli, rows):
    """Each limit is one line naming it, exit 2, and nothing of the batch written."""

    def refused(result, expected):
        assert one_line_error(result) == expected

    cli("log", "memory", "--text", "kept")
    refused(cli("log", "memory", "--stdin", input=jsonl({"text": "a"}) + "x" * (17 << 20) + "\n"),
            "error: line 2: longer than 16 MiB, the most a line may hold\n")
    refused(cli("log", "memory", "--stdin", input=jsonl({"text": "y" * (5 << 20)})),
            "error: line 1: text: longer than 4 Mi characters, the most a text may hold\n")
    refused(cli("log", "summary", "--summary-text", "z" * (5 << 20)),
            "error: --summary-text: longer than 4 Mi characters, the most a text may hold\n")
    lines = "".join(jsonl({"text": f"{i} " + "w" * (3 << 20)}) for i in range(22))
    refused(cli("log", "memory", "--stdin", input=lines),
            "error: line 22: more than 64 MiB on stdin, the most one transaction holds: "
            "split it, or store rows of one table in batches with `ravana-db ingest "
            "jsonl - --table TABLE`\n")
    assert [r["text"] for r in rows("memory")] == ["kept"]


def test_the_readmes_pipe_recipes_work_as_written(tmp_path):
    """log --stdin takes the original's JSON-as-text, Python literals included (the function
    `ingest ravana` uses); the original's own file, quirks and all, goes in through
    `ingest ravana`. Both lines run as the README gives them."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    recipes = [line.split("#")[0].strip() for line in readme.splitlines()
               if "| ravana-db log action --stdin" in line
               or line.startswith("ravana-db ingest ravana ravana_agi_original.db")]
    assert len(recipes) == 2, recipes
    bin_folder = Path(sys.executable).parent
    make_original.make(tmp_path / "ravana_agi_original.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "logs.db")) as conn:
        conn.execute("CREATE TABLE actionlog (id INTEGER PRIMARY KEY, timestamp VARCHAR, "
                     "action_name VARCHAR, params VARCHAR, status VARCHAR, result VARCHAR)")
        conn.execute("""INSERT INTO actionlog VALUES (1, '2024-05-06 10:01:00', 'download',
                        "{'url': 'https://news.example', 'n': 2, 'ok': True}", 'success',
                        '{"new": 3}')""")
        conn.commit()
    env = {**os.environ, "PATH": f"{bin_folder}:{os.environ['PATH']}",
           "RAVANA_DB": str(tmp_path / "agent.db")}
    for recipe in recipes:
        run = subprocess.run(["sh", "-c", recipe], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, (recipe, run.stderr)
    with contextlib.closing(sqlite3.connect(tmp_path / "agent.db")) as conn:
        params = dict(conn.execute("SELECT action_name, params FROM actionlog"))
    assert json.loads(params["download"]) == {"url": "https://news.example", "n": 2, "ok": True}
    assert json.loads(params["search"]) == {"q": "chips"}  # from the original, through ingest
