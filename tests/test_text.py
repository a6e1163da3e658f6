"""Stored text on its way out (ravana_db/text.py): text other clients wrote that is not valid
UTF-8 or holds lone surrogates, control characters on a terminal, formulas in CSV; and the
text `log` and `ingest jsonl` refuse (NUL, lone surrogates)."""

import contextlib
import csv
import io
import json
import re
import sqlite3

import pytest
from conftest import copy_db, jsonl, one_line_error
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.tables import TABLES

NOTICE = "note: stored text that is not valid UTF-8"
VLTM_ID = "aaaaaaaa-2222-3333-4444-555555555555"
MEMORIES = [
    {"key": "deploy-1", "text": "Deploys on Friday broke the build.", "importance": 0.9,
     "created_at": "2024-01-01T10:00:00Z"},
    {"key": "deploy-2", "text": "Deploys on Friday broke the build.", "importance": 0.8,
     "created_at": "2024-01-02T10:00:00Z"},
    {"key": "tea", "text": "The user prefers green tea and dislikes coffee.",
     "created_at": "2024-01-03T10:00:00Z"},
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Memories, summaries and a very-long-term memory logged and embedded by the CLI."""
    path = tmp_path_factory.mktemp("text-template") / "agent.db"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        for args, records in (
                (["log", "memory", "--stdin"], MEMORIES),
                (["log", "summary", "--stdin"], [
                    {"summary_text": f"Markets fell on rate fears, day {i}.",
                     "timestamp": f"2024-01-0{i}T00:00:00Z"} for i in range(1, 4)]),
                (["log", "vltm", "--stdin"], [
                    {"memory_id": "bbbbbbbb-2222-3333-4444-555555555555",
                     "memory_type": "code_pattern", "created_at": "2020-01-01T00:00:00Z",
                     "compressed_content": {"text": "Retry the flaky deploy step twice."}}])):
            result = CliRunner().invoke(app, ["--db", str(path), *args], input=jsonl(*records),
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def agent(template, db_path):
    return copy_db(template, db_path)


def plain(path, *statements):
    """Run statements through Python's own sqlite3, as another client would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.commit()


def stored(path):
    """Every user table's rows and the index's texts, read as bytes (another client's view)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.text_factory = bytes
        return {t: conn.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall()
                for t in (*TABLES, "doc")}


def doc_texts(path):
    """The search index's texts, as bytes."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [t for (t,) in conn.execute("SELECT CAST(text AS BLOB) FROM doc")]


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def notices(result):
    return [line for line in result.stderr.splitlines() if line.startswith(NOTICE)]


# Item 1: lone surrogates and invalid UTF-8 stored by other clients ---------------------------

SURROGATE_VLTM = (
    "INSERT INTO very_long_term_memories(memory_id, memory_type, compressed_content, created_at) "
    f"VALUES ('{VLTM_ID}', 'code_pattern', '{{\"s\": \"deploy \\ud800\", \"log\": "
    f"\"{'The deploy step failed and was retried. ' * 20}\"}}', '2020-01-01T00:00:00Z')")


@pytest.mark.parametrize("mode", ["hybrid", "fts", "vector"])
def test_a_json_surrogate_written_by_sqlite3_breaks_no_query(cli, agent, mode):
    plain(agent, SURROGATE_VLTM)
    ok(cli("log", "memory", "--text", "A write embeds what waits"))
    result = ok(cli("query", "deploy", "--mode", mode, "--kind", "vltm", "--format", "json"))
    found = {r["id"]: r["text"] for r in json.loads(result.stdout)}
    assert found[VLTM_ID].startswith("deploy \ufffd\ufffd\ufffd The deploy step")
    assert len(notices(result)) == 1


def test_every_command_reads_a_json_surrogate_and_reindex_heals_the_index(cli, agent, rows):
    plain(agent, SURROGATE_VLTM)
    before = stored(agent)
    for args in (["log", "memory", "--text", "Another memory about deploys"],
                 ["query", "deploy", "--format", "jsonl"],
                 ["export", "all", "--output", "exported"],
                 ["consolidate", "--type", "event_triggered", "--format", "json"],
                 ["compress", "--format", "json"]):
        result = ok(cli(*args))
        assert len(notices(result)) <= 1, result.stderr
    assert all(r["success"] for r in rows("memory_consolidations"))
    # nothing of what was stored before is lost
    after = stored(agent)
    assert len(after["memory"]) == len(before["memory"]) + 1
    assert {r[0] for r in after["very_long_term_memories"]} >= {
        r[0] for r in before["very_long_term_memories"]}



def test_reindex_heals_the_index_of_a_json_surrogate(cli, agent):
    plain(agent, SURROGATE_VLTM)
    assert len(notices(ok(cli("reindex")))) == 1
    for text in doc_texts(agent):
        text.decode("utf-8")  # the index holds only valid UTF-8 now
    result = ok(cli("query", "deploy", "--mode", "fts", "--format", "json"))
    assert notices(result) == [] and result.stderr == ""
    second = ok(cli("reindex", "--format", "json"))
    assert json.loads(second.stdout)["docs_updated"] == 0  # healed once, not every run


def test_compress_of_a_memory_holding_a_json_surrogate_stores_what_it_can(cli, agent, rows):
    plain(agent, SURROGATE_VLTM)
    result = ok(cli("compress", "--format", "json"))
    assert len(notices(result)) == 1
    (stored,) = rows("SELECT compressed_content FROM very_long_term_memories "
                     "WHERE memory_id = ?", VLTM_ID)
    assert "deploy \ufffd" in json.dumps(json.loads(stored["compressed_content"]),
                                         ensure_ascii=False)


def test_text_that_is_not_utf8_in_a_user_table_is_read_with_replacement(cli, agent):
    plain(agent, "UPDATE memory SET text = CAST(x'6465706c6f7920eda080' AS TEXT) "
                 "WHERE key = 'tea'")
    for args in (["query", "deploy", "--mode", "fts", "--format", "json"],
                 ["export", "memory", "--format", "csv"],
                 ["reindex"],
                 ["consolidate", "--type", "event_triggered", "--format", "json"]):
        result = ok(cli(*args))
        assert len(notices(result)) == 1, (args, result.stderr)
    assert "deploy \ufffd" in ok(cli("export", "memory", "--format", "jsonl")).stdout


def test_consolidate_merges_memories_whose_metadata_holds_a_json_surrogate(cli, agent, rows):
    plain(agent, """UPDATE memory SET metadata = '{"n": "\\ud800"}'""")
    result = ok(cli("consolidate", "--type", "event_triggered", "--format", "json"))
    assert len(notices(result)) == 1
    assert json.loads(result.stdout)["merged"] == 1
    assert all(r["success"] for r in rows("memory_consolidations"))
    merged = rows("SELECT key FROM memory WHERE merged_into IS NOT NULL")
    assert [m["key"] for m in merged] == ["deploy-2"]


@pytest.mark.parametrize("metadata", [{"n": "\ud800"}, '{"n": "\\ud800"}'])
@pytest.mark.parametrize("command", [["log", "memory", "--stdin"],
                                     ["ingest", "jsonl", "-", "--table", "memory"]])
def test_log_and_ingest_jsonl_both_refuse_a_lone_surrogate(cli, agent, command, metadata):
    before = stored(agent)
    line = json.dumps({"text": "A memory with odd metadata", "metadata": metadata})
    error = one_line_error(cli(*command, input=line + "\n"))
    assert "line 1: metadata: not valid Unicode" in error and "surrogate" in error
    assert stored(agent) == before


# Item 11: NUL in a record's text is refused ------------------------------------------------

@pytest.mark.parametrize("command, record", [
    (["log", "memory", "--stdin"], {"text": "visible\u0000hidden"}),
    (["log", "memory", "--stdin"], {"text": "fine", "metadata": {"note": "a\u0000b"}}),
    (["log", "memory", "--stdin"], {"text": "fine", "metadata": '{"note": "a\\u0000b"}'}),
    (["log", "vltm", "--stdin"], {"memory_type": "code_pattern",
                                  "compressed_content": "visible\u0000hidden"}),
    (["log", "action", "--stdin"], {"action_name": "search\u0000", "params": {}}),
    (["ingest", "jsonl", "-", "--table", "memory"], {"text": "visible\u0000hidden"}),
    (["ingest", "jsonl", "-", "--table", "actionlog"],
     {"action_name": "search", "params": '{"q": "a\\u0000b"}', "status": "success",
      "timestamp": "2024-01-01T00:00:00Z"}),
    (["ingest", "jsonl", "-", "--table", "summary"], {"summary_text": "a\u0000b"}),
])
def test_nul_in_a_record_is_refused_and_nothing_is_written(cli, agent, command, record):
    before = stored(agent)
    error = one_line_error(cli(*command, input=jsonl(record)))
    assert error.startswith("error: line 1: ") and "NUL" in error, error
    assert stored(agent) == before


@pytest.mark.parametrize("args", [
    ["log", "memory", "--text", "visible\u0000hidden"],
    ["log", "memory", "--text", "fine", "--key", "k\u0000"],
    ["log", "situation", "--situation-type", "t", "--prompt", "p\u0000"],
])
def test_nul_in_an_option_is_refused(cli, agent, args):
    before = stored(agent)
    error = one_line_error(cli(*args))
    assert "NUL" in error and error.startswith("error: --"), error
    assert stored(agent) == before


# Item 8: CSV cells that a spreadsheet would run as formulas --------------------------------

FORMULAS = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTab first",
            "\rCR first"]


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
def formulas(cli, agent):
    """Memories whose text starts like a formula, and negative numbers that must stay numbers."""
    ok(cli("log", "memory", "--stdin", input=jsonl(*(
        {"key": f"f{i}", "text": f"{t} deploy"} for i, t in enumerate(FORMULAS)))))
    plain(agent, "INSERT INTO memory_consolidations(consolidation_id, consolidation_type, "
                 "compression_ratio) VALUES ('c-1', 'daily', -1.5)",
          "INSERT INTO consolidation_metrics(metric_id, consolidation_id, metric_name, "
          "metric_value, metric_unit) VALUES ('m-1', 'c-1', '-delta', -2, '=A1')")
    return agent


