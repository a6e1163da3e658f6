"""`ravana-db ingest jsonl|dir|ravana`: rows from JSON lines, from an `export all` folder, or
from a database of the original system, stored through store.write.

Every row is read and checked before anything is written: against the target's own columns
(a pydantic model per table, models.row_models) and then against the table's CHECK
constraints, in an in-memory table made from the target's own definition. So a bad line is
reported, naming it, while the file is still untouched. Then the tables are written in
foreign-key order, in batches: each batch is one store.write (its text embedded outside the
lock, its rows committed together). A run that stops keeps the batches it committed, and,
since every row is found again by its natural identity (models.NATURAL), running it again
stores the rest and adds nothing twice.

Integer ids never travel: the target numbers its rows itself. A reference through one
(article.feed_id, event_article, decisionlog.situation_id, the article id that names a
cluster) is mapped to the id that the referenced row has in the target. TEXT keys
(memory_id, pattern_id, ...) are identities and travel as they are.
"""

import contextlib
import difflib
import email.utils
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .db import driver, format_time, parse_time, uri
from .errors import InputError, RecordError
from .export import EXPORT_VERSION, MANIFEST
from .schema import SEARCHABLE, TABLES

BATCH = 500  # rows per store.write: one transaction, its text embedded before it
BATCH_BYTES = 8 << 20  # or fewer rows, when their lines hold this many bytes (ingest jsonl)
CHUNK = 500  # values per `IN (...)` list
COUNTS = ("read", "new", "updated", "existing", "refused")
STATUS = {"inserted": "new", "updated": "updated", "existing": "existing"}
# The original system's tables (SQLModel's names), in the order their references need.
ORIGINAL = (
    "article", "event", "summary", "actionlog", "moodlog", "situationlog", "decisionlog",
    "experimentlog", "very_long_term_memories", "memory_patterns", "memory_consolidations",
    "strategic_knowledge", "consolidation_patterns", "pattern_strategic_knowledge",
    "consolidation_metrics")
UNKNOWN_FEED = {"url": "unknown:", "title": "articles that had no feed"}  # as migration m004
# Integer columns that hold another row's id without a declared foreign key: a cluster's id is
# its first article's id.
ID_COLUMNS = {("article", "cluster_id"): "article", ("event", "cluster_id"): "article",
              ("memory_merge", "survivor_id"): "memory"}
NO_DESCRIPTION = {"", "no description"}  # what the original stored for every event


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


@dataclass
class Item:
    where: str  # how messages name the row: "article.jsonl line 3"
    old: int | None  # its id in the source, for tables with a surrogate id
    values: dict  # validated values of the columns given


