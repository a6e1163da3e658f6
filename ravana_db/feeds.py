"""Feed ingest: subscribe, fetch politely and safely, parse with feedparser, store articles.

Fetching runs in a few threads (network and parsing); storing runs in the calling thread, one
store.write per feed: the feed's articles and its new fetch state commit together, and their
text is embedded before the write lock is taken. A feed that fails is recorded with a backoff
and retried later, never dropped; the other feeds are stored all the same.
"""

import calendar
import contextlib
import email.utils
import html.parser
import os
import queue
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from . import __version__
from .db import format_time, now, sha256
from .errors import InputError, RecordError
from .links import web_link

USER_AGENT = f"ravana-db/{__version__} (feed reader; one fetch per cron run)"
ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml, "
          "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1")
MAX_BYTES = 10 << 20  # a feed bigger than this (after decompression) is refused
TIMEOUT = 20.0  # seconds for the whole fetch of one feed
CONCURRENCY = 4
MAX_REDIRECTS = 5
BACKOFF_FIRST, BACKOFF_MAX = timedelta(minutes=15), timedelta(hours=24)
RETRY_AFTER_MAX = timedelta(days=7)
# A feed that has failed this many times in a row, over at least this long, is paused:
# `ingest feeds` stops fetching it until `ravana-db feeds resume URL`.
PAUSE_AFTER_FAILURES, PAUSE_AFTER = 10, timedelta(days=7)


@dataclass
class Fetched:
    """What one fetch of one feed gave."""

    feed: dict
    status: str  # "ok" (a body to parse), "not_modified", "unchanged" or "error"
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    error: str | None = None
    retry_after: timedelta | None = None
    title: str | None = None
    entries: list = field(default_factory=list)
    seconds: float = 0.0  # how long the fetch took: the parse has the rest of the timeout
    body_hash: str | None = None


