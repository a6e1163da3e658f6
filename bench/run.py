"""ravana-db benchmarks: every figure a median, next to a baseline measured in the same run.

    python bench/run.py [--only NAME ...] [--runs N]

NAME: lock, quality, fts_startup, bulk_log, bulk_log_sorted, vector, hybrid, filters, stream.
Databases and embeddings are built once into bench/cache/ (git-ignored); the first run takes a
while (embedding ~100k real sentences).
Results are printed and written to bench/results/latest.json.

Texts are real: sentences from the docstrings of the installed Python sources (corpus.py),
embedded with the real model. The 1M-row database repeats the 100k sentences with a marker and
their vectors with a little noise, to show how latency grows; its vectors are not used for recall.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CACHE, embedded  # noqa: E402

from ravana_db.db import open_db, transaction  # noqa: E402
from ravana_db.embed import DEFAULT_MODEL, Embedder, default_model_folder  # noqa: E402
from ravana_db.index import apply, prepare  # noqa: E402
from ravana_db.search import search  # noqa: E402
from ravana_db.search.query import Query

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
STORED, QUERIES = 100_000, 1_000


class CachedEmbedder(Embedder):
    """The real model's vectors, looked up instead of recomputed (they were made by it)."""

    def __init__(self, texts, vectors):
        super().__init__(DEFAULT_MODEL)
        self.lookup = dict(zip(texts, vectors))

    def embed(self, texts):
        return np.stack([self.lookup[t] for t in texts])


def median(values):
    return statistics.median(values)


def corpus():
    texts, vectors = embedded(STORED + QUERIES)
    return texts[:STORED], vectors[:STORED], texts[STORED:], vectors[STORED:]


def build(n, path=None):
    """A database of n memories (10k and 100k: real sentences; 1M: variants of them), at
    bench/cache/db-N.db unless path is given."""
    path = path or CACHE / f"db-{n}.db"
    if path.exists():
        return path
    texts, vectors, _, _ = corpus()
    if n <= STORED:
        texts, vectors = texts[:n], vectors[:n]
    else:
        rng = np.random.default_rng(0)
        reps = n // STORED
        texts = [f"{t} [{r}]" if r else t for r in range(reps) for t in texts]
        noisy = [vectors] + [vectors + rng.normal(0, 0.025, vectors.shape).astype(np.float32)
                             for _ in range(reps - 1)]
        vectors = np.concatenate(noisy)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return fill(path, texts, CachedEmbedder(texts, vectors))


