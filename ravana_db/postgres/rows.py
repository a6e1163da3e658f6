"""The file's rows as the server stores them: each value converted to its server column's type
(postgres/schema.py COLUMNS), and encode(): a batch of rows as one binary COPY payload.

A plain SQLite client can store what PostgreSQL's types refuse: a time that is not a time, a
number in a text column, text that is not JSON (or JSON that jsonb refuses: a \\u0000 escape, a
lone surrogate, a number beyond any number type, NaN, nesting deeper than a parser goes), a NUL
character. Such a value becomes NULL (a time or a number), its text without the NUL (a text
column) or a JSON string of its text (a JSON column), so that one odd row never stops a sync.
A row whose key cannot be stored is left out and counted.

encode() works a column at a time: each server type has one encoder (COPY_TYPES) that turns a
whole column into its binary fields (struct-packed numbers, times as microseconds since 2000,
the vectors decoded and packed by numpy in one go), and the rows are joined from the columns
once. A type without an encoder is sent as text.
"""

import json
import re
import struct
from datetime import datetime, timedelta, timezone
from itertools import chain, repeat

from ..times import from_iso
from ..vectors import NORM_BYTES
from ..vectors import decode as decode_vectors
from . import schema, tokens

INT8 = (-(1 << 63), (1 << 63) - 1)
INT4 = (-(1 << 31), (1 << 31) - 1)
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
    try:
        return float(value) if isinstance(value, (int, float)) else None
    except OverflowError:  # an integer beyond a double
        return None


def to_time(value):
    if not isinstance(value, str):
        return None
    try:
        dt = from_iso(value.strip())
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def to_json(value):
    """JSON text jsonb takes: the value's own text when it is such JSON, else a JSON string of
    its text."""
    if value is None:
        return None
    text = _text(value)
    return text if _is_jsonb(text) else json.dumps(text, ensure_ascii=False)


def _is_jsonb(text):
    if "\\u" in text and BAD_ESCAPE.search(text):
        return False
    try:
        _DECODER.decode(text)
    except (ValueError, RecursionError):
        return False
    return True


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def _double(text):
    """A JSON number with a fraction or exponent, refused beyond a double's range (jsonb's
    numeric has its own, narrower bounds for exponents)."""
    number = float(text)
    if number in (float("inf"), float("-inf")) or \
            (number == 0.0 and text.lower().partition("e")[0].strip("-+0.")):
        raise ValueError(f"{text[:20]} is out of range")
    return number


_DECODER = json.JSONDecoder(parse_constant=_refuse, parse_float=_double)


def to_enum(values):
    allowed = frozenset(values)

    def convert(value):
        return value if value in allowed else None

    return convert


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


def copy_columns(table):
    """The (name, type) of each column a COPY of table sends after file_id: its columns, and
    for doc the vector (whose value, as read, is the doc_vec blob) and the file's tokens of its
    text (tokens.doc_columns: the tsvector, pre-encoded, and the token count)."""
    if table != "doc":
        return schema.columns(table)
    return [*schema.columns(table), ("embedding", "vector"), ("tsv", "tsvector"),
            ("tokens", "int4")]


NULL = b"\xff\xff\xff\xff"
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
TRAILER = b"\xff\xff"
PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
_length = struct.Struct(">i").pack
_int8 = struct.Struct(">iq").pack
_int4 = struct.Struct(">ii").pack
_float8 = struct.Struct(">id").pack


def _field(data):
    return _length(len(data)) + data


def _text_bytes(value):
    """A value for a text column as UTF-8, without NULs (any value: None is not one)."""
    value = to_text(value)
    try:
        return value.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return value.encode("utf-8", "replace")


def _fields(data):
    """Field lengths and data for encoded values (None: NULL); two parts of a column."""
    if None not in data:
        return [list(map(_length, map(len, data))), data]
    return [[NULL if b is None else _length(len(b)) for b in data],
            [b"" if b is None else b for b in data]]


# Each encoder turns a column (a list of file values) into the parts of its fields: lists as
# long as the column, whose items, one from each part in turn, make each row's field.


def text_column(column):
    try:
        data = [v.encode() for v in column]  # nearly every column: str values, valid, no NUL
    except (AttributeError, UnicodeEncodeError):  # None, another type, a lone surrogate
        data = None
    if data is None or b"\x00" in b"".join(data):
        data = [None if v is None else _text_bytes(v) for v in column]
    return _fields(data)


def int8_column(column):
    try:
        return [list(map(_int8, repeat(8), column))]
    except struct.error:  # None, a float, a text, a number beyond 64 bits
        return [[_slow_int8(v) for v in column]]


def _slow_int8(value):
    value = to_int(value)
    return NULL if value is None else _int8(8, value)


def int4_column(column):
    try:
        return [list(map(_int4, repeat(4), column))]
    except struct.error:
        low, high = INT4
        return [[_int4(4, v) if v.__class__ is int and low <= v <= high else NULL
                 for v in column]]


def float8_column(column):
    try:
        return [list(map(_float8, repeat(8), column))]
    except (struct.error, OverflowError):
        return [[_slow_float8(v) for v in column]]


