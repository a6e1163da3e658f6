"""The command line: resolve the path, open the file, make one library call, emit the result."""

import inspect
import json
import signal
import sys
from typing import Annotated

import typer
import typer.core

from ..db import driver, open_db, parse_days, resolve_path
from ..errors import InputError, RavanaError, RecordError
from ..output import Format, Progress, emit, message, pick, width
from ..text import replaced


def _errors_to_exit_codes(ctx, invoke):
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
        _after(ctx)  # the command did its work and chose its exit status
        raise
    except RavanaError as e:
        message(f"error: {e}")
        raise typer.Exit(e.exit_code) from None
    except driver().Error as e:
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
    _after(ctx)
    return result


REPLACED = ("note: stored text that is not valid UTF-8 (written by another client) was read "
            "with U+FFFD in place of what could not be decoded; `ravana-db reindex` repairs "
            "the search index's copy")


def _after(ctx):
    """What a command that ended without an error says last: a file it created, text it
    had to replace."""
    if replaced() and not (ctx.obj or {}).get("quiet"):
        message(REPLACED)
    if ctx.obj and ctx.obj.get("created"):
        message(ctx.obj["created"])


class App(typer.core.TyperGroup):
    """The top group: the one error handler, around every command."""

    def invoke(self, ctx):
        return _errors_to_exit_codes(ctx, lambda: super(App, self).invoke(ctx))


def _db_after_command(ctx, param, value):
    if value is not None:
        ctx.obj["db"] = value


QUIET_HELP = ("no output on success, only errors (one line each); data still comes when asked "
              "for: status, query, export, or --format")


def _quiet_after_command(ctx, param, value):
    if value:
        ctx.obj["quiet"] = True


class Command(typer.core.TyperCommand):
    """A command that also takes --db and --quiet after its name:
    `ravana-db query "x" --db f.db`, `ravana-db consolidate -q`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(typer.core.TyperOption(
            param_decls=["--db"], metavar="PATH", expose_value=False,
            callback=_db_after_command, help="database file (as before the command)"))
        self.params.append(typer.core.TyperOption(
            param_decls=["--quiet", "-q"], is_flag=True, expose_value=False,
            callback=_quiet_after_command, help=QUIET_HELP))


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


class LogGroup(typer.core.TyperGroup):
    """`log`'s commands are built from the pydantic models on first use, so that commands
    other than `log` never pay for importing pydantic."""

    def list_commands(self, ctx):
        return list(EXAMPLES)

    def get_command(self, ctx, name):
        from ..models import KINDS

        if name not in KINDS:
            return None
        one = typer.Typer(add_completion=False, rich_markup_mode=None)
        _log_command(one, name, KINDS[name])
        return typer.main.get_command(one)


log_app = typer.Typer(cls=LogGroup, no_args_is_help=True, help="Store records: one from "
                      "options, or many as JSON lines with --stdin (one transaction).")
app.add_typer(log_app, name="log")

FormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="table (default on a terminal), json (default in a pipe), jsonl, csv")]
# Commands that print something else unless asked: their own words for the same option.
LogFormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="print the records with their status (inserted, updated, existing) "
    "as table, json, jsonl or csv [default: their ids, one a line]")]
ReportFormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="print the report to stdout as table, json, jsonl or csv "
    "[default: a table on stderr, nothing on stdout]")]
QueryFormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="table (default on a terminal), json (default in a pipe; jsonl with "
    "--stdin), jsonl, csv")]
JsonFlag = Annotated[bool, typer.Option("--json", help="same as --format json")]
ModelOption = Annotated[str | None, typer.Option(
    "--model", metavar="NAME|FOLDER", help="embedding model: a fastembed model name or a "
    "local model folder [default: the one the file's vectors were made with; for a file "
    "without vectors $RAVANA_DB_MODEL, else ravana-db/all-MiniLM-L6-v2-int8 (bundled)]")]


def _print_version(value):
    if value:
        from .. import __version__

        print(f"ravana-db {__version__}")
        raise typer.Exit()


@app.callback()
def common(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH", help="database file [default: $RAVANA_DB, $DATABASE_URL "
        "(sqlite:///path), ./ravana_agi.db]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
    model: ModelOption = None,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="print ravana-db's version and exit")] = False,
):
    """ravana-db: an autonomous agent's whole memory in one SQLite file."""
    ctx.obj = {"db": db, "quiet": quiet, "model": model}


