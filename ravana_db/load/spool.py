"""Checked rows on disk: one table's rows pickled one after another in a temporary file, read
back in order, and cut into batches; so a whole input is checked before any of it is written
without being held in memory."""

import pickle
import tempfile
from dataclasses import dataclass, field
from typing import NamedTuple


class Item(NamedTuple):
    """One checked row."""

    where: str  # how messages name the row: "article.jsonl line 3"
    old: int | None  # its id in the source, for tables with a surrogate id
    values: dict  # validated values of the columns given


def pack(item):
    """The bytes that Spool.append() takes for an Item."""
    return pickle.dumps(tuple(item), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class Spool:
    """One table's checked rows in a temporary file, and what references to them are checked
    with."""

    file: object = field(default_factory=tempfile.TemporaryFile)
    rows: int = 0
    olds: set = field(default_factory=set)  # the rows' ids in the source
    given: dict = field(default_factory=dict)  # {reference column: values the rows give}
    fixes: dict = field(default_factory=dict)  # {row number: None (refused) or columns to empty}

    def append(self, blob):
        """Add a row, as pack() gave it."""
        self.file.seek(0, 2)
        self.file.write(blob)
        self.rows += 1

    def read(self):
        """(row number, Item, its size in bytes) of each row, in the order added."""
        self.file.flush()
        self.file.seek(0)
        for number in range(self.rows):
            start = self.file.tell()
            item = Item(*pickle.load(self.file))
            yield number, item, self.file.tell() - start

    def close(self):
        """Remove the file."""
        self.file.close()


def chunks(items, *, most, most_bytes, size):
    """Lists of items, each at most `most` of them or `most_bytes` of size(item) (and one)."""
    batch, held = [], 0
    for item in items:
        batch.append(item)
        held += size(item)
        if len(batch) >= most or held >= most_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch
