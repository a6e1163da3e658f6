"""`ravana-db mcp`: a real `python -m ravana_db mcp` process, talked to with the mcp SDK's own
stdio client (`mcp.client.stdio`), on a copy of the embedded fixture; the real model,
sqlite-vec and FTS5. Other writers are real processes or plain sqlite3 connections."""

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from ravana_db.mcp_server import INSTALL  # noqa: E402

RAVANA = [sys.executable, "-m", "ravana_db"]
PREFERENCE = "The user prefers answers of three sentences at most."
CITE = {"query": "cite sources with URLs", "top_n": 1}  # finds the fixture's mem-002


def session(db_path, *extra):
    """An open MCP client session with `ravana-db --db db_path mcp *extra`."""
    @contextlib.asynccontextmanager
    async def opened():
        # The whole environment (the SDK passes on only a few names by default): this
        # checkout's PYTHONPATH, coverage's settings.
        server = StdioServerParameters(
            command=sys.executable, args=["-m", "ravana_db", "--db", str(db_path), "mcp",
                                          *extra], env=dict(os.environ))
        async with stdio_client(server) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            yield s

    return opened()


def answer(result):
    """A tool result's JSON (the one text block the server sends), refusing an error."""
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


def error(result):
    """A tool error's message, refusing a success."""
    assert result.is_error, result.content
    return result.content[0].text


