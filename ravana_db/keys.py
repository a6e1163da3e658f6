"""The key of an encrypted file: from --key-file, $RAVANA_DB_KEY_FILE or $RAVANA_DB_KEY.

A key file holds one line: 64 hex digits (a raw 256-bit key, used as is: opening is fast) or a
passphrase (SQLCipher derives the key with 256,000 PBKDF2 iterations, about 0.1 s per open).
Like ssh with its private keys, a key file that others may read is refused. The key never goes
into an error, argv, a child process's environment, or the file.
"""

import os
import re
import stat

from .errors import InputError

MOST_BYTES = 4096
RAW = re.compile(r"(?:x'([0-9A-Fa-f]{64})'|([0-9A-Fa-f]{64}))")


class Key:
    """A key, ready for SQLCipher: `literal` for PRAGMA key, `text` for ATTACH ... KEY ?.
    `source` names where it came from (for messages), `raw` whether it is a raw key."""

    def __init__(self, secret, source):
        if "\x00" in secret:
            raise InputError(f"the key from {source} contains a NUL character")
        if not secret:
            raise InputError(f"the key from {source} is empty")
        found = RAW.fullmatch(secret)
        self.raw = found is not None
        self.text = f"x'{(found[1] or found[2]).lower()}'" if found else secret
        self.literal = (f'"{self.text}"' if self.raw
                        else "'" + secret.replace("'", "''") + "'")
        self.source = source

    def __repr__(self):
        return f"Key(from {self.source})"


def configured(key_file=None):
    """The key asked for: --key-file (key_file), else $RAVANA_DB_KEY_FILE, else
    $RAVANA_DB_KEY, else None. $RAVANA_DB_KEY is removed from this process's environment
    once read, so that no child process inherits it."""
    secret = os.environ.pop("RAVANA_DB_KEY", None)
    if key_file is not None:
        return read(key_file, "--key-file")
    if os.environ.get("RAVANA_DB_KEY_FILE"):
        return read(os.environ["RAVANA_DB_KEY_FILE"], "RAVANA_DB_KEY_FILE")
    if secret is not None:
        return Key(secret, "RAVANA_DB_KEY")
    return None


def read(path, source):
    """The key in the file at path: this user's regular file, readable by no one else."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise InputError(f"cannot read the key file {path} ({source}): "
                         f"{e.strerror.lower()}") from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise InputError(f"the key file {path} ({source}) is not a regular file")
        if found.st_uid != os.geteuid():
            raise InputError(f"the key file {path} ({source}) belongs to another user "
                             f"(uid {found.st_uid})")
        if found.st_mode & 0o077:
            raise InputError(f"the key file {path} ({source}) can be read by others "
                             f"(mode {found.st_mode & 0o777:04o}): run chmod 600 {path}")
        data = os.read(fd, MOST_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MOST_BYTES:
        raise InputError(f"the key file {path} ({source}) is over {MOST_BYTES} bytes: "
                         "it should hold one line, the key")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InputError(f"the key file {path} ({source}) is not UTF-8 text") from None
    return Key(text.removesuffix("\n").removesuffix("\r"), f"{source} {path}")


def is_plain(path):
    """Whether the file at path starts as a plain SQLite file does (an encrypted one starts
    with random bytes); an empty or missing file counts as neither (False)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def not_a_database(path, key):
    """Why SQLite found no database in the file at path, opened with key (or None)."""
    if key is None:
        return (f"{path} is not a SQLite database (if it is an encrypted one, give its key: "
                "--key-file, RAVANA_DB_KEY_FILE or RAVANA_DB_KEY)")
    return (f"cannot decrypt {path} with the key from {key.source}: a wrong key, or not an "
            "encrypted ravana-db file")
