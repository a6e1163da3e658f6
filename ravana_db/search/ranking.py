"""How search orders what its two sides found, and what it returns for each result.

Hybrid fusion is a convex combination, with equal weights, of the two scores each divided by
its theoretical maximum (Bruch, Gai and Ingber, "An Analysis of Fusion Functions for Hybrid
Retrieval", TOIS 2023): cosine similarity (at most 1, negatives count as 0) and BM25 over the
highest BM25 the query can reach, (k1 + 1) times the sum of its terms' IDF (the term upper
bound of MaxScore and WAND). A document holding one incidental word of a long query thus
scores a small part of the words' half, while rank fusion would give it a full first place.

Opt-in ranking terms (Park et al., "Generative Agents", 2023): with --recency or --importance,
the score is the relevance (the fused score scaled to 0..1 over the candidates) plus
0.5^(age / half-life) plus weight x importance.
"""

import math
from datetime import datetime, timezone

from ..db import transaction
from ..tables import SEARCHABLE
from ..times import from_iso, now
from ..vectors import decode

INTEGER_KINDS = {k for k, spec in SEARCHABLE.items() if spec["ref"] == "id"}
NO_IMPORTANCE = 0.5  # what --importance counts for kinds that have none (a memory's default)
SNIPPET = 300


def best(db, q, *, words, meaning, similarity, depth, top):
    """The q.top_n best results, best first (see search.search for what each holds); the
    arguments are ranked()'s."""
    ids, parts = ranked(q, words=words, meaning=meaning, similarity=similarity, depth=depth,
                        top=top, terms=lambda q, score: ranking_terms(db, q, score))
    ids = distinct(db, ids, q.top_n) if q.distinct else ids[:q.top_n]
    results = describe(db, ids)
    for r in results:
        r.update(parts(r.pop("doc_id")))
    return results


def ranked(q, *, words, meaning, similarity, depth, top, terms):
    """The fusion rule, wherever the candidates come from (a file, a server): (keys best
    first, parts) where parts(key) gives a result's score fields.

    Args:
        words: [(key, bm25)] best first, from the word side.
        meaning: [(key, similarity)] best first, from the vector side.
        similarity: {key: cosine similarity} of every candidate that has a vector.
        depth: how many of the words rank (the rest only score the vector side's candidates).
        top: the query's highest reachable BM25 (hybrid), else None.
        terms: terms(q, score) -> {key: {term: value}}, the opt-in ranking terms.
    """
    bm25_rank = {key: n for n, (key, _) in enumerate(words[:depth], 1)}
    bm25 = {key: -score for key, score in words}
    vector_rank = {key: n for n, (key, _) in enumerate(meaning, 1)}
    keys = list(dict.fromkeys([*bm25_rank, *vector_rank]))
    if q.min_similarity is not None:
        keys = [k for k in keys if similarity.get(k, -2) >= q.min_similarity]
    score = fuse(q, keys, bm25=bm25, similarity=similarity, top=top or 1.0)
    terms_of = terms(q, score) if q.half_life or q.importance is not None else {}
    for key, added in terms_of.items():
        score[key] = sum(added.values())

    def parts(key):
        return dict(score=round(score[key], 6), bm25=_round(bm25.get(key)),
                    bm25_rank=bm25_rank.get(key), similarity=_round(similarity.get(key)),
                    vector_rank=vector_rank.get(key),
                    **{k: _round(v) for k, v in terms_of.get(key, {}).items()})

    return sorted(keys, key=lambda k: -score[k]), parts


def distinct(db, ids, n):
    """The first n of ids (best first) less each doc that a merge check (the strict one or
    the second, consolidate.meaning) calls a duplicate of a doc kept before it.

    Only pairs whose cosine reaches meaning.MIN_COSINE are checked (the rest cannot merge),
    and texts longer than meaning.MAX_CHARS only against equal text, so the work stays small.
    """
    import numpy as np

    from ..consolidate import meaning

    texts, vectors = {}, {}
    for chunk in _chunks(ids):
        marks = ", ".join("?" * len(chunk))
        texts.update(db.execute(f"SELECT id, text FROM doc WHERE id IN ({marks})", chunk))
        found = db.execute(
            f"SELECT doc_id, embedding FROM doc_vec WHERE doc_id IN ({marks})", chunk).fetchall()
        vectors.update(zip([d for d, _ in found], decode(b for _, b in found)))
    kept, seen = [], set()
    near_ids, near = [], None  # the kept docs that have a vector, and those vectors
    for d in ids:
        if len(kept) >= n:
            break
        text = texts.get(d)
        if text in seen:
            continue
        vector = vectors.get(d)
        if vector is not None and near_ids and isinstance(text, str) and \
                len(text) <= meaning.MAX_CHARS:
            cosines = near[:len(near_ids)] @ vector
            if any(meaning.duplicate(texts[near_ids[i]], text, similarity=float(cosines[i]))
                   for i in np.flatnonzero(cosines >= meaning.MIN_COSINE)):
                continue
        kept.append(d)
        seen.add(text)
        if vector is not None:
            if near is None:
                near = np.empty((n, len(vector)), dtype=np.float32)
            if len(vector) == near.shape[1]:
                near[len(near_ids)] = vector
                near_ids.append(d)
    return kept


