"""What the SQLite schema itself enforces and keeps in sync, whoever writes to the file.

Rows go in with plain SQL, as a `sqlite3` shell or Datasette would write them, bypassing
store.py and its validation: constraints, foreign keys and triggers must hold on their own.
"""

import pytest

from ravana_db.db import open_db
from ravana_db.schema import migrations
from ravana_db.sql import driver


@pytest.fixture
def db(db_path):
    db = open_db(db_path)
    db.execute("INSERT INTO feed(id, url) VALUES (1, 'https://a/rss')")
    yield db
    db.close()


def insert(db, table, row):
    columns = ", ".join(row)
    db.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})",
               list(row.values()))


def count(db, table):
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# One valid row per constrained table; bad rows below change one column of it.
VALID = {
    "actionlog": dict(action_name="search", params='{"q": 1}', status="success", result="[1]"),
    "moodlog": dict(mood_vector='{"calm": 0.4}'),
    "situationlog": dict(situation_type="curiosity", prompt="why?", context='{"a": 1}'),
    "experimentlog": dict(hypothesis="caching helps", results='{"speedup": 1.9}'),
    "memory": dict(text="short answers", importance=0.5, metadata='{"k": "v"}'),
    "very_long_term_memories": dict(
        memory_id="v1", memory_type="critical_failure", importance_score=0.9,
        strategic_value=0.5, compressed_content='{"text": "deploy broke"}',
        metadata_info="{}", related_memories='["v0"]'),
    "memory_patterns": dict(
        pattern_id="p1", pattern_type="temporal", pattern_description="after midnight",
        confidence_score=0.7, pattern_data="{}", supporting_memories='["v1"]'),
    "memory_consolidations": dict(
        consolidation_id="c1", consolidation_type="daily", consolidation_results="{}"),
    "strategic_knowledge": dict(
        knowledge_id="k1", knowledge_domain="performance", knowledge_summary="batch writes",
        confidence_level=0.9, validation_score=0.2, source_patterns='["p1"]',
        knowledge_structure="{}"),
    "consolidation_patterns": dict(consolidation_id="c1", pattern_id="p1",
                                   extraction_confidence=0.5),
    "pattern_strategic_knowledge": dict(pattern_id="p1", knowledge_id="k1",
                                        contribution_weight=0.5),
    "retention_policies": dict(memory_type="failed_experiment", retention_days=30),
}
# Rows a table's foreign keys need (link tables only).
PARENTS = {
    "consolidation_patterns": ("memory_consolidations", "memory_patterns"),
    "pattern_strategic_knowledge": ("memory_patterns", "strategic_knowledge"),
}

SCORES = [
    ("memory", "importance"), ("very_long_term_memories", "importance_score"),
    ("very_long_term_memories", "strategic_value"), ("memory_patterns", "confidence_score"),
    ("strategic_knowledge", "confidence_level"), ("strategic_knowledge", "validation_score"),
    ("consolidation_patterns", "extraction_confidence"),
    ("pattern_strategic_knowledge", "contribution_weight"),
]
ENUMS = [
    ("actionlog", "status", "pending"),
    ("very_long_term_memories", "memory_type", "episodic"),
    ("memory_patterns", "pattern_type", "random"),
    ("memory_consolidations", "consolidation_type", "hourly"),
    ("retention_policies", "memory_type", "episodic"),
]
OBJECTS = [
    ("actionlog", "params"), ("moodlog", "mood_vector"), ("situationlog", "context"),
    ("memory", "metadata"), ("very_long_term_memories", "compressed_content"),
    ("very_long_term_memories", "metadata_info"), ("memory_patterns", "pattern_data"),
    ("memory_consolidations", "consolidation_results"),
    ("strategic_knowledge", "knowledge_structure"),
]
ARRAYS = [
    ("very_long_term_memories", "related_memories"),
    ("memory_patterns", "supporting_memories"), ("strategic_knowledge", "source_patterns"),
]
ANY_JSON = [("actionlog", "result"), ("experimentlog", "results")]

