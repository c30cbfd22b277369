"""The command line: `wpcompare run`, `compare`, `plot`, `info`, `list`, `check`.

Bad input is refused before anything runs, with one line naming the problem
and the fix, and a non-zero exit; no output file is touched.
"""
import errno
import json
import math
import os
import signal
import sys
import time

import click

from wpcompare import __version__, binding, compare, export, plot, presets, probe, published, report, results, runner
from wpcompare import strategies, sweep
from wpcompare import image as images
from wpcompare.errors import InvalidArgument, WpcError
from wpcompare.progress import progress_for
from wpcompare.options import LATENCY_HELP, parse_latency, parse_pattern, parse_size
from wpcompare import cycle as chains
from wpcompare import cycle_report, cycle_results
from wpcompare import output as output_files
from wpcompare import leftovers
from wpcompare import metadata as document_metadata
from wpcompare import cache as image_cache
from wpcompare import plugins
from wpcompare.options import human_bytes
from wpcompare import check as check_battery
from wpcompare.options import Pattern, trace_files

DEFAULT_IMAGE_SIZE = 256 << 20
from wpcompare.worker import parse_injection


class BadInput(click.ClickException):
    """Input refused after option parsing (an image that cannot be used, a run that cannot fit)."""

    exit_code = 2


class _ParsedType(click.ParamType):
    """A click type whose conversion is one of our parsers; their reason becomes the error."""

    def parse(self, value):
        raise NotImplementedError

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except WpcError as error:
            self.fail(error.reason, param, ctx)


class SizeType(_ParsedType):
    name = "size"

    def parse(self, value):
        return parse_size(value)


class SizeListType(_ParsedType):
    name = "size[,size...]"

    def parse(self, value):
        return sweep.parse_sizes(value)


class PatternType(_ParsedType):
    name = "pattern"

    def parse(self, value):
        return parse_pattern(value)


class CacheModeType(_ParsedType):
    name = "cache"

    def parse(self, value):
        return images.parse_cache_mode(value)


class LatencyType(_ParsedType):
    name = "latency"

    def parse(self, value):
        return parse_latency(value)


class StrategyType(_ParsedType):
    name = "strategy"

    def parse(self, value):
        return strategies.parse_choice(value)

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem
        return [CompletionItem(text) for text in strategies.completions(incomplete)]


class ImageType(_ParsedType):
    name = "path"

    def parse(self, value):
        return images.open_user_image(value)


class OutputType(click.ParamType):
    """A file -o may write (see wpcompare.output): checked before any run starts."""

    name = "file"

    def convert(self, value, param, ctx):
        try:
            return output_files.check_output(value)
        except WpcError as error:
            self.fail(error.reason, param, ctx)


class PresetType(_ParsedType):
    name = "preset"

    def parse(self, value):
        return value if value == "list" else presets.find(value)


class ResultFileType(_ParsedType):
    """A result document of `wpcompare run`, loaded and checked."""

    name = "results.json"

    def parse(self, value):
        return compare.Side(value, results.load_document(value))


COLUMNS_HELP = ("default (restore, touch, fixup, to detached, checked: fits 100 columns), all, or "
                "names from `all`'s header, comma-separated (`x bound:to detached` for a ratio); "
                "for table and markdown (whose default is all), csv and json keep every column.")


class ColumnsType(_ParsedType):
    """`--columns` of a kind whose table has choosable columns (export.parse_columns)."""

    name = "columns"

    def __init__(self, kind):
        self.kind = kind

    def parse(self, value):
        return export.parse_columns(self.kind, value)


class PlottableFileType(_ParsedType):
    name = "results.json"

    def parse(self, value):
        return plot.load_plottable(value)


class ImageOutputType(OutputType):
    name = "file.png|file.svg"

    def convert(self, value, param, ctx):
        try:
            plot.image_format(value)
        except WpcError as error:
            self.fail(error.reason, param, ctx)
        return super().convert(value, param, ctx)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's comparisons let nan through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# What the C core and the runner take: seeds are int64 in the C core (the image's seed is
# signed, -1 meaning "not generated") and cycle k uses seed + k; a run's timeout goes to
# select() and a deadline; repetitions are a Python loop, bounded to what can finish.
MAX_SEED = 2 ** 62
MAX_TIMEOUT = 7 * 24 * 3600
MAX_REPEAT = 100_000
SEED = click.IntRange(0, MAX_SEED)
TIMEOUT = FiniteFloatRange(min=0, max=MAX_TIMEOUT, min_open=True)


class InjectionType(click.ParamType):
    name = "kind[:N][@strategy]"

    def convert(self, value, param, ctx):
        kind, _, target = value.partition("@")
        try:
            parse_injection(kind)
        except ValueError as error:
            self.fail(f"{error}, optionally @STRATEGY", param, ctx)
        return runner.Injection(kind, target or None)


def _load_plugins(ctx, param, paths):
    """Eager: before -s is parsed, so a plugin's strategies are names -s knows."""
    try:
        plugins.load_plugins(paths or ())
    except WpcError as error:
        raise BadInput(error.reason) from None


def plugin_option(command):
    """--plugin PATH.so (repeatable; also WPCOMPARE_PLUGINS=a.so:b.so) for any command that
    names strategies: each plugin is loaded and checked before the command's other options."""
    return click.option(
        "--plugin", "plugin_paths", multiple=True, is_eager=True, expose_value=False,
        type=click.Path(dir_okay=False), envvar=plugins.ENVIRONMENT, callback=_load_plugins,
        metavar="PATH.so",
        help="Load strategies from a plugin built against `wpcompare include-dir`; repeat for "
             f"several. Also ${plugins.ENVIRONMENT} (paths separated by ':').")(command)


