"""Encrypted (SQLCipher 4) against plain files, in the same run: query latency per mode, the
whole `query` command, bulk `log memory`, and the SQLCipher library's own cost on a plain file.

    python bench/crypt_bench.py [--n 20000] [--runs 5] [--queries 100]

A process uses one SQLite library (ravana_db/sql.py), so each side is measured in its own
child process (`--measure`), alternating plain and encrypted; figures are medians, ratios are
encrypted / plain. Texts are real sentences (corpus.py); vectors are the real model's when
bench/cache holds texts-101000.txt and vectors-101000.npy (the lead's cache), else random unit
vectors (latency does not depend on what the vectors mean). Files go to bench/cache/crypt-*.
Results are printed and written to bench/results/crypt.json.
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
from corpus import CACHE, sentences  # noqa: E402

BIN = Path(sys.executable).parent
RAVANA = [sys.executable, "-m", "ravana_db"]
ROOT = Path(__file__).parent.parent
MODES = ("fts", "vector", "hybrid")
RAW_KEY = "5a" * 32


def texts_and_vectors(n, queries):
    """n stored texts and `queries` held-out ones, with vectors; and where the vectors came
    from."""
    texts_file, vectors_file = CACHE / "texts-101000.txt", CACHE / "vectors-101000.npy"
    if texts_file.exists() and vectors_file.exists() and n + queries <= 101_000:
        texts = texts_file.read_text().split("\n")[:n + queries]
        return texts, np.load(vectors_file)[:n + queries], "real (bench/cache)"
    texts = sentences(n + queries)
    vectors = np.random.default_rng(0).normal(size=(len(texts), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors, "random unit vectors"


def embedder_for(texts, vectors):
    from ravana_db.embed import DEFAULT_MODEL, Embedder

    class Cached(Embedder):
        """Vectors looked up, not computed: the search alone is timed."""

        def embed(self, batch):
            return np.stack([lookup[t] for t in batch])

    lookup = dict(zip(texts, vectors))
    return Cached(DEFAULT_MODEL)


def build(n, queries):
    """The plain file (made once), then its encrypted copies (raw key, passphrase)."""
    from ravana_db.db import open_db, transaction
    from ravana_db.index import apply, prepare

    plain = CACHE / f"crypt-plain-{n}.db"
    texts, vectors, _ = texts_and_vectors(n, queries)
    if not plain.exists():
        tmp = plain.with_suffix(".tmp")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        db = open_db(tmp)
        embedder = embedder_for(texts, vectors)
        with transaction(db):
            db.conn.executemany(
                "INSERT INTO memory(text, memory_type, source, created_at) VALUES (?, ?, ?, ?)",
                [(t, "fact" if i % 3 else "episodic", f"source-{i % 7}",
                  f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00.000Z")
                 for i, t in enumerate(texts[:n])])
        with transaction(db):
            apply(db, prepare(db, embedder, backlog=n))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        tmp.rename(plain)
    files = {"plain": (plain, None)}
    for name, secret in (("raw", RAW_KEY), ("passphrase", "a long passphrase for the bench")):
        path, key = CACHE / f"crypt-{name}-{n}.db", CACHE / f"crypt-{name}.key"
        key.write_text(secret + "\n")
        key.chmod(0o600)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            subprocess.run(["cp", str(plain), str(tmp)], check=True)
            subprocess.run([*RAVANA, "--db", str(tmp), "--key-file", str(key), "-q", "encrypt"],
                           check=True)
            tmp.rename(path)
        files[name] = (path, key)
    return files


def measure(path, key_file, n, queries, cipher):
    """In this process: each mode's query latency (median ms) on path, opened with the key in
    key_file (or none; cipher: through sqlcipher3 even so)."""
    from ravana_db import sql
    from ravana_db.db import open_db
    from ravana_db.keys import read
    from ravana_db.search import search
    from ravana_db.search.query import Query

    if cipher:
        sql.use_cipher()
    key = read(key_file, "bench") if key_file else None
    texts, vectors, _ = texts_and_vectors(n, queries)
    embedder = embedder_for(texts, vectors)
    started = time.perf_counter()
    db = open_db(path, create=False, write=False, key=key)
    db.execute("SELECT count(*) FROM memory").fetchone()
    opened = time.perf_counter() - started
    result = {"open_ms": round(opened * 1000, 2), "driver": sql.driver().__name__}
    for mode in MODES:
        search(db, Query(texts[n], mode=mode), embedder=embedder, touch=False)  # warm
        times = []
        for text in texts[n:n + queries]:
            start = time.perf_counter()
            search(db, Query(text, mode=mode, top_n=10), embedder=embedder, touch=False)
            times.append(time.perf_counter() - start)
        result[mode] = statistics.median(times) * 1000
    db.close()
    return result


def child(path, key, args, cipher=False):
    argv = [sys.executable, __file__, "--measure", str(path), "--n", str(args.n),
            "--queries", str(args.queries)] + (["--key-file", str(key)] if key else []) + \
        (["--cipher"] if cipher else [])
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def ratios(results, a, b):
    """Median per mode of each side, and of the per-round ratios a / b."""
    out = {}
    for mode in MODES:
        xs = [r[mode] for r in results[a]]
        ys = [r[mode] for r in results[b]]
        out[mode] = {f"{a}_ms": round(statistics.median(xs), 3),
                     f"{b}_ms": round(statistics.median(ys), 3),
                     "ratio": round(statistics.median(x / y for x, y in zip(xs, ys)), 3)}
    return out


def bench_in_process(files, args):
    sides = {"plain": (files["plain"][0], None, False),
             "plain_via_sqlcipher3": (files["plain"][0], None, True),
             "encrypted": (*files["raw"], False)}
    results = {name: [] for name in sides}
    for _ in range(args.runs):
        for name, (path, key, cipher) in sides.items():
            results[name].append(child(path, key, args, cipher))
    return {"what": f"in-process search, top 10 of {args.n} memories, {args.queries} held-out "
                    "queries per mode (query vectors looked up: the search alone), median of "
                    f"{args.runs} alternating child processes per side",
            "encrypted_vs_plain": ratios(results, "encrypted", "plain"),
            "sqlcipher3_unkeyed_vs_pysqlite3": ratios(results, "plain_via_sqlcipher3", "plain"),
            "open_ms": {name: statistics.median(r["open_ms"] for r in rs)
                        for name, rs in results.items()}}


def alternate(commands, runs):
    """Wall time of each command (argv, stdin) in turn, runs rounds after a warm-up one."""
    times = {name: [] for name in commands}
    for i in range(runs + 1):
        for name, (argv, stdin, before) in commands.items():
            if before:
                before()
            with open(stdin or os.devnull, "rb") as f:
                start = time.perf_counter()
                subprocess.run(argv, stdin=f, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True)
            if i:
                times[name].append(time.perf_counter() - start)
    return times


def summary(times, baseline):
    base = times[baseline]
    return {name: {"median_s": round(statistics.median(ts), 4),
                   "ratio": round(statistics.median(t / b for t, b in zip(ts, base)), 3)}
            for name, ts in times.items()}


def bench_query_command(files, args):
    commands = {}
    for name, (path, key) in files.items():
        argv = [*RAVANA, "--db", str(path)] + (["--key-file", str(key)] if key else [])
        commands[name] = (argv + ["query", "configuration file", "--mode", "fts", "--no-touch",
                                  "-f", "json"], None, None)
    return {"what": "whole `ravana-db query --mode fts` process (no model load), median "
                    f"of {args.runs}; ratio to plain",
            **summary(alternate(commands, args.runs), "plain")}


def bench_bulk_log(files, args, count=1000, kind="memory", runs=None):
    texts, _, _ = texts_and_vectors(args.n, args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "records.jsonl"
        record = (lambda t: {"text": f"{t} (bulk)"}) if kind == "memory" else \
            (lambda t: {"action_name": "read", "params": {"text": t}, "result": {"ok": True}})
        # A docstring may hold a NUL, which `log` refuses.
        lines.write_text("".join(json.dumps(record(t.replace("\0", ""))) + "\n"
                                 for t in texts[:count]))
        commands = {}
        for name in ("plain", "raw"):
            db = Path(tmp) / f"{name}.db"
            key = files[name][1]

            def fresh(db=db):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)

            argv = [*RAVANA, "--db", str(db)] + (["--key-file", str(key)] if key else [])
            commands[name] = (argv + ["-q", "log", kind, "--stdin"], str(lines), fresh)
        times = alternate(commands, runs or max(1, args.runs // 2))
    result = summary(times, "plain")
    what = ("real sentences (embedded with the real model)" if kind == "memory" else
            "actions holding a real sentence (nothing to embed: the write path alone)")
    return {"what": f"`ravana-db log {kind} --stdin`, {count} {what} into a new file, plain "
                    "vs encrypted (raw key); ratio to plain", **result,
            "records_per_s": {name: round(count / result[name]["median_s"], 1)
                              for name in result}}


def bench_bulk_actions(files, args):
    return bench_bulk_log(files, args, count=10_000, kind="action", runs=args.runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--measure")
    parser.add_argument("--key-file")
    parser.add_argument("--cipher", action="store_true")
    parser.add_argument("--only", nargs="*",
                        default=["search", "query", "bulk_actions", "bulk_log"])
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.key_file, args.n, args.queries,
                                 args.cipher)))
        return
    CACHE.mkdir(exist_ok=True)
    files = build(args.n, args.queries)
    report = {"n": args.n, "vectors": texts_and_vectors(args.n, args.queries)[2]}
    steps = {"search": bench_in_process, "query": bench_query_command,
             "bulk_log": bench_bulk_log, "bulk_actions": bench_bulk_actions}
    for name in args.only:
        report[name] = steps[name](files, args)
        print(json.dumps({name: report[name]}, indent=2), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "crypt.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