BAD = (
    [(t, c, v) for t, c in SCORES for v in (-0.01, 1.01, "high")]
    + ENUMS
    + [(t, c, '{"unclosed": ') for t, c in OBJECTS + ARRAYS + ANY_JSON]
    + [(t, c, v) for t, c in OBJECTS for v in ("[]", '"text"')]
    + [(t, c, v) for t, c in ARRAYS for v in ("{}", "3")]
    + [("memory_consolidations", "success", 2)]
)


def seed_parents(db, table):
    for parent in PARENTS.get(table, ()):
        insert(db, parent, VALID[parent])


@pytest.mark.parametrize("table", VALID)
def test_a_valid_row_is_accepted(db, table):
    seed_parents(db, table)
    before = count(db, table)
    insert(db, table, VALID[table])
    assert count(db, table) == before + 1


@pytest.mark.parametrize("table, column, value", BAD, ids=lambda v: str(v))
def test_check_constraints_reject_bad_rows(db, table, column, value):
    seed_parents(db, table)
    before = count(db, table)  # 0, except the seeded retention policies
    with pytest.raises(driver().IntegrityError, match="CHECK constraint failed"):
        insert(db, table, {**VALID[table], column: value})
    assert count(db, table) == before


def test_retention_policy_needs_a_memory_type(db):
    # memory_type is the key of the policy: a policy for no type at all must be refused.
    with pytest.raises(driver().IntegrityError):
        db.execute("INSERT INTO retention_policies(memory_type, retention_days) VALUES (NULL, 5)")
    assert count(db, "retention_policies") == 4


@pytest.mark.parametrize("table, row, same_key", [
    ("summary", dict(summary_text="a", content_hash="h1"), dict(summary_text="b")),
    ("memory", dict(text="a", key="pref-1"), dict(text="b")),
    ("very_long_term_memories", VALID["very_long_term_memories"], dict(memory_type="code_pattern")),
    ("memory_patterns", VALID["memory_patterns"], dict(pattern_description="other")),
    ("strategic_knowledge", VALID["strategic_knowledge"], dict(knowledge_summary="other")),
])
def test_unique_keys(db, table, row, same_key):
    insert(db, table, row)
    with pytest.raises(driver().IntegrityError, match="UNIQUE constraint failed"):
        insert(db, table, {**row, **same_key})
    assert count(db, table) == 1


def test_memories_without_a_key_may_repeat(db):
    insert(db, "memory", dict(text="a"))
    insert(db, "memory", dict(text="a", key=None))
    assert db.execute("SELECT count(*) FROM memory WHERE key IS NULL").fetchone()[0] == 2


def test_an_article_is_unique_per_feed_and_guid(db):
    db.execute("INSERT INTO feed(id, url) VALUES (2, 'https://b/rss')")
    article = dict(title="t", link="https://a/1", feed_id=1, guid="g1")
    insert(db, "article", article)
    with pytest.raises(driver().IntegrityError, match="UNIQUE constraint failed"):
        insert(db, "article", {**article, "title": "again"})
    insert(db, "article", {**article, "feed_id": 2})  # the same guid in another feed
    assert count(db, "article") == 2


def test_foreign_keys_are_enforced(db):
    with pytest.raises(driver().IntegrityError, match="FOREIGN KEY"):
        insert(db, "decisionlog", dict(situation_id=99, raw_response="r"))
    with pytest.raises(driver().IntegrityError, match="FOREIGN KEY"):
        insert(db, "consolidation_metrics", dict(
            metric_id="m1", consolidation_id="missing", metric_name="n", metric_value=1.0))
    assert count(db, "decisionlog") == count(db, "consolidation_metrics") == 0
    insert(db, "situationlog", VALID["situationlog"])
    insert(db, "decisionlog", dict(situation_id=1, raw_response="r"))
    assert count(db, "decisionlog") == 1


def test_deleting_a_consolidation_cascades_to_its_patterns_and_metrics(db):
    seed_parents(db, "consolidation_patterns")
    insert(db, "consolidation_patterns", VALID["consolidation_patterns"])
    insert(db, "consolidation_metrics", dict(
        metric_id="m1", consolidation_id="c1", metric_name="ratio", metric_value=0.4))
    db.execute("DELETE FROM memory_consolidations WHERE consolidation_id = 'c1'")
    assert count(db, "consolidation_patterns") == count(db, "consolidation_metrics") == 0
    assert count(db, "memory_patterns") == 1  # the pattern itself stays


