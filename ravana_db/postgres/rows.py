"""The file's rows as the server stores them: each value converted to its server column's type
(postgres/schema.py COLUMNS), and the binary COPY adapters that send them.

A plain SQLite client can store what PostgreSQL's types refuse: a time that is not a time, a
number in a text column, text that is not JSON, a NUL character. Such a value becomes NULL (a
time or a number), its text (a text column) or a JSON string of its text (a JSON column), so
that one odd row never stops a sync. A row whose key cannot be stored is left out and counted.
"""

import json
import re
import struct
from datetime import timezone

from .. import index
from ..times import from_iso
from ..vectors import NORM_BYTES
from . import schema, tokens

INT8 = (-(1 << 63), (1 << 63) - 1)
# Escapes jsonb refuses: NUL, and UTF-16 surrogates (a lone one is not a character).
BAD_ESCAPE = re.compile(r"\\u(0000|[dD][89a-fA-F])")


def _text(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = repr(value) if isinstance(value, float) else str(value)
    return value.replace("\x00", "")


def to_text(value):
    if value.__class__ is str and "\x00" not in value:  # nearly every value: no copy
        return value
    return None if value is None else _text(value)


def to_int(value):
    if value.__class__ is int and INT8[0] <= value <= INT8[1]:
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and INT8[0] <= value <= INT8[1]:
        return value
    return None


def to_float(value):
    if value.__class__ is float:
        return value
    return float(value) if isinstance(value, (int, float)) else None


def to_time(value):
    if not isinstance(value, str):
        return None
    try:
        dt = from_iso(value.strip())
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


class JsonText(str):
    """A value for a JSONB column: JSON text as jsonb takes it."""


def to_json(value):
    if value is None:
        return None
    text = _text(value)
    try:
        json.loads(text, parse_constant=_refuse)
        if not BAD_ESCAPE.search(text):
            return JsonText(text)
    except ValueError:
        pass
    return JsonText(json.dumps(text))


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


class EnumText(str):
    """A value for one of the server's enums."""


def to_enum(values):
    allowed = frozenset(values)

    def convert(value):
        return EnumText(value) if value in allowed else None

    return convert


class Vector(bytes):
    """A pgvector value in its binary form."""


def vectors(blobs, dim):
    """The file's doc_vec blobs as pgvector values (None for a blob that is not a vector of
    the server's dimension). Decoding goes through index.decode_vectors (vectors.decode: int8
    codes and a float16 norm), the file's one reading of doc_vec."""
    size = dim + NORM_BYTES
    good = [b for b in blobs if b is not None and len(b) == size]
    decoded = iter(index.decode_vectors(good).astype(">f4")) if good else iter(())
    head = struct.pack(">HH", dim, 0)
    return [Vector(head + next(decoded).tobytes()) if b is not None and len(b) == size
            else None for b in blobs]


def converter(kind):
    """The function that turns a file value into a value for a server column of type kind."""
    if kind == "BIGINT":
        return to_int
    if kind == "DOUBLE PRECISION":
        return to_float
    if kind == "TIMESTAMPTZ":
        return to_time
    if kind == "JSONB":
        return to_json
    if kind in schema.ENUMS:
        return to_enum(schema.ENUMS[kind])
    return to_text


def converters(table):
    return [converter(kind) for _, kind in schema.columns(table)]


# The COPY type of each server type (enums and vector by their oid, looked up per connection).
COPY_TYPES = {"BIGINT": "int8", "DOUBLE PRECISION": "float8", "TIMESTAMPTZ": "timestamptz",
              "JSONB": "jsonb", "TEXT": "text"}


def copy_types(conn, table):
    """The types set_types needs for COPY of (file_id, table's columns[, embedding])."""
    kinds = [kind for _, kind in schema.columns(table)]
    oids = oids_of(conn)
    types = ["uuid", *(oids[k] if k in oids else COPY_TYPES[k] for k in kinds)]
    # doc: its embedding, then its word columns (tokens.doc_columns, lane pgfts)
    return [*types, oids["vector"], "tsvector", "int4"] if table == "doc" else types


def oids_of(conn):
    if not hasattr(conn, "ravana_oids"):
        names = (*schema.ENUMS, "vector")
        found = conn.execute("SELECT typname, oid FROM pg_type WHERE typname = ANY(%s)",
                             (list(names),)).fetchall()
        conn.ravana_oids = dict(found)
    return conn.ravana_oids


def register(conn):
    """Teach conn's COPY our binary values: JSON text, enum text and pgvector bytes."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    oids = oids_of(conn)

    class JsonDumper(Dumper):
        format = Format.BINARY
        oid = conn.adapters.types["jsonb"].oid

        def dump(self, obj):
            return b"\x01" + obj.encode()

    conn.adapters.register_dumper(JsonText, JsonDumper)
    for name in schema.ENUMS:
        conn.adapters.register_dumper(EnumText, type(f"{name}Dumper", (Dumper,), {
            "format": Format.BINARY, "oid": oids[name], "dump": lambda self, obj: obj.encode()}))

    class VectorDumper(Dumper):
        format = Format.BINARY
        oid = oids["vector"]

        def dump(self, obj):
            return obj

    conn.adapters.register_dumper(Vector, VectorDumper)
    tokens.register(conn)  # tsv: the file's tokens, pre-encoded (lane pgfts)
