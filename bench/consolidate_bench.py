"""Consolidation at 10k, 30k and 100k memories, 5 % of them near-duplicates: time per run
(median of fresh copies) and merge counts; the time should grow about linearly.

Memories are real sentences from the NFCorpus abstracts (/work/shared/eval/nfcorpus or
$NFCORPUS), topped up with docstring sentences (bench/corpus.py); a near-duplicate is one of
them with its case, punctuation, an article or an inflection changed. Setup only: embedding
every text with the model would take far longer than the runs measured, so each distinct
sentence gets a random unit vector (a near-duplicate its original's vector plus a little
noise, cosine about 0.97), stored through index.apply, the write path's own vector code. The
consolidation itself is the real code path.

    make install  # ravana_db importable
    python bench/consolidate_bench.py [--sizes 10000,30000,100000] [--repeat 3]
"""

import argparse
import contextlib
import gzip
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ravana_db.consolidate import consolidate
from ravana_db.db import open_db, transaction
from ravana_db.embed import Embedder
from ravana_db.hashing import sha256
from ravana_db.index import Prepared, apply, signatures
from ravana_db.vectors import encode, key

CORPUS = Path(os.environ.get("NFCORPUS", "/work/shared/eval/nfcorpus")) / "corpus.jsonl.gz"


def sentences(limit):
    out, seen = [], set()
    with gzip.open(CORPUS, "rt") as f:
        for line in f:
            for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]):
                if 40 <= len(s) <= 300 and s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) >= limit:
                        return out
    # NFCorpus holds about 40k such sentences: the rest are docstring sentences of the
    # installed Python sources (bench/corpus.py), as the search benchmark uses.
    from corpus import sentences as docstrings

    for s in docstrings(limit * 2):
        if s not in seen:
            seen.add(s)
            out.append(s)
            if len(out) >= limit:
                return out
    raise SystemExit(f"only {len(out)} sentences found; fewer sizes please")


def variant(text, rng):
    """The same sentence as someone else might have logged it."""
    change = rng.randrange(4)
    if change == 0:
        return text.lower()
    if change == 1:
        return text.rstrip(".") + "!"
    if change == 2:
        return re.sub(r"\bthe\b", "a", text, count=1) if " the " in text else text + " "
    return re.sub(r"\b(\w{4,})s\b", r"\1", text, count=1)


def build(path, n, rng, dim=384):
    """A file of n memories (5 % near-duplicates) with vectors; returns the variants' count."""
    import numpy as np

    base = sentences(int(n * 0.95))
    originals = [rng.choice(base) for _ in range(n - len(base))]
    texts = base + [variant(t, rng) for t in originals]
    noise = np.random.default_rng(n)

    def unit(m):
        return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)

    matrix = unit(noise.standard_normal((len(base), dim)))
    index = {t: i for i, t in enumerate(base)}
    near = unit(matrix[[index[t] for t in originals]] +
                0.25 / np.sqrt(dim) * noise.standard_normal((len(originals), dim)))
    vectors = {**dict(zip(texts[len(base):], near)), **dict(zip(base, matrix))}
    db = open_db(path)
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO memory(text, created_at, content_hash) VALUES (?, ?, ?)",
            [(t, "2026-01-01T00:00:00.000Z", sha256(t)) for t in texts])
    blobs = dict(zip(map(key, vectors), encode(np.stack(list(vectors.values())))))
    prepared = Prepared(model=(Embedder().name, dim))
    prepared.vectors = dict(zip(blobs, zip(blobs.values(), signatures(list(blobs.values())))))
    with transaction(db):
        apply(db, prepared, [r[0] for r in db.execute("SELECT doc_id FROM embed_queue")])
    db.conn.close()
    return len(originals)


def run(path):
    db = open_db(path)
    with contextlib.closing(db.conn):
        started = time.perf_counter()
        report = consolidate(db, path=path, embedder=Embedder(), type="event_triggered")
        return time.perf_counter() - started, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.sizes.split(",")):
            template = Path(tmp) / f"template-{n}.db"
            started = time.perf_counter()
            variants = build(template, n, random.Random(n))
            setup = time.perf_counter() - started
            times, report = [], None
            for i in range(args.repeat):
                copy = Path(tmp) / f"run-{n}-{i}.db"
                shutil.copyfile(template, copy)
                seconds, report = run(copy)
                times.append(seconds)
                for suffix in ("", "-wal", "-shm", ".consolidate.lock"):
                    Path(f"{copy}{suffix}").unlink(missing_ok=True)
            row = {"memories": n, "near_duplicates": variants,
                   "median_seconds": round(statistics.median(times), 2),
                   "runs": [round(t, 2) for t in times],
                   "per_1k_memories": round(statistics.median(times) / n * 1000, 3),
                   "merged": report["merged"], "linked": report["linked"],
                   "processed": report["processed"], "setup_seconds": round(setup, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    first, last = rows[0], rows[-1]
    growth = last["median_seconds"] / first["median_seconds"]
    print(f"{first['memories']} -> {last['memories']} memories "
          f"({last['memories'] / first['memories']:.0f}x): time {growth:.1f}x")


if __name__ == "__main__":
    main()