def test_deleting_a_vltm_row_clears_the_patterns_source(db):
    insert(db, "very_long_term_memories", VALID["very_long_term_memories"])
    insert(db, "memory_patterns", {**VALID["memory_patterns"], "source_memory_id": "v1"})
    db.execute("DELETE FROM very_long_term_memories WHERE memory_id = 'v1'")
    assert db.execute("SELECT pattern_id, source_memory_id FROM memory_patterns").fetchall() == [
        ("p1", None)]


def test_deleting_an_event_cascades_to_its_article_links(db):
    insert(db, "article", dict(id=1, title="t", link="l", guid="g", feed_id=1))
    insert(db, "event", dict(id=1, description="storm"))
    insert(db, "event_article", dict(event_id=1, article_id=1))
    db.execute("DELETE FROM event WHERE id = 1")
    assert count(db, "event_article") == 0
    assert count(db, "article") == 1


def knowledge_updated(db):
    return db.execute("SELECT last_updated FROM strategic_knowledge").fetchone()[0]


def test_editing_knowledge_refreshes_last_updated(db):
    old = "2020-01-01T00:00:00.000Z"
    insert(db, "strategic_knowledge", {**VALID["strategic_knowledge"], "last_updated": old})
    db.execute("UPDATE strategic_knowledge SET knowledge_summary = 'stream writes'")
    new = knowledge_updated(db)
    assert new > old
    assert db.execute("SELECT ts FROM doc WHERE kind = 'knowledge'").fetchone()[0] == new
    given = "2021-06-01T12:00:00.000Z"
    db.execute("UPDATE strategic_knowledge SET knowledge_summary = 'again', last_updated = ?",
               [given])
    assert knowledge_updated(db) == given


# kind: (table, key column, row, text column, new text, expected doc (ref, text, type, source, ts))
T = "2026-01-02T03:04:05.000Z"
INDEXED = {
    "memory": ("memory", "id", dict(id=7, text="walrus tusks", memory_type="fact",
                                    source="wiki", created_at=T),
               "text", "narwhal", ("7", "walrus tusks", "fact", "wiki", T)),
    "article": ("article", "id", dict(id=3, title="walrus tusks", summary="ivory", link="l",
                                      guid="g", source="bbc", published=T, feed_id=1),
                "title", "narwhal", ("3", "walrus tusks\nivory", None, "bbc", T)),
    "event": ("event", "id", dict(id=4, description="walrus tusks", keywords="ivory",
                                  timestamp=T),
              "description", "narwhal", ("4", "walrus tusks\nivory", None, None, T)),
    "summary": ("summary", "id", dict(id=5, summary_text="walrus tusks", content_hash="h",
                                      category="news", source="rss", timestamp=T),
                "summary_text", "narwhal", ("5", "walrus tusks", "news", "rss", T)),
    "vltm": ("very_long_term_memories", "memory_id", dict(
        memory_id="v1", memory_type="code_pattern", source_session="s1", created_at=T,
        compressed_content='{"title": "walrus", "parts": [{"note": "tusks"}, 3], '
                           '"deep": {"er": {"x": "ivory"}}}'),
        "compressed_content", '{"text": "narwhal"}',
        ("v1", "walrus tusks ivory", "code_pattern", "s1", T)),
    "pattern": ("memory_patterns", "pattern_id", dict(
        pattern_id="p1", pattern_type="causal", pattern_description="walrus tusks",
        confidence_score=0.5, discovered_at=T),
        "pattern_description", "narwhal", ("p1", "walrus tusks", "causal", None, T)),
    "knowledge": ("strategic_knowledge", "knowledge_id", dict(
        knowledge_id="k1", knowledge_domain="zoo", knowledge_summary="walrus tusks",
        confidence_level=0.5, last_updated=T),
        "knowledge_summary", "narwhal", ("k1", "walrus tusks", "zoo", None, T)),
}


