"""The CLI's contract as a whole: output formats, exit codes and one-line errors, times,
arbitrary input, interrupts, concurrent writers and a reader that goes away."""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import cpu_seconds, jsonl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FORMATS = ["json", "jsonl", "csv", "table"]
RAVANA = [sys.executable, "-m", "ravana_db"]


def no_traceback(result_or_text):
    text = getattr(result_or_text, "stderr", result_or_text)
    assert "Traceback" not in text, text


def check_format(out, fmt, columns):
    """out is well-formed `fmt` holding `columns`; returns the records (None for a table)."""
    if fmt == "json":
        return json.loads(out)
    if fmt == "jsonl":
        return [json.loads(line) for line in out.splitlines()]
    if fmt == "csv":
        header, *records = list(csv.reader(io.StringIO(out)))
        assert header[:len(columns)] == columns
        return records
    assert all(c in out for c in columns) and "{" not in out and "}" not in out
    return None


# 1. Output formats through one emitter ------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_status_in_every_format(cli, fmt):
    cli("init")
    result = cli("status", "--format", fmt)
    assert result.exit_code == 0 and result.stderr == ""
    if fmt == "json":
        assert isinstance(json.loads(result.stdout), dict)
    elif fmt == "table":
        check_format(result.stdout, fmt, ["path", "schema_version", "rows.actionlog"])
    else:
        records = check_format(result.stdout, fmt, ["path", "size_bytes"])
        assert len(records) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_log_action_in_every_format(cli, fmt):
    cli("init")
    result = cli("log", "action", "--action-name", "search", "--format", fmt)
    assert result.exit_code == 0
    records = check_format(result.stdout, fmt, ["kind", "line", "id", "status"])
    if fmt in ("json", "jsonl"):
        assert records == [{"kind": "action", "line": None, "id": 1, "status": "inserted"}]
    elif fmt == "csv":
        assert records == [["action", "", "1", "inserted"]]
    assert result.stderr == "action: 1 inserted\n"  # the notice, never the data


@pytest.fixture
def memories(cli):
    cli("log", "memory", "--stdin", input=jsonl(
        {"key": "tea", "text": "The user prefers green tea in the morning."},
        {"key": "deploy", "text": "The Friday deploy broke the build."},
        {"key": "cat", "text": "The office cat sleeps on the server rack."}))


@pytest.mark.parametrize("fmt", FORMATS)
def test_query_in_every_format(cli, memories, fmt):
    result = cli("query", "green tea", "--top-n", "3", "--format", fmt)
    assert result.exit_code == 0 and result.stderr == ""
    # an 80-column table leaves out key (test_text.py: what a narrow table keeps)
    columns = ["kind", "id", "text"] if fmt == "table" else ["kind", "id", "key", "text"]
    records = check_format(result.stdout, fmt, columns)
    if fmt in ("json", "jsonl"):
        assert isinstance(records, list) and len(records) == 3
        assert all(isinstance(r, dict) for r in records) and records[0]["key"] == "tea"
    elif fmt == "csv":
        assert len(records) == 3 and records[0][2] == "tea"
    else:
        assert "green tea" in result.stdout


def test_json_flag_is_format_json(cli, memories, tmp_path):
    for args in (["status"], ["query", "deploy", "--no-touch"]):
        assert cli(*args, "--json").stdout == cli(*args, "--format", "json").stdout
    one, two = (["--db", str(tmp_path / name), "log", "action", "--action-name", "a"]
                for name in ("one.db", "two.db"))
    assert cli(*one, "--json", db=False).stdout == cli(*two, "--format", "json", db=False).stdout


def test_an_empty_result_is_an_empty_list_or_nothing(cli):
    cli("init")
    assert cli("query", "anything at all", "--format", "json").stdout == "[]\n"
    assert cli("query", "anything at all", "--format", "jsonl").stdout == ""


def test_quiet_silences_notices_but_not_data(cli, db_path):
    loud = cli("log", "action", "--action-name", "a")
    quiet = cli("--quiet", "log", "action", "--action-name", "b")
    assert (loud.stdout, loud.stderr) == (
        "1\n", f"action: 1 inserted\ncreated new database {db_path}\n")
    assert (quiet.stdout, quiet.stderr) == ("", "")  # ids are output too: --format asks
    cli("-q", "log", "summary", "--summary-text", "same")
    again = cli("-q", "log", "summary", "--summary-text", "same", "--format", "jsonl")
    assert json.loads(again.stdout)["status"] == "existing" and again.stderr == ""


# 2. Exit codes and one-line errors ----------------------------------------------------------

