"""The one place that talks to the C core (wpcompare._core, built by cffi).

Every C call returns 0 or -errno and leaves a one-line reason in a caller's
buffer or in the run's result; check() turns that into the exception class
the caller acts on. Python only sets things up and reads results: every
measured loop runs in C.
"""
import errno
import os

try:
    from wpcompare._core import ffi, lib
except ImportError as error:
    raise ImportError(f"the C core wpcompare._core is not built ({error}): "
                      "install with `pip install .` (in a checkout: `pip install -e .`)") from error

from wpcompare.errors import InvalidArgument, error_for_errno

PHASES = ("restore", "touch", "fixup", "verify")
OPS = {"read": lib.WPC_OP_READ, "write": lib.WPC_OP_WRITE, "mixed": lib.WPC_OP_MIXED}
PATTERN_KINDS = {
    "seq": lib.WPC_PATTERN_SEQ,
    "random": lib.WPC_PATTERN_RANDOM,
    "sparse": lib.WPC_PATTERN_SPARSE,
    "stride": lib.WPC_PATTERN_STRIDE,
    "trace": lib.WPC_PATTERN_TRACE,
}
IMAGE_KINDS = {"mixed": lib.WPC_IMAGE_MIXED, "random": lib.WPC_IMAGE_RANDOM}
LATENCY_MODES = {"none": lib.WPC_LATENCY_NONE, "every": lib.WPC_LATENCY_EVERY,
                 "sample": lib.WPC_LATENCY_SAMPLE}
PAGE_SIZE = lib.WPC_IMAGE_PAGE
MAX_THREADS = lib.WPC_MAX_THREADS


def _text(value):
    if value == ffi.NULL:
        return None
    return ffi.string(value).decode("utf-8", "replace")


def check(rc, why_or_reason):
    """Return rc if it is not an error, else raise the exception for -rc.

    why_or_reason is the C buffer the call wrote its reason into (a char
    array, e.g. result.reason) or a str.
    """
    if rc >= 0:
        return rc
    reason = why_or_reason if isinstance(why_or_reason, str) else _text(why_or_reason)
    raise error_for_errno(-rc, reason)


def _why_buffer():
    return ffi.new("char[]", lib.WPC_REASON_LEN)


def _optional(text):
    """A C string kept alive by the caller, or NULL for None/empty."""
    return ffi.new("char[]", text.encode()) if text else ffi.NULL


# ---- strategy table ----

def strategy_rows():
    """Every row of the C strategy table as plain dicts, in table order."""
    rows = []
    info = ffi.new("struct wpc_strategy_info *")
    param = ffi.new("struct wpc_param_info *")
    for index in range(lib.wpc_strategy_count()):
        check(lib.wpc_strategy_get(index, info), f"strategy table row {index} unreadable")
        params = []
        for number in range(info.nparams):
            check(lib.wpc_strategy_param(index, number, param),
                  f"parameter {number} of strategy row {index} unreadable")
            params.append({
                "name": _text(param.name),
                "kind": _text(param.kind),
                "choices": _text(param.choices),
                "default": _text(param.default_value),
                "help": _text(param.help),
            })
        rows.append({
            "name": _text(info.name),
            "family": _text(info.family),
            "description": _text(info.description),
            "params": params,
        })
    return rows


def load_plugin(path):
    """Load a strategy plugin into the C core's table (wpc_plugin_load): the rows it added,
    0 if that file was loaded already; InvalidArgument and the one-line reason if refused."""
    why = _why_buffer()
    rc = lib.wpc_plugin_load(os.fsencode(path), why, len(why))
    if rc < 0:
        raise InvalidArgument(_text(why))
    return rc


def validate_params(strategy, params):
    why = _why_buffer()
    check(lib.wpc_params_validate(strategy.encode(), _optional(params), why, len(why)), why)


