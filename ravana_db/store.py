"""The one write path: validate, embed outside any transaction, then write briefly.

Every command that stores rows (log, and ingest, consolidate, compress and import as they
come) calls write(). Embedding takes seconds; the write lock is taken only for the inserts,
so cron jobs, the agent and queries can share the file.
"""

import functools

from .db import transaction
from .errors import InputError, RecordError
from .index import apply, prepare
from .sql import driver
from .tables import SEARCHABLE

BY_TABLE = {spec["table"]: (kind, spec) for kind, spec in SEARCHABLE.items()}


def write(db, records, *, kind=None, embedder=None, progress=None, statements=()):
    """Store records, all or nothing.

    1. Validate them (records given as dicts, when `kind` names their models.KINDS entry).
    2. Embed the searchable text that has no vector yet, outside any transaction.
    3. In one short BEGIN IMMEDIATE transaction, insert or update each row by its identity
       and store its vectors: a row and its vectors commit together.

    Args:
        records: models.Record instances, or dicts with kind=.
        embedder: an embed.Embedder; None leaves new text queued (found by words only until
            the next write or `reindex`).
        progress: called with the number of texts embedded after each batch.
        statements: (sql, params) run in the same transaction after the records, for rows
            that refer to them by natural keys (an event's links to its articles); or a
            function given the results (ids included) that returns them.

    Returns:
        One dict per record: its `id` (and `key` for memories) and `status`: inserted,
        updated, or existing (kept as it was: a summary whose text is already stored, or a
        row that the record would not change).

    Raises:
        RecordError: a record is invalid or conflicts with the stored data; `.index` says which.
    """
    records = [_validated(record, kind, index) for index, record in enumerate(records)]
    rows = [(record.row(), record.row(partial=True)) for record in records]
    prepared = None
    if embedder is not None:
        stored, columns = _stored(db, records, rows), {}
        texts = [_search_text(db, record, row, stored, columns)
                 for record, row in zip(records, rows)]
        prepared = prepare(db, embedder, [t for t in texts if t is not None], progress=progress)
    results = []
    with transaction(db):
        stored = _stored(db, records, rows)
        for index, (record, row) in enumerate(zip(records, rows)):
            try:
                results.append(_write_one(db, record, row, stored, index))
            except driver().IntegrityError as e:
                raise RecordError(index, str(e)) from None
        for sql, params in statements(results) if callable(statements) else statements:
            db.execute(sql, params)
        if prepared is not None:
            apply(db, prepared, _doc_ids(db, records, results))
    return results


def _validated(record, kind, index):
    from .models import KINDS, Record, validate

    if isinstance(record, Record):
        return record
    if kind not in KINDS:
        raise ValueError(f"records given as dicts need kind= one of {', '.join(KINDS)}")
    try:
        return validate(KINDS[kind], record)
    except InputError as e:
        raise RecordError(index, str(e)) from None


def _key(record, row):
    """(table, identity values) of a record, or None when it has no full identity."""
    ident = record.identity
    if not ident or any(row.get(c) is None for c in ident):
        return None
    return record.table, tuple(row[c] for c in ident)


def _stored(db, records, rows):
    """{_key: stored row} of the records already stored: one query per table and 400 keys
    (a row-value IN that the identity's unique index serves), not one per record."""
    wanted = {}
    for record, (row, _) in zip(records, rows):
        key = _key(record, row)
        if key:
            wanted.setdefault((record.table, record.identity), set()).add(key[1])
    stored = {}
    for (table, ident), keys in wanted.items():
        keys, columns = list(keys), ", ".join(f"[{c}]" for c in ident)
        group = "(" + ", ".join("?" * len(ident)) + ")"
        for start in range(0, len(keys), 400):
            chunk = keys[start:start + 400]
            cursor = db.execute(
                f"SELECT * FROM {table} WHERE ({columns}) IN "
                f"(VALUES {', '.join([group] * len(chunk))})", [v for k in chunk for v in k])
            names = [d[0] for d in cursor.description]
            for values in cursor:
                found = dict(zip(names, values))
                stored[table, tuple(found[c] for c in ident)] = found
    return stored


def _search_text(db, record, rows, stored, columns):
    """The text the search index will hold for this record once written (None: none, or
    unchanged). It is computed by the same SQL expression the triggers use."""
    if record.table not in BY_TABLE:
        return None
    row, given = rows
    found = stored.get(_key(record, row))
    if found is not None:
        if record.keep_existing:
            return None
        row = {**found, **given}
    if record.table not in columns:  # read once per table and call, not once per record
        columns[record.table] = [r[1] for r in db.execute(
            f"PRAGMA table_info([{record.table}])")]
    names = columns[record.table]
    new = ", ".join(f"? AS [{c}]" for c in names)
    return db.execute(f"SELECT coalesce({BY_TABLE[record.table][1]['text']}, '') FROM "
                      f"(SELECT {new}) AS new", [row.get(c) for c in names]).fetchone()[0]


def _write_one(db, record, rows, stored, index):
    """Insert or update one record; `stored` is kept up to date for the records after it."""
    table, ident, id_column = record.table, record.identity, record.id_column
    row, given = rows
    for field, (other, column) in record.references.items():
        value = row.get(field)
        if value is not None and not db.execute(
                f"SELECT 1 FROM {other} WHERE {column} = ?", [value]).fetchone():
            raise RecordError(index, f"{field}: no {other} row with {column} {value!r}")
    result = {"key": row.get("key")} if "key" in type(record).model_fields else {}
    key = _key(record, row)
    found = stored.get(key)
    if found and not record.keep_existing:
        changes = {k: v for k, v in given.items() if k not in ident and found.get(k) != v}
        if changes:
            sets = ", ".join(f"[{k}] = ?" for k in changes)
            where = " AND ".join(f"[{c}] = ?" for c in ident)
            db.execute(f"UPDATE {table} SET {sets} WHERE {where}",
                       [*changes.values(), *key[1]])
            found.update(changes)
            return {"id": found[id_column], **result, "status": "updated"}
    if found:  # kept as it is: a summary's text stored before, or nothing new
        return {"id": found[id_column], **result, "status": "existing"}
    (new_id,) = db.conn.execute(_insert(table, tuple(row), id_column),
                                list(row.values())).fetchone()
    if key:
        stored[key] = {**row, id_column: new_id}
    return {"id": new_id, **result, "status": "inserted"}


@functools.lru_cache(maxsize=256)
def _insert(table, columns, id_column):
    return (f"INSERT INTO {table} ({', '.join(f'[{c}]' for c in columns)}) VALUES "
            f"({', '.join('?' * len(columns))}) RETURNING {id_column}")


def _doc_ids(db, records, results):
    """The search-index rows of the written records."""
    ids = []
    for record, result in zip(records, results):
        if record.table in BY_TABLE:
            found = db.execute("SELECT id FROM doc WHERE kind = ? AND ref = ?",
                               [BY_TABLE[record.table][0], str(result["id"])]).fetchone()
            if found:
                ids.append(found[0])
    return ids
