"""Search on the server: the files `ravana-db sync` copied into PostgreSQL, asked with the
file's query contract (modes, filters, score parts), across every file or some (--file).

Words are scored by BM25 computed from the `tsv` column (the english configuration's lexemes,
their counts and the documents' lengths in lexemes), with FTS5's formula and constants, so
that a score means what it means on a file; a GIN index finds the matches. Meaning comes from
pgvector's cosine distance through the HNSW index. Both are fused by search.ranking.fuse, the
file's rule.
"""

import math

from ..errors import InputError
from ..search import BM25_DEPTH, BM25_K1
from ..search.query import KINDS, fts_terms
from ..search.ranking import INTEGER_KINDS, NO_IMPORTANCE, SNIPPET, ranked
from ..times import format_time, from_iso
from .connect import Server as Server  # the CLI opens one, then asks search() with it

BM25_B = 0.75  # FTS5's bm25() length normalisation
EF_SEARCH = 200  # HNSW candidates per query: recall@10 0.994 against exact at 100k (bench)
POSTINGS_BUDGET = 5_000  # matches a query scores in full (SQL scores ~50x slower than FTS5)
AVGDL_SAMPLE = 2_000  # docs read to estimate the mean length; exact below this many


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
        words, top = _words(server, q, fts_terms(text), depth=depth, exclude=exclude)
        if vector is None and q.mode != "fts":
            vector = vector_text(embedder.embed([text])[0]) if embedder else None
            if vector is None:
                raise InputError("this mode needs an embedding model")
        meaning = _knn(server, q, vector, depth, exclude) if q.mode != "fts" else []
        similarity = dict(meaning)
        if q.mode != "fts":
            wanted = [d for d, _ in words[:depth] if d not in similarity]
            similarity.update(_similarities(server, wanted, vector))
        return _best(server, q, words=words, meaning=meaning, similarity=similarity,
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
    """[((file_id, doc_id), bm25)] best first, and the query's highest reachable BM25
    (hybrid only), as search._words on a file."""
    if q.mode == "vector" or not terms:
        return [], None
    lexemes = _lexemes(server, terms)
    if not lexemes:
        return [], None
    counts, rows, avgdl = _statistics(server, lexemes)
    idf = [max(math.log((rows - n + 0.5) / (n + 0.5)), 1e-6) for n in counts]
    # As on a file (a smaller budget): the rarest terms within the postings budget choose the
    # candidates, every term scores them.
    kept, postings = [], 0
    for i in sorted(range(len(lexemes)), key=lambda i: counts[i]):
        postings += counts[i]
        if kept and postings > POSTINGS_BUDGET:
            break
        kept.append(lexemes[i])
    where, params = _filters(server, q)
    if exclude is not None:
        where += " AND (d.file_id, d.id) <> (%s, %s)"
        params += list(exclude)
    limit = depth if q.mode == "fts" else BM25_DEPTH
    found = server.conn.execute(
        f"SELECT d.file_id, d.id, ({_BM25}) AS score FROM doc d "
        f"WHERE d.tsv @@ %s::tsquery AND {where} ORDER BY score DESC, d.file_id, d.id LIMIT %s",
        [avgdl, lexemes, idf, _tsquery(kept), *params, limit]).fetchall()
    words = [((file_id, doc_id), -score) for file_id, doc_id, score in found]
    top = (BM25_K1 + 1) * sum(idf) if q.mode == "hybrid" else None
    return words, top


# A doc's length: its distinct lexemes (length(), read from the tsvector's header; counting
# positions as FTS5 counts tokens costs an unnest per doc, most of a query's time).
_LENGTH = "greatest(length(d.tsv), 1)"
# A doc's BM25 over the query's lexemes (parameters: the mean doc length, the lexemes, their
# IDF): a lexeme's count in a doc is the length of its positions.
_BM25 = f"""SELECT coalesce(sum(t.idf * u.tf * {BM25_K1 + 1} / (u.tf + {BM25_K1} * (
        {1 - BM25_B} + {BM25_B} * l.n / %s))), 0)
    FROM (SELECT lexeme, coalesce(array_length(positions, 1), 1) AS tf FROM unnest(d.tsv)) u
    JOIN unnest(%s::text[], %s::float8[]) t(lexeme, idf) USING (lexeme)
    CROSS JOIN (SELECT {_LENGTH} AS n) l"""


def _lexemes(server, terms):
    """The query's FTS terms as the server's lexemes (english: stemmed, its stopwords
    dropped), each once, in the order of the words."""
    words = [t[1:-1].replace('""', '"') for t in terms]
    found = server.conn.execute(
        "SELECT v.lexeme FROM unnest(%s::text[]) WITH ORDINALITY w(word, n), "
        "unnest(to_tsvector('english', w.word)) v ORDER BY w.n", [words]).fetchall()
    return list(dict.fromkeys(lexeme for (lexeme,) in found))


def _tsquery(lexemes):
    """Lexemes, OR-ed, as tsquery text (each quoted, so none is read as an operator)."""
    return " | ".join("'" + x.replace("\\", "\\\\").replace("'", "''") + "'" for x in lexemes)


def _statistics(server, lexemes):
    """How many docs hold each lexeme, how many docs there are, and their mean length, in
    the chosen files (what bm25() reads from an FTS5 index's statistics). The last two are
    read once per connection (a command): they change only with a sync."""
    corpus, params = _corpus(server)
    # One count per lexeme: a count of an index's matches alone need not read the rows.
    counts = [server.conn.execute(f"SELECT count(*) FROM doc d WHERE d.tsv @@ %s::tsquery "
                                  f"AND {corpus}", [_tsquery([x]), *params]).fetchone()[0]
              for x in lexemes]
    if server.stats is None:
        rows = server.conn.execute(f"SELECT count(*) FROM doc d WHERE {corpus}",
                                   params).fetchone()[0]
        sample = ""
        if rows > AVGDL_SAMPLE:  # a fixed sample: the same mean, so the same scores, each time
            share = min(100.0, 100.0 * AVGDL_SAMPLE / rows)
            sample = f" TABLESAMPLE SYSTEM ({share}) REPEATABLE (1)"
        avgdl = server.conn.execute(f"SELECT avg({_LENGTH}) FROM doc d{sample} WHERE {corpus}",
                                    params).fetchone()[0]
        server.stats = rows, float(avgdl or 1.0)
    return counts, *server.stats


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

