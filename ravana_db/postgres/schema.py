"""The server's schema: every user table of tables.TABLE_FACTS, keyed by (file_id, the file's
own key), the search table `doc` with full text (tsvector) and meaning (pgvector, HNSW), and one
`ravana_file` row per synced file. Versioned in `ravana_schema` and migrated by migrate():
append a script to MIGRATIONS, never edit one that has shipped.

Server columns are nullable: a plain SQLite client can store what the file's constraints allow
but PostgreSQL's types do not (a time that is not a time, text that is not JSON); rows.py turns
such a value into NULL (or a JSON string) rather than failing the sync.
"""

from ..errors import RavanaError
from ..schema import CONSOLIDATION_TYPES, MEMORY_TYPES, PATTERN_TYPES
from ..schema.tracking import KEYS  # the file's own key of the tables without an integer id
from ..tables import TABLE_FACTS

DIM = 384
HNSW = "doc_embedding_hnsw"
# Taken with pg_advisory_xact_lock while migrating, so two syncs starting at once do not race.
LOCK = 0x5241_5641  # "RAVA"

ENUMS = {"memorytype": MEMORY_TYPES, "patterntype": PATTERN_TYPES,
         "consolidationtype": CONSOLIDATION_TYPES}

# Each table's columns as the server types them, in the file's column order. test_pg_schema
# checks the names against a fresh file, so a migration that adds a column fails it until the
# column is added here (and to a server migration).
COLUMNS = {
    "feed": "id BIGINT, url TEXT, title TEXT, etag TEXT, last_modified TEXT, "
            "last_fetched TIMESTAMPTZ, body_hash TEXT, last_status TEXT, last_error TEXT, "
            "failures BIGINT, next_attempt TIMESTAMPTZ, paused_at TIMESTAMPTZ, "
            "paused_reason TEXT, removed_at TIMESTAMPTZ, failing_since TIMESTAMPTZ",
    "article": "id BIGINT, title TEXT, link TEXT, published TIMESTAMPTZ, source TEXT, "
               "fetched_at TIMESTAMPTZ, feed_id BIGINT, guid TEXT, summary TEXT, content TEXT, "
               "content_hash TEXT, cluster_id BIGINT",
    "event": "id BIGINT, timestamp TIMESTAMPTZ, description TEXT, keywords TEXT, "
             "cluster_id BIGINT",
    "event_article": "event_id BIGINT, article_id BIGINT",
    "summary": "id BIGINT, timestamp TIMESTAMPTZ, summary_text TEXT, source TEXT, "
               "category TEXT, content_hash TEXT",
    "actionlog": "id BIGINT, timestamp TIMESTAMPTZ, action_name TEXT, params JSONB, "
                 "status TEXT, result JSONB",
    "moodlog": "id BIGINT, timestamp TIMESTAMPTZ, mood_vector JSONB",
    "situationlog": "id BIGINT, timestamp TIMESTAMPTZ, situation_type TEXT, prompt TEXT, "
                    "context JSONB",
    "decisionlog": "id BIGINT, timestamp TIMESTAMPTZ, situation_id BIGINT, raw_response TEXT",
    "experimentlog": "id BIGINT, timestamp TIMESTAMPTZ, hypothesis TEXT, results JSONB",
    "memory": "id BIGINT, key TEXT, text TEXT, memory_type TEXT, created_at TIMESTAMPTZ, "
              "last_accessed TIMESTAMPTZ, access_count BIGINT, importance DOUBLE PRECISION, "
              "source TEXT, metadata JSONB, content_hash TEXT, merged_into BIGINT, "
              "dup_key TEXT, consolidated_in TEXT",
    "very_long_term_memories": "id BIGINT, memory_id TEXT, memory_type memorytype, "
                               "created_at TIMESTAMPTZ, last_accessed TIMESTAMPTZ, "
                               "promoted_at TIMESTAMPTZ, access_count BIGINT, "
                               "importance_score DOUBLE PRECISION, "
                               "strategic_value DOUBLE PRECISION, compressed_content JSONB, "
                               "metadata_info JSONB, source_session TEXT, "
                               "related_memories JSONB, retention_category TEXT",
    "memory_patterns": "id BIGINT, pattern_id TEXT, pattern_type patterntype, "
                       "pattern_description TEXT, confidence_score DOUBLE PRECISION, "
                       "pattern_data JSONB, discovered_at TIMESTAMPTZ, "
                       "supporting_memories JSONB, validation_count BIGINT, "
                       "last_validated TIMESTAMPTZ, source_memory_id TEXT",
    "memory_consolidations": "id BIGINT, consolidation_id TEXT, "
                             "consolidation_date TIMESTAMPTZ, "
                             "consolidation_type consolidationtype, memories_processed BIGINT, "
                             "patterns_extracted BIGINT, compression_ratio DOUBLE PRECISION, "
                             "consolidation_results JSONB, "
                             "processing_time_seconds DOUBLE PRECISION, success BIGINT, "
                             "error_message TEXT",
    "strategic_knowledge": "id BIGINT, knowledge_id TEXT, knowledge_domain TEXT, "
                           "knowledge_summary TEXT, confidence_level DOUBLE PRECISION, "
                           "last_updated TIMESTAMPTZ, source_patterns JSONB, "
                           "knowledge_structure JSONB, validation_score DOUBLE PRECISION, "
                           "application_count BIGINT",
    "consolidation_patterns": "consolidation_id TEXT, pattern_id TEXT, "
                              "extraction_confidence DOUBLE PRECISION",
    "pattern_strategic_knowledge": "pattern_id TEXT, knowledge_id TEXT, "
                                   "contribution_weight DOUBLE PRECISION",
    "consolidation_metrics": "id BIGINT, metric_id TEXT, consolidation_id TEXT, "
                             "metric_name TEXT, metric_value DOUBLE PRECISION, "
                             "metric_unit TEXT, timestamp TIMESTAMPTZ",
    "retention_policies": "memory_type memorytype, retention_days BIGINT, "
                          "compress_after_days BIGINT, description TEXT, "
                          "updated_at TIMESTAMPTZ, archive_after_days BIGINT",
    "memory_link": "memory_id BIGINT, related_id BIGINT, similarity DOUBLE PRECISION, "
                   "reason TEXT, consolidation_id TEXT, created_at TIMESTAMPTZ",
    "memory_merge": "consolidation_id TEXT, memory_id BIGINT, survivor_id BIGINT, role TEXT, "
                    "reason TEXT, before JSONB, after JSONB",
    "consolidation_policy": "key TEXT, value JSONB, description TEXT, updated_at TIMESTAMPTZ",
}

