"""The file's tokens on the server: each doc's text tokenized by the file's own FTS5
tokenizer (search_index.TOKENIZE, in an in-memory SQLite of the same library), stored as a
tsvector in PostgreSQL's binary form (`doc_columns`, written raw into sync's binary COPY) with
the doc's token count; `retokenize` gives docs synced before schema V2 their tokens.

Limits of the tsvector (the file has none): a word's first 256 positions in a doc are kept
(its true count beside them, so tf is exact; a phrase's occurrences are counted in those),
positions past 16383 are squeezed below it (a phrase that far into a doc may be missed), a
token longer than 2046 bytes is a stand-in (its prefix and hash) on both sides, and a doc's
words stop at about 1 MB of lexemes.
"""

import hashlib
import struct

from ..schema.search_index import TOKENIZE

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
    """Teach conn's binary COPY to write a TsVector as it is (retokenize's COPY)."""
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


def settle(conn):
    """Merge the GIN index's pending list of new words into the index (at the end of a sync):
    a word query reads that list whole, so 100k docs just synced took 100 ms a query, 32 ms
    once merged."""
    conn.execute("SELECT gin_clean_pending_list('doc_tsv')")


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
    register(conn)
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