def test_export_csv_neutralises_formulas_and_keeps_numbers(cli, formulas, tmp_path):
    texts = {r["key"]: r["text"] for r in csv_rows(ok(cli("export", "memory", "-f", "csv")).stdout)}
    for i, t in enumerate(FORMULAS):
        assert texts[f"f{i}"] == f"'{t} deploy"
    assert texts["tea"] == MEMORIES[2]["text"]
    (metric,) = csv_rows(ok(cli("export", "consolidation_metrics", "-f", "csv")).stdout)
    assert (metric["metric_name"], metric["metric_value"], metric["metric_unit"]) == (
        "'-delta", "-2.0", "'=A1")
    ok(cli("export", "all", "--output", tmp_path / "all", "--format", "csv"))
    (run,) = csv_rows((tmp_path / "all" / "memory_consolidations.csv").read_text())
    assert run["compression_ratio"] == "-1.5"
    (metric,) = csv_rows((tmp_path / "all" / "consolidation_metrics.csv").read_text())
    assert metric["metric_unit"] == "'=A1"
    # JSON stays exact
    exported = [json.loads(line) for line in ok(cli("export", "memory")).stdout.splitlines()]
    assert {r["key"]: r["text"] for r in exported}["f0"] == f"{FORMULAS[0]} deploy"


