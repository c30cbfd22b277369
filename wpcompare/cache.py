"""The image cache, trusted only as far as it can be.

- The directory ($XDG_CACHE_HOME/wpcompare, else ~/.cache/wpcompare) must belong to this
  user and be writable by nobody else: anyone who can write there could swap an image or
  plant a symlink. Otherwise it is refused with the fix.
- Beside each generated image NAME.img lies NAME.img.json: the generator's parameters
  (size, seed, kind, generator version) and the identity of the file they were checked
  against (inode, size, mtime and ctime in ns). A cached image whose file still has that
  identity is used as it is (a stat: cheap); any write to it changes its ctime, and then
  (or with no record) the whole file is compared with what the generator makes (the C
  core's image check: ~70 ms for 256 MiB). An image that differs is generated again, and
  wpcompare says so.
- Images and records are opened with O_NOFOLLOW and must be regular files of this user: a
  symlink or anything else planted under an image's name is removed, and said so.
"""
import json
import os
import stat
import sys
import time

from wpcompare import binding
from wpcompare.errors import ImageError
from wpcompare.options import human_bytes

RECORD_SUFFIX = ".json"
RECORD_VERSION = 1


def cache_dir():
    """$XDG_CACHE_HOME/wpcompare, else ~/.cache/wpcompare (XDG ignores relative values)."""
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wpcompare"


def trusted_dir(create=True):
    """The cache directory, made if needed (create), or ImageError saying why it cannot be trusted."""
    directory = cache_dir()
    where = str(directory)
    if create:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise ImageError(f"cannot create the image cache {where!r}: {error.strerror}; "
                             "set XDG_CACHE_HOME to a writable directory or pass --image") from None
    try:
        info = os.stat(directory)
    except OSError as error:
        raise ImageError(f"the image cache {where!r}: {error.strerror}; set XDG_CACHE_HOME to a "
                         "directory of your own or pass --image") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ImageError(f"the image cache {where!r} is not a directory: remove it, or set XDG_CACHE_HOME")
    if info.st_uid != os.geteuid():
        raise ImageError(f"the image cache {where!r} belongs to uid {info.st_uid}, not to you (uid "
                         f"{os.geteuid()}), who could change its images: set XDG_CACHE_HOME to a "
                         "directory of your own")
    if info.st_mode & 0o022:
        raise ImageError(f"the image cache {where!r} is writable by {'others' if info.st_mode & 0o002 else 'its group'} "
                         f"(mode {stat.S_IMODE(info.st_mode):o}), who could change its images: "
                         f"`chmod go-w {where}`")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ImageError(f"the image cache {where!r} is not writable: `chmod u+wx {where}`, or set "
                         "XDG_CACHE_HOME to a writable directory")
    return directory


def _note(text):
    sys.stderr.write(f"note: {text}\n")


def _identity(info):
    return {"inode": info.st_ino, "bytes": info.st_size, "mtime_ns": info.st_mtime_ns,
            "ctime_ns": info.st_ctime_ns}


def _params(size, seed, kind, generator):
    return {"version": RECORD_VERSION, "bytes": size, "seed": seed, "kind": kind, "generator": generator}


def _open_own_file(path):
    """(fd, stat) of path if it is this user's regular file, opened without following a
    symlink; (None, None) if there is nothing; else the thing is removed and said so."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, None
    except OSError:
        info = os.lstat(path)
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "something that cannot be opened"
        _remove(path, f"{path} was {what}, not an image wpcompare made: removed")
        return None, None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        _remove(path, f"{path} was not a regular file of yours: removed")
        return None, None
    return fd, info


def _remove(path, note):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(path)
        os.unlink(path)
    except OSError as error:
        raise ImageError(f"{path} is in the way of a cached image and cannot be removed: "
                         f"{error.strerror}; remove it") from None
    _note(note)


def _read_record(path):
    fd, _ = _open_own_file(path + RECORD_SUFFIX)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as source:
            return json.loads(source.read(1 << 16))
    except (OSError, ValueError):
        return None


def _write_record(path, record):
    temporary = f"{path}{RECORD_SUFFIX}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        os.replace(temporary, path + RECORD_SUFFIX)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def usable(path, size, seed, kind, generator):
    """Whether the cached image at path may be used: True after the cheap check (or the full
    one, then recorded); False if there is none or it differs (said so, and removed)."""
    fd, info = _open_own_file(path)
    if fd is None:
        return False
    os.close(fd)
    params = _params(size, seed, kind, generator)
    record = _read_record(path)
    if info.st_size == size and record == dict(params, file=_identity(info)):
        return True
    if info.st_size == size:
        checked = binding.image_check(path, size, seed, kind, [])
        if checked["verified"]:
            _write_record(path, dict(params, file=_identity(info)))
            return True
        why = (f"{checked['mismatched_pages']} page(s) differ from what its generator makes, "
               f"the first at page {checked['first_mismatch_page']}")
    else:
        why = f"it is {info.st_size} bytes, not {size}"
    _remove(path, f"the cached image {path} was changed since it was made ({why}): generating it again")
    return False


def record_generated(path, size, seed, kind, generator):
    """After generating the image at path: the record the next use checks against."""
    fd, info = _open_own_file(path)
    if fd is None:
        raise ImageError(f"the image just generated at {path} is gone")
    os.close(fd)
    _write_record(path, dict(_params(size, seed, kind, generator), file=_identity(info)))


def entries():
    """The images in the cache: dicts of path, bytes, age_s, and whether a record is beside it."""
    directory = cache_dir()
    found = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    except OSError as error:
        raise ImageError(f"cannot list the image cache {str(directory)!r}: {error.strerror}") from None
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or not name.endswith(".img"):
            continue
        found.append({"path": path, "bytes": info.st_size, "age_s": max(0.0, now - info.st_mtime),
                      "recorded": os.path.exists(path + RECORD_SUFFIX)})
    return found


def clean():
    """Remove every image wpcompare made in the cache (and their records, and unsaved results);
    (files removed, bytes freed)."""
    directory = trusted_dir(create=False) if cache_dir().exists() else None
    if directory is None:
        return 0, 0
    removed = freed = 0
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and (name.endswith(".img") or name.endswith(".img" + RECORD_SUFFIX)
                                           or ".img" + RECORD_SUFFIX + "." in name):
            os.unlink(path)
            removed += 1
            freed += info.st_blocks * 512
    return removed, freed


def describe_entries(found):
    """Lines for `wpcompare cache list`."""
    lines = []
    for entry in found:
        lines.append(f"{human_bytes(entry['bytes']):>10}  {_age(entry['age_s']):>8}  "
                     f"{os.path.basename(entry['path'])}{'' if entry['recorded'] else '  (not checked yet)'}")
    total = sum(entry["bytes"] for entry in found)
    lines.append(f"{len(found)} image(s), {human_bytes(total)} in {cache_dir()}")
    return lines


def _age(seconds):
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit}"
    return f"{seconds:.0f} s"
