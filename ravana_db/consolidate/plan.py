"""Steps 2 to 6's plans: plain functions over the rows read, returning what to write.

Step 1's plan is merge.py; the helpers here (skip, metadata, valid) serve every step. Other
clients write the file with plain sqlite3: any type in any column, times that do not parse,
JSON nested too deeply, foreign keys that point nowhere. Such a row is left as it is, skipped
by the step that needs it and reported (appended to `skipped`); it never stops the run (or
every later run: it would still be there).
"""

from datetime import timedelta

from .. import runs
from ..errors import InputError
from ..schema import MEMORY_TYPES
from ..text import MAX_INTEGER, loads, stored_number, stored_time
from . import duplicates
from . import patterns as found

OPERATION = "consolidate"
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


def skip(skipped, step, row, reason):
    """Report a stored row that `step` cannot use."""
    skipped.append({"step": step, "row": row, "reason": str(reason)[:300]})


def metadata(memory, step, skipped):
    """A memory's metadata as a dict, or None (skipped, reported) when it cannot be read."""
    try:
        meta = loads(memory["metadata"] or "{}")
    except (ValueError, TypeError) as e:  # text.DeepJSONError is a ValueError
        skip(skipped, step, f"memory {memory['id']}", f"metadata: {e}")
        return None
    return meta if isinstance(meta, dict) else {}


def valid(kind, step, records, skipped):
    """The records that validate as `kind`; the others skipped and reported."""
    from ..models import KINDS, validate

    out = []
    for record in records:
        try:
            validate(KINDS[kind], record)
            out.append(record)
        except InputError as e:
            skip(skipped, step, f"{kind} {record[IDENTITY[kind]]}", e)
    return out


def promotion(memory, rules, *, now, existing, skipped):
    """A memory's promotion by the highest `promote.*` rule it meets: {memory, memory_id,
    rule, memory_type, strategic_value, retention_category}; None when it meets none, or an
    earlier run promoted it as high (existing: read.promoted)."""
    facts = _facts(memory, now=now, skipped=skipped)
    best = None if facts is None else _best_rule(facts, rules)
    if best is None:
        return None
    vltm_id = found.stable_id("memory", memory["id"])
    if CATEGORY_RANK.get(existing.get(vltm_id), 0) >= \
            CATEGORY_RANK.get(best["retention_category"], 0):
        return None
    return {"memory": memory["id"], "memory_id": vltm_id, **best}


def _facts(memory, *, now, skipped):
    """What the rules look at: kind, strategic value, importance, accesses, age in days; None
    (skipped, reported) when the memory cannot be read."""
    if not isinstance(memory["text"], str):
        skip(skipped, "promote", f"memory {memory['id']}", "text is a blob, not text")
        return None
    created = stored_time(memory["created_at"])
    if created is None:
        skip(skipped, "promote", f"memory {memory['id']}",
             f"created_at: {str(memory['created_at'])[:40]!r} is not a time")
        return None
    meta = metadata(memory, "promote", skipped)
    if meta is None:
        return None
    kind = memory["memory_type"] if memory["memory_type"] in MEMORY_TYPES else \
        meta.get("memory_type") if meta.get("memory_type") in MEMORY_TYPES else \
        classify(memory["text"])
    strategic = meta.get("strategic_value")
    if not isinstance(strategic, (int, float)) or isinstance(strategic, bool) or \
            not 0 <= strategic <= 1:
        strategic = STRATEGIC[kind]
    return {"kind": kind, "strategic": strategic,
            "importance": stored_number(memory["importance"], 0.0),
            "accesses": stored_number(memory["access_count"], 0),
            "age": (now - created) / timedelta(days=1)}


def _best_rule(facts, rules):
    """{rule, memory_type, strategic_value, retention_category} of the rule met with the
    highest retention category, or None."""
    best = None
    for name, rule in rules.items():
        if rule.get("memory_types") and facts["kind"] not in rule["memory_types"]:
            continue
        if facts["importance"] < rule["min_importance"] or \
                facts["strategic"] < rule.get("min_strategic", 0) or \
                facts["age"] < rule.get("min_age_days", 0) or \
                facts["accesses"] < rule.get("min_access", 0):
            continue
        category = rule.get("retention_category", "long_term")
        if best is None or CATEGORY_RANK.get(category, 0) > \
                CATEGORY_RANK.get(best["retention_category"], 0):
            best = {"rule": name, "memory_type": facts["kind"],
                    "strategic_value": facts["strategic"], "retention_category": category}
    return best


