"""Search by words (FTS5 BM25) and by meaning (sqlite-vec), fused by reciprocal rank.

Filters (kind, type, source, time) restrict both candidate lists before they are ranked. The
vector side is a bit-quantized first pass over `doc_bits` re-ranked by exact cosine similarity
from the float vectors, which is what every reported similarity is.
"""

import re
from datetime import datetime

from .db import now, parse_time, transaction
from .errors import InputError
from .index import BLANK
from .schema import SEARCHABLE

KINDS = tuple(SEARCHABLE)
MODES = ("hybrid", "vector", "fts")
INTEGER_KINDS = {k for k, spec in SEARCHABLE.items() if spec["ref"] == "id"}
MAX_TOP_N = 10_000
RRF_K = 60  # the usual reciprocal-rank-fusion constant
SNIPPET = 300
# Common words carry no meaning for BM25 but make an OR query walk huge posting lists.
STOPWORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in "
    "into is it its me my no not of on or our so than that the their them then there these "
    "they this to was we were what when where which who why will with would you your about "
    "know".split())


class Query:
    """One search: the text (or --like item) and the options that shape it."""

    def __init__(self, text=None, *, mode="hybrid", kind="all", type=None, source=None,
                 since=None, until=None, top_n=5, min_similarity=None, like=None):
        for name, value in (("text", text), ("mode", mode), ("kind", kind), ("type", type),
                            ("source", source), ("since", since), ("until", until),
                            ("like", like)):
            if value is not None and not isinstance(value, (str, int) if name == "like" else str):
                raise InputError(f"{name}: must be a string, not {value!r}")
            if isinstance(value, str) and not _encodable(value):
                raise InputError(f"{name}: not valid UTF-8 text")
        if mode not in MODES:
            raise InputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        kinds = KINDS if kind in (None, "all") else tuple(k.strip() for k in kind.split(","))
        for k in kinds:
            if k not in KINDS:
                raise InputError(f"kind: {k!r} is not one of {', '.join(KINDS)}, all")
        if not (text and text.strip()) and like is None:
            raise InputError("give a query text (or --like ID)")
        top_n = _number("top-n", top_n, int)
        if not 1 <= top_n <= MAX_TOP_N:
            raise InputError(f"top-n: must be between 1 and {MAX_TOP_N}")
        if min_similarity is not None:
            min_similarity = _number("min-similarity", min_similarity, float)
            if not -1 <= min_similarity <= 1:
                raise InputError("min-similarity: must be a cosine similarity between -1 and 1")
            if mode == "fts":
                raise InputError("min-similarity needs --mode vector or hybrid "
                                 "(fts has no vectors)")
        self.text, self.mode, self.kinds = text, mode, kinds
        self.like = None if like is None else str(like)
        self.type, self.source, self.top_n = type, source, top_n
        self.since = parse_time(since, field="since") if since else None
        self.until = parse_time(until, field="until") if until else None
        self.min_similarity = min_similarity


def _encodable(text):
    """False for text that cannot be stored or searched: lone surrogates, which is how Python
    carries bytes that are not UTF-8 in a command-line argument."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(name, value, kind):
    """value as an int or float (JSON lines may give "5" or 5); anything else is bad input."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: {value!r} is not a number") from None
    if kind is int and number != float(value):
        raise InputError(f"{name}: {value!r} is not a whole number")
    return number


def fts_terms(text):
    """Any user text as safe FTS5 terms: its words (stopwords dropped), each quoted.

    Quoting makes every operator, bracket, quote or star plain text, so no input can raise
    an FTS5 syntax error. An empty list when the text has no words at all.
    """
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text or "")))
    content = [w for w in words if w not in STOPWORDS] or words
    return ['"' + w.replace('"', '""') + '"' for w in content[:32]]


