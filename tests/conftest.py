"""The fixtures the test files share: a private image cache and small generated images.

Fixtures only: every helper is in harness.py, which the test files import.
"""
import pytest

from harness import SMALL, generate_image


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