class _Commands(click.Group):
    """The command group; standard output that cannot be written (a full disk, /dev/full)
    is one error line and exit 1, never a traceback."""

    def invoke(self, ctx):
        leftovers.install_termination_handlers()
        try:
            result = super().invoke(ctx)
        except leftovers.Terminated as terminated:
            # Every finally ran on the way here: workers killed, private directories removed.
            name = signal.Signals(terminated.number).name
            click.echo(f"Error: stopped by {name}; workers and temporary files removed", err=True)
            sys.exit(128 + terminated.number)
        except KeyboardInterrupt:
            # Interrupted outside the runs (generating the image, probing): nothing finished yet.
            click.echo("Error: interrupted by SIGINT; workers and temporary files removed", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except OSError as error:
            if not _raised_writing_stdout(error):
                raise
            _stdout_failed(error)
        try:
            sys.stdout.flush()
        except OSError as error:
            _stdout_failed(error)
        return result


def _raised_writing_stdout(error):
    """Whether error came from a write to stdout: the innermost frame held the stream."""
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    streams = [sys.stdout, getattr(sys.stdout, "buffer", None), sys.__stdout__]
    return any(any(value is stream for stream in streams if stream is not None)
               for value in tb.tb_frame.f_locals.values())


def _stdout_failed(error):
    output_files.silence_stdout()
    if error.errno == errno.EPIPE:
        raise error         # click ends quietly, as a closed pipe deserves
    raise click.ClickException(f"cannot write to standard output: {error.strerror or error}") from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wpcompare")
def main():
    """Compare ways to restore checkpointed memory: mmap, SIGSEGV copy-and-remap, userfaultfd.

    \b
    Exit status of run and cycle: 0 every row measured and verified; 1 a run failed or
    was not verified; 2 bad input; 3 nothing could run (every row skipped); 130
    interrupted by Ctrl-C (the finished rows still printed and saved to -o).
    Shell completion: eval "$(_WPCOMPARE_COMPLETE=bash_source wpcompare)"."""


@main.command()
@plugin_option
@click.option("--preset", type=PresetType(), default=None, metavar="NAME|list",
              help="A named experiment: its strategies and options (options given here override "
                   "them); `--preset list` describes them.")
@click.option("-s", "--strategy", "choices", multiple=True, type=StrategyType(),
              metavar="NAME[:PARAM=VALUE,...]",
              help="Strategy to measure, with parameters; repeat for several. [default: every strategy]")
@click.option("--pattern", type=PatternType(), default="random", show_default=True,
              help="Pages the workload touches: seq, random, sparse:F (0<F<=1), stride:N, or "
                   "trace:PATH (a recorded order, which also says which accesses write: see "
                   "`wpcompare trace show`).")
@click.option("--op", type=click.Choice(["read", "write", "both", "mixed"]), default="both",
              show_default=True,
              help="First access of each page: read, write, both as separate rows, or mixed "
                   "(half the pages written, the others read; a seeded choice).")
@click.option("--threads", type=click.IntRange(1, binding.MAX_THREADS), default=1, show_default=True,
              help="Workload threads; the pages are split among them.")
@click.option("--overlap", is_flag=True, help="Every thread touches every selected page.")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Run workload thread i on the i-th CPU this process may use, so a handler's "
                   "placement (same or other CPU) means what it says.")
@click.option("--repeat", type=click.IntRange(1, MAX_REPEAT), default=5, show_default=True,
              help="Measured runs per strategy and op, each in a fresh process.")
@click.option("--warmup", type=click.IntRange(0, MAX_REPEAT), default=1, show_default=True,
              help="Unmeasured runs before them.")
@click.option("--size", type=SizeListType(), default=None, metavar="SIZE[,SIZE...]",
              help="Size of the generated image, with K, M or G; a comma list (64M,256M,1G,4G: whole "
                   "4K pages, each once) runs everything at each size and shows the cost per page "
                   "against the size, x bound and the worker's memory per size. [default: 256M]")
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seed of the generated image and of the random access order.")
@click.option("--image-kind", type=click.Choice(["mixed", "random"]), default=None,
              help="Generated image content: random, zero and repeated pages (mixed), "
                   "or only random pages. [default: mixed]")
@click.option("--image", type=ImageType(), default=None, metavar="PATH",
              help="Use this file as the image instead of generating one.")
@click.option("--cache", type=CacheModeType(), default="read", show_default=True,
              metavar="read|written[:SIZE]|cold",
              help="What the page cache holds of the image, the same for every run: " + images.CACHE_HELP + ".")
@click.option("--latency", type=LatencyType(), default="every", show_default=True,
              metavar="every|sample:N|off",
              help="Per-page latencies, from instrumented runs of their own (the measured runs time no "
                   "access, so touch is the application's time): " + LATENCY_HELP + ".")
@click.option("--latency-runs", type=click.IntRange(1, MAX_REPEAT), default=None,
              help="Instrumented runs per row. [default: as --repeat]")
@click.option("--bounds/--no-bounds", default=True, show_default=True,
              help="Measure the physical bounds (one copy of the image into anonymous memory) beside "
                   "the strategies; `x bound` divides by bound-copy.")
