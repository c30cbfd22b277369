"""Strategy plugins: shared objects built against wpcompare_plugin.h, loaded into the strategy table.

load_plugins(paths) is the one way in (the CLI's --plugin, WPCOMPARE_PLUGINS, a test's own
call): the C core checks each file in this process (entry point, ABI version, every row) and
refuses it with one line naming it; a loaded plugin's rows then answer every later lookup,
here and in every worker forked afterwards (workers inherit the loaded object), exactly as
built-in rows do. loaded() says what was loaded, for the results' metadata.
"""
import hashlib
import os
from pathlib import Path

from wpcompare import binding, strategies
from wpcompare.errors import InvalidArgument

ENVIRONMENT = "WPCOMPARE_PLUGINS"

_loaded = []      # {"path", "sha256", "strategies"} in load order


def include_dir():
    """The directory holding wpcompare_plugin.h, as installed with the package."""
    return str(Path(__file__).resolve().parent / "include")


def paths_from_environment(environ=None):
    """WPCOMPARE_PLUGINS: paths separated by ':' (empty pieces ignored)."""
    value = (os.environ if environ is None else environ).get(ENVIRONMENT, "")
    return [piece for piece in value.split(os.pathsep) if piece]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_plugins(paths):
    """Load each plugin in order; InvalidArgument naming the file at the first refused one
    (the plugins before it stay loaded). Loading a file again is a no-op."""
    for path in paths:
        path = os.path.abspath(os.fspath(path))
        try:
            digest = _sha256(path)
        except OSError as error:
            raise InvalidArgument(f"plugin {path}: {error.strerror or error}") from None
        before = {strategy.name for strategy in strategies.all_strategies()}
        added = binding.load_plugin(path)
        if not added:
            continue
        strategies.forget_table()
        names = [strategy.name for strategy in strategies.all_strategies() if strategy.name not in before]
        _loaded.append({"path": path, "sha256": digest, "strategies": names})


def loaded():
    """The plugins loaded in this process: path, sha256 and the strategies each added."""
    return [dict(entry, strategies=list(entry["strategies"])) for entry in _loaded]


def origin(name):
    """The path of the plugin that defined strategy `name`; None for a built-in."""
    for entry in _loaded:
        if name in entry["strategies"]:
            return entry["path"]
    return None
