"""Named experiments for `wpcompare run --preset NAME` (`--preset list` shows them).

A preset fixes the strategies and the run options of one question; any
option given on the command line overrides the preset's value for it. A
preset may name a strategy this build's table lacks (strategies are added
row by row): it becomes a skipped row saying so, never a crash or a silent
gap. A preset may also carry published figures, printed beside this run's.
"""
from dataclasses import dataclass, field
from typing import Optional

from wpcompare import strategies
from wpcompare.errors import InvalidArgument
from wpcompare.rows import Row, RunSpec, params_pairs


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    strategies: tuple                   # "NAME" or "NAME:param=value,..."
    settings: dict = field(default_factory=dict)   # run option -> value, as typed on the command line
    reference: Optional[str] = None     # a key of published.REFERENCES


PRESETS = {preset.name: preset for preset in (
    Preset("seed",
           "the published experiment (crac-dev, May 2023): a 512 MiB random image read page by page "
           "through mmap, userfaultfd on 4 KiB pages and on 2 MiB huge pages; the published "
           "ratios to mmap are printed beside this run's",
           ("mmap", "uffd:chunk=4K", "uffd-huge"),
           {"op": "read", "pattern": "seq", "size": "512M", "image_kind": "random"},
           reference="crac-dev-2023-05"),
    Preset("write-cost",
           "the cost of catching a first write: SIGSEGV copy-and-remap against userfaultfd "
           "write-protect, and a plain private mapping against one tracked by WP_ASYNC",
           ("sigsegv", "uffd-wp", "uffd-wp-anon", "mmap", "mmap-wp-async"),
           {"op": "write", "pattern": "random"}),
    Preset("fixup",
           "time until detached for every strategy that detaches, each fixup mode of the "
           "write-catching ones included, after the workload wrote a quarter of the pages",
           ("mmap", "mmap-populate", "read", "sigsegv", "sigsegv:fixup=at-checkpoint",
            "sigsegv:fixup=on-write-only", "uffd-wp", "uffd-wp:fixup=at-checkpoint",
            "uffd-wp:fixup=on-write-only", "uffd", "uffd-huge", "uffd-sigbus", "uffd-hybrid",
            "uffd-move", "uffd-minor", "uffd-wp-anon", "mmap-wp-async"),
           {"op": "write", "pattern": "sparse:0.25"}),
    Preset("full",
           "every strategy, first reads and first writes, random order",
           # From the C table, in its order: a new row is in `full` without a change here.
           tuple(strategy.name for strategy in strategies.measured_strategies()),
           {"op": "both", "pattern": "random"}),
)}


def find(name):
    preset = PRESETS.get(name)
    if preset is None:
        raise InvalidArgument(f"unknown preset {name!r}; valid: {', '.join(PRESETS)} "
                              "(`wpcompare run --preset list` describes them)")
    return preset


@dataclass(frozen=True)
class Missing:
    """A strategy a preset names that this build cannot run as asked."""

    text: str
    reason: str

    @property
    def name(self):
        return self.text.partition(":")[0]


def resolve(preset):
    """[StrategyChoice or Missing] for the preset's strategies, in its order."""
    known = {strategy.name for strategy in strategies.all_strategies()}
    resolved = []
    for text in preset.strategies:
        name = text.partition(":")[0]
        if name not in known:
            resolved.append(Missing(text, f"strategy {name!r} is not in this build of wpcompare "
                                          f"(preset {preset.name!r} names it; `wpcompare list` shows "
                                          "the strategies this build has)"))
            continue
        try:
            resolved.append(strategies.parse_choice(text))
        except InvalidArgument as error:
            resolved.append(Missing(text, f"preset {preset.name!r} asks for {text!r}, which this build "
                                          f"does not accept: {error.reason}"))
    return resolved


def missing_rows(missing, ops, pattern, threads, overlap, seed):
    """One skipped row per op for a strategy the preset names but this build lacks."""
    name, _, params = missing.text.partition(":")
    spec = RunSpec(strategy=name, params=params_pairs(params), label=missing.text, pattern=pattern,
                   threads=threads, overlap=overlap, seed=seed)
    return [Row.skipped(spec.replace(op=op), missing.reason).to_json() for op in ops]


def describe(preset):
    """Lines for `--preset list`."""
    available = {strategy.name for strategy in strategies.all_strategies()}
    options = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in preset.settings.items())
    lines = [f"{preset.name}: {preset.summary}",
             f"    -s {' -s '.join(preset.strategies)}" + (f" {options}" if options else "")]
    absent = [name for name in dict.fromkeys(text.partition(':')[0] for text in preset.strategies)
              if name not in available]
    if absent:
        lines.append(f"    not in this build (shown as skipped rows): {', '.join(absent)}")
    return lines
