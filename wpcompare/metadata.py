"""The metadata of a result document: what a reader needs besides the rows or chains.

`run` and `cycle` share its first part (version, time, command line, elapsed, the machine's
facts, the image: common()), and add what their runs were (run(), cycle()).
"""
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from wpcompare import __version__, plugins, strategies
from wpcompare.image import filesystem_type


@dataclass(frozen=True)
class Start:
    """When the measurements began, and how loaded the machine was then."""

    monotonic: float = field(default_factory=time.monotonic)
    load_average: tuple = field(default_factory=os.getloadavg)


def common(image, facts, start, command_line):
    return {
        "wpcompare_version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": command_line,
        "elapsed_s": round(time.monotonic() - start.monotonic, 3),
        # Which machine, and whether other work shared its CPUs: 1, 5 and 15 minute load
        # averages when the measurements began and when they ended.
        "hostname": socket.gethostname(),
        "load_average": {"start": list(start.load_average), "end": list(os.getloadavg())},
        "system": facts,
        "timer_overhead_ns": facts.get("timer_overhead_ns"),
        "image": image.describe(),
        # Strategies loaded from plugins: each file, its sha256, and the rows it added.
        "plugins": plugins.loaded(),
    }


def _options(choices, plan, names):
    return dict({"strategies": [choice.label for choice in choices]},
                **{name: str(getattr(plan, name)) if name == "pattern" else getattr(plan, name)
                   for name in names})


def run(matrix, facts, start, cache_state, command_line):
    """A `run` document's: its runner.Matrix, the page cache's state, the latency runs, the bounds."""
    latency_runs = matrix.repeat if matrix.latency_runs is None else matrix.latency_runs
    return dict(
        common(matrix.image, facts, start, command_line),
        cache=cache_state,
        latency={"mode": str(matrix.latency), "every": matrix.latency.every or None,
                 "runs": latency_runs if matrix.latency.mode != "off" else 0,
                 "where": "runs of their own, after the measured runs of each row"},
        bounds=[choice.label for choice in matrix.bounds],
        reference_bound=strategies.REFERENCE_BOUND if matrix.bounds else None,
        options=_options(matrix.choices, matrix, ("ops", "pattern", "threads", "overlap", "pin_threads",
                                                  "repeat", "warmup", "seed", "timeout")))


def cycle(plan, facts, start, command_line):
    """A `cycle` document's: its cycle.ChainPlan, where the images lived, the load."""
    directory = plan.directory or tempfile.gettempdir()
    common_part = common(plan.image, facts, start, command_line)
    image = common_part.pop("image")
    return dict(
        common_part,
        image=image,
        # Each image is restored right after the previous cycle wrote it (the first: copied
        # with copy_file_range); the work pass times no access, as run's measured runs.
        cache={"mode": "written", "kind": "written",
               "state": "each image restored right after the previous cycle wrote it"},
        latency={"mode": "off", "runs": 0},
        images_directory={"path": directory, "filesystem": filesystem_type(directory)},
        options=_options(plan.choices, plan, ("cycles", "dirty", "pattern", "threads", "overlap",
                                              "pin_threads", "seed", "delete_old", "timeout")))
