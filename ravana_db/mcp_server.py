"""`ravana-db mcp`: the agent's memory as an MCP server over stdio.

One process keeps the file open and the model loaded. `Memory` holds both and offers one
method per tool, each the same library call the CLI makes (`store.write` after the models'
validation, as `log`; `search.search` with a `Query`, as `query`; `status.status`;
`consolidate.consolidate`), so nothing behaves differently. `serve()` builds the server from
the official `mcp` SDK (2.x, imported only here, when the server starts): every tool is a small
function over a `Memory` method, run on the one thread that uses the connection; our errors
reach the client as the SDK's `ToolError` with the CLI's one-line message.

Adding a tool: a `Memory` method, then a function in `tools()` that calls it through `call`.
"""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from .errors import InputError, RavanaError
from .output import dumps
from .sql import driver, read_only_connection

INSTALL = ("the MCP server needs the mcp SDK: pip install 'ravana-db[mcp]' "
           "(or pip install 'mcp>=2.3,<3')")
READ_ONLY = "this server is read-only (ravana-db mcp --read-only): {} cannot write"
# The field a kind's `text` fills; action and mood have none (give their fields).
TEXT_FIELD = {"memory": "text", "summary": "summary_text", "vltm": "compressed_content",
              "pattern": "pattern_description", "knowledge": "knowledge_summary",
              "experiment": "hypothesis", "decision": "raw_response", "situation": "prompt"}
RECALL_OPTIONS = ("mode", "kind", "type", "source", "since", "until", "top_n",
                  "min_similarity", "like", "recency", "importance")
MAX_DEFERRED = 1_000  # recalls whose access counts wait while writers hold the lock
MAX_TIMELINE = 10_000  # timeline rows in one answer