@click.option("--format", "fmt", type=click.Choice(report.FORMATS), default=None,
              help="Format of --output (default: from its extension), or else of stdout; hlog: the "
                   "latency histograms in HdrHistogram's interval log format. [default: table]")
@click.option("--columns", type=ColumnsType(report.KIND), default=None, metavar="default|all|NAME,...",
              help="The table's columns after strategy and op: " + COLUMNS_HELP)
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Write the results here once every run has finished (on Ctrl-C: the runs finished "
                   "so far, marked interrupted); the table still goes to stdout.")
@click.option("--timeout", type=TIMEOUT, default=120, show_default=True,
              help="Seconds one run may take before it is killed and reported as timed out.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress line on stderr (it is shown only on a terminal, for runs over 2 s).")
@click.option("--inject", type=InjectionType(), default=None, hidden=True)
@click.pass_context
def run(ctx, preset, choices, pattern, op, threads, overlap, pin, repeat, warmup, size, seed, image_kind,
        image, cache, latency, latency_runs, bounds, fmt, columns, output, timeout, quiet, inject):
    """Measure strategies: restore, touch, fixup and verify, each run in a fresh process."""
    if preset == "list":
        click.echo("\n\n".join("\n".join(presets.describe(each)) for each in presets.PRESETS.values()))
        return
    if image is not None and (size is not None or image_kind is not None):
        raise click.UsageError("--size and --image-kind describe a generated image: "
                               "drop them, or drop --image")
    sweep_sizes = size if size is not None and len(size) > 1 else None
    size = None if size is None or sweep_sizes else size[0]
    missing = []
    if preset is not None:
        settings = _preset_settings(ctx, preset, image is not None)
        op = settings.get("op", op)
        pattern = parse_pattern(settings["pattern"]) if "pattern" in settings else pattern
        size = parse_size(settings["size"]) if "size" in settings else size
        image_kind = settings.get("image_kind", image_kind)
        if not choices:
            resolved = presets.resolve(preset)
            choices = [item for item in resolved if not isinstance(item, presets.Missing)]
            missing = [item for item in resolved if isinstance(item, presets.Missing)]
    elif not choices:
        choices = [strategies.default_choice(strategy) for strategy in strategies.measured_strategies()]
    unique = _first_of_each_label(choices)
    bound_choices = strategies.bound_choices() if bounds else []
    bound_labels = {choice.label for choice in bound_choices}
    unique = [choice for choice in unique if choice.label not in bound_labels]
    ops = ["read", "write"] if op == "both" else [op]
    if sweep_sizes and columns is not None:
        raise BadInput("--columns: a size sweep prints its own tables (one column per size); "
                       "give one --size to choose a run table's columns")
    if sweep_sizes and pattern.kind == "trace":
        raise BadInput("--pattern trace: a trace was recorded in a region of one size; "
                       "give one --size, or another pattern")
    if pattern.kind == "trace":
        ops, threads = ["mixed"], _trace_threads(ctx, pattern, threads, overlap,
                                                 image.size if image else size or DEFAULT_IMAGE_SIZE)
    _warn_oversubscribed(threads)
    # Probed before an image is generated (writing --size bytes), not to write one only to skip every row.
    nothing_runs = (_nothing_can_run(unique, size or DEFAULT_IMAGE_SIZE, timeout)
                    if image is None and not sweep_sizes else None)
    if nothing_runs:
        image = images.ungenerated_image(size or DEFAULT_IMAGE_SIZE, seed, image_kind or "mixed")
    try:
        if sweep_sizes:
            sweep.check_fits(sweep_sizes)
            sized_images = sweep.generate_images(sweep_sizes, seed, image_kind or "mixed")
            image = sized_images[-1]
        else:
            images.check_memory(image.size if image else size or DEFAULT_IMAGE_SIZE, image)
        if image is None:
            image = images.generated_image(size or DEFAULT_IMAGE_SIZE, seed, image_kind or "mixed")
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    # --cache written's copies go beside the image; cycle's directories to the temp dir.
    _remove_stale_directories([None, os.path.dirname(image.path)])

    facts = _system_facts(timeout)
    matrix = runner.Matrix(choices=unique, ops=ops, pattern=pattern, image=image,
                           threads=threads, overlap=overlap, pin_threads=pin, repeat=repeat, warmup=warmup, seed=seed,
                           cache=cache, timeout=timeout, inject=inject, latency=latency,
                           latency_runs=latency_runs, bounds=bound_choices if unique and not nothing_runs else [])
    started = document_metadata.Start()
    progress = progress_for(quiet=quiet, repeat=repeat, warmup=warmup)
    cache_state = sweep_facts = None
    rows, interrupted = [], False
    try:
        if nothing_runs:
            rows = runner.skipped_rows(matrix, nothing_runs)
            cache_state = {"mode": str(cache), "kind": cache.kind, "state": None}    # never set: no image
        elif sweep_sizes:
            rows, sweep_facts = sweep.run_sweep(matrix, sized_images, cache, progress)
            cache_state = sweep_facts[-1]["cache"]
        else:
            # Set before any run, so a state that cannot be had is refused now, not after the first rows.
            with images.PageCache(image, cache) as page_cache:
                try:
                    if matrix.choices:
                        runner.run_matrix(matrix, progress, page_cache, rows)
                finally:
                    cache_state = page_cache.describe()     # interrupted: "after" stays None
    except KeyboardInterrupt:
        if sweep_sizes:
            raise       # a sweep's rows are by size; a part of one is not a sweep document
        interrupted = True
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    finally:
        progress.close()
    if interrupted and not rows:
        _interrupted("no row had finished", None)
    metadata = document_metadata.run(matrix, facts, started, cache_state, sys.argv)
    if interrupted:
        metadata["interrupted"] = True
    if preset is not None:
        rows = _in_preset_order(preset, rows, missing, matrix)
        metadata["preset"] = {
            "name": preset.name, "summary": preset.summary,
            "missing": [{"strategy": item.text, "reason": item.reason} for item in missing],
            "reference": published.REFERENCES.get(preset.reference),
        }
    if sweep_facts:
        metadata["sweep"] = sweep.metadata(sweep_facts)
        document = sweep.build_document(rows, metadata)
    else:
        document = results.build_document(rows, metadata)

    _show_and_export(document, sweep.KIND if sweep_facts else report.KIND, fmt, output, columns)
    if interrupted:
        _interrupted(f"{len(rows)} row(s) finished", output)

    # A run whose verification found a lost write is a failed run (worker.py): status 1 too.
    failed = sum(group["failed_runs"] for group in document["groups"])
    if failed:
        raise click.ClickException(f"{failed} run(s) failed; their reasons are listed with the results")
    chosen = [group for group in document["groups"] if group["label"] not in matrix_bounds(matrix)]
    if chosen and all(group["status"] == "skipped" for group in chosen):
        _all_skipped([(group["label"], group["reason"]) for group in chosen],
                     f"no {human_bytes(image.size)} image generated" if nothing_runs else None)


