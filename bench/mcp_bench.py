"""A recall through an open MCP session against `query --stdin` in one open process and one
`ravana-db query` process per question: same run, same file, same questions.

    python bench/mcp_bench.py [--queries 40] [--processes 10]

The file holds 10k memories (real sentences, corpus.py; built once into bench/cache/). The
MCP side is `ravana-db mcp` driven by the mcp SDK's own stdio client (`call_tool("recall")`,
its JSON answer parsed); the stdin side writes a JSON line and reads its answer line. Both
ask each question in turn (MCP, then stdin), after a warm-up that loads the model; a third
process, `ravana-db mcp` again, gets each question as plain JSON-RPC lines (no SDK client), to
tell the server's cost from the SDK client's. Without
touch (`mcp --read-only`, `query --no-touch`), then both counting accesses (a write per
recall). Results are printed and written to bench/results/mcp.json.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CACHE, embedded  # noqa: E402
from run import CachedEmbedder  # noqa: E402

from ravana_db.db import open_db, transaction  # noqa: E402
from ravana_db.index import apply, prepare  # noqa: E402

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
STORED, QUESTIONS = 10_000, 200


def build():
    """A file of STORED memories, every text embedded (the real model's vectors)."""
    path = CACHE / f"mcp-{STORED}.db"
    texts, vectors = embedded(STORED + QUESTIONS)
    if path.exists():
        return path, texts[STORED:]
    tmp = path.with_suffix(".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    db = open_db(tmp)
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO memory(text, memory_type, source, created_at) VALUES (?, ?, ?, ?)",
            [(t, "fact" if i % 3 else "episodic", f"source-{i % 7}",
              f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00.000Z")
             for i, t in enumerate(texts[:STORED])])
    with transaction(db):
        apply(db, prepare(db, CachedEmbedder(texts[:STORED], vectors[:STORED]),
                          backlog=STORED))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    tmp.rename(path)
    return path, texts[STORED:]


def ms(values):
    return round(statistics.median(values) * 1000, 2)


async def paired(db, questions, *, touch):
    """Per-question wall times: MCP recall and `query --stdin`, asked in turn."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    cli = [str(BIN / "ravana-db"), "--db", str(db)]
    server = StdioServerParameters(command=cli[0], args=[
        *cli[1:], "mcp", *([] if touch else ["--read-only"])], env=dict(os.environ))
    stdin = subprocess.Popen([*cli, "query", "--stdin", "--top-n", "5",
                              *([] if touch else ["--no-touch"])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    raw = subprocess.Popen([server.command, *server.args], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    initialize(raw)
    times = {"mcp": [], "stdin": [], "raw": []}
    with open(os.devnull, "w") as quiet:
        async with stdio_client(server, errlog=quiet) as (read, write), \
                ClientSession(read, write) as session:
            await ask(session, stdin, raw, ["warm up", "warm up again", *questions], times)
    for process in (stdin, raw):
        process.stdin.close()
        process.wait()
    return times


def initialize(raw):
    """The MCP handshake, as plain JSON-RPC lines."""
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    line(raw, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {},
        "clientInfo": {"name": "bench", "version": "1"}}})
    raw.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
                    + "\n")


def line(process, message):
    """Write one JSON line, read one back."""
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


async def ask(session, stdin, raw, questions, times):
    """Each question through MCP (the SDK's client), through `query --stdin`, and through
    MCP again as plain JSON-RPC lines (no SDK on the client side); the first two warm up."""
    await session.initialize()
    for i, text in enumerate(questions):
        start = time.perf_counter()
        result = await session.call_tool("recall", {"query": text, "top_n": 5})
        answer = json.loads(result.content[0].text)
        mcp = time.perf_counter() - start
        start = time.perf_counter()
        stdin.stdin.write(json.dumps({"text": text}) + "\n")
        stdin.stdin.flush()
        got = json.loads(stdin.stdout.readline())
        plain = time.perf_counter() - start
        start = time.perf_counter()
        bare = line(raw, {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {
            "name": "recall", "arguments": {"query": text, "top_n": 5}}})
        bare = json.loads(bare["result"]["content"][0]["text"])
        lines = time.perf_counter() - start
        assert [r["id"] for r in answer["results"]] == [r["id"] for r in got["results"]] == [
            r["id"] for r in bare["results"]]
        if i >= 2:
            times["mcp"].append(mcp)
            times["stdin"].append(plain)
            times["raw"].append(lines)


def per_process(db, questions):
    cmd = [str(BIN / "ravana-db"), "--db", str(db), "query", "--no-touch", "--top-n", "5",
           "--format", "json"]
    times = []
    for text in questions:
        start = time.perf_counter()
        subprocess.run([*cmd, text], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--processes", type=int, default=10)
    args = parser.parse_args()
    db, questions = build()
    results = {}
    for touch in (False, True):
        times = anyio.run(functools.partial(paired, db, questions[:args.queries], touch=touch))
        ratios = [a / b for a, b in zip(times["mcp"], times["stdin"])]
        results["touch" if touch else "no_touch"] = {
            "mcp_recall_median_ms": ms(times["mcp"]),
            "query_stdin_median_ms": ms(times["stdin"]),
            "mcp_plain_json_rpc_median_ms": ms(times["raw"]),
            "plain_json_rpc_ratio_median": round(float(np.median(
                [a / b for a, b in zip(times["raw"], times["stdin"])])), 3),
            "ratio_median": round(float(np.median(ratios)), 3),
            "queries": len(ratios)}
    results["process_per_query_median_ms"] = ms(per_process(db, questions[:args.processes]))
    results["process_per_query_vs_mcp"] = round(
        results["process_per_query_median_ms"] / results["no_touch"]["mcp_recall_median_ms"], 1)
    results["what"] = (f"hybrid recall, top 5, of {STORED} memories: an open MCP session "
                       "(ravana-db mcp, the SDK's stdio client) against one open `query "
                       "--stdin` process, asked in turn, and a `ravana-db query` process per "
                       "question; no_touch: mcp --read-only and query --no-touch")
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "mcp.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
