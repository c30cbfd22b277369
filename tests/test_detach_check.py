"""A detach check that cannot run is an error with its reason, never a verdict (issue 14,
item 5): with no descriptor left, or /proc unmounted, the run fails saying why instead of
reporting "detached: no" and "to detached: never" with exit status 0."""
import os
import resource
import shutil
import subprocess
import sys

import pytest

from wpcompare import binding, worker
from wpcompare.errors import WpcError
from wpcompare.options import parse_pattern

from conftest import is_root


def _verify_without_descriptors(image):
    run = binding.Run(image_path=image.path, image_seed=image.seed, image_kind=image.kind,
                      strategy="read", params=None, op="write", pattern=parse_pattern("random"),
                      threads=1, overlap=False, seed=3, pin_threads=True)
    with run:
        run.restore()
        run.touch()
        run.fixup()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        filler = []
        try:
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            run.verify()
            raised = None
        except WpcError as error:
            raised = error.reason
        finally:
            for fd in filler:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return raised, worker.result_fields(run.result)


def test_no_descriptor_for_proc_self_maps_fails_the_run(image, in_child):
    raised, fields = in_child(_verify_without_descriptors, image)
    assert raised and "cannot check whether the region is detached" in raised, raised
    assert "ulimit -n" in raised
    assert fields["verified"], "the bytes were still checked"


@pytest.mark.skipif(not is_root() or not shutil.which("unshare"),
                    reason="unmounting /proc in a private mount namespace needs root")
def test_proc_unmounted_fails_every_run_with_the_reason(tmp_path):
    cli = f"{sys.executable} -c 'from wpcompare.cli import main; main()'"
    script = (f"umount -l /proc && {cli} run --size 1M --repeat 1 --warmup 0 -s read -s mmap --quiet")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if "unshare" in done.stderr or "umount" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("read ", "mmap "))]
    assert rows and not any(" no " in row or "never" in row for row in rows), rows
    for row in ("read read", "read write", "mmap read", "mmap write"):
        assert f"{row}: failed: verify: cannot check whether the region is detached" in done.stdout, done.stdout
    assert "is /proc mounted?" in done.stdout
