"""What is in a database file: `ravana-db status`."""

import os

from . import __version__, runs
from .index import health
from .postgres.sync import lag
from .schema import migrations
from .tables import TABLES


def status(db, path):
    """A summary of the file: size, versions, row counts per table, last consolidation."""
    sqlite_version, vec_version = db.execute("SELECT sqlite_version(), vec_version()").fetchone()
    size = sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    applied = migrations.applied(db)
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    last = db.execute(
        "SELECT consolidation_date, consolidation_type, success FROM memory_consolidations "
        "ORDER BY consolidation_date DESC LIMIT 1").fetchone()
    return {
        "path": str(path),
        "size_bytes": size,
        "schema_version": len(applied),
        "last_migration": applied[-1].name if applied else None,
        "ravana_db_version": __version__,
        "sqlite_version": sqlite_version,
        "sqlite_vec_version": vec_version,
        "embedding_model": meta.get("embedding_model"),
        # As recorded, even when damaged (a command that needs it says how to repair it).
        "embedding_dim": _number_or_text(meta.get("embedding_dim")),
        "index": health(db),
        "last_consolidation": (
            {"date": last[0], "type": last[1], "success": bool(last[2])} if last else None),
        "consolidation": _consolidation(db),
        "feeds": _feeds(db),
        # Per PostgreSQL server this file is synced to: rows changed since, last sync.
        "sync": lag(db),
        "rows": {t: db.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in TABLES},
    }


def _consolidation(db):
    """What `consolidate` has done: its runs, and what they left in the file."""
    count, failed, last = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE success = 0), max(consolidation_date) "
        "FROM memory_consolidations "
        f"WHERE {runs.of('consolidate')}").fetchone()

    def one(sql):
        return db.execute(sql).fetchone()[0]

    return {
        "runs": count, "failed_runs": failed, "last_run": last,
        "memories_merged": one("SELECT count(*) FROM memory WHERE merged_into IS NOT NULL"),
        "memories_waiting": one("SELECT count(*) FROM memory WHERE dup_key IS NULL"),
        "links": one("SELECT count(*) FROM memory_link"),
        "very_long_term_memories": one("SELECT count(*) FROM very_long_term_memories"),
        "patterns": one("SELECT count(*) FROM memory_patterns"),
        "knowledge": one("SELECT count(*) FROM strategic_knowledge"),
    }


def _feeds(db):
    """Subscribed feeds, and how many of them are paused (`ingest feeds` skips those)."""
    subscribed, paused = db.execute(
        "SELECT count(*), count(paused_at) FROM feed "
        "WHERE url != 'unknown:' AND removed_at IS NULL").fetchone()
    return {"subscribed": subscribed, "paused": paused}


def _number_or_text(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value if value is None or isinstance(value, str) else repr(value)
