"""Metadata in every result, handler placement, and the warnings (with hints) under the table."""
import json
import os

import pytest
from click.testing import CliRunner

from wpcompare import binding, report, results
from wpcompare.cli import main


def _row(label="uffd", op="read", restore=1000, app_cpu=0, handler_cpu=None, status="ok", reason=None):
    row = {"strategy": label.partition(":")[0], "params": label.partition(":")[2], "label": label, "op": op,
           "pattern": "random",
           "threads": 1, "overlap": False, "seed": 1, "repetition": 1, "warmup": False,
           "status": status, "reason": reason, "failed_phase": None, "phases": None}
    if status == "ok":
        row.update(
            phases={name: {"ns": restore if name == "restore" else 5000, "minflt": 0, "majflt": 0, "vmas": 1}
                    for name in ("restore", "touch", "fixup", "verify")},
            time_to_detached_ns=15000, verified=True, detached=True, peak_rss_kb=100,
            app_cpu=app_cpu, handler_cpu=handler_cpu,
            histograms={"touch": {"count": 0, "buckets": []}, "handler": {"count": 0, "buckets": []}})
    return row


def _document(rows, in_vm=True, image_bytes=512 << 20, hugepages=None, repeat=5):
    metadata = {"image": {"bytes": image_bytes, "tail_bytes": 0, "seed": 1, "kind": "random"},
                "options": {"pattern": "random", "threads": 1, "repeat": repeat, "warmup": 0}, "cache": "hot",
                "system": {"virtualization": {"hypervisor": in_vm, "name": "KVM" if in_vm else None},
                           "cpu": {"hypervisor": in_vm},
                           "hugepages": hugepages if hugepages is not None else {}}}
    return results.build_document(rows, metadata)


@pytest.mark.parametrize("pairs,expected", [
    ([(0, None), (0, None)], None),
    ([(0, 0), (0, 0)], "same"),
    ([(0, 1), (1, 0)], "other"),
    ([(0, 0), (0, 1)], "mixed"),
    ([(None, 1)], None),
])
def test_handler_placement(pairs, expected):
    rows = [_row(app_cpu=app, handler_cpu=handler) for app, handler in pairs]
    placement = results.handler_placement(rows)
    assert placement["handler"] == expected
    assert placement["handler_cpus"] == sorted({h for _, h in pairs if h is not None})


def test_same_cpu_hint_keeps_the_other_parameters():
    rows = [_row(label="uffd:chunk=64K,handler-cpu=other", handler_cpu=1)]
    (warning,) = [w for w in report.warnings(_document(rows)) if "handler" in w]
    assert warning.endswith("measure it beside -s uffd:chunk=64K,handler-cpu=same")


def _detached(label, op, detached_ns, restore=1000):
    row = _row(label=label, op=op, restore=restore)
    row["time_to_detached_ns"] = detached_ns
    return row


def test_a_wide_spread_is_warned_only_where_the_verdict_uses_it():
    # restore ±12% ((1200 - 1050) / 2 / 1100 +- rounding) is wide, but the verdict does not
    # compare restore: not warned about; mmap's to detached, the fastest, is (±15%).
    rows = [_detached("mmap", "read", ns, restore=r) for ns, r in ((700, 1000), (1000, 1100), (1300, 1300))]
    rows += [_detached("read", "read", ns) for ns in (3000, 3000, 3000)]
    (warning,) = [w for w in report.warnings(_document(rows, repeat=3)) if w.startswith("the verdict")]
    assert "mmap read to detached ±15%" in warning          # (1150 - 850) / 2 / 1000
    assert "restore" not in warning and "read read" not in warning
    assert "--repeat 10" in warning
    tight = [_detached("mmap", "read", ns, restore=r) for ns, r in ((990, 1000), (1000, 1100), (1010, 1300))]
    assert not [w for w in report.warnings(_document(tight + rows[3:])) if w.startswith("the verdict")]


def test_a_spread_warning_names_at_most_four_values():
    # Per op: mmap fastest, read and uffd not distinguishable from it: 3 values each, 6 in all.
    rows = []
    for op in ("read", "write"):
        for label, base in (("mmap", 1000), ("read", 1100), ("uffd", 1200)):
            rows += [_detached(label, op, base * factor) for factor in (1, 2, 3, 4)]
    (warning,) = [w for w in report.warnings(_document(rows, repeat=4)) if w.startswith("the verdict")]
    named = warning.split(": its ranking")[0]
    assert named.count("±") == report.SPREAD_NAMED and named.endswith("and 2 more)")


