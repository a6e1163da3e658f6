"""Compression: new summaries into one, very-long-term memories made smaller as they age.

Knowledge. The summaries logged since the last compression (the newest `max_summaries`, 50 as
in the original) become one `summary` (category 'compression', source 'system'): their most
representative, non-redundant sentences within a character budget, picked by maximal marginal
relevance (Carbonell and Goldstein 1998) around the centroid of the sentences' vectors
(centroid-based summarisation, Radev et al. 2004), put back in source order, one a line, each
citing the summaries it came from: `Markets fell on rate fears. [3, 7]`. No LLM: the same
summaries give the same text, which the summary table stores once (content hash). An external
command may write the summary instead (`summarizer`); when it fails, the extractive one is kept.

Very-long-term memories. By its type's retention policy (D = `compress_after_days`), a memory
created D days ago or more is compressed to level 1, 2D to level 2, 4D to level 3; levels 2 and
3 lose detail, so memories kept for good (`retention_days` NULL) stop at level 1:
  1. lossless: minified, and the structure (keys, numbers, nesting) zlib-compressed where that
     is smaller, the string values kept readable, in order: search sees the very same text;
  2. level 1 of the content without its verbose members (VERBOSE keys, long arrays of numbers);
  3. level 2 with each long prose string cut to its extractive summary.
A level is stored only when it makes the content smaller. The content's `_compressed` member
holds the bookkeeping (and the packed structure), which the search index leaves out.

Planning (reads, vectors, choices) comes first, then one store.write: the summary, each memory
by compare-and-swap (one that another writer changed meanwhile fails the whole write, nothing
stored), and the run's record in memory_consolidations and consolidation_metrics.
"""

import base64
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field

from . import runs
from .db import driver, sha256
from .db import now as utc_now
from .errors import InputError, RavanaError
from .store import write
from .text import loads, stored_number

MAX_SUMMARIES = 50
BUDGET = 1200  # characters of the compression summary's sentences
MIN_SUMMARIES = 2  # fewer new summaries wait for the next run
MIN_WORDS = 3  # shorter sentences ("Done.") are chosen only when nothing else is there
LAMBDA = 0.7  # MMR: weight of relevance against redundancy
DUPLICATE = 0.8  # a sentence this similar to a chosen one is never chosen too (a paraphrase)
FIELD_BUDGET = 400  # level 3: prose strings longer than this are summarised to this
TIMEOUT = 30.0
MAX_OUTPUT = 1 << 20  # a summarizer printing more has gone wrong
MARK = "_compressed"
CODEC = "zlib+base64"
LEVELS = {1: "lossless", 2: "without verbose members", 3: "long text summarised"}
LEVEL_AGE = {1: 1, 2: 2, 3: 4}  # a level's age, in multiples of compress_after_days
VERBOSE = frozenset(
    "raw raw_response raw_output prompt messages transcript stdout stderr log logs trace "
    "traceback stack stack_trace stacktrace debug embedding embeddings vector html".split())
LONG_NUMBERS = 32  # a longer array of numbers (a vector, a series) is verbose
CODE = frozenset("{}[]<>=;#`|\\$_/*")

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
# Memories old enough for a level above the one they have; the level their age calls for.
DUE = f"""
SELECT memory_id, memory_type, compressed_content, age, target FROM (
    SELECT v.id, v.memory_id, v.memory_type, v.compressed_content,
        julianday(:now) - julianday(v.created_at) AS age,
        min(:max_level, CASE
            WHEN p.retention_days IS NULL THEN 1
            WHEN julianday(:now) - julianday(v.created_at)
                >= {LEVEL_AGE[3]} * p.compress_after_days THEN 3
            WHEN julianday(:now) - julianday(v.created_at)
                >= {LEVEL_AGE[2]} * p.compress_after_days THEN 2
            ELSE 1 END) AS target,
        coalesce(json_extract(v.compressed_content, '$.{MARK}.level'), 0) AS level
    FROM very_long_term_memories v JOIN retention_policies p ON p.memory_type = v.memory_type
    WHERE p.compress_after_days IS NOT NULL
    AND julianday(:now) - julianday(v.created_at) >= p.compress_after_days)
WHERE level < target ORDER BY id
"""
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
        _plan_vltm(db, plan, embedder, max_level=max_level, now=now or utc_now())


def apply(db, plan, *, embedder):
    """Write a plan in one store.write: the summary, the memories, the run's record.

    A memory that changed since it was planned fails the write: nothing is stored, the run
    is recorded as failed, and RavanaError says to run compress again.
    """
    from .models import Summary, validate

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


