"""`ravana-db encrypt`, `decrypt` and `rekey`: convert the file in place, safely."""

from typing import Annotated

import typer

from ..db import existing, resolve_path
from ..errors import InputError
from .common import Command, app, notice

KEY_NEEDED = ("give the key with --key-file PATH (before the command), $RAVANA_DB_KEY_FILE or "
              "$RAVANA_DB_KEY")


@app.command(cls=Command)
def encrypt(ctx: typer.Context):
    """Encrypt the file in place with the key given (SQLCipher 4): a new file is written beside
    it, checked, and swapped in; from then on every command needs the key.

    Example: ravana-db --db agent.db --key-file ~/.config/ravana-db/key encrypt
    """
    _convert(ctx, key=None, new_key=_key(ctx, "encrypt"), done="encrypted")


@app.command(cls=Command)
def decrypt(ctx: typer.Context):
    """Decrypt the file in place (the key given opens it): a plain SQLite file again.

    Example: ravana-db --db agent.db --key-file ~/.config/ravana-db/key decrypt
    """
    _convert(ctx, key=_key(ctx, "decrypt"), new_key=None, done="decrypted")


@app.command(cls=Command)
def rekey(
    ctx: typer.Context,
    new_key_file: Annotated[str, typer.Option(
        "--new-key-file", metavar="PATH", help="the file holding the new key (mode 0600)")],
):
    """Encrypt the file in place with a new key (the key given opens it).

    Example: ravana-db --db agent.db --key-file old.key rekey --new-key-file new.key
    """
    from ..keys import read

    key = _key(ctx, "rekey")
    _convert(ctx, key=key, new_key=read(new_key_file, "--new-key-file"), done="re-keyed")


def _key(ctx, command):
    """The key given, once the file is known to exist (a wrong path is said first)."""
    existing(resolve_path(ctx.obj["db"]))
    if ctx.obj["key"] is None:
        raise InputError(f"{command} needs a key: {KEY_NEEDED}")
    return ctx.obj["key"]


def _convert(ctx, *, key, new_key, done):
    from ..crypt import convert

    report = convert(resolve_path(ctx.obj["db"]), key=key, new_key=new_key)
    notice(ctx, f"{done} {report['file']}: {report['tables']} tables, {report['rows']:,} rows "
           f"checked, {report['bytes']:,} bytes (encryption: {report['encryption']})")
