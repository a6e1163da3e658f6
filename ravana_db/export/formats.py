"""The formats `export` writes: each writer streams rows (a cursor) to a text file as it reads
them, and returns how many it wrote."""

import base64
import csv
import json
import math

from ..text import FORMULA_START, csv_cell

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _json_row(columns, row):
    record = dict(zip(columns, row))
    try:
        return _encode(record)
    except (TypeError, ValueError):  # a BLOB or an infinite REAL: only a plain client stores one
        return "{" + ", ".join(f"{_encode(k)}: {_json_value(v)}" for k, v in record.items()) + "}"


def _json_value(value):
    """One value as JSON: a BLOB as sqlite-utils writes it, infinity as SQLite's json() does."""
    if isinstance(value, bytes):
        return _encode({"$base64": True, "encoded": base64.b64encode(value).decode()})
    if isinstance(value, float) and math.isinf(value):
        return "9e999" if value > 0 else "-9e999"
    return _encode(value)


def write_json(out, columns, rows):
    """A JSON array of one object per row, a row per line."""
    count = 0
    for count, row in enumerate(rows, 1):
        out.write(",\n  " if count > 1 else "[\n  ")
        out.write(_json_row(columns, row))
    out.write("\n]\n" if count else "[]\n")
    return count


def write_jsonl(out, columns, rows):
    """JSON lines: one object per row."""
    count = 0
    for row in rows:
        out.write(_json_row(columns, row))
        out.write("\n")
        count += 1
    return count


def write_csv(out, columns, rows):
    """RFC 4180 CSV with a header. NULL is an empty field, empty text a quoted empty field
    (`""`, PostgreSQL's convention); numbers as Python writes them, which read back exactly;
    text that a spreadsheet would run as a formula starts with `'` (text.csv_cell)."""
    writer = csv.writer(out)
    writer.writerow(map(csv_cell, columns))
    count = 0
    for row in rows:
        count += 1
        for value in row:  # csv_cell's test inline: a call per cell would slow every row
            if value.__class__ is str and value[:1] in FORMULA_START:
                row = tuple(map(csv_cell, row))
                break
        if "" in row or bytes in map(type, row):
            out.write(",".join(map(csv_field, row)) + "\r\n")
        else:
            writer.writerow(row)
    return count


def csv_field(value):
    """One CSV field as write_csv writes it when a row holds empty text or a BLOB."""
    if value is None:
        return ""
    text = _text(value)
    if text == "" or any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _text(value):
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


# A cell reads back exactly and renders as the text: `|` and `\` are backslash-escaped, a line
# break is <br>, and `&`, `<` and CR are entities so that none of these can be taken for another.
_MARKDOWN = str.maketrans({"\\": "\\\\", "|": "\\|", "&": "&amp;", "<": "&lt;", "\r": "&#13;",
                           "\n": "<br>"})


def _cell(value):
    return "" if value is None else _text(value).translate(_MARKDOWN)


def write_markdown(out, columns, rows):
    """A GitHub-flavoured markdown table. NULL and empty text are both an empty cell."""
    out.write("| " + " | ".join(map(_cell, columns)) + " |\n")
    out.write("|" + " --- |" * len(columns) + "\n")
    count = 0
    for row in rows:
        out.write("| " + " | ".join(map(_cell, row)) + " |\n")
        count += 1
    return count


WRITERS = {"json": write_json, "jsonl": write_jsonl, "csv": write_csv,
           "markdown": write_markdown}
