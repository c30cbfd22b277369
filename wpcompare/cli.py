"""The command line: `wpcompare run`, `wpcompare info`, `wpcompare list`.

Bad input is refused before anything runs, with one line naming the problem
and the fix, and a non-zero exit; no output file is touched.
"""
import json
import os
import sys
import time
from datetime import datetime, timezone

import click

from wpcompare import __version__, binding, probe, report, results, runner, strategies
from wpcompare import image as images
from wpcompare.errors import InvalidArgument, WpcError
from wpcompare.options import parse_pattern, parse_size
from wpcompare import cycle as chains
from wpcompare import cycle_report, cycle_results

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


class PatternType(_ParsedType):
    name = "pattern"

    def parse(self, value):
        return parse_pattern(value)


class StrategyType(_ParsedType):
    name = "strategy"

    def parse(self, value):
        return strategies.parse_choice(value)


class ImageType(_ParsedType):
    name = "path"

    def parse(self, value):
        return images.open_user_image(value)


class OutputType(click.ParamType):
    """A file that can be created where asked: checked before any run starts."""

    name = "file"

    def convert(self, value, param, ctx):
        path = os.path.abspath(value)
        if os.path.isdir(path):
            self.fail(f"{value!r} is a directory: give a file name", param, ctx)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            self.fail(f"directory {parent!r} does not exist: create it first", param, ctx)
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"directory {parent!r} is not writable", param, ctx)
        return path


class InjectionType(click.ParamType):
    name = "kind[:N][@strategy]"

    def convert(self, value, param, ctx):
        kind, _, target = value.partition("@")
        try:
            parse_injection(kind)
        except ValueError as error:
            self.fail(f"{error}, optionally @STRATEGY", param, ctx)
        return runner.Injection(kind, target or None)


EXPORT_EXTENSIONS = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wpcompare")
def main():
    """Compare ways to restore checkpointed memory: mmap, SIGSEGV copy-and-remap, userfaultfd."""


@main.command()
@click.option("-s", "--strategy", "choices", multiple=True, type=StrategyType(),
              metavar="NAME[:PARAM=VALUE,...]",
              help="Strategy to measure, with parameters; repeat for several. [default: every strategy]")
@click.option("--pattern", type=PatternType(), default="random", show_default=True,
              help="Pages the workload touches: seq, random, sparse:F (0<F<=1), stride:N.")
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
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Measured runs per strategy and op, each in a fresh process.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Unmeasured runs before them.")
@click.option("--size", type=SizeType(), default=None,
              help="Size of the generated image, with K, M or G. [default: 256M]")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seed of the generated image and of the random access order.")
@click.option("--image-kind", type=click.Choice(["mixed", "random"]), default=None,
              help="Generated image content: random, zero and repeated pages (mixed), "
                   "or only random pages. [default: mixed]")
@click.option("--image", type=ImageType(), default=None, metavar="PATH",
              help="Use this file as the image instead of generating one.")
@click.option("--cache", type=click.Choice(["hot", "cold"]), default="hot", show_default=True,
              help="Page cache of the image: read once before the runs, or evicted before each.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default=None,
              help="Format of --output (default: from its extension), or else of stdout. [default: table]")
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Write the results here once every run has finished; the table still goes to stdout.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120, show_default=True,
              help="Seconds one run may take before it is killed and reported as timed out.")
