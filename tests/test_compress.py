"""`ravana-db compress`: summaries into one traceable summary, very-long-term memories by age."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import contents, copy_db, jsonl
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ravana_db import compress as c
from ravana_db.cli import app
from ravana_db.db import open_db
from ravana_db.embed import Embedder
from ravana_db.errors import RavanaError
from ravana_db.sql import driver

SUMMARIES = [
    "Markets fell on fears that rates will stay high. The central bank held its policy rate "
    "at 5.25 percent. Bond yields rose for a third straight week. Analysts expect the first "
    "cut in the spring.",
    "The central bank held its policy rate at 5.25 percent. Tech shares led the decline, with "
    "chip makers down four percent. Investors moved into short-term government bonds.",
    "The Friday deploy broke the build for two hours. The rollback script failed because the "
    "migration was not reversible. The team agreed to freeze deploys on Fridays.",
    "A post-mortem found that the migration dropped a column still in use. Reversible "
    "migrations are now required by the review checklist. The Friday deploy broke the build "
    "for two hours.",
    "A new caching layer halved the latency of search requests. Memory use grew by about ten "
    "percent on each server. The cache is invalidated on every write to keep results fresh.",
    "Cache hit rates reached 82 percent after a week. Invalidation on every write keeps "
    "search results fresh. Larger instances may be needed if memory keeps growing.",
    "The user prefers short answers with links to sources. Long explanations are welcome "
    "only when asked for, e.g. summaries of papers should fit in five lines.",
    "- The user reads answers on a phone in the morning.\n"
    "- Short answers with links work best for the user.",
]
RUNS = [{"run": i, "latency_ms": 10 + (i * 7) % 13, "retries": i % 3, "ok": i % 5 != 0}
        for i in range(40)]
ESSAY = (
    "The nightly sync job drifted by several minutes over a month. Its schedule was computed "
    "from the end of the previous run instead of a fixed start time. Each run took a little "
    "longer than the last as the data grew, so the start time crept later. The drift went "
    "unnoticed because the job never failed outright. Users only saw stale data in the "
    "morning reports. A fixed schedule anchored to midnight UTC removed the drift. The team "
    "also added an alert when a run starts more than five minutes late. Since the change, "
    "the reports have been fresh every morning. The same mistake was found in two other "
    "jobs, which were fixed the same way. Scheduling from a fixed anchor is now the rule for "
    "every periodic job.")
CODE = "\n".join(f"def step_{i}(state):\n    return {{**state, 'n': state['n'] + {i}}}  # {i}"
                 for i in range(8))
MEMORIES = [
    {"memory_id": "metrics", "memory_type": "code_pattern", "created_at": "100d",
     "compressed_content": {"pattern": "Retry flaky network calls with exponential backoff",
                            "language": "python", "runs": RUNS,
                            "tags": ["network", "resilience", "retry"]}},
    {"memory_id": "verbose", "memory_type": "code_pattern", "created_at": "200d",
     "compressed_content": {
         "text": "Flaky integration test fixed by pinning the clock in the fixture.",
         "traceback": "Traceback (most recent call last):\n  File \"tests/test_sync.py\", "
                      "line 41, in test_sync\nAssertionError",
         "stdout": "collected 120 items\n" + "." * 119 + "F\n1 failed, 119 passed in 12.31s",
         "embedding": [round(0.01 * i, 2) for i in range(64)],
         "details": {"file": "tests/test_sync.py", "Debug": "clock skew 3 ms"}}},
    {"memory_id": "essay", "memory_type": "code_pattern", "created_at": "400d",
     "compressed_content": {"title": "Why the sync job drifted", "text": ESSAY, "code": CODE}},
    {"memory_id": "young", "memory_type": "code_pattern", "created_at": "30d",
     "compressed_content": {"text": "Young memory: not due for compression yet.",
                            "runs": RUNS}},
    {"memory_id": "charter", "memory_type": "strategic_knowledge", "created_at": "1000d",
     "compressed_content": {"principle": "Batch writes in one short transaction",
                            "traceback": "kept: this memory is kept for good",
                            "evidence": RUNS[:20], "text": ESSAY}},
    {"memory_id": "unruled", "memory_type": "failed_experiment", "created_at": "1000d",
     "compressed_content": {"text": "No retention policy for this type.", "runs": RUNS}},
    {"memory_id": "prose", "memory_type": "critical_failure", "created_at": "40d",
     "compressed_content": {"text": "Deploys on Friday broke the build twice in one month."}},
]
ORIGINAL = {m["memory_id"]: m["compressed_content"] for m in MEMORIES}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Eight summaries and seven very-long-term memories of several ages, logged and
    embedded through the CLI (built once per module)."""
    path = tmp_path_factory.mktemp("compress-template") / "agent.db"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        for kind, records in (("summary", [{"summary_text": s} for s in SUMMARIES]),
                              ("vltm", MEMORIES)):
            result = CliRunner().invoke(app, ["--db", str(path), "log", kind, "--stdin"],
                                        input=jsonl(*records), catch_exceptions=False)
            assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def agent(template, db_path):
    return copy_db(template, db_path)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def compress(cli, *args):
    result = cli("compress", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def collapsed(text):
    return " ".join(text.split())


def summaries(rows):
    return {r["id"]: r for r in rows("summary")}


def content(rows, memory_id):
    (row,) = rows("SELECT compressed_content FROM very_long_term_memories WHERE memory_id = ?",
                  memory_id)
    return row["compressed_content"]


def gone(pid):
    """Whether a process has ended (absent, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def runs(rows):
    return [{**r, "consolidation_results": json.loads(r["consolidation_results"])}
            for r in rows("memory_consolidations")]


# Knowledge compression --------------------------------------------------------------------

def test_the_compression_summary_cites_its_sources_line_by_line(cli, agent, rows):
    report, stderr = compress(cli, "--no-vltm", "--max-chars", "600")
    knowledge = report["knowledge"]
    assert (knowledge["summaries"], knowledge["method"], knowledge["status"]) == (
        8, "extractive", "inserted")
    stored = summaries(rows)
    new = stored[knowledge["summary_id"]]
    assert (new["category"], new["source"]) == ("compression", "system")
    assert new["summary_text"] == knowledge["text"]
    lines = c.cited(new["summary_text"])
    assert 3 <= len(lines) == len(new["summary_text"].splitlines())
    sources = {id: collapsed(stored[id]["summary_text"]) for id in range(1, 9)}
    for sentence, ids in lines:
        # Cites every source summary that holds the sentence, and only those.
        assert ids == [id for id, text in sources.items() if sentence in text], sentence
    # Within the budget, shorter than what it summarises, one sentence at most once.
    assert sum(len(s) + 1 for s, _ in lines) - 1 <= 600
    assert len(new["summary_text"]) < sum(len(t) for t in sources.values())
    assert len({s for s, _ in lines}) == len(lines)
    # In source order: by the first summary that holds each sentence, then within it.
    order = [(ids[0], sources[ids[0]].index(s)) for s, ids in lines]
    assert order == sorted(order)
    # The run's record holds the same traceability, and the summary's id.
    (run,) = runs(rows)
    recorded = run["consolidation_results"]["knowledge"]
    assert recorded["sentences"] == [{"text": s, "sources": ids} for s, ids in lines]
    assert recorded["summary_id"] == new["id"] and recorded["source_ids"] == list(range(1, 9))
    assert "compress: 8 summaries into summary 9 (inserted, extractive)" in stderr
    assert len(stored) == 9  # the sources stay


def test_sentences_are_split_as_people_write_them():
    assert c.sentences("Rates rose 0.25 points. Prices rose, e.g. this month.  \"Quoted.\" "
                       "Next one!\n- a bullet line\n2. numbered\n---\n") == [
        "Rates rose 0.25 points.", "Prices rose, e.g. this month.", "\"Quoted.\"",
        "Next one!", "a bullet line", "numbered"]


def test_selection_is_central_first_within_budget_without_duplicates():
    import numpy as np

    vectors = np.array([[1, 0, 0], [0.96, 0.28, 0], [0.6, -0.8, 0], [0, 0, 1]], dtype=float)
    lengths, weights = [10, 10, 10, 10], [3, 1, 1, 1]
    # The first is nearest the weighted centroid; the second, 0.96 similar to it, is a near
    # duplicate; the third is more relevant than the fourth, though less novel.
    assert c.select(vectors, lengths, budget=100, weights=weights) == [0, 2, 3]
    assert c.select(vectors, lengths, budget=21, weights=weights) == [0, 2]  # a space apart
    assert c.select(vectors, lengths, budget=9, weights=weights) == []
    assert c.select(vectors, [10, 10, 30, 10], budget=21, weights=weights) == [0, 3]


class Letters:
    """Vectors from letter counts: enough to tell sentences apart, without a model."""

    def embed(self, texts):
        import numpy as np

        vectors = np.array([[t.lower().count(ch) for ch in "abcdefghijklmnopqrstuvwxyz"]
                            for t in texts], dtype=float) + 1e-9
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_short_sentences_count_only_when_there_is_nothing_else():
    assert c.extract([(1, "Done. OK then."), (2, "Done.")], Letters()) == [
        ("Done.", [1, 2]), ("OK then.", [1])]
    assert c.extract([(1, "Done. The build is green again."), (2, "Done.")], Letters()) == [
        ("The build is green again.", [1])]


def test_a_sentence_longer_than_the_budget_is_cut_at_a_word():
    [(sentence, ids)] = c.extract([(4, "The migration dropped a column still in use today."),
                                   (5, "Reversible migrations are required from now on.")],
                                  Letters(), budget=30)
    assert len(sentence) <= 30 and sentence.endswith("…") and ids in ([4], [5])
    assert sentence[:-1] in "The migration dropped a column still in use today. " \
                            "Reversible migrations are required from now on."


def test_the_same_summaries_give_the_same_text_stored_once(cli, agent, rows, tmp_path,
                                                           embedder):
    other = copy_db(agent, tmp_path / "other.db")
    first, _ = compress(cli, "--no-vltm")
    again = cli("--db", other, "compress", "--no-vltm", "--format", "json", db=False)
    assert json.loads(again.stdout)["knowledge"]["text"] == first["knowledge"]["text"]
    # Run again: nothing new since the last compression, nothing stored.
    second, stderr = compress(cli, "--no-vltm")
    assert second["knowledge"]["text"] is None and second["knowledge"]["summaries"] == 0
    assert "no new summaries to compress" in stderr
    assert len(rows("summary")) == 9
    # Two runs planned on the same summaries before either writes (two cron jobs): the
    # second finds its text stored, and the file holds one compression summary.
    racing = copy_db(other, tmp_path / "racing.db")
    db = open_db(racing)
    try:
        db.execute("DELETE FROM summary WHERE category = 'compression'")
        db.execute("DELETE FROM memory_consolidations")
        plans = [c.plan(db, embedder=embedder, vltm=False) for _ in range(2)]
        results = [c.apply(db, p, embedder=embedder) for p in plans]
        assert [r["knowledge"]["status"] for r in results] == ["inserted", "existing"]
        assert results[0]["knowledge"]["summary_id"] == results[1]["knowledge"]["summary_id"]
        assert db.execute("SELECT summary_text FROM summary WHERE category = "
                          "'compression'").fetchall() == [(first["knowledge"]["text"],)]
        assert db.execute("SELECT count(*) FROM memory_consolidations WHERE success = 1"
                          ).fetchone()[0] == 2
    finally:
        db.close()


def test_only_summaries_logged_since_the_last_compression(cli, agent, rows):
    compress(cli, "--no-vltm")
    log = cli("log", "summary", "--stdin", input=jsonl(*(
        {"summary_text": f"Week {n} brought {word} news about the harbour project."}
        for n, word in ((1, "good"), (2, "mixed"), (3, "bad")))))
    assert log.stdout.split() == ["10", "11", "12"]
    report, _ = compress(cli, "--no-vltm", "--max-summaries", "2")
    knowledge = report["knowledge"]
    assert (knowledge["source_ids"], knowledge["skipped_older"]) == ([11, 12], 1)
    assert {id for s in knowledge["sentences"] for id in s["sources"]} <= {11, 12}
    # One new summary waits for a second; then both are compressed together.
    cli("log", "summary", "--summary-text", "Week 4 closed the harbour project on time. "
        "The harbour reopens in spring.")
    report, stderr = compress(cli, "--no-vltm")
    assert (report["knowledge"]["text"], report["knowledge"]["waiting"]) == (None, 1)
    assert "compress: 1 new summary waits for more" in stderr
    cli("log", "summary", "--summary-text", "Week 5 opened the new harbour to ferries. "
        "The harbour reopens in spring.")
    report, _ = compress(cli, "--no-vltm")
    assert report["knowledge"]["source_ids"] == [14, 15]
    # A compression summary logged by hand (as the original did) marks a compression too.
    cli("log", "summary", "--summary-text", "Week 6 was quiet.")
    cli("log", "summary", "--summary-text", "Weeks 1 to 6 in brief.", "--category",
        "compression")
    report, _ = compress(cli, "--no-vltm")
    assert report["knowledge"]["summaries"] == 0


OVERLAPPING = [  # five summaries of one week: shared sentences, and a near-duplicate pair
    "The deploy failed on Friday evening. The rollback took two hours.",
    "The deploy failed on Friday evening. Rolling back took about two hours.",
    "The team froze deploys on Fridays. Cache hit rates reached 82 percent.",
    "Cache hit rates reached 82 percent. The user prefers short answers.",
    "The user prefers short answers. Reversible migrations are now required.",
]


def test_near_duplicates_are_dropped_and_the_summary_is_smaller_than_its_sources(cli, rows):
    cli("log", "summary", "--stdin", input=jsonl(*({"summary_text": s} for s in OVERLAPPING)))
    report, _ = compress(cli, "--no-vltm")
    knowledge = report["knowledge"]
    kept = [s for s, _ in c.cited(knowledge["text"])]
    assert ("The rollback took two hours." in kept) != (
        "Rolling back took about two hours." in kept), kept
    size = sum(len(s.encode()) for s in OVERLAPPING)
    assert knowledge["bytes_before"] == size
    assert knowledge["bytes_after"] == len(knowledge["text"].encode()) < size
    assert summaries(rows)[knowledge["summary_id"]]["summary_text"] == knowledge["text"]


def test_a_summary_that_would_not_be_smaller_is_not_stored(cli, rows):
    distinct = ["Tea is hot.", "Snow is cold."]  # nothing shared: citations only add
    cli("log", "summary", "--stdin", input=jsonl(*({"summary_text": s} for s in distinct)))
    report, stderr = compress(cli, "--no-vltm", "--summarizer", "cat")
    knowledge = report["knowledge"]
    assert (knowledge["text"], knowledge["summary_id"], knowledge["waiting"]) == (None, None, 2)
    assert "): the extractive summary would not be smaller either: nothing stored\n" in stderr
    assert knowledge["not_smaller"] >= sum(len(s) for s in distinct)
    assert "compress: 2 new summaries wait for more: their summary would not be smaller" \
        in stderr
    assert [r["summary_text"] for r in rows("summary")] == distinct  # nothing stored
    (run,) = runs(rows)
    assert run["success"] == 1
    # A summarizer's output is held to the same rule: the extractive summary is kept.
    cli("log", "summary", "--stdin", input=jsonl(*({"summary_text": s} for s in OVERLAPPING)))
    report, stderr = compress(cli, "--no-vltm", "--summarizer", "sh -c 'cat; echo more'")
    knowledge = report["knowledge"]
    assert knowledge["method"] == "extractive" and knowledge["source_ids"] == [1, 2, 3, 4, 5,
                                                                              6, 7]
    assert knowledge["summarizer_error"].startswith("its summary is not smaller than its "
                                                    "input")
    assert knowledge["bytes_after"] < knowledge["bytes_before"]
    assert f"warning: summarizer failed ({knowledge['summarizer_error']})" in stderr


# The external summarizer ------------------------------------------------------------------

def test_a_summarizer_writes_the_summary_from_the_summaries_on_its_stdin(cli, agent, rows,
                                                                        tmp_path):
    given = tmp_path / "given.txt"
    report, stderr = compress(cli, "--no-vltm", "--summarizer",
                              f"sh -c 'tee \"$0\" | sed -n 1,3p | tr a-z A-Z' {given}")
    expected = "\n\n".join(SUMMARIES) + "\n"
    assert given.read_text() == expected
    knowledge = report["knowledge"]
    assert (knowledge["method"], knowledge["summarizer_error"]) == ("summarizer", None)
    text = summaries(rows)[knowledge["summary_id"]]["summary_text"]
    assert text == "\n".join(expected.splitlines()[:3]).upper() + \
        "\n[sources: 1, 2, 3, 4, 5, 6, 7, 8]"
    assert "warning" not in stderr
    assert runs(rows)[0]["consolidation_results"]["knowledge"]["method"] == "summarizer"


@pytest.mark.parametrize("command,why", [
    ("sh -c 'echo model unavailable >&2; exit 3'", "exit 3: model unavailable"),
    ("true", "no output"),
    ("printf '\\377\\n'", "its output is not UTF-8"),
    ("no-such-summarizer-here", "cannot run 'no-such-summarizer-here': No such file or "
                                "directory"),
    ("sh -c 'sleep 30; echo too late'", "timed out after 0.5 s"),
], ids=["exit-3", "no-output", "not-utf8", "not-found", "timeout"])
def test_a_failing_summarizer_leaves_the_extractive_summary_and_a_warning(
        cli, agent, rows, tmp_path, command, why):
    extractive = cli("--db", copy_db(agent, tmp_path / "plain.db"), "compress", "--no-vltm",
                     "--format", "json", db=False)
    started = time.monotonic()
    report, stderr = compress(cli, "--no-vltm", "--summarizer", command,
                              "--summarizer-timeout", "0.5")
    assert time.monotonic() - started < 10
    warning = f"warning: summarizer failed ({why}): kept the extractive summary\n"
    assert stderr.count("warning") == 1 and warning in stderr
    knowledge = report["knowledge"]
    assert (knowledge["method"], knowledge["summarizer_error"]) == ("extractive", why)
    assert knowledge["text"] == json.loads(extractive.stdout)["knowledge"]["text"]
    assert summaries(rows)[knowledge["summary_id"]]["summary_text"] == knowledge["text"]
    recorded = runs(rows)[0]
    assert recorded["success"] == 1
    assert recorded["consolidation_results"]["knowledge"]["summarizer_error"] == why


def test_a_timed_out_summarizer_is_killed_with_what_it_started(tmp_path):
    pids = tmp_path / "pids"
    started = time.monotonic()
    output, why = c.run_summarizer(
        ["sh", "-c", f"sleep 30 & echo $! > {pids}; sleep 31 & echo $! >> {pids}; wait"],
        "text", timeout=0.5)
    assert (output, why) == (None, "timed out after 0.5 s")
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5  # SIGKILL is sent; dying takes a moment
    while not all(map(gone, pids.read_text().split())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(map(gone, pids.read_text().split()))


def test_a_summarizer_need_not_read_all_it_is_given():
    assert c.run_summarizer(["sh", "-c", "echo fine"], "x" * 5_000_000, timeout=20) == (
        "fine", None)
    assert c.run_summarizer(["sh", "-c", "kill -9 $$"], "x", timeout=20) == (
        None, "killed by signal 9")


def test_a_summarizer_that_prints_without_end_is_stopped():
    output, why = c.run_summarizer(["yes"], "", timeout=20)
    assert (output, why) == (None, f"printed more than {c.MAX_OUTPUT} bytes")


# More than a pipe holds (64 kB), in few distinct sentences: a summarizer that reads none of
# it leaves ravana-db writing into a pipe nobody reads.
FILLER = ("The harbour crane was inspected and found in good order. Ferries kept their "
          "timetable through the storm. ") * 15
LARGE = [f"Week {n} of the harbour log. {FILLER}" for n in range(1, 61)]
RAVANA = [sys.executable, "-m", "ravana_db"]


@pytest.fixture
def large(cli, db_path):
    result = cli("log", "summary", "--stdin", input=jsonl(*({"summary_text": s} for s in LARGE)))
    assert result.exit_code == 0, result.stderr
    return db_path


@pytest.mark.parametrize("command,method,why", [
    ("true", "extractive", "no output"),
    ("sh -c 'echo short'", "summarizer", None),
    ("sh -c 'echo model gone >&2; exit 3'", "extractive", "exit 3: model gone"),
], ids=["true", "echo", "exit-3"])
def test_a_summarizer_that_reads_none_of_its_input_is_not_the_end_of_ravana_db(
        large, rows, command, method, why):
    result = subprocess.run([*RAVANA, "--db", str(large), "compress", "--no-vltm",
                             "--max-summaries", "100", "--summarizer", command, "--format",
                             "json"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, (result.returncode, result.stderr)
    knowledge = json.loads(result.stdout)["knowledge"]
    assert (knowledge["method"], knowledge["summarizer_error"]) == (method, why)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert warnings == ([f"warning: summarizer failed ({why}): kept the extractive summary"]
                        if why else [])
    stored = summaries(rows)
    assert len(stored) == len(LARGE) + 1  # the sources stay, and the summary is stored
    assert stored[knowledge["summary_id"]]["summary_text"] == knowledge["text"]
    (run,) = runs(rows)
    assert run["success"] == 1 and run["consolidation_results"]["knowledge"]["method"] == method


def test_the_timeout_holds_when_a_descendant_keeps_the_output_open(tmp_path):
    pids = tmp_path / "pids"
    started = time.monotonic()
    try:
        output, why = c.run_summarizer(
            ["sh", "-c", f"cat >/dev/null; setsid sleep 25 & echo $! > {pids}; sleep 100"],
            "text", timeout=2)
        elapsed = time.monotonic() - started
    finally:
        for pid in pids.read_text().split():  # out of the group: its own session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert (output, why) == (None, "timed out after 2 s")
    assert elapsed < 3.5, elapsed


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_ravana_db_leaves_no_summarizer_running(large, tmp_path, how):
    pids = tmp_path / "pids"
    run = subprocess.Popen([*RAVANA, "--db", str(large), "compress", "--no-vltm",
                            "--summarizer", f"sh -c 'sleep 100 & echo $$ $! > {pids}; wait'"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60  # the model loads first
        while len(pids.read_text().split() if pids.exists() else []) < 2:
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        shell, sleeper = map(int, pids.read_text().split())
        run.send_signal(how)
        run.wait(10)
        deadline = time.monotonic() + 5
        while not (gone(shell) and gone(sleeper)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(shell) and gone(sleeper)
    finally:
        run.kill()
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.mark.parametrize("command,message", [
    ("'unclosed", "error: --summarizer: No closing quotation: quote it as a shell would"),
    ("  ", "error: --summarizer: names no command\n"),
])
def test_a_summarizer_command_that_cannot_be_split_is_one_line(cli, agent, command, message):
    before = contents(agent)
    result = cli("compress", "--summarizer", command)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert contents(agent) == before


# Very-long-term memories ------------------------------------------------------------------

def test_lossless_compression_round_trips_exactly(cli, agent, rows):
    before = {m: content(rows, m) for m in ORIGINAL}
    report, _ = compress(cli, "--no-knowledge", "--max-level", "1")
    vltm = report["vltm"]
    # The essay is prose under three keys: nothing to gain without losing something.
    assert {r["memory_id"]: r["to_level"] for r in vltm["rows"]} == {
        "metrics": 1, "charter": 1, "verbose": 1}
    for row in vltm["rows"]:
        memory_id, stored = row["memory_id"], content(rows, row["memory_id"])
        assert c.level(stored) == 1
        assert c.restore(stored) == ORIGINAL[memory_id]
        # The very text ravana-db had stored, byte for byte.
        assert json.dumps(c.restore(stored), ensure_ascii=False) == before[memory_id]
        assert (row["bytes_before"], row["bytes_after"]) == (
            len(before[memory_id].encode()), len(stored.encode()))
        assert row["bytes_after"] < row["bytes_before"]
    packed = json.loads(content(rows, "metrics"))
    assert packed["strings"] == ["Retry flaky network calls with exponential backoff",
                                 "python", "network", "resilience", "retry"]
    assert packed["_compressed"]["codec"] == "zlib+base64"
    assert len(content(rows, "metrics")) < len(before["metrics"]) / 3
    metrics = {r["metric_name"]: r["metric_value"] for r in rows("consolidation_metrics")}
    assert (metrics["vltm_compressed"], metrics["vltm_bytes_before"],
            metrics["vltm_bytes_after"]) == (3, vltm["bytes_before"], vltm["bytes_after"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text().filter(lambda k: k != "_compressed"), JSON, max_size=5),
       st.integers(1, 3))
def test_every_level_restores_what_it_packed_and_keeps_the_search_text(value, level):
    from ravana_db.tables import SEARCHABLE

    stored = c.pack(value, level=level)
    assert c.restore(stored) == value and c.level(stored) == level
    text = f"SELECT {SEARCHABLE['vltm']['text']} FROM (SELECT ? AS compressed_content) new"
    conn = driver().connect(":memory:")
    original = json.dumps(value, ensure_ascii=False)
    assert conn.execute(text, [stored]).fetchone() == conn.execute(text, [original]).fetchone()


def test_verbose_members_go_but_never_a_memorys_last_words():
    value = {"Text": "kept", "LOGS": "gone", "series": [0.5] * 40, "few": [1, 2, 3],
             "steps": [{"stderr": "gone", "ok": True}], "a key": {"Debug": 1}}
    assert c.drop_verbose(value) == (
        {"Text": "kept", "few": [1, 2, 3], "steps": [{"ok": True}], "a key": {}},
        ["$.LOGS", "$.series", "$.steps[0].stderr", '$["a key"].Debug'])
    assert c.drop_verbose({"traceback": "the only words", "n": 1}) == (
        {"traceback": "the only words", "n": 1}, [])


def test_a_compressed_member_compress_did_not_write_is_left_alone(cli, agent, rows):
    mine = {"text": "A record with a member of its own.", "_compressed": "my own field",
            "runs": RUNS}
    logged = cli("log", "vltm", "--stdin", input=jsonl(
        {"memory_id": "mine", "memory_type": "code_pattern", "created_at": "100d",
         "compressed_content": mine}))
    assert logged.exit_code == 0, logged.stderr
    report, stderr = compress(cli, "--no-knowledge")
    assert "warning: memory mine: left as it is (its _compressed member is not one " \
           "compress wrote)\n" in stderr
    assert "mine" not in [r["memory_id"] for r in report["vltm"]["rows"]]
    assert json.loads(content(rows, "mine")) == mine


def test_bookkeeping_another_client_wrote_in_another_shape_is_taken_as_it_can_be(
        cli, agent, rows):
    """A level-1 mark whose lists and counts hold text (a plain sqlite3 client's doing):
    compressed on to level 2 all the same, the odd bookkeeping left out, nothing lost."""
    odd = {"text": "A record compressed once by hand.", "raw_output": "x " * 400,
           "_compressed": {"level": 1, "bytes_before": "big", "dropped": "all of it",
                           "summarised": {"$": 1}}}
    logged = cli("log", "vltm", "--stdin", input=jsonl(
        {"memory_id": "odd", "memory_type": "code_pattern", "created_at": "300d",
         "compressed_content": odd}))
    assert logged.exit_code == 0, logged.stderr
    report, _ = compress(cli, "--no-knowledge")
    assert {r["memory_id"]: r["to_level"] for r in report["vltm"]["rows"]}["odd"] == 2
    assert c.restore(content(rows, "odd")) == {"text": odd["text"]}


def test_max_level_caps_the_levels(cli, agent, rows):
    report, _ = compress(cli, "--no-knowledge", "--max-level", "2")
    assert {r["memory_id"]: r["to_level"] for r in report["vltm"]["rows"]} == {
        "metrics": 1, "verbose": 2, "charter": 1}
    assert c.restore(content(rows, "essay")) == ORIGINAL["essay"]


def test_memories_are_compressed_by_their_policys_age(cli, agent, rows):
    report, _ = compress(cli, "--no-knowledge")
    levels = {r["memory_id"]: (r["from_level"], r["to_level"]) for r in report["vltm"]["rows"]}
    assert levels == {"metrics": (0, 1), "verbose": (0, 2), "essay": (0, 3),
                      "charter": (0, 1)}
    assert report["vltm"]["levels"] == {"1": 2, "2": 1, "3": 1}
    assert report["vltm"]["not_smaller"] == 1  # prose: one sentence has nothing to lose
    # Younger than compress_after_days, no policy, not smaller: as they were.
    for memory_id in ("young", "unruled", "prose"):
        assert json.loads(content(rows, memory_id)) == ORIGINAL[memory_id]
    # Kept for good (strategic_knowledge): lossless only, at any age.
    assert c.restore(content(rows, "charter")) == ORIGINAL["charter"]
    # Level 2: verbose members gone, recorded; the rest intact.
    verbose = json.loads(content(rows, "verbose"))
    dropped = ["$.traceback", "$.stdout", "$.embedding", "$.details.Debug"]
    assert verbose["_compressed"]["dropped"] == dropped
    assert c.restore(verbose) == {"text": ORIGINAL["verbose"]["text"],
                                  "details": {"file": "tests/test_sync.py"}}
    # Level 3: the long prose cut to its summary, sentence by sentence from the original;
    # code left alone.
    essay = c.restore(content(rows, "essay"))
    assert essay["title"] == ORIGINAL["essay"]["title"] and essay["code"] == CODE
    assert len(essay["text"]) <= c.FIELD_BUDGET
    kept = c.sentences(essay["text"])
    assert len(kept) >= 2 and all(s in ESSAY for s in kept)
    assert json.loads(content(rows, "essay"))["_compressed"]["summarised"] == ["$.text"]


def test_compressed_memories_are_not_compressed_again(cli, agent, rows):
    compress(cli, "--no-knowledge", "--max-level", "1")
    first = {m: content(rows, m) for m in ORIGINAL}
    report, _ = compress(cli, "--no-knowledge", "--max-level", "1")
    assert report["vltm"]["compressed"] == 0
    assert {m: content(rows, m) for m in ORIGINAL} == first
    # A higher level later starts from the lossless form: the original.
    report, _ = compress(cli, "--no-knowledge")
    assert {r["memory_id"]: (r["from_level"], r["to_level"]) for r in report["vltm"]["rows"]} \
        == {"verbose": (1, 2), "essay": (0, 3)}
    assert json.loads(content(rows, "verbose"))["_compressed"]["bytes_before"] == len(
        json.dumps(ORIGINAL["verbose"], ensure_ascii=False).encode())
    report, _ = compress(cli, "--no-knowledge")
    assert report["vltm"]["compressed"] == 0


def test_search_finds_compressed_memories_by_their_words(cli, agent, rows):
    def index():
        return {r["ref"]: (r["text"], r["embedding"]) for r in rows(
            "SELECT d.ref, d.text, v.embedding FROM doc d LEFT JOIN doc_vec v ON "
            "v.doc_id = d.id WHERE d.kind = 'vltm'")}

    before = index()
    compress(cli, "--no-knowledge")
    after = index()
    # Lossless: the very same search text and vector, nothing embedded again.
    for memory_id in ("metrics", "charter"):
        assert after[memory_id] == before[memory_id]
    # Lossy: the text the index holds is the memory's words, without the bookkeeping,
    # already embedded.
    for memory_id in ("verbose", "essay"):
        text, vector = after[memory_id]
        assert text == " ".join(s for _, s in c.strings(c.restore(content(rows, memory_id)))[1])
        assert vector is not None and "level" not in text and "$." not in text
    assert rows("embed_queue") == []
    for words, memory_id in (("exponential backoff", "metrics"), ("pinning the clock", "verbose"),
                             ("sync job drifted", "essay")):
        for mode in ("fts", "hybrid"):
            found = cli("query", words, "--kind", "vltm", "--mode", mode, "--no-touch")
            assert memory_id in [r["id"] for r in json.loads(found.stdout)], (words, mode)


# The run --------------------------------------------------------------------------------

def test_a_dry_run_shows_the_plan_and_changes_nothing(cli, agent, rows):
    before = contents(agent)
    report, stderr = compress(cli, "--dry-run", "--summarizer", "sh -c 'exit 1'")
    assert contents(agent) == before
    assert report["run_id"] is None and report["dry_run"] is True
    assert report["knowledge"]["status"] == "new" and report["knowledge"]["summaries"] == 8
    assert report["knowledge"]["method"] == "extractive" and c.cited(report["knowledge"]["text"])
    assert {r["memory_id"]: r["to_level"] for r in report["vltm"]["rows"]} == {
        "metrics": 1, "verbose": 2, "essay": 3, "charter": 1}
    assert all(r["bytes_after"] < r["bytes_before"] for r in report["vltm"]["rows"])
    assert "warning" not in stderr and "the summarizer was not run" in stderr
    assert stderr.splitlines()[-1].startswith("dry run, nothing written: 8 summaries")
    # What it planned is what a real run does.
    done, _ = compress(cli)
    assert done["knowledge"]["text"] == report["knowledge"]["text"]
    assert [{**r, "age_days": None} for r in done["vltm"]["rows"]] == [
        {**r, "age_days": None} for r in report["vltm"]["rows"]]


def test_every_run_is_recorded_with_its_metrics(cli, agent, rows):
    report, _ = compress(cli)
    again, _ = compress(cli)
    first, second = runs(rows)
    assert first["consolidation_id"] == report["run_id"]
    assert (first["consolidation_type"], first["success"], first["error_message"]) == (
        "event_triggered", 1, None)
    assert first["memories_processed"] == 8 + 4
    knowledge, vltm = report["knowledge"], report["vltm"]
    ratio = (knowledge["bytes_after"] + vltm["bytes_after"]) / (
        knowledge["bytes_before"] + vltm["bytes_before"])
    assert first["compression_ratio"] == pytest.approx(ratio, abs=1e-4) and ratio < 1
    assert first["consolidation_results"]["operation"] == "compress"
    metrics = {r["metric_name"]: (r["metric_value"], r["metric_unit"])
               for r in rows("SELECT * FROM consolidation_metrics WHERE consolidation_id = ?",
                             report["run_id"])}
    assert metrics == {
        "summaries_compressed": (8, "count"),
        "summary_bytes_before": (knowledge["bytes_before"], "bytes"),
        "summary_bytes_after": (knowledge["bytes_after"], "bytes"),
        "vltm_compressed": (4, "count"),
        "vltm_bytes_before": (vltm["bytes_before"], "bytes"),
        "vltm_bytes_after": (vltm["bytes_after"], "bytes"),
        "compression_ratio": (first["compression_ratio"], "ratio"),
        "processing_time": (first["processing_time_seconds"], "seconds")}
    # A run with nothing to do is recorded too.
    assert (second["consolidation_id"], second["memories_processed"]) == (again["run_id"], 0)
    status = json.loads(cli("status").stdout)["last_consolidation"]
    assert (status["type"], status["success"]) == ("event_triggered", True)


def test_a_memory_changed_during_the_run_fails_it_and_nothing_is_written(agent, rows,
                                                                         embedder):
    db = open_db(agent)
    try:
        planned = c.plan(db, embedder=embedder)
        before = contents(agent)
        with contextlib.closing(sqlite3.connect(agent)) as other:  # another writer
            other.execute("UPDATE very_long_term_memories SET compressed_content = "
                          "'{\"text\": \"rewritten\"}' WHERE memory_id = 'essay'")
            other.commit()
        with pytest.raises(RavanaError, match="a memory changed while compress ran: nothing "
                                              "was written; run compress again"):
            c.apply(db, planned, embedder=embedder)
    finally:
        db.close()
    assert json.loads(content(rows, "essay")) == {"text": "rewritten"}
    assert json.loads(content(rows, "metrics")) == ORIGINAL["metrics"]
    assert len(rows("summary")) == 8
    (run,) = runs(rows)
    assert (run["success"], run["consolidation_id"]) == (0, planned.run_id)
    assert run["error_message"].startswith("a memory changed while compress ran")
    assert {t: r for t, r in contents(agent).items() if t not in (
        "very_long_term_memories", "doc", "doc_vec", "embed_queue", "bits_queue",
        "memory_consolidations")} == {t: r for t, r in before.items() if t not in (
            "very_long_term_memories", "doc", "doc_vec", "embed_queue", "bits_queue",
            "memory_consolidations")}


def test_an_empty_file_has_nothing_to_compress(cli, rows):
    assert cli("init").exit_code == 0
    report, stderr = compress(cli)
    assert report["knowledge"]["summaries"] == 0 and report["vltm"]["compressed"] == 0
    assert report["compression_ratio"] == 1.0
    assert "compress: no new summaries to compress; 0 memories compressed" in stderr
    assert len(runs(rows)) == 1


def test_nothing_asked_for_is_one_line(cli, agent):
    before = contents(agent)
    result = cli("compress", "--no-knowledge", "--no-vltm")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --no-knowledge and --no-vltm together leave nothing to " \
                            "do\n"
    assert contents(agent) == before


def test_a_missing_file_is_one_line(cli, db_path):
    result = cli("compress")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: no database at {db_path}: run `ravana-db init` or pass " \
                            "--db PATH\n"
    assert not db_path.exists()


def test_a_table_for_people(cli, agent, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("--quiet", "compress", "--format", "table")
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    assert "memories_compressed" in result.stdout and "summary_status" in result.stdout
    assert "memory_id" in result.stdout and "essay" in result.stdout
    assert "{" not in result.stdout.split("memory_id")[0]  # no JSON cells in the report


def test_quiet_prints_nothing_on_success_unless_a_format_is_asked_for(cli, agent, rows):
    result = cli("--quiet", "compress")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert len(runs(rows)) == 1 and len(summaries(rows)) == len(SUMMARIES) + 1
    asked = cli("--quiet", "compress", "--json")
    assert asked.exit_code == 0 and asked.stderr == "" and json.loads(asked.stdout)["run_id"]
    # A failure of the summarizer is still one line.
    cli("log", "summary", "--stdin", input=jsonl(*({"summary_text": s} for s in OVERLAPPING)))
    failed = cli("--quiet", "compress", "--summarizer", "sh -c 'exit 4'")
    assert (failed.exit_code, failed.stdout) == (0, "")
    assert failed.stderr == "warning: summarizer failed (exit 4): kept the extractive summary\n"
