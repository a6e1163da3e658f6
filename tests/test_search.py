"""Search by meaning and by words: `ravana-db query`, the index, `reindex`."""

import json
import select
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ravana_db.db import open_db
from ravana_db.embed import default_model_folder
from ravana_db.times import now

FIXTURES = Path(__file__).parent.parent / "fixtures"


def query(cli, *args, input=None):
    result = cli("query", *args, "--format", "jsonl" if input else "json", input=input)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if not input else [
        json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def memories(cli):
    result = cli("log", "memory", "--stdin", input=(FIXTURES / "memories.jsonl").read_text())
    assert result.exit_code == 0, result.stderr


def keys(results):
    return [r["key"] for r in results]


def test_a_paraphrase_sharing_no_words_finds_the_memory(cli, rows):
    cli("log", "memory", "--stdin", input=jsonl(
        {"key": "gpu", "text": "Training crashed: CUDA out of memory at batch size 64."},
        {"key": "tea", "text": "The user prefers green tea and dislikes coffee."},
        {"key": "trip", "text": "The user plans a trip to Kyoto in April for cherry blossoms."}))
    # No word in common with the memory it must find.
    results = query(cli, "which beverage does this person enjoy?", "--top-n", "1")
    assert keys(results) == ["tea"]
    assert results[0]["bm25_rank"] is None and results[0]["vector_rank"] == 1
    assert 0 < results[0]["similarity"] <= 1


def test_labelled_queries_find_their_memories(cli, memories):
    """The labelled fixture: hybrid ranks a relevant memory first for most queries."""
    cases = [json.loads(line) for line in (FIXTURES / "search_eval.jsonl").open()]
    firsts = top3 = 0
    for case in cases:
        found = keys(query(cli, case["query"], "--top-n", "3", "--no-touch"))
        firsts += found[0] in case["relevant"]
        top3 += bool(set(found) & set(case["relevant"]))
    print(f"hit@1 {firsts}/{len(cases)}, hit@3 {top3}/{len(cases)}")
    assert firsts / len(cases) >= 0.7 and top3 / len(cases) >= 0.85, (firsts, top3)


def test_every_searchable_kind_is_found(cli):
    cli("log", "summary", "--summary-text", "Quarterly revenue grew on cloud demand.")
    cli("log", "vltm", "--memory-id", "v1", "--memory-type", "critical_failure",
        "--compressed-content", '{"summary": "Friday deploys broke production", "n": 3}')
    cli("log", "pattern", "--pattern-id", "p1", "--pattern-type", "temporal",
        "--pattern-description", "Failures cluster after midnight", "--confidence-score", "0.6")
    cli("log", "knowledge", "--knowledge-id", "k1", "--knowledge-domain", "ops",
        "--knowledge-summary", "Ship small changes early in the week", "--confidence-level", "0.8")
    db = open_db(Path("agent.db"))
    db.execute("INSERT INTO feed(url) VALUES ('http://x/rss')")
    db.execute("INSERT INTO article(title, link, guid, summary, source, feed_id) VALUES "
               "('Storm floods the coast', 'http://x/1', 'g1', 'Heavy rain hit the harbour.', "
               "'bbc', 1)")
    db.execute("INSERT INTO event(description, keywords) VALUES ('Coastal flooding', 'storm,rain')")
    db.close()
    assert cli("reindex", "--vectors").exit_code == 0
    found = {(r["kind"], r["id"]) for r in query(cli, "storm flooding rain", "--top-n", "2")}
    assert found == {("article", 1), ("event", 1)}
    assert query(cli, "revenue", "--kind", "summary")[0]["id"] == 1
    assert query(cli, "deploys broke production", "--kind", "vltm")[0]["id"] == "v1"
    assert query(cli, "after midnight", "--kind", "pattern")[0]["id"] == "p1"
    assert query(cli, "ship early", "--kind", "knowledge")[0]["id"] == "k1"


def test_filters_apply_before_ranking(cli, memories):
    every = query(cli, "python", "--top-n", "100", "--no-touch")
    assert {r["type"] for r in every} > {"fact"}
    facts = query(cli, "python", "--type", "fact", "--top-n", "100", "--no-touch")
    assert facts and {r["type"] for r in facts} == {"fact"}
    # A filter keeps every matching row, not what survived a top-k cut.
    assert len(facts) == len([r for r in every if r["type"] == "fact"]) or len(facts) > len(
        [r for r in every if r["type"] == "fact"])
    web = query(cli, "python", "--source", "web", "--mode", "vector", "--top-n", "50")
    assert web and {r["source"] for r in web} == {"web"}
    spring = query(cli, "trip", "--since", "2026-04-01", "--until", "2026-06-30T23:59:59Z",
                   "--top-n", "50", "--no-touch")
    assert spring and all("2026-04-01" <= r["timestamp"] <= "2026-06-30T23:59:59" for r in spring)
    assert query(cli, "python", "--kind", "summary") == []
    # Relative ages: everything in the fixture is older than a day.
    assert query(cli, "python", "--since", "1d") == []
    assert len(query(cli, "python", "--until", "1d", "--top-n", "3")) == 3


def test_filters_on_the_vector_side_reach_past_the_top_hits(cli):
    # 30 near-identical memories of one source and one of another: the filter must find the
    # odd one out however far down an unfiltered ranking it would be.
    cli("log", "memory", "--stdin", input=jsonl(
        *({"text": f"Notes on the GPU cluster, part {i}", "source": "noise"} for i in range(30)),
        {"text": "A recipe for lemon cake", "source": "kitchen"}))
    results = query(cli, "GPU cluster notes", "--mode", "vector", "--source", "kitchen")
    assert [r["text"] for r in results] == ["A recipe for lemon cake"]


def test_more_like_this(cli, memories, rows):
    results = query(cli, "--like", "mem-011", "--top-n", "3")
    assert "mem-011" not in keys(results)
    assert {"mem-012", "mem-013", "mem-014", "mem-015"} & set(keys(results))
    (memory,) = rows("SELECT id FROM memory WHERE key = ?", "mem-011")
    by_id = query(cli, "--like", f"memory:{memory['id']}", "--top-n", "3")
    assert keys(by_id) == keys(results)
    missing = cli("query", "--like", "nope")
    assert missing.exit_code == 2 and "no stored memory" in missing.stderr


def test_min_similarity_is_true_cosine_similarity(cli, memories):
    loose = query(cli, "GPU out of memory", "--mode", "vector", "--top-n", "60")
    sims = [r["similarity"] for r in loose]
    assert sims == sorted(sims, reverse=True)
    threshold = round(sims[5] - 1e-6, 6)  # printed similarities are rounded to 6 places
    strict = query(cli, "GPU out of memory", "--mode", "vector", "--top-n", "60",
                   "--min-similarity", str(threshold))
    assert len(strict) == 6 and min(r["similarity"] for r in strict) >= threshold
    assert query(cli, "GPU out of memory", "--min-similarity", "0.99") == []
    from ravana_db.embed import Embedder

    e = Embedder()
    a, b = e.embed(["GPU out of memory", loose[0]["text"]])
    # int8 re-rank vectors (vectors.py): within 2e-3 of the float32 cosine
    assert abs(float(a @ b) - loose[0]["similarity"]) < 2e-3


def test_hostile_query_strings_never_break_fts(cli, memories):
    for text in ['"', "'", "AND", "OR NOT", "*", "-", "a AND (b OR", 'NEAR("x" "y")', "^col:x",
                 "memory*", "---", "🙂🔥", "日本語のテキスト", "Köln überflutet",
                 "'; DROP TABLE memory;--", "{}", "\\", "x" * 5000]:
        for mode in ("fts", "hybrid"):
            result = cli("query", "--mode", mode, "--format", "json", "--", text)
            assert result.exit_code == 0, (text, mode, result.stderr)
            json.loads(result.stdout)
    assert query(cli, "🍞")  # emoji alone: no words, the vector side still answers


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(min_size=1, max_size=40))
def test_any_text_is_a_valid_fts_query(text, tmp_path_factory):
    from ravana_db.search import search
    from ravana_db.search.query import Query

    global _fuzz_db
    if "_fuzz_db" not in globals():
        _fuzz_db = open_db(tmp_path_factory.mktemp("fuzz") / "f.db")
        _fuzz_db.execute("INSERT INTO memory(text) VALUES ('alpha beta'), ('gamma \"delta\"')")
    if not text.strip():
        return
    search(_fuzz_db, Query(text, mode="fts"), touch=False)


