"""Opening the server for the read commands: one read-only connection, and the synced files
they ask about (--file)."""

import sys

from ..db import masked
from ..errors import InputError, RavanaError

CONNECT_TIMEOUT = 10  # seconds; a PGCONNECT_TIMEOUT or connect_timeout in the URL wins


class Server:
    """A connection to the server and the files chosen: file_ids (None: every file) and
    names {file_id: name} of every synced file."""

    def __init__(self, conn, url, *, file_ids, names):
        self.conn, self.url, self.file_ids, self.names = conn, url, file_ids, names

    def close(self):
        self.conn.close()


def open_server(url, *, files=None):
    """Connect to url (libpq's URL: sslmode, sslrootcert and the rest pass through as given)
    read-only, and choose the synced files named in `files` (a list of names, each may be a
    comma list; None or empty: every file).

    A server without ravana-db's tables, or a name no synced file has, is an InputError;
    a server that cannot be reached a RavanaError, shown without the URL's password.
    """
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True,
                               **({} if "connect_timeout" in url else
                                  {"connect_timeout": CONNECT_TIMEOUT}))
    except psycopg.Error as e:
        raise RavanaError(f"cannot connect to {masked(url)}: {_said(e, url)}") from None
    except Exception as e:  # a malformed URL: libpq's parser says why
        raise InputError(f"{masked(url)} is not a PostgreSQL URL libpq can read: "
                         f"{_said(e, url)}") from None
    try:
        conn.execute("SET default_transaction_read_only = on")
        if conn.execute("SELECT to_regclass('ravana_file')").fetchone()[0] is None:
            raise InputError(f"{masked(url)} holds no ravana-db files yet: run "
                             "`ravana-db --db FILE sync URL` first")
        names = dict(conn.execute("SELECT file_id, name FROM ravana_file ORDER BY name"))
        file_ids = choose(names, files)
    except BaseException:
        conn.close()
        raise
    return Server(conn, url, file_ids=file_ids, names=names)


def choose(names, files):
    """The file ids named by --file (each value may be a comma list), or None for every file.
    An unknown name is an InputError that lists the synced files."""
    wanted = [n.strip() for value in files or () for n in value.split(",") if n.strip()]
    if not wanted:
        return None
    by_name = {name: file_id for file_id, name in names.items()}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        synced = ", ".join(sorted(by_name)) or "none yet"
        raise InputError(f"file: no synced file is named {unknown[0]!r} (synced: {synced})")
    return list(dict.fromkeys(by_name[n] for n in wanted))


def server_error(e, url=None):
    """The one line that says what went wrong for a server's error, or None when e is not
    one (psycopg is only looked at when something already imported it)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(e, psycopg.Error):
        return None
    return f"server: {_said(e, url)}"


def _said(e, url):
    """An error's first line, with the URL's password (if it appears) masked."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    password = _password(url) if url else None
    return text.replace(password, "***") if password else text


def _password(url):
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url).get("password")
    except Exception:
        return None
