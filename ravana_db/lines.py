"""Lines of input that may be of any size (stdin, JSON lines files), read in bounded memory."""

import json

from .errors import InputError

MAX_LINE = 16 << 20  # bytes in one line (a record or a query), its newline not counted
MAX_TEXT = 4 << 20  # characters in one text field (full-text indexing holds a text whole)
MAX_BATCH = 64 << 20  # bytes of JSON lines that `log --stdin` holds for its one transaction
SKIP = 1 << 20  # bytes read at once while skipping the rest of a line too long


def too_long(where):
    """The error for a line over MAX_LINE, naming the limit."""
    return InputError(f"{where}: longer than {MAX_LINE >> 20} MiB, the most a line may hold")


def read_lines(stream, *, limit=MAX_LINE):
    """(line number, bytes) of each line of a binary stream, as it comes.

    A line longer than limit comes as (number, None) without being held: at most limit bytes
    are read at once, and the rest of that line is read and dropped only if the caller asks
    for the next line (one that stops at the error never reads on: /dev/zero ends at once).
    """
    number = 0
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        number += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield number, raw
            continue
        del raw
        yield number, None
        rest = stream.readline(SKIP)
        while rest and not rest.endswith(b"\n"):
            rest = stream.readline(SKIP)


def decoded(where, raw):
    """A line of read_lines as text, or the InputError that says why it cannot be (too long:
    raw is None; not UTF-8)."""
    if raw is None:
        raise too_long(where)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: not valid UTF-8") from None


def text_lines(stream, *, strict=True, blank=False):
    """(line number, line) of each line of a binary stream (stdin), read as it comes: blank
    lines only with blank=True (a question expects an answer, even an empty one).

    A line that is not UTF-8 or longer than MAX_LINE raises InputError, or with strict=False
    comes as the error (the rest of a line too long is skipped, never held).
    """
    for number, raw in read_lines(stream):
        try:
            line = decoded(f"line {number}", raw)
        except InputError as error:
            if strict:
                raise
            yield number, error
            continue
        if blank or line.strip():
            yield number, line


def json_line(number, line):
    """The value of one JSON line of text_lines, or the InputError naming its line."""
    try:
        return json.loads(line.rstrip("\n"))
    except json.JSONDecodeError as e:
        raise InputError(f"line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise InputError(f"line {number}: not valid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"line {number}: JSON nested too deeply") from None


def json_batch(stream, *, limit=MAX_BATCH):
    """(line number, value) of each non-blank JSON line of stdin, for one transaction.

    Raises InputError once the lines hold more than limit characters, or at the end when
    there was no line at all.
    """
    size = 0
    for number, line in text_lines(stream):
        size += len(line)
        if size > limit:
            raise InputError(f"line {number}: more than {limit >> 20} MiB on stdin, the "
                             "most one transaction holds: split it, or store rows of one "
                             "table in batches with `ravana-db ingest jsonl - --table TABLE`")
        yield number, json_line(number, line)
    if not size:
        raise InputError("no records on stdin (expected one JSON object per line)")


def json_lines(stream, *, name=""):
    """(where, value) of each non-blank line of a binary stream of JSON lines.

    Args:
        name: the file's name, for messages ("NAME line 3: ..."); "" for stdin.
    """
    for number, raw in read_lines(stream):
        where = f"{name} line {number}".lstrip()
        line = decoded(where, raw)
        if not line.strip():
            continue
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:
            raise InputError(f"{where}: not valid JSON ({e or 'nested too deeply'})") from None
