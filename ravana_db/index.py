"""The search index inside the file: one `doc` row per searchable row of every table.

Triggers (schema/search_index.py) keep `doc` and its FTS5 index in step with the tables on
every insert, update and delete, whoever writes, and queue work that needs ravana-db: new or
changed text in `embed_queue`, signature rows to drop or rewrite in `bits_queue` (plain SQL
clients cannot touch the vec0 table). Vectors are computed outside any transaction
(prepare()), then written in the writer's short transaction (apply()): the write lock is never
held while embedding. Each text is embedded once (vectors are reused by SHA-256 of the text).
A vector lives in `doc_vec` (int8 codes and a norm, vectors.py, keyed by vectors.key of its
text: for the re-ranking scores) and its SimHash signature in `doc_bits` (vec0 bit table for the
fast first pass, with the filter columns queries use).
"""

import functools
import hashlib
import os
from dataclasses import dataclass, field

from .db import transaction
from .errors import InputError, RavanaError
from .schema import (
    SIGNATURE_BITS,
    bits_code,
    index_objects,
    install_index,
    outdated,
    part_of,
)
from .tables import SEARCHABLE
from .text import decode
from .vectors import decode as decode_vectors
from .vectors import encode, key

BATCH = 1024  # texts per embedding call: sorted by length within it, so larger pads less
CHUNK = 500  # ids per `IN (...)` list
# Text that is only ASCII whitespace has nothing to embed; SQL and Python agree on this set.
BLANK = " \t\n\v\f\r"
SQL_NOT_BLANK = "trim(text, ' ' || char(9, 10, 11, 12, 13)) != ''"


def recorded_model(db):
    """(name, dim) of the model the file's vectors were made with, or (None, None)."""
    meta = dict(db.execute(
        "SELECT key, value FROM meta WHERE key IN ('embedding_model', 'embedding_dim')"))
    dim = meta.get("embedding_dim")
    try:
        return meta.get("embedding_model"), None if dim is None else int(dim)
    except ValueError:
        raise RavanaError(f"this file's recorded embedding dimension {dim!r} is not a number: "
                          "run `ravana-db reindex --vectors` to record it again") from None


def same_model(recorded, name):
    """Whether the name of a model to use is the one recorded in a file: the same name, or
    the same folder (a file may record a folder by a relative path, as older versions did)."""
    if recorded is None or recorded == name:
        return recorded == name
    return os.path.isdir(recorded) and os.path.isdir(name) and os.path.samefile(recorded, name)


def check_model(db, embedder):
    """Fail clearly when the file's vectors come from another model.

    Returns whether the file has a model recorded (no model: no vectors yet).
    """
    name, dim = recorded_model(db)
    if name is not None and not same_model(name, embedder.name):
        raise InputError(
            f"this database's vectors were made with {name!r} ({dim}-d), not "
            f"{embedder.name!r}: run `ravana-db reindex --vectors --model {embedder.name}` to "
            f"re-embed everything with it, or leave out --model: the file's own model is the "
            "default")
    return name is not None


def _use_model(db, name, dim):
    """Record the model; vectors of any other model are dropped."""
    db.execute("DELETE FROM doc_vec")
    db.execute("DELETE FROM doc_bits")
    db.execute("DELETE FROM bits_queue")
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('embedding_model', ?), "
               "('embedding_dim', ?)", [name, str(dim)])


