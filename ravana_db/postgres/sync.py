"""`ravana-db sync`: one-way, incremental replication of a file into PostgreSQL.

The file records which rows changed (schema/tracking.py). A sync sends them in batches: it
reads a batch in a short read transaction of the file, writes it in one server transaction
that also moves the file's position on the server (`ravana_file.position`), and only then
records that position in the file (where status reads the lag and old changes are purged).
The file's write lock is never held while the server is being talked to. A crash anywhere
leaves the server at a committed batch: the next run goes on from the server's position, and
sends again at most the batch that was in flight (upserts, so nothing doubles).

A file the server has not seen (or whose server copy no longer matches: the server restored
from an older backup, the file from an older copy) gets a full sync: every row is queued
again and the server's rows of the file are replaced.
"""

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..db import masked, transaction
from ..errors import InputError, RavanaError
from ..schema.tracking import TRACKED, install_tracking, key_sql
from ..times import now
from . import rows as values
from . import schema, tokens
from .server import connect, scrubbed

BATCH = 10_000  # changed rows per server transaction


@dataclass
class Report:
    """What one sync did."""

    server: str
    name: str
    file_id: str
    full: bool = False
    batches: int = 0
    rows: int = 0  # rows written (inserted or updated) on the server
    deleted: int = 0
    vectors: int = 0
    skipped: int = 0  # rows whose key the server cannot store
    position: int = 0
    seconds: float = 0.0
    pending: int = 0
    timings: dict = field(default_factory=dict)

    def as_row(self):
        return {"server": self.server, "name": self.name, "file_id": self.file_id,
                "full": self.full, "batches": self.batches, "rows": self.rows,
                "deleted": self.deleted, "vectors": self.vectors, "skipped": self.skipped,
                "position": self.position, "pending": self.pending,
                "seconds": round(self.seconds, 3)}


def identity(url):
    """A server's identity in the file: a hash of its URL without the password (so that a
    new password is the same server)."""
    import psycopg

    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise InputError(f"{masked(url)!r} is not a valid PostgreSQL URL") from None
    parts.pop("password", None)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def file_id(db):
    """The file's stable id on every server (made once, kept in meta)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'sync_file_id'").fetchone()
    if row is None:
        with transaction(db):
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('sync_file_id', ?)",
                       (str(uuid.uuid4()),))
        row = db.execute("SELECT value FROM meta WHERE key = 'sync_file_id'").fetchone()
    return row[0]


def _max_seq(db):
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sync_change'").fetchone()
    return row[0] if row else 0


def sync(db, path, url, *, name=None, batch=BATCH, progress=None):
    """Bring the server at url up to date with the file db (at path); returns a Report.

    Args:
        name: the file's name on the server (default: its stem); unique there.
        batch: changed rows per server transaction.
        progress: called with the report after each batch.
    """
    import psycopg

    if batch < 1:
        raise InputError("--batch must be 1 or more")
    name = name if name is not None else Path(path).stem
    if not name.strip():
        raise InputError("--name must not be empty")
    started = time.perf_counter()
    fid = file_id(db)
    report = Report(server=masked(url), name=name, file_id=fid)
    conn = connect(url)
    try:
        schema.migrate(conn)
        values.register(conn)
        _start(db, conn, url, report, path)
        tokens.retokenize(db, conn, report.file_id)  # docs synced before V2 (lane pgfts)
        while _batch(db, conn, url, report, batch):
            if progress:
                progress(report)
        _finish(db, conn, url, report)
    except psycopg.Error as e:
        raise RavanaError(f"sync to {report.server} failed: {scrubbed(e, url)}") from None
    finally:
        conn.close()
    report.seconds = time.perf_counter() - started
    return report


def _start(db, conn, url, report, path):
    """Register the server in the file and the file on the server; start a full sync when
    the server's copy cannot be continued."""
    key = identity(url)
    local = db.execute("SELECT position FROM sync_server WHERE url_hash = ?", (key,)).fetchone()
    with conn.transaction():
        other = conn.execute("SELECT file_id FROM ravana_file WHERE name = %s AND file_id <> %s",
                             (report.name, report.file_id)).fetchone()
        if other:
            raise InputError(f"the server already has another file named {report.name!r}: "
                             "give this one another --name")
        remote = conn.execute("SELECT position FROM ravana_file WHERE file_id = %s",
                              (report.file_id,)).fetchone()
    untracked = bool(local) and bool(_repair_tracking(db))
    if (local is None or remote is None or untracked or remote[0] < local[0]
            or remote[0] > _max_seq(db)):
        _full(db, conn, key, report, path)
    else:
        with conn.transaction():
            conn.execute("UPDATE ravana_file SET name = %s, path = %s WHERE file_id = %s",
                         (report.name, str(Path(path).resolve()), report.file_id))


def _repair_tracking(db):
    """Reinstall tracking triggers someone dropped (their changes went unrecorded)."""
    with transaction(db):
        return install_tracking(db)


