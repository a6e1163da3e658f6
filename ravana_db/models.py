"""What each `log` kind accepts: pydantic models validated at the edge, before anything is written.

Field names are the original's column names, so rows exported from the original system can be
piped straight in. JSON fields take a JSON value, or a string of JSON text as the original stored.
"""

import ast
import json
import math
import re
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from .db import parse_time, sha256
from .errors import InputError
from .lines import MAX_TEXT
from .links import web_link
from .schema import MEMORY_TYPES, PATTERN_TYPES


def _time(value):
    if value is None:
        return None
    try:
        return parse_time(value, field="")
    except InputError as e:  # its message without the field name, which pydantic adds
        raise ValueError(str(e).removeprefix(": ")) from None


# Deeper JSON is refused: json.dumps recurses, and SQLite's JSON functions stop at 1000 levels.
MAX_DEPTH = 64


def python_literal(text):
    """(value, JSON text) of a Python literal's text: the str(dict) that some of the original's
    writers stored where JSON belongs. Raises ValueError for text that is not one, or is longer
    than 100,000 characters (Python's parser is costly on long text)."""
    if len(text) > 100_000 or text.lstrip()[:1] not in "{[('\"":
        raise ValueError("not a Python literal")
    try:
        parsed = ast.literal_eval(text)
        return parsed, json.dumps(parsed, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a Python literal") from None


def _json_text(value, *, keep_text=False):
    """Parse a string of JSON text (or of a Python literal, as the original stored some: see
    python_literal); leave other values (already parsed JSON) as they are.

    keep_text: a string that is neither is kept as a JSON string.
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        pass
    try:
        return json.loads(python_literal(value)[1])
    except (ValueError, RecursionError):
        if keep_text:
            return value
        raise ValueError(f"not valid JSON: {value[:40]!r}") from None


def _json_or_text(value):
    return _json_text(value, keep_text=True)


def _storable(value, path="$", depth=0, *, max_depth=MAX_DEPTH):
    """Refuse what SQLite cannot store as text or JSON: lone surrogates (no UTF-8 for them),
    NUL (other tools read text only up to it, while search finds what follows), NaN and
    infinities (not JSON), nesting deeper than max_depth (None: any). Returns value."""
    at = f" at {path}" if path != "$" else ""
    if isinstance(value, str):
        nul = value.find("\x00")
        if nul >= 0:
            raise ValueError(f"holds a NUL character{at}, which text may not hold "
                             f"(in {value[max(0, nul - 20):nul + 20]!r})")
        if value.isascii():
            return value
        try:
            value.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"not valid Unicode{at} (lone surrogate {value[e.start]!r} "
                             f"in {value[max(0, e.start - 20):e.start + 20]!r})") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{json.dumps(value)}{at} is not a finite number")
    elif isinstance(value, (dict, list)):
        if depth == max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            if isinstance(key, str):
                _storable(key, path, depth, max_depth=max_depth)
                step = f".{key}" if re.fullmatch(r"\w+", key) else f"[{key!r}]"
            else:
                step = f"[{key}]"
            _storable(item, path + step, depth + 1, max_depth=max_depth)
    return value


def _not_blank(value):
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _content(value):
    """compressed_content: a JSON object, or plain text stored as {"text": ...}."""
    value = _json_or_text(value)
    return {"text": value} if isinstance(value, str) else value


Time = Annotated[str | None, BeforeValidator(_time)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Text = Annotated[str, AfterValidator(_not_blank)]  # stored as given, never stripped
JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_text)]
JsonAny = Annotated[Any, BeforeValidator(_json_or_text)]
IdList = Annotated[list[str], BeforeValidator(_json_text)]
Int64 = Annotated[int, Field(ge=-2**63, le=2**63 - 1)]  # what SQLite's INTEGER holds
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


def _uuid():
    return str(uuid.uuid4())


class Record(BaseModel):
    """One row to store in `table`; `identity` is the columns that find it again (upsert)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)
    table: ClassVar[str]
    identity: ClassVar[tuple[str, ...]] = ()
    id_column: ClassVar[str] = "id"
    keep_existing: ClassVar[bool] = False
    json_fields: ClassVar[tuple[str, ...]] = ()
    references: ClassVar[dict[str, tuple[str, str]]] = {}

    def row(self, *, partial=False):
        """The columns to write, JSON fields as JSON text; partial: only the fields given."""
        row = self.model_dump(exclude_unset=partial, exclude_none=True)
        for name in self.json_fields:
            if name in row:
                row[name] = json.dumps(row[name], ensure_ascii=False)
        return row

    @field_validator("*", mode="wrap")
    @classmethod
    def _storable_field(cls, value, handler):
        # As given (pydantic's own message for a surrogate is obscure), then as parsed
        # (a string of JSON text may hold what the string itself did not).
        parsed = handler(_storable(value))
        return parsed if parsed is value else _storable(parsed)


