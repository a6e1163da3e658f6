"""Encrypting, decrypting and re-keying a database file in place: `ravana-db encrypt`,
`decrypt`, `rekey`.

The file is never changed where it is: SQLCipher's sqlcipher_export writes every table into a
new file beside it (NAME.crypt-partial, 0600), in sql.NEWEST's format (so that `rekey` to the
same key moves a file encrypted before to it), which is checked (PRAGMA integrity_check, the
same row count in every table), fsynced and renamed over the original. Until that rename the
original is whole; after it, the converted file is. A partial file that a killed run left is
removed by the next run.
"""

import contextlib
import os
from pathlib import Path

from .db import keyed, open_db, remove_ours, still_ours, uri
from .errors import InputError, RavanaError
from .export.files import publish, sync
from .keys import is_plain
from .sql import NEWEST, driver, driver_error, use_cipher, use_format

SUFFIX = ".crypt-partial"


def convert(path, *, key, new_key):
    """Rewrite the database at path, encrypted with key (None: plain), as encrypted with
    new_key (None: plain).

    Returns {file, encryption, tables, rows, bytes}.
    """
    path = Path(path)
    if key is None and path.is_file() and os.path.getsize(path) and not is_plain(path):
        raise InputError(f"{path} is already encrypted (or not a SQLite database)")
    use_cipher()  # one driver reads both sides
    db = open_db(path, create=False, key=key)
    try:
        _alone(db, path)
        # Beside the file itself: a symlink's target is converted, and the link stays.
        target = path.resolve()
        partial = target.with_name(target.name + SUFFIX)
        _remove_stale(partial)
        fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600)
        made = os.fstat(fd)
        try:
            use_format(NEWEST)  # the copy, and its check, in the newest format
            _export(db, partial, new_key)
            still_ours(partial, made, doing=f"convert {path}")
            tables, rows = _verify(db, partial, new_key, path)
            sync(fd, partial)
            publish(partial, target, force=True)
        except BaseException:
            remove_ours(partial, made)
            remove_ours(f"{partial}-journal")
            raise
        finally:
            os.close(fd)
    finally:
        db.close()
    return {"file": str(path), "encryption": "sqlcipher 4" if new_key else "none",
            "tables": tables, "rows": rows, "bytes": os.path.getsize(path)}


def _alone(db, path):
    """Fold the WAL into the file and keep other writers out until the swap: a rollback
    journal (leaving WAL needs the file to itself: refused while another process has it
    open) in exclusive locking mode, which holds this connection's lock until it closes."""
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (mode,) = db.execute("PRAGMA journal_mode = DELETE").fetchone()
    except driver_error("OperationalError"):
        mode = None
    if mode != "delete":
        raise InputError(f"{path} is open in another process (a writer, a reader or `ravana-db "
                         "mcp`): stop it, then convert the file")
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the lock now


def _remove_stale(partial):
    """Remove what a killed run left at partial (this user's regular file), or refuse."""
    with contextlib.suppress(FileNotFoundError):
        found = os.lstat(partial)
        if not os.path.isfile(partial) or os.path.islink(partial) \
                or found.st_uid != os.geteuid():
            raise InputError(f"{partial} exists and is not a file a run of ravana-db left: "
                             "move it away")
        os.unlink(partial)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{partial}-journal")


def _export(db, partial, new_key):
    """Every table, index and trigger of db into the file at partial, with new_key."""
    try:
        db.execute("ATTACH DATABASE ? AS converted KEY ?",
                   [f"{uri(partial.absolute())}?mode=rw", new_key.text if new_key else ""])
        try:
            db.execute("SELECT sqlcipher_export('converted')").fetchall()
        finally:
            db.execute("DETACH DATABASE converted")
    except driver_error() as e:
        raise RavanaError(f"cannot write {partial}: {e}") from None


def _verify(db, partial, new_key, path):
    """The converted copy, opened as a command would: integrity_check, and every stored
    table (not the virtual ones: their shadow tables hold the rows) with the same row count.
    Returns (tables, rows)."""
    names = [name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
        "ORDER BY name")]
    counts = {n: db.execute(f"SELECT count(*) FROM [{n}]").fetchone()[0] for n in names}
    conn = driver().connect(f"{uri(partial.absolute())}?mode=ro", uri=True)
    try:
        keyed(conn, new_key)
        problems = [line for (line,) in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise RavanaError(f"the converted copy of {path} failed PRAGMA integrity_check: "
                              f"{problems[0]}; the file is unchanged")
        copied = {n: conn.execute(f"SELECT count(*) FROM [{n}]").fetchone()[0] for n in names}
    except driver_error() as e:
        raise RavanaError(f"the converted copy of {path} cannot be read back: {e}; the file is "
                          "unchanged") from None
    finally:
        conn.close()
    if copied != counts:
        wrong = next(n for n in names if copied[n] != counts[n])
        raise RavanaError(f"the converted copy of {path} has {copied[wrong]} rows in {wrong}, "
                          f"not {counts[wrong]}; the file is unchanged")
    return len(names), sum(counts.values())
