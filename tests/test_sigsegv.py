"""Strategy sigsegv: the shared copy-and-remap suite, and the SIGSEGV handler's hygiene.

Whatever installs a handler or crashes runs in a forked child (harness.in_child, or
harness.exit_status_in_child where it is meant to die); the pytest process never sees the handler.
"""
import ctypes
import errno
import faulthandler
import mmap
import os
import platform
import signal

import pytest

from chunk_suite import (COPIES, ChunkFixupSuite, _held_race, assert_race_kept_every_write,
                         kernel_write_into_region, libc)
from harness import exit_status_in_child, in_child, open_run
from wpcompare import binding
from wpcompare.errors import WpcError


class TestSigsegv(ChunkFixupSuite):
    strategy = "sigsegv"

    @pytest.mark.parametrize("copy", COPIES)
    def test_held_race_two_faults_on_one_chunk(self, make_image, copy):
        """Two writers' SIGSEGV handlers both see the chunk FRESH, then both claim it: one
        must lose and wait, never both copy and remap it (the second remap would move the
        emptied shadow over the first one's pages and the write made into them).
        (uffd-wp serves faults on one handler thread: its faults never race each other.)"""
        image = make_image(1 << 20, kind="random")
        out = in_child(_held_race, (image, "sigsegv", f"chunk=64K,fixup=on-write-only,copy={copy}",
                                    "two-faults"))
        assert out["steps"][:2] == [["claim"], ["claim", "claim"]], out
        assert_race_kept_every_write(out, ["copy", "lost"])


class SigAction(ctypes.Structure):
    """glibc's struct sigaction on x86-64 and arm64: handler, 1024-bit mask, flags, restorer."""
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ubyte * 128),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


libc.sigaction.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def current_sigsegv_action():
    action = SigAction()
    assert libc.sigaction(signal.SIGSEGV, None, ctypes.byref(action)) == 0
    return (action.handler or 0, action.flags)


def _previous_default():
    faulthandler.disable()
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)


def _previous_faulthandler():
    # faulthandler's C handler dumps the stack then re-raises with the default action.
    faulthandler.enable(file=open(os.devnull, "w"))


PREVIOUS = {"default": _previous_default, "faulthandler": _previous_faulthandler}


def _fault_outside_region(spec):
    image, previous, kind = spec
    PREVIOUS[previous]()
    run = open_run(image, "sigsegv", "fixup=on-write-only")
    run.restore()
    addr, _ = run.region()
    # A write inside the region is the handler's to serve: the child lives on.
    libc.memset(addr + 3 * binding.PAGE_SIZE + 7, 0xA5, 1)
    assert ctypes.string_at(addr + 3 * binding.PAGE_SIZE + 7, 1) == b"\xa5"
    if kind == "unmapped":
        libc.memset(16, 0, 1)                                 # SEGV_MAPERR
    elif kind == "readonly":
        page = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        libc.memset(page, 0, 1)                               # SEGV_ACCERR, not our region
    elif kind == "exec-in-region":
        # SEGV_ACCERR inside the region, but a fetch, not a write: a bug, not ours to serve.
        ctypes.CFUNCTYPE(None)(addr + 5 * binding.PAGE_SIZE)()
    else:
        os.kill(os.getpid(), signal.SIGSEGV)                  # SI_USER
    raise AssertionError("survived a SIGSEGV outside the region")


@pytest.mark.parametrize("previous", sorted(PREVIOUS))
@pytest.mark.parametrize("kind", ("unmapped", "readonly", "kill", "exec-in-region"))
def test_sigsegv_outside_the_region_kills_the_child(image, previous, kind):
    if kind == "exec-in-region" and platform.machine() != "x86_64":
        pytest.skip("telling a fetch from a write needs the x86-64 page-fault error code")
    status = exit_status_in_child(_fault_outside_region, (image, previous, kind))
    assert os.WIFSIGNALED(status), f"child exited with status {os.WEXITSTATUS(status)}"
    assert os.WTERMSIG(status) == signal.SIGSEGV


def _handler_states(image):
    """The SIGSEGV disposition before, during and after a run, and what a sent SIGSEGV reached."""
    caught = []
    faulthandler.disable()
    signal.signal(signal.SIGSEGV, lambda signum, frame: caught.append(signum))
    before = current_sigsegv_action()
    with open_run(image, "sigsegv", "chunk=64K") as run:
        run.restore()
        during = current_sigsegv_action()
        # Not a fault in the region: chained to the previous (Python's) handler.
        os.kill(os.getpid(), signal.SIGSEGV)
        run.touch()
        run.fixup()
        run.verify()
        verified = bool(run.result.verified)
    after = current_sigsegv_action()
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    before_default = current_sigsegv_action()
    with open_run(image, "sigsegv", None) as run:
        run.restore()
    after_default = current_sigsegv_action()
    return {"before": before, "during": during, "after": after, "caught": caught,
            "verified": verified, "before_default": before_default,
            "after_default": after_default}


def test_previous_handler_is_back_after_teardown(image):
    out = in_child(_handler_states, image)
    assert out["before"][0] != 0, "Python's handler was not installed"
    assert out["during"] != out["before"], "sigsegv installed no handler"
    assert out["after"] == out["before"]
    assert out["caught"] == [signal.SIGSEGV], "a sent SIGSEGV did not reach the previous handler"
    assert out["verified"]
    assert out["before_default"][0] == 0 and out["after_default"][0] == 0


def _two_regions(image):
    with open_run(image, "sigsegv", None) as first:
        first.restore()
        with open_run(image, "sigsegv", None) as second:
            try:
                second.restore()
            except WpcError as error:
                return {"errno": error.errno, "reason": error.reason}
    return {"errno": None}


def test_second_region_in_one_process_is_refused(image):
    out = in_child(_two_regions, image)
    assert out["errno"] == errno.EBUSY
    assert "one sigsegv" in out["reason"]


def test_kernel_write_into_protected_chunk_fails_with_efault(image):
    """The approach's known limit, documented in strategy_sigsegv.c; uffd-wp has no such limit."""
    # The kernel does not raise SIGSEGV for its own access: read(2) fails.
    assert in_child(kernel_write_into_region, image, "sigsegv") == {"errno": errno.EFAULT}