def _embedder(ctx, model=None, *, threads=None):
    from ..embed import Embedder

    return Embedder(model or ctx.obj["model"], recorded=ctx.obj.get("recorded_model"),
                    threads=threads)


def _open(ctx, *, create=True, write=True):
    """Open the chosen file; a new database is announced when the command ends."""
    from ..index import recorded_model

    path = resolve_path(ctx.obj["db"])
    db = open_db(path, create=create, write=write)
    if db.created:
        ctx.obj["created"] = _created(db, path)
    try:  # the file's model is the default for its commands
        ctx.obj["recorded_model"] = recorded_model(db)[0]
    except RavanaError:  # a damaged record: the command that needs it says so
        pass
    return db, path


def _created(db, path):
    mode = db.made_private
    return f"created new database {path}" + (
        f" (in the empty file there, now owner-only: mode {mode:04o})" if mode else "")


def _notice(ctx, text):
    if not ctx.obj["quiet"]:
        message(text)


def _report_format(ctx, fmt, json_flag):
    """The format of a command's report, or None for none: with --quiet, a report comes only
    when --format or --json asks for it."""
    if ctx.obj["quiet"] and not (fmt or json_flag):
        return None
    return pick(fmt, json_flag)


@app.command(cls=Command)
def init(ctx: typer.Context):
    """Create the database file (or bring an existing one up to date) and print its path.

    Example: ravana-db --db agent.db init
    """
    path = resolve_path(ctx.obj["db"])
    db = open_db(path)
    db.close()
    _notice(ctx, _created(db, path) if db.created else f"up to date: {path}")
    if not ctx.obj["quiet"]:
        print(path)


@app.command(cls=Command)
def status(ctx: typer.Context, fmt: FormatOption = None, json_flag: JsonFlag = False):
    """Show the file's size, versions, row counts per table and last consolidation.

    Example: ravana-db status --format json
    """
    from ..status import status as describe

    fmt = pick(fmt, json_flag)
    db, path = _open(ctx, create=False, write=False)
    emit([describe(db, path)], fmt, one=True)


def _stdin_lines(*, strict=True, blank=False):
    """(line number, line) of each line on stdin, read as it comes: blank lines only with
    blank=True (a question expects an answer, even an empty one).

    A line that is not UTF-8 or longer than lines.MAX_LINE raises InputError, or with
    strict=False comes as the error (the rest of a line too long is skipped, never held).
    """
    from ..lines import read_lines, too_long

    for number, raw in read_lines(sys.stdin.buffer):
        try:
            if raw is None:
                raise too_long(f"line {number}")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"line {number}: not valid UTF-8") from None
        except InputError as error:
            if strict:
                raise
            yield number, error
            continue
        if blank or line.strip():
            yield number, line


def _json_line(number, line):
    try:
        return json.loads(line.rstrip("\n"))
    except json.JSONDecodeError as e:
        raise InputError(f"line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise InputError(f"line {number}: not valid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"line {number}: JSON nested too deeply") from None


def _read_stdin(model):
    from ..lines import MAX_BATCH
    from ..models import validate

    records, size = [], 0
    for number, line in _stdin_lines():
        size += len(line)
        if size > MAX_BATCH:
            raise InputError(f"line {number}: more than {MAX_BATCH >> 20} MiB on stdin, the "
                             "most one transaction holds: split it, or store rows of one "
                             "table in batches with `ravana-db ingest jsonl - --table TABLE`")
        records.append((number, validate(model, _json_line(number, line), line=number)))
    if not records:
        raise InputError("no records on stdin (expected one JSON object per line)")
    return records


def _log(ctx, kind, model, stdin, fmt, json_flag, options):
    from ..models import validate
    from ..store import write

    fmt = pick(fmt, json_flag) if fmt or json_flag else None
    given = {k: v for k, v in options.items() if v is not None}
    if stdin and given:
        raise InputError(f"give fields as options or as JSON lines with --stdin, not both "
                         f"(got --{next(iter(given)).replace('_', '-')})")
    if stdin:
        records = _read_stdin(model)
    else:
        records = [(None, validate(model, given, options=True))]
    db, _ = _open(ctx)
    try:
        with Progress("embedding", quiet=ctx.obj["quiet"]) as bar:
            results = write(db, [r for _, r in records], embedder=_embedder(ctx),
                            progress=bar)
    except RecordError as e:
        line = records[e.index][0]
        raise InputError(f"line {line}: {e}" if line is not None else str(e)) from None
    if not stdin and results[0]["status"] == "existing":  # a batch has its counts below
        _notice(ctx, f"already stored as {kind} {results[0]['id']}")
    if fmt:
        emit(({"kind": kind, "line": line, **r} for (line, _), r in zip(records, results)), fmt)
    elif not ctx.obj["quiet"]:
        print("\n".join(str(r["id"]) for r in results))
    _notice(ctx, _counts(kind, results))