class LogRecord(Record):
    """A row of one of the original's log tables: an integer id and a timestamp."""

    identity: ClassVar[tuple[str, ...]] = ("id",)
    id: Int64 | None = Field(None, description="keep this id (importing rows); default: next")
    timestamp: Time = Field(None, description="ISO-8601 time; default: now")


class Action(LogRecord):
    """An action the agent took (actionlog)."""

    table: ClassVar[str] = "actionlog"
    json_fields: ClassVar[tuple[str, ...]] = ("params", "result")
    action_name: Text = Field(description="name of the action")
    params: JsonObject = Field(default_factory=dict, description="JSON object of parameters")
    status: Literal["success", "failure"] = Field("success", description="success or failure")
    result: JsonAny = Field(None, description="JSON result")


class Mood(LogRecord):
    """The agent's mood (moodlog): a JSON object of mood name to intensity."""

    table: ClassVar[str] = "moodlog"
    json_fields: ClassVar[tuple[str, ...]] = ("mood_vector",)
    mood_vector: Annotated[dict[str, float], BeforeValidator(_json_text)] = Field(
        description='JSON object of mood name to number, e.g. {"curious": 0.8}')


class Situation(LogRecord):
    """A situation the agent faced (situationlog)."""

    table: ClassVar[str] = "situationlog"
    json_fields: ClassVar[tuple[str, ...]] = ("context",)
    situation_type: Text = Field(description="e.g. curiosity, reflection")
    prompt: Text = Field(description="the prompt that generated the situation")
    context: JsonObject = Field(default_factory=dict, description="JSON object of context")


class Decision(LogRecord):
    """A decision the agent made in a situation (decisionlog)."""

    table: ClassVar[str] = "decisionlog"
    references: ClassVar[dict[str, tuple[str, str]]] = {"situation_id": ("situationlog", "id")}
    situation_id: Int64 | None = Field(None, description="id of the situation it answers")
    raw_response: Text = Field(description="the raw response of the decision process")


class Experiment(LogRecord):
    """An experiment the agent ran (experimentlog)."""

    table: ClassVar[str] = "experimentlog"
    json_fields: ClassVar[tuple[str, ...]] = ("results",)
    hypothesis: Text = Field(description="the hypothesis tested")
    results: JsonAny = Field(default_factory=dict, description="JSON results")


class Summary(LogRecord):
    """A summary, stored once per text (deduplicated by SHA-256)."""

    table: ClassVar[str] = "summary"
    identity: ClassVar[tuple[str, ...]] = ("content_hash",)
    keep_existing: ClassVar[bool] = True
    summary_text: Text = Field(description="the summary")
    source: str = Field("unknown", description="who or what produced it")
    category: str = Field("misc", description="e.g. compression, reflection")
    content_hash: str | None = Field(None, description="ignored: recomputed from the text")

    def row(self, *, partial=False):
        return {**super().row(partial=partial), "content_hash": sha256(self.summary_text)}


