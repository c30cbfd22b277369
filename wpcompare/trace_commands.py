"""`wpcompare trace show` and `wpcompare capture`: recorded access orders (wpcompare.trace)."""
import json

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
