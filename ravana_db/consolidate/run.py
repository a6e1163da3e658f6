"""One consolidation run: its steps in order, each read, planned, then written.

Each step reads (read.py), plans without a transaction open (merge.py, plan.py), then writes
in short transactions (write.py), so the write lock is never held through CPU work.
"""

import os
import time
import uuid

from .. import runs, store
from ..db import transaction
from ..errors import InputError
from ..schema import CONSOLIDATION_TYPES
from ..text import MAX_INTEGER
from ..times import from_iso, parse_time
from ..times import now as utc_now
from . import duplicates, merge, plan, read, write
from . import patterns as found
from .lock import run_lock
from .plan import OPERATION
from .policy import hours_before, policy

RUNS = runs.of(OPERATION)


def consolidate(db, *, path, embedder, type="daily", dry_run=False, max_seconds=None,
                limit=None, wait=False, now=None):
    """Run one consolidation (see the package's doc); record it unless dry_run.

    Args:
        path: the database file (its lock file lives beside it).
        embedder: for the index entries of promoted memories, patterns and knowledge.
        type: daily, weekly, monthly, quarterly or event_triggered: the window of memories.
        dry_run: plan everything, write nothing (and take no lock).
        max_seconds: stop starting new work after this long; the rest waits for next run.
        limit: take at most this many due memories (default: policy `limits.max_memories`).
        wait: wait for another run to finish instead of raising Busy.
        now: the time windows and ages are measured at.

    Returns:
        The report: counts, and what was (or would be) merged, linked, promoted, found and
        retained.
    """
    if type not in CONSOLIDATION_TYPES:
        raise InputError(f"type: {type!r} is not one of {', '.join(CONSOLIDATION_TYPES)}")
    if limit is not None and limit < 1:
        raise InputError(f"limit: {limit!r} is not a positive number")
    if max_seconds is not None and max_seconds <= 0:
        raise InputError(f"max-seconds: {max_seconds!r} is not a positive number")
    run = Run(db, embedder=embedder, type=type, dry_run=dry_run, max_seconds=max_seconds,
              limit=limit, now=now)
    if dry_run:
        return run.execute()
    with run_lock(path, wait=wait):
        close_interrupted(db)
        store.write(db, [], statements=[runs.record(run.id, type=type, results={
            "operation": OPERATION, "state": "running", "pid": os.getpid()},
            error="running")])
        try:
            report = run.execute()
        except BaseException as e:
            message = (str(e) or e.__class__.__name__) if isinstance(e, Exception) else \
                "interrupted"
            runs.record_failure(db, runs.finish(run.id, results={
                "operation": OPERATION, "state": "failed", **run.counts()},
                seconds=run.seconds(), error=message))
            raise
        store.write(db, [], statements=run.record(report))
        return report


def close_interrupted(db):
    """Runs still marked running hold no lock (we have it): they were killed. Say so."""
    with transaction(db):
        db.execute(f"UPDATE memory_consolidations SET error_message = 'interrupted', "
                   f"consolidation_results = json_set(consolidation_results, '$.state', "
                   f"'interrupted') WHERE success = 0 AND error_message = 'running' AND {RUNS}")