class Memory(Record):
    """An episodic memory. Logging a `key` again updates that memory."""

    table: ClassVar[str] = "memory"
    identity: ClassVar[tuple[str, ...]] = ("key",)
    json_fields: ClassVar[tuple[str, ...]] = ("metadata",)
    key: str | None = Field(None, description="your own unique id for it")
    text: Text = Field(description="what to remember")
    memory_type: Text = Field("episodic", description="e.g. episodic, fact, reflection")
    importance: Score = Field(0.5, description="0..1")
    created_at: Time = Field(None, description="ISO-8601 time (back-filling); default: now")
    source: str | None = Field(None, description="where it came from")
    metadata: JsonObject = Field(default_factory=dict, description="JSON object")

    def row(self, *, partial=False):
        return {**super().row(partial=partial), "content_hash": sha256(self.text)}


class VeryLongTermMemory(Record):
    """A very-long-term memory (very_long_term_memories). Same memory_id again updates it."""

    table: ClassVar[str] = "very_long_term_memories"
    identity: ClassVar[tuple[str, ...]] = ("memory_id",)
    id_column: ClassVar[str] = "memory_id"
    json_fields: ClassVar[tuple[str, ...]] = (
        "compressed_content", "metadata_info", "related_memories")
    memory_id: str = Field(default_factory=_uuid, description="UUID; default: a new one")
    memory_type: Literal[MEMORY_TYPES] = Field(description=", ".join(MEMORY_TYPES))
    compressed_content: Annotated[dict[str, Any], BeforeValidator(_content)] = Field(
        description='JSON object, or plain text (stored as {"text": ...})')
    importance_score: Score = Field(0.5, description="0..1")
    strategic_value: Score = Field(0.5, description="0..1")
    metadata_info: JsonObject = Field(default_factory=dict, description="JSON object")
    source_session: str = Field("unknown", description="session that created it")
    related_memories: IdList = Field(default_factory=list, description="JSON array of ids")
    retention_category: str = Field("medium_term", description="retention policy category")
    created_at: Time = Field(None, description="ISO-8601 time; default: now")
    promoted_at: Time = Field(None, description="ISO-8601 time; default: now")
    last_accessed: Time = Field(None, description="ISO-8601 time; default: now")
    access_count: Count = Field(0, description="times accessed")


class Pattern(Record):
    """A pattern found in memories (memory_patterns). Same pattern_id again updates it."""

    table: ClassVar[str] = "memory_patterns"
    identity: ClassVar[tuple[str, ...]] = ("pattern_id",)
    id_column: ClassVar[str] = "pattern_id"
    references: ClassVar[dict[str, tuple[str, str]]] = {
        "source_memory_id": ("very_long_term_memories", "memory_id")}
    json_fields: ClassVar[tuple[str, ...]] = ("pattern_data", "supporting_memories")
    pattern_id: str = Field(default_factory=_uuid, description="UUID; default: a new one")
    pattern_type: Literal[PATTERN_TYPES] = Field(description=", ".join(PATTERN_TYPES))
    pattern_description: Text = Field(description="the pattern, in words")
    confidence_score: Score = Field(description="0..1")
    pattern_data: JsonObject = Field(default_factory=dict, description="JSON object")
    supporting_memories: IdList = Field(default_factory=list, description="JSON array of ids")
    validation_count: Count = Field(0, description="times validated")
    last_validated: Time = Field(None, description="ISO-8601 time")
    discovered_at: Time = Field(None, description="ISO-8601 time; default: now")
    source_memory_id: str | None = Field(None, description="memory_id of its source memory")


class Knowledge(Record):
    """Strategic knowledge (strategic_knowledge). Same knowledge_id again updates it."""

    table: ClassVar[str] = "strategic_knowledge"
    identity: ClassVar[tuple[str, ...]] = ("knowledge_id",)
    id_column: ClassVar[str] = "knowledge_id"
    json_fields: ClassVar[tuple[str, ...]] = ("source_patterns", "knowledge_structure")
    knowledge_id: str = Field(default_factory=_uuid, description="UUID; default: a new one")
    knowledge_domain: Text = Field(description="e.g. architecture, performance, learning")
    knowledge_summary: Text = Field(description="the knowledge, in words")
    confidence_level: Score = Field(description="0..1")
    source_patterns: IdList = Field(default_factory=list, description="JSON array of ids")
    knowledge_structure: JsonObject = Field(default_factory=dict, description="JSON object")
    validation_score: Score = Field(0.0, description="0..1")
    application_count: Count = Field(0, description="times applied")
    last_updated: Time = Field(None, description="ISO-8601 time; default: now")


