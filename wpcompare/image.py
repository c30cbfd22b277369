"""The image file: a user's file checked for use, or a generated one in the per-user cache.

Also the page-cache state of the image, which every measurement depends on:
`hot` reads the image once before the runs; `cold` evicts it before each run
and checks with mincore that the eviction worked.
"""
import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Optional

from wpcompare import binding, cache
from wpcompare.errors import ImageError
from wpcompare.options import format_size, human_bytes

PAGE_SIZE = binding.PAGE_SIZE
IMAGE_KINDS = tuple(binding.IMAGE_KINDS)
CACHE_MODES = ("hot", "cold")


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
    return cache.cache_dir()


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


def generated_image(size, seed, kind):
    """The deterministic image for (size, seed, kind), generated once into the cache and
    checked before every later use (wpcompare.cache)."""
    directory = cache.trusted_dir()
    path = directory / f"{kind}-{format_size(size)}-seed{seed}-gen{generator_version()}.img"
    if cache.usable(str(path), size, seed, kind, generator_version()):
        return Image(str(path), size, seed, kind, "cached")
    disk = os.statvfs(directory)
    free = disk.f_bavail * disk.f_frsize
    if free < size:
        raise ImageError(f"the image cache {str(directory)!r} has {human_bytes(free)} free but the "
                         f"{format_size(size)} image needs {human_bytes(size)}: free some space or "
                         "set XDG_CACHE_HOME to a larger filesystem")
    binding.generate_image(path, size, seed, kind)
    cache.record_generated(str(path), size, seed, kind, generator_version())
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


def warm_page_cache(image):
    """Read the whole image once so that every run finds it in the page cache."""
    buffer = bytearray(1 << 20)
    with open(image.path, "rb", buffering=0) as image_file:
        while image_file.readinto(buffer):
            pass


def evict_page_cache(image):
    """Drop the image from the page cache, or raise ImageError saying why it stayed."""
    fd = os.open(image.path, os.O_RDONLY)
    try:
        # Dirty pages (a freshly generated image) survive DONTNEED: write them back first.
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    resident, total = binding.image_residency(image.path)
    if resident:
        filesystem = filesystem_type(image.path) or "this filesystem"
        raise ImageError(
            f"--cache cold: {resident} of {total} pages of {image.path} stayed in the page cache "
            f"after POSIX_FADV_DONTNEED ({filesystem}; tmpfs and ramfs keep files in memory, "
            "and a process mapping the file keeps its pages); use --cache hot or an image on a disk")


def prepare_page_cache(image, mode):
    """Put the image's page cache into `mode` ("hot" or "cold")."""
    if mode == "hot":
        warm_page_cache(image)
    elif mode == "cold":
        evict_page_cache(image)
    else:
        raise ValueError(f"cache mode {mode!r}")
