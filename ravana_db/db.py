"""Finding, opening and migrating the one database file. Nothing else calls connect()."""

import contextlib
import os
import re
import stat
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from .errors import InputError, RavanaError
from .keys import is_plain, not_a_database
from .sql import FORMATS, derived, driver, keyed, use_cipher, use_format, vec_loaded
from .text import decode

DEFAULT_PATH = "ravana_agi.db"
BUSY_TIMEOUT_MS = 10_000
MMAP_BYTES = 1 << 30
SERVER_SCHEMES = ("postgresql://", "postgres://")


def server_url(db=None):
    """The PostgreSQL URL chosen as the database (--db > RAVANA_DB > DATABASE_URL, as in
    resolve_path), or None when the choice is a file: the read commands then ask the server."""
    for value in (db, os.environ.get("RAVANA_DB"), os.environ.get("DATABASE_URL")):
        if value is not None:
            return value if value.startswith(SERVER_SCHEMES) else None
    return None


def resolve_path(db=None):
    """`--db` > RAVANA_DB > DATABASE_URL (sqlite:///path) > ./ravana_agi.db.

    Each may be a path or a sqlite:///path URL (DATABASE_URL must be a URL). An empty choice,
    `:memory:`, another kind of URL, or URL parameters (`?key=...`) are an InputError, which
    shows the value with its password and parameter values masked. A PostgreSQL URL is one
    too, saying so: only the read commands take one (server_url); the others write a file.
    """
    url = server_url(db)
    if url is not None:
        source = next(name for name, value in (("--db", db), ("RAVANA_DB", os.environ.get(
            "RAVANA_DB")), ("DATABASE_URL", url)) if value is not None)
        raise InputError(f"{source} {masked(url)!r} is a PostgreSQL server, which ravana-db "
                         f"reads (query, status, export TABLE, timeline) but never writes: "
                         "writes go to a file (a path or sqlite:///path); they reach the "
                         "server through `ravana-db sync`")
    if db is not None:
        return _file_path(db, "--db")
    if "RAVANA_DB" in os.environ:
        return _file_path(os.environ["RAVANA_DB"], "RAVANA_DB")
    url = os.environ.get("DATABASE_URL")
    if url is not None:
        if not url.startswith("sqlite:///"):
            raise InputError(f"DATABASE_URL {masked(url)!r} is not a sqlite:///path URL; "
                             "pass --db PATH")
        return _file_path(url, "DATABASE_URL")
    return Path(DEFAULT_PATH)


def _file_path(value, source):
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value) and not value.startswith("sqlite:///"):
        raise InputError(f"{source} {masked(value)!r} is a URL, not a database file: "
                         "give a path or a sqlite:///path URL")
    # No parameters: none has a use here, and one may be a key the user expects to be applied.
    url = value.startswith("sqlite:///")
    if re.search(r"\?[^/]*=", value) or (url and re.search(r"[?#]", value)):
        raise InputError(f"{source} {masked(value)!r} has URL parameters, which ravana-db "
                         "does not take (no key or mode applies): give the file's path alone")
    value = value.removeprefix("sqlite:///")
    if not value.strip():
        raise InputError(f"{source} names no file: give a database path, e.g. --db agent.db")
    if value == ":memory:":
        raise InputError(f"{source} is :memory:, but ravana-db keeps memory in a file: "
                         "give a database path, e.g. --db agent.db")
    return Path(value)


def masked(url):
    """url with its password (user:PASSWORD@, password=...), every query parameter's value
    and its fragment replaced by ***: any of them may be a secret."""
    url = re.sub(r"^([^:/?#]*://[^:/?#@]*):.*@", r"\1:***@", url, flags=re.DOTALL)
    url, hashed, _ = url.partition("#")
    url, asked, query = url.partition("?")
    if asked:
        parts = re.split(r"([&;])", query)
        url += "?" + "".join(p if p in "&;" else p.split("=", 1)[0] + "=***" if "=" in p
                             else "***" for p in parts)
    else:
        url = re.sub(r"(password=)[^&\s]*", r"\1***", url, flags=re.IGNORECASE)
    return url + ("#***" if hashed else "")