@click.option("--inject", type=InjectionType(), default=None, hidden=True)
def run(choices, pattern, op, threads, overlap, pin, repeat, warmup, size, seed, image_kind, image,
        cache, fmt, output, timeout, inject):
    """Measure strategies: restore, touch, fixup and verify, each run in a fresh process."""
    if image is not None and (size is not None or image_kind is not None):
        raise click.UsageError("--size and --image-kind describe a generated image: "
                               "drop them, or drop --image")
    if not choices:
        choices = [strategies.default_choice(strategy) for strategy in strategies.all_strategies()]
    unique = {}
    for choice in choices:
        unique.setdefault(choice.label, choice)
    ops = ["read", "write"] if op == "both" else [op]
    try:
        images.check_memory(image.size if image else size or DEFAULT_IMAGE_SIZE, image)
        if image is None:
            image = images.generated_image(size or DEFAULT_IMAGE_SIZE, seed, image_kind or "mixed")
        if cache == "cold":
            # Refuse now, not after the first runs, where eviction cannot work.
            images.prepare_page_cache(image, "cold")
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None

    try:
        facts = runner.call_in_fresh_process(lambda _: probe.system_facts(), None, timeout)
    except runner.WorkerFailure as failure:
        facts = {"error": f"system probe failed: {failure.reason}"}
    matrix = runner.Matrix(choices=list(unique.values()), ops=ops, pattern=pattern, image=image,
                           threads=threads, overlap=overlap, pin_threads=pin, repeat=repeat, warmup=warmup, seed=seed,
                           cache=cache, timeout=timeout, inject=inject)
    started = time.monotonic()
    try:
        rows = runner.run_matrix(matrix)
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    document = results.build_document(rows, _metadata(matrix, facts, time.monotonic() - started))

    if output:
        export_format = fmt or EXPORT_EXTENSIONS.get(os.path.splitext(output)[1].lower(), "table")
        report.write_export(output, report.render(document, export_format))
        terminal_format = "table"
    else:
        terminal_format = fmt or "table"
    click.echo(report.render(document, terminal_format), nl=False)
    if terminal_format in ("json", "csv"):
        for warning in report.warnings(document):
            click.echo(f"warning: {warning}", err=True)

    failed = sum(group["failed_runs"] for group in document["groups"])
    if failed:
        raise click.ClickException(f"{failed} run(s) failed; their reasons are listed with the results")


