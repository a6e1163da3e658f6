"""Times as stored (ISO-8601 UTC text) and the times and spans users type."""

import re
from datetime import datetime, timedelta, timezone

from .errors import InputError


def from_iso(text):
    """datetime.fromisoformat, also for a trailing Z (which Python reads only from 3.11 on)."""
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def now():
    """The current time as stored: ISO-8601 UTC with milliseconds."""
    return format_time(datetime.now(timezone.utc))


def format_time(dt):
    """A datetime in the stored form: ISO-8601 UTC, four-digit year, milliseconds, Z.

    Raises OverflowError when the UTC time falls outside years 1 to 9999.
    """
    utc = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def parse_time(value, *, field="time"):
    """An ISO-8601 date or datetime (naive means UTC), or a relative age like 7d, 12h, 30m.

    Returns the stored form (see now()).
    """
    text = str(value).strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    age = re.fullmatch(r"([0-9]{1,9})([smhdw])", text)
    try:
        if age:
            dt = datetime.now(timezone.utc) - timedelta(**{units[age[2]]: int(age[1])})
        else:
            dt = from_iso(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
        return format_time(dt)
    except ValueError:
        raise InputError(
            f"{field}: {text[:40]!r} is not an ISO-8601 time (2024-05-01, 2024-05-01T12:00:00Z) "
            "or an age like 7d") from None
    except OverflowError:
        raise InputError(f"{field}: {text[:40]!r} is out of range: times must fall between "
                         "0001-01-01 and 9999-12-31 UTC") from None


def parse_days(age, *, field):
    """A positive span like 3d, 36h or 1w, as days."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([hdw])", str(age).strip())
    if not match or float(match[1]) <= 0:
        raise InputError(f"{field}: {str(age)[:40]!r} is not a span like 3d, 36h or 1w")
    return float(match[1]) * {"h": 1 / 24, "d": 1, "w": 7}[match[2]]


def local_time(value):
    """A stored UTC time (see now()) as this machine's local time, 'YYYY-MM-DD HH:MM:SS'
    (the zone is the TZ environment's); anything else is returned as it is."""
    try:
        dt = from_iso(value)
    except (TypeError, ValueError):
        return value
    try:
        return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # beyond what the local clock can show
        return value


def local_zone():
    """This machine's local zone as shown next to local times: 'CET, UTC+01:00'."""
    dt = datetime.now().astimezone()
    offset = dt.strftime("%z")
    return f"{dt.tzname()}, UTC{offset[:3]}:{offset[3:]}"
