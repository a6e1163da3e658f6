"""Search by words (FTS5 BM25) and by meaning (sqlite-vec), fused by score.

Filters (kind, type, source, time) restrict both candidate lists before they are ranked. The
vector side is a bit-quantized first pass over `doc_bits` re-ranked by cosine similarity with
the stored vectors (int8 codes at their own norm, vectors.py), which is what every reported
similarity is.

This module finds the candidates of both sides and runs a search; query.py holds the Query
and its checks, ranking.py the fusion of the two scores and the results.
"""

import functools
import math

from ..db import reader
from ..errors import InputError
from ..index import BLANK
from ..schema import PARTS, bits_code
from ..schema.search_index import TOKENIZE
from ..times import from_iso
from ..vectors import decode as decode_vectors
from ..vectors import one as vector_of
from . import ranking
from .query import KINDS, fts_terms
from .query import Query as Query  # the library asks search() with a Query

BM25_K1 = 1.2  # FTS5's bm25() constant: a term's score is at most idf * (k1 + 1)
KNN_CANDIDATES = 80  # signature candidates re-ranked by cosine, at least (recall@10 0.986 at 100k)
BM25_DEPTH = 1000  # hybrid: a candidate below this BM25 rank counts 0 by words
POSTINGS_BUDGET = 50_000  # postings a query's word side scores in full (see _fts)
BROAD = 0.6  # a filter passing this share of docs filters ranked matches (_ranked)
SHARE_SAMPLE = 256  # docs read to estimate that share


def _filters(q, *, prefix="", bits=False):
    """The query's filters as SQL conditions (AND-ed, "1" when none) and their parameters.

    bits: as `doc_bits` stores them: times as Unix seconds, kind, type and source as their
    schema.bits_code().
    """
    where, params = [], []
    as_stored = bits_code if bits else str
    if q.kinds != KINDS:
        where.append(f"{prefix}kind IN ({', '.join('?' * len(q.kinds))})")
        params.extend(as_stored(kind) for kind in q.kinds)
    for column, op, value in (("type", "=", q.type), ("source", "=", q.source)):
        if value is not None:
            where.append(f"{prefix}{column} {op} ?")
            params.append(as_stored(value))
    for op, value in ((">=", q.since), ("<=", q.until)):
        if value is not None:
            where.append(f"{prefix}ts {op} ?")
            params.append(_epoch(value) if bits else value)
    return " AND ".join(where) or "1", params


def _fts(db, q, terms, depth, exclude, counts=None):
    """[(doc_id, bm25)] best first: the docs holding any of the terms, BM25-ranked.

    counts: how many docs hold each term (document_counts), when the caller has them.
    A query whose terms hold more than POSTINGS_BUDGET postings in all is answered in two
    steps, after anytime ranking with a postings budget (Lin and Trotman, ICTIR 2015): the
    rarest terms within the budget choose the candidates, then every term scores them (the
    cost is in bm25(), per scored posting; matching alone is cheap). Only docs
    that hold nothing but the commonest terms are missed, and they score low anyway.
    """
    if not terms:
        return []
    counts = counts if counts is not None else document_counts(db, terms)[0]
    rarest = sorted(range(len(terms)), key=lambda i: counts[i] or 0)
    kept, postings = [], 0
    for i in rarest:
        postings += counts[i] or 0
        if kept and postings > POSTINGS_BUDGET:
            break
        kept.append(terms[i])
    if len(kept) == len(terms):
        return _ranked(db, q, " OR ".join(terms), exclude, depth, postings)
    ids = [doc_id for doc_id, _ in _ranked(db, q, " OR ".join(kept), exclude,
                                           max(depth, BM25_DEPTH), postings)]
    # `+rowid`: the match runs once and the list filters it (as a constraint, FTS5 would
    # run the match once per listed row).
    return db.execute(
        f"SELECT rowid, bm25(doc_fts) AS score FROM doc_fts WHERE doc_fts MATCH ? "
        f"AND +rowid IN ({', '.join('?' * len(ids))}) ORDER BY score, rowid LIMIT ?",
        [" OR ".join(terms), *ids, depth]).fetchall()