class Run:
    """One consolidation: its settings, what each step planned, and the steps in order."""

    def __init__(self, db, *, embedder, type, dry_run, max_seconds, limit, now):
        self.db, self.embedder, self.type, self.dry_run = db, embedder, type, dry_run
        self.id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.deadline = None if max_seconds is None else self.started + max_seconds
        self.now = parse_time(now, field="now") if now else utc_now()
        problems = []
        self.policy = policy(db, problems)
        limits = self.policy.get("limits", {})
        self.limit = limit or int(min(max(limits.get("max_memories", 100_000), 1), MAX_INTEGER))
        self.batch = int(min(max(limits.get("batch", 2000), 1), 100_000))
        self.stopped = None
        self.processed = self.remaining = 0
        self.bytes_before = self.bytes_after = 0
        self.merges, self.links, self.promotions = [], [], []
        self.patterns, self.knowledge, self.retention = [], [], []
        self.compressed = None
        self.skipped = []  # rows another client wrote that a step cannot use: {step, row, reason}
        for key, what in problems:
            plan.skip(self.skipped, "policy", f"consolidation_policy {key}",
                      f"{what} (its default used)")

    def seconds(self):
        """Seconds since the run started."""
        return round(time.monotonic() - self.started, 3)

    def late(self):
        """Whether max-seconds has passed (then `stopped` says so): start no new work."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = self.stopped or "max-seconds reached: the rest waits for the next run"
        return self.stopped is not None

    def counts(self):
        """The report's counts so far."""
        return {"processed": self.processed, "remaining": self.remaining,
                "merged": sum(len(m["merged"]) for m in self.merges),
                "linked": len(self.links), "promoted": len(self.promotions),
                "patterns": len(self.patterns), "knowledge": len(self.knowledge),
                "skipped": len(self.skipped),
                "retention": {action: sum(r["action"] == action for r in self.retention)
                              for action in ("compress", "archive", "expire")}}

    def execute(self):
        """Run the steps in order, as far as max-seconds allows; returns the report."""
        self.duplicates()
        for step in (self.promote, self.find_patterns, self.derive_knowledge, self.retain):
            if self.late():
                break
            step()
        return self.report()

    def report(self):
        """What the run did (or would do, dry): counts, and each merge, link, promotion,
        pattern, knowledge and retention action."""
        ratio = round(self.bytes_after / self.bytes_before, 4) if self.bytes_before else 1.0
        return {"run_id": None if self.dry_run else self.id, "type": self.type,
                "dry_run": self.dry_run, **self.counts(), "compression_ratio": ratio,
                "seconds": self.seconds(), "stopped": self.stopped, "merges": self.merges,
                "links": self.links, "promotions": self.promotions,
                "patterns_found": self.patterns, "knowledge_derived": self.knowledge,
                "retention_plan": self.retention, "skipped": self.skipped}

    def _records(self, kind, step, items):
        return write.records(self.db, items, kind=kind, step=step, embedder=self.embedder,
                             batch=self.batch, skipped=self.skipped)

    def _statements(self, step, units):
        return write.statements(self.db, units, step=step, batch=self.batch,
                                skipped=self.skipped)

    def duplicates(self):
        """1. The due memories keyed; same-key duplicates merged, look-alikes linked."""
        due, total = read.due(self.db, self.policy[f"window.{self.type}"], now=self.now,
                              limit=self.limit)
        keyed = self._keyed(due)
        self.processed, self.remaining = len(keyed), total - len(keyed)
        if not keyed:
            return
        apart = read.kept_apart(self.db)
        groups = merge.by_key(keyed)
        merge.by_key(read.same_key(self.db, list(groups)), groups)
        absorbed = read.absorbed(self.db, [m["id"] for g in groups.values() for m in g.values()
                                           if g and len(g) > 1])
        self.merges, self.links, units, merged = merge.merges(
            groups, apart=apart, absorbed=absorbed, run_id=self.id, skipped=self.skipped)
        if not self.late():
            self._look_alikes(keyed, groups, apart=apart, units=units, merged=merged)
        self.bytes_before, self.bytes_after = merge.sizes(keyed, merged)
        if self.dry_run:
            return
        failed = self._statements("merge", units)
        self.merges = [m for m in self.merges if m["survivor"] not in failed]
        self._statements("mark", merge.marks(keyed, self.id))
        self._statements("link", merge.link_rows(self.links, self.id))

    def _keyed(self, due):
        """The due memories with text, each with its duplicate key."""
        keyed = []
        for i, memory in enumerate(due):
            if i % 1000 == 0 and self.late():
                break
            if not isinstance(memory["text"], str):
                plan.skip(self.skipped, "merge", f"memory {memory['id']}",
                          "text is a blob, not text")
                continue
            memory["key"] = duplicates.key(memory["text"])
            keyed.append(memory)
        return keyed

    def _look_alikes(self, keyed, groups, *, apart, units, merged):
        """The due memories' look-alikes: a shared band of SimHash bits (vector index) and
        cosine at least the policy's link_similarity. Those the second check calls the same
        (meaning.py; policy duplicates.meaning, on by default) merge, except memories kept
        apart or in this run's other merges; the others not duplicates by the strict check
        are linked."""
        settings = self.policy.get("duplicates", {})
        doc_of, ids, sigs = read.memory_signatures(self.db)
        if len(ids) < 2:
            return
        pairs = merge.link_candidates(ids, sigs, due=[m["id"] for m in keyed], groups=groups)
        if not pairs:
            return
        wanted = sorted({x for p in pairs for x in p})
        doc_ids = {ref: doc for doc, ref in doc_of.items()}
        vectors = {doc_of[d]: v for d, v in read.vectors(
            self.db, [doc_ids[x] for x in wanted]).items()}
        linked = {(link["memory_id"], link["related_id"]) for link in self.links}
        links, same = merge.look_alikes(
            pairs, texts=read.texts(self.db, wanted), vectors=vectors, linked=linked,
            threshold=settings.get("link_similarity", 0.9),
            by_meaning=settings.get("meaning", True) is not False)
        self.links += links
        taken = merged | {m["survivor"] for m in self.merges}
        same = [(a, b) for a, b in same if not {a, b} & (taken | apart)]
        if not same:
            return
        wanted = sorted({x for p in same for x in p})
        found = merge.meaning_groups(same, read.memories(self.db, wanted))
        absorbed = read.absorbed(self.db, [m for g in found.values() for m in g])
        more, links, more_units, more_merged = merge.merges(
            found, apart=apart, absorbed=absorbed, run_id=self.id, skipped=self.skipped,
            check=merge.by_meaning(vectors))
        self.merges += more
        self.links += links
        units += more_units
        merged |= more_merged

    def promote(self):
        """2. Memories promoted to very_long_term_memories by the `promote.*` rules."""
        rules = {k.split(".", 1)[1]: v for k, v in self.policy.items()
                 if k.startswith("promote.")}
        if not rules:
            return
        existing = read.promoted(self.db)
        now = from_iso(self.now)
        lowest = min(r["min_importance"] for r in rules.values())
        records = []
        for memory in read.promotion_candidates(self.db, lowest):
            promotion = plan.promotion(memory, rules, now=now, existing=existing,
                                       skipped=self.skipped)
            if promotion is None:
                continue
            self.promotions.append(promotion)
            records.append(plan.vltm(memory, promotion, self.id))
            if len(records) >= self.limit or len(records) % 500 == 0 and self.late():
                break
        records = plan.valid("vltm", "promote", records, self.skipped)
        if not self.dry_run:
            records = self._records("vltm", "promote", [(r, plan.provenance(
                "vltm", r["memory_id"], [("memory", r["metadata_info"]["memory"])],
                relation="promoted", run_id=self.id)) for r in records])
        kept = {r["memory_id"] for r in records}
        self.promotions = [p for p in self.promotions if p["memory_id"] in kept]

    def find_patterns(self):
        """3. Patterns in the action log and among the very-long-term memories."""
        settings = self.policy.get("patterns", {})
        since = hours_before(from_iso(self.now),
                             24 * settings.get("lookback_days", 90))
        rows = read.actions(self.db, since=since, until=self.now,
                            limit=settings.get("max_actions", 50_000))
        results = plan.action_patterns(rows, settings, self.skipped)
        if not self.late():
            results += self._structural(settings)
        self.patterns = plan.valid("pattern", "patterns", results, self.skipped)
        if self.dry_run or not self.patterns:
            return
        self.patterns = self._records("pattern", "patterns", [(p, plan.provenance(
            "pattern", p["pattern_id"], plan.supports(p), relation="supports", run_id=self.id))
            for p in self.patterns])

    def _structural(self, settings):
        """Clusters of very-long-term memories: pairs from shared signature bands whose
        cosine reaches structural_similarity, and their related_memories lists."""
        rows = read.vltm_docs(self.db)
        memories, edges = plan.vltm_graph(rows, self.skipped)
        by_doc = {r[4]: r[0] for r in rows}
        vectors = {by_doc[d]: v for d, v in read.vectors(self.db, list(by_doc)).items()}
        edges += plan.similar(vectors, threshold=settings.get("structural_similarity", 0.8))
        support, confidence = plan.thresholds(settings)
        return found.structural(memories, sorted(set(edges)), min_support=support,
                                min_confidence=confidence)

    def derive_knowledge(self):
        """4. Strategic knowledge per domain from the stored and the new patterns."""
        stored = plan.stored_patterns(read.patterns(self.db), self.skipped)
        for p in self.patterns:  # a dry run's patterns are not stored yet
            stored[p["pattern_id"]] = p
        settings = self.policy.get("knowledge", {})
        self.knowledge = found.knowledge(list(stored.values()),
                                         min_patterns=settings.get("min_patterns", 2))
        if self.dry_run or not self.knowledge:
            return
        items = [(r, s) for r, s in plan.knowledge_rows(self.knowledge, self.id)
                 if plan.valid("knowledge", "knowledge", [r], self.skipped)]
        written = {r["knowledge_id"]: r["status"]
                   for r in self._records("knowledge", "knowledge", items)}
        self.knowledge = [k for k in self.knowledge if k["knowledge_id"] in written]
        for k in self.knowledge:
            k["status"] = written[k["knowledge_id"]]

    def retain(self):
        """5. The retention policies' archive and expiry, and compress.py's levels."""
        from .. import compress

        self.retention, statements = plan.retention(read.retention(self.db, self.now),
                                                    self.skipped)
        planned = compress.plan(self.db, embedder=self.embedder, knowledge=False, vltm=True,
                                now=self.now)
        self.retention += plan.compressions(planned.vltm["rows"])
        statements += [(compress.SWAP, [old, new, memory_id])
                       for memory_id, old, new in planned.swaps]
        self.compressed = {k: planned.vltm[k] for k in ("bytes_before", "bytes_after")}
        if not self.dry_run and statements:
            store.write(self.db, [], statements=statements)
            if planned.swaps:  # their new index text: embedded now, outside the lock
                store.write(self.db, [], embedder=self.embedder)

    def record(self, report):
        """6. The statements of the run's record, metrics and patterns."""
        return plan.record(self.id, report, patterns=self.patterns, knowledge=self.knowledge,
                           promotions=self.promotions)
