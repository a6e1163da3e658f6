"""Patterns in the action log and among very-long-term memories, and the strategic knowledge
derived from them: plain functions over rows, no SQL, no writes.

Every pattern has a stable id (a UUID derived from its type and what it is about), so a run
updates the patterns an earlier run found instead of adding them again, and the same data
always gives the same rows.
"""

import uuid
from collections import Counter, defaultdict
from datetime import timedelta

from ..text import stored_number, stored_time

NAMESPACE = uuid.UUID("5b0b7a4e-3f0e-4c1e-9a51-7a7661616e61")
SESSION_GAP = timedelta(hours=1)  # actions further apart belong to different sequences
MAX_SUPPORTING = 100  # supporting rows listed per pattern (pattern_data has the counts)
DOMAINS = {"behavioral": "workflow", "causal": "recovery", "temporal": "scheduling",
           "performance": "performance"}
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def stable_id(*parts):
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(map(str, parts))))


def _time(text):
    """An action's timestamp (the caller keeps only actions whose timestamp parses)."""
    return stored_time(text)


def _pattern(kind, about, description, confidence, support, rows, data, last):
    return {"pattern_id": stable_id(kind, *about), "pattern_type": kind,
            "pattern_description": description, "confidence_score": round(confidence, 4),
            "supporting_memories": [f"actionlog:{r}" for r in rows[:MAX_SUPPORTING]],
            "validation_count": support, "last_validated": last,
            "pattern_data": {"support": support, **data}}


def behavioral(actions, *, min_support, min_confidence):
    """Recurring sequences of 2 to 4 actions, each step within SESSION_GAP of the one before.

    actions: [(id, timestamp, action_name, status)] in time order. Confidence is how often the
    sequence's first steps go on to its last (support of the sequence / support of its prefix
    followed by any action); the success rate is the share of occurrences in which every step
    succeeded. Only closed sequences are kept: none that a longer one with the same support
    contains.
    """
    runs, current = [], []
    for row in actions:
        if current and _time(row[1]) - _time(current[-1][1]) > SESSION_GAP:
            runs.append(current)
            current = []
        current.append(row)
    if current:
        runs.append(current)
    found = defaultdict(list)  # names -> [rows of one occurrence]
    continued = Counter()  # prefix names -> occurrences followed by another action
    for run in runs:
        for n in range(2, 5):
            for start in range(len(run) - n + 1):
                part = run[start:start + n]
                found[tuple(r[2] for r in part)].append(part)
        for n in range(1, 4):
            for start in range(len(run) - n):
                continued[tuple(r[2] for r in run[start:start + n])] += 1
    kept = {}
    for names, occurrences in found.items():
        support = len(occurrences)
        confidence = support / continued[names[:-1]]
        if support < min_support or confidence < min_confidence:
            continue
        success = sum(all(r[3] == "success" for r in o) for o in occurrences) / support
        rows = [r[0] for o in occurrences for r in o]
        kept[names] = _pattern(
            "behavioral", names,
            f"{' -> '.join(names)}: seen {support} times; {names[-1]} follows "
            f"{confidence:.0%} of the time; all steps succeed {success:.0%} of the time",
            confidence, support, sorted(set(rows)),
            {"sequence": list(names), "success_rate": round(success, 4)},
            max(r[1] for o in occurrences for r in o))
    return [p for names, p in sorted(kept.items()) if not any(
        len(other) == len(names) + 1 and p["validation_count"] == q["validation_count"]
        and (other[1:] == names or other[:-1] == names) for other, q in kept.items())]


def _related(a, b):
    """Actions are related when they share a word of their names (retry, or a fallback of
    the same thing: fetch_feed / fetch_feed_cached)."""
    return a == b or bool(_words(a) & _words(b) - {""})


def _words(name):
    return set(name.replace("-", "_").replace(".", "_").lower().split("_"))


def causal(actions, *, min_support, min_confidence, window_minutes):
    """A failure of an action followed, within the window, by a success of a related action.

    Confidence: the share of that action's failures followed by that recovery.
    """
    window = timedelta(minutes=window_minutes)
    failures, pairs = Counter(), defaultdict(list)
    for i, (row_id, ts, name, status) in enumerate(actions):
        if status != "failure":
            continue
        failures[name] += 1
        start = _time(ts)
        for later_id, later_ts, later, later_status in actions[i + 1:]:
            if _time(later_ts) - start > window:
                break
            if later_status == "success" and _related(name, later):
                pairs[name, later].append((row_id, later_id, later_ts))
                break
    found = []
    for (failed, recovered), hits in sorted(pairs.items()):
        confidence = len(hits) / failures[failed]
        if len(hits) < min_support or confidence < min_confidence:
            continue
        how = "a retry of it" if failed == recovered else recovered
        found.append(_pattern(
            "causal", (failed, recovered),
            f"after {failed} fails, {how} succeeds within {window_minutes} minutes "
            f"({len(hits)} of {failures[failed]} failures)",
            confidence, len(hits), sorted({r for h in hits for r in h[:2]}),
            {"failed": failed, "recovered_by": recovered, "failures": failures[failed],
             "window_minutes": window_minutes}, max(h[2] for h in hits)))
    return found