@dataclass
class Loader:
    """Rows read and checked per table (add()), then written in foreign-key order (write()).

    Args:
        mapped: integer references are the source's ids, to map to the target's (a folder,
            the original); else they are the target's own ids (one table's JSON lines).
        lenient: a row that fails validation is refused and counted, not an error (the
            original's data, which nothing ever checked).
    """

    db: object
    mapped: bool
    lenient: bool = False
    items: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    ids: dict = field(default_factory=dict)  # table -> {source id: target id}
    _tables: dict = field(default_factory=dict)
    _scratch: object = None

    def table(self, name):
        if name not in self._tables:
            self._tables[name] = _table_info(self.db, name)
        return self._tables[name]

    def add(self, name, rows):
        """Read and check rows, (where, dict) pairs of one table; raises InputError for a bad
        one (or refuses it, when lenient)."""
        table = self.table(name)
        report = self.reports.setdefault(name, dict(table=name, **dict.fromkeys(COUNTS, 0)))
        items = self.items.setdefault(name, [])
        refused = []
        for where, data in rows:
            report["read"] += 1
            try:
                items.append(self._checked(table, where, data))
            except InputError as e:
                if not self.lenient:
                    raise
                refused.append(str(e))
        self._refuse(name, refused, "")

    def _checked(self, table, where, data):
        from .models import validate

        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
        data, old = dict(data), None
        if table.surrogate:
            old = data.pop("id", None)
            if old is not None and (type(old) is not int):
                raise InputError(f"{where}: id: {old!r} is not an integer")
        try:
            record = validate(table.models[()], data)
            self._check_constraints(table, record.row())
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        return Item(where, old, record.model_dump(exclude_unset=True))

    def _check_constraints(self, table, row):
        """The table's CHECK and NOT NULL constraints, judged by SQLite on a copy of its
        definition in memory: the target is not written (nor locked) until every row passed."""
        if self._scratch is None:
            self._scratch = driver().connect(":memory:", isolation_level=None)
            self._scratch.execute("PRAGMA foreign_keys = off")  # references: checked apart
        conn = self._scratch
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                            [table.name]).fetchone():
            conn.execute(table.sql)
        # Each row is tried alone and rolled back: the copy holds no rows (memory stays flat),
        # and rows that share a key are one row (write() merges them), not an error.
        conn.execute("SAVEPOINT row")
        try:
            conn.execute(f"INSERT INTO [{table.name}] ({', '.join(f'[{c}]' for c in row)}) "
                         f"VALUES ({', '.join('?' * len(row))})", list(row.values()))
        except driver().Error as e:
            raise InputError(str(e)) from None
        finally:
            conn.execute("ROLLBACK TO row")
            conn.execute("RELEASE row")

    def _refuse(self, name, reasons, why):
        if reasons:
            self.reports[name]["refused"] += len(reasons)
            self.notes.append(f"{name}: {len(reasons)} row(s) refused{why} (first: "
                              f"{reasons[0]})")

    def resolve(self):
        """Check every reference, table by table in the order added. A reference to a row
        that neither the input nor the target holds is an error naming the line; when mapped
        (a filtered export, the original's loose data) it becomes NULL where the column
        allows, and refuses the row where it does not."""
        for name, items in self.items.items():
            table, keep, refused, nulled = self.table(name), [], [], 0
            references = self._references(table)
            dangling = self._dangling(table, items, references)
            for item in items:
                bad = [(column, ref) for column, ref in references.items()
                       if (column, item.values.get(column)) in dangling]
                if bad and not self.mapped:
                    column, (other, key) = bad[0]
                    raise InputError(f"{item.where}: {column}: no {other} row with {key} "
                                     f"{item.values[column]!r} in this file")
                if any(column in table.not_null for column, _ in bad):
                    column, (other, key) = bad[0]
                    refused.append(f"{item.where}: {column}: no {other} row with {key} "
                                   f"{item.values[column]!r}")
                    continue
                for column, _ in bad:
                    item.values[column] = None
                    nulled += 1
                keep.append(item)
            self.items[name] = keep
            self._refuse(name, refused, ": they refer to rows not in the input")
            if nulled:
                self.notes.append(f"{name}: {nulled} reference(s) to rows not in the input "
                                  "left empty")

    def _references(self, table):
        """{column: (table, column)}: the declared references, and (when mapped) the integer
        columns of ID_COLUMNS; unmapped, those are the target's ids, as given."""
        extra = {column: (other, "id") for (name, column), other in ID_COLUMNS.items()
                 if name == table.name and column in table.types} if self.mapped else {}
        return {**table.references, **extra}

    def _dangling(self, table, items, references):
        """{(column, value)} of the references that point at nothing."""
        dangling = set()
        for column, (other, key) in references.items():
            values = {i.values.get(column) for i in items} - {None}
            if not values:
                continue
            if self.mapped and self.table(other).surrogate and key == "id":
                have = {i.old for i in self.items.get(other, ())}
            else:
                have = {i.values.get(key) for i in self.items.get(other, ())}
                have |= _present(self.db, other, key, values - have)
            dangling |= {(column, v) for v in values - have}
        return dangling

    def total(self):
        return sum(len(items) for items in self.items.values())

    def write(self, *, embedder=None, progress=None):
        """Write what add() read, table by table, BATCH rows per store.write. Returns the
        report: per table, rows read, new, updated, existing (already stored, or the same row
        twice in the input) and refused."""
        self.resolve()
        if progress:
            progress(0, total=self.total())
        from .store import write

        for name, items in self.items.items():
            seen, ids, later = {}, self.ids.setdefault(name, {}), []
            for start in range(0, len(items), BATCH):
                self._batch(name, items[start:start + BATCH], seen, ids, later, embedder)
                if progress:
                    progress(len(items[start:start + BATCH]))
            if later:
                # References to rows of the same table that were not written yet (a
                # cluster's first article is the article itself): set once all are.
                write(self.db, [], statements=[
                    (f"UPDATE [{name}] SET [{column}] = ? WHERE id = ?", [ids[ref], ids[old]])
                    for column, ref, old in later])
        return [self.reports[name] for name in self.items]

    def _batch(self, name, items, seen, ids, later, embedder):
        from .store import write

        table, report = self.table(name), self.reports[name]
        records, written, aliases = [], [], []
        for item in items:
            values = self._mapped(table, item, later)
            model = _model(table, values)
            record = model.model_construct(_fields_set=set(values), **values)
            row = record.row()
            key = (model.identity, tuple(row[c] for c in model.identity))
            if model.identity and key in seen:  # the same row twice in the input: one row
                aliases.append((item.old, seen[key]))
                report["existing"] += 1
                continue
            seen[key] = item.old
            records.append(record)
            written.append(item)
        try:
            results = write(self.db, records, embedder=embedder)
        except RecordError as e:
            done = sum(report[k] for k in ("new", "updated", "existing"))
            raise InputError(
                f"{written[e.index].where}: {e} (stored before it: {done} row(s) of {name} "
                "and the tables before; running again after a fix skips them)") from None
        for item, result in zip(written, results):
            report[STATUS[result["status"]]] += 1
            if table.surrogate and self.mapped:  # unmapped, ids are the target's already
                ids[item.old] = result["id"]
        for old, first in aliases:
            ids[old] = ids[first]

    def _mapped(self, table, item, later):
        """The row's values with the source's integer ids replaced by the target's. A
        reference to a row of the same table not written yet is left out and added to
        `later`, as (column, source id it refers to, the row's source id)."""
        values = dict(item.values)
        if not self.mapped:
            return values
        for column, (other, key) in self._references(table).items():
            ref = values.get(column)
            if key != "id" or ref is None:
                continue
            if ref in self.ids.get(other, ()):
                values[column] = self.ids[other][ref]
            else:  # the same table's, later in the input (resolve() checked it is there)
                del values[column]
                later.append((column, ref, item.old))
        return values


