"""The `compress` run: plan what to write, then write it all in one store.write.

Knowledge. The summaries logged since the last compression (the newest `max_summaries`, 50 as
in the original) become one `summary` (category 'compression', source 'system'): their
extractive summary (summary.py) within a character budget, one sentence a line, each citing
the summaries it came from: `Markets fell on rate fears. [3, 7]`. The same summaries give the
same text, which the summary table stores once (content hash). An external command may write
the summary instead (summarizer.py); when it fails, the extractive one is kept.

Very-long-term memories are planned by levels.py. Planning (reads, vectors, choices) comes
first, then one store.write: the summary, each memory by compare-and-swap (one that another
writer changed meanwhile fails the whole write, nothing stored), and the run's record in
memory_consolidations and consolidation_metrics.
"""

import time
import uuid
from dataclasses import dataclass, field

from .. import runs
from ..errors import InputError, RavanaError
from ..hashing import sha256
from ..sql import driver
from ..store import write
from ..times import now as utc_now
from .levels import LEVELS, plan_memories, size
from .summarizer import TIMEOUT, run_summarizer, summarizer_argv
from .summary import BUDGET, cite, extract

MAX_SUMMARIES = 50
MIN_SUMMARIES = 2  # fewer new summaries wait for the next run

RUNS = runs.of("compress")
# Summaries up to this id were compressed: the newest id read by a successful run, or a
# compression summary that no run of ours wrote (the original's, or logged by hand).
WATERMARK = f"""
SELECT max(mark) FROM (
    SELECT json_extract(consolidation_results, '$.knowledge.through_id') AS mark
    FROM memory_consolidations WHERE success = 1 AND {RUNS}
    UNION ALL
    SELECT max(id) FROM summary WHERE category = 'compression' AND id NOT IN (
        SELECT json_extract(consolidation_results, '$.knowledge.summary_id')
        FROM memory_consolidations WHERE {RUNS}
        AND json_extract(consolidation_results, '$.knowledge.summary_id') IS NOT NULL))
"""
NEW_SUMMARIES = """
SELECT id, summary_text FROM summary WHERE id > ? AND category IS NOT 'compression'
ORDER BY id DESC LIMIT ?
"""
COUNT_NEW = "SELECT count(*) FROM summary WHERE id > ? AND category IS NOT 'compression'"
# Compare-and-swap: CASE without ELSE gives NULL when the memory changed since it was read,
# and the NOT NULL constraint then fails the whole write.
SWAP = ("UPDATE very_long_term_memories SET compressed_content = "
        "CASE WHEN compressed_content = ? THEN ? END WHERE memory_id = ?")
SUMMARY_ID = ("UPDATE memory_consolidations SET consolidation_results = json_set("
              "consolidation_results, '$.knowledge.summary_id', "
              "(SELECT id FROM summary WHERE content_hash = ?)) WHERE consolidation_id = ?")


@dataclass
class Plan:
    """What a run will write: computed by plan(), written by apply()."""

    run_id: str
    started: float
    knowledge: dict | None = None  # the report's knowledge part (None: not asked for)
    text: str | None = None  # the compression summary to store
    vltm: dict | None = None  # the report's memory part
    swaps: list = field(default_factory=list)  # (memory_id, stored text, new text)
    warnings: list = field(default_factory=list)


def compress(db, *, embedder, knowledge=True, vltm=True, max_summaries=MAX_SUMMARIES,
             budget=BUDGET, summarizer=None, timeout=TIMEOUT, max_level=3, dry_run=False,
             now=None):
    """Compress what is due, and record the run (unless dry_run), failed or not.

    Args:
        embedder: an embed.Embedder, for sentence vectors and the new summary's index entry.
        knowledge, vltm: which of the two compressions to run.
        max_summaries: at most this many of the new summaries, the newest.
        budget: characters of sentences in the compression summary.
        summarizer: a command (split as a shell would, run without one) that reads the
            summaries on stdin and writes a summary on stdout; the extractive summary is
            kept when it fails, times out (`timeout` seconds) or prints nothing.
        max_level: compress memories to at most this level (1: lossless only).
        dry_run: plan and report, write nothing, run no summarizer.
        now: the time ages are measured at (default: now).

    Returns:
        The report: run_id, dry_run, knowledge, vltm, compression_ratio, seconds, warnings.

    Raises:
        InputError: a bad argument (nothing recorded).
        RavanaError: the run failed (recorded as failed, unless dry_run).
    """
    argv = _arguments(knowledge, vltm, summarizer, max_level, max_summaries)
    result = Plan(run_id=str(uuid.uuid4()), started=time.monotonic())
    try:
        _compute(db, result, embedder, knowledge=knowledge, vltm=vltm,
                 max_summaries=max_summaries, budget=budget,
                 argv=None if dry_run else argv, timeout=timeout, max_level=max_level,
                 now=now)
    except (RavanaError, driver().Error) as e:
        if not dry_run:
            _record_failure(db, result, str(e))
        raise
    if dry_run:
        return report(db, result, dry_run=True)
    return apply(db, result, embedder=embedder)


