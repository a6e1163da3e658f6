"""Stored text on its way out: decoded whatever its bytes, encodable, safe to show and to open.

Other clients write the file too. SQLite stores what it is given as TEXT, valid UTF-8 or not
(`CAST(x'EDA080' AS TEXT)`), and its JSON functions turn a JSON escape of a lone surrogate
(`"\\ud800"`) into such bytes, which the search index's triggers then store; Python's json
turns the same escape into a string that cannot be encoded. Neither may stop a command: what
cannot be decoded or encoded becomes U+FFFD, and `replaced()` tells the CLI to say so once.
"""

import codecs
import json
import math
import operator
import re
from datetime import timezone

from .errors import RavanaError
from .times import from_iso

_replaced = 0
_last = None


def _count_and_replace(error):
    """codecs error handler: U+FFFD for each bad sequence, counting the values it touches."""
    global _replaced, _last
    if error.object is not _last:
        _last = error.object
        _replaced += 1
    return "\ufffd", error.end


codecs.register_error("ravana-db-replace", _count_and_replace)

# The connections' text_factory: bytes.decode, called from C (of the callables a driver
# accepts, the quickest measured: bench/text_bench.py); the error handler runs only for
# bytes that are not UTF-8.
decode = operator.methodcaller("decode", "utf-8", "ravana-db-replace")


def replaced():
    """How many stored values had to be replaced since the last call (and start again)."""
    global _replaced, _last
    count, _replaced, _last = _replaced, 0, None
    return count


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def encodable(value):
    """value (a string, or JSON-like dicts and lists of them) with every lone surrogate
    replaced by U+FFFD, so that it can be encoded as UTF-8 (hashed, embedded, written)."""
    global _replaced
    if isinstance(value, str):
        if value.isascii() or not _SURROGATE.search(value):
            return value
        _replaced += 1
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable(v) for v in value]
    return value


class DeepJSONError(RavanaError, ValueError):
    """Stored JSON nested deeper than Python's json reads (SQLite accepts 1,000 levels)."""


def loads(text):
    """Stored JSON text as Python values that can be encoded again (see encodable()).

    Raises DeepJSONError (a RavanaError and a ValueError) for JSON nested too deeply."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DeepJSONError("a stored JSON value is nested deeper than Python can read "
                            f"(SQLite allows 1,000 levels): {text[:40]!r}...") from None
    if isinstance(text, str) and "\\" in text and _SURROGATE_ESCAPE.search(text):
        return encodable(value)
    return value


def stored_time(value):
    """A stored time as an aware datetime (naive means UTC), or None when it is not one.

    Another client may store anything in a time column ('', 'garbage', '0000-00-00',
    '+10000-01-01', a number): such a time is unknown, and the step that needs it skips the
    row (or takes it as it is), never the whole command."""
    if not isinstance(value, str):
        return None
    try:
        dt = from_iso(value.strip())
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


MAX_INTEGER = 2**63 - 1  # SQLite's largest integer


def stored_number(value, default=None):
    """A stored number as it is (int or float), or default when the column holds something
    else: SQLite has no strict types, and a plain client can store 'lots' as a count."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return default
    return value


def one_line(value, limit):
    """A stored value as one line of at most limit characters (then "…"): whitespace runs,
    newlines too, as one space; bytes decoded with U+FFFD; None as "". Other control
    characters stay: the emitter escapes them on a terminal."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = " ".join(str("" if value is None else value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# C0 controls but tab and newline, DEL and C1 controls: on a terminal they move the cursor,
# clear the screen, set the window title or start an escape sequence.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text):
    """text as shown to people on a terminal: each control character escaped as `\\xNN`."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


# A spreadsheet takes a cell starting with one of these for a formula (OWASP's list).
FORMULA_START = frozenset("=+-@\t\r")


def csv_cell(value):
    """A text cell as CSV may carry it to a spreadsheet: one that would start a formula gets
    a leading `'` (OWASP's advice). Numbers (int, float values) are left alone."""
    if isinstance(value, str) and value[:1] in FORMULA_START:
        return "'" + value
    return value
