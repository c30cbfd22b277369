"""A detach check that cannot run is an error with its reason, never a verdict (issue 14,
item 5): with no descriptor left, or /proc unmounted, the run fails saying why instead of
reporting "detached: no" and "to detached: never" with exit status 0."""
import os
import resource

from wpcompare import worker
from wpcompare.errors import WpcError

from harness import CLI_COMMAND, in_child, in_private_mount_namespace, open_run


def _verify_without_descriptors(image):
    with open_run(image, "read") as run:
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


def test_no_descriptor_for_proc_self_maps_fails_the_run(image):
    raised, fields = in_child(_verify_without_descriptors, image)
    assert raised and "cannot check whether the region is detached" in raised, raised
    assert "ulimit -n" in raised
    assert fields["verified"], "the bytes were still checked"


def test_proc_unmounted_fails_every_run_with_the_reason(tmp_path):
    done = in_private_mount_namespace(
        f"umount -l /proc && {CLI_COMMAND} run --size 1M --repeat 1 --warmup 0 -s read -s mmap --quiet")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("read ", "mmap "))]
    assert rows and not any(" no " in row or "never" in row for row in rows), rows
    for row in ("read read", "read write", "mmap read", "mmap write"):
        assert f"{row}: failed: verify: cannot check whether the region is detached" in done.stdout, done.stdout
    assert "is /proc mounted?" in done.stdout
