"""The test harness: every helper the test files share. conftest.py holds only the fixtures,
made from these; a test file imports from here, never from conftest or another test file.

Running the core (a strategy installs signal handlers and threads and remaps memory, so
every run happens in a forked child, as the runner isolates runs in real use):
  run_strategy(image, strategy, params, **fields)
      one run as `wpcompare run` makes it (probe, restore, touch, fixup, verify) in a fresh
      process: the worker's row; a skipped row if the probe refuses; a failed row if the
      process died or hung (reason "timed out after N s", naming the phase).
  open_run(image, strategy, params, **workload) -> binding.Run, run_phases(run, phases)
      phase by phase, for a test that acts between phases or goes past the probe; run it
      inside in_child(...). run_phases gives the row the worker would, with status,
      failed_phase and reason.
  in_child(function, *args, **kwargs)
      function's JSON-able value, computed in a forked child; a hang, a signal or an
      exception there fails the test naming function. exit_status_in_child for a child
      that is meant to die.
Skips: probe(strategy, params, image_bytes) -> (rc, why), the C probe's verdict;
skip_unless_available(strategy, params, image) skips with that reason (for the test's image
where it has one: huge pages enough for its size), skip_unless_two_cpus with its own.
The core's test-only knobs (WPCOMPARE_UFFD_FEATURE_MASK, WPCOMPARE_INJECT_*, ...) are read
with getenv when a run is created or probed: set them with monkeypatch.setenv (children
inherit them), or in a child's own function.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from wpcompare import binding, runner, strategies, worker
from wpcompare._core import ffi, lib
from wpcompare.cli import main
from wpcompare.errors import WpcError
from wpcompare.image import Image, cache_dir
from wpcompare.options import parse_pattern

SMALL = 2 << 20
PAGE = binding.PAGE_SIZE
HUGE = 2 << 20
HUGE_PAGE_DIR = worker.HUGE_PAGE_DIR

# The per-test watchdog: a run (or a child) that has not finished by then is a
# strategy that stopped serving faults, and fails in seconds, naming the phase
# it was blocked in, instead of after the runner's minute. Sanitized builds run
# several times slower (.ci/sanitize sets WPCOMPARE_SANITIZED).
WATCHDOG = 15 * (4 if os.environ.get("WPCOMPARE_SANITIZED") else 1)

# wpcompare's command line in a process of its own (CLI_COMMAND: the same, for a shell).
CLI = [sys.executable, "-c", "from wpcompare.cli import main; main()"]
CLI_COMMAND = f"{sys.executable} -c 'from wpcompare.cli import main; main()'"


# ---- images ----

def generate_image(path, size=SMALL, seed=1, kind="mixed"):
    """An Image generated at path."""
    binding.generate_image(str(path), size, seed, kind)
    return Image(str(path), size, seed, kind, "generated")


# ---- children ----

def in_child(function, *args, timeout=WATCHDOG, **kwargs):
    """function(*args, **kwargs) computed in a forked child: its JSON-able value. A hang,
    a signal or an exception in the child fails the test, naming function."""
    try:
        return runner.call_in_fresh_process(lambda _: function(*args, **kwargs), None, timeout)
    except runner.WorkerFailure as failure:
        pytest.fail(f"child running {function.__name__}: {failure.reason}", pytrace=False)


def exit_status_in_child(function, argument=None, timeout=WATCHDOG):
    """Run function(argument) in a forked child with stderr silenced; its raw wait status,
    for a child that may be killed by a signal (os.WTERMSIG). The child exits 0 when
    function returns, 3 when it raises."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            function(argument)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child running {function.__name__} timed out after {timeout} s")
        time.sleep(0.005)


def children():
    """Live or zombie children of this process: workers the runner did not reap."""
    mine = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    mine.append(int(entry))
        except OSError:
            pass
    return mine


# ---- runs ----

def spec_for(image, strategy, **fields):
    """A worker spec for one run of strategy on image (fields override the defaults)."""
    spec = {"image": image.path, "image_seed": image.seed, "image_kind": image.kind,
            "strategy": strategy, "pin_threads": True}
    spec.update({key: value for key, value in fields.items()
                 if not (key == "params" and value is None)})
    return spec


def run_strategy(image, strategy, params=None, timeout=WATCHDOG, **fields):
    """The worker's row for one run of strategy on image (fields: the spec's), run in a fresh process."""
    return runner.run_isolated(spec_for(image, strategy, params=params, **fields), timeout)


def open_run(image, strategy, params=None, op="write", pattern="random", threads=1,
             overlap=False, seed=3, **more):
    """A binding.Run of strategy on image, phases left to the caller (more: binding.Run's)."""
    return binding.Run(image_path=image.path, image_seed=image.seed, image_kind=image.kind,
                       strategy=strategy, params=params, op=op, pattern=parse_pattern(pattern),
                       threads=threads, overlap=overlap, seed=seed, pin_threads=True, **more)


