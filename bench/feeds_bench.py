"""Feed ingest benchmarks: every figure a median over runs, next to a baseline measured in
the same run.

    .venv/bin/python bench/feeds_bench.py [--runs N] [--items N] [--only NAME ...]

NAME: parse, embed, lock, child, memory.
  parse  items/s of feeds.fetch_all + feeds.store(..., embedder=None) on a 1,000-item RSS 2.0 file
         (fresh database each run), next to feedparser.parse() of the same bytes (goal: >= 0.8x).
  embed  items/s of the same with the real Embedder, next to store.write of as many Memory
         records with the same searchable texts (title and summary), fresh database each run.
  lock   the write lock's longest hold during feeds.ingest of that feed (embedded): time
         between BEGIN IMMEDIATE and COMMIT, next to the whole ingest and to the hold of
         store.write of the same texts as memories.
  child  what the parse child process costs: seconds to start one, and per feed the time of
         feeds.Parser.parse (warm child: the body and the articles cross a pipe) next to
         feeds.parse() in-process, for feeds of 1, 100 and 1,000 items.
  memory peak RSS of `ravana-db ingest feeds` (a process, events included) fetching 30 feeds
         of 9 MB each and one feed of 10,000 entries over HTTP (127.0.0.1), against the goal
         of 500 MB: the process's own peak (VmHWM), the largest of it and its parse child
         (getrusage RUSAGE_CHILDREN), and their sum sampled every 20 ms; next to the same
         command fetching one small feed (baseline: the process with its model loaded).

Texts are real: sentences from the docstrings of the installed Python sources (corpus.py), as
titles and summaries. The model is loaded (and warmed up) once, outside every timing. Results
are printed as JSON.
"""

import argparse
import html
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import sentences

from ravana_db import feeds
from ravana_db.db import open_db
from ravana_db.embed import Embedder


def median(values):
    return statistics.median(values)


def feed_file(folder, n):
    """An RSS 2.0 file of n items with real sentences; returns (path, [searchable texts])."""
    texts = sentences(2 * n)
    if len(texts) < 2 * n:
        sys.exit(f"only {len(texts)} sentences found, {2 * n} wanted")
    items, searchable = [], []
    for i in range(n):
        title, summary = texts[i][:200], texts[n + i]
        searchable.append(f"{title}\n{summary}")
        day, minute = 1 + i % 28, i % 1440
        items.append(
            f"<item><title>{html.escape(title)}</title>"
            f"<link>https://bench.example/news/{i}</link>"
            f'<guid isPermaLink="false">bench-{i}</guid>'
            f"<description>{html.escape(summary)}</description>"
            f"<pubDate>{day:02d} Nov 2026 {minute // 60:02d}:{minute % 60:02d}:00 GMT"
            "</pubDate></item>")
    path = Path(folder) / "bench-feed.xml"
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
                    "<title>Bench Wire</title><link>https://bench.example/</link>"
                    + "\n".join(items) + "</channel></rss>\n", encoding="utf-8")
    return path, searchable


def fresh_db(folder, name):
    path = Path(folder) / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return open_db(path)


def ingest_once(folder, path, embedder, run):
    """fetch + store of the feed into a fresh database: (seconds, report)."""
    db = fresh_db(folder, f"feed-{run}.db")
    (row,) = feeds.subscribe(db, [path.as_uri()])
    start = time.perf_counter()
    (fetched,) = feeds.fetch_all([row])
    report = feeds.store(db, fetched, embedder=embedder)
    seconds = time.perf_counter() - start
    db.close()
    assert report["status"] == "ok" and report["new"] == len(fetched.entries), report
    return seconds, report


def bench_parse(folder, path, n, runs, **_):
    import feedparser

    body = path.read_bytes()
    ours, theirs = [], []
    for run in range(runs + 1):  # the first round warms imports and caches up
        start = time.perf_counter()
        parsed = feedparser.parse(body)
        t_parse = time.perf_counter() - start
        assert len(parsed.entries) == n
        t_ours, _ = ingest_once(folder, path, None, run)
        if run:
            theirs.append(t_parse)
            ours.append(t_ours)
    rate, base = n / median(ours), n / median(theirs)
    return {"what": f"fetch + store (no embedding, fresh file) of a {n}-item RSS 2.0 file, "
                    "next to feedparser.parse() of the same bytes",
            "items": n, "ingest_items_per_s": round(rate, 1),
            "feedparser_items_per_s": round(base, 1), "ratio": round(rate / base, 3),
            "goal_ratio": 0.8, "ingest_median_s": round(median(ours), 4),
            "feedparser_median_s": round(median(theirs), 4), "runs": len(ours)}


def write_memories(folder, texts, embedder, run, trace=None):
    """store.write of len(texts) memories with these texts into a fresh file: seconds."""
    from ravana_db.models import Memory
    from ravana_db.store import write

    db = fresh_db(folder, f"memories-{run}.db")
    if trace is not None:
        db.conn.set_trace_callback(trace)
    records = [Memory(text=t) for t in texts]
    start = time.perf_counter()
    write(db, records, embedder=embedder)
    seconds = time.perf_counter() - start
    db.close()
    return seconds