def _filters(q, *, prefix="", epoch=False):
    """The query's filters as SQL conditions (AND-ed, "1" when none) and their parameters.

    epoch: compare times as Unix seconds, as `doc_bits` stores them.
    """
    where, params = [], []
    if q.kinds != KINDS:
        where.append(f"{prefix}kind IN ({', '.join('?' * len(q.kinds))})")
        params.extend(q.kinds)
    for column, op, value in (("type", "=", q.type), ("source", "=", q.source),
                              ("ts", ">=", q.since), ("ts", "<=", q.until)):
        if value is not None:
            where.append(f"{prefix}{column} {op} ?")
            params.append(_epoch(value) if epoch and column == "ts" else value)
    return " AND ".join(where) or "1", params


def _fts(db, q, terms, depth, exclude):
    """[(doc_id, bm25)] best first: the docs holding any of the terms, BM25-ranked."""
    if not terms:
        return []
    where, params = _filters(q, prefix="d.")
    # Without filters the join to `doc` is skipped: it doubles the cost of a broad query.
    # With them, CROSS JOIN keeps the full-text match first (a plain JOIN let the planner
    # walk every doc of a kind and probe the index per row: 350 ms against 1.6 ms).
    source = "" if where == "1" else "CROSS JOIN doc d ON d.id = doc_fts.rowid "
    return db.execute(
        f"SELECT doc_fts.rowid, bm25(doc_fts) AS score FROM doc_fts {source}"
        f"WHERE doc_fts MATCH ? AND {where} AND doc_fts.rowid != ? ORDER BY score LIMIT ?",
        [" OR ".join(terms), *params, exclude, depth]).fetchall()


def _covering(db, words, terms):
    """The word matches that hold at least half of the query's terms.

    In hybrid mode this keeps one incidental shared word ("person", "release") from
    out-voting the meaning of a query phrased in other words.
    """
    if len(terms) < 2 or not words:
        return words
    ids = [doc_id for doc_id, _ in words]
    held = dict.fromkeys(ids, 0)
    marks = ", ".join("?" * len(ids))
    for term in terms:
        for (doc_id,) in db.execute(
                f"SELECT rowid FROM doc_fts WHERE doc_fts MATCH ? AND rowid IN ({marks})",
                [term, *ids]):
            held[doc_id] += 1
    return [(doc_id, score) for doc_id, score in words if 2 * held[doc_id] >= len(terms)]


def _epoch(stamp):
    return int(datetime.fromisoformat(stamp).timestamp())


def _knn(db, q, vector, depth, exclude):
    """Nearest docs by exact cosine similarity: a pass over the SimHash signatures in
    `doc_bits` (oversampled), re-ranked with the float vectors. Returns [(doc_id, similarity)].
    """
    from .index import signature

    where, params = _filters(q, epoch=True)
    # vec0's cost grows with k: ask for what recall needs, no more (measured at 100k real
    # sentences: 40 candidates give recall@10 0.965, 50 give 0.975, 30 only 0.94).
    candidates = min(4096, max(40, depth * 2))
    ids = [r[0] for r in db.execute(
        f"SELECT doc_id FROM doc_bits WHERE embedding MATCH vec_quantize_binary(?) AND k = ? "
        f"AND {where}", [signature(vector[None])[0].tobytes(), candidates, *params]).fetchall()
        if r[0] != exclude]
    sims = _similarities(db, ids, vector, q)
    return sorted(sims.items(), key=lambda item: -item[1])[:depth]


def _similarities(db, doc_ids, vector, q=None):
    """{doc_id: cosine similarity} for the docs that have a vector (and pass q's filters).

    The signatures in `doc_bits` may lag behind a row that a plain SQL client changed or
    deleted: the vector and the filters are read from `doc` and `doc_vec`, which never lag.
    """
    import numpy as np

    if not doc_ids:
        return {}
    where, params = _filters(q, prefix="d.") if q else ("1", [])
    found = db.execute(
        f"SELECT v.doc_id, v.embedding FROM doc_vec v JOIN doc d ON d.id = v.doc_id "
        f"WHERE v.doc_id IN ({', '.join('?' * len(doc_ids))}) AND {where}",
        [*doc_ids, *params]).fetchall()
    if not found:
        return {}
    matrix = np.frombuffer(b"".join(blob for _, blob in found), dtype=np.float32)
    scores = matrix.reshape(len(found), -1) @ vector
    return {doc_id: float(s) for (doc_id, _), s in zip(found, scores)}


