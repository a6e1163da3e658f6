"""A consolidation run's writes: short transactions through store.write, a batch at a time.

An item that conflicts with stored rows (a constraint, a foreign key another client left
dangling) is skipped and reported, and the rest of its batch written.
"""

from ..errors import RecordError
from ..sql import driver
from ..store import write
from .plan import IDENTITY, skip


def records(db, items, *, kind, step, embedder, batch, skipped):
    """write() (record, statements) items of `kind`, `batch` at a time.

    Returns:
        The records written, each with its `status`.
    """
    written = []
    queue = [items[i:i + batch] for i in range(0, len(items), batch)]
    while queue:
        part = queue.pop(0)
        if not part:
            continue
        try:
            results = write(db, [r for r, _ in part], kind=kind, embedder=embedder,
                            statements=[s for _, more in part for s in more])
        except RecordError as e:
            skip(skipped, step, f"{kind} {part[e.index][0][IDENTITY[kind]]}", e)
            queue.insert(0, part[:e.index] + part[e.index + 1:])
            continue
        except driver().IntegrityError as e:  # a statement's: try each item alone
            if len(part) == 1:
                skip(skipped, step, f"{kind} {part[0][0][IDENTITY[kind]]}", e)
            else:
                queue[:0] = [[item] for item in part]
            continue
        for (record, _), result in zip(part, results):
            record["status"] = result["status"]
            written.append(record)
    return written


def statements(db, units, *, step, batch, skipped):
    """Run (memory id, statements) units, batches of about `batch` statements each.

    Returns:
        The ids of the units skipped.
    """
    batches, part, size = [], [], 0
    for unit in units:
        part.append(unit)
        size += len(unit[1])
        if size >= batch:
            batches.append(part)
            part, size = [], 0
    batches.append(part)
    failed = set()
    for part in filter(None, batches):
        try:
            write(db, [], statements=[s for _, more in part for s in more])
            continue
        except driver().IntegrityError:
            pass
        for memory_id, more in part:  # which one: each alone
            try:
                write(db, [], statements=more)
            except driver().IntegrityError as e:
                skip(skipped, step, f"memory {memory_id}", e)
                failed.add(memory_id)
    return failed