class Memory:
    """One open database file and one embedder, shared by every tool call.

    Every call runs on one worker thread (`run`), so the connection is used by one thread at
    a time and the server's event loop stays free while a call works.
    """

    def __init__(self, path, *, read_only=False, model=None, key=None):
        from .db import open_db
        from .embed import Embedder
        from .index import recorded_model

        self.path, self.read_only = path, read_only
        # A missing file is refused, as by every command but init, log and ingest: a client
        # configured with a mistyped path must not talk to a new, empty memory.
        self.db = open_db(path, create=False, write=not read_only, key=key)
        if read_only:  # whatever the file's permissions: this connection never writes
            read_only_connection(self.db.conn)
        # One thread for the model, as `query`: a hybrid recall finds its words meanwhile.
        self.embedder = Embedder(model, recorded=recorded_model(self.db)[0], threads=1)
        self.deferred = []  # results whose access count waits for the write lock
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="ravana-mcp")

    async def run(self, method, /, **arguments):
        """method(**arguments) on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.thread, lambda: method(**arguments))

    def warm(self):
        """Load the model now, so the first recall does not wait for it."""
        if self.embedder.name:
            self.embedder.embed(["warm up"])

    def remember(self, *, text=None, kind="memory", fields=None):
        """Store one record of `kind` (validated as `log` validates it) through store.write.

        Returns:
            {"kind", "id", "status"} (and "key" for a memory).
        """
        from .models import KINDS, validate
        from .store import write

        self._writable("remember")
        if not isinstance(kind, str) or kind not in KINDS:
            raise InputError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        if fields is not None and not isinstance(fields, dict):
            raise InputError(f"fields: expected a JSON object, got {type(fields).__name__}")
        record = dict(fields or {})
        if text is not None:
            if kind not in TEXT_FIELD:
                raise InputError(f"text: a {kind} has no text field; give its fields "
                                 f"(fields: {', '.join(KINDS[kind].model_fields)})")
            record[TEXT_FIELD[kind]] = text
        [result] = write(self.db, [validate(KINDS[kind], record)], embedder=self.embedder)
        return {"kind": kind, **result}

    def recall(self, *, query, **options):
        """Search as `query` does; each result carries its score parts.

        Returns:
            {"query", "results"}: results as `query --format json` gives them.
        """
        from .search import search
        from .search.query import Query

        unknown = set(options) - set(RECALL_OPTIONS)
        if unknown:
            raise InputError(f"unknown option {sorted(unknown)[0]!r}")
        given = {k: v for k, v in options.items() if v is not None}
        results = search(self.db, Query(query, **given), embedder=self.embedder, touch=False)
        if not self.read_only:
            self.touch(results)
        return {"query": query, "results": results}

    def touch(self, results):
        """Count returned memories as accessed, as `query` does, without waiting: while
        another process holds the write lock the touch is deferred to a later recall (each
        recall's touch stays one, so a memory recalled twice counts twice)."""
        from .db import BUSY_TIMEOUT_MS
        from .search.ranking import mark_accessed

        self.deferred = [*self.deferred, results][-MAX_DEFERRED:]
        conn = self.db.conn
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while self.deferred:
                mark_accessed(self.db, self.deferred[0])
                self.deferred.pop(0)
        except driver().OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def status(self):
        """What is in the file, as `status` shows it."""
        from .status import status

        return status(self.db, self.path)

    def consolidate(self, *, type="daily", dry_run=True, limit=None, max_seconds=None):
        """One consolidation run (a dry run unless dry_run is false), as `consolidate`."""
        from .consolidate import Busy, consolidate
        from .search.query import number

        if not isinstance(dry_run, bool):
            raise InputError(f"dry_run: {dry_run!r} is not true or false")
        if not dry_run:
            self._writable("consolidate (only a dry run)")
        limit = None if limit is None else number("limit", limit, int)
        max_seconds = None if max_seconds is None else number("max-seconds", max_seconds, float)
        try:
            return consolidate(self.db, path=self.path, embedder=self.embedder, type=type,
                               dry_run=dry_run, limit=limit, max_seconds=max_seconds)
        except Busy as e:
            raise RavanaError(f"consolidate: {e}") from None

    def explain(self, *, ref, depth=4):
        """A row's provenance both ways, as `explain --format json` gives it."""
        from .explain import explain

        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 100:
            raise InputError(f"depth: {str(depth)[:40]} is not a count from 0 to 100")
        if not isinstance(ref, str):
            raise InputError(f"ref: expected KIND:ID, an id or a key, got {type(ref).__name__}")
        return explain(self.db, ref, depth=depth)

    def timeline(self, *, since=None, until=None, kind=None, limit=100):
        """What happened, newest first, as `timeline --format json` gives it (at most
        MAX_TIMELINE rows: a client asks for more with since/until)."""
        from .timeline import Span, timeline

        if isinstance(limit, int) and not isinstance(limit, bool) and limit > MAX_TIMELINE:
            raise InputError(f"limit: at most {MAX_TIMELINE} rows through MCP")
        span = Span(kinds=kind, since=since, until=until, limit=limit or MAX_TIMELINE)
        return {"rows": list(timeline(self.db, span))}

    def recent_events(self, limit=20):
        """The latest events (clusters of articles), newest first, with their article count."""
        return [dict(zip(("id", "timestamp", "description", "keywords", "articles"), row))
                for row in self.db.execute(
                    "SELECT e.id, e.timestamp, e.description, e.keywords, (SELECT count(*) "
                    "FROM event_article a WHERE a.event_id = e.id) FROM event e "
                    "ORDER BY e.timestamp DESC LIMIT ?", [limit])]

    def knowledge(self, limit=50):
        """Strategic knowledge, the most recently updated first."""
        columns = ("knowledge_id", "knowledge_domain", "knowledge_summary", "confidence_level",
                   "validation_score", "application_count", "last_updated")
        return [dict(zip(columns, row)) for row in self.db.execute(
            f"SELECT {', '.join(columns)} FROM strategic_knowledge "
            "ORDER BY last_updated DESC LIMIT ?", [limit])]

    def schema(self):
        """Every table: what it holds, its columns, natural keys, and how it is searched."""
        from .tables import TABLE_FACTS

        return [{"table": t.name, "holds": t.holds,
                 "columns": [{"name": c[1], "type": c[2], "not_null": bool(c[3])}
                             for c in self.db.execute(f"PRAGMA table_info([{t.name}])")],
                 "natural_keys": [list(k) for k in t.natural],
                 "search_kind": t.search.kind if t.search else None} for t in TABLE_FACTS]

    def _writable(self, what):
        if self.read_only:
            raise InputError(READ_ONLY.format(what))

    def close(self):
        self.thread.shutdown(wait=True)
        self.db.close()


def arg(json_type, description, **schema):
    """A tool argument: its JSON schema for clients; its value checked by our own code (as the
    CLI checks it), so a bad one gets the CLI's one-line message."""
    from pydantic import WithJsonSchema

    return Annotated[Any, WithJsonSchema({"type": json_type, "description": description,
                                          **schema})]


def tools(memory, call):
    """The tools: name -> function. Each takes its arguments and returns `call(method, ...)`.

    Args:
        memory: the Memory the tools work on.
        call: awaits a Memory method on its thread, our errors as tool errors.
    """
    async def remember(
        text: arg("string", "the text to remember (a memory's text; a summary's "
                  "summary_text; the main text field of other kinds)") = None,
        kind: arg("string", "memory (default), summary, action, mood, situation, decision, "
                  "experiment, vltm, pattern or knowledge") = "memory",
        fields: arg("object", "the kind's other fields, as `log KIND --stdin` takes them "
                    "(memory: key, memory_type, importance, source, ...)") = None,
    ) -> dict:
        """Store a memory (or a record of another kind), validated as `ravana-db log` does.
        Returns its id and status (inserted, updated or existing)."""
        return await call(memory.remember, text=text, kind=kind, fields=fields)

    async def recall(
        query: arg("string", "what to look for, in any words"),
        top_n: arg("integer", "how many results, 1-10000 (default 5)") = None,
        mode: arg("string", "hybrid (default), vector or fts") = None,
        kind: arg("string", "memory, article, event, summary, vltm, pattern, knowledge or "
                  "all; several with commas") = None,
        type: arg("string", "memory_type, category, pattern_type or knowledge_domain") = None,
        source: arg("string", "only items from this source") = None,
        since: arg("string", "ISO date/time or an age like 7d, 12h") = None,
        until: arg("string", "ISO date/time or an age like 7d") = None,
        min_similarity: arg("number", "drop results below this cosine similarity") = None,
        like: arg("string", "more like this stored item: a memory id or key, or KIND:ID")
        = None,
        recency: arg("string", "rank newer items higher: a half-life like 30d") = None,
        importance: arg("number", "rank important items higher: this weight x importance")
        = None,
    ) -> dict:
        """Find what the agent knows, by meaning and by words (as `ravana-db query`). Each
        result has kind, id, key, text, timestamp, score and its parts: bm25, bm25_rank,
        similarity, vector_rank (and relevance, recency, importance when asked for)."""
        return await call(memory.recall, query=query, top_n=top_n, mode=mode, kind=kind,
                          type=type, source=source, since=since, until=until,
                          min_similarity=min_similarity, like=like, recency=recency,
                          importance=importance)

    async def status() -> dict:
        """What is in the database file: size, versions, row counts, index health, last
        consolidation (as `ravana-db status`)."""
        return await call(memory.status)

    async def consolidate(
        type: arg("string", "daily (default), weekly, monthly, quarterly or event_triggered")
        = "daily",
        dry_run: arg("boolean", "plan only, change nothing (default true)") = True,
        limit: arg("integer", "take at most this many due memories") = None,
        max_seconds: arg("number", "start no new work after this many seconds") = None,
    ) -> dict:
        """Consolidate memory (as `ravana-db consolidate`): merge duplicates, promote,
        find patterns and knowledge, apply retention. A dry run unless dry_run is false."""
        return await call(memory.consolidate, type=type, dry_run=dry_run, limit=limit,
                          max_seconds=max_seconds)

    async def explain(
        ref: arg("string", "the row: KIND:ID (memory:42, article:7, vltm:UUID, knowledge:UUID, "
                 "feed:1, action:3, ...), a memory's id or key, or a feed's URL"),
        depth: arg("integer", "links to follow from the row, 0-100 (default 4)") = 4,
    ) -> dict:
        """Why the agent believes this: a row's provenance both ways (feed -> article -> event;
        memory -> merged and linked memories -> very-long-term memory -> patterns ->
        knowledge, and back down to the logs), each link with its run and time, as
        `ravana-db explain --format json`."""
        return await call(memory.explain, ref=ref, depth=depth)

    async def timeline(
        since: arg("string", "only rows from this time on: ISO date/time or an age like 7d")
        = None,
        until: arg("string", "only rows up to this time: ISO date/time or an age like 7d")
        = None,
        kind: arg("string", "only these kinds, with commas: article, event, action, mood, "
                  "situation, decision, experiment, memory, summary, vltm, pattern, "
                  "knowledge, consolidation, compression, feed_failure") = None,
        limit: arg("integer", f"at most this many rows, newest first (default 100, at most "
                   f"{MAX_TIMELINE})") = 100,
    ) -> dict:
        """What happened: one time-ordered stream across every table, newest first; each row
        time (ISO-8601 UTC), kind, id and a one-line text (as `ravana-db timeline`)."""
        return await call(memory.timeline, since=since, until=until, kind=kind, limit=limit)

    found = {"recall": recall, "explain": explain, "timeline": timeline, "status": status,
             "consolidate": consolidate}
    if not memory.read_only:
        found = {"remember": remember, **found}
    return found


def resources(memory, call):
    """The resources: URI -> (name, function returning JSON text)."""
    async def events():
        """The latest 20 events (clusters of articles), newest first, with article counts."""
        return dumps(await call(memory.recent_events))

    async def knowledge():
        """Strategic knowledge (the latest 50 updated), with confidence and validation."""
        return dumps(await call(memory.knowledge))

    async def schema():
        """Every table: what it holds, its columns, natural keys, how it is searched."""
        return dumps(await call(memory.schema))

    return {"ravana://events/recent": ("recent_events", events),
            "ravana://knowledge": ("strategic_knowledge", knowledge),
            "ravana://schema": ("schema", schema)}


def server(memory):
    """The MCPServer over memory, its tools and resources registered."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    async def call(method, **arguments):
        try:
            return jsonable(await memory.run(method, **arguments))
        except RavanaError as e:
            raise ToolError(str(e)) from None
        except driver().Error as e:
            raise ToolError(f"database: {e}") from None

    app = MCPServer("ravana-db", instructions="An autonomous agent's memory: remember what "
                    "matters, recall it by meaning and words.", log_level="WARNING")
    for name, fn in tools(memory, call).items():
        app.add_tool(fn, name=name, structured_output=False)
    for uri, (name, fn) in resources(memory, call).items():
        app.resource(uri, name=name, mime_type="application/json",
                     description=fn.__doc__)(fn)
    return app


def jsonable(value):
    """A result as plain JSON values (BLOBs as `--format json` writes them)."""
    return json.loads(dumps(value))


def serve(path, *, read_only=False, model=None, key=None):
    """Run the server on stdin/stdout until the client closes it (the file must exist)."""
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ImportError:
        raise RavanaError(INSTALL) from None
    memory = Memory(path, read_only=read_only, model=model, key=key)
    try:
        memory.thread.submit(memory.warm)
        server(memory).run("stdio")
    finally:
        memory.close()
