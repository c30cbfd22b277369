"""One run's spec and the row it becomes: the model every row of a result document is built from.

A RunSpec is what one worker is asked to do, as data: the strategy with its parameters as
(name, value) pairs, the workload (op, an options.Pattern, threads, ...) and how touch is
timed (an options.Latency). The runner hands it to the worker as it is (the worker is a
forked child: nothing is turned into text and parsed back). Its label is made from it for
display only; nothing reads parameters back out of a label.

A Row is a RunSpec's outcome: its identity (RunSpec.identity: the fields every row of a
`run` document starts with), status ("ok", "skipped", "failed"), reason, the phase that
failed, and the measurements of the C core's struct wpc_result (worker.result_fields), for
every row alike: measured, skipped by the probe, failed in a phase, crashed or timed out,
or named by a preset but absent from this build.

    RunSpec.to_json() / RunSpec.from_json(value)   a spec as JSON (`python -m wpcompare.worker`)
    Row.to_json() / Row.from_json(value)           a row of a wpcompare.run document

`cycle` documents are built the same way: a Chain per strategy choice, a CycleRow per cycle,
whether it ran, failed in a step, or its worker died or timed out.
"""
from dataclasses import dataclass, field, replace
from typing import Optional

from wpcompare.errors import InvalidArgument
from wpcompare.options import Latency, Pattern, parse_latency, parse_pattern

# The identity of a row, in the order a document lists it.
IDENTITY = ("strategy", "params", "label", "op", "pattern", "threads", "overlap", "seed",
            "repetition", "warmup", "latency")
NO_LATENCY = Latency("none")      # a measured run: no clock inside the touch loop


def params_text(params):
    """The "name=value,..." string the C core takes (and a document stores); "" for none."""
    return ",".join(f"{name}={value}" for name, value in params)


def params_pairs(value):
    """((name, value), ...) from a document's or a spec file's params: "name=value,...",
    an object {name: value}, a list of pairs, or null."""
    if not value:
        return ()
    if isinstance(value, dict):
        return tuple((str(name), str(item)) for name, item in value.items())
    if isinstance(value, str):
        return tuple(tuple(item.partition("=")[::2]) for item in value.split(",") if item)
    return tuple((str(name), str(item)) for name, item in value)


def _pattern(value):
    """An options.Pattern from a spec file: {"kind", "fraction", "stride"} or the text people type."""
    if isinstance(value, Pattern):
        return value
    if isinstance(value, dict):
        return Pattern(value["kind"], float(value.get("fraction", 1.0)), int(value.get("stride", 1)))
    return _parsed(parse_pattern, value)


def _latency(value):
    """An options.Latency from a spec file: {"mode", "every"}, "none", "every" or "sample:N"."""
    if isinstance(value, Latency):
        return value
    if isinstance(value, dict):
        return Latency(value["mode"], int(value.get("every", 0)))
    if value == "none":
        return NO_LATENCY
    latency = _parsed(parse_latency, value)
    if latency.mode == "off":
        raise ValueError("a worker's latency is none, every or sample:N, not off")
    return latency


def _parsed(parse, value):
    try:
        return parse(value)
    except InvalidArgument as error:
        raise ValueError(error.reason) from None


@dataclass(frozen=True)
class RunSpec:
    """One run, as the runner asks a worker for it."""

    strategy: str
    image: Optional[str] = None          # the image file (None only for a row that never runs)
    params: tuple = ()                   # ((name, value), ...) as given
    label: Optional[str] = None          # for display; default: the strategy's name
    image_seed: Optional[int] = None     # the seed it was generated from; None: a user's file
    image_kind: Optional[str] = None     # "mixed" or "random" with image_seed
    image_bytes: int = 0                 # its size when it was opened (another size is refused)
    op: str = "read"                     # "read", "write" or "mixed"
    write_fraction: float = 0.5          # of the pages, with op "mixed"
    pattern: Pattern = Pattern("random")
    threads: int = 1
    overlap: bool = False
    pin_threads: bool = True
    seed: int = 1
    repetition: int = 0
    warmup: bool = False
    latency: Latency = NO_LATENCY        # "none": the touch loop reads no clock
    inject: Optional[str] = None         # tests only: worker.INJECTIONS, as KIND or KIND:N

    def __post_init__(self):
        if self.label is None:
            object.__setattr__(self, "label", self.strategy)

    @classmethod
    def for_choice(cls, choice, **fields):
        """The spec of a run of a strategies.StrategyChoice."""
        return cls(strategy=choice.strategy.name, params=choice.params, label=choice.label, **fields)

    @property
    def params_text(self):
        return params_text(self.params)

    @property
    def instrumented(self):
        return self.latency.mode != "none"

    def identity(self):
        """The fields every row of this run starts with (IDENTITY), as a document holds them."""
        return {"strategy": self.strategy, "params": self.params_text, "label": self.label, "op": self.op,
                "pattern": str(self.pattern), "threads": self.threads, "overlap": self.overlap,
                "seed": self.seed, "repetition": self.repetition, "warmup": self.warmup,
                "latency": str(self.latency)}

    def to_json(self):
        value = {name: getattr(self, name) for name in self.__dataclass_fields__}
        value.update(params=dict(self.params),
                     pattern={"kind": self.pattern.kind, "fraction": self.pattern.fraction,
                              "stride": self.pattern.stride},
                     latency={"mode": self.latency.mode, "every": self.latency.every})
        return value

    @classmethod
    def from_json(cls, value):
        """A RunSpec from to_json's object (pattern and latency may also be given as text);
        ValueError naming what is missing or unknown."""
        if not isinstance(value, dict):
            raise ValueError("a worker spec is a JSON object")
        missing = [key for key in ("image", "strategy") if not value.get(key)]
        if missing:
            raise ValueError(f"worker spec lacks {', '.join(missing)}")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"worker spec has unknown keys: {', '.join(sorted(unknown))}")
        fields = dict(value, params=params_pairs(value.get("params")))
        if "pattern" in value:
            fields["pattern"] = _pattern(value["pattern"])
        if "latency" in value:
            fields["latency"] = _latency(value["latency"])
        return cls(**fields)

    @classmethod
    def coerce(cls, spec):
        """spec itself, or the RunSpec a JSON object describes."""
        return spec if isinstance(spec, cls) else cls.from_json(spec)

    def replace(self, **fields):
        return replace(self, **fields)