class Feed(Record):
    """A subscribed feed (an http(s) URL or a local file as file://) and its fetch state."""

    table: ClassVar[str] = "feed"
    identity: ClassVar[tuple[str, ...]] = ("url",)
    url: Text
    title: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_fetched: Time = None
    last_status: str | None = None
    last_error: str | None = None
    failures: Count = 0
    next_attempt: Time = None


class Article(Record):
    """A feed entry: unique on its guid within its feed."""

    table: ClassVar[str] = "article"
    identity: ClassVar[tuple[str, ...]] = ("feed_id", "guid")
    feed_id: Int64
    guid: Text
    title: Text
    link: Annotated[str, AfterValidator(web_link)] = ""
    published: Time = None
    source: str | None = None
    fetched_at: Time = None
    summary: str | None = None
    content: str | None = None

    def row(self, *, partial=False):
        text = "\n".join(x or "" for x in (self.title, self.summary, self.content))
        return {**super().row(partial=partial), "content_hash": sha256(text)}


class Event(Record):
    """A story told by several articles: one per cluster of articles."""

    table: ClassVar[str] = "event"
    identity: ClassVar[tuple[str, ...]] = ("cluster_id",)
    cluster_id: Int64
    description: Text
    keywords: str | None = None
    timestamp: Time = None


KINDS = {
    "action": Action, "mood": Mood, "situation": Situation, "decision": Decision,
    "experiment": Experiment, "summary": Summary, "memory": Memory,
    "vltm": VeryLongTermMemory, "pattern": Pattern, "knowledge": Knowledge,
}


def validate(model, data, *, line=None, options=False):
    """Validate one record; a failure is an InputError naming the line (or option) and field."""
    where = f"line {line}: " if line is not None else ""
    if not isinstance(data, dict):
        raise InputError(f"{where}expected a JSON object, got {type(data).__name__}")
    for name, value in data.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            field = "--" + name.replace("_", "-") if options else name
            raise InputError(f"{where}{field}: longer than {MAX_TEXT >> 20} Mi characters, "
                             "the most a text may hold")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        # An unknown field first: a typo in a name is the likeliest cause of a missing one.
        err = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")[0]
        field = ".".join(str(p) for p in err["loc"]) or "record"
        if not re.fullmatch(r"[\w.-]+", field):  # a stranger's key: quoted, on one line
            field = repr(field)
        if options and err["loc"]:
            field = "--" + str(err["loc"][0]).replace("_", "-")
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            message = f"unknown field (fields: {allowed})"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise InputError(f"{where}{field}: {message}{more}") from None


# The natural identity of each table's rows: the columns that find a row again in another
# file, where integer ids differ. A row takes the first whose columns it gives (not null);
# with none, it is a new row. Log rows have no key of their own: their time and content are
# their identity.
NATURAL = {
    "feed": [("url",)],
    "article": [("feed_id", "guid")],
    "event": [("cluster_id",), ("timestamp", "description")],
    "event_article": [("event_id", "article_id")],
    "summary": [("content_hash",)],
    "actionlog": [("timestamp", "action_name", "params", "status")],
    "moodlog": [("timestamp", "mood_vector")],
    "situationlog": [("timestamp", "situation_type", "prompt", "context")],
    # Without a situation, a decision is found by its time (m007's index).
    "decisionlog": [("situation_id", "timestamp", "raw_response"), ("timestamp", "raw_response")],
    "experimentlog": [("timestamp", "hypothesis", "results")],
    "memory": [("key",), ("created_at", "text")],
    "very_long_term_memories": [("memory_id",)],
    "memory_patterns": [("pattern_id",)],
    "memory_consolidations": [("consolidation_id",)],
    "strategic_knowledge": [("knowledge_id",)],
    "consolidation_patterns": [("consolidation_id", "pattern_id")],
    "pattern_strategic_knowledge": [("pattern_id", "knowledge_id")],
    "consolidation_metrics": [("metric_id",)],
    "retention_policies": [("memory_type",)],
}
# content_hash is SHA-256 of these columns (joined by newlines), as `log` and `ingest feeds`
# compute it, when a row does not give one.
HASHED = {"summary": ("summary_text",), "memory": ("text",),
          "article": ("title", "summary", "content")}