def _counts(kind, results):
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return f"{kind}: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def _log_command(target, kind, model):
    """A `log KIND` command whose options are the model's fields."""

    def command(ctx, stdin, fmt, json_flag, **options):
        _log(ctx, kind, model, stdin, fmt, json_flag, options)

    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=typer.Context),
        inspect.Parameter("stdin", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option(
                              "--stdin", help="read many records as JSON lines from stdin")]),
        inspect.Parameter("fmt", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation=LogFormatOption),
        inspect.Parameter("json_flag", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=JsonFlag),
    ]
    for name, field in model.model_fields.items():
        required = " [required]" if field.is_required() else ""
        params.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[str | None, typer.Option(
                "--" + name.replace("_", "-"), help=(field.description or "") + required,
                show_default=False)]))
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    example = EXAMPLES[kind]
    command.__doc__ = f"{model.__doc__}\n\nExample: {example}"
    target.command(kind, cls=Command)(command)


EXAMPLES = {
    "action": "ravana-db log action --action-name search --params '{\"q\": \"llm\"}' "
              "--status success --result '{\"hits\": 3}'",
    "mood": "ravana-db log mood --mood-vector '{\"curious\": 0.8, \"calm\": 0.4}'",
    "situation": "ravana-db log situation --situation-type curiosity --prompt 'Why is the sky "
                 "blue?' --context '{\"topic\": \"physics\"}'",
    "decision": "ravana-db log decision --situation-id 1 --raw-response 'Read about Rayleigh "
                "scattering'",
    "experiment": "ravana-db log experiment --hypothesis 'Caching halves latency' "
                  "--results '{\"speedup\": 1.9}'",
    "summary": "ravana-db log summary --summary-text 'Markets fell on rate fears.' "
               "--category compression",
    "memory": "ravana-db log memory --text 'The user prefers short answers' --key pref-1 "
              "--importance 0.8   (or: ravana-db log memory --stdin < memories.jsonl)",
    "vltm": "ravana-db log vltm --memory-type critical_failure --compressed-content "
            "'Deploys on Friday broke the build' --importance-score 0.9",
    "pattern": "ravana-db log pattern --pattern-type temporal --pattern-description "
               "'Failures cluster after midnight' --confidence-score 0.7",
    "knowledge": "ravana-db log knowledge --knowledge-domain performance --knowledge-summary "
                 "'Batch writes in one transaction' --confidence-level 0.9",
}


RESULT_COLUMNS = ["kind", "id", "key", "text", "timestamp", "score", "bm25_rank",
                  "vector_rank", "similarity"]
RANKING_COLUMNS = ["relevance", "recency", "importance"]  # with --recency or --importance


def _for_people(r):
    """A result as a table row: short names, dates, rounded scores."""
    def number(value, places):
        return "" if value is None else f"{value:.{places}f}"

    return {"kind": r["kind"], "id": r["id"], "key": r["key"], "text": r["text"],
            "date": (r["timestamp"] or "")[:10], "score": number(r["score"], 4),
            "bm25#": r["bm25_rank"], "vec#": r["vector_rank"], "sim": number(r["similarity"], 3),
            **{name[:3]: number(r[name], 3) for name in RANKING_COLUMNS[1:] if name in r}}


def _show(ctx, results, *, title=None, label=""):
    """Results as a table for people. Below 140 columns only what a narrow terminal can show
    whole: kind, id, text, date and score (below 70, no date). No results: no table, and
    "no results" on stderr (after `label`)."""
    rows = [_for_people(r) for r in results]
    if not rows:
        return _notice(ctx, f"{label}no results")
    columns, room = list(rows[0]), width()
    if room < 140:
        columns = ["kind", "id", "text", "date", "score"] if room >= 70 else [
            "kind", "id", "text", "score"]
    emit(rows, Format.table, columns=columns, title=title)


