"""The consolidation lock: a file beside the database, held with flock for a run."""

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from ..errors import InputError, RavanaError
from ..times import now as utc_now


class Busy(RavanaError):
    """Another consolidation holds the lock: not a failure (exit 0)."""

    exit_code = 0


@contextlib.contextmanager
def run_lock(path, *, wait=False):
    """Hold `DB.consolidate.lock` (0600, never through a symlink) with flock for the run.

    Raises Busy (unless wait) when another process holds it; its pid and start time are in
    the file. The kernel releases the lock when the holder exits, however it exits.
    """
    target = Path(str(Path(path).resolve()) + ".consolidate.lock")
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{target} is a symlink: remove it (the lock is never taken "
                             "through a link)") from None
        raise RavanaError(f"cannot open the lock file {target}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{target} is not a regular file: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            who = f" (pid {holder[0]}, since {holder[1]})" if len(holder) == 2 else ""
            raise Busy(f"another consolidation is running{who}: nothing done; "
                       "use --wait to run after it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {utc_now()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
