"""The external summarizer: a command run as a child process, text in, summary out.

Its stdin and stdout are pipes served together (a child that stops reading raises no SIGPIPE
here), under a deadline, in a process group of its own that is killed when it is done.
"""

import os
import selectors
import shlex
import signal
import subprocess
import sys
import time

from ..errors import InputError

TIMEOUT = 30.0
MAX_OUTPUT = 1 << 20  # a summarizer printing more has gone wrong


def summarizer_argv(command):
    """The argument list of a summarizer command (split as a shell would; no shell runs)."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise InputError(f"summarizer: {e}: quote it as a shell would, e.g. "
                         "\"sh -c 'my-llm --summarise'\"") from None
    if not argv:
        raise InputError("summarizer: names no command")
    return argv


# The summarizer runs under this guard, in a process group of its own that the guard leads.
# The kernel sends the guard SIGTERM when ravana-db dies, however it dies (a parent-death
# signal, Linux), and the guard then kills the whole group: no summarizer outlives its run.
GUARD = """
import os, signal, sys
def stop(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, stop)
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # ravana-db died before prctl
    stop()
try:
    pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ,
                          setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
except OSError as e:
    sys.stderr.write(f"cannot run {sys.argv[2]!r}: {e.strerror or e}\\n")
    os._exit(127)
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status):  # die the same way, for the caller to say so
    try:
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
        pass
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""


def run_summarizer(argv, text, *, timeout=TIMEOUT):
    """Run a summarizer: text on its stdin, the summary on its stdout.

    It runs in a process group of its own, so that on a timeout the whole group (a shell and
    what it started) is killed, not only the first process; the group is killed too when the
    summarizer is done, and when ravana-db dies (GUARD). At the deadline it is killed and
    abandoned, even if a process that left the group still holds its output open.

    Returns:
        (summary, None), or (None, why it failed): it could not start, timed out, exited
        non-zero, printed nothing, more than MAX_OUTPUT bytes, or not UTF-8.
    """
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GUARD, str(os.getpid()),
                                 *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return None, f"cannot run {argv[0]!r}: {e.strerror or e}"
    try:
        out, err, why = _exchange(proc, text.encode(), timeout=timeout)
    finally:
        _kill_group(proc)  # before it is reaped: its id cannot name another group yet
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            _close(pipe)
    if why:
        return None, why
    last = err.decode(errors="replace").strip().splitlines()[-1:]
    if proc.returncode == 127 and last and last[0].startswith("cannot run "):
        return None, last[0]  # from GUARD
    if proc.returncode != 0:
        status = (f"exit {proc.returncode}" if proc.returncode > 0
                  else f"killed by signal {-proc.returncode}")
        return None, status + (f": {last[0][:200]}" if last else "")
    try:
        summary = out.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "its output is not UTF-8"
    if not summary:
        return None, "no output"
    return summary, None


def _exchange(proc, data, *, timeout):
    """Write data to a process's stdin while reading its stdout and stderr, until it has
    exited and closed both, or timeout seconds have passed.

    Returns:
        (stdout, the tail of stderr, None), or (what was read, ..., why it was cut short:
        timed out, or printed more than MAX_OUTPUT bytes).
    """
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    into = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with selectors.DefaultSelector() as selector:
        for fd in into:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        if data:
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            _close(proc.stdin)
        sent = 0
        while selector.get_map() or not _exited(proc):
            left = deadline - time.monotonic()
            if left <= 0:
                return out, err, f"timed out after {timeout:g} s"
            # Poll now and then: it may exit while a process it left holds the pipes; more
            # often once they are closed, when it is about to exit.
            for key, _ in selector.select(min(left, 0.05 if selector.get_map() else 0.002)):
                fd = key.fd
                if fd not in into:
                    written = _write(fd, data[sent:sent + (1 << 16)])
                    sent = len(data) if written is None else sent + written
                    if sent >= len(data):  # all given, or it will read no more
                        selector.unregister(fd)
                        _close(proc.stdin)
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    continue
                into[fd] += chunk
                if fd == proc.stderr.fileno():
                    del err[:-4096]
                elif len(out) > MAX_OUTPUT:
                    return out, err, f"printed more than {MAX_OUTPUT} bytes"
    return out, err, None


def _write(fd, data):
    """os.write to a child's pipe: bytes written, 0 when the pipe is full, None when the
    child closed it. SIGPIPE is held back meanwhile: ravana-db keeps its default for stdout
    (a reader that goes away ends it), but a child that reads no more is no reason to end."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:  # EPIPE: it exited, or closed its stdin
        return None
    finally:
        if signal.SIGPIPE in signal.sigpending():  # raised by this write: never deliver it
            signal.sigwait({signal.SIGPIPE})
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _exited(proc):
    """Whether a process has exited, leaving it unreaped (its id stays its own)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _close(pipe):
    try:
        pipe.close()
    except OSError:
        pass


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

