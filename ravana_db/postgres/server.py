"""Connections to the PostgreSQL server: one function opens one, and every error that reaches
the user names the server by its masked URL (no password, no parameter values)."""

from ..db import masked
from ..errors import InputError, RavanaError

CONNECT_TIMEOUT = 10  # seconds: an unreachable server fails the command instead of hanging


def is_url(value):
    """Whether value names a PostgreSQL server (postgresql:// or postgres://)."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def secret(url):
    """The password url carries, if any (so that an error quoting it can hide it)."""
    import psycopg

    try:
        return psycopg.conninfo.conninfo_to_dict(url).get("password") or None
    except psycopg.Error:
        return None


def scrubbed(message, url):
    """message with url's password replaced by *** (a server's error may quote it)."""
    password = secret(url)
    message = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    return message.replace(password, "***") if password else message


def connect(url):
    """An autocommit psycopg connection to url; sslmode and the other parameters pass to libpq
    untouched. A URL that is not a server's, or a server that cannot be reached, is one line
    naming it masked."""
    import psycopg

    if not is_url(url):
        raise InputError(f"{masked(str(url))!r} is not a postgresql:// URL")
    timeout = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT}
    try:
        return psycopg.connect(url, autocommit=True, **timeout)
    except psycopg.Error as e:
        raise RavanaError(f"cannot connect to {masked(url)}: {scrubbed(e, url)}") from None
