"""Word search on the server, identical to the file's.

At sync, each doc's text is tokenized by the file's own FTS5 tokenizer (search_index.TOKENIZE,
in an in-memory SQLite of the same library), and its tokens are stored as a tsvector in
PostgreSQL's binary form (`doc_columns`), with the doc's token count (`tokens`). A query's
words are tokenized the same way and scored with FTS5's bm25() formula, constants and order of
operations, over the same statistics (the chosen files' doc and token totals, kept in
`ravana_words` by triggers; each token's doc count from the GIN index), and ranked as the file
ranks them: by score, then by id, with the file's postings budget (search._fts). The exact top
is found MaxScore-style: the rarest terms' docs first, until the terms not yet read cannot
reach the current last score.

Limits of the tsvector (the file has none): a word's first 256 positions in a doc are kept
(its true count beside them, so tf is exact; a phrase's occurrences are counted in those),
positions past 16383 are squeezed below it (a phrase that far into
a doc may be missed), a token longer than 2046 bytes is a stand-in (its prefix and hash) on
both sides, and a doc's words stop at about 1 MB of lexemes.
"""

import hashlib
import heapq
import math
import struct

from ..errors import InputError
from ..schema.search_index import TOKENIZE
from ..search import BM25_DEPTH, BM25_K1, POSTINGS_BUDGET

BM25_B = 0.75  # FTS5's bm25() length normalisation
TOKENS_VERSION = 1  # what ravana_words.version says of a file's tsv and tokens
MAX_LEXEME = 2046  # bytes; a longer token is a stand-in (+ OVER: 2047, the most a lexeme holds)
MAX_POSITIONS = 256  # positions a tsvector keeps per lexeme
MAX_POSITION = 16383
MAX_BYTES = (1 << 20) - 1  # a tsvector's lexemes and positions
OVER = b"\x01"  # lexeme + OVER: a lexeme's count past MAX_POSITIONS (no token holds \x01)
OVER_BASE = 8192  # that count is (first position - 1) x OVER_BASE + second - OVER_BASE
BATCH = 2000  # texts per scratch table, and docs per retokenize step


class TsVector(bytes):
    """A tsvector in PostgreSQL's binary form, written raw into a binary COPY."""


EMPTY = TsVector(bytes(4))


