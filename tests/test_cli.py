"""The command line as a whole: help for every command, the README names them all."""

import atexit
import contextlib
import importlib.util
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import copy_db, contents, jsonl, one_line_error, refused_line
from ravana_db.cli import EXAMPLES, app
from ravana_db.models import KINDS

README = (Path(__file__).parent.parent / "README.md").read_text()
TOP = ["init", "status", "log", "query", "reindex", "ingest", "consolidate", "compress",
       "export"]
GROUPS = {"log": list(KINDS), "ingest": ["feeds", "events", "jsonl", "dir", "ravana"],
          "export": ["backup", "feeds"]}
COMMANDS = [[c] for c in TOP if c not in GROUPS] + [[g, c] for g in GROUPS for c in GROUPS[g]]
RAVANA = [sys.executable, "-m", "ravana_db"]


def test_top_level_help_lists_every_command(cli):
    result = cli("--help", db=False)
    assert result.exit_code == 0
    listed = re.findall(r"^  (\w+) ", result.stdout, re.M)
    assert set(TOP) <= set(listed)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example_and_is_in_the_readme(cli, command):
    result = cli(*command, "--help", db=False)
    assert result.exit_code == 0
    assert "Example: ravana-db" in result.stdout or "Not built yet" in result.stdout
    assert f"ravana-db {' '.join(command)}" in README


def test_consolidate_on_a_missing_file_is_one_line(cli, db_path):
    result = cli("consolidate")
    assert result.exit_code == 2 and not db_path.exists()
    assert result.stderr == f"error: no database at {db_path}: run `ravana-db init` or pass " \
                            "--db PATH\n"


def test_module_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(tmp_path / "m.db"),
                          "init"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("m.db")


def test_a_table_is_printed_on_a_terminal_only(cli):
    cli("log", "memory", "--text", "hello")
    out = cli("status")  # CliRunner's stdout is not a terminal: JSON
    assert out.stdout.lstrip().startswith("{")
    table = cli("status", "--format", "table").stdout
    assert "rows.memory" in table and "{" not in table