def test_query_csv_neutralises_formulas(cli, formulas):
    found = csv_rows(ok(cli("query", "deploy", "--mode", "fts", "-n", "20", "-f", "csv")).stdout)
    texts = {r["key"]: r["text"] for r in found}
    assert {texts[f"f{i}"] for i in range(len(FORMULAS))} == {f"'{t} deploy" for t in FORMULAS}
    assert all(not r["score"].startswith("'") for r in found)
    lines = csv_rows(ok(cli("query", "--stdin", "--mode", "fts", "-n", "20", "-f", "csv",
                            input="deploy\n")).stdout)
    assert {r["text"] for r in lines if r["key"] == "f1"} == {"'+1+1 deploy"}
    exact = json.loads(ok(cli("query", "deploy", "--mode", "fts", "-n", "20", "-f", "json")).stdout)
    assert {r["key"]: r["text"] for r in exact}["f1"] == "+1+1 deploy"


# Item 9: control characters are shown escaped on a terminal ---------------------------------

HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mred\x9b1m\x7f\rover\x00"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_query_table_shows_control_characters_escaped(cli, agent, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    plain(agent, f"UPDATE memory SET text = 'deploy {HOSTILE}' || char(0) || 'tail' "
                 "WHERE key = 'tea'".replace(HOSTILE, HOSTILE.replace("\x00", "")))
    table = ok(cli("query", "deploy", "--mode", "fts", "--format", "table"))
    assert not CONTROL.search(table.stdout), repr(table.stdout)
    assert ("deploy \\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mred\\x9b1m\\x7f\\x0dover\\x00tail"
            in table.stdout)
    stdin = ok(cli("query", "--stdin", "--mode", "fts", "--format", "table",
                   input="deploy \x1b[2J\n"))
    assert not CONTROL.search(stdin.stdout) and "1: deploy \\x1b[2J" in stdin.stdout
    # data formats stay exact
    exact = json.loads(ok(cli("query", "deploy", "--mode", "fts", "--format", "json")).stdout)
    assert {r["key"]: r["text"] for r in exact}["tea"] == f"deploy {HOSTILE}tail"