def doc(db, kind):
    return db.execute("SELECT id, ref, text, type, source, ts FROM doc WHERE kind = ?",
                      [kind]).fetchall()


def matches(db, word):
    return [r[0] for r in db.execute("SELECT rowid FROM doc_fts WHERE doc_fts MATCH ?", [word])]


def queued(db):
    return [r[0] for r in db.execute("SELECT doc_id FROM embed_queue")]


def test_every_searchable_table_is_covered():
    from ravana_db.tables import SEARCHABLE

    assert set(INDEXED) == set(SEARCHABLE)
    assert all(INDEXED[k][0] == SEARCHABLE[k]["table"] for k in INDEXED)


@pytest.mark.parametrize("kind", INDEXED)
def test_the_index_follows_insert_update_and_delete(db, kind):
    table, key, row, text_column, new_text, expected = INDEXED[kind]
    insert(db, table, row)
    [(doc_id, *fields)] = doc(db, kind)
    assert tuple(fields) == expected
    for word in expected[1].split():  # nested JSON strings too, for vltm
        assert matches(db, word) == [doc_id], word
    assert queued(db) == [doc_id]

    db.execute("DELETE FROM embed_queue")
    db.execute(f"UPDATE {table} SET {text_column} = ? WHERE {key} = ?", [new_text, row[key]])
    [(same_id, _, text, *_)] = doc(db, kind)
    assert same_id == doc_id and "narwhal" in text and "walrus" not in text
    assert matches(db, "walrus") == []
    assert matches(db, "narwhal") == [doc_id]
    assert queued(db) == [doc_id]

    db.execute(f"DELETE FROM {table} WHERE {key} = ?", [row[key]])
    assert doc(db, kind) == []
    assert matches(db, "narwhal") == []
    assert queued(db) == []


@pytest.mark.parametrize("table, key, update", [
    ("memory", "7", "access_count = access_count + 1, last_accessed = '2026-02-01'"),
    ("very_long_term_memories", "v1",
     "access_count = access_count + 1, last_accessed = '2026-02-01'"),
    ("very_long_term_memories", "v1", "importance_score = 0.1, related_memories = '[\"v2\"]'"),
])
def test_updating_unindexed_columns_leaves_the_index_alone(db, table, key, update):
    kind = next(k for k, spec in INDEXED.items() if spec[0] == table)
    insert(db, table, INDEXED[kind][2])
    before = doc(db, kind)
    db.execute("DELETE FROM embed_queue")
    db.execute(f"UPDATE {table} SET {update} WHERE {INDEXED[kind][1]} = ?", [key])
    assert doc(db, kind) == before
    assert queued(db) == []


def test_default_retention_policies_are_editable_rows(db):
    policies = dict(db.execute("SELECT memory_type, retention_days FROM retention_policies"))
    assert policies == {"strategic_knowledge": None, "critical_failure": None,
                        "successful_improvement": 730, "code_pattern": 365}
    db.execute("UPDATE retention_policies SET retention_days = 400 "
               "WHERE memory_type = 'code_pattern'")
    db.execute("UPDATE retention_policies SET retention_days = NULL "  # permanent
               "WHERE memory_type = 'successful_improvement'")
    for days in (0, -1, "abc", 1.5):
        with pytest.raises(driver().IntegrityError, match="CHECK constraint failed"):
            db.execute("UPDATE retention_policies SET retention_days = ? "
                       "WHERE memory_type = 'code_pattern'", [days])
    assert dict(db.execute("SELECT memory_type, retention_days FROM retention_policies")) == {
        **policies, "code_pattern": 400, "successful_improvement": None}


def test_each_migration_is_recorded_once_and_reopening_applies_nothing(db_path):
    db = open_db(db_path)
    recorded = db.execute("SELECT name FROM _sqlite_migrations ORDER BY id").fetchall()
    db.close()
    assert [name for (name,) in recorded] == [m.name for m in migrations._migrations]
    db = open_db(db_path)
    assert db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == len(recorded)
    assert migrations.pending(db) == []
    db.close()
