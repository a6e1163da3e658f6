"""`ravana-db ingest feeds` / `export feeds`: every fixture format, a real HTTP server on
127.0.0.1 (tests/feedserver.py) scripted per path, backoff, OPML both ways, reporting, bad
targets, SIGKILL midway, and search over what was stored. Real feedparser, the real model,
real sqlite-vec; the CLI in-process (CliRunner) or as `python -m ravana_db` processes.

Events are another engineer's (ravana_db/events.py): every run here passes --no-events.
"""

import contextlib
import gzip
import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import feedparser
import listparser
import pytest
from conftest import cpu_seconds, write_locked
from feedserver import FeedServer, Reply
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.db import open_db, transaction
from ravana_db.feeds import Parser

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "fixtures" / "feeds"
MANIFEST = {f["file"]: f for f in json.loads((FIXTURES / "MANIFEST.json").read_text())["files"]}
RAVANA = [sys.executable, "-m", "ravana_db"]
ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
TAG = re.compile(r"</?[a-zA-Z][\w:-]*(\s[^<>]*)?/?>|<!--|<!\[CDATA\[")  # markup, not "a < b"
MB = 1 << 20
COLUMNS = ["feed", "title", "status", "new", "updated", "skipped", "error"]  # a report row

# feeds.parsing._article asks an entry for published_parsed, which feedparser 6 maps to
# updated_parsed with this warning (the fallback is kept on purpose: RSS 1.0 dc:date lands
# in updated).
pytestmark = pytest.mark.filterwarnings(
    "ignore:To avoid breaking existing software while fixing issue 310:DeprecationWarning")


# Helpers ------------------------------------------------------------------------------------


def invoke(db, *args):
    """`ravana-db --db DB ARGS` in-process: the click Result."""
    return CliRunner().invoke(app, ["--db", str(db), *map(str, args)], catch_exceptions=False)


def ingest(db, *args):
    """`ingest feeds --no-events --format json ARGS`: (result, {feed url: report row})."""
    result = invoke(db, "ingest", "feeds", "--no-events", "--format", "json", *args)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    rows = json.loads(result.stdout) if result.stdout.strip() else []
    for row in rows:
        assert list(row) == COLUMNS, row
    return result, {row["feed"]: row for row in rows}


def query(db, sql, *params):
    conn = open_db(db, create=False)
    try:
        return [dict(r) for r in conn.query(sql, params)]
    finally:
        conn.close()


def one(db, sql, *params):
    return next(iter(query(db, sql, *params)[0].values()))


def integrity_ok(db):
    assert one(db, "PRAGMA integrity_check") == "ok"


