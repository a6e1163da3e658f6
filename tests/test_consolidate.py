"""`ravana-db consolidate`: only duplicates merge, undo is exact, promotion, patterns and
knowledge from a scripted log, retention by policy, cron safety. Real model, real files."""

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import contents, copy_db, jsonl, one_line_error
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.consolidate import duplicates, patterns

ROOT = Path(__file__).parent.parent
PAIRS = [json.loads(line) for line in
         (ROOT / "fixtures" / "consolidate" / "lookalikes.jsonl").read_text().splitlines()]
RAVANA = [sys.executable, "-m", "ravana_db"]
RUN_TABLES = ("memory_consolidations", "consolidation_metrics", "consolidation_patterns")
DUPLICATES = [  # one fact four times: the longest text survives and absorbs the rest
    {"key": "dup-1", "text": "The user prefers green tea.", "importance": 0.4,
     "metadata": {"topic": "drinks"}, "created_at": "20d"},
    {"key": "dup-2", "text": "the user prefers green tea", "importance": 0.8,
     "metadata": {"topic": "tea", "seen_by": "agent"}, "created_at": "19d"},
    {"key": "dup-3", "text": "The user   prefers GREEN tea!!", "importance": 0.3,
     "created_at": "18d"},
    {"key": "near-1", "text": "The user prefers black tea.", "created_at": "18d"},
]
PROMOTE = [
    {"key": "p-direct", "text": "The outage corrupted the index and caused data loss.",
     "memory_type": "critical_failure", "importance": 0.95, "created_at": "2d",
     "metadata": {"strategic_value": 0.9}},
    {"key": "p-long", "text": "Lesson learned: always run migrations in a transaction.",
     "importance": 0.8, "created_at": "10d"},
    {"key": "p-short", "text": "Strategy: the user prefers answers with sources.",
     "importance": 0.65, "created_at": "3d"},
    {"key": "p-young", "text": "Ship the parser rewrite next quarter.",
     "importance": 0.9, "created_at": "1h"},
    {"key": "p-unimportant", "text": "Lesson learned: coffee machine is on floor two.",
     "importance": 0.3, "created_at": "30d"},
]
ACCESSES = {"p-long": 3, "p-short": 1, "p-young": 5, "p-unimportant": 9, "dup-1": 2, "dup-3": 1}
VLTMS = [
    {"memory_id": f"cache-{i}", "memory_type": "architectural_insight",
     "compressed_content": text, "created_at": "40d"} for i, text in enumerate([
        "The search cache is invalidated on every write to keep results fresh.",
        "Search results stay fresh because every write invalidates the search cache.",
        "Every write invalidates the search cache so that results stay fresh.",
    ])] + [
    {"memory_id": "old-win", "memory_type": "successful_improvement", "created_at": "800d",
     "compressed_content": "Batching inserts made the nightly import four times faster."},
    {"memory_id": "tea-fact", "memory_type": "strategic_knowledge", "created_at": "5d",
     "compressed_content": "The office cat sleeps on the server rack."},
]


def actions():
    """A scripted action log over ten days: a nightly fetch -> summarize -> store sequence at
    03:00, a deploy that fails and is retried within minutes (4 times), noise at noon."""
    rows = []
    for day in range(1, 11):
        date = f"2026-11-{day:02d}"
        rows += [{"action_name": "fetch_feeds", "timestamp": f"{date}T03:00:00Z"},
                 {"action_name": "summarize", "timestamp": f"{date}T03:05:00Z"},
                 {"action_name": "store_summary", "timestamp": f"{date}T03:06:00Z",
                  "status": "failure" if day == 5 else "success"}]
        if day % 2 == 0:
            rows += [{"action_name": "deploy", "status": "failure",
                      "timestamp": f"{date}T14:00:00Z"},
                     {"action_name": "deploy", "timestamp": f"{date}T14:10:00Z"}]
        if day % 3 == 0:
            rows.append({"action_name": "answer_question", "timestamp": f"{date}T12:{day:02d}:00Z"})
    return rows