def cli_error(*args, stdin=None):
    """The one line `ravana-db ARGS` says on stderr for bad input (exit 2)."""
    done = subprocess.run([*RAVANA, *args], input=stdin, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().removeprefix("error: ")


def test_remember_then_recall_gets_the_memory_back_with_its_score_parts(embedded):
    async def body():
        async with session(embedded) as s:
            names = [t.name for t in (await s.list_tools()).tools]
            assert names == ["remember", "recall", "explain", "timeline", "status",
                             "consolidate"]
            stored = answer(await s.call_tool("remember", {
                "text": PREFERENCE, "fields": {"key": "pref-len", "importance": 0.9}}))
            assert stored == {"kind": "memory", "id": stored["id"], "key": "pref-len",
                              "status": "inserted"}
            again = answer(await s.call_tool("remember", {
                "text": PREFERENCE, "fields": {"key": "pref-len", "importance": 0.9}}))
            assert again["status"] == "existing" and again["id"] == stored["id"]
            found = answer(await s.call_tool("recall", {
                "query": "how long should my answers be?", "top_n": 3, "kind": "memory",
                "recency": "30d", "importance": 1}))
            why = answer(await s.call_tool("explain", {"ref": f"memory:{stored['id']}",
                                                        "depth": 2}))
            by_key = answer(await s.call_tool("explain", {"ref": "pref-len"}))
            lately = answer(await s.call_tool("timeline", {"kind": "memory", "limit": 2}))
            bad = error(await s.call_tool("timeline", {"kind": "gossip"}))
            missing = error(await s.call_tool("explain", {"ref": "memory:999999"}))
            still = answer(await s.call_tool("timeline", {"limit": 1}))
            return stored, found, why, by_key, lately, bad, missing, still

    stored, found, why, by_key, lately, bad, missing, still = anyio.run(body)
    # explain and timeline answer as the CLI's JSON does
    assert (why["kind"], why["id"], why["text"]) == ("memory", stored["id"], PREFERENCE)
    assert (by_key["id"], by_key["key"]) == (stored["id"], "pref-len")
    assert lately["rows"][0]["kind"] == "memory" and len(lately["rows"]) == 2
    assert lately["rows"][0]["id"] == stored["id"]  # the newest memory comes first
    assert set(lately["rows"][0]) == {"time", "kind", "id", "text"}
    assert bad.endswith(cli_error("--db", str(embedded), "timeline", "--kind", "gossip"))
    assert missing.endswith(cli_error("--db", str(embedded), "explain", "memory:999999"))
    assert len(still["rows"]) == 1
    best = found["results"][0]
    assert (best["kind"], best["id"], best["key"]) == ("memory", stored["id"], "pref-len")
    for part in ("score", "bm25", "bm25_rank", "similarity", "vector_rank", "relevance",
                 "recency", "importance"):
        assert part in best, part
    # The same question through `query` gives the same results, scores and all (query
    # --no-touch: the MCP recall counted the access already; the scores do not depend on it).
    done = subprocess.run([*RAVANA, "--db", str(embedded), "query", "--no-touch", "--format",
                           "json", "how long should my answers be?", "-n", "3", "--kind",
                           "memory", "--recency", "30d", "--importance", "1"],
                          capture_output=True, text=True, timeout=120)
    cli = json.loads(done.stdout)
    assert [(r["id"], r["similarity"], r["bm25_rank"]) for r in cli] == [
        (r["id"], r["similarity"], r["bm25_rank"]) for r in found["results"]]
    # Recency is measured at each call's own moment.
    assert [r["score"] for r in cli] == pytest.approx([r["score"] for r in found["results"]],
                                                       abs=1e-4)
    with contextlib.closing(sqlite3.connect(embedded)) as conn:
        assert conn.execute("SELECT access_count FROM memory WHERE key = 'pref-len'"
                            ).fetchone() == (1,)


def test_bad_arguments_are_tool_errors_with_the_cli_line_and_the_server_goes_on(embedded):
    async def body():
        async with session(embedded) as s:
            bad = [
                error(await s.call_tool("recall", {"query": "tea", "top_n": 0})),
                error(await s.call_tool("recall", {"query": "tea", "mode": "magic"})),
                error(await s.call_tool("recall", {"query": "tea", "since": "last tuesday"})),
                error(await s.call_tool("recall", {"query": "   "})),
                error(await s.call_tool("remember", {"text": "x", "fields": {
                    "importance": 7}})),
                error(await s.call_tool("remember", {"text": "x", "kind": "diary"})),
                error(await s.call_tool("remember", {"text": "x", "fields": {"colour": 1}})),
                error(await s.call_tool("remember", {"kind": "action", "text": "x"})),
                error(await s.call_tool("consolidate", {"type": "hourly"})),
                error(await s.call_tool("consolidate", {"limit": "many"})),
                error(await s.call_tool("consolidate", {"max_seconds": -1})),
                error(await s.call_tool("consolidate", {"dry_run": "no"})),
                error(await s.call_tool("remember", {"text": "x" * (5 << 20)})),
                error(await s.call_tool("remember", {"text": "x", "fields": ["x"]})),
                error(await s.call_tool("recall", {"query": "tea", "top_n": 1e300})),
                error(await s.call_tool("recall", {"query": "tea", "kind": ["memory"]})),
                error(await s.call_tool("recall", {"top_n": "many"})),  # no query at all
                error(await s.call_tool("no_such_tool", {})),
            ]
            status = answer(await s.call_tool("status", {}))
            found = answer(await s.call_tool("recall", CITE))
            return bad, status, found

    bad, status, found = anyio.run(body)
    prefix = "Error executing tool "  # the SDK's, before our line
    assert bad[0] == prefix + "recall: " + cli_error(
        "--db", str(embedded), "query", "tea", "-n", "0")
    assert bad[1] == prefix + "recall: " + cli_error(
        "--db", str(embedded), "query", "tea", "--mode", "magic")
    assert bad[2] == prefix + "recall: " + cli_error(
        "--db", str(embedded), "query", "tea", "--since", "last tuesday")
    assert bad[3] == prefix + "recall: give a query text (or --like ID)"
    # `log memory --stdin` says the same of the same record (JSON names, as in a line).
    assert bad[4] == prefix + "remember: " + cli_error(
        "--db", str(embedded), "log", "memory", "--stdin",
        stdin='{"text": "x", "importance": 7}\n').removeprefix("line 1: ")
    assert bad[5].startswith(prefix + "remember: kind: 'diary' is not one of action, mood")
    assert bad[6] == prefix + "remember: " + cli_error(
        "--db", str(embedded), "log", "memory", "--stdin",
        stdin='{"text": "x", "colour": 1}\n').removeprefix("line 1: ")
    assert bad[7].startswith(prefix + "remember: text: a action has no text field")
    assert bad[8] == prefix + "consolidate: type: 'hourly' is not one of daily, weekly, " \
        "monthly, quarterly, event_triggered"
    assert bad[9:16] == [prefix + line for line in (
        "consolidate: limit: 'many' is not a number",
        "consolidate: max-seconds: -1.0 is not a positive number",
        "consolidate: dry_run: 'no' is not true or false",
        "remember: text: longer than 4 Mi characters, the most a text may hold",
        "remember: fields: expected a JSON object, got list",
        "recall: top-n: must be between 1 and 10000",
        "recall: kind: must be a string, not ['memory']")]
    assert "query" in bad[16] and "Field required" in bad[16]  # the SDK's schema check
    assert "no_such_tool" in bad[17]
    assert all("\n" not in b for b in bad[:16])
    assert status["rows"]["memory"] == 60  # nothing of the bad calls was written
    assert found["results"][0]["key"] == "mem-002"


def test_a_log_process_and_a_recall_at_once_both_succeed(embedded):
    """Another process writing (here `log`, and a plain sqlite3 client holding the write lock)
    never blocks a recall: its access-count touch is deferred while the lock is held."""
    async def body():
        async with session(embedded) as s:
            writer = subprocess.Popen(
                [*RAVANA, "--db", str(embedded), "log", "memory", "--stdin"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            records = "".join(json.dumps({"text": f"Cron note {i}: the feed crawler ran."})
                              + "\n" for i in range(200))
            writer.stdin.write(records)
            writer.stdin.close()
            recalls = [answer(await s.call_tool("recall", CITE))
                       for _ in range(5)]
            assert writer.wait(timeout=120) == 0, writer.stderr.read()
            # A client holding the write lock: the recall answers at once all the same.
            with contextlib.closing(sqlite3.connect(embedded, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                started = time.monotonic()
                held = answer(await s.call_tool("recall", CITE))
                waited = time.monotonic() - started
                count = other.execute("SELECT access_count FROM memory WHERE key = 'mem-002'"
                                      ).fetchone()
                other.execute("ROLLBACK")
            after = answer(await s.call_tool("recall", CITE))
            stored = answer(await s.call_tool("status", {}))
            return recalls, held, waited, count, after, stored

    recalls, held, waited, count, after, stored = anyio.run(body)
    assert all(r["results"][0]["key"] == "mem-002" for r in [*recalls, held, after])
    assert waited < 5  # the busy timeout is 10 s: the recall did not wait for the lock
    assert count == (5,)  # the five recalls before the lock were counted, not the held one
    assert stored["rows"]["memory"] == 260
    with contextlib.closing(sqlite3.connect(embedded)) as conn:
        # The held recall's touch was deferred to the next recall: 7 accesses in all.
        assert conn.execute("SELECT access_count FROM memory WHERE key = 'mem-002'"
                            ).fetchone() == (7,)


def test_read_only_offers_no_writes_and_never_writes(embedded):
    before = embedded.read_bytes()

    async def body():
        async with session(embedded, "--read-only") as s:
            names = [t.name for t in (await s.list_tools()).tools]
            refused = error(await s.call_tool("remember", {"text": "x"}))
            not_dry = error(await s.call_tool("consolidate", {"dry_run": False}))
            found = answer(await s.call_tool("recall", CITE))
            modes = [answer(await s.call_tool("recall", {**CITE, "mode": m}))
                     for m in ("fts", "vector", "hybrid")]
            dry = answer(await s.call_tool("consolidate", {"type": "event_triggered"}))
            schema = json.loads((await s.read_resource("ravana://schema")).contents[0].text)
            return names, refused, not_dry, found, modes, dry, schema

    names, refused, not_dry, found, modes, dry, schema = anyio.run(body)
    assert names == ["recall", "explain", "timeline", "status", "consolidate"]
    assert "remember" in refused
    assert not_dry == "Error executing tool consolidate: this server is read-only (ravana-db " \
        "mcp --read-only): consolidate (only a dry run) cannot write"
    assert found["results"][0]["kind"] == "memory"
    # fts too (its scratch vocabulary is TEMP, which a read-only connection may write)
    assert [m["results"][0]["kind"] for m in modes] == ["memory"] * 3
    assert dry["dry_run"] is True
    assert [t["table"] for t in schema][:3] == ["feed", "article", "event"]
    assert embedded.read_bytes() == before
    with contextlib.closing(sqlite3.connect(embedded)) as conn:
        assert conn.execute("SELECT max(access_count) FROM memory").fetchone() == (0,)


def test_resources_show_recent_events_and_strategic_knowledge(embedded):
    with contextlib.closing(sqlite3.connect(embedded)) as conn, conn:
        conn.execute("INSERT INTO event (timestamp, description, keywords) VALUES "
                     "('2026-01-02T00:00:00Z', 'Port hacked', 'port'), "
                     "('2026-01-03T00:00:00Z', 'Ships wait', 'ships')")
        conn.execute("INSERT INTO strategic_knowledge (knowledge_id, knowledge_domain, "
                     "knowledge_summary, confidence_level) VALUES ('k1', 'ops', "
                     "'Batch writes', 0.8)")

    async def body():
        async with session(embedded) as s:
            listed = [str(r.uri) for r in (await s.list_resources()).resources]
            events = (await s.read_resource("ravana://events/recent")).contents[0].text
            known = (await s.read_resource("ravana://knowledge")).contents[0].text
            return listed, json.loads(events), json.loads(known)

    listed, events, known = anyio.run(body)
    assert listed == ["ravana://events/recent", "ravana://knowledge", "ravana://schema"]
    assert [e["description"] for e in events] == ["Ships wait", "Port hacked"]
    assert known[0]["knowledge_summary"] == "Batch writes"


def test_without_the_sdk_the_command_says_how_to_install_it(tmp_path):
    hide = ("import sys; sys.modules['mcp'] = None; sys.argv = ['ravana-db', '--db', "
            f"{str(tmp_path / 'a.db')!r}, 'mcp']; from ravana_db.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"error: {INSTALL}\n")
    assert not (tmp_path / "a.db").exists()


def test_lines_that_are_not_json_rpc_never_end_the_server(embedded):
    """Raw stdin: a line that is not JSON, and a request whose text cannot be UTF-8 (an
    escaped lone surrogate, which the SDK's client cannot even send) are dropped by the SDK;
    the server goes on answering."""
    from mcp_types.version import LATEST_HANDSHAKE_VERSION

    server = subprocess.Popen([*RAVANA, "--db", str(embedded), "mcp"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ask(line):
        server.stdin.write(line + "\n")
        server.stdin.flush()

    def recall(number):
        ask(json.dumps({"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": {
            "name": "recall", "arguments": CITE}}))

    try:
        ask("this is not json {")
        ask(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}))
        assert json.loads(server.stdout.readline())["id"] == 0
        ask(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        ask('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "recall", '
            '"arguments": {"query": "\\ud800"}}}')
        ask("[" * 100_000)
        recall(2)
        answer = json.loads(server.stdout.readline())
        assert answer["id"] == 2 and not answer["result"]["isError"]
        found = json.loads(answer["result"]["content"][0]["text"])
        assert found["results"][0]["key"] == "mem-002"
    finally:
        server.stdin.close()
    assert server.wait(timeout=60) == 0


def test_remember_waits_for_the_write_lock_as_log_does(embedded):
    """A writer elsewhere holds the lock for a second: remember waits (the busy timeout, 10 s
    as for `log`) and then stores its memory."""
    async def body():
        async with session(embedded) as s:
            answer(await s.call_tool("recall", CITE))  # the model is loaded
            with contextlib.closing(sqlite3.connect(embedded, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                stored = {}

                async def remember():
                    stored.update(answer(await s.call_tool("remember", {"text": PREFERENCE})))

                async with anyio.create_task_group() as tasks:
                    started = time.monotonic()
                    tasks.start_soon(remember)
                    await anyio.sleep(1)
                    assert not stored  # still waiting for the lock
                    other.execute("ROLLBACK")
                return stored, time.monotonic() - started

    stored, waited = anyio.run(body)
    assert stored["status"] == "inserted" and 1 <= waited < 10


def test_a_file_it_cannot_serve_is_one_line_before_any_protocol(tmp_path):
    (tmp_path / "notes.db").write_text("hello\n")
    cases = [(["--db", str(tmp_path / "notes.db"), "mcp"],
              f"error: {tmp_path / 'notes.db'} is not a SQLite database (if it is an "
              "encrypted one, give its key: --key-file, RAVANA_DB_KEY_FILE or RAVANA_DB_KEY)\n"),
             (["--db", str(tmp_path / "none.db"), "mcp"],
              f"error: no database at {tmp_path / 'none.db'}: run `ravana-db init` or pass "
              "--db PATH\n"),
             (["--db", str(tmp_path / "none.db"), "mcp", "--read-only"],
              f"error: no database at {tmp_path / 'none.db'}: run `ravana-db init` or pass "
              "--db PATH\n")]
    for args, said in cases:
        done = subprocess.run([*RAVANA, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", said)
    assert not (tmp_path / "none.db").exists()
    assert (tmp_path / "notes.db").read_text() == "hello\n"