def vltm(memory, promotion, run_id):
    """The very-long-term memory record a promotion writes."""
    return {
        "memory_id": promotion["memory_id"], "memory_type": promotion["memory_type"],
        "compressed_content": {"text": memory["text"]},
        "importance_score": stored_number(memory["importance"], 0.0),
        "strategic_value": promotion["strategic_value"],
        "metadata_info": {"memory": memory["id"], "key": memory["key"],
                          "memory_type": memory["memory_type"],
                          "source": memory["source"], "rule": promotion["rule"],
                          "consolidation_id": run_id},
        "source_session": "consolidate", "retention_category": promotion["retention_category"],
        "created_at": memory["created_at"],
        "last_accessed": memory["last_accessed"] if stored_time(
            memory["last_accessed"]) else memory["created_at"],
        "access_count": int(min(max(stored_number(memory["access_count"], 0), 0),
                                MAX_INTEGER))}


def thresholds(settings):
    """(min_support, min_confidence) of the `patterns` policy."""
    return settings.get("min_support", 3), settings.get("min_confidence", 0.6)


def action_patterns(rows, settings, skipped):
    """Behavioral, causal and temporal patterns of the action log's rows (read.actions); a
    row whose timestamp does not parse is skipped."""
    actions = []
    for row_id, ts, name, status in rows:
        if stored_time(ts) is None:
            skip(skipped, "patterns", f"actionlog {row_id}",
                 f"timestamp: {str(ts)[:40]!r} is not a time")
            continue
        actions.append((row_id, ts, str(name), status))
    support, confidence = thresholds(settings)
    results = found.behavioral(actions, min_support=support, min_confidence=confidence)
    results += found.causal(actions, min_support=support, min_confidence=confidence,
                            window_minutes=settings.get("causal_window_minutes", 60))
    results += found.temporal(actions, min_support=support, min_confidence=confidence)
    return results


def vltm_graph(rows, skipped):
    """The very-long-term memories (read.vltm_docs) as {memory_id: (type, text, created_at
    or None)}, and the edges (a, b, 1.0) their related_memories lists make."""
    memories = {r[0]: (r[1], r[3], r[2] if stored_time(r[2]) else None) for r in rows}
    edges = []
    for r in rows:
        try:
            related = loads(r[5]) if isinstance(r[5], str) else []
        except ValueError as e:
            skip(skipped, "patterns", f"vltm {r[0]}", f"related_memories: {e}")
            related = []
        if not isinstance(related, list):
            skip(skipped, "patterns", f"vltm {r[0]}", "related_memories: not a list")
            related = []
        edges += [(min(r[0], other), max(r[0], other), 1.0) for other in related
                  if isinstance(other, str) and other in memories and other != r[0]]
    return memories, edges


def similar(vectors, *, threshold):
    """Edges (a, b, cosine) between the {name: vector} pairs that share a signature band
    (duplicates.band_pairs) and whose cosine reaches threshold."""
    if len(vectors) < 2:
        return []
    import numpy as np

    from ..index import signature

    names = sorted(vectors)
    matrix = np.stack([vectors[n] for n in names])
    bits = np.packbits(signature(matrix) > 0, axis=1)
    edges = []
    for a, b in sorted(duplicates.band_pairs(bits)):
        similarity = float(matrix[a] @ matrix[b])
        if similarity >= threshold:
            edges.append((names[a], names[b], round(similarity, 4)))
    return edges


def stored_patterns(rows, skipped):
    """{pattern_id: pattern} of the stored patterns (read.patterns) that can be read."""
    stored = {}
    for *r, raw in rows:
        if not isinstance(r[0], str) or r[0].encode().hex().upper() != raw:
            # not UTF-8 (read as U+FFFD) or a blob: no row has the id we would write
            skip(skipped, "knowledge", f"pattern {r[0]!r}", "pattern_id is not UTF-8 text")
            continue
        stored[r[0]] = dict(zip(("pattern_id", "pattern_type", "pattern_description",
                                 "confidence_score", "pattern_data", "validation_count"), r))
    for pattern_id, p in list(stored.items()):
        try:
            data = loads(p["pattern_data"])
        except (ValueError, TypeError) as e:
            skip(skipped, "knowledge", f"pattern {pattern_id}", f"pattern_data: {e}")
            del stored[pattern_id]
            continue
        p["pattern_data"] = data if isinstance(data, dict) else {}
        p["confidence_score"] = stored_number(p["confidence_score"], 0.0)
        p["validation_count"] = stored_number(p["validation_count"], 0)
    return stored


