"""Consolidation: a growing pile of memories and logs into less, better memory. No LLM.

One run, in order (each step planned outside any transaction, then written in short ones
through store.write, so `log`, `ingest` and `query` go on meanwhile):
  1. duplicates: the due memories (the type's window, not yet consolidated, at most the
     run's cap) get their duplicate key (duplicates.key); memories with the same key that pass
     the strict check merge into the most detailed one; look-alikes found through the vector
     index's signatures (bands of SimHash bits: no pair comparison) that fail the check are
     linked in `memory_link`, with the reason;
  2. promotion to very_long_term_memories by the policy rows `promote.*`;
  3. patterns (behavioral, causal, temporal from actionlog; structural among VLTMs);
  4. strategic knowledge per domain from its patterns;
  5. retention: the policy table's archive, compress (compress.py's levels) and expiry;
  6. the run's record, metrics and what each merge changed (`memory_merge`, for undo).
A file lock beside the database (flock: the kernel drops it when the process dies) keeps two
runs apart.
"""

import json
import os
import time
import uuid
from datetime import datetime, timedelta

from .. import runs
from ..db import format_time, parse_time, transaction
from ..db import now as utc_now
from ..errors import InputError, RecordError
from ..schema import CONSOLIDATION_POLICY, CONSOLIDATION_TYPES, MEMORY_TYPES
from ..store import write
from ..text import MAX_INTEGER, loads, stored_number, stored_time
from . import duplicates
from . import patterns as found
from .lock import Busy, run_lock  # noqa: F401 (Busy: for the CLI)
from .undo import history, undo  # noqa: F401 (the CLI's entry points)

CHUNK = 500
BAND_BYTES = 3  # 24 SimHash bits a band: 42 bands of the 1024-bit signature
MAX_BUCKET = 64  # a band bucket this full holds no look-alikes worth a link
OPERATION = "consolidate"
RUNS = runs.of(OPERATION)
MEMORY_COLUMNS = "id, text, importance, access_count, metadata, last_accessed, created_at"
BEFORE = ("json_object('merged_into', merged_into, 'importance', importance, 'access_count', "
          "access_count, 'metadata', json(metadata), 'last_accessed', last_accessed)")
# Classifying a memory's text into the very-long-term types, first match wins.
CUES = [
    ("critical_failure", ("outage crash crashed data loss corrupt critical broke broken down "
                         "incident fatal")),
    ("failed_experiment", "experiment hypothesis trial refuted disproved"),
    ("successful_improvement", ("improved faster speedup reduced halved fixed optimized "
                               "optimised better")),
    ("code_pattern", "function class method code refactor regex api library bug"),
    ("architectural_insight", "architecture design schema module index layer service"),
    ("meta_learning_rule", "learned lesson rule always never should must avoid"),
    ("strategic_knowledge", "strategy plan goal priority prefers prefer decision"),
    ("evolution_pattern", "evolved trend over time gradually drift"),
]
STRATEGIC = {"strategic_knowledge": 0.9, "meta_learning_rule": 0.8, "critical_failure": 0.8,
             "architectural_insight": 0.7, "successful_improvement": 0.6,
             "evolution_pattern": 0.6, "failed_experiment": 0.5, "code_pattern": 0.5,
             "behavioral_pattern": 0.4}
IDENTITY = {"vltm": "memory_id", "pattern": "pattern_id", "knowledge": "knowledge_id"}
CATEGORY_RANK = {"long_term": 1, "very_long_term": 2, "permanent": 3}


def policy(db, problems=None):
    """{key: value} of the consolidation policy rows.

    A row another client wrote that cannot be read (nested too deeply, not an object) gives
    the default value (schema.CONSOLIDATION_POLICY); a member of the wrong kind (text for a
    number, a list or a number where the other is due) or left out gives the default's
    member. Each problem is appended to problems as (key, what)."""
    problems = [] if problems is None else problems
    rows = {}
    for key, value in db.execute("SELECT key, value FROM consolidation_policy"):
        default = CONSOLIDATION_POLICY.get(key, (None,))[0]
        try:
            value = loads(value)
        except (ValueError, TypeError) as e:  # text.DeepJSONError is a ValueError
            problems.append((key, str(e)))
            value = default
        if isinstance(default, dict):
            if not isinstance(value, dict):
                problems.append((key, "is not a JSON object"))
                value = default
            value = {**default, **value}  # a member left out: the default's
            for name in list(value):
                usual = default.get(name, SHAPES.get(name))
                if name in SHAPES and not _same_kind(value[name], usual):
                    what = f"{name}: {str(value[name])[:40]!r} is not {_kinds(usual)}"
                    problems.append((key, what))
                    if name in default:
                        value[name] = default[name]
                    else:
                        del value[name]
        if value is not None:
            rows[key] = value
    return rows


