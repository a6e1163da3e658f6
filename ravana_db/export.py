"""`ravana-db export`: the agent's tables as JSON, JSON lines, CSV or markdown, and a consistent
copy of the whole file.

Rows stream from one cursor straight to the output, so a table of any size takes the same
memory. A file (or, for every table, a folder) is written under a temporary name beside its
target and renamed into place only when complete: a failure leaves nothing behind.

Values are written as stored: JSON columns stay the exact JSON text SQLite holds (a string in
JSON output), so an export read back gives the same rows byte for byte.
"""

import base64
import contextlib
import csv
import difflib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .db import driver, now, parse_time, remove_ours, still_ours, uri
from .errors import InputError, RavanaError
from .schema import TABLES, migrations
from .text import FORMULA_START, csv_cell

FORMATS = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "markdown": ".md"}
SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
            ".md": "markdown", ".markdown": "markdown"}
MANIFEST = "manifest.json"
EXPORT_VERSION = 1

# The time that --since/--until compare with, per table (stored as ISO text, which compares as
# time). Link tables and feeds have none.
TIME = {
    "feed": None,
    "article": "coalesce(published, fetched_at)",
    "event": "timestamp",
    "event_article": None,
    "summary": "timestamp",
    "actionlog": "timestamp",
    "moodlog": "timestamp",
    "situationlog": "timestamp",
    "decisionlog": "timestamp",
    "experimentlog": "timestamp",
    "memory": "created_at",
    "very_long_term_memories": "created_at",
    "memory_patterns": "discovered_at",
    "memory_consolidations": "consolidation_date",
    "strategic_knowledge": "last_updated",
    "consolidation_patterns": None,
    "pattern_strategic_knowledge": None,
    "consolidation_metrics": "timestamp",
    "retention_policies": "updated_at",
    "memory_link": "created_at",
    "memory_merge": None,
    "consolidation_policy": "updated_at",
}
assert set(TIME) == set(TABLES)


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
        table: one of schema.TABLES, or "all" (then output is a folder).
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
            _check_folder(self.output, force=force, names=self.files())
        else:
            if (since or until) and TIME[self.table] is None:
                timed = ", ".join(t for t in TABLES if TIME[t])
                raise InputError(f"{self.table} has no time column: --since/--until cannot "
                                 f"filter it (they can: {timed})")
            if self.output is not None:
                _check_file(self.output, force=force)

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
            _total(db, job, progress)
            columns, rows = _select(db, job.table, job.since, job.until)
            rows = _counting(rows, progress)
            if job.output is None:
                count = WRITERS[job.fmt](out or sys.stdout, columns, rows)
            else:
                with _new_file(job.output, force=job.force) as f:
                    count = WRITERS[job.fmt](f, columns, rows)
            return {"table": job.table, "format": job.fmt, "rows": count,
                    "file": str(job.output) if job.output else None}
        with _new_folder(job.output, force=job.force) as folder, _snapshot(db):
            manifest = _manifest(db, job)
            _total(db, job, progress)
            for table in job.tables():
                columns, rows = _select(db, table, job.since, job.until)
                name = table + FORMATS[job.fmt]
                with _private(folder / name, job.output / name) as f:
                    count = WRITERS[job.fmt](f, columns, _counting(rows, progress))
                manifest["tables"].append({
                    "table": table, "file": name, "rows": count, "columns": columns,
                    "time": TIME[table], "filtered": bool(TIME[table] and (job.since or job.until))})
            with _private(folder / MANIFEST, job.output / MANIFEST) as f:
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


_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _json_row(columns, row):
    record = dict(zip(columns, row))
    try:
        return _encode(record)
    except (TypeError, ValueError):  # a BLOB or an infinite REAL: only a plain client stores one
        return "{" + ", ".join(f"{_encode(k)}: {_json_value(v)}" for k, v in record.items()) + "}"


def _json_value(value):
    """One value as JSON: a BLOB as sqlite-utils writes it, infinity as SQLite's json() does."""
    if isinstance(value, bytes):
        return _encode({"$base64": True, "encoded": base64.b64encode(value).decode()})
    if isinstance(value, float) and math.isinf(value):
        return "9e999" if value > 0 else "-9e999"
    return _encode(value)


