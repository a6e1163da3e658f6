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
import sys
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
from .write import Part, send

BATCH = 10_000  # changed rows per server transaction
INDEX_BYTES = 3000  # maintenance_work_mem per vector while the HNSW index is built
INDEX_MEMORY = 4 << 30  # at most this (a server's own larger setting is kept)
SWITCH_INTERVAL = 0.0005  # seconds: sys.setswitchinterval while a batch is sent and read


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
        # One sync of a file at a time per server: a second waits, then finds nothing to do.
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (schema.LOCK, fid))
        schema.migrate(conn)
        key = _start(db, conn, url, report, path)
        tokens.retokenize(db, conn, report.file_id)  # docs synced before server schema V2
        _timed(report, "start", started)
        _pipeline(db, conn, key, report, batch, progress)
        _finish(db, conn, key, report)
    except psycopg.Error as e:
        raise RavanaError(f"sync to {report.server} failed: {scrubbed(e, url)}") from None
    finally:
        conn.close()
    report.seconds = time.perf_counter() - started
    return report


def _start(db, conn, url, report, path):
    """Register the server in the file and the file on the server; start a full sync when
    the server's copy cannot be continued. Returns the server's identity in the file."""
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
    return key


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


def _pipeline(db, conn, key, report, limit, progress):
    """Send every change after the server's position, a batch at a time: while a thread sends
    batch N (psycopg lets go of the GIL while it waits on the server), this one reads and
    encodes batch N+1. Batch N+1 is sent only once N's transaction has committed, and the file
    records a position only after the server has committed it."""
    from concurrent.futures import ThreadPoolExecutor  # not on status's path, which imports lag

    with conn.transaction():
        row = conn.execute("SELECT position, bulk_until FROM ravana_file WHERE file_id = %s",
                           (report.file_id,)).fetchone()
    if row is None:
        raise RavanaError(f"the file {report.name!r} was removed from the server during "
                          "the sync: run sync again")
    position, bulk_until = row
    report.position = position
    previous = sys.getswitchinterval()
    # Short switches: the sender thread gets the GIL back as soon as the server answers.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool, \
                ThreadPoolExecutor(max_workers=1) as words:
            sending = None
            # A small first batch: the server starts sooner, and the others overlap it.
            ahead = _read(db, report, position, max(1, limit // 5), bulk_until, words)
            while True:
                # Read one batch ahead: its docs' words are made (in C, by SQLite, in the
                # words thread) while this one is encoded and the last one is sent.
                following = ahead and _read(db, report, ahead.last, limit, bulk_until, words)
                batch = ahead and _encode(report, ahead)
                sent = _wait(report, *sending) if sending else None
                # The next batch goes to the server before the file records the last one:
                # that short write transaction never waits on the server.
                sending = (batch, pool.submit(_send, conn, report, batch)) if batch else None
                if sent:
                    _record(db, key, report, *sent)
                    if progress:
                        progress(report)
                if batch is None:
                    return
                ahead = following
    finally:
        sys.setswitchinterval(previous)


@dataclass
class Batch:
    """The changes after seq start up to seq last as read from the file ({table: (rows to
    upsert, keys deleted)}, its docs' words being made: a Future), then encoded ({table:
    write.Part})."""

    start: int
    last: int
    bulk: bool
    tables: dict
    words: object = None
    parts: dict = None


def _read(db, report, position, limit, bulk_until, words):
    """Read the next changes from the file and start making their docs' words in the
    executor words; None when there is none."""
    # The rows a full sync queued (seqs up to bulk_until) are each queued once and were never
    # sent since the server's copy was emptied: a table keyed by id takes them by plain COPY.
    # A batch stops at bulk_until, so no row sent before is among them.
    bulk = position < bulk_until
    started = time.perf_counter()
    changes = read_batch(db, position, limit, until=bulk_until if bulk else None)
    _timed(report, "read", started)
    if changes is None:
        return None
    last, tables = changes
    docs = tables.get("doc", ((), ()))[0]
    return Batch(position, last, bulk, tables,
                 words.submit(values.doc_words, docs) if docs else None)


def _encode(report, batch):
    """The batch, encoded for the server."""
    started = time.perf_counter()
    fid = uuid.UUID(report.file_id)
    batch.parts = {}
    for table, (found, gone) in batch.tables.items():
        words = batch.words.result() if table == "doc" and found else None
        data, rows, vectors, skipped = values.encode(table, found, fid, words) if found else \
            (b"", 0, 0, 0)
        batch.parts[table] = Part(data, rows, vectors, skipped, gone)
    batch.tables = batch.words = None  # the payloads hold what is sent
    _timed(report, "encode", started)
    return batch


def _send(conn, report, batch):
    """The server side of one batch (in the sender thread): (written, deleted, seconds)."""
    started = time.perf_counter()
    written, deleted = send(conn, batch.parts, file_id=report.file_id, name=report.name,
                            start=batch.start, last=batch.last, bulk=batch.bulk)
    return written, deleted, time.perf_counter() - started


def _wait(report, batch, future):
    """Wait for batch's server transaction to commit: (batch, written, deleted)."""
    started = time.perf_counter()
    written, deleted, seconds = future.result()
    _timed(report, "wait", started)
    report.timings["send"] = report.timings.get("send", 0.0) + seconds
    return batch, written, deleted


def _record(db, key, report, batch, written, deleted):
    """Record a batch the server committed in the report and in the file."""
    report.rows += written
    report.deleted += deleted
    report.vectors += sum(p.vectors for p in batch.parts.values())
    report.skipped += sum(p.skipped for p in batch.parts.values())
    started = time.perf_counter()
    _advance(db, key, batch.last)
    _timed(report, "advance", started)
    report.batches += 1
    report.position = batch.last


def _timed(report, step, started):
    report.timings[step] = report.timings.get(step, 0.0) + time.perf_counter() - started


def _advance(db, key, position):
    """Record in the file the position the server committed, and purge the changes every
    registered server has."""
    with transaction(db):
        db.execute("UPDATE sync_server SET position = max(position, ?), last_sync_at = ? "
                   "WHERE url_hash = ?", (position, now(), key))
        db.execute("DELETE FROM sync_change WHERE seq <= (SELECT min(position) FROM sync_server)")


def _finish(db, conn, key, report):
    with conn.transaction():
        conn.execute("UPDATE ravana_file SET last_sync_at = now() WHERE file_id = %s",
                     (report.file_id,))
    tokens.settle(conn)  # the words' GIN pending list, merged (lane pgfts)
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (schema.HNSW,)).fetchone()[0]:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(f"SET LOCAL maintenance_work_mem = '{index_memory(conn)}kB'")
            conn.execute(schema.VECTOR_INDEX)
        report.timings["vector_index"] = time.perf_counter() - started
    _advance(db, key, report.position)
    report.pending = pending(db, report.position)


def index_memory(conn):
    """maintenance_work_mem (kB) for building the HNSW index: room for the whole graph
    (pgvector took 2,251 B per 384-dim vector here; a graph that no longer fits goes on
    building on disk: 40k random vectors took 172 s that way, 24.5 s in memory), at most
    INDEX_MEMORY, never below the server's own setting."""
    vectors = conn.execute("SELECT count(*) FROM doc WHERE embedding IS NOT NULL").fetchone()[0]
    current = conn.execute("SELECT setting::bigint FROM pg_settings "
                           "WHERE name = 'maintenance_work_mem'").fetchone()[0]
    return max(current, min(vectors * INDEX_BYTES // 1024, INDEX_MEMORY // 1024))


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


# Columns the server keeps as they were before the file kept less (m015): a consolidated
# memory's run as its id (the file keeps the run's number in the file).
SERVER_VALUES = {("memory", "consolidated_in"): "(SELECT consolidation_id FROM "
                 "memory_consolidations WHERE id = t.consolidated_in)"}


def _read_table(db, table, position, last):
    names = [n for n, _ in schema.columns(table)]
    cols = ", ".join(SERVER_VALUES.get((table, n), f"t.[{n}]") for n in names)
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