def plan(db, *, embedder, knowledge=True, vltm=True, max_summaries=MAX_SUMMARIES,
         budget=BUDGET, summarizer=None, timeout=TIMEOUT, max_level=3, now=None):
    """Read and compute everything a run will write (see compress()); writes nothing."""
    argv = _arguments(knowledge, vltm, summarizer, max_level, max_summaries)
    result = Plan(run_id=str(uuid.uuid4()), started=time.monotonic())
    _compute(db, result, embedder, knowledge=knowledge, vltm=vltm, max_summaries=max_summaries,
             budget=budget, argv=argv, timeout=timeout, max_level=max_level, now=now)
    return result


def _arguments(knowledge, vltm, summarizer, max_level, max_summaries):
    if not (knowledge or vltm):
        raise InputError("knowledge and vltm are both off: nothing to do")
    if max_level not in LEVELS:
        raise InputError(f"max_level: {max_level!r} is not 1, 2 or 3")
    if max_summaries < MIN_SUMMARIES:
        raise InputError(f"max_summaries: {max_summaries!r} is less than {MIN_SUMMARIES}")
    return summarizer_argv(summarizer) if summarizer is not None else None


def _compute(db, plan, embedder, *, knowledge, vltm, max_summaries, budget, argv, timeout,
             max_level, now):
    if knowledge:
        _plan_knowledge(db, plan, embedder, max_summaries=max_summaries, budget=budget,
                        argv=argv, timeout=timeout)
    if vltm:
        plan_memories(db, plan, embedder, max_level=max_level, now=now or utc_now())


def apply(db, plan, *, embedder):
    """Write a plan in one store.write: the summary, the memories, the run's record.

    A memory that changed since it was planned fails the write: nothing is stored, the run
    is recorded as failed, and RavanaError says to run compress again.
    """
    from ..models import Summary, validate

    records = []
    if plan.text is not None:
        records.append(validate(Summary, {"summary_text": plan.text, "source": "system",
                                          "category": "compression"}))
    statements = [(SWAP, [old, new, memory_id]) for memory_id, old, new in plan.swaps]
    done = report(db, plan, dry_run=False)
    statements += _record(plan, done)
    try:
        written = write(db, records, embedder=embedder, statements=statements)
    except driver().IntegrityError as e:
        if "very_long_term_memories.compressed_content" not in str(e):
            raise
        error = ("a memory changed while compress ran: nothing was written; run compress "
                 "again")
        _record_failure(db, plan, error)
        raise RavanaError(error) from None
    except (RavanaError, driver().Error) as e:
        _record_failure(db, plan, str(e))
        raise
    if plan.swaps:
        # The memories' new index text was queued inside the write: embed it now, outside
        # the lock, as the next write would. The run itself is done and recorded.
        try:
            write(db, [], embedder=embedder)
        except (RavanaError, driver().Error) as e:
            plan.warnings.append(f"the compressed memories wait for embedding (found by words "
                                 f"only until the next write or `ravana-db reindex`): {e}")
    if written:
        done["knowledge"]["summary_id"] = written[0]["id"]
        done["knowledge"]["status"] = written[0]["status"]
    done["seconds"] = round(time.monotonic() - plan.started, 3)
    return done


def report(db, plan, *, dry_run):
    """The run's report (a dry run: what it would store)."""
    knowledge = dict(plan.knowledge) if plan.knowledge is not None else None
    if knowledge is not None and plan.text is not None:
        found = db.execute("SELECT id FROM summary WHERE content_hash = ?",
                           [sha256(plan.text)]).fetchone()
        knowledge["summary_id"] = found[0] if found else None
        knowledge["status"] = "existing" if found else "new"
    before = after = 0
    for part in (knowledge, plan.vltm):
        if part is not None:
            before, after = before + part["bytes_before"], after + part["bytes_after"]
    return {"run_id": None if dry_run else plan.run_id, "dry_run": dry_run,
            "knowledge": knowledge, "vltm": plan.vltm,
            "compression_ratio": round(after / before, 4) if before else 1.0,
            "seconds": round(time.monotonic() - plan.started, 3), "warnings": plan.warnings}


