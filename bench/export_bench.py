"""Export and backup throughput on 1M rows, next to plain sqlite3 doing the same in this run.

    .venv/bin/python bench/export_bench.py [--rows N] [--runs N] [--only NAME ...]

NAME: jsonl, csv, backup.
  jsonl   `ravana-db export actionlog --format jsonl --output F`, next to a Python cursor loop
          writing the same JSON lines (json.dumps per row) and `sqlite3 FILE -json` (an array).
  csv     `... --format csv --output F`, next to a Python csv.writer loop and `sqlite3 -csv`.
  backup  `ravana-db export backup F` (VACUUM INTO, integrity_check, rename), next to the
          sqlite3 shell's `.backup F` (page copy), `VACUUM INTO F`, and `VACUUM INTO F` followed
          by `PRAGMA integrity_check` on the copy (the same work as ours, without the rename).

The file holds N actionlog rows (default 1,000,000: an action name, a timestamp, a small JSON
params object and a JSON result), written with plain SQL in one transaction (actionlog is not
searchable: no embedding). Every figure is a whole process, the median of --runs (3) runs, with
that process's peak resident memory (GNU time's %M). Results are printed as JSON and
written to bench/results/export.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ravana_db.db import open_db

ROOT = Path(__file__).parent.parent
RAVANA = [str(Path(sys.executable).parent / "ravana-db")]
SQLITE3 = shutil.which("sqlite3")
TIME = "/usr/bin/time"  # GNU time: peak memory of exactly one process

PY_JSONL = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
cursor = conn.execute("SELECT * FROM actionlog ORDER BY rowid")
columns = [d[0] for d in cursor.description]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for row in cursor:
        f.write(json.dumps(dict(zip(columns, row)), ensure_ascii=False) + "\\n")
"""
PY_CSV = """
import csv, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
cursor = conn.execute("SELECT * FROM actionlog ORDER BY rowid")
with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow([d[0] for d in cursor.description])
    writer.writerows(cursor)
"""


def build(path, n):
    """n actionlog rows through plain SQL, one transaction."""
    db = open_db(path)
    actions = ["search", "fetch_feeds", "summarize", "reflect", "write_file", "plan"]

    def stamp(i):  # one row a second from 2026-01-01
        day, second = divmod(i, 86_400)
        return (f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{second // 3600:02d}:"
                f"{second // 60 % 60:02d}:{second % 60:02d}.000Z")

    def rows():
        for i in range(n):
            yield (stamp(i), actions[i % len(actions)],
                   json.dumps({"query": f"item {i}, \"quoted\"", "limit": i % 50, "deep": True}),
                   "success" if i % 7 else "failure", json.dumps({"hits": i % 13, "ms": i % 997}))

    db.conn.execute("BEGIN")
    db.conn.executemany("INSERT INTO actionlog(timestamp, action_name, params, status, result) "
                        "VALUES (?, ?, ?, ?, ?)", rows())
    db.conn.execute("COMMIT")
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()


def timed(argv, *, stdout=None):
    """(seconds, peak RSS in MiB) of one process, measured by /usr/bin/time (wait4's figure for
    a child of this process would include the pages it shared with us before exec)."""
    with tempfile.NamedTemporaryFile("r") as report, \
            (open(stdout, "wb") if stdout else open(os.devnull, "wb")) as out:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M", "-o", report.name, *argv], stdout=out,
                              stderr=subprocess.PIPE, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"failed: {' '.join(map(str, argv))}: {proc.stderr.decode()}")
        return seconds, int(report.read().split()[-1]) / 1024