def temporal(actions, *, min_support, min_confidence):
    """Periodic activity: an action at the same hour (UTC) on most days of its span, or, for
    actions without a daily rhythm, on the same weekday in most weeks of its span."""
    by_name = defaultdict(list)
    for row_id, ts, name, _ in actions:
        by_name[name].append((row_id, _time(ts), ts))
    found = []
    for name, rows in sorted(by_name.items()):
        first, last = rows[0][1].date(), rows[-1][1].date()
        days = (last - first).days + 1
        hours = defaultdict(set)
        for _, t, _ in rows:
            hours[t.hour].add(t.date())
        daily = False
        for hour, dates in sorted(hours.items()):
            confidence = len(dates) / days
            if len(dates) >= min_support and confidence >= min_confidence:
                daily = True
                hits = [r for r in rows if r[1].hour == hour]
                found.append(_pattern(
                    "temporal", (name, "daily", hour),
                    f"{name} runs daily around {hour:02d}:00 UTC (on {len(dates)} of {days} "
                    f"days)", confidence, len(dates), [r[0] for r in hits],
                    {"action": name, "period": "daily", "hour_utc": hour, "days": days},
                    hits[-1][2]))
        if daily:
            continue
        weeks = (last - first).days // 7 + 1
        weekdays = defaultdict(set)
        for _, t, _ in rows:
            weekdays[t.weekday()].add(t.isocalendar()[:2])
        for day, seen in sorted(weekdays.items()):
            confidence = len(seen) / weeks
            if len(seen) >= min_support and confidence >= min_confidence and weeks >= 2:
                hits = [r for r in rows if r[1].weekday() == day]
                found.append(_pattern(
                    "temporal", (name, "weekly", day),
                    f"{name} runs on {WEEKDAYS[day]}s (in {len(seen)} of {weeks} weeks)",
                    min(confidence, 1.0), len(seen), [r[0] for r in hits],
                    {"action": name, "period": "weekly", "weekday": WEEKDAYS[day],
                     "weeks": weeks}, hits[-1][2]))
    return found


def structural(memories, edges, *, min_support, min_confidence):
    """Clusters of related very-long-term memories: connected components of the edges (pairs
    similar enough, or listed in related_memories) with at least min_support members.

    memories: {memory_id: (memory_type, text, created_at)}; edges: [(a, b, similarity)].
    Confidence: the mean similarity of the cluster's edges.
    """
    parent = {}

    def root(x):
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for a, b, _ in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    clusters = defaultdict(set)
    for a, b, _ in edges:
        clusters[root(a)].update((a, b))
    weights = defaultdict(list)
    for a, _, similarity in edges:
        weights[root(a)].append(similarity)
    found = []
    for top, members in sorted(clusters.items()):
        members = sorted(m for m in members if m in memories)
        if len(members) < min_support:
            continue
        confidence = sum(weights[top]) / len(weights[top])
        if confidence < min_confidence:
            continue
        degree = Counter(x for a, b, _ in edges if root(a) == top for x in (a, b))
        center = max(members, key=lambda m: (degree[m], -members.index(m)))
        types = Counter(memories[m][0] for m in members)
        kind = types.most_common(1)[0][0]
        text = " ".join(memories[center][1].split())[:160]
        found.append({
            "pattern_id": stable_id("structural", members[0]), "pattern_type": "structural",
            "pattern_description": f"{len(members)} related {kind.replace('_', ' ')} memories, "
                                   f"such as: {text}",
            "confidence_score": round(min(confidence, 1.0), 4),
            "supporting_memories": members[:MAX_SUPPORTING], "validation_count": len(members),
            "last_validated": max((memories[m][2] for m in members if memories[m][2]),
                                  default=None),
            "source_memory_id": center,
            "pattern_data": {"support": len(members), "memory_types": dict(types),
                             "edges": len(weights[top])}})
    return found


def domain(pattern):
    """The knowledge domain a pattern informs."""
    if pattern["pattern_type"] == "structural":
        types = pattern["pattern_data"].get("memory_types")
        if not isinstance(types, dict) or not types:
            return "memory"
        return max(sorted(map(str, types)), key=lambda t: stored_number(types.get(t), 0))
    return DOMAINS.get(pattern["pattern_type"], str(pattern["pattern_type"]))


def knowledge(patterns, *, min_patterns, top=10):
    """Strategic knowledge per domain from its patterns (at least min_patterns of them):
    one entry per domain (a stable id: later runs update it), its strongest patterns with
    contribution weights that sum to 1."""
    by_domain = defaultdict(list)
    for p in patterns:
        by_domain[domain(p)].append(p)
    found = []
    for name, group in sorted(by_domain.items()):
        if len(group) < min_patterns:
            continue
        group = sorted(group, key=lambda p: (-p["confidence_score"], p["pattern_id"]))[:top]
        total = sum(p["confidence_score"] for p in group) or 1.0
        weights = {p["pattern_id"]: round(p["confidence_score"] / total, 4) for p in group}
        confidence = sum(p["confidence_score"] * weights[p["pattern_id"]] for p in group)
        title = name.replace("_", " ")
        found.append({
            "knowledge_id": stable_id("knowledge", name), "knowledge_domain": name,
            "knowledge_summary": f"{title[0].upper()}{title[1:]}: " + "; ".join(
                str(p["pattern_description"]) for p in group[:5]) + ".",
            "confidence_level": round(min(confidence, 1.0), 4),
            "source_patterns": [p["pattern_id"] for p in group],
            "knowledge_structure": {"patterns": [
                {"pattern_id": p["pattern_id"], "pattern_type": p["pattern_type"],
                 "confidence": p["confidence_score"], "weight": weights[p["pattern_id"]]}
                for p in group], "pattern_count": len(by_domain[name])},
            "validation_score": round(sum(p["validation_count"] > 0 for p in group) /
                                      len(group), 4),
            "weights": weights})
    return found
