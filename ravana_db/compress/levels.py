"""Very-long-term memory levels: which memories are due, and each level's stored form.

By its type's retention policy (D = `compress_after_days`), a memory created D days ago or more
is compressed to level 1, 2D to level 2, 4D to level 3; levels 2 and 3 lose detail, so memories
kept for good (`retention_days` NULL) stop at level 1:
  1. lossless: minified, and the structure (keys, numbers, nesting) zlib-compressed where that
     is smaller, the string values kept readable, in order: search sees the very same text;
  2. level 1 of the content without its verbose members (VERBOSE keys, long arrays of numbers);
  3. level 2 with each long prose string cut to its extractive summary.
A level is stored only when it makes the content smaller. The content's `_compressed` member
holds the bookkeeping (and the packed structure), which the search index leaves out.
"""

import base64
import json
import re
import zlib

from ..text import loads, stored_number
from .summary import cut, select, sentences

FIELD_BUDGET = 400  # level 3: prose strings longer than this are summarised to this
MARK = "_compressed"
CODEC = "zlib+base64"
LEVELS = {1: "lossless", 2: "without verbose members", 3: "long text summarised"}
LEVEL_AGE = {1: 1, 2: 2, 3: 4}  # a level's age, in multiples of compress_after_days
VERBOSE = frozenset(
    "raw raw_response raw_output prompt messages transcript stdout stderr log logs trace "
    "traceback stack stack_trace stacktrace debug embedding embeddings vector html".split())
LONG_NUMBERS = 32  # a longer array of numbers (a vector, a series) is verbose
CODE = frozenset("{}[]<>=;#`|\\$_/*")

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


def plan_memories(db, plan, embedder, *, max_level, now):
    """Plan the memories due for a higher level, up to max_level, by their age at now.

    Fills plan.vltm (the report's memory part), plan.swaps (memory_id, stored text, new text)
    and plan.warnings (a memory left as it is, and why).
    """
    part = {"compressed": 0, "levels": {str(level): 0 for level in LEVELS}, "not_smaller": 0,
            "bytes_before": 0, "bytes_after": 0, "rows": []}
    plan.vltm = part
    work = _due(db, plan.warnings, max_level=max_level, now=now)
    shorter = _shorten(work, embedder)
    for index, (memory_id, memory_type, stored, age, target, value, mark, dropped) in \
            enumerate(work):
        summarised = [path for path, _ in strings(value)[1] if (index, path) in shorter]
        if summarised:
            value = _replace(value, {p: shorter[index, p] for p in summarised})
        new = pack(value, level=target,
                   before=stored_number(mark.get("bytes_before"), size(stored)),
                   dropped=_listed(mark.get("dropped")) + dropped,
                   summarised=_listed(mark.get("summarised")) + summarised)
        if size(new) >= size(stored):
            part["not_smaller"] += 1
            continue
        plan.swaps.append((memory_id, stored, new))
        part["compressed"] += 1
        part["levels"][str(target)] += 1
        part["bytes_before"] += size(stored)
        part["bytes_after"] += size(new)
        part["rows"].append({
            "memory_id": memory_id, "memory_type": memory_type, "age_days": round(age, 1),
            "from_level": mark.get("level", 0), "to_level": target,
            "bytes_before": size(stored), "bytes_after": size(new),
            "dropped": dropped, "summarised": summarised})


def _due(db, warnings, *, max_level, now):
    """The memories due, unpacked, their verbose members dropped for levels 2 and 3:
    (memory_id, memory_type, stored, age, target, value, mark, dropped) each."""
    work = []
    for memory_id, memory_type, stored, age, target in db.execute(
            DUE, {"now": now, "max_level": max_level}):
        try:
            value, mark = _unpack(loads(stored))
        except ValueError as e:
            warnings.append(f"memory {memory_id}: left as it is ({e})")
            continue
        dropped = []
        if target >= 2:
            value, dropped = drop_verbose(value)
        work.append((memory_id, memory_type, stored, age, target, value, mark, dropped))
    return work


def _shorten(work, embedder):
    """Level 3: every long prose string of every memory, embedded in one batch and cut to
    its extractive summary. Returns {(index in work, path): shorter string}."""
    long = {}
    for index, (*_, target, value, _, _) in enumerate(work):
        if target == 3:
            for path, text in strings(value)[1]:
                if len(text) > FIELD_BUDGET and _prose(text) and len(sentences(text)) > 1:
                    long[index, path] = sentences(text)
    vectors = iter(embedder.embed([s for parts in long.values() for s in parts])
                   if long else [])
    shorter = {}
    for key, parts in long.items():
        chosen = select([next(vectors) for _ in parts], [len(s) for s in parts],
                        budget=FIELD_BUDGET)
        shorter[key] = " ".join(parts[i] for i in sorted(chosen)) if chosen else \
            cut(" ".join(parts), FIELD_BUDGET)
    return shorter


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
            size(_dumps(value))}
    mark.update({k: list(v) for k, v in (("dropped", dropped), ("summarised", summarised))
                 if v})
    skeleton, found = strings(value)
    packed = {"strings": [s for _, s in found], MARK: {
        **mark, "codec": CODEC,
        "skeleton": base64.b64encode(zlib.compress(_dumps(skeleton).encode(), 9)).decode()}}
    return min(_dumps({**value, MARK: mark}), _dumps(packed), key=size)


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
        texts = iter(content["strings"])
        value = _fill(skeleton, texts)
    except (ValueError, TypeError, KeyError, StopIteration, zlib.error):
        raise ValueError("its packed content cannot be read") from None
    if next(texts, None) is not None:
        raise ValueError("its packed content has more strings than places for them")
    return value, bookkeeping


def _fill(skeleton, texts):
    if isinstance(skeleton, str):
        value = next(texts)
        if not isinstance(value, str):
            raise TypeError("not a string")
        return value
    if isinstance(skeleton, dict):
        return {k: _fill(v, texts) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_fill(v, texts) for v in skeleton]
    return skeleton


def strings(value, path="$"):
    """(value with every string emptied, [(path, string)] in document order: the order of
    SQLite's json_tree, whose strings the search index joins)."""
    if isinstance(value, str):
        return "", [(path, value)]
    found = []
    if isinstance(value, dict):
        skeleton = {}
        for key, item in value.items():
            skeleton[key], more = strings(item, _step(path, key))
            found += more
        return skeleton, found
    if isinstance(value, list):
        skeleton = []
        for index, item in enumerate(value):
            emptied, more = strings(item, f"{path}[{index}]")
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
    if dropped and not any(s.strip() for _, s in strings(result)[1]):
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


def size(text):
    """The size of a text in bytes, as stored (UTF-8)."""
    return len(text.encode())
