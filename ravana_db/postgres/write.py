"""The server side of one sync batch: one transaction that checks the file's position, deletes
the rows the file no longer has, COPYs the batch's rows (encoded by rows.encode) straight into
their table or through a temp table and an upsert, and moves the position."""

import json
from dataclasses import dataclass, field

from ..errors import RavanaError
from . import rows as values
from . import schema


@dataclass
class Part:
    """One table's share of a batch: its rows as a COPY payload, and the keys deleted."""

    data: bytes = b""
    rows: int = 0
    vectors: int = 0
    skipped: int = 0
    gone: list = field(default_factory=list)


def send(conn, parts, *, file_id, name, start, last, bulk):
    """Write one batch (parts: {table: Part}) and move the file's position from start to last,
    in one server transaction; returns (rows written, rows deleted).

    bulk: the rows are known to be absent from the server (a full sync's first pass), so a
    table keyed by id takes them by plain COPY.
    """
    written = deleted = 0
    with conn.transaction():
        row = conn.execute("SELECT position FROM ravana_file WHERE file_id = %s FOR UPDATE",
                           (file_id,)).fetchone()
        if row is None:
            raise RavanaError(f"the file {name!r} was removed from the server during the sync: "
                              "run sync again")
        if row[0] != start:
            raise RavanaError(f"another sync moved the file {name!r} on the server during "
                              "this one: run sync again")
        for table, part in parts.items():
            deleted += delete(conn, table, file_id, part.gone)
            if part.rows:
                if bulk and schema.key(table) == ("id",):
                    copy(conn, table, table, part.data)
                else:
                    upsert(conn, table, part.data)
                written += part.rows
        conn.execute("UPDATE ravana_file SET position = %s, last_sync_at = now() "
                     "WHERE file_id = %s", (last, file_id))
    return written, deleted


def server_key(table, key):
    """A deleted row's key (as sync_change holds it) in the server's types, or None."""
    kinds = dict(schema.columns(table))
    names = schema.key(table)
    parts = [key] if names == ("id",) else json.loads(key)
    converted = [values.converter(kinds[n])(v) for n, v in zip(names, parts)]
    return None if None in converted else tuple(converted)


def delete(conn, table, file_id, gone):
    """Delete the file's rows of table with the gone keys; returns how many were deleted."""
    gone = [k for k in (server_key(table, key) for key in gone) if k is not None]
    if not gone:
        return 0
    q = schema.quoted
    kinds = dict(schema.columns(table))
    keys = schema.key(table)
    types = {k: "bigint" if kinds[k] == "BIGINT" else "text" for k in keys}
    casts = ", ".join(f"%s::{types[k]}[]" for k in keys)
    match = " AND ".join(f"t.{q(k)}::{types[k]} = g.{q(k)}" for k in keys)
    cur = conn.execute(
        f"DELETE FROM {q(table)} t USING unnest({casts}) AS g("
        f"{', '.join(q(k) for k in keys)}) WHERE t.file_id = %s AND {match}",
        (*[list(col) for col in zip(*gone)], file_id))
    return cur.rowcount


def _columns(table):
    return ", ".join(schema.quoted(n) for n in ("file_id", *(n for n, _ in
                                                              values.copy_columns(table))))


def copy(conn, target, table, data):
    """One binary COPY of data (rows.encode's payload for table) into target."""
    with conn.cursor().copy(f"COPY {schema.quoted(target)} ({_columns(table)}) "
                            "FROM STDIN (FORMAT BINARY)") as out:
        out.write(data)


def upsert(conn, table, data):
    """COPY data into a temp table, then insert it into table, updating the rows it has."""
    q = schema.quoted
    stage = f"stage_{table}"
    cols = _columns(table)
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {q(stage)} ON COMMIT DELETE ROWS AS "
                 f"SELECT {cols} FROM {q(table)} WITH NO DATA")
    copy(conn, stage, table, data)
    keys = schema.key(table)
    pk = ", ".join(q(k) for k in ("file_id", *keys))
    names = [n for n, _ in values.copy_columns(table)]
    updates = ", ".join(f"{q(n)} = excluded.{q(n)}" for n in names if n not in keys)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    # Integer ids are unique in a batch; text keys may meet once their NULs are dropped.
    rows = f"SELECT {cols} FROM {q(stage)}" if keys == ("id",) else \
        f"SELECT DISTINCT ON ({pk}) {cols} FROM {q(stage)} ORDER BY {pk}"
    conn.execute(f"INSERT INTO {q(table)} ({cols}) {rows} ON CONFLICT ({pk}) {action}")
