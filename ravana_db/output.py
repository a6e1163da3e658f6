"""The one emitter: a rich table for people, plain JSON, JSON lines or CSV for scripts."""

import base64
import csv
import json
import sys
from enum import Enum

from .errors import InputError
from .text import csv_cell, printable


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def pick(fmt, json_flag=False, *, default=None):
    """The format to write: --json, --format, else a table on a terminal and `default` (json)
    in a pipe."""
    if json_flag and fmt and Format(fmt) is not Format.json:
        raise InputError(f"--json and --format {Format(fmt).value} disagree: give one of them")
    if json_flag:
        return Format.json
    if fmt:
        return Format(fmt)
    return Format.table if sys.stdout.isatty() else Format(default or "json")


def _text(value):
    """A cell printed literally: stored text may hold rich markup like `[/]` or `[link=...]`,
    and control characters (escape sequences), which are shown escaped (`\x1b`)."""
    from rich.text import Text

    return Text(printable(_cell(value)))


def _cell(value):
    if isinstance(value, (dict, list)):
        return dumps(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return "" if value is None else str(value)


def dumps(value, **options):
    """JSON text as `--format json` writes it: UTF-8 as is, BLOBs as sqlite-utils writes them."""
    return json.dumps(value, ensure_ascii=False, default=_blob, **options)


def _blob(value):
    """A BLOB (a plain client may store one in any column) as sqlite-utils writes it in JSON."""
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def emit(rows, fmt, *, columns=None, one=False, out=None, live=False, title=None):
    """Write rows (an iterable of dicts, streamed) to stdout in format fmt.

    Args:
        columns: the keys to show and their order (default: the first row's keys).
        one: rows holds a single record: JSON gets an object, a table gets key/value lines.
        out: where to write (default stdout; a report for people goes to stderr).
        live: flush after every row, for a reader waiting on each answer.
        title: a table's caption line.
    """
    out = out or sys.stdout
    rows = iter(rows)
    if fmt is Format.json and one:
        out.write(dumps(next(rows), indent=2) + "\n")
    elif fmt is Format.json:
        # "[" waits for the first row: an error before it leaves stdout empty, not broken JSON.
        empty = True
        for row in rows:
            out.write(("[\n  " if empty else ",\n  ") + dumps(_only(row, columns)))
            empty = False
            if live:
                out.flush()
        out.write("[]\n" if empty else "\n]\n")
    elif fmt is Format.jsonl:
        for row in rows:
            out.write(dumps(_only(row, columns)) + "\n")
            if live:
                out.flush()
    elif fmt is Format.csv:
        writer = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(out, columns or list(row), extrasaction="ignore")
                writer.writeheader()
            writer.writerow({k: _cell(csv_cell(v)) for k, v in row.items()})
            if live:
                out.flush()
    else:
        _table(rows, columns=columns, one=one, out=out, title=title)
    out.flush()


def _only(row, columns):
    return row if columns is None else {k: row.get(k) for k in columns}


def _table(rows, *, columns, one, out, title=None):
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=not one, header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True,
                  title=None if title is None else _text(title), title_justify="left")
    if one:
        record = next(rows)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in record.items():
            if isinstance(value, dict):  # one level of nesting: a line per entry
                for sub, item in value.items():
                    table.add_row(_text(f"{key}.{sub}"), _text(item))
            else:
                table.add_row(_text(key), _text(value))
    else:
        rows = list(rows)
        columns = columns or (list(rows[0]) if rows else [])
        if not rows:
            return  # nothing, not a blank line: the command says why on stderr
        for name in columns:
            # Long text takes what width is left; ids fold rather than lose characters; short
            # fields stay on one line.
            if name in ("text", "error", "feed", "title"):
                table.add_column(_text(name), overflow="fold", ratio=1, min_width=12)
            elif name in ("id", "key"):
                table.add_column(_text(name), overflow="fold", min_width=8)
            else:
                table.add_column(_text(name), no_wrap=True)
        for row in rows:
            table.add_row(*(_text(row.get(c)) for c in columns))
    Console(file=out).print(table)


def tree(root, out=None):
    """Draw a tree for people: root is (label, [children as (label, [...])]); labels are
    printed literally (stored text may hold rich markup)."""
    from rich.console import Console
    from rich.tree import Tree

    def grow(branch, children):
        for label, more in children:
            grow(branch.add(_text(label)), more)

    label, children = root
    top = Tree(_text(label))
    grow(top, children)
    out = out or sys.stdout
    Console(file=out).print(top)
    out.flush()


def width(out=None):
    """The width a table for people gets: the terminal's, $COLUMNS, else 80."""
    from rich.console import Console

    return Console(file=out or sys.stdout).width


def message(text):
    """A line for people: counts, notices. Always stderr, never mixed into the data. It may
    quote stored or given text: control characters in it are shown escaped."""
    sys.stderr.write(printable(text) + "\n")


class Progress:
    """A transient progress bar on stderr; silent when stderr is not a terminal or quiet.

    Call it with how many items were just done; `total=` sets or changes the total.
    """

    def __init__(self, description, *, total=None, quiet=False):
        self.description, self.total, self._bar = description, total, None
        self.enabled = not quiet and sys.stderr.isatty()

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __call__(self, advance, *, total=None):
        if self._bar is not None:
            self._bar.update(self._task, advance=advance,
                             **({"total": total} if total is not None else {}))

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
