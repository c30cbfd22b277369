"""The `wpcompare check` battery from a project's own test suite.

    from wpcompare.testing import check_strategy

    def test_my_strategy_is_correct():
        check_strategy("build/libmine.so", "mine", cases="quick")

check_strategy runs the cases (each in a fresh worker, as `wpcompare check` does) and
raises CheckFailed, an AssertionError naming every failed case with its reason (a lost
write names its page, byte offset and thread), or returns the results. Under pytest the
`wpcompare_check` fixture (wpcompare.pytest_plugin, registered through the pytest11 entry
point) is the same function.
"""
from wpcompare import check, plugins, strategies
from wpcompare.errors import WpcError


class CheckFailed(AssertionError):
    """Cases of the battery failed: .failures holds their check.Result objects."""

    def __init__(self, failures):
        self.failures = list(failures)
        lines = [f"{result.name}: {result.reason}" for result in self.failures]
        super().__init__(f"{len(lines)} wpcompare check case(s) failed:\n  " + "\n  ".join(lines))


def load_plugin(path):
    """Load a strategy plugin (a shared object built against `wpcompare include-dir`), so that
    its strategies are names like the built-in ones; InvalidArgument naming the file if the
    plugin is refused."""
    plugins.load_plugins([path])


def check_strategy(plugin, name, cases="quick", seconds=0.0, timeout=check.DEFAULT_TIMEOUT,
                   raise_on_failure=True):
    """Run the battery against strategy `name` (NAME or NAME:param=value,...).

    plugin: the path of the plugin defining it, or None for a built-in strategy.
    cases: "quick", "full", or a list of case names (wpcompare.check.CASE_NAMES).
    seconds: how long each racing case keeps going once its writers overlapped.
    Returns the check.Result of every case (status "ok", "failed" or "skipped"); raises
    CheckFailed if a case failed (unless raise_on_failure is False), ValueError for an
    unknown case or strategy."""
    if plugin is not None:
        load_plugin(plugin)
    try:
        choice = strategies.parse_choice(name)
    except WpcError as error:
        raise ValueError(error.reason) from None
    battery = check.Battery(cases, seconds=seconds, timeout=timeout)
    with check.Images() as images:
        results = battery.run([choice], images)
    failures = [result for result in results if result.status == "failed"]
    if failures and raise_on_failure:
        raise CheckFailed(failures)
    return results