def _metadata(matrix, facts, elapsed):
    """Everything a reader of the results needs besides the rows."""
    return {
        "wpcompare_version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": sys.argv,
        "elapsed_s": round(elapsed, 3),
        "system": facts,
        "timer_overhead_ns": facts.get("timer_overhead_ns"),
        "image": matrix.image.describe(),
        "cache": matrix.cache,
        "options": {
            "strategies": [choice.label for choice in matrix.choices], "ops": matrix.ops,
            "pattern": str(matrix.pattern), "threads": matrix.threads, "overlap": matrix.overlap,
            "pin_threads": matrix.pin_threads, "repeat": matrix.repeat, "warmup": matrix.warmup, "seed": matrix.seed,
            "timeout": matrix.timeout,
        },
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def info(as_json):
    """What this machine offers: kernel, userfaultfd features, privileges, huge pages, CPUs, strategies."""
    facts = probe.system_facts()
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        click.echo(probe.format_facts(facts))


@main.command(name="list")
def list_strategies():
    """Strategies with their descriptions and parameters."""
    table = strategies.all_strategies()
    width = max((len(strategy.name) for strategy in table), default=0)
    for strategy in table:
        click.echo(f"{strategy.name:<{width}}  [{strategy.family}] {strategy.description}")
        for param in strategy.params:
            click.echo(f"{'':<{width}}    {param.describe()}: {param.help}")


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


@main.command(name="cycle")
@click.option("-s", "--strategy", "choices", multiple=True, type=StrategyType(),
              metavar="NAME[:PARAM=VALUE,...]",
              help="Strategy to cycle, with parameters; repeat for several. [default: every strategy]")
@click.option("--cycles", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Checkpoint cycles per strategy: restore, work, fix up, checkpoint, delete the old image.")
@click.option("--dirty", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share F of the pattern's pages each cycle writes (the others it reads), 0 <= F <= 1.")
@click.option("--pattern", type=PatternType(), default="random", show_default=True,
              help="Pages each cycle touches: seq, random, sparse:F (0<F<=1), stride:N.")
@click.option("--threads", type=click.IntRange(1, binding.MAX_THREADS), default=1, show_default=True,
              help="Workload threads; the pages are split among them.")
@click.option("--overlap", is_flag=True, help="Every thread touches every selected page.")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Run workload thread i on the i-th CPU this process may use.")
@click.option("--size", type=SizeType(), default=None,
              help="Size of the generated image, with K, M or G. [default: 256M]")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seed of the image; cycle k's workload uses seed + k.")
@click.option("--image-kind", type=click.Choice(["mixed", "random"]), default=None,
              help="Generated image content. [default: mixed]")
@click.option("--delete-old", type=click.Choice(chains.DELETE_MODES), default="after-checkpoint",
              show_default=True,
              help="When image k goes: after image k+1 is written, or as soon as the strategy "
                   "detached (right after restore for one detached by then; no incremental dump).")
@click.option("--dir", "directory", type=DirectoryType(), default=None,
              help="Where the images go (in a private directory made and removed there); its "
                   "filesystem decides whether copy_file_range can reflink. [default: the temp dir]")
@click.option("--format", "fmt", type=click.Choice(cycle_report.FORMATS), default=None,
              help="Format of --output (default: from its extension), or else of stdout. [default: table]")
@click.option("-o", "--output", type=OutputType(), default=None,
              help="Write the results here once every chain has finished; the table still goes to stdout.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120, show_default=True,
              help="Seconds one cycle may take before it is killed and reported as timed out.")
@click.option("--lose-write", type=click.IntRange(min=1), default=None, hidden=True)
def cycle_command(choices, cycles, dirty, pattern, threads, overlap, pin, size, seed, image_kind,
                  delete_old, directory, fmt, output, timeout, lose_write):
    """Repeated checkpoints: per strategy, cycles of restore, work, fixup, checkpoint, each verified."""
    if lose_write is not None and (lose_write > cycles or delete_old != "after-checkpoint"):
        raise click.UsageError("--lose-write CYCLE needs a CYCLE within --cycles and "
                               "--delete-old after-checkpoint")
    if not choices:
        choices = [strategies.default_choice(strategy) for strategy in strategies.all_strategies()]
    unique = {}
    for choice in choices:
        unique.setdefault(choice.label, choice)
    try:
        images.check_memory(size or DEFAULT_IMAGE_SIZE)
        image = images.generated_image(size or DEFAULT_IMAGE_SIZE, seed, image_kind or "mixed")
        images.prepare_page_cache(image, "hot")
    except InvalidArgument as error:
        raise BadInput(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None

    try:
        facts = runner.call_in_fresh_process(lambda _: probe.system_facts(), None, timeout)
    except runner.WorkerFailure as failure:
        facts = {"error": f"system probe failed: {failure.reason}"}
    plan = chains.ChainPlan(choices=list(unique.values()), cycles=cycles, dirty=dirty, pattern=pattern,
                            image=image, threads=threads, overlap=overlap, pin_threads=pin, seed=seed,
                            delete_old=delete_old, directory=directory, timeout=timeout,
                            lose_write=lose_write)
    started = time.monotonic()
    try:
        done = chains.run_chains(plan)
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    document = cycle_results.build_document(
        done, cycle_results.metadata(plan, facts, time.monotonic() - started, sys.argv))

    if output:
        export_format = fmt or EXPORT_EXTENSIONS.get(os.path.splitext(output)[1].lower(), "table")
        report.write_export(output, cycle_report.render(document, export_format))
        terminal_format = "table"
    else:
        terminal_format = fmt or "table"
    click.echo(cycle_report.render(document, terminal_format), nl=False)
    if terminal_format in ("json", "csv"):
        for warning in cycle_report.warnings(document):
            click.echo(f"warning: {warning}", err=True)

    failed = [chain["label"] for chain in done if chain["status"] == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} chain(s) failed ({', '.join(failed)}); "
                                   "their reasons are listed with the results")
