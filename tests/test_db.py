"""Safe file handling in db.py: which paths are accepted, which files are ours, backups,
symlinks, read-only files and folders, and times that fit the stored form."""

import contextlib
import json
import os
import shutil
import sqlite3 as stdlib_sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlite_utils
import sqlite_vec
from conftest import one_line_error
from typer.testing import CliRunner

import ravana_db
import ravana_db.db
from ravana_db.cli import app
from ravana_db.db import open_db
from ravana_db.errors import InputError
from ravana_db.schema import migrations
from ravana_db.sql import driver
from ravana_db.times import format_time, from_iso, parse_time


def older_file(path):
    """A ravana-db file one migration behind, holding one action."""
    conn = driver().connect(str(path), isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    old = sqlite_utils.Database(conn)
    migrations.apply(old, stop_before=migrations._migrations[-1].name)
    old.execute("INSERT INTO actionlog(action_name) VALUES ('kept')")
    old.close()


def test_migrating_an_older_file_keeps_a_backup(db_path, cli):
    older_file(db_path)
    assert cli("status", "--format", "json").exit_code == 0
    (backup,) = db_path.parent.glob("agent.db.bak-*")
    with stdlib_sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT action_name FROM actionlog").fetchall() == [("kept",)]
        assert len(conn.execute("SELECT * FROM _sqlite_migrations").fetchall()) == len(
            migrations._migrations) - 1
    assert os.stat(backup).st_mode & 0o777 == 0o600


def stamps(seconds=30):
    """The timestamps a backup made in the coming seconds would be named with."""
    start = int(time.time()) - 1
    return [datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            for t in range(start, start + seconds)]


def backups(folder):
    return sorted(p for p in folder.glob("agent.db.bak-*") if p.is_file() and
                  not p.is_symlink())


def recording_driver(monkeypatch, *, before=None, after=None):
    """Make db.driver() the real module, but call before(uri) and after(uri) around connect."""
    real = driver()
    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real)
                                    if not k.startswith("__")})

    def connect(database, *args, **kwargs):
        if before:
            before(database)
        conn = real.connect(database, *args, **kwargs)
        if after:
            after(database)
        return conn

    fake.connect = connect
    monkeypatch.setattr(ravana_db.db, "driver", lambda: fake)


def applied(path):
    with contextlib.closing(stdlib_sqlite3.connect(path)) as conn:
        return conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]