def _model(table, values):
    """The table's Row class for the first identity whose columns the row gives (a
    content_hash that Row.row() computes counts as given)."""
    given = {c for c, v in values.items() if v is not None}
    if table.models[()].hashed:
        given.add("content_hash")
    for identity, model in table.models.items():
        if identity and given.issuperset(identity):
            return model
    return table.models[()]


def _table_info(db, name):
    from .models import row_models

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
    """models.NATURAL's identities of a table, else its unique keys (primary key first)."""
    from .models import NATURAL

    if name in NATURAL:
        return NATURAL[name]
    keys = []
    for _, index, unique, origin, _ in db.execute(f"PRAGMA index_list([{name}])"):
        columns = tuple(r[2] for r in db.execute(f"PRAGMA index_info([{index}])"))
        if unique and None not in columns and not (surrogate and "id" in columns):
            keys.insert(0 if origin == "pk" else len(keys), columns)
    return keys


def _present(db, table, column, values):
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


def json_lines(stream, name=""):
    """(where, value) of each non-blank line of a binary stream of JSON lines.

    Args:
        name: the file's name, for messages ("NAME line 3: ..."); "" for stdin.
    """
    from .lines import read_lines, too_long

    for number, raw in read_lines(stream):
        where = f"{name} line {number}".lstrip()
        if raw is None:
            raise too_long(where)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{where}: not valid UTF-8") from None
        if not line.strip():
            continue
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:
            raise InputError(f"{where}: not valid JSON ({e or 'nested too deeply'})") from None


