"""Word search on the server, identical to the file's.

Docs hold the file's own tokens (tokens.py). A query's words are tokenized the same way and
scored with FTS5's bm25() formula, constants and order of operations, over the same statistics
(the chosen files' doc and token totals, kept in `ravana_words` by triggers; each token's doc
count from the GIN index), and ranked as the file ranks them: by score, then by id, with the
file's postings budget (search._fts). The exact top is found MaxScore-style: the rarest terms'
docs first, until the terms not yet read cannot reach the current last score.
"""

import heapq
import math

from ..errors import InputError
from ..search import BM25_DEPTH, BM25_K1, POSTINGS_BUDGET
from .tokens import OVER, OVER_BASE, TOKENS_VERSION, counts, decode, lexeme, tokenize

BM25_B = 0.75  # FTS5's bm25() length normalisation


class Plan:
    """A query's words on the server: its phrases (lexemes per FTS term, in the file's order),
    their doc counts as the file counts them (`counts`, None for a term of no token), the
    idf bm25() gives each, and the corpus (docs, mean length)."""

    def __init__(self, phrases, counts, idf, rows, avgdl):
        self.phrases, self.counts, self.idf = phrases, counts, idf
        self.rows, self.avgdl = rows, avgdl
        self.lexemes = list(dict.fromkeys(y for p in phrases for x in p for y in (x, x + OVER)))
        self.kept = None  # the phrases that chose the docs, when the budget split the query

    def freqs(self, tsv):
        """Each phrase's occurrences in a doc whose (filtered) tsvector is tsv."""
        if all(len(p) < 2 for p in self.phrases):  # no phrase: counts alone
            found = counts(tsv)
            return [found.get(p[0], 0) if p else 0 for p in self.phrases]
        positions = decode(tsv)
        return [_occurrences(p, positions) for p in self.phrases]

    def score(self, freqs, tokens, which):
        """bm25() of a doc over the phrases `which`, summed in their order as FTS5 sums (its
        terms computed as FTS5 computes them: the same doubles)."""
        k1, b, score, idf = BM25_K1, BM25_B, 0.0, self.idf
        length = float(tokens or 0)
        norm = k1 * (1 - b + b * length / self.avgdl)
        for i in which:
            score += idf[i] * ((freqs[i] * (k1 + 1.0)) / (freqs[i] + norm))
        return score


def _occurrences(phrase, positions):
    first = positions.get(phrase[0]) if phrase else None
    if not first:
        return 0
    if len(phrase) == 1:
        over = positions.get(phrase[0] + OVER)
        return len(first) if not over else (over[0] - 1) * OVER_BASE + over[1] - OVER_BASE
    rest = [set(positions.get(x, ())) for x in phrase[1:]]
    return sum(all(p + k in s for k, s in enumerate(rest, 1)) for p in first)


def tsquery(phrases):
    """Phrases (tuples of lexeme bytes), OR-ed, as tsquery text: each lexeme quoted, the
    tokens of a phrase joined by <->."""
    def quoted(x):
        return "'" + x.decode().replace("\\", "\\\\").replace("'", "''") + "'"
    return " | ".join("(" + " <-> ".join(quoted(x) for x in p) + ")" for p in phrases)


def plan(server, terms, corpus, params):
    """The Plan of the FTS terms (search.query.fts_terms) over the docs of `corpus` (SQL on
    `d`, the chosen files), or None when none of the chosen files has a doc."""
    words = [t[1:-1].replace('""', '"') for t in terms]
    phrases = [tuple(lexeme(token) for _, token in sorted(
        (o, token) for token, offsets in found.items() for o in offsets))
        for found, _ in tokenize(words)]
    on = corpus.replace("d.", "w.")
    rows, tokens, current = server.conn.execute(
        f"SELECT coalesce(sum(docs), 0)::int8, coalesce(sum(tokens), 0)::int8, "
        f"coalesce(bool_and(version = %s), true) FROM ravana_words w WHERE {on}",
        [TOKENS_VERSION, *params]).fetchone()
    if not current:
        raise InputError(f"the server's words of a file are older than this ravana-db reads: "
                         f"run `ravana-db sync` for it ({server.masked_url})")
    if not rows:
        return None
    lexemes = list(dict.fromkeys(x for p in phrases for x in p))
    multi = [p for p in dict.fromkeys(phrases) if len(p) > 1]
    asked = [(x,) for x in lexemes] + multi
    found = server.conn.execute("SELECT " + ", ".join(
        f"(SELECT count(*) FROM doc d WHERE d.tsv @@ %s::tsquery AND {corpus})" for _ in asked),
        [v for p in asked for v in (tsquery([p]), *params)]).fetchone() if asked else ()
    count = dict(zip(asked, found))
    counts = [min(count[(x,)] for x in p) if p else None for p in phrases]
    idf = []
    for p in phrases:
        hits = count[p] if p else 0  # a phrase's own count: bm25()'s, not the file's min
        value = math.log((rows - hits + 0.5) / (hits + 0.5))
        idf.append(value if value > 0.0 else 1e-6)
    return Plan(phrases, counts, idf, rows, float(tokens) / float(rows))