def register(conn):
    """Teach conn's binary COPY to write a TsVector as it is (rows.register calls this)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class TsVectorDumper(Dumper):
        format = Format.BINARY
        oid = conn.adapters.types["tsvector"].oid

        def dump(self, obj):
            return obj

    conn.adapters.register_dumper(TsVector, TsVectorDumper)


_scratch = None


def _tokenizer():
    """The in-memory SQLite (the file's driver, so the same FTS5) that tokenizes."""
    global _scratch
    if _scratch is None:
        from ..sql import driver

        _scratch = driver().connect(":memory:", check_same_thread=False)
        _scratch.execute("CREATE VIRTUAL TABLE words_tokens USING fts5vocab(words, 'instance')")
    return _scratch


def _scratch_table(texts, read):
    """read(conn) over a scratch FTS5 table holding texts (rowid = index), then dropped."""
    conn = _tokenizer()
    conn.execute(f"CREATE VIRTUAL TABLE words USING fts5(text, tokenize='{TOKENIZE}')")
    try:
        conn.executemany("INSERT INTO words(rowid, text) VALUES (?, ?)",
                         [(i, "" if t is None else t) for i, t in enumerate(texts)])
        return read(conn)
    finally:
        conn.execute("DROP TABLE words")


def tokenize(texts):
    """Each text's tokens as the file's index holds them: ({token: [offsets]}, token count)."""
    found = []
    for start in range(0, len(texts), BATCH):
        batch = [{} for _ in texts[start:start + BATCH]]
        rows = _scratch_table(texts[start:start + BATCH], lambda conn: conn.execute(
            "SELECT doc, offset, term FROM words_tokens").fetchall())
        for doc, offset, term in rows:
            batch[doc].setdefault(term, []).append(offset)
        found.extend(batch)
    return [(terms, sum(map(len, terms.values()))) for terms in found]


# Each doc's tsvector entries made by SQLite (C speed): per (token, doc) its bytes, NUL, its
# count and positions (1-based) as big-endian uint16, in hex; per doc their concatenation,
# the entry count, the token count and what says whether a limit applies (then encode()).
ENTRIES = f"""
SELECT doc, count(*), sum(n), max(n) > {MAX_POSITIONS}
    OR max(last) > {MAX_POSITION} - {MAX_POSITIONS} OR max(size) > {MAX_LEXEME}
    OR sum(size + 2 * n) > {MAX_BYTES} / 2, unhex(group_concat(entry, ''))
FROM (SELECT doc, count(*) AS n, max(offset) AS last, length(CAST(term AS BLOB)) AS size,
        hex(term) || '00' || printf('%04X', count(*))
        || group_concat(printf('%04X', offset + 1), '' ORDER BY offset) AS entry
      FROM words_tokens GROUP BY term, doc)
GROUP BY doc
"""


def lexeme(token):
    """A token as the server's lexeme (bytes): itself, or past MAX_LEXEME bytes a stand-in,
    its prefix and hash ('#' is never part of a token)."""
    data = token.encode()
    if len(data) <= MAX_LEXEME:
        return data
    prefix = data[:1900].decode("utf-8", "ignore").encode()
    return prefix + b"#" + hashlib.sha256(data).hexdigest().encode()


def _positions(offsets):
    """A token's offsets as tsvector positions: 1-based, at most MAX_POSITIONS, strictly
    increasing and at most MAX_POSITION (the last ones squeezed below it)."""
    kept = [o + 1 for o in offsets[:MAX_POSITIONS]]
    if kept[-1] > MAX_POSITION - MAX_POSITIONS:
        top = MAX_POSITION - len(kept) + 1
        kept = [min(p, top + i) for i, p in enumerate(kept)]
    return kept


def encode(terms):
    """{token: [offsets]} as a binary tsvector (lexemes in byte order, as PostgreSQL keeps
    them). A lexeme of more than MAX_POSITIONS occurrences also stores its true count as the
    two positions of `lexeme + OVER`, so its tf is the file's."""
    merged = {}
    for token, offsets in terms.items():
        merged.setdefault(lexeme(token), []).extend(offsets)
    entries = {}
    for key, offsets in merged.items():
        if any(a >= b for a, b in zip(offsets, offsets[1:])):
            offsets = sorted(set(offsets))  # two long tokens with one stand-in
        entries[key] = _positions(offsets)
        if len(offsets) > MAX_POSITIONS:
            high, low = divmod(len(offsets), OVER_BASE)
            entries[key + OVER] = [high + 1, OVER_BASE + low]
    parts, size = [], 0
    for key in sorted(entries):
        positions = entries[key]
        size += len(key) + 2 + 2 * (len(positions) + 1)
        if size > MAX_BYTES:
            break
        parts.append(key + b"\0" + struct.pack(f">H{len(positions)}H", len(positions),
                                               *positions))
    return TsVector(struct.pack(">i", len(parts)) + b"".join(parts))


def doc_columns(texts):
    """[(tsv, tokens)] per doc text: the server's two word columns of `doc` (sync). SQLite
    makes the tsvector of nearly every doc (ENTRIES); one that meets a limit is encoded here."""
    found = []
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        columns = [(EMPTY, 0)] * len(batch)
        odd = []
        for doc, entries, tokens, limited, data in _scratch_table(
                batch, lambda conn: conn.execute(ENTRIES).fetchall()):
            if limited:
                odd.append(doc)
            else:
                columns[doc] = (TsVector(struct.pack(">i", entries) + data), tokens)
        for doc, (terms, count) in zip(odd, tokenize([batch[i] for i in odd])):
            columns[doc] = (encode(terms), count)
        found.extend(columns)
    return found


def decode(data):
    """{lexeme bytes: [positions]} of a binary tsvector."""
    (count,) = struct.unpack_from(">i", data)
    at, found = 4, {}
    for _ in range(count):
        end = data.index(b"\0", at)
        (n,) = struct.unpack_from(">H", data, end + 1)
        found[data[at:end]] = [p & 0x3FFF for p in struct.unpack_from(f">{n}H", data, end + 3)]
        at = end + 3 + 2 * n
    return found


def counts(data):
    """{lexeme bytes: occurrences} of a binary tsvector (a count past MAX_POSITIONS read
    from its `lexeme + OVER` entry)."""
    (count,) = struct.unpack_from(">i", data)
    at, found = 4, {}
    for _ in range(count):
        end = data.index(b"\0", at)
        (n,) = struct.unpack_from(">H", data, end + 1)
        if data[end - 1:end] == OVER:
            high, low = struct.unpack_from(">HH", data, end + 3)
            found[data[at:end - 1]] = ((high & 0x3FFF) - 1) * OVER_BASE + (low & 0x3FFF) - OVER_BASE
        else:
            found.setdefault(data[at:end], n)
        at = end + 3 + 2 * n
    return found


def retokenize(db, conn, file_id):
    """Give the server's docs of a file the file's tokens (tsv, tokens), when its words are of
    another TOKENS_VERSION (docs synced before V2); returns the docs updated. Each step reads
    the file's docs in one short read transaction and updates the server's in one of its own;
    the version is recorded last, so an interrupted run is done again by the next sync."""
    row = conn.execute("SELECT version FROM ravana_words WHERE file_id = %s",
                       (file_id,)).fetchone()
    if row is None or row[0] == TOKENS_VERSION:
        return 0
    done, last = 0, None
    has_docs = conn.execute("SELECT EXISTS (SELECT 1 FROM doc WHERE file_id = %s)",
                            (file_id,)).fetchone()[0]
    while has_docs:
        found = db.execute("SELECT id, text FROM doc WHERE id > ? ORDER BY id LIMIT ?",
                           (-(1 << 63) if last is None else last, BATCH)).fetchall()
        if not found:
            break
        last = found[-1][0]
        columns = doc_columns([text for _, text in found])
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS stage_words (id BIGINT, tsv tsvector, "
                         "tokens INT4) ON COMMIT DELETE ROWS")
            with conn.cursor().copy("COPY stage_words (id, tsv, tokens) FROM STDIN "
                                    "(FORMAT BINARY)") as copy:
                copy.set_types(["int8", "tsvector", "int4"])
                for (doc_id, _), (tsv, tokens) in zip(found, columns):
                    copy.write_row((doc_id, tsv, tokens))
            done += conn.execute("UPDATE doc d SET tsv = s.tsv, tokens = s.tokens FROM "
                                 "stage_words s WHERE d.file_id = %s AND d.id = s.id",
                                 (file_id,)).rowcount
    with conn.transaction():
        conn.execute("UPDATE ravana_words SET version = %s WHERE file_id = %s",
                     (TOKENS_VERSION, file_id))
    return done


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
    score found, the rest are not read."""
    order = sorted((i for i in which if p.phrases[i]), key=lambda i: -p.idf[i])
    bound = [p.idf[i] * (BM25_K1 + 1) for i in order]
    scored = {}
    for step, i in enumerate(order):
        condition = "d.tsv @@ %s::tsquery"
        args = [tsquery([p.phrases[i]])]
        if step:
            condition += " AND NOT d.tsv @@ %s::tsquery"
            args.append(tsquery([p.phrases[j] for j in order[:step]]))
        for key, tokens, tsv in _fetch(server, p, condition, args, where, params):
            freqs = p.freqs(tsv)
            if any(freqs[j] for j in which):
                scored[key] = (p.score(freqs, tokens, which), freqs, tokens)
        rest = sum(bound[step + 1:])
        if len(scored) >= limit and rest * (1 + 1e-9) < heapq.nlargest(
                limit, (s for s, _, _ in scored.values()))[-1]:
            break
    best = heapq.nsmallest(limit, scored.items(), key=lambda kv: (-kv[1][0], *_order(kv[0])))
    return [(key, score, freqs, tokens) for key, (score, freqs, tokens) in best]


def _fetch(server, p, condition, args, where, params):
    """(key, tokens, the doc's tsvector of the query's lexemes alone) of the docs that meet
    condition and where: setweight marks the query's lexemes, ts_filter keeps them."""
    cur = server.conn.cursor(binary=True)
    rows = cur.execute(
        f"SELECT d.file_id, d.id, d.tokens, ts_filter(setweight(d.tsv, 'A', %s::text[]), "
        f"'{{a}}') FROM doc d WHERE {condition} AND {where}",
        [[x.decode() for x in p.lexemes], *args, *params]).fetchall()
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
