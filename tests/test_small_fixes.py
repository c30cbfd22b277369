"""Issue 14, item 11: the smaller ones, each with what showed it."""
import resource

from wpcompare import binding
from wpcompare.errors import WpcError

from harness import SMALL, in_child, open_run


def _vm_size():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * binding.PAGE_SIZE


def _fixup_under_an_address_space_limit(image):
    with open_run(image, "mmap") as run:
        run.restore()
        run.touch()
        # Room for less than the anonymous copy of the region the fixup makes.
        limit = _vm_size() + SMALL // 2
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            run.fixup()
        except WpcError as error:
            return error.reason
    return None


def test_an_address_space_limit_is_named_not_max_map_count(image):
    reason = in_child(_fixup_under_an_address_space_limit, image)
    assert reason and "RLIMIT_AS" in reason and "ulimit -v" in reason, reason
    assert "sysctl vm.max_map_count" not in reason, reason


def test_a_cycle_that_never_reached_its_checks_is_not_checked_not_NO(tmp_path):
    import json
    from click.testing import CliRunner
    from wpcompare import cycle_results, cycle_report
    from wpcompare.cli import main

    out = tmp_path / "c.json"
    result = CliRunner().invoke(main, ["cycle", "--size", "1M", "--cycles", "2", "-s", "read", "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    chain = document["chains"][0]
    for reason, phase in (("timed out after 1 s", None), ("checkpoint: No space left on device", "checkpoint")):
        chain["cycles"][1] = {"cycle": 2, "status": "failed", "reason": reason, "failed_phase": phase}
        chain.update(status="failed", reason=f"cycle 2: {reason}")
        derived = cycle_results.derive(document)
        table = cycle_report.render(derived, "table")
        failed_line = next(line for line in table.splitlines() if line.startswith("read") and "failed" in line)
        assert failed_line.rstrip().endswith("not checked"), failed_line
        total_line = next(line for line in table.splitlines() if line.startswith("read") and "all 1" in line)
        assert total_line.rstrip().endswith("not checked"), total_line
        assert "NO" not in table.split("\n\n")[1]
        csv_lines = cycle_report.render(derived, "csv").splitlines()
        assert csv_lines[2].endswith(",") and csv_lines[3].endswith(","), csv_lines


def test_a_chain_failed_before_its_first_cycle_is_a_row_with_its_reason(tmp_path):
    from click.testing import CliRunner
    from wpcompare.cli import main

    result = CliRunner().invoke(main, ["cycle", "--size", "1M", "--cycles", "1", "-s", "read", "--timeout", "0.001"])
    assert result.exit_code == 1
    assert "read: failed: probe: timed out" in result.stdout


def test_an_image_that_grows_during_a_matrix_is_refused_not_used_at_another_size(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from wpcompare import runner
    from wpcompare.cli import main

    image = tmp_path / "user.img"
    image.write_bytes(b"\x01" * SMALL)
    real = runner.run_isolated
    calls = []

    def append_after_the_first(spec, timeout):
        if calls:
            with open(image, "ab") as grow:
                grow.write(b"\x02" * binding.PAGE_SIZE)
        calls.append(spec)
        return real(spec, timeout)

    monkeypatch.setattr(runner, "run_isolated", append_after_the_first)
    result = CliRunner().invoke(main, ["run", "--image", str(image), "-s", "read", "--op", "read", "--repeat", "2",
                                       "--warmup", "0", "--quiet", "--format", "json"], catch_exceptions=False)
    import json
    rows = json.loads(result.stdout)["runs"]
    assert rows[0]["status"] == "ok" and rows[0]["image_bytes"] == SMALL
    assert rows[1]["status"] == "failed" and rows[1]["failed_phase"] == "create"
    assert f"is {SMALL + binding.PAGE_SIZE} bytes now, not the {SMALL} it had" in rows[1]["reason"]


def test_a_pipe_in_a_label_keeps_the_markdown_table_in_shape(tmp_path):
    import re
    from click.testing import CliRunner
    from wpcompare.cli import main

    order = tmp_path / "a|b"
    result = CliRunner().invoke(main, ["run", "--size", "1M", "-s", f"uffd-hybrid:order=sequential,path={order}",
                                       "--repeat", "1", "--warmup", "0", "--quiet", "--format", "markdown"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    cells = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
    assert len(lines) >= 3 and len(cells) == 1, lines
    assert "a\\|b" in result.stdout


def test_more_threads_than_cpus_is_a_warning():
    import os
    from click.testing import CliRunner
    from wpcompare.cli import main

    cpus = len(os.sched_getaffinity(0))
    args = ["run", "--size", "1M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet", "--op", "read"]
    many = CliRunner().invoke(main, [*args, "--threads", str(cpus + 1)], catch_exceptions=False)
    assert many.exit_code == 0
    assert f"warning: --threads {cpus + 1} on {cpus} CPU(s)" in many.stderr
    assert f"use --threads {cpus} or fewer" in many.stderr
    few = CliRunner().invoke(main, [*args, "--threads", str(cpus)], catch_exceptions=False)
    assert "warning: --threads" not in few.stderr