def _write_json(out, columns, rows):
    count = 0
    for count, row in enumerate(rows, 1):
        out.write(",\n  " if count > 1 else "[\n  ")
        out.write(_json_row(columns, row))
    out.write("\n]\n" if count else "[]\n")
    return count


def _write_jsonl(out, columns, rows):
    count = 0
    for count, row in enumerate(rows, 1):
        out.write(_json_row(columns, row))
        out.write("\n")
    return count


def _write_csv(out, columns, rows):
    """RFC 4180 CSV with a header. NULL is an empty field, empty text a quoted empty field
    (`""`, PostgreSQL's convention); numbers as Python writes them, which read back exactly;
    text that a spreadsheet would run as a formula starts with `'` (text.csv_cell)."""
    writer = csv.writer(out)
    writer.writerow(map(csv_cell, columns))
    count = 0
    for count, row in enumerate(rows, 1):
        for value in row:  # csv_cell's test inline: a call per cell would slow every row
            if value.__class__ is str and value[:1] in FORMULA_START:
                row = tuple(map(csv_cell, row))
                break
        if "" in row or bytes in map(type, row):
            out.write(",".join(map(_csv_field, row)) + "\r\n")
        else:
            writer.writerow(row)
    return count


def _csv_field(value):
    if value is None:
        return ""
    text = _text(value)
    if text == "" or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _text(value):
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


# A cell reads back exactly and renders as the text: `|` and `\` are backslash-escaped, a line
# break is <br>, and `&`, `<` and CR are entities so that none of these can be taken for another.
_MARKDOWN = str.maketrans({"\\": "\\\\", "|": "\\|", "&": "&amp;", "<": "&lt;", "\r": "&#13;",
                           "\n": "<br>"})


def _cell(value):
    return "" if value is None else _text(value).translate(_MARKDOWN)


def _write_markdown(out, columns, rows):
    """A GitHub-flavoured markdown table. NULL and empty text are both an empty cell."""
    out.write("| " + " | ".join(map(_cell, columns)) + " |\n")
    out.write("|" + " --- |" * len(columns) + "\n")
    count = 0
    for count, row in enumerate(rows, 1):
        out.write("| " + " | ".join(map(_cell, row)) + " |\n")
    return count


WRITERS = {"json": _write_json, "jsonl": _write_jsonl, "csv": _write_csv,
           "markdown": _write_markdown}


def backup(db, target, *, force=False):
    """A consistent copy of the whole file at target, taken while other processes write.

    VACUUM INTO writes the copy (one read transaction: every row committed before it began)
    into a temporary file created 0600 beside target; the copy must pass PRAGMA
    integrity_check and hold the same migrations; then it is renamed over target. On any
    failure the temporary file is removed. The copy is a single file (rollback journal, no
    -wal) and needs no sqlite-vec to open.

    Returns {file, bytes, rows, integrity_check}.
    """
    target = Path(target)
    _check_file(target, force=force)
    _not_the_database(db, target)
    fd, temp = _temp_file(target)
    made = os.fstat(fd)
    try:
        try:
            with _unmapped(db):
                db.execute("VACUUM INTO ?", [os.path.abspath(temp)])
        except driver().Error as e:
            raise RavanaError(f"cannot back up to {target}: {e}") from None
        still_ours(temp, made, doing=f"back up to {target}")
        rows = _check_copy(db, temp, target)
        _sync(fd, target)
        _publish(temp, target, force=force)
    except BaseException:
        remove_ours(temp, made)
        remove_ours(f"{temp}-journal")  # SQLite's, for the copy: left behind by a failed write
        raise
    finally:
        os.close(fd)
    return {"file": str(target), "bytes": os.path.getsize(target), "rows": rows,
            "integrity_check": "ok"}


def _check_copy(db, temp, target):
    """PRAGMA integrity_check and the migrations record of the copy; returns its row count."""
    conn = driver().connect(f"{uri(Path(temp).absolute())}?mode=ro&immutable=1", uri=True)
    try:
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