def search(server, q, terms, *, depth, where, params, corpus, corpus_params):
    """[((file_id, doc_id), bm25)] best first, as search._words gives on a file (its depth
    best; hybrid adds the vector side's candidates by `scores`), the query's highest reachable
    BM25 (hybrid only) and the Plan."""
    if q.mode == "vector" or not terms:
        return [], None, None
    p = plan(server, terms, corpus, corpus_params)
    if p is None:
        return [], None, None
    top = None
    if q.mode == "hybrid":  # search.bm25_max's formula, on the file's counts
        top = (BM25_K1 + 1) * sum(max(math.log((p.rows - n + 0.5) / (n + 0.5)), 1e-6)
                                  for n in p.counts if n is not None)
    rarest = sorted(range(len(terms)), key=lambda i: p.counts[i] or 0)
    kept, postings = [], 0
    for i in rarest:
        postings += p.counts[i] or 0
        if kept and postings > POSTINGS_BUDGET:
            break
        kept.append(i)
    every = list(range(len(terms)))
    if len(kept) == len(terms):
        found = _best(server, p, every, depth, where, params)
    else:  # the file's two steps: the kept terms choose, every term scores
        chosen = _best(server, p, kept, max(depth, BM25_DEPTH), where, params)
        found = [(key, p.score(freqs, tokens, every), freqs, tokens)
                 for key, _, freqs, tokens in chosen]
        found = sorted(found, key=lambda r: (-r[1], *_order(r[0])))[:depth]
    p.kept = None if len(kept) == len(terms) else kept
    return [(key, -score) for key, score, _, _ in found], top, p


def _best(server, p, which, limit, where, params):
    """[(key, score, freqs, tokens)]: the `limit` best docs by bm25() over the phrases `which`
    among the docs holding any and passing `where`, best first, ties by key (file order).

    MaxScore: the phrases are read rarest first; the docs of none of those read so far score
    at most the sum of the rest's idf x (k1 + 1), so once that cannot reach the limit-th
    score found, the rest are not read. Of a one-token term's docs, those that hold a later
    term too are all read; the others (`alone`) score idf x tf (k1 + 1) / (tf + norm), and
    tf is at most the doc's repeated tokens + 1 (tokens - distinct lexemes + 1): SQL reads
    only those whose bound reaches the limit-th score (the `limit` best bounds first, when
    there is none yet)."""
    order = sorted((i for i in which if p.phrases[i]), key=lambda i: -p.idf[i])
    bound = [p.idf[i] * (BM25_K1 + 1) for i in order]
    scored = {}

    def read(condition, args, tail="", tail_args=()):
        for key, tokens, tsv in _fetch(server, p, condition, args, where, params, tail,
                                       tail_args):
            freqs = p.freqs(tsv)
            if key not in scored and any(freqs[j] for j in which):
                scored[key] = (p.score(freqs, tokens, which), freqs, tokens)

    def last():  # the limit-th score found, or None
        found = heapq.nlargest(limit, (s for s, _, _ in scored.values()))
        return found[-1] if len(found) == limit else None

    for step, i in enumerate(order):
        condition, args = "d.tsv @@ %s::tsquery", [tsquery([p.phrases[i]])]
        if step:
            condition += " AND NOT d.tsv @@ %s::tsquery"
            args.append(tsquery([p.phrases[j] for j in order[:step]]))
        later = [p.phrases[j] for j in order[step + 1:]]
        if len(p.phrases[i]) > 1:
            read(condition, args)
        else:
            if later:
                read(condition + " AND d.tsv @@ %s::tsquery", [*args, tsquery(later)])
                condition += " AND NOT d.tsv @@ %s::tsquery"
                args.append(tsquery(later))
            k1, b = BM25_K1, BM25_B
            tf = "(d.tokens - length(d.tsv) + 1)"
            most = (f"%s::float8 * {tf} * {k1 + 1} / ({tf} + {k1} * (1 - {b} + {b} * "
                    f"d.tokens / %s::float8))")
            kth = last()
            if kth is None:
                read(condition, args, f" ORDER BY {most} DESC LIMIT %s",
                     [p.idf[i], p.avgdl, limit])
                kth = last()
            if kth is not None:
                read(f"{condition} AND {most} >= %s", [*args, p.idf[i], p.avgdl,
                                                        kth * (1 - 1e-9)])
        kth = last()
        if kth is not None and sum(bound[step + 1:]) * (1 + 1e-9) < kth:
            break
    best = heapq.nsmallest(limit, scored.items(), key=lambda kv: (-kv[1][0], *_order(kv[0])))
    return [(key, score, freqs, tokens) for key, (score, freqs, tokens) in best]


def _fetch(server, p, condition, args, where, params, tail="", tail_args=()):
    """(key, tokens, the doc's tsvector of the query's lexemes alone) of the docs that meet
    condition and where: setweight marks the query's lexemes, ts_filter keeps them."""
    cur = server.conn.cursor(binary=True)
    rows = cur.execute(
        f"SELECT d.file_id, d.id, d.tokens, ts_filter(setweight(d.tsv, 'A', %s::text[]), "
        f"'{{a}}') FROM doc d WHERE {condition} AND {where}{tail}",
        [[x.decode() for x in p.lexemes], *args, *params, *tail_args]).fetchall()
    return [((file_id, doc_id), tokens, tsv) for file_id, doc_id, tokens, tsv in rows]


def scores(server, p, keys):
    """[(key, bm25)] of the listed docs that hold the query's words (the kept ones, when the
    query ran in two steps): the word side's score of the vector side's candidates."""
    if p is None or not keys:
        return []
    which = p.kept or range(len(p.phrases))
    every = range(len(p.phrases))
    found = _fetch(server, p, "(d.file_id, d.id) IN (SELECT * FROM unnest(%s::uuid[], "
                   "%s::bigint[]))", [[k[0] for k in keys], [k[1] for k in keys]], "true", [])
    out = []
    for key, tokens, tsv in found:
        freqs = p.freqs(tsv)
        if any(freqs[j] for j in which):
            out.append((key, -p.score(freqs, tokens, every)))
    return sorted(out, key=lambda r: (r[1], *_order(r[0])))


def _order(key):
    """A (file_id, doc_id) key as the file's tie order, fast (uuid's own compare is slow)."""
    return key[0].int, key[1]
