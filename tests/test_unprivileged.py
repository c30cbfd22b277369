"""`info` and the probes predict exactly what `run` does with userfaultfd (issue 14, item 4),
for every combination of privilege, `vm.unprivileged_userfaultfd`, /dev/userfaultfd and a
seccomp filter on userfaultfd(2):

- privilege: root with every capability, or without CAP_SYS_PTRACE (what the kernel asks of a
  userfaultfd that handles kernel-mode faults: the unprivileged case, whatever the uid);
  a real unprivileged user where this Python can be run by one;
- /dev/userfaultfd: accessible, absent, or present but not openable (a node on a `nodev`
  mount: EACCES even for root), in a private mount namespace's own /dev;
- seccomp: none, userfaultfd(2) failing with EPERM, or with ENOSYS.

For each, every uffd strategy `info` calls available must run and verify, and every one it
calls unavailable must be a skipped row; none fails.

Then the core's own runs without privilege: dropped to user nobody, kernel-faults=yes is
refused and auto falls back to UFFD_USER_MODE_ONLY (a syscall into a page not loaded yet
fails with EFAULT instead of being served), as it does behind the /dev/userfaultfd
fallback; with the privilege, kernel-faults=yes serves the kernel's own accesses.
"""
import ctypes
import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest

from harness import (CLI, PAGE, assert_ok, in_child, is_root, open_run, probe, row_of, run_phases,
                     skip_unless_available, try_phase)
from wpcompare._core import ffi

HERE = os.path.dirname(os.path.abspath(__file__))
UFFD_STRATEGIES = ["uffd", "uffd-wp", "uffd-wp-anon", "mmap-wp-async", "uffd-sigbus", "uffd-minor",
                   "uffd-move", "uffd-hybrid", "uffd-huge"]
# A fill with UFFDIO_COPY (csrc/fill.c) opens a user-mode userfaultfd of its own.
FILL_CHOICES = ["read:fill=uffdio-copy", "mmap:fill=uffdio-copy"]
EXTRA_CHOICES = ["uffd:kernel-faults=yes", "uffd:kernel-faults=no", *FILL_CHOICES]
SYSCTL = "/proc/sys/vm/unprivileged_userfaultfd"


def _device():
    try:
        return os.stat("/dev/userfaultfd").st_rdev
    except OSError:
        return None


def _namespace_script(device, tmp_path):
    """Shell commands giving this mount namespace a /dev of its own with /dev/userfaultfd as asked."""
    keep = tmp_path / "keep"
    keep.mkdir()
    nodev = ",nodev" if device == "inaccessible" else ""
    lines = [f"mount --rbind /dev {keep}", f"mount -t tmpfs -o mode=755{nodev} tmpfs /dev"]
    for name in ("null", "zero", "full", "random", "urandom"):
        lines.append(f"touch /dev/{name} && mount --bind {keep}/{name} /dev/{name}")
    lines.append(f"mkdir /dev/shm && mount --bind {keep}/shm /dev/shm")
    rdev = _device()
    if device == "accessible":
        lines.append(f"touch /dev/userfaultfd && mount --bind {keep}/userfaultfd /dev/userfaultfd")
    elif device == "inaccessible":
        lines.append(f"mknod -m 0666 /dev/userfaultfd c {os.major(rdev)} {os.minor(rdev)}")
    return " && ".join(lines)


def _wrapped(command, privilege, seccomp):
    prefix = []
    if privilege == "no-ptrace":
        prefix += ["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace"]
    if seccomp != "none":
        prefix += [sys.executable, os.path.join(HERE, "seccomp_exec.py"), seccomp]
    return prefix + command


def _predicted_and_ran(tmp_path, privilege, device, seccomp):
    if not is_root() or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root, unshare and setpriv (a private mount namespace for /dev, capabilities dropped)")
    if device != "absent" and _device() is None:
        pytest.skip("this kernel has no /dev/userfaultfd to present")
    info = " ".join(_quote(_wrapped([*CLI, "info", "--json"], privilege, seccomp)))
    choices = [arg for name in UFFD_STRATEGIES + EXTRA_CHOICES for arg in ("-s", name)]
    run = " ".join(_quote(_wrapped([*CLI, "run", "--size", "2M", "--repeat", "1", "--warmup", "0",
                                    "--op", "write", "--quiet", "--format", "json", *choices],
                                   privilege, seccomp)))
    script = (f"{_namespace_script(device, tmp_path)} && {info} > {tmp_path}/info.json && "
              f"{{ {run} > {tmp_path}/run.json; echo $? > {tmp_path}/run.rc; }}")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if not (tmp_path / "run.rc").exists():
        if "unshare" in done.stderr or "mount" in done.stderr or "cannot install" in done.stderr:
            pytest.skip(f"cannot set the case up here: {done.stderr.strip()}")
        raise AssertionError(done.stderr)
    facts = json.loads((tmp_path / "info.json").read_text())
    document = json.loads((tmp_path / "run.json").read_text())
    return facts, document, done.stderr


