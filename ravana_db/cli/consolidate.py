"""`ravana-db consolidate`: duplicates merged, memories promoted, patterns and knowledge found,
retention applied; cron-safe."""

from typing import Annotated

import typer

from ..errors import InputError
from ..output import Format, emit, message, pick
from ..text import printable
from .common import Command, FormatOption, JsonFlag, app, load_embedder, notice, open_database

TYPES = ("daily", "weekly", "monthly", "quarterly", "event_triggered")
PLAN_COLUMNS = ["step", "what", "ids", "detail"]


@app.command("consolidate", cls=Command)
def consolidate_command(
    ctx: typer.Context,
    type: Annotated[str, typer.Option(
        "--type", "-t", help="daily (last 24 h, 12 h old), weekly (7 days, 3 days old), "
        "monthly (14 days old, importance 0.6), quarterly (60 days old, importance 0.5), "
        "event_triggered (everything not yet consolidated)")] = "daily",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="show what would be done; change nothing")] = False,
    undo: Annotated[str | None, typer.Option(
        "--undo", metavar="RUN_ID", help="undo that run's merges and links (its id from "
        "--list, or a prefix only it starts with); values written since the run are kept")
    ] = None,
    list_runs: Annotated[bool, typer.Option(
        "--list", help="list the latest consolidation runs, with the ids --undo takes")
    ] = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="if another run holds the lock, wait for it instead of exiting")] = False,
    max_seconds: Annotated[float | None, typer.Option(
        "--max-seconds", metavar="S", min=0.001, help="start no new work after S seconds; "
        "the rest is done by the next run")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", metavar="N", min=1, help="take at most N due memories [default: policy "
        "limits.max_memories]")] = None,
    fmt: FormatOption = None,
    json_flag: JsonFlag = False,
):
    """Consolidate memory: merge duplicates (only true duplicates), promote important
    memories, find patterns, derive strategic knowledge, apply retention; record the run.

    Deterministic, no LLM. Only memories whose words agree (same numbers, names and content
    words in the same order), or look-alikes that differ by a word or two of the same first
    WordNet sense, merge, each with its evidence (--list); similar ones are linked. Merged
    memories leave search but are kept, and --undo RUN_ID restores them (keeping what was
    written since; a later run on the same memories is undone first). A second run while
    one runs exits 0
    at once (--wait to queue); thresholds are rows of consolidation_policy.

    Example: ravana-db consolidate --type weekly --dry-run --format table
    """
    from ..consolidate import Busy, consolidate, history
    from ..consolidate import undo as undo_run

    # --quiet: no report on success, unless a format is asked for (errors are always said).
    silent = ctx.obj["quiet"] and fmt is None and not json_flag
    fmt = pick(fmt, json_flag)
    if type not in TYPES:
        raise InputError(f"--type: {type!r} is not one of {', '.join(TYPES)}")
    if sum(bool(x) for x in (dry_run, undo, list_runs)) > 1:
        raise InputError("--dry-run, --undo and --list go one at a time")
    db, path = open_database(ctx, create=False, write=not (dry_run or list_runs))
    if list_runs:
        return _list(history(db), fmt)
    try:
        if undo is not None:
            report = undo_run(db, path=path, run_id=undo, wait=wait)
            kept = sum(len(k["columns"]) for k in report["kept"])
            notice(ctx, f"undone: run {report['run_id']}: {report['restored']} memories "
                    f"restored, {report['links_removed']} links removed" + (
                        f", {kept} later {'change' if kept == 1 else 'changes'} kept (memory "
                        f"{', '.join(str(k['memory_id']) for k in report['kept'])})"
                        if kept else ""))
            if not silent:
                emit([report], fmt, one=True)
            return
        report = consolidate(db, path=path, embedder=load_embedder(ctx), type=type,
                             dry_run=dry_run, max_seconds=max_seconds, limit=limit, wait=wait)
    except Busy as e:
        notice(ctx, f"consolidate: {e}")
        return
    notice(ctx, _summary_line(report))
    if report["skipped"]:  # said even with --quiet: a row someone should look at
        first = report["skipped"][0]
        message(f"warning: consolidate skipped {len(report['skipped'])} stored row(s) it "
                f"cannot use (the report's \"skipped\" lists them), first {first['row']} "
                f"({first['step']}): " + printable(first["reason"][:120].replace("\n", " ")))
    if report["stopped"]:
        notice(ctx, f"consolidate: {report['stopped']} ({report['remaining']} memories wait)")
    if silent:
        return
    if fmt is Format.table:
        emit([_counts(report)], fmt, one=True)
        plan = list(_plan_rows(report))
        if plan:
            emit(plan, fmt, columns=PLAN_COLUMNS)
    else:
        emit([report], fmt, one=True)


def _list(runs, fmt):
    """The runs; for people, then the latest run's merges with the evidence of each."""
    if fmt is not Format.table:
        return emit(runs, fmt)
    emit(map(_run_for_people, runs), fmt)
    merges = [dict(m, run=r["consolidation_id"][:8]) for r in runs[:1] for m in r["merges"]]
    if merges:
        emit(merges, fmt, columns=["run", "memory_id", "survivor_id", "reason"],
             title="merges of the latest run")


def _run_for_people(run):
    """A run as a table row that fits 80 columns with its whole id (for --undo)."""
    state = "undone" if run["undone_at"] else "done" if run["success"] else \
        run["error_message"] if run["error_message"] in ("running", "interrupted") else "failed"
    return {"run_id": run["consolidation_id"],
            "date": str(run["consolidation_date"])[:16].replace("T", " "),
            "merged": run["merged"], "state": state}


def _counts(report):
    return {k: report[k] for k in ("run_id", "type", "processed", "remaining", "merged",
                                   "linked", "promoted", "patterns", "knowledge",
                                   "compression_ratio", "seconds")} | {
        "retention": ", ".join(f"{k}: {v}" for k, v in report["retention"].items())}


def _summary_line(report):
    head = "dry run, nothing changed: would have" if report["dry_run"] else "consolidate:"
    retention = sum(report["retention"].values())
    return (f"{head} {report['processed']} memories processed, {report['merged']} merged, "
            f"{report['linked']} linked, {report['promoted']} promoted, {report['patterns']} "
            f"patterns, {report['knowledge']} knowledge, {retention} retention actions")


def _plan_rows(report):
    """What the run did (or would do), one row per action, for people."""
    for m in report["merges"]:
        yield {"step": "merge", "what": f"into {m['survivor']}",
               "ids": ", ".join(map(str, m["merged"] + m["moved"])), "detail": m["text"]}
    for link in report["links"]:
        yield {"step": "link", "what": f"{link['memory_id']} ~ {link['related_id']}",
               "ids": "", "detail": link["reason"]}
    for p in report["promotions"]:
        yield {"step": "promote", "what": p["memory_type"], "ids": str(p["memory"]),
               "detail": f"{p['rule']} -> {p['retention_category']}"}
    for p in report["patterns_found"]:
        yield {"step": "pattern", "what": p["pattern_type"], "ids": p["pattern_id"],
               "detail": p["pattern_description"]}
    for k in report["knowledge_derived"]:
        yield {"step": "knowledge", "what": k["knowledge_domain"], "ids": k["knowledge_id"],
               "detail": k["knowledge_summary"]}
    for r in report["retention_plan"]:
        yield {"step": r["action"], "what": r["memory_type"], "ids": r["memory_id"],
               "detail": f"{r['from']} -> {r['to']} ({r['age_days']} days old)"}
