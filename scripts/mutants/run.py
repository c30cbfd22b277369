#!/usr/bin/env python3
"""The mutation catalogue: plant each known plausible bug in the C core, one at a
time, and show which test catches it.

Every *.patch in this directory is one mutant: a unified diff against the
checkout (as `git diff` writes it) after a header of `Key: value` lines:

    Description: the claim of a chunk is a load then a store, not a CAS
    Tests: tests/test_sigsegv.py::TestSigsegv::test_held_race_two_faults_on_one_chunk
    Equivalent: (optional) why no test can tell this change from the code

The script copies the tree into a private directory, compiles the core's
objects once (the compiler flags of wpcompare/_build.py, without
setuptools), then per mutant: checks the patch applies (`patch --dry-run`;
one that no longer applies fails the script naming it), applies it,
recompiles the patched files only, relinks the extension in the private
copy, runs the mutant's tests there (`pytest -x`, a timeout per mutant) and
puts the pristine sources and objects back. It prints a table mutant ->
test that caught it -> seconds, and the score.

A mutant counts as caught only when a test fails by an assertion: a run
ended by a watchdog ("timed out after", "hung for") or by this script's
timeout is a hang, not a catch, and fails the catalogue like a survivor.
The exit status is 0 only if every mutant not marked equivalent is caught
and the unmutated build passes every test the catalogue names.

    python scripts/mutants/run.py              # the whole catalogue
    python scripts/mutants/run.py claim-race   # mutants whose name contains a word
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
IGNORE = shutil.ignore_patterns(".git", "build", "*.so", "__pycache__", ".pytest_cache",
                                ".hypothesis", "*.egg-info")
HANG_MARKERS = ("timed out after", "hung for")


class CatalogueError(Exception):
    pass


class Mutant:
    def __init__(self, path):
        self.path = path
        self.name = path.stem
        text = path.read_text()
        header, _, self.diff = text.partition("\n--- ")
        self.diff = "--- " + self.diff
        fields = dict(re.findall(r"^([A-Z][a-z]+): *(.*)$", header, re.M))
        self.description = fields.get("Description", "")
        self.tests = fields.get("Tests", "").split()
        self.equivalent = fields.get("Equivalent")
        self.files = re.findall(r"^\+\+\+ b/(\S+)", self.diff, re.M)
        if not self.description or not self.files or (not self.tests and not self.equivalent):
            raise CatalogueError(f"{path.name}: needs Description:, Tests: (or Equivalent:) "
                                 "and a diff")


def run(command, cwd, timeout=None, env=None):
    return subprocess.run(command, cwd=cwd, env=env, timeout=timeout, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Build:
    """The core compiled once into objects, relinked per mutant."""

    def __init__(self, tree):
        self.tree = tree
        self.objects = tree / "build" / "mutants"
        self.objects.mkdir(parents=True)
        sys.path.insert(0, str(tree))
        os.environ.pop("WPCOMPARE_SANITIZE", None)
        from wpcompare import _build
        self.cflags = (_build.extra_compile_args() + ["-fPIC"]
                       + [f"-I{tree / directory}" for directory in _build.INCLUDE_DIRS]
                       + ["-I", sysconfig.get_paths()["include"]])
        self.ldflags = _build.extra_link_args() + [f"-l{library}" for library in _build.LIBRARIES]
        wrapper = self.objects / "_core.c"
        _build.ffibuilder.emit_c_code(str(wrapper))
        self.sources = sorted((tree / "csrc").glob("*.c")) + [wrapper]
        self.target = tree / "wpcompare" / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))

    def object_for(self, source):
        return self.objects / (Path(source).stem + ".o")

    def compile(self, source):
        result = run(["gcc", *self.cflags, "-c", str(source), "-o", str(self.object_for(source))],
                     self.tree)
        if result.returncode:
            raise CatalogueError(f"compiling {source}:\n{result.stdout}")

    def compile_all(self):
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(self.compile, self.sources))

    def link(self):
        objects = [str(self.object_for(source)) for source in self.sources]
        result = run(["gcc", "-shared", *objects, *self.ldflags, "-o", str(self.target)], self.tree)
        if result.returncode:
            raise CatalogueError(f"linking:\n{result.stdout}")


def pytest(tree, tests, timeout, stop=True):
    """(verdict, test, seconds, output) of one pytest run of tests in tree."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    try:
        result = run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
                      *(["-x"] if stop else []), *tests], tree, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or ""
        return "TIMEOUT", f"(none within {timeout} s)", time.monotonic() - start, \
            out if isinstance(out, str) else out.decode(errors="replace")
    seconds = time.monotonic() - start
    out = result.stdout
    if result.returncode == 0:
        return "survived", "-", seconds, out
    failed = re.search(r"^FAILED (\S+)(?: - (.*))?$", out, re.M)
    if result.returncode == 1 and failed:
        # The failure's own words (pytest's "E" lines and summary), not the source it quotes.
        said = [line for line in out.splitlines() if line.startswith("E ")] + [failed.group(0)]
        if any(marker in line for line in said for marker in HANG_MARKERS):
            return "hang", failed.group(1), seconds, out
        return "caught", failed.group(1), seconds, out
    return "ERROR", f"pytest exit status {result.returncode}", seconds, out


def check_tree_is_used(tree):
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = run([sys.executable, "-c", "import wpcompare._core, sys; print(wpcompare._core.__file__)"],
                 tree, env=env)
    if result.returncode or not result.stdout.strip().startswith(str(tree)):
        raise CatalogueError(f"the private copy's wpcompare is not the one imported: {result.stdout}")