def _trace_threads(ctx, pattern, threads, overlap, image_bytes):
    """For --pattern trace:PATH: the trace loaded and checked against the image (one line
    naming the entry or the size at fault), and the workload threads it needs (its own
    count; a --threads that differs is refused). The trace says which accesses write, so
    --op, --dirty and --overlap do not apply to it."""
    from wpcompare import trace as traces
    if os.path.isdir(pattern.path):
        raise BadInput(f"--pattern trace:{pattern.path} is a directory: one trace per cycle is "
                       "for `wpcompare cycle`; give run one trace file")
    try:
        loaded = binding.loaded_trace(pattern.path)
        traces.check_region(loaded, image_bytes)
    except WpcError as error:
        raise BadInput(error.reason) from None
    if overlap:
        raise BadInput("--overlap does not apply to a trace: each thread replays its own entries")
    if ctx.get_parameter_source("threads") in _FROM_COMMAND_LINE and threads != loaded.threads:
        raise BadInput(f"--threads {threads}: the trace {pattern.path} was recorded with "
                       f"{loaded.threads} thread(s); drop --threads")
    return loaded.threads


def _cycle_traces(ctx, pattern, threads, overlap, cycles, image_bytes):
    """For cycle's --pattern trace:PATH: each cycle's (Pattern, threads). A file is replayed
    every cycle; a directory's *.trace files one per cycle, in name order, so cycle k replays
    the k-th (as a CRaC user's successive restores each left one). Each is checked as
    run's --pattern trace is; fewer traces than --cycles is refused."""
    try:
        files = trace_files(pattern)
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    if len(files) > 1 and cycles > len(files):
        raise BadInput(f"--cycles {cycles}, but {pattern.path} holds {len(files)} traces (one per "
                       f"cycle): give --cycles {len(files)} or fewer, or more traces")
    per_cycle = []
    for number in range(cycles):
        each = Pattern("trace", path=files[number % len(files)])
        per_cycle.append((each, _trace_threads(ctx, each, threads, overlap, image_bytes)))
    return per_cycle


# Options a preset may set, by the name of run()'s parameter.
PRESET_OPTIONS = ("op", "pattern", "size", "image_kind", "repeat", "warmup", "threads")
_FROM_COMMAND_LINE = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def _show_and_export(document, kind, fmt, output, columns=None):
    """The table on stdout (or fmt without --output) first, then the export in fmt or the
    format its extension names (export.FORMATS), written to output (wpcompare.output); the
    kind's warnings on stderr when stdout is data. A failed write is one error line (exit 1)
    after everything else was done, and the document is kept somewhere safe, named in that line."""
    if output:
        export_format = fmt or export.format_of(kind, output)
        terminal_format = export.DEFAULT
    else:
        terminal_format = fmt or export.DEFAULT
    problems, lost = [], False
    if not _echo_stdout(export.render(kind, document, terminal_format, columns), problems):
        lost = not output
    if export.is_data(terminal_format):
        for warning in kind.warnings(document):
            click.echo(f"warning: {warning}", err=True)
    if output:
        try:
            note = output_files.write_export(output, export.render(kind, document, export_format, columns))
        except OSError as error:
            problems.append(f"cannot write {output}: {error.strerror or error}")
            lost = True
        else:
            if note:
                click.echo(f"note: {note}", err=True)
    if lost:
        kept = output_files.keep_safe(kind.dumps(document), kind.name)
        problems.append(f"the results are kept in {kept}" if kept
                        else "the results could not be kept anywhere (no writable directory)")
    if problems:
        raise click.ClickException("; ".join(problems))


def _echo_stdout(text, problems):
    """Print text on stdout and flush it; False (and the reason in problems) if that failed."""
    try:
        click.echo(text, nl=False)
        sys.stdout.flush()
    except OSError as error:
        output_files.silence_stdout()
        problems.append(f"cannot write to standard output: {error.strerror or error}")
        return False
    return True


