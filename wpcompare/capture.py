"""`wpcompare capture`: the image and the post-snapshot access trace of a live process.

Mechanism (MECHANISM, named in the trace header), for one mapping of the process:

1. A zram device becomes a swap device of the highest priority (a new one from
   /sys/class/zram-control/hot_add, else an unused /dev/zram0), and `vm.page-cluster`
   is set to 0, so a swap-in brings back the faulting page only, never its neighbours
   without a fault.
2. `perf record -e exceptions:page_fault_user` is attached to the process (filtered in
   the kernel to the mapping's addresses), its events disabled, in a private mount
   namespace (perf mounts tracefs when it finds it unmounted: there, the mount goes with
   the namespace).
3. The process is stopped (SIGSTOP, every thread seen stopped). The image: the mapping's
   bytes, read from /proc/PID/mem where /proc/PID/pagemap says a page is present or
   swapped; the other pages, never touched, are zeros and are not read (reading them would
   fault them in).
4. Every page of the mapping is evicted with process_madvise(MADV_PAGEOUT) through a
   pidfd, called from each CPU in turn (each call drains its CPU's LRU batch, where the
   pages touched last wait); /proc/PID/pagemap then says how many stayed resident (shared
   pages, the shared zero page: a read of one of them faults no more and cannot be
   recorded).
5. perf's events are enabled, the process continued (SIGCONT) and, with --signal, sent
   that signal (what makes it act as restored); perf records for --window seconds.
   Each fault is an entry: its page, write if error_code has the write bit (0x2), the
   thread (numbered by first fault), the time.
6. The process is stopped again: a page whose first fault was a read can be mapped
   writable by that fault (an exclusive page swapped in), so a later write to it faults
   no more. Every page present now with no write recorded is compared with the image: one
   that differs was written, and gets a write entry at the end of the window (by the
   thread of its first entry; thread 0 for a page that never faulted).
7. Everything is put back, also when interrupted (Ctrl-C, SIGTERM, SIGHUP) or failing:
   the process continued, perf stopped, the swap device off, the zram device reset (and
   removed if it was added), `vm.page-cluster` as it was, the temporary directory gone. A
   command capture started is then ended (SIGTERM, SIGKILL after 5 s). SIGKILL of capture
   itself can run nothing: then `swapoff /dev/zramN`, `echo 1 > /sys/block/zramN/reset`
   and the old `vm.page-cluster` are left to do by hand (capture prints them first).

Refused, with the fix, where it cannot work: not root, no perf, no
exceptions:page_fault_user tracepoint with an error_code field, no zram, no unshare,
mkswap, swapon or swapoff.
"""
import ctypes
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from wpcompare import leftovers
from wpcompare import trace as traces
from wpcompare.errors import InvalidArgument, UnsupportedError, WpcError

MECHANISM = "zram-pageout+perf:exceptions:page_fault_user"
PAGE = 4096
PAGE_CLUSTER = "/proc/sys/vm/page-cluster"
ZRAM_CONTROL = "/sys/class/zram-control"
TRACEPOINT = "exceptions:page_fault_user"
WRITE_BIT = 0x2                       # x86 page fault error code: the access was a write
MADV_PAGEOUT = 21
SYS_PROCESS_MADVISE = {"x86_64": 440, "aarch64": 440}
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_SWAPPED = 1 << 62
READ_CHUNK = 1 << 20
# One capture at a time: two would each save and put back vm.page-cluster, the second
# saving the first's 0. The lock is a name in the abstract socket namespace: it goes with
# the process that holds it and leaves no file behind.
LOCK_NAME = "\0wpcompare-capture"


@dataclass
class Mapping:
    start: int
    end: int
    perms: str
    name: str
    inode: int = 0

    @property
    def size(self):
        return self.end - self.start

    def describe(self):
        return f"{self.start:x}-{self.end:x} {self.perms} {self.name or '[anonymous]'}"


def _refuse(reason):
    return UnsupportedError(f"capture: {reason}")


# ---- what this machine must offer ----

