"""Peak memory of `ingest jsonl` on one huge line, next to a small file's in the same run.

    .venv/bin/python bench/limits_bench.py [--runs N]

Cases, each a whole `ravana-db ingest jsonl FILE --table memory` process on a new file:
  small      one short memory: the baseline (the model loaded, one text embedded)
  text 4Mi   one memory whose text is 4 Mi characters of random words, the most a text holds
             (processed: full-text indexed, embedded from its prefix)
  line 30MB  one 30 MB `text` line (refused at the 16 MiB line limit, read no further)
  many 4Mi   8 lines of 4 Mi characters each (32 MB: written in batches of at most 8 MiB)

Peak resident memory is the command's ru_maxrss, the median of --runs (3) runs; the goal is
under 500 MB. Each command is started by a small launcher process that reports it (os.wait4):
a child forked from this one would start with this process's peak (the inputs it built) and
report at least that. Results are printed as JSON and written to bench/results/limits.json.
"""

import argparse
import json
import random
import statistics
import string
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
RAVANA = [sys.executable, "-m", "ravana_db"]
GOAL_MB = 500
# Runs a command (its output dropped) and prints its exit code, seconds and peak RSS (KiB).
LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss)
"""


def words(n, seed):
    """About n characters of random seven-letter words (many distinct terms: the full-text
    index's worst case)."""
    r = random.Random(seed)
    return " ".join("".join(r.choices(string.ascii_lowercase, k=7)) for _ in range(n // 8))


def write_inputs(folder):
    cases = {
        "small": [{"text": "The user prefers short answers."}],
        "text 4Mi": [{"text": words(4 << 20, 1)[:4 << 20]}],
        "line 30MB": [{"text": "word " * 6_000_000}],
        "many 4Mi": [{"text": words(4 << 20, seed)[:4 << 20]} for seed in range(8)],
    }
    paths = {}
    for name, records in cases.items():
        path = folder / (name.replace(" ", "-") + ".jsonl")
        with open(path, "w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        paths[name] = path
    return paths


def run(path, folder, n):
    """(exit code, seconds, peak RSS in MB) of one ingest into a new file."""
    db = folder / f"run-{n}.db"
    command = [*RAVANA, "--db", str(db), "--quiet", "ingest", "jsonl", str(path),
               "--table", "memory"]
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True,
                          text=True, check=True)
    code, seconds, kib = done.stdout.split()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return int(code), float(seconds), int(kib) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_inputs(folder)
        n = 0
        for name, path in paths.items():
            runs = []
            for _ in range(args.runs):
                n += 1
                runs.append(run(path, folder, n))
            codes = sorted({code for code, _, _ in runs})
            results[name] = {
                "input_mb": round(path.stat().st_size / 1e6, 1),
                "exit": codes[0] if len(codes) == 1 else codes,
                "seconds": round(statistics.median(s for _, s, _ in runs), 2),
                "peak_mb": round(statistics.median(m for _, _, m in runs)),
            }
    base = results["small"]["peak_mb"]
    for r in results.values():
        r["x_baseline"] = round(r["peak_mb"] / base, 2)
        r["under_goal"] = r["peak_mb"] < GOAL_MB
    report = {"goal_peak_mb": GOAL_MB, "runs": args.runs, "cases": results}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "limits.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