def test_the_feeds_report_shows_a_hostile_title_escaped(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    feed = tmp_path / "hostile.xml"
    feed.write_text(
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>&#27;]0;PWNED&#7;&#27;[2J&#27;[31mNews</title><link>http://x.example/</link>"
        "<item><title>One</title><guid>1</guid><link>http://x.example/1</link></item>"
        "</channel></rss>")
    result = ok(cli("ingest", "feeds", str(feed), "--no-events"))
    assert not CONTROL.search(result.stderr), repr(result.stderr)
    assert "PWNED" in result.stderr


def test_messages_quoting_stored_text_show_control_characters_escaped(cli, agent):
    plain(agent, "INSERT INTO very_long_term_memories(memory_id, memory_type, compressed_content,"
                 " created_at) VALUES ('odd' || char(27) || ']0;PWNED' || char(7), 'code_pattern',"
                 " '{\"_compressed\": 5}', '2020-01-01T00:00:00Z')")
    result = ok(cli("compress", "--format", "json"))
    assert "memory odd\\x1b]0;PWNED\\x07: left as it is" in result.stderr
    assert not CONTROL.search(result.stderr), repr(result.stderr)


# Item 23 (query): a table that fits 80 columns, and "no results" ---------------------------

@pytest.mark.parametrize("extra", [[], ["--recency", "30d", "--importance", "0.5"]])
def test_query_table_keeps_text_and_whole_scores_in_80_columns(cli, agent, monkeypatch, extra):
    monkeypatch.setenv("COLUMNS", "80")
    args = ["query", "deploy build", "--top-n", "4", *extra]
    table = ok(cli(*args, "--format", "table")).stdout
    exact = json.loads(ok(cli(*args, "--format", "json")).stdout)
    assert max(map(len, table.splitlines())) <= 80, table
    assert "…" not in table, table
    words = " ".join(table.split())
    for r in exact:
        assert f"{r['score']:.4f}" in words, (r, table)
        for word in r["text"].split()[:4]:
            assert word in words, (word, table)
    assert any(r["kind"] == "vltm" for r in exact)
    # the vltm's whole id is there, folded over lines of its column
    lines = [line.split() for line in table.splitlines()]
    vltm = next(i for i, cells in enumerate(lines) if cells[:1] == ["vltm"])
    folded = lines[vltm][1] + "".join(
        cells[0] for cells in lines[vltm + 1:vltm + 4] if cells and "-" in cells[0]
        and not cells[0][0].isalpha())
    assert folded.startswith("bbbbbbbb-2222-3333-4444-5555555555"[:len(folded)])


def test_a_wide_terminal_shows_every_part_of_the_score(cli, agent, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    header = ok(cli("query", "deploy", "--format", "table")).stdout.splitlines()[1].split()
    assert header == ["kind", "id", "key", "text", "date", "score", "bm25#", "vec#", "sim"]


@pytest.mark.parametrize("mode", ["hybrid", "fts", "vector"])
def test_a_query_without_results_says_so_on_stderr(cli, agent, mode):
    strict = [] if mode == "fts" else ["--min-similarity", "0.99"]
    args = ["query", "zzqx", "--mode", mode, *strict]
    table = ok(cli(*args, "--format", "table"))
    assert (table.stdout, table.stderr) == ("", "no results\n")
    assert ok(cli(*args, "--format", "json")).stdout == "[]\n"
    assert ok(cli("--quiet", *args, "--format", "table")).stderr == ""
    stdin = ok(cli("query", "--stdin", "--mode", mode, *strict, "--format", "table",
                   input="zzqx\n"))
    assert (stdin.stdout, stdin.stderr) == ("", "1: zzqx: no results\n")


# JSON nested as deep as SQLite allows, deeper than Python's json reads ----------------------

def test_json_nested_1000_levels_is_one_line_or_skipped_never_a_traceback(cli, agent, rows):
    deep = '{"d": ' + "[" * 998 + "]" * 998 + "}"
    plain(agent, f"UPDATE memory SET metadata = '{deep}' WHERE key = 'tea'",
          f"UPDATE very_long_term_memories SET compressed_content = '{deep}'")
    result = ok(cli("compress", "--format", "json"))
    assert "left as it is (a stored JSON value is nested deeper than Python can read" in \
        result.stderr
    plain(agent, f"UPDATE memory SET metadata = '{deep}'")  # the duplicates' merge reads it
    result = cli("consolidate", "--type", "event_triggered")
    if result.exit_code:  # it cannot merge what it cannot read: one line, no traceback
        one_line_error(result, code=1)
    for args in (["export", "all", "--output", "exported"], ["reindex"],
                 ["query", "deploy", "--format", "json"]):
        ok(cli(*args))


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "table"])
def test_a_blob_another_client_stored_in_a_text_column_is_shown_not_a_traceback(
        cli, agent, fmt, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # wide enough for the key column
    plain(agent, "UPDATE memory SET key = x'00626c6f62' WHERE key = 'tea'")
    result = ok(cli("query", "green tea", "--kind", "memory", "--format", fmt))
    if fmt in ("json", "jsonl"):
        found = [json.loads(line) for line in result.stdout.splitlines()] if fmt == "jsonl" \
            else json.loads(result.stdout)
        assert {"$base64": True, "encoded": "AGJsb2I="} in [r["key"] for r in found]
    else:
        assert "AGJsb2I=" in result.stdout
