"""The search index as it is now: the SQL that m003 installs and `reindex` restores when a piece
is missing, built from the searchable tables of tables.py."""

from ..sql import statements
from ..tables import SEARCHABLE
from ..vectors import key

# Each vector's SimHash signature (index.signature): the first, fast pass of vector search.
# `part` (a partition key) spreads the rows over PARTS partitions by a Fibonacci hash of the
# id (Knuth, TAOCP 6.4): partition 0 is a random sample that search reads first to bound its
# distances (search._nearest). The filter columns kind, type and source hold each value's
# bits_code(): a vec0 integer takes 8 bytes a row, a text 16 (m014).
SIGNATURE_BITS = 1024
PARTS = 8
BITS = f"""
CREATE VIRTUAL TABLE doc_bits USING vec0(
    doc_id INTEGER PRIMARY KEY, embedding bit[{SIGNATURE_BITS}], part INTEGER PARTITION KEY,
    kind INTEGER, type INTEGER, source INTEGER, ts INTEGER, chunk_size=2048
)
"""


def bits_code(value):
    """A doc's kind, type or source as `doc_bits` stores it: the first 64 bits of its SHA-256
    (vectors.key), NULL as "". Equal values have equal codes; the rare unequal values that
    share one pass the first pass together, and search re-checks its filters on `doc`."""
    return key(value or "")


def part_of(doc_id):
    """SQL for the partition of the doc whose id is the SQL expression doc_id: 0 .. PARTS-1,
    from the low 30 bits of the id times 2^32 / golden ratio (the product fits 64 bits)."""
    return f"(((({doc_id}) & 1073741823) * 2654435769) & 4294967295) * {PARTS} >> 32"


def source_triggers(kind, table, ref, columns, text, type, source, ts, where=None,
                     where_columns=None):
    """The triggers that keep `doc` in step with a table. `where`: only rows for which it
    holds are indexed; an update of `where_columns` adds or drops the row's entry."""
    old = lambda expr: expr.replace("new.", "old.")  # noqa: E731
    values = f"VALUES ('{kind}', new.{ref}, coalesce({text}, ''), {type}, {source}, {ts});"
    shown = "" if not where else f"""
CREATE TRIGGER {table}_doc_hide AFTER UPDATE OF {where_columns} ON {table}
WHEN NOT ({where}) BEGIN
    DELETE FROM doc WHERE kind = '{kind}' AND ref = CAST(old.{ref} AS TEXT);
END;
CREATE TRIGGER {table}_doc_show AFTER UPDATE OF {where_columns} ON {table}
WHEN ({where}) AND NOT ({old(where)}) BEGIN
    INSERT OR IGNORE INTO doc(kind, ref, text, type, source, ts)
    {values}
END;"""
    return f"""
CREATE TRIGGER {table}_doc_ai AFTER INSERT ON {table}{f" WHEN {where}" if where else ""} BEGIN
    INSERT INTO doc(kind, ref, text, type, source, ts)
    {values}
END;{shown}
CREATE TRIGGER {table}_doc_au AFTER UPDATE OF {columns} ON {table} BEGIN
    UPDATE doc SET ref = new.{ref}, text = coalesce({text}, ''), type = {type},
        source = {source}, ts = {ts}
    WHERE kind = '{kind}' AND ref = CAST({old("new." + ref)} AS TEXT);
END;
CREATE TRIGGER {table}_doc_ad AFTER DELETE ON {table} BEGIN
    DELETE FROM doc WHERE kind = '{kind}' AND ref = CAST(old.{ref} AS TEXT);
END;
"""


