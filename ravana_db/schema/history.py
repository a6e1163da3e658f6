"""The schema's history, as append-only migrations. Never edit a migration once it has shipped:
add one.

This module is the whole history, m001 to the latest, and grows with every migration: it is
longer than the others because it is append-only, not because it does several jobs. The search
index as it is now lives in search_index.py, which the migrations install.
"""

import re

from sqlite_utils import Migrations

from ..sql import run_script
from ..tables import SEARCHABLE
from .search_index import (
    BITS,
    as_built,
    bits_code,
    install_index,
    part_of,
    source_triggers,
)

MEMORY_TYPES = (
    "strategic_knowledge", "architectural_insight", "evolution_pattern", "meta_learning_rule",
    "critical_failure", "successful_improvement", "failed_experiment", "code_pattern",
    "behavioral_pattern",
)
PATTERN_TYPES = ("temporal", "causal", "behavioral", "structural", "performance")
CONSOLIDATION_TYPES = ("daily", "weekly", "monthly", "quarterly", "event_triggered")

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"


def _enum(column, values):
    return f"CHECK ({column} IN ({', '.join(repr(v) for v in values)}))"


def _score(column):
    return f"CHECK ({column} BETWEEN 0.0 AND 1.0)"


def _days(column):
    return f"CHECK ({column} IS NULL OR (typeof({column}) = 'integer' AND {column} > 0))"


def _json(column, kind=None):
    """A CHECK that column holds valid JSON, of json_type `kind` ('object' or 'array') if given."""
    if kind is None:
        return f"CHECK ({column} IS NULL OR json_valid({column}))"
    return f"CHECK ({column} IS NULL OR (json_valid({column}) AND json_type({column}) = '{kind}'))"


CORE = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE feed (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    title TEXT,
    etag TEXT,
    last_modified TEXT,
    last_fetched TEXT
);
CREATE TABLE article (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    link TEXT NOT NULL,
    published TEXT,
    source TEXT,
    fetched_at TEXT NOT NULL DEFAULT {NOW},
    feed_id INTEGER REFERENCES feed(id) ON DELETE SET NULL,
    guid TEXT NOT NULL,
    summary TEXT,
    content TEXT,
    content_hash TEXT,
    UNIQUE (feed_id, guid)
);
CREATE INDEX idx_article_link ON article(link);
CREATE INDEX idx_article_published ON article(published);
CREATE TABLE event (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    description TEXT NOT NULL,
    keywords TEXT,
    cluster_id INTEGER
);
CREATE INDEX idx_event_timestamp ON event(timestamp);
CREATE TABLE event_article (
    event_id INTEGER NOT NULL REFERENCES event(id) ON DELETE CASCADE,
    article_id INTEGER NOT NULL REFERENCES article(id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, article_id)
);
CREATE INDEX idx_event_article_article ON event_article(article_id);
CREATE TABLE summary (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    summary_text TEXT NOT NULL,
    source TEXT DEFAULT 'unknown',
    category TEXT DEFAULT 'misc',
    content_hash TEXT NOT NULL UNIQUE
);
CREATE INDEX idx_summary_timestamp ON summary(timestamp);
CREATE TABLE actionlog (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    action_name TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{{}}' {_json("params", "object")},
    status TEXT NOT NULL DEFAULT 'success' {_enum("status", ("success", "failure"))},
    result TEXT {_json("result")}
);
CREATE INDEX idx_actionlog_timestamp ON actionlog(timestamp);
CREATE INDEX idx_actionlog_action_name ON actionlog(action_name);
CREATE TABLE moodlog (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    mood_vector TEXT NOT NULL {_json("mood_vector", "object")}
);
CREATE INDEX idx_moodlog_timestamp ON moodlog(timestamp);
CREATE TABLE situationlog (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    situation_type TEXT NOT NULL,
    prompt TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '{{}}' {_json("context", "object")}
);
CREATE INDEX idx_situationlog_timestamp ON situationlog(timestamp);
CREATE TABLE decisionlog (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    situation_id INTEGER REFERENCES situationlog(id),
    raw_response TEXT NOT NULL
);
CREATE INDEX idx_decisionlog_situation ON decisionlog(situation_id);
CREATE TABLE experimentlog (
    id INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL DEFAULT {NOW},
    hypothesis TEXT NOT NULL,
    results TEXT NOT NULL DEFAULT '{{}}' {_json("results")}
);
CREATE INDEX idx_experimentlog_timestamp ON experimentlog(timestamp);
CREATE TABLE memory (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE,
    text TEXT NOT NULL,
    memory_type TEXT NOT NULL DEFAULT 'episodic',
    created_at TEXT NOT NULL DEFAULT {NOW},
    last_accessed TEXT,
    access_count INTEGER NOT NULL DEFAULT 0,
    importance REAL NOT NULL DEFAULT 0.5 {_score("importance")},
    source TEXT,
    metadata TEXT NOT NULL DEFAULT '{{}}' {_json("metadata", "object")},
    content_hash TEXT
);
CREATE INDEX idx_memory_type ON memory(memory_type);
CREATE INDEX idx_memory_created_at ON memory(created_at);
CREATE INDEX idx_memory_importance ON memory(importance);
CREATE TABLE very_long_term_memories (
    id INTEGER PRIMARY KEY,
    memory_id TEXT NOT NULL UNIQUE,
    memory_type TEXT NOT NULL {_enum("memory_type", MEMORY_TYPES)},
    created_at TEXT NOT NULL DEFAULT {NOW},
    last_accessed TEXT NOT NULL DEFAULT {NOW},
    promoted_at TEXT NOT NULL DEFAULT {NOW},
    access_count INTEGER NOT NULL DEFAULT 0,
    importance_score REAL NOT NULL DEFAULT 0.5 {_score("importance_score")},
    strategic_value REAL NOT NULL DEFAULT 0.5 {_score("strategic_value")},
    compressed_content TEXT NOT NULL {_json("compressed_content", "object")},
    metadata_info TEXT NOT NULL DEFAULT '{{}}' {_json("metadata_info", "object")},
    source_session TEXT NOT NULL DEFAULT 'unknown',
    related_memories TEXT NOT NULL DEFAULT '[]' {_json("related_memories", "array")},
    retention_category TEXT NOT NULL DEFAULT 'medium_term'
);
CREATE INDEX idx_vltm_memory_type ON very_long_term_memories(memory_type);
CREATE INDEX idx_vltm_created_at ON very_long_term_memories(created_at);
CREATE INDEX idx_vltm_importance_score ON very_long_term_memories(importance_score);
CREATE INDEX idx_vltm_strategic_value ON very_long_term_memories(strategic_value);
CREATE INDEX idx_vltm_last_accessed ON very_long_term_memories(last_accessed);
CREATE INDEX idx_vltm_type_importance
    ON very_long_term_memories(memory_type, importance_score);
