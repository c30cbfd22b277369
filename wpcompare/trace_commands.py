"""`wpcompare trace show` and `wpcompare capture`: recorded access orders (wpcompare.trace)."""
import json
import signal
import sys

import click

from wpcompare import trace as traces
from wpcompare.errors import WpcError


class _Refused(click.ClickException):
    """Input refused: one line, exit status 2."""

    exit_code = 2


@click.group(name="trace")
def trace_command():
    """Trace files: recorded access orders for `--pattern trace:PATH`."""


@trace_command.command(name="show")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def trace_show(path, as_json):
    """Summary of a trace: pages touched, share written, per-thread counts, how sequential."""
    try:
        loaded = traces.load(path)
    except WpcError as error:
        raise _Refused(error.reason) from None
    if as_json:
        click.echo(json.dumps(traces.summary(loaded), indent=2))
    else:
        click.echo("\n".join(traces.show_lines(loaded)))


def _signal_number(text):
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise click.BadParameter(f"{text!r} is not a signal name (e.g. USR1)") from None


@click.command(name="capture", context_settings={"ignore_unknown_options": True})
@click.option("--pid", type=click.IntRange(min=1), default=None,
              help="The process to capture (else the command after --, started for the capture).")
@click.option("--mapping", "mapping_spec", default="largest", show_default=True,
              metavar="heap|largest|ADDR",
              help="Which mapping: [heap], the largest private writable anonymous one, or the one "
                   "holding a hex address.")
@click.option("--image", "image_path", type=click.Path(dir_okay=False), required=True,
              help="Where the mapping's bytes go (the image for `run --image`).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Where the trace goes. [default: IMAGE.trace]")
@click.option("--window", type=click.FloatRange(min=0, max=3600, min_open=True), default=5.0,
              show_default=True, help="Seconds of accesses recorded after the snapshot.")
@click.option("--delay", type=click.FloatRange(min=0, max=3600), default=None,
              help="Seconds before the snapshot. [default: 1 for a started command, 0 for --pid]")
@click.option("--signal", "send_signal", default=None, metavar="NAME",
              help="Send this signal (e.g. USR1) as recording starts: what makes the process "
                   "act as restored.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def capture_command(pid, mapping_spec, image_path, trace_path, window, delay, send_signal, command):
    """Image and access trace of a live process's mapping: its pages evicted to a zram swap
    device after the snapshot, their faults recorded with perf (root). See wpcompare.capture."""
    from wpcompare import capture as captures
    from wpcompare import leftovers

    if (pid is None) == (not command):
        raise _Refused("give --pid PID or a command after --, not both or neither")
    number = _signal_number(send_signal) if send_signal else None
    trace_path = trace_path or image_path + ".trace"
    try:
        summary = captures.capture(pid=pid, command=list(command), mapping_spec=mapping_spec,
                                   image_path=image_path, trace_path=trace_path, window=window,
                                   delay=delay, send_signal=number,
                                   say=lambda text: click.echo(text, err=True))
    except KeyboardInterrupt:
        click.echo("Error: interrupted by SIGINT; the process continued, swap, zram and "
                   "vm.page-cluster put back", err=True)
        sys.exit(130)
    except leftovers.Terminated as terminated:
        name = signal.Signals(terminated.number).name
        click.echo(f"Error: stopped by {name}; the process continued, swap, zram and "
                   "vm.page-cluster put back", err=True)
        sys.exit(128 + terminated.number)
    except (captures.UnsupportedError, captures.InvalidArgument) as error:
        raise _Refused(error.reason) from None
    except WpcError as error:
        raise click.ClickException(error.reason) from None
    click.echo(f"image: {summary['image']} ({summary['region_bytes']} bytes; {summary['pages_read']} "
               f"pages read, {summary['pages_zero']} never touched, zeros)")
    click.echo(f"trace: {summary['trace']} ({summary['entries']} entries: {summary['faults']} faults "
               f"recorded, {summary['writes_found_at_end']} writes found at the end; "
               f"{summary['resident_after_pageout']} pages stayed resident after the eviction)")
    click.echo("\n".join(traces.show_lines(traces.load(trace_path))[1:]))
