"""Lines of input that may be of any size (stdin, JSON lines files), read in bounded memory."""

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