class Choice:
    """A strategy with its parameters parsed once by the C core (wpc_choice_parse), to hand
    to probe_strategy and Run as they are: neither parses them again."""

    def __init__(self, strategy, params):
        out = ffi.new("struct wpc_choice **")
        why = _why_buffer()
        check(lib.wpc_choice_parse(strategy.encode(), _optional(params), out, why, len(why)), why)
        self.strategy = strategy
        self.params = params
        self._choice = ffi.gc(out[0], lib.wpc_choice_free)


def probe_strategy(strategy, params, image_bytes=0):
    """Raise the reason this strategy cannot run here (on an image of image_bytes, 0: any).
    params: the "name=value,..." text, or a Choice parsed already (for strategy)."""
    why = _why_buffer()
    if isinstance(params, Choice):
        rc = lib.wpc_choice_probe(params._choice, image_bytes, why, len(why))
    else:
        rc = lib.wpc_strategy_probe(strategy.encode(), _optional(params), image_bytes, why, len(why))
    check(rc, why)


# ---- one run ----

_traces = {}     # path -> (identity, struct wpc_trace and its arrays): alive as long as the process


def trace_struct(path):
    """The struct wpc_trace of the trace file at path (wpcompare.trace.load's errors); loaded
    once per process and file version, and kept: runs and their plans point into it."""
    from wpcompare import trace as traces

    try:
        stat = os.stat(path)
    except OSError as error:
        raise InvalidArgument(f"trace {path}: {error.strerror or error}") from None
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _traces.get(path)
    if cached and cached[0] == identity:
        return cached[1]
    loaded = traces.load(path)
    arrays = (ffi.new("uint64_t[]", loaded.pages), ffi.new("uint8_t[]", loaded.writes),
              ffi.new("uint8_t[]", loaded.thread_of))
    struct = ffi.new("struct wpc_trace *", {"count": len(loaded.pages), "page": arrays[0],
                                            "write": arrays[1], "thread": arrays[2]})
    _traces[path] = (identity, struct, arrays, loaded)
    return struct


def loaded_trace(path):
    """The wpcompare.trace.Trace behind trace_struct(path)."""
    trace_struct(path)
    return _traces[path][3]


def fill_workload(workload, *, op, pattern, seed, threads=1, overlap=False, pin_threads=True,
                  write_fraction=0.0):
    """Set a struct wpc_workload; pattern is an options.Pattern (a trace's is loaded here)."""
    workload.trace = trace_struct(pattern.path) if pattern.kind == "trace" else ffi.NULL
    workload.op = OPS[op]
    workload.pattern = PATTERN_KINDS[pattern.kind]
    workload.fraction = pattern.fraction
    workload.stride = pattern.stride
    workload.seed = seed
    workload.threads = threads
    workload.overlap = int(overlap)
    workload.pin_threads = int(pin_threads)
    workload.write_fraction = write_fraction


def access_order(npages, **workload):
    """The pages a run's workload touches, in order, as native uint64 bytes (wpc_plan_pages);
    workload: fill_workload's keywords."""
    plan = ffi.new("struct wpc_workload *")
    fill_workload(plan, **workload)
    order = ffi.new("uint64_t[]", max(npages, plan.trace.count if plan.trace != ffi.NULL else 0))
    begin = ffi.new("uint64_t[]", MAX_THREADS + 1)
    count = check(lib.wpc_plan_pages(plan, npages, order, begin, ffi.NULL),
                  f"invalid workload for {npages} pages")
    return bytes(ffi.buffer(order, count * 8))


def workload_array(workloads):
    """A C array of struct wpc_workload from dicts of fill_workload's keywords (at least one slot)."""
    array = ffi.new("struct wpc_workload[]", max(1, len(workloads)))
    for index, workload in enumerate(workloads):
        fill_workload(array[index], **workload)
    return array


