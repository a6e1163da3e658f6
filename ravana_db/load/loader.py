"""The loader that `ingest jsonl|dir|ravana` share: rows checked, spooled, then written.

Every row is read and checked before anything is written: against the target's own columns
(a pydantic model per table, models.row_models) and then against the table's CHECK
constraints, in an in-memory table made from the target's own definition. So a bad line is
reported, naming it, while the file is still untouched. A checked row goes to a temporary
file (one per table), not to memory: what is held at once is one batch, and the few values
that references are checked with. Then the tables are written in foreign-key order, in
batches read back from those files: each batch is one store.write (its text embedded
outside the lock, its rows committed together). A run that stops keeps the batches it
committed, and, since every row is found again by its natural identity (tables.NATURAL),
running it again stores the rest and adds nothing twice.

Integer ids never travel: the target numbers its rows itself. A reference through one
(article.feed_id, event_article, decisionlog.situation_id, the article id that names a
cluster) is mapped to the id that the referenced row has in the target. TEXT keys
(memory_id, pattern_id, ...) are identities and travel as they are.
"""

import contextlib
import hashlib
from dataclasses import dataclass, field

from ..errors import InputError, RecordError
from ..sql import driver
from .spool import Item, Spool, chunks, pack
from .target import present, table_info

BATCH = 500  # rows per store.write: one transaction, its text embedded before it
BATCH_BYTES = 8 << 20  # or fewer rows, when they hold this many bytes (as spooled)
COUNTS = ("read", "new", "updated", "existing", "refused")
STATUS = {"inserted": "new", "updated": "updated", "existing": "existing"}
# Integer columns that hold another row's id without a declared foreign key: a cluster's id is
# its first article's id; a consolidated memory's run is its memory_consolidations row (m015).
ID_COLUMNS = {("article", "cluster_id"): "article", ("event", "cluster_id"): "article",
              ("memory_merge", "survivor_id"): "memory",
              ("memory", "consolidated_in"): "memory_consolidations"}


@contextlib.contextmanager
def opened(path):
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


