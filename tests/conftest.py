import json

import pytest
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.db import open_db


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test starts with no database settings and a fresh working folder."""
    for name in ("RAVANA_DB", "DATABASE_URL", "RAVANA_DB_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "agent.db"


@pytest.fixture
def cli(db_path):
    """Run `ravana-db --db <tmp> ARGS`; returns the click Result (stdout, stderr, exit_code)."""
    runner = CliRunner()

    def run(*args, input=None, db=True):
        argv = (["--db", str(db_path)] if db else []) + [str(a) for a in args]
        return runner.invoke(app, argv, input=input, catch_exceptions=False)

    return run


@pytest.fixture
def rows(db_path):
    """All rows of a table (or a query's rows) as dicts."""

    def read(table_or_sql, *params):
        db = open_db(db_path, create=False)
        sql = table_or_sql if " " in table_or_sql else f"SELECT * FROM [{table_or_sql}]"
        try:
            return [dict(r) for r in db.query(sql, params)]
        finally:
            db.close()

    return read


def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records)