@pytest.mark.parametrize("args, env, named", [
    (["--db", ":memory:"], {}, "--db"),
    ([], {"DATABASE_URL": "sqlite:///:memory:"}, "DATABASE_URL"),
    (["--db", ""], {}, "--db"),
    ([], {"RAVANA_DB": ""}, "RAVANA_DB"),
    ([], {"DATABASE_URL": "sqlite:///"}, "DATABASE_URL"),
], ids=["db-memory", "url-memory", "db-empty", "env-empty", "url-empty"])
def test_a_memory_or_empty_path_is_refused_and_creates_nothing(cli, monkeypatch, tmp_path,
                                                               args, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for command in (["init"], ["status"], ["log", "action", "--action-name", "a"]):
        result = cli(*args, *command, db=False)
        one_line_error(result)
        assert result.stderr.startswith(f"error: {named} ")
    assert list(tmp_path.iterdir()) == []


def test_a_database_url_that_is_not_sqlite_is_shown_with_its_password_masked(cli, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:secret@host/db")
    result = cli("init", db=False)
    one_line_error(result)
    assert "postgresql://user:***@host/db" in result.stderr
    assert "secret" not in result.stderr + result.stdout


SECRET_URLS = [
    ("postgresql://user:s3cr3t@host/db?sslmode=require", "postgresql://user:***@host/db?sslmode=***"),
    ("postgresql://host/db?user=me&pwd=s3cr3t", "postgresql://host/db?user=***&pwd=***"),
    ("mysql://h/db?password=s3cr3t;token=s3cr3t", "mysql://h/db?password=***;token=***"),
    ("sqlite:///x.db?key=s3cr3t", "sqlite:///x.db?key=***"),
    ("sqlite:///x.db?secret=s3cr3t#s3cr3t", "sqlite:///x.db?secret=***#***"),
    ("sqlite:///x.db?s3cr3t", "sqlite:///x.db?***"),
    ("x.db?token=s3cr3t", "x.db?token=***"),
]


@pytest.mark.parametrize("given, shown", SECRET_URLS, ids=[s for s, _ in SECRET_URLS])
@pytest.mark.parametrize("where", ["DATABASE_URL", "RAVANA_DB", "--db", "--db after"])
def test_secrets_in_a_database_url_are_never_echoed(cli, monkeypatch, tmp_path, given, shown,
                                                     where):
    args = {"--db": ["--db", given], "--db after": []}.get(where, [])
    after = ["--db", given] if where == "--db after" else []
    if where in ("DATABASE_URL", "RAVANA_DB"):
        monkeypatch.setenv(where, given)
    for command in (["init"], ["status"], ["log", "action", "--action-name", "a"]):
        result = cli(*args, *command, *after, db=False)
        # status reads a server: one that cannot be reached is a runtime error (exit 1)
        reads = command == ["status"] and given.startswith("postgresql://")
        stderr = one_line_error(result, code=1 if reads else 2)
        assert "s3cr3t" not in stderr and shown in stderr, stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_without_parameters_names_the_file(cli, monkeypatch, tmp_path):
    for where in ("DATABASE_URL", "RAVANA_DB", "--db"):
        path = tmp_path / f"{where.strip('-')}.db"
        args = ["--db", f"sqlite:///{path}"] if where == "--db" else []
        if where != "--db":
            monkeypatch.setenv(where, f"sqlite:///{path}")
        result = cli(*args, "init", db=False)
        assert (result.exit_code, result.stdout) == (0, f"{path}\n"), result.stderr


def test_a_backup_is_owner_only_before_sqlite_opens_it(cli, db_path, monkeypatch):
    older_file(db_path)
    seen = []

    def before(database):
        seen.extend((p.name, p.stat().st_mode & 0o777) for p in backups(db_path.parent))

    recording_driver(monkeypatch, before=before)
    assert cli("status", "--format", "json").exit_code == 0
    (backup,) = backups(db_path.parent)
    assert seen == [(backup.name, 0o600)]
    assert backup.stat().st_mode & 0o777 == 0o600


def test_a_backup_keeps_no_journal_file(cli, db_path):
    older_file(db_path)
    # A folder where the backup's rollback journal would go: SQLite could not create it.
    journals = [db_path.parent / f"agent.db.bak-{stamp}-journal" for stamp in stamps()]
    for journal in journals:
        journal.mkdir()
    result = cli("status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    for journal in journals:
        journal.rmdir()
    (backup,) = backups(db_path.parent)
    with stdlib_sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT action_name FROM actionlog").fetchall() == [("kept",)]


def test_a_backup_is_never_written_through_a_symlink(cli, db_path, tmp_path):
    older_file(db_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"not yours")
    for i, stamp in enumerate(stamps()):
        target = victim if i % 2 else elsewhere / f"stolen-{stamp}"
        (db_path.parent / f"agent.db.bak-{stamp}").symlink_to(target)
    assert cli("status", "--format", "json").exit_code == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    assert victim.read_bytes() == b"not yours"
    (backup,) = backups(db_path.parent)
    assert backup.name.endswith("-1") and backup.stat().st_mode & 0o777 == 0o600
    with stdlib_sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT action_name FROM actionlog").fetchall() == [("kept",)]


def test_a_backup_replaced_while_being_written_stops_the_migration(cli, db_path, monkeypatch):
    older_file(db_path)

    def after(database):
        if ".bak-" in database:  # someone swaps the file under our open connection
            backup = backups(db_path.parent)[0]
            swapped = backup.with_name("swapped")
            swapped.write_bytes(b"")
            os.replace(swapped, backup)

    recording_driver(monkeypatch, after=after)
    result = cli("status", "--format", "json")
    one_line_error(result, code=1)
    assert "was replaced" in result.stderr
    assert applied(db_path) == len(migrations._migrations) - 1


def test_a_migration_that_keeps_failing_leaves_no_backups(cli, db_path):
    open_db(db_path).close()
    conn = stdlib_sqlite3.connect(db_path, isolation_level=None)
    # Forget every migration but the first: the second re-runs and fails ("already exists").
    conn.execute("DELETE FROM _sqlite_migrations WHERE rowid > "
                 "(SELECT min(rowid) FROM _sqlite_migrations)")
    conn.close()
    before = db_path.read_bytes()
    for _ in range(3):
        result = cli("status")
        one_line_error(result, code=1)
        assert "already exists" in result.stderr
        time.sleep(1.1)  # a new timestamp each time: a kept backup would be a new file
    assert backups(db_path.parent) == []
    assert db_path.read_bytes() == before


@pytest.mark.parametrize("command", [["init"], ["log", "action", "--action-name", "a"]])
def test_a_dangling_symlink_at_the_database_path_is_refused(cli, db_path, tmp_path, command):
    target = tmp_path / "target.db"
    db_path.symlink_to(target)
    result = cli(*command)
    one_line_error(result)
    assert "symlink" in result.stderr
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["agent.db"]


def test_a_symlink_to_a_ravana_db_file_still_works(cli, db_path, tmp_path):
    real = tmp_path / "real.db"
    open_db(real).close()
    db_path.symlink_to(real)
    result = cli("status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["schema_version"] == len(migrations._migrations)
    assert cli("init").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.db", "real.db"]


def other_apps_migrations(path):
    other = sqlite_utils.Migrations("other_app")

    @other()
    def m001(db):
        db.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")

    db = sqlite_utils.Database(path)
    other.apply(db)
    db.execute("INSERT INTO notes(body) VALUES ('mine')")
    db.close()


def sql_file(*statements):
    def make(path):
        with stdlib_sqlite3.connect(path) as conn:
            for sql in statements:
                conn.execute(sql)
        conn.close()

    return make


NOT_OURS = {
    "other-apps-migrations": other_apps_migrations,
    "only-a-view": sql_file("CREATE VIEW v AS SELECT 1 AS x"),
    "unrelated-tables": sql_file("CREATE TABLE notes(x)", "INSERT INTO notes VALUES ('mine')"),
    "not-sqlite": lambda path: path.write_bytes(b"just some text, not a database\n" * 200),
    # No tables, but marked as another application's file, or holding freed pages.
    "application-id": sql_file("PRAGMA application_id = 1234"),
    "user-version": sql_file("PRAGMA user_version = 7"),
    "dropped-tables": sql_file("CREATE TABLE t(x)", "INSERT INTO t VALUES (zeroblob(20000))",
                               "DROP TABLE t"),
}


@pytest.mark.parametrize("kind", NOT_OURS)
def test_a_file_that_is_not_ours_is_left_byte_for_byte_unchanged(cli, db_path, kind):
    NOT_OURS[kind](db_path)
    os.utime(db_path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = db_path.read_bytes(), db_path.stat().st_mtime_ns
    for command in (["status"], ["init"], ["log", "action", "--action-name", "a"]):
        result = cli(*command)
        one_line_error(result)
        assert "not a ravana-db one" in result.stderr or "not a SQLite database" in result.stderr
    assert (db_path.read_bytes(), db_path.stat().st_mtime_ns) == before
    assert [p.name for p in db_path.parent.iterdir()] == ["agent.db"]
    if kind != "not-sqlite":
        with contextlib.closing(stdlib_sqlite3.connect(db_path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


WRITES = [["log", "action", "--action-name", "a"], ["ingest", "jsonl", "-", "--table", "moodlog"],
          ["ingest", "events"]]


@pytest.mark.parametrize("command", WRITES, ids=" ".join)
def test_a_write_command_that_creates_the_file_says_so_once(cli, db_path, command):
    stdin = '{"mood_vector": {"calm": 1}}\n'
    first = cli("--quiet", *command, input=stdin)  # said even with --quiet: a typo shows
    assert first.exit_code == 0, first.stderr
    assert first.stderr == f"created new database {db_path}\n"
    again = cli(*command, input=stdin)
    assert again.exit_code == 0 and "new database" not in again.stderr
    assert db_path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("command, stdin", [
    (["ingest", "jsonl", "-", "--table", "memory"], '{"text": "x", "importance": 2}\n'),
    (["log", "memory", "--stdin"], '{"text": "x"}\n{"text": "y", "importance": 2}\n')],
    ids=["ingest", "log"])
def test_a_first_write_that_fails_says_only_its_error(cli, db_path, command, stdin):
    assert one_line_error(cli(*command, input=stdin)).startswith("error: line ")


def test_init_says_created_new_database_then_up_to_date(cli, db_path):
    made = cli("init")
    assert (made.exit_code, made.stdout, made.stderr) == (
        0, f"{db_path}\n", f"created new database {db_path}\n")
    again = cli("init")
    assert (again.stdout, again.stderr) == (f"{db_path}\n", f"up to date: {db_path}\n")
    quiet = cli("--quiet", "init", "--db", db_path.with_name("other.db"), db=False)
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_reading_commands_never_say_created(cli, db_path):
    cli("init")
    for command in (["status"], ["query", "x", "--mode", "fts"], ["export", "memory"]):
        result = cli(*command)
        assert result.exit_code == 0 and "new database" not in result.stderr, result.stderr


def test_an_empty_file_is_made_owner_only_before_sqlite_writes_to_it(cli, db_path, monkeypatch):
    db_path.touch()
    os.chmod(db_path, 0o644)
    seen = []
    recording_driver(monkeypatch, before=lambda uri: seen.append(
        (db_path.stat().st_mode & 0o777, db_path.stat().st_size)))
    result = cli("log", "action", "--action-name", "a")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"created new database {db_path} (in the empty file there, now owner-only: mode 0600)")
    assert seen[0] == (0o600, 0)
    assert db_path.stat().st_mode & 0o777 == 0o600
    with contextlib.closing(stdlib_sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT action_name FROM actionlog").fetchall() == [("a",)]


def test_an_empty_file_is_not_a_database_for_reading_commands(cli, db_path):
    db_path.touch()
    os.chmod(db_path, 0o644)
    for command in (["status"], ["query", "x"], ["export", "memory"], ["consolidate"]):
        assert one_line_error(cli(*command)) == (
            f"error: {db_path} is an empty file, not a database yet: run `ravana-db init` or "
            "pass --db PATH\n")
    assert db_path.read_bytes() == b"" and db_path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in db_path.parent.iterdir()] == ["agent.db"]


def test_an_empty_file_of_another_user_is_not_taken_over(cli, db_path):
    if os.getuid() != 0:
        pytest.skip("needs root, to give the file to user nobody")
    db_path.touch()
    os.chmod(db_path, 0o666)
    os.chown(db_path, 65534, 65534)
    for command in (["init"], ["log", "action", "--action-name", "a"]):
        assert one_line_error(cli(*command)) == (
            f"error: {db_path} is an empty file of another user (uid 65534): not taking it "
            "over; remove it or pass another --db\n")
    assert db_path.read_bytes() == b"" and db_path.stat().st_mode & 0o777 == 0o666
    assert [p.name for p in db_path.parent.iterdir()] == ["agent.db"]


@pytest.mark.parametrize("command", [["init"], ["status"]])
def test_a_device_or_pipe_is_not_a_database_file(cli, tmp_path, command):
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    for path, what in (("/dev/null", "a character device"), (fifo, "a named pipe")):
        assert one_line_error(cli(*command, "--db", path, db=False)) == (
            f"error: {path} is {what}, not a database file\n")


def _nobody_env(home):
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "RAVANA_DB_CACHE": str(home / "cache"),
            "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
            # The venv's interpreter may sit under root's home; a same-version system Python
            # then runs this project with the venv's packages.
            "PYTHONPATH": os.pathsep.join([str(Path(ravana_db.__file__).parents[1]),
                                           sysconfig.get_paths()["purelib"]])}


def _runs_as_nobody(python, home):
    try:
        return subprocess.run([python, "-c", "import ravana_db.cli"], env=_nobody_env(home),
                              user="nobody", group="nogroup", extra_groups=[],
                              capture_output=True, check=False).returncode == 0
    except OSError:  # e.g. the interpreter sits under root's 0700 home
        return False


@pytest.fixture(scope="module")
def nobody_home():
    """A home folder (and model cache) for user nobody; skips if Python cannot run as nobody."""
    if os.getuid() != 0:
        pytest.skip("needs root, to run commands as user nobody")
    home = Path(tempfile.mkdtemp(prefix="ravana-nobody-"))
    os.chmod(home, 0o755)
    os.chown(home, 65534, 65534)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")]
    python = next((p for p in candidates if p and _runs_as_nobody(p, home)), None)
    if python is None:
        shutil.rmtree(home)
        pytest.skip("no Python that user nobody can run with this project's packages")
    yield home, python
    shutil.rmtree(home)


@pytest.fixture
def as_nobody(nobody_home):
    """Run `ravana-db --db PATH ARGS` as user nobody; returns the CompletedProcess."""
    home, python = nobody_home

    def run(path, *args):
        return subprocess.run(
            [python, "-m", "ravana_db", "--db", str(path), *args], env=_nobody_env(home),
            user="nobody", group="nogroup", extra_groups=[], capture_output=True, text=True,
            cwd=home, timeout=300, check=False)

    return run


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A ravana-db file holding one embedded memory."""
    path = tmp_path_factory.mktemp("template") / "agent.db"
    runner = CliRunner()
    result = runner.invoke(app, ["--db", str(path), "log", "memory", "--text",
                                 "The sky looked blue over the harbour", "--key", "sky"])
    assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def shared():
    """A folder under /tmp that user nobody can reach (pytest's own tmp folder is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="ravana-shared-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder)


def read_only_setup(shared, template, case):
    """Place a copy of template so that nobody can read but not write it; returns its path."""
    folder = shared / "db"
    folder.mkdir()
    path = folder / "agent.db"
    shutil.copyfile(template, path)
    if case == "file-0400-owned-by-nobody":
        os.chown(folder, 65534, 65534)  # nobody may write the folder, not the file
        os.chown(path, 65534, 65534)
        os.chmod(path, 0o400)
    elif case == "read-only-folder":
        os.chown(path, 65534, 65534)  # nobody may write the file, not its folder
        os.chmod(path, 0o600)
    else:  # another user's file in another user's folder
        os.chmod(path, 0o644)
    return path


READ_ONLY = ["file-0400-owned-by-nobody", "read-only-folder", "root-file-root-folder"]


def unchanged_beside(path, before):
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["agent.db"]


@pytest.mark.parametrize("case", READ_ONLY)
def test_status_and_no_touch_queries_read_a_file_this_user_cannot_write(as_nobody, shared,
                                                                       template, case):
    path = read_only_setup(shared, template, case)
    before = path.read_bytes()
    status = as_nobody(path, "status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["rows"]["memory"] == 1
    for mode in ("fts", "vector"):
        found = as_nobody(path, "query", "--no-touch", "--mode", mode, "blue sky", "--json")
        assert found.returncode == 0, found.stderr
        assert [r["key"] for r in json.loads(found.stdout)] == ["sky"]
    unchanged_beside(path, before)


@pytest.mark.parametrize("case", READ_ONLY)
def test_writing_a_read_only_file_is_one_clear_line(as_nobody, shared, template, case):
    path = read_only_setup(shared, template, case)
    before = path.read_bytes()
    for command in (["log", "action", "--action-name", "a"], ["query", "--mode", "fts", "sky"],
                    ["init"]):
        result = as_nobody(path, *command)
        assert result.returncode == 2, result.stderr
        assert result.stderr == (f"error: {path} is read-only: this user cannot write it or "
                                 "its folder (status and query --no-touch can still read it)\n")
    unchanged_beside(path, before)


def test_a_read_only_file_open_in_its_writer_is_read_with_its_wal(as_nobody, shared, template):
    path = read_only_setup(shared, template, "root-file-root-folder")
    writer = open_db(path)
    try:
        writer.execute("INSERT INTO actionlog(action_name) VALUES ('only in the wal')")
        names = sorted(p.name for p in path.parent.iterdir())
        assert names == ["agent.db", "agent.db-shm", "agent.db-wal"]
        status = as_nobody(path, "status", "--format", "json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["rows"]["actionlog"] == 1
        assert sorted(p.name for p in path.parent.iterdir()) == names
    finally:
        writer.close()


def test_a_read_only_file_with_pending_migrations_asks_for_init(as_nobody, shared, db_path):
    older_file(db_path)
    path = read_only_setup(shared, db_path, "root-file-root-folder")
    before = path.read_bytes()
    result = as_nobody(path, "status")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "`ravana-db init` by a user who can write it" in (
        result.stderr)
    unchanged_beside(path, before)


def test_creating_a_file_in_a_folder_this_user_cannot_write_is_one_line(as_nobody, shared):
    path = shared / "new.db"
    result = as_nobody(path, "init")
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: cannot create {path}: permission denied\n"
    assert list(shared.iterdir()) == []


def test_times_are_stored_with_four_digit_years():
    assert format_time(datetime(1, 1, 1, tzinfo=timezone.utc)) == "0001-01-01T00:00:00.000Z"
    assert parse_time("0001-01-01") == "0001-01-01T00:00:00.000Z"
    assert parse_time("2024-05-01T12:00:00.123456+02:00") == "2024-05-01T10:00:00.123Z"
    assert parse_time("9999-12-31T23:59:59.999") == "9999-12-31T23:59:59.999Z"


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+01:00",
                                   "999999999w"])
def test_a_time_outside_the_stored_range_is_an_input_error(value):
    with pytest.raises(InputError, match="out of range"):
        parse_time(value, field="since")


def test_extreme_times_on_the_command_line_never_give_a_traceback(cli):
    assert cli("log", "memory", "--text", "The sky looked blue", "--key", "sky").exit_code == 0
    for mode in ("fts", "vector", "hybrid"):
        result = cli("query", "sky", "--mode", mode, "--since", "0001-01-01", "--no-touch")
        assert result.exit_code == 0, result.stderr
        assert [r["key"] for r in json.loads(result.stdout)] == ["sky"]
        result = cli("query", "sky", "--mode", mode, "--until", "0001-01-01")
        assert result.exit_code == 0 and json.loads(result.stdout) == []
    one_line_error(cli("query", "sky", "--until", "9999-12-31T23:59:59-12:00"))
    one_line_error(cli("log", "memory", "--text", "late", "--created-at",
                       "9999-12-31T23:59:59-12:00"))


def test_stored_times_read_with_their_z_on_every_python():
    """The stored form ends in Z, which datetime.fromisoformat reads only from Python 3.11."""
    utc = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)
    assert from_iso("2026-03-01T12:00:00.500Z") == utc == from_iso("2026-03-01T12:00:00.500z")
    assert from_iso("2026-03-01T17:00:00.500+05:00") == utc
    assert parse_time("2026-03-01T12:00:00.5Z") == "2026-03-01T12:00:00.500Z"