def _full(db, conn, key, report, path):
    report.full = True
    with transaction(db):
        install_tracking(db)
        start = _max_seq(db)
        db.execute("INSERT INTO sync_server (url_hash, url, name, position) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (url_hash) DO UPDATE SET url = excluded.url, "
                   "name = excluded.name, position = excluded.position",
                   (key, report.server, report.name, start))
        for table in TRACKED:
            if table != "doc_vec":
                db.execute(f"INSERT OR REPLACE INTO sync_change (tbl, key) "
                           f"SELECT '{table}', {key_sql(table, 't')} FROM [{table}] t")
        queued = _max_seq(db)
    with conn.transaction():
        conn.execute("DELETE FROM ravana_file WHERE file_id = %s", (report.file_id,))
        conn.execute("INSERT INTO ravana_file (file_id, name, path, position, bulk_until) "
                     "VALUES (%s, %s, %s, %s, %s)",
                     (report.file_id, report.name, str(Path(path).resolve()), start, queued))
        # Into an empty search table, the vectors go faster without their index, built once
        # at the end (_finish).
        if not conn.execute("SELECT EXISTS (SELECT 1 FROM doc)").fetchone()[0]:
            conn.execute(f"DROP INDEX IF EXISTS {schema.HNSW}")


def _batch(db, conn, url, report, limit):
    """Send the next batch of changes; False when there was none."""
    with conn.transaction():
        row = conn.execute("SELECT position, bulk_until FROM ravana_file WHERE file_id = %s "
                           "FOR UPDATE", (report.file_id,)).fetchone()
        if row is None:
            raise RavanaError(f"the file {report.name!r} was removed from the server during "
                              "the sync: run sync again")
        position, bulk_until = row
        # The rows a full sync queued (seqs up to bulk_until) are each queued once and were
        # never sent since the server's copy was emptied: a table keyed by id takes them by
        # plain COPY. A batch stops at bulk_until, so no row sent before is among them.
        bulk = position < bulk_until
        changes = read_batch(db, position, limit, until=bulk_until if bulk else None)
        if changes is None:
            report.position = position
            return False
        last, tables = changes
        for table, (upserts, gone) in tables.items():
            write(conn, table, report, upserts, gone, bulk=bulk)
        conn.execute("UPDATE ravana_file SET position = %s, last_sync_at = now() "
                     "WHERE file_id = %s", (last, report.file_id))
    _advance(db, url, last)
    report.batches += 1
    report.position = last
    return True


def _advance(db, url, position):
    """Record in the file the position the server committed, and purge the changes every
    registered server has."""
    with transaction(db):
        db.execute("UPDATE sync_server SET position = max(position, ?), last_sync_at = ? "
                   "WHERE url_hash = ?", (position, now(), identity(url)))
        db.execute("DELETE FROM sync_change WHERE seq <= (SELECT min(position) FROM sync_server)")


def _finish(db, conn, url, report):
    with conn.transaction():
        conn.execute("UPDATE ravana_file SET last_sync_at = now() WHERE file_id = %s",
                     (report.file_id,))
    tokens.settle(conn)  # the words' GIN pending list, merged (lane pgfts)
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (schema.HNSW,)).fetchone()[0]:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            conn.execute(schema.VECTOR_INDEX)
        report.timings["vector_index"] = time.perf_counter() - started
    _advance(db, url, report.position)
    report.pending = pending(db, report.position)


def pending(db, position):
    return db.execute("SELECT count(*) FROM sync_change WHERE seq > ?", (position,)).fetchone()[0]


def read_batch(db, position, limit, *, until=None):
    """The next `limit` changes after position (up to seq `until`, if given), in one read
    transaction of the file: (the last seq, {table: (rows to upsert, keys deleted)}), or None
    when there are none."""
    db.conn.execute("BEGIN")
    try:
        bound = "" if until is None else f" AND seq <= {int(until)}"
        last = db.execute(f"SELECT max(seq) FROM (SELECT seq FROM sync_change WHERE seq > ?"
                          f"{bound} ORDER BY seq LIMIT ?)", (position, limit)).fetchone()[0]
        if last is None:
            return None
        tables = [t for (t,) in db.execute(
            "SELECT DISTINCT tbl FROM sync_change WHERE seq > ? AND seq <= ?", (position, last))]
        return last, {t: _read_table(db, t, position, last) for t in tables if t in TRACKED}
    finally:
        db.conn.execute("COMMIT")


def _join(table):
    keys = schema.key(table)
    if keys == ("id",):
        return "t.id = c.key"
    return " AND ".join(f"t.[{k}] = json_extract(c.key, '$[{i}]')" for i, k in enumerate(keys))


def _read_table(db, table, position, last):
    names = [n for n, _ in schema.columns(table)]
    cols = ", ".join(f"t.[{n}]" for n in names)
    # +c.tbl: the seq range (rowid) drives the read, not the (tbl, key) index.
    where = "c.seq > ? AND c.seq <= ? AND +c.tbl = ?"
    extra = ", v.embedding" if table == "doc" else ""
    vec = " LEFT JOIN doc_vec v ON v.doc_id = t.id" if table == "doc" else ""
    found = db.execute(f"SELECT {cols}{extra} FROM sync_change c JOIN [{table}] t "
                       f"ON {_join(table)}{vec} WHERE {where}", (position, last, table)).fetchall()
    gone = [k for (k,) in db.execute(
        f"SELECT c.key FROM sync_change c WHERE {where} AND NOT EXISTS "
        f"(SELECT 1 FROM [{table}] t WHERE {_join(table)})", (position, last, table))]
    return found, gone


