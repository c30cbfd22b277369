"""The image file: a user's file checked for use, or a generated one in the per-user cache.

Also the page-cache state of the image, which every lazy strategy's first
access depends on (PageCache).
"""
import functools
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Optional

from wpcompare import binding
from wpcompare import cache as image_cache
from wpcompare import leftovers
from wpcompare.errors import CacheStateError, ImageError, InvalidArgument
from wpcompare.options import format_size, human_bytes, parse_size

PAGE_SIZE = binding.PAGE_SIZE
IMAGE_KINDS = tuple(binding.IMAGE_KINDS)


@dataclass(frozen=True)
class Image:
    path: str
    size: int
    seed: Optional[int]       # generated from this seed; None for a user's file
    kind: Optional[str]       # generator kind; None for a user's file
    origin: str               # "file" (--image), "generated" now, or "cached" from an earlier run

    @property
    def pages(self):
        return -(-self.size // PAGE_SIZE)

    @property
    def tail_bytes(self):
        """Bytes of the last page past the image's end (the C core's tail_bytes)."""
        return -self.size % PAGE_SIZE

    def describe(self):
        return {
            "path": self.path,
            "bytes": self.size,
            "pages": self.pages,
            "tail_bytes": self.tail_bytes,
            "seed": self.seed,
            "kind": self.kind,
            "origin": self.origin,
            "filesystem": filesystem_type(self.path),
        }

    def tail_warning(self):
        if not self.tail_bytes:
            return None
        return (f"the image is {self.size} bytes, not a whole number of {PAGE_SIZE}-byte pages: "
                f"its last page ends with {self.tail_bytes} bytes past the end of the file")


_KIND_OF_FILE = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
    (stat.S_ISSOCK, "is a socket"),
)


def open_user_image(path):
    """The image at path, or ImageError saying in one line why it cannot be one."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"image {path!r} does not exist") from None
    except OSError as error:
        raise ImageError(f"image {path!r}: {error.strerror}") from None
    # Decided from stat alone: opening a FIFO would block, a device would be read.
    for test, what in _KIND_OF_FILE:
        if test(info.st_mode):
            raise ImageError(f"image {path!r} {what}, not a regular file: give a file holding the memory image")
    if info.st_size == 0:
        raise ImageError(f"image {path!r} is empty: an image needs at least one byte")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as error:
        raise ImageError(f"image {path!r} cannot be read: {error.strerror}") from None
    # Resolved here: the C core opens images with O_NOFOLLOW.
    return Image(os.path.realpath(path), info.st_size, None, None, "file")


def cache_dir():
    """$XDG_CACHE_HOME/wpcompare, else ~/.cache/wpcompare (see wpcompare.cache)."""
    return image_cache.cache_dir()


@functools.lru_cache(maxsize=None)
def generator_version():
    """A digest of what the C generator writes, so a changed generator never reuses old files."""
    digest = hashlib.sha256()
    for kind in IMAGE_KINDS:
        for page in range(64):
            digest.update(binding.image_page(1, kind, page))
    return digest.hexdigest()[:8]


def memory_available():
    """MemAvailable of /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_needed(size):
    """Bytes of memory one run of an image of `size` bytes needs: the image in the page cache plus
    its restored copy (a strategy's staging copy, e.g. a memfd, comes on top)."""
    return 2 * size


def check_memory(size, image=None):
    """ImageError, before anything is generated or run, if a run of this size cannot fit in memory."""
    available = memory_available()
    needed = memory_needed(size)
    if available is None or needed <= available:
        return
    what = (f"image {image.path!r} is {human_bytes(size)}" if image is not None
            else f"--size {format_size(size)}")
    fix = "use a smaller image" if image is not None else "use a smaller --size"
    raise ImageError(f"{what}: a run needs about {human_bytes(needed)} of memory (the image in the "
                     f"page cache plus its restored copy) but only {human_bytes(available)} is "
                     f"available (MemAvailable): {fix}")


