"""Word search on the server (ravana_db/postgres/words.py, tokens.py) against the file's FTS5
index, on a real PostgreSQL 16 (pgserver): the same tokens, the same bm25() scores, the same
results."""

import contextlib
import json

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from ravana_db import search as file_search
from ravana_db.cli import app
from ravana_db.db import open_db
from ravana_db.postgres import read, tokens, words
from ravana_db.postgres.connect import open_server
from ravana_db.search.query import Query, fts_terms

ODD = [
    "",
    "plain words about the harbour cranes and the harbour wind",
    "before\x00after the NUL byte",
    "東京の港でクレーンが止まった 東京",
    "emoji 🚢 ship 🚢🚢 ships shipping",
    "Crème brûlée naïve café CAFÉ",
    "e-mail and email and e mail and e-mail again",
    "x" * 3000 + " long " + "é" * 1500,
    "repeat " * 300 + "once",
    " ".join(f"w{i % 997}" for i in range(20_000)) + " finale",
    "under_score snake_case ünder",
]
QUERIES = ["harbour wind", "e-mail", "東京", "ship", "cafe creme", "repeat once", "w5 w7 finale",
           "after NUL", "x" * 3000, "snake_case under", "nothing matches zzzq"]


def sync(path, url, name="odd"):
    result = CliRunner().invoke(app, ["--db", str(path), "sync", url, "--name", name],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def odd(tmp_path, pg_url):
    """A file whose memories are the odd texts (written by plain SQL: no model needed), synced
    into a fresh server database. Returns (file path, url)."""
    path = tmp_path / "odd.db"
    db = open_db(path)
    with db.conn:
        db.conn.executemany("INSERT INTO memory (text) VALUES (?)", [(t,) for t in ODD])
    db.close()
    sync(path, pg_url)
    return path, pg_url


def file_tokens(db):
    """{doc id: {token: [offsets]}} as the file's FTS5 index holds them."""
    db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.doc_tokens USING fts5vocab("
               "main, doc_fts, 'instance')")
    found = {}
    for doc, offset, term in db.execute("SELECT doc, offset, term FROM temp.doc_tokens"):
        found.setdefault(doc, {}).setdefault(term, []).append(offset)
    return found


def varint(data):
    """The first of SQLite's varints in data (FTS5's docsize record: the doc's token count)."""
    value = 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return value


def test_the_servers_tokens_are_the_files(odd):
    path, url = odd
    db = open_db(path, create=False)
    docs = db.execute("SELECT id, text FROM doc ORDER BY id").fetchall()
    indexed = file_tokens(db)
    sizes = dict(db.execute("SELECT id, sz FROM doc_fts_docsize"))
    db.close()
    ours = tokens.tokenize([text for _, text in docs])
    for (doc_id, _), (terms, count) in zip(docs, ours):
        assert terms == indexed.get(doc_id, {}), doc_id
        assert count == varint(sizes[doc_id])
    with contextlib.closing(open_server(url)) as server:
        rows = server.conn.cursor(binary=True).execute(
            "SELECT id, tokens, tsv FROM doc ORDER BY id").fetchall()
        totals = server.conn.execute("SELECT docs, tokens, version FROM ravana_words").fetchone()
    assert len(rows) == len(docs)
    for (doc_id, stored_count, tsv), (terms, count) in zip(rows, ours):
        assert stored_count == count
        stored = tokens.decode(tsv)
        expected = {tokens.lexeme(t): [o + 1 for o in offsets[:256]]
                    for t, offsets in terms.items()}
        expected.update({tokens.lexeme(t) + tokens.OVER: [1, 8192 + len(offsets)]
                         for t, offsets in terms.items() if len(offsets) > 256})
        if count < 16_000:
            assert stored == expected, doc_id
        else:  # a position past 16383 is squeezed below it; every token is there
            assert set(stored) == set(expected)
            assert all(len(stored[x]) == len(expected[x]) for x in stored)
    assert totals == (len(docs), sum(c for _, c in ours), tokens.TOKENS_VERSION)
    long_token = tokens.lexeme("x" * 3000)
    assert len(long_token) <= tokens.MAX_LEXEME and long_token.startswith(b"xxx")


def file_ranking(path, text):
    """[(doc id, bm25)] of every doc matching the query's words on the file, best first."""
    db = open_db(path, create=False)
    try:
        return db.execute("SELECT rowid, bm25(doc_fts) FROM doc_fts WHERE doc_fts MATCH ? "
                          "ORDER BY 2, 1", [" OR ".join(fts_terms(text))]).fetchall()
    finally:
        db.close()


def test_bm25_on_the_server_is_the_files_to_the_bit(odd):
    path, url = odd
    with contextlib.closing(open_server(url)) as server:
        for text in QUERIES:
            found, _, _ = words.search(server, Query(text, mode="fts"), fts_terms(text),
                                       depth=1000, where="true", params=[], corpus="true",
                                       corpus_params=[])
            there = [(key[1], score) for key, score in found]
            assert there == file_ranking(path, text), text


def compare(path, url, queries, **options):
    """Each query's results on the file and on the server: (kind, id, bm25) lists."""
    db = open_db(path, create=False, write=False)
    try:
        with contextlib.closing(open_server(url)) as server:
            for text in queries:
                q = Query(text, top_n=10, **options)
                here = file_search.search(db, q, touch=False)
                there = read.search(server, q)
                yield text, [(r["kind"], r["id"], r["bm25"]) for r in here], \
                    [(r["kind"], r["id"], r["bm25"]) for r in there]
    finally:
        db.close()


def test_the_postings_budget_splits_a_query_on_both_sides_alike(odd, monkeypatch):
    """The file's two steps (the rarest terms choose, every term scores), forced by a small
    budget: the server's results are still the file's."""
    path, url = odd
    monkeypatch.setattr(file_search, "POSTINGS_BUDGET", 1)
    monkeypatch.setattr(words, "POSTINGS_BUDGET", 1)
    queries = ["harbour wind ship", "w5 w7 w11 finale", "e-mail email ship cafe"]
    for text, here, there in compare(path, url, queries, mode="fts"):
        assert here and there == here, text


def test_filters_and_like_rank_alike(embedded, pg_url):
    sync(embedded, pg_url, "agent")
    eval_queries = [json.loads(line)["query"] for line in
                    (ROOT / "fixtures" / "search_eval.jsonl").read_text().splitlines()][:10]
    for options in ({"kind": "memory"}, {"kind": "article"}, {"type": "episodic"},
                    {"since": "2026-03-01"}):
        for text, here, there in compare(embedded, pg_url, eval_queries, mode="fts", **options):
            assert there == here, (text, options)


def test_an_old_servers_words_say_run_sync_and_sync_brings_them_up(odd, cli):
    """Docs synced before V2 (no tokens, words version 0): a word query is one line naming
    sync; the next sync retokenizes them from the file, and results are the file's."""
    path, url = odd
    with contextlib.closing(open_server(url)) as server:
        server.conn.execute("SET default_transaction_read_only = off")
        server.conn.execute("UPDATE doc SET tsv = NULL, tokens = NULL")
        server.conn.execute("UPDATE ravana_words SET version = 0")
    result = cli("--db", url, "query", "harbour", "-m", "fts", db=False)
    assert result.exit_code == 2 and "run `ravana-db sync`" in result.stderr
    vector = cli("--db", url, "status", db=False)
    assert vector.exit_code == 0
    sync(path, url)
    for text, here, there in compare(path, url, QUERIES[:4], mode="fts"):
        assert there == here, text
    with contextlib.closing(open_server(url)) as server:
        assert server.conn.execute("SELECT version FROM ravana_words").fetchone()[0] == \
            tokens.TOKENS_VERSION


def test_totals_follow_updates_and_deletes(odd):
    import sqlite3

    path, url = odd
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DELETE FROM memory WHERE text LIKE 'repeat%'")
        conn.execute("UPDATE memory SET text = 'three new words' WHERE text LIKE 'emoji%'")
    sync(path, url)
    db = open_db(path, create=False)
    expected = sum(count for _, count in tokens.tokenize(
        [t for (t,) in db.execute("SELECT text FROM doc")]))
    rows = db.execute("SELECT count(*) FROM doc").fetchone()[0]
    db.close()
    with contextlib.closing(open_server(url)) as server:
        assert server.conn.execute("SELECT docs, tokens FROM ravana_words").fetchone() == \
            (rows, expected)
    for text, here, there in compare(path, url, ["repeat", "three words", "ship"], mode="fts"):
        assert there == here, text
