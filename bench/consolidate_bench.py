"""Consolidation at 10k, 30k and 100k memories, 5 % of them near-duplicates: time per run
(median of fresh copies) and merge counts; the time should grow about linearly. With
--baseline DIR, each copy is also consolidated by the code in DIR (a checkout of today's
main, say), each run in its own process, and the ratio of the medians is printed.

Memories are real sentences from the NFCorpus abstracts (/work/shared/eval/nfcorpus or
$NFCORPUS), topped up with docstring sentences (bench/corpus.py); a near-duplicate is one of
them with its case, punctuation, an article or an inflection changed, or a word replaced by
one of the same first WordNet sense (what the second check, consolidate/meaning.py, merges).
Setup only: embedding
every text with the model would take far longer than the runs measured, so each distinct
sentence gets a random unit vector (a near-duplicate its original's vector plus a little
noise, cosine about 0.97), stored through index.apply, the write path's own vector code. The
consolidation itself is the real code path.

    make install  # ravana_db importable
    python bench/consolidate_bench.py [--sizes 10000,30000,100000] [--repeat 3] \
        [--baseline /path/to/main]
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
import subprocess
import sys
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


def first_sense_synonyms():
    """{word: [other words whose first WordNet sense is the word's]} (lemmas only)."""
    from ravana_db.consolidate import wordnet

    by_sense, first = {}, {}
    for pos in wordnet.POS:
        with open(wordnet.folder() / f"index.{wordnet.POS[pos]}", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if line.startswith(" ") or not fields[0].isalpha():
                    continue
                offset = int(fields[6 + int(fields[3])])
                first.setdefault(fields[0], (pos, offset))
                by_sense.setdefault((pos, offset), []).append(fields[0])
    return {w: [x for x in by_sense[sense] if x != w] for w, sense in first.items()
            if len(by_sense[sense]) > 1}


SYNONYMS = None


def variant(text, rng):
    """The same sentence as someone else might have logged it."""
    global SYNONYMS
    change = rng.randrange(5)
    if change == 4:
        SYNONYMS = SYNONYMS or first_sense_synonyms()
        words = [w for w in re.findall(r"\b[a-z]{4,}\b", text) if w in SYNONYMS]
        if words:
            w = rng.choice(words)
            return re.sub(rf"\b{w}\b", rng.choice(SYNONYMS[w]), text, count=1)
        change = 0
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


def run_in(code, path):
    """One run by the code in folder `code` (ravana_db importable from it), in its own
    process: (seconds, {merged, linked})."""
    out = subprocess.run([sys.executable, __file__, "--run-one", str(path)], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(code)}).stdout
    result = json.loads(out)
    return result["seconds"], result


def fresh(template, copy):
    shutil.copyfile(template, copy)
    return copy


def clean(copy):
    for suffix in ("", "-wal", "-shm", ".consolidate.lock"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="also time the code in DIR")
    parser.add_argument("--run-one", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        seconds, report = run(Path(args.run_one))
        print(json.dumps({"seconds": seconds, "merged": report["merged"],
                          "linked": report["linked"], "processed": report["processed"]}))
        return
    ours = Path(__file__).resolve().parent.parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.sizes.split(",")):
            template = Path(tmp) / f"template-{n}.db"
            started = time.perf_counter()
            variants = build(template, n, random.Random(n))
            setup = time.perf_counter() - started
            times, base, report, before = [], [], None, None
            for i in range(args.repeat):
                # Alternate which code goes first, so neither always gets a warmer cache.
                order = [("ours", ours), ("baseline", args.baseline)][::1 if i % 2 == 0 else -1]
                for name, code in order:
                    if code is None:
                        continue
                    copy = fresh(template, Path(tmp) / f"run-{n}-{i}-{name}.db")
                    seconds, result = run_in(code, copy)
                    clean(copy)
                    if name == "ours":
                        times.append(seconds)
                        report = result
                    else:
                        base.append(seconds)
                        before = result
            row = {"memories": n, "near_duplicates": variants,
                   "median_seconds": round(statistics.median(times), 2),
                   "runs": [round(t, 2) for t in times],
                   "per_1k_memories": round(statistics.median(times) / n * 1000, 3),
                   "merged": report["merged"], "linked": report["linked"],
                   "processed": report["processed"], "setup_seconds": round(setup, 1)}
            if base:
                row.update(baseline_median_seconds=round(statistics.median(base), 2),
                           baseline_runs=[round(t, 2) for t in base],
                           baseline_merged=before["merged"], baseline_linked=before["linked"],
                           ratio=round(statistics.median(times) / statistics.median(base), 2))
            rows.append(row)
            print(json.dumps(row), flush=True)
    first, last = rows[0], rows[-1]
    growth = last["median_seconds"] / first["median_seconds"]
    print(f"{first['memories']} -> {last['memories']} memories "
          f"({last['memories'] / first['memories']:.0f}x): time {growth:.1f}x" + (
              f"; ratio to the baseline {', '.join(str(r['ratio']) for r in rows)}"
              if args.baseline else ""))


if __name__ == "__main__":
    main()