def utc(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rss(title, items, *, extra=""):
    """An RSS 2.0 document (bytes); items are dicts of title, link, guid, description, date."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "feed"
    parts = [(f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
              f"<title>{html.escape(title, quote=False)}</title>"
              f"<link>https://{slug}.example/</link>{extra}")]
    for i in items:
        parts.append("<item>" + "".join(
            f"<{tag}>{html.escape(i[key], quote=False)}</{tag}>" for key, tag in (
                ("title", "title"), ("link", "link"), ("guid", "guid"),
                ("description", "description"), ("date", "pubDate")) if key in i) + "</item>")
    return ("".join(parts) + "</channel></rss>\n").encode()


WORDS = ["harbour", "council", "bridge", "market", "storm", "rail", "strike", "budget",
         "election", "museum", "river", "port", "school", "hospital", "farm", "energy", "ferry",
         "tunnel", "library", "orchard"]


def items(tag, count, start=0):
    """count distinct, plausible items (their titles are real words, numbered)."""
    out = []
    for n in range(start, start + count):
        words = " ".join(WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(5))
        out.append({"title": f"{tag.title()} {words} report {n}",
                    "link": f"https://{tag}.example/news/{n}", "guid": f"{tag}-{n}",
                    "description": f"What happened with the {words} ({tag} {n}).",
                    "date": "Thu, 05 Nov 2026 10:00:00 GMT"})
    return out


# `python -m ravana_db` that writes its peak RSS (VmHWM: this process's own, since its exec)
# to $PEAK_FILE as it exits. (The rusage of a child counts the RSS of the forked test process
# before its exec: useless here.)
PEAK_MAIN = """
import atexit, os, re, sys
def peak():
    status = open("/proc/self/status").read()
    open(os.environ["PEAK_FILE"], "w").write(re.search(r"VmHWM:\\s*(\\d+)", status)[1])
atexit.register(peak)
sys.argv[0] = "ravana-db"
from ravana_db.cli import main
main()
"""


def peak_rss_mb(args, cwd):
    """Run `ravana-db ARGS` in a process to its end: (exit code, stdout, stderr, peak RSS in
    MB, seconds)."""
    peak = cwd / "peak.kb"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PEAK_MAIN, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PEAK_FILE": str(peak)})
    return (proc.returncode, proc.stdout, proc.stderr, int(peak.read_text()) / 1024,
            time.monotonic() - start)


@pytest.fixture(scope="module")
def server():
    s = FeedServer()
    yield s
    s.close()


# 1. Every fixture file, from local paths ----------------------------------------------------

# Feeds, not the OPML list; the .gz copies are served with Content-Encoding: gzip (section 3),
# and read as local files in test_a_local_gzip_file_is_read.
LOCAL = [name for name, f in MANIFEST.items()
         if f["format"] != "opml" and not name.endswith(".gz")]


def distinct_entries(name):
    """Entries feedparser recovers from the file, less repeated ids (or links, without ids)."""
    parsed = feedparser.parse((FIXTURES / name).read_bytes())
    return len({e.get("id") or e.get("link") or f"#{n}" for n, e in enumerate(parsed.entries)})


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory):
    """All fixture feeds ingested once, then again: (db, first run, second run)."""
    db = tmp_path_factory.mktemp("fixtures") / "agent.db"
    paths = [FIXTURES / name for name in LOCAL]
    first = ingest(db, *paths)
    second = ingest(db, *paths)
    return db, first, second


def url_of(name):
    return (FIXTURES / name).as_uri()


def test_every_fixture_file_is_stored_or_is_that_files_error(fixture_db):
    db, (result, reports), _ = fixture_db
    assert result.exit_code == 1  # empty.xml, not-a-feed.html and feed.json are not feeds
    assert set(reports) == {url_of(name) for name in LOCAL}
    stored = {r["url"]: r["n"] for r in query(
        db, "SELECT f.url, count(a.id) AS n FROM feed f LEFT JOIN article a ON a.feed_id = f.id "
            "GROUP BY f.id")}
    for name in LOCAL:
        row, expected = reports[url_of(name)], MANIFEST[name]
        if expected["expect"] == "error":
            assert row["status"] == "error" and row["new"] == 0, (name, row)
            assert row["error"] and "\n" not in row["error"], (name, row)
            assert stored[url_of(name)] == 0
        else:
            assert row["status"] == "ok" and row["error"] is None, (name, row)
            assert row["new"] >= distinct_entries(name), (name, row)
            assert row["new"] + row["skipped"] == expected["entries"], (name, row)
            assert stored[url_of(name)] == row["new"], name
    assert reports[url_of("rss20-duplicate-guid.xml")]["new"] == 3  # 5 entries, 3 guids


def test_a_rerun_of_every_fixture_adds_nothing(fixture_db):
    db, (_, first), (result, again) = fixture_db
    assert result.exit_code == 1
    assert all(row["new"] == 0 and row["updated"] == 0 for row in again.values()), again
    for url, row in again.items():
        # Same bytes again: skipped by their hash; the non-feeds fail again.
        assert row["status"] == ("error" if first[url]["status"] == "error" else "unchanged")
    assert one(db, "SELECT count(*) FROM article") == sum(r["new"] for r in first.values())
    assert one(db, "SELECT count(*) FROM (SELECT DISTINCT feed_id, guid FROM article)") == \
        one(db, "SELECT count(*) FROM article")
    integrity_ok(db)


def test_titles_and_summaries_are_plain_text(fixture_db):
    db = fixture_db[0]
    articles = query(db, "SELECT title, summary, content FROM article")
    for article in articles:
        for field, text in article.items():
            if text is None:
                continue
            assert not TAG.search(text), (field, text[:200])
            assert html.unescape(text) == text, (field, text[:200])  # nothing left to decode
            assert "\n" not in text
            for bad in ("script", "document.cookie", "onerror", "alert(", "javascript:"):
                assert bad not in text.lower(), (field, text[:200])
    titles = {a["title"] for a in articles}
    assert {
        "BREAKING: Bridge closed after barge strike",  # double-escaped <b>
        'Telecom giant AT&T-style merger talks: "no deal yet"',  # double-escaped &amp;
        "Q&A: What the new bin rules mean for you",
        "Rents rise 6% — fastest in a decade",
        "Harbour dredging finally begins",  # <b>, <i> dropped
        "Mayor responds to audit",  # a <script> in a CDATA title, dropped with its content
        "Café owners protest new terrace fees — again",  # undeclared HTML entities
        "Launch window opens 🚀 for Mars sample mission",  # an astral numeric reference
    } <= titles
    assert max(len(t) for t in titles) <= 500  # huge-title.xml: 102,400 characters, capped


def test_titles_in_every_encoding_come_out_right(fixture_db):
    titles = {r["title"] for r in query(fixture_db[0], "SELECT title FROM article")}
    assert {
        "Größte Wärmepumpe Europas geht in Betrieb",  # UTF-8 with BOM
        "Grève à la SNCF : trafic très perturbé jeudi",  # UTF-16 LE
        "Año récord para el aceite de oliva: la cosecha crece un 40%",  # ISO-8859-1
        "Council’s “green bins” plan — what changes in 2027",  # windows-1252
        "Lisboa: câmara aprova expansão da linha circular do metro",  # wrongly declared
        "十月出口同比下降百分之三点二",  # GB2312
    } <= titles
    jis = [t for t in titles if re.search(r"[\u3040-\u30ff]", t)]  # kana: Shift_JIS decoded
    assert len(jis) >= 2 and not any("\ufffd" in t for t in titles)


def test_published_is_utc_iso_with_four_digit_year_or_null(fixture_db):
    db = fixture_db[0]
    published = {r["title"]: r["published"] for r in query(db, "SELECT title, published "
                                                               "FROM article")}
    assert all(p is None or ISO.fullmatch(p) for p in published.values()), published
    assert one(db, "SELECT count(*) FROM article WHERE published IS NULL") > 0
    assert published["Date says Unknown"] is None and published["No date element at all"] is None
    assert published["Year zero"] is None  # 0000-01-01: no datetime for it
    assert published["The Battle of Hastings (ISO, year 1066)"] == "1066-10-14T09:00:00.000Z"
    assert published["Senate passes stopgap bill hours before deadline"] == \
        "2026-11-06T04:41:00.000Z"  # 23:41 EST
    assert published["Mumbai office opening"] == "2026-11-05T10:00:00.000Z"  # 15:30 +0530
    assert "Unknown" not in {r["published"] for r in query(
        db, "SELECT DISTINCT published FROM article")}


def test_guid_falls_back_to_the_link_then_to_a_hash(fixture_db):
    db = fixture_db[0]

    def guids(name):
        return query(db, "SELECT guid, link FROM article WHERE feed_id = (SELECT id FROM feed "
                         "WHERE url = ?)", url_of(name))

    link_only = guids("rss20-link-only.xml")
    assert len(link_only) == 4 and all(r["guid"] == r["link"] != "" for r in link_only)
    hashed = guids("rss20-no-guid-no-link.xml")
    assert len(hashed) == 4 and len({r["guid"] for r in hashed}) == 4
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", r["guid"]) for r in hashed)
    dup = guids("rss20-duplicate-guid.xml")
    assert sorted(r["guid"] for r in dup) == [
        "rg-2026-11-04-0012", "rg-2026-11-05-0005", "rg-2026-11-05-0007"]


def test_hostile_xml_stays_inert(fixture_db):
    db = fixture_db[0]
    text = " ".join(str(v) for r in query(db, "SELECT title, summary, content FROM article")
                    for v in r.values())
    assert "root:" not in text and "/bin/" not in text  # xxe-file.xml: /etc/passwd not read
    assert "lollollol" not in text  # billion-laughs.xml: nothing expanded


def test_articles_are_found_by_the_words_of_their_title(fixture_db):
    db = fixture_db[0]
    for words, title in (("typhoon landfall northern Luzon",
                          "Typhoon Kalmaegi makes landfall in northern Luzon"),
                         ("Rotterdam port cyberattack",
                          "Cyberattack halts container terminals at Port of Rotterdam")):
        result = invoke(db, "query", words, "--kind", "article", "--no-touch", "--format",
                        "json")
        assert result.exit_code == 0, result.stderr
        found = json.loads(result.stdout)
        assert found and found[0]["kind"] == "article" and found[0]["text"].startswith(title)
    # Every article was embedded as it was stored: nothing waits for `reindex`.
    assert one(db, "SELECT count(*) FROM doc WHERE kind = 'article' AND id NOT IN "
                   "(SELECT doc_id FROM doc_vec)") == 0


def test_an_articles_searchable_text_never_holds_its_url(fixture_db):
    db = fixture_db[0]
    rows = query(db, "SELECT a.link, d.text FROM article a JOIN doc d ON d.kind = 'article' "
                     "AND d.ref = CAST(a.id AS TEXT) WHERE a.link != ''")
    assert len(rows) > 150
    assert not [r for r in rows if r["link"] in r["text"]]


def test_an_entry_with_only_a_link_is_not_searchable_by_its_url(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "links.xml"
    feed.write_bytes(rss("Links", [{"link": "https://links.example/only-a-link"},
                                   {"title": "Has a title", "link": "https://links.example/2"}]))
    result, _ = ingest(db, feed)
    assert result.exit_code == 0
    texts = [r["text"] for r in query(db, "SELECT text FROM doc WHERE kind = 'article'")]
    assert len(texts) == 2 and not [t for t in texts if "links.example" in t]


def test_a_local_gzip_file_is_read(tmp_path):
    result, reports = ingest(tmp_path / "agent.db", FIXTURES / "rss20-guid-permalink.xml.gz")
    row = reports[url_of("rss20-guid-permalink.xml.gz")]
    assert (result.exit_code, row["status"], row["new"]) == (0, "ok", 4), row


def test_the_same_link_from_two_feeds_is_one_article(tmp_path):
    db = tmp_path / "agent.db"
    shared = {"title": "Ferry service resumes after storm", "link": "https://wire.example/ferry",
              "description": "Crossings resume at noon."}
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    a.write_bytes(rss("Alpha", [{**shared, "guid": "alpha-ferry"}, *items("alpha", 2)]))
    b.write_bytes(rss("Beta", [{**shared, "guid": "beta-ferry"}, *items("beta", 2)]))
    result, reports = ingest(db, a, b)  # both in one run
    assert result.exit_code == 0
    assert sorted((r["new"], r["skipped"]) for r in reports.values()) == [(2, 1), (3, 0)]
    assert one(db, "SELECT count(*) FROM article WHERE link = ?", shared["link"]) == 1
    assert one(db, "SELECT count(*) FROM article") == 5
    c = tmp_path / "c.xml"  # and in a later run
    c.write_bytes(rss("Gamma", [{**shared, "guid": "gamma-ferry"}]))
    result, reports = ingest(db, c)
    assert reports[c.as_uri()]["new"] == 0 and reports[c.as_uri()]["skipped"] == 1
    assert one(db, "SELECT count(*) FROM article WHERE link = ?", shared["link"]) == 1


def test_short_guids_of_two_feeds_on_one_host_are_two_articles(server, tmp_path):
    server.route("/short/a.xml", Reply(body=rss("Alpha", [
        {"title": "Council approves the harbour budget", "guid": "1"}])))
    server.route("/short/b.xml", Reply(body=rss("Beta", [
        {"title": "Storm closes the ferry terminal", "guid": "1"}])))
    db = tmp_path / "agent.db"
    result, _ = ingest(db, server.url("/short/a.xml"), server.url("/short/b.xml"))
    assert result.exit_code == 0
    stored = query(db, "SELECT guid, link, title FROM article ORDER BY feed_id")
    assert [(r["guid"], r["title"]) for r in stored] == [
        ("1", "Council approves the harbour budget"), ("1", "Storm closes the ferry terminal")]


def test_one_unencodable_character_does_not_lose_the_feed(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "surrogate.xml"
    feed.write_bytes(rss("Sur", [{"title": "Fine item", "link": "https://sur.example/2",
                                  "guid": "s-2"}]).replace(
        b"<item>", b"<item><title>Bad &#xD800; char</title><link>https://sur.example/1</link>"
                   b"<guid>s-1</guid></item><item>", 1))
    _, reports = ingest(db, feed)
    assert reports[feed.as_uri()]["status"] == "ok", reports
    assert "Fine item" in {r["title"] for r in query(db, "SELECT title FROM article")}


# 2. Reporting and bad targets ---------------------------------------------------------------


def test_json_rows_on_stdout_and_exit_0_when_every_feed_succeeds(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 3)))
    result, reports = ingest(db, feed)
    assert result.exit_code == 0, result.stderr
    assert reports == {feed.as_uri(): {"feed": feed.as_uri(), "title": "News", "status": "ok",
                                       "new": 3, "updated": 0, "skipped": 0, "error": None}}


def test_without_format_the_table_goes_to_stderr_and_stdout_stays_empty(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 3)))
    page = tmp_path / "page.html"
    page.write_bytes((FIXTURES / "not-a-feed.html").read_bytes())
    result = invoke(db, "ingest", "feeds", "--no-events", feed, page)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "News" in result.stderr and "page.html" in result.stderr
    assert re.search(r"News\s+ok\s+3\s+0\s+0", result.stderr), result.stderr
    assert "not a feed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["ftp://files.example/feed.xml", "http:///feed.xml",
                                    "https://", "gopher://old.example/1"])
def test_a_target_that_cannot_be_a_feed_is_exit_2_and_stores_nothing(tmp_path, target):
    db = tmp_path / "agent.db"
    invoke(db, "init")
    result = invoke(db, "ingest", "feeds", "--no-events", "--format", "json", target)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
    assert one(db, "SELECT count(*) FROM feed") == 0


@pytest.mark.parametrize("where", ["argument", "opml"])
def test_an_unparseable_url_is_exit_2_with_one_line(tmp_path, where):
    db, url = tmp_path / "agent.db", "http://[::1/feed.xml"
    opml = tmp_path / "subs.opml"
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head/><body>'
                    f'<outline type="rss" text="x" xmlUrl="{url}"/></body></opml>')
    args = [url] if where == "argument" else ["--opml", opml]
    proc = subprocess.run([*RAVANA, "--db", db, "ingest", "feeds", "--no-events", *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr[-300:]
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_a_subscribed_file_that_went_away_is_that_feeds_error(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 2)))
    gone = tmp_path / "gone.xml"
    gone.write_bytes(rss("Gone", items("gone", 1)))
    assert ingest(db, feed, gone)[0].exit_code == 0
    gone.unlink()
    result, reports = ingest(db)
    assert result.exit_code == 1
    assert reports[gone.as_uri()]["status"] == "error"
    assert "no file at" in reports[gone.as_uri()]["error"]
    assert one(db, "SELECT failures FROM feed WHERE url = ?", gone.as_uri()) == 1
    assert one(db, "SELECT count(*) FROM article") == 3


@pytest.mark.parametrize("target", ["", " ", "no/such/typo.xml", "/no/such/typo.xml",
                                    "file:///no/such/typo.xml", "."])
def test_a_name_that_is_no_feed_file_is_exit_2_and_subscribes_nothing(tmp_path, target):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 2)))
    assert ingest(db, feed)[0].exit_code == 0
    before = query(db, "SELECT * FROM feed ORDER BY id")
    result = invoke(db, "ingest", "feeds", "--no-events", feed, target)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert query(db, "SELECT * FROM feed ORDER BY id") == before
    assert one(db, "SELECT count(*) FROM article") == 2


def test_a_feed_named_twice_reports_its_new_articles(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 3)))
    result = invoke(db, "ingest", "feeds", "--no-events", "--format", "json", feed, feed)
    rows = json.loads(result.stdout)
    assert sum(r["new"] for r in rows) == one(db, "SELECT count(*) FROM article") == 3


# 3. Over HTTP -------------------------------------------------------------------------------


def test_200_stores_the_articles_and_sends_our_user_agent(server, tmp_path):
    body = rss("Plain", items("plain", 3))
    server.route("/plain.xml", Reply(body=body, headers={"Content-Type": "application/rss+xml"}))
    result, reports = ingest(tmp_path / "agent.db", server.url("/plain.xml"))
    assert result.exit_code == 0
    assert reports[server.url("/plain.xml")]["new"] == 3
    (request,) = server.received("/plain.xml")
    assert request.headers["user-agent"].startswith("ravana-db/")
    assert "rss" in request.headers["accept"]
    assert "if-none-match" not in request.headers and "if-modified-since" not in request.headers


def _snapshot(db):
    """Everything stored but the feed table (the fetch state)."""
    return {t: query(db, f"SELECT * FROM {t} ORDER BY 1") for t in (
        "article", "doc", "embed_queue")} | {"vectors": one(db, "SELECT count(*) FROM doc_vec")}


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_a_304_costs_nothing_but_the_fetch_state(server, tmp_path, validator):
    path, body = f"/conditional-{validator}.xml", rss("Cond", items("cond", 3))
    stamp = "Wed, 04 Nov 2026 08:00:00 GMT"
    header = {"etag": ("ETag", '"v1-abc"'), "last-modified": ("Last-Modified", stamp)}[validator]
    asks = {"etag": ("if-none-match", '"v1-abc"'),
            "last-modified": ("if-modified-since", stamp)}[validator]

    def reply(request):
        if request.headers.get(asks[0]) == asks[1]:
            return Reply(304, headers=dict([header]), content_length=False)
        return Reply(body=body, headers=dict([header]))

    server.route(path, reply)
    db, url = tmp_path / "agent.db", server.url(path)
    result, reports = ingest(db, url)
    assert result.exit_code == 0 and reports[url]["new"] == 3
    before, feed_before = _snapshot(db), query(db, "SELECT * FROM feed")[0]

    result, reports = ingest(db, url)
    assert result.exit_code == 0
    assert reports[url] | {"title": None} == {"feed": url, "title": None,
                                              "status": "not_modified", "new": 0, "updated": 0,
                                              "skipped": 0, "error": None}
    first, second = server.received(path)
    assert asks[0] not in first.headers and second.headers[asks[0]] == asks[1]
    assert _snapshot(db) == before
    feed = query(db, "SELECT * FROM feed")[0]
    changed = {k for k in feed if feed[k] != feed_before[k]}
    assert changed <= {"last_fetched", "last_status"} and feed["last_status"] == "not_modified"
    assert feed["last_fetched"] > feed_before["last_fetched"]
    assert feed[validator.replace("-", "_")] == header[1]  # kept for the next run


def test_a_server_ignoring_conditional_headers_is_unchanged_by_the_body_hash(server, tmp_path):
    body = rss("Deaf", items("deaf", 3))
    server.route("/deaf.xml", Reply(body=body, headers={"ETag": '"never-honoured"'}))
    db, url = tmp_path / "agent.db", server.url("/deaf.xml")
    ingest(db, url)
    before = _snapshot(db)
    result, reports = ingest(db, url)
    assert result.exit_code == 0
    assert (reports[url]["status"], reports[url]["new"], reports[url]["updated"]) == (
        "unchanged", 0, 0)
    assert server.received("/deaf.xml")[1].headers["if-none-match"] == '"never-honoured"'
    assert _snapshot(db) == before


def test_a_changed_feed_adds_its_new_items_only(server, tmp_path):
    db, url = tmp_path / "agent.db", server.url("/growing.xml")
    server.route("/growing.xml", Reply(body=rss("Grow", items("grow", 3))))
    ingest(db, url)
    server.route("/growing.xml", Reply(body=rss("Grow", items("grow", 4))))
    _, reports = ingest(db, url)
    assert reports[url]["status"] == "ok" and reports[url]["new"] == 1
    assert one(db, "SELECT count(*) FROM article") == 4


def test_unchanged_entries_of_a_changed_feed_are_not_updated(server, tmp_path):
    db, url = tmp_path / "agent.db", server.url("/rebuilt.xml")
    server.route("/rebuilt.xml", Reply(body=rss("Rebuilt", items("rebuilt", 3))))
    ingest(db, url)
    before = query(db, "SELECT id, fetched_at FROM article ORDER BY id")
    server.route("/rebuilt.xml", Reply(body=rss("Rebuilt", items("rebuilt", 3), extra=(
        "<lastBuildDate>Thu, 05 Nov 2026 11:00:00 GMT</lastBuildDate>"))))
    _, reports = ingest(db, url)
    assert (reports[url]["status"], reports[url]["new"], reports[url]["updated"]) == ("ok", 0, 0)
    assert query(db, "SELECT id, fetched_at FROM article ORDER BY id") == before


def double_gzip_bomb(inflated_mb):
    """A body that inflates through two gzip layers (Content-Encoding: gzip, gzip)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [inner.compress(rss("Deep", items("deep", 1))[:-len(b"</channel></rss>\n")])]
    block = b" " * MB
    parts += [inner.compress(block) for _ in range(inflated_mb)]
    parts += [inner.compress(b"</channel></rss>\n"), inner.flush()]
    return gzip.compress(b"".join(parts), 9)


HOSTILE_CAP = MB  # --max-bytes for the hostile run


@pytest.fixture(scope="module")
def hostile_run(server, tmp_path_factory):
    """One `ingest feeds` run: good feeds among every kind of bad one, --timeout 1,
    --max-bytes 1 MiB. Returns (db, result, reports by path, seconds, time of the run)."""
    good = rss("Good", items("good", 3))
    big = rss("Big", items("big", 20))
    big = big.replace(b"</channel>", b"<!--" + b"x" * (2 * MB) + b"--></channel>")
    retry_at = datetime.now(timezone.utc) + timedelta(hours=3)
    routes = {
        "/h/good.xml": Reply(body=good),
        "/h/hop1": Reply(301, headers={"Location": "/h/hop2"}),
        "/h/hop2": Reply(302, headers={"Location": "/h/moved.xml"}),
        "/h/moved.xml": Reply(body=rss("Moved", items("moved", 2))),
        "/h/gzip-good.xml": Reply(body=(FIXTURES / "rss20-guid-permalink.xml.gz").read_bytes(),
                                  headers={"Content-Encoding": "gzip"}),
        "/h/404.xml": Reply(404, b"gone"),
        "/h/500.xml": Reply(500, b"oops"),
        "/h/429.xml": Reply(429, headers={"Retry-After": "7200"}),
        "/h/503.xml": Reply(503, headers={"Retry-After": format_datetime(retry_at, usegmt=True)}),
        "/h/slow.xml": Reply(body=good, delay=4),  # no status line within the timeout
        "/h/dribble.xml": Reply(body=good, dribble=0.15, chunk=8, dribble_for=4),
        "/h/loop": Reply(302, headers={"Location": "/h/loop"}),
        "/h/to-file": Reply(302, headers={"Location": "file:///etc/passwd"}),
        "/h/big.xml": Reply(body=big),
        "/h/big-unannounced.xml": Reply(body=big, content_length=False),
        "/h/bomb.xml": Reply(body=(FIXTURES / "gzip-bomb.xml.gz").read_bytes(),
                             headers={"Content-Encoding": "gzip"}),
        "/h/laughs.xml": Reply(body=(FIXTURES / "billion-laughs.xml").read_bytes()),
        "/h/page.html": Reply(body=(FIXTURES / "not-a-feed.html").read_bytes(),
                              headers={"Content-Type": "text/html; charset=utf-8"}),
        "/h/empty.xml": Reply(body=b""),
    }
    for path, reply in routes.items():
        server.route(path, reply)
    db = tmp_path_factory.mktemp("hostile") / "agent.db"
    started, start = datetime.now(timezone.utc), time.monotonic()
    result, reports = ingest(db, "--timeout", 1, "--max-bytes", HOSTILE_CAP, *(
        server.url(p) for p in routes if p not in ("/h/hop2", "/h/moved.xml")))
    seconds = time.monotonic() - start
    return db, result, {k.split(":", 2)[2].split("/", 1)[1]: v for k, v in reports.items()}, \
        seconds, started


def test_good_feeds_are_stored_among_bad_ones_and_the_run_exits_1(hostile_run, server):
    db, result, reports, seconds, _ = hostile_run
    assert result.exit_code == 1
    assert (reports["h/good.xml"]["status"], reports["h/good.xml"]["new"]) == ("ok", 3)
    assert (reports["h/gzip-good.xml"]["status"], reports["h/gzip-good.xml"]["new"]) == ("ok", 4)
    # Redirects are followed; the articles belong to the feed as subscribed.
    assert (reports["h/hop1"]["status"], reports["h/hop1"]["new"]) == ("ok", 2)
    assert one(db, "SELECT count(*) FROM article a JOIN feed f ON f.id = a.feed_id "
                   "WHERE f.url = ?", server.url("/h/hop1")) == 2
    assert [r.path for r in server.requests if r.path.startswith("/h/hop")
            or r.path == "/h/moved.xml"] == ["/h/hop1", "/h/hop2", "/h/moved.xml"]
    # Bounded: the slow ones give up after --timeout 1; the rest are quick.
    assert seconds < 8, seconds
    for request in server.requests:
        if request.path.startswith("/h/"):
            assert request.headers["user-agent"].startswith("ravana-db/"), request


@pytest.mark.parametrize("path, error", [
    ("h/404.xml", "404"), ("h/500.xml", "500"),
    ("h/429.xml", "429"), ("h/503.xml", "503"),
    ("h/slow.xml", "1 s"), ("h/dribble.xml", "1 s"), ("h/loop", "redirect"),
    ("h/to-file", ""), ("h/big.xml", f"larger than {HOSTILE_CAP}"),
    ("h/big-unannounced.xml", f"larger than {HOSTILE_CAP}"),
    ("h/bomb.xml", f"larger than {HOSTILE_CAP}"), ("h/page.html", "not a feed"),
    ("h/empty.xml", "not a feed"),
])
def test_each_bad_feed_is_its_own_error_with_a_backoff(hostile_run, server, path, error):
    db, _, reports, _, started = hostile_run
    row = reports[path]
    assert (row["status"], row["new"]) == ("error", 0), row
    assert error in row["error"] and "\n" not in row["error"], row
    feed = query(db, "SELECT * FROM feed WHERE url = ?", server.url("/" + path))[0]
    assert (feed["failures"], feed["last_status"], feed["last_error"]) == (1, "error",
                                                                           row["error"])
    assert one(db, "SELECT count(*) FROM article WHERE feed_id = ?", feed["id"]) == 0
    wait = utc(feed["next_attempt"]) - started
    expected = {"h/429.xml": timedelta(hours=2), "h/503.xml": timedelta(hours=3)}.get(
        path, timedelta(minutes=15))  # Retry-After honoured; else the first backoff
    assert expected - timedelta(seconds=5) <= wait <= expected + timedelta(seconds=60), wait


def test_the_billion_laughs_feed_is_not_expanded(hostile_run):
    db, _, reports, _, _ = hostile_run
    assert reports["h/laughs.xml"]["status"] in ("ok", "error")
    assert one(db, "SELECT count(*) FROM article WHERE title LIKE '%lollol%' OR "
                   "summary LIKE '%lollol%'") == 0


def test_the_hostile_run_leaves_a_sound_file(hostile_run):
    db = hostile_run[0]
    integrity_ok(db)
    assert one(db, "SELECT count(*) FROM article") == 3 + 4 + 2 + (
        2 if hostile_run[2]["h/laughs.xml"]["status"] == "ok" else 0)


@pytest.fixture(scope="module")
def baseline_rss(server, tmp_path_factory):
    """Peak RSS of a run that fetches one 404: the process's own size, no body held."""
    server.route("/mem/404.xml", Reply(404))
    folder = tmp_path_factory.mktemp("baseline")
    code, *_, peak, _ = peak_rss_mb(["--db", folder / "a.db", "ingest", "feeds", "--no-events",
                                     server.url("/mem/404.xml")], folder)
    assert code == 1
    return peak


def test_hostile_bodies_cost_bounded_memory(server, tmp_path, baseline_rss):
    """A run of only hostile bodies (50 MB gzip bomb, 2 MB body with no Content-Length, HTML)
    stays within tens of MB of a run that fetched a 404 (no feed succeeds: no model loads)."""
    big = rss("Big", items("big", 10)).replace(b"</channel>", b"<!--" + b"x" * 2 * MB + b"-->"
                                               b"</channel>")
    for path, reply in {
        "/mem/bomb.xml": Reply(body=(FIXTURES / "gzip-bomb.xml.gz").read_bytes(),
                               headers={"Content-Encoding": "gzip"}),
        "/mem/big.xml": Reply(body=big, content_length=False),
        "/mem/page.html": Reply(body=(FIXTURES / "not-a-feed.html").read_bytes()),
    }.items():
        server.route(path, reply)
    code, out, err, peak, seconds = peak_rss_mb(
        ["--db", tmp_path / "a.db", "ingest", "feeds", "--no-events", "--format", "json",
         "--max-bytes", MB, *(server.url(p) for p in ("/mem/bomb.xml", "/mem/big.xml",
                                                      "/mem/page.html"))],
        tmp_path)
    assert code == 1 and "Traceback" not in err, err
    rows = {r["feed"].rsplit("/", 1)[1]: r for r in json.loads(out)}
    assert {r["status"] for r in rows.values()} == {"error"}
    assert seconds < 10
    # The decoded chunk of a gzip body (up to ~1000x its 64 KiB read) may pass the cap
    # before it is counted: about 64 MB for the fixture bomb, whatever --max-bytes says.
    assert peak - baseline_rss < 96, (peak, baseline_rss)


def test_a_two_layer_gzip_bomb_costs_bounded_memory(server, tmp_path, baseline_rss):
    server.route("/mem/double.xml", Reply(body=double_gzip_bomb(128),
                                          headers={"Content-Encoding": "gzip, gzip"}))
    code, out, _, peak, _ = peak_rss_mb(
        ["--db", tmp_path / "a.db", "ingest", "feeds", "--no-events", "--format", "json",
         "--max-bytes", MB, server.url("/mem/double.xml")], tmp_path)
    assert code == 1 and json.loads(out)[0]["status"] == "error"
    assert peak - baseline_rss < 96, (peak, baseline_rss)


def test_a_slow_loris_is_bounded_by_the_timeout(server, tmp_path):
    server.route("/loris.xml", Reply(body=rss("Loris", items("loris", 1)), head_dribble=0.25,
                                     dribble_for=3))
    start = time.monotonic()
    _, reports = ingest(tmp_path / "agent.db", "--timeout", 1, server.url("/loris.xml"))
    assert reports[server.url("/loris.xml")]["status"] == "error"
    assert time.monotonic() - start < 2.5


def test_a_feed_whose_parse_outlives_the_timeout_fails_alone_and_is_stopped(server, tmp_path):
    """feedparser's SAX path is quadratic in the attributes of one element: --timeout bounds
    the parse too (a child process killed at the deadline), that feed alone fails, and no
    CPU is spent on it after the deadline."""
    import resource

    attributes = " ".join(f'a{n}="{n}"' for n in range(60_000))
    slow = rss("Slow", items("slow", 1)).replace(b"<item>", f"<item {attributes}>".encode())
    server.route("/slow/attrs.xml", Reply(body=slow))
    server.route("/slow/fine.xml", Reply(body=rss("Fine", items("fine", 2))))
    db, timeout = tmp_path / "agent.db", 3
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([*RAVANA, "--db", db, "ingest", "feeds", "--no-events", "--format",
                           "json", "--timeout", str(timeout), server.url("/slow/attrs.xml"),
                           server.url("/slow/fine.xml")],
                          capture_output=True, text=True, timeout=300, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert "Traceback" not in proc.stderr, proc.stderr[-500:]
    assert proc.returncode == 1
    rows = {r["feed"]: r for r in json.loads(proc.stdout)}
    assert rows[server.url("/slow/fine.xml")]["new"] == 2
    assert rows[server.url("/slow/attrs.xml")]["status"] == "error"
    assert f"longer than {timeout} s" in rows[server.url("/slow/attrs.xml")]["error"]
    # (the unbounded parse took a minute of CPU; the wall time allows for a busy machine)
    assert cpu < timeout + 10 and wall < timeout + 20, (wall, cpu)
    assert one(db, "SELECT last_status FROM feed WHERE url = ?",
               server.url("/slow/attrs.xml")) == "error"


def test_no_more_feeds_are_fetched_or_held_than_concurrency(server, tmp_path):
    """A feed's body is fetched only when a slot is free: with --concurrency 1, the second
    feed is asked for only once the first is stored (bodies never queue while embedding)."""
    import sqlite3

    db, seen = tmp_path / "agent.db", {}
    server.route("/held/a.xml", Reply(body=rss("Held A", items("helda", 3))))

    def second(request):
        with contextlib.closing(sqlite3.connect(db)) as conn:
            seen["stored before"] = conn.execute("SELECT count(*) FROM article").fetchone()[0]
        return Reply(body=rss("Held B", items("heldb", 2)))

    server.route("/held/b.xml", second)
    result, reports = ingest(db, "--concurrency", 1, server.url("/held/a.xml"),
                             server.url("/held/b.xml"))
    assert result.exit_code == 0, result.stderr
    assert seen == {"stored before": 3}
    assert one(db, "SELECT count(*) FROM article") == 5


def children(pid):
    """The pids of a process's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += map(int, (task / "children").read_text().split())
    return found


def test_a_killed_ingest_leaves_no_parser_behind(server, tmp_path):
    attributes = " ".join(f'a{n}="{n}"' for n in range(60_000))
    slow = rss("Slow", items("slow", 1)).replace(b"<item>", f"<item {attributes}>".encode())
    server.route("/orphan/attrs.xml", Reply(body=slow))
    proc = subprocess.Popen([*RAVANA, "--db", tmp_path / "agent.db", "ingest", "feeds",
                             "--no-events", "--timeout", "120", server.url("/orphan/attrs.xml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, parsers = time.monotonic() + 60, []
        while not parsers and time.monotonic() < deadline:
            time.sleep(0.1)
            parsers = [p for p in children(proc.pid) if "_parse_forever" in
                       Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        assert parsers, "no parser process started"
        (parser,) = parsers
        time.sleep(1)  # it is parsing
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{parser}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{parser}/stat").read_text().split(") ")[1][0] == "Z":
                    break  # ended, waiting for init to reap it
            time.sleep(0.05)
        alive = Path(f"/proc/{parser}").exists() and \
            Path(f"/proc/{parser}/stat").read_text().split(") ")[1][0] != "Z"
        assert not alive, "the parser outlived its parent"
    finally:
        proc.kill()
        proc.wait()


def test_the_parse_child_is_replaced_after_a_large_feed_and_only_then(server, tmp_path):
    """A parse child keeps the heap its largest parse grew to: after a body over
    Parser.RECYCLE_BYTES the next feed gets a new child, while smaller feeds (one just under
    the mark too) share one. With --concurrency 1 a feed is asked for only once the one before
    it is stored, so the parse children alive at each request tell who parsed the feeds before."""
    def padded(tag, size):
        body = rss(tag.title(), items(tag, 3))
        return body.replace(b"</channel>", b"<!--" + b"x" * (size - len(body) - 7) + b"-->"
                            b"</channel>")

    bodies = {"a": rss("A", items("recyclea", 3)),
              "under": padded("recycleunder", Parser.RECYCLE_BYTES - 1000),
              "big": padded("recyclebig", Parser.RECYCLE_BYTES + 1000),
              "c": rss("C", items("recyclec", 3)), "d": rss("D", items("recycled", 3))}
    assert len(bodies["under"]) < Parser.RECYCLE_BYTES < len(bodies["big"])
    ingesting, seen = {}, {}

    def route(name):
        def reply(request):
            seen[name] = [p for p in children(ingesting["pid"]) if "_parse_forever" in
                          Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
            return Reply(body=bodies[name])
        return reply

    for name in bodies:
        server.route(f"/recycle/{name}.xml", route(name))
    proc = subprocess.Popen([*RAVANA, "--db", tmp_path / "agent.db", "ingest", "feeds",
                             "--no-events", "--format", "json", "--concurrency", "1",
                             *(server.url(f"/recycle/{name}.xml") for name in bodies)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ingesting["pid"] = proc.pid
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err, err[-500:]
    assert {r["status"] for r in json.loads(out)} == {"ok"}
    assert seen["a"] == [] and seen["c"] == [], seen  # none yet; the first ended after "big"
    (first,), (second,) = seen["under"], seen["d"]
    assert seen["big"] == [first] and second != first, seen


# 4. Backoff ---------------------------------------------------------------------------------


def test_a_failing_feed_backs_off_is_retried_when_due_and_never_dropped(server, tmp_path):
    db, url, state = tmp_path / "agent.db", server.url("/flaky.xml"), {"up": False}
    body = rss("Flaky", items("flaky", 2))
    server.route("/flaky.xml", lambda r: Reply(body=body) if state["up"] else Reply(500))

    def feed():
        return query(db, "SELECT failures, next_attempt, last_status, last_error FROM feed")[0]

    def make_due(sql="UPDATE feed SET next_attempt = '2000-01-01T00:00:00.000Z'"):
        conn = open_db(db)
        with transaction(conn):
            conn.execute(sql)
        conn.close()

    result, _ = ingest(db, url)
    assert result.exit_code == 1
    first = feed()
    assert first["failures"] == 1 and "500" in first["last_error"]
    assert utc(first["next_attempt"]) > datetime.now(timezone.utc) + timedelta(minutes=14)

    # Not due yet: the cron run skips it, and the server hears nothing.
    result, reports = ingest(db)
    assert (result.exit_code, reports) == (0, {}) and len(server.received("/flaky.xml")) == 1

    make_due()  # its time has come: fetched again, fails again, waits longer
    result, reports = ingest(db)
    assert result.exit_code == 1 and reports[url]["status"] == "error"
    second = feed()
    assert second["failures"] == 2 and len(server.received("/flaky.xml")) == 2
    assert utc(second["next_attempt"]) > datetime.now(timezone.utc) + timedelta(minutes=29)

    state["up"] = True  # a success resets the count
    make_due()
    result, reports = ingest(db)
    assert result.exit_code == 0 and reports[url]["new"] == 2
    assert feed() | {"last_status": None} == {"failures": 0, "next_attempt": None,
                                              "last_status": None, "last_error": None}

    # Twenty failures in a row: still retried, at most a day later.
    state["up"] = False
    make_due("UPDATE feed SET failures = 20, next_attempt = '2000-01-01T00:00:00.000Z'")
    result, reports = ingest(db)
    assert result.exit_code == 1
    late = feed()
    now = datetime.now(timezone.utc)
    assert late["failures"] == 21
    assert now + timedelta(hours=23) < utc(late["next_attempt"]) <= now + timedelta(hours=24)
    assert one(db, "SELECT count(*) FROM article") == 2  # the articles stay


# 5. OPML ------------------------------------------------------------------------------------


def test_the_fixture_opml_subscribes_relative_paths_from_its_folder(tmp_path):
    db = tmp_path / "agent.db"
    result, reports = ingest(db, "--opml", FIXTURES / "subscriptions.opml")
    # The http://127.0.0.1:PORT/ placeholders are no URLs, and the broken outline is a
    # relative path to no file: skipped, each with a line.
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("skipped: 'http://127.0.0.1:PORT/") == 4
    assert re.search(r"skipped: file://\S*not%20a%20url\S*: no such file", result.stderr)
    assert [r for r in reports.values() if r["status"] == "error"] == []
    local = ["rss20-guid-permalink.xml", "atom10.xml", "atom10-xml-base.xml",
             "enc-utf8-bom.xml", "enc-utf16le-bom.xml", "enc-shift-jis.xml",
             "rss20-guid-not-permalink.xml", "rss10-rdf.xml", "rss20-enclosures.xml"]
    for name in local:
        row = reports[url_of(name)]
        assert row["status"] == "ok" and row["new"] == MANIFEST[name]["entries"], row
    assert not [u for u in reports if "PORT" in u]
    stored = {r["url"] for r in query(db, "SELECT url FROM feed")}
    assert stored == set(reports)


def test_opml_out_and_back_in_gives_the_same_feeds(server, tmp_path):
    local = tmp_path / "feeds" / "local.xml"
    local.parent.mkdir()
    local.write_bytes(rss("Local", items("local", 2)))
    server.route("/opml/a.xml", Reply(body=rss("Outlet A & Sons", items("outa", 2))))
    server.route("/opml/b.xml", Reply(body=rss("東都新報", items("outb", 2))))
    mine = tmp_path / "feeds" / "mine.opml"
    mine.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0"><head><title>mine</title>'
        '</head><body><outline text="News">'
        f'<outline type="rss" text="A" xmlUrl="{server.url("/opml/a.xml")}"/>'
        f'<outline type="rss" text="B" xmlUrl="{server.url("/opml/b.xml")}"/></outline>'
        '<outline type="rss" text="Local" xmlUrl="local.xml"/></body></opml>\n')
    db = tmp_path / "agent.db"
    result, reports = ingest(db, "--opml", mine)
    assert result.exit_code == 0, reports
    urls = [server.url("/opml/a.xml"), server.url("/opml/b.xml"), local.as_uri()]
    assert sorted(reports) == sorted(urls)
    assert all(r["status"] == "ok" and r["new"] == 2 for r in reports.values())

    exported = invoke(db, "export", "feeds", "--format", "opml")
    assert exported.exit_code == 0 and exported.stderr == ""
    parsed = listparser.parse(exported.stdout.encode())
    assert not parsed.bozo, parsed.bozo_exception
    assert sorted(f.url for f in parsed.feeds) == sorted(urls)
    assert {f.title for f in parsed.feeds} == {"Outlet A & Sons", "東都新報", "Local"}

    again = tmp_path / "again.opml"  # and our own reader takes it back
    again.write_text(exported.stdout)
    other = tmp_path / "other.db"
    result, reports = ingest(other, "--opml", again)
    assert result.exit_code == 0 and sorted(reports) == sorted(urls)

    listed = invoke(db, "export", "feeds", "--format", "json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert sorted(r["url"] for r in rows) == sorted(urls)
    for row in rows:
        assert set(row) >= {"url", "title", "last_fetched", "last_status", "last_error",
                            "failures", "next_attempt"}
        assert (row["last_status"], row["failures"], row["next_attempt"]) == ("ok", 0, None)
        assert ISO.fullmatch(row["last_fetched"])


def test_an_opml_list_names_http_or_files_in_its_own_folder_only(server, tmp_path):
    """A shared OPML list cannot make us read the reader's other files: file:///etc/...,
    ../ paths and other schemes are skipped (one line each) unless --allow-local-files."""
    folder = tmp_path / "lists"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "inside.xml").write_bytes(rss("Inside", items("inside", 2)))
    outside = tmp_path / "outside.xml"
    outside.write_bytes(rss("Outside", items("outside", 2)))
    server.route("/opml/web.xml", Reply(body=rss("Web", items("web", 2))))
    names = [server.url("/opml/web.xml"), "sub/inside.xml", "../outside.xml",
             outside.as_uri(), "file:///etc/shadow", "../../../../../../etc/passwd",
             "ftp://files.example/feed.xml", "javascript:alert(1)"]
    subs = folder / "subs.opml"
    subs.write_text('<?xml version="1.0"?><opml version="2.0"><head/><body>' + "".join(
        f'<outline type="rss" text="{n}" xmlUrl="{html.escape(n)}"/>' for n in names)
        + "</body></opml>")
    db = tmp_path / "agent.db"
    result, reports = ingest(db, "--opml", subs)
    assert result.exit_code == 0, result.stderr
    assert sorted(reports) == sorted([server.url("/opml/web.xml"),
                                      (folder / "sub" / "inside.xml").as_uri()])
    skipped = [line for line in result.stderr.splitlines() if "skipped:" in line]
    assert len(skipped) == 6, result.stderr
    assert sum("outside the OPML file's folder" in line for line in skipped) == 4
    assert {r["url"] for r in query(db, "SELECT url FROM feed")} == set(reports)
    assert one(db, "SELECT count(*) FROM article") == 4

    result, reports = ingest(db, "--opml", subs, "--allow-local-files")
    assert outside.as_uri() in reports and reports[outside.as_uri()]["new"] == 2
    # What the user allowed is read (and /etc/passwd is no feed); other schemes stay out.
    assert sum("skipped:" in line for line in result.stderr.splitlines()) == 2
    assert reports["file:///etc/passwd"]["status"] == "error"


def test_an_opml_list_in_its_declared_encoding_is_read(tmp_path):
    feed = tmp_path / "café.xml"
    feed.write_bytes(rss("Café", items("cafe", 2)))
    subs = tmp_path / "latin.opml"
    subs.write_bytes('<?xml version="1.0" encoding="ISO-8859-1"?>\n<opml version="2.0"><head>'
                     '<title>Abonnements à café</title></head><body><outline type="rss" '
                     'text="Café" xmlUrl="café.xml"/></body></opml>\n'.encode("latin-1"))
    result, reports = ingest(tmp_path / "agent.db", "--opml", subs)
    assert result.exit_code == 0, result.stderr
    assert reports[feed.as_uri()]["new"] == 2


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0" encoding="UTF-8"?><opml><body><outline xmlUrl="caf\xe9.xml"/>',
    b'<?xml version="1.0" encoding="klingon-8"?><opml/>', b"\x00\xff\xfe garbage",
    b"", b"<html><p>not a list</p></html>"])
def test_a_bad_opml_list_is_one_line_and_exit_2(tmp_path, body):
    subs = tmp_path / "bad.opml"
    subs.write_bytes(body)
    db = tmp_path / "agent.db"
    result = invoke(db, "ingest", "feeds", "--no-events", "--opml", subs)
    assert result.exit_code == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not db.exists() or one(db, "SELECT count(*) FROM feed") == 0


def test_quiet_ingest_says_nothing_on_success_and_a_line_per_failed_feed(server, tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 2)))
    server.route("/quiet/down.xml", Reply(500))
    invoke(db, "init")  # (a command that creates the file says so, even with --quiet)
    result = CliRunner().invoke(app, ["--db", str(db), "--quiet", "ingest", "feeds", str(feed)])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    result = CliRunner().invoke(app, ["--db", str(db), "--quiet", "ingest", "feeds", str(feed),
                                      server.url("/quiet/down.xml")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: {server.url('/quiet/down.xml')}: HTTP 500 " \
                            "Internal Server Error\n"


LINKS = {"ok": "https://safe.example/news/1", "js": "javascript:alert(document.cookie)",
         "js-case": "  JaVaScRiPt:alert(1)", "js-tab": "java\tscript:alert(1)",
         "js-nl": "\njava\nscript:alert(1)", "js-ctl": "\x01javascript:alert(1)",
         "data": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
         "vb": "VBScript:MsgBox(1)", "file": "file:///etc/passwd", "other": "tel:+123",
         "relative": "/news/relative"}


def test_links_other_than_http_and_https_are_dropped_and_the_articles_kept(server, tmp_path):
    body = rss("Links", [{"title": f"Item {name}", "link": link, "guid": f"g-{name}",
                          "description": f"About {name}"} for name, link in LINKS.items()])
    server.route("/links.xml", Reply(body=body))
    db = tmp_path / "agent.db"
    result, reports = ingest(db, server.url("/links.xml"))
    assert result.exit_code == 0 and reports[server.url("/links.xml")]["new"] == len(LINKS)
    stored = {r["title"]: r["link"] for r in query(db, "SELECT title, link FROM article")}
    assert stored.pop("Item ok") == LINKS["ok"]
    assert stored.pop("Item relative") == server.url("/news/relative")
    assert stored == {f"Item {name}": "" for name in LINKS if name not in ("ok", "relative")}

    exported = invoke(db, "export", "article", "--format", "jsonl")
    again = tmp_path / "again.db"
    invoke(again, "ingest", "feeds", "--no-events", server.url("/links.xml"))
    rows = [{**json.loads(line), "link": LINKS["js-tab"]} for line in exported.stdout.splitlines()]
    lines = tmp_path / "articles.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke(again, "ingest", "jsonl", lines, "--table", "article")
    assert result.exit_code == 0, result.stderr
    assert {r["link"] for r in query(again, "SELECT link FROM article")} == {""}


def test_control_characters_in_feed_text_are_not_stored(server, tmp_path):
    """NUL, the C0 controls (but tab and newline) and the C1 controls are dropped from what a
    feed says, raw or as character references; the article is kept."""
    body = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            "<title>&#27;]0;PWNED&#7;&#27;[2J&#27;[31m Wire\u0085\u009b</title>"
            "<link>https://ctl.example/</link><item><title>Head&#0;line\u009b31m &#x1b;[0m"
            "</title><link>https://ctl.example/1&#27;</link><guid>ctl-&#1;1</guid>"
            "<description>visible&#0;hidden \u0090text\u007f</description></item>"
            "</channel></rss>").encode()
    server.route("/ctl.xml", Reply(body=body))
    db = tmp_path / "agent.db"
    result, reports = ingest(db, server.url("/ctl.xml"))
    assert result.exit_code == 0, result.stderr
    (article,) = query(db, "SELECT * FROM article")
    control = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    texts = [v for v in article.values() if isinstance(v, str)]
    texts += [v for v in query(db, "SELECT * FROM feed")[0].values() if isinstance(v, str)]
    assert not [t for t in texts if control.search(t)], texts
    # (feedparser reads C1 characters as the windows-1252 ones they usually are: › for 0x9b)
    assert article["title"] in ("Headline31m [0m", "Headline\u203a31m [0m")
    assert article["summary"] == "visiblehidden text"
    assert article["guid"] == "ctl-1"
    assert reports[server.url("/ctl.xml")]["title"].startswith("]0;PWNED[2J[31m Wire")


def test_export_feeds_refuses_an_unknown_format(tmp_path):
    db = tmp_path / "agent.db"
    invoke(db, "init")
    result = invoke(db, "export", "feeds", "--format", "yaml")
    assert result.exit_code == 2 and result.stderr.startswith("error:") and result.stdout == ""


# 6. SIGKILL midway --------------------------------------------------------------------------


def _kill_when(proc, ready, timeout=180):  # generous: embedding is slow on a busy machine
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read()}"
        if ready():
            break
        assert time.monotonic() < deadline, "never reached the kill point"
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _sound(db):
    """The file passes integrity_check and its index is whole; returns the article count."""
    assert not list(db.parent.glob("*-journal"))
    integrity_ok(db)
    conn = open_db(db, create=False)
    try:
        conn.execute("INSERT INTO doc_fts(doc_fts, rank) VALUES ('integrity-check', 1)")
        n = conn.execute("SELECT count(*) FROM article").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM doc WHERE kind = 'article'").fetchone()[0] == n
        # Each stored article has its vector (it was embedded before its transaction).
        assert conn.execute("SELECT count(*) FROM doc WHERE id NOT IN (SELECT doc_id FROM "
                            "doc_vec)").fetchone()[0] == 0
        return n
    finally:
        conn.close()


def test_a_killed_ingest_leaves_a_sound_file_and_the_next_run_completes(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "big.xml"
    feed.write_bytes(rss("Bulk", items("bulk", 1500)))
    assert subprocess.run([*RAVANA, "--db", db, "init"], capture_output=True,
                          check=False).returncode == 0
    probe = open_db(db)

    def start():
        return subprocess.Popen([*RAVANA, "--db", db, "--quiet", "ingest", "feeds",
                                 "--no-events", feed], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def subscribed():  # the feed row commits first, in its own short transaction
        return probe.execute("SELECT count(*) FROM feed").fetchone()[0] > 0

    try:
        # While it embeds: imports, the model and parsing take about 1.5 s of CPU; the
        # 1,500 articles take several more before their one transaction.
        proc = start()
        _kill_when(proc, lambda: subscribed() and cpu_seconds(proc.pid) > 2.5)
        assert _sound(db) == 0

        # While it writes: past its start (opening the file, subscribing), the only lock it
        # takes is the feed's one write.
        proc = start()
        _kill_when(proc, lambda: cpu_seconds(proc.pid) > 2.5 and write_locked(probe))
        stored = _sound(db)
        assert stored in (0, 1500)
    finally:
        probe.close()

    # The next cron run:
    done = subprocess.run([*RAVANA, "--db", db, "ingest", "feeds", "--no-events", "--format",
                           "json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["status"] == ("unchanged" if stored else "ok")
    assert row["new"] == 1500 - stored
    assert _sound(db) == 1500
    assert one(db, "SELECT count(DISTINCT guid) FROM article") == 1500
    assert one(db, "SELECT count(*) FROM embed_queue") == 0


# 7. Subscriptions: feeds list, remove, pause, resume; pausing a feed that keeps failing -----


def set_feed(db, sql, *params):
    conn = open_db(db)
    with transaction(conn):
        conn.execute(sql, params)
    conn.close()


def status_feeds(db):
    result = invoke(db, "status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["feeds"]


def test_a_feed_failing_for_days_is_paused_skipped_and_resumed(server, tmp_path):
    db, url, state = tmp_path / "agent.db", server.url("/dying.xml"), {"up": True}
    body = rss("Dying", items("dying", 2))
    server.route("/dying.xml", lambda r: Reply(body=body) if state["up"] else Reply(500))
    assert ingest(db, url)[0].exit_code == 0
    state["up"] = False
    long_ago = "2000-01-01T00:00:00.000Z"

    # Many failures, but within a day: retried, not paused.
    set_feed(db, "UPDATE feed SET failures = 30, next_attempt = ?, failing_since = "
                 "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')", long_ago)
    result, reports = ingest(db)
    assert result.exit_code == 1 and "paused" not in reports[url]["error"]
    assert status_feeds(db) == {"subscribed": 1, "paused": 0}

    # The tenth failure in a row, the first eight days ago: paused, and said so.
    set_feed(db, "UPDATE feed SET failures = 9, next_attempt = ?, failing_since = "
                 "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-8 days')", long_ago)
    result, reports = ingest(db)
    assert result.exit_code == 1
    assert "paused after 10 failures" in reports[url]["error"]
    assert status_feeds(db) == {"subscribed": 1, "paused": 1}
    listed = json.loads(invoke(db, "feeds", "list", "--format", "json").stdout)
    assert [(r["url"], r["status"], r["failures"], r["articles"]) for r in listed] == \
        [(url, "paused", 10, 2)]

    # `ingest feeds` with no arguments leaves it alone, however long ago it was due.
    set_feed(db, "UPDATE feed SET next_attempt = ?", long_ago)
    asked = len(server.received("/dying.xml"))
    result, reports = ingest(db)
    assert (result.exit_code, reports) == (0, {})
    assert len(server.received("/dying.xml")) == asked

    state["up"] = True
    result = invoke(db, "feeds", "resume", url)
    assert result.exit_code == 0 and result.stderr == f"resumed: {url}\n"
    result, reports = ingest(db)
    assert result.exit_code == 0 and reports[url]["status"] == "unchanged"
    assert status_feeds(db) == {"subscribed": 1, "paused": 0}
    assert one(db, "SELECT count(*) FROM article") == 2


def test_remove_ends_the_subscription_and_keeps_the_articles(tmp_path):
    db, feed, other = tmp_path / "agent.db", tmp_path / "news.xml", tmp_path / "other.xml"
    feed.write_bytes(rss("News", items("news", 3)))
    other.write_bytes(rss("Other", items("other", 2)))
    assert ingest(db, feed, other)[0].exit_code == 0
    articles = query(db, "SELECT * FROM article ORDER BY id")

    result = invoke(db, "feeds", "remove", feed)  # a path names its file:// feed
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"removed: {feed.as_uri()} (its 3 article(s) stay)\n"
    assert query(db, "SELECT * FROM article ORDER BY id") == articles
    listed = json.loads(invoke(db, "feeds", "list", "--format", "json").stdout)
    assert [r["url"] for r in listed] == [other.as_uri()]
    assert feed.as_uri() not in invoke(db, "export", "feeds").stdout
    assert feed.as_uri() not in invoke(db, "export", "feeds", "--format", "json").stdout
    assert status_feeds(db) == {"subscribed": 1, "paused": 0}
    result, reports = ingest(db)
    assert list(reports) == [other.as_uri()]
    found = invoke(db, "query", "News harbour", "--mode", "fts", "--kind", "article",
                   "--format", "json")
    assert any(r["kind"] == "article" for r in json.loads(found.stdout))

    # Named again, it is subscribed again: the same row, no article twice.
    result, reports = ingest(db, feed)
    assert result.exit_code == 0 and reports[feed.as_uri()]["new"] == 0
    assert one(db, "SELECT count(*) FROM article") == 5
    assert len(json.loads(invoke(db, "feeds", "list", "--format", "json").stdout)) == 2


@pytest.mark.parametrize("action", ["remove", "pause", "resume"])
def test_an_unknown_feed_is_exit_2_and_changes_nothing(tmp_path, action):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 1)))
    assert ingest(db, feed)[0].exit_code == 0
    before = query(db, "SELECT * FROM feed")
    result = invoke(db, "feeds", action, feed, "https://nowhere.example/rss")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("error: 'https://nowhere.example/rss' is not a subscribed feed "
                             "(see `ravana-db feeds list`)\n")
    assert query(db, "SELECT * FROM feed") == before


def test_pause_by_hand_and_quiet_says_nothing(tmp_path):
    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 1)))
    assert ingest(db, feed)[0].exit_code == 0
    result = invoke(db, "--quiet", "feeds", "pause", feed.as_uri())
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert ingest(db)[1] == {}
    table = invoke(db, "feeds", "list", "--format", "csv").stdout.splitlines()
    assert table[0] == "url,title,status,failures,last_error,last_fetched,articles"
    assert table[1].startswith(f"{feed.as_uri()},News,paused,0,,")


def test_m009_brings_an_older_file_up_with_its_failing_feeds(tmp_path):
    from ravana_db.schema import migrations

    db, feed = tmp_path / "agent.db", tmp_path / "news.xml"
    feed.write_bytes(rss("News", items("news", 1)))
    assert ingest(db, feed, tmp_path / "news.xml")[0].exit_code == 0
    set_feed(db, "UPDATE feed SET failures = 4, last_fetched = '2026-01-02T03:04:05.000Z'")
    conn = open_db(db)
    with transaction(conn):
        for column in ("paused_at", "paused_reason", "removed_at", "failing_since"):
            conn.execute(f"ALTER TABLE feed DROP COLUMN {column}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm009_feed_pause_and_removal'")
    conn.close()
    result = invoke(db, "feeds", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "active"
    assert query(db, "SELECT failures, failing_since, paused_at, removed_at FROM feed") == [
        {"failures": 4, "failing_since": "2026-01-02T03:04:05.000Z", "paused_at": None,
         "removed_at": None}]
    conn = open_db(db)
    assert migrations.pending(conn) == []
    conn.close()