# The search table: the file's `doc` rows (same ids) and their vectors.
DOC_COLUMNS = "id BIGINT, kind TEXT, ref TEXT, text TEXT, type TEXT, source TEXT, ts TIMESTAMPTZ"
# The doc's word columns (V2), made at sync from the file's text by tokens.doc_columns (the
# file's tokens: a tsvector sent in binary form, and the doc's token count), sent after the
# embedding.
DOC_WORDS = "tsv tsvector, tokens int4"
DOC_COPY = (*(c.split()[0] for c in DOC_COLUMNS.split(", ")), "embedding",
            *(c.split()[0] for c in DOC_WORDS.split(", ")))

# The file's indexes on the very-long-term memory tables, as the original made them.
VLTM_INDEXES = {
    "very_long_term_memories": ("memory_type", "created_at", "importance_score",
                                "strategic_value", "last_accessed",
                                "memory_type, importance_score"),
    "memory_patterns": ("pattern_type", "confidence_score", "discovered_at", "source_memory_id"),
    "memory_consolidations": ("consolidation_date", "consolidation_type"),
    "strategic_knowledge": ("knowledge_domain", "confidence_level", "last_updated"),
}


def columns(table):
    """The (name, server type) pairs of a user table (or 'doc'), in the file's order."""
    spec = DOC_COLUMNS if table == "doc" else COLUMNS[table]
    return [tuple(c.strip().split(" ", 1)) for c in spec.split(",")]


def key(table):
    """The file's key of a table on the server (without file_id): ('id',) or its own."""
    return KEYS.get(table, ("id",))


def quoted(name):
    return '"' + name.replace('"', '""') + '"'


def _table_sql(table):
    cols = ", ".join(f"{quoted(name)} {kind}" for name, kind in columns(table))
    pk = ", ".join(quoted(c) for c in ("file_id", *key(table)))
    lines = [f"CREATE TABLE {quoted(table)} (file_id UUID NOT NULL "
             f"REFERENCES ravana_file(file_id) ON DELETE CASCADE, {cols}, PRIMARY KEY ({pk}));"]
    for name, kind in columns(table):
        if kind == "JSONB":
            lines.append(f"CREATE INDEX {quoted(f'{table}_{name}_gin')} ON {quoted(table)} "
                         f"USING GIN ({quoted(name)});")
    for index in VLTM_INDEXES.get(table, ()):
        names = [c.strip() for c in index.split(",")]
        lines.append(f"CREATE INDEX {quoted(table + '_' + '_'.join(names))} ON {quoted(table)} "
                     f"({', '.join(quoted(n) for n in names)});")
    return "\n".join(lines)


def _enums_sql():
    return "\n".join(f"CREATE TYPE {name} AS ENUM ({', '.join(repr(v) for v in values)});"
                     for name, values in ENUMS.items())


