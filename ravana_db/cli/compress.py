"""`ravana-db compress`: new summaries into one, old very-long-term memories made smaller."""

from typing import Annotated

import typer

from ..errors import InputError
from ..output import Format, emit, message, pick
from .common import Command, FormatOption, JsonFlag, app, load_embedder, notice, open_database

ROW_COLUMNS = ["memory_id", "memory_type", "age_days", "from_level", "to_level",
               "bytes_before", "bytes_after"]


@app.command("compress", cls=Command)
def compress_command(
    ctx: typer.Context,
    knowledge: Annotated[bool, typer.Option(
        "--knowledge/--no-knowledge", help="compress the new summaries into one")] = True,
    vltm: Annotated[bool, typer.Option(
        "--vltm/--no-vltm", help="compress very-long-term memories by their retention "
        "policy's age")] = True,
    max_summaries: Annotated[int, typer.Option(
        "--max-summaries", min=2, max=10_000, help="at most this many new summaries, the "
        "newest")] = 50,
    max_chars: Annotated[int, typer.Option(
        "--max-chars", min=80, max=100_000, help="length budget of the extractive summary's "
        "sentences")] = 1200,
    summarizer: Annotated[str | None, typer.Option(
        "--summarizer", metavar="CMD", help="a command that reads the summaries on stdin and "
        "writes one on stdout (run without a shell); the extractive summary is kept when it "
        "fails")] = None,
    summarizer_timeout: Annotated[float, typer.Option(
        "--summarizer-timeout", metavar="S", min=0.1, max=3600,
        help="seconds the summarizer may take")] = 30.0,
    max_level: Annotated[int, typer.Option(
        "--max-level", min=1, max=3, help="highest memory compression level: 1 lossless, "
        "2 without verbose fields, 3 long text summarised")] = 3,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="show what would be done; write nothing, run no summarizer")] = False,
    fmt: FormatOption = None,
    json_flag: JsonFlag = False,
):
    """Compress knowledge: new summaries into one extractive summary citing its sources, and
    very-long-term memories made smaller as their retention policy ages them.

    No LLM: the summary keeps the most representative, non-redundant sentences of the
    summaries logged since the last compression (each line cites the ids of the summaries
    it came from); the same summaries give the same text, stored once. A memory created
    compress_after_days ago is compressed losslessly (level 1); at twice that age its verbose
    fields go (level 2), at four times its long text is summarised (level 3); memories kept
    for good stay lossless. Every run is recorded in memory_consolidations.

    Example: ravana-db compress --summarizer "llm -s 'Summarise these notes'" --dry-run
    """
    from ..compress import compress, summarizer_argv

    # --quiet: no report on success, unless a format is asked for (warnings are always said).
    silent = ctx.obj["quiet"] and fmt is None and not json_flag
    fmt = pick(fmt, json_flag)
    if not (knowledge or vltm):
        raise InputError("--no-knowledge and --no-vltm together leave nothing to do")
    if summarizer is not None:
        try:
            summarizer_argv(summarizer)
        except InputError as e:
            raise InputError(f"--{e}") from None
    db, _ = open_database(ctx, create=False, write=not dry_run)
    report = compress(db, embedder=load_embedder(ctx), knowledge=knowledge, vltm=vltm,
                      max_summaries=max_summaries, budget=max_chars, summarizer=summarizer,
                      timeout=summarizer_timeout, max_level=max_level, dry_run=dry_run)
    for warning in report["warnings"]:
        message(f"warning: {warning}")
    if dry_run and summarizer is not None and report["knowledge"] and \
            report["knowledge"]["text"] is not None:
        notice(ctx, "dry run: the summarizer was not run; the extractive summary is shown")
    notice(ctx, _summary_line(report))
    if silent:
        return
    if fmt is Format.table:
        emit([_for_people(report)], fmt, one=True)
        rows = (report["vltm"] or {}).get("rows")
        if rows:
            emit(rows, fmt, columns=ROW_COLUMNS)
    else:
        emit([report], fmt, one=True)


def _summary_line(report):
    """One line for people: what was (or would be) done."""
    parts = []
    knowledge, vltm = report["knowledge"], report["vltm"]
    if knowledge is not None:
        if knowledge["text"] is None:
            waiting = knowledge["waiting"]
            parts.append(f"{waiting} new {_plural(waiting, 'summary')} {_plural(waiting, 'waits')} "
                         "for more" if waiting else "no new summaries to compress")
            if knowledge["not_smaller"] is not None:
                parts[-1] += (f": their summary would not be smaller ({knowledge['not_smaller']}"
                              " bytes)")
        else:
            what = f"summary {knowledge['summary_id']}" if knowledge["summary_id"] else \
                "a new summary"
            parts.append(f"{knowledge['summaries']} summaries into {what} "
                         f"({knowledge['status']}, {knowledge['method']})")
    if vltm is not None:
        levels = ", ".join(f"level {k}: {n}" for k, n in vltm["levels"].items() if n)
        parts.append(f"{vltm['compressed']} {_plural(vltm['compressed'], 'memory')} compressed" +
                     (f" ({levels}), {vltm['bytes_before']} -> {vltm['bytes_after']} bytes"
                      if vltm["compressed"] else ""))
    return ("dry run, nothing written: " if report["dry_run"] else "compress: ") + \
        "; ".join(parts)


def _plural(count, word):
    plural = {"memory": "memories", "summary": "summaries", "waits": "wait"}
    return word if count == 1 else plural.get(word, word + "s")


def _for_people(report):
    """The report as one table: counts and sizes; the summary text; no lists."""
    knowledge, vltm = report["knowledge"] or {}, report["vltm"] or {}
    return {
        "run_id": report["run_id"] or "(dry run)",
        "summaries": knowledge.get("summaries"),
        "summary_id": knowledge.get("summary_id"),
        "summary_status": knowledge.get("status"),
        "method": knowledge.get("method"),
        "summary_bytes": f"{knowledge['bytes_before']} -> {knowledge['bytes_after']}"
        if knowledge.get("text") else None,
        "memories_compressed": vltm.get("compressed"),
        "memories_not_smaller": vltm.get("not_smaller"),
        "memory_bytes": f"{vltm['bytes_before']} -> {vltm['bytes_after']}"
        if vltm.get("compressed") else None,
        "compression_ratio": report["compression_ratio"],
        "seconds": report["seconds"],
        "text": knowledge.get("text"),
    }
