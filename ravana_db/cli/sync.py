"""`ravana-db sync`: replicate the file into PostgreSQL."""

import os
from typing import Annotated

import typer

from ..errors import InputError
from ..output import emit, pick
from .common import Command, JsonFlag, ReportFormatOption, app, notice, open_database

URL_VARIABLE = "RAVANA_DB_SYNC_URL"


@app.command(cls=Command)
def sync(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(
        metavar="[URL]", help=f"postgresql://user:password@host/db[?sslmode=require] "
        f"[default: ${URL_VARIABLE}]", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="the file's name on the server, unique there [default: the file's "
        "name without its extension]")] = None,
    batch: Annotated[int, typer.Option(
        "--batch", min=1, help="changed rows per server transaction")] = 10_000,
    fmt: ReportFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Bring a PostgreSQL server (with pgvector) up to date with this file: every table's
    changed rows and the search index's text and vectors, keyed by the file's id.

    Incremental and safe to interrupt: rerun it (from cron, say) and it sends what changed
    since; the file is only read while the server is written. Needs psycopg:
    pip install 'ravana-db[postgres]'.

    Example: ravana-db --db agent.db sync postgresql://agent@db.example/memory?sslmode=require
    """
    from ..postgres.sync import sync as run

    url = url if url is not None else os.environ.get(URL_VARIABLE)
    if not url:
        raise InputError(f"give the server's postgresql:// URL, or set ${URL_VARIABLE}")
    out = pick(fmt, json_flag) if (fmt or json_flag) else None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise InputError("sync needs psycopg: pip install 'ravana-db[postgres]'") from None
    db, path = open_database(ctx, create=False)
    try:
        report = run(db, path, url, name=name, batch=batch)
    finally:
        db.close()
    notice(ctx, f"synced {path} to {report.server} as {report.name!r}: "
                f"{'full, ' if report.full else ''}{report.rows} rows written "
                f"({report.vectors} vectors), {report.deleted} deleted"
                + (f", {report.skipped} skipped (a key the server cannot store)"
                   if report.skipped else "") + f" in {report.seconds:.1f} s")
    if out is not None:
        emit([report.as_row()], out, one=True)
