"""The second duplicate check (consolidate/meaning.py, wordnet.py): same fact in other words
merges, two facts never do; the evidence is recorded and listed; --undo restores; `query
--distinct` drops near-copies. Real model, real WordNet files, the CLI on a temporary file."""

import contextlib
import json
import sqlite3
import time

import pytest
from conftest import contents, copy_db, jsonl
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.consolidate import meaning, wordnet

SAME = [  # (a, b): the same fact in other words
    ("The nightly backup job finished in 42 minutes on Sunday.",
     "The nightly backup job completed in 42 minutes on Sunday."),
    ("The agent bought two licences for the build farm.",
     "The agent purchased two licences for the build farm."),
]
NEVER = [  # (a, b): look-alikes of another meaning
    ("The release review with Anna happened in Berlin last week.",
     "The release review with Anna happened in Tokyo last week."),
    ("The delayed flights from Paris to Rome were rebooked.",
     "The delayed flights from Rome to Paris were rebooked."),
    ("The overnight migration did finish before the backup window.",
     "The overnight migration did not finish before the backup window."),
    ("The nightly backup job finished in 42 minutes on Monday.",
     "The nightly backup job finished in 24 minutes on Monday."),
]


def invoke(path, *args, input=None):
    return CliRunner().invoke(app, ["--db", str(path), *map(str, args)], input=input,
                              catch_exceptions=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Every pair above, logged through the CLI and embedded (built once)."""
    path = tmp_path_factory.mktemp("meaning") / "agent.db"
    records = [{"key": f"{group}{i}-{side}", "text": pair[n], "created_at": "2d"}
               for group, pairs in (("same", SAME), ("never", NEVER))
               for i, pair in enumerate(pairs) for n, side in enumerate("ab")]
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAVANA_DB_MODEL", raising=False)
        result = invoke(path, "log", "memory", "--stdin", input=jsonl(*records))
        assert result.exit_code == 0, result.stderr
    return path


@pytest.fixture
def agent(template, db_path):
    return copy_db(template, db_path)


def by_key(db_path):
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.row_factory = sqlite3.Row
        return {r["key"]: dict(r) for r in conn.execute("SELECT * FROM memory")}


def merged_pair(m, prefix):
    a, b = m[f"{prefix}-a"], m[f"{prefix}-b"]
    return a["merged_into"] == b["id"] or b["merged_into"] == a["id"]


def evidence_of(reason, a, b, sense_a, sense_b):
    """Whether reason names the word pair and their shared first sense (either order: the
    survivor's word comes first)."""
    return (f"{a} / {b}: same first sense {sense_a} = {sense_b}" in reason or
            f"{b} / {a}: same first sense {sense_b} = {sense_a}" in reason)


def run(cli):
    result = cli("consolidate", "--type", "event_triggered", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_same_fact_in_other_words_merges_and_two_facts_never_do(cli, agent, db_path, rows):
    report = run(cli)
    m = by_key(db_path)
    assert [merged_pair(m, f"same{i}") for i in range(len(SAME))] == [True] * len(SAME)
    assert [merged_pair(m, f"never{i}") for i in range(len(NEVER))] == [False] * len(NEVER)
    # The evidence: which rule, the word pairs and the cosine, in the merge record and report.
    merged = m["same0-a"] if m["same0-a"]["merged_into"] else m["same0-b"]
    reason = rows("SELECT reason FROM memory_merge WHERE memory_id = ?", merged["id"])[0]
    assert reason["reason"].startswith("same meaning (cosine 0.9")
    assert evidence_of(reason["reason"], "finished", "completed", "finish.v.01", "complete.v.01")
    reasons = {r for merge in report["merges"] for r in merge["reasons"].values()}
    assert reason["reason"] in reasons
    # A look-alike of another meaning is linked, with why it is not a duplicate.
    linked = {(r["memory_id"], r["related_id"]): r["reason"] for r in rows("memory_link")}
    assert linked[tuple(sorted((m["never1-a"]["id"], m["never1-b"]["id"])))] == \
        "word order differs"


def test_the_list_shows_each_merge_with_its_evidence(cli, agent, db_path):
    report = run(cli)
    listed = json.loads(cli("consolidate", "--list", "--format", "json").stdout)
    assert listed[0]["consolidation_id"] == report["run_id"]
    evidence = [x["reason"] for x in listed[0]["merges"]]
    assert len(evidence) == report["merged"] == len(SAME)
    assert all(e.startswith("same meaning (cosine ") for e in evidence)
    assert any(evidence_of(e, "bought", "purchased", "buy.v.01", "purchase.v.01")
               for e in evidence)
    table = cli("consolidate", "--list", "--format", "table").stdout
    assert "merges of the latest run" in table and "same meaning" in table


def test_undo_restores_them_and_they_never_merge_again(cli, agent, db_path):
    before = contents(db_path)
    report = run(cli)
    assert report["merged"] == len(SAME)
    result = cli("consolidate", "--undo", report["run_id"], "--format", "json")
    assert result.exit_code == 0, result.stderr
    after = contents(db_path)
    for table in ("memory", "memory_link"):
        assert after[table] == before[table], table
    assert run(cli)["merged"] == 0  # an undone merge is kept apart


def test_meaning_merges_can_be_turned_off_by_the_policy(cli, agent, db_path):
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("UPDATE consolidation_policy SET value = json_set(value, '$.meaning', "
                     "json('false')) WHERE key = 'duplicates'")
        conn.commit()
    assert run(cli)["merged"] == 0


def test_query_distinct_drops_near_copies_of_a_higher_result(cli, agent):
    def ids(*extra):
        result = cli("query", "nightly backup job minutes Sunday", "--kind", "memory",
                     "--no-touch", "--format", "json", "-n", "3", *extra)
        assert result.exit_code == 0, result.stderr
        return [r["text"] for r in json.loads(result.stdout)]

    plain, distinct = ids(), ids("--distinct")
    assert set(SAME[0]) <= set(plain)
    assert len([t for t in distinct if t in SAME[0]]) == 1
    assert len(distinct) == 3  # the next result takes the dropped one's place
    assert "42 minutes on Monday" in " ".join(distinct)  # another fact stays


@pytest.mark.parametrize("a, b", NEVER + [
    ("The cache size increased sharply.", "The cache size decreased sharply."),
    ("The server started quickly.", "The server stopped quickly."),
    ("All tests passed on Friday.", "Some tests passed on Friday."),
    ("The deploy happened before the outage.", "The deploy happened after the outage."),
    ("The job ran on Monday.", "The job ran on Tuesday."),
    ("It was stored in the cache.", "It was stored in the database."),
])
def test_the_hard_guards_are_absolute(a, b):
    assert meaning.check(a, b, similarity=0.99)[0] is False


def test_what_merges_says_which_words_and_why():
    same, evidence = meaning.check(*SAME[0], similarity=0.95)
    assert same and evidence == {"rule": "same meaning", "cosine": 0.95, "pairs": [
        ["finished", "completed", "same first sense finish.v.01 = complete.v.01"]]}
    assert meaning.check(*SAME[0], similarity=0.89)[1]["rule"] == "cosine below 0.9"
    assert meaning.same_word("ran", "running") == "same lemma run.v"
    assert meaning.same_word("began", "started") == "same first sense begin.v.01 = start.v.01"
    # A shared second sense is not enough: "bank" (sense 1, the river's) / "rely" (v. sense 1)
    assert meaning.same_word("campaign", "run") is None
    # At most two words, and one word in three, may differ.
    assert meaning.check("The job finished.", "The task completed.", similarity=0.99)[0] is False


def test_wordnet_is_read_lazily_with_morphy_and_exceptions():
    assert wordnet.available()
    assert wordnet.lemmas("went", "v") == ("go",)
    assert wordnet.lemmas("children", "n") == ("child",)
    assert "finish" in {lemma for _, lemma in wordnet.all_lemmas("finishing")}
    assert wordnet.senses("finish", "v")[0] == wordnet.senses("complete", "v")[0]
    assert wordnet.senses("zyzzyvax", "n") == [] and wordnet.senses("", "n") == []
    assert wordnet.senses("x" * 10_000, "n") == []


@pytest.mark.parametrize("text", ["", " ", "\x00\ufffd", "é" * 3000, "word " * 1_000_000,
                                  "\u202e\u0301\U0001f600 done.", "finished " * 400])
def test_hostile_input_is_bounded(text):
    start = time.monotonic()
    same, evidence = meaning.check(text, text + " x", similarity=0.99)
    assert same is False and evidence["rule"]
    assert meaning.check(text, "finished", similarity=1.0)[0] is False
    assert time.monotonic() - start < 2