def _generated_path(directory, size, seed, kind):
    return directory / f"{kind}-{format_size(size)}-seed{seed}-gen{generator_version()}.img"


def ungenerated_image(size, seed, kind):
    """The image generated_image would give, described but not written (origin "not
    generated"): for results whose every row was skipped before anything needed it."""
    return Image(str(_generated_path(cache_dir(), size, seed, kind)), size, seed, kind, "not generated")


def generated_image(size, seed, kind):
    """The deterministic image for (size, seed, kind), generated once into the cache and
    checked before every later use (wpcompare.cache)."""
    directory = image_cache.trusted_dir()
    path = _generated_path(directory, size, seed, kind)
    if image_cache.usable(str(path), size, seed, kind, generator_version()):
        return Image(str(path), size, seed, kind, "cached")
    disk = os.statvfs(directory)
    free = disk.f_bavail * disk.f_frsize
    if free < size:
        raise ImageError(f"the image cache {str(directory)!r} has {human_bytes(free)} free but the "
                         f"{format_size(size)} image needs {human_bytes(size)}: free some space or "
                         "set XDG_CACHE_HOME to a larger filesystem")
    binding.generate_image(path, size, seed, kind)
    image_cache.record_generated(str(path), size, seed, kind, generator_version())
    return Image(str(path), size, seed, kind, "generated")


