"""`ravana-db export ...`: take data out of the file."""

import sys
from typing import Annotated

import typer
import typer.core

from ..errors import InputError
from ..output import Format, Progress, emit, pick
from .common import Command, FilesOption, app, is_server, notice, open_database, open_source


class ExportGroup(typer.core.TyperGroup):
    """`export TABLE|all`: a command per table of the agent's, made on first use, beside the
    listed `backup` and `feeds`. Any other name (an index table such as doc_fts) is one line,
    exit 2."""

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and _is_table(name):
            command = _table_command(name)
        return command

    def resolve_command(self, ctx, args):
        if args and not args[0].startswith("-") and not ctx.resilient_parsing \
                and self.get_command(ctx, args[0]) is None:
            from ..export import check_table

            check_table(args[0])
        return super().resolve_command(ctx, args)

    def format_help_text(self, ctx, formatter):
        from ..tables import TABLES

        super().format_help_text(ctx, formatter)
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(f"TABLE: {', '.join(TABLES)}. `ravana-db export TABLE --help` "
                                 "says which time --since/--until compare with.")


def _is_table(name):
    from ..tables import TABLES

    return name == "all" or name in TABLES


export_app = typer.Typer(
    cls=ExportGroup, no_args_is_help=True, subcommand_metavar="TABLE|all|backup|feeds [ARGS]...",
    help="Take data out: any table of the agent's (or all of them) as JSON, JSON lines, CSV or "
    "markdown; a consistent copy of the whole file; the feed list as OPML.\n\n"
    "\b\nravana-db export TABLE|all [--format json|jsonl|csv|markdown] [--since T] [--until T]\n"
    "                           [--output FILE|DIR] [--force]\n"
    "ravana-db export backup FILE [--force]\n"
    "ravana-db export feeds [--format opml]")
app.add_typer(export_app, name="export")

ExportFormat = Annotated[str | None, typer.Option(
    "--format", "-f", metavar="FORMAT", show_default=False,
    help="json, jsonl, csv or markdown [default: from the --output suffix, else jsonl]")]
Since = Annotated[str | None, typer.Option(
    help="only rows from this time on: ISO date/time or an age like 7d, 12h")]
Until = Annotated[str | None, typer.Option(
    help="only rows up to this time (inclusive): ISO date/time or an age like 7d")]
Force = Annotated[bool, typer.Option(
    "--force", help="replace an existing file (for `all`: the files it writes in a folder "
    "that holds anything; nothing else there is touched)")]


def _table_command(name):
    """The `export NAME` command for one table, or for all of them."""
    from ..tables import TIME

    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    what = "DIR" if name == "all" else "FILE"

    def command(
        ctx: typer.Context,
        fmt: ExportFormat = None,
        since: Since = None,
        until: Until = None,
        output: Annotated[str | None, typer.Option(
            "--output", "-o", metavar=what, help=(
                "the folder to create: TABLE.jsonl (or .json, .csv, .md) per table and "
                "manifest.json" if name == "all" else
                "write here instead of stdout (complete or not at all, mode 0600)"))] = None,
        force: Force = False,
        files: FilesOption = None,
    ):
        _export(ctx, name, files, fmt=fmt, since=since, until=until, output=output,
                force=force)

    if name == "all":
        command.__doc__ = (
            "Export every table of the agent's into a new folder: one file per table and "
            "manifest.json (tables in foreign-key order, row counts, schema version, time of "
            "export), the form a later import reads back. --since/--until filter the tables "
            "that have a time and leave the others whole.\n\n"
            "Example: ravana-db export all --output agent-export/")
    else:
        time = TIME[name]
        command.__doc__ = (
            f"Export the {name} table: every row, in rowid order, JSON columns as their stored "
            "text. " + (f"--since/--until compare with {time}." if time else
                        "It has no time column: --since/--until do not apply.") +
            f"\n\nExample: ravana-db export {name} --format csv --output {name}.csv" +
            (" --since 7d" if time else ""))
    one.command(name, cls=Command)(command)
    return typer.main.get_command(one)


def _export(ctx, name, files, **options):
    from ..export import Export, run

    job = Export(name, **options)  # everything checked before the file is opened
    db = open_source(ctx, files)
    if is_server(db):
        from ..postgres.views import export

        report = export(db, job)
        return notice(ctx, f"{name}: {_rows(report['rows'])}" +
                      (f" written to {report['file']}" if report["file"] else ""))
    with Progress(f"export {name}", quiet=ctx.obj["quiet"]) as bar:
        report = run(db, job, progress=bar if bar.enabled else None)
    if name != "all":
        notice(ctx, f"{name}: {_rows(report['rows'])}" +
                (f" written to {report['file']}" if report["file"] else ""))
        return
    tables = report["tables"]
    if job.since or job.until:
        whole = [t["table"] for t in tables if not t["filtered"]]
        if whole:
            notice(ctx, f"note: --since/--until do not apply to {', '.join(whole)} (no "
                   "time column): exported whole")
    notice(ctx, f"exported {_rows(sum(t['rows'] for t in tables))} of {len(tables)} tables to "
            f"{job.output}/ (manifest.json lists them)")


def _rows(n):
    return f"{n:,} row" + ("" if n == 1 else "s")


@export_app.command("backup", cls=Command)
def export_backup(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="where to write the copy")],
    force: Annotated[bool, typer.Option("--force", help="replace FILE if it exists")] = False,
    key_file: Annotated[str | None, typer.Option(
        "--key-file", metavar="PATH", help="encrypt the copy of an encrypted file with this "
        "file's key [default: the file's own key]")] = None,
):
    """Copy the whole database to FILE, consistently while other processes write (VACUUM INTO),
    checked with PRAGMA integrity_check: FILE appears complete or not at all (mode 0600).

    Example: ravana-db export backup ~/backups/agent-$(date +%F).db
    """
    from ..export import backup
    from ..keys import read

    db, _ = open_database(ctx, create=False, write=False)
    key = read(key_file, "--key-file of export backup") if key_file else None
    report = backup(db, file, force=force, key=key)
    notice(ctx, f"backup: {report['file']} ({report['bytes']:,} bytes, "
            f"{_rows(report['rows'])}, integrity_check ok)")


@export_app.command("feeds", cls=Command)
def export_feeds(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="opml (default), json, jsonl, csv or table")] = "opml",
):
    """Write the subscribed feeds: an OPML list other readers import, or rows with their state.

    Example: ravana-db export feeds --format opml > feeds.opml
    """
    from ..feeds import SUBSCRIBED, opml

    db, _ = open_database(ctx, create=False, write=False)
    if fmt == "opml":
        sys.stdout.write(opml(db))
        return
    rows = [dict(r) for r in db.query(
        "SELECT id, url, title, last_fetched, last_status, last_error, failures, next_attempt "
        f"FROM feed WHERE {SUBSCRIBED} ORDER BY id")]
    emit(rows, pick(fmt if fmt in Format.__members__ else _bad_format(fmt)))


def _bad_format(fmt):
    raise InputError(f"--format: {fmt!r} is not one of opml, json, jsonl, csv, table")
