"""Where `-o FILE` writes, and what happens when it cannot.

What `-o` does with what is already there (README, "Commands"):
- nothing there (or a symlink to nothing): a new regular file is made, at the symlink's
  target for a dangling symlink, written whole and renamed into place;
- a regular file, or a symlink to one: the symlink is followed, and the target is replaced
  atomically in its own directory (a temporary file renamed over it); the new file keeps the
  old one's mode and, where this user may set them, its owner and group (else a note says so);
- a character device (`/dev/null`, a terminal) or a FIFO, directly or through a symlink: it is
  opened and written, never replaced;
- a directory, a block device or a socket: refused before anything runs.

When the write fails after the runs (a full disk, a directory removed mid-run), the
measurements are not lost: the whole document is kept as JSON in the first of
$XDG_CACHE_HOME/wpcompare/results, the temporary directory or the current directory that
takes it, and the error line says where.
"""
import errno
import os
import stat
import sys
import tempfile
import time

from wpcompare.errors import InvalidArgument

_DIRECT = {stat.S_IFCHR: "character device", stat.S_IFIFO: "FIFO"}
_REFUSED = {stat.S_IFDIR: "a directory", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _kind(path):
    """The file type path leads to (following symlinks), or None if there is nothing."""
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def check_output(value):
    """The absolute path -o may write, or InvalidArgument naming why not and the fix."""
    path = os.path.abspath(value)
    try:
        kind = _kind(path)
    except OSError as error:
        raise InvalidArgument(f"cannot use {value!r} as output: {error.strerror}") from None
    if kind in _REFUSED:
        raise InvalidArgument(f"{value!r} is {_REFUSED[kind]}: give a file name")
    if kind in _DIRECT:
        if not os.access(path, os.W_OK):
            raise InvalidArgument(f"{value!r} ({_DIRECT[kind]}) is not writable by this user")
        return path
    parent = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(parent):
        raise InvalidArgument(f"directory {parent!r} does not exist: create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgument(f"directory {parent!r} is not writable")
    return path


def write_export(path, data):
    """Write data (text or bytes) to path as the module docstring says.

    Returns a note for the user when the replacement could not keep the old file's
    owner, else None. Raises OSError when the write fails, leaving no temporary file and
    the old file as it was."""
    blob = data.encode() if isinstance(data, str) else data
    path = os.path.abspath(path)
    kind = _kind(path)
    if kind in _DIRECT:
        _write_direct(path, blob)
        return None
    if kind in _REFUSED:
        raise IsADirectoryError(errno.EISDIR, f"is {_REFUSED[kind]}", path)
    target = os.path.realpath(path)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".wpcompare-", suffix=".tmp")
    note = None
    try:
        if old is not None:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, old.st_uid, old.st_gid)
                except PermissionError:
                    note = (f"{target} was owned by uid {old.st_uid} gid {old.st_gid}; "
                            f"the new file is owned by uid {os.geteuid()} (only root may keep the owner)")
        else:
            # mkstemp makes the file 0600; give it the mode a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        _write_all(fd, blob)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temporary, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(temporary)
        raise
    return note


def _write_direct(path, blob):
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _write_all(fd, blob)
    finally:
        os.close(fd)


def _write_all(fd, blob):
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view):]


def keep_safe(text, kind="run"):
    """Write text where it survives a failed -o; the path, or None if nowhere took it."""
    from wpcompare import cache
    from wpcompare.errors import WpcError

    name = f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
    places = [tempfile.gettempdir(), os.getcwd()]
    try:
        places.insert(0, cache.trusted_dir() / "results")   # only a cache that is yours alone
    except WpcError:
        pass
    for place in places:
        try:
            os.makedirs(place, mode=0o700, exist_ok=True)
            if os.path.islink(place):
                continue
            path = os.path.join(place, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            _write_all(fd, text.encode())
            os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(path)
            continue
        os.close(fd)
        return path
    return None


def silence_stdout():
    """After a failed write to stdout: point it at /dev/null so the interpreter's final
    flush of what is still buffered cannot fail again (a second traceback, exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
