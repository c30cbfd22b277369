"""What a well-behaved command-line tool offers besides its measurements: `python -m`,
a licence that matches the package's metadata, exit codes, `info --require`, `list --json`,
shell completion, and "did you mean"."""
import json
import os
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:     # Python < 3.11
    tomllib = None

from harness import cli, error_line, invoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_python_dash_m_runs_the_command_line():
    done = subprocess.run([sys.executable, "-m", "wpcompare", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wpcompare, version ")
    listed = subprocess.run([sys.executable, "-m", "wpcompare", "list"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "mmap" in listed.stdout


def _declared_license():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as stream:
        if tomllib is not None:
            return tomllib.load(stream)["project"]["license"]["text"]
        text = stream.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("license"))
    return line.split('"')[1]


def test_license_file_is_the_licence_pyproject_declares():
    declared = _declared_license()
    with open(os.path.join(ROOT, "LICENSE")) as stream:
        text = stream.read()
    assert declared == "MIT", "this test knows the MIT text; teach it the new licence"
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the wpcompare developers" in text
    assert "Permission is hereby granted, free of charge" in text


def test_a_mistyped_strategy_is_refused_with_the_closest_name():
    result = invoke("run", "-s", "sigsgev", "--size", "1M")
    assert result.exit_code == 2
    assert "unknown strategy 'sigsgev' (did you mean 'sigsegv'?)" in error_line(result)


def test_a_mistyped_parameter_is_refused_with_the_closest_name():
    result = invoke("run", "-s", "sigsegv:chnk=4K", "--size", "1M")
    assert result.exit_code == 2
    assert "unknown parameter 'chnk' for strategy 'sigsegv' (did you mean 'chunk'?)" in error_line(result)


def test_a_name_far_from_every_strategy_gets_no_guess():
    result = invoke("run", "-s", "zzzzzz", "--size", "1M")
    assert result.exit_code == 2
    assert "did you mean" not in error_line(result)


def _completions(command, incomplete):
    from click.shell_completion import ShellComplete
    from wpcompare.cli import main
    completer = ShellComplete(main, {}, "wpcompare", "_WPCOMPARE_COMPLETE")
    return [item.value for item in completer.get_completions([command, "-s"], incomplete)]


def test_completion_offers_strategy_names_for_s():
    offered = _completions("run", "uffd-w")
    assert offered == ["uffd-wp", "uffd-wp-anon"]
    assert "mmap-populate" in _completions("cycle", "mm")
    assert "sigsegv" in _completions("check", "sig")


def test_completion_offers_a_strategys_parameters_and_their_choices():
    assert _completions("run", "sigsegv:") == ["sigsegv:chunk=", "sigsegv:fixup=", "sigsegv:copy=",
                                              "sigsegv:threads="]
    assert _completions("run", "sigsegv:fixup=at") == ["sigsegv:fixup=at-checkpoint"]
    assert _completions("run", "sigsegv:chunk=4K,fi") == ["sigsegv:chunk=4K,fixup="]
    assert _completions("run", "nonesuch:") == []


def test_the_completion_script_is_what_click_generates():
    done = subprocess.run(["wpcompare"], env={**os.environ, "_WPCOMPARE_COMPLETE": "bash_source"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "_wpcompare_completion" in done.stdout


def test_require_answers_as_info_json_does_for_every_strategy():
    facts = json.loads(invoke("info", "--json").stdout)
    assert facts["schema"] == "wpcompare.info/1"
    for strategy in facts["strategies"]:
        result = invoke("info", "--require", strategy["name"])
        if strategy["available"]:
            assert result.exit_code == 0 and result.stdout == result.stderr == "", strategy["name"]
        else:
            assert result.exit_code == 1, strategy["name"]
            assert result.stderr == f"{strategy['name']}: {strategy['reason']}\n"


def test_require_a_feature_by_its_info_json_name(monkeypatch):
    from wpcompare import probe
    offered = probe.userfaultfd_facts()
    if not offered["available"] or "UFFD_FEATURE_WP_ASYNC" not in offered["features"]:
        result = invoke("info", "--require", "UFFD_FEATURE_WP_ASYNC")
        assert result.exit_code == 1 and "UFFD_FEATURE_WP_ASYNC" in result.stderr
        return
    assert invoke("info", "--require", "UFFD_FEATURE_WP_ASYNC", "--require", "userfaultfd").exit_code == 0
    assert invoke("info", "--require", "wp_async").exit_code == 0, "the prefix may be left out"
    without = dict(offered, features=[name for name in offered["features"] if name != "UFFD_FEATURE_WP_ASYNC"])
    monkeypatch.setattr(probe, "userfaultfd_facts", lambda: without)
    result = invoke("info", "--require", "userfaultfd", "--require", "UFFD_FEATURE_WP_ASYNC")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"UFFD_FEATURE_WP_ASYNC: this kernel ({os.uname().release}) does not offer UFFD_FEATURE_WP_ASYNC"]


def test_require_an_unknown_name_is_bad_input_with_a_guess():
    result = invoke("info", "--require", "uffd-hge")
    assert result.exit_code == 2
    assert "'uffd-hge' is neither a strategy nor a userfaultfd feature (did you mean 'uffd-huge'?)" \
        in error_line(result)


def test_list_json_describes_every_strategy_and_its_parameters():
    from wpcompare import strategies
    result = invoke("list", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["schema"] == "wpcompare.list/1"
    listed = {entry["name"]: entry for entry in document["strategies"]}
    assert list(listed) == [strategy.name for strategy in strategies.all_strategies()]
    sigsegv = listed["sigsegv"]
    assert sigsegv["family"] == strategies.find("sigsegv").family and sigsegv["origin"] == "builtin"
    chunk = next(param for param in sigsegv["params"] if param["name"] == "chunk")
    assert chunk["choices"] == ["4K", "64K", "2M"] and chunk["default"] == "64K" and chunk["kind"] == "size"
    assert listed["mmap"]["params"] == [] or all("default" in p for p in listed["mmap"]["params"])


# ---- exit codes: 3 when every row was skipped, 130 when interrupted ----

def _unavailable_strategy():
    """A strategy this machine cannot run (uffd-huge without huge pages), or a skip."""
    import pytest
    from harness import probe
    from wpcompare import strategies
    for strategy in strategies.measured_strategies():
        if probe(strategy.name, None, 1 << 20)[0] != 0:
            return strategy.name
    pytest.skip("every strategy can run here: nothing to be skipped")


def test_every_row_skipped_exits_3_for_run_and_cycle(tmp_path):
    name = _unavailable_strategy()
    for command, extra in (("run", ["--repeat", "1", "--warmup", "0"]), ("cycle", ["--cycles", "1"])):
        result = invoke(command, "-s", name, "--size", "1M", *extra)
        assert result.exit_code == 3, (command, result.output)
        assert error_line(result).startswith(f"Error: nothing ran, every strategy asked for was "
                                             f"skipped here ({name}: ")


def test_no_image_is_generated_when_nothing_can_run():
    from wpcompare.image import cache_dir
    name = _unavailable_strategy()
    for command in ("run", "cycle"):
        result = invoke(command, "-s", name, "--size", "8M")
        assert result.exit_code == 3, result.output
        assert error_line(result).endswith("; no 8 MiB image generated")
        assert name in result.stdout and "skipped" in result.stdout, "the skipped rows are still shown"
        assert not cache_dir().exists(), "the image was generated only to be skipped"
    saved = invoke("run", "-s", name, "--size", "8M", "--format", "json")
    document = json.loads(saved.stdout)
    assert document["metadata"]["image"]["origin"] == "not generated"
    assert [(run["strategy"], run["status"]) for run in document["runs"]] == [(name, "skipped")] * 2


def test_every_row_skipped_on_a_given_image_prints_the_rows_and_exits_3(tmp_path):
    from harness import generate_image
    name = _unavailable_strategy()
    image = generate_image(tmp_path / "given.img")
    result = invoke("run", "-s", name, "--image", image.path, "--repeat", "1", "--warmup", "0")
    assert result.exit_code == 3, result.output
    assert any(line.split()[:1] == [name] for line in result.stdout.splitlines()), "the skipped rows shown"
    assert error_line(result).startswith(f"Error: nothing ran, every strategy asked for was skipped here ({name}: ")


def test_a_run_that_lost_a_write_exits_1_with_its_row_saved(tmp_path):
    output = tmp_path / "lost.json"
    result = invoke("run", "-s", "sigsegv", "--inject", "lose-write:0", "--op", "write", "--size", "1M",
                    "--repeat", "1", "--warmup", "0", "--no-bounds", "--latency", "off", "-o", str(output))
    assert result.exit_code == 1, result.output
    assert error_line(result) == "Error: 1 run(s) failed; their reasons are listed with the results"
    [row] = json.loads(output.read_text())["runs"]
    assert row["status"] == "failed" and row["verified"] is False


def test_a_skipped_row_beside_a_measured_one_exits_0():
    name = _unavailable_strategy()
    result = invoke("run", "-s", name, "-s", "mmap", "--size", "1M", "--repeat", "1", "--warmup", "0",
                    "--no-bounds", "--latency", "off")
    assert result.exit_code == 0, result.output


# clock_nanosleep and nanosleep, where the hung worker's main thread waits (time.sleep).
_SLEEP_SYSCALLS = {"x86_64": {230, 35}, "aarch64": {115, 101}}


def _sleeping_worker(parent):
    """The pid of parent's child that sleeps in time.sleep (the `hang` injection), or None."""
    try:
        children = open(f"/proc/{parent}/task/{parent}/children").read().split()
    except OSError:
        return None
    for pid in children:
        try:
            number = open(f"/proc/{pid}/syscall").read().split()[0]
        except (OSError, IndexError):
            continue
        if number.isdigit() and int(number) in _SLEEP_SYSCALLS[os.uname().machine]:
            return int(pid)
    return None


def _interrupted_when_hung(tmp_path, command_args):
    """Start wpcompare with a worker that hangs in its last row, SIGINT it once that worker
    sleeps (every earlier row finished then: rows run one after another), and return it."""
    import signal
    import time

    import pytest
    from harness import CLI
    if os.uname().machine not in _SLEEP_SYSCALLS:
        pytest.skip("this test knows the sleep syscalls of x86_64 and aarch64 only")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    process = subprocess.Popen([*CLI, *command_args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _sleeping_worker(process.pid) is None:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the hung worker never started"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, stdout, stderr


def test_sigint_exits_130_and_saves_the_finished_rows(tmp_path):
    output = tmp_path / "results.json"
    code, stdout, stderr = _interrupted_when_hung(tmp_path, [
        "run", "-s", "mmap", "-s", "read", "--op", "write", "--size", "1M", "--repeat", "2",
        "--warmup", "0", "--no-bounds", "--latency", "off", "--inject", "hang@read", "-o", str(output)])
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (f"Error: interrupted by SIGINT: 2 row(s) finished are shown "
                                       f"above; they are saved in {output}")
    shown = [line.split()[0] for line in stdout.splitlines() if line.split()[:1] in (["mmap"], ["read"])]
    assert shown == ["mmap"], "the finished rows are printed, the interrupted one is not"
    document = json.loads(output.read_text())
    assert document["metadata"]["interrupted"] is True
    assert [(run["strategy"], run["status"]) for run in document["runs"]] == [("mmap", "ok")] * 2
    from wpcompare import results
    assert results.load_document(str(output))["metadata"]["interrupted"] is True


def test_interrupted_cycle_exits_130_and_saves_the_finished_chains(tmp_path, monkeypatch):
    # Ctrl-C arrives as KeyboardInterrupt wherever the main process is; here, as the second
    # chain starts (the subprocess test above covers the signal itself, for run).
    from wpcompare import cycle
    real = cycle.run_chain

    def interrupted_at_read(plan, choice, steps=None):
        if choice.label == "read":
            raise KeyboardInterrupt
        return real(plan, choice, steps)
    monkeypatch.setattr(cycle, "run_chain", interrupted_at_read)
    output = tmp_path / "cycles.json"
    result = invoke("cycle", "-s", "mmap", "-s", "read", "--cycles", "2", "--size", "1M", "-o", str(output))
    assert result.exit_code == 130, result.output
    assert error_line(result) == ("Error: interrupted by SIGINT: 1 chain(s) finished are shown above; "
                                  f"they are saved in {output}")
    document = json.loads(output.read_text())
    assert document["metadata"]["interrupted"] is True
    assert [chain["label"] for chain in document["chains"]] == ["mmap"]


# ---- 64-bit values in JSON ----

def test_checksums_are_written_as_strings_and_old_numbers_still_read(tmp_path):
    from wpcompare import results
    saved = tmp_path / "new.json"
    result = invoke("run", "-s", "mmap", "--op", "read", "--size", "1M", "--repeat", "1", "--warmup", "0",
                    "--no-bounds", "--latency", "off", "-o", str(saved))
    assert result.exit_code == 0, result.output
    document = json.loads(saved.read_text())
    checksum = document["runs"][0]["checksum"]
    assert isinstance(checksum, str) and int(checksum) > 0
    assert results.load_document(str(saved))["runs"][0]["checksum"] == checksum

    old = tmp_path / "old.json"
    document["runs"][0]["checksum"] = 2 ** 64 - 1       # as files written before had it: a number
    old.write_text(json.dumps(document))
    assert results.load_document(str(old))["runs"][0]["checksum"] == 2 ** 64 - 1
    shown = invoke("show", str(old))
    assert shown.exit_code == 0 and shown.stdout == invoke("show", str(saved)).stdout
    assert invoke("compare", str(old), str(saved)).exit_code == 0


def test_a_checksum_string_that_is_not_a_number_is_refused(tmp_path):
    result = invoke("run", "-s", "mmap", "--op", "read", "--size", "1M", "--repeat", "1", "--warmup", "0",
                    "--no-bounds", "--latency", "off", "--format", "json")
    document = json.loads(result.stdout)
    document["runs"][0]["checksum"] = "0x12"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    shown = invoke("show", str(bad))
    assert shown.exit_code != 0 and "checksum" in error_line(shown)


def test_cycle_checksums_are_strings(tmp_path):
    result = invoke("cycle", "-s", "read", "--cycles", "1", "--size", "1M", "--format", "json")
    assert result.exit_code == 0, result.output
    cycles = json.loads(result.stdout)["chains"][0]["cycles"]
    assert all(isinstance(row["checksum"], str) for row in cycles if "checksum" in row)
    assert any("checksum" in row for row in cycles)
