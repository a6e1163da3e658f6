"""Search on the server: the files `ravana-db sync` copied into PostgreSQL, asked with the
file's query contract (modes, filters, score parts), across every file or some (--file).

Words are the file's own tokens, scored by FTS5's bm25() over the same statistics and
ranked as the file ranks them (words.py): word search on a server gives the file's results.
Meaning comes from pgvector's cosine distance through the HNSW index. Both are fused by
search.ranking.fuse, the file's rule.
"""

import math

from ..errors import InputError
from ..search.query import KINDS, fts_terms
from ..search.ranking import INTEGER_KINDS, NO_IMPORTANCE, SNIPPET, ranked
from ..times import format_time, from_iso
from . import words
from .connect import Server as Server  # the CLI opens one, then asks search() with it

EF_SEARCH = 200  # HNSW candidates per query: recall@10 0.996 at 100k, 0.986 at 1M (bench)
WORDS_SCHEMA = 2  # the server schema whose `tsv` holds the file's tokens (words.py)


def search(server, q, *, embedder=None):
    """Run one Query on the server; returns result dicts, best first, as search.search does,
    each with the name of the file it came from (`file`). Nothing is written: the server is
    a copy, and a file counts its own memories as accessed."""
    if q.distinct:
        raise InputError("distinct: --distinct reads a file (its merge checks run on the "
                         "file's vectors); on a server it is not offered yet")
    exclude, text = None, q.text
    if q.like is not None:
        exclude, like_text, vector = _like(server, q)
        text = text or like_text
    else:
        vector = None
    depth = max(20, q.top_n * 2)
    with server.conn.transaction():
        found, top, plan = _words(server, q, fts_terms(text), depth=depth, exclude=exclude)
        if vector is None and q.mode != "fts":
            vector = vector_text(embedder.embed([text])[0]) if embedder else None
            if vector is None:
                raise InputError("this mode needs an embedding model")
        meaning = _knn(server, q, vector, depth, exclude) if q.mode != "fts" else []
        similarity = dict(meaning)
        if q.mode != "fts":
            wanted = [d for d, _ in found[:depth] if d not in similarity]
            similarity.update(_similarities(server, wanted, vector))
            # The vector side's candidates get their BM25 too, as on a file (which reads its
            # word list BM25_DEPTH deep for them).
            listed = {key for key, _ in found}
            found += words.scores(server, plan, [k for k, _ in meaning if k not in listed])
        return _best(server, q, words=found, meaning=meaning, similarity=similarity,
                     depth=depth, top=top)


def _filters(server, q):
    """The query's filters (and the --file choice) as SQL over `d`, and their parameters."""
    where, params = [], []
    if server.file_ids is not None:
        where.append("d.file_id = ANY(%s)")
        params.append(server.file_ids)
    if q.kinds != KINDS:
        where.append("d.kind = ANY(%s)")
        params.append(list(q.kinds))
    for column, op, value in (("type", "=", q.type), ("source", "=", q.source),
                              ("ts", ">=", q.since), ("ts", "<=", q.until)):
        if value is not None:
            where.append(f"d.{column} {op} %s")
            params.append(from_iso(value) if column == "ts" else value)
    return " AND ".join(where) or "true", params


def _corpus(server):
    """The docs BM25 counts in (the chosen files, every kind, as a file counts all of its
    docs), as SQL over `d`, and its parameters."""
    if server.file_ids is None:
        return "true", []
    return "d.file_id = ANY(%s)", [server.file_ids]


def _words(server, q, terms, *, depth, exclude):
    """[((file_id, doc_id), bm25)] best first, the query's highest reachable BM25 (hybrid
    only) and the words.Plan: words.search, as search._words on a file."""
    if q.mode != "vector" and terms and server.version < WORDS_SCHEMA:
        raise InputError(f"{server.masked_url} has ravana-db schema version {server.version}, "
                         "older than this ravana-db's word search: run `ravana-db sync` to "
                         "upgrade it")
    where, params = _filters(server, q)
    if exclude is not None:
        where += " AND (d.file_id, d.id) <> (%s, %s)"
        params += list(exclude)
    corpus, corpus_params = _corpus(server)
    return words.search(server, q, terms, depth=depth, where=where, params=params,
                        corpus=corpus, corpus_params=corpus_params)


def vector_text(vector):
    """A vector as pgvector's text form."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _knn(server, q, vector, depth, exclude):
    """[((file_id, doc_id), similarity)]: the docs nearest by cosine, through the HNSW index.

    pgvector filters what the index returns: a filter that leaves fewer than `depth` of its
    ef_search candidates is answered exactly instead (the filter's own index, every vector
    that passes compared)."""
    where, params = _filters(server, q)
    if exclude is not None:
        where += " AND (d.file_id, d.id) <> (%s, %s)"
        params += list(exclude)
    server.conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, depth)}")
    sql = (f"SELECT d.file_id, d.id, 1 - (d.embedding <=> %s::vector) FROM doc d "
           f"WHERE d.embedding IS NOT NULL AND {where} ORDER BY {{}} LIMIT %s")
    found = server.conn.execute(sql.format("d.embedding <=> %s::vector"),
                                [vector, *params, vector, depth]).fetchall()
    if len(found) < depth and where != "true":
        # `+ 0`: not the index's ordering, so no index scan: exact, over what passes.
        found = server.conn.execute(sql.format("(d.embedding <=> %s::vector) + 0, d.id"),
                                    [vector, *params, vector, depth]).fetchall()
    return [((file_id, doc_id), float(sim)) for file_id, doc_id, sim in found]


def _similarities(server, keys, vector):
    """{(file_id, doc_id): cosine similarity} for the docs that have a vector."""
    if not keys:
        return {}
    found = server.conn.execute(
        "SELECT d.file_id, d.id, 1 - (d.embedding <=> %s::vector) FROM doc d "
        "JOIN unnest(%s::uuid[], %s::bigint[]) k(file_id, id) USING (file_id, id) "
        "WHERE d.embedding IS NOT NULL",
        [vector, [k[0] for k in keys], [k[1] for k in keys]]).fetchall()
    return {(file_id, doc_id): float(sim) for file_id, doc_id, sim in found}


def _best(server, q, *, words, meaning, similarity, depth, top):
    """The q.top_n best results, best first: ranking.ranked's rule and fields, and `file`."""
    keys, parts = ranked(q, words=words, meaning=meaning, similarity=similarity, depth=depth,
                         top=top, terms=lambda q, score: _ranking_terms(server, q, score))
    results = []
    for key, r in _describe(server, keys[:q.top_n]):
        r.update(parts(key))
        results.append(r)
    return results


