"""`ravana-db export`: the agent's tables as JSON, JSON lines, CSV or markdown, and a consistent
copy of the whole file.

Rows stream from one cursor straight to the output (the writers of formats.py), so a table of
any size takes the same memory. A file (or, for every table, a folder) is written under a
temporary name beside its target and renamed into place only when complete (files.py): a
failure leaves nothing behind.

Values are written as stored: JSON columns stay the exact JSON text SQLite holds (a string in
JSON output), so an export read back gives the same rows byte for byte.
"""

import contextlib
import difflib
import json
import os
import sys
from pathlib import Path

from ..db import keyed, remove_ours, still_ours, uri
from ..errors import InputError, RavanaError
from ..schema import migrations
from ..sql import driver
from ..tables import TABLES, TIME
from ..times import now, parse_time
from .files import (
    check_file,
    check_folder,
    new_file,
    new_folder,
    private_file,
    publish,
    sync,
    temp_file,
)
from .formats import WRITERS

FORMATS = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "markdown": ".md"}
SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
            ".md": "markdown", ".markdown": "markdown"}
MANIFEST = "manifest.json"
EXPORT_VERSION = 1

def check_table(name):
    """Refuse anything but one of the agent's tables (or `all`): the search index's tables
    and bookkeeping are never exported."""
    if name == "all" or name in TABLES:
        return name
    near = difflib.get_close_matches(name, [*TABLES, "all"], n=1)
    raise InputError(f"export: {name!r} is not a table of the agent's" +
                     (f" (did you mean {near[0]}?)" if near else "") +
                     ": `ravana-db export --help` lists them; the search index's and "
                     "bookkeeping tables are never exported")


class Export:
    """What to export and where, checked before the database is opened.

    Args:
        table: one of tables.TABLES, or "all" (then output is a folder).
        fmt: json, jsonl, csv or markdown; default: from output's suffix, else jsonl.
        output: a file (a folder for "all"); None writes to the `out` given to run().
        since, until: ISO times or ages (7d); rows whose own time lies between, inclusive.
        force: replace an existing file; for "all", the files of the names it writes in a
            folder that holds anything (nothing else there is touched).
    """

    def __init__(self, table, *, fmt=None, output=None, since=None, until=None, force=False):
        self.table = check_table(table)
        self.output = Path(output) if output not in (None, "-") else None
        self.fmt = _format(fmt, self.output, folder=table == "all")
        self.since = parse_time(since, field="since") if since else None
        self.until = parse_time(until, field="until") if until else None
        self.force = force
        if self.table == "all":
            if self.output is None:
                raise InputError("export all writes a file per table and a manifest: give "
                                 "--output DIR")
            check_folder(self.output, force=force, names=self.files())
        else:
            if (since or until) and TIME[self.table] is None:
                timed = ", ".join(t for t in TABLES if TIME[t])
                raise InputError(f"{self.table} has no time column: --since/--until cannot "
                                 f"filter it (they can: {timed})")
            if self.output is not None:
                check_file(self.output, force=force)

    def tables(self):
        return list(TABLES) if self.table == "all" else [self.table]

    def files(self):
        """The names of the files `export all` writes in its folder."""
        return [table + FORMATS[self.fmt] for table in self.tables()] + [MANIFEST]


def _format(fmt, output, *, folder):
    if fmt is None:
        guessed = None if folder or output is None else SUFFIXES.get(output.suffix.lower())
        return guessed or "jsonl"
    fmt = "markdown" if fmt == "md" else fmt
    if fmt not in FORMATS:
        raise InputError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def run(db, job, *, out=None, progress=None):
    """Write the rows of job's table(s). Returns a report: for one table {table, format, rows,
    file}; for all, the manifest written beside the files.

    Args:
        out: the text stream for an export without output (default stdout).
        progress: called with the number of rows written since the last call (and total= first).
    """
    _not_the_database(db, job.output)
    with _unmapped(db):
        if job.table != "all":
            return _run_one(db, job, out, progress)
        return _run_all(db, job, progress)


def _run_one(db, job, out, progress):
    """Write one table to job's file or to out; returns its report."""
    _total(db, job, progress)
    columns, rows = _select(db, job.table, job.since, job.until)
    rows = _counting(rows, progress)
    if job.output is None:
        count = WRITERS[job.fmt](out or sys.stdout, columns, rows)
    else:
        with new_file(job.output, force=job.force) as f:
            count = WRITERS[job.fmt](f, columns, rows)
    return {"table": job.table, "format": job.fmt, "rows": count,
            "file": str(job.output) if job.output else None}