def _remove_stale_directories(parents):
    """What a killed wpcompare (SIGKILL) left: removed, and said so."""
    for path in leftovers.remove_stale(parents):
        click.echo(f"removed {path}, left by a wpcompare process that is gone", err=True)


def _warn_oversubscribed(threads):
    """More workload threads than CPUs this process may use: they take turns, which the
    latencies then measure."""
    cpus = len(os.sched_getaffinity(0))
    if threads > cpus:
        click.echo(f"warning: --threads {threads} on {cpus} CPU(s): the threads take turns on the "
                   "CPUs, so first-access latencies include waiting to be scheduled and the fault "
                   f"handlers compete with the workload; use --threads {cpus} or fewer to compare "
                   "strategies", err=True)


def _first_of_each_label(choices):
    """The choices in order, a label given twice (-s mmap -s mmap) run once."""
    unique = {}
    for choice in choices:
        unique.setdefault(choice.label, choice)
    return list(unique.values())


def _system_facts(timeout):
    """`wpcompare info`'s facts for the metadata, probed in a child so this process opens no uffd."""
    try:
        return runner.call_in_fresh_process(lambda _: probe.system_facts(), None, timeout)
    except runner.WorkerFailure as failure:
        return {"error": f"system probe failed: {failure.reason}"}


def _preset_settings(ctx, preset, user_image):
    """The preset's option values that the command line did not set itself."""
    settings = {}
    for key, value in preset.settings.items():
        if key not in PRESET_OPTIONS:
            raise ValueError(f"preset {preset.name!r} sets unknown option {key!r}")
        if ctx.get_parameter_source(key) in _FROM_COMMAND_LINE:
            continue
        if user_image and key in ("size", "image_kind"):
            continue        # they describe a generated image; --image brings its own
        settings[key] = value
    return settings


def _in_preset_order(preset, rows, missing, matrix):
    """The bounds first, as in every run, then the rows in the order the preset names its
    strategies, missing ones as skipped rows."""
    missing_by_text = {item.text: item for item in missing}
    placed = {choice.label for choice in matrix.bounds}
    ordered = [row for row in rows if row["label"] in placed]
    for text in preset.strategies:
        if text in missing_by_text:
            ordered += presets.missing_rows(missing_by_text[text], matrix.ops, matrix.pattern, matrix.threads,
                                            matrix.overlap, matrix.seed)
            continue
        label = next((choice.label for choice in matrix.choices
                      if text in (choice.label, choice.strategy.name + ":" + choice.params_text)), None)
        if label is not None and label not in placed:
            ordered += [row for row in rows if row["label"] == label]
            placed.add(label)
    # Anything not matched above (it should not happen) still appears, at the end.
    ordered += [row for row in rows if row["label"] not in placed]
    return ordered


@main.command(name="compare")
@click.argument("a", type=ResultFileType(), metavar="A.json")
@click.argument("b", type=ResultFileType(), metavar="B.json")
@click.option("--alpha", type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
              default=compare.DEFAULT_ALPHA, show_default=True,
              help="Significance level of the Mann-Whitney U test.")
@click.option("--format", "fmt", type=click.Choice(compare.FORMATS), default=None,
              help="Format of --output (default: from its extension), or else of stdout. [default: table]")
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Write the comparison here; the table still goes to stdout.")
def compare_results(a, b, alpha, fmt, output):
    """Compare two result files row by row: B's medians against A's, with a significance test."""
    comparison = compare.compare_documents(a, b, alpha)
    _show_and_export(comparison, compare.KIND, fmt, output)


@main.command(name="show")
@click.argument("path", metavar="RESULT.json")
@click.option("--format", "fmt", type=click.Choice([fmt.name for fmt in export.FORMATS]), default=None,
              help="Format of --output (default: from its extension), or else of stdout; one the "
                   "document's kind offers (csv: run and cycle; hlog: run). [default: table]")
@click.option("--columns", default=None, metavar="default|all|NAME,...",
              help="A run or cycle table's columns (see theirs); for a run: " + COLUMNS_HELP)
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Write the document here in --format (or its extension's); the table still goes to stdout.")
def show_command(path, fmt, columns, output):
    """Render a saved result of run, cycle or compare again, in any format, without measuring."""
    from wpcompare import show
    try:
        kind, document = show.load(path)
        chosen = export.parse_columns(kind, columns) if columns is not None else None
    except WpcError as error:
        raise BadInput(error.reason) from None
    wanted = fmt or (export.format_of(kind, output) if output else None)
    if wanted is not None and wanted not in export.names(kind):
        raise BadInput(f"--format {wanted}: a {kind.name} document is shown as "
                       + ", ".join(export.names(kind)))
    _show_and_export(document, kind, fmt, output, chosen)


@main.command(name="plot")
@click.argument("document", type=PlottableFileType(), metavar="RESULTS.json")
@click.option("-o", "--output", type=ImageOutputType(), required=True,
              help="The image to write: FILE.png or FILE.svg.")
def plot_results(document, output):
    """Draw a result file: of `run`, first-access latency CDFs (read, write) and the phases of each
    row; of `cycle`, every cycle's phases, pause and bytes written."""
    try:
        data, notes = plot.render(document, plot.image_format(output))
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    try:
        note = output_files.write_export(output, data)
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror or error}") from None
    if note:
        notes.append(note)
    for note in notes:
        click.echo(note, err=True)
    click.echo(f"wrote {output}", err=True)


