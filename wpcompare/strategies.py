"""The strategy registry, as the C core's table defines it, and `-s` parsing.

A strategy is chosen on the command line as NAME or NAME:param=value,...
(e.g. `-s sigsegv:chunk=4K,fixup=background`). Names and parameters come
from the C table only, so a new table row needs no change here.
"""
import difflib
import functools
from dataclasses import dataclass

from wpcompare import binding
from wpcompare.errors import InvalidArgument
from wpcompare.options import parse_size


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: str                # "size", "int", "choice", "string"
    choices: tuple           # () where any value goes
    default: str
    help: str

    def canonical(self, value):
        """A value comparable across spellings ("4K" == "4096" for sizes)."""
        try:
            if self.kind == "size":
                return parse_size(value, minimum=0)
            if self.kind == "int":
                return int(value, 0)
        except (InvalidArgument, ValueError, TypeError):
            pass
        return value

    def describe(self):
        values = "|".join(self.choices) if self.choices else self.kind
        return f"{self.name}={values} (default {self.default})"


@dataclass(frozen=True)
class Strategy:
    name: str
    family: str
    description: str
    params: tuple

    def param(self, name):
        for spec in self.params:
            if spec.name == name:
                return spec
        return None

    def changed(self, params):
        """The (name, value) pairs of params that differ from their defaults (unknown names kept)."""
        kept = []
        for name, value in params:
            spec = self.param(name)
            if spec is None or spec.canonical(value) != spec.canonical(spec.default):
                kept.append((name, value))
        return kept


@dataclass(frozen=True)
class StrategyChoice:
    """A strategy with the parameter values asked for (the others stay at their defaults)."""

    strategy: Strategy
    params: tuple            # ((name, value), ...) in table order

    @property
    def params_text(self):
        """The "name=value,..." string the C core takes; "" for all defaults."""
        return ",".join(f"{name}={value}" for name, value in self.params)

    @property
    def label(self):
        """NAME or NAME:param=value for the parameters that differ from their defaults."""
        changed = ",".join(f"{name}={value}" for name, value in self.strategy.changed(self.params))
        return self.strategy.name + (":" + changed if changed else "")


@functools.lru_cache(maxsize=None)
def _table():
    table = {}
    for row in binding.strategy_rows():
        params = tuple(
            ParamSpec(p["name"], p["kind"], tuple(p["choices"].split("|")) if p["choices"] else (),
                      p["default"], p["help"] or "")
            for p in row["params"])
        table[row["name"]] = Strategy(row["name"], row["family"], row["description"], params)
    return table


def forget_table():
    """Read the C table again at the next lookup: a plugin added rows (wpcompare.plugins)."""
    _table.cache_clear()


def all_strategies():
    """Every strategy in table order, the bounds included."""
    return list(_table().values())


BOUND_FAMILY = "bound"
# The bounds every `run` measures beside its strategies: one copy of the image into
# memory faulted in beforehand, and into fresh memory, each in every page kind. A kind
# this machine lacks is a skipped row, like any strategy's. `x bound` divides by the
# fastest of REFERENCE_BOUND's rows: a strategy that maps huge pages can beat a copy
# into 4 KiB pages (uffd-hybrid:page=2M did, 0.95x), so no one page kind is the bound.
BOUNDS = ("bound-copy", "bound-copy:page=thp", "bound-copy:page=2M",
          "bound-fresh", "bound-fresh:page=thp", "bound-fresh:page=2M")
REFERENCE_BOUND = "bound-copy"


def measured_strategies():
    """The strategies proper (not the bounds), in table order: what `run` measures by default."""
    return [strategy for strategy in all_strategies() if strategy.family != BOUND_FAMILY]


def bound_choices():
    return [parse_choice(text) for text in BOUNDS]


def did_you_mean(word, candidates):
    """ " (did you mean 'x'?)" for the closest of candidates to a mistyped word, or ""."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def find(name):
    strategy = _table().get(name)
    if strategy is None:
        raise InvalidArgument(
            f"unknown strategy {name!r}{did_you_mean(name, _table())}; "
            f"valid: {', '.join(_table())} (see `wpcompare list`)")
    return strategy


def completions(incomplete):
    """What -s could be, given its start: strategy names; after NAME: its parameters; after
    NAME:param= that parameter's choices (for shell completion)."""
    name, colon, params_text = incomplete.partition(":")
    if not colon:
        return [strategy.name for strategy in all_strategies() if strategy.name.startswith(name)]
    strategy = _table().get(name)
    if strategy is None:
        return []
    done, _, last = params_text.rpartition(",")
    prefix = f"{name}:{done}," if done else f"{name}:"
    key, equals, value = last.partition("=")
    if not equals:
        return [f"{prefix}{spec.name}=" for spec in strategy.params if spec.name.startswith(key)]
    spec = strategy.param(key)
    if spec is None:
        return []
    return [f"{prefix}{key}={choice}" for choice in spec.choices if choice.startswith(value)]


def default_choice(strategy):
    return StrategyChoice(strategy, ())


def parse_choice(text):
    """StrategyChoice from "NAME" or "NAME:param=value,param=value"."""
    text = str(text)
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        # The C core would read a NUL as the end: what it validated would not be what was typed.
        raise InvalidArgument(f"invalid strategy {text!r}: control characters are not allowed")
    name, _, params_text = text.strip().partition(":")
    strategy = find(name.strip())
    given = {}
    for item in filter(None, (part.strip() for part in params_text.split(","))):
        key, sep, value = (piece.strip() for piece in item.partition("="))
        if not sep or not key or not value:
            raise InvalidArgument(
                f"invalid parameter {item!r} for strategy {strategy.name!r}: write name=value")
        spec = strategy.param(key)
        if spec is None:
            if strategy.params:
                valid = "; ".join(p.describe() for p in strategy.params)
                hint = did_you_mean(key, [p.name for p in strategy.params])
                raise InvalidArgument(
                    f"unknown parameter {key!r} for strategy {strategy.name!r}{hint}; valid: {valid}")
            raise InvalidArgument(f"strategy {strategy.name!r} takes no parameters (got {key!r})")
        if key in given:
            raise InvalidArgument(f"parameter {key!r} given twice for strategy {strategy.name!r}")
        given[key] = value
    ordered = tuple((spec.name, given[spec.name]) for spec in strategy.params if spec.name in given)
    choice = StrategyChoice(strategy, ordered)
    # The C core knows the valid values (sizes it can map, choices it implements).
    binding.validate_params(strategy.name, choice.params_text)
    return choice
