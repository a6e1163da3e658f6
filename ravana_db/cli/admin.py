"""`ravana-db init` and `status`: make the file, describe it."""

import typer

from ..db import open_db, resolve_path
from ..output import emit, pick
from .common import (
    Command,
    FilesOption,
    FormatOption,
    JsonFlag,
    app,
    created,
    is_server,
    notice,
    open_source,
)


@app.command(cls=Command)
def init(ctx: typer.Context):
    """Create the database file (or bring an existing one up to date) and print its path.

    Example: ravana-db --db agent.db init
    """
    path = resolve_path(ctx.obj["db"])
    db = open_db(path, key=ctx.obj["key"])
    db.close()
    notice(ctx, created(db, path) if db.created else f"up to date: {path}")
    if not ctx.obj["quiet"]:
        print(path)


@app.command(cls=Command)
def status(ctx: typer.Context, files: FilesOption = None, fmt: FormatOption = None,
           json_flag: JsonFlag = False):
    """Show the file's size, versions, row counts per table and last consolidation (on a
    server: each synced file's rows and last sync).

    Example: ravana-db status --format json
    """
    fmt = pick(fmt, json_flag)
    db = open_source(ctx, files)
    if is_server(db):
        from ..postgres.views import status as describe_server

        return emit([describe_server(db)], fmt, one=True)
    from ..status import status as describe

    emit([describe(db, resolve_path(ctx.obj["db"]))], fmt, one=True)
