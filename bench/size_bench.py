"""Bytes per memory, each table's share from `dbstat`, and what the compact layout (issue 20)
costs in search quality.

    python bench/size_bench.py [--sizes 100000 1000000] [--vectors corpus|random]
        [--previous 056df2a] [--base 5138d69] [--no-base] [--no-quality]

The honest rows (logged*): files written as `log memory` writes them (logged_build: each row
the product's models.Memory(...).row(), so content_hash is filled; then index.prepare/apply
as store.write does). `logged` is this code's; `logged_previous` the release at --previous's
(its code exported with `git archive` into bench/cache/, run in a subprocess), and
`logged_migrated` that file migrated in place by this code then `reindex --vacuum`ed.
--vectors random gives every text a random unit vector: the bytes are the same whatever the
values, so sizes need no embedding, but quality is then not measured.

The rows of the first compact step (--vectors corpus, unless --no-base): before, the release
at --base builds its own files with bench/run.py's build(n) (memories inserted by raw SQL:
content_hash NULL); after, this code's build(n); migrated, the before-file migrated (m012..)
then vacuumed. Every file is cached in bench/cache/ (compact-*, size-*) and reused.

Quality, same run: vector recall@10 against exact float32 search (numpy over the corpus'
vectors), 1,000 held-out queries on 100k memories, for both layouts; and the NFCorpus figures of
bench/quality.py --public on the before-file and on its migrated copy (the vectors are the
model's, converted, never re-embedded). Results: bench/results/size.json.
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CACHE  # noqa: E402
from run import STORED, CachedEmbedder, bench_row, build, corpus, fill  # noqa: E402

from ravana_db.db import open_db, transaction  # noqa: E402
from ravana_db.embed import DEFAULT_MODEL, Embedder  # noqa: E402
from ravana_db.index import (  # noqa: E402
    vacuum,  # noqa: E402
)
from ravana_db.models import Memory  # noqa: E402
from ravana_db.search import search  # noqa: E402
from ravana_db.search.query import Query  # noqa: E402

ROOT = Path(__file__).parent.parent
GROUPS = {  # dbstat name -> the share it is reported in
    "doc_vec": "doc_vec", "idx_doc_vec_hash": "doc_vec",
    "doc": "doc", "sqlite_autoindex_doc_1": "doc", "idx_doc_ts": "doc", "idx_doc_article_ts": "doc",
    "memory": "memory",
}
RECALL_QUERIES = 1_000

# Run in the before-release's code: recall@10 of its vector search against exact float32.
RECALL = """
import json, sys
import numpy as np
sys.path.insert(0, "bench")
from run import CachedEmbedder, corpus
from ravana_db.db import open_db
from ravana_db.search import search
from ravana_db.search.query import Query
path, n, queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
texts, vectors, qtexts, qvectors = corpus()
matrix = np.ascontiguousarray(vectors[:n])
db = open_db(path, create=False, write=False)
embedder = CachedEmbedder(qtexts, qvectors)
hits = []
for text, vector in zip(qtexts[:queries], qvectors[:queries]):
    exact = np.argpartition(-(matrix @ vector), 10)[:10]
    found = search(db, Query(text, mode="vector", top_n=10), embedder=embedder, touch=False)
    hits.append(len({int(i) + 1 for i in exact} & {r["id"] for r in found}) / 10)
print(json.dumps(float(np.mean(hits))))
"""

# Run in either release's code: bench/quality.py --public's figures on a given file.
NFCORPUS = """
import json, sys
sys.path.insert(0, "bench")
import quality
quality.nfcorpus_db = lambda: None  # the file is given: never build one here
_, texts, qrels = quality.nfcorpus_test()
report, n = quality.through_cli(sys.argv[1], texts, qrels)
print(json.dumps({mode: {k: round(v, 4) for k, v in r.items() if k != "seconds"}
                  for mode, r in report.items()}))