def test_query_results_as_a_table(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # every column (80 columns: see test_text.py)
    cli("log", "memory", "--key", "tea", "--text", "The user prefers green tea.")
    table = cli("query", "tea", "--format", "table").stdout
    assert table.split()[:9] == ["kind", "id", "key", "text", "date", "score", "bm25#", "vec#",
                                 "sim"]
    assert "green tea" in table and "memory" in table


# No traceback for any input: one line on stderr, the right exit code, nothing written --------


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A small file written by the CLI, its texts embedded, a situation for `log decision`
    (built once per module)."""
    path = tmp_path_factory.mktemp("cli-template") / "agent.db"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        for args, stdin in (
                (["log", "memory", "--stdin"], jsonl(
                    {"key": "tea", "text": "The user prefers green tea."},
                    {"key": "deploy", "text": "The Friday deploy broke the build."})),
                (["log", "situation", "--situation-type", "curiosity", "--prompt", "Why?"],
                 None)):
            result = CliRunner().invoke(app, ["--db", str(path), *args], input=stdin,
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def agent(template, db_path):
    """The template, copied to the `cli` fixture's file."""
    return copy_db(template, db_path)


@pytest.mark.parametrize("args,stdin", [
    (["query", "--stdin"], '{"text": "x", "top_n": 1e308}\n'),
    (["query", "--stdin"], '{"text": "x", "top_n": 4611686018427387904}\n'),
    (["query", "x", "--top-n", "4611686018427387904"], None),
    (["query", "x", "--top-n", "4611686018427387904", "--mode", "fts"], None),
], ids=["stdin-1e308", "stdin-2**62", "arg-2**62", "arg-2**62-fts"])
def test_a_huge_top_n_is_one_line(cli, agent, args, stdin):
    before = contents(agent)
    check = refused_line if stdin else one_line_error
    assert "top-n" in check(cli(*args, input=stdin))
    assert contents(agent) == before


def test_a_query_argument_that_is_not_utf8_is_one_line(agent):
    before = contents(agent)
    for mode in ("hybrid", "vector", "fts"):
        done = subprocess.run([*RAVANA, "--db", str(agent), "query", b"caf\xe9", "--mode", mode],
                              capture_output=True, check=False)
        assert one_line_error(done) == "error: text: not valid UTF-8 text\n"
    assert contents(agent) == before


@pytest.mark.parametrize("args,line", [
    (["query", "--stdin"], b"caf\xe9\n"),
    (["query", "--stdin"], b'{"text": "caf\xe9"}\n'),
    (["query", "--stdin"], b'{"text": "caf\\udce9"}\n'),  # a lone surrogate, escaped in JSON
    (["log", "memory", "--stdin"], b'{"text": "caf\xe9"}\n'),
    (["log", "memory", "--stdin"], b'{"text": "caf\\udce9"}\n'),
    (["log", "memory", "--stdin"], b'{"text": "fine"}\n{"text": "caf\xe9"}\n'),
], ids=["query-raw", "query-json", "query-escaped", "log-json", "log-escaped", "log-second"])
def test_a_stdin_line_that_is_not_utf8_is_one_line(cli, agent, args, line):
    before = contents(agent)
    check = refused_line if args[0] == "query" else one_line_error
    stderr = check(cli(*args, input=line))
    assert stderr.startswith(f"error: line {len(line.splitlines())}: ")
    assert contents(agent) == before


@pytest.mark.parametrize("args", [["status"], ["query", "tea", "--no-touch"],
                                  ["log", "action", "--action-name", "a"],
                                  ["reindex", "--fts"]], ids=" ".join)
def test_json_flag_and_another_format_disagree(cli, agent, args):
    before = contents(agent)
    for fmt in ("csv", "jsonl", "table"):
        assert one_line_error(cli(*args, "--json", "--format", fmt)) == \
            f"error: --json and --format {fmt} disagree: give one of them\n"
    assert contents(agent) == before
    agreed = cli(*args, "--json", "--format", "json")
    assert agreed.exit_code == 0, agreed.stderr
    json.loads(agreed.stdout)


def test_db_is_taken_after_the_command(cli, tmp_path):
    path = tmp_path / "f.db"
    logged = cli("log", "memory", "--text", "The user prefers green tea.", "--db", path,
                 db=False)
    assert (logged.exit_code, logged.stdout) == (0, "1\n"), logged.stderr
    found = cli("query", "green tea", "--no-touch", "--db", path, db=False)
    assert [r["text"] for r in json.loads(found.stdout)] == ["The user prefers green tea."]
    shown = cli("status", "--db", path, db=False)
    assert shown.exit_code == 0 and json.loads(shown.stdout)["path"] == str(path)
    assert json.loads(shown.stdout)["rows"]["memory"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["f.db"]


def test_db_after_the_command_wins_over_db_before_it(cli, tmp_path):
    before, after = tmp_path / "before.db", tmp_path / "after.db"
    logged = cli("--db", before, "log", "memory", "--text", "owls", "--db", after, db=False)
    assert logged.exit_code == 0, logged.stderr
    assert after.exists() and not before.exists()
    shown = cli("--db", before, "status", "--db", after, db=False)
    assert json.loads(shown.stdout)["path"] == str(after)
    # A bad value after the command is not rescued by a good one before it.
    assert one_line_error(cli("--db", after, "status", "--db", "", db=False)).startswith(
        "error: --db names no file")


def walk(group, path=()):
    """Every command of a group, depth first, as argv paths."""
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):  # a group (typer vendors its own click)
            yield from walk(command, (*path, name))
        else:
            yield (*path, name)


WALKED = list(walk(typer.main.get_command(app)))
LATER = set()
FIXTURES = Path(__file__).parent.parent / "fixtures"
FEED = str(FIXTURES / "feeds" / "rss092.xml")
LOAD = FIXTURES / "load" / "export"  # what `export all` wrote from a small file


def valid_args(command):
    """Arguments that make the command do its job: the help example of each `log KIND`."""
    if command[0] == "log":
        return shlex.split(EXAMPLES[command[1]].split("   (or:")[0])[3:]
    return {("query",): ["green tea", "--no-touch"],
            ("ingest", "feeds"): [FEED, "--no-events"],
            ("ingest", "jsonl"): [LOAD / "memory.jsonl", "--table", "memory"],
            ("ingest", "dir"): [LOAD],
            ("ingest", "ravana"): [original_db()],
            ("export", "backup"): ["copy.db"]}.get(tuple(command), [])


def original_db():
    """A database of the original system (fixtures/ravana/make_original.py), made once."""
    path = Path(tempfile.gettempdir()) / f"ravana-original-{os.getpid()}.db"
    if not path.exists():
        spec = importlib.util.spec_from_file_location(
            "make_original", FIXTURES / "ravana" / "make_original.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.make(path)
        atexit.register(path.unlink, missing_ok=True)
    return path


def test_the_walk_finds_every_command():
    assert sorted(WALKED) == sorted(tuple(c) for c in COMMANDS)


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", WALKED, ids=" ".join)
def test_every_command_gives_one_line_for_a_bad_database_path(cli, tmp_path, command, where):
    for bad, expected in ((Path("/nonexistent-folder/x.db"), "/nonexistent-folder"),
                          (tmp_path, "is a folder")):
        db = ["--db", str(bad)]
        argv = ([*db, *command] if where == "before" else [*command, *db]) + valid_args(command)
        stderr = one_line_error(cli(*argv, db=False), 1 if command in LATER else 2)
        assert ("not built yet" if command in LATER else expected) in stderr
    assert not Path("/nonexistent-folder").exists() and list(tmp_path.iterdir()) == []


# `init`, `log` and `ingest` create a missing file; the later commands do not open one.
@pytest.mark.parametrize("command", [c for c in WALKED if c[0] not in ("init", "log", "ingest")
                                     and c not in LATER], ids=" ".join)
def test_every_reading_command_gives_one_line_for_a_missing_database(cli, tmp_path, command):
    missing = tmp_path / "missing.db"
    stderr = one_line_error(cli(*command, "--db", missing, *valid_args(command), db=False))
    assert stderr == f"error: no database at {missing}: run `ravana-db init` or pass --db PATH\n"
    assert not missing.exists()


@pytest.mark.parametrize("command", WALKED, ids=" ".join)
def test_every_command_takes_db_after_its_name(cli, agent, tmp_path, command):
    other = tmp_path / "other.db"  # given before the command: the one after must win
    result = cli("--db", other, *command, "--db", agent, *valid_args(command), db=False)
    if command in LATER:
        assert "not built yet" in one_line_error(result, 1)
    else:
        assert result.exit_code == 0, result.stderr
    assert not other.exists()


MARKUP = ["closing [/] alone", "a [link=https://x]y[/link] link", "[bold]b[/bold] text",
          "smiles :smile: here", "[red]unclosed"]


def test_stored_rich_markup_prints_literally_in_tables(cli, agent, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per row: nothing folded
    logged = cli("log", "memory", "--stdin", input=jsonl(
        *({"key": f"[b]k{i}[/b]", "text": text} for i, text in enumerate(MARKUP))))
    assert logged.exit_code == 0, logged.stderr
    with contextlib.closing(sqlite3.connect(agent)) as conn:
        conn.execute("UPDATE meta SET value = '[/][bold]model[/bold] :smile:' "
                     "WHERE key = 'embedding_model'")
        conn.commit()
    found = cli("query", "closing link bold smiles unclosed", "--mode", "fts", "--top-n", "10",
                "--format", "table", "--no-touch")
    assert (found.exit_code, found.stderr) == (0, ""), found.stderr
    for i, text in enumerate(MARKUP):
        assert text in found.stdout and f"[b]k{i}[/b]" in found.stdout
    shown = cli("status", "--format", "table")
    assert (shown.exit_code, shown.stderr) == (0, ""), shown.stderr
    assert "[/][bold]model[/bold] :smile:" in shown.stdout


def test_years_before_1000_are_stored_and_filtered(cli, rows):
    logged = cli("log", "memory", "--key", "old", "--text", "An ancient chronicle of the old "
                 "kingdom", "--created-at", "0999-05-01")
    assert logged.exit_code == 0, logged.stderr
    assert rows("memory")[0]["created_at"] == "0999-05-01T00:00:00.000Z"

    def found(mode, *window):
        result = cli("query", "chronicle of the kingdom", "--mode", mode, "--no-touch", *window)
        assert result.exit_code == 0, result.stderr
        return [(r["key"], r["timestamp"]) for r in json.loads(result.stdout)]

    old = [("old", "0999-05-01T00:00:00.000Z")]
    for mode in ("fts", "vector", "hybrid"):
        assert found(mode, "--since", "0998-01-01", "--until", "1000-01-01") == old
        assert found(mode, "--since", "1000-01-01") == []
        assert found(mode, "--until", "0999-04-30") == []
        assert found(mode, "--since", "0999-05-01", "--until", "0999-05-01") == old
