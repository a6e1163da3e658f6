"""Files and folders that appear complete or not at all: written under a temporary name beside
their target, synced, then renamed into place; a failure leaves nothing behind."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..db import remove_ours, still_ours
from ..errors import InputError, RavanaError


def check_file(path, *, force):
    """Refuse an output file whose folder is missing, that is a folder, or that exists
    (without force)."""
    _check_parent(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a file name (a folder is for `export all`)")
    if os.path.lexists(path) and not force:
        raise InputError(f"{path} exists: pass --force to replace it")


def check_folder(path, *, force, names):
    """Refuse an output folder whose parent is missing, that is a file or a link, that holds
    anything (without force), or (with force) holds a folder where a file of names goes."""
    _check_parent(path)
    if path.is_symlink():
        raise InputError(f"{path} is a symlink: give the folder's own path")
    if os.path.lexists(path) and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder")
    entries = sorted(os.listdir(path)) if path.is_dir() else []
    if entries and not force:
        raise InputError(f"{path} is not empty: pass --force to replace an earlier export there")
    for name in names:
        if (path / name).is_dir():
            raise InputError(f"{path / name} is a folder, where the export writes a file: move "
                             "it, or give another folder")


def _check_parent(path):
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")


def temp_file(target):
    """A new empty file beside target: 0600, O_EXCL|O_NOFOLLOW (mkstemp). Returns (fd, path)."""
    try:
        return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"cannot write {target}: {_why(e)}") from None


def _why(error):
    return (error.strerror or str(error)).lower()


def sync(fd, target):
    """fsync a file we write; a failure is one line naming target."""
    try:
        os.fsync(fd)
    except OSError as e:
        raise RavanaError(f"cannot write {target}: {_why(e)}") from None


def publish(temp, target, *, force):
    """Rename temp to target; without force never over a file that appeared meanwhile."""
    try:
        if force:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # fails if target exists, unlike rename
            except FileExistsError:
                raise InputError(f"{target} exists: pass --force to replace it") from None
            except OSError:  # a file system without hard links
                if os.path.lexists(target):
                    raise InputError(f"{target} exists: pass --force to replace it") from None
                os.replace(temp, target)
            else:
                os.unlink(temp)
        _sync_folder(target.parent)
    except OSError as e:
        raise RavanaError(f"cannot write {target}: {_why(e)}") from None


def _sync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def new_file(path, *, force):
    """A text file that appears at path, complete, only if the block succeeds."""
    fd, temp = temp_file(path)
    made = os.fstat(fd)
    try:
        with _writing(path), os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        still_ours(temp, made, doing=f"write {path}")
        publish(temp, path, force=force)
    except BaseException:
        remove_ours(temp, made)
        raise


@contextlib.contextmanager
def private_file(path, shown):
    """A new 0600 text file inside our own temporary folder (shown: its name in messages)."""
    with _writing(shown):
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def _writing(path):
    """A failed write (a full disk, a file size limit) as one line."""
    try:
        yield
    except OSError as e:
        raise RavanaError(f"cannot write {path}: {_why(e)}") from None


@contextlib.contextmanager
def new_folder(path, *, force, marker):
    """A folder that appears at path, complete, only if the block succeeds: written as a
    temporary folder beside it (0700), then renamed; an earlier export there (with force) is
    moved aside and removed only once the new one is in place.

    marker: the file whose presence says the folder is complete (export's manifest).
    """
    try:
        temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise InputError(f"cannot write {path}: {_why(e)}") from None
    try:
        yield temp
        with _writing(path):
            _sync_folder(temp)
            _move_in(temp, path, force=force, marker=marker)
            _sync_folder(path.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _move_in(temp, path, *, force, marker):
    """Put the files written in temp at path: the folder renamed, where path is new or empty;
    else (with force) each file renamed over its namesake, the marker removed first and
    renamed last (a folder left without one is never read as a complete export), and nothing
    else in the folder touched."""
    try:
        os.rename(temp, path)  # over nothing, or over an empty folder
        return
    except OSError as e:
        if not (force and path.is_dir() and os.listdir(path)):
            if os.path.isdir(path) and os.listdir(path):
                raise InputError(f"{path} is not empty: pass --force to replace an earlier "
                                 "export there") from None
            raise RavanaError(f"cannot write {path}: {_why(e)}") from None
    names = sorted(os.listdir(temp), key=lambda name: name == marker)
    check_folder(path, force=True, names=names)  # still no folder in the way
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / marker)
    for name in names:
        os.replace(temp / name, path / name)
    os.rmdir(temp)
    _sync_folder(path)
