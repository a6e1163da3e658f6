"""The consolidation policy as a run reads it: stored rows checked against their defaults."""

from datetime import timedelta

from ..schema import CONSOLIDATION_POLICY
from ..text import loads, stored_number
from ..times import format_time


def _shapes():
    """A policy member's kind, by the first default that has it: a number, a list or text."""
    shapes = {}
    for value, _ in CONSOLIDATION_POLICY.values():
        for name, usual in (value.items() if isinstance(value, dict) else ()):
            shapes.setdefault(name, usual)
    return shapes


SHAPES = _shapes()


def policy(db, problems=None):
    """{key: value} of the consolidation policy rows.

    A row another client wrote that cannot be read (nested too deeply, not an object) gives
    the default value (schema.CONSOLIDATION_POLICY); a member of the wrong kind (text for a
    number, a list or a number where the other is due) or left out gives the default's
    member. Each problem is appended to problems as (key, what)."""
    problems = [] if problems is None else problems
    rows = {}
    for key, value in db.execute("SELECT key, value FROM consolidation_policy"):
        default = CONSOLIDATION_POLICY.get(key, (None,))[0]
        try:
            value = loads(value)
        except (ValueError, TypeError) as e:  # text.DeepJSONError is a ValueError
            problems.append((key, str(e)))
            value = default
        if isinstance(default, dict):
            value = _checked(key, value, default, problems)
        if value is not None:
            rows[key] = value
    return rows


def _checked(key, value, default, problems):
    """An object row with each member of the wrong kind (or left out) the default's."""
    if not isinstance(value, dict):
        problems.append((key, "is not a JSON object"))
        value = default
    value = {**default, **value}  # a member left out: the default's
    for name in list(value):
        usual = default.get(name, SHAPES.get(name))
        if name in SHAPES and not _same_kind(value[name], usual):
            what = f"{name}: {str(value[name])[:40]!r} is not {_kinds(usual)}"
            problems.append((key, what))
            if name in default:
                value[name] = default[name]
            else:
                del value[name]
    return value


def _same_kind(value, usual):
    if isinstance(usual, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(usual, str):
        return isinstance(value, str)
    return stored_number(value) is not None or usual is None and value is None


def _kinds(usual):
    return "a list of names" if isinstance(usual, list) else "text" \
        if isinstance(usual, str) else "a number"


def hours_before(now, hours):
    """The stored form of `hours` before now; a policy's age past year 1 (or 9999) gives
    the earliest (latest) time instead of an OverflowError."""
    try:
        return format_time(now - timedelta(hours=hours))
    except OverflowError:
        return "0001-01-01T00:00:00.000Z" if hours > 0 else "9999-12-31T23:59:59.999Z"
