"""`ingest ravana`: a database of the original RAVANA system, read-only, its quirks made ours
(Python-repr text, times like 'Unknown', feedless articles, per-run cluster labels)."""

import contextlib
import email.utils
import json
from pathlib import Path

from ..db import uri
from ..errors import InputError
from ..sql import driver
from ..times import format_time, parse_time
from .loader import Loader, opened

# The original system's tables (SQLModel's names), in the order their references need.
ORIGINAL = (
    "article", "event", "summary", "actionlog", "moodlog", "situationlog", "decisionlog",
    "experimentlog", "very_long_term_memories", "memory_patterns", "memory_consolidations",
    "strategic_knowledge", "consolidation_patterns", "pattern_strategic_knowledge",
    "consolidation_metrics")
UNKNOWN_FEED = {"url": "unknown:", "title": "articles that had no feed"}  # as migration m004
NO_DESCRIPTION = {"", "no description"}  # what the original stored for every event


def load_original(db, path, *, embedder=None, progress=None):
    """Store a database of the original system (RAVANA's SQLModel tables, and its
    very-long-term tables where present), opened read-only. Its quirks are mapped, never
    fatal: a row that cannot be stored is refused, counted, and the rest goes in.

    Returns (report rows, notes).
    """
    with Loader(db, mapped=True, lenient=True) as loader:
        with contextlib.closing(_open_original(db, path)) as conn:
            present = {n for (n,) in conn.execute("SELECT name FROM sqlite_master "
                                                  "WHERE type = 'table'")}
            tables = [t for t in ORIGINAL if t in present]
            if not tables:
                raise InputError(f"{path} holds none of the original's tables "
                                 f"({', '.join(ORIGINAL)})")
            if "article" in tables:
                loader.add("feed", [("the unknown: feed", {"id": 0, **UNKNOWN_FEED})])
            for name in tables:
                cursor = conn.execute(f"SELECT * FROM [{name}] ORDER BY rowid")
                columns = [d[0] for d in cursor.description]
                loader.add(name, _original_rows(loader, name, columns, cursor))
        if "article" in loader.spools:
            _merge_duplicate_links(loader)
        return loader.write(embedder=embedder, progress=progress), loader.notes


def _open_original(db, path):
    """A read-only connection to the original's file that touches nothing in its folder: no
    -shm is made beside a WAL original (SQLite's `unix-none` VFS takes no locks, and in
    exclusive locking mode it keeps the WAL's index in memory), and its -wal is read, not
    checkpointed. A text value that is not UTF-8 comes as NotUtf8 (its row is refused)."""
    path = Path(path)
    with opened(path) as f:
        header = f.read(16)
    if header and header != b"SQLite format 3\x00":
        raise InputError(f"{path} is not a SQLite database")
    real = path.resolve()
    main = db.execute("PRAGMA database_list").fetchone()[2]
    if main and real == Path(main).resolve():
        raise InputError(f"{path} is the database being written: give the original's file")
    try:
        conn = driver().connect(f"{uri(real)}?mode=ro&vfs=unix-none", uri=True)
        conn.text_factory = _text
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        ours = conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'"
                            ).fetchone()
    except driver().DatabaseError as e:
        raise InputError(f"cannot read {path} as a SQLite database: {e}") from None
    if ours and conn.execute("SELECT 1 FROM _sqlite_migrations "
                             "WHERE migration_set = 'ravana_db'").fetchone():
        conn.close()
        raise InputError(f"{path} is a ravana-db file, not the original's: move its rows with "
                         "`ravana-db export all --output DIR` and `ingest dir DIR`")
    return conn


class NotUtf8(bytes):
    """A text value of the original's that is not UTF-8."""