def invoke(path, *args, input=None):
    return CliRunner().invoke(app, ["--db", str(path), *map(str, args)], input=input,
                              catch_exceptions=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Every look-alike pair, duplicates, promotion candidates, very-long-term memories and
    the scripted action log, logged through the CLI and embedded (built once)."""
    path = tmp_path_factory.mktemp("consolidate") / "agent.db"
    pairs = [{"key": f"{p['id']}-{side}", "text": p[side], "created_at": "2d"}
             for p in PAIRS for side in "ab"]
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        for kind, records in (("memory", pairs + DUPLICATES + PROMOTE), ("vltm", VLTMS),
                              ("action", actions())):
            result = invoke(path, "log", kind, "--stdin", input=jsonl(*records))
            assert result.exit_code == 0, result.stderr
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany("UPDATE memory SET access_count = ?, last_accessed = "
                         "'2026-11-20T00:00:00.000Z' WHERE key = ?",
                         [(n, k) for k, n in ACCESSES.items()])
        conn.commit()
    return path


@pytest.fixture
def agent(template, db_path):
    return copy_db(template, db_path)


def consolidate(cli, *args):
    result = cli("consolidate", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def memories(rows):
    return {r["key"]: r for r in rows("SELECT * FROM memory")}


def dump(path, skip=RUN_TABLES):
    return {t: v for t, v in contents(path).items() if t not in skip}


def test_the_check_merges_no_look_alike_of_another_meaning():
    different = [p for p in PAIRS if not p["same"]]
    same = [p for p in PAIRS if p["same"]]
    assert len(different) >= 80 and len(same) >= 40
    assert [p["id"] for p in different if duplicates.check(p["a"], p["b"])[0]] == []
    merged = [p for p in same if duplicates.check(p["a"], p["b"])[0]]
    assert len(merged) >= 0.9 * len(same)
    # Every pair the check accepts shares its key: no other pair needs comparing.
    for p in PAIRS:
        if duplicates.check(p["a"], p["b"])[0]:
            assert duplicates.key(p["a"]) == duplicates.key(p["b"]), p


@pytest.mark.parametrize("a, b, reason", [
    ("Flights from Paris to Rome", "Flights from Rome to Paris", "word order differs"),
    ("The rate is 5.25 percent", "The rate is 5.5 percent", "numbers differ: 5.25 / 5.5"),
    ("The test passed", "The test never passed", "negation differs: - / never"),
    ("Williams scored", "Williamson scored", "words differ: william / williamson"),
    ("John Williams won", "John William won", "names differ: williams / william"),
    ("The user's tea", "The user's tea", "identical text"),
])
def test_every_refusal_says_why(a, b, reason):
    assert duplicates.check(a, b)[1] == reason


def test_only_duplicates_merge_and_look_alikes_are_linked(cli, agent, rows):
    report = consolidate(cli, "--type", "event_triggered")
    by_key = memories(rows)
    merged = {p["id"]: by_key[f"{p['id']}-a"]["merged_into"] == by_key[f"{p['id']}-b"]["id"] or
              by_key[f"{p['id']}-b"]["merged_into"] == by_key[f"{p['id']}-a"]["id"]
              for p in PAIRS}
    different = [p["id"] for p in PAIRS if not p["same"]]
    same = [p["id"] for p in PAIRS if p["same"]]
    assert sum(merged[i] for i in different) == 0
    assert sum(merged[i] for i in same) >= 0.9 * len(same)
    print(f"\nlook-alike fixture: different-meaning merged {sum(merged[i] for i in different)}"
          f"/{len(different)}, same-meaning merged {sum(merged[i] for i in same)}/{len(same)}")
    links = {(r["memory_id"], r["related_id"]): r for r in rows("memory_link")}
    swapped = [p for p in PAIRS if p["kind"] == "swapped_entities"]
    linked = [p for p in swapped if tuple(sorted(
        (by_key[f"{p['id']}-a"]["id"], by_key[f"{p['id']}-b"]["id"]))) in links]
    assert len(linked) >= 0.8 * len(swapped)
    assert {links[k]["reason"] for k in links} >= {"word order differs"}
    assert all(r["similarity"] >= 0.9 for r in links.values() if r["similarity"] is not None)
    assert report["merged"] == len(rows("SELECT id FROM memory WHERE merged_into IS NOT NULL"))


def test_the_most_detailed_survives_and_absorbs_the_others(cli, agent, rows):
    consolidate(cli, "--type", "event_triggered")
    m = memories(rows)
    survivor = m["dup-3"]  # the longest text
    assert survivor["merged_into"] is None
    assert m["dup-1"]["merged_into"] == m["dup-2"]["merged_into"] == survivor["id"]
    assert m["near-1"]["merged_into"] is None  # black tea is not green tea
    assert survivor["importance"] == 0.8 and survivor["access_count"] == 3
    assert json.loads(survivor["metadata"]) == {"topic": "drinks", "seen_by": "agent"}
    assert survivor["last_accessed"] == "2026-11-20T00:00:00.000Z"
    found = cli("query", "green tea", "--kind", "memory", "--mode", "fts", "--no-touch",
                "--format", "json")
    ids = {r["id"] for r in json.loads(found.stdout)}
    assert survivor["id"] in ids and not ids & {m["dup-1"]["id"], m["dup-2"]["id"]}
    assert len(rows("memory")) == len(PAIRS) * 2 + len(DUPLICATES) + len(PROMOTE)  # kept


def test_undo_restores_the_exact_previous_state(cli, agent, rows, db_path):
    before = contents(db_path)
    report = consolidate(cli, "--type", "event_triggered")
    assert report["merged"] and report["linked"]
    result = cli("consolidate", "--undo", report["run_id"], "--format", "json")
    assert result.exit_code == 0, result.stderr
    after = contents(db_path)
    for table in ("memory", "memory_link"):
        assert after[table] == before[table], table

    def docs(c):
        return sorted((kind, ref, text) for _, kind, ref, text, *_ in c["doc"]
                      if kind == "memory")

    assert docs(after) == docs(before)
    assert "already undone" in one_line_error(cli("consolidate", "--undo", report["run_id"]))
    # The memories of an undone merge are kept apart from then on.
    again = consolidate(cli, "--type", "event_triggered")
    assert again["merged"] == 0 and again["processed"] == report["processed"]


def test_undo_keeps_what_was_written_after_the_run(cli, agent, rows, db_path):
    before = memories(rows)
    report = consolidate(cli, "--type", "event_triggered")
    survivor = memories(rows)["dup-3"]
    later = cli("log", "memory", "--key", "dup-3", "--text", survivor["text"], "--importance",
                "0.99", "--metadata", '{"later": 1}')
    assert later.exit_code == 0, later.stderr
    result = cli("consolidate", "--undo", report["run_id"], "--format", "json")
    assert result.exit_code == 0, result.stderr
    undone = json.loads(result.stdout)
    assert undone["kept"] == [{"memory_id": survivor["id"], "columns": ["importance",
                                                                        "metadata"]}]
    assert "2 later changes kept" in result.stderr
    after = memories(rows)
    # The later importance and metadata stay; what the run alone changed is put back.
    assert after["dup-3"]["importance"] == 0.99
    assert json.loads(after["dup-3"]["metadata"]) == {"later": 1}
    assert after["dup-3"]["access_count"] == before["dup-3"]["access_count"]
    assert after["dup-3"]["last_accessed"] == before["dup-3"]["last_accessed"]
    for key in ("dup-1", "dup-2"):
        assert after[key] == before[key], key


def test_undo_of_a_run_a_later_run_built_on_is_refused_until_that_one_is_undone(
        cli, agent, rows, db_path):
    before = contents(db_path)
    first = consolidate(cli, "--type", "event_triggered")
    again = cli("log", "memory", "--key", "dup-4", "--text", "The user prefers green tea")
    assert again.exit_code == 0, again.stderr
    second = consolidate(cli, "--type", "event_triggered")
    (merge,) = second["merges"]
    assert merge["survivor"] == memories(rows)["dup-3"]["id"]  # merged into the same one
    state = contents(db_path)
    refused = one_line_error(cli("consolidate", "--undo", first["run_id"]))
    assert f"run {second['run_id']}" in refused and "undo it first" in refused
    assert contents(db_path) == state  # nothing changed
    # In order, newest first, both undo, and every memory is as it was.
    for run in (second, first):
        result = cli("consolidate", "--undo", run["run_id"][:8], "--format", "json")
        assert result.exit_code == 0, result.stderr
    after = memories(rows)
    old = {r[1]: r for r in before["memory"]}  # by key
    for key, memory in after.items():
        if key != "dup-4":
            assert tuple(memory.values()) == old[key], key
    assert after["dup-4"]["merged_into"] is None


def test_the_list_shows_whole_run_ids_and_undo_takes_a_unique_prefix(cli, agent, db_path,
                                                                     monkeypatch):
    first = consolidate(cli, "--type", "event_triggered")
    with contextlib.closing(sqlite3.connect(db_path)) as conn:  # two runs alike at the start
        conn.executemany("INSERT INTO memory_consolidations(consolidation_id, "
                         "consolidation_type, consolidation_results) VALUES (?, 'daily', "
                         "'{\"operation\": \"consolidate\"}')",
                         [("abc12345-0000-4000-8000-000000000001",),
                          ("abc12399-0000-4000-8000-000000000002",)])
        conn.commit()
    monkeypatch.setenv("COLUMNS", "80")
    listed = cli("consolidate", "--list", "--format", "table")
    assert listed.exit_code == 0, listed.stderr
    for run_id in (first["run_id"], "abc12345-0000-4000-8000-000000000001"):
        assert run_id in listed.stdout
    assert max(map(len, listed.stdout.splitlines())) <= 80
    state = contents(db_path)
    ambiguous = one_line_error(cli("consolidate", "--undo", "abc123"))
    assert "run id 'abc123' is ambiguous: it starts abc12399-" in ambiguous
    assert "no consolidation run 'zzz'" in one_line_error(cli("consolidate", "--undo", "zzz"))
    assert "no run id given" in one_line_error(cli("consolidate", "--undo", " "))
    assert contents(db_path) == state
    done = cli("consolidate", "--undo", first["run_id"][:6].upper(), "--format", "json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["run_id"] == first["run_id"]
    assert f"undone: run {first['run_id']}:" in done.stderr


def test_a_dry_run_shows_the_plan_and_changes_nothing(cli, agent, db_path):
    before = contents(db_path)
    report = consolidate(cli, "--type", "event_triggered", "--dry-run")
    assert report["run_id"] is None and report["merged"] and report["patterns"]
    assert contents(db_path) == before
    table = cli("consolidate", "--type", "event_triggered", "--dry-run", "--format", "table")
    assert "dry run, nothing changed" in table.stderr and "word order differs" in table.stdout


def test_a_run_right_after_a_run_changes_nothing(cli, agent, db_path, rows):
    first = consolidate(cli, "--type", "event_triggered")
    before = dump(db_path)
    second = consolidate(cli, "--type", "event_triggered")
    assert dump(db_path) == before
    assert (second["processed"], second["merged"], second["promoted"]) == (0, 0, 0)
    assert len(rows("memory_consolidations")) == 2 and first["run_id"] != second["run_id"]
    assert {r["success"] for r in rows("memory_consolidations")} == {1}


def test_promotion_follows_the_policy_rows(cli, agent, rows):
    report = consolidate(cli, "--type", "event_triggered")
    got = {p["memory"]: (p["rule"], p["memory_type"], p["retention_category"])
           for p in report["promotions"]}
    m = memories(rows)
    assert got == {
        m["p-direct"]["id"]: ("direct", "critical_failure", "permanent"),
        m["p-long"]["id"]: ("long_to_very_long", "meta_learning_rule", "very_long_term"),
        m["p-short"]["id"]: ("short_to_long", "strategic_knowledge", "long_term"),
        # the green tea survivor: importance 0.8 and 3 accesses after the merge, 18 days old
        m["dup-3"]["id"]: ("long_to_very_long", "strategic_knowledge", "very_long_term"),
    }
    vltm = {json.loads(r["metadata_info"])["memory"]: r
            for r in rows("SELECT * FROM very_long_term_memories WHERE "
                          "source_session = 'consolidate'")}
    assert json.loads(vltm[m["p-long"]["id"]]["compressed_content"]) == {
        "text": m["p-long"]["text"]}
    found = cli("query", "migrations in a transaction", "--kind", "vltm", "--format", "json")
    assert json.loads(found.stdout)[0]["id"] == vltm[m["p-long"]["id"]]["memory_id"]


def test_patterns_and_knowledge_from_a_scripted_log(cli, agent, rows):
    report = consolidate(cli, "--type", "event_triggered")
    stored = {r["pattern_description"]: r for r in rows("memory_patterns")}
    described = "\n".join(stored)
    assert "fetch_feeds -> summarize -> store_summary: seen 10 times" in described
    assert "all steps succeed 90% of the time" in described
    assert "after deploy fails, a retry of it succeeds within 60 minutes (5 of 5" in described
    assert "fetch_feeds runs daily around 03:00 UTC (on 10 of 10 days)" in described
    assert not any("answer_question" in d for d in stored)  # 3 times, no rhythm
    structural = [r for r in stored.values() if r["pattern_type"] == "structural"]
    assert len(structural) == 1 and sorted(json.loads(structural[0]["supporting_memories"])) \
        == ["cache-0", "cache-1", "cache-2"]
    assert all(0.6 <= r["confidence_score"] <= 1 for r in stored.values())
    knowledge = {r["knowledge_domain"]: r for r in rows("strategic_knowledge")}
    assert {"workflow", "scheduling"} <= set(knowledge)
    weights = rows("SELECT knowledge_id, sum(contribution_weight) AS total FROM "
                   "pattern_strategic_knowledge GROUP BY knowledge_id")
    assert all(abs(w["total"] - 1) < 0.01 for w in weights)
    assert len(rows("consolidation_patterns")) == report["patterns"]
    for kind, words in (("pattern", "deploy retry"), ("knowledge", "scheduling daily")):
        found = json.loads(cli("query", words, "--kind", kind, "--format", "json").stdout)
        assert found and found[0]["kind"] == kind
    # A second run updates knowledge instead of duplicating it.
    with contextlib.closing(sqlite3.connect(agent)) as conn:
        conn.execute("INSERT INTO actionlog(timestamp, action_name) VALUES "
                     "('2026-11-11T03:00:00.000Z', 'fetch_feeds')")
        conn.commit()
    consolidate(cli, "--type", "event_triggered")
    assert len(rows("strategic_knowledge")) == len(knowledge)


def test_retention_follows_the_policy_table(cli, agent, rows):
    with contextlib.closing(sqlite3.connect(agent)) as conn:
        conn.execute("UPDATE retention_policies SET archive_after_days = 30 "
                     "WHERE memory_type = 'strategic_knowledge'")
        conn.execute("INSERT INTO retention_policies(memory_type, archive_after_days) "
                     "VALUES ('architectural_insight', 30)")
        conn.commit()
    planned = consolidate(cli, "--type", "event_triggered", "--dry-run")["retention_plan"]
    actions = {(r["memory_id"], r["action"]) for r in planned}
    assert {("old-win", "expire"), ("cache-0", "archive")} <= actions
    assert ("tea-fact", "archive") not in actions  # 5 days old
    consolidate(cli, "--type", "event_triggered")
    category = {r["memory_id"]: r["retention_category"]
                for r in rows("very_long_term_memories")}
    assert category["old-win"] == "expired" and category["cache-1"] == "archived"
    assert category["tea-fact"] == "medium_term"


def test_windows_limits_and_the_rest_next_run(cli, agent, rows):
    assert consolidate(cli)["processed"] == 0  # daily: nothing logged 12-24 h ago
    assert consolidate(cli, "--type", "weekly")["processed"] == 1  # p-short: 3 days old
    assert consolidate(cli, "--type", "monthly")["processed"] == 1  # dup-2: importance 0.8
    total = len(PAIRS) * 2 + len(DUPLICATES) + len(PROMOTE) - 2
    report = consolidate(cli, "--type", "event_triggered", "--limit", "10")
    assert (report["processed"], report["remaining"]) == (10, total - 10)
    report = consolidate(cli, "--type", "event_triggered")
    assert (report["processed"], report["remaining"]) == (total - 10, 0)
    metrics = {r["metric_name"] for r in rows("consolidation_metrics")}
    assert {"memories_processed", "memories_merged", "memories_promoted", "patterns_extracted",
            "processing_time", "compression_ratio"} <= metrics


def test_status_shows_what_consolidation_did(cli, agent):
    report = consolidate(cli, "--type", "event_triggered")
    status = json.loads(cli("status", "--format", "json").stdout)["consolidation"]
    assert status["runs"] == 1 and status["memories_merged"] == report["merged"]
    assert status["patterns"] == report["patterns"] and status["knowledge"] >= 2
    assert status["links"] == report["linked"] and status["memories_waiting"] == 0


HOLD = """
import sys, time
from ravana_db.consolidate import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_two_runs_never_work_at_once_and_a_killed_one_leaves_no_lock(agent, db_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db_path), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        second = subprocess.run([*RAVANA, "--db", str(db_path), "consolidate", "--type",
                                 "event_triggered"], capture_output=True, text=True, check=False)
        assert second.returncode == 0 and second.stdout == ""
        assert f"another consolidation is running (pid {holder.pid}" in second.stderr
        assert time.monotonic() - started < 10
        holder.kill()  # a crash: the kernel drops the lock
        holder.wait()
        third = subprocess.run([*RAVANA, "--db", str(db_path), "consolidate", "--type",
                                "event_triggered", "--format", "json"],
                               capture_output=True, text=True, check=False)
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout)["processed"] > 0
    finally:
        holder.kill()
    runs = sqlite3.connect(db_path).execute("SELECT count(*) FROM memory_consolidations")
    assert runs.fetchone()[0] == 1


