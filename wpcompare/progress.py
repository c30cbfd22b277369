"""Progress of a matrix of runs on stderr, for people waiting at a terminal.

One line, rewritten in place: which run, its repetition, time elapsed and an
estimate of the time left. It appears only once the matrix has taken
longer than `delay` seconds (a quick run prints nothing), only on a terminal
(a log or a pipe gets no carriage returns), and is erased when the matrix
ends so the results start on a clean line. It is redrawn as each run
starts: the parent waits on its workers and starts no thread of its own,
since it forks them.
"""
import shutil
import sys
import time

from wpcompare.runner import Progress

DELAY_S = 2.0


def progress_for(stream=None, quiet=False, cycles=False, **options):
    """A TerminalProgress (of `cycle`'s cycles: a CycleProgress) if stream (default stderr) is a
    terminal and not quiet, else a silent one."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if quiet or not (isatty and isatty()):
        return Progress()
    return (CycleProgress if cycles else TerminalProgress)(stream, **options)


def format_duration(seconds):
    """4.2 -> "4.2 s", 75 -> "1 min 15 s", 3725 -> "1 h 02 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class TerminalProgress(Progress):
    """Draws `[i/N] strategy op, run r/R | elapsed | ~left` on a terminal as run i starts."""

    def __init__(self, stream, repeat=None, warmup=None, delay=None, clock=time.monotonic):
        self.stream = stream
        self.repeat = repeat
        self.warmup = warmup
        self.delay = DELAY_S if delay is None else delay
        self.clock = clock
        self.start = clock()
        self.finished_runs = 0
        self.run_time = 0.0        # seconds spent in finished runs
        self.run_started = None
        self.width = 0             # of the line on screen, to erase it

    def started(self, index, total, spec):
        self.run_started = self.clock()
        self._draw(index, total, spec)

    def finished(self, index, total, spec, row):
        if self.run_started is not None:
            self.run_time += self.clock() - self.run_started
            self.run_started = None
        self.finished_runs += 1

    def close(self):
        """Erase the line, if one was drawn, so the results start on a clean line."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def describe(self, spec):
        if spec.warmup:
            of = f"/{self.warmup}" if self.warmup else ""
            which = f"warmup {spec.repetition}{of}"
        elif spec.instrumented:
            which = f"instrumented run {spec.repetition} ({spec.latency})"
        else:
            of = f"/{self.repeat}" if self.repeat else ""
            which = f"run {spec.repetition}{of}"
        return f"{spec.label} {spec.op}, {which}"

    def estimate_left(self, index, total):
        """Seconds left when run `index` starts: the mean time of the runs so far times the runs
        to go, this one included; None before the first has finished."""
        if not self.finished_runs:
            return None
        return self.run_time / self.finished_runs * (total - index)

    def line(self, index, total, spec):
        elapsed = self.clock() - self.start
        text = f"[{index + 1}/{total}] {self.describe(spec)} | {format_duration(elapsed)} elapsed"
        left = self.estimate_left(index, total)
        if left is not None:
            text += f" | ~{format_duration(left)} left"
        return text

    def _draw(self, index, total, spec):
        if self.clock() - self.start < self.delay:
            return
        # A line longer than the terminal would wrap, and "\r" would then redraw only its tail.
        columns = shutil.get_terminal_size(fallback=(100, 24)).columns
        text = self.line(index, total, spec)[:max(20, columns - 1)]
        padding = " " * max(0, self.width - len(text))
        self.stream.write("\r" + text + padding)
        self.stream.flush()
        self.width = len(text)


class CycleProgress(TerminalProgress):
    """`[i/N] strategy cycle c/C (chain r/R) | elapsed | ~left` as cycle i starts (cycle.CycleStep)."""

    def describe(self, step):
        chain = f", chain {step.chain}/{step.chains}" if step.chains > 1 else ""
        return f"{step.label} cycle {step.cycle}/{step.cycles}{chain}"