@pytest.mark.parametrize("handler_cpu,in_vm,warned", [(1, True, True), (0, True, False), (1, False, False)])
def test_handler_on_the_other_cpu_in_a_vm(handler_cpu, in_vm, warned):
    document = _document([_row(handler_cpu=handler_cpu), _row(op="write", handler_cpu=handler_cpu)], in_vm=in_vm)
    found = [w for w in report.warnings(document) if "handler" in w]
    if warned:
        (warning,) = found
        assert warning.startswith("uffd (read, write): the fault handler ran on another CPU")
        assert "-s uffd:handler-cpu=same" in warning
    else:
        assert found == []
    table = report.render_table(document)
    assert f"handler placement: {'other' if handler_cpu else 'same'} CPU " \
           f"(workload on CPU 0, handler on CPU {handler_cpu}): uffd read, uffd write\n" in table


@pytest.mark.parametrize("pool,command", [
    ({"2048kB": {"total": 0, "free": 0}}, "sysctl vm.nr_hugepages=256"),
    ({"2048kB": {"total": 16, "free": 6}}, "sysctl vm.nr_hugepages=266"),   # 10 held by others stay held
    # 296 of 300 free pages reserved by another process: 4 available, 300 + 256 - 4
    ({"2048kB": {"total": 300, "free": 300, "reserved": 296}}, "sysctl vm.nr_hugepages=552"),
])
def test_huge_page_skip_gives_the_reserve_command_for_this_image(pool, command):
    reason = "no free 2 MiB huge pages: run `sysctl vm.nr_hugepages=N` (N = image size / 2 MiB)"
    rows = [_row(label="uffd-huge", status="skipped", reason=reason),
            _row(label="uffd-huge", op="write", status="skipped", reason=reason),
            _row(label="uffd", status="skipped", reason="userfaultfd: EPERM")]
    (warning,) = [w for w in report.warnings(_document(rows, hugepages=pool)) if "huge" in w]
    assert warning.startswith("uffd-huge skipped: the 512 MiB image needs 256 free 2 MiB huge pages")
    assert f"`{command}`" in warning


def test_huge_pages_the_kernel_lacks_are_not_a_reserve_hint():
    rows = [_row(label="uffd-huge", status="skipped",
                 reason="kernel offers no 2 MiB hugetlb pages (/sys/kernel/mm/hugepages/hugepages-2048kB missing)")]
    assert not [w for w in report.warnings(_document(rows)) if "sysctl" in w]


def test_every_result_carries_the_machine_facts():
    result = CliRunner().invoke(main, ["run", "-s", "mmap", "--op", "read", "--size", "1M", "--repeat", "1",
                                       "--warmup", "0", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    meta = document["metadata"]
    system = meta["system"]
    assert meta["wpcompare_version"] and meta["timer_overhead_ns"] > 0
    assert system["kernel"]["release"] == os.uname().release
    assert system["cpu"]["model"] is not None
    assert set(system["thp"]) == {"enabled", "defrag", "shmem_enabled"}
    assert system["max_map_count"] > 0
    assert "governor" in system["cpu"]
    assert isinstance(system["hugepages"], dict)
    virtualization = system["virtualization"]
    assert set(virtualization) == {"hypervisor", "name", "cpuid_signature", "dmi_vendor", "dmi_product"}
    (group,) = [group for group in document["groups"] if group["label"] == "mmap"]
    assert group["placement"]["app_cpus"] == [min(os.sched_getaffinity(0))], "pinned to the first allowed CPU"
    assert group["placement"]["handler"] is None, "mmap has no handler"


def test_hypervisor_signature_agrees_with_the_cpu_flag():
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), None)
    if flags is None:
        pytest.skip("no x86 flags line in /proc/cpuinfo")
    vendor = binding.hypervisor_vendor()
    if "hypervisor" in flags:
        assert vendor, "CPUID names the hypervisor the flag announces"
    else:
        assert vendor == ""


def test_more_threads_than_cpus_is_a_warning():
    cpus = len(os.sched_getaffinity(0))
    args = ["run", "--size", "1M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet", "--op", "read"]
    many = CliRunner().invoke(main, [*args, "--threads", str(cpus + 1)], catch_exceptions=False)
    assert many.exit_code == 0
    assert f"warning: --threads {cpus + 1} on {cpus} CPU(s)" in many.stderr
    assert f"use --threads {cpus} or fewer" in many.stderr
    few = CliRunner().invoke(main, [*args, "--threads", str(cpus)], catch_exceptions=False)
    assert "warning: --threads" not in few.stderr