def bench_embed(folder, path, n, runs, embedder, texts, **_):
    ours, theirs = [], []
    for run in range(runs):
        ours.append(ingest_once(folder, path, embedder, run)[0])
        theirs.append(write_memories(folder, texts, embedder, run))
    rate, base = n / median(ours), n / median(theirs)
    return {"what": f"fetch + store with the real Embedder (fresh file) of the {n}-item feed, "
                    f"next to store.write of {n} memories with the same texts (title and "
                    "summary), embedded, fresh file",
            "items": n, "ingest_items_per_s": round(rate, 1),
            "write_path_items_per_s": round(base, 1), "ratio": round(rate / base, 3),
            "ingest_median_s": round(median(ours), 3),
            "write_path_median_s": round(median(theirs), 3), "runs": len(ours)}


def lock_holds(marks):
    """(BEGIN IMMEDIATE, COMMIT) pairs from traced statements: the seconds each held."""
    holds, begun = [], None
    for sql, t in marks:
        if sql == "BEGIN IMMEDIATE":
            begun = t
        elif sql in ("COMMIT", "ROLLBACK") and begun is not None:
            holds.append(t - begun)
            begun = None
    return holds


def bench_lock(folder, path, n, runs, embedder, texts, **_):
    longest, totals, transactions, memory_holds = [], [], [], []
    for run in range(runs):
        db = fresh_db(folder, f"lock-{run}.db")
        marks = []
        db.conn.set_trace_callback(
            lambda sql, marks=marks: marks.append((sql, time.perf_counter())))
        start = time.perf_counter()
        rows = feeds.subscribe(db, [path.as_uri()])
        (report,) = feeds.ingest(db, rows, embedder=embedder)
        totals.append(time.perf_counter() - start)
        db.close()
        assert report["new"] == n, report
        holds = lock_holds(marks)
        longest.append(max(holds))
        transactions.append(len(holds))
        mem_marks = []
        write_memories(folder, texts, embedder, f"lock-{run}",
                       trace=lambda sql, m=mem_marks: m.append((sql, time.perf_counter())))
        memory_holds.append(max(lock_holds(mem_marks)))
    return {"what": f"feeds.subscribe + feeds.ingest (embedded, fresh file) of the {n}-item "
                    "feed: the longest time between BEGIN IMMEDIATE and COMMIT, next to the "
                    f"whole call and to the hold of store.write of {n} memories with the same "
                    "texts",
            "lock_held_longest_median_s": round(median(longest), 3),
            "ingest_total_median_s": round(median(totals), 3),
            "lock_share": round(median(longest) / median(totals), 4),
            "write_path_lock_held_median_s": round(median(memory_holds), 3),
            "ratio_to_write_path": round(median(longest) / median(memory_holds), 3),
            "transactions_per_ingest": max(transactions), "runs": len(longest)}


def bench_child(folder, runs, **_):
    texts = sentences(2000)
    starts, rows = [], []
    for _ in range(runs):
        parser = feeds.Parser()
        start = time.perf_counter()
        parser.start()
        parser.receive.poll(parser.STARTUP)
        parser.ready = parser.receive.recv()
        starts.append(time.perf_counter() - start)
        parser.close()
    with feeds.Parser() as parser:
        for n in (1, 100, 1000):
            body = rss_bytes("Child", texts[:n], texts[n:2 * n] if n < 1000 else texts[:n])
            inside, child = [], []
            for run in range(runs + 1):  # the first round warms the child up
                start = time.perf_counter()
                feeds.parse(body, url="https://bench.example/feed.xml")
                t_inside = time.perf_counter() - start
                start = time.perf_counter()
                parser.parse(body, url="https://bench.example/feed.xml", content_type=None,
                             seconds=600, timeout=600)
                if run:
                    inside.append(t_inside)
                    child.append(time.perf_counter() - start)
            rows.append({"items": n, "bytes": len(body),
                         "in_process_median_s": round(median(inside), 5),
                         "child_median_s": round(median(child), 5),
                         "added_per_feed_ms": round(1000 * (median(child) - median(inside)), 2),
                         "ratio": round(median(child) / median(inside), 3)})
    return {"what": "the parse child: start (a new interpreter, imports) once per run that "
                    "parses, and per feed Parser.parse next to feeds.parse() in-process",
            "start_median_s": round(median(starts), 3), "feeds": rows, "runs": runs}


