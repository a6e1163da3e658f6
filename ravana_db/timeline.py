"""`timeline`: every table's rows as one stream, newest first.

One query per kind, each read newest first from m010's index on `julianday(time)`, merged with
heapq.merge and stopped at the limit: the first page costs a few index steps per kind, however
large the file. Ordering by the Julian day (not the text) puts the instants in order whatever
UTC offset or format another client stored ('2026-03-01T05:00:00+05:00' is midnight UTC). A
time SQLite cannot read (NULL, '', 'garbage') has no Julian day: such rows come last (oldest),
showing the time as stored, and never fall within --since/--until.
"""

import heapq
import re
from dataclasses import dataclass

from .errors import InputError
from .tables import TIMELINE, TIMELINE_KINDS
from .text import one_line
from .times import parse_time

TEXT_CHARS = 200  # a row's one line, at most (then "…")
READ_CHARS = 4 * TEXT_CHARS  # what is read of a huge stored text to make that line
UTC = "strftime('%Y-%m-%dT%H:%M:%fZ', {time})"
_DATED = re.compile(r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass
class Span:
    """What `timeline` shows, checked: kinds (a list or a comma list), since/until (an ISO
    date/time or an age like 7d, as `query` and `export` take), limit (0: no limit)."""

    kinds: tuple[str, ...] = TIMELINE_KINDS
    since: str | None = None
    until: str | None = None
    limit: int = 100

    def __init__(self, *, kinds=None, since=None, until=None, limit=100):
        self.kinds = check_kinds(kinds)
        self.since = parse_time(since, field="since") if since else None
        self.until = parse_time(until, field="until") if until else None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63:
            raise InputError(f"limit: {str(limit)[:40]} is not a count from 0 (no limit) to "
                             "2^63-1")
        self.limit = limit


def check_kinds(kinds):
    """The kinds asked for (a comma list or an iterable), in TIMELINE_KINDS's order; an unknown
    one is an InputError naming the valid kinds."""
    if kinds is None:
        return TIMELINE_KINDS
    if isinstance(kinds, str):
        kinds = kinds.split(",")
    asked = {k.strip() for k in kinds if k.strip()}
    unknown = sorted(asked - set(TIMELINE_KINDS))
    if unknown or not asked:
        named = repr(unknown[0][:40]) if unknown else "none"
        raise InputError(f"--kind: {named} is not a timeline kind; valid kinds: "
                         f"{', '.join(TIMELINE_KINDS)}")
    return tuple(k for k in TIMELINE_KINDS if k in asked)


def order_of(kind):
    """The SQL expression a kind's rows are ordered by (m010 indexes it)."""
    return f"julianday({TIMELINE[kind][1].time})"


def kind_query(kind, span):
    """The SQL and parameters that read one kind's rows, newest first (NULL days last)."""
    table, line = TIMELINE[kind]
    order = order_of(kind)
    where = [line.where] if line.where else []
    params = []
    for op, value in ((">=", span.since), ("<=", span.until)):
        if value is not None:
            where.append(f"{order} {op} julianday(?)")
            params.append(value)
    sql = (f"SELECT {order} AS day, {UTC.format(time=line.time)} AS utc, {line.time} AS stored, "
           f"id, substr({line.text}, 1, {READ_CHARS}) AS text FROM [{table.name}]"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {order} DESC, id DESC")
    if span.limit:
        sql += f" LIMIT {span.limit}"
    return sql, params


def _rows(db, kind, span):
    sql, params = kind_query(kind, span)
    rank = -TIMELINE_KINDS.index(kind)
    for day, utc, stored, id, text in db.conn.execute(sql, params):
        # SQLite reads a number ('12') as a Julian day (4713 BC) and '12:00' as a time on
        # 2000-01-01: ordered so, but only a time with a date is shown as UTC.
        readable = utc is not None and isinstance(stored, str) and _DATED.match(stored)
        time = utc if readable else (None if stored is None else one_line(stored, TEXT_CHARS))
        # The merge key: rows with a day first, then newer days; ties by kind, then id.
        key = (day is not None, day if isinstance(day, float) else 0.0, rank, id)
        yield key, {"time": time, "kind": kind, "id": id, "text": one_line(text, TEXT_CHARS)}


def timeline(db, span):
    """The rows of every kind in span, newest first: dicts of time (ISO-8601 UTC with
    milliseconds and Z, or the time as stored when SQLite cannot read it), kind, id and text
    (one line). A generator: rows are read as they are taken, in one read transaction."""
    own = not db.conn.in_transaction
    if own:
        db.conn.execute("BEGIN")
    try:
        merged = heapq.merge(*(_rows(db, kind, span) for kind in span.kinds),
                             key=lambda pair: pair[0], reverse=True)
        for taken, (_, row) in enumerate(merged, 1):
            yield row
            if taken == span.limit:
                break
    finally:
        if own and db.conn.in_transaction:
            db.conn.execute("COMMIT")