@dataclass
class Row:
    """What became of one RunSpec: a row of a `run` document."""

    spec: RunSpec
    status: str = "ok"                   # "ok", "skipped" or "failed"
    reason: Optional[str] = None
    failed_phase: Optional[str] = None   # "create", a phase, "cache", or where a worker died
    measurements: Optional[dict] = None  # worker.result_fields: as far as the run got
    injection: Optional[dict] = None     # tests only: what an injected failure did

    @classmethod
    def skipped(cls, spec, reason):
        return cls(spec, "skipped", reason)

    @classmethod
    def failed(cls, spec, reason, phase=None):
        return cls(spec, "failed", reason, phase)

    def fail(self, reason, phase):
        self.status, self.reason, self.failed_phase = "failed", reason, phase

    def to_json(self):
        value = self.spec.identity()
        value.update(status=self.status, reason=self.reason, failed_phase=self.failed_phase)
        if self.injection is not None:
            value["injection"] = self.injection
        if self.measurements is not None:
            value.update(self.measurements)
        elif self.status == "failed":
            value["phases"] = None       # a run that measured nothing
        return value

    @classmethod
    def from_json(cls, value):
        """A Row from a row of a wpcompare.run document (run/1 or run/2, already validated)."""
        pattern = value.get("pattern")
        try:
            pattern = _pattern(pattern)
        except ValueError:
            pattern = Pattern(str(pattern))       # as the file named it, for display
        try:
            latency = _latency(value.get("latency", "every"))   # run/1 rows timed every access
        except ValueError:
            latency = Latency(str(value.get("latency")))
        spec = RunSpec(strategy=value["strategy"], params=params_pairs(value.get("params")),
                       label=value.get("label"), op=value.get("op"), pattern=pattern,
                       threads=value.get("threads"), overlap=bool(value.get("overlap")),
                       seed=value.get("seed"), repetition=value.get("repetition"),
                       warmup=bool(value.get("warmup")), latency=latency)
        known = set(IDENTITY) | {"status", "reason", "failed_phase", "injection"}
        rest = {key: item for key, item in value.items() if key not in known}
        return cls(spec, value["status"], value.get("reason"), value.get("failed_phase"),
                   measurements=rest or None, injection=value.get("injection"))


# ---- `cycle`: a chain of checkpoint cycles per strategy ----

@dataclass
class CycleRow:
    """One cycle of a chain, a row of a `cycle` document: run, failed in a step, or its worker dead."""

    label: str
    strategy: str
    params: str                          # "name=value,..." as the C core takes them
    cycle: int
    status: str = "ok"
    reason: Optional[str] = None
    failed_phase: Optional[str] = None
    measurements: dict = field(default_factory=dict)   # the cycle's steps, as far as it got

    def fail(self, reason, phase=None):
        self.status, self.reason, self.failed_phase = "failed", reason, phase

    def to_json(self):
        value = {"label": self.label, "strategy": self.strategy, "params": self.params, "cycle": self.cycle,
                 "status": self.status, "reason": self.reason, "failed_phase": self.failed_phase}
        value.update(self.measurements)
        return value


@dataclass
class Chain:
    """Every cycle of one strategy choice, a chain of a `cycle` document."""

    label: str
    strategy: str
    params: str
    status: str = "ok"
    reason: Optional[str] = None
    cycles: list = field(default_factory=list)      # CycleRow.to_json() of each cycle, in order

    @classmethod
    def for_choice(cls, choice):
        return cls(choice.label, choice.strategy.name, choice.params_text)

    def row(self, cycle):
        return CycleRow(self.label, self.strategy, self.params, cycle)

    def end(self, status, reason):
        self.status, self.reason = status, reason
        return self

    def to_json(self):
        return {"label": self.label, "strategy": self.strategy, "params": self.params, "status": self.status,
                "reason": self.reason, "cycles": list(self.cycles)}
