"""What one run cost the worker's memory: resident set before and after, page tables, minor faults.

Read by the worker around the run's phases, from /proc/self/status and getrusage, so a size
sweep can say why a per-page cost grows with the size: the resident set's high-water mark
before restore (the interpreter and the core: the baseline) against the one at the end (the
baseline plus what the region and the strategy's staging took), the page tables mapping the
region at the end (VmPTE: what the kernel allocated to map it), and the minor faults the whole
run took. A fork starts a child's high-water mark at its resident set then, so the baseline is
this worker's own.
"""
import resource

_STATUS = "/proc/self/status"
# /proc/self/status field -> key in a row's "memory", all in KiB.
_BEFORE = {"VmHWM": "hwm_before_kb", "VmRSS": "rss_before_kb"}
_END = {"VmHWM": "hwm_end_kb", "VmRSS": "rss_end_kb", "VmPTE": "pte_end_kb"}


def _status_kb(fields):
    """{key: KiB} of the named /proc/self/status fields; a field it lacks is None."""
    found = dict.fromkeys(fields.values())
    try:
        with open(_STATUS) as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in fields:
                    found[fields[name]] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return found


def _minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class RunMemory:
    """Started before restore, finished after the last phase while the region is still mapped."""

    def __init__(self):
        self.before = _status_kb(_BEFORE)
        self.minflt_before = _minor_faults()

    def finish(self):
        """The row's "memory": hwm_before_kb, rss_before_kb, hwm_end_kb, rss_end_kb, pte_end_kb
        (KiB) and minflt (minor faults from before restore to the end)."""
        return dict(self.before, **_status_kb(_END), minflt=_minor_faults() - self.minflt_before)