def _like(db, like):
    """The doc behind --like: KIND:ID, or a bare memory id or key."""
    kind, _, ref = str(like).rpartition(":")
    if kind and kind not in KINDS:
        raise InputError(f"like: {kind!r} is not one of {', '.join(KINDS)}")
    if not kind:
        row = db.execute("SELECT id FROM memory WHERE CAST(id AS TEXT) = ? OR key = ? "
                         "ORDER BY key = ? DESC LIMIT 1", [ref, ref, ref]).fetchone()
        kind, ref = "memory", str(row[0]) if row else ref
    doc = db.execute("SELECT id, text FROM doc WHERE kind = ? AND ref = ?", [kind, ref]).fetchone()
    if doc is None:
        raise InputError(f"like: no stored {kind} with id {ref!r}")
    return doc


def search(db, q, *, embedder=None, touch=True):
    """Run one Query; returns result dicts, best first.

    Each result: kind, id, key (memories), text (a snippet for long text), type, source,
    timestamp, score, and its parts: bm25 and bm25_rank (words), similarity and vector_rank
    (meaning; similarity is true cosine similarity).
    """
    uses_vectors = q.mode != "fts"
    exclude, text, vector = -1, q.text, None
    if q.like is not None:
        exclude, like_text = _like(db, q.like)
        text = text or like_text
        if uses_vectors:
            import numpy as np

            blob = db.execute("SELECT embedding FROM doc_vec WHERE doc_id = ?",
                              [exclude]).fetchone()
            if blob is None and not like_text.strip(BLANK):
                raise InputError(f"like: {q.like} has no text to compare")
            if blob is None:
                raise InputError(f"like: {q.like} has no vector yet: run `ravana-db reindex`")
            vector = np.frombuffer(blob[0], dtype=np.float32)
    elif uses_vectors:
        from .index import check_model

        if embedder is None:
            raise InputError("this mode needs an embedding model")
        if check_model(db, embedder):  # else nothing has been embedded yet
            vector = embedder.embed([text])[0]

    depth = max(20, q.top_n * 2)
    terms = fts_terms(text)
    words = _fts(db, q, terms, depth, exclude) if q.mode != "vector" else []
    if q.mode == "hybrid":
        words = _covering(db, words, terms)
    meaning = _knn(db, q, vector, depth, exclude) if vector is not None else []

    bm25_rank = {doc_id: rank for rank, (doc_id, _) in enumerate(words, 1)}
    bm25 = {doc_id: -score for doc_id, score in words}
    vector_rank = {doc_id: rank for rank, (doc_id, _) in enumerate(meaning, 1)}
    similarity = dict(meaning)
    if vector is not None:
        similarity.update(_similarities(db, [d for d in bm25_rank if d not in similarity],
                                        vector))

    def score(doc_id):
        if q.mode == "fts":
            return bm25[doc_id]
        if q.mode == "vector":
            return similarity[doc_id]
        return sum(1 / (RRF_K + ranks[doc_id]) for ranks in (bm25_rank, vector_rank)
                   if doc_id in ranks)

    ids = list(dict.fromkeys([*bm25_rank, *vector_rank]))
    if q.min_similarity is not None:
        ids = [d for d in ids if similarity.get(d, -2) >= q.min_similarity]
    ids = sorted(ids, key=lambda d: -score(d))[:q.top_n]
    results = _describe(db, ids)
    for r in results:
        d = r.pop("doc_id")
        r.update(score=round(score(d), 6), bm25=_round(bm25.get(d)), bm25_rank=bm25_rank.get(d),
                 similarity=_round(similarity.get(d)), vector_rank=vector_rank.get(d))
    if touch:
        _touch(db, results)
    return results


def _round(value):
    return None if value is None else round(value, 6)


def _describe(db, ids):
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


def _touch(db, results):
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
