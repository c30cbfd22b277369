"""Run a command with userfaultfd(2) refused by a seccomp filter (a test helper).

    python seccomp_exec.py EPERM|ENOSYS COMMAND [ARGS...]

The filter returns that errno for userfaultfd(2) and allows every other system
call; it is inherited by COMMAND and its children (PR_SET_NO_NEW_PRIVS first, so
no privilege is needed). Exit status 3 if the filter cannot be installed here.
"""
import ctypes
import errno
import os
import platform
import struct
import sys

# Architecture (AUDIT_ARCH_*) and userfaultfd's system call number on it.
ARCHES = {"x86_64": (0xC000003E, 323), "aarch64": (0xC00000B7, 282)}
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def install(error):
    arch, number = ARCHES[platform.machine()]
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),            # seccomp_data.arch
        (BPF_JEQ_K, 1, 0, arch),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_LD_W_ABS, 0, 0, 0),            # seccomp_data.nr
        (BPF_JEQ_K, 0, 1, number),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | error),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    buffer = ctypes.create_string_buffer(fprog)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(buffer), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


if __name__ == "__main__":
    try:
        install(getattr(errno, sys.argv[1]))
    except (KeyError, OSError) as failure:
        print(f"cannot install the seccomp filter: {failure}", file=sys.stderr)
        sys.exit(3)
    os.execvp(sys.argv[2], sys.argv[2:])