def _text(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return NotUtf8(raw)


def _original_rows(loader, name, columns, cursor):
    """(where, row dict) of one original table, its values made ours (see _original_value);
    a row whose values cannot be is refused, with why."""
    from ..tables import NATURAL

    table = loader.table(name)
    fields = table.models[()].model_fields
    identity = {c for ident in NATURAL[name] for c in ident}
    refused = []
    for values in cursor:
        data = dict(zip(columns, values))
        where = f"{name} id {data.get('id')}" if "id" in data else f"{name} row"
        row = {"id": data["id"]} if table.surrogate and "id" in data else {}
        try:
            for column, raw in data.items():
                if isinstance(raw, NotUtf8):
                    raise ValueError(f"{column}: not valid UTF-8 text")
                if column in fields:
                    value = _original_value(table, column, raw)
                    if value is not _OMIT:
                        row[column] = value
            _original_quirks(name, row, data)
            for column in sorted(identity & table.not_null - set(row) - {"content_hash"}):
                raw = data.get(column)
                raise ValueError(f"{column}: " + ("missing" if raw in (None, "") else
                                                  f"{str(raw)[:40]!r} is not a time"))
        except ValueError as e:
            refused.append(f"{where}: {e}")
            continue
        yield where, row
    loader.reports[name]["read"] += len(refused)
    loader.refuse(name, refused, "")


_OMIT = object()  # a value to leave out: the database's default applies


def _original_value(table, column, value):
    """An original value as our column holds it: times as ISO-8601 UTC (unparseable: _OMIT,
    so NULL or the column's default), JSON text as JSON (see _original_json), Postgres' text
    booleans 't'/'f' as 1/0, numbers in text columns as text."""
    from ..tables import TIME_COLUMNS

    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        return None if column not in table.not_null else _OMIT
    if column == "compressed_content" and isinstance(value, str) and value.strip() and \
            _python_literal(value)[0] is _OMIT and not _is_json(value):
        return json.dumps({"text": value}, ensure_ascii=False)  # as `log vltm` stores text
    if column in table.json:
        return _original_json(value, table.json[column])
    if column in TIME_COLUMNS:
        return _original_time(value)
    if table.types[column] == "INTEGER" and isinstance(value, str):
        flag = {"t": 1, "true": 1, "f": 0, "false": 0}.get(value.strip().lower())
        return value if flag is None else flag
    if table.types[column] == "TEXT" and isinstance(value, (int, float)):
        return str(value)
    return value


def _original_time(value):
    """ISO-8601 (the original's str(datetime), naive = UTC), RFC 822 (feeds' `published`) or
    epoch seconds, as stored here; anything else ('Unknown') is _OMIT."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from datetime import datetime, timezone

        try:
            return format_time(datetime.fromtimestamp(value, timezone.utc))
        except (OverflowError, OSError, ValueError):
            return _OMIT
    text = str(value).strip()
    if not text:
        return _OMIT
    try:
        return parse_time(text)
    except InputError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return _OMIT
    try:
        return format_time(parsed)
    except (OverflowError, ValueError):
        return _OMIT


def _original_json(value, kind):
    """JSON text of the original's JSON-in-text columns. Valid JSON is kept as it was
    written; a Python literal (str(dict), which some writers stored) becomes JSON; anything
    else is kept as a JSON string, wrapped as {"_raw": ...} where an object must go. Empty
    text is _OMIT (the column's default)."""
    if not isinstance(value, str):
        parsed, text = value, json.dumps(value)
    elif not value.strip():
        return _OMIT
    else:
        try:
            parsed, text = json.loads(value), value
        except (ValueError, RecursionError):
            parsed, text = _python_literal(value)
    if kind == "object" and not isinstance(parsed, dict):
        return json.dumps({"_raw": value if parsed is _OMIT else parsed}, ensure_ascii=False)
    if kind == "array" and not isinstance(parsed, list):
        return json.dumps([] if parsed is None else [value if parsed is _OMIT else parsed],
                          ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False) if parsed is _OMIT else text


def _is_json(text):
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _python_literal(value):
    """(value, JSON text) of a Python literal's text (fields.python_literal, which `log` uses
    too), or (_OMIT, None)."""
    from ..fields import python_literal

    try:
        return python_literal(value)
    except ValueError:
        return _OMIT, None


def _original_quirks(name, row, data):
    """What each original table needs beyond its columns' types."""
    if name == "article":
        row["feed_id"] = 0  # the `unknown:` feed, as migration m004 gives feedless articles
        link = (data.get("link") or "").strip()
        row["link"] = link
        # The link is the entry's identity (the original had no guid): the same link twice
        # is one article.
        row["guid"] = link or f"ravana:article:{data.get('id')}"
    elif name == "event":
        # The original's cluster ids are one run's cluster labels, not article ids: kept out,
        # so they never collide with ours (the event is found by its time and text).
        row.pop("cluster_id", None)
        keywords = _keywords(data.get("keywords"))
        row["keywords"] = keywords
        if str(data.get("description") or "").strip().lower() in NO_DESCRIPTION:
            if not keywords:
                raise ValueError("no description and no keywords")
            row["description"] = keywords
    elif name == "summary":
        row.pop("content_hash", None)  # ours is SHA-256 of the text, whatever the original's
        for column, default in (("source", "unknown"), ("category", "misc")):
            if row.get(column) is None:
                row[column] = default
    elif name == "actionlog":
        status = str(data.get("status") or "").strip().lower()
        status = {"ok": "success", "succeeded": "success", "successful": "success",
                  "true": "success", "failed": "failure", "fail": "failure",
                  "error": "failure", "false": "failure"}.get(status, status)
        if status not in ("success", "failure"):
            raise ValueError(f"status {data.get('status')!r} is neither success nor failure")
        row["status"] = status
    elif name == "moodlog" and "mood_vector" not in row:
        row["mood_vector"] = "{}"


def _keywords(value):
    """Comma-separated keywords (or a JSON list of them) as ours: 'a, b, c', or None."""
    if value is None:
        return None
    words = None
    if isinstance(value, str) and value.strip().startswith("["):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list):
                words = [str(w) for w in parsed]
    if words is None:
        words = str(value).split(",")
    words = [w.strip() for w in words if w and w.strip()]
    return ", ".join(words) or None


def _merge_duplicate_links(loader):
    """A note of how many original articles repeat a link (the original had no unique
    constraint): write() stores each link once, the first row's."""
    links, repeated = set(), 0
    for item in loader.rows("article"):
        repeated += item.values.get("guid") in links
        links.add(item.values.get("guid"))
    if repeated:
        loader.notes.append(f"article: {repeated} row(s) repeat another's link: stored once "
                            "(the first), counted as existing")
