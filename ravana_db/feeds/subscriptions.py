"""Subscriptions: the feed table's rows (subscribe, list, pause, resume, remove), OPML lists
in and out, and the failure count that backs a failing feed off and pauses it."""

import email.utils
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import InputError
from ..times import format_time, now

BACKOFF_FIRST, BACKOFF_MAX = timedelta(minutes=15), timedelta(hours=24)

# A feed that has failed this many times in a row, over at least this long, is paused:
# `ingest feeds` stops fetching it until `ravana-db feeds resume URL`.
PAUSE_AFTER_FAILURES, PAUSE_AFTER = 10, timedelta(days=7)


def failed(feed, *, error, retry_after, stamp):
    """The fetch state of a feed that failed once more, and a note for its report ("" unless
    the feed is paused now).

    Backoff doubles from 15 minutes to a day, and never stops: a feed is retried daily for as
    long as it is subscribed. A server's Retry-After is honoured.
    """
    failures = feed["failures"] if isinstance(feed.get("failures"), int) else 0
    failures += 1  # (a count another client wrote as text counts from none)
    wait = min(BACKOFF_FIRST * 2 ** min(failures - 1, 16), BACKOFF_MAX)
    wait = max(wait, retry_after or timedelta(0))
    since = feed.get("failing_since") or stamp
    state = {"failures": failures, "last_error": error, "failing_since": since,
             "next_attempt": format_time(datetime.now(timezone.utc) + wait)}
    note = ""
    if failures >= PAUSE_AFTER_FAILURES and since <= format_time(
            datetime.now(timezone.utc) - PAUSE_AFTER):
        state.update(paused_at=stamp, paused_reason=f"{failures} failures since {since}")
        note = (f" (paused after {failures} failures since {since[:10]}: "
                "ravana-db feeds resume URL)")
    return state, note


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
                _local_outline(url, base, allowed=allow_local_files)
            good.append(url)
        except InputError as e:
            refused.append(str(e))
    if not good:
        raise InputError(f"{path}: no feed in it that can be fetched"
                         + (f" ({refused[0]})" if refused else ""))
    return good, refused


def _local_outline(url, base, *, allowed):
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
    from ..models import Feed
    from ..store import write

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
    from ..store import write

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