@main.command()
@plugin_option
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--require", "required", multiple=True, metavar="FEATURE|STRATEGY",
              help="Print nothing else; exit 0 if this userfaultfd feature (as `info --json` names "
                   "it, e.g. UFFD_FEATURE_WP_ASYNC) or strategy (NAME[:PARAM=VALUE,...]) is available "
                   "here, 1 with the reason on stderr if not. Repeat for several.")
def info(as_json, required):
    """What this machine offers: kernel, userfaultfd features, privileges, huge pages, CPUs, strategies."""
    if required:
        _require(required)
        return
    facts = dict(schema=INFO_SCHEMA, **probe.system_facts())
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        click.echo(probe.format_facts(facts))


INFO_SCHEMA = "wpcompare.info/1"


def _require(names):
    """`info --require`: like `criu check --feature`, the answer is the exit status."""
    missing = 0
    for name in names:
        try:
            reason = probe.requirement(name)
        except WpcError as error:
            raise BadInput(f"--require: {error.reason}") from None
        if reason is not None:
            click.echo(f"{name}: {reason}", err=True)
            missing += 1
    if missing:
        sys.exit(1)


LIST_SCHEMA = "wpcompare.list/1"


@main.command(name="list")
@plugin_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the strategies as JSON (schema wpcompare.list/1): name, family, description, "
                   "params with kind, choices and default, and origin (builtin or the plugin's path).")
def list_strategies(as_json):
    """Strategies with their descriptions and parameters."""
    table = strategies.all_strategies()
    if as_json:
        click.echo(json.dumps({"schema": LIST_SCHEMA, "strategies": [
            {"name": strategy.name, "family": strategy.family, "description": strategy.description,
             "origin": plugins.origin(strategy.name) or "builtin",
             "params": [{"name": param.name, "kind": param.kind, "choices": list(param.choices),
                         "default": param.default, "help": param.help} for param in strategy.params]}
            for strategy in table]}, indent=2))
        return
    width = max((len(strategy.name) for strategy in table), default=0)
    for strategy in table:
        source = plugins.origin(strategy.name)
        click.echo(f"{strategy.name:<{width}}  [{strategy.family}] {strategy.description}"
                   + (f" (plugin {source})" if source else ""))
        for param in strategy.params:
            click.echo(f"{'':<{width}}    {param.describe()}: {param.help}")


@main.group(name="cache")
def cache_command():
    """The cache of generated images: list them, or remove them."""


@cache_command.command(name="list")
def cache_list():
    """Every cached image with its size and age, and the total."""
    try:
        found = image_cache.entries()
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    for line in image_cache.describe_entries(found):
        click.echo(line)


@cache_command.command(name="clean")
def cache_clean():
    """Remove every cached image (they are generated again when needed)."""
    try:
        removed, freed = image_cache.clean()
    except WpcError as error:
        raise BadInput(error.reason) from None
    except OSError as error:
        raise click.ClickException(f"cannot clean the image cache: {error.strerror}") from None
    click.echo(f"removed {removed} file(s), {human_bytes(freed)} freed from {image_cache.cache_dir()}")


class DirectoryType(click.ParamType):
    """An existing, writable directory: checked before any run starts."""

    name = "directory"

    def convert(self, value, param, ctx):
        path = os.path.abspath(value)
        if not os.path.exists(path):
            self.fail(f"{value!r} does not exist: create it first", param, ctx)
        if not os.path.isdir(path):
            self.fail(f"{value!r} is not a directory", param, ctx)
        if not os.access(path, os.W_OK | os.X_OK):
            self.fail(f"directory {value!r} is not writable", param, ctx)
        return path


@main.command(name="include-dir")
def include_dir():
    """The directory holding wpcompare_plugin.h, to build a strategy plugin against (-I)."""
    click.echo(plugins.include_dir())


@main.command(name="cycle")
@plugin_option
@click.option("-s", "--strategy", "choices", multiple=True, type=StrategyType(),
              metavar="NAME[:PARAM=VALUE,...]",
              help="Strategy to cycle, with parameters; repeat for several. [default: every strategy]")