# Knowledge ------------------------------------------------------------------------------

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
    before = sum(_size(t) for _, t in sources)
    part["source_ids"] = [id for id, _ in sources]
    part["sentences"] = [{"text": s, "sources": ids} for s, ids in chosen]
    part["method"], text = "extractive", "\n".join(cite(s, ids) for s, ids in chosen)
    if argv is not None:
        given = "\n\n".join(t.strip() for _, t in sources) + "\n"
        output, why = run_summarizer(argv, given, timeout=timeout)
        if output is not None:
            output = f"{output}\n[sources: {', '.join(map(str, part['source_ids']))}]"
            if _size(output) >= before:
                output, why = None, (f"its summary is not smaller than its input "
                                     f"({_size(output)} >= {before} bytes)")
        if output is None:
            part["summarizer_error"] = why
        else:
            part["method"], text = "summarizer", output
    smaller = _size(text) < before  # not: few, short, unrelated summaries (citations add)
    if part["summarizer_error"]:
        plan.warnings.append(f"summarizer failed ({part['summarizer_error']}): " + (
            "kept the extractive summary" if smaller else
            "the extractive summary would not be smaller either: nothing stored"))
    if not smaller:
        part.update(summaries=0, skipped_older=0, waiting=waiting, through_id=mark,
                    source_ids=[], sentences=[], method=None, not_smaller=_size(text))
        return
    part["text"], plan.text = text, text
    part["bytes_before"], part["bytes_after"] = before, _size(text)


def cite(sentence, ids):
    """A line of the compression summary: the sentence and the summaries it came from."""
    return f"{sentence} [{', '.join(map(str, ids))}]"


CITED = re.compile(r"(.*) \[([0-9]+(?:, [0-9]+)*)\]")


def cited(text):
    """The (sentence, [summary ids]) lines of an extractive compression summary."""
    return [(m[1], [int(i) for i in m[2].split(", ")])
            for m in map(CITED.fullmatch, text.splitlines()) if m]


def extract(sources, embedder, *, budget=BUDGET):
    """The extractive summary of (id, text) summaries, in source order.

    Returns:
        (sentence, [ids of the summaries holding it]) pairs: every sentence is one of theirs,
        whitespace collapsed; a sentence in several summaries is one candidate citing them
        all (and weighs more in the centroid).
    """
    units = {}
    for id, text in sources:
        for sentence in sentences(text):
            ids = units.setdefault(sentence, [])
            if id not in ids:
                ids.append(id)
    if not units:
        return []
    candidates = [(s, ids) for s, ids in units.items() if len(s.split()) >= MIN_WORDS]
    candidates = candidates or list(units.items())
    vectors = embedder.embed([s for s, _ in candidates])
    chosen = select(vectors, [len(s) for s, _ in candidates], budget=budget,
                    weights=[len(ids) for _, ids in candidates])
    if not chosen:  # not one sentence fits: the most central one (chosen first), cut
        best = select(vectors, [0] * len(candidates), budget=0,
                      weights=[len(ids) for _, ids in candidates])[0]
        return [(_cut(candidates[best][0], budget), candidates[best][1])]
    return [candidates[i] for i in sorted(chosen)]


BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
BULLET = re.compile(r"^\s*(?:[-*•·]|[0-9]{1,3}[.)])\s+")


def sentences(text):
    """The sentences of a text, in order, whitespace collapsed. A line ends one; so does `.`,
    `!` or `?` before a space and a word that does not start in lower case (`e.g. this`
    stays whole). List bullets are dropped; pieces without a letter or digit too."""
    found = []
    for line in text.splitlines():
        line, start = BULLET.sub("", line), 0
        for match in BOUNDARY.finditer(line):
            rest = line[match.end():]
            if rest and not rest[0].islower():
                found.append(line[start:match.end()])
                start = match.end()
        found.append(line[start:])
    return [" ".join(s.split()) for s in found if any(c.isalnum() for c in s)]