def test_wait_queues_behind_the_running_one(agent, db_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db_path), "2"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    waiting = subprocess.run([*RAVANA, "--db", str(db_path), "consolidate", "--wait",
                              "--format", "json"], capture_output=True, text=True, check=False)
    assert holder.poll() is not None  # it ran only after the holder let go
    assert waiting.returncode == 0 and json.loads(waiting.stdout)["run_id"]


def test_the_lock_file_is_private_and_never_a_symlink(cli, agent, db_path, tmp_path):
    consolidate(cli)
    lock = Path(f"{db_path.resolve()}.consolidate.lock")
    assert lock.stat().st_mode & 0o777 == 0o600
    lock.unlink()
    os.symlink(tmp_path / "elsewhere", lock)
    assert "is a symlink" in one_line_error(cli("consolidate"))
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("args, words", [
    (("--type", "hourly"), "--type: 'hourly' is not one of daily"),
    (("--undo", "no-such-run"), "no consolidation run 'no-such-run'"),
    (("--dry-run", "--list"), "one at a time"),
])
def test_bad_input_is_one_line(cli, agent, args, words):
    assert words in one_line_error(cli("consolidate", *args))


def test_structural_clusters_and_knowledge_are_plain_functions():
    memories = {m: ("code_pattern", f"text {m}", "2026-01-01T00:00:00.000Z") for m in "abcde"}
    edges = [("a", "b", 0.9), ("b", "c", 0.8), ("d", "e", 0.95)]
    (cluster,) = patterns.structural(memories, edges, min_support=3, min_confidence=0.6)
    assert cluster["supporting_memories"] == ["a", "b", "c"] and cluster["source_memory_id"] == "b"
    assert cluster["confidence_score"] == 0.85
    (k,) = patterns.knowledge([cluster, {**cluster, "pattern_id": "x", "confidence_score": 0.6}],
                              min_patterns=2)
    assert k["knowledge_domain"] == "code_pattern" and sum(k["weights"].values()) == 1.0