@contextlib.contextmanager
def _opened(path):
    """A file to read, or one line saying why it cannot be."""
    try:
        with open(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None


def load_jsonl(db, table, source, *, embedder=None, progress=None):
    """Store the rows of one table, as `export TABLE --format jsonl` writes them.

    Two passes, each holding one batch: the first checks every line (a bad one is an error
    and nothing is stored) and keeps a copy of the input in a temporary file (stdin cannot
    be read twice, a file may change meanwhile); the second reads the copy and writes it,
    BATCH rows per transaction. So memory stays flat whatever the input's size, and a run that
    stops keeps its batches: run again, it adds the rest.

    References by integer id (article.feed_id, decisionlog.situation_id, event_article) are
    this file's ids, checked to exist; `ingest dir` maps a whole export's instead.

    Args:
        source: a path, or a binary stream (stdin).

    Returns (report rows, notes).
    """
    name = check_table(table)
    loader = Loader(db, mapped=False)
    with tempfile.TemporaryFile() as copy:
        with (_opened(source) if isinstance(source, (str, os.PathLike))
              else contextlib.nullcontext(source)) as stream:
            label = str(source) if stream is not source else ""
            reader = _Reader(stream, copy)
            for batch in _batches(json_lines(reader, label), reader):
                loader.add(name, batch)
                loader.resolve()
                loader.items[name] = []
        read = loader.reports.get(name, {}).get("read", 0)
        if not read:
            raise InputError("no rows to ingest (expected one JSON object per line)")
        if progress:
            progress(0, total=read)
        copy.seek(0)
        reader = _Reader(copy)
        for batch in _batches(json_lines(reader, label), reader):
            loader.add(name, batch)
            loader.write(embedder=embedder)
            loader.items[name] = []
            if progress:
                progress(len(batch))
        loader.reports[name]["read"] = read
    return [loader.reports[name]], loader.notes


class _Reader:
    """A binary stream's readline that counts the bytes read (and writes them to copy)."""

    def __init__(self, stream, copy=None):
        self.stream, self.copy, self.bytes = stream, copy, 0

    def readline(self, limit=-1):
        line = self.stream.readline(limit)
        self.bytes += len(line)
        if self.copy is not None:
            self.copy.write(line)
        return line


def _batches(items, reader):
    """Lists of items, each at most BATCH of them or BATCH_BYTES of the reader's input (and
    one line): what one pass holds at once."""
    batch, start = [], reader.bytes
    for item in items:
        batch.append(item)
        if len(batch) == BATCH or reader.bytes - start >= BATCH_BYTES:
            yield batch
            batch, start = [], reader.bytes
    if batch:
        yield batch


def load_dir(db, folder, *, embedder=None, progress=None):
    """Store an `export all --format jsonl` folder: every table its manifest lists, in its
    order, references mapped to the target's ids. Returns (report rows, notes)."""
    folder = Path(folder)
    manifest = _manifest(folder)
    loader = Loader(db, mapped=True)
    for entry in manifest["tables"]:
        with _opened(folder / entry["file"]) as f:
            before = loader.reports.get(entry["table"], {}).get("read", 0)
            loader.add(entry["table"], json_lines(f, entry["file"]))
        read = loader.reports[entry["table"]]["read"] - before
        if isinstance(entry.get("rows"), int) and read != entry["rows"]:
            raise InputError(f"{entry['file']} holds {read} rows, {MANIFEST} says "
                             f"{entry['rows']}: the export is incomplete; export it again")
    return loader.write(embedder=embedder, progress=progress), loader.notes


def _manifest(folder):
    """The checked manifest of an export folder."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give the folder `ravana-db export all "
                         "--output DIR` wrote")
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise InputError(f"{folder} has no {MANIFEST}: give a folder that `ravana-db export "
                         "all --format jsonl --output DIR` wrote") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{folder / MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), list):
        raise InputError(f"{folder / MANIFEST} lists no tables: not an export's manifest")
    if manifest.get("export_version") != EXPORT_VERSION:
        raise InputError(f"{folder / MANIFEST}: export version "
                         f"{manifest.get('export_version')!r}, this ravana-db reads "
                         f"{EXPORT_VERSION}")
    if manifest.get("format") != "jsonl" or manifest.get("json_columns") != "text":
        raise InputError(f"{folder} holds a {manifest.get('format')} export: ingest dir reads "
                         "JSON lines (export all --format jsonl)")
    listed = []
    for entry in manifest["tables"]:
        name = entry.get("table") if isinstance(entry, dict) else None
        if name not in TABLES:
            raise InputError(f"{folder / MANIFEST} lists {name!r}, not a table of the agent's")
        if entry.get("file") != f"{name}.jsonl":
            raise InputError(f"{folder / MANIFEST}: {name}'s file must be {name}.jsonl, not "
                             f"{entry.get('file')!r}")
        if TABLES.index(name) < max(map(TABLES.index, listed), default=-1):
            raise InputError(f"{folder / MANIFEST} lists {name} after a table that refers to "
                             "it: not an export's order")
        listed.append(name)
    return manifest


def load_original(db, path, *, embedder=None, progress=None):
    """Store a database of the original system (RAVANA's SQLModel tables, and its
    very-long-term tables where present), opened read-only. Its quirks are mapped, never
    fatal: a row that cannot be stored is refused, counted, and the rest goes in.

    Returns (report rows, notes).
    """
    loader = Loader(db, mapped=True, lenient=True)
    with contextlib.closing(_open_original(db, path)) as conn:
        present = {n for (n,) in conn.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'table'")}
        tables = [t for t in ORIGINAL if t in present]
        if not tables:
            raise InputError(f"{path} holds none of the original's tables ({', '.join(ORIGINAL)})")
        if "article" in tables:
            loader.add("feed", [("the unknown: feed", {"id": 0, **UNKNOWN_FEED})])
        for name in tables:
            cursor = conn.execute(f"SELECT * FROM [{name}] ORDER BY rowid")
            columns = [d[0] for d in cursor.description]
            loader.add(name, _original_rows(loader, name, columns, cursor))
    if "article" in loader.items:
        _merge_duplicate_links(loader)
    return loader.write(embedder=embedder, progress=progress), loader.notes


def _open_original(db, path):
    """A read-only connection to the original's file that touches nothing in its folder: no
    -shm is made beside a WAL original (SQLite's `unix-none` VFS takes no locks, and in
    exclusive locking mode it keeps the WAL's index in memory), and its -wal is read, not
    checkpointed. A text value that is not UTF-8 comes as NotUtf8 (its row is refused)."""
    path = Path(path)
    with _opened(path) as f:
        header = f.read(16)
    if header and header != b"SQLite format 3\x00":
        raise InputError(f"{path} is not a SQLite database")
    real = path.resolve()
    main = db.execute("PRAGMA database_list").fetchone()[2]
    if main and real == Path(main).resolve():
        raise InputError(f"{path} is the database being written: give the original's file")
    try:
        conn = driver().connect(f"{uri(real)}?mode=ro&vfs=unix-none", uri=True)
        conn.text_factory = _text
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        ours = conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'"
                            ).fetchone()
    except driver().DatabaseError as e:
        raise InputError(f"cannot read {path} as a SQLite database: {e}") from None
    if ours and conn.execute("SELECT 1 FROM _sqlite_migrations "
                             "WHERE migration_set = 'ravana_db'").fetchone():
        conn.close()
        raise InputError(f"{path} is a ravana-db file, not the original's: move its rows with "
                         "`ravana-db export all --output DIR` and `ingest dir DIR`")
    return conn


class NotUtf8(bytes):
    """A text value of the original's that is not UTF-8."""


def _text(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return NotUtf8(raw)


def _original_rows(loader, name, columns, cursor):
    """(where, row dict) of one original table, its values made ours (see _original_value);
    a row whose values cannot be is refused, with why."""
    from .models import NATURAL

    table = loader.table(name)
    fields = table.models[()].model_fields
    identity = {c for ident in NATURAL[name] for c in ident}
    refused = []
    for values in cursor:
        data = dict(zip(columns, values))
        where = f"{name} id {data.get('id')}" if "id" in data else f"{name} row"
        row = {"id": data["id"]} if table.surrogate and "id" in data else {}
        try:
            for column, raw in data.items():
                if isinstance(raw, NotUtf8):
                    raise ValueError(f"{column}: not valid UTF-8 text")
                if column in fields:
                    value = _original_value(table, column, raw)
                    if value is not _OMIT:
                        row[column] = value
            _original_quirks(name, row, data)
            for column in sorted(identity & table.not_null - set(row) - {"content_hash"}):
                raw = data.get(column)
                raise ValueError(f"{column}: " + ("missing" if raw in (None, "") else
                                                  f"{str(raw)[:40]!r} is not a time"))
        except ValueError as e:
            refused.append(f"{where}: {e}")
            continue
        yield where, row
    loader.reports[name]["read"] += len(refused)
    loader._refuse(name, refused, "")


_OMIT = object()  # a value to leave out: the database's default applies


def _original_value(table, column, value):
    """An original value as our column holds it: times as ISO-8601 UTC (unparseable: _OMIT,
    so NULL or the column's default), JSON text as JSON (see _original_json), Postgres' text
    booleans 't'/'f' as 1/0, numbers in text columns as text."""
    from .models import TIME_COLUMNS

    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        return None if column not in table.not_null else _OMIT
    if column == "compressed_content" and isinstance(value, str) and value.strip() and \
            _python_literal(value)[0] is _OMIT and not _is_json(value):
        return json.dumps({"text": value}, ensure_ascii=False)  # as `log vltm` stores text
    if column in table.json:
        return _original_json(value, table.json[column])
    if column in TIME_COLUMNS:
        return _original_time(value)
    if table.types[column] == "INTEGER" and isinstance(value, str):
        flag = {"t": 1, "true": 1, "f": 0, "false": 0}.get(value.strip().lower())
        return value if flag is None else flag
    if table.types[column] == "TEXT" and isinstance(value, (int, float)):
        return str(value)
    return value


def _original_time(value):
    """ISO-8601 (the original's str(datetime), naive = UTC), RFC 822 (feeds' `published`) or
    epoch seconds, as stored here; anything else ('Unknown') is _OMIT."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from datetime import datetime, timezone

        try:
            return format_time(datetime.fromtimestamp(value, timezone.utc))
        except (OverflowError, OSError, ValueError):
            return _OMIT
    text = str(value).strip()
    if not text:
        return _OMIT
    try:
        return parse_time(text)
    except InputError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return _OMIT
    try:
        return format_time(parsed)
    except (OverflowError, ValueError):
        return _OMIT


def _original_json(value, kind):
    """JSON text of the original's JSON-in-text columns. Valid JSON is kept as it was
    written; a Python literal (str(dict), which some writers stored) becomes JSON; anything
    else is kept as a JSON string, wrapped as {"_raw": ...} where an object must go. Empty
    text is _OMIT (the column's default)."""
    if not isinstance(value, str):
        parsed, text = value, json.dumps(value)
    elif not value.strip():
        return _OMIT
    else:
        try:
            parsed, text = json.loads(value), value
        except (ValueError, RecursionError):
            parsed, text = _python_literal(value)
    if kind == "object" and not isinstance(parsed, dict):
        return json.dumps({"_raw": value if parsed is _OMIT else parsed}, ensure_ascii=False)
    if kind == "array" and not isinstance(parsed, list):
        return json.dumps([] if parsed is None else [value if parsed is _OMIT else parsed],
                          ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False) if parsed is _OMIT else text


def _is_json(text):
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _python_literal(value):
    """(value, JSON text) of a Python literal's text (models.python_literal, which `log` uses
    too), or (_OMIT, None)."""
    from .models import python_literal

    try:
        return python_literal(value)
    except ValueError:
        return _OMIT, None


def _original_quirks(name, row, data):
    """What each original table needs beyond its columns' types."""
    if name == "article":
        row["feed_id"] = 0  # the `unknown:` feed, as migration m004 gives feedless articles
        link = (data.get("link") or "").strip()
        row["link"] = link
        # The link is the entry's identity (the original had no guid): the same link twice
        # is one article.
        row["guid"] = link or f"ravana:article:{data.get('id')}"
    elif name == "event":
        # The original's cluster ids are one run's cluster labels, not article ids: kept out,
        # so they never collide with ours (the event is found by its time and text).
        row.pop("cluster_id", None)
        keywords = _keywords(data.get("keywords"))
        row["keywords"] = keywords
        if str(data.get("description") or "").strip().lower() in NO_DESCRIPTION:
            if not keywords:
                raise ValueError("no description and no keywords")
            row["description"] = keywords
    elif name == "summary":
        row.pop("content_hash", None)  # ours is SHA-256 of the text, whatever the original's
        for column, default in (("source", "unknown"), ("category", "misc")):
            if row.get(column) is None:
                row[column] = default
    elif name == "actionlog":
        status = str(data.get("status") or "").strip().lower()
        status = {"ok": "success", "succeeded": "success", "successful": "success",
                  "true": "success", "failed": "failure", "fail": "failure",
                  "error": "failure", "false": "failure"}.get(status, status)
        if status not in ("success", "failure"):
            raise ValueError(f"status {data.get('status')!r} is neither success nor failure")
        row["status"] = status
    elif name == "moodlog" and "mood_vector" not in row:
        row["mood_vector"] = "{}"


def _keywords(value):
    """Comma-separated keywords (or a JSON list of them) as ours: 'a, b, c', or None."""
    if value is None:
        return None
    words = None
    if isinstance(value, str) and value.strip().startswith("["):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list):
                words = [str(w) for w in parsed]
    if words is None:
        words = str(value).split(",")
    words = [w.strip() for w in words if w and w.strip()]
    return ", ".join(words) or None


def _merge_duplicate_links(loader):
    """A note of how many original articles repeat a link (the original had no unique
    constraint): write() stores each link once, the first row's."""
    links = [i.values.get("guid") for i in loader.items["article"]]
    repeated = len(links) - len(set(links))
    if repeated:
        loader.notes.append(f"article: {repeated} row(s) repeat another's link: stored once "
                            "(the first), counted as existing")
