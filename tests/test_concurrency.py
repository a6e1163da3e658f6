"""Several processes on one file, as cron jobs and the agent use it: writers at once, writers
killed at any moment, and small writes while a big one embeds. Real `python -m ravana_db`
processes, the real model, real sqlite-vec.

The write path embeds outside any transaction and then writes rows and vectors in one short
BEGIN IMMEDIATE transaction; `reindex` commits one batch of index.BATCH texts at a time.
"""

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from conftest import cpu_seconds, jsonl, write_locked

from ravana_db.db import BUSY_TIMEOUT_MS, open_db, transaction
from ravana_db.hashing import sha256
from ravana_db.index import BATCH

RAVANA = [sys.executable, "-m", "ravana_db"]
BUSY_TIMEOUT = BUSY_TIMEOUT_MS / 1000
SEEDS = [
    {"key": "seed-tea", "text": "The user prefers green tea in the morning."},
    {"key": "seed-deploy", "text": "The Friday deploy broke the build and a slow query followed."},
    {"key": "seed-cat", "text": "The office cat sleeps on the server rack."},
]
SUBJECTS = ["The agent", "The user", "The nightly cron job", "The deploy script",
            "The news crawler", "The scheduler", "The cache layer", "The market feed"]
VERBS = ["noticed", "reported", "fixed", "retried", "summarised", "flagged", "ignored",
         "measured"]
OBJECTS = ["a slow query", "a latency spike", "a failing build", "an outdated feed",
           "a memory leak", "a question about tea", "a new paper", "a broken link"]


def sentence(tag, i):
    """A short, distinct, real-ish memory."""
    return f"{SUBJECTS[i % 8]} {VERBS[i // 8 % 8]} {OBJECTS[i // 64 % 8]} ({tag} {i})."


def memories(tag, count, sentences=1):
    return [{"key": f"{tag}-{i}", "text": " ".join(
        sentence(tag, i * sentences + j) for j in range(sentences))} for i in range(count)]


