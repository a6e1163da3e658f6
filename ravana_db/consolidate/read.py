"""What a consolidation run reads, step by step: plain queries returning rows and dicts."""


from ..times import from_iso
from ..vectors import decode as decode_vectors
from .policy import hours_before

CHUNK = 500  # ids per `IN (...)` query
MEMORY = ("id", "text", "importance", "access_count", "metadata", "last_accessed",
          "created_at")
MEMORY_COLUMNS = ", ".join(MEMORY)


def chunks(items):
    """items, CHUNK at a time."""
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def marks(items):
    """The `?, ?, ...` placeholders of items."""
    return ", ".join("?" * len(items))


def _window(window, now):
    """The SQL condition (and its parameters) of the memories due in a type's window."""
    now = from_iso(now)
    where = ["dup_key IS NULL", "merged_into IS NULL", "created_at <= ?", "importance >= ?"]
    params = [hours_before(now, window.get("min_age_hours") or 0),
              window.get("min_importance") or 0.0]
    if window.get("since_hours"):
        where.append("created_at >= ?")
        params.append(hours_before(now, window["since_hours"]))
    return " AND ".join(where), params


def due(db, window, *, now, limit):
    """The memories due in the window (a `window.TYPE` policy row), oldest first, at most
    limit, as dicts; and how many are due in all."""
    where, params = _window(window, now)
    memories = [dict(zip(MEMORY, r)) for r in db.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memory WHERE {where} ORDER BY created_at, id LIMIT ?",
        [*params, limit])]
    total = db.execute(f"SELECT count(*) FROM memory WHERE {where}", params).fetchone()[0]
    return memories, total


def same_key(db, keys):
    """The unmerged memories whose duplicate key is one of keys, as dicts with their key."""
    for chunk in chunks(keys):
        for r in db.execute(f"SELECT {MEMORY_COLUMNS}, dup_key FROM memory WHERE dup_key IN "
                            f"({marks(chunk)}) AND merged_into IS NULL", chunk):
            yield dict(zip((*MEMORY, "key"), r))


def memories(db, ids):
    """{memory id: memory dict} of the given memories not merged into another."""
    out = {}
    for chunk in chunks(ids):
        for r in db.execute(f"SELECT {MEMORY_COLUMNS} FROM memory WHERE id IN ({marks(chunk)}) "
                            "AND merged_into IS NULL", chunk):
            out[r[0]] = dict(zip(MEMORY, r))
    return out


def kept_apart(db):
    """Memories whose merge was undone: never merged again (they stay linked)."""
    return {r[0] for r in db.execute(
        "SELECT m.memory_id FROM memory_merge m JOIN memory_consolidations c "
        "ON c.consolidation_id = m.consolidation_id "
        "WHERE json_extract(c.consolidation_results, '$.undone_at') IS NOT NULL")}


def absorbed(db, ids):
    """{survivor id: [ids merged into it]} for the given ids."""
    out = {}
    for chunk in chunks(ids):
        for memory_id, into in db.execute(
                f"SELECT id, merged_into FROM memory WHERE merged_into IN ({marks(chunk)})",
                chunk):
            out.setdefault(into, []).append(memory_id)
    return out


def memory_signatures(db):
    """({doc id: memory id}, [memory id], [signature bytes]) of the indexed memories."""
    doc_of = dict(db.execute("SELECT id, CAST(ref AS INTEGER) FROM doc WHERE kind = 'memory'"))
    ids, sigs = [], []
    for doc_id, bits in db.execute("SELECT doc_id, embedding FROM doc_bits"):
        if doc_id in doc_of:
            ids.append(doc_of[doc_id])
            sigs.append(bits)
    return doc_of, ids, sigs


def texts(db, ids):
    """{memory id: text} of the given memories."""
    out = {}
    for chunk in chunks(ids):
        out.update(db.execute(f"SELECT id, text FROM memory WHERE id IN ({marks(chunk)})",
                              chunk))
    return out


def vectors(db, doc_ids):
    """{doc id: its vector (numpy float32)} of the given docs that have one."""
    found = [row for chunk in chunks(doc_ids) for row in db.execute(
        f"SELECT doc_id, embedding FROM doc_vec WHERE doc_id IN ({marks(chunk)})", chunk)]
    return dict(zip([d for d, _ in found], decode_vectors(b for _, b in found)))


def promoted(db):
    """{memory_id: retention_category} of the very-long-term memories earlier runs made."""
    return dict(db.execute("SELECT memory_id, retention_category FROM very_long_term_memories "
                           "WHERE source_session = 'consolidate'"))


def promotion_candidates(db, lowest):
    """Unmerged memories of at least `lowest` importance, by id, as dicts (streamed)."""
    columns = ("id", "key", "text", "memory_type", "importance", "access_count", "metadata",
               "created_at", "last_accessed", "source")
    for row in db.execute(f"SELECT {', '.join(columns)} FROM memory "
                          "WHERE importance >= ? AND merged_into IS NULL ORDER BY id", [lowest]):
        yield dict(zip(columns, row))


def actions(db, *, since, until, limit):
    """(id, timestamp, action_name, status) of the latest `limit` actions in the span, oldest
    first."""
    return db.execute(
        "SELECT id, timestamp, action_name, status FROM actionlog WHERE timestamp >= ? "
        "AND timestamp <= ? ORDER BY timestamp DESC, id DESC LIMIT ?",
        [since, until, limit]).fetchall()[::-1]


def vltm_docs(db):
    """(memory_id, memory_type, created_at, text, doc id, related_memories) of the indexed
    very-long-term memories."""
    return db.execute(
        "SELECT v.memory_id, v.memory_type, v.created_at, d.text, d.id, v.related_memories "
        "FROM very_long_term_memories v JOIN doc d ON d.kind = 'vltm' AND d.ref = "
        "v.memory_id").fetchall()


def patterns(db):
    """The stored patterns' rows, each with hex(pattern_id) last (to tell text from bytes)."""
    return db.execute(
        "SELECT pattern_id, pattern_type, pattern_description, confidence_score, "
        "pattern_data, validation_count, hex(pattern_id) FROM memory_patterns").fetchall()


def retention(db, now):
    """(memory_id, memory_type, retention_category, age in days, retention_days,
    archive_after_days) of the very-long-term memories a retention policy covers."""
    return db.execute(
        "SELECT v.memory_id, v.memory_type, v.retention_category, "
        "julianday(?) - julianday(v.created_at), p.retention_days, p.archive_after_days "
        "FROM very_long_term_memories v JOIN retention_policies p "
        "ON p.memory_type = v.memory_type WHERE p.retention_days IS NOT NULL "
        "OR p.archive_after_days IS NOT NULL", [now]).fetchall()