def select(vectors, lengths, *, budget, weights=None, lam=LAMBDA, duplicate=DUPLICATE):
    """Maximal marginal relevance within a budget: which sentences to keep.

    Relevance is the cosine similarity to the (weighted) centroid of all the sentences;
    each step takes the sentence with the best lam * relevance - (1 - lam) * (similarity to
    the closest one taken), among those that still fit. Deterministic: ties go to the earlier.

    Args:
        vectors: unit vectors, one per sentence.
        lengths: the sentences' lengths; the ones kept, a separator apart, fit the budget.
        weights: how much each sentence counts in the centroid (default 1).
        duplicate: a sentence at least this similar to one taken is never taken.

    Returns:
        Indexes of the sentences kept, in the order chosen.
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float64)
    lengths = np.asarray(lengths)
    count = len(lengths)
    if not count:
        return []
    weights = np.ones(count) if weights is None else np.asarray(weights, dtype=np.float64)
    centroid = weights @ vectors
    norm = np.linalg.norm(centroid)
    relevance = vectors @ (centroid / norm) if norm > 0 else np.zeros(count)
    redundancy = np.zeros(count)
    open_ = np.ones(count, dtype=bool)
    chosen, left = [], budget
    while True:
        fits = open_ & (lengths <= left)
        if not fits.any():
            return chosen
        score = np.where(fits, lam * relevance - (1 - lam) * redundancy, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        left -= lengths[best] + 1
        similarity = vectors @ vectors[best]
        redundancy = np.maximum(redundancy, similarity)
        open_ &= similarity < duplicate
        open_[best] = False


def _cut(text, budget):
    """text cut to at most budget characters, at a word, with an ellipsis."""
    if len(text) <= budget:
        return text
    head = text[:max(budget - 1, 1)]
    return (head.rsplit(" ", 1)[0] if " " in head else head).rstrip() + "…"


# The external summarizer ----------------------------------------------------------------

def summarizer_argv(command):
    """The argument list of a summarizer command (split as a shell would; no shell runs)."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise InputError(f"summarizer: {e}: quote it as a shell would, e.g. "
                         "\"sh -c 'my-llm --summarise'\"") from None
    if not argv:
        raise InputError("summarizer: names no command")
    return argv