def _quote(words):
    return [shlex.quote(word) for word in words]


CASES = [(privilege, device, seccomp)
         for privilege in ("root", "no-ptrace")
         for device in ("accessible", "absent", "inaccessible")
         for seccomp in ("none", "EPERM", "ENOSYS")]


def _check(facts, document):
    available = {entry["name"]: entry for entry in facts["strategies"]}
    rows = [row for row in document["runs"]]
    assert rows, document
    for row in rows:
        assert row["status"] in ("ok", "skipped"), f"{row['label']}: {row['status']}: {row.get('reason')}"
        if row["status"] == "ok":
            assert row["verified"], row
        if row["label"] in available:
            predicted = available[row["label"]]
            assert predicted["available"] == (row["status"] == "ok"), (
                f"{row['label']}: info says {predicted}, run says {row['status']}: {row.get('reason')}")
        if row["status"] == "skipped":
            assert "CONFIG_USERFAULTFD?" not in row["reason"]
            assert row["reason"], row


def _set_sysctl(value):
    with open(SYSCTL) as current:
        old = current.read().strip()
    with open(SYSCTL, "w") as setting:
        setting.write(str(value))
    return old


@pytest.mark.parametrize("privilege,device,seccomp", CASES, ids=lambda value: str(value))
def test_info_predicts_run(tmp_path, privilege, device, seccomp):
    facts, document, _ = _predicted_and_ran(tmp_path, privilege, device, seccomp)
    _check(facts, document)
    uffd_rows = {row["label"]: row for row in document["runs"]}
    # Whenever any userfaultfd can be had, the kernel-faults=auto strategies run.
    anyway = device == "accessible" or seccomp == "none"
    assert (uffd_rows["uffd"]["status"] == "ok") == anyway, uffd_rows["uffd"]
    assert (uffd_rows["uffd-wp-anon"]["status"] == "ok") == anyway, uffd_rows["uffd-wp-anon"]
    kernel_mode = device == "accessible" or (seccomp == "none" and privilege == "root")
    assert (uffd_rows["uffd:kernel-faults=yes"]["status"] == "ok") == kernel_mode
    assert (uffd_rows["uffd-wp"]["status"] == "ok") == kernel_mode
    if not anyway:
        assert "seccomp" in uffd_rows["uffd"]["reason"], uffd_rows["uffd"]["reason"]
    # User mode only: no privilege needed, only a userfaultfd to be had at all.
    for label in FILL_CHOICES:
        assert (uffd_rows[label]["status"] == "ok") == anyway, uffd_rows[label]
        if not anyway:
            assert "seccomp" in uffd_rows[label]["reason"], uffd_rows[label]["reason"]


@pytest.mark.skipif(not os.path.exists(SYSCTL), reason="no vm.unprivileged_userfaultfd here")
@pytest.mark.parametrize("device", ["absent", "inaccessible"])
def test_unprivileged_userfaultfd_sysctl_lets_kernel_faults_through(tmp_path, device):
    """vm.unprivileged_userfaultfd=1 (set for the test, then put back) without CAP_SYS_PTRACE."""
    if not is_root():
        pytest.skip("setting vm.unprivileged_userfaultfd needs root")
    old = _set_sysctl(1)
    try:
        facts, document, _ = _predicted_and_ran(tmp_path, "no-ptrace", device, "none")
    finally:
        _set_sysctl(old)
    _check(facts, document)
    rows = {row["label"]: row for row in document["runs"]}
    assert rows["uffd:kernel-faults=yes"]["status"] == "ok"
    assert rows["uffd-wp"]["status"] == "ok"


def test_a_real_unprivileged_user(tmp_path):
    """As user nobody where this Python is reachable by others (else the cases above stand in)."""
    if not is_root() or not shutil.which("setpriv"):
        pytest.skip("switching to user nobody needs root and setpriv")
    # Not under tmp_path: pytest's directories are private to root.
    home = tempfile.mkdtemp(prefix="wpcompare-nobody-")
    os.chown(home, 65534, 65534)
    try:
        _as_nobody(home)
    finally:
        shutil.rmtree(home)


def _as_nobody(home):
    env = dict(os.environ, HOME=home, XDG_CACHE_HOME=os.path.join(home, "cache"))
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*user, *CLI, "--version"], capture_output=True, text=True, env=env, cwd=home)
    if probe.returncode != 0:
        pytest.skip("this Python and wpcompare cannot be run by user nobody: "
                    f"{probe.stderr.strip().splitlines()[-1][-120:]}")
    facts = json.loads(subprocess.run([*user, *CLI, "info", "--json"], capture_output=True, text=True,
                                      env=env, cwd=home, check=True).stdout)
    choices = [arg for name in UFFD_STRATEGIES for arg in ("-s", name)]
    ran = subprocess.run([*user, *CLI, "run", "--size", "2M", "--repeat", "1", "--warmup", "0", "--op", "write",
                          "--quiet", "--format", "json", *choices], capture_output=True, text=True, env=env,
                         cwd=home)
    assert ran.stdout, ran.stderr
    _check(facts, json.loads(ran.stdout))


