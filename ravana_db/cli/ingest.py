"""`ravana-db ingest feeds|events|jsonl|dir|ravana`: bring data in, from news feeds, from JSON
lines, an export folder, or a database of the original system."""

import sys
from typing import Annotated

import typer

from ..output import Format, Progress, emit, message, pick
from ..times import parse_days
from .common import (
    Command,
    FormatOption,
    JsonFlag,
    ReportFormatOption,
    app,
    load_embedder,
    notice,
    open_database,
    report_format,
)

ingest_app = typer.Typer(no_args_is_help=True, help="Bring data in: news feeds (RSS, Atom, "
                         "OPML lists) and the events they tell.")
app.add_typer(ingest_app, name="ingest")
FEED_COLUMNS = ["feed", "title", "status", "new", "updated", "skipped", "error"]
REPORT_COLUMNS = ["table", "read", "new", "updated", "existing", "refused"]


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
    db, _ = open_database(ctx)
    chosen = f.subscribe(db, urls) if urls else f.due(db)
    if not chosen:
        notice(ctx, "no feed is due (add one: ravana-db ingest feeds URL|PATH)")
    with Progress("feeds", total=len(chosen), quiet=ctx.obj["quiet"]) as bar:
        reports = f.ingest(db, chosen, embedder=load_embedder(ctx), concurrency=concurrency,
                           timeout=timeout, max_bytes=max_bytes, progress=bar)
    show_feeds(ctx, reports, fmt)
    if events:
        detect_events(ctx, db)
    if any(r["status"] == "error" for r in reports):
        raise typer.Exit(1)


def show_feeds(ctx, reports, fmt):
    """A row per feed: on stdout with --format, else a table on stderr; with --quiet, only a
    line per failed feed (cron's mail: nothing when all went well)."""
    if fmt:
        emit(reports, fmt, columns=FEED_COLUMNS)
    elif reports and not ctx.obj["quiet"]:
        emit(({**r, "feed": r["title"] or r["feed"].rsplit("/", 1)[-1]} for r in reports),
             Format.table, columns=["feed", "status", "new", "updated", "skipped", "error"],
             out=sys.stderr)
    elif ctx.obj["quiet"]:
        for r in reports:
            if r["status"] == "error":
                message(f"error: {r['feed']}: {r['error']}")


def detect_events(ctx, db, **options):
    """Group the articles not yet in a cluster into events, and say what changed."""
    from ..events import detect

    report = detect(db, embedder=load_embedder(ctx), **options)
    if report:
        notice(ctx, "events: " + ", ".join(f"{k.replace('_', ' ')} {v}"
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
    fmt = report_format(ctx, fmt, json_flag)
    days = parse_days(window, field="window")
    db, _ = open_database(ctx)
    report = detect_events(ctx, db, window_days=days, min_articles=min_articles,
                           min_sources=min_sources, threshold=threshold)
    if fmt:
        emit([report], fmt, one=True)


def load(ctx, fmt, json_flag, loader, *args):
    """Open the file, run one library call with a progress bar, report per table: rows on
    stdout with --format, else a table on stderr (as `ingest feeds` does)."""
    fmt = pick(fmt, json_flag) if fmt or json_flag else None
    db, _ = open_database(ctx)
    with Progress("rows", quiet=ctx.obj["quiet"]) as bar:
        reports, notes = loader(db, *args, embedder=load_embedder(ctx),
                                progress=bar if bar.enabled else None)
    for note in notes:
        if " refused" in note:  # rows refused are a failure: said even with --quiet
            message(note)
        else:
            notice(ctx, note)
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
    load(ctx, fmt, json_flag, load_jsonl, table, source)


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

    load(ctx, fmt, json_flag, load_dir, folder)


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

    load(ctx, fmt, json_flag, load_original, path)