"""


class RandomEmbedder(Embedder):
    """Random unit vectors in the model's name and dimension: for sizes only (a stored vector
    takes the same bytes whatever its values), when the corpus' real vectors are not built."""

    def __init__(self):
        super().__init__(DEFAULT_MODEL)
        self.rng = np.random.default_rng(0)

    def embed(self, texts):
        vectors = self.rng.normal(size=(len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def random_texts():
    """The corpus' texts (corpus.embedded's order) without their vectors, cached."""
    cached = CACHE / f"size-texts-{STORED}.txt"
    if not cached.exists():
        from corpus import sentences

        texts = sentences(STORED)
        random.Random(0).shuffle(texts)
        cached.write_text("\n".join(texts))
    return cached.read_text().split("\n")


def logged_build(n, path, *, vectors="corpus"):
    """A file of n memories written as `log memory` writes them: each row is the product's own
    models.Memory(...).row() (content_hash filled: SHA-256 of the text), then indexed by
    index.prepare/apply as store.write does, 50k rows a transaction. Texts, types, sources and
    times are bench/run.py build()'s. vectors: "corpus" (the real model's, as build()) or
    "random" (RandomEmbedder: sizes only)."""
    if path.exists():
        return path
    if vectors == "random":
        texts, embedder = random_texts(), RandomEmbedder()
    else:
        texts, matrix, _, _ = corpus()
        embedder = None
    # `log` refuses a NUL in text (a few of the corpus' sentences hold one): a space instead
    texts = [t.replace("\0", " ") for t in texts]
    texts = texts[:n] if n <= STORED else \
        [f"{t} [{r}]" if r else t for r in range(n // STORED) for t in texts]
    if embedder is None:
        reps = max(1, n // STORED)
        rng = np.random.default_rng(0)
        noisy = [matrix] + [matrix + rng.normal(0, 0.025, matrix.shape).astype(np.float32)
                            for _ in range(reps - 1)]
        matrix = np.concatenate(noisy)[:n]
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        embedder = CachedEmbedder(texts, matrix)
    return fill(path, texts, embedder, row=lambda i, t: Memory(**bench_row(i, t)).row())


def base_code(commit):
    """The release at commit, exported (not checked out) into bench/cache/compact-base-COMMIT,
    with a cache folder of its own that shares the corpus files."""
    root = CACHE / f"compact-base-{commit}"
    if not (root / "ravana_db").exists():
        tmp = root.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        os.replace(tmp, root)
    cache = root / "bench" / "cache"
    if cache.is_symlink() or not cache.exists():
        cache.unlink(missing_ok=True)
        cache.mkdir()
    for name in os.listdir(CACHE):
        if name.startswith(("texts-", "vectors-")) and not (cache / name).exists():
            (cache / name).symlink_to(CACHE / name)
    return root


def in_base(root, script, *args):
    """Run script with the before-release's code (its package first on the path)."""
    env = {**os.environ, "PYTHONPATH": f"{root}"}
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=root, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def before_file(root, n):
    path = root / "bench" / "cache" / f"db-{n}.db"
    if not path.exists():
        start = time.perf_counter()
        in_base(root, f"import sys, json; sys.path.insert(0, 'bench'); from run import build; "
                      f"print(json.dumps(str(build({n}))))")
        print(f"built the before-file of {n} in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    return path


def migrated_file(before, n, path=None):
    """A copy of the before-file (at path), opened (its migrations) and vacuumed; (path,
    seconds, seconds)."""
    path = path or CACHE / f"compact-migrated-{n}.db"
    timing = path.with_suffix(".json")
    if not (path.exists() and timing.exists()):
        tmp = path.with_suffix(".tmp")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(before, tmp)
        start = time.perf_counter()
        db = open_db(tmp)
        migrate = time.perf_counter() - start
        start = time.perf_counter()
        vacuum(db)
        db.close()
        timing.write_text(json.dumps([migrate, time.perf_counter() - start]))
        for backup in tmp.parent.glob(f"{tmp.name}.bak-*"):
            backup.unlink()  # open_db's copy before migrating: not what is measured
        os.replace(tmp, path)
    return path, *json.loads(timing.read_text())


def sizes(path, n):
    """Bytes per memory of the file, and of each share (dbstat, pages as stored)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * \
            conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    shares = {}
    for name, size in pages:
        group = GROUPS.get(name) or next(
            (prefix for prefix in ("doc_bits", "doc_fts") if name.startswith(prefix)),
            "memory" if name.startswith("idx_memory") else "other")
        shares[group] = shares.get(group, 0) + size
    shares["free pages"] = free
    total = os.path.getsize(path)
    return {"bytes_per_memory": round(total / n, 1), "file_bytes": total,
            "shares_bytes_per_memory": {k: round(v / n, 1) for k, v in
                                        sorted(shares.items(), key=lambda kv: -kv[1])},
            # each table and index on its own (those of at least 1 byte a memory)
            "objects_bytes_per_memory": {name: round(size / n, 1) for name, size in
                                         sorted(pages, key=lambda kv: -kv[1]) if size >= n}}


def recall(path, n, queries=RECALL_QUERIES):
    """Mean recall@10 of vector search on the file (this code) against exact float32."""
    texts, vectors, qtexts, qvectors = corpus()
    matrix = np.ascontiguousarray(vectors[:n])
    db = open_db(path, create=False, write=False)
    embedder, hits = CachedEmbedder(qtexts, qvectors), []
    for text, vector in zip(qtexts[:queries], qvectors[:queries]):
        exact = np.argpartition(-(matrix @ vector), 10)[:10]
        found = search(db, Query(text, mode="vector", top_n=10), embedder=embedder, touch=False)
        hits.append(len({int(i) + 1 for i in exact} & {r["id"] for r in found}) / 10)
    db.close()
    return float(np.mean(hits))


def nfcorpus(root):
    """bench/quality.py --public's NFCorpus test figures: the before-release's on its own file,
    this code's on a migrated copy of it."""
    before = Path(in_base(root, "import json, sys; sys.path.insert(0, 'bench'); import quality; "
                                "print(json.dumps(str(quality.nfcorpus_db())))"))
    after = CACHE / "compact-nfcorpus-migrated.db"
    if not after.exists():
        shutil.copyfile(before, after)
    ours = subprocess.run([sys.executable, "-c", NFCORPUS, str(after)], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if ours.returncode:
        sys.exit(ours.stderr)
    figures = {"before": in_base(root, NFCORPUS, before),
               "after": json.loads(ours.stdout.strip().splitlines()[-1])}
    figures["delta"] = {mode: {k: round(figures["after"][mode][k] - v, 4)
                               for k, v in figures["before"][mode].items()}
                        for mode in figures["before"]}
    for backup in CACHE.glob(f"{after.name}.bak-*"):
        backup.unlink()  # open_db's copy before migrating
    return figures


def consolidated(path, n):
    """A copy of the file at path with every memory marked as `consolidate` marks the ones a
    run took (consolidate/merge.py's UPDATE: its duplicate key, by the code that runs this,
    and the run: its number in the file since m015, its id before; one run per 100,000
    memories, limits.max_memories, each recorded as a run is), not vacuumed."""
    import uuid

    from ravana_db import runs
    from ravana_db.consolidate.duplicates import key

    out = path.with_name(path.name.replace(".db", "-consolidated.db"))
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.copyfile(path, tmp)
    db = open_db(tmp)
    last = 0
    while True:
        rows = db.execute("SELECT id, text FROM memory WHERE id > ? ORDER BY id LIMIT 100000",
                          [last]).fetchall()
        if not rows:
            break
        last, run = rows[-1][0], str(uuid.uuid4())
        with transaction(db):
            db.execute(*runs.record(run, type="event_triggered",
                                    results={"operation": "consolidate"}))
            types = {r[1]: r[2] for r in db.execute("PRAGMA table_info(memory)")}
            if types["consolidated_in"] == "INTEGER":
                run = db.execute("SELECT id FROM memory_consolidations WHERE "
                                 "consolidation_id = ?", [run]).fetchone()[0]
            marks = [(key(text), run, memory_id, text) for memory_id, text in rows]
            db.conn.executemany("UPDATE memory SET dup_key = ?, consolidated_in = ? "
                                "WHERE id = ? AND text = ? AND dup_key IS NULL", marks)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for backup in tmp.parent.glob(f"{tmp.name}.bak-*"):
        backup.unlink()
    os.replace(tmp, out)
    return out


def previous_consolidated(root, path, n):
    """consolidated() run with the code of the release at root (its duplicate keys)."""
    out = path.with_name(path.name.replace(".db", "-consolidated.db"))
    if not out.exists():
        in_base(root, f"import sys, json; from pathlib import Path; "
                      f"sys.path.insert(0, {str(ROOT / 'bench')!r}); import size_bench; "
                      f"print(json.dumps(str(size_bench.consolidated(Path({str(path)!r}), "
                      f"{n}))))")
    return out


def previous_logged(root, commit, n, vectors):
    """logged_build(n) run with the code of the release at commit (the one before this code's
    migrations): a file as that release's `log memory` wrote it."""
    path = CACHE / f"size-logged-{vectors}-{commit}-{n}.db"
    if not path.exists():
        in_base(root, f"import sys, json; from pathlib import Path; "
                      f"sys.path.insert(0, {str(ROOT / 'bench')!r}); import size_bench; "
                      f"print(json.dumps(str(size_bench.logged_build({n}, Path({str(path)!r}), "
                      f"vectors={vectors!r}))))")
    return path


def logged_rows(args, n):
    """The honest rows: files written as `log memory` writes them (content_hash filled), by
    this code, by the release at --previous, and that file migrated by this code."""
    start = time.perf_counter()
    logged = logged_build(n, CACHE / f"size-logged-{args.vectors}-{n}.db", vectors=args.vectors)
    built = time.perf_counter() - start
    previous = previous_logged(base_code(args.previous), args.previous, n, args.vectors)
    migrated, migrate_s, vacuum_s = migrated_file(
        previous, n, CACHE / f"size-logged-{args.vectors}-{args.previous}-migrated-{n}.db")
    row = {"logged": sizes(logged, n), "logged_previous": sizes(previous, n),
           "logged_migrated": sizes(migrated, n), "logged_migrate_s": round(migrate_s, 1),
           "logged_vacuum_s": round(vacuum_s, 1)}
    if args.consolidated:
        row["consolidated"] = sizes(consolidated(logged, n), n)
        row["consolidated_previous"] = sizes(
            previous_consolidated(base_code(args.previous), previous, n), n)
    if built > 1:
        row["logged_build_s"] = round(built, 1)
    row["ratio_logged_previous"] = round(row["logged"]["bytes_per_memory"] /
                                         row["logged_previous"]["bytes_per_memory"], 3)
    return row


def base_rows(root, n):
    """The rows of issue 20's first step: bench/run.py build()'s files (memories inserted by
    raw SQL, no content_hash) before (release --base) and after (this code), and the
    before-file migrated."""
    before = before_file(root, n)
    start = time.perf_counter()
    after = build(n, CACHE / f"compact-db-{n}.db")
    built = time.perf_counter() - start
    migrated, migrate_s, vacuum_s = migrated_file(before, n)
    row = {"before": sizes(before, n), "after": sizes(after, n),
           "migrated": sizes(migrated, n), "migrate_s": round(migrate_s, 1),
           "vacuum_s": round(vacuum_s, 1)}
    if built > 1:
        row["after_build_s"] = round(built, 1)
    row["ratio_after_before"] = round(row["after"]["bytes_per_memory"] /
                                      row["before"]["bytes_per_memory"], 3)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--base", default="5138d69")
    parser.add_argument("--previous", default="056df2a",
                        help="the release before m014: its logged file is migrated")
    parser.add_argument("--vectors", choices=("corpus", "random"), default="corpus",
                        help="random: sizes of the logged files only (no quality, no --base)")
    parser.add_argument("--no-base", action="store_true", help="skip the raw-SQL rows")
    parser.add_argument("--consolidated", action="store_true",
                        help="also the logged files with every memory marked consolidated")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "size.json"))
    args = parser.parse_args()
    base = args.vectors == "corpus" and not args.no_base
    report = {"what": "bytes per memory (file size / memories; shares from dbstat, index "
                      "b-trees counted with their table). logged*: files written as `log "
                      "memory` writes them (content_hash filled), by this code, by release "
                      f"{args.previous}, and that file migrated (m014) then `reindex "
                      "--vacuum`ed" + (f"; before/after/migrated: bench/run.py build()'s "
                      f"raw-SQL files (no content_hash), release {args.base} and this code"
                      if base else ""), "vectors": args.vectors, "sizes": {}}
    for n in args.sizes:
        row = logged_rows(args, n)
        if base:
            row.update(base_rows(base_code(args.base), n))
        report["sizes"][n] = row
        print(json.dumps({n: row}, indent=1), flush=True)
    if base and not args.no_quality:
        root = base_code(args.base)
        n = min(100_000, min(args.sizes))
        report["recall_at_10"] = {
            "what": f"vector search top 10 of {n} vs exact float32 (numpy), "
                    f"{RECALL_QUERIES} held-out queries",
            "before": round(in_base(root, RECALL, before_file(root, n), n, RECALL_QUERIES), 4),
            "after": round(recall(CACHE / f"compact-db-{n}.db", n), 4),
            "logged": round(recall(CACHE / f"size-logged-corpus-{n}.db", n), 4)}
        print(json.dumps(report["recall_at_10"]), flush=True)
        report["nfcorpus"] = nfcorpus(root)
        print(json.dumps(report["nfcorpus"]), flush=True)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