def rss_bytes(title, titles, summaries, *, pad=0):
    """An RSS 2.0 document: one item per title, each description padded to `pad` characters
    with the summaries' sentences."""
    items = []
    for i, (head, summary) in enumerate(zip(titles, summaries)):
        text = summary
        while len(text) < pad:
            text += " " + summaries[(i + len(text)) % len(summaries)]
        items.append(f"<item><title>{html.escape(head[:200])}</title>"
                     f"<link>https://bench.example/{title}/{i}</link>"
                     f'<guid isPermaLink="false">{title}-{i}</guid>'
                     f"<description>{html.escape(text)}</description></item>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>{title}</title><link>https://bench.example/</link>"
            + "\n".join(items) + "</channel></rss>\n").encode()


# `python -m ravana_db` that writes its own peak RSS (VmHWM) to $PEAK_FILE as it exits.
PEAK_MAIN = """
import atexit, os, re
def peak():
    status = open("/proc/self/status").read()
    open(os.environ["PEAK_FILE"], "w").write(re.search(r"VmHWM:\\s*(\\d+)", status)[1])
atexit.register(peak)
from ravana_db.cli import main
main()
"""


def tree_rss_kb(pid):
    """The RSS of a process and its descendants now, in kB (0 once it has gone). A child that
    has not exec'd yet (its command line is still its parent's) is skipped: its RSS is the
    parent's pages, counted already."""
    total, todo = 0, [(pid, None)]
    while todo:
        pid, parent = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if cmdline == parent:
                continue
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += ((child, cmdline) for child in
                         map(int, (task / "children").read_text().split()))
        except (OSError, StopIteration, ValueError):
            continue
    return total


def peak_rss(folder, name, urls):
    """Run `ravana-db ingest feeds URLS` to its end: (own peak MB, largest single process MB,
    sampled tree peak MB, seconds, exit code)."""
    import resource
    import subprocess

    db, peak_file = Path(folder) / f"{name}.db", Path(folder) / f"{name}.peak"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start, tree = time.perf_counter(), 0
    proc = subprocess.Popen([sys.executable, "-c", PEAK_MAIN, "--db", str(db), "--quiet",
                             "ingest", "feeds", *urls], env={**os.environ,
                             "PEAK_FILE": str(peak_file)})
    while proc.poll() is None:
        tree = max(tree, tree_rss_kb(proc.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if largest <= before:
        largest = None  # an earlier, bigger child hides this one's figure
    own = int(peak_file.read_text())
    return own / 1024, largest and largest / 1024, tree / 1024, seconds, proc.returncode


def _mb(value):
    return value if value is None else round(value, 1)


def bench_memory(folder, **_):
    import functools
    import http.server
    import threading

    served = Path(folder) / "served"
    served.mkdir()
    texts = sentences(12000)
    for n in range(30):  # 20 long items each: 600 texts of 256 tokens to embed in all
        body = rss_bytes(f"big{n}", texts[n * 20:(n + 1) * 20], texts[3000:6000],
                         pad=450_000)
        (served / f"big{n}.xml").write_bytes(body)
    many = rss_bytes("many", texts[:10_000], texts[1000:11000] + texts[:1000])
    (served / "many.xml").write_bytes(many)
    (served / "small.xml").write_bytes(rss_bytes("small", texts[:20], texts[20:40]))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        small = peak_rss(folder, "small", [f"{base}/small.xml"])
        urls = [f"{base}/big{n}.xml" for n in range(30)] + [f"{base}/many.xml"]
        big = peak_rss(folder, "big", urls)
    finally:
        httpd.shutdown()
    sizes = [(served / f"big{n}.xml").stat().st_size for n in range(30)]
    assert big[4] == 0 and small[4] == 0, (big, small)
    return {"what": "peak RSS of `ravana-db ingest feeds` (events included) of 30 feeds of "
                    f"{median(sizes) / 1e6:.1f} MB ({sum(sizes) / 1e6:.0f} MB in all, 20 items "
                    f"each) and one of 10,000 entries ({len(many) / 1e6:.1f} MB) over HTTP, "
                    "next to the same command on one 20-item feed",
            "peak_rss_mb": _mb(big[0]), "largest_process_mb": _mb(big[1]),
            "sampled_tree_peak_mb": _mb(big[2]), "seconds": round(big[3], 1),
            "baseline_peak_rss_mb": _mb(small[0]), "baseline_tree_peak_mb": _mb(small[2]),
            "ratio_to_baseline": round(big[2] / small[2], 2), "goal_mb": 500,
            "under_goal": max(big[0], big[2]) < 500}


BENCHES = {"parse": bench_parse, "embed": bench_embed, "lock": bench_lock,
           "child": bench_child, "memory": bench_memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--runs", type=int, default=3, help="runs of each timing (>= 3)")
    parser.add_argument("--items", type=int, default=1000, help="items in the feed")
    args = parser.parse_args()
    runs = max(args.runs, 3)
    results = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as folder:
        path, texts = feed_file(folder, args.items)
        embedder = Embedder()
        embedder.embed(["warm up"])  # model load excluded from every timing
        for name in args.only:
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = BENCHES[name](folder=folder, path=path, n=args.items, runs=runs,
                                          embedder=embedder, texts=texts)
            print(json.dumps({name: results[name]}, indent=2), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