def run_phases(run, phases=binding.PHASES):
    """Run phases in order until one fails: the row as the worker makes it, with status
    ("ok" or "failed"), failed_phase and reason."""
    failed, reason = None, None
    for phase in phases:
        try:
            getattr(run, phase)()
        except WpcError as error:
            failed, reason = phase, error.reason
            break
    return dict(worker.result_fields(run.result), status="failed" if failed else "ok",
                failed_phase=failed, reason=reason)


def row_of(run):
    """A binding.Run's measurements as far as it got, as the worker puts them in a row."""
    return worker.result_fields(run.result)


def try_phase(run, phase):
    """None if the phase went through, else its reason."""
    try:
        getattr(run, phase)()
    except WpcError as error:
        return error.reason
    return None


def counters(result):
    """A struct wpc_result's counters, by name."""
    return worker.result_fields(result)["counters"]


def assert_ok(row):
    """The run completed, its bytes verified; a readable failure otherwise."""
    phase = f" in {row['failed_phase']}" if row.get("failed_phase") else ""
    assert row["status"] == "ok", \
        f"{row.get('label')} {row.get('op')}: {row['status']}{phase}: {row.get('reason')}"
    assert row["verified"], row.get("reason")


def assert_handler_placed(row, placement):
    """The row shows handler-cpu=placement: the application's CPU (same), another one (other),
    or none pinned (any)."""
    if placement == "same":
        assert row["handler_cpu"] == row["app_cpu"] is not None
    elif placement == "other":
        assert row["handler_cpu"] is not None and row["handler_cpu"] != row["app_cpu"]
    else:
        assert row["handler_cpu"] is None


def strategy_names():
    return [row["name"] for row in binding.strategy_rows()]


def touched_pages(npages, pattern):
    """The pages a pattern's workload touches of npages."""
    p = parse_pattern(pattern)
    if p.kind == "sparse":
        return max(1, int(npages * p.fraction + 0.5))
    if p.kind == "stride":
        return (npages + p.stride - 1) // p.stride
    return npages


# ---- what the machine offers: probes and skips ----

def probe(strategy, params=None, image_bytes=0):
    """(rc, why) of the strategy's C probe with these params (for an image of image_bytes, 0: any)."""
    why = ffi.new("char[]", lib.WPC_REASON_LEN)
    rc = lib.wpc_strategy_probe(strategy.encode(), params.encode() if params else ffi.NULL,
                                image_bytes, why, len(why))
    return rc, text(why)


def skip_unless_available(strategy, params=None, image=None):
    """Skip the test, with the probe's reason, where the strategy cannot run (on image: with
    huge pages enough for its size)."""
    rc, why = probe(strategy, params, image.size if image else 0)
    if rc:
        pytest.skip(f"{strategy} cannot run here: {why}")


def skip_unless_two_cpus():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("handler-cpu=other needs 2 CPUs")


def is_root():
    return os.geteuid() == 0


def free_huge_pages():
    """Available 2 MiB huge pages: free less what other mappings have reserved."""
    try:
        with open(f"{HUGE_PAGE_DIR}/free_hugepages") as free, \
                open(f"{HUGE_PAGE_DIR}/resv_hugepages") as reserved:
            return max(0, int(free.read()) - int(reserved.read()))
    except (OSError, ValueError):
        return 0


def in_private_mount_namespace(script):
    """`sh -c script` in a private mount namespace (root, unshare); skips the test, with the
    reason, where one cannot be made. CLI_COMMAND runs wpcompare in it."""
    if not is_root() or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if "unshare failed" in done.stderr or "mount:" in done.stderr or "umount:" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    return done


# ---- the C core's buffers and the process's maps ----

def text(cdata):
    """A C string (a reason buffer, a name) as str."""
    return ffi.string(cdata).decode("utf-8", "replace")


def reason_buffer():
    """A buffer for a C call's reason (why, len(why))."""
    return ffi.new("char[]", lib.WPC_REASON_LEN)


def maps_lines(needle):
    """The lines of /proc/self/maps holding needle."""
    with open("/proc/self/maps") as maps:
        return [line for line in maps if needle in line]


# ---- holding races in a chosen order (WPCOMPARE_INJECT_HOLD, csrc/fault_inject.c) ----

HOLD_VARIABLE = "WPCOMPARE_INJECT_HOLD"
HOLD_POINTS = {lib.WPC_HOLD_CLAIM: "claim", lib.WPC_HOLD_COPY: "copy",
               lib.WPC_HOLD_RESOLVE: "resolve", lib.WPC_HOLD_LOST: "lost",
               lib.WPC_HOLD_PLACE: "place", lib.WPC_HOLD_UNWOKEN: "unwoken"}