@click.option("--cycles", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Checkpoint cycles per strategy: restore, work, fix up, checkpoint, delete the old image.")
@click.option("--dirty", type=FiniteFloatRange(0, 1), default=0.1, show_default=True,
              help="Share F of the pattern's pages each cycle writes (the others it reads), 0 <= F <= 1.")
@click.option("--pattern", type=PatternType(), default="random", show_default=True,
              help="Pages each cycle touches: seq, random, sparse:F (0<F<=1), stride:N, or "
                   "trace:PATH (a trace file, replayed every cycle, or a directory of *.trace "
                   "files, cycle k replaying the k-th in name order; a trace's writes replace "
                   "--dirty).")
@click.option("--threads", type=click.IntRange(1, binding.MAX_THREADS), default=1, show_default=True,
              help="Workload threads; the pages are split among them.")
@click.option("--overlap", is_flag=True, help="Every thread touches every selected page.")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Run workload thread i on the i-th CPU this process may use.")
@click.option("--size", type=SizeType(), default=None,
              help="Size of the generated image, with K, M or G. [default: 256M]")
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seed of the image; cycle k's workload uses seed + k.")
@click.option("--image-kind", type=click.Choice(["mixed", "random"]), default=None,
              help="Generated image content. [default: mixed]")
@click.option("--image", type=ImageType(), default=None, metavar="PATH",
              help="Start the chain from this file (e.g. a captured heap) instead of a generated "
                   "image; it is copied, never written, and is the base every cycle is verified "
                   "against, so it must not change while the chains run.")
@click.option("--delete-old", type=click.Choice(chains.DELETE_MODES), default="after-checkpoint",
              show_default=True,
              help="When image k goes: after image k+1 is written, or as soon as the strategy "
                   "detached (right after restore for one detached by then; no incremental dump).")
@click.option("--dir", "directory", type=DirectoryType(), default=None,
              help="Where the images go (in a private directory made and removed there); its "
                   "filesystem decides whether copy_file_range can reflink. [default: the temp dir]")
@click.option("--format", "fmt", type=click.Choice(cycle_report.FORMATS), default=None,
              help="Format of --output (default: from its extension), or else of stdout. [default: table]")
@click.option("--columns", type=ColumnsType(cycle_report.KIND), default=None, metavar="default|all|NAME,...",
              help="The table's columns after strategy and cycle: default (restore, work, fixup, written, "
                   "pause, cycle time, verified), all, or names from `all`'s header, comma-separated; "
                   "for table and markdown (whose default is all).")
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Write the results here once every chain has finished (on Ctrl-C: the chains finished "
                   "so far, marked interrupted); the table still goes to stdout.")
@click.option("--timeout", type=TIMEOUT, default=120, show_default=True,
              help="Seconds one cycle may take before it is killed and reported as timed out.")
@click.option("--repeat", type=click.IntRange(1, MAX_REPEAT), default=1, show_default=True,
              help="Chains per strategy (each from the first image again): the ranking is over the "
                   "cycles of all of them, with its spread and ties.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress line on stderr (it is shown only on a terminal, for chains over 2 s).")
@click.option("--lose-write", type=click.IntRange(min=1), default=None, hidden=True)
@click.pass_context
def cycle_command(ctx, choices, cycles, dirty, pattern, threads, overlap, pin, size, seed, image_kind,
                  image, delete_old, directory, fmt, columns, output, timeout, repeat, quiet, lose_write):
    """Repeated checkpoints: per strategy, cycles of restore, work, fixup, checkpoint, each verified."""
    if lose_write is not None and (lose_write > cycles or delete_old != "after-checkpoint"):
        raise click.UsageError("--lose-write CYCLE needs a CYCLE within --cycles and "
                               "--delete-old after-checkpoint")
    if not choices:
        choices = [strategies.default_choice(strategy) for strategy in strategies.measured_strategies()]
    if image is not None and (size is not None or image_kind is not None):
        raise click.UsageError("--size and --image-kind describe a generated image: "
                               "drop them, or drop --image")
    unique = _first_of_each_label(choices)
    image_bytes = image.size if image else size or DEFAULT_IMAGE_SIZE
    cycle_patterns = None
    if pattern.kind == "trace":
        cycle_patterns = _cycle_traces(ctx, pattern, threads, overlap, cycles, image_bytes)
        threads = max(each_threads for _, each_threads in cycle_patterns)
    _remove_stale_directories([None, directory])
    _warn_oversubscribed(threads)
    nothing_runs = _nothing_can_run(unique, image_bytes, timeout) if image is None else None
    try:
        images.check_memory(image_bytes, image)
        if nothing_runs:
            image = images.ungenerated_image(image_bytes, seed, image_kind or "mixed")
        elif image is None:
            image = images.generated_image(size or DEFAULT_IMAGE_SIZE, seed, image_kind or "mixed")
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None

    facts = _system_facts(timeout)
    plan = chains.ChainPlan(choices=unique, cycles=cycles, dirty=dirty, pattern=pattern,
                            image=image, threads=threads, overlap=overlap, pin_threads=pin, seed=seed,
                            delete_old=delete_old, directory=directory, timeout=timeout,
                            lose_write=lose_write, cycle_patterns=cycle_patterns)
    started = document_metadata.Start()
    progress = progress_for(quiet=quiet, cycles=True)
    done, interrupted = [], False
    try:
        if nothing_runs:
            done = chains.skipped_chains(plan, nothing_runs)
        for repetition in range(1, repeat + 1 if not nothing_runs else 1):
            chains.run_chains(plan, progress, repetition, repeat, done)
    except KeyboardInterrupt:
        interrupted = True
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    finally:
        progress.close()
    if interrupted and not done:
        _interrupted("no chain had finished", None)
    metadata = document_metadata.cycle(plan, facts, started, sys.argv)
    metadata["options"]["repeat"] = repeat
    if interrupted:
        metadata["interrupted"] = True
    document = cycle_results.build_document(done, metadata)

    _show_and_export(document, cycle_report.KIND, fmt, output, columns)
    if interrupted:
        _interrupted(f"{len(done)} chain(s) finished", output)

    failed = [chain["label"] for chain in done if chain["status"] == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} chain(s) failed ({', '.join(failed)}); "
                                   "their reasons are listed with the results")
    if done and all(chain["status"] == "skipped" for chain in done):
        _all_skipped([(chain["label"], chain["reason"]) for chain in done],
                     f"no {human_bytes(image.size)} image generated" if nothing_runs else None)


# The exit status of `run` and `cycle` (README "Exit codes"): 0 every row measured and verified,
# 1 a run failed or was not verified, 2 bad input, 3 every row skipped, 130 interrupted by
# SIGINT (the finished rows still printed and saved), 128+N stopped by SIGTERM or SIGHUP.
EXIT_ALL_SKIPPED = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT


def matrix_bounds(matrix):
    return {choice.label for choice in matrix.bounds}


