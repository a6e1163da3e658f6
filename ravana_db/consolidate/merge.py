"""Step 1's plan: which due memories merge into which, and which look-alikes get a link."""

import json

from ..text import MAX_INTEGER, stored_number, stored_time
from . import duplicates, meaning
from .plan import metadata

# A memory's columns as a JSON object: memory_merge's `before` and `after`, for undo.
BEFORE = ("json_object('merged_into', merged_into, 'importance', importance, 'access_count', "
          "access_count, 'metadata', json(metadata), 'last_accessed', last_accessed)")
NOTE = ("INSERT INTO memory_merge(consolidation_id, memory_id, survivor_id, role, "
        f"reason, before, after) SELECT ?, id, ?, ?, ?, {BEFORE}, '{{}}' "
        "FROM memory WHERE id = ?")
ABSORB = ("UPDATE memory SET importance = max(importance, ?), access_count = "
          f"min(access_count + ?, {MAX_INTEGER}), last_accessed = CASE WHEN last_accessed "
          "IS NULL OR last_accessed < ? THEN ? ELSE last_accessed END, metadata = ? WHERE id = ?")


def by_key(memories, groups=None):
    """{duplicate key: {memory id: memory}}, adding to groups (the first one seen stays)."""
    groups = {} if groups is None else groups
    for memory in memories:
        groups.setdefault(memory["key"], {}).setdefault(memory["id"], memory)
    return groups


def sizes(keyed, merged):
    """The due memories' text bytes, before and after the merges."""
    before = after = 0
    for memory in keyed:
        size = len(memory["text"].encode())
        before += size
        if memory["id"] not in merged:
            after += size
    return before, after


def link(a, b, similarity, reason):
    """A memory_link row between memories a and b (the lower id first)."""
    low, high = sorted((a, b))
    return {"memory_id": low, "related_id": high, "reason": reason,
            "similarity": None if similarity is None else round(similarity, 4)}


def strict(survivor, m):
    """The strict check (duplicates.check) of a member against its group's survivor."""
    return duplicates.check(survivor["text"], m["text"])


def merges(groups, *, apart, absorbed, run_id, skipped, check=strict):
    """Each group of same-key memories (less those kept apart) merged into its most detailed
    member, where the check agrees.

    Args:
        apart: memory ids never to merge again (read.kept_apart).
        absorbed: {memory id: [ids merged into it by earlier runs]} (read.absorbed).
        check: (survivor, member) -> (same, reason): strict, or by_meaning(vectors).

    Returns:
        (merges, links, units, merged): the report's merges; links between same-key
        memories the check tells apart; (survivor id, statements) to write; merged ids.
    """
    out, links, units, merged = [], [], [], set()
    for group in groups.values():
        members = [m for m in group.values() if m["id"] not in apart]
        if len(members) < 2:
            continue
        merge, statements = _merge(members, absorbed=absorbed, run_id=run_id, links=links,
                                   skipped=skipped, check=check)
        if merge is not None:
            out.append(merge)
            units.append((merge["survivor"], statements))
            merged.update(merge["merged"])
    return out, links, units, merged


def _merge(members, *, absorbed, run_id, links, skipped, check):
    """(the merge, its statements) for one group, or (None, []) when nothing merges."""
    metas = {}
    for m in members:
        meta = metadata(m, "merge", skipped)
        if meta is not None:
            metas[m["id"]] = meta
    members = [m for m in members if m["id"] in metas]
    if len(members) < 2:
        return None, []

    def detail(m):
        return (len(m["text"].strip()), len(metas[m["id"]]),
                stored_number(m["importance"], 0.0), -m["id"])

    survivor = max(members, key=detail)
    taken, reasons = [], {}
    for m in sorted(members, key=lambda m: m["id"]):
        if m is survivor:
            continue
        same, why = check(survivor, m)
        if same:
            taken.append(m)
            reasons[m["id"]] = why
        else:
            links.append(link(survivor["id"], m["id"], None, why))
    if not taken:
        return None, []
    # Memories merged into a taken memory by an earlier run now point at the survivor.
    moved = [i for m in taken for i in absorbed.get(m["id"], [])]
    merge = {"survivor": survivor["id"], "merged": [m["id"] for m in taken], "moved": moved,
             "reasons": reasons, "text": survivor["text"][:200]}
    return merge, _merge_statements(survivor, taken, merge=merge, metas=metas, run_id=run_id)


