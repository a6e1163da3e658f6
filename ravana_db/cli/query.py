"""`ravana-db query` (one question, or many on stdin) and `reindex`, which rebuilds the indexes
a query searches."""

import sys
from typing import Annotated

import typer

from ..errors import InputError
from ..output import Format, Progress, emit, message, pick, width
from .common import (
    Command,
    FilesOption,
    FormatOption,
    JsonFlag,
    ModelOption,
    app,
    is_server,
    load_embedder,
    notice,
    open_database,
    open_source,
    report_format,
)

RESULT_COLUMNS = ["kind", "id", "key", "text", "timestamp", "score", "bm25_rank",
                  "vector_rank", "similarity"]
RANKING_COLUMNS = ["relevance", "recency", "importance"]  # with --recency or --importance
QueryFormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="table (default on a terminal), json (default in a pipe; jsonl with "
    "--stdin), jsonl, csv")]


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
    distinct: Annotated[bool, typer.Option(
        "--distinct", help="drop results a merge check calls a duplicate of a higher one "
        "(same words, or the same meaning in other words)")] = False,
    no_touch: Annotated[bool, typer.Option(
        "--no-touch", help="read only: do not count returned memories as accessed")] = False,
    stdin: Annotated[bool, typer.Option(
        "--stdin", help="many queries, one per line (plain text, or JSON with `text` and any "
        "of these options), each answered as soon as it is read (in a pipe: a JSON line per "
        "query)")] = False,
    files: FilesOption = None,
    model: ModelOption = None,
    fmt: QueryFormatOption = None,
    json_flag: JsonFlag = False,
):
    """Find what the agent knows: by meaning and by words, across everything stored.

    Example: ravana-db query "what went wrong with the deploy?" --kind memory --since 30d
    """
    from ..search.query import Query

    fmt = pick(fmt, json_flag, default="jsonl" if stdin else "json")
    options = dict(mode=mode, kind=kind, type=type, source=source, since=since, until=until,
                   top_n=top_n, min_similarity=min_similarity, like=like, recency=recency,
                   importance=importance, distinct=distinct)
    if stdin and (text or like):
        raise InputError("give one query as an argument or many with --stdin, not both")
    first = None if stdin else Query(text, **options)
    db = open_source(ctx, files, write=not no_touch)
    # One thread for the model: a hybrid query finds its words on the other core meanwhile,
    # instead of both competing for both cores.
    embedder = load_embedder(ctx, model, threads=1)
    if (mode != "fts" or stdin) and not is_server(db):
        notice_waiting(ctx, db)
    columns = ["file"] if is_server(db) else []
    if stdin:
        return answer_stdin(ctx, db, embedder, options, fmt, touch=not no_touch,
                            columns=columns)
    results = search(db, first, embedder, touch=not no_touch)
    if fmt is Format.table:
        show(ctx, results)
    else:
        ranked = RANKING_COLUMNS if recency or importance is not None else []
        emit(results, fmt, columns=[*columns, *RESULT_COLUMNS, *ranked]
             if fmt is Format.csv else None)


def search(db, q, embedder, *, touch):
    """The results of one Query, from the file or the server (which is never touched: a
    file counts its own memories as accessed)."""
    if is_server(db):
        from ..postgres.read import search as find_there

        return find_there(db, q, embedder=embedder)
    from ..search import search as find

    return find(db, q, embedder=embedder, touch=touch)


def for_people(r):
    """A result as a table row: short names, dates, rounded scores."""
    def number(value, places):
        return "" if value is None else f"{value:.{places}f}"

    return {**({"file": r["file"]} if "file" in r else {}), "kind": r["kind"], "id": r["id"],
            "key": r["key"], "text": r["text"],
            "date": (r["timestamp"] or "")[:10], "score": number(r["score"], 4),
            "bm25#": r["bm25_rank"], "vec#": r["vector_rank"], "sim": number(r["similarity"], 3),
            **{name[:3]: number(r[name], 3) for name in RANKING_COLUMNS[1:] if name in r}}


def show(ctx, results, *, title=None, label=""):
    """Results as a table for people. Below 140 columns only what a narrow terminal can show
    whole: kind, id, text, date and score (below 70, no date). No results: no table, and
    "no results" on stderr (after `label`)."""
    rows = [for_people(r) for r in results]
    if not rows:
        return notice(ctx, f"{label}no results")
    columns, room = list(rows[0]), width()
    if room < 140:
        columns = ["kind", "id", "text", "date", "score"] if room >= 70 else [
            "kind", "id", "text", "score"]
        columns = (["file"] if "file" in rows[0] else []) + columns
    emit(rows, Format.table, columns=columns, title=title)


def answer_stdin(ctx, db, embedder, defaults, fmt, *, touch, columns=()):
    """Answer each stdin line as soon as it is read, so an agent can keep one process (and
    one loaded model) open: ask a line, read its answer, ask the next.

    JSON lines (the default in a pipe) give one line per query, even one without results:
    {"line", "text", "results"}, or {"line", "error"} for a bad line, which is also said on
    stderr (one line); the other lines are still answered, and the exit status is 2.
    A terminal gets a table per query; CSV a row per result with its `line` (and `file`,
    from a server: columns).
    """
    from ..lines import text_lines

    failed = answered = 0

    def answers():
        nonlocal failed, answered
        for number, line in text_lines(sys.stdin.buffer, strict=False, blank=True):
            answered += 1
            try:
                q = query_line(number, line, defaults)
                yield {"line": number, "text": q.text,
                       "results": search(db, q, embedder, touch=touch)}
            except InputError as e:
                failed += 1
                message(f"error: {e}")
                yield {"line": number, "error": str(e)}

    if fmt in (Format.json, Format.jsonl):
        emit(answers(), fmt, live=True)
    elif fmt is Format.csv:
        emit(({"line": a["line"], **r} for a in answers() for r in a.get("results", ())), fmt,
             columns=["line", *columns, *RESULT_COLUMNS, *RANKING_COLUMNS], live=True)
    else:
        for a in answers():
            if "results" in a:
                title = f"{a['line']}: {a['text'] or ''}".strip()
                show(ctx, a["results"], title=title, label=f"{title}: ")
    if not answered:
        raise InputError("no queries on stdin")
    if failed:
        raise typer.Exit(2)  # each refused line has said why


def notice_waiting(ctx, db):
    """Say how many texts have no vector yet (found by words only)."""
    from ..index import pending

    waiting = pending(db)
    if waiting:
        notice(ctx, f"note: {waiting} text(s) wait for embedding and are found by words only, "
               "until the next write or `ravana-db reindex`")


def query_line(number, line, defaults):
    """One stdin line as a Query: plain text, or JSON with `text` and any query option."""
    from ..lines import json_line
    from ..search.query import Query

    options = dict(defaults)
    if isinstance(line, InputError):
        raise line
    if line.lstrip().startswith("{"):
        given = json_line(number, line)
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
    vacuum: Annotated[bool, typer.Option(
        "--vacuum", help="then rewrite the file without its free pages (after a migration or "
        "many deletes)")] = False,
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
    from ..index import vacuum as compact

    fmt = report_format(ctx, fmt, json_flag)
    both = not (fts or vectors)
    db, _ = open_database(ctx, create=False)
    with Progress("embedding", quiet=ctx.obj["quiet"]) as bar:
        report = rebuild(db, load_embedder(ctx, model), fts=fts or both,
                         vectors=vectors or both, progress=bar)
    if vacuum:
        report["bytes_before"], report["bytes_after"] = compact(db)
        report["vacuumed"] = True
    if fmt:
        emit([report], fmt, one=True)