USAGE_ERRORS = [
    ["frobnicate"],
    ["status", "--bogus"],
    ["log", "frob"],
    ["log", "action", "--action-name", "a", "--format", "yaml"],
    ["query", "x", "--top-n", "many"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_exit_2(cli, args):
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    no_traceback(result)


OUR_ERRORS = [
    (["query", "x", "--mode", "bogus"], 2),
    (["query", "x", "--kind", "memory,bogus"], 2),
    (["query", "x", "--top-n", "0"], 2),
    (["query", "   "], 2),
    (["query", "x", "--min-similarity", "5"], 2),
    (["query", "x", "--mode", "fts", "--min-similarity", "0.5"], 2),
    (["query", "--like", "nope"], 2),
    (["query", "x", "--since", "yesterday"], 2),
    (["query", "x", "--since", "\u00b2d"], 2),  # "²".isdigit() is True, int("²") fails
    (["query", "x", "--until", "99999999999d"], 2),
    (["log", "action", "--action-name", "a", "--timestamp", "999999999d"], 2),
    (["log", "action", "--action-name", "a", "--id", str(2**63)], 2),
    (["log", "action", "--action-name", "a", "--stdin"], 2),
    (["--model", "no-such-model", "log", "memory", "--text", "x"], 2),
    (["consolidate", "--type", "hourly"], 2),
    (["consolidate", "--undo", "no-such-run"], 2),
    (["query", "x", "--recency", "soon"], 2),
]


@pytest.mark.parametrize("args,code", OUR_ERRORS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else str(v))
def test_our_errors_are_one_line_on_stderr(cli, rows, args, code):
    cli("init")
    result = cli(*args)
    assert (result.exit_code, result.stdout) == (code, ""), result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    no_traceback(result)
    assert rows("actionlog") == [] and rows("memory") == []


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_an_error_while_results_stream_leaves_stdout_empty(cli, memories, fmt):
    for args in (["query", "--like", "no-such-key"], ["--model", "other-model", "query", "x"]):
        result = cli(*args, "--format", fmt)
        assert (result.exit_code, result.stdout) == (2, ""), result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_errors_about_the_file_itself(cli, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello\n")
    foreign = sqlite3.connect(tmp_path / "foreign.db")
    foreign.execute("CREATE TABLE t (x)")
    foreign.close()
    cases = [
        (["--db", tmp_path / "missing.db", "status"], "no database at"),
        (["--db", tmp_path, "status"], "is a folder"),
        (["--db", tmp_path / "notes.txt", "status"], "is not a SQLite database"),
        (["--db", tmp_path / "foreign.db", "status"], "not a ravana-db one"),
        (["--db", tmp_path / "no" / "such" / "a.db", "log", "action", "--action-name", "a"],
         "does not exist"),
    ]
    for args, expected in cases:
        result = cli(*args, db=False)
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert expected in result.stderr
    monkeypatch.setenv("DATABASE_URL", "postgres://localhost/ravana")
    result = cli("init", db=False)  # a server is read, never written
    assert result.exit_code == 2 and result.stderr.startswith("error: DATABASE_URL")


# 3. Arbitrary JSON on stdin -----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=10)
FIELD = st.sampled_from(["id", "timestamp", "action_name", "params", "status", "result"])
VALUE = JSON | st.sampled_from(["2024-05-01", "7d", "success", "failure", '{"q": 1}', "[]"])
LINE = (JSON
        | st.dictionaries(FIELD | st.text(max_size=6), VALUE, max_size=6)
        | st.fixed_dictionaries({"action_name": st.text(min_size=1, max_size=10)},
                                optional={"id": st.integers(), "params": VALUE,
                                          "result": VALUE, "status": VALUE}))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
@given(lines=st.lists(LINE, min_size=1, max_size=3))
@example(lines=[{"action_name": "too big an id", "id": 2**63}])  # beyond SQLite's INTEGER
@example(lines=[{"action_name": "a", "two\nlines": 1}])  # a field name with a line break
def test_any_json_lines_exit_0_or_2_and_2_writes_nothing(cli, rows, lines):
    cli("init")
    before = rows("actionlog")
    result = cli("log", "action", "--stdin", input="".join(json.dumps(v) + "\n" for v in lines))
    assert result.exit_code in (0, 2), result.stderr
    no_traceback(result)
    if result.exit_code == 2:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert rows("actionlog") == before


# 4. Times -----------------------------------------------------------------------------------


@pytest.mark.parametrize("given,stored", [
    ("2024-05-01", "2024-05-01T00:00:00.000Z"),
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00.000Z"),
    ("2024-05-01T12:00:00.123456Z", "2024-05-01T12:00:00.123Z"),
])
def test_timestamps_are_stored_as_utc_with_milliseconds(cli, rows, given, stored):
    assert cli("log", "action", "--action-name", "a", "--timestamp", given).exit_code == 0
    assert rows("actionlog")[0]["timestamp"] == stored


def test_relative_ages_filter_queries(cli):
    cli("log", "memory", "--key", "old", "--text", "an old note", "--created-at", "2020-01-01")
    cli("log", "memory", "--key", "new", "--text", "a new note")
    keys = lambda *opts: [r["key"] for r in json.loads(  # noqa: E731
        cli("query", "note", "--mode", "fts", "--no-touch", *opts).stdout)]
    assert keys("--since", "7d") == ["new"]
    assert keys("--until", "7d") == ["old"]
    # 01:00 at +02:00 is 23:00 UTC the day before: the old note (00:00 UTC) is after it.
    assert sorted(keys("--since", "2020-01-01T01:00:00+02:00")) == ["new", "old"]


@pytest.mark.parametrize("args,option", [
    (["log", "action", "--action-name", "a", "--timestamp", "last tuesday"], "--timestamp"),
    (["log", "memory", "--text", "x", "--created-at", "2024-13-45"], "--created-at"),
    (["query", "x", "--since", "soon"], "since"),
    (["query", "x", "--until", "7 days"], "until"),
])
def test_garbage_times_exit_2_naming_the_option(cli, args, option):
    cli("init")
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {option}: ") and result.stderr.count("\n") == 1


# 5. Interrupts and concurrent writers (real processes) --------------------------------------


def test_interrupt_while_embedding_writes_nothing(tmp_path, db_path, rows):
    words = "river cloud deploy server tea night cache market agent latency".split()
    batch = tmp_path / "batch.jsonl"
    batch.write_text(jsonl(*({"text": f"memory {i}: " + " ".join(
        words[(i * 7 + j * 3) % len(words)] for j in range(20))} for i in range(10000))))
    with open(batch) as stdin:
        # Ctrl-C as a terminal sends it: a shell's background job (`make test &`) inherits
        # SIGINT ignored, and then Python keeps ignoring it.
        proc = subprocess.Popen([*RAVANA, "--db", str(db_path), "log", "memory", "--stdin"],
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(
                                    signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    # Imports and the model take a fraction of this CPU; past it, the process is embedding.
    while cpu_seconds(proc.pid) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err
    no_traceback(err)
    assert rows("memory") == [] and rows("doc") == []


def start_writer(tmp_path, db_path, tag, count=500):
    batch = tmp_path / f"{tag}.jsonl"
    batch.write_text(jsonl(*({"action_name": f"{tag}-{i}", "params": {"i": i}}
                             for i in range(count))))
    with open(batch) as stdin:
        return subprocess.Popen([*RAVANA, "--db", str(db_path), "log", "action", "--stdin"],
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


def test_two_writers_at_once_both_succeed(cli, tmp_path, db_path, rows):
    cli("init")
    procs = [start_writer(tmp_path, db_path, tag) for tag in ("a", "b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(err == "action: 500 inserted\n" for _, err in outputs)
    names = {r["action_name"] for r in rows("actionlog")}
    assert names == {f"{tag}-{i}" for tag in "ab" for i in range(500)}


# Each process imports everything first, then all open the new file at the same instant.
AT_ONCE = ("import runpy, sys, time; import ravana_db.cli, ravana_db.schema; "
           "time.sleep(max(0, float(sys.argv.pop(1)) - time.time())); "
           "runpy.run_module('ravana_db', run_name='__main__')")


def test_first_use_of_a_new_file_by_several_processes_at_once(tmp_path):
    for round in range(3):
        path, start = tmp_path / f"new{round}.db", time.time() + 2
        procs = [subprocess.Popen([sys.executable, "-c", AT_ONCE, str(start), "--db", str(path),
                                   "init"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
        said = sorted(err for _, err in outputs)
        assert said == [f"created new database {path}\n", *[f"up to date: {path}\n"] * 3]


# 6. A reader that goes away (`| head -1`) ---------------------------------------------------


@pytest.mark.parametrize("args", [
    *(["query", "deploy build", "--format", fmt] for fmt in FORMATS),
    ["query", "--stdin", "--top-n", "50"], ["status", "--format", "json"], ["--help"],
    ["query", "--help"]], ids=lambda args: " ".join(args))
def test_a_closed_stdout_ends_quietly_with_sigpipe(cli, db_path, args):
    """Every command, in every format, and --help, end as Unix tools do when the reader has
    gone: killed by SIGPIPE (the shell's exit status 141), nothing on stderr."""
    cli("log", "memory", "--stdin", input=jsonl(*(
        {"text": f"note {i} about the deploy, the build and the server"} for i in range(50))))
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    proc = subprocess.Popen([*RAVANA, "--db", str(db_path), *args], stdin=subprocess.PIPE,
                            stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    _, err = proc.communicate(b"deploy build\n" * 40, timeout=60)
    assert err.decode() == ""
    assert proc.returncode == -signal.SIGPIPE