def _merge_statements(survivor, taken, *, merge, metas, run_id):
    """The survivor absorbs the taken memories (and those merged into them before); each
    memory's before and after go to memory_merge."""
    meta = dict(metas[survivor["id"]])
    for m in taken:
        for k, v in metas[m["id"]].items():
            meta.setdefault(k, v)
    both = [survivor, *taken]
    importance = max(stored_number(m["importance"], 0.0) for m in both)
    accessed = max((m["last_accessed"] for m in both if stored_time(m["last_accessed"])),
                   default=None)
    reasons, moved = merge["reasons"], merge["moved"]
    out = [(NOTE, [run_id, survivor["id"], "survivor", None, survivor["id"]])]
    for m in taken:
        out.append((NOTE, [run_id, survivor["id"], "merged", reasons[m["id"]], m["id"]]))
        out.append(("UPDATE memory SET merged_into = ? WHERE id = ? AND text = ?",
                    [survivor["id"], m["id"], m["text"]]))
    for i in moved:
        out.append((NOTE, [run_id, survivor["id"], "merged", "moved with its survivor", i]))
        out.append(("UPDATE memory SET merged_into = ? WHERE id = ?", [survivor["id"], i]))
    added = int(min(sum(max(stored_number(m["access_count"], 0), 0) for m in taken),
                    MAX_INTEGER))
    out.append((ABSORB, [importance, added, accessed, accessed,
                         json.dumps(meta, ensure_ascii=False), survivor["id"]]))
    # By primary key: `survivor_id = ?` would walk every row of the run, per merge.
    ids = [survivor["id"], *(m["id"] for m in taken), *moved]
    out.append(((f"UPDATE memory_merge SET after = (SELECT {BEFORE} FROM memory WHERE id = "
                 f"memory_id) WHERE consolidation_id = ? AND memory_id IN "
                 f"({', '.join('?' * len(ids))})"), [run_id, *ids]))
    return out


def link_candidates(ids, sigs, *, due, groups):
    """Pairs (low, high) of memory ids whose signatures share a band (duplicates.band_pairs),
    in a bucket with a due memory, and not of the same duplicate key.

    Args:
        ids, sigs: the indexed memories and their signatures (read.memory_signatures).
        due: the due memories' ids.
        groups: the run's same-key groups (by_key).
    """
    import numpy as np

    bits = np.frombuffer(b"".join(sigs), dtype=np.uint8).reshape(len(ids), -1)
    pairs = duplicates.band_pairs(bits, due=np.isin(np.array(ids), due))
    same_key = {m: k for k, g in groups.items() for m in g}
    out = set()
    for i, j in pairs:
        a, b = sorted((ids[i], ids[j]))
        if same_key.get(a) is None or same_key.get(a) != same_key.get(b):
            out.add((a, b))
    return out


def look_alikes(pairs, *, texts, vectors, linked, threshold, by_meaning=True):
    """The candidate pairs whose cosine reaches threshold and that the strict check tells
    apart (a pair already in linked is left out): those the second check (meaning.check)
    calls the same, to merge, and links for the others.

    Returns:
        (links, same): same is [(a, b)] for meaning_groups.
    """
    out, same = [], []
    for a, b in sorted(pairs):
        if a not in vectors or b not in vectors or (a, b) in linked:
            continue
        similarity = float(vectors[a] @ vectors[b])
        if similarity < threshold:
            continue
        if not isinstance(texts.get(a), str) or not isinstance(texts.get(b), str):
            continue
        duplicate, why = duplicates.check(texts[a], texts[b])
        if duplicate:
            continue
        if by_meaning and meaning.check(texts[a], texts[b], similarity=similarity)[0]:
            same.append((a, b))
        else:
            out.append(link(a, b, similarity, why))
    return out, same


def meaning_groups(same, memories):
    """{root id: {memory id: memory}}: the pairs the second check joined, as connected
    groups of the given memories (a pair with a memory not given is left out)."""
    parent = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in same:
        if a in memories and b in memories:
            parent[root(a)] = root(b)
    groups = {}
    for x in sorted(parent):
        groups.setdefault(root(x), {})[x] = memories[x]
    return groups


def by_meaning(vectors):
    """The second check of a member against its group's survivor, with their cosine; the
    reason is the evidence (meaning.describe), or why not."""
    def check(survivor, m):
        a, b = vectors.get(survivor["id"]), vectors.get(m["id"])
        similarity = -1.0 if a is None or b is None else float(a @ b)
        same, evidence = meaning.check(survivor["text"], m["text"], similarity=similarity)
        return same, meaning.describe(evidence) if same else evidence["rule"]
    return check


def marks(keyed, run_id):
    """(memory id, statements) marking each due memory consolidated by this run (its number
    in the file: the row id of its memory_consolidations row, recorded when it started),
    unless its text changed since it was read."""
    return [(m["id"], [(("UPDATE memory SET dup_key = ?, consolidated_in = (SELECT id FROM "
                         "memory_consolidations WHERE consolidation_id = ?) WHERE id = ? "
                         "AND text = ? AND dup_key IS NULL"),
                        [m["key"], run_id, m["id"], m["text"]])]) for m in keyed]


def link_rows(links, run_id):
    """(memory id, statements) storing each link."""
    return [(link["memory_id"], [(("INSERT OR IGNORE INTO memory_link(memory_id, related_id, "
                                   "similarity, reason, consolidation_id) VALUES "
                                   "(?, ?, ?, ?, ?)"),
                                  [link["memory_id"], link["related_id"],
                                   link["similarity"], link["reason"], run_id])])
            for link in links]