def test_log_keeps_working_while_a_consolidation_runs(tmp_path):
    """The run writes in short transactions: `log` from another process is never refused or
    kept waiting long while it works (20,000 memories, 5 % near-duplicates, take a while)."""
    import random

    sys.path.insert(0, str(ROOT / "bench"))
    from consolidate_bench import build

    path = tmp_path / "busy.db"
    build(path, 20_000, random.Random(0))

    def log(name):
        started = time.monotonic()
        done = subprocess.run([*RAVANA, "--db", str(path), "log", "action", "--action-name",
                               name, "--status", "success"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return time.monotonic() - started

    # What a `log` process costs on this machine now, with no run (the load scales it).
    alone = sorted(log(f"alone-{i}") for i in range(3))[1]
    report = (tmp_path / "report.json").open("w+")  # a pipe would fill up and block the run
    run = subprocess.Popen([*RAVANA, "--db", str(path), "consolidate", "--type",
                            "event_triggered", "--format", "json"],
                           stdout=report, stderr=subprocess.PIPE, text=True)
    during, slowest, logged = 0, 0.0, 0
    while run.poll() is None:
        slowest = max(slowest, log(f"tick-{logged}"))
        logged += 1
        during += run.poll() is None
    _, err = run.communicate()
    assert run.returncode == 0, err
    report.seek(0)
    assert json.loads(report.read())["merged"] > 0
    assert during >= 1, "the run ended before a log was written during it"
    # A process start and a short wait for the lock, no more (not the run's length).
    assert slowest < 2 * alone + 2, (slowest, alone)
    stored = sqlite3.connect(path).execute("SELECT count(*) FROM actionlog").fetchone()[0]
    assert stored == logged + 3


def test_quiet_prints_nothing_on_success_unless_a_format_is_asked_for(cli, agent, rows):
    result = cli("--quiet", "consolidate", "--type", "event_triggered")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    (run,) = rows("memory_consolidations")
    assert run["success"] == 1 and json.loads(run["consolidation_results"])["merged"] > 0
    undone = cli("--quiet", "consolidate", "--undo", run["consolidation_id"])
    assert (undone.exit_code, undone.stdout, undone.stderr) == (0, "", "")
    asked = cli("--quiet", "consolidate", "--format", "json")
    assert asked.exit_code == 0 and asked.stderr == "" and json.loads(asked.stdout)["run_id"]
    assert "abc" in one_line_error(cli("--quiet", "consolidate", "--undo", "abc"))


# Rows another client wrote with plain sqlite3 (no types, foreign keys off): each is skipped
# and reported; the good rows are still consolidated; nothing stored is lost; and the next run
# is not wedged by the same row.
BAD_ROWS = {
    "empty created_at": "UPDATE memory SET created_at = '' WHERE key = 'p-direct'",
    "garbage created_at": "UPDATE memory SET created_at = 'garbage' WHERE key = 'p-direct'",
    "zero created_at": "UPDATE memory SET created_at = '0000-00-00' WHERE key = 'p-direct'",
    "year 10000 last_accessed": ("UPDATE memory SET last_accessed = '+10000-01-01' "
                                 "WHERE key IN ('p-direct', 'dup-2')"),
    "huge access_count": ("UPDATE memory SET access_count = 9223372036854775800 "
                          "WHERE key IN ('dup-1', 'dup-3')"),
    "deep metadata": ("UPDATE memory SET metadata = json('{\"d\": ' || "
                      "replace(hex(zeroblob(990)), '00', '[') || "
                      "replace(hex(zeroblob(990)), '00', ']') || '}') "
                      "WHERE key IN ('dup-1', 'p-direct')"),
    "text vltm access_count": "UPDATE very_long_term_memories SET access_count = 'lots'",
    "text access_count": "UPDATE memory SET access_count = 'many' WHERE key = 'dup-3'",
    "text validation_count": ("INSERT INTO memory_patterns(pattern_id, pattern_type, "
                              "pattern_description, confidence_score, validation_count) "
                              "VALUES ('bad-1', 'temporal', 'x', 0.7, 'lots'), "
                              "('bad-2', 'temporal', 'y', 0.9, 'lots')"),
    "garbage action time": ("INSERT INTO actionlog(timestamp, action_name, status) VALUES "
                            "('2026-11-05T25:61:00Z', 'fetch_feeds', 'success')"),
    "garbage vltm time": ("UPDATE very_long_term_memories SET created_at = 'garbage' "
                          "WHERE memory_id = 'old-win'"),
    # not UTF-8: read back as U+FFFD, an id no row has (FOREIGN KEY constraint failed)
    "pattern id not UTF-8": ("INSERT INTO memory_patterns(pattern_id, pattern_type, "
                             "pattern_description, confidence_score, validation_count) "
                             "VALUES (CAST(x'ff6e6f74' AS TEXT), 'temporal', 'z', 0.99, 3)"),
    "dangling source_memory_id": ("INSERT INTO memory_patterns(pattern_id, pattern_type, "
                                  "pattern_description, confidence_score, validation_count, "
                                  "source_memory_id) VALUES ('dangling', 'temporal', 'z', 0.8, "
                                  "3, 'no-such-vltm')"),
    "text in the policy": ("UPDATE consolidation_policy SET value = json_set(value, "
                           "'$.min_age_hours', 'twelve', '$.min_importance', 'low', "
                           "'$.since_hours', json('[]')) WHERE key = 'window.event_triggered'; "
                           "UPDATE consolidation_policy SET value = json_set(value, "
                           "'$.min_importance', 'high', '$.memory_types', 7) "
                           "WHERE key = 'promote.long_to_very_long'"),
    "policy ages past year 9999": ("UPDATE consolidation_policy SET value = json_set(value, "
                                   "'$.lookback_days', 1e300, '$.min_age_hours', -1e300) "
                                   "WHERE key IN ('patterns', 'window.event_triggered'); "
                                   "UPDATE consolidation_policy SET value = "
                                   "'{\"batch\": 0, \"max_memories\": 1e300}' "
                                   "WHERE key = 'limits'; UPDATE consolidation_policy SET "
                                   "value = '{}' WHERE key = 'promote.long_to_very_long'"),
    "deep policy": ("UPDATE consolidation_policy SET value = '{\"d\": ' || "
                    "replace(hex(zeroblob(990)), '00', '[') || "
                    "replace(hex(zeroblob(990)), '00', ']') || '}' WHERE key = 'patterns'"),
    "blob text": ("INSERT INTO memory(key, text, importance, created_at, access_count) "
                  "VALUES ('blob', x'ff00de', 0.95, '2026-01-01T00:00:00Z', 5)"),
    "dangling merged_into": "UPDATE memory SET merged_into = 99999 WHERE key = 'p-unimportant'",
    # past the CHECK, as a client that turns checks off can write it
    "related_memories not a list": ("PRAGMA ignore_check_constraints = ON; "
                                    "UPDATE very_long_term_memories SET related_memories = "
                                    "'5' WHERE memory_id = 'old-win'"),
}


@pytest.mark.parametrize("sql", BAD_ROWS.values(), ids=BAD_ROWS)
def test_a_bad_row_is_skipped_and_never_wedges_a_run(cli, agent, rows, db_path, sql):
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.executescript(sql)
        conn.commit()
    kept = ("memory", "very_long_term_memories", "memory_patterns", "actionlog")

    def counts():  # count(*): a row that is not UTF-8 cannot be read by Python's sqlite3
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in kept}

    before = counts()
    for _ in range(2):  # the same row must not stop the next run either
        result = cli("consolidate", "--type", "event_triggered", "--format", "json")
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr
        report = json.loads(result.stdout)
    m = memories(rows)
    # the good rows are still consolidated: the tea duplicates merged, p-long promoted
    assert m["dup-2"]["merged_into"] == m["dup-3"]["id"] or m["dup-1"]["merged_into"]
    promoted = rows("SELECT json_extract(metadata_info, '$.memory') AS id FROM "
                    "very_long_term_memories WHERE source_session = 'consolidate'")
    assert m["p-long"]["id"] in {r["id"] for r in promoted}
    assert {r["success"] for r in rows("memory_consolidations")} == {1}
    assert "scheduling" in {r["knowledge_domain"] for r in rows("strategic_knowledge")}
    # nothing stored was lost: every row there before is still there
    after = counts()
    assert all(after[t] >= before[t] for t in kept), (before, after)
    assert all(isinstance(s, dict) and s["reason"] for s in report["skipped"])
    if report["skipped"]:  # said on stderr, one line
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "skipped" in warnings[0], result.stderr


def test_the_list_reads_a_run_record_another_client_wrote(cli, agent, db_path):
    """Results nested deeper than Python reads, or holding a list: the run is still listed."""
    deep = "[" * 990 + "]" * 990
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.executemany("INSERT INTO memory_consolidations(consolidation_id, "
                         "consolidation_type, consolidation_results) VALUES (?, 'daily', ?)",
                         [("deep-run", f'{{"operation": "consolidate", "d": {deep}}}'),
                          ("odd-run", '{"operation": "consolidate", "merged": "some"}')])
        conn.commit()
    result = cli("consolidate", "--list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    listed = {r["consolidation_id"]: r for r in json.loads(result.stdout)}
    assert listed["deep-run"]["merged"] is None and listed["odd-run"]["merged"] == "some"