# A policy member's kind, by the first default that has it: a number, a list or text.
SHAPES = {}
for _value, _ in CONSOLIDATION_POLICY.values():
    for _name, _usual in (_value.items() if isinstance(_value, dict) else ()):
        SHAPES.setdefault(_name, _usual)


def _hours_before(now, hours):
    """The stored form of `hours` before now; a policy's age past year 1 (or 9999) gives
    the earliest (latest) time instead of an OverflowError."""
    try:
        return format_time(now - timedelta(hours=hours))
    except OverflowError:
        return "0001-01-01T00:00:00.000Z" if hours > 0 else "9999-12-31T23:59:59.999Z"


def _same_kind(value, usual):
    if isinstance(usual, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(usual, str):
        return isinstance(value, str)
    return stored_number(value) is not None or usual is None and value is None


def _kinds(usual):
    return "a list of names" if isinstance(usual, list) else "text" \
        if isinstance(usual, str) else "a number"


def consolidate(db, *, path, embedder, type="daily", dry_run=False, max_seconds=None,
                limit=None, wait=False, now=None):
    """Run one consolidation (see the module's doc); record it unless dry_run.

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
        _close_interrupted(db)
        write(db, [], statements=[runs.record(run.id, type=type, results={
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
        write(db, [], statements=run.record(report))
        return report


def _close_interrupted(db):
    """Runs still marked running hold no lock (we have it): they were killed. Say so."""
    with transaction(db):
        db.execute(f"UPDATE memory_consolidations SET error_message = 'interrupted', "
                   f"consolidation_results = json_set(consolidation_results, '$.state', "
                   f"'interrupted') WHERE success = 0 AND error_message = 'running' AND {RUNS}")


class Run:
    """One consolidation: planning and writing, step by step."""

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
            self._skip("policy", f"consolidation_policy {key}", f"{what} (its default used)")

    def seconds(self):
        return round(time.monotonic() - self.started, 3)

    def late(self):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = self.stopped or "max-seconds reached: the rest waits for the next run"
        return self.stopped is not None

    def counts(self):
        return {"processed": self.processed, "remaining": self.remaining,
                "merged": sum(len(m["merged"]) for m in self.merges),
                "linked": len(self.links), "promoted": len(self.promotions),
                "patterns": len(self.patterns), "knowledge": len(self.knowledge),
                "skipped": len(self.skipped),
                "retention": {action: sum(r["action"] == action for r in self.retention)
                              for action in ("compress", "archive", "expire")}}

    def execute(self):
        self.duplicates()
        for step in (self.promote, self.find_patterns, self.derive_knowledge, self.retain):
            if self.late():
                break
            step()
        return self.report()

    def report(self):
        ratio = round(self.bytes_after / self.bytes_before, 4) if self.bytes_before else 1.0
        return {"run_id": None if self.dry_run else self.id, "type": self.type,
                "dry_run": self.dry_run, **self.counts(), "compression_ratio": ratio,
                "seconds": self.seconds(), "stopped": self.stopped, "merges": self.merges,
                "links": self.links, "promotions": self.promotions,
                "patterns_found": self.patterns, "knowledge_derived": self.knowledge,
                "retention_plan": self.retention, "skipped": self.skipped}

    # Rows that cannot be used -----------------------------------------------------------
    # Other clients write the file with plain sqlite3: any type in any column, times that do
    # not parse, JSON nested too deeply, foreign keys that point nowhere. Such a row is left
    # as it is, skipped by the step that needs it and reported; it never stops the run (or
    # every later run: it would still be there).

    def _skip(self, step, row, reason):
        self.skipped.append({"step": step, "row": row, "reason": str(reason)[:300]})

    def _metadata(self, memory, step):
        """A memory's metadata as a dict, or None (skipped, reported) when it cannot be read."""
        try:
            meta = loads(memory["metadata"] or "{}")
        except (ValueError, TypeError) as e:  # text.DeepJSONError is a ValueError
            self._skip(step, f"memory {memory['id']}", f"metadata: {e}")
            return None
        return meta if isinstance(meta, dict) else {}

    def _valid(self, kind, step, records):
        """The records that validate as `kind`; the others skipped and reported."""
        from ..models import KINDS, validate

        out = []
        for record in records:
            try:
                validate(KINDS[kind], record)
                out.append(record)
            except InputError as e:
                self._skip(step, f"{kind} {record[IDENTITY[kind]]}", e)
        return out

    def _write(self, kind, step, items):
        """write() (record, statements) items a batch at a time; an item that conflicts
        with stored rows (a constraint, a foreign key another client left dangling) is
        skipped and reported, and the rest of its batch written. Returns the records written,
        each with its `status`."""
        from ..db import driver

        written = []
        queue = [items[i:i + self.batch] for i in range(0, len(items), self.batch)]
        while queue:
            batch = queue.pop(0)
            if not batch:
                continue
            try:
                results = write(self.db, [r for r, _ in batch], kind=kind,
                                embedder=self.embedder,
                                statements=[s for _, more in batch for s in more])
            except RecordError as e:
                self._skip(step, f"{kind} {batch[e.index][0][IDENTITY[kind]]}", e)
                queue.insert(0, batch[:e.index] + batch[e.index + 1:])
                continue
            except driver().IntegrityError as e:  # a statement's: try each item alone
                if len(batch) == 1:
                    self._skip(step, f"{kind} {batch[0][0][IDENTITY[kind]]}", e)
                else:
                    queue[:0] = [[item] for item in batch]
                continue
            for (record, _), result in zip(batch, results):
                record["status"] = result["status"]
                written.append(record)
        return written

    # 1. Duplicates -------------------------------------------------------------------

    def _window(self):
        window = self.policy[f"window.{self.type}"]
        now = datetime.fromisoformat(self.now.replace("Z", "+00:00"))
        where = ["dup_key IS NULL", "merged_into IS NULL",
                 "created_at <= ?", "importance >= ?"]
        params = [_hours_before(now, window.get("min_age_hours") or 0),
                  window.get("min_importance") or 0.0]
        if window.get("since_hours"):
            where.append("created_at >= ?")
            params.append(_hours_before(now, window["since_hours"]))
        return " AND ".join(where), params

    def duplicates(self):
        where, params = self._window()
        due = [dict(zip(("id", "text", "importance", "access_count", "metadata",
                         "last_accessed", "created_at"), r)) for r in self.db.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memory WHERE {where} ORDER BY created_at, id "
            f"LIMIT ?", [*params, self.limit])]
        total = self.db.execute(f"SELECT count(*) FROM memory WHERE {where}",
                                params).fetchone()[0]
        keyed = []
        for i, memory in enumerate(due):
            if i % 1000 == 0 and self.late():
                break
            if not isinstance(memory["text"], str):
                self._skip("merge", f"memory {memory['id']}", "text is a blob, not text")
                continue
            memory["key"] = duplicates.key(memory["text"])
            keyed.append(memory)
        self.processed, self.remaining = len(keyed), total - len(keyed)
        if not keyed:
            return
        apart = self._kept_apart()
        groups = {}
        for memory in keyed:
            groups.setdefault(memory["key"], {})[memory["id"]] = memory
        keys = list(groups)
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            for r in self.db.execute(
                    f"SELECT {MEMORY_COLUMNS}, dup_key FROM memory WHERE dup_key IN "
                    f"({', '.join('?' * len(chunk))}) AND merged_into IS NULL", chunk):
                memory = dict(zip(("id", "text", "importance", "access_count", "metadata",
                                   "last_accessed", "created_at", "key"), r))
                groups[memory["key"]].setdefault(memory["id"], memory)
        absorbed_before = self._absorbed([m["id"] for g in groups.values() for m in g.values()
                                          if g and len(g) > 1])
        merges, merged = [], set()
        for group in groups.values():
            members = [m for m in group.values() if m["id"] not in apart]
            if len(members) > 1:
                statements = self._merge(members, absorbed_before, merged)
                if statements:
                    merges.append((self.merges[-1]["survivor"], statements))
        for memory in keyed:
            self.bytes_before += len(memory["text"].encode())
            if memory["id"] not in merged:
                self.bytes_after += len(memory["text"].encode())
        if not self.late():
            self._link(keyed, groups)
        if self.dry_run:
            return
        marks = [(m["id"], [(("UPDATE memory SET dup_key = ?, consolidated_in = ? WHERE id = ? "
                              "AND text = ? AND dup_key IS NULL"),
                             [m["key"], self.id, m["id"], m["text"]])]) for m in keyed]
        links = [(link["memory_id"], [(("INSERT OR IGNORE INTO memory_link(memory_id, related_id, "
                                        "similarity, reason, consolidation_id) VALUES "
                                        "(?, ?, ?, ?, ?)"),
                                       [link["memory_id"], link["related_id"],
                                        link["similarity"], link["reason"], self.id])])
                 for link in self.links]
        skipped = self._statements("merge", merges)
        self.merges = [m for m in self.merges if m["survivor"] not in skipped]
        self._statements("mark", marks)
        self._statements("link", links)

    def _statements(self, step, units):
        """Run (memory id, statements) units in short transactions, a batch at a time; a unit
        that conflicts with stored rows (a foreign key another client left dangling, a
        constraint) is skipped and reported, the rest written. Returns the skipped ids."""
        from ..db import driver

        batches, batch, size = [], [], 0
        for unit in units:
            batch.append(unit)
            size += len(unit[1])
            if size >= self.batch:
                batches.append(batch)
                batch, size = [], 0
        batches.append(batch)
        skipped = set()
        for batch in filter(None, batches):
            try:
                write(self.db, [], statements=[s for _, more in batch for s in more])
                continue
            except driver().IntegrityError:
                pass
            for memory_id, statements in batch:  # which one: each alone
                try:
                    write(self.db, [], statements=statements)
                except driver().IntegrityError as e:
                    self._skip(step, f"memory {memory_id}", e)
                    skipped.add(memory_id)
        return skipped

    def _kept_apart(self):
        """Memories whose merge was undone: never merged again (they stay linked)."""
        return {r[0] for r in self.db.execute(
            "SELECT m.memory_id FROM memory_merge m JOIN memory_consolidations c "
            "ON c.consolidation_id = m.consolidation_id "
            "WHERE json_extract(c.consolidation_results, '$.undone_at') IS NOT NULL")}

    def _absorbed(self, ids):
        """{survivor id: [ids merged into it]} for the given ids."""
        out = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            for memory_id, into in self.db.execute(
                    f"SELECT id, merged_into FROM memory WHERE merged_into IN "
                    f"({', '.join('?' * len(chunk))})", chunk):
                out.setdefault(into, []).append(memory_id)
        return out

    def _merge(self, members, absorbed_before, merged):
        """Statements merging a group of same-key memories into its most detailed one."""
        metas = {}
        for m in members:
            meta = self._metadata(m, "merge")
            if meta is not None:
                metas[m["id"]] = meta
        members = [m for m in members if m["id"] in metas]
        if len(members) < 2:
            return []

        def detail(m):
            return (len(m["text"].strip()), len(metas[m["id"]]),
                    stored_number(m["importance"], 0.0), -m["id"])

        survivor = max(members, key=detail)
        taken, reasons = [], {}
        for m in sorted(members, key=lambda m: m["id"]):
            if m is survivor:
                continue
            same, why = duplicates.check(survivor["text"], m["text"])
            if same:
                taken.append(m)
                reasons[m["id"]] = why
            else:
                self._add_link(survivor, m, None, why)
        if not taken:
            return []
        meta = dict(metas[survivor["id"]])
        for m in taken:
            for k, v in metas[m["id"]].items():
                meta.setdefault(k, v)
        importance = max(stored_number(m["importance"], 0.0) for m in [survivor, *taken])
        accessed = max((m["last_accessed"] for m in [survivor, *taken]
                        if stored_time(m["last_accessed"])), default=None)
        # Memories merged into a taken memory by an earlier run now point at the survivor.
        moved = [i for m in taken for i in absorbed_before.get(m["id"], [])]
        self.merges.append({"survivor": survivor["id"], "merged": [m["id"] for m in taken],
                            "moved": moved, "reasons": reasons,
                            "text": survivor["text"][:200]})
        merged.update(m["id"] for m in taken)
        note = ("INSERT INTO memory_merge(consolidation_id, memory_id, survivor_id, role, "
                f"reason, before, after) SELECT ?, id, ?, ?, ?, {BEFORE}, '{{}}' "
                "FROM memory WHERE id = ?")
        out = [(note, [self.id, survivor["id"], "survivor", None, survivor["id"]])]
        for m in taken:
            out.append((note, [self.id, survivor["id"], "merged", reasons[m["id"]], m["id"]]))
            out.append(("UPDATE memory SET merged_into = ? WHERE id = ? AND text = ?",
                        [survivor["id"], m["id"], m["text"]]))
        for i in moved:
            out.append((note, [self.id, survivor["id"], "merged", "moved with its survivor", i]))
            out.append(("UPDATE memory SET merged_into = ? WHERE id = ?", [survivor["id"], i]))
        added = int(min(sum(max(stored_number(m["access_count"], 0), 0) for m in taken),
                        MAX_INTEGER))
        out.append((("UPDATE memory SET importance = max(importance, ?), access_count = "
                    f"min(access_count + ?, {MAX_INTEGER}), last_accessed = CASE WHEN last_accessed IS NULL OR "
                    "last_accessed < ? THEN ? ELSE last_accessed END, metadata = ? WHERE id = ?"),
                    [importance, added, accessed, accessed, json.dumps(meta, ensure_ascii=False),
                     survivor["id"]]))
        # By primary key: `survivor_id = ?` would walk every row of the run, per merge.
        ids = [survivor["id"], *(m["id"] for m in taken), *moved]
        out.append(((f"UPDATE memory_merge SET after = (SELECT {BEFORE} FROM memory WHERE id = "
                     f"memory_id) WHERE consolidation_id = ? AND memory_id IN "
                     f"({', '.join('?' * len(ids))})"), [self.id, *ids]))
        return out

    def _add_link(self, a, b, similarity, reason):
        low, high = sorted((a["id"], b["id"]))
        self.links.append({"memory_id": low, "related_id": high, "reason": reason,
                           "similarity": None if similarity is None else round(similarity, 4)})

    def _link(self, keyed, groups):
        """Look-alikes of the due memories: same band of SimHash bits (vector index), cosine
        at least the policy's link_similarity, and not duplicates by the check."""
        import numpy as np

        threshold = self.policy.get("duplicates", {}).get("link_similarity", 0.9)
        doc_of = dict(self.db.execute(
            "SELECT id, CAST(ref AS INTEGER) FROM doc WHERE kind = 'memory'"))
        ids, sigs = [], []
        for doc_id, bits in self.db.execute("SELECT doc_id, embedding FROM doc_bits"):
            if doc_id in doc_of:
                ids.append(doc_of[doc_id])
                sigs.append(bits)
        if len(ids) < 2:
            return
        ids = np.array(ids)
        raw = np.frombuffer(b"".join(sigs), dtype=np.uint8).reshape(len(ids), -1)
        due = np.isin(ids, [m["id"] for m in keyed])
        pairs = set()
        for start in range(0, raw.shape[1] - BAND_BYTES + 1, BAND_BYTES):
            band = raw[:, start:start + BAND_BYTES].astype(np.uint32)
            value = (band[:, 0] << 16) | (band[:, 1] << 8) | band[:, 2]
            order = np.argsort(value, kind="stable")
            ordered = value[order]
            cuts = np.flatnonzero(np.diff(ordered)) + 1
            for bucket in np.split(order, cuts):
                if 1 < len(bucket) <= MAX_BUCKET and due[bucket].any():
                    members = sorted(ids[bucket].tolist())
                    pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1:])
        same_key = {m: k for k, g in groups.items() for m in g}
        pairs = {(a, b) for a, b in pairs
                 if same_key.get(a) is None or same_key.get(a) != same_key.get(b)}
        if not pairs:
            return
        wanted = sorted({x for p in pairs for x in p})
        vectors, texts = {}, {}
        doc_ids = {ref: doc for doc, ref in doc_of.items()}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start:start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            texts.update(self.db.execute(f"SELECT id, text FROM memory WHERE id IN ({marks})",
                                         chunk))
            for doc_id, blob in self.db.execute(
                    f"SELECT doc_id, embedding FROM doc_vec WHERE doc_id IN ({marks})",
                    [doc_ids[x] for x in chunk]):
                vectors[doc_of[doc_id]] = np.frombuffer(blob, dtype=np.float32)
        linked = {(link["memory_id"], link["related_id"]) for link in self.links}
        for a, b in sorted(pairs):
            if a not in vectors or b not in vectors or (a, b) in linked:
                continue
            similarity = float(vectors[a] @ vectors[b])
            if similarity < threshold:
                continue
            if not isinstance(texts.get(a), str) or not isinstance(texts.get(b), str):
                continue
            same, why = duplicates.check(texts[a], texts[b])
            if not same:
                self._add_link({"id": a}, {"id": b}, similarity, why)

    # 2. Promotion --------------------------------------------------------------------

    def promote(self):
        rules = {k.split(".", 1)[1]: v for k, v in self.policy.items()
                 if k.startswith("promote.")}
        if not rules:
            return
        lowest = min(r["min_importance"] for r in rules.values())
        existing = dict(self.db.execute(
            "SELECT memory_id, retention_category FROM very_long_term_memories "
            "WHERE source_session = 'consolidate'"))
        now = datetime.fromisoformat(self.now.replace("Z", "+00:00"))
        records = []
        for row in self.db.execute(
                "SELECT id, key, text, memory_type, importance, access_count, metadata, "
                "created_at, last_accessed, source FROM memory "
                "WHERE importance >= ? AND merged_into IS NULL ORDER BY id", [lowest]):
            memory = dict(zip(("id", "key", "text", "memory_type", "importance",
                               "access_count", "metadata", "created_at", "last_accessed",
                               "source"), row))
            decision = self._promotion(memory, rules, now)
            if decision is None:
                continue
            vltm_id = found.stable_id("memory", memory["id"])
            category = decision["retention_category"]
            if CATEGORY_RANK.get(existing.get(vltm_id), 0) >= CATEGORY_RANK.get(category, 0):
                continue
            self.promotions.append({"memory": memory["id"], "memory_id": vltm_id, **decision})
            records.append({
                "memory_id": vltm_id, "memory_type": decision["memory_type"],
                "compressed_content": {"text": memory["text"]},
                "importance_score": stored_number(memory["importance"], 0.0),
                "strategic_value": decision["strategic_value"],
                "metadata_info": {"memory": memory["id"], "key": memory["key"],
                                  "memory_type": memory["memory_type"],
                                  "source": memory["source"], "rule": decision["rule"],
                                  "consolidation_id": self.id},
                "source_session": "consolidate", "retention_category": category,
                "created_at": memory["created_at"],
                "last_accessed": memory["last_accessed"] if stored_time(
                    memory["last_accessed"]) else memory["created_at"],
                "access_count": int(min(max(stored_number(memory["access_count"], 0), 0),
                                        MAX_INTEGER))})
            if len(records) >= self.limit or len(records) % 500 == 0 and self.late():
                break
        records = self._valid("vltm", "promote", records)
        if not self.dry_run:
            records = self._write("vltm", "promote", [(r, []) for r in records])
        kept = {r["memory_id"] for r in records}
        self.promotions = [p for p in self.promotions if p["memory_id"] in kept]

    def _promotion(self, memory, rules, now):
        """The highest rule a memory meets: {rule, memory_type, strategic_value,
        retention_category}, or None."""
        if not isinstance(memory["text"], str):
            self._skip("promote", f"memory {memory['id']}", "text is a blob, not text")
            return None
        created = stored_time(memory["created_at"])
        if created is None:
            self._skip("promote", f"memory {memory['id']}",
                       f"created_at: {str(memory['created_at'])[:40]!r} is not a time")
            return None
        meta = self._metadata(memory, "promote")
        if meta is None:
            return None
        importance = stored_number(memory["importance"], 0.0)
        accesses = stored_number(memory["access_count"], 0)
        kind = memory["memory_type"] if memory["memory_type"] in MEMORY_TYPES else \
            meta.get("memory_type") if meta.get("memory_type") in MEMORY_TYPES else \
            classify(memory["text"])
        strategic = meta.get("strategic_value")
        if not isinstance(strategic, (int, float)) or isinstance(strategic, bool) or \
                not 0 <= strategic <= 1:
            strategic = STRATEGIC[kind]
        age = (now - created) / timedelta(days=1)
        best = None
        for name, rule in rules.items():
            if rule.get("memory_types") and kind not in rule["memory_types"]:
                continue
            if importance < rule["min_importance"] or \
                    strategic < rule.get("min_strategic", 0) or \
                    age < rule.get("min_age_days", 0) or \
                    accesses < rule.get("min_access", 0):
                continue
            category = rule.get("retention_category", "long_term")
            if best is None or CATEGORY_RANK.get(category, 0) > \
                    CATEGORY_RANK.get(best["retention_category"], 0):
                best = {"rule": name, "memory_type": kind, "strategic_value": strategic,
                        "retention_category": category}
        return best

    # 3. Patterns ---------------------------------------------------------------------

    def find_patterns(self):
        settings = self.policy.get("patterns", {})
        support, confidence = settings.get("min_support", 3), settings.get("min_confidence", 0.6)
        since = _hours_before(datetime.fromisoformat(self.now.replace("Z", "+00:00")),
                              24 * settings.get("lookback_days", 90))
        actions = []
        for row_id, ts, name, status in self.db.execute(
                "SELECT id, timestamp, action_name, status FROM actionlog WHERE timestamp >= ? "
                "AND timestamp <= ? ORDER BY timestamp DESC, id DESC LIMIT ?",
                [since, self.now, settings.get("max_actions", 50_000)]).fetchall()[::-1]:
            if stored_time(ts) is None:
                self._skip("patterns", f"actionlog {row_id}",
                           f"timestamp: {str(ts)[:40]!r} is not a time")
                continue
            actions.append((row_id, ts, str(name), status))
        results = found.behavioral(actions, min_support=support, min_confidence=confidence)
        results += found.causal(actions, min_support=support, min_confidence=confidence,
                                window_minutes=settings.get("causal_window_minutes", 60))
        results += found.temporal(actions, min_support=support, min_confidence=confidence)
        if not self.late():
            results += self._structural(settings, support, confidence)
        self.patterns = self._valid("pattern", "patterns", results)
        if self.dry_run or not self.patterns:
            return
        self.patterns = self._write("pattern", "patterns", [(p, []) for p in self.patterns])

    def _structural(self, settings, support, confidence):
        """Clusters of very-long-term memories: pairs from shared signature bands whose
        cosine reaches structural_similarity, and their related_memories lists."""
        import numpy as np

        threshold = settings.get("structural_similarity", 0.8)
        rows = self.db.execute(
            "SELECT v.memory_id, v.memory_type, v.created_at, d.text, d.id, v.related_memories "
            "FROM very_long_term_memories v JOIN doc d ON d.kind = 'vltm' AND d.ref = "
            "v.memory_id").fetchall()
        memories = {r[0]: (r[1], r[3], r[2] if stored_time(r[2]) else None) for r in rows}
        edges = []
        for r in rows:
            try:
                related = loads(r[5]) if isinstance(r[5], str) else []
            except ValueError as e:
                self._skip("patterns", f"vltm {r[0]}", f"related_memories: {e}")
                related = []
            edges += [(min(r[0], other), max(r[0], other), 1.0)
                      for other in related if isinstance(related, list) and
                      isinstance(other, str) and other in memories and other != r[0]]
        by_doc = {r[4]: r[0] for r in rows}
        vectors, sigs = {}, {}
        docs = list(by_doc)
        for start in range(0, len(docs), CHUNK):
            chunk = docs[start:start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            for doc_id, blob in self.db.execute(
                    f"SELECT doc_id, embedding FROM doc_vec WHERE doc_id IN ({marks})", chunk):
                vectors[by_doc[doc_id]] = np.frombuffer(blob, dtype=np.float32)
        if len(vectors) >= 2:
            from ..index import signature

            names = sorted(vectors)
            matrix = np.stack([vectors[n] for n in names])
            bits = np.packbits(signature(matrix) > 0, axis=1)
            pairs = set()
            for start in range(0, bits.shape[1] - BAND_BYTES + 1, BAND_BYTES):
                for i, row in enumerate(bits[:, start:start + BAND_BYTES]):
                    sigs.setdefault((start, row.tobytes()), []).append(i)
            for bucket in sigs.values():
                if 1 < len(bucket) <= MAX_BUCKET:
                    pairs.update((a, b) for i, a in enumerate(bucket) for b in bucket[i + 1:])
            for a, b in sorted(pairs):
                similarity = float(matrix[a] @ matrix[b])
                if similarity >= threshold:
                    edges.append((names[a], names[b], round(similarity, 4)))
        return found.structural(memories, sorted(set(edges)), min_support=support,
                                min_confidence=confidence)

    # 4. Knowledge --------------------------------------------------------------------

    def derive_knowledge(self):
        stored = {}
        for *r, raw in self.db.execute(
                "SELECT pattern_id, pattern_type, pattern_description, confidence_score, "
                "pattern_data, validation_count, hex(pattern_id) FROM memory_patterns"):
            if not isinstance(r[0], str) or r[0].encode().hex().upper() != raw:
                # not UTF-8 (read as U+FFFD) or a blob: no row has the id we would write
                self._skip("knowledge", f"pattern {r[0]!r}", "pattern_id is not UTF-8 text")
                continue
            stored[r[0]] = dict(zip(("pattern_id", "pattern_type", "pattern_description",
                                     "confidence_score", "pattern_data", "validation_count"), r))
        for pattern_id, p in list(stored.items()):
            try:
                data = loads(p["pattern_data"])
            except (ValueError, TypeError) as e:
                self._skip("knowledge", f"pattern {pattern_id}", f"pattern_data: {e}")
                del stored[pattern_id]
                continue
            p["pattern_data"] = data if isinstance(data, dict) else {}
            p["confidence_score"] = stored_number(p["confidence_score"], 0.0)
            p["validation_count"] = stored_number(p["validation_count"], 0)
        for p in self.patterns:  # a dry run's patterns are not stored yet
            stored[p["pattern_id"]] = p
        settings = self.policy.get("knowledge", {})
        self.knowledge = found.knowledge(list(stored.values()),
                                         min_patterns=settings.get("min_patterns", 2))
        if self.dry_run or not self.knowledge:
            return
        items = []
        for k in self.knowledge:
            statements = [(("DELETE FROM pattern_strategic_knowledge WHERE knowledge_id = ? "
                           f"AND pattern_id NOT IN ({', '.join('?' * len(k['weights']))})"),
                           [k["knowledge_id"], *k["weights"]])]
            statements += [(("INSERT INTO pattern_strategic_knowledge(pattern_id, knowledge_id, "
                            "contribution_weight) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
                            "contribution_weight = excluded.contribution_weight"),
                            [p, k["knowledge_id"], w]) for p, w in k["weights"].items()]
            items.append(({key: v for key, v in k.items() if key != "weights"}, statements))
        written = {r["knowledge_id"]: r["status"] for r in self._write(
            "knowledge", "knowledge", [(r, s) for r, s in items if self._valid(
                "knowledge", "knowledge", [r])])}
        self.knowledge = [k for k in self.knowledge if k["knowledge_id"] in written]
        for k in self.knowledge:
            k["status"] = written[k["knowledge_id"]]

    # 5. Retention --------------------------------------------------------------------

    def retain(self):
        from .. import compress

        rows = self.db.execute(
            "SELECT v.memory_id, v.memory_type, v.retention_category, "
            "julianday(?) - julianday(v.created_at), p.retention_days, p.archive_after_days "
            "FROM very_long_term_memories v JOIN retention_policies p "
            "ON p.memory_type = v.memory_type WHERE p.retention_days IS NOT NULL "
            "OR p.archive_after_days IS NOT NULL", [self.now]).fetchall()
        statements = []
        for memory_id, kind, category, age, keep, archive in rows:
            age, keep, archive = (stored_number(v) for v in (age, keep, archive))
            if age is None:  # created_at is not a time: its age is unknown
                self._skip("retention", f"vltm {memory_id}", "created_at is not a time")
                continue
            action = "expire" if keep is not None and age >= keep else \
                "archive" if archive is not None and age >= archive else None
            target = {"expire": "expired", "archive": "archived"}.get(action)
            if action is None or category == target or category == "expired":
                continue
            self.retention.append({"memory_id": memory_id, "memory_type": kind,
                                   "action": action, "age_days": round(age, 1),
                                   "from": category, "to": target})
            statements.append((("UPDATE very_long_term_memories SET retention_category = ? "
                               "WHERE memory_id = ?"), [target, memory_id]))
        plan = compress.plan(self.db, embedder=self.embedder, knowledge=False, vltm=True,
                             now=self.now)
        for row in plan.vltm["rows"]:
            self.retention.append({"memory_id": row["memory_id"],
                                   "memory_type": row["memory_type"], "action": "compress",
                                   "age_days": row["age_days"],
                                   "from": f"level {row['from_level']}",
                                   "to": f"level {row['to_level']}"})
        statements += [(compress.SWAP, [old, new, memory_id])
                       for memory_id, old, new in plan.swaps]
        self.compressed = {k: plan.vltm[k] for k in ("bytes_before", "bytes_after")}
        if not self.dry_run and statements:
            write(self.db, [], statements=statements)
            if plan.swaps:  # their new index text: embedded now, outside the lock
                write(self.db, [], embedder=self.embedder)

    # 6. The record -------------------------------------------------------------------

    def record(self, report):
        results = {"operation": OPERATION, "state": "done", **{
            k: report[k] for k in ("processed", "remaining", "merged", "linked", "promoted",
                                   "patterns", "knowledge", "retention", "stopped")},
            "patterns_found": [p["pattern_id"] for p in self.patterns],
            "knowledge_derived": [k["knowledge_id"] for k in self.knowledge],
            "promoted_ids": [p["memory_id"] for p in self.promotions]}
        statements = [runs.finish(self.id, results=results, processed=report["processed"],
                                  patterns=report["patterns"], ratio=report["compression_ratio"],
                                  seconds=report["seconds"])]
        statements += [(("INSERT OR IGNORE INTO consolidation_patterns(consolidation_id, "
                        "pattern_id, extraction_confidence) VALUES (?, ?, ?)"),
                        [self.id, p["pattern_id"], p["confidence_score"]])
                       for p in self.patterns if p.get("status") != "existing"]
        retention = report["retention"]
        statements += runs.metrics(self.id, [
            ("memories_processed", report["processed"], "count"),
            ("memories_remaining", report["remaining"], "count"),
            ("memories_merged", report["merged"], "count"),
            ("memories_linked", report["linked"], "count"),
            ("memories_promoted", report["promoted"], "count"),
            ("patterns_extracted", report["patterns"], "count"),
            ("knowledge_derived", report["knowledge"], "count"),
            ("vltm_compressed", retention["compress"], "count"),
            ("vltm_archived", retention["archive"], "count"),
            ("vltm_expired", retention["expire"], "count"),
            ("compression_ratio", report["compression_ratio"], "ratio"),
            ("processing_time", report["seconds"], "seconds"),
        ])
        return statements


def classify(text):
    """A very-long-term memory type for a text, by its words (first matching CUES entry;
    behavioral_pattern when none matches)."""
    words = set(duplicates.normalized(text).split())
    for kind, cues in CUES:
        if words & set(cues.split()):
            return kind
    return "behavioral_pattern"