def _tracepoint_format():
    """The tracepoint's format file, read in a private mount namespace (tracefs mounted there
    if it is not, and gone with it); None where it cannot be read."""
    script = ("mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing "
              "2>/dev/null; cat /sys/kernel/tracing/events/exceptions/page_fault_user/format")
    try:
        done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def check_prerequisites():
    """UnsupportedError with the one-line reason and fix where the mechanism cannot work here."""
    if os.geteuid() != 0:
        raise _refuse("needs root (swapon, process_madvise and perf on another process): "
                      "run it as root")
    for tool, package in (("perf", "linux-perf"), ("unshare", "util-linux"), ("mkswap", "util-linux"),
                          ("swapon", "util-linux"), ("swapoff", "util-linux")):
        if not shutil.which(tool):
            raise _refuse(f"needs {tool}, which is not on PATH: install {package} "
                          f"(apt-get install {package})")
    if os.uname().machine not in SYS_PROCESS_MADVISE:
        raise _refuse(f"process_madvise's number on {os.uname().machine} is not known here: "
                      "run it on x86_64 or aarch64")
    if not os.path.exists(os.path.join(ZRAM_CONTROL, "hot_add")) and not os.path.exists("/dev/zram0"):
        raise _refuse("no zram device to swap to: load the module (modprobe zram)")
    if not os.path.exists(PAGE_CLUSTER):
        raise _refuse(f"{PAGE_CLUSTER} is missing: this kernel has no swap (CONFIG_SWAP)")
    fmt = _tracepoint_format()
    if fmt is None:
        raise _refuse(f"the tracepoint {TRACEPOINT} cannot be read: a kernel with "
                      "CONFIG_TRACING and tracefs is needed")
    if not re.search(r"field:[^;]*\berror_code;", fmt) or not re.search(r"field:[^;]*\baddress;", fmt):
        raise _refuse(f"the tracepoint {TRACEPOINT} has no address or error_code field: "
                      "the read/write distinction needs them (x86)")


# ---- the process and its mapping ----

def read_maps(pid):
    try:
        with open(f"/proc/{pid}/maps") as source:
            lines = source.read().splitlines()
    except FileNotFoundError:
        raise InvalidArgument(f"capture: no process {pid}") from None
    mappings = []
    for line in lines:
        parts = line.split(None, 5)
        start, end = (int(value, 16) for value in parts[0].split("-"))
        mappings.append(Mapping(start, end, parts[1], parts[5].strip() if len(parts) > 5 else "",
                                int(parts[4])))
    return mappings


def choose_mapping(pid, spec):
    """The mapping --mapping names: heap ([heap]), largest (the largest private writable
    anonymous mapping) or ADDR (the mapping holding this hex address)."""
    mappings = read_maps(pid)
    if spec == "heap":
        found = [m for m in mappings if m.name == "[heap]"]
        if not found:
            raise InvalidArgument(f"capture: process {pid} has no [heap] mapping: use --mapping "
                                  "largest or --mapping ADDR")
        return found[0]
    if spec == "largest":
        found = [m for m in mappings if m.perms.startswith("rw") and m.perms[3] == "p"
                 and m.inode == 0 and (not m.name or m.name.startswith("[anon") or m.name == "[heap]")]
        if not found:
            raise InvalidArgument(f"capture: process {pid} has no private writable anonymous mapping")
        return max(found, key=lambda m: m.size)
    try:
        address = int(spec, 16)
    except ValueError:
        raise InvalidArgument(f"capture: --mapping {spec!r}: use heap, largest or a hex address") from None
    for m in mappings:
        if m.start <= address < m.end:
            return m
    raise InvalidArgument(f"capture: no mapping of process {pid} holds address {address:#x}")


def _task_states(pid):
    states = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise InvalidArgument(f"capture: process {pid} is gone") from None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as source:
                states.append(source.read().rsplit(")", 1)[1].split()[0])
        except (FileNotFoundError, IndexError):
            continue
    return states


