"""`ingest feeds`: fetch a few feeds at a time, parse each body in the child process, and store
each feed as it arrives (its articles and its fetch state in one transaction)."""

import contextlib
import queue
import threading
from pathlib import Path
from urllib.parse import urlparse

from ..errors import RecordError
from ..times import now
from .clean import one_line
from .fetching import CONCURRENCY, MAX_BYTES, TIMEOUT, Fetched, Inflater, fetch_each
from .parsing import Parser
from .subscriptions import failed


def fetch_all(feeds, *, concurrency=CONCURRENCY, timeout=TIMEOUT, max_bytes=MAX_BYTES):
    """Yield a parsed Fetched for each feed, as each arrives; never raises for one feed.

    Fetching runs on an asyncio loop in a background thread, so the deadline of a fetch cuts
    it anywhere (a server that drips its headers a byte at a time too); parsing runs in a
    child process (see Parser), while the other fetches go on. At most `concurrency` feeds
    are fetched or held at once: a feed's slot is freed only once the caller has taken the
    next one, so bodies never pile up while the caller embeds and stores.
    """
    import asyncio  # here: the parse child imports this module and needs none of it

    results, started = queue.Queue(), queue.Queue()
    thread = threading.Thread(daemon=True, target=lambda: asyncio.run(fetch_each(
        feeds, results=results, started=started, concurrency=concurrency, timeout=timeout,
        max_bytes=max_bytes)))
    thread.start()
    loop, limit = started.get()
    with Parser() as parser:
        for _ in feeds:
            yield _parsed(results.get(), parser, timeout=timeout, max_bytes=max_bytes)
            with contextlib.suppress(RuntimeError):  # (a closed loop: every feed was fetched)
                loop.call_soon_threadsafe(limit.release)  # the caller is done with that one


def _parsed(fetched, parser, *, timeout, max_bytes):
    """The fetched body inflated if it is a gzip file, skipped when unchanged, else parsed
    within what is left of the feed's timeout."""
    if fetched.status != "ok":
        return fetched
    try:
        if fetched.body[:2] == b"\x1f\x8b":  # a local .gz, or one served without an encoding
            fetched.body = Inflater(["gzip"], max_bytes).all(fetched.body)
        fetched.body_hash = sha256_bytes(fetched.body)
        if fetched.feed.get("body_hash") == fetched.body_hash:
            fetched.status = "unchanged"  # the server ignored our conditional headers
        else:
            left = max(timeout - fetched.seconds, 0.0)
            fetched.title, fetched.entries = parser.parse(
                fetched.body, url=fetched.feed["url"], content_type=fetched.content_type,
                seconds=left, timeout=timeout)
    except Exception as e:  # a body feedparser or the inflater refuses: this feed's error
        return Fetched(fetched.feed, "error", error=one_line(e))
    fetched.body = b""  # parsed: not held while the articles are embedded and stored
    return fetched


def sha256_bytes(body):
    """The SHA-256 of a body, in hex: a feed whose body is unchanged is not parsed again."""
    import hashlib

    return hashlib.sha256(body).hexdigest()


def store(db, fetched, *, embedder=None, progress=None):
    """Write one fetched feed: its new articles and its fetch state, in one transaction.

    Returns the feed's report row: status, new, updated, skipped, error.
    """
    from ..models import Article
    from ..store import write

    feed, stamp = fetched.feed, now()
    report = {"feed": feed["url"], "title": fetched.title or feed.get("title"),
              "status": fetched.status, "new": 0, "updated": 0, "skipped": 0,
              "error": fetched.error}
    state = {"last_fetched": stamp, "last_status": fetched.status}
    if fetched.status == "error":
        failure, note = failed(feed, error=fetched.error, retry_after=fetched.retry_after,
                               stamp=stamp)
        state.update(failure)
        if note:
            report["error"] += note
        write(db, [], statements=[_update(feed, state)])
        return report
    state.update(failures=0, failing_since=None, last_error=None, next_attempt=None,
                 etag=fetched.etag,
                 last_modified=fetched.last_modified)
    records = []
    if fetched.status == "ok":
        state.update(title=fetched.title or feed.get("title"), body_hash=fetched.body_hash)
        source = fetched.title or urlparse(feed["url"]).hostname or Path(feed["url"]).name
        elsewhere = _elsewhere(db, feed["id"], links=[e["link"] for e in fetched.entries])
        seen = set()
        for entry in fetched.entries:
            if entry["guid"] in seen or entry["link"] in elsewhere:
                report["skipped"] += 1  # twice in this feed, or the same link in another
                continue
            seen.add(entry["guid"])
            # fetched_at is the database's default: the time of the first insert, kept.
            records.append(Article(feed_id=feed["id"], source=source, **entry))
    try:
        results = write(db, records, embedder=embedder, progress=progress,
                        statements=[_update(feed, state)])
    except RecordError as e:  # an entry the database refuses: the feed's error, not ours
        report.update(status="error", error=f"entry {e.index + 1}: {e}")
        return report
    for result in results:
        key = {"inserted": "new", "updated": "updated"}.get(result["status"], "skipped")
        report[key] += 1
    return report


def _update(feed, state):
    """The statement that records a feed's fetch state."""
    return (f"UPDATE feed SET {', '.join(f'[{k}] = ?' for k in state)} WHERE id = ?",
            [*state.values(), feed["id"]])


def _elsewhere(db, feed_id, *, links):
    """The links among these that another feed already brought."""
    links, found = [link for link in set(links) if link], set()
    for start in range(0, len(links), 500):
        chunk = links[start:start + 500]
        found.update(r[0] for r in db.execute(
            f"SELECT link FROM article WHERE link IN ({', '.join('?' * len(chunk))}) "
            f"AND feed_id != ?", [*chunk, feed_id]))
    return found


def ingest(db, feeds, *, embedder=None, concurrency=CONCURRENCY, timeout=TIMEOUT,
           max_bytes=MAX_BYTES, progress=None):
    """Fetch feeds (rows from subscribe() or due()) a few at a time and store each as it
    arrives. Returns one report row per feed, in the order given."""
    reports = {}
    for fetched in fetch_all(feeds, concurrency=concurrency, timeout=timeout,
                             max_bytes=max_bytes):
        reports[fetched.feed["id"]] = store(db, fetched, embedder=embedder)
        del fetched
        _give_back_memory()
        if progress:
            progress(1)
    return [reports[feed["id"]] for feed in feeds]


def _give_back_memory():
    """Return what the last feed freed to the system (glibc keeps freed heap, and the fetch
    thread's arena, for reuse: a run of large feeds would keep its highest mark)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
