"""What every command shares: the app, its global options, the one error handler, the format
options, and opening the file, loading the model, saying a notice."""

import signal
from typing import Annotated

import typer
import typer.core

from ..db import open_db, resolve_path, server_url
from ..errors import InputError, RavanaError
from ..output import Format, message, pick
from ..postgres.connect import server_error
from ..sql import driver_error
from ..text import replaced

REPLACED = ("note: stored text that is not valid UTF-8 (written by another client) was read "
            "with U+FFFD in place of what could not be decoded; `ravana-db reindex` repairs "
            "the search index's copy")
QUIET_HELP = ("no output on success, only errors (one line each); data still comes when asked "
              "for: status, query, export, or --format")


def errors_to_exit_codes(ctx, invoke):
    """Our errors as one line on stderr and an exit code (2 input, 1 runtime, 130 ^C).

    A command that made a new database says so when it ends (even with --quiet: a mistyped
    --db must not pass unseen), unless it ends in one of these errors: that line stays the
    only one. A command that had to replace stored text it could not decode or encode says
    so once.
    """
    replaced()  # count from zero for this command
    try:
        result = invoke()
    except typer.Exit:
        after(ctx)  # the command did its work and chose its exit status
        raise
    except RavanaError as e:
        message(f"error: {e}")
        raise typer.Exit(e.exit_code) from None
    except typer.TyperException as e:  # a command's usage: an unknown option, a bad value
        usage_error(e)
    except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 reach SQLite as such
        message(f"error: {e.object[e.start:e.start + 40]!r} is not valid UTF-8: a value given "
                "on the command line must be UTF-8 text to be stored or looked up")
        raise typer.Exit(2) from None
    except driver_error() as e:
        from ..schema import index_objects

        missing = str(e).removeprefix("no such table: ")
        if missing in index_objects():
            message(f"error: the search index lacks {missing}: run `ravana-db reindex` to "
                    "rebuild it")
        else:
            message(f"error: database: {e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        message("interrupted: nothing of the unfinished transaction was written")
        raise typer.Exit(130) from None
    except Exception as e:
        said = server_error(e)
        if said is None:
            raise
        message(f"error: {said}")
        raise typer.Exit(1) from None
    after(ctx)
    return result


def usage_error(e):
    """Click's usage error as one line on stderr (its own is usage, hint and error on four),
    then its exit status (2). The help that a bare group prints is left to click."""
    if type(e).__name__ == "NoArgsIsHelpError" or not hasattr(e, "format_message"):
        raise e
    ctx = getattr(e, "ctx", None)
    hint = f" (see {ctx.command_path} -h)" if ctx is not None else ""
    message(f"error: {e.format_message()}{hint}")
    raise typer.Exit(getattr(e, "exit_code", 2)) from None


def after(ctx):
    """What a command that ended without an error says last: a file it created, text it
    had to replace."""
    if replaced() and not (ctx.obj or {}).get("quiet"):
        message(REPLACED)
    if ctx.obj and ctx.obj.get("created"):
        message(ctx.obj["created"])


class App(typer.core.TyperGroup):
    """The top group: the one error handler, around every command."""

    def invoke(self, ctx):
        return errors_to_exit_codes(ctx, lambda: super(App, self).invoke(ctx))

    def make_context(self, *args, **kwargs):
        try:  # the options before a command: `ravana-db --nope status`
            return super().make_context(*args, **kwargs)
        except typer.TyperException as e:
            usage_error(e)


def db_after_command(ctx, param, value):
    """--db given after the command's name: as if given before it."""
    if value is not None:
        ctx.obj["db"] = value


def quiet_after_command(ctx, param, value):
    """--quiet given after the command's name: as if given before it."""
    if value:
        ctx.obj["quiet"] = True


class Command(typer.core.TyperCommand):
    """A command that also takes --db and --quiet after its name:
    `ravana-db query "x" --db f.db`, `ravana-db consolidate -q`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(typer.core.TyperOption(
            param_decls=["--db"], metavar="PATH", expose_value=False,
            callback=db_after_command, help="database file (as before the command)"))
        self.params.append(typer.core.TyperOption(
            param_decls=["--quiet", "-q"], is_flag=True, expose_value=False,
            callback=quiet_after_command, help=QUIET_HELP))


app = typer.Typer(
    cls=App, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
    help="ravana-db: an autonomous agent's whole memory in one SQLite file.",
)


def main():
    """The `ravana-db` program. A reader that goes away (`| head -1`) ends it quietly, as
    it does any Unix tool, with the shell's exit status 141 (SIGPIPE), in every format and
    for --help alike."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app(prog_name="ravana-db")


FormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="table (default on a terminal), json (default in a pipe), jsonl, csv")]
# Commands that print something else unless asked: their own words for the same option.
ReportFormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="print the report to stdout as table, json, jsonl or csv "
    "[default: a table on stderr, nothing on stdout]")]
