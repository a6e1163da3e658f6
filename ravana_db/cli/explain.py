"""`ravana-db explain`: where a row came from and what was made of it, with the runs."""

from typing import Annotated

import typer

from ..output import Format, emit, pick, tree
from .common import Command, FormatOption, JsonFlag, app, open_database

ARROWS = {"source": "<-", "derived": "->", "related": "~"}


@app.command("explain", cls=Command)
def explain_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(
        metavar="[KIND:]ID|KEY", help="memory, article, event, summary, vltm, pattern, "
        "knowledge, feed, action, mood, situation, decision or experiment, and its id (or "
        "UUID); without KIND a memory's id or key, or a feed's URL")],
    depth: Annotated[int, typer.Option(
        "--depth", "-d", min=0, help="links to follow from the row")] = 4,
    fmt: FormatOption = None,
    json_flag: JsonFlag = False,
):
    """Explain a row's provenance both ways: feed, article, the memories merged into it and
    linked to it, the very-long-term memory, patterns and knowledge made of it, each link
    with the run (and time) that made it.

    A tree on a terminal; --format json gives the same tree as nested objects, jsonl and csv
    one row per node (depth first).

    Example: ravana-db explain memory:42 --depth 3
    """
    from ..explain import explain, flatten

    fmt = pick(fmt, json_flag)
    db, _ = open_database(ctx, create=False, write=False)
    root = explain(db, ref, depth=depth)
    if fmt is Format.table:
        tree(branch(root, {}))
    elif fmt is Format.json:
        emit([root], fmt, one=True)
    else:
        emit(flatten(root), fmt)


def branch(node, link):
    """A node and its links as (label, children) for output.tree."""
    return label(node, link), [branch(child["node"], child) for child in node["links"]] + [
        (f"... and {more['count']} more {more['relation']} "
         f"({ARROWS[more['direction']]})", []) for more in node.get("more", [])]


def label(node, link):
    """One line: the link (arrow, relation), the node, its time, the run."""
    head = f"{ARROWS[link['direction']]} {link['relation']} " if link else ""
    key = f" [{node['key']}]" if node.get("key") and node["kind"] not in \
        ("vltm", "pattern", "knowledge") else ""
    when = link.get("time") or node.get("time")
    run = f", run {link['run'][:8]}" if link.get("run") else ""
    cut = " (shown above)" if node.get("cut") == "seen" else ""
    return (f"{head}{node['kind']} {node['id']}{key}: {node['text']}"
            f"{f'  ({when}{run})' if when else ''}{cut}")