def apply(tree, mutant, dry_run):
    command = ["patch", "-p1", "--forward", "--batch", "--quiet"] + (["--dry-run"] if dry_run else [])
    result = subprocess.run(command, cwd=tree, input=mutant.diff, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode:
        raise CatalogueError(f"mutant {mutant.name} ({mutant.path.name}) no longer applies; "
                             f"update it to the code:\n{result.stdout}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("select", nargs="*", help="run only mutants whose name contains one of these")
    parser.add_argument("--timeout", type=float, default=45, help="seconds per mutant (default 45)")
    parser.add_argument("--keep", action="store_true", help="keep the private copy")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each mutant's tests N times; caught only if caught every time")
    parser.add_argument("--all-tests", action="store_true",
                        help="run all of a mutant's tests, not only until the first failure")
    args = parser.parse_args()

    mutants = [Mutant(path) for path in sorted(HERE.glob("*.patch"))]
    if args.select:
        mutants = [m for m in mutants if any(word in m.name for word in args.select)]
    if not mutants:
        raise CatalogueError("no mutant selected")
    start = time.monotonic()
    tree = Path(tempfile.mkdtemp(prefix="wpcompare-mutants."))
    failures = []
    rows = []
    try:
        shutil.copytree(ROOT, tree, ignore=IGNORE, dirs_exist_ok=True)
        for mutant in mutants:        # every patch must apply before anything is built
            try:
                apply(tree, mutant, dry_run=True)
            except CatalogueError as error:
                failures.append(str(error))
        if failures:
            raise CatalogueError("\n".join(failures))
        build = Build(tree)
        build.compile_all()
        build.link()
        check_tree_is_used(tree)
        print(f"built the core in {time.monotonic() - start:.1f} s; {len(mutants)} mutant(s)",
              flush=True)

        tests = sorted({test for m in mutants if not m.equivalent for test in m.tests})
        verdict, _, seconds, out = pytest(tree, tests,
                                          args.timeout * 4)
        if verdict != "survived":
            raise CatalogueError(f"the unmutated build fails the catalogue's tests ({verdict}, "
                                 f"{seconds:.1f} s):\n{out[-3000:]}")
        print(f"unmutated build: {len(tests)} test selection(s) pass in {seconds:.1f} s", flush=True)

        for mutant in mutants:
            if mutant.equivalent:
                rows.append((mutant, "equivalent", mutant.equivalent, 0.0))
                continue
            pristine = {name: (tree / name).read_bytes() for name in mutant.files}
            t0 = time.monotonic()
            try:
                apply(tree, mutant, dry_run=False)
                if any(name.endswith(".h") for name in mutant.files):
                    build.compile_all()
                else:
                    # A mutant of the Python package needs no build: the copy's is imported.
                    for name in mutant.files:
                        if name.endswith(".c"):
                            build.compile(tree / name)
                build.link()
                for attempt in range(args.repeat):
                    verdict, test, seconds, out = pytest(tree, mutant.tests, args.timeout,
                                                         stop=not args.all_tests)
                    if args.repeat > 1 or args.all_tests:
                        caught_by = re.findall(r"^FAILED (\S+)", out, re.M)
                        print(f"  {mutant.name} run {attempt + 1}: {verdict} in {seconds:.1f} s;"
                              f" failed: {' '.join(caught_by) or '-'}", flush=True)
                        for line in re.findall(r"^E +(\w*Error: .*)$", out, re.M):
                            print(f"      {line[:160]}")
                    if verdict != "caught":
                        break
            except CatalogueError as error:
                verdict, test, seconds, out = "BUILD FAILED", str(error).splitlines()[0], 0.0, str(error)
            finally:
                for name, data in pristine.items():
                    (tree / name).write_bytes(data)
                    if name.endswith(".c"):
                        build.compile(tree / name)
                if any(name.endswith(".h") for name in mutant.files):
                    build.compile_all()
            seconds = time.monotonic() - t0
            rows.append((mutant, verdict, test, seconds))
            print(f"  {mutant.name}: {verdict} {test} ({seconds:.1f} s)", flush=True)
            if verdict != "caught":
                failures.append(f"{mutant.name}: {verdict}\n{out[-2500:]}")
        build.link()
    finally:
        if args.keep:
            print(f"private copy kept in {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)

    width = max(len(m.name) for m, *_ in rows)
    print()
    print(f"{'mutant':<{width}}  {'verdict':<10}  {'seconds':>7}  caught by / description")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 7}  {'-' * 40}")
    for mutant, verdict, test, seconds in rows:
        print(f"{mutant.name:<{width}}  {verdict:<10}  {seconds:7.1f}  {test}")
        print(f"{'':<{width}}  {'':<10}  {'':>7}    {mutant.description}")
    counted = [row for row in rows if row[1] != "equivalent"]
    caught = sum(1 for row in counted if row[1] == "caught")
    print(f"\nscore: {caught}/{len(counted)} caught"
          f" ({len(rows) - len(counted)} marked equivalent); {time.monotonic() - start:.0f} s in all")
    if failures:
        print("\nNOT CAUGHT (a survivor must get a test, or be marked Equivalent: with the reason):",
              file=sys.stderr)
        for failure in failures:
            print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CatalogueError as error:
        print(f"mutation catalogue: {error}", file=sys.stderr)
        sys.exit(2)