def test_query_stdin_answers_each_line(cli, memories):
    lines = ("how long should replies be?\n"
             '{"text": "Stockfish", "mode": "fts", "top_n": 1}\n'
             '{"text": "Kyoto", "kind": "memory", "top_n": 2}\n')
    answers = query(cli, "--stdin", "--no-touch", input=lines)
    assert [(a["line"], a["text"], len(a["results"])) for a in answers] == [
        (1, "how long should replies be?", 5), (2, "Stockfish", 1), (3, "Kyoto", 2)]
    assert [r["key"] for r in answers[1]["results"]] == ["mem-026"]
    # A bad line is refused on its own: the lines around it are still answered.
    bad = cli("query", "--stdin", input='Kyoto\n{"text": "x", "mode": "psychic"}\nchess\n')
    assert bad.exit_code == 2 and bad.stderr.startswith("error: line 2: mode")
    answers = [json.loads(line) for line in bad.stdout.splitlines()]
    assert [sorted(a) for a in answers] == [["line", "results", "text"], ["error", "line"],
                                            ["line", "results", "text"]]
    assert answers[1]["error"] == bad.stderr[len("error: "):].rstrip("\n")


def test_one_open_process_answers_each_line_before_the_next_is_sent(memories, db_path):
    """An agent keeps one `query --stdin` open (one model load): it writes a question, reads
    its answer, then asks the next. A query with no results still gets its line."""
    proc = subprocess.Popen([sys.executable, "-m", "ravana_db", "--db", str(db_path), "query",
                             "--stdin", "--no-touch", "--top-n", "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for text, key in (("Stockfish", "mem-026"), ("autumn leaves at Tofuku-ji", "mem-036"),
                          ('{"text": "zzqx", "mode": "fts"}', None)):
            proc.stdin.write(text + "\n")
            proc.stdin.flush()  # the process cannot see the end of input: it must answer now
            assert select.select([proc.stdout], [], [], 60)[0], f"no answer to {text!r}"
            answer = json.loads(proc.stdout.readline())
            assert [r["key"] for r in answer["results"]] == ([key] if key else [])
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read() == ""
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_a_blank_line_gets_its_answer_at_once(memories, db_path):
    """An agent that writes an empty line and waits is answered (an error line: there is no
    question), and the next lines still are; exit 2 at the end, as for any refused line."""
    proc = subprocess.Popen([sys.executable, "-m", "ravana_db", "--db", str(db_path), "query",
                             "--stdin", "--no-touch", "--top-n", "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for number, text in enumerate(("", "   ", "Stockfish"), 1):
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            assert select.select([proc.stdout], [], [], 60)[0], f"no answer to {text!r}"
            answer = json.loads(proc.stdout.readline())
            if text.strip():
                assert [r["key"] for r in answer["results"]] == ["mem-026"]
            else:
                assert answer == {"line": number,
                                  "error": f"line {number}: give a query text (or --like ID)"}
        proc.stdin.close()
        assert proc.wait(timeout=60) == 2
        assert proc.stderr.read().count("\n") == 2
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_a_line_over_the_limit_is_answered_with_its_error_and_the_next_lines_too(
        memories, db_path, tmp_path):
    """A 200 MB line is read in bounded pieces, never held: its answer names the limit."""
    path = tmp_path / "questions.txt"
    with open(path, "wb") as f:
        f.write(b"Stockfish\n")
        for _ in range(200):
            f.write(b"x" * 1_000_000)
        f.write(b"\nStockfish\n")
    with open(path, "rb") as stdin:
        run = subprocess.run([sys.executable, "-m", "ravana_db", "--db", str(db_path), "query",
                              "--stdin", "--no-touch", "--top-n", "1", "--mode", "fts"],
                             stdin=stdin, capture_output=True, timeout=300)
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    error = "line 2: longer than 16 MiB, the most a line may hold"
    assert answers[1] == {"line": 2, "error": error}
    assert [a["line"] for a in answers] == [1, 2, 3]
    assert [r["key"] for r in answers[2]["results"]] == ["mem-026"]
    assert (run.returncode, run.stderr.decode()) == (2, f"error: {error}\n")


def test_returned_memories_count_as_accessed_unless_no_touch(cli, rows):
    cli("log", "memory", "--key", "a", "--text", "The cat sleeps on the red sofa.")
    query(cli, "cat sofa", "--no-touch")
    assert rows("memory")[0]["access_count"] == 0
    query(cli, "cat sofa")
    query(cli, "cat sofa")
    (row,) = rows("memory")
    assert row["access_count"] == 2 and row["last_accessed"].endswith("Z")


def test_fts_and_vectors_follow_update_and_delete(cli, rows):
    cli("log", "memory", "--key", "k", "--text", "The meeting moved to Tuesday.")
    cli("log", "memory", "--key", "k", "--text", "Lunch is pasta with basil.")
    assert query(cli, "Tuesday meeting", "--mode", "fts") == []
    assert keys(query(cli, "basil", "--mode", "fts")) == ["k"]
    assert keys(query(cli, "what is for the midday meal?", "--mode", "vector")) == ["k"]
    counts = rows("SELECT (SELECT count(*) FROM doc) d, (SELECT count(*) FROM doc_vec) v, "
                  "(SELECT count(*) FROM doc_bits) b, (SELECT count(*) FROM embed_queue) q")[0]
    assert counts == {"d": 1, "v": 1, "b": 1, "q": 0}
    db = open_db(Path("agent.db"))
    db.execute("DELETE FROM memory")
    db.close()
    counts = rows("SELECT (SELECT count(*) FROM doc) d, (SELECT count(*) FROM doc_vec) v, "
                  "(SELECT count(*) FROM doc_bits) b, (SELECT count(*) FROM bits_queue) s, "
                  "(SELECT count(*) FROM doc_fts WHERE doc_fts MATCH 'basil') f")[0]
    # No trigger touches the vec0 table (clients without sqlite-vec must be able to delete):
    # its row waits for the next write, and no query returns it meanwhile.
    assert counts == {"d": 0, "v": 0, "b": 1, "s": 1, "f": 0}
    assert query(cli, "basil") == []
    assert query(cli, "what is for the midday meal?", "--mode", "vector") == []
    cli("log", "action", "--action-name", "next_write")
    assert rows("SELECT (SELECT count(*) FROM doc_bits) b, (SELECT count(*) FROM bits_queue) s"
                )[0] == {"b": 0, "s": 0}


def test_the_same_text_is_embedded_once(cli, rows):
    cli("log", "memory", "--stdin", input=jsonl({"text": "same words"}, {"text": "same words"}))
    cli("log", "summary", "--summary-text", "same words")
    vectors = rows("SELECT content_hash, embedding FROM doc_vec")
    assert len(vectors) == 3 and len({v["content_hash"] for v in vectors}) == 1


def test_reindex_after_deleting_the_vectors(cli, memories, rows):
    before = keys(query(cli, "graphics card memory", "--mode", "vector", "--no-touch"))
    db = open_db(Path("agent.db"))
    db.execute("DELETE FROM doc_vec")
    db.execute("DELETE FROM doc_bits")
    db.execute("INSERT INTO doc_fts(doc_fts) VALUES ('delete-all')")
    db.close()
    assert query(cli, "graphics card memory", "--mode", "vector") == []
    result = cli("reindex", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["embedded"] == 60
    assert keys(query(cli, "graphics card memory", "--mode", "vector", "--no-touch")) == before
    assert query(cli, "Stockfish", "--mode", "fts")


def test_another_model_is_refused_until_reindexed(cli, memories, tmp_path):
    other = tmp_path / "my-model"
    shutil.copytree(default_model_folder(), other)
    refused = cli("query", "gpu", "--model", str(other))
    assert refused.exit_code == 2
    assert "reindex --vectors --model" in refused.stderr and refused.stderr.count("\n") == 1
    refused = cli("--model", str(other), "log", "memory", "--text", "new one")
    assert refused.exit_code == 2
    done = cli("reindex", "--vectors", "--model", str(other), "--format", "json")
    assert done.exit_code == 0 and json.loads(done.stdout)["embedded"] == 60
    assert query(cli, "GPU out of memory", "--model", str(other))
    assert query(cli, "GPU out of memory")  # the file's model is now the default
    status = json.loads(cli("status", "--format", "json").stdout)
    assert status["embedding_model"] == str(other) and status["embedding_dim"] == 384


def test_an_unloadable_model_is_one_clear_error(cli, memories):
    result = cli("reindex", "--vectors", "--model", "no-such/model-anywhere")
    assert result.exit_code == 2
    assert result.stderr == ("error: cannot load embedding model 'no-such/model-anywhere': no "
                             "model folder by that name here, nor a model fastembed knows\n")
    assert query(cli, "GPU out of memory", "--mode", "vector")  # the old vectors are intact


def test_fts_mode_and_help_do_not_load_the_model(cli, memories, db_path):
    code = ("import sys\nfrom ravana_db.cli import app\n"
            "try:\n    app(sys.argv[1:], prog_name='ravana-db')\nexcept SystemExit:\n    pass\n"
            "heavy = {'fastembed', 'onnxruntime', 'tokenizers', 'pydantic'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    for args in (["--help"], ["--db", str(db_path), "query", "python", "--mode", "fts"],
                 ["--db", str(db_path), "status"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_query_on_a_missing_file_fails_clearly(cli, db_path):
    result = cli("query", "anything")
    assert result.exit_code == 2 and "ravana-db init" in result.stderr
    assert not db_path.exists()


@pytest.mark.parametrize("args,expected", [
    (["x", "--mode", "psychic"], "mode"),
    (["x", "--kind", "dreams"], "kind"),
    (["x", "--since", "last tuesday"], "since"),
    (["x", "--top-n", "0"], "top-n"),
    (["x", "--min-similarity", "3"], "min-similarity"),
    ([], "give a query text"),
])
def test_bad_query_options_exit_2(cli, args, expected):
    cli("init")
    result = cli("query", *args)
    assert result.exit_code == 2 and expected in result.stderr and result.stderr.count("\n") == 1


def test_reindex_resumes_after_an_interrupt(db_path, tmp_path):
    from ravana_db import index
    from ravana_db.embed import Embedder

    db = open_db(db_path)
    total = index.BATCH + 100
    db.conn.executemany("INSERT INTO memory(text) VALUES (?)",
                        [(f"note {i}: item {i % 7}",) for i in range(total)])
    assert index.pending(db) == total
    other = tmp_path / "other-model"
    shutil.copytree(default_model_folder(), other)
    embedder = Embedder(str(other))
    calls = []

    def stop_after_first_batch(n, total=None):
        calls.append(n)
        if sum(calls) >= index.BATCH:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index.reindex(db, embedder, progress=stop_after_first_batch)
    # The model switch and the first batch were committed; the rest is still queued.
    assert index.recorded_model(db) == (str(other), 384)
    assert db.execute("SELECT count(*) FROM doc_vec").fetchone()[0] == index.BATCH
    assert index.pending(db) == total - index.BATCH
    report = index.reindex(db, embedder)
    assert report["embedded"] == total - index.BATCH
    assert db.execute("SELECT count(*) FROM doc_bits").fetchone()[0] == total
    assert index.pending(db) == 0


@pytest.mark.parametrize("line,expected", [
    ('{"text": 5}', "line 1: text: must be a string, not 5"),
    ('{"text": "x", "top_n": "abc"}', "line 1: top-n: 'abc' is not a number"),
    ('{"text": "x", "top_n": 2.5}', "line 1: top-n: 2.5 is not a whole number"),
    ('{"text": "x", "kind": ["memory"]}', "line 1: kind: must be a string"),
    ('{"text": "x", "min_similarity": true}', "line 1: min-similarity: True is not a number"),
    ('{"text": "x"', "line 1: not valid JSON (Expecting ',' delimiter at column 13)"),
])
def test_bad_query_lines_are_one_line_errors(cli, line, expected):
    cli("init")
    result = cli("query", "--stdin", input=line + "\n")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: " + expected)
    assert json.loads(result.stdout)["error"].startswith(expected)


def test_a_filtered_word_search_is_driven_by_the_full_text_match(cli, memories):
    """A filter must not turn the FTS side into a walk over every doc of a kind, each probing
    the full-text index (65x slower at 5,000 long documents): a broad filter (every memory)
    filters the best matches, a narrow one (one source) joins each match to its doc; both
    start from the full-text match and find docs by primary key."""
    from ravana_db.search import search
    from ravana_db.search.query import Query

    db = open_db(Path("agent.db"))
    for filters, shape in (({"kind": "memory", "since": "2000-01-01"}, "CO-ROUTINE f"),
                           ({"source": "nowhere"}, "SCAN doc_fts VIRTUAL TABLE")):
        seen = []
        db.conn.set_trace_callback(seen.append)
        search(db, Query("graphics card memory", mode="fts", **filters), touch=False)
        db.conn.set_trace_callback(None)
        (sql,) = [s for s in seen if "doc_fts MATCH" in s]
        plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
        assert plan[0] == shape or plan[0].startswith(shape), plan
        assert [p for p in plan if p.startswith("SCAN") or "doc_fts" in p][0].startswith(
            "SCAN doc_fts VIRTUAL TABLE"), plan
        assert any(p.startswith("SEARCH d USING INTEGER PRIMARY KEY") for p in plan), plan
    db.close()


def test_a_filtered_word_search_ranks_as_the_unfiltered_one_restricted(cli, memories):
    """Broad filters (most docs pass) and narrow ones rank by other plans; both give the
    unfiltered ranking with the other docs taken out."""
    cli("log", "summary", "--stdin", input=jsonl(*({"summary_text": f"Note {i}: the GPU memory "
        f"and the train commute, with chess on the phone ({i})."} for i in range(6))))
    texts = ["gpu memory", "train commute phone", "chess", "memory of the user"]
    filters = [{}, {"kind": "memory"}, {"kind": "summary"}, {"kind": "memory", "type": "fact"},
               {"source": "chat"}, {"since": "2026-03-01"}]
    lines = "".join(json.dumps({"text": t, "mode": "fts", "top_n": 100, **f}) + "\n"
                    for t in texts for f in filters)
    answers = iter(query(cli, "--stdin", "--no-touch", input=lines))
    for _ in texts:
        everything = next(answers)["results"]
        assert {r["kind"] for r in everything} == {"memory", "summary"}
        for f in filters[1:]:
            got = next(answers)["results"]
            keep = [r for r in everything if all(
                r["kind" if k == "kind" else k] == v for k, v in f.items() if k != "since")
                and r["timestamp"] >= f.get("since", "")]
            assert [(r["kind"], r["id"], r["bm25"]) for r in got] == [
                (r["kind"], r["id"], r["bm25"]) for r in keep], f


# Fusion and ranking terms ---------------------------------------------------------------------


def test_hybrid_fusion_is_pinned_on_the_labelled_fixture(cli, memories, db_path):
    """The chosen fusion: (max(similarity, 0) + bm25 / bm25_max) / 2, bm25_max being the
    highest BM25 the query's terms can reach. Its order on two fixture queries is pinned."""
    from ravana_db.search import bm25_max, fts_terms

    asked = {"Stockfish chess engine analysis depth":
             ["mem-026", "mem-028", "mem-027", "mem-029"],
             "what did the user say about the deploy on Friday and the staging database":
             ["mem-009", "mem-008", "mem-006", "mem-052"]}
    answers = query(cli, "--stdin", "--no-touch", "--top-n", "4", input="".join(
        text + "\n" for text in asked))
    db = open_db(db_path, write=False)
    for answer, (text, keys) in zip(answers, asked.items()):
        assert [r["key"] for r in answer["results"]] == keys
        top = bm25_max(db, fts_terms(text))
        for r in answer["results"]:
            expected = (max(r["similarity"], 0) + (r["bm25"] or 0) / top) / 2
            assert r["score"] == pytest.approx(expected, abs=2e-6)
            assert "recency" not in r and "importance" not in r  # off by default


def test_an_incidental_word_does_not_outvote_the_meaning(cli):
    """Rank fusion gives the only word match a full first place; score fusion weighs it by how
    much of the query's words it holds."""
    cli("log", "memory", "--stdin", input=jsonl(
        {"key": "meaning", "text": "Keep answers short: the user wants two or three sentences."},
        {"key": "word", "text": "The person at the bakery asked for sourdough again."}))
    result = query(cli, "how long should my replies be for this person?", "--no-touch")
    assert [r["key"] for r in result] == ["meaning", "word"]
    assert result[1]["bm25_rank"] == 1 and result[0]["bm25_rank"] is None


@pytest.fixture
def dated(cli):
    """Three deploy failures: old and unimportant, recent and important, in between."""
    cli("log", "memory", "--stdin", input=jsonl(
        {"key": "old", "text": "The deploy failed because the disk was full.",
         "importance": 0.2, "created_at": "2020-01-01T00:00:00Z"},
        {"key": "new", "text": "The deploy failed because a certificate expired.",
         "importance": 0.9, "created_at": now()},
        {"key": "mid", "text": "The deploy failed: the database migration timed out.",
         "importance": 0.5, "created_at": "2024-06-01T00:00:00Z"}))


def test_recency_ranks_newer_items_first_and_says_by_how_much(cli, dated):
    plain = query(cli, "why did the deploy fail because of the disk", "--no-touch")
    assert plain[0]["key"] == "old"
    recent = query(cli, "why did the deploy fail because of the disk", "--no-touch",
                   "--recency", "30d")
    assert [r["key"] for r in recent] == ["new", "old", "mid"]
    for r in recent:
        assert r["score"] == pytest.approx(r["relevance"] + r["recency"], abs=2e-6)
        assert "importance" not in r
    assert recent[0]["recency"] == pytest.approx(1.0, abs=1e-3)  # age 0: no decay
    assert recent[1]["recency"] == recent[2]["recency"] == 0  # years old, half-life 30 days
    age = (datetime.now(timezone.utc) - datetime(2024, 6, 1, tzinfo=timezone.utc)).days
    halved = query(cli, "why did the deploy fail because of the disk", "--no-touch",
                   "--recency", f"{age}d")  # a half-life of mid's age halves it
    assert {r["key"]: r["recency"] for r in halved}["mid"] == pytest.approx(0.5, abs=0.01)


def test_importance_ranks_important_items_first(cli, dated):
    ranked = query(cli, "why did the deploy fail because of the disk", "--no-touch",
                   "--importance", "2")
    assert [r["key"] for r in ranked][0] == "new"
    by_key = {r["key"]: r for r in ranked}
    assert {k: by_key[k]["importance"] for k in by_key} == {"old": 0.4, "new": 1.8, "mid": 1.0}
    for r in ranked:
        assert r["score"] == pytest.approx(r["relevance"] + r["importance"], abs=2e-6)
    # Weight 0 changes nothing in the order.
    assert [r["key"] for r in query(cli, "why did the deploy fail because of the disk",
                                    "--no-touch", "--importance", "0")][0] == "old"


@pytest.mark.parametrize("args,expected", [
    (["--recency", "soon"], "recency: 'soon' is not a span like 3d, 36h or 1w"),
    (["--recency", "0d"], "recency: '0d' is not a span"),
    (["--importance", "-1"], "importance: the weight must be between 0 and 100"),
])
def test_bad_ranking_terms_are_one_line_errors(cli, args, expected):
    cli("init")
    result = cli("query", "x", *args)
    assert result.exit_code == 2 and result.stderr.startswith("error: " + expected)


def test_a_word_search_over_its_postings_budget_scores_its_candidates_in_full(
        cli, memories, db_path, monkeypatch):
    """Past the budget the rarest terms choose the candidates and all terms score them: the
    scores are BM25's own, and the best matches are the ones the full search finds."""
    from ravana_db import search as s

    db = open_db(db_path, write=False)
    text = "the user asked about the deploy, the staging database and the chess engine"
    q = s.Query(text, mode="fts", top_n=10)
    terms = s.fts_terms(text)
    full = s._fts(db, q, terms, 10, -1)
    counts = s.document_counts(db, terms)[0]
    # The two commonest words ("user", "asked") leave the choice of candidates.
    monkeypatch.setattr(s, "POSTINGS_BUDGET", sum(sorted(counts)[:-2]))
    budgeted = s._fts(db, q, terms, 10, -1)
    ids = {doc_id for doc_id, _ in budgeted}
    # What it finds, it scores as the full search does, in the same order; it misses only
    # docs that hold nothing but the commonest words, which rank low.
    assert budgeted == [pair for pair in full if pair[0] in ids]
    assert len(budgeted) == 7 and budgeted[:6] == full[:6]


def test_a_vector_search_bounded_by_its_sample_finds_what_the_plain_one_finds(
        tmp_path, monkeypatch):
    """A KNN first asks the sample partition, then bounds the whole query's distance by what
    it found (vec0 selects slowly without a bound): its candidates are exactly those of the
    plain query, without filters and with filters passing every row, most rows, a few, or
    none; and the rows are spread evenly over the partitions."""
    import numpy as np

    from ravana_db import search as s
    from ravana_db.db import transaction
    from ravana_db.embed import Embedder
    from ravana_db.hashing import sha256
    from ravana_db.index import Prepared, apply, signature, signatures
    from ravana_db.vectors import encode, key

    rng = np.random.default_rng(7)
    n, dim = 3000, 384
    centres = rng.standard_normal((30, dim))  # clustered, like real texts
    vectors = centres[rng.integers(0, 30, n)] + 0.8 * rng.standard_normal((n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    db = open_db(tmp_path / "many.db")
    texts = [f"memory number {i}" for i in range(n)]
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO memory(text, source, memory_type, created_at, content_hash) "
            "VALUES (?, ?, ?, ?, ?)",
            [(t, f"source-{i % 7}", "fact" if i % 3 else "episodic",
              f"2026-{1 + i % 12:02d}-01T00:00:00.000Z", sha256(t)) for i, t in enumerate(texts)])
    blobs = encode(vectors)
    prepared = Prepared(model=(Embedder().name, dim))
    prepared.vectors = dict(zip(map(key, texts), zip(blobs, signatures(blobs))))
    with transaction(db):
        apply(db, prepared, [r[0] for r in db.execute("SELECT doc_id FROM embed_queue")])

    parts = dict(db.execute("SELECT part, count(*) FROM doc_bits GROUP BY part").fetchall())
    assert sorted(parts) == list(range(s.PARTS))
    assert max(parts.values()) < 1.2 * n / s.PARTS < 1.2 * 1.2 * min(parts.values())

    query, bounds = s._knn_query, []

    def spy(*args, part=None, bound=None):
        bounds.append(bound)
        return query(*args, part=part, bound=bound)

    monkeypatch.setattr(s, "_knn_query", spy)
    for filters in ({}, {"kind": "memory"}, {"type": "fact"}, {"source": "source-3"},
                    {"source": "source-3", "type": "episodic", "since": "2026-06-01"},
                    {"source": "nowhere"}):
        for row in rng.integers(0, n, 8):
            q = s.Query("x", mode="vector", **filters)
            bits = signature(vectors[row][None])[0].tobytes()
            where, params = s._filters(q, bits=True)
            plain = query(db, bits, 60, where, params)
            bounded = s._nearest(db, bits, 60, where, params)
            assert sorted(bounded) == sorted(plain), filters
    assert sum(b is not None for b in bounds) > 30  # the bounded query did the work


def test_a_file_whose_signatures_have_no_partitions_is_migrated_with_them(cli, memories):
    """m008 rebuilds an older file's doc_bits with its partition key, copying the signatures
    (nothing is re-embedded), and vector search answers as before."""
    from ravana_db.schema import PARTS, part_of

    before = query(cli, "graphics card memory", "--mode", "vector", "--no-touch")
    db = open_db(Path("agent.db"))
    old = db.execute("SELECT doc_id, embedding, kind, type, source, ts FROM doc_bits "
                     "ORDER BY doc_id").fetchall()
    filters = {r[0]: r[1:] for r in db.execute(
        "SELECT id, kind, coalesce(type, ''), coalesce(source, '') FROM doc")}
    db.execute("DROP TABLE doc_bits")
    db.execute("CREATE VIRTUAL TABLE doc_bits USING vec0(doc_id INTEGER PRIMARY KEY, "
               "embedding bit[1024], kind TEXT, type TEXT, source TEXT, ts INTEGER, "
               "chunk_size=2048)")
    # then, the filter columns held the texts (m014 turns them into codes)
    db.conn.executemany("INSERT INTO doc_bits VALUES (?, vec_bit(?), ?, ?, ?, ?)",
                        [(d, bits, *filters[d], ts) for d, bits, *_, ts in old])
    db.execute("DELETE FROM _sqlite_migrations WHERE name IN ('m008_sampled_signatures', "
               "'m014_coded_filters')")
    db.close()
    assert query(cli, "graphics card memory", "--mode", "vector", "--no-touch") == before
    db = open_db(Path("agent.db"))
    assert "PARTITION KEY" in db.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'doc_bits'").fetchone()[0]
    assert db.execute("SELECT doc_id, embedding, kind, type, source, ts FROM doc_bits "
                      "ORDER BY doc_id").fetchall() == old
    assert db.execute(f"SELECT count(*) FROM doc_bits WHERE part != {part_of('doc_id')} "
                      f"OR part NOT BETWEEN 0 AND {PARTS - 1}").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM bits_queue").fetchone()[0] == 0
