"""Encrypted (SQLCipher 4) against plain files, in the same run: query latency per mode, the
whole `query` command, bulk `log memory`, and the SQLCipher library's own cost on a plain file.

    python bench/crypt_bench.py [--n 20000] [--runs 5] [--queries 100] [--only STEP ...]
        [--copies raw raw_sqlcipher4 passphrase]

A process uses one SQLite library (ravana_db/sql.py), so each side is measured in its own
child process (`--measure`), alternating plain and encrypted; figures are medians, ratios are
medians of the per-round ratios encrypted / plain, of wall time and of CPU time (process_time,
or the child's rusage: on a loaded machine wall time measures the other work too; the load
averages are reported). `raw_sqlcipher4` is the same key in SQLCipher 4's default format
(files encrypted before the 16k-sha256 format). Texts are real sentences (corpus.py); vectors
are the real model's when bench/cache holds texts-101000.txt and vectors-101000.npy (the lead's
cache), else random unit vectors (latency does not depend on what the vectors mean); past
101,000 (1M) the sentences repeat with a marker, as bench/run.py's 1M file. Files go to
bench/cache/crypt-*. Results are printed and written to bench/results/crypt-N.json.
"""

import argparse
import json
import os
import resource
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
    """n stored texts and `queries` held-out ones after them, with vectors; and where the
    vectors came from. Past the real cache's 101,000 (1M): its sentences (or corpus.py's)
    repeated with a marker, as bench/run.py builds its 1M file, with random unit vectors."""
    texts_file, vectors_file = CACHE / "texts-101000.txt", CACHE / "vectors-101000.npy"
    if texts_file.exists() and vectors_file.exists() and n + queries <= 101_000:
        texts = texts_file.read_text().split("\n")[:n + queries]
        return texts, np.load(vectors_file)[:n + queries], "real (bench/cache)"
    base = base_sentences(min(n, 100_000) + queries)
    stored, held = base[:-queries], base[-queries:]
    texts = [f"{t} [{r}]" if r else t for r in range(-(-n // len(stored))) for t in stored][:n]
    return texts + held, random_vectors(n, queries), "random unit vectors"


def base_sentences(count):
    """corpus.py's first `count` sentences, cached in bench/cache (the scan takes a while)."""
    cached = CACHE / f"crypt-sentences-{count}.txt"
    if cached.exists():
        return cached.read_text().split("\n")
    texts = [t.replace("\n", " ").replace("\0", "") for t in sentences(count)]
    cached.write_text("\n".join(texts))
    return texts


def random_vectors(n, queries, only_queries=False):
    """Seeded random unit vectors: n stored (unless only_queries), then `queries` held-out."""
    def unit(rows, seed):
        v = np.random.default_rng(seed).normal(size=(rows, 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    held = unit(queries, 1)
    return held if only_queries else np.concatenate([unit(n, 0), held])


def held_out(n, queries):
    """The held-out query texts and their vectors alone (what a measuring child needs)."""
    texts_file, vectors_file = CACHE / "texts-101000.txt", CACHE / "vectors-101000.npy"
    if texts_file.exists() and vectors_file.exists() and n + queries <= 101_000:
        texts, vectors, _ = texts_and_vectors(n, queries)
        return texts[n:], vectors[n:]
    return base_sentences(min(n, 100_000) + queries)[-queries:], \
        random_vectors(n, queries, only_queries=True)


def embedder_for(texts, vectors):
    from ravana_db.embed import DEFAULT_MODEL, Embedder

    class Cached(Embedder):
        """Vectors looked up, not computed: the search alone is timed."""

        def embed(self, batch):
            return np.stack([lookup[t] for t in batch])

    lookup = dict(zip(texts, vectors))
    return Cached(DEFAULT_MODEL)


def build(n, queries, copies=("raw", "raw_sqlcipher4", "passphrase")):
    """The plain file (made once), then its encrypted copies (raw key, the same in SQLCipher
    4's default format, passphrase)."""
    from run import fill

    plain = CACHE / f"crypt-plain-{n}.db"
    texts, vectors, _ = texts_and_vectors(n, queries)
    if not plain.exists():
        fill(plain, texts[:n], embedder_for(texts, vectors))
    files = {"plain": (plain, None)}
    for name in copies:
        secret = "a long passphrase for the bench" if name == "passphrase" else RAW_KEY
        key = CACHE / f"crypt-{'passphrase' if name == 'passphrase' else 'raw'}.key"
        key.write_text(secret + "\n")
        key.chmod(0o600)
        path = CACHE / f"crypt-{name}-{FORMAT[name]}-{n}.db"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            Path(tmp).unlink(missing_ok=True)
            if name == "raw_sqlcipher4":  # as a release before the 16k-sha256 format wrote it
                subprocess.run([sys.executable, "-c", SQLCIPHER4_EXPORT, str(plain), str(tmp),
                                RAW_KEY], check=True)
            else:
                subprocess.run(["cp", str(plain), str(tmp)], check=True)
                subprocess.run([*RAVANA, "--db", str(tmp), "--key-file", str(key), "-q",
                                "encrypt"], check=True)
            tmp.rename(path)
        files[name] = (path, key)
    return files


FORMAT = {"raw": "16k-sha256", "passphrase": "16k-sha256", "raw_sqlcipher4": "sqlcipher4"}
SQLCIPHER4_EXPORT = """
import sys, sqlcipher3.dbapi2 as s, sqlite_vec
conn = s.connect(sys.argv[1])
conn.enable_load_extension(True)
sqlite_vec.load(conn)
conn.execute("PRAGMA cipher_default_compatibility = 4")
conn.execute("ATTACH DATABASE ? AS e KEY ?", [sys.argv[2], "x'" + sys.argv[3] + "'"])
conn.execute("SELECT sqlcipher_export('e')").fetchall()
conn.execute("DETACH DATABASE e")
"""


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
    texts, vectors = held_out(n, queries)
    embedder = embedder_for(texts, vectors)
    started = time.perf_counter()
    db = open_db(path, create=False, write=False, key=key)
    db.execute("SELECT count(*) FROM memory").fetchone()
    opened = time.perf_counter() - started
    result = {"open_ms": round(opened * 1000, 2), "driver": sql.driver().__name__}
    for mode in MODES:
        # One warm-up query; the others still meet pages for the first time, as a command does.
        search(db, Query(texts[0], mode=mode), embedder=embedder, touch=False)
        times, cpu = [], []
        for text in texts:
            start, start_cpu = time.perf_counter(), time.process_time()
            search(db, Query(text, mode=mode, top_n=10), embedder=embedder, touch=False)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)  # every thread's (hybrid has two)
        result[mode] = statistics.median(times) * 1000
        result[f"{mode}_cpu"] = statistics.median(cpu) * 1000
    db.close()
    return result


def child(path, key, args, cipher=False):
    argv = [sys.executable, __file__, "--measure", str(path), "--n", str(args.n),
            "--queries", str(args.queries)] + (["--key-file", str(key)] if key else []) + \
        (["--cipher"] if cipher else [])
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def ratios(results, a, b):
    """Per mode: each side's median wall and CPU ms, and the medians of the per-round ratios
    a / b (wall, and CPU: what a loaded machine's scheduling does not blur)."""
    out = {}
    for mode in MODES:
        out[mode] = {}
        for what, field in (("", mode), ("cpu_", f"{mode}_cpu")):
            xs = [r[field] for r in results[a]]
            ys = [r[field] for r in results[b]]
            out[mode].update({f"{a}_{what}ms": round(statistics.median(xs), 3),
                              f"{b}_{what}ms": round(statistics.median(ys), 3),
                              f"{what}ratio": round(statistics.median(
                                  x / y for x, y in zip(xs, ys)), 3)})
    return out


def load():
    """The 1, 5 and 15 minute load averages (this machine's other work)."""
    return [round(x, 2) for x in os.getloadavg()]


def bench_in_process(files, args):
    sides = {"plain": (files["plain"][0], None, False),
             "plain_via_sqlcipher3": (files["plain"][0], None, True),
             "encrypted": (*files["raw"], False)}
    if "raw_sqlcipher4" in files:
        sides["encrypted_sqlcipher4"] = (*files["raw_sqlcipher4"], False)
    results = {name: [] for name in sides}
    before = load()
    for _ in range(args.runs):  # alternating: each round runs every side once
        for name, (path, key, cipher) in sides.items():
            results[name].append(child(path, key, args, cipher))
    return {"what": f"in-process search, top 10 of {args.n} memories, {args.queries} held-out "
                    "queries per mode (query vectors looked up: the search alone), median of "
                    f"{args.runs} alternating child processes per side",
            "load_before_after": [before, load()],
            "note": "plain reads through a 1 GiB memory map (as ravana-db opens it); SQLCipher "
                    "uses none: it decrypts pages into its page cache",
            "encrypted_vs_plain": ratios(results, "encrypted", "plain"),
            **({"encrypted_sqlcipher4_vs_plain": ratios(results, "encrypted_sqlcipher4", "plain")}
               if "encrypted_sqlcipher4" in results else {}),
            "sqlcipher3_unkeyed_vs_pysqlite3": ratios(results, "plain_via_sqlcipher3", "plain"),
            "open_ms": {name: statistics.median(r["open_ms"] for r in rs)
                        for name, rs in results.items()}}


def alternate(commands, runs):
    """Wall and CPU time (the child's user + system) of each command (argv, stdin) in turn,
    runs rounds after a warm-up one."""
    times = {name: [] for name in commands}
    for i in range(runs + 1):
        for name, (argv, stdin, before) in commands.items():
            if before:
                before()
            with open(stdin or os.devnull, "rb") as f:
                used = children_cpu()
                start = time.perf_counter()
                subprocess.run(argv, stdin=f, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True)
            if i:
                times[name].append((time.perf_counter() - start, children_cpu() - used))
    return times


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(times, baseline):
    base = times[baseline]
    return {"load": load(), **{name: {
        "median_s": round(statistics.median(t for t, _ in ts), 4),
        "ratio": round(statistics.median(t / b for (t, _), (b, _) in zip(ts, base)), 3),
        "cpu_median_s": round(statistics.median(c for _, c in ts), 4),
        "cpu_ratio": round(statistics.median(c / b for (_, c), (_, b) in zip(ts, base)), 3)}
        for name, ts in times.items()}}


def bench_query_command(files, args):
    commands = {}
    for name, (path, key) in files.items():
        argv = [*RAVANA, "--db", str(path)] + (["--key-file", str(key)] if key else [])
        commands[name] = (argv + ["query", "configuration file", "--mode", "fts", "--no-touch",
                                  "-f", "json"], None, None)
    return {"what": "whole `ravana-db query --mode fts` process (no model load), median "
                    f"of {args.runs}; ratio to plain",
            **summary(alternate(commands, args.runs), "plain")}


def bench_bulk_log(files, args, count=300, kind="memory", runs=None):
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
        times = alternate(commands, runs or args.runs)
    result = summary(times, "plain")
    what = ("real sentences (embedded with the real model)" if kind == "memory" else
            "actions holding a real sentence (nothing to embed: the write path alone)")
    return {"what": f"`ravana-db log {kind} --stdin`, {count} {what} into a new file, plain "
                    "vs encrypted (raw key); ratio to plain", **result,
            "records_per_s": {name: round(count / result[name]["median_s"], 1)
                              for name in times}}


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
    parser.add_argument("--copies", nargs="*", default=list(FORMAT),
                        help="encrypted copies to build and measure (the search step needs raw)")
    parser.add_argument("--only", nargs="*",
                        default=["search", "query", "bulk_actions", "bulk_log"])
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.key_file, args.n, args.queries,
                                 args.cipher)))
        return
    CACHE.mkdir(exist_ok=True)
    files = build(args.n, args.queries, args.copies)
    report = {"n": args.n, "vectors": "real (bench/cache)" if (CACHE / "vectors-101000.npy")
              .exists() and args.n + args.queries <= 101_000 else "random unit vectors"}
    steps = {"search": bench_in_process, "query": bench_query_command,
             "bulk_log": bench_bulk_log, "bulk_actions": bench_bulk_actions}
    for name in args.only:
        report[name] = steps[name](files, args)
        print(json.dumps({name: report[name]}, indent=2), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    saved = out / f"crypt-{args.n}.json"  # steps run before (--only) are kept
    report = {**(json.loads(saved.read_text()) if saved.exists() else {}), **report}
    saved.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