@dataclass
class Loader:
    """Rows read and checked per table (add()), then written in foreign-key order (write()).
    Use it in a `with`: its temporary files go when it closes.

    Args:
        mapped: integer references are the source's ids, to map to the target's (a folder,
            the original); else they are the target's own ids (one table's JSON lines).
        lenient: a row that fails validation is refused and counted, not an error (the
            original's data, which nothing ever checked).
    """

    db: object
    mapped: bool
    lenient: bool = False
    spools: dict = field(default_factory=dict)  # table -> Spool, in the order added
    reports: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    ids: dict = field(default_factory=dict)  # table -> {source id: target id}
    later: list = field(default_factory=list)  # (table, column, other, ref, old): set last
    _tables: dict = field(default_factory=dict)
    _scratch: object = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Remove the temporary files."""
        for spool in self.spools.values():
            spool.close()
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    def table(self, name):
        """The Table of one of the target's tables (read once)."""
        if name not in self._tables:
            self._tables[name] = table_info(self.db, name)
        return self._tables[name]

    def add(self, name, rows):
        """Read and check rows, (where, dict) pairs of one table, and spool them; raises
        InputError for a bad one (or refuses it, when lenient). Unmapped, references are
        checked batch by batch, against the target."""
        report = self.reports.setdefault(name, dict(table=name, **dict.fromkeys(COUNTS, 0)))
        if name not in self.spools:
            self.spools[name] = Spool()
        refused = []
        spooled = self._spooled(name, self._checked_rows(name, rows, report, refused))
        for batch in chunks(spooled, most=BATCH, most_bytes=BATCH_BYTES,
                            size=lambda pair: pair[1]):
            if not self.mapped:
                self._check_references(self.table(name), [item for item, _ in batch])
        self.refuse(name, refused, "")

    def _spooled(self, name, checked):
        """Spool each checked row; yields it as references are checked with: (Item of its
        where, old id and the values of its reference columns, its size). Mapped, those
        values are gathered per table for resolve()."""
        spool, keep = self.spools[name], None
        for item, blob in checked:
            if keep is None:  # at the first row: a file refused before it loads no models
                references = self._references(self.table(name))
                keep = set(references) | {key for other, key in references.values()
                                          if other == name}
            spool.append(blob)
            if self.mapped:
                spool.olds.add(item.old)
                for column in references:
                    spool.given.setdefault(column, set()).add(item.values.get(column))
            yield Item(item.where, item.old, {c: item.values.get(c) for c in keep}), len(blob)

    def _checked_rows(self, name, rows, report, refused):
        """(Item, pack(Item)) of each row that passes; reasons of those refused go to
        refused (lenient), else the first is raised."""
        for where, data in rows:
            report["read"] += 1
            try:
                item = self._checked(self.table(name), where, data)
            except InputError as e:
                if not self.lenient:
                    raise
                refused.append(str(e))
                continue
            yield item, pack(item)

    def _checked(self, table, where, data):
        from ..models import validate

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

    def refuse(self, name, reasons, why):
        """Count rows of a table refused, and note the first reason."""
        if reasons:
            self.reports[name]["refused"] += len(reasons)
            self.notes.append(f"{name}: {len(reasons)} row(s) refused{why} (first: "
                              f"{reasons[0]})")

    def rows(self, name):
        """The Items of a table still to write, as resolve() left them."""
        for item, _ in self._kept(name):
            yield item

    def _kept(self, name):
        """(Item, its size) of each row of a table that resolve() kept, with the references
        it emptied set to None."""
        spool = self.spools[name]
        for number, item, size in spool.read():
            fix = spool.fixes.get(number, ())
            if fix is None:
                continue
            for column in fix:
                item.values[column] = None
            yield item, size

    def _check_references(self, table, batch):
        """Unmapped: a reference to a row that neither the batch nor the target holds is an
        error naming the line."""
        references = self._references(table)
        given = {column: {i.values.get(column) for i in batch} for column in references}
        dangling = self._dangling(references, given, batch=(table.name, batch))
        for item in batch:
            for column, (other, key) in references.items():
                if (column, item.values.get(column)) in dangling:
                    raise InputError(f"{item.where}: {column}: no {other} row with {key} "
                                     f"{item.values[column]!r} in this file")

    def resolve(self):
        """Mapped: check every reference, table by table in the order added. A reference to
        a row that neither the input nor the target holds (a filtered export, the original's
        loose data) becomes NULL where the column allows, and refuses the row where it does
        not. (Unmapped, add() checked them.)"""
        if not self.mapped:
            return
        for name, spool in self.spools.items():
            table = self.table(name)
            references = self._references(table)
            dangling = self._dangling(references, spool.given)
            if dangling:
                self._fix(table, references, dangling)

    def _fix(self, table, references, dangling):
        """Mark the rows of a table that refer to nothing: refused, or those references
        emptied."""
        spool, refused, nulled = self.spools[table.name], [], 0
        for number, item, _ in spool.read():
            bad = [(column, ref) for column, ref in references.items()
                   if (column, item.values.get(column)) in dangling]
            if any(column in table.not_null for column, _ in bad):
                column, (other, key) = bad[0]
                refused.append(f"{item.where}: {column}: no {other} row with {key} "
                               f"{item.values[column]!r}")
                spool.fixes[number] = None
            elif bad:
                spool.fixes[number] = [column for column, _ in bad]
                nulled += len(bad)
        if refused:  # references to this table's rows count only the rows kept
            spool.olds = {item.old for item in self.rows(table.name)}
        self.refuse(table.name, refused, ": they refer to rows not in the input")
        if nulled:
            self.notes.append(f"{table.name}: {nulled} reference(s) to rows not in the input "
                              "left empty")

    def _references(self, table):
        """{column: (table, column)}: the declared references, and (when mapped) the integer
        columns of ID_COLUMNS; unmapped, those are the target's ids, as given."""
        extra = {column: (other, "id") for (name, column), other in ID_COLUMNS.items()
                 if name == table.name and column in table.types} if self.mapped else {}
        return {**table.references, **extra}

    def _dangling(self, references, given, batch=None):
        """{(column, value)} of the references that point at nothing.

        Args:
            given: {column: the values the rows give}.
            batch: unmapped, (table, Items): the only rows of the input held.
        """
        dangling = set()
        for column, (other, key) in references.items():
            values = given.get(column, set()) - {None}
            if not values:
                continue
            if self.mapped and self.table(other).surrogate and key == "id":
                spool = self.spools.get(other)
                have = spool.olds if spool else set()
            else:
                if batch is not None:
                    rows = batch[1] if other == batch[0] else ()
                else:
                    rows = self.rows(other) if other in self.spools else ()
                have = {i.values.get(key) for i in rows} & values
                have |= present(self.db, other, key, values - have)
            dangling |= {(column, v) for v in values - have}
        return dangling

    def total(self):
        """Rows to write."""
        return sum(spool.rows - sum(fix is None for fix in spool.fixes.values())
                   for spool in self.spools.values())

    def write(self, *, embedder=None, progress=None):
        """Write what add() read, table by table, in batches (BATCH rows or BATCH_BYTES) of
        one store.write each. Returns the report: per table, rows read, new, updated,
        existing (already stored, or the same row twice in the input) and refused."""
        self.resolve()
        if progress:
            progress(0, total=self.total())
        for name in self.spools:
            self._write_table(name, embedder, progress)
        self._set_later()
        return [self.reports[name] for name in self.spools]

    def _write_table(self, name, embedder, progress):
        seen, ids, later = {}, self.ids.setdefault(name, {}), []
        for batch in chunks(self._kept(name), most=BATCH, most_bytes=BATCH_BYTES,
                            size=lambda pair: pair[1]):
            if not self.mapped:
                # One table's JSON lines, as ever: the same row twice in one batch is one
                # row; in two batches, the second finds the first (existing, or updated).
                seen = {}
            self._batch(name, [item for item, _ in batch], seen, ids, later, embedder)
            if progress:
                progress(len(batch))
        # References to rows not written yet: of the same table (a cluster's first article is
        # the article itself), set once all are; of a table after it (a memory's run), once
        # every table is.
        self.later += [(name, column, other, ref, old) for column, other, ref, old in later]
        self._set_later(only=name)

    def _set_later(self, only=None):
        """Set the references held back (only those to table `only`'s rows, when given)."""
        from ..store import write

        now, wait = [], []
        for entry in self.later:
            (now if only is None or entry[2] == only else wait).append(entry)
        self.later = wait
        statements = [(f"UPDATE [{name}] SET [{column}] = ? WHERE id = ?",
                       [self.ids[other][ref], self.ids[name][old]])
                      for name, column, other, ref, old in now
                      if ref in self.ids.get(other, ()) and old in self.ids.get(name, ())]
        if statements:
            write(self.db, [], statements=statements)

    def _batch(self, name, items, seen, ids, later, embedder):
        from ..store import write

        table, report = self.table(name), self.reports[name]
        records, written, aliases = [], [], []
        for item in items:
            values = self._mapped(table, item, later)
            model = _model(table, values)
            record = model.model_construct(_fields_set=set(values), **values)
            row = record.row()
            # The identity's digest, not its values: they may be long texts.
            key = (model.identity, hashlib.sha256(
                repr(tuple(row[c] for c in model.identity)).encode()).digest())
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
        reference to a row not written yet (of the same table, or of one after it) is left
        out and added to `later`, as (column, its table, source id it refers to, the row's
        source id)."""
        values = dict(item.values)
        if not self.mapped:
            return values
        for column, (other, key) in self._references(table).items():
            ref = values.get(column)
            if key != "id" or ref is None:
                continue
            if ref in self.ids.get(other, ()):
                values[column] = self.ids[other][ref]
            else:  # written later in the input (resolve() checked it is there)
                del values[column]
                later.append((column, other, ref, item.old))
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
