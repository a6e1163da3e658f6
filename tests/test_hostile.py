"""A property: whatever another client stores with plain `sqlite3` in any user table (lone
surrogates as JSON escapes and as raw bytes, NUL, control characters, extreme and garbage
dates, JSON nested thousands of levels deep, text where numbers go), every command still
answers: exit 0, or one `error:` line; never a traceback."""

import contextlib
import functools
import json
import re
import shutil
import sqlite3

import pytest
from conftest import jsonl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.tables import TABLES

# The user tables, and provenance (explain reads it; a client may write it too).
WRITTEN = (*TABLES, "provenance")

# A template with rows in every user table, so that each column has valid values to mix in.
LOGS = [
    ["memory", "--stdin"],
    ["summary", "--summary-text", "Markets fell on rate fears.", "--timestamp", "2024-01-01"],
    ["summary", "--summary-text", "Markets rose on rate hopes.", "--timestamp", "2024-01-02"],
    ["vltm", "--memory-id", "vltm-1", "--memory-type", "critical_failure", "--created-at",
     "2020-01-01", "--compressed-content", "Friday deploys broke the build. " * 12],
    ["pattern", "--pattern-id", "pat-1", "--pattern-type", "temporal", "--confidence-score",
     "0.7", "--pattern-description", "Failures cluster after midnight"],
    ["knowledge", "--knowledge-id", "k-1", "--knowledge-domain", "performance",
     "--knowledge-summary", "Batch writes in one transaction", "--confidence-level", "0.9"],
    ["situation", "--situation-type", "curiosity", "--prompt", "Why is the sky blue?"],
    ["decision", "--situation-id", "1", "--raw-response", "Read about Rayleigh scattering"],
    ["action", "--action-name", "search", "--params", '{"q": "deploy"}'],
    ["mood", "--mood-vector", '{"calm": 0.5}'],
    ["experiment", "--hypothesis", "Caching halves latency"],
]
MEMORIES = [{"key": f"m{i}", "text": text, "created_at": f"2024-01-0{i + 1}T10:00:00Z",
             "importance": 0.95, "memory_type": "critical_failure"}
            for i, text in enumerate(["The Friday deploy broke the build.",
                                      "The Friday deploy broke the build.",
                                      "The user prefers green tea."])]
OTHER_ROWS = """
INSERT INTO feed(url, title) VALUES ('https://example.com/feed', 'Example');
INSERT INTO article(title, link, guid, summary, feed_id, published)
    VALUES ('Volcano erupts', 'https://example.com/v', 'v-1', 'Flights grounded.', 1,
            '2024-01-01T00:00:00.000Z');
INSERT INTO event(description, keywords, cluster_id) VALUES ('Tariffs doubled', 'trade', 1);
INSERT INTO event_article(event_id, article_id) VALUES (1, 1);
INSERT INTO memory_consolidations(consolidation_id, consolidation_type) VALUES ('c-1', 'daily');
INSERT INTO consolidation_patterns(consolidation_id, pattern_id) VALUES ('c-1', 'pat-1');
INSERT INTO pattern_strategic_knowledge(pattern_id, knowledge_id) VALUES ('pat-1', 'k-1');
INSERT INTO consolidation_metrics(metric_id, consolidation_id, metric_name, metric_value)
    VALUES ('m-1', 'c-1', 'seconds', 1.5);
INSERT INTO memory_link(memory_id, related_id, reason) VALUES (1, 3, 'similar');
INSERT INTO memory_merge(consolidation_id, memory_id, survivor_id, role, before, after)
    VALUES ('c-1', 2, 1, 'merged', '{"merged_into": null}', '{"merged_into": 1}');
"""


class Raw(bytes):
    """Bytes stored as TEXT (`CAST(? AS TEXT)`): text that need not be UTF-8."""


DEEP = 3000
STRINGS = [
    "\ud800", "deploy \udfff tail", "visible\x00hidden", "\x1b]0;PWNED\x07\x1b[2J\x1b[31m",
    "\x9b31m\x7f\r", "=HYPERLINK(\"http://x\")", "-1", "\u202eevil", "", " ", "\n\t",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
]
TIMES = ["0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "0000-00-00", "garbage", "",
         "2024-02-30T25:61:00Z", "+10000-01-01", "1970-01-01", "2024-01-01T00:00:00+14:00",
         "-0001-06-01T00:00:00Z", "24-1-1"]


def plain_text():
    return st.text(st.characters(codec="utf-8"), max_size=30)


def hostile_text():
    return st.one_of(
        plain_text(),
        st.sampled_from([s for s in STRINGS if not re.search("[\ud800-\udfff]", s)]),
        st.sampled_from([Raw(b"deploy \xed\xa0\x80"), Raw(b"\xff\xfe bad"), Raw(b"a\x00b"),
                         Raw(b"\xc3")]),
        st.just("[" * DEEP + "]" * DEEP),
    )


def json_value():
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                       allow_infinity=False), st.sampled_from(STRINGS), plain_text())
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(STRINGS), inner,
                                                     max_size=3)), max_leaves=8)


def json_text(kind):
    """JSON text of the given json_type (object, array or any), hostile where it can be."""
    def shaped(value):
        if kind == "object" and not isinstance(value, dict):
            value = {"v": value}
        if kind == "array" and not isinstance(value, list):
            value = [value]
        return json.dumps(value)  # ASCII: a lone surrogate becomes a `\ud800` escape

    def deep(levels):
        inner = "[" * levels + "]" * levels
        return {"object": f'{{"d": {inner}}}', "array": f"[{inner}]"}.get(kind, inner)

    return st.one_of(json_value().map(shaped), st.sampled_from([deep(998), deep(DEEP)]),
                     st.just("not json"))


