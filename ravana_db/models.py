"""What each `log` kind accepts: pydantic models validated at the edge, before anything is written.

Field names are the original's column names, so rows exported from the original system can be
piped straight in. JSON fields take a JSON value, or a string of JSON text as the original stored.
Row and row_models() make the models of import rows for any table, from its facts in tables.py;
the field types and validators both use are in fields.py.
"""

import json
import re
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

from .errors import InputError
from .fields import (
    Count,
    IdList,
    Int64,
    JsonAny,
    JsonObject,
    Score,
    Text,
    Time,
    content_object,
    json_column,
    json_text,
    new_uuid,
    storable,
    stored_time,
)
from .hashing import sha256
from .lines import MAX_TEXT
from .links import web_link
from .schema import MEMORY_TYPES, PATTERN_TYPES, key_number
from .tables import HASHED, NATURAL, TIME_COLUMNS


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
        parsed = handler(storable(value))
        return parsed if parsed is value else storable(parsed)


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
    mood_vector: Annotated[dict[str, float], BeforeValidator(json_text)] = Field(
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
    # Not a column: a provenance row (`explain`), written with the memory.
    from_: str | None = Field(None, alias="from", description="what it came from, KIND:ID: "
                              "article:12, event:3, memory:7, action:40 (see explain)")

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False,
                              populate_by_name=True)

    def row(self, *, partial=False):
        row = {**super().row(partial=partial), "content_hash": sha256(self.text)}
        row.pop("from_", None)
        return row


class VeryLongTermMemory(Record):
    """A very-long-term memory (very_long_term_memories). Same memory_id again updates it."""

    table: ClassVar[str] = "very_long_term_memories"
    identity: ClassVar[tuple[str, ...]] = ("memory_id",)
    id_column: ClassVar[str] = "memory_id"
    json_fields: ClassVar[tuple[str, ...]] = (
        "compressed_content", "metadata_info", "related_memories")
    memory_id: str = Field(default_factory=new_uuid, description="UUID; default: a new one")
    memory_type: Literal[MEMORY_TYPES] = Field(description=", ".join(MEMORY_TYPES))
    compressed_content: Annotated[dict[str, Any], BeforeValidator(content_object)] = Field(
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
    pattern_id: str = Field(default_factory=new_uuid, description="UUID; default: a new one")
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
    knowledge_id: str = Field(default_factory=new_uuid, description="UUID; default: a new one")
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


def option_name(field):
    """The `log` option that gives a field: from_ -> --from, memory_type -> --memory-type."""
    return "--" + str(field).rstrip("_").replace("_", "-")


def validate(model, data, *, line=None, options=False):
    """Validate one record; a failure is an InputError naming the line (or option) and field."""
    where = f"line {line}: " if line is not None else ""
    if not isinstance(data, dict):
        raise InputError(f"{where}expected a JSON object, got {type(data).__name__}")
    for name, value in data.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            field = option_name(name) if options else name
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
            field = option_name(err["loc"][0])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields)
            message = f"unknown field (fields: {allowed})"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise InputError(f"{where}{field}: {message}{more}") from None


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


def old_key(value):
    """A memory's dup_key as an export from before m015 has it (hex text): the integer."""
    return key_number(value) if isinstance(value, str) and len(value) in (16, 64) else value


def old_run(value):
    """A memory's consolidated_in as an export from before m015 has it (the run's id, text):
    no run's number, so None; the memory stays consolidated."""
    return None if isinstance(value, str) and not value.isdigit() else value


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
                                                  json_column(k, v))]
        elif name in TIME_COLUMNS:
            kind = Annotated[str, BeforeValidator(stored_time)]
        elif (table, name) == ("article", "link"):
            kind = Annotated[str, AfterValidator(web_link)]
        elif (table, name) == ("memory", "dup_key"):
            kind = Annotated[Int64 | None, BeforeValidator(old_key)]
        elif (table, name) == ("memory", "consolidated_in"):
            kind = Annotated[Int64 | None, BeforeValidator(old_run)]
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
