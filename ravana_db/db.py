"""Finding, opening and migrating the one database file. Nothing else calls connect()."""

import contextlib
import hashlib
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .errors import InputError, RavanaError

DEFAULT_PATH = "ravana_agi.db"
BUSY_TIMEOUT_MS = 10_000
MMAP_BYTES = 1 << 30


def driver():
    """The DB-API module: pysqlite3 where installed (it can load extensions), else the stdlib."""
    try:
        import pysqlite3.dbapi2 as sqlite3
    except ImportError:  # pragma: no cover - pysqlite3-binary is a dependency
        import sqlite3
    return sqlite3


def resolve_path(db=None):
    """`--db` > RAVANA_DB > DATABASE_URL (sqlite:///path) > ./ravana_agi.db."""
    if db:
        return Path(db)
    if os.environ.get("RAVANA_DB"):
        return Path(os.environ["RAVANA_DB"])
    url = os.environ.get("DATABASE_URL")
    if url:
        if not url.startswith("sqlite:///"):
            raise InputError(f"DATABASE_URL {url!r} is not a sqlite:///path URL; pass --db PATH")
        return Path(url[len("sqlite:///"):])
    return Path(DEFAULT_PATH)


def open_db(path, *, create=True):
    """Open (creating if asked) the database at path, load sqlite-vec and apply migrations.

    Returns a sqlite_utils.Database whose connection is in autocommit mode: writers use
    transaction().
    """
    import sqlite_utils
    import sqlite_vec

    from .schema import migrations

    path = Path(path)
    sqlite3 = driver()
    if not path.exists():
        if not create:
            raise InputError(f"no database at {path}: run `ravana-db init` or pass --db PATH")
        if not path.parent.is_dir():
            raise InputError(f"cannot create {path}: folder {path.parent} does not exist")
        # Owner-only from the first byte: the file holds an agent's private memory.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:  # another process created it a moment ago
            pass
    elif path.is_dir():
        raise InputError(f"{path} is a folder, not a database file")
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    if not hasattr(conn, "enable_load_extension"):
        raise RavanaError(
            "this Python's sqlite3 cannot load extensions (sqlite-vec): "
            "install pysqlite3-binary (`pip install pysqlite3-binary`)")
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _wal(conn)
        conn.execute("PRAGMA foreign_keys = on")
        # Reading through a memory map skips a copy per page: vector and FTS scans read much of
        # the file (vec0 KNN at 100k rows: 10.2 ms -> 8.0 ms).
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        db = sqlite_utils.Database(conn)
        if migrations.pending(db):
            _check_ours(db, path)
            if migrations.applied(db):
                backup(db, path)  # outside the transaction: the backup API waits on writers
            # One process migrates; others opening the file at the same moment wait, then
            # find nothing left to do.
            with transaction(db):
                if migrations.pending(db):
                    migrations.apply(db)
    except sqlite3.DatabaseError as e:
        conn.close()
        if "not a database" in str(e):
            raise InputError(f"{path} is not a SQLite database") from None
        raise RavanaError(f"cannot open {path}: {e}") from None
    return db


def _wal(conn):
    """Switch to WAL (it stays set in the file). The switch needs the file to itself for a
    moment and SQLite's busy handler does not wait for that: when several processes open a
    new file at once, retry until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = wal")
            return
        except driver().OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _check_ours(db, path):
    tables = set(db.table_names())
    if tables and "_sqlite_migrations" not in tables:
        raise InputError(
            f"{path} is a SQLite database but not a ravana-db one (it has tables and no "
            "migrations record): pass --db with a new path")


def backup(db, path):
    """Copy the database beside itself before migrating it (path.bak-TIMESTAMP)."""
    target = path.with_name(f"{path.name}.bak-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    copy = driver().connect(str(target))
    with contextlib.closing(copy):
        db.conn.backup(copy)
    os.chmod(target, 0o600)
    return target


@contextlib.contextmanager
def transaction(db):
    """One write transaction: BEGIN IMMEDIATE, so a second writer waits instead of failing."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def now():
    """The current time as stored: ISO-8601 UTC with milliseconds."""
    return format_time(datetime.now(timezone.utc))


def format_time(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value, *, field="time"):
    """An ISO-8601 date or datetime (naive means UTC), or a relative age like 7d, 12h, 30m.

    Returns the stored form (see now()).
    """
    text = str(value).strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    age = re.fullmatch(r"([0-9]{1,9})([smhdw])", text)
    try:
        if age:
            delta = timedelta(**{units[age[2]]: int(age[1])})
            return format_time(datetime.now(timezone.utc) - delta)
        dt = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise InputError(
            f"{field}: {text[:40]!r} is not an ISO-8601 time (2024-05-01, 2024-05-01T12:00:00Z) "
            "or an age like 7d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return format_time(dt)


def sha256(text):
    """The content hash used for deduplication: SHA-256 of the UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