def _ranked(db, q, match, exclude, limit, postings):
    """[(doc_id, bm25)]: the `limit` best docs for an FTS5 match that pass q's filters.

    postings: at least the number of docs that match. Without filters the join to `doc` is
    skipped (it doubles the cost of a broad query). A narrow filter joins each match to its
    doc, the full-text match first (CROSS JOIN: a plain JOIN let the planner walk every doc
    of a kind and probe the index per row, far slower), and ranks what passes. A broad one
    (passing at least BROAD of the docs, by _share) ranks first, keeping the best
    limit / share x 1.25 matches with a bounded sort, and filters those: a join per match
    costs more than it saves when most pass. Too few rows passing, with more matches left,
    and the join answers.
    """
    where, params = _filters(q, prefix="d.")
    rank = "SELECT doc_fts.rowid, bm25(doc_fts) AS score FROM doc_fts"
    match_where = "doc_fts MATCH ? AND doc_fts.rowid != ?"
    if where == "1":
        return db.execute(f"{rank} WHERE {match_where} ORDER BY score, doc_fts.rowid LIMIT ?",
                          [match, exclude, limit]).fetchall()
    share = _share(db, where, params)
    if share >= BROAD:
        best = math.ceil(limit / share * 1.25)
        found = db.execute(
            f"SELECT f.rowid, f.score FROM ({rank} WHERE {match_where} "
            f"ORDER BY score, doc_fts.rowid LIMIT ?) f "
            f"CROSS JOIN doc d ON d.id = f.rowid WHERE {where} ORDER BY f.score, f.rowid LIMIT ?",
            [match, exclude, best, *params, limit]).fetchall()
        if len(found) == limit or postings <= best:
            return found
    return db.execute(f"{rank} CROSS JOIN doc d ON d.id = doc_fts.rowid WHERE {match_where} "
                      f"AND {where} ORDER BY score, doc_fts.rowid LIMIT ?",
                      [match, exclude, *params, limit]).fetchall()


