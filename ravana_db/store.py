"""The one write path: validate, embed outside any transaction, then write briefly.

Every command that stores rows (log, and ingest, consolidate, compress and import as they
come) calls write(). Embedding takes seconds; the write lock is taken only for the inserts,
so cron jobs, the agent and queries can share the file.
"""

from .db import driver, transaction
from .errors import InputError, RecordError
from .index import apply, prepare
from .schema import SEARCHABLE

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
            that refer to them by natural keys (an event's links to its articles).

    Returns:
        One dict per record: its `id` (and `key` for memories) and `status`: inserted,
        updated, or existing (kept as it was: a summary whose text is already stored, or a
        row that the record would not change).

    Raises:
        RecordError: a record is invalid or conflicts with the stored data; `.index` says which.
    """
    records = [_validated(record, kind, index) for index, record in enumerate(records)]
    prepared = None
    if embedder is not None:
        texts = [_search_text(db, record) for record in records]
        prepared = prepare(db, embedder, [t for t in texts if t is not None], progress=progress)
    results = []
    with transaction(db):
        for index, record in enumerate(records):
            try:
                results.append(_write_one(db, record, index))
            except driver().IntegrityError as e:
                raise RecordError(index, str(e)) from None
        for sql, params in statements:
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


def _identity(record):
    ident = record.identity
    return (ident,) if isinstance(ident, str) else tuple(ident or ())


def _find(db, record):
    """The stored row with the record's identity, or None."""
    row, ident = record.row(), _identity(record)
    if not ident or any(row.get(c) is None for c in ident):
        return None
    where = " AND ".join(f"[{c}] = ?" for c in ident)
    cursor = db.execute(f"SELECT * FROM {record.table} WHERE {where}",
                        [row[c] for c in ident])
    found = cursor.fetchone()
    return None if found is None else dict(zip([d[0] for d in cursor.description], found))


def _search_text(db, record):
    """The text the search index will hold for this record once written (None: none, or
    unchanged). It is computed by the same SQL expression the triggers use."""
    if record.table not in BY_TABLE:
        return None
    row = record.row()
    found = _find(db, record)
    if found is not None:
        if record.keep_existing:
            return None
        row = {**found, **record.row(partial=True)}
    columns = [r[1] for r in db.execute(f"PRAGMA table_info([{record.table}])")]
    new = ", ".join(f"? AS [{c}]" for c in columns)
    return db.execute(f"SELECT coalesce({BY_TABLE[record.table][1]['text']}, '') FROM "
                      f"(SELECT {new}) AS new", [row.get(c) for c in columns]).fetchone()[0]


def _write_one(db, record, index):
    table, ident, id_column = record.table, _identity(record), record.id_column
    row = record.row()
    for field, (other, column) in record.references.items():
        value = row.get(field)
        if value is not None and not db.execute(
                f"SELECT 1 FROM {other} WHERE {column} = ?", [value]).fetchone():
            raise RecordError(index, f"{field}: no {other} row with {column} {value!r}")
    result = {"key": row.get("key")} if "key" in type(record).model_fields else {}
    found = _find(db, record)
    if found and not record.keep_existing:
        changes = {k: v for k, v in record.row(partial=True).items()
                   if k not in ident and found.get(k) != v}
        if changes:
            sets = ", ".join(f"[{k}] = ?" for k in changes)
            where = " AND ".join(f"[{c}] = ?" for c in ident)
            db.execute(f"UPDATE {table} SET {sets} WHERE {where}",
                       [*changes.values(), *(row[c] for c in ident)])
            return {"id": found[id_column], **result, "status": "updated"}
    if found:  # kept as it is: a summary's text stored before, or nothing new
        return {"id": found[id_column], **result, "status": "existing"}
    columns = ", ".join(f"[{k}]" for k in row)
    marks = ", ".join("?" for _ in row)
    (new_id,) = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING "
                           f"{id_column}", list(row.values())).fetchone()
    return {"id": new_id, **result, "status": "inserted"}


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
