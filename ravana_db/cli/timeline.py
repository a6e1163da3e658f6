"""`ravana-db timeline`: what happened, across every table, newest first."""

from typing import Annotated

import typer

from ..output import Format, emit, pick
from ..tables import TIMELINE_KINDS
from .common import Command, FilesOption, FormatOption, JsonFlag, app, is_server, open_source

COLUMNS = ["time", "kind", "id", "text"]


@app.command(cls=Command)
def timeline(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        help="only rows from this time on: ISO date/time or an age like 7d, 12h")] = None,
    until: Annotated[str | None, typer.Option(
        help="only rows up to this time: ISO date/time or an age like 7d")] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", "-k", metavar="KIND,...",
        help=f"only these kinds (a comma list): {', '.join(TIMELINE_KINDS)} [default: all]")
    ] = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", help="at most this many rows, the newest (0: every row)")] = 100,
    utc: Annotated[bool, typer.Option(
        "--utc", help="show times on a terminal in UTC, as stored [default: local time; "
        "json, jsonl and csv always give ISO-8601 UTC]")] = False,
    files: FilesOption = None,
    fmt: FormatOption = None,
    json_flag: JsonFlag = False,
):
    """Show what happened, across every table, one line per row, newest first.

    Rows whose time cannot be read come last (showing the time as stored) and are left out
    by --since and --until.

    Example: ravana-db timeline --since 7d --kind memory,action,feed_failure
    """
    from ..timeline import Span
    from ..timeline import timeline as rows
    from ..times import local_time, local_zone

    fmt = pick(fmt, json_flag)
    span = Span(kinds=kind, since=since, until=until, limit=limit)
    db = open_source(ctx, files)
    columns = COLUMNS
    if is_server(db):
        from ..postgres.views import timeline as rows
        columns = ["time", "file", *COLUMNS[1:]]
    stream = rows(db, span)
    title = "times in UTC"
    if fmt is Format.table and not utc:
        stream = ({**row, "time": local_time(row["time"])} for row in stream)
        title = f"times in local time ({local_zone()})"
    emit(stream, fmt, columns=columns, title=title if fmt is Format.table else None)