def _share(db, where, params):
    """The share of docs that pass `where` (on `d.`), read from SHARE_SAMPLE ids spread
    evenly over the id range: a lookup each."""
    low, high = db.execute(  # two subqueries: together, min and max scan the table
        "SELECT (SELECT min(id) FROM doc), (SELECT max(id) FROM doc)").fetchone()
    if low is None:
        return 0.0
    ids = sorted({low + (high - low) * i // (SHARE_SAMPLE - 1) for i in range(SHARE_SAMPLE)})
    seen, passed = db.execute(
        f"SELECT count(*), total({where}) FROM doc d WHERE d.id IN ({', '.join('?' * len(ids))})",
        [*params, *ids]).fetchone()
    return passed / seen if seen else 0.0


def document_counts(db, terms):
    """How many docs hold each FTS term (None: a term of no token), read from the index's
    vocabulary, and the row count bm25() divides by. A word of several tokens is a phrase:
    its rarest token counts."""
    if not terms:
        return [], 0
    _query_vocabulary(db)
    conn = db.conn
    words = [t[1:-1].replace('""', '"') for t in terms]
    conn.executemany("INSERT INTO temp.query_words(rowid, text) VALUES (?, ?)",
                     list(enumerate(words)))
    try:
        tokens = conn.execute("SELECT doc, term FROM temp.query_tokens").fetchall()
    finally:
        conn.execute("DELETE FROM temp.query_words")
    counts = [None] * len(terms)
    for i, token in tokens:
        (count,) = conn.execute("SELECT coalesce(max(doc), 0) FROM temp.doc_terms "
                                "WHERE term = ?", [token]).fetchone()
        counts[i] = count if counts[i] is None else min(counts[i], count)
    return counts, _row_count(db)


def bm25_max(db, terms, known=None):
    """The highest BM25 score any document can reach for these FTS terms: (k1 + 1) times the
    sum of their IDF, each computed as FTS5's bm25() does. known: document_counts(db, terms)
    when the caller has it."""
    counts, rows = known or document_counts(db, terms)
    return (BM25_K1 + 1) * sum(max(math.log((rows - n + 0.5) / (n + 0.5)), 1e-6)
                               for n in counts if n is not None)


def _query_vocabulary(db):
    """Per connection: a scratch FTS5 table with doc_fts's tokenizer (to stem query words as
    the index does) and vocabulary views of it and of doc_fts. All TEMP: the file is not
    touched, and a read-only connection can make them."""
    conn = db.conn
    if conn.execute("SELECT 1 FROM temp.sqlite_master WHERE name = 'doc_terms'").fetchone():
        return
    conn.execute("CREATE VIRTUAL TABLE temp.query_words USING fts5("
                 f"text, tokenize='{TOKENIZE}')")
    conn.execute("CREATE VIRTUAL TABLE temp.query_tokens USING fts5vocab("
                 "temp, query_words, 'instance')")
    conn.execute("CREATE VIRTUAL TABLE temp.doc_terms USING fts5vocab(main, doc_fts, 'row')")


def _row_count(db):
    """The number of rows in doc_fts as bm25() counts them: the first varint of FTS5's
    'averages' record, read in O(1) (count(*) walks every row)."""
    row = db.execute("SELECT block FROM doc_fts_data WHERE id = 1").fetchone()
    value = 0
    for byte in (row[0] if row and row[0] else b"")[:8]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value
    return db.execute("SELECT count(*) FROM doc").fetchone()[0]


def _epoch(stamp):
    return int(from_iso(stamp).timestamp())


def _knn(db, q, vector, depth, exclude):
    """Nearest docs by exact cosine similarity: a pass over the SimHash signatures in
    `doc_bits` (oversampled), re-ranked with the float vectors. Returns [(doc_id, similarity)].
    """
    from ..index import signature

    # Each candidate's float vector is read to re-rank it: ask for what recall needs, no more
    # (past KNN_CANDIDATES, more candidates add little recall and cost a read each).
    candidates = min(4096, max(KNN_CANDIDATES, depth * 2))
    bits = signature(vector[None])[0].tobytes()
    where, params = _filters(q, bits=True)
    found = _nearest(db, bits, candidates, where, params)
    sims = _similarities(db, [d for d, _ in found if d != exclude], vector, q)
    return sorted(sims.items(), key=lambda item: -item[1])[:depth]


def _nearest(db, bits, k, where="1", params=()):
    """[(doc_id, Hamming distance)] of the k signatures nearest to bits that pass `where`,
    nearest first; exact.

    vec0 selects each chunk's k nearest in O(k) passes over the chunk, slower still under a
    filter; a bound on the distance leaves it almost nothing to select.
    The bound comes from a sample: partition 0 holds a random 1/PARTS of the rows, so its
    j-th nearest lies at rank k or later of the whole with probability P(Bin(k-1, 1/PARTS)
    < j), which sample_rank makes at least 99%. The query bounded by that distance finds k
    rows and they are the k nearest; in the rare other case the plain query answers.
    """
    j = sample_rank(k)
    probe = _knn_query(db, bits, j, where, params, part=0)
    if len(probe) == j:
        found = _knn_query(db, bits, k, where, params, bound=probe[-1][1])
        if len(found) >= k:
            return found
    return _knn_query(db, bits, k, where, params)


@functools.lru_cache
def sample_rank(k, miss=0.01):
    """The least j for which the j-th nearest of a 1/PARTS sample is nearer than the k-th
    nearest of the whole with probability at most miss."""
    n, p, j, tail = k - 1, 1 / PARTS, 0, 1.0  # tail: P(Bin(n, p) >= j)
    while tail > miss:
        tail -= math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                         + j * math.log(p) + (n - j) * math.log1p(-p))
        j += 1
    return max(j, 1)


def _knn_query(db, bits, k, where, params, *, part=None, bound=None):
    """One vec0 KNN query: the k signatures nearest to bits that pass `where`, in partition
    `part` and within distance `bound` when they are given."""
    for condition, value in (("part = ?", part), ("distance <= ?", bound)):
        if value is not None:
            where, params = f"{where} AND {condition}", [*params, value]
    return db.execute(
        f"SELECT doc_id, distance FROM doc_bits WHERE embedding MATCH vec_quantize_binary(?) "
        f"AND k = ? AND {where}", [bits, k, *params]).fetchall()


def _similarities(db, doc_ids, vector, q=None):
    """{doc_id: cosine similarity} for the docs that have a vector (and pass q's filters).

    The signatures in `doc_bits` may lag behind a row that a plain SQL client changed or
    deleted: the vector and the filters are read from `doc` and `doc_vec`, which never lag.
    """
    if not doc_ids:
        return {}
    # `+d.`: the listed rows are looked up by id; a plain `d.kind IN (...)` let the planner
    # walk every doc of the kind in its index instead.
    where, params = _filters(q, prefix="+d.") if q else ("1", [])
    found = db.execute(
        f"SELECT v.doc_id, v.embedding FROM doc_vec v JOIN doc d ON d.id = v.doc_id "
        f"WHERE v.doc_id IN ({', '.join('?' * len(doc_ids))}) AND {where}",
        [*doc_ids, *params]).fetchall()
    if not found:
        return {}
    scores = decode_vectors((blob for _, blob in found), len(vector)) @ vector
    return {doc_id: float(s) for (doc_id, _), s in zip(found, scores)}


def search(db, q, *, embedder=None, touch=True):
    """Run one Query; returns result dicts, best first.

    Each result: kind, id, key (memories), text (a snippet for long text), type, source,
    timestamp, score, and its parts: bm25 and bm25_rank (words), similarity and vector_rank
    (meaning; similarity is true cosine similarity); with --recency or --importance also
    relevance, recency and importance (see ranking.ranking_terms).
    """
    exclude, text, like_text = -1, q.text, None
    if q.like is not None:
        exclude, like_text = _like(db, q.like)
        text = text or like_text
    depth = max(20, q.top_n * 2)
    find_words = functools.partial(_words, q, fts_terms(text), depth=depth, exclude=exclude)
    # Hybrid finds the words on a second connection, in a thread, while this one embeds the
    # query and finds its neighbours (SQLite and the model both release the GIL).
    words_later = _worker().submit(find_words, reader(db)) if q.mode == "hybrid" else None
    vector = _query_vector(db, q, embedder, text=text, exclude=exclude, like_text=like_text)
    meaning = _knn(db, q, vector, depth, exclude) if vector is not None else []
    words, top = words_later.result() if words_later else find_words(db)
    similarity = dict(meaning)
    if vector is not None:  # the word side's candidates are scored by meaning too
        ranked = dict.fromkeys(doc_id for doc_id, _ in words[:depth])
        similarity.update(_similarities(db, [d for d in ranked if d not in similarity], vector))
    results = ranking.best(db, q, words=words, meaning=meaning, similarity=similarity,
                           depth=depth, top=top)
    if touch:
        ranking.mark_accessed(db, results)
    return results


def _words(q, terms, on, *, depth, exclude):
    """[(doc_id, bm25)] and the query's highest reachable BM25 (hybrid only), read on the
    connection `on`. Hybrid reads BM25 deeper than it ranks, to score the vector side's
    candidates by words too (the cost is in matching, not in the LIMIT)."""
    if q.mode == "vector" or not terms:
        return [], None
    known = document_counts(on, terms)
    if q.mode == "fts":
        return _fts(on, q, terms, depth, exclude, known[0]), None
    return _fts(on, q, terms, BM25_DEPTH, exclude, known[0]), bm25_max(on, terms, known)


def _query_vector(db, q, embedder, *, text, exclude, like_text):
    """The vector to search by meaning: the --like doc's own, else the text embedded. None in
    fts mode, or when nothing has been embedded yet."""
    if q.mode == "fts":
        return None
    if q.like is not None:
        blob = db.execute("SELECT embedding FROM doc_vec WHERE doc_id = ?",
                          [exclude]).fetchone()
        if blob is None and not like_text.strip(BLANK):
            raise InputError(f"like: {q.like} has no text to compare")
        if blob is None:
            raise InputError(f"like: {q.like} has no vector yet: run `ravana-db reindex`")
        vector = vector_of(blob[0])
        if not vector.any():  # another client's blob, not a vector: as if it had none
            raise InputError(f"like: {q.like} has no vector yet: run `ravana-db reindex`")
        return vector
    from ..index import check_model

    if embedder is None:
        raise InputError("this mode needs an embedding model")
    if check_model(db, embedder):  # else nothing has been embedded yet
        return embedder.embed([text])[0]
    return None


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


_pool = None


def _worker():
    """The one worker thread that finds a hybrid query's words."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(1, thread_name_prefix="ravana-words")
    return _pool
