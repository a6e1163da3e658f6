"""`status`, `export TABLE` and `timeline` on the server: what the files synced there hold,
each row naming the file it came from (`file`), limited to some files with --file."""

import heapq
import json
from datetime import datetime, timezone

from ..errors import InputError
from ..tables import RUN, TABLES, TIME, TIMELINE
from ..text import one_line
from ..timeline import READ_CHARS, TEXT_CHARS
from ..times import format_time, from_iso
from .schema import columns, key, quoted

# Timeline kinds whose SQLite expressions read JSON text: their PostgreSQL form (JSONB).
OPERATION = "(consolidation_results ->> 'operation')"
TIMELINE_SQL = {
    "vltm": ("memory_type || ': ' || coalesce(compressed_content ->> 'text', "
             "compressed_content #>> '{}')", None),
    "consolidation": (RUN.format(what="'consolidation'"),
                      f"{OPERATION} IS DISTINCT FROM 'compress'"),
    "compression": (RUN.format(what="'compression'"), f"{OPERATION} = 'compress'"),
}


def _files(server, alias="t"):
    """The --file choice as SQL over `alias` (true: every file) and its parameters."""
    if server.file_ids is None:
        return "true", []
    return f"{alias}.file_id = ANY(%s)", [server.file_ids]


def status(server):
    """What the server holds: its versions and, per synced file (the chosen ones), when it
    was synced last, how long ago, and its rows per table."""
    conn = server.conn
    pg_version, vector_version, schema_version = conn.execute(
        "SELECT current_setting('server_version'), "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
        "(SELECT version FROM ravana_schema)").fetchone()
    where, params = _files(server, "f")
    files = conn.execute(
        f"SELECT file_id, name, path, last_sync_at, position FROM ravana_file f WHERE {where} "
        "ORDER BY name", params).fetchall()
    counts = {}
    for table in (*TABLES, "doc"):
        for file_id, n in conn.execute(f"SELECT file_id, count(*) FROM {quoted(table)} t "
                                       f"WHERE {_files(server)[0]} GROUP BY file_id",
                                       _files(server)[1]):
            counts.setdefault(file_id, {})[table] = n
    vectors = dict(conn.execute(f"SELECT file_id, count(*) FROM doc t WHERE {_files(server)[0]} "
                                "AND embedding IS NOT NULL GROUP BY file_id",
                                _files(server)[1]).fetchall())
    now = datetime.now(timezone.utc)
    return {
        "server": server.masked_url,
        "postgresql_version": pg_version,
        "pgvector_version": vector_version,
        "schema_version": schema_version,
        "files": [{
            "name": name, "file_id": str(file_id), "path": path,
            "last_sync": format_time(synced) if synced else None,
            "seconds_since_sync": round((now - synced).total_seconds(), 1) if synced else None,
            "position": position,
            "searchable": counts.get(file_id, {}).get("doc", 0),
            "vectors": vectors.get(file_id, 0),
            "rows": {t: counts.get(file_id, {}).get(t, 0) for t in TABLES},
        } for file_id, name, path, synced, position in files],
    }


def export_rows(server, table, *, since=None, until=None):
    """(column names, rows) of one table on the server: `file` (the file's name), then the
    file's columns, times as a file stores them (ISO-8601 UTC, Z), JSON as its text; file by
    file (by name), each in its key's order. since/until compare with the table's time, as
    export does on a file."""
    names = [name for name, _ in columns(table)]
    where, params = "file_id = %s", []
    for op, value in ((">=", since), ("<=", until)):
        if value is not None and TIME[table]:
            where += f" AND {_sql(TIME[table])} {op} %s"
            params.append(from_iso(value))
    sql = (f"SELECT {', '.join(quoted(n) for n in names)} FROM {quoted(table)} WHERE {where} "
           f"ORDER BY {', '.join(quoted(c) for c in key(table))}")
    chosen = sorted((name, file_id) for file_id, name in server.names.items()
                    if server.file_ids is None or file_id in server.file_ids)

    def rows():
        for name, file_id in chosen:
            with server.conn.cursor() as cursor:
                for row in cursor.execute(sql, [file_id, *params]):
                    yield (name, *(_as_stored(v) for v in row))

    return ["file", *names], rows()


def _sql(expression):
    """A time expression of tables.py as PostgreSQL reads it: a bare column name quoted (a
    column may be called timestamp)."""
    return quoted(expression) if expression.isidentifier() else expression


def _as_stored(value):
    """A server value as a file stores it: times as ISO-8601 UTC text, JSON as its text."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def timeline(server, span):
    """timeline.timeline on the server: the rows of every kind in span, newest first, each
    with the name of its file (time, file, kind, id, text). Rows without a time come last."""
    merged = heapq.merge(*(_kind_rows(server, kind, span) for kind in span.kinds),
                         key=lambda pair: pair[0], reverse=True)
    for taken, (_, row) in enumerate(merged, 1):
        yield row
        if taken == span.limit:
            break


def _kind_rows(server, kind, span):
    """One kind's rows, newest first, each with its merge key."""
    table, line = TIMELINE[kind]
    text, condition = TIMELINE_SQL.get(kind, (line.text, line.where))
    time = _sql(line.time)
    where, params = _files(server)
    if condition:
        where += f" AND ({condition})"
    for op, value in ((">=", span.since), ("<=", span.until)):
        if value is not None:
            where += f" AND {time} {op} %s"
            params.append(from_iso(value))
    sql = (f"SELECT {time}, file_id, id, substr(({text})::text, 1, {READ_CHARS}) "
           f"FROM {quoted(table.name)} t WHERE {where} "
           f"ORDER BY {time} DESC NULLS LAST, file_id DESC, id DESC"
           + (f" LIMIT {span.limit}" if span.limit else ""))
    rank = -span.kinds.index(kind)
    with server.conn.cursor() as cursor:
        for stamp, file_id, id, text in cursor.execute(sql, params):
            key = (stamp is not None, stamp.timestamp() if stamp else 0.0, rank,
                   str(file_id), id)
            yield key, {"time": format_time(stamp) if stamp else None,
                        "file": server.names.get(file_id), "kind": kind, "id": id,
                        "text": one_line(text, TEXT_CHARS)}


def export(server, job, *, out=None):
    """Write one table of the server (export.Export job: its format, output file, since and
    until) as export.run does for a file; returns its report. `all` is a file's (a folder a
    later import reads back): on a server it is an InputError."""
    import sys

    from ..export.files import new_file
    from ..export.formats import WRITERS

    if job.table == "all":
        raise InputError("export all makes a folder for one file's import: on a server, "
                         "export a table at a time (each row names its file)")
    names, rows = export_rows(server, job.table, since=job.since, until=job.until)
    if job.output is None:
        count = WRITERS[job.fmt](out or sys.stdout, names, rows)
    else:
        with new_file(job.output, force=job.force) as f:
            count = WRITERS[job.fmt](f, names, rows)
    return {"table": job.table, "format": job.fmt, "rows": count,
            "file": str(job.output) if job.output else None}