CREATE TABLE memory_patterns (
    id INTEGER PRIMARY KEY,
    pattern_id TEXT NOT NULL UNIQUE,
    pattern_type TEXT NOT NULL {_enum("pattern_type", PATTERN_TYPES)},
    pattern_description TEXT NOT NULL,
    confidence_score REAL NOT NULL {_score("confidence_score")},
    pattern_data TEXT NOT NULL DEFAULT '{{}}' {_json("pattern_data", "object")},
    discovered_at TEXT NOT NULL DEFAULT {NOW},
    supporting_memories TEXT NOT NULL DEFAULT '[]' {_json("supporting_memories", "array")},
    validation_count INTEGER NOT NULL DEFAULT 0,
    last_validated TEXT,
    source_memory_id TEXT REFERENCES very_long_term_memories(memory_id) ON DELETE SET NULL
);
CREATE INDEX idx_patterns_type ON memory_patterns(pattern_type);
CREATE INDEX idx_patterns_confidence ON memory_patterns(confidence_score);
CREATE INDEX idx_patterns_discovered_at ON memory_patterns(discovered_at);
CREATE INDEX idx_patterns_source_memory ON memory_patterns(source_memory_id);
CREATE TABLE memory_consolidations (
    id INTEGER PRIMARY KEY,
    consolidation_id TEXT NOT NULL UNIQUE,
    consolidation_date TEXT NOT NULL DEFAULT {NOW},
    consolidation_type TEXT NOT NULL {_enum("consolidation_type", CONSOLIDATION_TYPES)},
    memories_processed INTEGER NOT NULL DEFAULT 0,
    patterns_extracted INTEGER NOT NULL DEFAULT 0,
    compression_ratio REAL NOT NULL DEFAULT 1.0,
    consolidation_results TEXT NOT NULL DEFAULT '{{}}'
        {_json("consolidation_results", "object")},
    processing_time_seconds REAL NOT NULL DEFAULT 0.0,
    success INTEGER NOT NULL DEFAULT 1 CHECK (success IN (0, 1)),
    error_message TEXT
);
CREATE INDEX idx_consolidations_date ON memory_consolidations(consolidation_date);
CREATE INDEX idx_consolidations_type ON memory_consolidations(consolidation_type);
CREATE TABLE strategic_knowledge (
    id INTEGER PRIMARY KEY,
    knowledge_id TEXT NOT NULL UNIQUE,
    knowledge_domain TEXT NOT NULL,
    knowledge_summary TEXT NOT NULL,
    confidence_level REAL NOT NULL {_score("confidence_level")},
    last_updated TEXT NOT NULL DEFAULT {NOW},
    source_patterns TEXT NOT NULL DEFAULT '[]' {_json("source_patterns", "array")},
    knowledge_structure TEXT NOT NULL DEFAULT '{{}}' {_json("knowledge_structure", "object")},
    validation_score REAL NOT NULL DEFAULT 0.0 {_score("validation_score")},
    application_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX idx_strategic_domain ON strategic_knowledge(knowledge_domain);
CREATE INDEX idx_strategic_confidence ON strategic_knowledge(confidence_level);
CREATE INDEX idx_strategic_last_updated ON strategic_knowledge(last_updated);
CREATE TRIGGER strategic_knowledge_last_updated
AFTER UPDATE OF knowledge_domain, knowledge_summary, confidence_level, source_patterns,
    knowledge_structure, validation_score ON strategic_knowledge
WHEN new.last_updated IS old.last_updated
BEGIN
    UPDATE strategic_knowledge SET last_updated = {NOW} WHERE id = new.id;
END;
CREATE TABLE consolidation_patterns (
    consolidation_id TEXT NOT NULL
        REFERENCES memory_consolidations(consolidation_id) ON DELETE CASCADE,
    pattern_id TEXT NOT NULL REFERENCES memory_patterns(pattern_id) ON DELETE CASCADE,
    extraction_confidence REAL NOT NULL DEFAULT 1.0 {_score("extraction_confidence")},
    PRIMARY KEY (consolidation_id, pattern_id)
);
CREATE INDEX idx_consolidation_patterns_pattern ON consolidation_patterns(pattern_id);
CREATE TABLE pattern_strategic_knowledge (
    pattern_id TEXT NOT NULL REFERENCES memory_patterns(pattern_id) ON DELETE CASCADE,
    knowledge_id TEXT NOT NULL REFERENCES strategic_knowledge(knowledge_id) ON DELETE CASCADE,
    contribution_weight REAL NOT NULL DEFAULT 1.0 {_score("contribution_weight")},
    PRIMARY KEY (pattern_id, knowledge_id)
);
CREATE INDEX idx_pattern_knowledge_knowledge ON pattern_strategic_knowledge(knowledge_id);
CREATE TABLE consolidation_metrics (
    id INTEGER PRIMARY KEY,
    metric_id TEXT NOT NULL UNIQUE,
    consolidation_id TEXT NOT NULL
        REFERENCES memory_consolidations(consolidation_id) ON DELETE CASCADE,
    metric_name TEXT NOT NULL,
    metric_value REAL NOT NULL,
    metric_unit TEXT,
    timestamp TEXT NOT NULL DEFAULT {NOW}
);
CREATE INDEX idx_consolidation_metrics_consolidation ON consolidation_metrics(consolidation_id);
CREATE TABLE retention_policies (
    memory_type TEXT NOT NULL PRIMARY KEY {_enum("memory_type", MEMORY_TYPES)},
    retention_days INTEGER {_days("retention_days")},
    compress_after_days INTEGER {_days("compress_after_days")},
    description TEXT,
    updated_at TEXT NOT NULL DEFAULT {NOW}
);
INSERT INTO retention_policies (memory_type, retention_days, compress_after_days, description)
VALUES
    ('strategic_knowledge', NULL, 90, 'permanent, compress after 90 days'),
    ('critical_failure', NULL, 30, 'permanent, compress after 30 days'),
    ('successful_improvement', 730, 180, 'kept 2 years, compress after 180 days'),
    ('code_pattern', 365, 90, 'kept 1 year, compress after 90 days');
"""

SEARCH = """
CREATE TABLE doc (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    text TEXT NOT NULL,
    type TEXT,
    source TEXT,
    ts TEXT,
    UNIQUE (kind, ref)
);
CREATE INDEX idx_doc_ts ON doc(ts);
CREATE VIRTUAL TABLE doc_fts USING fts5(
    text, content='doc', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TABLE doc_vec (
    doc_id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX idx_doc_vec_hash ON doc_vec(content_hash);
CREATE TABLE embed_queue (
    doc_id INTEGER PRIMARY KEY
);
CREATE TRIGGER doc_ai AFTER INSERT ON doc BEGIN
    INSERT INTO doc_fts(rowid, text) VALUES (new.id, new.text);
    INSERT OR IGNORE INTO embed_queue(doc_id) VALUES (new.id);
END;
CREATE TRIGGER doc_ad AFTER DELETE ON doc BEGIN
    INSERT INTO doc_fts(doc_fts, rowid, text) VALUES ('delete', old.id, old.text);
    DELETE FROM doc_vec WHERE doc_id = old.id;
    DELETE FROM doc_bits WHERE doc_id = old.id;
    DELETE FROM embed_queue WHERE doc_id = old.id;
END;
CREATE TRIGGER doc_au_text AFTER UPDATE OF text ON doc WHEN new.text IS NOT old.text BEGIN
    INSERT INTO doc_fts(doc_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO doc_fts(rowid, text) VALUES (new.id, new.text);
    DELETE FROM doc_vec WHERE doc_id = old.id;
    DELETE FROM doc_bits WHERE doc_id = old.id;
    INSERT OR IGNORE INTO embed_queue(doc_id) VALUES (new.id);
END;
CREATE TRIGGER doc_au_filters AFTER UPDATE OF kind, type, source, ts ON doc BEGIN
    UPDATE doc_bits SET kind = new.kind, type = coalesce(new.type, ''),
        source = coalesce(new.source, ''), ts = coalesce(unixepoch(new.ts), 0)
    WHERE doc_id = new.id;
END;
"""


migrations = Migrations("ravana_db")


@migrations()
def m001_core(db):
    run_script(db.conn, CORE)


@migrations()
def m002_search(db):
    run_script(db.conn, SEARCH)
    db.conn.execute(BITS)
    for kind, spec in SEARCHABLE.items():  # as they were then: before m006's conditions
        run_script(db.conn, source_triggers(kind, **as_built(db, spec)))


@migrations()
def m003_index_for_every_client(db):
    """Triggers that plain SQLite clients can run, FTS that sqlite-utils and Datasette find,
    views to browse each kind."""
    db.execute("DROP TABLE doc_fts")
    install_index(db)
    db.execute("INSERT INTO doc_fts(doc_fts) VALUES ('rebuild')")


FEEDS = f"""
ALTER TABLE feed ADD COLUMN body_hash TEXT;
ALTER TABLE feed ADD COLUMN last_status TEXT;
ALTER TABLE feed ADD COLUMN last_error TEXT;
ALTER TABLE feed ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE feed ADD COLUMN next_attempt TEXT;
INSERT OR IGNORE INTO feed(url, title) SELECT 'unknown:', 'articles that had no feed'
WHERE EXISTS (SELECT 1 FROM article WHERE feed_id IS NULL);
DROP VIEW IF EXISTS article_search;
CREATE TABLE article_new (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    link TEXT NOT NULL,
    published TEXT,
    source TEXT,
    fetched_at TEXT NOT NULL DEFAULT {NOW},
    feed_id INTEGER NOT NULL REFERENCES feed(id) ON DELETE CASCADE,
    guid TEXT NOT NULL,
    summary TEXT,
    content TEXT,
    content_hash TEXT,
    cluster_id INTEGER,
    UNIQUE (feed_id, guid)
);
INSERT INTO article_new(id, title, link, published, source, fetched_at, feed_id, guid, summary,
                        content, content_hash)
SELECT id, title, link, published, source, fetched_at,
       coalesce(feed_id, (SELECT id FROM feed WHERE url = 'unknown:')), guid, summary, content,
       content_hash
FROM article;
DROP TABLE article;
ALTER TABLE article_new RENAME TO article;
CREATE INDEX idx_article_link ON article(link);
CREATE INDEX idx_article_published ON article(published);
CREATE INDEX idx_article_cluster ON article(cluster_id);
CREATE UNIQUE INDEX idx_event_cluster ON event(cluster_id);
"""


@migrations()
def m004_feeds(db):
    """Feed state for conditional GET and backoff; every article belongs to a feed (NULL
    feed ids would escape the (feed_id, guid) rule); an article's event cluster."""
    run_script(db.conn, FEEDS)
    install_index(db)  # the article table's triggers and view went with it


@migrations()
def m005_vltm_search_text_skips_compression(db):
    """A very-long-term memory's search text leaves out its `_compressed` member, where
    `compress` keeps a memory's packed structure and bookkeeping: the triggers are replaced,
    and rows that have such a member get their index text again."""
    install_index(db)
    db.execute("UPDATE very_long_term_memories SET compressed_content = compressed_content "
               "WHERE json_type(compressed_content, '$._compressed') IS NOT NULL")


# Policy rows `consolidate` reads (editable data, not constants): each value a JSON object.
CONSOLIDATION_POLICY = {
    "window.daily": ({"since_hours": 24, "min_age_hours": 12, "min_importance": 0.0},
                     "daily: memories of the last 24 h, at least 12 h old"),
    "window.weekly": ({"since_hours": 168, "min_age_hours": 72, "min_importance": 0.0},
                      "weekly: memories of the last 7 days, at least 3 days old"),
    "window.monthly": ({"since_hours": None, "min_age_hours": 336, "min_importance": 0.6},
                       "monthly: memories at least 14 days old, importance 0.6 or more"),
    "window.quarterly": ({"since_hours": None, "min_age_hours": 1440, "min_importance": 0.5},
                         "quarterly: memories at least 60 days old, importance 0.5 or more"),
    "window.event_triggered": ({"since_hours": None, "min_age_hours": 0, "min_importance": 0.0},
                               "event_triggered: every memory not yet consolidated"),
    "promote.short_to_long": (
        {"min_age_days": 1, "min_importance": 0.6, "min_strategic": 0.4, "min_access": 1,
         "retention_category": "long_term"},
        "short-term to long-term: 1 day old, importance 0.6, strategic 0.4, accessed once"),
    "promote.long_to_very_long": (
        {"min_age_days": 7, "min_importance": 0.7, "min_strategic": 0.6, "min_access": 2,
         "retention_category": "very_long_term"},
        "long-term to very-long-term: 7 days old, importance 0.7, strategic 0.6, accessed twice"),
    "promote.direct": (
        {"memory_types": ["critical_failure", "strategic_knowledge"], "min_importance": 0.9,
         "min_strategic": 0.8, "retention_category": "permanent"},
        "directly: critical failures and strategic knowledge, importance 0.9, strategic 0.8"),
    "patterns": ({"min_support": 3, "min_confidence": 0.6, "lookback_days": 90,
                  "max_actions": 50000, "causal_window_minutes": 60,
                  "structural_similarity": 0.8},
                 "pattern extraction: support, confidence, how far back, causal window"),
    "knowledge": ({"min_patterns": 2}, "strategic knowledge: patterns a domain needs"),
    "duplicates": ({"link_similarity": 0.9},
                   "similar memories that are not duplicates are linked at this cosine"),
    "limits": ({"max_memories": 100000, "batch": 2000},
               "memories one run takes at most (the rest wait for the next), rows per write"),
}
CONSOLIDATION = f"""
ALTER TABLE memory ADD COLUMN merged_into INTEGER REFERENCES memory(id) ON DELETE SET NULL;
ALTER TABLE memory ADD COLUMN dup_key TEXT;
ALTER TABLE memory ADD COLUMN consolidated_in TEXT;
CREATE INDEX idx_memory_merged_into ON memory(merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX idx_memory_dup_key ON memory(dup_key);
CREATE INDEX idx_memory_consolidated_in ON memory(consolidated_in)
    WHERE consolidated_in IS NOT NULL;
CREATE INDEX idx_memory_due ON memory(created_at) WHERE dup_key IS NULL;
CREATE TRIGGER memory_text_reconsolidate AFTER UPDATE OF text ON memory
WHEN new.text IS NOT old.text AND new.dup_key IS NOT NULL BEGIN
    UPDATE memory SET dup_key = NULL, consolidated_in = NULL WHERE id = new.id;
END;
CREATE TABLE memory_link (
    memory_id INTEGER NOT NULL REFERENCES memory(id) ON DELETE CASCADE,
    related_id INTEGER NOT NULL REFERENCES memory(id) ON DELETE CASCADE,
    similarity REAL,
    reason TEXT NOT NULL,
    consolidation_id TEXT,
    created_at TEXT NOT NULL DEFAULT {NOW},
    PRIMARY KEY (memory_id, related_id),
    CHECK (memory_id < related_id)
);
CREATE INDEX idx_memory_link_related ON memory_link(related_id);
CREATE TABLE memory_merge (
    consolidation_id TEXT NOT NULL
        REFERENCES memory_consolidations(consolidation_id) ON DELETE CASCADE,
    memory_id INTEGER NOT NULL REFERENCES memory(id) ON DELETE CASCADE,
    survivor_id INTEGER NOT NULL,
    role TEXT NOT NULL {_enum("role", ("merged", "survivor"))},
    reason TEXT,
    before TEXT NOT NULL {_json("before", "object")},
    after TEXT NOT NULL {_json("after", "object")},
    PRIMARY KEY (consolidation_id, memory_id)
);
CREATE INDEX idx_memory_merge_memory ON memory_merge(memory_id);
CREATE TABLE consolidation_policy (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL {_json("value", "object")},
    description TEXT,
    updated_at TEXT NOT NULL DEFAULT {NOW}
);
ALTER TABLE retention_policies ADD COLUMN archive_after_days INTEGER
    {_days("archive_after_days")};
"""


@migrations()
def m006_consolidation(db):
    """Merged memories (hidden from search, kept), the duplicate key and the run that took
    each memory, links between similar memories, what each merge changed (for undo), and
    consolidation's thresholds as policy rows."""
    import json

    run_script(db.conn, CONSOLIDATION)
    db.conn.executemany(
        "INSERT INTO consolidation_policy(key, value, description) VALUES (?, ?, ?)",
        [(key, json.dumps(value), text) for key, (value, text) in CONSOLIDATION_POLICY.items()])
    install_index(db)


@migrations()
def m007_decision_time_index(db):
    """A decision without a situation is found by its time: an index instead of a scan."""
    db.execute("CREATE INDEX idx_decisionlog_timestamp ON decisionlog(timestamp)")


# doc_bits as m008 made it (m014 turns its text filter columns into integer codes).
BITS_M008 = """
CREATE VIRTUAL TABLE doc_bits USING vec0(
    doc_id INTEGER PRIMARY KEY, embedding bit[1024], part INTEGER PARTITION KEY,
    kind TEXT, type TEXT, source TEXT, ts INTEGER, chunk_size=2048
)
"""


@migrations()
def m008_sampled_signatures(db):
    """doc_bits gains its partition key (a table's columns change only by a rebuild): the
    signatures are copied, not recomputed."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'doc_bits'").fetchone()
    if row is None or "PARTITION KEY" in row[0]:
        return  # made by m002 after this change, or missing: `reindex` makes it anew
    db.execute("CREATE TEMP TABLE old_bits AS "
               "SELECT doc_id, embedding, kind, type, source, ts FROM doc_bits")
    db.execute("DROP TABLE doc_bits")
    db.execute(BITS_M008)
    db.execute(f"INSERT INTO doc_bits(doc_id, embedding, part, kind, type, source, ts) "
               f"SELECT doc_id, vec_bit(embedding), {part_of('doc_id')}, kind, type, source, ts "
               f"FROM temp.old_bits")
    db.execute("DROP TABLE temp.old_bits")


@migrations()
def m009_feed_pause_and_removal(db):
    """A feed can be paused (by its user, or after failing too long) and removed (its row
    stays for its articles, which keep their feed). failing_since: the first failure of the
    current run of failures; an old file's failing feed counts from its last fetch."""
    for column in ("paused_at", "paused_reason", "removed_at", "failing_since"):
        db.execute(f"ALTER TABLE feed ADD COLUMN {column} TEXT")
    db.execute("UPDATE feed SET failing_since = last_fetched WHERE failures > 0")


TIMELINE_INDEXES = """
CREATE INDEX idx_feed_timeline ON feed(julianday(last_fetched));
CREATE INDEX idx_article_timeline ON article(julianday(coalesce(published, fetched_at)));
CREATE INDEX idx_event_timeline ON event(julianday(timestamp));
CREATE INDEX idx_summary_timeline ON summary(julianday(timestamp));
CREATE INDEX idx_actionlog_timeline ON actionlog(julianday(timestamp));
CREATE INDEX idx_moodlog_timeline ON moodlog(julianday(timestamp));
CREATE INDEX idx_situationlog_timeline ON situationlog(julianday(timestamp));
CREATE INDEX idx_decisionlog_timeline ON decisionlog(julianday(timestamp));
CREATE INDEX idx_experimentlog_timeline ON experimentlog(julianday(timestamp));
CREATE INDEX idx_memory_timeline ON memory(julianday(created_at));
CREATE INDEX idx_vltm_timeline ON very_long_term_memories(julianday(created_at));
CREATE INDEX idx_patterns_timeline ON memory_patterns(julianday(discovered_at));
CREATE INDEX idx_consolidations_timeline ON memory_consolidations(julianday(consolidation_date));
CREATE INDEX idx_strategic_timeline ON strategic_knowledge(julianday(last_updated));
"""


PROVENANCE = f"""
CREATE TABLE provenance (
    from_kind TEXT NOT NULL,
    from_id TEXT NOT NULL,
    to_kind TEXT NOT NULL,
    to_id TEXT NOT NULL,
    relation TEXT NOT NULL,
    run_id TEXT,
    created_at TEXT NOT NULL DEFAULT {NOW},
    PRIMARY KEY (from_kind, from_id, to_kind, to_id, relation)
);
CREATE INDEX idx_provenance_to ON provenance(to_kind, to_id);
INSERT OR IGNORE INTO provenance(from_kind, from_id, to_kind, to_id, relation, run_id,
    created_at)
SELECT 'memory', CAST(json_extract(info, '$.memory') AS TEXT), 'vltm', memory_id, 'promoted',
    json_extract(info, '$.consolidation_id'), promoted_at
FROM (SELECT memory_id, promoted_at, CASE WHEN typeof(metadata_info) IS NOT 'text'
        OR NOT json_valid(metadata_info) THEN '{{}}' WHEN json_type(metadata_info) = 'object'
        THEN metadata_info ELSE '{{}}' END AS info
    FROM very_long_term_memories WHERE typeof(memory_id) = 'text')
WHERE json_type(info, '$.memory') = 'integer';
INSERT OR IGNORE INTO provenance(from_kind, from_id, to_kind, to_id, relation, run_id,
    created_at)
SELECT CASE WHEN s.value LIKE 'actionlog:%' THEN 'action' ELSE 'vltm' END,
    CASE WHEN s.value LIKE 'actionlog:%' THEN substr(s.value, 11) ELSE s.value END,
    'pattern', p.pattern_id, 'supports',
    (SELECT consolidation_id FROM consolidation_patterns c WHERE c.pattern_id = p.pattern_id
     LIMIT 1), p.discovered_at
FROM memory_patterns p, json_each(CASE WHEN typeof(p.supporting_memories) IS NOT 'text'
        OR NOT json_valid(p.supporting_memories) THEN '[]'
        WHEN json_type(p.supporting_memories) = 'array' THEN p.supporting_memories
        ELSE '[]' END) s
WHERE typeof(p.pattern_id) = 'text' AND s.type = 'text';
INSERT OR IGNORE INTO provenance(from_kind, from_id, to_kind, to_id, relation, created_at)
SELECT 'pattern', l.pattern_id, 'knowledge', l.knowledge_id, 'derived', k.last_updated
FROM pattern_strategic_knowledge l JOIN strategic_knowledge k USING (knowledge_id)
WHERE typeof(l.pattern_id) = 'text' AND typeof(l.knowledge_id) = 'text';
"""


@migrations()
def m010_timeline_indexes(db):
    """`timeline` reads every table newest first by its time as a Julian day: the order of
    the instants, whatever UTC offset or format another client stored them with (text order
    is not, for '2026-03-01T05:00:00+05:00'). One index per table on that expression."""
    run_script(db.conn, TIMELINE_INDEXES)


@migrations()
def m011_provenance(db):
    """Where each row came from, by the run that made the link: a memory from an article
    (`log memory --from`), a very-long-term memory from a memory, a pattern from the log rows
    and memories it counts, knowledge from its patterns. The links stored before are copied
    from the JSON that held them. Ids are text: the integer id, or the UUID of a vltm,
    pattern or knowledge row. Not in tables.TABLE_FACTS (export, import): its integer ids are
    this file's own, which an import into another file could not map; a backup keeps it."""
    run_script(db.conn, PROVENANCE)


COMPACT_VECTORS = """
CREATE TABLE doc_vec (
    doc_id INTEGER PRIMARY KEY,
    content_hash INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX idx_doc_vec_hash ON doc_vec(content_hash);
"""


@migrations()
def m012_compact_vectors(db):
    """doc_vec keeps each vector as int8 codes and its norm (vectors.py, a quarter of float32's
    bytes), keyed by the first 64 bits of its text's SHA-256 as an integer instead of the hex
    digest. The vectors are converted in id order, never re-embedded, inside the migration's
    one transaction (an interruption leaves the file as it was). A row that cannot be
    converted (another client's blob) is dropped and its doc queued for embedding. The pages
    freed are reused by later writes; `reindex --vacuum` gives them back to the disk.
    The index on every doc's time becomes one on articles' (the only docs read by time).
    memory's index on created_at stays: the write path finds a memory by its identity
    (created_at, text) through it."""
    from ..vectors import from_float32, key_of_hex

    db.execute("DROP INDEX IF EXISTS idx_doc_ts")
    db.execute("CREATE INDEX IF NOT EXISTS idx_doc_article_ts ON doc(ts) WHERE +kind = 'article'")

    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'doc_vec'").fetchone()
    if row is None or "content_hash INTEGER" in row[0]:
        return  # missing: `reindex` makes it anew
    db.execute("CREATE TEMP TABLE compact_vec (doc_id INTEGER PRIMARY KEY, "
               "content_hash INTEGER NOT NULL, embedding BLOB NOT NULL)")
    last, lost = -(1 << 63), []
    while True:
        rows = db.execute("SELECT doc_id, content_hash, embedding FROM doc_vec WHERE doc_id > ? "
                          "ORDER BY doc_id LIMIT 10000", [last]).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        good = [r for r in rows if _convertible(*r[1:])]
        lost += [(r[0],) for r in rows if not _convertible(*r[1:])]
        for size in {len(r[2]) for r in good}:  # one model's dimension, unless a client mixed
            same = [r for r in good if len(r[2]) == size]
            db.conn.executemany(
                "INSERT INTO temp.compact_vec VALUES (?, ?, ?)",
                [(doc_id, key_of_hex(digest), blob) for (doc_id, digest, _), blob
                 in zip(same, from_float32(r[2] for r in same))])
    db.execute("DROP TABLE doc_vec")
    run_script(db.conn, COMPACT_VECTORS)
    db.execute("INSERT INTO doc_vec SELECT * FROM temp.compact_vec ORDER BY doc_id")
    db.execute("DROP TABLE temp.compact_vec")
    db.conn.executemany("INSERT OR IGNORE INTO embed_queue(doc_id) SELECT id FROM doc "
                        "WHERE id = ?", lost)


def _convertible(digest, blob):
    """Whether a stored (content_hash, embedding) is a hex SHA-256 and a float32 vector."""
    return isinstance(digest, str) and re.fullmatch("[0-9a-f]{64}", digest) is not None and \
        isinstance(blob, bytes) and len(blob) > 0 and len(blob) % 4 == 0
@migrations()
def m013_sync_tracking(db):
    """`sync` to PostgreSQL: the servers this file is synced to (with each one's position in
    the change table) and the rows changed since, recorded by triggers on every user table,
    doc and doc_vec; they record nothing until a server is registered."""
    from .tracking import TABLES_SQL, install_tracking

    run_script(db.conn, TABLES_SQL)
    install_tracking(db)


@migrations()
def m014_coded_filters(db):
    """doc_bits keeps kind, type and source as their bits_code() (a vec0 integer takes 8 bytes
    a row, a text 16 and more): the signatures are copied, not recomputed, inside the
    migration's one transaction (an interruption leaves the file as it was). memory's indexes
    on memory_type and importance go: no query plan used them (search filters `doc`; the
    promotion pass reads memories in id order, a scan). The index of
    the memories due for consolidation keeps which they are, not their time (which
    idx_memory_created_at holds already): consolidate reads every due row anyway, to check
    its importance and count them, and sorts the batch it takes. The index of duplicate keys
    holds only the keys: consolidate looks memories up by key (`dup_key IN (...)`), never
    the ones without one (a memory not yet consolidated). A duplicate key is 16 hex digits,
    the first 64 bits of the SHA-256 (consolidate.duplicates.key): stored keys are cut to
    them."""
    db.execute("DROP INDEX IF EXISTS idx_memory_type")
    db.execute("DROP INDEX IF EXISTS idx_memory_importance")
    db.execute("UPDATE memory SET dup_key = substr(dup_key, 1, 16) "
               "WHERE length(dup_key) = 64 AND typeof(dup_key) = 'text'")
    db.execute("DROP INDEX IF EXISTS idx_memory_due")
    db.execute("CREATE INDEX idx_memory_due ON memory(merged_into) WHERE dup_key IS NULL")
    db.execute("DROP INDEX IF EXISTS idx_memory_dup_key")
    db.execute("CREATE INDEX idx_memory_dup_key ON memory(dup_key) WHERE dup_key IS NOT NULL")
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'doc_bits'").fetchone()
    if row is None or "kind INTEGER" in row[0]:
        return  # made by m002 after this change, or missing: `reindex` makes it anew
    db.conn.create_function("bits_code", 1, bits_code, deterministic=True)
    db.execute("CREATE TEMP TABLE old_bits AS "
               "SELECT doc_id, embedding, kind, type, source, ts FROM doc_bits")
    db.execute("DROP TABLE doc_bits")
    db.execute(BITS)
    db.execute(f"INSERT INTO doc_bits(doc_id, embedding, part, kind, type, source, ts) "
               f"SELECT doc_id, vec_bit(embedding), {part_of('doc_id')}, bits_code(kind), "
               f"bits_code(type), bits_code(source), ts FROM temp.old_bits")
    db.execute("DROP TABLE temp.old_bits")


def key_number(text):
    """A duplicate key in hex (16 digits since m014, 64 before) as the signed 64-bit integer
    consolidate.duplicates.key() makes now (m015); anything else: None (the memory is due
    again, and the next run keys it)."""
    try:
        return int.from_bytes(bytes.fromhex(text)[:8], "big", signed=True) \
            if isinstance(text, str) and len(text) in (16, 64) else None
    except ValueError:
        return None


@migrations()
def m015_consolidation_marks_as_numbers(db):
    """A consolidated memory's marks as integers: dup_key the 64-bit duplicate key (8 bytes,
    its 16 hex digits took 17), consolidated_in the run's number in the file (the row id of
    its memory_consolidations row, whose consolidation_id stays the run's id everywhere it is
    shown) instead of a 36-character id, and no index of it: only `consolidate --undo` looks
    memories up by run, a scan of memory. The columns are made anew (a column's type changes
    only so), their values copied, inside the migration's one transaction."""
    types = {r[1]: r[2] for r in db.execute("PRAGMA table_info(memory)")}
    if types.get("consolidated_in") == "INTEGER":
        return
    db.conn.create_function("key_number", 1, key_number, deterministic=True)
    db.execute("CREATE TEMP TABLE old_marks AS SELECT m.id, key_number(m.dup_key) AS dup_key, "
               "c.id AS run FROM memory m LEFT JOIN memory_consolidations c "
               "ON c.consolidation_id = m.consolidated_in WHERE m.dup_key IS NOT NULL "
               "OR m.consolidated_in IS NOT NULL")
    for name in ("idx_memory_consolidated_in", "idx_memory_dup_key", "idx_memory_due"):
        db.execute(f"DROP INDEX IF EXISTS {name}")
    db.execute("DROP TRIGGER IF EXISTS memory_text_reconsolidate")
    for column in ("consolidated_in", "dup_key"):
        db.execute(f"ALTER TABLE memory DROP COLUMN {column}")
    for column in ("dup_key", "consolidated_in"):
        db.execute(f"ALTER TABLE memory ADD COLUMN {column} INTEGER")
    db.execute("UPDATE memory SET dup_key = o.dup_key, consolidated_in = o.run "
               "FROM temp.old_marks o WHERE memory.id = o.id AND o.dup_key IS NOT NULL")
    db.execute("DROP TABLE temp.old_marks")
    db.execute("CREATE INDEX idx_memory_due ON memory(merged_into) WHERE dup_key IS NULL")
    db.execute("CREATE INDEX idx_memory_dup_key ON memory(dup_key) WHERE dup_key IS NOT NULL")
    db.execute("CREATE TRIGGER memory_text_reconsolidate AFTER UPDATE OF text ON memory "
               "WHEN new.text IS NOT old.text AND new.dup_key IS NOT NULL BEGIN "
               "UPDATE memory SET dup_key = NULL, consolidated_in = NULL WHERE id = new.id; "
               "END")
