"""What this machine can do and how it is set up: the facts of `wpcompare info`.

The same dict goes into every result file's metadata, so a number can always
be read together with the kernel, privileges and CPUs that produced it.
Facts that cannot be read here are None, never guessed.
"""
import errno
import glob
import os
import platform
import stat
import textwrap

from wpcompare import binding
from wpcompare.errors import InvalidArgument, WpcError
from wpcompare.strategies import all_strategies

USER_MODE_ONLY_NOTE = ("UFFD_USER_MODE_ONLY handles only faults raised in user mode: a kernel-mode "
                       "access such as read() into a page not loaded yet fails with EFAULT")


def _read(path):
    try:
        with open(path) as source:
            return source.read().strip()
    except OSError:
        return None


def _read_int(path):
    text = _read(path)
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _errno_text(number):
    if number == 0:
        return "ok"
    return f"{errno.errorcode.get(number, number)} ({os.strerror(number)})"


def userfaultfd_facts():
    probe = binding.uffd_probe()
    features, unknown = [], []
    for bit in range(64):
        if probe["features"] >> bit & 1:
            name = binding.uffd_feature_name(bit)
            if name:
                features.append(name)
            else:
                unknown.append(bit)
    return {
        "available": probe["available"],
        "syscall": _errno_text(probe["syscall_errno"]),
        "user_mode_only": _errno_text(probe["user_mode_errno"]),
        "dev_userfaultfd": _errno_text(probe["devnode_errno"]),
        "api": probe["api"],
        "features": features,
        "unknown_feature_bits": unknown,
        "ioctls": f"{probe['ioctls']:#x}",
    }


def privilege_facts(uffd):
    try:
        node = os.stat("/dev/userfaultfd")
        devnode = {"exists": True, "mode": stat.filemode(node.st_mode),
                   "accessible": os.access("/dev/userfaultfd", os.R_OK | os.W_OK)}
    except OSError:
        devnode = {"exists": False, "mode": None, "accessible": False}
    capabilities = None
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            capabilities = line.split()[1]
    user_mode_works = uffd["user_mode_only"] == "ok"
    # The restriction only matters when user-mode-only is the sole way in.
    only_way = user_mode_works and uffd["syscall"] != "ok" and uffd["dev_userfaultfd"] != "ok"
    return {
        "root": os.geteuid() == 0,
        "effective_capabilities": capabilities,
        "unprivileged_userfaultfd": _read_int("/proc/sys/vm/unprivileged_userfaultfd"),
        "dev_userfaultfd": devnode,
        "user_mode_only": {
            "works": user_mode_works,
            "only_way": only_way,
            "implies": USER_MODE_ONLY_NOTE,
        },
    }


def huge_page_facts():
    sizes = {}
    found = glob.glob("/sys/kernel/mm/hugepages/hugepages-*kB")
    for size_kb, directory in sorted((int(path.rsplit("-", 1)[1][:-2]), path) for path in found):
        sizes[f"{size_kb}kB"] = {
            "size_kb": size_kb,
            "total": _read_int(f"{directory}/nr_hugepages"),
            "free": _read_int(f"{directory}/free_hugepages"),
            "reserved": _read_int(f"{directory}/resv_hugepages"),
            "surplus": _read_int(f"{directory}/surplus_hugepages"),
        }
    return sizes


def _selected(setting):
    """"always [madvise] never" -> "madvise"."""
    if setting is None:
        return None
    for word in setting.split():
        if word.startswith("["):
            return word.strip("[]")
    return setting


def thp_facts():
    base = "/sys/kernel/mm/transparent_hugepage"
    return {
        "enabled": _selected(_read(f"{base}/enabled")),
        "defrag": _selected(_read(f"{base}/defrag")),
        "shmem_enabled": _selected(_read(f"{base}/shmem_enabled")),
    }


def cpu_facts():
    model, flags = None, set()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Processor", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    allowed = sorted(os.sched_getaffinity(0))
    return {
        "count": os.cpu_count(),
        "allowed": allowed,
        "model": model,
        "hypervisor": "hypervisor" in flags,
        "hypervisor_type": _read("/sys/hypervisor/type"),
        "governor": governor_facts(allowed),
    }


