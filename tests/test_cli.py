"""The command line as a whole: help for every command, the README names them all."""

import atexit
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import typer
from conftest import contents, copy_db, jsonl, one_line_error, refused_line
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.cli.log import EXAMPLES
from ravana_db.models import KINDS

README = (Path(__file__).parent.parent / "README.md").read_text()
TOP = ["init", "status", "log", "query", "reindex", "ingest", "consolidate", "compress",
       "encrypt", "decrypt", "rekey",
       "export", "feeds", "explain", "timeline", "mcp", "sync"]
GROUPS = {"log": list(KINDS), "ingest": ["feeds", "events", "jsonl", "dir", "ravana"],
          "export": ["backup", "feeds"], "feeds": ["list", "remove", "pause", "resume"]}
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
                 None),
                (["ingest", "feeds", "--no-events", FEED], None)):  # for `feeds pause` etc.
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
# Commands that succeed only with a key, which switches a process to sqlcipher3: this one opens
# plain files, so they run as their own processes in test_crypt.py (--db after the name, -q).
KEYED = [("decrypt",), ("encrypt",), ("rekey",)]


@pytest.fixture(autouse=True)
def sync_url(request, monkeypatch):
    """`sync` (a command or a crontab line) goes to the session's PostgreSQL, its URL in
    $RAVANA_DB_SYNC_URL as a crontab would set it."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    command, line = tuple(params.get("command") or ()), params.get("line")
    if command[:1] == ("sync",) or (isinstance(line, str) and " sync" in line):
        monkeypatch.setenv("RAVANA_DB_SYNC_URL", request.getfixturevalue("pg_url"))


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
            ("export", "backup"): ["copy.db"], ("feeds", "remove"): [FEED],
            ("explain",): ["memory:1"], ("rekey",): ["--new-key-file", "new.key"],
            ("feeds", "pause"): [FEED], ("feeds", "resume"): [FEED]}.get(tuple(command), [])


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


@pytest.mark.parametrize("command", [c for c in WALKED if c not in KEYED], ids=" ".join)
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


# --quiet: no output on success, one line per failure; data only where it is asked for -------

ASKED_FOR_DATA = {("status",), ("query",), ("export", "feeds"), ("feeds", "list"), ("explain",),
                  ("timeline",)}
EXPORTS = [("export", "memory", "--output", "m.jsonl"), ("export", "all", "--output", "dump")]


@pytest.mark.parametrize("flag, where", [("--quiet", "before"), ("-q", "after"),
                                         ("--quiet", "after")])
@pytest.mark.parametrize("command", [c for c in WALKED if c not in KEYED] + EXPORTS,
                         ids=" ".join)
def test_quiet_means_no_output_on_success(cli, agent, command, flag, where):
    args = [*command, *valid_args(command)]
    result = cli(*([flag, *args] if where == "before" else [*args, flag]))
    assert result.exit_code == 0, result.stderr
    # The original's fixture holds rows that are refused: a failure each, said in one line.
    assert all(" row(s) refused (first: " in line for line in result.stderr.splitlines())
    assert (result.stderr != "") == (command == ("ingest", "ravana")), result.stderr
    assert (result.stdout != "") == (command in ASKED_FOR_DATA), result.stdout


def test_quiet_keeps_data_asked_for_and_drops_notices(cli, agent):
    with contextlib.closing(sqlite3.connect(agent)) as conn:  # a text waiting for its vector
        conn.execute("INSERT INTO memory(text) VALUES ('The user likes jasmine tea')")
        conn.commit()
    found = cli("query", "tea", "--no-touch", "-q")
    assert found.stderr == ""
    assert "The user likes jasmine tea" in [r["text"] for r in json.loads(found.stdout)]
    assert "wait for embedding" in cli("query", "tea", "--no-touch").stderr
    exported = cli("export", "memory", "-q")
    memories = len(contents(agent)["memory"])
    assert exported.stderr == "" and len(exported.stdout.splitlines()) == memories
    logged = cli("log", "action", "--action-name", "a", "-q", "--format", "jsonl")
    assert logged.stderr == "" and json.loads(logged.stdout)["status"] == "inserted"
    rebuilt = cli("reindex", "--fts", "-q", "--json")
    assert rebuilt.stderr == ""
    assert json.loads(rebuilt.stdout)["fts_rows"] == len(contents(agent)["doc"])


def test_quiet_still_says_each_failure_in_one_line(cli, agent, tmp_path):
    dump = tmp_path / "dump"
    shutil.copytree(LOAD, dump)
    (dump / "event_article.jsonl").write_text(jsonl({"event_id": 900, "article_id": 901}))
    manifest = json.loads((dump / "manifest.json").read_text())
    for table in manifest["tables"]:
        if table["table"] == "event_article":
            table["rows"] = 1
    (dump / "manifest.json").write_text(json.dumps(manifest))
    result = cli("ingest", "dir", dump, "-q")
    assert (result.exit_code, result.stdout) == (0, ""), result.stderr
    assert result.stderr.startswith("event_article: 1 row(s) refused")
    assert result.stderr.count("\n") == 1
    one_line_error(cli("log", "action", "-q"))


# The file's own model is the default --------------------------------------------------------


def test_after_a_model_switch_every_command_uses_the_files_model(cli, agent, tmp_path,
                                                                  monkeypatch):
    from ravana_db.embed import DEFAULT_MODEL, default_model_folder

    other = tmp_path / "models" / "minilm-copy"
    shutil.copytree(default_model_folder(), other)
    switched = cli("reindex", "--vectors", "--model", "models/minilm-copy", "--json")
    assert switched.exit_code == 0, switched.stderr
    assert json.loads(switched.stdout)["embedded"] == len(contents(agent)["doc"])
    elsewhere = tmp_path / "elsewhere"  # cron runs in another folder, with its own settings
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("RAVANA_DB_MODEL", "no-such/model-anywhere")
    assert json.loads(cli("status").stdout)["embedding_model"] == str(other)
    logged = cli("log", "memory", "--key", "jasmine", "--text", "The user likes jasmine tea.")
    assert logged.exit_code == 0, logged.stderr
    loaded = cli("ingest", "jsonl", "-", "--table", "summary",
                 input=jsonl({"summary_text": "Tea sales rose in spring."}))
    assert loaded.exit_code == 0, loaded.stderr
    for mode in ("hybrid", "vector"):
        found = cli("query", "green tea", "--mode", mode, "--no-touch", "-n", "2")
        assert found.exit_code == 0, found.stderr
        assert [r["key"] for r in json.loads(found.stdout)] == ["tea", "jasmine"]
    assert json.loads(cli("status").stdout)["index"]["whole"] is True
    # --model that disagrees with the file: one line naming both ways out.
    before = contents(agent)
    refused = one_line_error(cli("query", "tea", "--model", DEFAULT_MODEL))
    assert "reindex --vectors --model" in refused and "leave out --model" in refused
    assert contents(agent) == before
    for command in ([], ["query"], ["reindex"]):  # the help names the order and the default
        assert "[default: the one the file's vectors were made with; for a file without " \
               f"vectors $RAVANA_DB_MODEL, else {DEFAULT_MODEL} (bundled)]" in help_of(command)


def test_a_files_model_folder_that_is_gone_is_one_line_naming_the_fix(cli, agent, tmp_path):
    from ravana_db.embed import DEFAULT_MODEL, default_model_folder

    other = tmp_path / "minilm-copy"
    shutil.copytree(default_model_folder(), other)
    assert cli("reindex", "--vectors", "--model", other).exit_code == 0
    other.rename(tmp_path / "moved")
    before = contents(agent)
    for args in (["query", "tea"], ["log", "memory", "--text", "new"], ["reindex", "--vectors"]):
        assert one_line_error(cli(*args)) == (
            f"error: this database's vectors were made with model '{other}', which is not here "
            "(a folder moved or deleted?): put it back, or re-embed everything with another: "
            "ravana-db reindex --vectors --model NAME|FOLDER\n")
    assert contents(agent) == before
    # What needs no vectors still works; switching back re-embeds with the bundled model.
    assert cli("query", "tea", "--mode", "fts", "--no-touch").exit_code == 0
    assert cli("log", "action", "--action-name", "a").exit_code == 0
    assert cli("reindex", "--vectors", "--model", DEFAULT_MODEL).exit_code == 0
    found = cli("query", "green tea", "--mode", "vector", "--no-touch", "-n", "1")
    assert [r["key"] for r in json.loads(found.stdout)] == ["tea"]


# Help that agrees with behaviour ------------------------------------------------------------


def help_of(command):
    """A command's --help as one line of words (the terminal width folds it anywhere, also
    after a hyphen)."""
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.stderr
    return " ".join(re.sub(r"(?<=\w-)\n\s+", "", result.stdout).split())


def is_json(out):
    return isinstance(json.loads(out), (dict, list))


# What each command's --format help promises a pipe gets without --format (CliRunner's stdout
# is a pipe), and how to check it.
PIPE_DEFAULTS = {
    "json (default in a pipe": is_json,
    "[default: their ids, one a line]": lambda out: re.fullmatch(r"([\w-]+\n)+", out),
    "[default: a table on stderr, nothing on stdout]": lambda out: out == "",
    "[default: one line on stderr, nothing on stdout]": lambda out: out == "",
    "opml (default)": lambda out: out.startswith("<?xml"),
}
WITH_FORMAT = [c for c in WALKED if "-f, --format" in help_of(c)]


@pytest.mark.parametrize("command", WITH_FORMAT, ids=" ".join)
def test_format_help_says_what_a_pipe_gets_without_it(cli, agent, command):
    promised = [phrase for phrase in PIPE_DEFAULTS if phrase in help_of(command)]
    assert len(promised) == 1, help_of(command)
    result = cli(*command, *valid_args(command))
    assert result.exit_code == 0, result.stderr
    assert PIPE_DEFAULTS[promised[0]](result.stdout), result.stdout


def test_query_help_says_how_it_ranks_and_what_stdin_gets(cli, agent):
    words = help_of(["query"])
    assert "fused by score: the mean of cosine similarity and BM25 scaled to 0..1" in words
    assert "by rank" not in words
    found = json.loads(cli("query", "green tea", "--no-touch").stdout)
    only_meaning = [r for r in found if r["bm25"] is None]  # no word in common
    assert only_meaning and all(r["score"] == pytest.approx(r["similarity"] / 2, abs=1e-6)
                                for r in only_meaning)
    assert "jsonl with --stdin" in words
    answers = cli("query", "--stdin", "--no-touch", input="tea\ndeploy\n").stdout
    assert [json.loads(line)["line"] for line in answers.splitlines()] == [1, 2]


def test_version_is_the_installed_packages(cli, tmp_path):
    from importlib.metadata import version

    for args in (["--version"], ["--db", "x.db", "--version", "status"]):
        shown = cli(*args, db=False)
        assert (shown.exit_code, shown.stdout, shown.stderr) == (
            0, f"ravana-db {version('ravana-db')}\n", "")
    assert list(tmp_path.iterdir()) == []
    cli("init")
    assert json.loads(cli("status").stdout)["ravana_db_version"] == version("ravana-db")
    assert "ravana_db_version" in cli("status", "--format", "table").stdout
    assert "--version" in help_of([])


# The README's crontab lines, run as cron runs them ------------------------------------------

CRONTAB = re.findall(r"^(?:[0-9*/,-]+\s+){5}(\S*ravana-db .*)$", README, re.MULTILINE)


def test_the_readme_has_crontab_lines():
    assert len(CRONTAB) >= 2 and all("ravana-db" in line for line in CRONTAB)


@pytest.mark.parametrize("line", CRONTAB)
def test_a_readme_crontab_line_works_under_crons_path(tmp_path, line):
    """cron: an empty environment but PATH=/usr/bin:/bin and HOME, the line run by sh. The
    README's clone is ~/ravana-db: here, a HOME whose ravana-db/.venv is this test's venv."""
    home = tmp_path / "home"
    (home / "ravana-db").mkdir(parents=True)
    (home / "ravana-db" / ".venv").symlink_to(sys.prefix)
    program = home / "ravana-db" / ".venv" / "bin" / "ravana-db"
    subprocess.run([program, "--db", home / "agent.db", "init"], check=True,
                   capture_output=True)
    crontab = [f"RAVANA_DB_SYNC_URL={os.environ['RAVANA_DB_SYNC_URL']}"] \
        if "RAVANA_DB_SYNC_URL" in os.environ else []  # the README's line above it
    done = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", *crontab,
                           "sh", "-c", line],
                          capture_output=True, text=True, timeout=300, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done.stderr


@pytest.mark.parametrize("args, message", [
    (["--nope", "status"], "error: No such option: --nope"),
    (["timeline", "--format", "xml"], "error: Invalid value for '--format' / '-f': 'xml' is "
                                      "not one of"),
    (["explain"], "error: Missing argument '[KIND:]ID|KEY'."),
    (["explain", "--depth", "-1", "1"], "error: Invalid value for '--depth' / '-d': -1 is "
                                       "not in the range x>=0."),
    (["log", "memory", "--bogus", "1"], "error: No such option: --bogus"),
    (["feeds", "nope"], "error: No such command 'nope'."),
    (["nope"], "error: No such command 'nope'."),
])
def test_a_usage_error_is_one_line_naming_the_help_to_read(cli, args, message):
    stderr = one_line_error(cli(*args))
    command = " ".join(a for a in args[:2] if a in ("log", "memory", "feeds", "timeline",
                                                    "explain"))
    assert stderr.startswith(message), stderr
    # the program's name: ravana-db, or the test runner's "root"
    assert re.search(rf"\(see (ravana-db|root){' ' + command if command else ''} -h\)\n$",
                     stderr), stderr


@pytest.mark.parametrize("args", [["explain", "\udced\udca0\udc80"],
                                  ["consolidate", "--undo", "\udcff"],
                                  ["explain", "memory:\udcff"]])
def test_a_value_on_the_command_line_that_is_not_utf8_is_one_line(cli, agent, args):
    """Bytes that are not UTF-8 in argv reach Python as lone surrogates."""
    stderr = one_line_error(cli(*args))
    assert "is not valid UTF-8: a value given on the command line" in stderr, stderr
