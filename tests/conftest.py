"""Fixtures shared by the test files: small generated images and isolated runs.

Every strategy run happens in a forked child (runner.run_isolated), as in
real use, so a strategy's signal handlers, mappings or a crash never reach
the pytest process.
"""
import os
import time

import pytest

from wpcompare import binding, runner
from wpcompare._core import ffi, lib
from wpcompare.image import Image

SMALL = 2 << 20

# The per-test watchdog: a run (or a child) that has not finished by then is a
# strategy that stopped serving faults, and fails in seconds, naming the phase
# it was blocked in, instead of after the runner's minute. Sanitized builds run
# several times slower (.ci/sanitize sets WPCOMPARE_SANITIZED).
WATCHDOG = 15 * (4 if os.environ.get("WPCOMPARE_SANITIZED") else 1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Generated images go to the test's own cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def make_image(tmp_path):
    """make_image(size, seed=1, kind="mixed") -> Image generated into tmp_path."""
    def make(size=SMALL, seed=1, kind="mixed", name=None):
        path = tmp_path / (name or f"{kind}-{size}-{seed}.img")
        binding.generate_image(path, size, seed, kind)
        return Image(str(path), size, seed, kind, "generated")
    return make


@pytest.fixture
def image(make_image):
    return make_image()


def spec_for(image, strategy, **fields):
    """A worker spec for one run of strategy on image (fields override the defaults)."""
    spec = {"image": image.path, "image_seed": image.seed, "image_kind": image.kind,
            "strategy": strategy, "pin_threads": True}
    spec.update(fields)
    return spec


@pytest.fixture
def run_strategy():
    """run_strategy(image, strategy, **spec fields) -> the worker's row, run in a fresh process."""
    def run(image, strategy, timeout=WATCHDOG, **fields):
        return runner.run_isolated(spec_for(image, strategy, **fields), timeout)
    return run


@pytest.fixture
def in_child():
    """in_child(function, argument) -> function(argument) computed in a forked child."""
    def call(function, argument=None, timeout=WATCHDOG):
        return runner.call_in_fresh_process(function, argument, timeout)
    return call


def assert_ok(row):
    """The run completed, its bytes verified; a readable failure otherwise."""
    phase = f" in {row['failed_phase']}" if row.get("failed_phase") else ""
    assert row["status"] == "ok", \
        f"{row.get('label')} {row.get('op')}: {row['status']}{phase}: {row.get('reason')}"
    assert row["verified"], row.get("reason")


def strategy_names():
    return [row["name"] for row in binding.strategy_rows()]


def skip_unless_available(strategy, params=None):
    try:
        binding.probe_strategy(strategy, params)
    except Exception as error:  # the reason is the skip message
        pytest.skip(f"{strategy} cannot run here: {getattr(error, 'reason', error)}")


def is_root():
    return os.geteuid() == 0


# ---- holding races in a chosen order (WPCOMPARE_INJECT_HOLD, csrc/fault_inject.c) ----

HOLD_VARIABLE = "WPCOMPARE_INJECT_HOLD"
HOLD_POINTS = {lib.WPC_HOLD_CLAIM: "claim", lib.WPC_HOLD_COPY: "copy",
               lib.WPC_HOLD_RESOLVE: "resolve", lib.WPC_HOLD_LOST: "lost",
               lib.WPC_HOLD_PLACE: "place", lib.WPC_HOLD_UNWOKEN: "unwoken"}


def hold_arrivals():
    """The hold points reached so far, ticket by ticket ("claim", "copy", "resolve", "lost")."""
    points = ffi.new("int[]", lib.WPC_HOLD_MAX_TICKETS)
    count = lib.wpc_test_hold_arrivals(points, lib.WPC_HOLD_MAX_TICKETS)
    return [HOLD_POINTS.get(points[i], "?") for i in range(min(count, lib.WPC_HOLD_MAX_TICKETS))]


def hold_wait(count, timeout=5):
    """Wait until count threads have reached a hold point; the points, ticket by ticket."""
    deadline = time.monotonic() + timeout
    while len(arrived := hold_arrivals()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(arrived)} of {count} threads reached a hold point "
                                 f"within {timeout} s (arrived: {arrived})")
        time.sleep(0.001)
    return arrived


def hold_release(ticket=-1):
    """Let the thread holding ticket go on; -1: every ticket, also later ones."""
    lib.wpc_test_hold_release(ticket)


def hold_expired():
    """Whether a held thread went on by itself, never released (a broken test)."""
    return bool(lib.wpc_test_hold_expired())


def open_run(image, strategy, op="write"):
    """A binding.Run of strategy on image (random order, one thread), phases left to the caller."""
    from wpcompare.options import parse_pattern
    return binding.Run(image_path=image.path, image_seed=image.seed, image_kind=image.kind,
                       strategy=strategy, params=None, op=op, pattern=parse_pattern("random"),
                       threads=1, overlap=False, seed=3, pin_threads=True)


CLI_COMMAND = f"{__import__('sys').executable} -c 'from wpcompare.cli import main; main()'"


def in_private_mount_namespace(script):
    """`sh -c script` in a private mount namespace (root, unshare); skips the test, with the
    reason, where one cannot be made. CLI_COMMAND runs wpcompare in it."""
    import shutil
    import subprocess
    if not is_root() or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if "unshare failed" in done.stderr or "mount:" in done.stderr or "umount:" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    return done
