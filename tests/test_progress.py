"""The progress line: drawn on a terminal after two seconds, never on a pipe or with --quiet."""
import io

import pytest
from click.testing import CliRunner

from wpcompare import cli, progress, runner
from wpcompare.rows import RunSpec
from wpcompare.cli import main


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _spec(label="uffd", op="write", repetition=1, warmup=False, latency="none"):
    return RunSpec.from_json({"image": "image", "strategy": label.partition(":")[0], "label": label, "op": op,
                              "repetition": repetition, "warmup": warmup, "latency": latency})


def test_silent_unless_a_terminal_and_not_quiet():
    assert type(progress.progress_for(io.StringIO())) is runner.Progress
    assert type(progress.progress_for(Terminal(), quiet=True)) is runner.Progress
    assert isinstance(progress.progress_for(Terminal()), progress.TerminalProgress)


def test_nothing_is_drawn_in_the_first_two_seconds():
    stream, clock = Terminal(), Clock()
    shown = progress.TerminalProgress(stream, repeat=3, warmup=1, clock=clock)
    shown.started(0, 8, _spec())
    clock.now += 1.9
    shown.finished(0, 8, _spec(), {})
    shown.started(1, 8, _spec(repetition=2))
    shown.close()
    assert stream.getvalue() == ""


def test_line_names_the_run_its_repetition_the_time_and_an_estimate():
    stream, clock = Terminal(), Clock()
    shown = progress.TerminalProgress(stream, repeat=3, warmup=1, clock=clock)
    shown.started(0, 4, _spec(warmup=True))
    clock.now += 1.5
    shown.finished(0, 4, _spec(warmup=True), {})
    shown.started(1, 4, _spec(repetition=1))
    clock.now += 1.5
    shown.finished(1, 4, _spec(repetition=1), {})
    shown.started(2, 4, _spec(repetition=2))
    # Two runs took 1.5 s each; runs 3 and 4 are left.
    assert stream.getvalue() == "\r[3/4] uffd write, run 2/3 | 3.0 s elapsed | ~3.0 s left"
    shown.close()
    assert stream.getvalue().endswith("\r" + " " * len("[3/4] uffd write, run 2/3 | 3.0 s elapsed | ~3.0 s left") + "\r")


def test_warmups_are_named_as_such_and_no_estimate_before_a_run_ends():
    stream, clock = Terminal(), Clock()
    shown = progress.TerminalProgress(stream, repeat=5, warmup=2, delay=0, clock=clock)
    shown.started(0, 7, _spec(label="mmap", op="read", repetition=2, warmup=True))
    assert stream.getvalue() == "\r[1/7] mmap read, warmup 2/2 | 0.0 s elapsed"


def test_instrumented_runs_are_named_with_how_they_time():
    stream, clock = Terminal(), Clock()
    shown = progress.TerminalProgress(stream, repeat=5, warmup=1, delay=0, clock=clock)
    shown.started(6, 12, _spec(label="mmap", op="read", repetition=1, latency="every"))
    assert stream.getvalue() == "\r[7/12] mmap read, instrumented run 1 (every) | 0.0 s elapsed"


def test_a_shorter_line_overwrites_a_longer_one_completely():
    stream, clock = Terminal(), Clock()
    shown = progress.TerminalProgress(stream, repeat=1, warmup=0, delay=0, clock=clock)
    shown.started(0, 2, _spec(label="uffd-hybrid:loader-threads=2"))
    first = stream.getvalue()
    shown.finished(0, 2, _spec(), {})
    shown.started(1, 2, _spec(label="read"))
    second = stream.getvalue()[len(first):]
    assert len(second) == len(first), "padded to the old width"


@pytest.mark.parametrize("seconds,text", [(4.25, "4.2 s"), (75, "1 min 15 s"), (3725, "1 h 02 min")])
def test_durations(seconds, text):
    assert progress.format_duration(seconds) == text


def test_a_run_through_a_pipe_prints_no_progress(monkeypatch):
    # Were it drawn at all, a delay of 0 would draw it at the first run.
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    result = CliRunner().invoke(main, ["run", "-s", "read", "--size", "1M", "--repeat", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "\r" not in result.stdout


def test_the_command_passes_quiet_and_the_run_counts(monkeypatch):
    made = []

    def recording(**options):
        made.append(options)
        return runner.Progress()
    monkeypatch.setattr(cli, "progress_for", recording)
    for extra in ([], ["--quiet"]):
        result = CliRunner().invoke(main, ["run", "-s", "read", "--size", "1M", "--repeat", "2", "--warmup", "1",
                                           "--op", "read", *extra])
        assert result.exit_code == 0, result.output
    assert made == [{"quiet": False, "repeat": 2, "warmup": 1}, {"quiet": True, "repeat": 2, "warmup": 1}]


def test_cycle_progress_names_the_strategy_cycle_and_chain():
    from wpcompare.cycle import CycleStep

    stream, clock = Terminal(), Clock()
    shown = progress.progress_for(stream, cycles=True, delay=0, clock=clock)
    assert isinstance(shown, progress.CycleProgress)
    step = CycleStep("uffd-wp", 2, 3, 1, 2)
    shown.started(1, 12, step)
    clock.now += 4
    shown.finished(1, 12, step, {})
    shown.started(2, 12, CycleStep("uffd-wp", 3, 3, 1, 2))
    line = stream.getvalue().split("\r")[-1]
    assert line.startswith("[3/12] uffd-wp cycle 3/3, chain 1/2 | 4.0 s elapsed | ~40.0 s left")
    shown.close()
    assert stream.getvalue().endswith("\r")
    assert progress.CycleProgress(stream).describe(CycleStep("read", 1, 3, 1, 1)) == "read cycle 1/3"
