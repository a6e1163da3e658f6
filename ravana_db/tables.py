"""Every fact about each of the agent's tables, in one place: adding a table means an entry here
(and the migration that creates it).

schema, models, export, search and load read what they need from TABLE_FACTS; the names they
used before (schema.TABLES and SEARCHABLE, models.NATURAL, HASHED and TIME_COLUMNS, export.TIME)
are derived here.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Search:
    """How a table's rows enter the search index (`doc`): SQL expressions over the row `new`.

    Args:
        kind: the index's name for these rows (`query --kind`).
        ref: the column that identifies a row in the index (its `doc.ref`).
        columns: the columns whose update changes the row's entry.
        text, type, source, ts: the entry's text and the values queries filter on.
        where: only rows for which it holds are indexed; an update of `where_columns` adds or
            drops the row's entry.
    """

    kind: str
    ref: str
    columns: str
    text: str
    type: str
    source: str
    ts: str
    where: str | None = None
    where_columns: str | None = None


@dataclass(frozen=True)
class Timeline:
    """How a table's rows appear in `timeline`: SQL expressions over the table's own columns.

    Args:
        kind: the timeline's name for these rows (`timeline --kind`).
        time: the row's time (ISO-8601 text, any UTC offset); rows are ordered by
            `julianday(time)`, which m010 indexes (the expression must match it exactly).
        text: the row's one line (the timeline collapses whitespace and truncates it).
        where: only rows for which it holds.
    """

    kind: str
    time: str
    text: str
    where: str | None = None


@dataclass(frozen=True)
class Table:
    """One table a user of ravana-db owns.

    Args:
        name: the table's name.
        holds: what it holds, in a phrase (the MCP server's schema resource).
        natural: the identities that find a row again in another file, where integer ids
            differ: a row takes the first whose columns it gives (not null); with none, it is
            a new row. Log rows have no key of their own: their time and content are their
            identity.
        times: the columns that hold a time (ISO-8601 UTC text), parsed as such on import.
        time: the SQL time that `export --since/--until` compare with (None: not filtered).
        hashed: content_hash is SHA-256 of these columns (joined by newlines), as `log` and
            `ingest feeds` compute it, when a row does not give one.
        search: how its rows are searched, if they are.
        timeline: how its rows appear in `timeline` (a table may give several kinds).
    """

    name: str
    holds: str = ""
    natural: tuple[tuple[str, ...], ...] = ()
    times: tuple[str, ...] = ()
    time: str | None = None
    hashed: tuple[str, ...] = ()
    search: Search | None = None
    timeline: tuple[Timeline, ...] = ()


# memory_consolidations records both maintenance runs; `operation` tells them apart (a row
# whose results are not JSON, or name no operation, is a consolidation run).
OPERATION = ("CASE WHEN json_valid(consolidation_results) "
             "THEN json_extract(consolidation_results, '$.operation') END")
RUN = ("consolidation_type || ' ' || {what} || ': ' || memories_processed || ' memories, ' || "
       "patterns_extracted || ' patterns' || CASE WHEN success = 1 THEN '' "
       "ELSE ', failed: ' || coalesce(error_message, '?') END")
# In the order status and export list them (and import loads them: a table after those it
# refers to). FTS shadow tables, vec0 internals and bookkeeping tables are deliberately not here.
TABLE_FACTS = (
    Table("feed",
          holds="the feeds subscribed to (`ingest feeds`, `feeds`), their state and failures",
          natural=(("url",),), times=("last_fetched", "next_attempt"),
          # Only a feed's current run of failures is stored: its latest failure, when it
          # fetched last.
          timeline=(Timeline("feed_failure", "last_fetched",
                             "url || ': ' || failures || ' failures: ' || last_error",
                             where="last_error IS NOT NULL"),)),
    Table("article",
          holds="articles read from feeds",
          natural=(("feed_id", "guid"),), times=("published", "fetched_at"),
          time="coalesce(published, fetched_at)", hashed=("title", "summary", "content"),
          search=Search(
              kind="article", ref="id", columns="title, summary, source, published, fetched_at",
              text="new.title || coalesce(char(10) || new.summary, '')", type="NULL",
              source="new.source", ts="coalesce(new.published, new.fetched_at)"),
          timeline=(Timeline("article", "coalesce(published, fetched_at)",
                             "title || coalesce(' (' || source || ')', '')"),)),
    Table("event",
          holds="events: clusters of articles about one happening (`ingest feeds` detects them)",
          natural=(("cluster_id",), ("timestamp", "description")),
          times=("timestamp",), time="timestamp",
          search=Search(
              kind="event", ref="id", columns="description, keywords, timestamp",
              text="new.description || coalesce(char(10) || new.keywords, '')", type="NULL",
              source="NULL", ts="new.timestamp"),
          timeline=(Timeline("event", "timestamp", "description"),)),
    Table("event_article",
          holds="which articles each event holds",
          natural=(("event_id", "article_id"),)),
    Table("summary",
          holds="summaries (compression, reflections): `log summary`, `compress`",
          natural=(("content_hash",),), times=("timestamp",), time="timestamp",
          hashed=("summary_text",),
          search=Search(
              kind="summary", ref="id", columns="summary_text, category, source, timestamp",
              text="new.summary_text", type="new.category", source="new.source",
              ts="new.timestamp"),
          timeline=(Timeline("summary", "timestamp",
                             "coalesce(category || ': ', '') || summary_text"),)),
    Table("actionlog",
          holds="actions the agent took, their parameters, status and result",
          natural=(("timestamp", "action_name", "params", "status"),),
          times=("timestamp",), time="timestamp",
          timeline=(Timeline("action", "timestamp",
                             "action_name || ' ' || status || ' ' || params"),)),
    Table("moodlog",
          holds="the agent's mood vectors over time",
          natural=(("timestamp", "mood_vector"),), times=("timestamp",),
          time="timestamp", timeline=(Timeline("mood", "timestamp", "mood_vector"),)),
    Table("situationlog",
          holds="situations the agent met: type, prompt, context",
          natural=(("timestamp", "situation_type", "prompt", "context"),),
          times=("timestamp",), time="timestamp",
          timeline=(Timeline("situation", "timestamp", "situation_type || ': ' || prompt"),)),
    # Without a situation, a decision is found by its time (m007's index).
    Table("decisionlog",
          holds="decisions made, with the situation they answer",
          natural=(("situation_id", "timestamp", "raw_response"),
                                  ("timestamp", "raw_response")),
          times=("timestamp",), time="timestamp",
          timeline=(Timeline("decision", "timestamp", "raw_response"),)),
    Table("experimentlog",
          holds="experiments: hypothesis and results",
          natural=(("timestamp", "hypothesis", "results"),),
          times=("timestamp",), time="timestamp",
          timeline=(Timeline("experiment", "timestamp", "hypothesis || ' -> ' || results"),)),
    Table("memory",
          holds=("episodic memories: text, type, importance, access counts; merged ones point to "
                 "the memory they were merged into"),
          natural=(("key",), ("created_at", "text")),
          times=("created_at", "last_accessed"), time="created_at", hashed=("text",),
          search=Search(
              kind="memory", ref="id", columns="text, memory_type, source, created_at",
              text="new.text", type="new.memory_type", source="new.source",
              ts="new.created_at",
              # m006: a memory merged into another by `consolidate` leaves the index (and so
              # `query`); undoing the merge brings it back.
              where="new.merged_into IS NULL", where_columns="merged_into"),
          timeline=(Timeline("memory", "created_at", "memory_type || ': ' || text"),)),
    Table("very_long_term_memories",
          holds="memories promoted (or compressed) for the very long term",
          natural=(("memory_id",),),
          times=("created_at", "last_accessed", "promoted_at"), time="created_at",
          search=Search(
              kind="vltm", ref="memory_id",
              columns="memory_id, compressed_content, memory_type, source_session, created_at",
              text="(SELECT group_concat(value, ' ') FROM json_tree(json_remove("
                   "new.compressed_content, '$._compressed')) WHERE type = 'text')",
              type="new.memory_type", source="new.source_session", ts="new.created_at"),
          timeline=(Timeline(
              "vltm", "created_at",
              "memory_type || ': ' || CASE WHEN json_valid(compressed_content) THEN coalesce("
              "json_extract(compressed_content, '$.text'), compressed_content) "
              "ELSE compressed_content END"),)),
    Table("memory_patterns",
          holds="patterns `consolidate` found in memories",
          natural=(("pattern_id",),),
          times=("discovered_at", "last_validated"), time="discovered_at",
          search=Search(
              kind="pattern", ref="pattern_id",
              columns="pattern_id, pattern_description, pattern_type, discovered_at",
              text="new.pattern_description", type="new.pattern_type", source="NULL",
              ts="new.discovered_at"),
          timeline=(Timeline("pattern", "discovered_at",
                             "pattern_type || ': ' || pattern_description"),)),
    Table("memory_consolidations",
          holds="consolidation and compression runs",
          natural=(("consolidation_id",),),
          times=("consolidation_date",), time="consolidation_date",
          timeline=(Timeline("consolidation", "consolidation_date",
                             RUN.format(what="'consolidation'"),
                             where=f"{OPERATION} IS NOT 'compress'"),
                    Timeline("compression", "consolidation_date",
                             RUN.format(what="'compression'"),
                             where=f"{OPERATION} IS 'compress'"))),
    Table("strategic_knowledge",
          holds="strategic knowledge derived from patterns",
          natural=(("knowledge_id",),), times=("last_updated",),
          time="last_updated",
          search=Search(
              kind="knowledge", ref="knowledge_id",
              columns="knowledge_id, knowledge_summary, knowledge_domain, last_updated",
              text="new.knowledge_summary", type="new.knowledge_domain", source="NULL",
              ts="new.last_updated"),
          timeline=(Timeline("knowledge", "last_updated",
                             "knowledge_domain || ': ' || knowledge_summary"),)),
    Table("consolidation_patterns",
          holds="which run found which pattern",
          natural=(("consolidation_id", "pattern_id"),)),
    Table("pattern_strategic_knowledge",
          holds="which patterns support which knowledge",
          natural=(("pattern_id", "knowledge_id"),)),
    Table("consolidation_metrics",
          holds="measurements of each consolidation run",
          natural=(("metric_id",),), times=("timestamp",),
          time="timestamp"),
    Table("retention_policies",
          holds="how long each memory type is kept",
          natural=(("memory_type",),), times=("updated_at",),
          time="updated_at"),
    Table("memory_link",
          holds="links between similar memories (consolidate)",
          times=("created_at",), time="created_at"),
    Table("memory_merge", holds="merges of duplicate memories, for `consolidate --undo`"),
    Table("consolidation_policy",
          holds="consolidation thresholds, one row per setting",
          times=("updated_at",), time="updated_at"),
)

# The order `query --kind` (and its help) lists the searchable kinds in.
KIND_ORDER = ("memory", "article", "event", "summary", "vltm", "pattern", "knowledge")

BY_NAME = {t.name: t for t in TABLE_FACTS}
BY_KIND = {t.search.kind: t for t in TABLE_FACTS if t.search}
if set(KIND_ORDER) != set(BY_KIND):
    raise ValueError(f"tables.KIND_ORDER {KIND_ORDER} must name every searchable kind "
                     f"({', '.join(BY_KIND)})")


def search_spec(table):
    """A searchable table's Search as the dict the index's SQL builders take: its table, and
    `where`/`where_columns` only when it has them."""
    spec = {"table": table.name, **vars(table.search)}
    del spec["kind"]
    return {k: v for k, v in spec.items() if v is not None}


# The kinds `timeline --kind` takes, in the order its help lists them.
TIMELINE = {line.kind: (t, line) for t in TABLE_FACTS for line in t.timeline}
TIMELINE_KINDS = ("article", "event", "action", "mood", "situation", "decision", "experiment",
                  "memory", "summary", "vltm", "pattern", "knowledge", "consolidation",
                  "compression", "feed_failure")
if set(TIMELINE_KINDS) != set(TIMELINE):
    raise ValueError(f"tables.TIMELINE_KINDS {TIMELINE_KINDS} must name every timeline kind "
                     f"({', '.join(TIMELINE)})")

# The names other modules knew these facts by.
TABLES = tuple(t.name for t in TABLE_FACTS)
SEARCHABLE = {kind: search_spec(BY_KIND[kind]) for kind in KIND_ORDER}
NATURAL = {t.name: list(t.natural) for t in TABLE_FACTS if t.natural}
HASHED = {t.name: t.hashed for t in TABLE_FACTS if t.hashed}
TIME_COLUMNS = frozenset(c for t in TABLE_FACTS for c in t.times)
TIME = {t.name: t.time for t in TABLE_FACTS}
