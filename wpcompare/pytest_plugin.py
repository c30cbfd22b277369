"""pytest plugin (entry point pytest11 "wpcompare"): the `wpcompare_check` fixture.

    def test_mine(wpcompare_check):
        wpcompare_check("build/libmine.so", "mine", cases="quick")

Registering costs a project nothing at collection: wpcompare.testing (and the C core) is
imported only when a test asks for the fixture.
"""
import pytest


@pytest.fixture
def wpcompare_check():
    """wpcompare.testing.check_strategy: run the check battery, fail with the case's reason."""
    from wpcompare.testing import check_strategy
    return check_strategy