def filesystem_type(path):
    """The type of the filesystem holding path ("ext4", "tmpfs"), from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best, best_type = "", None
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            for line in mountinfo:
                fields, _, rest = line.partition(" - ")
                mount_point = fields.split()[4].replace("\\040", " ")
                inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, best_type = mount_point, rest.split()[0]
    except (OSError, IndexError):
        return None
    return best_type


READ_BLOCK = 1 << 20


def _evict(path):
    """Drop the file from the page cache; the pages that stayed (mincore) and the total."""
    fd = os.open(path, os.O_RDONLY)
    try:
        # Dirty pages (a file just written) survive DONTNEED: write them back first.
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return binding.image_residency(path)


def _eviction_failure(path, resident, total, mode):
    filesystem = filesystem_type(path) or "this filesystem"
    return (f"--cache {mode}: {resident} of {total} pages of {path} stayed in the page cache after "
            f"POSIX_FADV_DONTNEED ({filesystem}; tmpfs and ramfs keep files in memory, and a process "
            "mapping the file keeps its pages); use an image on a disk filesystem, or stop the process "
            "that maps it")


def _read_back(path):
    """Read the file from start to end, so readahead brings it in as it would for a restore."""
    buffer = bytearray(READ_BLOCK)
    with open(path, "rb", buffering=0) as source:
        os.posix_fadvise(source.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while source.readinto(buffer):
            pass


def _write_copy(source_path, target_path, write_size):
    """target: the source's bytes, written write_size bytes per write() as a checkpointer writes
    its pages, then flushed so no writeback runs during the measurements."""
    with open(source_path, "rb", buffering=0) as source, \
            open(target_path, "xb", buffering=0) as target:
        block = bytearray(max(READ_BLOCK, write_size))
        view = memoryview(block)
        while True:
            got = source.readinto(block)
            if not got:
                break
            for offset in range(0, got, write_size):
                piece = view[offset:min(offset + write_size, got)]
                while piece:
                    piece = piece[target.write(piece):]
        os.fsync(target.fileno())
    # The source is not what the runs read: give its cache back.
    _evict(source_path)


@dataclass(frozen=True)
class CacheMode:
    """A page-cache state a restore meets (see PageCache)."""

    kind: str                   # CACHE_KINDS
    write_size: int = PAGE_SIZE  # "written": bytes per write()

    def __str__(self):
        if self.kind == "written" and self.write_size != PAGE_SIZE:
            return f"written:{format_size(self.write_size)}"
        return self.kind

    def describe(self):
        return CACHE_DESCRIPTIONS[self.kind].format(write=human_bytes(self.write_size))


CACHE_KINDS = ("read", "written", "cold")
CACHE_DESCRIPTIONS = {
    "read": "read back from disk (evicted, then read once in order: readahead, large folios)",
    "written": "just written ({write} per write(), as a checkpointer writes its pages), then flushed",
    "cold": "not cached (evicted before every run)",
}
CACHE_HELP = ("read (evicted, then read back in order: readahead's large folios), written[:SIZE] (a copy "
              "written SIZE bytes per write(), 4K by default: small folios), or cold (evicted before "
              "every run)")


def parse_cache_mode(text):
    """CacheMode from "read", "cold", "written" or "written:SIZE"."""
    kind, sep, arg = str(text).strip().partition(":")
    kind = kind.lower()
    if kind == "hot" and not sep:
        raise InvalidArgument("--cache hot was split by what the page cache holds: use --cache read "
                              "(read back from disk) or --cache written (just written)")
    if kind in ("read", "cold") and not sep:
        return CacheMode(kind)
    if kind == "written":
        size = parse_size(arg) if sep else PAGE_SIZE
        if size % PAGE_SIZE or size > 64 << 20:
            raise InvalidArgument(f"invalid cache mode {text!r}: the SIZE of written:SIZE must be a "
                                  f"multiple of 4K up to 64M")
        return CacheMode("written", size)
    raise InvalidArgument(f"invalid cache mode {text!r}: use {CACHE_HELP}")


class PageCache:
    """Puts the image into one page-cache state and keeps every run of a matrix in it.

    read: evicted, then read back in order, so readahead brings it in as a restore
    from disk finds it (large folios here). written: a copy of the image written
    in small writes into a private directory beside it, as a checkpoint leaves an
    image (small folios); the runs use the copy, which has the image's bytes.
    cold: evicted before every run.

    What the cache held is measured (binding.cache_state: faults and time of one
    read pass over a private mapping, folio sizes where readable) before the
    first run and after the last; before each run the residency is checked and
    the state set again if the kernel evicted anything meanwhile.
    """

    def __init__(self, image, mode):
        self.image = image
        self.mode = mode
        self.path = image.path        # what the runs restore from
        self._directory = None
        self.resets = 0
        self.before = self.after = None

    def __enter__(self):
        try:
            self._establish()
            self.before = self.probe()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _establish(self):
        if self.mode.kind == "written":
            if self._directory is None:
                self._directory = self._private_directory()
            target = os.path.join(self._directory, "image.img")
            if os.path.exists(target):
                os.unlink(target)
            _write_copy(self.image.path, target, self.mode.write_size)
            self.path = target
            return
        resident, total = _evict(self.path)
        if resident:
            raise CacheStateError(_eviction_failure(self.path, resident, total, self.mode))
        if self.mode.kind == "read":
            _read_back(self.path)

    def _private_directory(self):
        parent = os.path.dirname(self.image.path)
        try:
            return leftovers.private_directory(parent, leftovers.WRITTEN_PREFIX)
        except OSError as error:
            raise CacheStateError(
                f"--cache written writes a copy of the image beside it, but {parent!r} refused: "
                f"{error.strerror}; use --cache read or cold, or an image in a writable directory") from None

    def before_run(self):
        """Set the state again where it drifted; CacheStateError if it cannot be set for this run."""
        if self.mode.kind == "cold":
            self._establish()
            return
        resident, total = binding.image_residency(self.path)
        if resident < total:
            self.resets += 1
            self._establish()

    def probe(self):
        return binding.cache_state(self.path)

    def finish(self):
        """Measure the state once more after the last run: it should be what the first one met."""
        if self.mode.kind != "cold":
            self.after = self.probe()

    def describe(self):
        return {"mode": str(self.mode), "kind": self.mode.kind, "state": self.mode.describe(),
                "write_size": self.mode.write_size if self.mode.kind == "written" else None,
                "copy": self.path != self.image.path, "resets": self.resets,
                "before": self.before, "after": self.after}

    def close(self):
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