def number():
    """Numbers, SQLite's edge integers (a count summed past 2^63 overflows), and what a plain
    client may store in a numeric column: SQLite keeps 'lots' there as text."""
    return st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                     st.sampled_from([2**63 - 1, 2**63 - 10, -2**63, 1e308, -0.0]),
                     st.sampled_from(["lots", "high", "", " 7 ", "1e999", "0x10", "NaN"]),
                     hostile_text())


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "agent.db"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        for args in LOGS:
            result = CliRunner().invoke(app, ["--db", str(path), "log", *args],
                                        input=jsonl(*MEMORIES), catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(OTHER_ROWS)
    return path


@functools.cache
def columns(path):
    """{table: [(column, strategy)]}: each column's own values mixed with hostile ones."""
    out = {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for table in WRITTEN:
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                               [table]).fetchone()[0]
            out[table] = []
            for _, name, declared, _, _, pk in conn.execute(f"PRAGMA table_info([{table}])"):
                if pk and declared.upper() == "INTEGER":
                    continue  # rowid: SQLite gives one
                present = [v for (v,) in conn.execute(
                    f"SELECT DISTINCT [{name}] FROM [{table}] LIMIT 5")]
                json_check = re.search(
                    rf"json_valid\({name}\)(?: AND json_type\({name}\) = '(\w+)')?", sql)
                if json_check:
                    hostile = json_text(json_check[1])
                elif name in TIME_NAMES:
                    hostile = st.sampled_from(TIMES)
                elif declared.upper() in ("INTEGER", "REAL"):
                    hostile = number()
                else:
                    hostile = hostile_text()
                own = st.sampled_from(present) if present else st.none()
                out[table].append((name, st.one_of(own, own, hostile)))
    return out


TIME_NAMES = {"timestamp", "created_at", "last_accessed", "promoted_at", "discovered_at",
              "last_validated", "consolidation_date", "last_updated", "updated_at",
              "fetched_at", "published", "last_fetched", "next_attempt"}


def insert(path, table, row):
    """One row through Python's own sqlite3 (foreign keys off, as a careless client has them);
    a row the schema refuses (a CHECK, NOT NULL, UNIQUE) is simply not stored."""
    names = ", ".join(f"[{n}]" for n in row)
    marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, Raw) else "?" for v in row.values())
    with contextlib.closing(sqlite3.connect(path)) as conn:
        try:
            conn.execute(f"INSERT INTO [{table}]({names}) VALUES ({marks})",
                         [bytes(v) if isinstance(v, Raw) else v for v in row.values()])
            conn.commit()
            return True
        except sqlite3.Error:
            return False


COMMANDS = [
    ["query", "deploy build", "--mode", "hybrid", "--format", "json"],
    ["query", "deploy", "--mode", "fts", "--format", "table"],
    ["query", "the user", "--mode", "vector", "--format", "csv"],
    ["query", "--stdin", "--format", "jsonl"],
    ["consolidate", "--type", "event_triggered", "--format", "json"],
    ["compress", "--format", "json"],
    ["export", "all", "--output", "exported", "--force"],
    ["reindex", "--format", "json"],
    ["query", "deploy", "--format", "json"],
    ["timeline", "--limit", "0", "--format", "jsonl"],
    ["timeline", "--since", "30d", "--format", "table"],
    ["explain", "memory:1", "--format", "json"],
    ["explain", "article:1", "--format", "table"],
    ["status", "--format", "json"],
]
STDIN = 'deploy\n\x1b[2J\n{"text": "tea", "mode": "fts"}\n'  # for `query --stdin`


def answers_or_one_line(result, args):
    assert "Traceback" not in result.stderr, (args, result.stderr)
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)


# No shrinking: each example runs every command (seconds); the failing row is in the report.
@settings(max_examples=10, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_no_row_another_client_stores_breaks_a_command(template, tmp_path_factory, data):
    strategies = columns(template)
    folder = tmp_path_factory.mktemp("example")
    path = folder / "agent.db"
    shutil.copy(template, path)
    stored = 0
    for table in WRITTEN:
        for _ in range(2):
            row = {name: data.draw(strategy, label=f"{table}.{name}")
                   for name, strategy in strategies[table]}
            stored += insert(path, table, row)
    assert stored  # most rows get in
    runner = CliRunner()
    with contextlib.chdir(folder):
        for args in COMMANDS:
            result = runner.invoke(app, ["--db", str(path), *args], catch_exceptions=False,
                                   input=STDIN)
            answers_or_one_line(result, args)


def test_vectors_another_client_rewrote_break_no_search(template, tmp_path):
    """doc_vec blobs a plain client replaced (text, a stub, a float32 vector of the old
    layout) read as no vector: searches, --distinct, --like, events and consolidation answer."""
    path = tmp_path / "agent.db"
    shutil.copy(template, path)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        ids = [r[0] for r in conn.execute("SELECT doc_id FROM doc_vec ORDER BY doc_id")]
        for doc_id, blob in zip(ids, ["text", b"\x01\x02", bytes(384 * 4)]):
            conn.execute("UPDATE doc_vec SET embedding = ? WHERE doc_id = ?", [blob, doc_id])
    runner = CliRunner()
    for args in [*COMMANDS, ["query", "deploy", "--distinct", "--format", "json"],
                 ["query", "--like", "memory:1", "--format", "json"],
                 ["ingest", "events", "--format", "json"]]:
        result = runner.invoke(app, ["--db", str(path), *args], catch_exceptions=False,
                               input=STDIN)
        answers_or_one_line(result, args)
        if args[0] == "query" and "--like" not in args:
            assert result.exit_code == 0, (args, result.stderr)