def feed_url(target, *, must_exist=True):
    """The stored URL of a feed named on the command line: http(s) as given, a local path (or
    a file:// URL) as an absolute file:// URL. Anything else, an empty name, or a local file
    that is not there (with must_exist) is an InputError: nothing is subscribed."""
    if not target.strip():
        raise InputError("an empty feed name: give a URL or the path of a feed file")
    try:
        parts = urlparse(target)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as e:
        raise InputError(f"{target!r} is not a URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise InputError(f"{target!r} is not a feed URL (no host)")
        return target
    if scheme and scheme != "file" and len(scheme) > 1:  # (one letter: a Windows drive)
        raise InputError(f"{target!r}: only http, https and file feeds can be fetched")
    path = Path(unquote(parts.path)) if scheme == "file" else Path(os.path.abspath(target))
    if must_exist and not path.is_file():
        raise InputError(f"{target}: no such file (give a feed file or an http(s) URL)")
    return target if scheme == "file" else path.as_uri()


def local_path(url):
    """The path of a file:// feed URL."""
    return Path(unquote(urlparse(url).path))


def opml_urls(path, *, allow_local_files=False):
    """(urls, refused) of an OPML subscription list: its feeds, and the outlines skipped, with
    why. An outline may name an http(s) URL, or a feed file inside the OPML file's own folder
    (a relative path is taken from there); any other local file only with allow_local_files,
    other schemes never. A list that is not an OPML file, or names no feed, is an InputError."""
    import listparser

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
    parsed = listparser.parse(_utf8_xml(data, path))
    urls = [f.url for f in parsed.feeds if f.url]
    if not urls:
        raise InputError(f"{path}: no feeds in it (not an OPML subscription list?)")
    base, good, refused = Path(path).absolute().parent, [], []
    for url in urls:
        try:
            has_scheme = re.match(r"[a-zA-Z][\w+.-]+:", url)
            url = feed_url(url if has_scheme else str(base / url), must_exist=False)
            if url.startswith("file:"):
                _local_outline(url, base, allow_local_files)
            good.append(url)
        except InputError as e:
            refused.append(str(e))
    if not good:
        raise InputError(f"{path}: no feed in it that can be fetched"
                         + (f" ({refused[0]})" if refused else ""))
    return good, refused


def _local_outline(url, base, allowed):
    """Refuse an OPML outline's local file outside the OPML's folder (unless allowed), or not
    there: a shared subscription list must not read the reader's other files."""
    path = local_path(url)
    inside = path.resolve().is_relative_to(base.resolve())
    if not (inside or allowed):
        raise InputError(f"{url}: a local file outside the OPML file's folder "
                         "(--allow-local-files to subscribe to it)")
    if not path.is_file():
        raise InputError(f"{url}: no such file")


XML_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


def _utf8_xml(data, path):
    """An XML document's bytes as UTF-8, decoded from its BOM or its declared encoding
    (listparser reads UTF-8 only)."""
    import codecs

    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            encoding = name
            break
    else:
        declared = XML_ENCODING.match(data.lstrip()[:200])
        encoding = declared[1].decode() if declared else "utf-8"
    try:
        text = data.decode(encoding)
    except LookupError:
        raise InputError(f"{path}: unknown encoding {encoding!r} in its XML declaration") \
            from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not {encoding} text (byte {e.start}), as it declares; "
                         "not an OPML file?") from None
    text = re.sub(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*["'])[^"']*""", r"\g<1>UTF-8", text)
    return text.encode()


REVIVE = ("UPDATE feed SET paused_at = NULL, paused_reason = NULL, removed_at = NULL "
          "WHERE url = ? AND coalesce(paused_at, removed_at) IS NOT NULL")


def subscribe(db, urls):
    """Add feeds; a feed already stored keeps its state, and is active again if it was paused
    or removed (naming it is asking for it). Returns their rows, in order, each once."""
    from .models import Feed
    from .store import write

    urls = list(dict.fromkeys(urls))
    revive = [(REVIVE, [u]) for u in urls]
    write(db, [Feed(url=u) for u in urls], statements=revive)
    return [_feed(db, u) for u in urls]


def _feed(db, url):
    cursor = db.execute("SELECT * FROM feed WHERE url = ?", [url])
    return dict(zip([d[0] for d in cursor.description], cursor.fetchone()))


SUBSCRIBED = "url != 'unknown:' AND removed_at IS NULL"


def due(db):
    """The active feeds whose backoff has passed (all of them, when none failed)."""
    cursor = db.execute(f"SELECT * FROM feed WHERE {SUBSCRIBED} AND paused_at IS NULL AND "
                        "(next_attempt IS NULL OR next_attempt <= ?) ORDER BY id", [now()])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def listing(db):
    """The subscribed feeds, each with its state and how many articles it brought."""
    return [dict(r) for r in db.query(
        "SELECT f.url, f.title, CASE WHEN f.paused_at IS NULL THEN 'active' ELSE 'paused' END "
        "AS status, f.failures, f.last_error, f.last_fetched, "
        "(SELECT count(*) FROM article a WHERE a.feed_id = f.id) AS articles "
        f"FROM feed f WHERE {SUBSCRIBED} ORDER BY f.id")]


CHANGES = {
    "pause": "paused_at = ?1, paused_reason = 'paused by its user'",
    "resume": "paused_at = NULL, paused_reason = NULL, failures = 0, failing_since = NULL, "
              "next_attempt = NULL",
    "remove": "removed_at = ?1",
}


def change(db, targets, action):
    """Pause, resume or remove subscribed feeds, named by URL (or a feed file's path).

    Removing ends the subscription only: the feed's row stays, with its articles (they stay
    searchable and keep their source); naming the feed again subscribes it again.
    Returns one row per feed: url, title, articles. An unknown name is an InputError, and
    nothing is changed.
    """
    from .store import write

    rows = {r["url"]: r for r in listing(db)}
    urls = []
    for target in targets:
        url = target if target in rows else _stored_form(target)
        if url not in rows:
            raise InputError(f"{target!r} is not a subscribed feed (see `ravana-db feeds list`)")
        urls.append(url)
    urls = list(dict.fromkeys(urls))
    write(db, [], statements=[(f"UPDATE feed SET {CHANGES[action]} WHERE url = ?2",
                               [now(), url]) for url in urls])
    return [rows[url] for url in urls]


def _stored_form(target):
    try:
        return feed_url(target, must_exist=False)
    except InputError:
        return None


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
    thread = threading.Thread(daemon=True, target=lambda: asyncio.run(_fetch_all(
        feeds, results, started, concurrency=concurrency, timeout=timeout,
        max_bytes=max_bytes)))
    thread.start()
    loop, limit = started.get()
    with Parser() as parser:
        for _ in feeds:
            yield _parsed(results.get(), parser, timeout=timeout, max_bytes=max_bytes)
            with contextlib.suppress(RuntimeError):  # (a closed loop: every feed was fetched)
                loop.call_soon_threadsafe(limit.release)  # the caller is done with that one


async def _fetch_all(feeds, results, started, *, concurrency, timeout, max_bytes):
    import asyncio

    limit = asyncio.Semaphore(concurrency)
    started.put((asyncio.get_running_loop(), limit))
    async with contextlib.AsyncExitStack() as stack:
        # Building a client costs 50 ms (its TLS context): only when a feed needs one.
        http = None
        if any(not feed["url"].startswith("file:") for feed in feeds):
            import httpx

            http = await stack.enter_async_context(httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                follow_redirects=True, max_redirects=MAX_REDIRECTS,
                headers={"User-Agent": USER_AGENT, "Accept": ACCEPT,
                         "Accept-Encoding": "gzip, deflate"}))

        async def one(feed):
            await limit.acquire()  # released by fetch_all once the caller is done with it
            start = time.monotonic()
            try:
                fetched = await asyncio.wait_for(_fetch(feed, http, max_bytes), timeout)
            except asyncio.TimeoutError:
                fetched = Fetched(feed, "error", error=f"took longer than {timeout:g} s")
            except Exception as e:  # one feed's failure must not stop the others
                fetched = Fetched(feed, "error", error=_one_line(e),
                                  retry_after=getattr(e, "retry_after", None))
            fetched.seconds = time.monotonic() - start
            results.put(fetched)

        await asyncio.gather(*(one(feed) for feed in feeds))


def _parsed(fetched, parser, *, timeout, max_bytes):
    """The fetched body inflated if it is a gzip file, skipped when unchanged, else parsed
    within what is left of the feed's timeout."""
    if fetched.status != "ok":
        return fetched
    try:
        if fetched.body[:2] == b"\x1f\x8b":  # a local .gz, or one served without an encoding
            fetched.body = _Inflater(["gzip"], max_bytes).all(fetched.body)
        fetched.body_hash = sha256_bytes(fetched.body)
        if fetched.feed.get("body_hash") == fetched.body_hash:
            fetched.status = "unchanged"  # the server ignored our conditional headers
        else:
            left = max(timeout - fetched.seconds, 0.0)
            fetched.title, fetched.entries = parser.parse(
                fetched.body, url=fetched.feed["url"], content_type=fetched.content_type,
                seconds=left, timeout=timeout)
    except Exception as e:  # a body feedparser or the inflater refuses: this feed's error
        return Fetched(fetched.feed, "error", error=_one_line(e))
    fetched.body = b""  # parsed: not held while the articles are embedded and stored
    return fetched


class Parser:
    """parse() in a child process, stopped (SIGKILL) when a feed's parse outlives its time.

    feedparser is pure Python and can take minutes on a hostile body (its SAX path is
    quadratic in the attributes of one element); a thread cannot be stopped, a process can.
    One child serves every feed of a run: a new interpreter (the parent has threads, which
    fork does not copy safely; and unlike multiprocessing's spawn, it never runs the parent's
    main script again), started when the first body is to be parsed (a run of 304s needs
    none) and again after a kill; its start is not counted in any feed's time. Bodies and
    articles cross its stdin and stdout as multiprocessing messages.
    """

    STARTUP = 60.0  # seconds for a child to import feedparser, however busy the machine

    def __init__(self):
        self.process = self.send = self.receive = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        package = str(Path(__file__).parent.parent)
        code = (f"import sys; sys.path.insert(0, {package!r}); "
                "from ravana_db.feeds import _parse_forever; _parse_forever()")
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.send = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.receive = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.ready = False

    def parse(self, body, *, url, content_type, seconds, timeout):
        if self.process is None:
            self.start()
        try:
            if not self.ready:
                if not self.receive.poll(self.STARTUP):
                    raise FeedError(f"the parser process did not start in {self.STARTUP:g} s")
                self.ready = self.receive.recv()
            self.send.send((body, url, content_type))
            if not self.receive.poll(seconds):
                raise FeedError(f"took longer than {timeout:g} s (parsing)")
            ok, value = self.receive.recv()
        except (EOFError, OSError):  # it died (out of memory?): the next feed gets another
            self.close()
            raise FeedError("the parser process ended while parsing this feed") from None
        except FeedError:
            self.close()
            raise
        if not ok:
            raise FeedError(value)
        return value

    def close(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.send.close()
            self.receive.close()
            self.process = self.send = self.receive = None


def _parse_forever():
    """The child's loop: a body in on stdin, (True, (title, entries)) or (False, error) out
    on stdout, until the parent goes away (stdin ends)."""
    import signal
    import sys
    from multiprocessing.connection import Connection

    import feedparser  # noqa: F401 - imported before the child says it is ready

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the parent's to handle
    with contextlib.suppress(Exception):  # Linux: killed with the parent, even mid-parse
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    receive = Connection(os.dup(0), writable=False)
    send = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the messages
    sys.stdout = sys.stderr
    send.send(True)
    while True:
        try:
            body, url, content_type = receive.recv()
        except (EOFError, OSError):
            return
        try:
            answer = (True, parse(body, url=url, content_type=content_type))
        except Exception as e:  # noqa: BLE001 - any error is that feed's
            answer = (False, _one_line(e))
        send.send(answer)


def _one_line(error):
    text = _text(" ".join(str(error).split())) or type(error).__name__
    return text[:300]


def sha256_bytes(body):
    import hashlib

    return hashlib.sha256(body).hexdigest()


class FeedError(Exception):
    """One feed could not be fetched or read; retry_after: what the server asked for."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


async def _fetch(feed, http, max_bytes):
    if feed["url"].startswith("file:"):
        return _read_file(feed, max_bytes)
    import httpx

    headers = {}
    if feed.get("etag"):
        headers["If-None-Match"] = feed["etag"]
    if feed.get("last_modified"):
        headers["If-Modified-Since"] = feed["last_modified"]
    try:
        async with http.stream("GET", feed["url"], headers=headers) as response:
            if response.status_code == 304:
                return Fetched(feed, "not_modified", etag=feed.get("etag"),
                               last_modified=feed.get("last_modified"))
            if response.status_code >= 400:
                retry = _retry_after(response.headers.get("retry-after"))
                raise FeedError(f"HTTP {response.status_code} {response.reason_phrase}", retry)
            encodings = response.headers.get("content-encoding", "")
            size = response.headers.get("content-length", "")
            if size.isdigit() and int(size) > max_bytes and not encodings:
                raise FeedError(f"larger than {max_bytes} bytes ({size})")
            inflater = _Inflater(encodings.split(","), max_bytes)
            body = bytearray()
            async for chunk in response.aiter_raw():  # as sent: we inflate it, with a cap
                body += inflater.feed(chunk)
            body += inflater.flush()
            return Fetched(feed, "ok", body=bytes(body), etag=response.headers.get("etag"),
                           last_modified=response.headers.get("last-modified"),
                           content_type=response.headers.get("content-type"))
    except httpx.TooManyRedirects:
        raise FeedError(f"more than {MAX_REDIRECTS} redirects (a loop?)") from None
    except httpx.TimeoutException:
        raise FeedError("no answer in time") from None
    except httpx.HTTPError as e:
        raise FeedError(_one_line(e) or type(e).__name__) from None


def _read_file(feed, max_bytes):
    path = local_path(feed["url"])
    if not path.is_file():
        raise FeedError(f"no file at {path}")
    with path.open("rb") as f:
        body = f.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise FeedError(f"larger than {max_bytes} bytes")
    return Fetched(feed, "ok", body=body)


class _Inflater:
    """Undo HTTP content encodings (gzip, deflate, in layers) chunk by chunk, never making more
    than `limit` bytes: a small body that inflates past it is refused before it takes the
    memory (zlib's max_length bounds every step)."""

    def __init__(self, encodings, limit):
        names = [e.strip().lower() for e in encodings]
        names = [name for name in names if name not in ("", "identity")]
        for name in names:
            if name not in ("gzip", "x-gzip", "deflate"):
                raise FeedError(f"unsupported content encoding {name!r}")
        # Encodings are listed in the order they were applied: undo the last one first.
        self.layers = [zlib.decompressobj(wbits=zlib.MAX_WBITS | 32) for _ in names]
        self.limit, self.size = limit, 0

    def feed(self, data, *, final=False):
        for layer in self.layers:
            out = layer.decompress(data, self.limit + 1)
            if layer.unconsumed_tail or len(out) > self.limit:
                raise FeedError(f"larger than {self.limit} bytes once inflated")
            data = out + (layer.flush() if final else b"")
        self.size += len(data)
        if self.size > self.limit:
            raise FeedError(f"larger than {self.limit} bytes" +
                            (" once inflated" if self.layers else ""))
        return data

    def flush(self):
        return self.feed(b"", final=True)

    def all(self, data):
        return self.feed(data) + self.flush()


def _retry_after(value):
    """Retry-After (seconds or an HTTP date) as a timedelta, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=min(int(value), RETRY_AFTER_MAX.total_seconds()))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return min(max(when - datetime.now(timezone.utc), timedelta(0)), RETRY_AFTER_MAX)


def parse(body, *, url, content_type=None):
    """(feed title, [article fields]) of a feed body; a body with no entries is an error."""
    import feedparser

    # No content-location: feedparser would resolve a short guid ("1") into a made-up link
    # (and it parses a third slower); relative links are resolved below instead.
    headers = {"content-type": content_type} if content_type else {}
    body = CHARREF.sub(_charref, body)
    # Every field becomes plain text (plain() drops all markup, scripts and styles with their
    # content), so feedparser's HTML sanitizing and link rewriting would be wasted work.
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=False,
                              resolve_relative_uris=False)
    if not parsed.entries:
        why = parsed.get("bozo_exception")
        raise FeedError("no entries: not a feed" + (f" ({_one_line(why)})" if why else ""))
    title = plain(parsed.feed.get("title")) or None
    return title, [_article(e, url) for e in parsed.entries]


CHARREF = re.compile(rb"&#([xX][0-9a-fA-F]{1,8}|[0-9]{1,10});")


def _charref(match):
    """A character reference no text can hold (a surrogate, past U+10FFFF) becomes U+FFFD:
    feedparser's fallback parser would fail the whole feed on it."""
    digits = match[1]
    code = int(digits[1:], 16) if digits[:1] in b"xX" else int(digits)
    return b"&#xFFFD;" if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else match[0]


def _article(entry, url):
    title = plain(entry.get("title"))[:MAX_TITLE]
    summary = plain(entry.get("summary")) or None
    content = " ".join(plain(c.get("value")) for c in entry.get("content") or []) or None
    link = _text(entry.get("link") or "").strip()
    if link and not urlparse(link).scheme:
        # A relative <link> is resolved against the feed; a guid that feedparser took for
        # a link ("1", without isPermaLink="false") is no link at all.
        link = "" if entry.get("guidislink") else urljoin(url, link)
    link = web_link(link)  # javascript:, data:, file:... : the article without its link
    published = _utc(entry.get("published_parsed") or entry.get("updated_parsed"))
    if not title:  # what people read: the summary's start stands in (never the URL)
        title = (summary or content or "(untitled)")[:MAX_TITLE]
    guid = _text(entry.get("id") or "").strip() or link or \
        "sha256:" + sha256(f"{title}\n{published or ''}")
    return {"guid": guid, "title": title, "link": link, "published": published,
            "summary": summary, "content": content if content != summary else None}


def _text(value):
    """value with lone surrogates (`&#xD800;` in a feed) replaced, since SQLite stores UTF-8,
    and control characters (NUL, C0 but tab and newline, C1) dropped: a feed's text must not
    hide words from sqlite3 (NUL) or drive the terminal of whoever reads it (escapes)."""
    return CONTROL.sub("", SURROGATE.sub("\ufffd", value))


def _utc(struct):
    """A feedparser time (a UTC struct_time) as the stored form, or None when it has none or
    cannot be one (year 0, out of range)."""
    if not struct:
        return None
    try:
        return format_time(datetime.fromtimestamp(calendar.timegm(struct), timezone.utc))
    except (OverflowError, ValueError, OSError):
        return None


class _Text(html.parser.HTMLParser):
    """The text of an HTML fragment: tags dropped, script and style with their content,
    entities decoded, a space where a block ends."""

    SKIP = {"script", "style", "template", "noscript", "iframe", "object", "svg", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
             "blockquote", "pre", "section", "article", "header", "footer", "ul", "ol"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


SURROGATE = re.compile("[\ud800-\udfff]")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TAG = re.compile(r"</?[a-zA-Z][^>]*>|&(#?\w+);")
MAX_TEXT = 20_000
MAX_TITLE = 500


def plain(value):
    """Plain text of a feed field that may hold HTML (or HTML escaped twice, as some feeds
    send it): one line, whitespace collapsed."""
    text = value or ""
    if "<" not in text and "&" not in text:  # no markup, no entity: most titles
        return _text(" ".join(text.split())[:MAX_TEXT])
    for _ in range(2):  # once more when the first pass reveals escaped markup
        parser = _Text()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
        if not TAG.search(text):
            break
    return _text(" ".join(text.split())[:MAX_TEXT])


def store(db, fetched, *, embedder=None, progress=None):
    """Write one fetched feed: its new articles and its fetch state, in one transaction.

    Returns the feed's report row: status, new, updated, skipped, error.
    """
    from .models import Article
    from .store import write

    feed, stamp = fetched.feed, now()
    report = {"feed": feed["url"], "title": fetched.title or feed.get("title"),
              "status": fetched.status, "new": 0, "updated": 0, "skipped": 0,
              "error": fetched.error}
    state = {"last_fetched": stamp, "last_status": fetched.status}
    if fetched.status == "error":
        # Backoff doubles from 15 minutes to a day, and never stops: a feed is retried daily
        # for as long as it is subscribed. A server's Retry-After is honoured.
        failures = feed["failures"] if isinstance(feed.get("failures"), int) else 0
        failures += 1  # (a count another client wrote as text counts from none)
        wait = min(BACKOFF_FIRST * 2 ** min(failures - 1, 16), BACKOFF_MAX)
        wait = max(wait, fetched.retry_after or timedelta(0))
        since = feed.get("failing_since") or stamp
        state.update(failures=failures, last_error=fetched.error, failing_since=since,
                     next_attempt=format_time(datetime.now(timezone.utc) + wait))
        if failures >= PAUSE_AFTER_FAILURES and since <= format_time(
                datetime.now(timezone.utc) - PAUSE_AFTER):
            state.update(paused_at=stamp, paused_reason=f"{failures} failures since {since}")
            report["error"] += (f" (paused after {failures} failures since {since[:10]}: "
                                "ravana-db feeds resume URL)")
        write(db, [], statements=[_update(feed, state)])
        return report
    state.update(failures=0, failing_since=None, last_error=None, next_attempt=None,
                 etag=fetched.etag,
                 last_modified=fetched.last_modified)
    records = []
    if fetched.status == "ok":
        state.update(title=fetched.title or feed.get("title"), body_hash=fetched.body_hash)
        source = fetched.title or urlparse(feed["url"]).hostname or Path(feed["url"]).name
        elsewhere, seen = _elsewhere(db, feed["id"], [e["link"] for e in fetched.entries]), set()
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


def _elsewhere(db, feed_id, links):
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
        if progress:
            progress(1)
    return [reports[feed["id"]] for feed in feeds]


def opml(db):
    """The subscribed feeds as an OPML 2.0 document (text)."""
    from xml.etree import ElementTree as ET

    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "ravana-db feeds"
    ET.SubElement(head, "dateCreated").text = email.utils.formatdate(usegmt=True)
    body = ET.SubElement(root, "body")
    for url, title in db.execute(f"SELECT url, title FROM feed WHERE {SUBSCRIBED} "
                                 "ORDER BY id"):
        ET.SubElement(body, "outline", type="rss", text=title or url, title=title or url,
                      xmlUrl=url)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"
