"""Strategy plugins: built outside the package against `wpcompare include-dir`, loaded with
--plugin or WPCOMPARE_PLUGINS, refused with one line naming the file, run like built-ins.

Every command runs in a process of its own (harness.cli): a plugin stays loaded in the process
that loaded it, and this one must keep the built-in table only.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from harness import CLI_COMMAND, PLUGIN_EXAMPLE, build_plugin, c_compiler, cli

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "plugin_cases.c")
QUICK = ["--repeat", "1", "--warmup", "0", "--no-bounds", "--latency", "off", "--format", "json"]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The example's Makefile run as its README says, its objects in a private directory:
    {"good": libprefault.so, "broken": libprefault-broken.so}."""
    c_compiler()
    if not shutil.which("make"):
        pytest.skip("no make to build examples/plugin with")
    out = tmp_path_factory.mktemp("plugins")
    built = subprocess.run(["make", "-C", PLUGIN_EXAMPLE, f"OUT={out}", f"WPCOMPARE={CLI_COMMAND}"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return {"good": str(out / "libprefault.so"), "broken": str(out / "libprefault-broken.so")}


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR of the commands under test: empty before, and checked for leftovers after."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.delenv("WPCOMPARE_PLUGINS", raising=False)
    return directory


def document_of(done):
    return json.loads(done.stdout)


def rows_of(done, label):
    return [row for row in document_of(done)["runs"] if row["label"] == label]


def counters_of(row):
    return row["counters"]


def test_the_example_runs_verified_and_detached_and_the_metadata_names_it(examples, private_tmp):
    done = cli("run", "--plugin", examples["good"], "-s", "sigsegv-prefault", "--size", "2M",
               "--threads", "2", "--overlap", *QUICK)
    assert done.returncode == 0, done.stderr
    rows = rows_of(done, "sigsegv-prefault")
    assert [row["op"] for row in rows] == ["read", "write"]
    for row in rows:
        assert row["status"] == "ok" and row["verified"] and row["detached"], row
    with open(examples["good"], "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    assert document_of(done)["metadata"]["plugins"] == [
        {"path": examples["good"], "sha256": digest, "strategies": ["sigsegv-prefault"]}]
    assert not os.listdir(private_tmp)


def test_the_example_moves_one_chunk_per_first_write(examples, private_tmp):
    """A sequential writer faults once per 64 KiB chunk and leaves the fixup nothing. (-s before
    --plugin: the plugin is loaded before -s is read, wherever it stands.)"""
    done = cli("run", "-s", "sigsegv-prefault:chunk=64K", "--plugin", examples["good"], "--size", "1M",
               "--op", "write", "--pattern", "seq", *QUICK)
    assert done.returncode == 0, done.stderr
    (row,) = rows_of(done, "sigsegv-prefault")
    assert row["status"] == "ok" and row["verified"]
    assert counters_of(row)["write_faults"] == 16 and counters_of(row)["fixup_moves"] == 0
    assert row["dirty"] == {"reported": 256, "missing": 0, "extra": 0}


def test_the_example_keeps_an_image_tail_that_is_not_whole_pages(examples, private_tmp, tmp_path):
    """The services' image_size is the file's bytes: the last chunk reads only what exists."""
    path = tmp_path / "tail.img"
    path.write_bytes(os.urandom((1 << 20) + 1000))
    done = cli("run", "--plugin", examples["good"], "-s", "sigsegv-prefault", "--image", str(path),
               "--pattern", "seq", *QUICK)
    assert done.returncode == 0, done.stderr
    for row in rows_of(done, "sigsegv-prefault"):
        assert row["status"] == "ok" and row["verified"] and row["detached"], row


def test_the_broken_twin_loses_writes_under_concurrent_writers(examples, private_tmp):
    done = cli("run", "--plugin", examples["broken"], "-s", "sigsegv-prefault-broken", "--size", "1M",
               "--threads", "4", "--overlap", *QUICK)
    assert done.returncode == 1, done.stderr
    read, write = rows_of(done, "sigsegv-prefault-broken")
    assert read["status"] == "ok" and read["verified"], "it reads right: only writes are lost"
    assert write["status"] == "failed" and write["failed_phase"] == "verify"
    assert "pages differ from the image plus the workload's writes" in write["reason"]


def test_check_passes_the_example_and_names_the_page_its_broken_twin_loses(examples, private_tmp,
                                                                            tmp_path):
    """`check --plugin`: the example passes the quick battery, the JSON names the plugin and its
    hash; the broken twin fails the racing-writer case with exit 1, naming the lost page."""
    output = tmp_path / "check.json"
    good = cli("check", "--plugin", examples["good"], "-s", "sigsegv-prefault", "--quick",
               "-o", str(output))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "not ok" not in good.stdout
    plugin, = json.loads(output.read_text())["metadata"]["plugins"]
    assert plugin["path"] == examples["good"]
    assert plugin["sha256"] == hashlib.sha256(open(examples["good"], "rb").read()).hexdigest()
    broken = cli("check", "--plugin", examples["broken"], "-s", "sigsegv-prefault-broken",
                 "--case", "racing-writers")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    line, = [line for line in broken.stdout.splitlines() if line.startswith("not ok")]
    assert re.search(r"racing-writers: verify: .* first at page \d+ \(byte offset \d+: the write "
                     r"of workload thread \d+ was lost\)", line), line


def test_check_strategy_from_pytest_loads_the_plugin_and_fails_with_the_case(examples, private_tmp):
    """wpcompare.testing.check_strategy(plugin, name): a project's own test of its plugin (run in
    a process of its own: a plugin loaded here would stay in this test process's table)."""
    script = ("import sys\n"
              "from wpcompare import testing\n"
              "testing.check_strategy(sys.argv[1], 'sigsegv-prefault', cases=['threads-4-overlap'])\n"
              "try:\n"
              "    testing.check_strategy(sys.argv[2], 'sigsegv-prefault-broken', cases=['racing-writers'])\n"
              "except testing.CheckFailed as failed:\n"
              "    print(failed)\n"
              "    sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", script, examples["good"], examples["broken"]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "sigsegv-prefault-broken: racing-writers: verify:" in done.stdout
    assert "was lost" in done.stdout


def test_plugins_from_the_environment_serve_list_info_and_cycle(examples, private_tmp):
    env = dict(os.environ, WPCOMPARE_PLUGINS=f"{examples['good']}:{examples['broken']}")
    listed = cli("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"(plugin {examples['good']})" in listed.stdout
    assert f"(plugin {examples['broken']})" in listed.stdout
    listed_json = cli("list", "--json", env=env)
    assert listed_json.returncode == 0, listed_json.stderr
    origins = {entry["name"]: entry["origin"] for entry in json.loads(listed_json.stdout)["strategies"]}
    assert origins["sigsegv-prefault"] == examples["good"] and origins["mmap"] == "builtin"
    info = cli("info", "--json", env=env)
    assert info.returncode == 0, info.stderr
    facts = {entry["name"]: entry for entry in json.loads(info.stdout)["strategies"]}
    assert facts["sigsegv-prefault"]["available"]
    chains = cli("cycle", "-s", "sigsegv-prefault", "--cycles", "2", "--size", "1M", "--format", "json",
                 env=env)
    assert chains.returncode == 0, chains.stderr
    document = json.loads(chains.stdout)
    assert [chain["status"] for chain in document["chains"]] == ["ok"]
    assert [entry["path"] for entry in document["metadata"]["plugins"]] == [examples["good"],
                                                                           examples["broken"]]
    assert not os.listdir(private_tmp)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """build(CASE) -> the path of tests/plugin_cases.c built with -DCASE."""
    out = tmp_path_factory.mktemp("cases")

    def build(case):
        target = out / f"{case.lower()}.so"
        return str(target) if target.exists() else build_plugin(CASES, target, case)
    return build


def refused(*args):
    """The one line of a command refused before any run; exit 2, no output file, no leftovers."""
    done = cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert not done.stdout
    return lines[0]


# (case, what its one line says), the case built from plugin_cases.c.
REFUSALS = {
    "CASE_WRONG_ABI": "built for plugin ABI version 2, this wpcompare has version 1",
    "CASE_NO_ENTRY": "no entry point wpcompare_plugin()",
    "CASE_UNDEFINED_SYMBOL": "cannot load it: ",
    "CASE_COLLISION": "strategy 'mmap' is already defined",
    "CASE_BAD_NAME": "row name 'Bad Name' is not [a-z0-9][a-z0-9-]*",
    "CASE_NO_RESTORE": "lacks a required callback (restore)",
    "CASE_PARAM_OUTSIDE": "parameter 'size' at offset 8 does not fit params_size 8",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_plugin_is_refused_in_one_line_naming_it(cases, case, private_tmp, tmp_path):
    path = cases(case)
    output = tmp_path / "out.json"
    line = refused("run", "--plugin", path, "-s", "mmap", "--size", "1M", "-o", str(output), *QUICK[:-2])
    assert line.startswith(f"Error: plugin {path}: "), line
    assert REFUSALS[case] in line, line
    if case == "CASE_UNDEFINED_SYMBOL":
        assert "wpc_fail_in_the_extension" in line
    assert not output.exists()
    assert not os.listdir(private_tmp)
    assert refused("list", "--plugin", path) == line


def test_a_missing_or_non_elf_plugin_is_refused(private_tmp, tmp_path):
    missing = str(tmp_path / "absent.so")
    assert refused("list", "--plugin", missing) == f"Error: plugin {missing}: No such file or directory"
    text = tmp_path / "text.so"
    text.write_text("not an object\n")
    assert refused("list", "--plugin", str(text)).startswith(f"Error: plugin {text}: cannot load it: ")


def test_a_name_an_earlier_plugin_took_is_refused(examples, private_tmp, tmp_path):
    """Two files defining sigsegv-prefault: the second is refused; one file named twice is loaded once."""
    copy = tmp_path / "copy.so"
    shutil.copyfile(examples["good"], copy)
    line = refused("list", "--plugin", examples["good"], "--plugin", str(copy))
    assert line == (f"Error: plugin {copy}: strategy 'sigsegv-prefault' is already defined "
                    "(a built-in, or an earlier plugin or row): rename it")
    twice = cli("list", "--plugin", examples["good"], "--plugin", examples["good"])
    assert twice.returncode == 0 and twice.stdout.count("sigsegv-prefault ") == 1, twice.stderr


def test_a_plugin_whose_restore_segfaults_is_a_failed_row_with_its_signal(cases, private_tmp):
    path = cases("CASE_SEGV_RESTORE")
    done = cli("run", "--plugin", path, "-s", "plugin-case", "-s", "mmap", "--size", "1M", "--op", "write",
               *QUICK)
    assert done.returncode == 1, done.stderr
    (row,) = rows_of(done, "plugin-case")
    assert row["status"] == "failed" and row["failed_phase"] == "restore"
    assert "SIGSEGV" in row["reason"], row["reason"]
    (mmap_row,) = rows_of(done, "mmap")
    assert mmap_row["status"] == "ok", "the rest of the matrix still runs"
    assert not os.listdir(private_tmp)


def test_the_hosts_chunks_serve_a_plugin_as_they_serve_sigsegv(private_tmp, tmp_path):
    """tests/plugin_chunks.c: the built-in sigsegv written with the services' chunks_* slots."""
    path = build_plugin(os.path.join(HERE, "plugin_chunks.c"), tmp_path / "chunks.so")
    done = cli("run", "--plugin", path, "-s", "plugin-chunks:chunk=4K", "--size", "1M", "--threads", "2",
               "--overlap", *QUICK)
    assert done.returncode == 0, done.stderr
    for row in rows_of(done, "plugin-chunks:chunk=4K"):
        assert row["status"] == "ok" and row["verified"] and row["detached"], row
        counters = counters_of(row)
        assert counters["chunks"] == 256
        assert counters["chunks_by_fault"] + counters["chunks_by_background"] + counters["chunks_at_fixup"] == 256
        assert row["dirty"]["missing"] == 0
    assert not os.listdir(private_tmp)


def test_the_hosts_handler_thread_serves_a_plugins_userfaultfd(private_tmp, tmp_path):
    """tests/plugin_handler.c: userfaultfd MISSING through open_uffd, uffd_register and the
    shared fault-handler thread (handler_start ... handler_free)."""
    path = build_plugin(os.path.join(HERE, "plugin_handler.c"), tmp_path / "handler.so")
    done = cli("run", "--plugin", path, "-s", "plugin-handler", "--size", "1M", "--threads", "2",
               "--pattern", "sparse:0.5", *QUICK)
    rows = rows_of(done, "plugin-handler")
    if rows and rows[0]["status"] == "skipped":
        pytest.skip(rows[0]["reason"])
    assert done.returncode == 0, done.stderr
    for row in rows:
        assert row["status"] == "ok" and row["verified"] and row["detached"], row
        served = counters_of(row)["handler_copies"]
        assert 0 < served <= 128 and row["histograms"]["handler"]["count"] >= served
    assert not os.listdir(private_tmp)
