"""What the target's schema says about a table, as the loader needs it: columns, references,
identities, the Row models that check a row; and which key values the target holds."""

import difflib
import re
from dataclasses import dataclass

from ..errors import InputError
from ..tables import SEARCHABLE, TABLES

CHUNK = 500  # values per `IN (...)` list


@dataclass
class Table:
    """What the target's schema says about one table."""

    name: str
    surrogate: bool  # an INTEGER PRIMARY KEY `id` that numbers rows in one file only
    models: dict  # models.row_models(): {identity: Row class}
    references: dict  # {column: (table, column)}
    not_null: set
    types: dict  # {column: declared type}
    json: dict  # {JSON column: 'object', 'array' or None}
    sql: str


def table_info(db, name):
    """The Table of one of the target's tables, read from its own definition."""
    from ..models import row_models

    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                     [name]).fetchone()[0]
    info = db.execute(f"PRAGMA table_info([{name}])").fetchall()
    surrogate = any(n == "id" and pk and t.upper() == "INTEGER" for _, n, t, _, _, pk in info)
    columns = [(n, t, bool(notnull), default is not None)
               for _, n, t, notnull, default, _ in info if not (surrogate and n == "id")]
    json_columns = {m[1]: m[3] for m in re.finditer(
        r"json_valid\((\w+)\)(\s+AND\s+json_type\(\1\)\s*=\s*'(\w+)')?", sql)}
    references = {row[3]: (row[2], row[4]) for row in
                  db.execute(f"PRAGMA foreign_key_list([{name}])")}
    searchable = [spec["ref"] for spec in SEARCHABLE.values() if spec["table"] == name]
    pk = [n for _, n, _, _, _, p in sorted(info, key=lambda r: r[5]) if p]
    id_column = (searchable or ["id"] if surrogate else pk)[0]
    models = row_models(name, columns, json_columns=json_columns, foreign_keys=references,
                        id_column=id_column, identities=_identities(db, name, surrogate))
    return Table(name, surrogate, models, references,
                 not_null={n for _, n, _, notnull, _, _ in info if notnull},
                 types={n: t.upper() for _, n, t, _, _, _ in info}, json=json_columns, sql=sql)


def _identities(db, name, surrogate):
    """tables.NATURAL's identities of a table, else its unique keys (primary key first)."""
    from ..tables import NATURAL

    if name in NATURAL:
        return NATURAL[name]
    keys = []
    for _, index, unique, origin, _ in db.execute(f"PRAGMA index_list([{name}])"):
        columns = tuple(r[2] for r in db.execute(f"PRAGMA index_info([{index}])"))
        if unique and None not in columns and not (surrogate and "id" in columns):
            keys.insert(0 if origin == "pk" else len(keys), columns)
    return keys


def present(db, table, column, values):
    """The values among these that the target's table holds in column (its unique index)."""
    values, found = list(values), set()
    for start in range(0, len(values), CHUNK):
        chunk = values[start:start + CHUNK]
        found.update(v for (v,) in db.execute(
            f"SELECT [{column}] FROM [{table}] WHERE [{column}] IN "
            f"({', '.join('?' * len(chunk))})", chunk))
    return found


def check_table(name):
    """One of the agent's tables, or an InputError that suggests one."""
    if name in TABLES:
        return name
    near = difflib.get_close_matches(name, TABLES, n=1)
    raise InputError(f"--table: {name!r} is not a table of the agent's" +
                     (f" (did you mean {near[0]}?)" if near else "") +
                     f"; tables: {', '.join(TABLES)}")