def open_db(path, *, create=True, write=True, key=None):
    """Open the database at path, load sqlite-vec and apply pending migrations.

    Args:
        create: create a missing file (mode 0600); else a missing file is an InputError.
        write: False for commands that only read (status, query --no-touch): a file that this
            user cannot write, or whose folder it cannot write, is then opened read-only
            (no WAL switch, no migrations) instead of refused.
        key: a keys.Key: the file is (or, new, becomes) encrypted with it; None for a plain
            file. A wrong key, a key for a plain file or none for an encrypted one is refused.

    Returns a sqlite_utils.Database whose connection is in autocommit mode: writers use
    transaction(). A file that is not a ravana-db one is refused before anything is written.
    Its `created` is True when this call made the file a new database (once, even when
    several processes open a new file at once); `made_private` is the new mode of an empty
    file that others could read, made owner-only first (else None).
    """
    import sqlite_utils
    import sqlite_vec

    from .schema import migrations

    path = Path(path)
    made_private = _prepare(path, create=create)
    real = path.resolve()
    writable = os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)
    if write and not writable:
        raise InputError(f"{path} is read-only: this user cannot write it or its folder "
                         "(status and query --no-touch can still read it)")
    if key is not None:
        _use_key(path, real, key)
        key = derived(key, real)  # a passphrase's key, derived once for every connection
    sqlite3 = driver()
    # A URI with an absolute path: a name like ":memory:" stays a file, and mode=rw never lets
    # SQLite create the file itself (it would, with mode 0644).
    mode = "rw" if writable else "ro"
    if not writable and not os.path.exists(f"{real}-wal"):
        # Without a -wal file no writer is active; immutable reads need no -shm/-wal files,
        # which a read-only open of a WAL file would otherwise try to create.
        mode += "&immutable=1"
    conn = _connect(sqlite3, f"{uri(real)}?mode={mode}", path, key)
    if not hasattr(conn, "enable_load_extension"):
        conn.close()
        raise RavanaError(
            "this Python's sqlite3 cannot load extensions (sqlite-vec): "
            "install pysqlite3-binary (`pip install pysqlite3-binary`)")
    # Other clients may store text that is not UTF-8: read it with U+FFFD, never fail on it.
    conn.text_factory = decode
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _check_ours(conn, path)  # before anything that writes
        vec_loaded()
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        if writable:
            _wal(conn)
        # Reading through a memory map skips a copy per page: vector and FTS scans read much of
        # the file.
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        # No sqlite-utils plugins: they cost a scan of the installed packages per command.
        db = sqlite_utils.Database(conn, execute_plugins=False)
        db.read_uri = f"{uri(real)}?mode={mode.replace('rw', 'ro')}"
        db.created, db.made_private, db.key = False, made_private, key
        if migrations.pending(db):
            if not writable:
                raise InputError(f"{path} needs `ravana-db init` by a user who can write it "
                                 "(it is read-only here and its schema is out of date)")
            db.created = _migrate(db, path, migrations)
        conn.execute("PRAGMA foreign_keys = on")
    except sqlite3.DatabaseError as e:
        conn.close()
        if "not a database" in str(e):
            raise InputError(not_a_database(path, key)) from None
        raise RavanaError(f"cannot open {path}: {e}") from None
    except BaseException:
        conn.close()
        raise
    return db


def _use_key(path, real, key):
    """Switch this process to the driver that can decrypt; refuse a key for a plain file."""
    use_cipher()
    if is_plain(real):
        raise InputError(f"{path} is not encrypted, but a key was given ({key.source}): "
                         "drop the key, or encrypt the file with `ravana-db encrypt`")


def _connect(sqlite3, target, path, key):
    """A connection to target, keyed. With a key, each of sql.FORMATS is tried, newest first
    (an empty file takes the newest); the one that decrypts stays this process's format, for
    reader(), backups and export's copies."""
    names = list(FORMATS) if key is not None else [None]
    for name in names:
        if name is not None:
            use_format(name)
        try:
            conn = sqlite3.connect(target, uri=True, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as e:
            raise RavanaError(f"cannot open {path}: {e}") from None
        if keyed(conn, key) or name == names[-1]:
            return conn
        conn.close()


def existing(path):
    """Refuse, with open_db's one line, a path that is not an existing database file."""
    _prepare(Path(path), create=False)


def _prepare(path, *, create):
    """Refuse a path that cannot be a database file; create a missing one (0600) if asked.

    An empty file is a new database to a writing command when it is this user's own regular
    file: made owner-only before SQLite writes a byte to it. Returns its new mode when that
    changed, else None.
    """
    if path.is_symlink() and not path.exists():
        raise InputError(f"{path} is a symlink to {os.readlink(path)}, which does not exist: "
                         "point it at a database file or pass another --db")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a database file")
    if path.exists():
        found = os.stat(path)
        if not stat.S_ISREG(found.st_mode):
            raise InputError(f"{path} is {_file_kind(found.st_mode)}, not a database file")
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read {path}: permission denied")
        return _adopt_empty(path, create=create) if found.st_size == 0 else None
    if not create:
        raise InputError(f"no database at {path}: run `ravana-db init` or pass --db PATH")
    if not path.parent.is_dir():
        raise InputError(f"cannot create {path}: folder {path.parent} does not exist")
    # Owner-only from the first byte: the file holds an agent's private memory.
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600))
    except FileExistsError:  # another process created it a moment ago
        pass
    except OSError as e:
        raise InputError(f"cannot create {path}: {e.strerror.lower()}") from None
    return None