PROVENANCE = ("INSERT INTO provenance(from_kind, from_id, to_kind, to_id, relation, run_id) "
              "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


def provenance(to_kind, to_id, sources, *, relation, run_id):
    """Statements recording `to` as made from the sources [(kind, id)] by the run, and no
    longer from others it was made from before (a link already stored keeps its run)."""
    marks = ", ".join("?" * len(sources))
    out = [(("DELETE FROM provenance WHERE to_kind = ? AND to_id = ? AND relation = ? AND "
             f"(from_kind || ':' || from_id) NOT IN ({marks or 'NULL'})"),
            [to_kind, to_id, relation, *(f"{k}:{i}" for k, i in sources)])]
    out += [(PROVENANCE, [kind, str(i), to_kind, to_id, relation, run_id])
            for kind, i in sources]
    return out


def supports(pattern):
    """The (kind, id) rows a pattern counts: log rows (`actionlog:ID`) or very-long-term
    memories."""
    return [("action", s.split(":", 1)[1]) if s.startswith("actionlog:") else ("vltm", s)
            for s in pattern.get("supporting_memories", []) if isinstance(s, str)]


def knowledge_rows(knowledge, run_id=None):
    """(record, statements) of each strategic knowledge: its row, its patterns' weights
    (those no longer among them removed) and its provenance."""
    items = []
    for k in knowledge:
        statements = [(("DELETE FROM pattern_strategic_knowledge WHERE knowledge_id = ? "
                       f"AND pattern_id NOT IN ({', '.join('?' * len(k['weights']))})"),
                       [k["knowledge_id"], *k["weights"]])]
        statements += [(("INSERT INTO pattern_strategic_knowledge(pattern_id, knowledge_id, "
                        "contribution_weight) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
                        "contribution_weight = excluded.contribution_weight"),
                        [p, k["knowledge_id"], w]) for p, w in k["weights"].items()]
        statements += provenance("knowledge", k["knowledge_id"],
                                 [("pattern", p) for p in k["weights"]], relation="derived",
                                 run_id=run_id)
        items.append(({key: v for key, v in k.items() if key != "weights"}, statements))
    return items


def retention(rows, skipped):
    """The archive and expiry the retention policies call for (rows: read.retention): the
    report's entries and the statements."""
    entries, statements = [], []
    for memory_id, kind, category, age, keep, archive in rows:
        age, keep, archive = (stored_number(v) for v in (age, keep, archive))
        if age is None:  # created_at is not a time: its age is unknown
            skip(skipped, "retention", f"vltm {memory_id}", "created_at is not a time")
            continue
        action = "expire" if keep is not None and age >= keep else \
            "archive" if archive is not None and age >= archive else None
        target = {"expire": "expired", "archive": "archived"}.get(action)
        if action is None or category == target or category == "expired":
            continue
        entries.append({"memory_id": memory_id, "memory_type": kind, "action": action,
                        "age_days": round(age, 1), "from": category, "to": target})
        statements.append((("UPDATE very_long_term_memories SET retention_category = ? "
                           "WHERE memory_id = ?"), [target, memory_id]))
    return entries, statements


def compressions(rows):
    """The report's entries for compress.plan's very-long-term rows."""
    return [{"memory_id": row["memory_id"], "memory_type": row["memory_type"],
             "action": "compress", "age_days": row["age_days"],
             "from": f"level {row['from_level']}", "to": f"level {row['to_level']}"}
            for row in rows]


def record(run_id, report, *, patterns, knowledge, promotions):
    """The statements finishing a run's record: its results, patterns and metrics."""
    results = {"operation": OPERATION, "state": "done", **{
        k: report[k] for k in ("processed", "remaining", "merged", "linked", "promoted",
                               "patterns", "knowledge", "retention", "stopped")},
        "patterns_found": [p["pattern_id"] for p in patterns],
        "knowledge_derived": [k["knowledge_id"] for k in knowledge],
        "promoted_ids": [p["memory_id"] for p in promotions]}
    statements = [runs.finish(run_id, results=results, processed=report["processed"],
                              patterns=report["patterns"], ratio=report["compression_ratio"],
                              seconds=report["seconds"])]
    statements += [(("INSERT OR IGNORE INTO consolidation_patterns(consolidation_id, "
                    "pattern_id, extraction_confidence) VALUES (?, ?, ?)"),
                    [run_id, p["pattern_id"], p["confidence_score"]])
                   for p in patterns if p.get("status") != "existing"]
    retention = report["retention"]
    statements += runs.metrics(run_id, [
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
