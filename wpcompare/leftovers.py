"""Nothing left behind: private directories that name their owner, removed by the next
command when that owner died without cleaning up (SIGKILL), and SIGTERM/SIGHUP turned into
an orderly exit that runs every cleanup, as Ctrl-C does.
"""
import contextlib
import os
import re
import shutil
import signal
import tempfile

PREFIX = "wpcompare-cycle-"                  # cycle's images, in the temp dir or --dir
WRITTEN_PREFIX = ".wpcompare-written-"      # --cache written's copy, beside the image
CHECK_PREFIX = "wpcompare-check-"           # check's images, in the temp dir
_OWNED = re.compile(f"(?:{re.escape(PREFIX)}|{re.escape(WRITTEN_PREFIX)}|{re.escape(CHECK_PREFIX)})"
                    + r"(\d+)-[A-Za-z0-9_]+$")


def private_directory(parent, prefix=PREFIX):
    """A new directory in parent (None: the temp dir) whose name carries this process's pid."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)


class interruptions_held:
    """SIGINT, SIGTERM and SIGHUP held back while the block runs, delivered when it ends: for
    the steps between making something and owning its cleanup."""

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *TERMINATING})

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


@contextlib.contextmanager
def owned_directory(parent=None, prefix=PREFIX):
    """A private_directory removed when the block ends, however it ends. Interruptions are held
    while it is made and let through inside the try that removes it, so none can fall between
    the directory's making and its removal's being due (the Python handler runs at the first
    bytecode after the mask is lifted: in the try)."""
    held = interruptions_held()
    held.__enter__()
    try:
        directory = private_directory(parent, prefix)
    except BaseException:
        held.__exit__()
        raise
    try:
        held.__exit__()
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True      # someone else's process: alive
    return True


def remove_stale(parents):
    """Remove this user's private directories in parents whose owner process is gone;
    the paths removed. Directories of live processes, of other users, and names that
    do not carry a pid are left alone."""
    removed = []
    for parent in dict.fromkeys(parent or tempfile.gettempdir() for parent in parents):
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            match = _OWNED.match(entry.name)
            if not match or int(match.group(1)) == os.getpid():
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.is_dir(follow_symlinks=False) or info.st_uid != os.geteuid():
                continue
            if _alive(int(match.group(1))):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                removed.append(entry.path)
    return removed


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so every finally runs."""

    def __init__(self, number):
        super().__init__(number)
        self.number = number


def _raise_terminated(number, frame):
    raise Terminated(number)


TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def install_termination_handlers():
    """In the main process: SIGTERM and SIGHUP raise Terminated (workers reset them)."""
    for number in TERMINATING:
        signal.signal(number, _raise_terminated)


def default_termination_handlers():
    """In a worker: die from SIGTERM/SIGHUP as a process does by default."""
    for number in TERMINATING:
        signal.signal(number, signal.SIG_DFL)