def measure(name, argv, output, rows, runs, *, stdout=False, then=None):
    """Median seconds, rows/s and peak memory of argv over runs (output removed before each)."""
    times, peaks = [], []
    for _ in range(runs):
        Path(output).unlink(missing_ok=True)
        seconds, peak = timed(argv, stdout=output if stdout else None)
        if then:
            more, more_peak = timed(then)
            seconds, peak = seconds + more, max(peak, more_peak)
        times.append(seconds)
        peaks.append(peak)
    result = {"seconds": round(statistics.median(times), 3),
              "rows_per_s": round(rows / statistics.median(times)),
              "peak_rss_mib": round(max(peaks), 1),
              "output_mib": round(os.path.getsize(output) / 2**20, 1)}
    print(f"  {name}: {result['seconds']} s, {result['rows_per_s']:,} rows/s, "
          f"{result['peak_rss_mib']} MiB", file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["jsonl", "csv", "backup"])
    args = parser.parse_args()
    if not SQLITE3 or not os.access(TIME, os.X_OK):
        sys.exit("needs the sqlite3 shell and GNU time (apt-get install sqlite3 time)")
    folder = Path(tempfile.mkdtemp(prefix="ravana-export-bench-"))
    try:
        db = folder / "bench.db"
        start = time.perf_counter()
        build(db, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - start:.1f} s "
              f"({db.stat().st_size / 2**20:.0f} MiB)", file=sys.stderr)
        out = folder / "out"
        ours = [*RAVANA, "--db", str(db), "--quiet", "export"]
        results = {"rows": args.rows, "runs": args.runs, "cpus": os.cpu_count(),
                   "python": sys.version.split()[0],
                   "sqlite3_shell": subprocess.run([SQLITE3, "--version"], capture_output=True,
                                                   text=True, check=True).stdout.split()[0],
                   "file_mib": round(db.stat().st_size / 2**20, 1)}
        results["startup"] = {
            "ravana-db export feed --output F (an empty table: the fixed cost)": measure(
                "startup", [*ours, "feed", "--output", str(out)], out, args.rows, args.runs)}
        if "jsonl" in args.only:
            results["jsonl"] = {
                "ravana-db export actionlog --format jsonl --output F": measure(
                    "ours", [*ours, "actionlog", "--format", "jsonl", "--output", str(out)],
                    out, args.rows, args.runs),
                "python sqlite3 cursor loop, json.dumps per row": measure(
                    "python", [sys.executable, "-c", PY_JSONL, str(db), str(out)], out,
                    args.rows, args.runs),
                "sqlite3 FILE -json 'select * from actionlog' > F": measure(
                    "sqlite3", [SQLITE3, "-json", str(db), "SELECT * FROM actionlog"], out,
                    args.rows, args.runs, stdout=True),
            }
        if "csv" in args.only:
            results["csv"] = {
                "ravana-db export actionlog --format csv --output F": measure(
                    "ours", [*ours, "actionlog", "--format", "csv", "--output", str(out)], out,
                    args.rows, args.runs),
                "python sqlite3 csv.writer loop": measure(
                    "python", [sys.executable, "-c", PY_CSV, str(db), str(out)], out, args.rows,
                    args.runs),
                "sqlite3 FILE -csv -header 'select * from actionlog' > F": measure(
                    "sqlite3", [SQLITE3, "-csv", "-header", str(db), "SELECT * FROM actionlog"],
                    out, args.rows, args.runs, stdout=True),
            }
        if "backup" in args.only:
            results["backup"] = {
                "ravana-db export backup F": measure(
                    "ours", [*ours, "backup", str(out)], out, args.rows, args.runs),
                "sqlite3 FILE '.backup F'": measure(
                    ".backup", [SQLITE3, str(db), f".backup '{out}'"], out, args.rows,
                    args.runs),
                "sqlite3 FILE \"VACUUM INTO 'F'\"": measure(
                    "vacuum", [SQLITE3, str(db), f"VACUUM INTO '{out}'"], out, args.rows,
                    args.runs),
                "sqlite3 VACUUM INTO, then sqlite3 F 'PRAGMA integrity_check'": measure(
                    "vacuum+check", [SQLITE3, str(db), f"VACUUM INTO '{out}'"], out, args.rows,
                    args.runs, then=[SQLITE3, str(out), "PRAGMA integrity_check"]),
            }
        print(json.dumps(results, indent=2))
        saved = ROOT / "bench" / "results"
        saved.mkdir(exist_ok=True)
        (saved / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
