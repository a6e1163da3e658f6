"""Fetching feeds: HTTP with conditional headers, bounded in size and time, bodies inflated
with a cap; local files read with the same cap."""

import contextlib
import email.utils
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .. import __version__
from .clean import one_line
from .subscriptions import local_path

USER_AGENT = f"ravana-db/{__version__} (feed reader; one fetch per cron run)"
ACCEPT = ("application/rss+xml, application/atom+xml, application/rdf+xml, "
          "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1")
MAX_BYTES = 10 << 20  # a feed bigger than this (after decompression) is refused
TIMEOUT = 20.0  # seconds for the whole fetch of one feed
CONCURRENCY = 4
MAX_REDIRECTS = 5
RETRY_AFTER_MAX = timedelta(days=7)


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


class FeedError(Exception):
    """One feed could not be fetched or read; retry_after: what the server asked for."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


async def fetch_each(feeds, *, results, started, concurrency, timeout, max_bytes):
    """Fetch every feed, at most `concurrency` at once, each within `timeout`, putting a
    Fetched on `results` as each ends; first puts (the loop, the semaphore) on `started`, so
    the caller can free a slot (release it) once done with a feed."""
    import asyncio

    limit = asyncio.Semaphore(concurrency)
    started.put((asyncio.get_running_loop(), limit))
    async with contextlib.AsyncExitStack() as stack:
        # Building a client is not free (its TLS context): only when a feed needs one.
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
                fetched = await asyncio.wait_for(_fetch(feed, http, max_bytes=max_bytes), timeout)
            except asyncio.TimeoutError:
                fetched = Fetched(feed, "error", error=f"took longer than {timeout:g} s")
            except Exception as e:  # one feed's failure must not stop the others
                fetched = Fetched(feed, "error", error=one_line(e),
                                  retry_after=getattr(e, "retry_after", None))
            fetched.seconds = time.monotonic() - start
            results.put(fetched)

        await asyncio.gather(*(one(feed) for feed in feeds))


async def _fetch(feed, http, *, max_bytes):
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
            inflater = Inflater(encodings.split(","), max_bytes)
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
        raise FeedError(one_line(e) or type(e).__name__) from None


def _read_file(feed, max_bytes):
    path = local_path(feed["url"])
    if not path.is_file():
        raise FeedError(f"no file at {path}")
    with path.open("rb") as f:
        body = f.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise FeedError(f"larger than {max_bytes} bytes")
    return Fetched(feed, "ok", body=body)


class Inflater:
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
