"""`ravana-db feeds list|remove|pause|resume`: the subscriptions `ingest feeds` made."""

from typing import Annotated

import typer

from ..output import emit, pick
from .common import Command, FormatOption, JsonFlag, app, notice, open_database

feeds_app = typer.Typer(no_args_is_help=True, help="The subscribed feeds: list them, remove, "
                        "pause or resume one. (Subscribe with `ingest feeds URL|PATH`.)")
app.add_typer(feeds_app, name="feeds")
COLUMNS = ["url", "title", "status", "failures", "last_error", "last_fetched", "articles"]
Urls = Annotated[list[str], typer.Argument(metavar="URL|PATH...",
                                           help="feeds, as `feeds list` shows them")]


@feeds_app.command("list", cls=Command)
def list_feeds(ctx: typer.Context, fmt: FormatOption = None, json_flag: JsonFlag = False):
    """List the subscribed feeds, their state and how many articles each brought.

    status: active, or paused (not fetched by `ingest feeds`); failures: in a row.

    Example: ravana-db feeds list --format json
    """
    from ..feeds import listing

    db, _ = open_database(ctx, create=False, write=False)
    emit(listing(db), pick(fmt, json_flag), columns=COLUMNS)


def _change(ctx, urls, action, done):
    from ..feeds import change

    db, _ = open_database(ctx, create=False)
    for row in change(db, urls, action):
        notice(ctx, f"{done}: {row['url']}" + (
            f" (its {row['articles']} article(s) stay)" if action == "remove" else ""))


@feeds_app.command("remove", cls=Command)
def remove(ctx: typer.Context, urls: Urls):
    """Unsubscribe from feeds; their articles stay.

    A removed feed is no longer fetched, listed or exported; its articles stay searchable,
    with their source. `ingest feeds URL` subscribes to it again.

    Example: ravana-db feeds remove https://example.org/rss.xml
    """
    _change(ctx, urls, "remove", "removed")


@feeds_app.command("pause", cls=Command)
def pause(ctx: typer.Context, urls: Urls):
    """Stop fetching feeds, but keep them subscribed.

    `ingest feeds` with no arguments skips a paused feed. It pauses a feed itself after 10
    failures in a row spanning at least 7 days.

    Example: ravana-db feeds pause https://example.org/rss.xml
    """
    _change(ctx, urls, "pause", "paused")


@feeds_app.command("resume", cls=Command)
def resume(ctx: typer.Context, urls: Urls):
    """Fetch paused feeds again, from the next `ingest feeds` on.

    Their count of failures starts again from zero.

    Example: ravana-db feeds resume https://example.org/rss.xml
    """
    _change(ctx, urls, "resume", "resumed")