FilesOption = Annotated[list[str] | None, typer.Option(
    "--file", metavar="NAME", help="on a server (--db postgresql://...): only the synced files "
    "of these names (repeat it, or a comma list) [default: every file]")]
JsonFlag = Annotated[bool, typer.Option("--json", help="same as --format json")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", metavar="NAME|FOLDER", help="embedding model: a fastembed model name or a "
    "local model folder [default: the one the file's vectors were made with; for a file "
    "without vectors $RAVANA_DB_MODEL, else ravana-db/all-MiniLM-L6-v2-int8 (bundled)]")]


def print_version(value):
    """--version: print it and end."""
    if value:
        from .. import __version__

        print(f"ravana-db {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH", help="database file [default: $RAVANA_DB, $DATABASE_URL "
        "(sqlite:///path), ./ravana_agi.db]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
    model: ModelOption = None,
    key_file: Annotated[str | None, typer.Option(
        "--key-file", metavar="PATH", help="the file's key, for an encrypted file: a file "
        "(mode 0600) holding 64 hex digits or a passphrase [default: $RAVANA_DB_KEY_FILE, "
        "$RAVANA_DB_KEY (the key itself)]")] = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=print_version,
        help="print ravana-db's version and exit")] = False,
):
    """ravana-db: an autonomous agent's whole memory in one SQLite file."""
    from ..keys import configured

    ctx.obj = {"db": db, "quiet": quiet, "model": model, "key": configured(key_file)}


def load_embedder(ctx, model=None, *, threads=None):
    """The embedder of --model (the command's, else the global one), else the file's model."""
    from ..embed import Embedder

    return Embedder(model or ctx.obj["model"], recorded=ctx.obj.get("recorded_model"),
                    threads=threads)


def open_database(ctx, *, create=True, write=True):
    """Open the chosen file; a new database is announced when the command ends.

    Returns:
        (db, path)
    """
    from ..index import recorded_model

    path = resolve_path(ctx.obj["db"])
    db = open_db(path, create=create, write=write, key=ctx.obj["key"])
    if db.created:
        ctx.obj["created"] = created(db, path)
    try:  # the file's model is the default for its commands
        ctx.obj["recorded_model"] = recorded_model(db)[0]
    except RavanaError:  # a damaged record: the command that needs it says so
        pass
    return db, path


def open_source(ctx, files=None, *, write=False):
    """What a read command reads: the server when --db (or RAVANA_DB, DATABASE_URL) is a
    PostgreSQL URL (a postgres.connect.Server, limited to the --file names given), else the
    file (a database, as open_database opens it)."""
    url = server_url(ctx.obj["db"])
    if url is None:
        if files:
            raise InputError("--file chooses among the files synced into a server: give "
                             "--db postgresql://... (a file is one agent's already)")
        return open_database(ctx, create=False, write=write)[0]
    from ..postgres.connect import open_server

    server = open_server(url, files=files)
    ctx.call_on_close(server.close)
    return server


def is_server(source):
    """Whether open_source returned the server."""
    return type(source).__name__ == "Server"


def created(db, path):
    """The line that announces a new database file."""
    mode = db.made_private
    return f"created new database {path}" + (
        f" (in the empty file there, now owner-only: mode {mode:04o})" if mode else "")


def notice(ctx, text):
    """Say text on stderr, unless --quiet."""
    if not ctx.obj["quiet"]:
        message(text)


def report_format(ctx, fmt, json_flag):
    """The format of a command's report, or None for none: with --quiet, a report comes only
    when --format or --json asks for it."""
    if ctx.obj["quiet"] and not (fmt or json_flag):
        return None
    return pick(fmt, json_flag)
