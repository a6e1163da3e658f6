"""The one write path: validated records into their tables, one transaction per call."""

from .db import driver, transaction
from .errors import InputError


def write(db, records, *, after=None):
    """Store records (a list of (line, Record)) in one transaction; all or nothing.

    Args:
        records: validated models.Record instances, each with the input line it came from
            (None for a record given as options).
        after: called with db inside the transaction once the rows are written (the search
            index uses it to embed new text in the same transaction).

    Returns:
        One dict per record: kind-specific `id`, and `status` inserted, updated or existing.
    """
    results = []
    with transaction(db):
        for line, record in records:
            where = f"line {line}: " if line is not None else ""
            try:
                results.append(_write_one(db, record, where))
            except driver().IntegrityError as e:
                raise InputError(f"{where}{e}") from None
        if after:
            after(db)
    return results


def _write_one(db, record, where):
    table, ident, id_column = record.table, record.identity, record.id_column
    row = record.row()
    for field, (other, column) in record.references.items():
        value = row.get(field)
        if value is not None and not db.execute(
                f"SELECT 1 FROM {other} WHERE {column} = ?", [value]).fetchone():
            raise InputError(f"{where}{field}: no {other} row with {column} {value!r}")
    result = {"key": row.get("key")} if "key" in type(record).model_fields else {}
    found = None
    if ident and row.get(ident) is not None:
        found = db.execute(f"SELECT {id_column} FROM {table} WHERE {ident} = ?",
                           [row[ident]]).fetchone()
    if found and record.keep_existing:
        return {"id": found[0], **result, "status": "existing"}
    if found:
        changes = {k: v for k, v in record.row(partial=True).items() if k != ident}
        if changes:
            sets = ", ".join(f"[{k}] = ?" for k in changes)
            db.execute(f"UPDATE {table} SET {sets} WHERE {ident} = ?",
                       [*changes.values(), row[ident]])
        return {"id": found[0], **result, "status": "updated"}
    columns = ", ".join(f"[{k}]" for k in row)
    marks = ", ".join("?" for _ in row)
    (new_id,) = db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING "
                           f"{id_column}", list(row.values())).fetchone()
    return {"id": new_id, **result, "status": "inserted"}