def _all_skipped(reasons, note=None):
    """Nothing could run here: one line with each strategy's reason (its fix), and exit 3."""
    why = "; ".join(f"{label}: {reason}" for label, reason in dict(reasons).items())
    note = f"; {note}" if note else ""
    click.echo(f"Error: nothing ran, every strategy asked for was skipped here ({why}){note}", err=True)
    sys.exit(EXIT_ALL_SKIPPED)


def _nothing_can_run(choices, image_bytes, timeout):
    """{label: reason} if none of the strategies asked for can run here on an image of
    image_bytes (their rows are then skipped rows, and no image is generated), else None."""
    if not choices:
        return None
    try:
        reasons = runner.unavailable_choices(choices, image_bytes, timeout)
    except runner.WorkerFailure:
        return None     # the runs will probe again, each in its own worker, and say why
    return reasons if len(reasons) == len(choices) else None


def _interrupted(finished, output):
    """After Ctrl-C: what finished was printed (and saved to output); exit 130."""
    if finished.startswith("no "):
        said = f"{finished}, nothing to show or save"
    else:
        said = f"{finished} are shown above" + (f"; they are saved in {output}" if output else "")
    click.echo(f"Error: interrupted by SIGINT: {said}", err=True)
    sys.exit(EXIT_INTERRUPTED)


@main.command(name="check")
@plugin_option
@click.option("-s", "--strategy", "choice_texts", multiple=True, metavar="NAME[:PARAM=VALUE,...]",
              shell_complete=lambda ctx, param, incomplete: StrategyType().shell_complete(ctx, param, incomplete),
              help="Strategy to check, with parameters; repeat for several.")
@click.option("--all", "all_strategies", is_flag=True,
              help="Check every strategy (the bounds excepted) with its default parameters: the "
                   "built-in ones and any a --plugin added.")
@click.option("--quick", is_flag=True,
              help=f"The short battery ({', '.join(check_battery.QUICK)}): a few seconds a strategy.")
@click.option("--case", "case_names", multiple=True, type=click.Choice(check_battery.CASE_NAMES),
              metavar="NAME", help="Run only this case; repeat for several. Cases: "
              + ", ".join(check_battery.CASE_NAMES) + ".")
@click.option("--seconds", type=FiniteFloatRange(0, MAX_TIMEOUT), default=0, show_default=True,
              help="Keep each racing case going for N seconds once its writers have overlapped "
                   "the strategy's background work.")
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Also write every case's result as JSON here (replaced whole, only once the "
                   "battery has finished).")
@click.option("--timeout", type=TIMEOUT, default=check_battery.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds one case's run may take before it is killed and the case fails.")
@click.option("--inject", "injection", default=None, hidden=True)
def check_command(choice_texts, all_strategies, quick, case_names, seconds, output, timeout, injection):
    """The correctness battery for a strategy: TAP output, exit 0 only if no case failed.

    Every case runs in a fresh worker; a crash is a failed case with its signal. Output is
    kselftest's TAP 13 (`ok N - STRATEGY: CASE`, `not ok N - STRATEGY: CASE: REASON`,
    `ok N - STRATEGY: CASE # SKIP REASON`) and a totals line. Exit status: 0 nothing failed,
    1 a case failed, 2 bad usage."""
    if quick and case_names:
        raise click.UsageError("give --quick or --case, not both")
    if bool(choice_texts) == bool(all_strategies):
        raise click.UsageError("give -s NAME (repeatable) or --all")
    if injection is not None:
        try:
            parse_injection(injection)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    # --plugin has loaded its strategies already (an eager option): parse_choice and
    # measured_strategies find a plugin's rows like built-in ones.
    try:
        if all_strategies:
            choices = [strategies.default_choice(strategy) for strategy in strategies.measured_strategies()]
        else:
            choices = _first_of_each_label([strategies.parse_choice(text) for text in choice_texts])
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    _remove_stale_directories([None])
    battery = check_battery.Battery(list(case_names) if case_names else "quick" if quick else "full",
                                    seconds=seconds, timeout=timeout, injection=injection)
    total = len(choices) * len(battery.cases)
    for line in check_battery.tap_header(total):
        click.echo(line)
    numbered = []

    def report(result):
        numbered.append(result)
        click.echo(check_battery.tap_line(len(numbered), result))
        sys.stdout.flush()

    started = time.monotonic()
    with check_battery.Images() as images:
        results = battery.run(choices, images, report)
    counts = check_battery.totals(results, time.monotonic() - started)
    click.echo(check_battery.summary_line(counts))
    if output:
        data = check_battery.document(results, counts, choices, battery, sys.argv)
        try:
            note = output_files.write_export(output, json.dumps(data, indent=2) + "\n")
        except OSError as error:
            raise click.ClickException(f"cannot write {output}: {error.strerror or error}") from None
        if note:
            click.echo(f"note: {note}", err=True)
    sys.exit(check_battery.exit_status(counts))


@main.command(name="sparsify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def sparsify_command(path):
    """Make an image file sparse: its all-zero pages become holes (fallocate PUNCH_HOLE; size
    and bytes unchanged), which zero=zeropage then finds without reading them."""
    try:
        punched, pages = binding.punch_zero_pages(path)
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    click.echo(f"{path}: {punched} of {pages} pages were all zero and are holes now")


from wpcompare.trace_commands import capture_command, trace_command  # noqa: E402 (commands of their own)

main.add_command(trace_command)
main.add_command(capture_command)
