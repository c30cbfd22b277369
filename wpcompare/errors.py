"""Exceptions raised by the driver.

The C core reports failures as -errno plus a one-line reason; the class tells
the caller what to do about it (skip the strategy, fix the input, report a
wrong result) without string matching on the reason.
"""
import errno as _errno
import os


class WpcError(Exception):
    """Base class: a failure with a one-line reason a person can act on."""

    def __init__(self, reason, errno=None):
        super().__init__(reason)
        self.reason = reason
        self.errno = errno


class UnsupportedError(WpcError):
    """This kernel or these privileges cannot do it (EOPNOTSUPP, ENOSYS, EPERM)."""


class InvalidArgument(WpcError):
    """The request itself is wrong: bad parameter, unknown name (EINVAL, ENOENT)."""


class VerificationError(WpcError):
    """The restored bytes differ from the image (EIO): the strategy is wrong."""


class ResourceError(WpcError):
    """The machine ran out of something: memory, huge pages, mappings (ENOMEM)."""


class ImageError(InvalidArgument):
    """The image file cannot be used, or its page cache cannot be put in the asked state."""


class CacheStateError(ImageError):
    """The image's page cache could not be put into the state asked for (e.g. it cannot be evicted)."""


_CLASS_BY_ERRNO = {
    _errno.EOPNOTSUPP: UnsupportedError,
    _errno.ENOSYS: UnsupportedError,
    _errno.EPERM: UnsupportedError,
    _errno.EACCES: UnsupportedError,
    _errno.EINVAL: InvalidArgument,
    _errno.ENOENT: InvalidArgument,
    _errno.EIO: VerificationError,
    _errno.ENOMEM: ResourceError,
    _errno.ENOSPC: ResourceError,
    _errno.EMFILE: ResourceError,
    _errno.EAGAIN: ResourceError,
}


def error_for_errno(errno, reason):
    """The exception for a C call that returned -errno with this reason."""
    if not reason:
        reason = f"{_errno.errorcode.get(errno, errno)}: {os.strerror(errno)}"
    return _CLASS_BY_ERRNO.get(errno, WpcError)(reason, errno)