def _ranking_terms(server, q, score):
    """ranking.ranking_terms on the server: relevance, recency, importance per candidate."""
    from datetime import datetime, timezone

    if not score:
        return {}
    low, high = min(score.values()), max(score.values())
    keys = list(score)
    rows = server.conn.execute(
        "SELECT d.file_id, d.id, d.ts, coalesce(m.importance, v.importance_score) FROM doc d "
        "JOIN unnest(%s::uuid[], %s::bigint[]) k(file_id, id) USING (file_id, id) "
        "LEFT JOIN memory m ON d.kind = 'memory' AND m.file_id = d.file_id "
        "AND m.id = CASE WHEN d.kind = 'memory' THEN d.ref::bigint END "
        "LEFT JOIN very_long_term_memories v ON d.kind = 'vltm' AND v.file_id = d.file_id "
        "AND v.memory_id::text = d.ref",
        [[k[0] for k in keys], [k[1] for k in keys]]).fetchall()
    today = datetime.now(timezone.utc)
    terms = {}
    for file_id, doc_id, ts, importance in rows:
        key = (file_id, doc_id)
        added = {"relevance": (score[key] - low) / (high - low) if high > low else 1.0}
        if q.half_life:
            age = (today - ts).total_seconds() / 86400 if ts else math.inf
            added["recency"] = 0.5 ** (max(age, 0.0) / q.half_life)
        if q.importance is not None:
            value = NO_IMPORTANCE if importance is None else float(importance)
            added["importance"] = q.importance * value
        terms[key] = added
    return terms


def _describe(server, keys):
    """(key, result dict) per doc still on the server, in the order given: the file's name,
    then ranking.describe's fields."""
    if not keys:
        return []
    rows = {(r[0], r[1]): r for r in server.conn.execute(
        "SELECT d.file_id, d.id, f.name, d.kind, d.ref, d.text, d.type, d.source, d.ts, m.key "
        "FROM doc d JOIN unnest(%s::uuid[], %s::bigint[]) k(file_id, id) USING (file_id, id) "
        "JOIN ravana_file f ON f.file_id = d.file_id "
        "LEFT JOIN memory m ON d.kind = 'memory' AND m.file_id = d.file_id "
        "AND m.id = CASE WHEN d.kind = 'memory' THEN d.ref::bigint END",
        [[k[0] for k in keys], [k[1] for k in keys]])}
    found = []
    for key in keys:
        if key not in rows:  # deleted since it was ranked
            continue
        _, _, name, kind, ref, text, type, source, ts, memory_key = rows[key]
        text = text or ""
        found.append((key, {
            "file": name, "kind": kind, "id": int(ref) if kind in INTEGER_KINDS else ref,
            "key": memory_key,
            "text": text if len(text) <= SNIPPET else text[:SNIPPET - 1] + "…",
            "type": type, "source": source,
            "timestamp": format_time(ts) if ts is not None else None}))
    return found


def _like(server, q):
    """The doc behind --like on the server: KIND:ID or a memory id or key, in the chosen
    files; (its key, its text, its vector). One file must hold it (--file says which)."""
    kind, _, ref = str(q.like).rpartition(":")
    if kind and kind not in KINDS:
        raise InputError(f"like: {kind!r} is not one of {', '.join(KINDS)}")
    corpus, params = _corpus(server)
    if kind:
        match, args = "d.kind = %s AND d.ref = %s", [kind, ref]
    else:
        match, args = ("d.kind = 'memory' AND d.ref IN (%s, (SELECT m.id::text FROM memory m "
                       "WHERE m.file_id = d.file_id AND m.key = %s))"), [ref, ref]
    found = server.conn.execute(
        f"SELECT d.file_id, d.id, d.text, d.embedding::text FROM doc d WHERE {match} "
        f"AND {corpus} LIMIT 2", [*args, *params]).fetchall()
    if not found:
        raise InputError(f"like: no stored {kind or 'memory'} with id {ref!r}")
    if len(found) > 1:
        raise InputError(f"like: {q.like} is in several files: name one with --file")
    file_id, doc_id, text, vector = found[0]
    if vector is None and q.mode != "fts":
        raise InputError(f"like: {q.like} has no vector yet: run `ravana-db reindex` on its "
                         "file, then `ravana-db sync`")
    return (file_id, doc_id), text, vector

