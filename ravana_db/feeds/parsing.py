"""Parsing feed bodies: feedparser to plain-text articles, run in a child process that is
stopped when a feed's parse outlives its time."""

import calendar
import contextlib
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urljoin, urlparse

from ..hashing import sha256
from ..links import web_link
from ..times import format_time
from .clean import MAX_TITLE, one_line, plain, safe_text
from .fetching import FeedError


class Parser:
    """parse() in a child process, stopped (SIGKILL) when a feed's parse outlives its time.

    feedparser is pure Python and can take minutes on a hostile body (its SAX path is
    quadratic in the attributes of one element); a thread cannot be stopped, a process can.
    One child serves the feeds of a run: a new interpreter (the parent has threads, which
    fork does not copy safely; and unlike multiprocessing's spawn, it never runs the parent's
    main script again), started when a body is to be parsed (a run of 304s needs none), again
    after a kill and after a large body (RECYCLE_BYTES); its start is not counted in any
    feed's time. The body crosses its stdin as raw bytes, the articles come back on its
    stdout in pieces (PIECE): neither side holds a pickled copy of the whole.
    """

    STARTUP = 60.0  # seconds for a child to import feedparser, however busy the machine
    # A child keeps the heap its largest parse grew to (CPython's allocator seldom gives
    # memory back to the system): after a body this large the child is replaced, so the
    # peak of one big feed is not held beside the parent for the rest of the run.
    RECYCLE_BYTES = 1 << 20
    PIECE = 500  # articles per message from the child

    def __init__(self):
        self.process = self.send = self.receive = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        """Start a child; it says it is ready once feedparser is imported."""
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        package = str(Path(__file__).parent.parent.parent)
        code = (f"import sys; sys.path.insert(0, {package!r}); "
                "from ravana_db.feeds.parsing import _parse_forever; _parse_forever()")
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.send = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.receive = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.ready = False

    def parse(self, body, *, url, content_type, seconds, timeout):
        """(title, articles) of a body, parsed within `seconds` (`timeout`: for the message);
        a FeedError for a body that is no feed, or a parse that took too long."""
        if self.process is None:
            self.start()
        try:
            if not self.ready:
                if not self.receive.poll(self.STARTUP):
                    raise FeedError(f"the parser process did not start in {self.STARTUP:g} s")
                self.ready = self.receive.recv()
            self.send.send((url, content_type))
            self.send.send_bytes(body)  # as it is: Connection.send would pickle a copy
            deadline = time.monotonic() + seconds
            ok, value = self._answer(deadline, timeout)
        except (EOFError, OSError):  # it died (out of memory?): the next feed gets another
            self.close()
            raise FeedError("the parser process ended while parsing this feed") from None
        except FeedError:
            self.close()
            raise
        if len(body) > self.RECYCLE_BYTES:
            self.close()
        if not ok:
            raise FeedError(value)
        return value

    def _answer(self, deadline, timeout):
        """The child's answer to one body: (True, (title, articles)) from its pieces, or
        (False, error)."""
        entries = []
        while True:
            if not self.receive.poll(max(deadline - time.monotonic(), 0.0)):
                raise FeedError(f"took longer than {timeout:g} s (parsing)")
            kind, value = self.receive.recv()
            if kind == "entries":
                entries += value
            elif kind == "done":
                return True, (value, entries)
            else:
                return False, value

    def close(self):
        """Stop the child (if any): the next parse starts another."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.send.close()
            self.receive.close()
            self.process = self.send = self.receive = None


def _parse_forever():
    """The child's loop: (url, content type) then a body in on stdin; out on stdout the
    articles in pieces ("entries", [...]) then ("done", title), or ("error", message); until
    the parent goes away (stdin ends)."""
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
            url, content_type = receive.recv()
            body = receive.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            title, entries = parse(body, url=url, content_type=content_type)
        except Exception as e:  # noqa: BLE001 - any error is that feed's
            send.send(("error", one_line(e)))
            continue
        del body
        for start in range(0, len(entries), Parser.PIECE):
            send.send(("entries", entries[start:start + Parser.PIECE]))
        send.send(("done", title))
        del entries


def parse(body, *, url, content_type=None):
    """(feed title, [article fields]) of a feed body; a body with no entries is an error."""
    import feedparser

    # No content-location: feedparser would resolve a short guid ("1") into a made-up link
    # (and it parses slower); relative links are resolved below instead.
    headers = {"content-type": content_type} if content_type else {}
    body = CHARREF.sub(_charref, body)
    # Every field becomes plain text (plain() drops all markup, scripts and styles with their
    # content), so feedparser's HTML sanitizing and link rewriting would be wasted work.
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=False,
                              resolve_relative_uris=False)
    if not parsed.entries:
        why = parsed.get("bozo_exception")
        raise FeedError("no entries: not a feed" + (f" ({one_line(why)})" if why else ""))
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
    link = safe_text(entry.get("link") or "").strip()
    if link and not urlparse(link).scheme:
        # A relative <link> is resolved against the feed; a guid that feedparser took for
        # a link ("1", without isPermaLink="false") is no link at all.
        link = "" if entry.get("guidislink") else urljoin(url, link)
    link = web_link(link)  # javascript:, data:, file:... : the article without its link
    published = _utc(entry.get("published_parsed") or entry.get("updated_parsed"))
    if not title:  # what people read: the summary's start stands in (never the URL)
        title = (summary or content or "(untitled)")[:MAX_TITLE]
    guid = safe_text(entry.get("id") or "").strip() or link or \
        "sha256:" + sha256(f"{title}\n{published or ''}")
    return {"guid": guid, "title": title, "link": link, "published": published,
            "summary": summary, "content": content if content != summary else None}


def _utc(struct):
    """A feedparser time (a UTC struct_time) as the stored form, or None when it has none or
    cannot be one (year 0, out of range)."""
    if not struct:
        return None
    try:
        return format_time(datetime.fromtimestamp(calendar.timegm(struct), timezone.utc))
    except (OverflowError, ValueError, OSError):
        return None