class Run:
    """One restore -> touch -> fixup -> verify, owning its C state until close()."""

    def __init__(self, *, image_path, image_seed, image_kind, strategy, params,
                 op, pattern, threads, overlap, seed, pin_threads=True, write_fraction=0.0,
                 history=None, latency="none", latency_every=0, image_bytes=0,
                 base_image_path=None):
        """params: the "name=value,..." text, or a Choice parsed already (for strategy).
        history: for a cycle of a chain, the workloads (fill_workload dicts) of the earlier
        cycles, oldest first, whose writes the image holds; None for a run of its own.
        base_image_path: for a cycle of a chain on a real image (image_seed None), the file
        the chain started from: the verifier's base under the history's writes.
        latency: how touch times first accesses (LATENCY_MODES; "sample" every latency_every-th
        on average); "none" leaves the clock out of the loop, so touch's time is the application's."""
        # cffi frees what ffi.new returned when the Python object dies, so the
        # strings the config points at live as long as the run.
        choice = params if isinstance(params, Choice) else None
        self._keep = [ffi.new("char[]", image_path.encode()),
                      ffi.new("char[]", strategy.encode()), _optional(None if choice else params)]
        cfg = ffi.new("struct wpc_config *")
        cfg.image_path, cfg.strategy, cfg.params = self._keep
        if choice is not None:
            cfg.choice = choice._choice     # parsed once, by the caller
        cfg.image_seed = -1 if image_seed is None else image_seed
        cfg.image_kind = IMAGE_KINDS[image_kind or "mixed"]
        cfg.image_bytes = image_bytes or 0     # the size fixed when the image was opened
        fill_workload(cfg.workload, op=op, pattern=pattern, seed=seed, threads=threads,
                      overlap=overlap, pin_threads=pin_threads, write_fraction=write_fraction)
        cfg.latency = LATENCY_MODES[latency]
        cfg.latency_every = latency_every
        if base_image_path is not None:
            self._keep.append(ffi.new("char[]", str(base_image_path).encode()))
            cfg.base_image_path = self._keep[-1]
        if history is not None:
            self._keep.append(workload_array(history))
            cfg.history = self._keep[-1]
            cfg.history_len = len(history)
        self._cfg = cfg
        out = ffi.new("struct wpc_run **")
        why = _why_buffer()
        check(lib.wpc_run_create(cfg, out, why, len(why)), why)
        self._run = out[0]

    @property
    def result(self):
        return lib.wpc_run_result(self._run)

    def _step(self, function):
        check(function(self._run), self.result.reason)

    def restore(self):
        self._step(lib.wpc_run_restore)

    def touch(self):
        self._step(lib.wpc_run_touch)

    def fixup(self):
        self._step(lib.wpc_run_fixup)

    def verify(self):
        self._step(lib.wpc_run_verify)

    def detached(self):
        """Whether the strategy has said the region needs the image no more."""
        return bool(lib.wpc_run_detached(self._run))

    def fixup_pause_ns(self):
        """Of the fixup phase, the ns the application could not have run; None if it did not run."""
        ns = lib.wpc_run_fixup_pause_ns(self._run)
        return None if ns < 0 else ns

    def steady(self):
        """The workload once more over the loaded region: its wall time in ns."""
        ns = ffi.new("int64_t *")
        check(lib.wpc_run_steady(self._run, ns), self.result.reason)
        return ns[0]

    def checkpoint(self, path, incremental):
        """Dump the region into a new image at path; the dump's stats."""
        stats = ffi.new("struct wpc_dump_stats *")
        check(lib.wpc_run_checkpoint(self._run, str(path).encode(), int(incremental), stats),
              self.result.reason)
        return dump_stats(stats)

    def region(self):
        addr = ffi.new("uintptr_t *")
        length = ffi.new("uint64_t *")
        check(lib.wpc_run_region(self._run, addr, length), self.result.reason)
        return addr[0], length[0]

    def close(self):
        if self._run is not None:
            lib.wpc_run_destroy(self._run)
            self._run = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def result_text(value):
    """A char array of a result (reason, counter name) as str."""
    return _text(value)