@app.command(cls=Command)
def query(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Argument(help="what to look for, in any words")] = None,
    mode: Annotated[str, typer.Option(
        "--mode", "-m", help="hybrid (words and meaning, fused by score: the mean of cosine "
        "similarity and BM25 scaled to 0..1), vector (meaning), fts (words)")] = "hybrid",
    kind: Annotated[str, typer.Option(
        "--kind", "-k", help="memory, article, event, summary, vltm, pattern, knowledge or all; "
        "several with commas")] = "all",
    type: Annotated[str | None, typer.Option(
        "--type", "-t", help="memory_type, category, pattern_type or knowledge_domain")] = None,
    source: Annotated[str | None, typer.Option(help="only items from this source")] = None,
    since: Annotated[str | None, typer.Option(
        help="only items from this time on: ISO date/time or an age like 7d, 12h")] = None,
    until: Annotated[str | None, typer.Option(
        help="only items up to this time: ISO date/time or an age like 7d")] = None,
    top_n: Annotated[int, typer.Option("--top-n", "-n", help="how many results")] = 5,
    min_similarity: Annotated[float | None, typer.Option(
        "--min-similarity", help="drop results whose cosine similarity is below this")] = None,
    like: Annotated[str | None, typer.Option(
        "--like", metavar="[KIND:]ID", help="more like this stored item (a memory id or key, "
        "or KIND:ID)")] = None,
    recency: Annotated[str | None, typer.Option(
        "--recency", metavar="HALF_LIFE", help="rank newer items higher: add 0.5^(age / "
        "half-life), e.g. 30d, 12h, 2w")] = None,
    importance: Annotated[float | None, typer.Option(
        "--importance", metavar="WEIGHT", help="rank important items higher: add WEIGHT x "
        "importance (a memory's, or a very-long-term memory's score; 0.5 for other kinds)")
    ] = None,
    no_touch: Annotated[bool, typer.Option(
        "--no-touch", help="read only: do not count returned memories as accessed")] = False,
    stdin: Annotated[bool, typer.Option(
        "--stdin", help="many queries, one per line (plain text, or JSON with `text` and any "
        "of these options), each answered as soon as it is read (in a pipe: a JSON line per "
        "query)")] = False,
    model: ModelOption = None,
    fmt: QueryFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Find what the agent knows: by meaning and by words, across everything stored.

    Example: ravana-db query "what went wrong with the deploy?" --kind memory --since 30d
    """
    from ..search import Query

    fmt = pick(fmt, json_flag, default="jsonl" if stdin else "json")
    options = dict(mode=mode, kind=kind, type=type, source=source, since=since, until=until,
                   top_n=top_n, min_similarity=min_similarity, like=like, recency=recency,
                   importance=importance)
    if stdin and (text or like):
        raise InputError("give one query as an argument or many with --stdin, not both")
    first = None if stdin else Query(text, **options)
    db, _ = _open(ctx, create=False, write=not no_touch)
    # One thread for the model: a hybrid query finds its words on the other core meanwhile
    # (100k memories: 14.8 ms a query, against 25.3 ms when both compete for both cores).
    embedder = _embedder(ctx, model, threads=1)
    if mode != "fts" or stdin:
        _notice_waiting(ctx, db)
    if stdin:
        return _answer_stdin(ctx, db, embedder, options, fmt, touch=not no_touch)
    results = _search(db, first, embedder, touch=not no_touch)
    if fmt is Format.table:
        _show(ctx, results)
    else:
        ranked = RANKING_COLUMNS if recency or importance is not None else []
        emit(results, fmt, columns=[*RESULT_COLUMNS, *ranked] if fmt is Format.csv else None)


def _search(db, q, embedder, *, touch):
    from ..search import search

    return search(db, q, embedder=embedder, touch=touch)


def _answer_stdin(ctx, db, embedder, defaults, fmt, *, touch):
    """Answer each stdin line as soon as it is read, so an agent can keep one process (and
    one loaded model) open: ask a line, read its answer, ask the next.

    JSON lines (the default in a pipe) give one line per query, even one without results:
    {"line", "text", "results"}, or {"line", "error"} for a bad line, which is also said on
    stderr (one line); the other lines are still answered, and the exit status is 2.
    A terminal gets a table per query; CSV a row per result with its `line`.
    """
    failed = answered = 0

    def answers():
        nonlocal failed, answered
        for number, line in _stdin_lines(strict=False, blank=True):
            answered += 1
            try:
                q = _query_line(number, line, defaults)
                yield {"line": number, "text": q.text,
                       "results": _search(db, q, embedder, touch=touch)}
            except InputError as e:
                failed += 1
                message(f"error: {e}")
                yield {"line": number, "error": str(e)}

    if fmt in (Format.json, Format.jsonl):
        emit(answers(), fmt, live=True)
    elif fmt is Format.csv:
        emit(({"line": a["line"], **r} for a in answers() for r in a.get("results", ())), fmt,
             columns=["line", *RESULT_COLUMNS, *RANKING_COLUMNS], live=True)
    else:
        for a in answers():
            if "results" in a:
                title = f"{a['line']}: {a['text'] or ''}".strip()
                _show(ctx, a["results"], title=title, label=f"{title}: ")
    if not answered:
        raise InputError("no queries on stdin")
    if failed:
        raise typer.Exit(2)  # each refused line has said why


def _notice_waiting(ctx, db):
    from ..index import pending

    waiting = pending(db)
    if waiting:
        _notice(ctx, f"note: {waiting} text(s) wait for embedding and are found by words only, "
                "until the next write or `ravana-db reindex`")


def _query_line(number, line, defaults):
    """One stdin line as a Query: plain text, or JSON with `text` and any query option."""
    from ..search import Query

    options = dict(defaults)
    if isinstance(line, InputError):
        raise line
    if line.lstrip().startswith("{"):
        given = _json_line(number, line)
        unknown = set(given) - {"text", *defaults}
        if unknown:
            raise InputError(f"line {number}: unknown field {sorted(unknown)[0]!r} "
                             f"(fields: text, {', '.join(defaults)})")
        options.update(given)
    else:
        options["text"] = line.rstrip("\n")
    try:
        return Query(**options)
    except InputError as e:
        raise InputError(f"line {number}: {e}") from None


@app.command(cls=Command)
def reindex(
    ctx: typer.Context,
    fts: Annotated[bool, typer.Option("--fts", help="rebuild the full-text index")] = False,
    vectors: Annotated[bool, typer.Option(
        "--vectors", help="embed what has no vector (everything, after a model change)")] = False,
    model: ModelOption = None,
    fmt: FormatOption = None,
    json_flag: JsonFlag = False,
):
    """Rebuild the search indexes (both unless --fts or --vectors), e.g. after a model change.

    Resumable: work is committed batch by batch, and a second run continues where an
    interrupted one stopped.

    Example: ravana-db reindex --vectors --model BAAI/bge-small-en-v1.5
    """
    from ..index import reindex as rebuild

    fmt = _report_format(ctx, fmt, json_flag)
    both = not (fts or vectors)
    db, _ = _open(ctx, create=False)
    with Progress("embedding", quiet=ctx.obj["quiet"]) as bar:
        report = rebuild(db, _embedder(ctx, model), fts=fts or both,
                         vectors=vectors or both, progress=bar)
    if fmt:
        emit([report], fmt, one=True)


ingest_app = typer.Typer(no_args_is_help=True, help="Bring data in: news feeds (RSS, Atom, "
                         "OPML lists) and the events they tell.")
app.add_typer(ingest_app, name="ingest")
FEED_COLUMNS = ["feed", "title", "status", "new", "updated", "skipped", "error"]


@ingest_app.command("feeds", cls=Command)
def ingest_feeds(
    ctx: typer.Context,
    targets: Annotated[list[str] | None, typer.Argument(
        metavar="[URL|PATH]...", help="feeds to add and fetch now; none: every subscribed "
        "feed that is due")] = None,
    opml: Annotated[str | None, typer.Option(
        "--opml", metavar="FILE", help="subscribe to (and fetch) the feeds of an OPML list: "
        "its http(s) URLs and feed files in its own folder (others are skipped, one line each)")
    ] = None,
    allow_local_files: Annotated[bool, typer.Option(
        "--allow-local-files", help="let the OPML list name feed files outside its folder")
    ] = False,
    events: Annotated[bool, typer.Option(
        "--events/--no-events", help="group new articles into events after the fetch")] = True,
    concurrency: Annotated[int, typer.Option(
        min=1, max=32, help="feeds fetched or held at once (each up to --max-bytes)")] = 4,
    timeout: Annotated[float, typer.Option(
        min=0.1, max=600, help="seconds for one feed's fetch and parse together")] = 20.0,
    max_bytes: Annotated[int, typer.Option(
        "--max-bytes", min=1024, help="largest feed accepted (decompressed)")] = 10 << 20,
    fmt: ReportFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Fetch news feeds (RSS 0.9x/1.0/2.0, Atom, local files) and store their articles.

    A table per feed goes to stderr (or the rows to stdout with --format; with --quiet,
    only a line per failed feed). Exit 1 when any feed failed (the others are stored all the
    same); a failed feed is retried after a growing pause (15 minutes doubling to a day), and
    paused after 10 failures in a row spanning 7 days. A feed named here is subscribed (again,
    if it was removed or paused); `ravana-db feeds` lists, removes, pauses and resumes them.
    --timeout bounds each feed's fetch and parse together.

    Example: ravana-db ingest feeds https://example.org/rss.xml news.atom --opml subs.opml
    """
    from .. import feeds as f

    fmt = pick(fmt, json_flag) if fmt or json_flag else None
    urls = [f.feed_url(t) for t in targets or []]
    if opml:
        listed, refused = f.opml_urls(opml, allow_local_files=allow_local_files)
        urls += listed
        for why in refused:
            message(f"{opml}: skipped: {why}")
    db, _ = _open(ctx)
    chosen = f.subscribe(db, urls) if urls else f.due(db)
    if not chosen:
        _notice(ctx, "no feed is due (add one: ravana-db ingest feeds URL|PATH)")
    with Progress("feeds", total=len(chosen), quiet=ctx.obj["quiet"]) as bar:
        reports = f.ingest(db, chosen, embedder=_embedder(ctx), concurrency=concurrency,
                           timeout=timeout, max_bytes=max_bytes, progress=bar)
    if fmt:
        emit(reports, fmt, columns=FEED_COLUMNS)
    elif reports and not ctx.obj["quiet"]:
        emit(({**r, "feed": r["title"] or r["feed"].rsplit("/", 1)[-1]} for r in reports),
             Format.table, columns=["feed", "status", "new", "updated", "skipped", "error"],
             out=sys.stderr)
    elif ctx.obj["quiet"]:  # cron's mail: nothing when all went well, a line per failure
        for r in reports:
            if r["status"] == "error":
                message(f"error: {r['feed']}: {r['error']}")
    if events:
        _detect_events(ctx, db)
    if any(r["status"] == "error" for r in reports):
        raise typer.Exit(1)