# The tokenizer of the file's full-text index; the server's words (postgres/words.py) are
# tokenized by it too, so both sides hold the same tokens.
TOKENIZE = "porter unicode61 remove_diacritics 2"
# Plain SQL clients (sqlite3, sqlite-utils, Datasette without sqlite-vec) must be able to
# update and delete every row, so no trigger touches the vec0 table `doc_bits`: a row whose
# signature must go or change waits in `bits_queue` for ravana-db's next write or reindex.
# FTS5's content table is written `[doc]`, the form sqlite-utils and Datasette recognise.
FTS = f"""
CREATE VIRTUAL TABLE doc_fts USING fts5(
    text, content=[doc], content_rowid=[id], tokenize='{TOKENIZE}'
)
"""
# The table `doc`, as m002 made it (tables are never replaced: they hold the data).
DOC = """
CREATE TABLE doc (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    text TEXT NOT NULL,
    type TEXT,
    source TEXT,
    ts TEXT,
    UNIQUE (kind, ref)
)
"""
INDEX_TABLES = {
    "doc": DOC.strip(),
    # Only events read docs by time (events.WINDOW, articles): an index on every doc's time
    # cost each memory as many bytes as its vector's key and index together.
    "idx_doc_article_ts": "CREATE INDEX idx_doc_article_ts ON doc(ts) WHERE +kind = 'article'",
    "doc_fts": FTS.strip(),
    "doc_vec": "CREATE TABLE doc_vec (\n    doc_id INTEGER PRIMARY KEY,\n"
               "    content_hash INTEGER NOT NULL,\n    embedding BLOB NOT NULL\n)",
    "idx_doc_vec_hash": "CREATE INDEX idx_doc_vec_hash ON doc_vec(content_hash)",
    "embed_queue": "CREATE TABLE embed_queue (doc_id INTEGER PRIMARY KEY)",
    "bits_queue": "CREATE TABLE bits_queue (doc_id INTEGER PRIMARY KEY)",
    "doc_bits": BITS.strip(),
}
DOC_TRIGGERS = """
CREATE TRIGGER doc_ai AFTER INSERT ON doc BEGIN
    INSERT INTO doc_fts(rowid, text) VALUES (new.id, new.text);
    INSERT OR IGNORE INTO embed_queue(doc_id) VALUES (new.id);
END;
CREATE TRIGGER doc_ad AFTER DELETE ON doc BEGIN
    INSERT INTO doc_fts(doc_fts, rowid, text) VALUES ('delete', old.id, old.text);
    DELETE FROM doc_vec WHERE doc_id = old.id;
    DELETE FROM embed_queue WHERE doc_id = old.id;
    INSERT OR IGNORE INTO bits_queue(doc_id) VALUES (old.id);
END;
CREATE TRIGGER doc_au_text AFTER UPDATE OF text ON doc WHEN new.text IS NOT old.text BEGIN
    INSERT INTO doc_fts(doc_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO doc_fts(rowid, text) VALUES (new.id, new.text);
    DELETE FROM doc_vec WHERE doc_id = old.id;
    INSERT OR IGNORE INTO embed_queue(doc_id) VALUES (new.id);
    INSERT OR IGNORE INTO bits_queue(doc_id) VALUES (new.id);
END;
CREATE TRIGGER doc_au_filters AFTER UPDATE OF kind, type, source, ts ON doc
WHEN new.kind IS NOT old.kind OR new.type IS NOT old.type OR new.source IS NOT old.source
    OR new.ts IS NOT old.ts BEGIN
    INSERT OR IGNORE INTO bits_queue(doc_id) VALUES (new.id);
END;
"""
# One view per kind that people browse and search in Datasette (metadata.json points its
# full-text search at doc_fts through `doc_id`). `+d.kind` keeps the planner off the kind's
# index, so a search (`doc_id IN (full-text match)`) starts from the match instead of walking
# every doc of the kind.
BROWSE = {kind: f"""CREATE VIEW {kind}_search AS
SELECT d.id AS doc_id, t.* FROM doc d JOIN {kind} t ON t.id = CAST(d.ref AS INTEGER)
WHERE +d.kind = '{kind}'""" for kind in ("memory", "summary", "article")}


def index_objects(db=None):
    """{name: CREATE statement} of every piece of the search index, in creation order.

    db: the file being migrated; a condition on a column that a later migration adds (m006's
    `merged_into`) is left out until that column exists.
    """
    objects = dict(INDEX_TABLES)
    specs = {kind: as_built(db, spec) for kind, spec in SEARCHABLE.items()}
    for sql in statements(DOC_TRIGGERS + "".join(
            source_triggers(kind, **spec) for kind, spec in specs.items())):
        objects[sql.split()[2]] = sql
    objects.update({f"{kind}_search": sql for kind, sql in BROWSE.items()})
    return objects


def as_built(db, spec):
    """spec as the file db can take it now: without its `where` condition while the column
    that condition reads (a later migration's) is missing."""
    if db is None or "where_columns" not in spec:
        return spec
    columns = {r[1] for r in db.execute(f"PRAGMA table_info([{spec['table']}])")}
    if spec["where_columns"] in columns:
        return spec
    return {k: v for k, v in spec.items() if k not in ("where", "where_columns")}


def install_index(db):
    """Create every piece of the index that is missing, and replace every trigger or view whose
    definition differs from today's (tables are never replaced: they hold the data).

    Returns the names of the pieces created or replaced.
    """
    present = dict(db.execute("SELECT name, sql FROM sqlite_master").fetchall())
    objects = index_objects(db)
    changed = [name for name, sql in objects.items()
               if name not in present or outdated(sql, present[name])]
    for name in changed:
        if name in present:
            db.execute(f"DROP {objects[name].split()[1]} [{name}]")
        db.execute(objects[name])
    return changed


def outdated(sql, stored):
    """Whether a trigger or view was made from other SQL than sql (whitespace aside)."""
    return sql.startswith(("CREATE TRIGGER", "CREATE VIEW")) and \
        " ".join(str(stored).split()) != " ".join(sql.split())
