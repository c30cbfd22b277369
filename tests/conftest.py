"""Fixtures shared by the test files: small generated images and isolated runs.

Every strategy run happens in a forked child (runner.run_isolated), as in
real use, so a strategy's signal handlers, mappings or a crash never reach
the pytest process.
"""
import os

import pytest

from wpcompare import binding, runner
from wpcompare.image import Image

SMALL = 2 << 20


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
    def run(image, strategy, timeout=60, **fields):
        return runner.run_isolated(spec_for(image, strategy, **fields), timeout)
    return run


@pytest.fixture
def in_child():
    """in_child(function, argument) -> function(argument) computed in a forked child."""
    def call(function, argument=None, timeout=60):
        return runner.call_in_fresh_process(function, argument, timeout)
    return call


def assert_ok(row):
    """The run completed, its bytes verified; a readable failure otherwise."""
    assert row["status"] == "ok", f"{row.get('label')} {row.get('op')}: {row['status']}: {row.get('reason')}"
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
