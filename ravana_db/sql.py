"""The SQLite driver this package uses, and a runner for SQL scripts inside a transaction.

Two drivers: pysqlite3 for plain files, sqlcipher3 (SQLCipher 4) once a key is in use. A
process uses one of them: sqlite-vec keeps the SQLite API it was loaded with in a global, so
loading it through both libraries in one process crashes it (a copy of its .so does not help:
SQLite loads extensions RTLD_GLOBAL, and the copy binds to the first one's global).
"""

import sys

from .errors import RavanaError

CIPHER = "sqlcipher3.dbapi2"
PLAIN = "pysqlite3.dbapi2"
_state = {"cipher": False, "vec": None}


def driver():
    """The DB-API module: sqlcipher3 once use_cipher() was called, else pysqlite3 where
    installed (it can load extensions), else the stdlib."""
    if _state["cipher"]:
        import sqlcipher3.dbapi2 as sqlite3

        return sqlite3
    try:
        import pysqlite3.dbapi2 as sqlite3
    except ImportError:  # pragma: no cover - pysqlite3-binary is a dependency
        import sqlite3
    return sqlite3


def use_cipher():
    """Make sqlcipher3 this process's driver (a key is in use). Refused once sqlite-vec was
    loaded through the plain driver: that mix crashes."""
    if _state["vec"] not in (None, CIPHER):
        raise RavanaError("this process already opened a plain database file; an encrypted one "
                          "cannot be opened beside it (sqlite-vec serves one SQLite library per "
                          "process): use a separate ravana-db command")
    try:
        import sqlcipher3.dbapi2  # noqa: F401
    except ImportError:
        raise RavanaError("an encrypted file needs sqlcipher3: "
                          "`pip install 'sqlcipher3>=0.6.4'`") from None
    _state["cipher"] = True


def vec_loaded():
    """Note that sqlite-vec is being loaded through driver(); refuse the second library (see
    the module's note)."""
    name = CIPHER if _state["cipher"] else PLAIN
    if _state["vec"] not in (None, name):
        raise RavanaError("this process already opened an encrypted database file; a plain one "
                          "cannot be opened beside it (sqlite-vec serves one SQLite library per "
                          "process): use a separate ravana-db command")
    _state["vec"] = name


def driver_error(name="Error"):
    """The exception class `name` (Error, DatabaseError, ...) of every driver this process
    has imported, as a tuple for `except`."""
    found = tuple(getattr(sys.modules[m], name) for m in (CIPHER, PLAIN, "sqlite3")
                  if m in sys.modules)
    return found or (getattr(driver(), name),)


def statements(sql):
    """The complete statements of a script, one by one."""
    statement = ""
    for line in sql.splitlines(keepends=True):
        statement += line
        if driver().complete_statement(statement):
            yield statement.strip().rstrip(";")
            statement = ""


def run_script(conn, sql):
    """Execute statements one by one (executescript would COMMIT the migration's transaction)."""
    for statement in statements(sql):
        conn.execute(statement)


# Authorizer action codes (sqlite3.h) that change a database: schema, rows, statistics.
WRITES = {1, 2, 7, 8, 9, 10, 11, 16, 17, 18, 23, 26, 27, 28, 29, 30}


def read_only_connection(conn):
    """Refuse, on this connection, every change to the file (database `main`), while TEMP
    tables (search's scratch FTS5 vocabulary) still work; PRAGMA query_only would refuse
    those too."""
    def authorize(action, arg1, arg2, database, trigger):
        return 1 if action in WRITES and database == "main" else 0  # 1: SQLITE_DENY

    conn.set_authorizer(authorize)
