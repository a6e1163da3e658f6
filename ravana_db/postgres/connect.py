"""Opening the server for the read commands: one read-only connection, and the synced files
they ask about (--file)."""

import sys

from ..db import masked
from ..errors import InputError


class Server:
    """A connection to the server and the files chosen: file_ids (None: every file) and
    names {file_id: name} of every synced file."""

    def __init__(self, conn, url, *, file_ids, names, version=None):
        self.conn, self.file_ids, self.names = conn, file_ids, names
        self.masked_url = masked(url)
        self.version = version  # the server's schema version (word search needs 2)

    def close(self):
        self.conn.close()


def open_server(url, *, files=None):
    """Connect to url (server.connect: sslmode and the rest pass through to libpq) read-only,
    and choose the synced files named in `files` (a list of names, each may be a comma list;
    None or empty: every file).

    A server without ravana-db's schema, or a name no synced file has, is an InputError.
    """
    from .schema import VERSION, version
    from .server import connect

    conn = connect(url)
    try:
        conn.execute("SET default_transaction_read_only = on")
        found = version(conn)
        if found == 0:
            raise InputError(f"{masked(url)} holds no ravana-db files yet: run "
                             "`ravana-db --db FILE sync URL` first")
        if found > VERSION:
            raise InputError(f"{masked(url)} has ravana-db schema version {found}, newer than "
                             f"this ravana-db reads ({VERSION}): upgrade ravana-db")
        names = dict(conn.execute("SELECT file_id, name FROM ravana_file ORDER BY name"))
        file_ids = choose(names, files)
    except BaseException:
        conn.close()
        raise
    return Server(conn, url, file_ids=file_ids, names=names, version=found)


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
    chosen = list(dict.fromkeys(by_name[n] for n in wanted))
    return None if len(chosen) == len(names) else chosen  # every file: no filter to apply


def server_error(e):
    """The one line that says what went wrong for a server's error, or None when e is not
    one (psycopg is only looked at when something already imported it)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(e, psycopg.Error):
        return None
    lines = str(e).strip().splitlines()
    return f"server: {lines[0] if lines else type(e).__name__}"