def _record(plan, done):
    """Statements that record a successful run and its metrics."""
    results = {"operation": "compress", **{k: done[k] for k in ("knowledge", "vltm")},
               "warnings": plan.warnings}
    if results["knowledge"] is not None:
        # The text is the summary row's; its id is set in the write (SUMMARY_ID).
        results["knowledge"] = {k: v for k, v in results["knowledge"].items()
                                if k not in ("text", "status", "summary_id")}
    knowledge, vltm = done["knowledge"] or {}, done["vltm"] or {}
    processed = knowledge.get("summaries", 0) + vltm.get("compressed", 0)
    statements = [runs.record(plan.run_id, type="event_triggered", results=results,
                              processed=processed, ratio=done["compression_ratio"],
                              seconds=done["seconds"])]
    if plan.text is not None:
        statements.append((SUMMARY_ID, [sha256(plan.text), plan.run_id]))
    metrics = [
        ("summaries_compressed", knowledge.get("summaries", 0), "count"),
        ("summary_bytes_before", knowledge.get("bytes_before", 0), "bytes"),
        ("summary_bytes_after", knowledge.get("bytes_after", 0), "bytes"),
        ("vltm_compressed", vltm.get("compressed", 0), "count"),
        ("vltm_bytes_before", vltm.get("bytes_before", 0), "bytes"),
        ("vltm_bytes_after", vltm.get("bytes_after", 0), "bytes"),
        ("compression_ratio", done["compression_ratio"], "ratio"),
        ("processing_time", done["seconds"], "seconds"),
    ]
    statements += runs.metrics(plan.run_id, metrics)
    return statements


def _record_failure(db, plan, error):
    results = {"operation": "compress", "warnings": plan.warnings}
    runs.record_failure(db, runs.record(plan.run_id, type="event_triggered", results=results,
                                        seconds=round(time.monotonic() - plan.started, 3),
                                        error=error))


def _plan_knowledge(db, plan, embedder, *, max_summaries, budget, argv, timeout):
    mark = db.execute(WATERMARK).fetchone()[0] or 0
    waiting = db.execute(COUNT_NEW, [mark]).fetchone()[0]
    sources = db.execute(NEW_SUMMARIES, [mark, max_summaries]).fetchall()[::-1]
    part = {"summaries": len(sources), "skipped_older": waiting - len(sources), "waiting": 0,
            "through_id": sources[-1][0] if sources else mark, "source_ids": [],
            "method": None, "summarizer_error": None, "summary_id": None, "status": None,
            "sentences": [], "text": None, "bytes_before": 0, "bytes_after": 0,
            "not_smaller": None}
    plan.knowledge = part
    chosen = extract(sources, embedder, budget=budget) if len(sources) >= MIN_SUMMARIES else []
    if not chosen:  # too few new summaries (they wait for the next run), or no sentences
        part.update(summaries=0, skipped_older=0, waiting=waiting, through_id=mark)
        return
    before = sum(size(t) for _, t in sources)
    part["source_ids"] = [id for id, _ in sources]
    part["sentences"] = [{"text": s, "sources": ids} for s, ids in chosen]
    part["method"], text = "extractive", "\n".join(cite(s, ids) for s, ids in chosen)
    if argv is not None:
        output, why = _from_summarizer(argv, sources, before=before, timeout=timeout)
        if output is None:
            part["summarizer_error"] = why
        else:
            part["method"], text = "summarizer", output
    smaller = size(text) < before  # not: few, short, unrelated summaries (citations add)
    if part["summarizer_error"]:
        plan.warnings.append(f"summarizer failed ({part['summarizer_error']}): " + (
            "kept the extractive summary" if smaller else
            "the extractive summary would not be smaller either: nothing stored"))
    if not smaller:
        part.update(summaries=0, skipped_older=0, waiting=waiting, through_id=mark,
                    source_ids=[], sentences=[], method=None, not_smaller=size(text))
        return
    part["text"], plan.text = text, text
    part["bytes_before"], part["bytes_after"] = before, size(text)


def _from_summarizer(argv, sources, *, before, timeout):
    """(the external summarizer's summary of the sources, citing them, None), or (None, why):
    it failed, or its summary is not smaller than the sources' `before` bytes."""
    given = "\n\n".join(t.strip() for _, t in sources) + "\n"
    output, why = run_summarizer(argv, given, timeout=timeout)
    if output is not None:
        output = f"{output}\n[sources: {', '.join(str(id) for id, _ in sources)}]"
        if size(output) >= before:
            output, why = None, (f"its summary is not smaller than its input "
                                 f"({size(output)} >= {before} bytes)")
    return output, why
