"""`ravana-db export ...`: take data out of the file."""

import sys
from typing import Annotated

import typer

from ..errors import InputError
from ..output import Format, emit, pick
from . import Command, _open, app

export_app = typer.Typer(no_args_is_help=True, help="Take data out: the feed list as OPML.")
app.add_typer(export_app, name="export")


@export_app.command("feeds", cls=Command)
def export_feeds(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="opml (default), json, jsonl, csv or table")] = "opml",
):
    """Write the subscribed feeds: an OPML list other readers import, or rows with their state.

    Example: ravana-db export feeds --format opml > feeds.opml
    """
    from ..feeds import opml

    db, _ = _open(ctx, create=False, write=False)
    if fmt == "opml":
        sys.stdout.write(opml(db))
        return
    rows = [dict(r) for r in db.query(
        "SELECT id, url, title, last_fetched, last_status, last_error, failures, next_attempt "
        "FROM feed WHERE url != 'unknown:' ORDER BY id")]
    emit(rows, pick(fmt if fmt in Format.__members__ else _bad_format(fmt)))


def _bad_format(fmt):
    raise InputError(f"--format: {fmt!r} is not one of opml, json, jsonl, csv, table")
