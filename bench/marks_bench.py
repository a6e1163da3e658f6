"""What a consolidated memory's marks cost (m015).

    python bench/marks_bench.py N [--before COMMIT]

Same run, from one file of N memories written as `log memory` writes them by the code of
release --before (size_bench.previous_logged, random vectors; cached, copied, never
changed): `before`, every
memory marked by the code of release --before (size_bench.consolidated: hex duplicate key,
the run's id, its index); `migrated`, that file opened by this code (m015, timed); `after`,
the logged file marked by this code (integer key, the run's number). Each file's bytes per
memory and shares (size_bench.sizes); then `consolidate --undo` of the last run on `after`
(a scan of memory: no index of the runs' marks) and on `before` (its index), timed.
Results: bench/results/marks.json.
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from size_bench import (  # noqa: E402
    CACHE,
    ROOT,
    base_code,
    consolidated,
    previous_consolidated,
    previous_logged,
    sizes,
)

from ravana_db.db import open_db  # noqa: E402


def undo_seconds(path, code):
    """`consolidate --undo` of the file's last run, by the code at code (a folder), timed."""
    with sqlite3.connect(path) as conn:
        run = conn.execute("SELECT consolidation_id FROM memory_consolidations "
                           "ORDER BY id DESC LIMIT 1").fetchone()[0]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(path), "consolidate",
                    "--undo", run, "--format", "json"], check=True, cwd=code,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(code)})
    return round(time.perf_counter() - start, 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int)
    parser.add_argument("--before", default="eb42e4c")
    args = parser.parse_args()
    n, root = args.n, base_code(args.before)
    logged = previous_logged(root, args.before, n, "random")
    before_in = CACHE / f"marks-before-{args.before}-{n}.db"
    after_in = CACHE / f"marks-after-{n}.db"
    for copy in (before_in, after_in):
        if not copy.exists():
            shutil.copyfile(logged, copy)
    before = previous_consolidated(root, before_in, n)
    migrated = before.with_name(before.name.replace(".db", "-migrated.db"))
    migrate_s = None
    if not migrated.exists():
        shutil.copyfile(before, migrated)
        start = time.perf_counter()
        open_db(migrated).close()  # m015, after open_db's backup copy
        migrate_s = round(time.perf_counter() - start, 1)
    for backup in CACHE.glob(f"{migrated.name}.bak-*"):
        backup.unlink()
    after = consolidated(after_in, n)
    report = {"n": n, "before_code": args.before, "before": sizes(before, n),
              "migrated": sizes(migrated, n), "migrate_s": migrate_s,
              "after": sizes(after, n)}
    print(json.dumps(report, indent=1), flush=True)
    for name, path, code in (("after", after, ROOT), ("before", before, root)):
        scratch = CACHE / f"marks-undo-{name}-{n}.db"
        shutil.copyfile(path, scratch)
        report[f"undo_s_{name}"] = undo_seconds(scratch, code)
        for extra in CACHE.glob(f"{scratch.name}*"):
            extra.unlink()
    print(json.dumps({k: v for k, v in report.items() if k.startswith("undo")}), flush=True)
    out = ROOT / "bench" / "results" / "marks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