def stop_process(pid, timeout=10.0):
    """SIGSTOP, then wait until every thread is stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _task_states(pid)
        if states and all(state in "tTXZ" for state in states):
            return
        time.sleep(0.002)
    raise WpcError(f"capture: process {pid} did not stop within {timeout:g} s")


def _pagemap(pid, mapping):
    """One 64-bit pagemap entry per page of the mapping."""
    pages = mapping.size // PAGE
    with open(f"/proc/{pid}/pagemap", "rb") as source:
        source.seek(mapping.start // PAGE * 8)
        data = source.read(pages * 8)
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


def _read_pages(memory, mapping, pages):
    """{page: bytes} read from /proc/PID/mem (open file), runs of consecutive pages at once."""
    out = {}
    run_start = None
    for index, page in enumerate(pages + [None]):
        if run_start is not None and (page is None or page != pages[index - 1] + 1
                                      or page - run_start >= READ_CHUNK // PAGE):
            first = run_start
            count = pages[index - 1] + 1 - first
            data = os.pread(memory, count * PAGE, mapping.start + first * PAGE)
            if len(data) != count * PAGE:
                raise WpcError(f"capture: reading page {first} of the mapping gave {len(data)} bytes")
            for k in range(count):
                out[first + k] = data[k * PAGE:(k + 1) * PAGE]
            run_start = None
        if page is not None and run_start is None:
            run_start = page
    return out


def write_image(pid, mapping, path):
    """The mapping's bytes into a temporary file beside path, renamed over it by the caller
    when the whole capture succeeded; pages neither present nor swapped are zeros, never read.
    Returns (temporary path, pages read, pages zero)."""
    entries = _pagemap(pid, mapping)
    wanted = [i for i, entry in enumerate(entries) if entry & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED)]
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".wpcompare-capture-", dir=directory)
    try:
        memory = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        try:
            os.ftruncate(fd, mapping.size)
            for start in range(0, len(wanted), READ_CHUNK // PAGE):
                chunk = wanted[start:start + READ_CHUNK // PAGE]
                for page, data in _read_pages(memory, mapping, chunk).items():
                    os.pwrite(fd, data, page * PAGE)
        finally:
            os.close(memory)
        os.fsync(fd)
        os.close(fd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return temporary, len(wanted), len(entries) - len(wanted)


def page_out(pid, mapping):
    """process_madvise(MADV_PAGEOUT) over the mapping; the pages still resident after it.

    A page the process touched last sits in a per-CPU LRU batch until that CPU drains it,
    and a page not on the LRU cannot be reclaimed (here: 14-15 of 256 pages stayed, one
    capture in four). MADV_PAGEOUT drains the calling CPU's batch, so it is called from
    each CPU in turn until none stays resident."""
    libc = ctypes.CDLL(None, use_errno=True)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    vector = Iovec(mapping.start, mapping.size)
    number = SYS_PROCESS_MADVISE[os.uname().machine]
    allowed = os.sched_getaffinity(0)
    pidfd = os.pidfd_open(pid)
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            done = libc.syscall(ctypes.c_long(number), ctypes.c_int(pidfd), ctypes.byref(vector),
                                ctypes.c_size_t(1), ctypes.c_int(MADV_PAGEOUT), ctypes.c_uint(0))
            if done < 0:
                err = ctypes.get_errno()
                raise WpcError(f"capture: process_madvise(MADV_PAGEOUT) failed: {os.strerror(err)}")
            resident = sum(1 for entry in _pagemap(pid, mapping) if entry & PAGEMAP_PRESENT)
            if not resident:
                break
    finally:
        os.sched_setaffinity(0, allowed)
        os.close(pidfd)
    return resident


# ---- the system settings capture changes, and puts back ----

def _write(path, value):
    with open(path, "w") as sink:
        sink.write(str(value))


def _read(path):
    with open(path) as source:
        return source.read().strip()


def _swaps():
    with open("/proc/swaps") as source:
        return [line.split()[0] for line in source.read().splitlines()[1:] if line.strip()]


class System:
    """The zram swap device and vm.page-cluster, set up and always put back (close())."""

    def __init__(self, swap_bytes, say):
        self.say = say
        self.swap_bytes = swap_bytes
        self.device = None
        self.added = None
        self.swap_on = False
        self.page_cluster = None

    def open(self):
        self.page_cluster = _read(PAGE_CLUSTER)
        hot_add = os.path.join(ZRAM_CONTROL, "hot_add")
        if os.path.exists(hot_add):
            self.added = int(_read(hot_add))
            self.device = f"zram{self.added}"
        else:
            if _read("/sys/block/zram0/disksize") != "0" or "/dev/zram0" in _swaps():
                raise _refuse("/dev/zram0 is in use and this kernel cannot add another zram device "
                              "(no /sys/class/zram-control): free /dev/zram0 (swapoff; echo 1 > "
                              "/sys/block/zram0/reset)")
            self.device = "zram0"
        self.say(f"if capture is killed (SIGKILL), put back by hand: swapoff /dev/{self.device}; "
                 f"echo 1 > /sys/block/{self.device}/reset"
                 + (f"; echo {self.added} > {ZRAM_CONTROL}/hot_remove" if self.added is not None else "")
                 + f"; sysctl vm.page-cluster={self.page_cluster}")
        _write(f"/sys/block/{self.device}/disksize", self.swap_bytes)
        for command in (["mkswap", f"/dev/{self.device}"], ["swapon", "-p", "32767", f"/dev/{self.device}"]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if done.returncode:
                raise WpcError(f"capture: {' '.join(command)} failed: {' '.join(done.stderr.split())}")
        self.swap_on = True
        _write(PAGE_CLUSTER, 0)

    def close(self):
        problems = []
        if self.page_cluster is not None:
            try:
                _write(PAGE_CLUSTER, self.page_cluster)
            except OSError as error:
                problems.append(f"vm.page-cluster not put back to {self.page_cluster}: {error}")
        if self.device is not None:
            if self.swap_on or f"/dev/{self.device}" in _swaps():
                done = subprocess.run(["swapoff", f"/dev/{self.device}"], capture_output=True,
                                      text=True, timeout=600)
                if done.returncode:
                    problems.append(f"swapoff /dev/{self.device}: {done.stderr.strip()}")
                self.swap_on = False
            try:
                _write(f"/sys/block/{self.device}/reset", 1)
            except OSError as error:
                problems.append(f"/dev/{self.device} not reset: {error}")
            if self.added is not None:
                try:
                    _write(os.path.join(ZRAM_CONTROL, "hot_remove"), self.added)
                except OSError as error:
                    problems.append(f"zram{self.added} not removed: {error}")
            self.device = None
        if problems:
            raise WpcError("capture: " + "; ".join(problems))


# ---- perf ----

class Recorder:
    """perf record on the process's faults in the mapping, events enabled on demand."""

    def __init__(self, directory):
        self.directory = directory
        self.data = os.path.join(directory, "perf.data")
        self.control = os.path.join(directory, "control")
        self.ack = os.path.join(directory, "ack")
        self.process = self.log = self.control_fd = self.ack_fd = None

    def start(self, pid, mapping):
        os.mkfifo(self.control, 0o600)
        os.mkfifo(self.ack, 0o600)
        self.log = open(os.path.join(self.directory, "perf.log"), "w+")
        address_filter = f"address >= {mapping.start:#x} && address < {mapping.end:#x}"
        self.process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "perf", "record", "-q", "-e", TRACEPOINT,
             "--filter", address_filter, "-D", "-1", "--control", f"fifo:{self.control},{self.ack}",
             "-p", str(pid), "-o", self.data],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        # perf opens both fifos O_RDWR when it starts; commands wait in the fifo until it reads them.
        self.control_fd = self._open_fifo(self.control, os.O_WRONLY)
        self.ack_fd = self._open_fifo(self.ack, os.O_RDONLY)

    def _open_fifo(self, path, mode, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return os.open(path, mode | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:
                    raise
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise WpcError(f"capture: perf record did not start: {self._perf_said()}")
            time.sleep(0.01)

    def _perf_said(self):
        self.log.seek(0)
        text = " ".join(self.log.read().split())
        return text[-300:] or f"exit status {self.process.poll()}"

    def running(self):
        return self.process is not None and self.process.poll() is None

    def command(self, word, timeout=30.0):
        os.write(self.control_fd, f"{word}\n".encode())
        deadline = time.monotonic() + timeout
        answer = b""
        while b"ack\n" not in answer:     # perf writes "ack\n\0"
            try:
                answer += os.read(self.ack_fd, 16)
            except BlockingIOError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise WpcError(f"capture: perf did not acknowledge {word!r}: {self._perf_said()}")
            time.sleep(0.001)

    def stop(self):
        """End perf (SIGINT, then SIGKILL, so it writes its data) and close what it used."""
        if self.running():
            try:
                os.killpg(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for fd in ("control_fd", "ack_fd"):
            if getattr(self, fd, None) is not None:
                os.close(getattr(self, fd))
                setattr(self, fd, None)
        if self.log is not None:
            self.log.close()

    def faults(self):
        """[(tid, ns, address, error_code)] in time order, from perf script."""
        done = subprocess.run(["perf", "script", "-i", self.data, "--ns", "-F", "tid,time,trace"],
                              capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise WpcError(f"capture: perf script failed: {' '.join(done.stderr.split())[-300:]}")
        return parse_perf_script(done.stdout)


_SCRIPT_LINE = re.compile(r"^\s*(\d+)\s+(\d+)\.(\d+):\s.*?\baddress=(0x[0-9a-f]+)\b.*?"
                          r"\berror_code=(0x[0-9a-f]+)", re.IGNORECASE)


def parse_perf_script(text):
    """[(tid, ns, address, error_code)] from `perf script --ns -F tid,time,trace` lines."""
    faults = []
    for line in text.splitlines():
        match = _SCRIPT_LINE.match(line)
        if match:
            tid, seconds, fraction, address, code = match.groups()
            ns = int(seconds) * 10 ** 9 + int(fraction.ljust(9, "0")[:9])
            faults.append((int(tid), ns, int(address, 16), int(code, 16)))
    faults.sort(key=lambda fault: fault[1])
    return faults


# ---- from faults to a trace ----

def build_trace(faults, mapping, late_writes, window, source):
    """The trace of faults (parse_perf_script) in mapping, plus a write entry at the end for
    each page of late_writes ({page: None}) that no fault wrote."""
    pages, writes, thread_of, times = [], [], [], []
    threads = {}
    first_thread = {}
    folded = False
    start = faults[0][1] if faults else 0
    for tid, ns, address, code in faults:
        if not mapping.start <= address < mapping.end:
            continue
        if tid not in threads:
            threads[tid] = len(threads) % traces.MAX_THREADS
            folded |= len(threads) > traces.MAX_THREADS
        page = (address - mapping.start) // PAGE
        pages.append(page)
        writes.append(bool(code & WRITE_BIT))
        thread_of.append(threads[tid])
        times.append(ns - start)
        first_thread.setdefault(page, threads[tid])
    written = {page for page, write in zip(pages, writes) if write}
    end = max(times[-1] if times else 0, int(window * 1e9))
    late = sorted(page for page in late_writes if page not in written)
    for page in late:
        pages.append(page)
        writes.append(True)
        thread_of.append(first_thread.get(page, 0))
        times.append(end)
    count = max(thread_of, default=0) + 1
    info = {"source": source, "mapping": mapping.describe(), "window": f"{window:g}"}
    if late:
        info["note"] = (f"the last {len(late)} entries are writes found by comparing pages with the "
                        "image at the end of the window (no write fault recorded)")
    if folded:
        info["note"] = (info.get("note", "") + "; " if "note" in info else "") + \
            f"{len(threads)} threads faulted: thread k replays those numbered k mod 64"
    return traces.Trace(region_bytes=mapping.size, threads=count, mechanism=MECHANISM, pages=pages,
                        writes=writes, thread_of=thread_of, times=times, info=info), len(late)


def changed_pages(pid, mapping, image_path, skip):
    """Pages present now whose bytes differ from the image (the process stopped), except skip."""
    entries = _pagemap(pid, mapping)
    present = [i for i, entry in enumerate(entries) if entry & PAGEMAP_PRESENT and i not in skip]
    changed = set()
    memory = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        with open(image_path, "rb") as image:
            for start in range(0, len(present), READ_CHUNK // PAGE):
                chunk = present[start:start + READ_CHUNK // PAGE]
                for page, data in _read_pages(memory, mapping, chunk).items():
                    image.seek(page * PAGE)
                    if image.read(PAGE) != data:
                        changed.add(page)
    finally:
        os.close(memory)
    return changed


# ---- the whole capture ----

def _comm(pid):
    try:
        return _read(f"/proc/{pid}/comm")
    except OSError:
        return "?"


def capture(*, pid=None, command=None, mapping_spec="largest", image_path, trace_path, window,
            delay=None, send_signal=None, say=lambda text: print(text, file=sys.stderr)):
    """Capture image and trace; returns a summary dict. Everything is put back before it returns
    or raises (KeyboardInterrupt for SIGINT, leftovers.Terminated for SIGTERM and SIGHUP)."""
    check_prerequisites()
    lock = _lock()
    leftovers.install_termination_handlers()
    started = image_temporary = None
    system = recorder = None
    directory = tempfile.mkdtemp(prefix="wpcompare-capture-")
    try:
        if command:
            try:
                started = subprocess.Popen(command, stdin=subprocess.DEVNULL)
            except OSError as error:
                raise InvalidArgument(f"capture: cannot start {command[0]}: {error.strerror}") from None
            pid = started.pid
            time.sleep(1.0 if delay is None else delay)
            if started.poll() is not None:
                raise InvalidArgument(f"capture: {command[0]} exited (status {started.returncode}) "
                                      "before the snapshot: lower --delay")
        elif delay:
            time.sleep(delay)
        mapping = choose_mapping(pid, mapping_spec)
        source = f"pid {pid} ({_comm(pid)})" + (f" command {' '.join(command)}" if command else "")
        say(f"capture: {source}, mapping {mapping.describe()} ({mapping.size} bytes)")
        if all(state == "T" for state in _task_states(pid)):
            raise InvalidArgument(f"capture: process {pid} is stopped: continue it first "
                                  f"(kill -CONT {pid})")
        system = System(mapping.size + (64 << 20), say)
        with leftovers.interruptions_held():     # a device added is a device capture knows about
            system.open()
        recorder = Recorder(directory)
        recorder.start(pid, mapping)
        stop_process(pid)
        image_temporary, read, zero = write_image(pid, mapping, image_path)
        resident = page_out(pid, mapping)
        recorder.command("enable")
        os.kill(pid, signal.SIGCONT)
        if send_signal:
            os.kill(pid, send_signal)
        say(f"capture: recording for {window:g} s")
        time.sleep(window)
        if recorder.running():      # perf ends by itself when the process has exited
            recorder.command("disable")
        recorder.stop()
        faults = recorder.faults()
        written = {(address - mapping.start) // PAGE for _, _, address, code in faults
                   if code & WRITE_BIT and mapping.start <= address < mapping.end}
        late = set()
        try:
            if _alive(pid):
                stop_process(pid)
                late = changed_pages(pid, mapping, image_temporary, written)
                os.kill(pid, signal.SIGCONT)
        except (ProcessLookupError, FileNotFoundError, InvalidArgument):
            late = set()    # it exited meanwhile: its later writes died with it
        trace, appended = build_trace(faults, mapping, late, window, source)
        if not trace.pages:
            raise WpcError(f"capture: process {pid} touched no page of the mapping in {window:g} s: "
                           "a longer --window, or --signal to make it act")
        traces.save(trace, trace_path)
        os.rename(image_temporary, image_path)
        image_temporary = None
        summary = traces.summary(trace)
        summary.update(image=os.path.abspath(image_path), trace=os.path.abspath(trace_path),
                       pages_read=read, pages_zero=zero, resident_after_pageout=resident,
                       faults=len(trace.pages) - appended, writes_found_at_end=appended)
        return summary
    finally:
        with leftovers.interruptions_held():
            problems = _put_back(pid, recorder, system, started, directory)
            if image_temporary is not None:
                os.unlink(image_temporary)
            lock.close()
        if problems:
            say("capture: " + "; ".join(problems))


def _lock():
    """A socket bound to LOCK_NAME; refused while another capture holds that name."""
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        holder.bind(LOCK_NAME)
    except OSError as error:
        holder.close()
        if error.errno != errno.EADDRINUSE:
            raise
        raise _refuse("another wpcompare capture is running: wait for it to end") from None
    return holder


def _alive(pid):
    states = _task_states(pid) if os.path.exists(f"/proc/{pid}") else []
    return any(state not in "XZ" for state in states)


def _put_back(pid, recorder, system, started, directory):
    """Undo everything, in order; the problems met (each undone as far as it could be)."""
    problems = []
    if pid is not None:
        try:
            os.kill(pid, signal.SIGCONT)     # it was running when capture began (else refused)
        except ProcessLookupError:
            pass
    if recorder is not None:
        try:
            recorder.stop()
        except (OSError, subprocess.SubprocessError) as error:
            problems.append(f"perf not stopped cleanly: {error}")
    if system is not None:
        try:
            system.close()
        except (WpcError, OSError, subprocess.SubprocessError) as error:
            problems.append(getattr(error, "reason", str(error)))
    if started is not None and started.poll() is None:
        started.terminate()
        try:
            started.wait(timeout=5)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()
    shutil.rmtree(directory, ignore_errors=True)
    return problems
