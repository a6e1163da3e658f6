"""`ravana-db init` and `status`: make the file, describe it."""

import typer

from ..db import open_db, resolve_path
from ..output import emit, pick
from .common import Command, FormatOption, JsonFlag, app, created, notice, open_database


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
def status(ctx: typer.Context, fmt: FormatOption = None, json_flag: JsonFlag = False):
    """Show the file's size, versions, row counts per table and last consolidation.

    Example: ravana-db status --format json
    """
    from ..status import status as describe

    fmt = pick(fmt, json_flag)
    db, path = open_database(ctx, create=False, write=False)
    emit([describe(db, path)], fmt, one=True)