def _detect_events(ctx, db, **options):
    from ..events import detect

    report = detect(db, embedder=_embedder(ctx), **options)
    if report:
        _notice(ctx, "events: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                            for k, v in report.items()))
    return report


@ingest_app.command("events", cls=Command)
def ingest_events(
    ctx: typer.Context,
    window: Annotated[str, typer.Option(
        help="how far apart in time two articles of one story may be (e.g. 3d, 36h)")] = "3d",
    min_articles: Annotated[int, typer.Option(
        "--min-articles", min=2, help="articles an event needs")] = 2,
    min_sources: Annotated[int, typer.Option(
        "--min-sources", min=1, help="distinct sources an event needs")] = 2,
    threshold: Annotated[float, typer.Option(
        min=0.01, max=1.0, help="least similarity for an article to join a story (lower "
        "merges more)")] = 0.45,
    fmt: FormatOption = None,
    json_flag: JsonFlag = False,
):
    """Group the articles not yet in a cluster into events (as `ingest feeds` does after a
    fetch): a new article joins the event of its story or starts a cluster of its own.

    Example: ravana-db ingest events --min-sources 3
    """
    fmt = _report_format(ctx, fmt, json_flag)
    days = parse_days(window, field="window")
    db, _ = _open(ctx)
    report = _detect_events(ctx, db, window_days=days, min_articles=min_articles,
                            min_sources=min_sources, threshold=threshold)
    if fmt:
        emit([report], fmt, one=True)


# Command groups with a module of their own register themselves on `app`.
from . import compress, consolidate, export, feeds, load  # noqa: E402, F401
