"""The SQLite driver this package uses, and a runner for SQL scripts inside a transaction."""


def driver():
    """The DB-API module: pysqlite3 where installed (it can load extensions), else the stdlib."""
    try:
        import pysqlite3.dbapi2 as sqlite3
    except ImportError:  # pragma: no cover - pysqlite3-binary is a dependency
        import sqlite3
    return sqlite3


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
