"""The fixtures the test files share: a private image cache and small generated images.

Fixtures only: every helper is in harness.py, which the test files import.
"""
import signal

import pytest

from harness import SMALL, generate_image


@pytest.fixture(autouse=True, scope="session")
def interruptible_children():
    """SIGINT delivered to the commands the tests start, as a terminal's Ctrl-C is. A shell
    starting pytest in the background (`pytest &`, nohup) leaves SIGINT ignored, and an ignored
    signal stays ignored across exec: the Ctrl-C tests would then test nothing. The default
    handler here makes every child start with SIGINT's default action."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Generated images go to the test's own cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def make_image(tmp_path):
    """make_image(size, seed=1, kind="mixed") -> Image generated into tmp_path."""
    def make(size=SMALL, seed=1, kind="mixed", name=None):
        return generate_image(tmp_path / (name or f"{kind}-{size}-{seed}.img"), size, seed, kind)
    return make


@pytest.fixture
def image(make_image):
    return make_image()