def _file_kind(mode):
    kinds = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
             stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _adopt_empty(path, *, create):
    """An empty file at path: this user's to make a database of (owner-only first), or
    refused. Returns its new mode when that changed, else None."""
    if not create:
        raise InputError(f"{path} is an empty file, not a database yet: run `ravana-db init` or "
                         "pass --db PATH")
    try:
        fd = os.open(path.resolve(), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise InputError(f"cannot open {path}: {e.strerror.lower()}") from None
    try:
        found = os.fstat(fd)
        if found.st_uid != os.geteuid():
            raise InputError(f"{path} is an empty file of another user (uid {found.st_uid}): "
                             "not taking it over; remove it or pass another --db")
        if found.st_mode & 0o077 and found.st_size == 0:
            os.fchmod(fd, found.st_mode & 0o700)  # never more than it was: 0444 stays read-only
            return found.st_mode & 0o700
        return None
    finally:
        os.close(fd)


def uri(path):
    """A file: URI of path (quoted: a name like ':memory:' stays a file name)."""
    return "file:" + urllib.parse.quote(str(path))


def _check_ours(conn, path):
    """Refuse a file with schema objects but no ravana-db migrations record, or with no
    tables but another application's marks: its application_id or user_version set, or
    pages left by dropped tables (read only)."""
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if not names:
        marks = {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
                 for name in ("application_id", "user_version", "page_count")}
        if marks["page_count"] > 1:
            why = f"no tables, but {marks['page_count']} pages of data"
        else:
            why = next((f"no tables, but its {name} is {value}" for name, value in marks.items()
                        if name != "page_count" and value), None)
        if why is None:
            return  # a new, empty file
    elif "_sqlite_migrations" in names and conn.execute(
            "SELECT 1 FROM _sqlite_migrations WHERE migration_set = 'ravana_db'").fetchone():
        return
    else:
        why = "it has no ravana-db migrations record"
    raise InputError(f"{path} is a SQLite database but not a ravana-db one ({why}): pass --db "
                     "with a new path")


def _migrate(db, path, migrations):
    """Apply pending migrations in one transaction, after a backup if the file had data.

    Returns whether this call made a new database (applied the first migration).
    """
    saved = backup(db, path) if migrations.applied(db) else None
    created = False
    try:
        # One process migrates; others opening the file at the same moment wait, then
        # find nothing left to do.
        # Foreign keys are still off (SQLite's way to rebuild a table: a DROP would cascade);
        # the check at the end refuses a migration that leaves a dangling reference.
        with transaction(db):
            if migrations.pending(db):
                created = not migrations.applied(db)
                migrations.apply(db)
                broken = db.execute("PRAGMA foreign_key_check").fetchone()
                if broken:
                    raise RavanaError(f"migrating {path} left a row of {broken[0]} pointing "
                                      f"at a missing {broken[2]} row")
    except BaseException:
        if saved:  # the file is unchanged: a copy per failed attempt would only fill the disk
            saved.unlink(missing_ok=True)
        raise
    return created


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


def backup(db, path):
    """Copy the database beside itself (NAME.bak-TIMESTAMP, or with -1, -2.. if that is taken).

    The copy is 0600 from its first byte, never written through a symlink, and keeps no
    journal file. Returns its path.
    """
    stamp = f"{path.name}.bak-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    for n in range(100):
        target = path.with_name(f"{stamp}-{n}" if n else stamp)
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise RavanaError(f"cannot back up {path}: {stamp} and 99 variants exist; remove some")
    made = os.fstat(fd)
    os.close(fd)
    try:
        copy = driver().connect(f"{uri(target.absolute())}?mode=rw", uri=True)
        with contextlib.closing(copy):
            keyed(copy, db.key)  # an encrypted file's copy is encrypted too
            # No rollback journal: it would be a second file, created with SQLite's own mode.
            copy.execute("PRAGMA journal_mode = off")
            db.conn.backup(copy)
        still_ours(target, made, doing=f"back up {path}")
    except BaseException:
        remove_ours(target, made)
        raise
    return target


def still_ours(path, made, *, doing):
    """Fail when path is no longer the file we created (made: its os.fstat): someone swapped
    it while we wrote, and what we wrote must not be trusted or published."""
    now_there = os.lstat(path)
    if (now_there.st_dev, now_there.st_ino) != (made.st_dev, made.st_ino):
        raise RavanaError(f"cannot {doing}: {path} was replaced while being written; check who "
                          "else writes to that folder")


def remove_ours(path, made=None):
    """Remove a file we created, unless something else has taken its name since (made)."""
    with contextlib.suppress(OSError):
        if made is None or os.lstat(path).st_ino == made.st_ino:
            os.unlink(path)


def reader(db):
    """A second, read-only connection to db's file (made once), for reads that run in another
    thread while db's own connection works: SQLite lets both proceed at once."""
    import sqlite_utils

    if getattr(db, "reader", None) is None:
        conn = driver().connect(db.read_uri, uri=True, isolation_level=None,
                                check_same_thread=False)
        conn.text_factory = decode
        keyed(conn, db.key)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        db.reader = sqlite_utils.Database(conn, execute_plugins=False)
    return db.reader


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
