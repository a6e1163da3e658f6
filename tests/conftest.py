"""Fixtures every test module shares: an isolated environment, the CLI on a fresh file, and a
prebuilt embedded database (made once per test process, copied into each test that asks)."""

import contextlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.db import open_db

ROOT = Path(__file__).parent.parent
DEMO_FEED = ROOT / "fixtures" / "feeds" / "demo" / "harbourline-news.xml"
# The files that take longest, slowest first (measured with --durations): with
# `--dist loadfile` a file runs on one worker, so starting the long ones first lets both workers
# finish together instead of one waiting on a long file picked up last.
SLOWEST_FIRST = ["test_concurrency.py", "test_feeds.py", "test_compress.py", "test_search.py",
                 "test_consolidate.py", "test_hostile.py", "test_models.py", "test_load.py",
                 "test_cli.py", "test_mcp.py", "test_crypt.py", "test_explain.py",
                 "test_behaviour.py", "test_db.py", "test_text.py"]


def pytest_collection_modifyitems(items):
    """Run the slowest files first, each file's tests in their own order."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test starts with no database settings and a fresh working folder."""
    for name in ("RAVANA_DB", "DATABASE_URL", "RAVANA_DB_MODEL", "RAVANA_DB_KEY",
                 "RAVANA_DB_KEY_FILE", "RAVANA_DB_SYNC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "agent.db"


@pytest.fixture
def cli(db_path):
    """Run `ravana-db --db <tmp> ARGS`; returns the click Result (stdout, stderr, exit_code)."""
    runner = CliRunner()

    def run(*args, input=None, db=True):
        argv = (["--db", str(db_path)] if db else []) + [str(a) for a in args]
        return runner.invoke(app, argv, input=input, catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def embedded_template(tmp_path_factory):
    """A file written by the CLI, every text embedded: the demo's 60 memories, one row of each
    log kind, one feed's articles (no events). Built once per test process; never write it:
    take a copy with the `embedded` fixture."""
    path = tmp_path_factory.mktemp("embedded") / "agent.db"
    memories = (ROOT / "fixtures" / "memories.jsonl").read_text()
    logs = [
        (["log", "memory", "--stdin"], memories),
        (["log", "action", "--action-name", "fetch_feeds", "--params", '{"feeds": 3}',
          "--result", '{"new": 12}'], None),
        (["log", "mood", "--mood-vector", '{"curious": 0.8, "calm": 0.5}'], None),
        (["log", "summary", "--summary-text", "The agent learned to batch its writes.",
          "--category", "reflection"], None),
        (["log", "situation", "--situation-type", "curiosity", "--prompt", "Why?"], None),
        (["ingest", "feeds", "--no-events", str(DEMO_FEED)], None),
    ]
    with pytest.MonkeyPatch.context() as env:
        for name in ("RAVANA_DB", "DATABASE_URL", "RAVANA_DB_MODEL"):
            env.delenv(name, raising=False)
        for args, stdin in logs:
            result = CliRunner().invoke(app, ["--db", str(path), *args], input=stdin,
                                        catch_exceptions=False)
            assert result.exit_code == 0, (args, result.stderr)
    return path


@pytest.fixture
def embedded(embedded_template, db_path):
    """A copy of embedded_template at the `cli` fixture's file; returns its path."""
    return copy_db(embedded_template, db_path)


@pytest.fixture
def rows(db_path):
    """All rows of a table (or a query's rows) as dicts."""

    def read(table_or_sql, *params):
        db = open_db(db_path, create=False)
        sql = table_or_sql if " " in table_or_sql else f"SELECT * FROM [{table_or_sql}]"
        try:
            return [dict(r) for r in db.query(sql, params)]
        finally:
            db.close()

    return read


def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


def copy_db(source, target):
    """A database file copied with SQLite's backup API (WAL and all); returns target."""
    with contextlib.closing(sqlite3.connect(source)) as a, \
            contextlib.closing(sqlite3.connect(target)) as b:
        a.backup(b)
    return target


def contents(path):
    """Every user table's rows, and the index's rows (through Python's own sqlite3)."""
    from ravana_db.tables import TABLES

    with contextlib.closing(sqlite3.connect(path)) as conn:
        present = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        return {t: conn.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall()
                for t in (*TABLES, "doc", "doc_vec", "embed_queue", "bits_queue", "meta")
                if t in present}


def one_line_error(result, code=2):
    """The result of a CliRunner or subprocess run is one `error:` line on stderr, exit code,
    nothing on stdout, no traceback. Returns stderr."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    stdout = result.stdout if isinstance(result.stdout, str) else result.stdout.decode()
    exit_code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert (exit_code, stdout) == (code, ""), (exit_code, stdout, stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr


def refused_line(result):
    """A `query --stdin` run whose one line was refused: the error on stderr (returned) and as
    that line's JSON answer on stdout, exit code 2, no traceback."""
    answer = json.loads(result.stdout)
    assert result.exit_code == 2 and sorted(answer) == ["error", "line"], result.stdout
    assert result.stderr == f"error: {answer['error']}\n"
    return result.stderr


def cpu_seconds(pid):
    """CPU seconds a running process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_locked(probe):
    """Whether another process holds the write lock now (asked without waiting)."""
    from ravana_db.db import BUSY_TIMEOUT_MS
    from ravana_db.sql import driver

    probe.execute("PRAGMA busy_timeout = 0")
    try:
        probe.conn.execute("BEGIN IMMEDIATE")
    except driver().OperationalError as e:
        assert "locked" in str(e), e
        return True
    finally:
        probe.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    probe.conn.execute("ROLLBACK")
    return False


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL 16 + pgvector server (pgserver) for the test process, in a tmp folder;
    returns its URL. Skips (one line) where it cannot start."""
    try:
        import pgserver
    except ImportError:
        pytest.skip("no PostgreSQL server: pgserver is not installed")
    import shutil
    import tempfile

    # Not under pytest's basetemp (owner-only): pgserver runs the server as its own user
    # when run as root, and that user must reach the folder.
    folder = tempfile.mkdtemp(prefix="ravana-pg-")
    try:
        server = pgserver.get_server(folder, cleanup_mode="stop")
    except Exception as e:  # noqa: BLE001 (any failure to start is a skip, said in one line)
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server: pgserver cannot start here ({str(e)[:80]})")
    import psycopg

    # A throwaway server: no waiting on the disk (its shutdown checkpoint took 25 s with it).
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server, request):
    """A fresh, empty database on the session's server; returns its postgresql:// URL."""
    import re

    import psycopg

    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:50] + f"_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.replace("/postgres?", f"/{name}?", 1)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_status(path, env, kill_after=None, done=None):
    """`status` on path in a child process (it migrates the file): (seconds from the
    migration's backup copy to the end, or to when done() first holds, the child's return
    code), killed (SIGKILL) kill_after seconds after that copy appeared when given."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "ravana_db", "--db", str(path), "status",
                             "--format", "json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(path.parent.glob(f"{path.name}.bak-*")) and proc.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.002)
    copied = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    took = None
    while done is not None and proc.poll() is None and took is None:
        took = time.monotonic() - copied if done() else time.sleep(0.002)
    proc.wait()
    return took or time.monotonic() - copied, proc.returncode
