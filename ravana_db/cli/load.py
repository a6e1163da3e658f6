"""`ravana-db ingest jsonl|dir|ravana`: bring rows in from JSON lines, an export folder, or a
database of the original system."""

import sys
from typing import Annotated

import typer

from ..output import Format, Progress, emit, message, pick
from . import Command, JsonFlag, ReportFormatOption, _embedder, _notice, _open, ingest_app

REPORT_COLUMNS = ["table", "read", "new", "updated", "existing", "refused"]


def _load(ctx, fmt, json_flag, load, *args):
    """Open the file, run one library call with a progress bar, report per table: rows on
    stdout with --format, else a table on stderr (as `ingest feeds` does)."""
    fmt = pick(fmt, json_flag) if fmt or json_flag else None
    db, _ = _open(ctx)
    with Progress("rows", quiet=ctx.obj["quiet"]) as bar:
        reports, notes = load(db, *args, embedder=_embedder(ctx),
                              progress=bar if bar.enabled else None)
    for note in notes:
        if " refused" in note:  # rows refused are a failure: said even with --quiet
            message(note)
        else:
            _notice(ctx, note)
    if fmt:
        emit(reports, fmt, columns=REPORT_COLUMNS)
    elif not ctx.obj["quiet"]:
        emit(reports, Format.table, columns=REPORT_COLUMNS, out=sys.stderr)


@ingest_app.command("jsonl", cls=Command)
def ingest_jsonl(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(
        metavar="PATH|-", help="JSON lines, one row a line ('-': stdin)")],
    table: Annotated[str, typer.Option(
        "--table", "-t", metavar="TABLE", help="the table the rows belong to")],
    fmt: ReportFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Store rows of one table from JSON lines, as `export TABLE --format jsonl` writes them.

    Every line is checked before anything is written (a bad one: exit 2, nothing stored).
    A row already stored (found by its natural key: memory key, feed url, UUIDs, a log's time
    and content) is updated or kept, never added twice. `id` is ignored; other integer ids
    (article.feed_id, decisionlog.situation_id) are this file's and must exist: to move rows
    with their references between files, use `export all` and `ingest dir`.

    Example: ravana-db export memory --db old.db | ravana-db ingest jsonl - --table memory
    """
    from ..load import check_table, load_jsonl

    check_table(table)  # before the file is opened
    source = sys.stdin.buffer if path == "-" else path
    _load(ctx, fmt, json_flag, load_jsonl, table, source)


@ingest_app.command("dir", cls=Command)
def ingest_dir(
    ctx: typer.Context,
    folder: Annotated[str, typer.Argument(
        metavar="DIR", help="a folder written by `export all --format jsonl`")],
    fmt: ReportFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Store a whole export (manifest.json and a .jsonl per table) in this file, which may
    already hold rows: tables in the manifest's order, every reference mapped to the ids the
    rows get here (found by natural keys), text embedded. Running it again adds nothing.

    Example: ravana-db --db new.db ingest dir agent-export/
    """
    from ..load import load_dir

    _load(ctx, fmt, json_flag, load_dir, folder)


@ingest_app.command("ravana", cls=Command)
def ingest_ravana(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(
        metavar="PATH", help="the original system's SQLite file (e.g. ravana_agi.db)")],
    fmt: ReportFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Import a database of the original RAVANA system, opened read-only: its articles,
    events, summaries, logs and very-long-term tables. Its quirks are mapped (dates like
    'Unknown' become empty, repeated links one article, text that is not JSON kept as a JSON
    string); a row that cannot be stored is refused and counted, never fatal. Idempotent.

    Example: ravana-db ingest ravana ~/RAVANA/ravana_agi.db
    """
    from ..load import load_original

    _load(ctx, fmt, json_flag, load_original, path)