def governor_facts(cpus):
    """The cpufreq governor: one name if every CPU has the same, else per CPU; None if unreadable.

    A VM guest usually has no cpufreq at all: the host decides the clock.
    """
    governors = {}
    for cpu in cpus:
        name = _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
        if name is not None:
            governors[str(cpu)] = name
    if not governors:
        return None
    if len(set(governors.values())) == 1 and len(governors) == len(cpus):
        return next(iter(governors.values()))
    return governors


# CPUID leaf 0x40000000 signatures of the common hypervisors.
HYPERVISOR_SIGNATURES = {
    "KVMKVMKVM": "KVM",
    "Microsoft Hv": "Hyper-V",
    "VMwareVMware": "VMware",
    "XenVMMXenVMM": "Xen",
    "TCGTCGTCGTCG": "QEMU (TCG)",
    "VBoxVBoxVBox": "VirtualBox",
    "ACRNACRNACRN": "ACRN",
    "bhyve bhyve ": "bhyve",
}


def virtualization_facts(cpu):
    """Whether this runs under a hypervisor, and which, from every source that says so.

    It matters to the numbers: a fault served by a thread on another vCPU
    costs a cross-CPU wakeup, several times more in a guest than on metal.
    """
    signature = binding.hypervisor_vendor()
    dmi_vendor = _read("/sys/class/dmi/id/sys_vendor")
    dmi_product = _read("/sys/class/dmi/id/product_name")
    xen_type = cpu["hypervisor_type"]
    name = HYPERVISOR_SIGNATURES.get(signature, signature) or xen_type
    detected = bool(signature) or cpu["hypervisor"] or bool(xen_type)
    return {
        "hypervisor": detected,
        "name": name or None,
        "cpuid_signature": signature,
        "dmi_vendor": dmi_vendor,
        "dmi_product": dmi_product,
    }


def strategy_facts():
    facts = []
    for strategy in all_strategies():
        try:
            binding.probe_strategy(strategy.name, None)
            available, reason = True, None
        except WpcError as error:
            available, reason = False, error.reason
        facts.append({"name": strategy.name, "family": strategy.family,
                      "available": available, "reason": reason})
    return facts


FEATURE_PREFIX = "UFFD_FEATURE_"


def known_features():
    """Every userfaultfd feature name the C core knows, as `info --json` names them."""
    return [name for name in map(binding.uffd_feature_name, range(64)) if name]


def requirement(name):
    """Why the feature or strategy called name is missing here (None: available), for
    `info --require`. A feature is a UFFD_FEATURE_* name (the prefix may be left out) or
    "userfaultfd"; a strategy is NAME[:param=value,...]. InvalidArgument if it is neither."""
    from wpcompare.strategies import did_you_mean, parse_choice

    features = known_features()
    feature = name.upper() if name.upper().startswith(FEATURE_PREFIX) else FEATURE_PREFIX + name.upper()
    if name == "userfaultfd" or feature in features:
        uffd = userfaultfd_facts()
        if not uffd["available"]:
            return (f"userfaultfd is not available (syscall: {uffd['syscall']}; /dev/userfaultfd: "
                    f"{uffd['dev_userfaultfd']}): see `wpcompare info`")
        if name != "userfaultfd" and feature not in uffd["features"]:
            return f"this kernel ({platform.release()}) does not offer {feature}"
        return None
    try:
        choice = parse_choice(name)
    except InvalidArgument:
        if ":" in name or name in (strategy.name for strategy in all_strategies()):
            raise
        hint = did_you_mean(name, [strategy.name for strategy in all_strategies()] + features)
        raise InvalidArgument(f"{name!r} is neither a strategy nor a userfaultfd feature{hint}: see "
                              "`wpcompare list` and `wpcompare info --json`") from None
    try:
        binding.probe_strategy(choice.strategy.name, choice.params_text or None)
    except WpcError as error:
        return error.reason
    return None


