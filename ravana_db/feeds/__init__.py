"""Feed ingest: subscribe, fetch politely and safely, parse with feedparser, store articles.

Fetching runs in a few threads (network and parsing); storing runs in the calling thread, one
store.write per feed: the feed's articles and its new fetch state commit together, and their
text is embedded before the write lock is taken. A feed that fails is recorded with a backoff
and retried later, never dropped; the other feeds are stored all the same.

subscriptions: the feed table, OPML, pause/resume/remove, failure counting; fetching: HTTP and
files within size and time limits; parsing: feedparser in a child process bounded in time;
clean: feed text to plain lines; run: `ingest feeds`, which drives them and stores.
"""

from .parsing import Parser, parse
from .run import fetch_all, ingest, store
from .subscriptions import (
    SUBSCRIBED,
    change,
    due,
    feed_url,
    listing,
    opml,
    opml_urls,
    subscribe,
)

__all__ = ["SUBSCRIBED", "Parser", "change", "due", "feed_url", "fetch_all", "ingest",
           "listing", "opml", "opml_urls", "parse", "store", "subscribe"]