# ---- page cache ----

def cache_state(path):
    """What the page cache holds of the file at path (wpc_cache_probe), as JSON-able data."""
    state = ffi.new("struct wpc_cache_state *")
    why = _why_buffer()
    check(lib.wpc_cache_probe(str(path).encode(), state, why, len(why)), why)
    return {
        "pages": state.pages,
        "resident_pages": state.resident,
        "pass_faults": None if state.pass_faults < 0 else state.pass_faults,
        "pass_ns": None if state.pass_ns < 0 else state.pass_ns,
        "folio_pages": ({str(PAGE_SIZE << order): state.folio_pages[order]
                         for order in range(lib.WPC_FOLIO_ORDERS) if state.folio_pages[order]}
                        if state.folios_known else None),
    }


# ---- histograms ----

_bucket_bounds = None


def bucket_bounds():
    """(low, high) of every histogram bucket, as the C core defines them."""
    global _bucket_bounds
    if _bucket_bounds is None:
        _bucket_bounds = [(lib.wpc_hist_bucket_low(i), lib.wpc_hist_bucket_high(i))
                          for i in range(lib.WPC_HIST_BUCKETS)]
    return _bucket_bounds


def export_histogram(hist):
    """A struct wpc_hist as JSON-able data, keeping only the buckets that counted."""
    bounds = bucket_bounds()
    counts = ffi.unpack(hist.buckets, lib.WPC_HIST_BUCKETS)
    return {
        "count": hist.count,
        "min_ns": hist.min_ns if hist.count else None,
        "max_ns": hist.max_ns if hist.count else None,
        "sum_ns": hist.sum_ns,
        "buckets": [[bounds[i][0], bounds[i][1], n] for i, n in enumerate(counts) if n],
    }


def histogram_from_values(values_ns):
    """A C histogram recording these values (for checking the Python statistics)."""
    hist = ffi.new("struct wpc_hist *")
    lib.wpc_hist_reset(hist)
    for value in values_ns:
        lib.wpc_hist_record(hist, value)
    return hist


def histogram_quantile(hist, q):
    return lib.wpc_hist_quantile(hist, q)


# ---- images ----

def generate_image(path, size, seed, kind):
    why = _why_buffer()
    check(lib.wpc_image_generate(str(path).encode(), size, seed, IMAGE_KINDS[kind], why, len(why)), why)


def punch_zero_pages(path):
    """Make the image file's all-zero pages holes (its bytes unchanged): (pages punched, pages)."""
    punched, pages = ffi.new("uint64_t *"), ffi.new("uint64_t *")
    why = _why_buffer()
    check(lib.wpc_image_punch_zeros(str(path).encode(), punched, pages, why, len(why)), why)
    return punched[0], pages[0]


def image_page(seed, kind, page):
    """The PAGE_SIZE bytes the generator puts at page `page`."""
    buf = ffi.new("uint8_t[]", PAGE_SIZE)
    lib.wpc_image_fill_page(seed, IMAGE_KINDS[kind], page, buf)
    return bytes(ffi.buffer(buf))


def image_residency(path):
    """(pages in the page cache, pages in all) of the file."""
    resident = ffi.new("uint64_t *")
    total = ffi.new("uint64_t *")
    check(lib.wpc_image_residency(str(path).encode(), resident, total),
          f"cannot inspect the page cache of {path}")
    return resident[0], total[0]


# ---- checkpoints ----

def dump_stats(stats):
    """A struct wpc_dump_stats as a dict (ns values None where the step did not run)."""
    return {
        "ns": None if stats.ns < 0 else stats.ns,
        "dirty_ns": None if stats.dirty_ns < 0 else stats.dirty_ns,
        "dirty_pages": stats.dirty_pages,
        "bytes_written": stats.bytes_written,
        "bytes_copied": stats.bytes_copied,
        "bytes_fallback": stats.bytes_fallback,
        "fallback": _errno_name(stats.fallback_errno),
        "write_calls": stats.write_calls,
        "copy_calls": stats.copy_calls,
    }