def system_facts():
    """Every fact `wpcompare info` shows, as JSON-able data."""
    uffd = userfaultfd_facts()
    uname = platform.uname()
    cpu = cpu_facts()
    return {
        "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine},
        "userfaultfd": uffd,
        "privileges": privilege_facts(uffd),
        "hugepages": huge_page_facts(),
        "thp": thp_facts(),
        "max_map_count": _read_int("/proc/sys/vm/max_map_count"),
        "cpu": cpu,
        "virtualization": virtualization_facts(cpu),
        "clocksource": _read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "timer_overhead_ns": binding.timer_overhead_ns(),
        "strategies": strategy_facts(),
    }


def _cpu_list(cpus):
    """[0, 1, 2, 5] -> "0-2,5"."""
    ranges, start = [], None
    for index, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if index + 1 == len(cpus) or cpus[index + 1] != cpu + 1:
            ranges.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(ranges)


def format_facts(facts):
    """The facts as aligned text for people."""
    uffd, privileges, cpu = facts["userfaultfd"], facts["privileges"], facts["cpu"]
    lines = []

    def add(label, value):
        lines.append(f"{label:<20}{value}")

    kernel = facts["kernel"]
    add("kernel", f"{kernel['release']} ({kernel['machine']})")
    add("userfaultfd", ("available" if uffd["available"] else "unavailable")
        + f" (userfaultfd(2): {uffd['syscall']}; UFFD_USER_MODE_ONLY: {uffd['user_mode_only']}; "
        + f"/dev/userfaultfd: {uffd['dev_userfaultfd']}); API {uffd['api']:#x}")
    features = textwrap.wrap(", ".join(uffd["features"]) or "none", 78, break_on_hyphens=False)
    add("  features", features[0])
    lines += [" " * 20 + line for line in features[1:]]
    if uffd["unknown_feature_bits"]:
        add("  unknown bits", ", ".join(map(str, uffd["unknown_feature_bits"])))
    devnode = privileges["dev_userfaultfd"]
    add("privileges", ("root" if privileges["root"] else f"uid {os.geteuid()}")
        + f", CapEff {privileges['effective_capabilities']}"
        + f", vm.unprivileged_userfaultfd = {privileges['unprivileged_userfaultfd']}")
    add("  /dev/userfaultfd", (f"{devnode['mode']}, " + ("accessible" if devnode["accessible"] else "not accessible"))
        if devnode["exists"] else "absent")
    user_mode = privileges["user_mode_only"]
    add("  user-mode-only", ("works" if user_mode["works"] else "does not work")
        + ("; it is the only way to get a userfaultfd here" if user_mode["only_way"] else "")
        + f": {user_mode['implies']}")
    pages = facts["hugepages"]
    add("huge pages", "; ".join(f"{name}: {size['total']} total, {size['free']} free"
                                 for name, size in pages.items()) or "none configured")
    thp = facts["thp"]
    add("THP", f"enabled {thp['enabled']}, defrag {thp['defrag']}, shmem {thp['shmem_enabled']}")
    add("vm.max_map_count", facts["max_map_count"])
    add("CPUs", f"{cpu['count']} (allowed {_cpu_list(cpu['allowed'])}), {cpu['model']}")
    virtualization = facts["virtualization"]
    add("hypervisor", ("detected" + (f" ({virtualization['name']})" if virtualization["name"] else ""))
        if virtualization["hypervisor"] else "none detected")
    governor = cpu["governor"]
    if isinstance(governor, dict):
        governor = ", ".join(f"CPU {number}: {name}" for number, name in governor.items())
    add("CPU governor", governor or "not readable (no cpufreq: usual in a VM, where the host sets the clock)")
    add("clocksource", f"{facts['clocksource']}; timer overhead {facts['timer_overhead_ns']} ns per reading pair")
    lines.append("strategies")
    width = max((len(s["name"]) for s in facts["strategies"]), default=0)
    for strategy in facts["strategies"]:
        state = "available" if strategy["available"] else f"unavailable: {strategy['reason']}"
        lines.append(f"  {strategy['name']:<{width}}  {state}")
    return "\n".join(lines)