def bench_row(i, text):
    """The i-th bench memory's columns: three types, seven sources, a date a day apart."""
    return {"text": text, "memory_type": "fact" if i % 3 else "episodic",
            "source": f"source-{i % 7}",
            "created_at": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00.000Z"}


def fill(path, texts, embedder, row=bench_row, step=50_000):
    """A new file at path (written as path.tmp, renamed when done) holding texts as memories
    (row(i, text): their columns) indexed with embedder's vectors, step rows a transaction."""
    tmp = path.with_suffix(".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    db = open_db(tmp)
    for start in range(0, len(texts), step):
        rows = [row(i, t) for i, t in enumerate(texts[start:start + step], start)]
        columns = list(rows[0])
        with transaction(db):
            db.conn.executemany(
                f"INSERT INTO memory({', '.join(columns)}) VALUES "
                f"({', '.join('?' * len(columns))})", [[r[c] for c in columns] for r in rows])
        with transaction(db):
            apply(db, prepare(db, embedder, backlog=step))
        print(f"  built {start + len(rows)}/{len(texts)}", file=sys.stderr, flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    tmp.rename(path)
    return path


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def alternate(a, b, runs):
    """Run two commands in turn, A B A B ...; returns their wall times (after one warm-up)."""
    times = {"a": [], "b": []}
    for i in range(runs + 1):
        for name, cmd in (("a", a), ("b", b)):
            start = time.perf_counter()
            subprocess.run(cmd["argv"], stdin=open(cmd.get("stdin", os.devnull), "rb"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           shell=isinstance(cmd["argv"], str))
            if i:
                times[name].append(time.perf_counter() - start)
    return times


def pairs(times):
    ratios = [a / b for a, b in zip(times["a"], times["b"])]
    return {"a_median_s": round(median(times["a"]), 4), "b_median_s": round(median(times["b"]), 4),
            "ratio_median": round(median(ratios), 3), "runs": len(ratios)}


def bench_quality(runs):
    from quality import evaluate

    return evaluate()


def bench_fts_startup(runs):
    db = build(STORED)
    query = [str(BIN / "ravana-db"), "--db", str(db), "query", "database connection timeout",
             "--mode", "fts", "--no-touch", "--format", "json"]
    bare = [sys.executable, "-c", "import typer, rich, sqlite_utils, pysqlite3.dbapi2"]
    result = pairs(alternate({"argv": query}, {"argv": bare}, max(runs, 10)))
    result["what"] = "A: ravana-db query --mode fts on 100k memories; B: python -c 'import " \
                     "typer, rich, sqlite_utils, pysqlite3'"
    return result


def bench_bulk_log(runs, n=10_000, sort=False):
    texts = corpus()[0][:n]
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "memories.jsonl"
        lines.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        plain = Path(tmp) / "texts.json"
        plain.write_text(json.dumps(texts))
        db = Path(tmp) / "bulk.db"
        log = f"rm -f {db}*; {BIN / 'ravana-db'} --db {db} --quiet log memory --stdin"
        direct = [sys.executable, str(Path(__file__).parent / "embed_direct.py"), str(plain),
                  str(default_model_folder()), *(["--sorted"] if sort else [])]
        times = alternate({"argv": log, "stdin": str(lines)}, {"argv": direct}, max(1, runs))
        with open_db(db, create=False) as check:
            stored = check.execute("SELECT count(*) FROM doc_vec").fetchone()[0]
    result = pairs(times)
    result.update(
        what=f"A: ravana-db log memory --stdin, {n} real sentences, one transaction, embedded; "
             f"B: fastembed called directly on the same texts (same model, batch 32"
             f"{', texts sorted by length as ravana-db does' if sort else ', input order'})",
        stored_vectors=stored, a_texts_per_s=round(n / result["a_median_s"], 1),
        b_texts_per_s=round(n / result["b_median_s"], 1),
        rate_vs_direct=round(1 / result["ratio_median"], 3))
    return result


def bench_vector(runs, n=STORED, queries=200):
    texts, vectors, qtexts, qvectors = corpus()
    db = open_db(build(n), create=False)
    embedder = CachedEmbedder(qtexts, qvectors)
    matrix = np.ascontiguousarray(vectors[:n])
    ours, brute, ratios, recall = [], [], [], []
    for text, vector in zip(qtexts[:queries], qvectors[:queries]):
        t_brute, exact = timed(lambda v=vector: np.argpartition(-(matrix @ v), 10)[:10])
        q = Query(text, mode="vector", top_n=10)
        t_ours, found = timed(search, db, q, embedder=embedder, touch=False)
        ours.append(t_ours)
        brute.append(t_brute)
        ratios.append(t_ours / t_brute)
        # Memories were stored in corpus order: row i has memory id i + 1.
        recall.append(len({int(i) + 1 for i in exact} & {r["id"] for r in found}) / 10)
    db.close()
    return {"what": f"vector search, top 10 of {n} real embeddings, {queries} held-out queries; "
                    "baseline: numpy brute force (matrix @ q, argpartition) in memory",
            "ours_median_ms": round(median(ours) * 1000, 2),
            "numpy_median_ms": round(median(brute) * 1000, 2),
            "ratio_median": round(median(ratios), 3),
            "recall_at_10": round(float(np.mean(recall)), 4)}


def bench_hybrid(runs, sizes=(10_000, 100_000, 1_000_000), queries=100):
    _, _, qtexts, _ = corpus()
    embedder = Embedder(threads=1)  # as `ravana-db query` loads it
    embedder.embed(["warm up"])  # model load excluded
    report = {"what": "in-process hybrid query (embedding the query included, model load "
                      "excluded), top 5; baseline: embedding the query alone; and the same "
                      "query with --kind memory and with all four filters"}
    for n in sizes:
        db = open_db(build(n), create=False)
        search(db, Query("warm up"), embedder=embedder, touch=False)
        times = {"hybrid": [], "embed": [], "kind": [], "all four": []}
        for text in qtexts[:queries]:
            times["hybrid"].append(timed(search, db, Query(text), embedder=embedder,
                                         touch=False)[0])
            times["embed"].append(timed(embedder.embed, [text])[0])
            for name in ("kind", "all four"):
                times[name].append(timed(search, db, Query(text, **FILTERS[name]),
                                         embedder=embedder, touch=False)[0])
        db.close()
        ms = {name: median(t) * 1000 for name, t in times.items()}
        report[f"{n}"] = {"hybrid_median_ms": round(ms["hybrid"], 2),
                          "embed_median_ms": round(ms["embed"], 2),
                          "ratio_median": round(ms["hybrid"] / ms["embed"], 2)}
        for name in ("kind", "all four"):
            report[f"{n}"][f"{name}_median_ms"] = round(ms[name], 2)
            report[f"{n}"][f"{name}_ratio_to_unfiltered"] = round(ms[name] / ms["hybrid"], 2)
    return report


FILTERS = {"none": {}, "kind": {"kind": "memory"}, "type": {"type": "fact"},
           "source": {"source": "source-3"}, "since": {"since": "2026-07-01"},
           "all four": {"kind": "memory", "type": "fact", "source": "source-3",
                        "since": "2026-07-01"}}


def bench_filters(runs, n=STORED, queries=100):
    """Each mode with each filter against no filter, on the same queries in one run."""
    _, _, qtexts, qvectors = corpus()
    embedder = CachedEmbedder(qtexts, qvectors)  # the search alone, not the query's embedding
    db = open_db(build(n), create=False)
    report = {"what": f"in-process search of {n} memories, top 10, {queries} held-out queries "
                      "(query vectors precomputed): median ms with each filter, and its ratio "
                      "to no filter"}
    for mode in ("fts", "vector", "hybrid"):
        times = {name: [] for name in FILTERS}
        for text in qtexts[:queries]:
            for name, options in FILTERS.items():
                q = Query(text, mode=mode, top_n=10, **options)
                times[name].append(timed(search, db, q, embedder=embedder, touch=False)[0])
        base = median(times["none"])
        report[mode] = {name: {"median_ms": round(median(t) * 1000, 2),
                               "ratio": round(median(t) / base, 2)}
                        for name, t in times.items()}
    db.close()
    return report


def bench_stream(runs, n=10_000, queries=30):
    """Per-query latency through one open `query --stdin` process (ask, read the answer, ask
    again) against one `ravana-db query` process per question."""
    _, _, qtexts, _ = corpus()
    db = build(n)
    cmd = [str(BIN / "ravana-db"), "--db", str(db), "query", "--no-touch", "--top-n", "5"]
    proc = subprocess.Popen([*cmd, "--stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    open_process = []
    for text in ["warm up", *qtexts[:queries]]:  # the first answer pays for the model load
        start = time.perf_counter()
        proc.stdin.write(json.dumps({"text": text}) + "\n")
        proc.stdin.flush()
        proc.stdout.readline()
        open_process.append(time.perf_counter() - start)
    proc.stdin.close()
    proc.wait()
    per_process = []
    for text in qtexts[:max(runs, 10)]:
        start = time.perf_counter()
        subprocess.run([*cmd, text, "--format", "json"], stdout=subprocess.DEVNULL, check=True)
        per_process.append(time.perf_counter() - start)
    return {"what": f"hybrid query of {n} memories: one open `query --stdin` process (after its "
                    "first answer) against a new `ravana-db query` process per question",
            "open_process_median_ms": round(median(open_process[1:]) * 1000, 1),
            "first_answer_ms": round(open_process[0] * 1000, 1),
            "process_per_query_median_ms": round(median(per_process) * 1000, 1),
            "ratio_median": round(median(per_process) / median(open_process[1:]), 1)}


def bench_lock(runs, n=1000):
    """How long one `write` of n memories holds the write lock, next to its whole time."""
    from corpus import sentences

    from ravana_db.models import Memory
    from ravana_db.store import write

    texts = sentences(n)
    embedder = Embedder()
    embedder.embed(["warm up"])  # model load excluded
    held, total = [], []
    for run in range(max(runs, 3)):
        with tempfile.TemporaryDirectory() as tmp:
            db = open_db(Path(tmp) / "lock.db")
            begun = []
            # BEGIN IMMEDIATE takes the lock, COMMIT releases it: time between them.
            db.conn.set_trace_callback(
                lambda sql, begun=begun: begun.append((sql, time.perf_counter())))
            records = [Memory(text=f"{t} ({run})") for t in texts]
            seconds, _ = timed(write, db, records, embedder=embedder)
            marks = [t for sql, t in begun if sql in ("BEGIN IMMEDIATE", "COMMIT")]
            held.append(marks[-1] - marks[-2])
            total.append(seconds)
            db.close()
    return {"what": f"store.write of {n} real sentences as memories (embedded, fresh file): "
                    "time between BEGIN IMMEDIATE and COMMIT, next to the whole call",
            "lock_held_median_s": round(median(held), 3),
            "total_median_s": round(median(total), 3),
            "lock_share": round(median(held) / median(total), 4), "runs": len(held)}


BENCHES = {"lock": bench_lock, "quality": bench_quality, "fts_startup": bench_fts_startup,
           "bulk_log": bench_bulk_log,
           "bulk_log_sorted": lambda runs: bench_bulk_log(runs, sort=True),
           "vector": bench_vector, "hybrid": bench_hybrid, "filters": bench_filters,
           "stream": bench_stream}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--runs", type=int, default=3, help="runs of each whole-process timing")
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    for name in args.only:
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = BENCHES[name](args.runs)
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