# The summarizer runs under this guard, in a process group of its own that the guard leads.
# The kernel sends the guard SIGTERM when ravana-db dies, however it dies (a parent-death
# signal, Linux), and the guard then kills the whole group: no summarizer outlives its run.
GUARD = """
import os, signal, sys
def stop(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, stop)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # ravana-db died before prctl
    stop()
try:
    pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ,
                          setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
except OSError as e:
    sys.stderr.write(f"cannot run {sys.argv[2]!r}: {e.strerror or e}\\n")
    os._exit(127)
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status):  # die the same way, for the caller to say so
    try:
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
        pass
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""


def run_summarizer(argv, text, *, timeout=TIMEOUT):
    """Run a summarizer: text on its stdin, the summary on its stdout.

    It runs in a process group of its own, so that on a timeout the whole group (a shell and
    what it started) is killed, not only the first process; the group is killed too when the
    summarizer is done, and when ravana-db dies (GUARD). At the deadline it is killed and
    abandoned, even if a process that left the group still holds its output open.

    Returns:
        (summary, None), or (None, why it failed): it could not start, timed out, exited
        non-zero, printed nothing, more than MAX_OUTPUT bytes, or not UTF-8.
    """
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GUARD, str(os.getpid()),
                                 *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return None, f"cannot run {argv[0]!r}: {e.strerror or e}"
    try:
        out, err, why = _exchange(proc, text.encode(), timeout=timeout)
    finally:
        _kill_group(proc)  # before it is reaped: its id cannot name another group yet
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            _close(pipe)
    if why:
        return None, why
    last = err.decode(errors="replace").strip().splitlines()[-1:]
    if proc.returncode == 127 and last and last[0].startswith("cannot run "):
        return None, last[0]  # from GUARD
    if proc.returncode != 0:
        status = (f"exit {proc.returncode}" if proc.returncode > 0
                  else f"killed by signal {-proc.returncode}")
        return None, status + (f": {last[0][:200]}" if last else "")
    try:
        summary = out.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "its output is not UTF-8"
    if not summary:
        return None, "no output"
    return summary, None


def _exchange(proc, data, *, timeout):
    """Write data to a process's stdin while reading its stdout and stderr, until it has
    exited and closed both, or timeout seconds have passed.

    Returns:
        (stdout, the tail of stderr, None), or (what was read, ..., why it was cut short:
        timed out, or printed more than MAX_OUTPUT bytes).
    """
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    into = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with selectors.DefaultSelector() as selector:
        for fd in into:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        if data:
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            _close(proc.stdin)
        sent = 0
        while selector.get_map() or not _exited(proc):
            left = deadline - time.monotonic()
            if left <= 0:
                return out, err, f"timed out after {timeout:g} s"
            # Poll now and then: it may exit while a process it left holds the pipes; more
            # often once they are closed, when it is about to exit.
            for key, _ in selector.select(min(left, 0.05 if selector.get_map() else 0.002)):
                fd = key.fd
                if fd not in into:
                    written = _write(fd, data[sent:sent + (1 << 16)])
                    sent = len(data) if written is None else sent + written
                    if sent >= len(data):  # all given, or it will read no more
                        selector.unregister(fd)
                        _close(proc.stdin)
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    continue
                into[fd] += chunk
                if fd == proc.stderr.fileno():
                    del err[:-4096]
                elif len(out) > MAX_OUTPUT:
                    return out, err, f"printed more than {MAX_OUTPUT} bytes"
    return out, err, None


def _write(fd, data):
    """os.write to a child's pipe: bytes written, 0 when the pipe is full, None when the
    child closed it. SIGPIPE is held back meanwhile: ravana-db keeps its default for stdout
    (a reader that goes away ends it), but a child that reads no more is no reason to end."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:  # EPIPE: it exited, or closed its stdin
        return None
    finally:
        if signal.SIGPIPE in signal.sigpending():  # raised by this write: never deliver it
            signal.sigwait({signal.SIGPIPE})
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _exited(proc):
    """Whether a process has exited, leaving it unreaped (its id stays its own)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _close(pipe):
    try:
        pipe.close()
    except OSError:
        pass


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Very-long-term memories ----------------------------------------------------------------

def _plan_vltm(db, plan, embedder, *, max_level, now):
    part = {"compressed": 0, "levels": {str(level): 0 for level in LEVELS}, "not_smaller": 0,
            "bytes_before": 0, "bytes_after": 0, "rows": []}
    plan.vltm = part
    work = []
    for memory_id, memory_type, stored, age, target in db.execute(
            DUE, {"now": now, "max_level": max_level}):
        try:
            value, mark = _unpack(loads(stored))
        except ValueError as e:
            plan.warnings.append(f"memory {memory_id}: left as it is ({e})")
            continue
        dropped = []
        if target >= 2:
            value, dropped = drop_verbose(value)
        work.append((memory_id, memory_type, stored, age, target, value, mark, dropped))
    # Level 3: every long prose string of every memory, embedded in one batch.
    long = {}
    for index, (*_, target, value, _, _) in enumerate(work):
        if target == 3:
            for path, text in _strings(value)[1]:
                if len(text) > FIELD_BUDGET and _prose(text) and len(sentences(text)) > 1:
                    long[index, path] = sentences(text)
    vectors = iter(embedder.embed([s for parts in long.values() for s in parts])
                   if long else [])
    shorter = {}
    for key, parts in long.items():
        chosen = select([next(vectors) for _ in parts], [len(s) for s in parts],
                        budget=FIELD_BUDGET)
        shorter[key] = " ".join(parts[i] for i in sorted(chosen)) if chosen else \
            _cut(" ".join(parts), FIELD_BUDGET)
    for index, (memory_id, memory_type, stored, age, target, value, mark, dropped) in \
            enumerate(work):
        summarised = [path for path, _ in _strings(value)[1] if (index, path) in shorter]
        if summarised:
            value = _replace(value, {p: shorter[index, p] for p in summarised})
        new = pack(value, level=target,
                   before=stored_number(mark.get("bytes_before"), _size(stored)),
                   dropped=_listed(mark.get("dropped")) + dropped,
                   summarised=_listed(mark.get("summarised")) + summarised)
        if _size(new) >= _size(stored):
            part["not_smaller"] += 1
            continue
        plan.swaps.append((memory_id, stored, new))
        part["compressed"] += 1
        part["levels"][str(target)] += 1
        part["bytes_before"] += _size(stored)
        part["bytes_after"] += _size(new)
        part["rows"].append({
            "memory_id": memory_id, "memory_type": memory_type, "age_days": round(age, 1),
            "from_level": mark.get("level", 0), "to_level": target,
            "bytes_before": _size(stored), "bytes_after": _size(new),
            "dropped": dropped, "summarised": summarised})


def _listed(value):
    """A bookkeeping list as stored: [] when another client stored something else there."""
    return value if isinstance(value, list) else []


def pack(value, *, level, before=None, dropped=(), summarised=()):
    """A content object at `level` as stored: minified JSON in the smaller of two forms.

    Plain: the value itself with the bookkeeping beside it, under `_compressed`.
    Packed: {"strings": [every string value, in document order], "_compressed": {the
    bookkeeping, and the value with each string emptied (its keys, numbers and nesting),
    zlib-compressed and base64-encoded}}. The search text (the strings, in order) is the same.

    Returns the JSON text.
    """
    mark = {"level": level, "bytes_before": before if before is not None else
            _size(_dumps(value))}
    mark.update({k: list(v) for k, v in (("dropped", dropped), ("summarised", summarised))
                 if v})
    skeleton, found = _strings(value)
    packed = {"strings": [s for _, s in found], MARK: {
        **mark, "codec": CODEC,
        "skeleton": base64.b64encode(zlib.compress(_dumps(skeleton).encode(), 9)).decode()}}
    return min(_dumps({**value, MARK: mark}), _dumps(packed), key=_size)


def restore(content):
    """The content a compressed memory stands for: at level 1 exactly the original; at levels
    2 and 3 the original without what those levels removed. Uncompressed content as it is.

    Args:
        content: the stored compressed_content, as JSON text or parsed.
    """
    return _unpack(loads(content) if isinstance(content, str) else content)[0]


def level(content):
    """The compression level of a stored compressed_content (0: not compressed)."""
    mark = (loads(content) if isinstance(content, str) else content).get(MARK)
    return mark.get("level", 0) if isinstance(mark, dict) else 0


def _unpack(content):
    """(the content before compression, its bookkeeping ({} when not compressed)).

    Raises ValueError for a `_compressed` member that compress did not write."""
    mark = content.get(MARK)
    if mark is None:
        return content, {}
    if not (isinstance(mark, dict) and mark.get("level") in LEVELS
            and mark.get("codec", CODEC) == CODEC):
        raise ValueError(f"its {MARK} member is not one compress wrote")
    bookkeeping = {k: v for k, v in mark.items() if k not in ("codec", "skeleton")}
    if "codec" not in mark:  # the plain form
        return {k: v for k, v in content.items() if k != MARK}, bookkeeping
    try:
        skeleton = json.loads(zlib.decompress(base64.b64decode(mark["skeleton"])))
        strings = iter(content["strings"])
        value = _fill(skeleton, strings)
    except (ValueError, TypeError, KeyError, StopIteration, zlib.error):
        raise ValueError("its packed content cannot be read") from None
    if next(strings, None) is not None:
        raise ValueError("its packed content has more strings than places for them")
    return value, bookkeeping


def _fill(skeleton, strings):
    if isinstance(skeleton, str):
        value = next(strings)
        if not isinstance(value, str):
            raise TypeError("not a string")
        return value
    if isinstance(skeleton, dict):
        return {k: _fill(v, strings) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_fill(v, strings) for v in skeleton]
    return skeleton


def _strings(value, path="$"):
    """(value with every string emptied, [(path, string)] in document order: the order of
    SQLite's json_tree, whose strings the search index joins)."""
    if isinstance(value, str):
        return "", [(path, value)]
    found = []
    if isinstance(value, dict):
        skeleton = {}
        for key, item in value.items():
            skeleton[key], more = _strings(item, _step(path, key))
            found += more
        return skeleton, found
    if isinstance(value, list):
        skeleton = []
        for index, item in enumerate(value):
            emptied, more = _strings(item, f"{path}[{index}]")
            skeleton.append(emptied)
            found += more
        return skeleton, found
    return value, found


def _replace(value, by_path, path="$"):
    """value with the strings at the given paths replaced."""
    if isinstance(value, str):
        return by_path.get(path, value)
    if isinstance(value, dict):
        return {k: _replace(v, by_path, _step(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, by_path, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def drop_verbose(value):
    """(value without its verbose members, their paths): members named in VERBOSE (any case,
    any depth) and arrays of more than LONG_NUMBERS numbers. Nothing is dropped when that
    would leave the memory without any words."""
    dropped = []

    def walk(item, path):
        if isinstance(item, dict):
            kept = {}
            for key, member in item.items():
                here = _step(path, key)
                if key.casefold() in VERBOSE or _numbers(member):
                    dropped.append(here)
                else:
                    kept[key] = walk(member, here)
            return kept
        if isinstance(item, list):
            return [walk(member, f"{path}[{i}]") for i, member in enumerate(item)]
        return item

    result = walk(value, "$")
    if dropped and not any(s.strip() for _, s in _strings(result)[1]):
        return value, []
    return result, dropped


def _numbers(item):
    return isinstance(item, list) and len(item) > LONG_NUMBERS and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in item)


def _prose(text):
    """Whether text reads as prose (code and markup are never summarised)."""
    return sum(c in CODE for c in text) <= 0.02 * len(text)


def _step(path, key):
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else \
        f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _size(text):
    return len(text.encode())