def hold_arrivals():
    """The hold points reached so far, ticket by ticket ("claim", "copy", "resolve", "lost")."""
    points = ffi.new("int[]", lib.WPC_HOLD_MAX_TICKETS)
    count = lib.wpc_test_hold_arrivals(points, lib.WPC_HOLD_MAX_TICKETS)
    return [HOLD_POINTS.get(points[i], "?") for i in range(min(count, lib.WPC_HOLD_MAX_TICKETS))]


def hold_wait(count, timeout=5):
    """Wait until count threads have reached a hold point; the points, ticket by ticket."""
    deadline = time.monotonic() + timeout
    while len(arrived := hold_arrivals()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(arrived)} of {count} threads reached a hold point "
                                 f"within {timeout} s (arrived: {arrived})")
        time.sleep(0.001)
    return arrived


def hold_release(ticket=-1):
    """Let the thread holding ticket go on; -1: every ticket, also later ones."""
    lib.wpc_test_hold_release(ticket)


def hold_expired():
    """Whether a held thread went on by itself, never released (a broken test)."""
    return bool(lib.wpc_test_hold_expired())


# ---- the command line ----

def invoke(*args):
    """wpcompare ARGS through click's CliRunner, in this process."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_line(result):
    """The one line click printed after "Error:" (usage hints above it are click's)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0]), "nothing follows the error line"
    return errors[0]


def refused(*args, command="run"):
    """The one error line of a refused command; checks the exit status and that nothing was made."""
    result = CliRunner().invoke(main, [command, *args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert not cache_dir().exists(), "nothing generated before the input was checked"
    return line


# ---- stress: every strategy, again and again ----

STRESS_THREADS = 8


def stress_choices():
    """Every strategy of the table, with fixup=background where it has that choice."""
    choices = []
    for strategy in strategies.all_strategies():
        fixup = strategy.param("fixup")
        name = strategy.name
        if fixup is not None and "background" in fixup.choices:
            name += ":fixup=background"
        choices.append(strategies.parse_choice(name))
    return choices


def stress(image, choices, rounds, seconds=0.0, timeout=30.0, inject=None):
    """Rows of every run: `rounds` rounds at least, more until `seconds` have passed."""
    rows, done, started = [], 0, time.monotonic()
    while done < rounds or time.monotonic() - started < seconds:
        matrix = runner.Matrix(
            choices=choices, ops=["mixed"], pattern=parse_pattern("random"), image=image,
            threads=STRESS_THREADS, repeat=1, warmup=0, seed=done + 1, timeout=timeout,
            inject=inject,
            # Pinned, the threads share CPUs in a fixed way; unpinned, the scheduler mixes them.
            pin_threads=done % 2 == 0)
        rows += runner.run_matrix(matrix)
        done += 1
    return rows


def problems(rows, pages):
    """One line per run that failed or lost anything, naming the strategy and seed."""
    found = []
    for row in rows:
        where = f"{row['label']} seed {row['seed']}"
        if row["status"] == "failed":
            phase = f"{row['failed_phase']}: " if row.get("failed_phase") else ""
            found.append(f"{where}: {phase}{row['reason']}")
        elif row["status"] == "ok":
            if not row["verified"] or row["mismatched_pages"]:
                found.append(f"{where}: {row['mismatched_pages']} pages lost writes")
            if row["touched_pages"] != pages:
                found.append(f"{where}: touched {row['touched_pages']} of {pages} pages")
            if row["dirty"] and row["dirty"]["missing"]:
                found.append(f"{where}: dirty set misses {row['dirty']['missing']} written pages")
    return found


# ---- strategy plugins (wpcompare_plugin.h), built outside the package as a user would ----

PLUGIN_EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "examples", "plugin")
PLUGIN_CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"]


def c_compiler():
    """The C compiler plugins are built with, or a skip saying there is none."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler (cc) to build a plugin with")
    return compiler


def build_plugin(source, output, *defines):
    """source compiled against `wpcompare include-dir` only (what the installed package
    ships) into the shared object output, with -D for each of defines; its path."""
    include = subprocess.run([*CLI, "include-dir"], capture_output=True, text=True, check=True).stdout.strip()
    command = [c_compiler(), *PLUGIN_CFLAGS, f"-I{include}", *(f"-D{name}" for name in defines),
               "-o", str(output), str(source)]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(command)}:\n{built.stderr}"
    return str(output)


def cli(*args, env=None):
    """wpcompare ARGS in a process of its own (a plugin loaded there stays out of this one)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)
