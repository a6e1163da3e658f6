"""What one search asks: the query text and its options, checked as they arrive (from the
command line or JSON lines), and the text's words as safe FTS5 terms."""

import re

from ..errors import InputError
from ..tables import SEARCHABLE
from ..times import parse_days, parse_time

KINDS = tuple(SEARCHABLE)
MODES = ("hybrid", "vector", "fts")
MAX_TOP_N = 10_000
# Common words carry no meaning for BM25 but make an OR query walk huge posting lists.
STOPWORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in "
    "into is it its me my no not of on or our so than that the their them then there these "
    "they this to was we were what when where which who why will with would you your about "
    "know".split())


class Query:
    """One search: the text (or --like item) and the options that shape it."""

    def __init__(self, text=None, *, mode="hybrid", kind="all", type=None, source=None,
                 since=None, until=None, top_n=5, min_similarity=None, like=None,
                 recency=None, importance=None, distinct=False):
        _check_texts(text=text, mode=mode, kind=kind, type=type, source=source, since=since,
                     until=until, like=like, recency=recency)
        if mode not in MODES:
            raise InputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        kinds = _kinds(kind)
        if not (text and text.strip()) and like is None:
            raise InputError("give a query text (or --like ID)")
        top_n = number("top-n", top_n, int)
        if not 1 <= top_n <= MAX_TOP_N:
            raise InputError(f"top-n: must be between 1 and {MAX_TOP_N}")
        min_similarity = _min_similarity(min_similarity, mode)
        self.text, self.mode, self.kinds = text, mode, kinds
        self.like = None if like is None else str(like)
        self.type, self.source, self.top_n = type, source, top_n
        self.since = parse_time(since, field="since") if since else None
        self.until = parse_time(until, field="until") if until else None
        self.min_similarity = min_similarity
        if not isinstance(distinct, bool):
            raise InputError(f"distinct: must be true or false, not {distinct!r}")
        self.distinct = distinct
        self.half_life = None if recency is None else parse_days(recency, field="recency")
        self.importance = None
        if importance is not None:
            self.importance = number("importance", importance, float)
            if not 0 <= self.importance <= 100:
                raise InputError("importance: the weight must be between 0 and 100")


def _check_texts(**options):
    """Refuse an option that must be text (like: text or an id) but is not, or whose text
    cannot be stored or searched."""
    for name, value in options.items():
        if value is not None and not isinstance(value, (str, int) if name == "like" else str):
            raise InputError(f"{name}: must be a string, not {value!r}")
        if isinstance(value, str) and not encodable(value):
            raise InputError(f"{name}: not valid UTF-8 text")


def _kinds(kind):
    """The kinds that --kind names (comma-separated), or every kind for None and all."""
    kinds = KINDS if kind in (None, "all") else tuple(k.strip() for k in kind.split(","))
    for k in kinds:
        if k not in KINDS:
            raise InputError(f"kind: {k!r} is not one of {', '.join(KINDS)}, all")
    return kinds


def _min_similarity(value, mode):
    """--min-similarity as a number, checked against mode (None: not given)."""
    if value is None:
        return None
    value = number("min-similarity", value, float)
    if not -1 <= value <= 1:
        raise InputError("min-similarity: must be a cosine similarity between -1 and 1")
    if mode == "fts":
        raise InputError("min-similarity needs --mode vector or hybrid (fts has no vectors)")
    return value


def encodable(text):
    """False for text that cannot be stored or searched: lone surrogates, which is how Python
    carries bytes that are not UTF-8 in a command-line argument."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def number(name, value, kind):
    """value as an int or float (JSON lines may give "5" or 5); anything else is bad input."""
    try:
        if isinstance(value, bool):
            raise ValueError
        parsed = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name}: {value!r} is not a number") from None
    if kind is int and parsed != float(value):
        raise InputError(f"{name}: {value!r} is not a whole number")
    return parsed


def fts_terms(text):
    """Any user text as safe FTS5 terms: its words (stopwords dropped), each quoted.

    Quoting makes every operator, bracket, quote or star plain text, so no input can raise
    an FTS5 syntax error. An empty list when the text has no words at all.
    """
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text or "")))
    content = [w for w in words if w not in STOPWORDS] or words
    return ['"' + w.replace('"', '""') + '"' for w in content[:32]]