V1 = f"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE ravana_file (
    file_id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    path TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_sync_at TIMESTAMPTZ,
    position BIGINT NOT NULL DEFAULT 0,
    bulk_until BIGINT NOT NULL DEFAULT 0
);
{_enums_sql()}
{chr(10).join(_table_sql(t.name) for t in TABLE_FACTS)}
CREATE INDEX memory_created_at ON memory (file_id, created_at);
CREATE INDEX memory_merged_into ON memory (file_id, merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX memory_merge_memory ON memory_merge (file_id, memory_id);
CREATE TABLE doc (
    file_id UUID NOT NULL REFERENCES ravana_file(file_id) ON DELETE CASCADE,
    {DOC_COLUMNS.replace(", ", ", " + chr(10) + "    ")},
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    embedding vector({DIM}),
    PRIMARY KEY (file_id, id)
);
CREATE INDEX doc_tsv ON doc USING GIN (tsv);
CREATE INDEX doc_kind_file ON doc (kind, file_id);
CREATE INDEX doc_file_kind_ref ON doc (file_id, kind, ref);
CREATE INDEX doc_ts ON doc (ts);
CREATE INDEX {HNSW} ON doc USING hnsw (embedding vector_cosine_ops);
"""

# Words as the file has them (postgres/tokens.py, words.py): `tsv` holds the file's own
# tokens (no longer generated by the english configuration) and `tokens` the doc's token
# count; ravana_words keeps each file's doc and token totals (bm25()'s N and mean length), by
# statement triggers on doc, and the version of its words (tokens.retokenize brings older
# ones up to date at sync).
V2 = """
ALTER TABLE doc DROP COLUMN tsv;
ALTER TABLE doc ADD COLUMN tsv tsvector, ADD COLUMN tokens int4;
CREATE INDEX doc_tsv ON doc USING GIN (tsv);
CREATE TABLE ravana_words (
    file_id UUID PRIMARY KEY REFERENCES ravana_file(file_id) ON DELETE CASCADE,
    docs BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
INSERT INTO ravana_words (file_id, docs)
SELECT f.file_id, (SELECT count(*) FROM doc d WHERE d.file_id = f.file_id) FROM ravana_file f;
CREATE FUNCTION ravana_words_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ravana_words (file_id) VALUES (NEW.file_id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER ravana_file_words AFTER INSERT ON ravana_file
FOR EACH ROW EXECUTE FUNCTION ravana_words_file();
CREATE FUNCTION ravana_words_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE ravana_words w SET docs = w.docs + c.docs, tokens = w.tokens + c.tokens
        FROM (SELECT file_id, count(*) AS docs, coalesce(sum(tokens), 0) AS tokens
              FROM added GROUP BY file_id) c WHERE w.file_id = c.file_id;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE ravana_words w SET docs = w.docs - c.docs, tokens = w.tokens - c.tokens
        FROM (SELECT file_id, count(*) AS docs, coalesce(sum(tokens), 0) AS tokens
              FROM removed GROUP BY file_id) c WHERE w.file_id = c.file_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER doc_words_insert AFTER INSERT ON doc REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION ravana_words_count();
CREATE TRIGGER doc_words_update AFTER UPDATE ON doc
REFERENCING OLD TABLE AS removed NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION ravana_words_count();
CREATE TRIGGER doc_words_delete AFTER DELETE ON doc REFERENCING OLD TABLE AS removed
FOR EACH STATEMENT EXECUTE FUNCTION ravana_words_count();
"""

# The server's history, oldest first: version N is MIGRATIONS[N - 1].
MIGRATIONS = (V1, V2)
VERSION = len(MIGRATIONS)

# Built by a sync into an empty `doc` (V1's index is dropped then). ef_construction 128 (pgvector
# default 64): at 1M vectors recall@10 0.986 with ef_search 200, where 64 stays at 0.978 even
# with ef_search 800 (bench/pg_read_bench.py); the build takes about twice as long.
VECTOR_INDEX = (f"CREATE INDEX IF NOT EXISTS {HNSW} ON doc USING hnsw "
                "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 128)")


class NewerSchema(RavanaError):
    """The server's schema is newer than this ravana-db knows."""


def version(conn):
    """The server's schema version: 0 where ravana-db never made it."""
    exists = conn.execute("SELECT to_regclass('ravana_schema') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT version FROM ravana_schema").fetchone()
    return row[0] if row else 0


def migrate(conn):
    """Bring the server's schema up to VERSION, each step in one transaction with its record.

    Returns the versions applied (empty when it was current). Raises NewerSchema when the
    server was migrated by a newer ravana-db.
    """
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS ravana_schema (version INTEGER NOT NULL)")
        current = version(conn)
        if current > VERSION:
            raise NewerSchema(f"the server's ravana-db schema is version {current}, newer than "
                              f"this ravana-db knows ({VERSION}): upgrade ravana-db")
        if not conn.execute("SELECT 1 FROM ravana_schema").fetchone():
            conn.execute("INSERT INTO ravana_schema (version) VALUES (0)")
        for number, script in enumerate(MIGRATIONS[current:], current + 1):
            conn.execute(script)
            conn.execute("UPDATE ravana_schema SET version = %s", (number,))
            applied.append(number)
    return applied