def _chunks(items, size=500):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def fuse(q, ids, *, bm25, similarity, top):
    """{doc_id: score} by q's mode: BM25 (fts), cosine similarity (vector), or both, each over
    its maximum (hybrid)."""
    if q.mode == "fts":
        return {d: bm25[d] for d in ids}
    if q.mode == "vector":
        return {d: similarity[d] for d in ids}
    return {d: (max(similarity.get(d, 0.0), 0.0) + bm25.get(d, 0.0) / top) / 2 for d in ids}


def ranking_terms(db, q, score):
    """{doc_id: {relevance, recency?, importance?}}: the opt-in terms added to each candidate's
    score. relevance is the fused score scaled to 0..1 over the candidates; recency is
    0.5^(age in days / half-life); importance is the weight times the memory's importance or
    the very-long-term memory's importance score (NO_IMPORTANCE for other kinds)."""
    if not score:
        return {}
    low, high = min(score.values()), max(score.values())
    rows = db.execute(
        f"SELECT d.id, d.ts, coalesce(m.importance, v.importance_score) FROM doc d "
        f"LEFT JOIN memory m ON d.kind = 'memory' AND m.id = CAST(d.ref AS INTEGER) "
        f"LEFT JOIN very_long_term_memories v ON d.kind = 'vltm' AND v.memory_id = d.ref "
        f"WHERE d.id IN ({', '.join('?' * len(score))})", list(score)).fetchall()
    today = datetime.now(timezone.utc)
    terms = {}
    for doc_id, ts, importance in rows:
        added = {"relevance": (score[doc_id] - low) / (high - low) if high > low else 1.0}
        if q.half_life:
            age = (today - _aware(ts)).total_seconds() / 86400 if ts else math.inf
            added["recency"] = 0.5 ** (max(age, 0.0) / q.half_life)
        if q.importance is not None:
            value = NO_IMPORTANCE if importance is None else importance
            added["importance"] = q.importance * value
        terms[doc_id] = added
    return terms


def _aware(stamp):
    """A stored time as an aware datetime (stored times are UTC; an odd one counts as old)."""
    try:
        dt = from_iso(stamp)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _round(value):
    return None if value is None else round(value, 6)


def describe(db, ids):
    """A result dict per doc id still stored (its doc_id, kind, id, key, text or snippet, type,
    source, timestamp), in the order given."""
    if not ids:
        return []
    rows = {r[0]: r for r in db.execute(
        f"SELECT d.id, d.kind, d.ref, d.text, d.type, d.source, d.ts, m.key FROM doc d "
        f"LEFT JOIN memory m ON d.kind = 'memory' AND m.id = CAST(d.ref AS INTEGER) "
        f"WHERE d.id IN ({', '.join('?' * len(ids))})", ids)}
    results = []
    for doc_id in ids:
        if doc_id not in rows:  # deleted since it was ranked
            continue
        _, kind, ref, text, type, source, ts, key = rows[doc_id]
        results.append({
            "doc_id": doc_id, "kind": kind, "id": int(ref) if kind in INTEGER_KINDS else ref,
            "key": key, "text": text if len(text) <= SNIPPET else text[:SNIPPET - 1] + "…",
            "type": type, "source": source, "timestamp": ts})
    return results


def mark_accessed(db, results):
    """Memories returned count as accessed, as in the original."""
    memories = [r["id"] for r in results if r["kind"] == "memory"]
    vltm = [r["id"] for r in results if r["kind"] == "vltm"]
    if not (memories or vltm):
        return
    stamp = now()
    with transaction(db):
        for table, column, ids in (("memory", "id", memories),
                                   ("very_long_term_memories", "memory_id", vltm)):
            if ids:
                db.execute(f"UPDATE {table} SET access_count = access_count + 1, "
                           f"last_accessed = ? WHERE {column} IN ({', '.join('?' * len(ids))})",
                           [stamp, *ids])