def _server_key(table, key):
    """A deleted row's key (as sync_change holds it) in the server's types, or None."""
    kinds = dict(schema.columns(table))
    names = schema.key(table)
    parts = [key] if names == ("id",) else json.loads(key)
    converted = [values.converter(kinds[n])(v) for n, v in zip(names, parts)]
    return None if None in converted else tuple(converted)


def write(conn, table, report, found, gone, *, bulk=False):
    """Delete gone keys and upsert found rows of table, inside the caller's transaction
    (`bulk`: rows known to be absent from the server, COPYed straight into an id table)."""
    fid = report.file_id
    names = [n for n, _ in schema.columns(table)]
    keys = schema.key(table)
    gone = [k for k in (_server_key(table, key) for key in gone) if k is not None]
    if gone:
        kinds = dict(schema.columns(table))
        arrays = [list(col) for col in zip(*gone)]
        casts = ", ".join(f"%s::{'bigint' if kinds[k] == 'BIGINT' else 'text'}[]" for k in keys)
        match = " AND ".join(f"t.{schema.quoted(k)}::{'bigint' if kinds[k] == 'BIGINT' else 'text'}"
                             f" = g.{schema.quoted(k)}" for k in keys)
        cur = conn.execute(
            f"DELETE FROM {schema.quoted(table)} t USING unnest({casts}) AS g("
            f"{', '.join(schema.quoted(k) for k in keys)}) WHERE t.file_id = %s AND {match}",
            (*arrays, fid))
        report.deleted += cur.rowcount
    if not found:
        return
    convert = values.converters(table)
    positions = [names.index(k) for k in keys]
    embeddings = values.vectors([row[-1] for row in found], schema.DIM) \
        if table == "doc" else None
    # doc's word columns (tsv, tokens): the file's own tokens of the file's text (lane pgfts)
    word_columns = tokens.doc_columns([row[names.index("text")] for row in found]) \
        if table == "doc" else None
    file_uuid = uuid.UUID(fid)
    staged = []
    for i, row in enumerate(found):
        converted = [f(v) for f, v in zip(convert, row)]
        if any(converted[p] is None for p in positions):
            report.skipped += 1
            continue
        if embeddings is not None:
            converted.append(embeddings[i])
            report.vectors += embeddings[i] is not None
        if word_columns is not None:
            converted.extend(word_columns[i])
        staged.append([file_uuid, *converted])
    if embeddings is not None:
        names = [*names, "embedding", "tsv", "tokens"]
    if bulk and keys == ("id",):
        _copy(conn, table, table, names, staged)
    else:
        _upsert(conn, table, names, keys, staged)
    report.rows += len(staged)


def _upsert(conn, table, names, keys, staged):
    q = schema.quoted
    stage = q(f"stage_{table}")
    cols = ", ".join(q(n) for n in ("file_id", *names))
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                 f"SELECT {cols} FROM {q(table)} WITH NO DATA")
    _copy(conn, f"stage_{table}", table, names, staged)
    pk = ", ".join(q(k) for k in ("file_id", *keys))
    updates = ", ".join(f"{q(n)} = excluded.{q(n)}" for n in names if n not in keys)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    # Integer ids are unique in a batch; text keys may meet once their NULs are dropped.
    rows = f"SELECT {cols} FROM {stage}" if keys == ("id",) else \
        f"SELECT DISTINCT ON ({pk}) {cols} FROM {stage} ORDER BY {pk}"
    conn.execute(f"INSERT INTO {q(table)} ({cols}) {rows} ON CONFLICT ({pk}) {action}")


def _copy(conn, target, table, names, staged):
    """Binary COPY of staged rows (file_id, names...) of table into target."""
    q = schema.quoted
    cols = ", ".join(q(n) for n in ("file_id", *names))
    with conn.cursor().copy(f"COPY {q(target)} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(values.copy_types(conn, table))
        for row in staged:
            copy.write_row(row)


def lag(db):
    """Per server this file is synced to: its name there, rows changed since its last sync,
    and when that was (for `status`)."""
    present = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sync_server'").fetchone()
    if not present:
        return []
    servers = db.execute("SELECT url, name, position, last_sync_at FROM sync_server "
                         "ORDER BY id").fetchall()
    out = []
    for url, name, position, last in servers:
        out.append({"server": url, "name": name, "pending_rows": pending(db, position),
                    "last_sync_at": last, "seconds_since_sync": _age(last)})
    return out


def _age(stamp):
    from datetime import datetime, timezone

    from ..times import from_iso

    try:
        return round((datetime.now(timezone.utc) - from_iso(stamp)).total_seconds(), 1)
    except (TypeError, ValueError):
        return None