@pytest.fixture
def ravana(tmp_path, db_path):
    """ravana(*args, stdin=records) starts `ravana-db --db <tmp> ARGS` (records as JSON lines
    on stdin); ravana.run(...) runs one to its end. Whatever still runs at teardown is killed."""
    procs = []

    def start(*args, stdin=None):
        path = tmp_path / f"stdin-{len(procs)}.jsonl"
        path.write_text(jsonl(*(stdin or [])))
        with open(path) as source:
            proc = subprocess.Popen([*RAVANA, "--db", str(db_path), *args], stdin=source,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    def run(*args, stdin=None, timeout=120):
        proc = start(*args, stdin=stdin)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    start.run = run
    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


@pytest.fixture
def sql(db_path):
    """sql(query, *params) -> the first column of the first row, on a fresh connection."""

    def one(query, *params):
        db = open_db(db_path, create=False)
        try:
            return db.execute(query, params).fetchone()[0]
        finally:
            db.close()

    return one


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "locked" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result


def kill_when(proc, ready, timeout=120):
    """SIGKILL proc as soon as ready(proc) is true; it must still be running then."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()}"
        if ready(proc):
            break
        assert time.monotonic() < deadline, "never reached the kill point"
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "finished before the kill landed"


def check_file(db_path):
    """The file is sound and its index consistent; returns row counts."""
    assert not list(db_path.parent.glob("*-journal")), "a rollback journal was left behind"
    db = open_db(db_path, create=False)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.execute("INSERT INTO doc_fts(doc_fts, rank) VALUES ('integrity-check', 1)")
        n = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (
            "memory", "doc", "doc_vec", "doc_bits", "embed_queue", "bits_queue")}
        # Nothing half-written: every vector has its signature (unless queued for one), and
        # every doc has its vector or waits for one.
        assert db.execute("SELECT count(*) FROM doc_vec WHERE doc_id NOT IN "
                          "(SELECT doc_id FROM doc_bits) AND doc_id NOT IN "
                          "(SELECT doc_id FROM bits_queue)").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM doc WHERE id NOT IN (SELECT doc_id FROM doc_vec) "
                          "AND id NOT IN (SELECT doc_id FROM embed_queue)").fetchone()[0] == 0
        assert n["doc"] == n["memory"]  # only memories in these files
        return n
    finally:
        db.close()


def assert_whole(ravana):
    report = json.loads(ok(ravana.run("status", "--format", "json")).stdout)
    assert report["index"]["whole"] is True, report["index"]


# 1. Two writers and a reader at once --------------------------------------------------------


def test_two_big_writers_and_a_querying_reader_at_once(ravana, db_path):
    """Before the write path embedded outside the lock, the second writer waited out the busy
    timeout and failed with `database is locked`."""
    ok(ravana.run("log", "memory", "--stdin", stdin=SEEDS))  # something to find and touch
    batches = {tag: memories(tag, 1500) for tag in "ab"}
    writers = [ravana("log", "memory", "--stdin", stdin=batches[tag]) for tag in batches]
    returned, queries, during, deadline = Counter(), 0, 0, time.monotonic() + 180
    while any(w.poll() is None for w in writers) and queries < 40:
        assert time.monotonic() < deadline, "the writers did not finish"
        # Default query: hybrid, and it counts the memories it returns as accessed.
        result = ok(ravana.run("query", "slow query after the deploy", timeout=60))
        assert result.stderr == ""
        queries += 1
        during += any(w.poll() is None for w in writers)
        returned.update(r["id"] for r in json.loads(result.stdout) if r["kind"] == "memory")
        time.sleep(2)  # a reader now and then, not a third embedder hogging the cores
    outputs = [w.communicate(timeout=120) for w in writers]
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0, err
        assert err == "memory: 1500 inserted\n" and len(out.split()) == 1500
    assert during >= 1, "no query ran while the writers did"

    n = check_file(db_path)
    assert n["memory"] == 3000 + len(SEEDS)
    assert n["doc"] == n["doc_vec"] == n["doc_bits"] == n["memory"]
    assert n["embed_queue"] == n["bits_queue"] == 0
    db = open_db(db_path, create=False)
    try:
        keys = Counter(k for (k,) in db.execute("SELECT key FROM memory"))
        touched = dict(db.execute("SELECT id, access_count FROM memory WHERE access_count > 0 "
                                  "AND last_accessed IS NOT NULL"))
    finally:
        db.close()
    expected = [m["key"] for m in SEEDS + batches["a"] + batches["b"]]
    assert keys == Counter(expected)  # each key exactly once
    assert returned and touched == dict(returned)  # every query's touch was stored
    assert_whole(ravana)


# 2. SIGKILL at any moment: all or nothing, and the next run completes -----------------------


@pytest.mark.parametrize("point,size", [("starting", 1000), ("embedding", 1000),
                                        ("writing", 2000), ("committed", 1000)])
def test_a_killed_log_writes_all_or_nothing_and_a_rerun_completes(ravana, db_path, point, size):
    """size: enough texts to embed for far longer than the kill point needs; `writing` takes
    more, so that the one transaction lasts long enough to be caught holding the lock."""
    ok(ravana.run("init"))
    batch = memories("kill", size)
    probe = open_db(db_path)
    try:
        proc = ravana("log", "memory", "--stdin", stdin=batch)
        kill_when(proc, {
            "starting": lambda p: cpu_seconds(p.pid) > 0.3,  # importing, opening the file
            # Imports and the model take a fraction of this CPU; the texts take far more.
            "embedding": lambda p: cpu_seconds(p.pid) > 3,
            # The only time `log` holds the write lock is its one transaction.
            "writing": lambda p: write_locked(probe),
            # The first moment a reader sees stored memories: were their vectors stored too?
            "committed": lambda p: probe.execute("SELECT count(*) FROM memory").fetchone()[0],
        }[point])
    finally:
        probe.close()

    n = check_file(db_path)
    assert n["memory"] in {"starting": {0}, "embedding": {0}, "writing": {0, size},
                           "committed": {size}}[point]
    assert n["doc_vec"] == n["doc_bits"] == n["memory"]  # each stored memory has its vector
    assert n["embed_queue"] == n["bits_queue"] == 0

    result = ok(ravana.run("log", "memory", "--stdin", stdin=batch))
    status = "existing" if n["memory"] else "inserted"  # an unchanged memory is kept
    assert result.stderr.endswith(f"memory: {size} {status}\n")
    n = check_file(db_path)
    assert n["memory"] == n["doc_vec"] == n["doc_bits"] == size
    db = open_db(db_path, create=False)
    try:
        assert sorted(k for (k,) in db.execute("SELECT key FROM memory")) == sorted(
            m["key"] for m in batch)
    finally:
        db.close()
    assert_whole(ravana)


def test_a_reindex_killed_again_and_again_keeps_whole_batches_and_resumes(ravana, db_path, sql):
    total = 2500
    ok(ravana.run("init"))
    db = open_db(db_path)
    with transaction(db):  # as a plain SQL client would: the rows queue for embedding
        db.conn.executemany(
            "INSERT INTO memory(key, text, content_hash) VALUES (?, ?, ?)",
            [(f"sql-{i}", sentence("sql", i), sha256(sentence("sql", i))) for i in range(total)])
    db.close()
    assert sql("SELECT count(*) FROM embed_queue") == total

    probe = open_db(db_path)
    done = 0  # vectors committed so far

    def vectors():
        return probe.execute("SELECT count(*) FROM doc_vec").fetchone()[0]

    kill_points = [
        # The first batch's vectors commit well past this much CPU.
        ("embedding the first batch", lambda p: cpu_seconds(p.pid) > 3),
        # Past its first transaction (early on), the lock means a batch's write.
        ("writing a batch", lambda p: cpu_seconds(p.pid) > 1.5 and write_locked(probe)),
        # The first moment a reader sees new vectors: is it a whole batch?
        ("a batch committed", lambda p: vectors() > done),
        ("the next batch committed", lambda p: vectors() > done),
    ]
    try:
        for name, ready in kill_points:
            proc = ravana("reindex")
            kill_when(proc, ready)
            n = check_file(db_path)
            assert n["memory"] == total
            # Whole batches only, nothing lost: every text has its vector or is queued.
            assert n["doc_vec"] % BATCH == 0 or n["doc_vec"] == total, (name, n)
            assert n["doc_vec"] >= done and n["doc_bits"] == n["doc_vec"], (name, n)
            assert n["embed_queue"] == total - n["doc_vec"], (name, n)
            if name.startswith("embedding"):
                assert n["doc_vec"] == 0
            if name.endswith("committed"):
                assert n["doc_vec"] > done
            done = n["doc_vec"]
    finally:
        probe.close()

    report = json.loads(ok(ravana.run("reindex")).stdout)
    assert report["embedded"] == total - done
    n = check_file(db_path)
    assert n["doc_vec"] == n["doc_bits"] == total
    assert n["embed_queue"] == n["bits_queue"] == 0
    assert_whole(ravana)


# 3. A writer never holds the lock while it embeds -------------------------------------------


def test_small_writes_and_queries_go_through_while_a_big_write_embeds(ravana, db_path, sql):
    ok(ravana.run("log", "memory", "--stdin", stdin=SEEDS))
    big = ravana("log", "memory", "--stdin", stdin=memories("big", 2000, sentences=8))
    deadline = time.monotonic() + 60
    while cpu_seconds(big.pid) < 3:  # past imports and the model: embedding
        assert big.poll() is None, big.communicate()[1]
        assert time.monotonic() < deadline, "the big write never started embedding"
        time.sleep(0.05)

    timings = {}
    for name, args in (("log action", ["log", "action", "--action-name", "x"]),
                       ("query", ["query", "green tea in the morning"])):
        start = time.monotonic()
        result = ok(ravana.run(*args, timeout=60))
        timings[name] = time.monotonic() - start
        # A write waiting for the big writer's lock would still be waiting (or have failed
        # after the busy timeout): the big writer embeds for far longer than this.
        assert big.poll() is None, f"the big write ended before {name} did: {timings}"
        assert timings[name] < BUSY_TIMEOUT, timings
        if name == "query":
            found = [r["key"] for r in json.loads(result.stdout)]
            assert found and found[0] == "seed-tea"
    assert big.poll() is None and sql("SELECT count(*) FROM memory WHERE key LIKE 'big-%'") == 0
    assert sql("SELECT count(*) FROM actionlog WHERE action_name = 'x'") == 1
    assert sql("SELECT access_count FROM memory WHERE key = 'seed-tea'") == 1

    big.kill()
    big.communicate(timeout=30)
    n = check_file(db_path)
    assert n["memory"] == len(SEEDS)
