"""Embedding speed and peak memory with and without onnxruntime's memory arena.

    .venv/bin/python bench/embed_memory.py [--runs N]

The embedder turns the arena off and has glibc map blocks of 4 MiB or more on their own
(embed._return_large_blocks), so a process gives back what a large batch took. This measures
what that costs: 2,000 short texts and 100 of about 300 words, in a fresh process per run
(each setting alternating), medians of wall time and peak RSS, and the ratio to the arena.
"""

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import ctypes, json, os, random, resource, sys, time
arena = sys.argv[1] == "arena"
import ravana_db.embed as embed
from fastembed import TextEmbedding
if arena:  # as before: the arena on, glibc's own thresholds
    embed._return_large_blocks = lambda: None
    init = TextEmbedding.__init__
    def with_arena(self, *a, **k):
        k["enable_cpu_mem_arena"] = True
        init(self, *a, **k)
    TextEmbedding.__init__ = with_arena
e = embed.Embedder()
random.seed(1)
words = ("the ship port hackers attack market rates fell rose bank crisis news agent deploy "
         "memory").split()
short = [" ".join(random.choice(words) for _ in range(random.randint(8, 60)))
         for _ in range(2000)]
long = [" ".join(random.choice(words) for _ in range(300)) for _ in range(100)]
e.embed(short[:10])
start = time.perf_counter()
for i in range(0, len(short), 500):
    e.embed(short[i:i + 500])
e.embed(long)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    found = {"no_arena": [], "arena": []}
    for _ in range(args.runs):
        for setting in found:
            out = subprocess.run([sys.executable, "-c", CHILD, setting], check=True,
                                 capture_output=True, text=True).stdout
            found[setting].append(json.loads(out))
    med = {s: {k: round(statistics.median(r[k] for r in runs), 2) for k in ("seconds", "peak_mb")}
           for s, runs in found.items()}
    print(json.dumps({"embed_memory": {
        **med, "time_ratio": round(med["no_arena"]["seconds"] / med["arena"]["seconds"], 2),
        "memory_ratio": round(med["no_arena"]["peak_mb"] / med["arena"]["peak_mb"], 2)}},
        indent=2))


if __name__ == "__main__":
    main()
