"""Every command's `--help`, compared with tests/help.txt: moving code must not change the CLI.

After a deliberate change of a command or its help, rewrite the file with
`RAVANA_DB_WRITE_HELP=1 .venv/bin/pytest tests/test_help.py` and review the diff.
"""

import os
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from ravana_db.cli import app
from ravana_db.tables import TABLES

GOLDEN = Path(__file__).with_name("help.txt")


def command_paths(command, path=()):
    yield path
    if hasattr(command, "list_commands"):
        context = command.make_context("ravana-db", ["--help"], resilient_parsing=True)
        for name in sorted(command.list_commands(context)):
            yield from command_paths(command.get_command(context, name), path + (name,))


def all_help():
    runner = CliRunner()
    env = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    parts = []
    export_tables = [("export", name) for name in [*TABLES, "all"]]  # made on demand, not listed
    for path in [*command_paths(typer.main.get_command(app)), *export_tables]:
        result = runner.invoke(app, [*path, "--help"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (path, result.output)
        parts.append(f"=== ravana-db {' '.join(path)} --help\n{result.output}")
    return "\n".join(parts)


def test_every_commands_help_is_unchanged():
    text = all_help()
    if os.environ.get("RAVANA_DB_WRITE_HELP"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