@functools.cache
def _hyperplanes(dim):
    """SIGNATURE_BITS random +1/-1 hyperplanes for dim-d vectors, the same on every machine
    and in every version (derived from SHAKE-256, not from a random generator)."""
    import numpy as np

    raw = hashlib.shake_256(f"ravana-db simhash {dim}".encode()).digest(dim * SIGNATURE_BITS // 8)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8)).reshape(dim, SIGNATURE_BITS)
    return bits.astype(np.float32) * 2 - 1


def signature(vectors):
    """SimHash signatures: which side of each hyperplane a vector lies on, as float32 rows for
    vec_quantize_binary. Their Hamming distance tracks the angle between vectors: 1024 such
    bits find the true nearest neighbours among far fewer candidates than the vector's own
    sign bits."""
    return vectors @ _hyperplanes(vectors.shape[1])


def pending(db):
    """How many texts wait for a vector."""
    return db.execute("SELECT count(*) FROM embed_queue").fetchone()[0]


def _chunks(items):
    items = list(items)
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _marks(items):
    return ", ".join("?" * len(items))


@dataclass
class Prepared:
    """Vectors computed before a write: what apply() stores inside the transaction."""

    vectors: dict = field(default_factory=dict)  # content key -> (stored blob, signature)
    model: tuple | None = None  # (name, dim) when new vectors were made
    queued: list = field(default_factory=list)  # doc ids taken from embed_queue
    bits: list = field(default_factory=list)  # doc ids taken from bits_queue


def prepare(db, embedder, texts=(), *, backlog=BATCH, progress=None):
    """Compute, outside any transaction, the vectors a write will need.

    Args:
        texts: the searchable texts the write will store.
        backlog: also take up to this many texts already waiting in the queue (written by
            another client, or left by an interrupted run), and signature rows to rewrite.
        progress: called with the number of texts embedded after each batch.
    """
    queued = db.execute("SELECT d.id, d.text FROM embed_queue q JOIN doc d ON d.id = q.doc_id "
                        "ORDER BY q.doc_id LIMIT ?", [backlog]).fetchall()
    bits = [r[0] for r in db.execute(
        "SELECT doc_id FROM bits_queue ORDER BY doc_id LIMIT ?", [backlog])]
    own = {key(t): t for t in texts if t.strip(BLANK)}
    # a blob another client stored as text has nothing to embed (apply() unqueues it)
    wanted = {**{key(t): t for _, t in queued if isinstance(t, str) and t.strip(BLANK)},
              **own}
    blobs = {}
    for chunk in _chunks(wanted):
        blobs.update(db.execute(f"SELECT content_hash, embedding FROM doc_vec WHERE "
                                f"content_hash IN ({_marks(chunk)})", chunk).fetchall())
    for chunk in _chunks(bits):
        blobs.update(db.execute(f"SELECT content_hash, embedding FROM doc_vec WHERE "
                                f"doc_id IN ({_marks(chunk)})", chunk).fetchall())
    new = {h: t for h, t in wanted.items() if h not in blobs}
    prepared = Prepared(queued=[doc_id for doc_id, _ in queued], bits=bits)
    if new:
        try:
            check_model(db, embedder)
        except InputError:
            if any(h in own for h in new):
                raise
            return Prepared()  # only others' text, for another model: left to `reindex`
        if progress:
            progress(0, total=len(new))
        prepared.model = (embedder.name, embedder.dim)
        hashes, texts = list(new), list(new.values())
        for start in range(0, len(texts), BATCH):
            vectors = embedder.embed(texts[start:start + BATCH])
            blobs.update(zip(hashes[start:start + BATCH], encode(vectors)))
            if progress:
                progress(len(vectors))
    prepared.vectors = dict(zip(blobs, zip(blobs.values(), signatures(list(blobs.values())))))
    return prepared


def signatures(blobs):
    """signature() of stored vectors (vectors.encode blobs), each as a float32 blob for vec0:
    made from the stored vector, so a text's signature is the same however it was stored."""
    if not blobs:
        return []
    return [row.tobytes() for row in signature(decode_vectors(blobs))]


def apply(db, prepared, doc_ids=()):
    """Inside the caller's write transaction: store the prepared vectors of the queued docs
    (doc_ids, plus the backlog prepare() took) and rewrite queued signature rows. No CPU work
    beyond hashing: a text that changed since prepare() simply stays queued.

    Returns how many docs got their vectors.
    """
    if prepared.model:
        name, _ = recorded_model(db)
        if name is None:
            _use_model(db, *prepared.model)
        elif not same_model(name, prepared.model[0]):  # another process switched models
            raise InputError(f"this database's model changed to {name!r} during the write: "
                             "run the command again")
    ids = list(dict.fromkeys([*doc_ids, *prepared.queued]))
    docs = []
    for chunk in _chunks(ids):
        docs += db.execute(f"SELECT d.id, d.text, d.kind, d.type, d.source, d.ts FROM "
                           f"embed_queue q JOIN doc d ON d.id = q.doc_id WHERE q.doc_id IN "
                           f"({_marks(chunk)})", chunk).fetchall()
    done, rows = [], []
    for doc_id, text, *filters in docs:
        if not isinstance(text, str) or not text.strip(BLANK):
            done.append((doc_id,))
            continue
        digest = key(text)
        if digest in prepared.vectors:
            done.append((doc_id,))
            rows.append((doc_id, digest, *prepared.vectors[digest], *filters))
    db.conn.executemany("DELETE FROM doc_vec WHERE doc_id = ?", done)
    db.conn.executemany("DELETE FROM embed_queue WHERE doc_id = ?", done)
    db.conn.executemany("INSERT INTO doc_vec(doc_id, content_hash, embedding) VALUES (?, ?, ?)",
                        [r[:3] for r in rows])
    _write_bits(db, [(r[0], r[3], *r[4:]) for r in rows])
    # Queued signature rows: dropped, or rewritten from the doc's vector and current filters.
    stale = []
    for chunk in _chunks(prepared.bits):
        stale += db.execute(
            f"SELECT b.doc_id, v.content_hash, d.kind, d.type, d.source, d.ts FROM bits_queue b "
            f"LEFT JOIN doc d ON d.id = b.doc_id LEFT JOIN doc_vec v ON v.doc_id = b.doc_id "
            f"WHERE b.doc_id IN ({_marks(chunk)})", chunk).fetchall()
    rewrite = [(doc_id, prepared.vectors[digest][1], *filters)
               for doc_id, digest, *filters in stale
               if digest in prepared.vectors and filters[0] is not None]
    unchanged = [(doc_id,) for doc_id, digest, *_ in stale
                 if digest is None or digest in prepared.vectors]
    db.conn.executemany("DELETE FROM doc_bits WHERE doc_id = ?", unchanged)
    _write_bits(db, rewrite)
    db.conn.executemany("DELETE FROM bits_queue WHERE doc_id = ?", unchanged)
    return len(rows)


def _write_bits(db, rows):
    """(doc_id, signature, kind, type, source, ts) rows into doc_bits, replacing old ones."""
    db.conn.executemany("DELETE FROM doc_bits WHERE doc_id = ?", [(r[0],) for r in rows])
    db.conn.executemany(
        f"INSERT INTO doc_bits(doc_id, embedding, part, kind, type, source, ts) "
        f"VALUES (?1, vec_quantize_binary(?2), {part_of('?1')}, ?3, ?4, ?5, "
        f"coalesce(unixepoch(?6), 0))",
        [(doc_id, sig, bits_code(kind), bits_code(type), bits_code(source), ts)
         for doc_id, sig, kind, type, source, ts in rows])
    db.conn.executemany("DELETE FROM bits_queue WHERE doc_id = ?", [(r[0],) for r in rows])


def sync_docs(db):
    """Bring `doc` (and so FTS) in line with the tables: add missing rows, correct stale
    ones, drop orphans. The triggers keep them in step; this repairs a file written around
    them (a trigger dropped, rows written with triggers off).

    Returns (added, updated, removed).
    """
    # A text that is not UTF-8 (SQLite's JSON functions make such bytes of an escaped lone
    # surrogate) is stored with U+FFFD instead: the index then holds only what can be read.
    db.conn.create_function("utf8_text", 1, decode, deterministic=True)
    added = updated = removed = 0
    for kind, spec in SEARCHABLE.items():
        table, ref = spec["table"], spec["ref"]
        cols = {k: spec[k].replace("new.", "t.") for k in ("text", "type", "source", "ts")}
        cols["text"] = f"utf8_text(CAST(coalesce({cols['text']}, '') AS BLOB))"
        shown = spec.get("where", "1").replace("new.", "t.")  # e.g. merged memories: not
        added += db.execute(
            f"INSERT INTO doc(kind, ref, text, type, source, ts) "
            f"SELECT '{kind}', t.{ref}, {cols['text']}, {cols['type']}, "
            f"{cols['source']}, {cols['ts']} FROM {table} t WHERE {shown} AND NOT EXISTS ("
            f"SELECT 1 FROM doc WHERE kind = '{kind}' AND ref = CAST(t.{ref} AS TEXT))"
        ).rowcount
        updated += db.execute(
            f"UPDATE doc SET text = {cols['text']}, type = {cols['type']}, "
            f"source = {cols['source']}, ts = {cols['ts']} FROM {table} t "
            f"WHERE doc.kind = '{kind}' AND doc.ref = CAST(t.{ref} AS TEXT) AND ("
            f"doc.text IS NOT {cols['text']} OR doc.type IS NOT {cols['type']} OR "
            f"doc.source IS NOT {cols['source']} OR doc.ts IS NOT {cols['ts']})").rowcount
        removed += db.execute(
            f"DELETE FROM doc WHERE kind = '{kind}' AND ref NOT IN ("
            f"SELECT CAST(t.{ref} AS TEXT) FROM {table} t WHERE {shown})").rowcount
    return added, updated, removed


def _stale_vectors(db):
    """(doc_id, content key) of vectors not made from their doc's text (a doc rewritten
    while a trigger was missing, or its id taken by a new row). Read outside the lock."""
    return [(doc_id, digest) for doc_id, text, digest in db.execute(
        "SELECT d.id, d.text, v.content_hash FROM doc d JOIN doc_vec v ON v.doc_id = d.id")
        if key(text) != digest]


def _drop_vectors(db, stale):
    """Inside the transaction: drop the stale vectors (if still as read) and those whose doc
    is gone; their signatures go too. Returns how many were dropped."""
    gone = db.execute("SELECT doc_id, content_hash FROM doc_vec "
                      "WHERE doc_id NOT IN (SELECT id FROM doc)").fetchall()
    dropped = 0
    for doc_id, digest in [*stale, *gone]:
        dropped += db.execute("DELETE FROM doc_vec WHERE doc_id = ? AND content_hash = ?",
                              [doc_id, digest]).rowcount
        db.execute("INSERT OR IGNORE INTO bits_queue(doc_id) VALUES (?)", [doc_id])
    db.execute("DELETE FROM embed_queue WHERE doc_id NOT IN (SELECT id FROM doc)")
    return dropped


def _queued(db):
    """The first BATCH doc ids of each queue."""
    return tuple([r[0] for r in db.execute(
        f"SELECT doc_id FROM {queue} ORDER BY doc_id LIMIT ?", [BATCH])]
        for queue in ("embed_queue", "bits_queue"))


def health(db):
    """Whether the index is whole: missing pieces, queued work, rows without vectors."""
    present = dict(db.execute("SELECT name, sql FROM sqlite_master").fetchall())
    missing = [name for name in index_objects() if name not in present]
    changed = [name for name, sql in index_objects().items()
               if name in present and outdated(sql, present[name])]
    report = {"missing": missing, "outdated": changed}
    try:
        recorded_model(db)
    except RavanaError:
        report["model"] = "damaged: run `ravana-db reindex --vectors`"
    if not {"doc", "doc_vec", "embed_queue", "bits_queue"} & set(missing):
        report.update(
            waiting_for_vectors=pending(db),
            waiting_for_signatures=db.execute("SELECT count(*) FROM bits_queue").fetchone()[0],
            without_vectors=db.execute(
                f"SELECT count(*) FROM doc WHERE id NOT IN (SELECT doc_id FROM doc_vec) "
                f"AND {SQL_NOT_BLANK}").fetchone()[0],
            vectors_without_doc=db.execute(
                "SELECT count(*) FROM doc_vec WHERE doc_id NOT IN (SELECT id FROM doc)"
            ).fetchone()[0])
    report["whole"] = not missing and not changed and "model" not in report and not any(
        report.get(k) for k in ("waiting_for_vectors", "waiting_for_signatures",
                                "without_vectors", "vectors_without_doc"))
    return report


def reindex(db, embedder, *, fts=True, vectors=True, progress=None):
    """Repair and rebuild the index; resumable: each batch commits on its own.

    Missing pieces (a dropped FTS or vec0 table, a missing trigger) are recreated, `doc` is
    re-synced with the tables, FTS rebuilt (fts), and every text without a vector embedded
    (vectors), BATCH at a time, embedding outside the write lock. A model other than the
    recorded one replaces every vector (the switch is one transaction; an interrupted run
    continues where it stopped). Returns counts of what was done.
    """
    report = {}
    whole = db["doc"].exists() and db["doc_vec"].exists()
    stale = _stale_vectors(db) if vectors and whole else []  # read before the lock
    with transaction(db):
        created = install_index(db)
        report["repaired"] = created
        report["docs_added"], report["docs_updated"], report["docs_removed"] = sync_docs(db)
        if fts or "doc_fts" in created:
            db.execute("INSERT INTO doc_fts(doc_fts) VALUES ('rebuild')")
            report["fts_rows"] = db.execute("SELECT count(*) FROM doc").fetchone()[0]
        if "doc_bits" in created:
            db.execute("INSERT OR IGNORE INTO bits_queue(doc_id) SELECT doc_id FROM doc_vec")
        if vectors:
            try:
                name, dim = recorded_model(db)
                same = same_model(name, embedder.name) and dim == embedder.dim
            except RavanaError:  # a damaged record: replaced by the switch below
                same = False
            if not same:
                _use_model(db, embedder.name, embedder.dim)
            report["stale_vectors"] = _drop_vectors(db, stale)
            db.execute(f"INSERT OR IGNORE INTO embed_queue(doc_id) SELECT id FROM doc "
                       f"WHERE id NOT IN (SELECT doc_id FROM doc_vec) AND {SQL_NOT_BLANK}")
            db.execute("INSERT OR IGNORE INTO bits_queue(doc_id) SELECT doc_id FROM doc_vec "
                       "WHERE doc_id NOT IN (SELECT doc_id FROM doc_bits)")
    if vectors:
        report["embedded"] = 0
        if progress:
            progress(0, total=pending(db))
        while True:
            prepared = prepare(db, embedder)
            if not (prepared.queued or prepared.bits):
                break
            with transaction(db):
                n = apply(db, prepared)
                stuck = not n and _queued(db) == (prepared.queued, prepared.bits)
            report["embedded"] += n
            if progress:  # after the commit: an interrupt from here on loses nothing
                progress(n)
            if stuck:  # rows rewritten by another client meanwhile: the next run takes them
                break
    return report


def vacuum(db):
    """Rewrite the file without its free pages (what a migration or deletes left), then fold
    the WAL back into it. Returns (bytes before, bytes after) of file and WAL together."""
    path = db.execute("PRAGMA database_list").fetchone()[2]

    def size():
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))

    before = size()
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return before, size()
