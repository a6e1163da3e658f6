"""The SQLite driver this package uses, and a runner for SQL scripts inside a transaction.

Two drivers: pysqlite3 for plain files, sqlcipher3 (SQLCipher 4) once a key is in use. A
process uses one of them: sqlite-vec keeps the SQLite API it was loaded with in a global, so
loading it through both libraries in one process crashes it (a copy of its .so does not help:
SQLite loads extensions RTLD_GLOBAL, and the copy binds to the first one's global).
"""

import copy
import hashlib
import sys

from .errors import RavanaError

CIPHER = "sqlcipher3.dbapi2"
PLAIN = "pysqlite3.dbapi2"
_state = {"cipher": False, "vec": None}
# SQLCipher decrypts a page on each read from the file (no memory map): keep more of them
# decrypted (a bound: memory is taken only as pages are read).
CIPHER_CACHE_KIB = 256 * 1024
# How a file is encrypted. SQLCipher stores none of it in the file: a connection must be given
# the settings the file was written with. Both use SQLCipher 4's AES-256-CBC with a random IV
# per page, and its key derivation (a passphrase: PBKDF2-HMAC-SHA512, 256,000 iterations).
# "16k-sha256" (every file encrypted since; the first tried) authenticates each 16 KiB page
# with HMAC-SHA256: a page read from the file costs a third of SQLCipher 4's defaults
# ("sqlcipher4": 4 KiB pages, HMAC-SHA512; files encrypted before), whose per-page work was
# most of what an encrypted query paid over a plain one (bench/crypt_bench.py).
FORMATS = {"16k-sha256": ("cipher_default_compatibility = 4", "cipher_default_page_size = 16384",
                          "cipher_default_hmac_algorithm = HMAC_SHA256"),
           "sqlcipher4": ("cipher_default_compatibility = 4",)}
NEWEST = "16k-sha256"


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


def use_format(name):
    """Make FORMATS[name] the settings of every key this process gives from now on: to a
    connection (keyed), to ATTACH ... KEY and to VACUUM INTO's copy (SQLCipher's
    process-wide defaults; a connection already keyed keeps its own)."""
    conn = driver().connect(":memory:")
    try:
        for pragma in FORMATS[name]:
            conn.execute(f"PRAGMA {pragma}")
    finally:
        conn.close()
    _state["format"] = name


def derived(key, path):
    """key, for the existing encrypted file at path: a passphrase becomes the raw key (with the
    file's salt, its first 16 bytes) that SQLCipher derives from it (PBKDF2-HMAC-SHA512,
    256,000 iterations, in both FORMATS), derived once here rather than by every connection
    and format tried (0.15 s each). A raw key, or a new file (SQLCipher makes its salt), keeps
    key. The derived key lives in this process's memory only, as the passphrase does."""
    if key.raw:
        return key
    try:
        with open(path, "rb") as f:
            salt = f.read(16)
    except OSError:  # SQLite's open says why, in one line
        return key
    if len(salt) < 16:
        return key
    raw = hashlib.pbkdf2_hmac("sha512", key.text.encode(), salt, 256_000, 32)
    found = copy.copy(key)
    found.raw, found.text = True, f"x'{raw.hex()}{salt.hex()}'"
    found.literal = f'"{found.text}"'
    return found


def keyed(conn, key):
    """Give a new connection its key (first, before anything reads the file), in the format
    use_format() chose, and the larger page cache an encrypted file needs; nothing for key
    None. Returns whether the connection reads its file (False: a wrong key or format; other
    failures, a locked file, are left to the caller's first read)."""
    if key is None:
        return True
    # SQLCipher logs a wrong key's failures to stderr: the error we raise is the one line.
    conn.execute("PRAGMA cipher_log_level = NONE")
    conn.execute(f"PRAGMA key = {key.literal}")
    try:
        conn.execute(f"PRAGMA cache_size = -{CIPHER_CACHE_KIB}")  # reads the schema
    except driver().DatabaseError as e:
        return "not a database" not in str(e)
    return True


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