TIME_COLUMNS = frozenset((
    "timestamp", "created_at", "last_accessed", "promoted_at", "discovered_at",
    "last_validated", "consolidation_date", "last_updated", "updated_at", "fetched_at",
    "published", "last_fetched", "next_attempt"))


class Row(Record):
    """A row of one of the agent's tables, columns as `export` writes them (row_models()
    makes one class per table and identity). Only the columns given are written: the others
    take the database's default on insert and stay as they are on update; null is a value."""

    hashed: ClassVar[tuple[str, ...]] = ()

    def row(self, *, partial=False):
        row = self.model_dump(exclude_unset=True)
        if self.hashed and "content_hash" not in row:
            row["content_hash"] = sha256("\n".join(row.get(c) or "" for c in self.hashed))
        return row


def _json_column(kind, value):
    """A JSON column's value: JSON text is kept as it is (byte for byte), another value is
    written as JSON; a string that is not JSON is a JSON string where any JSON may go."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
        except ValueError:
            if kind is not None:
                raise ValueError(f"not valid JSON: {value[:40]!r}") from None
            return json.dumps(value, ensure_ascii=False)
        # JSON text is kept as given, but refused, as `log` refuses it, when it holds what
        # SQLite cannot store (an escaped lone surrogate); its depth is SQLite's to judge.
        _storable(parsed, max_depth=None)
    else:
        parsed, value = value, json.dumps(_storable(value), ensure_ascii=False)
    if kind == "object" and not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    if kind == "array" and not isinstance(parsed, list):
        raise ValueError("must be a JSON array")
    return value


def row_models(table, columns, *, json_columns, foreign_keys, id_column, identities=None):
    """The Row classes of one table: {identity: class}, and {(): class} for rows with none.

    Args:
        columns: (name, declared type, not null, has default) of each column but the
            integer id (which a row never carries to another file).
        json_columns: {name: 'object', 'array' or None (any JSON)}.
        foreign_keys: {column: (table, column)}, checked by the write path.
        id_column: the column whose value write() reports (the search index's key).
        identities: the identities to try, in order (default: NATURAL[table]).
    """
    fields = {}
    for name, declared, not_null, has_default in columns:
        if name in json_columns:
            kind = Annotated[str, BeforeValidator(lambda v, k=json_columns[name]:
                                                  _json_column(k, v))]
        elif name in TIME_COLUMNS:
            kind = Annotated[str, BeforeValidator(_time)]
        elif (table, name) == ("article", "link"):
            kind = Annotated[str, AfterValidator(web_link)]
        else:
            kind = {"INTEGER": Int64, "REAL": float}.get(declared.upper(), str)
        if not not_null:
            kind = kind | None
        required = not_null and not has_default and not (
            name == "content_hash" and table in HASHED)  # computed when not given
        fields[name] = (kind, ... if required else None)
    base = create_model(f"{table}_row", __base__=Row, **fields)
    base.table, base.id_column, base.references = table, id_column, dict(foreign_keys)
    base.hashed = HASHED.get(table, ())
    base.keep_existing = table == "summary"  # as `log summary`: a text stored once
    models = {(): base}
    for identity in NATURAL[table] if identities is None else identities:
        models[identity] = type(f"{table}_by_{'_'.join(identity)}", (base,),
                                {"identity": identity})
    return models
