"""Change tracking for `sync`: triggers on every user table, on `doc` and on `doc_vec` record
which rows changed into `sync_change`, one row per changed row (its latest change), so that a
sync sends only those. Triggers see every client's writes (plain `sqlite3` too), deletes and
merges. They record only while a server is registered in `sync_server`: a file never synced
pays one lookup of an empty table per written row.

A row's key in `sync_change` is its integer id, or for a table keyed otherwise the JSON array of
its key columns (postgres/schema.py KEYS); `doc_vec` rows count as their `doc` row's change.
"""

from ..tables import TABLES

# A changed row gets a new seq, above every seq ever given (AUTOINCREMENT), so a change made
# during a sync is never taken for one the sync has sent.
TABLES_SQL = """
CREATE TABLE sync_server (
    id INTEGER PRIMARY KEY,
    url_hash TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    last_sync_at TEXT
);
CREATE TABLE sync_change (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    key NOT NULL,
    UNIQUE (tbl, key)
);
"""

# The tables without an integer id, by their key columns (postgres/schema.py reads them here:
# the file's schema never imports the server's module).
KEYS = {
    "event_article": ("event_id", "article_id"),
    "consolidation_patterns": ("consolidation_id", "pattern_id"),
    "pattern_strategic_knowledge": ("pattern_id", "knowledge_id"),
    "retention_policies": ("memory_type",),
    "memory_link": ("memory_id", "related_id"),
    "memory_merge": ("consolidation_id", "memory_id"),
    "consolidation_policy": ("key",),
}


def key_sql(table, row):
    """The SQL of a row's key in sync_change: `+row.id`, or json_array(row.a, row.b)."""
    # A unary + drops the id's INTEGER affinity: compared with it, the key column (no affinity)
    # would be converted, which rules out its index and makes every write scan sync_change.
    if table == "doc_vec":
        return f"+{row}.doc_id"
    if table not in KEYS:
        return f"+{row}.id"
    return "json_array(" + ", ".join(f"{row}.[{c}]" for c in KEYS[table]) + ")"


def _record(name, row, where=""):
    # Delete then insert, not INSERT OR REPLACE: a trigger's conflict clause gives way to the
    # outer statement's (an INSERT OR IGNORE would leave the old seq, and the change unsent).
    key = key_sql(name, row)
    tbl = "doc" if name == "doc_vec" else name
    return (f"DELETE FROM sync_change WHERE tbl = '{tbl}' AND key = {key}{where and ' AND '}"
            f"{where};\n    INSERT INTO sync_change (tbl, key) SELECT '{tbl}', {key}"
            f"{where and ' WHERE '}{where};")


def triggers(name):
    """The three triggers that record table `name`'s changes, as {trigger name: SQL}. An
    update that changes a row's key also records the old key (a tombstone)."""
    when = "WHEN EXISTS (SELECT 1 FROM sync_server)"
    moved = f"{key_sql(name, 'old')} IS NOT {key_sql(name, 'new')}"
    return {
        f"sync_{name}_ai": f"CREATE TRIGGER sync_{name}_ai AFTER INSERT ON [{name}] {when} "
                           f"BEGIN\n    {_record(name, 'new')}\nEND",
        f"sync_{name}_au": f"CREATE TRIGGER sync_{name}_au AFTER UPDATE ON [{name}] {when} "
                           f"BEGIN\n    {_record(name, 'old', moved)}\n"
                           f"    {_record(name, 'new')}\nEND",
        f"sync_{name}_ad": f"CREATE TRIGGER sync_{name}_ad AFTER DELETE ON [{name}] {when} "
                           f"BEGIN\n    {_record(name, 'old')}\nEND",
    }


TRACKED = (*TABLES, "doc", "doc_vec")


def all_triggers():
    return {name: sql for table in TRACKED for name, sql in triggers(table).items()}


def install_tracking(db):
    """Create the tracking triggers that are missing or differ from today's; returns their
    names (a sync that finds some missing cannot trust what was recorded without them)."""
    present = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                              "AND name LIKE 'sync\\_%' ESCAPE '\\'").fetchall())
    changed = []
    for name, sql in all_triggers().items():
        if " ".join(str(present.get(name)).split()) != " ".join(sql.split()):
            if name in present:
                db.execute(f"DROP TRIGGER [{name}]")
            db.execute(sql)
            changed.append(name)
    return changed
