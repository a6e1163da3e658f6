"""`ravana-db mcp`: serve the database to MCP clients (agents, desktop clients) over stdio."""

from typing import Annotated

import typer

from ..db import resolve_path
from .common import Command, app


@app.command(cls=Command)
def mcp(
    ctx: typer.Context,
    read_only: Annotated[bool, typer.Option(
        "--read-only", help="offer only the tools that read (no remember; consolidate only "
        "as a dry run), and never write the file")] = False,
):
    """Serve this memory to an MCP client over stdio: remember, recall, explain, timeline,
    status, consolidate.

    One process keeps the file open and the model loaded; the client starts it and talks
    JSON-RPC on its stdin and stdout (logs go to stderr). Needs the mcp SDK:
    pip install 'ravana-db[mcp]'.

    Example: ravana-db --db agent.db mcp --read-only
    """
    from ..mcp_server import serve

    path = resolve_path(ctx.obj["db"])
    serve(path, read_only=read_only, model=ctx.obj["model"], key=ctx.obj["key"])