def _check_file(path, *, force):
    """Refuse an output file whose folder is missing, that is a folder, or that exists
    (without force)."""
    _check_parent(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a file name (a folder is for `export all`)")
    if os.path.lexists(path) and not force:
        raise InputError(f"{path} exists: pass --force to replace it")


def _check_folder(path, *, force, names):
    """Refuse an output folder whose parent is missing, that is a file or a link, that holds
    anything (without force), or (with force) holds a folder where a file of names goes."""
    _check_parent(path)
    if path.is_symlink():
        raise InputError(f"{path} is a symlink: give the folder's own path")
    if os.path.lexists(path) and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder")
    entries = sorted(os.listdir(path)) if path.is_dir() else []
    if entries and not force:
        raise InputError(f"{path} is not empty: pass --force to replace an earlier export there")
    for name in names:
        if (path / name).is_dir():
            raise InputError(f"{path / name} is a folder, where the export writes a file: move "
                             "it, or give another folder")


def _check_parent(path):
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")


def _not_the_database(db, path):
    """Refuse to write over the database itself or its -wal, -shm or -journal."""
    if path is None:
        return
    main = os.path.realpath(db.execute("PRAGMA database_list").fetchone()[2] or "")
    if os.path.realpath(path) in {main, f"{main}-wal", f"{main}-shm", f"{main}-journal"}:
        raise InputError(f"{path} is the database itself: give another file")


def _temp_file(target):
    """A new empty file beside target: 0600, O_EXCL|O_NOFOLLOW (mkstemp). Returns (fd, path)."""
    try:
        return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"cannot write {target}: {_why(e)}") from None


def _why(error):
    return (error.strerror or str(error)).lower()


def _sync(fd, target):
    try:
        os.fsync(fd)
    except OSError as e:
        raise RavanaError(f"cannot write {target}: {_why(e)}") from None


def _publish(temp, target, *, force):
    """Rename temp to target; without force never over a file that appeared meanwhile."""
    try:
        if force:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # fails if target exists, unlike rename
            except FileExistsError:
                raise InputError(f"{target} exists: pass --force to replace it") from None
            except OSError:  # a file system without hard links
                if os.path.lexists(target):
                    raise InputError(f"{target} exists: pass --force to replace it") from None
                os.replace(temp, target)
            else:
                os.unlink(temp)
        _sync_folder(target.parent)
    except OSError as e:
        raise RavanaError(f"cannot write {target}: {_why(e)}") from None


def _sync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _new_file(path, *, force):
    """A text file that appears at path, complete, only if the block succeeds."""
    fd, temp = _temp_file(path)
    made = os.fstat(fd)
    try:
        with _writing(path), os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        still_ours(temp, made, doing=f"write {path}")
        _publish(temp, path, force=force)
    except BaseException:
        remove_ours(temp, made)
        raise


@contextlib.contextmanager
def _private(path, shown):
    """A new 0600 text file inside our own temporary folder (shown: its name in messages)."""
    with _writing(shown):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def _writing(path):
    """A failed write (a full disk, a file size limit) as one line."""
    try:
        yield
    except OSError as e:
        raise RavanaError(f"cannot write {path}: {_why(e)}") from None


@contextlib.contextmanager
def _new_folder(path, *, force):
    """A folder that appears at path, complete, only if the block succeeds: written as a
    temporary folder beside it (0700), then renamed; an earlier export there (with force) is
    moved aside and removed only once the new one is in place."""
    try:
        temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise InputError(f"cannot write {path}: {_why(e)}") from None
    try:
        yield temp
        with _writing(path):
            _sync_folder(temp)
            _move_in(temp, path, force=force)
            _sync_folder(path.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _move_in(temp, path, *, force):
    """Put the files written in temp at path: the folder renamed, where path is new or empty;
    else (with force) each file renamed over its namesake, the manifest removed first and
    renamed last (a folder left without one is never read as a complete export), and nothing
    else in the folder touched."""
    try:
        os.rename(temp, path)  # over nothing, or over an empty folder
        return
    except OSError as e:
        if not (force and path.is_dir() and os.listdir(path)):
            if os.path.isdir(path) and os.listdir(path):
                raise InputError(f"{path} is not empty: pass --force to replace an earlier "
                                 "export there") from None
            raise RavanaError(f"cannot write {path}: {_why(e)}") from None
    names = sorted(os.listdir(temp), key=lambda name: name == MANIFEST)
    _check_folder(path, force=True, names=names)  # still no folder in the way
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / MANIFEST)
    for name in names:
        os.replace(temp / name, path / name)
    os.rmdir(temp)
    _sync_folder(path)