def _errno_name(number):
    """"EXDEV: Invalid cross-device link" for EXDEV; None for 0."""
    return error_for_errno(number, None).reason if number else None


def dump_image(memory, dirty, prev_path, path):
    """The C image writer on a buffer (tests): dirty None writes it all, else a bitmap of the
    pages taken from memory, the others copied from prev_path."""
    stats = ffi.new("struct wpc_dump_stats *")
    why = _why_buffer()
    source = ffi.from_buffer(memory)
    bitmap = ffi.NULL if dirty is None else ffi.from_buffer(dirty)
    check(lib.wpc_dump_image(source, len(memory), bitmap, _optional(str(prev_path) if prev_path else None),
                             str(path).encode(), stats, why, len(why)), why)
    return dump_stats(stats)


def written_pages(workload, pages):
    """(count, bitmap bytes) of the pages a workload (fill_workload dict) writes in a region of pages."""
    target = ffi.new("struct wpc_workload *")
    fill_workload(target, **workload)
    bitmap = ffi.new("uint8_t[]", (pages + 7) // 8)
    count = check(lib.wpc_workload_written_pages(target, pages, bitmap), "invalid workload")
    return count, bytes(ffi.buffer(bitmap))


def image_check(path, size, seed, kind, cycles, base_path=None):
    """An image file against the model: the generated image (seed, kind), or the file
    base_path, plus the cycles' writes, in order.

    Returns {"verified", "mismatched_pages", "first_mismatch_page", "first_mismatch_offset",
    "first_mismatch_cycle", "reason"}; raises only where the check itself could not run.
    """
    out = ffi.new("struct wpc_image_check *")
    why = _why_buffer()
    array = workload_array(cycles)
    base = ffi.new("char[]", str(base_path).encode()) if base_path else ffi.NULL
    rc = lib.wpc_image_check(str(path).encode(), size, 0 if seed is None else seed,
                             IMAGE_KINDS[kind or "mixed"], base, array, len(cycles), out, why,
                             len(why))
    if rc < 0 and rc != -errno.EIO:
        check(rc, why)
    return {
        "verified": rc == 0,
        "mismatched_pages": out.mismatched_pages,
        "first_mismatch_page": None if out.first_mismatch_page < 0 else out.first_mismatch_page,
        "first_mismatch_offset": None if out.first_mismatch_offset < 0 else out.first_mismatch_offset,
        "first_mismatch_cycle": out.first_mismatch_cycle if out.mismatched_pages else None,
        "reason": _text(why) if rc < 0 else None,
    }


# ---- system probe ----

def uffd_probe():
    probe = ffi.new("struct wpc_uffd_probe *")
    check(lib.wpc_uffd_probe(probe), "userfaultfd probe failed")
    return {
        "available": bool(probe.available),
        "syscall_errno": probe.syscall_errno,
        "user_mode_errno": probe.user_mode_errno,
        "devnode_errno": probe.devnode_errno,
        "api": probe.api,
        "features": probe.features,
        "ioctls": probe.ioctls,
    }


def uffd_feature_name(bit):
    return _text(lib.wpc_uffd_feature_name(bit))


def timer_overhead_ns():
    return lib.wpc_timer_overhead_ns()


def hypervisor_vendor():
    """The CPUID hypervisor signature ("KVMKVMKVM"), "" when CPUID says there is none, None off x86."""
    buf = ffi.new("char[]", 16)
    rc = lib.wpc_hypervisor_vendor(buf, len(buf))
    if rc == 0:
        return _text(buf)
    return "" if rc == -errno.ENOENT else None