def _slow_float8(value):
    value = to_float(value)
    return NULL if value is None else _float8(8, value)


def _each_once(encode, column):
    """encode applied to each distinct text once (times and JSON repeat: a day's rows, a
    column's default); other values each time (1 and 1.0 are equal keys, not equal JSON)."""
    seen = {v: encode(v) for v in set(column) if v.__class__ is str}
    return [seen[v] if v.__class__ is str else encode(v) for v in column]


def _time_field(value):
    dt = to_time(value)
    return NULL if dt is None else _int8(8, (dt - PG_EPOCH) // MICROSECOND)


def time_column(column):
    return [_each_once(_time_field, column)]


def _json_field(value):
    # jsonb's binary form: a version byte, then the JSON text.
    return NULL if value is None else _field(b"\x01" + _text_bytes(to_json(value)))


def json_column(column):
    return [_each_once(_json_field, column)]


def enum_column(values):
    allowed = frozenset(values)

    def encode(column):
        return _fields([v.encode() if v in allowed else None for v in column])

    return encode


def raw_column(column):
    """Values already in the server's binary form (a tsvector from postgres/tokens.py)."""
    return _fields([None if v is None else bytes(v) for v in column])


def vector_column(column, dim=schema.DIM):
    """doc_vec blobs as pgvector values, decoded and packed in one go (NULL for a blob that
    is not a vector of the server's dimension)."""
    import numpy as np

    size = dim + NORM_BYTES
    good = [i for i, b in enumerate(column) if b.__class__ is bytes and len(b) == size]
    out = [NULL] * len(column)
    if not good:
        return [out]
    width = 8 + 4 * dim
    packed = np.empty((len(good), width), dtype=np.uint8)
    packed[:, :8] = np.frombuffer(struct.pack(">iHH", 4 + 4 * dim, dim, 0), dtype=np.uint8)
    packed[:, 8:] = decode_vectors([column[i] for i in good], dim).astype(">f4").view(np.uint8)
    view = memoryview(packed.reshape(-1))  # no copy: the slices keep packed alive
    for j, i in enumerate(good):
        out[i] = view[j * width:(j + 1) * width]
    return [out]


# The encoder of each server type (lower case); enums are added below, any other type is text.
COPY_TYPES = {"bigint": int8_column, "int8": int8_column, "integer": int4_column,
              "int4": int4_column, "double precision": float8_column, "float8": float8_column,
              "timestamptz": time_column, "jsonb": json_column, "text": text_column,
              "tsvector": raw_column, "vector": vector_column}
COPY_TYPES.update({name: enum_column(values) for name, values in schema.ENUMS.items()})


def encode_columns(kinds, rows, file_id):
    """rows (tuples, one value per kind) and file_id before them as one binary COPY payload
    (signature, tuples, trailer) for columns of those server types."""
    n = len(rows)
    columns = list(zip(*rows)) if rows else [() for _ in kinds]
    fields = [part for kind, column in zip(kinds, columns)
              for part in COPY_TYPES.get(kind.lower(), text_column)(column)]
    count = struct.pack(">h", len(kinds) + 1)
    file_field = _field(file_id.bytes)
    body = chain.from_iterable(zip(repeat(count, n), repeat(file_field, n), *fields))
    return b"".join(chain((SIGNATURE,), body, (TRAILER,)))


def storable(table, rows):
    """(rows whose key the server can store, how many were left out)."""
    kinds = dict(schema.columns(table))
    names = [n for n, _ in schema.columns(table)]
    checks = [(names.index(k), converter(kinds[k])) for k in schema.key(table)]
    if len(checks) == 1 and kinds[schema.key(table)[0]] == "BIGINT" and \
            all(r[checks[0][0]].__class__ is int for r in rows):
        return rows, 0  # an integer id: always storable
    kept = [r for r in rows if all(convert(r[p]) is not None for p, convert in checks)]
    return kept, len(rows) - len(kept)


def doc_words(rows):
    """The word columns (tokens.doc_columns) of the doc rows encode() will send."""
    text = [name for name, _ in schema.columns("doc")].index("text")
    return tokens.doc_columns([r[text] for r in storable("doc", rows)[0]])


def encode(table, rows, file_id, words=None):
    """A batch of table's rows as read from the file (copy_columns' order, up to doc's
    embedding: its word columns are doc_words(rows), made here unless given) as one binary
    COPY payload for (file_id, copy_columns): (payload, rows sent, vectors, rows left out)."""
    if table == "doc" and words is None:
        words = doc_words(rows)
    rows, skipped = storable(table, rows)
    vectors = 0
    if table == "doc":
        size = schema.DIM + NORM_BYTES
        vectors = sum(1 for r in rows if r[-1].__class__ is bytes and len(r[-1]) == size)
        rows = [(*r, *w) for r, w in zip(rows, words)]
    kinds = [kind for _, kind in copy_columns(table)]
    return encode_columns(kinds, rows, file_id), len(rows), vectors, skipped