def _run_all(db, job, progress):
    """Write every table and the manifest into job's folder, as of one moment; returns the
    manifest."""
    with new_folder(job.output, force=job.force, marker=MANIFEST) as folder, _snapshot(db):
        manifest = _manifest(db, job)
        _total(db, job, progress)
        for table in job.tables():
            columns, rows = _select(db, table, job.since, job.until)
            name = table + FORMATS[job.fmt]
            with private_file(folder / name, job.output / name) as f:
                count = WRITERS[job.fmt](f, columns, _counting(rows, progress))
            manifest["tables"].append({
                "table": table, "file": name, "rows": count, "columns": columns,
                "time": TIME[table], "filtered": bool(TIME[table] and (job.since or job.until))})
        with private_file(folder / MANIFEST, job.output / MANIFEST) as f:
            f.write(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return manifest


def _manifest(db, job):
    applied = migrations.applied(db)
    return {
        "export_version": EXPORT_VERSION,
        "exported_at": now(),
        "format": job.fmt,
        "schema_version": len(applied),
        "last_migration": applied[-1].name if applied else None,
        "since": job.since,
        "until": job.until,
        # Stored text, not parsed: the exact bytes SQLite holds, for an exact round trip.
        "json_columns": "text",
        "tables": [],
    }


def _select(db, table, since, until):
    """(column names, cursor) of a table's rows in rowid order, between since and until."""
    where, params = _where(table, since, until)
    cursor = db.conn.execute(f"SELECT * FROM [{table}]{where} ORDER BY rowid", params)
    return [d[0] for d in cursor.description], cursor


def _where(table, since, until):
    """The WHERE clause (or "") and its parameters: the table's own time between since and
    until; a table without a time is not filtered."""
    time = TIME[table]
    bounds = [(op, value) for op, value in ((">=", since), ("<=", until))
              if value is not None and time]
    clause = " AND ".join(f"{time} {op} ?" for op, _ in bounds)
    return (f" WHERE {clause}" if clause else ""), [value for _, value in bounds]


def _total(db, job, progress):
    """Tell progress how many rows job will write (one count per table)."""
    if progress is None:
        return
    total = 0
    for table in job.tables():
        where, params = _where(table, job.since, job.until)
        total += db.conn.execute(f"SELECT count(*) FROM [{table}]{where}", params).fetchone()[0]
    progress(0, total=total)


def _counting(rows, progress):
    """rows, reported to progress every 10,000."""
    if progress is None:
        return rows

    def counted():
        done = 0
        for done, row in enumerate(rows, 1):
            yield row
            if done % 10_000 == 0:
                progress(10_000)
        progress(done % 10_000)

    return counted()


@contextlib.contextmanager
def _unmapped(db):
    """Read through SQLite's small page cache instead of the memory map open_db sets: a scan
    reads each page once anyway, and mapped pages count as the process's memory (a table
    streamed to a file would look held in memory)."""
    (size,) = db.execute("PRAGMA mmap_size").fetchone()
    db.execute("PRAGMA mmap_size = 0")
    try:
        yield
    finally:
        db.execute(f"PRAGMA mmap_size = {int(size)}")


@contextlib.contextmanager
def _snapshot(db):
    """One read transaction: every table as of one moment, while others go on writing."""
    db.conn.execute("BEGIN")
    try:
        yield
    finally:
        db.conn.execute("ROLLBACK")


def backup(db, target, *, force=False, key=None):
    """A consistent copy of the whole file at target, taken while other processes write.

    VACUUM INTO writes the copy (one read transaction: every row committed before it began)
    into a temporary file created 0600 beside target; the copy must pass PRAGMA
    integrity_check and hold the same migrations; then it is renamed over target. On any
    failure the temporary file is removed. The copy is a single file (rollback journal, no
    -wal) and needs no sqlite-vec to open. The copy of an encrypted file is encrypted: with
    its key, or with key (a keys.Key) when given.

    Returns {file, bytes, rows, integrity_check}.
    """
    target = Path(target)
    if key is not None and db.key is None:
        raise InputError("--key-file of `export backup` is for the backup of an encrypted file; "
                         "this one is plain: encrypt the backup afterwards with `ravana-db --db "
                         "BACKUP --key-file PATH encrypt`")
    key = key or db.key
    check_file(target, force=force)
    _not_the_database(db, target)
    fd, temp = temp_file(target)
    made = os.fstat(fd)
    try:
        try:
            with _unmapped(db):
                db.execute("VACUUM INTO ?", [os.path.abspath(temp)])
        except driver().Error as e:
            raise RavanaError(f"cannot back up to {target}: {e}") from None
        still_ours(temp, made, doing=f"back up to {target}")
        if key is not db.key:
            _rekey(temp, db.key, key, target)
        rows = _check_copy(db, temp, target, key)
        sync(fd, target)
        publish(temp, target, force=force)
    except BaseException:
        remove_ours(temp, made)
        remove_ours(f"{temp}-journal")  # SQLite's, for the copy: left behind by a failed write
        raise
    finally:
        os.close(fd)
    return {"file": str(target), "bytes": os.path.getsize(target), "rows": rows,
            "integrity_check": "ok"}


def _rekey(temp, key, new_key, target):
    """The encrypted copy at temp, re-encrypted with new_key in place (it is not published
    yet)."""
    conn = driver().connect(f"{uri(Path(temp).absolute())}?mode=rw", uri=True)
    try:
        keyed(conn, key)
        conn.execute(f"PRAGMA rekey = {new_key.literal}")
    except driver().Error as e:
        raise RavanaError(f"cannot encrypt the backup to {target}: {e}") from None
    finally:
        conn.close()


def _check_copy(db, temp, target, key=None):
    """PRAGMA integrity_check and the migrations record of the copy (opened with key);
    returns its row count."""
    conn = driver().connect(f"{uri(Path(temp).absolute())}?mode=ro&immutable=1", uri=True)
    try:
        keyed(conn, key)
        problems = [line for (line,) in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise RavanaError(f"backup to {target} failed PRAGMA integrity_check: {problems[0]} "
                              f"({len(problems)} problem(s)); nothing was written")
        mine = [name for (name,) in db.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'ravana_db'")]
        copied = [name for (name,) in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = 'ravana_db'")]
        if copied != mine:
            raise RavanaError(f"backup to {target} lacks the database's migrations record; "
                              "nothing was written")
        return sum(conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in TABLES)
    except driver().Error as e:
        raise RavanaError(f"backup to {target} cannot be read back: {e}") from None
    finally:
        conn.close()


def _not_the_database(db, path):
    """Refuse to write over the database itself or its -wal, -shm or -journal."""
    if path is None:
        return
    main = os.path.realpath(db.execute("PRAGMA database_list").fetchone()[2] or "")
    if os.path.realpath(path) in {main, f"{main}-wal", f"{main}-shm", f"{main}-journal"}:
        raise InputError(f"{path} is the database itself: give another file")