def _kernel_access_through_the_device(image):
    """With userfaultfd(2) refused by seccomp, a UFFD_USER_MODE_ONLY descriptor comes from
    /dev/userfaultfd: it must still be user mode only (a syscall into a page not loaded yet
    fails with EFAULT instead of being served)."""
    import seccomp_exec

    seccomp_exec.install(errno.EPERM)
    run = open_run(image, "uffd", "kernel-faults=no", op="read")
    run.restore()
    addr, _ = run.region()
    zero = os.open("/dev/zero", os.O_RDONLY)
    try:
        os.readv(zero, [ffi.buffer(ffi.cast("char *", addr + 3 * PAGE), PAGE)])
        outcome = "served"
    except OSError as error:
        outcome = error.errno
    os.close(zero)
    run.close()
    return outcome


def test_user_mode_only_survives_the_device_fallback(image):
    if _device() is None or not os.access("/dev/userfaultfd", os.R_OK | os.W_OK):
        pytest.skip("needs an accessible /dev/userfaultfd (root)")
    assert in_child(_kernel_access_through_the_device, image) == errno.EFAULT


# ---- the core's own runs: UFFD_USER_MODE_ONLY and kernel-faults ----

NOBODY = 65534


@pytest.fixture
def random_image(make_image):
    """Random, with a ragged tail: no page is all zero, so a page never placed cannot verify."""
    return make_image((2 << 20) + 1000, seed=11, kind="random")


def _unprivileged(image, strategy, params):
    """As nobody: kernel-faults=yes is refused, auto falls back to UFFD_USER_MODE_ONLY."""
    run = open_run(image, strategy, params, op="read")     # opens the image while still root
    image_fd = os.open(image.path, os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    libc.prctl(4, 1, 0, 0, 0)                   # PR_SET_DUMPABLE: keep /proc/self readable
    out = {"uid": os.getuid(), "probe_yes": probe("uffd", "kernel-faults=yes"),
           "probe_auto": probe("uffd", None)}
    run.restore()
    addr, _ = run.region()
    page = ffi.buffer(ffi.cast("char *", addr + 3 * PAGE), PAGE)
    try:
        # The image's own bytes: where the kernel's access is served, the page stays right.
        os.preadv(image_fd, [page], 3 * PAGE)
        out["kernel_access"] = "succeeded"
    except OSError as error:
        out["kernel_access"] = error.errno
    os.close(image_fd)
    out["run"] = {name: try_phase(run, name) for name in ("touch", "fixup", "verify")}
    out.update(row_of(run))
    # Once the page is loaded, a kernel-mode access works.
    zero = os.open("/dev/zero", os.O_RDONLY)
    out["after_load"] = os.readv(zero, [page])
    os.close(zero)
    run.close()
    return out


@pytest.mark.parametrize("strategy,params", [
    ("uffd", None), ("uffd-sigbus", None), ("uffd-hybrid", "loader-threads=0"),
    ("uffd-move", None), ("uffd-minor", None)])
def test_unprivileged_user_mode_only(random_image, strategy, params):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges to nobody")
    skip_unless_available(strategy, params)
    out = in_child(_unprivileged, random_image, strategy, params)
    assert out["uid"] == NOBODY
    with open("/proc/sys/vm/unprivileged_userfaultfd") as f:
        restricted = f.read().strip() == "0"
    if restricted:
        assert out["probe_yes"][0] == -errno.EPERM and "kernel-faults=auto" in out["probe_yes"][1]
        assert out["counters"]["user_mode_only"] == 1
        # A kernel-mode access to a page not yet loaded is not served: EFAULT.
        assert out["kernel_access"] == errno.EFAULT
    assert out["probe_auto"][0] == 0
    assert not any(out["run"].values()), out["run"]
    assert out["verified"] and out["detached"]
    assert out["after_load"] == PAGE


def _kernel_access_with_kernel_faults(image):
    run = open_run(image, "uffd", "kernel-faults=yes", op="read")
    run.restore()
    addr, _ = run.region()
    fd = os.open(image.path, os.O_RDONLY)
    # The kernel writes into a page not yet loaded: the handler serves that fault too.
    got = os.preadv(fd, [ffi.buffer(ffi.cast("char *", addr + 5 * PAGE), PAGE)], 5 * PAGE)
    os.close(fd)
    row = run_phases(run, ("touch", "fixup", "verify"))
    run.close()
    return dict(row, got=got)


def test_kernel_faults_yes_serves_syscalls(random_image):
    skip_unless_available("uffd", "kernel-faults=yes")
    out = in_child(_kernel_access_with_kernel_faults, random_image)
    assert out["got"] == PAGE
    assert out["counters"]["user_mode_only"] == 0
    assert_ok(out)
