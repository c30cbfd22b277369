"""Repeated checkpoints: for each strategy, a chain of cycles restore -> work -> fixup -> checkpoint.

Cycle k restores image k, runs the workload (the pattern's pages read, a
share F of them written), fixes up until detached, dumps the region into
image k+1 (a full dump and, where the strategy knows its dirty set, an
incremental one), checks the new image against the model of every write so
far, and deletes image k. Cycle k+1 restores image k+1.

Every cycle runs in a fresh process, because a restored process is a new
process: nothing (signal handlers, VMAs, page tables, a uffd) survives from
the cycle that wrote the image, and the peak RSS getrusage reports is that
cycle's alone. Strategies run one after another, each chain in its own
private directory: side by side in the results, never at the same time,
since concurrent runs on two CPUs would measure each other.
"""
import os
import shutil
from dataclasses import dataclass
from typing import Optional

from wpcompare import binding, leftovers, runner
from wpcompare.errors import UnsupportedError, WpcError
from wpcompare.rows import Chain, CycleRow
from wpcompare.worker import result_fields

# When image k is deleted. after-checkpoint: once image k+1 is written and
# checked (an incremental dump takes its clean pages from image k).
# when-detached: as soon as the strategy says the region needs it no more:
# right after restore for a strategy detached by then, else right after fixup.
DELETE_MODES = ("after-checkpoint", "when-detached")
# Tests only: right after restore whatever the strategy says, to show that a
# deletion really takes the data away from a strategy that still needs it.
FORCED_DELETE = "after-restore"

COMPARE_BLOCK = 1 << 20
STEADY_PASSES = 3


@dataclass
class ChainPlan:
    choices: list              # strategies.StrategyChoice
    cycles: int
    dirty: float               # share of the pattern's pages each cycle writes
    pattern: object            # options.Pattern
    image: object              # image.Image: generated (the model needs its seed and kind) or a
                               # user's file (the model reads it as the base of every cycle)
    threads: int = 1
    overlap: bool = False
    pin_threads: bool = True
    seed: int = 1
    delete_old: str = "after-checkpoint"
    directory: Optional[str] = None   # where the chains' images go; None: the system temp dir
    timeout: float = runner.DEFAULT_TIMEOUT
    lose_write: Optional[int] = None  # tests only: the cycle whose kept image loses one written page
    # A trace pattern: cycle k's (options.Pattern of one trace file, its threads), k from 1.
    cycle_patterns: Optional[list] = None


def cycle_workload(plan, cycle):
    """Cycle `cycle`'s workload (binding.fill_workload's keywords, the pattern an options.Pattern):
    its own seed, so each cycle reads and writes other pages; a trace pattern, that cycle's trace."""
    pattern, threads = plan.pattern, plan.threads
    if plan.cycle_patterns:
        pattern, threads = plan.cycle_patterns[cycle - 1]
    return {"op": "mixed", "pattern": pattern, "seed": plan.seed + cycle,
            "threads": threads, "overlap": plan.overlap, "pin_threads": plan.pin_threads,
            "write_fraction": plan.dirty}


def shown_workload(workload):
    """A workload as a cycle's row shows it: the pattern as people type it."""
    return dict(workload, pattern=str(workload["pattern"]))


@dataclass(frozen=True)
class CycleStep:
    """What the progress line shows as a cycle starts (progress.CycleProgress)."""
    label: str
    cycle: int
    cycles: int
    chain: int          # which of the `--repeat` chains of this strategy
    chains: int


def run_chains(plan, progress=None, chain=1, chains=1, done=None):
    """One chain per strategy choice, in order; the chains as JSON-able dicts, each with its
    repetition (chain, of chains: `cycle --repeat`). progress (runner.Progress) is told as each
    cycle starts and ends, its index counted over every chain of every repetition. done: a list
    each chain is appended to as it finishes, so a caller interrupted still has those."""
    if plan.lose_write and plan.delete_old != "after-checkpoint":
        raise ValueError("a lost write is injected by copying a page back from the old image, "
                         "which needs --delete-old after-checkpoint")
    progress = progress or runner.Progress()
    first = (chain - 1) * len(plan.choices) * plan.cycles
    total = chains * len(plan.choices) * plan.cycles
    done = [] if done is None else done
    for position, choice in enumerate(plan.choices):
        steps = (progress, first + position * plan.cycles, total, chain, chains)
        done.append(dict(run_chain(plan, choice, steps), repetition=chain))
    return done


def skipped_chains(plan, reasons):
    """The chains of a plan none of whose strategies can run ({label: reason}), without running
    (or needing) anything."""
    return [dict(Chain.for_choice(choice).end("skipped", reasons[choice.label]).to_json(), repetition=1)
            for choice in plan.choices]


def run_chain(plan, choice, steps=None):
    """Every cycle of one strategy, each in a fresh process; stops at the first failed cycle.
    steps: (progress, index of its first cycle, total, chain, chains), or None."""
    progress, first, total, repetition, chains = steps or (runner.Progress(), 0, plan.cycles, 1, 1)
    chain = Chain.for_choice(choice)
    # In a child, as every run's probe: probing may open a userfaultfd or reserve huge pages.
    try:
        unavailable = runner.call_in_fresh_process(
            _probe, [choice.strategy.name, choice.params_text, plan.image.size], plan.timeout)
    except runner.WorkerFailure as failure:
        return chain.end("failed", f"probe: {failure.reason}").to_json()
    if unavailable:
        return chain.end("skipped", unavailable).to_json()

    with leftovers.owned_directory(plan.directory) as directory:
        # Image 1 is a copy of the base image: cycle k restores image k and writes image k+1.
        try:
            copy_image(plan.image.path, _image_path(directory, 1))
        except OSError as error:
            return chain.end("failed", f"cannot copy the image into {directory}: {error.strerror}").to_json()
        history = []
        for cycle in range(1, plan.cycles + 1):
            spec = _cycle_spec(plan, choice, directory, cycle, history)
            step = CycleStep(chain.label, cycle, plan.cycles, repetition, chains)
            progress.started(first + cycle - 1, total, step)
            try:
                row = runner.call_in_fresh_process(run_cycle, spec, plan.timeout)
            except runner.WorkerFailure as failure:
                dead = chain.row(cycle)
                dead.fail(failure.reason)
                row = dead.to_json()
            progress.finished(first + cycle - 1, total, step, row)
            chain.cycles.append(row)
            if row["status"] != "ok":
                chain.end("failed", f"cycle {cycle}: {row['reason']}")
                break
            history.append(spec["workload"])
    return chain.to_json()


def _probe(argument):
    """None if the strategy can run here, else the reason it cannot."""
    return runner.unavailable(argument)


def _image_path(directory, number):
    return os.path.join(directory, f"image-{number}.img")


def _cycle_spec(plan, choice, directory, cycle, history):
    return {
        "strategy": choice.strategy.name,
        "params": choice.params_text,
        "label": choice.label,
        "cycle": cycle,
        "image": _image_path(directory, cycle),
        "next_image": _image_path(directory, cycle + 1),
        # The model's base: the generator's (seed, kind), or the user's file itself (path).
        "base": {"seed": plan.image.seed, "kind": plan.image.kind, "bytes": plan.image.size,
                 "path": plan.image.path if plan.image.seed is None else None},
        "history": list(history),
        "workload": cycle_workload(plan, cycle),
        "delete_old": plan.delete_old,
        "lose_write": plan.lose_write == cycle,
    }


def copy_image(source, target):
    """Image 1 of a chain: the base image copied, never the cached or user's file itself (it gets deleted)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        remaining = os.fstat(src.fileno()).st_size
        try:
            while remaining:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining)
                if not copied:
                    break
                remaining -= copied
        except OSError:
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, COMPARE_BLOCK)


def destroy_image(path):
    """Delete an image so that its data is gone, not just its name.

    Unlinking alone leaves the data to any descriptor or mapping still open
    on the file, so a strategy that still read the image would pass
    unnoticed; truncating first takes the pages away from them too (a
    mapping then faults with SIGBUS, a read finds end of file).
    """
    os.truncate(path, 0)
    os.unlink(path)


def first_difference(path_a, path_b):
    """Byte offset where two files first differ (a length difference counts); None if equal."""
    offset = 0
    with open(path_a, "rb") as a, open(path_b, "rb") as b:
        while True:
            block_a, block_b = a.read(COMPARE_BLOCK), b.read(COMPARE_BLOCK)
            if block_a != block_b:
                for index, (x, y) in enumerate(zip(block_a, block_b)):
                    if x != y:
                        return offset + index
                return offset + min(len(block_a), len(block_b))
            if not block_a:
                return None
            offset += len(block_a)


def _lose_one_write(workload, pages, previous, target):
    """Tests only: put back into target the previous image's copy of the first page this cycle
    wrote, as a dump that missed one dirty page would. Returns the page."""
    count, bitmap = binding.written_pages(workload, pages)
    if not count:
        raise ValueError("this cycle wrote no page: a lost write needs --dirty > 0")
    page = next(p for p in range(pages) if bitmap[p // 8] >> (p % 8) & 1)
    with open(previous, "rb") as source, open(target, "r+b") as dump:
        source.seek(page * binding.PAGE_SIZE)
        dump.seek(page * binding.PAGE_SIZE)
        dump.write(source.read(binding.PAGE_SIZE))
    return page


def run_cycle(spec):
    """One cycle in this process (the runner's fresh child): the row, JSON-able."""
    cycle, image, base = spec["cycle"], spec["image"], spec["base"]
    workload = spec["workload"]
    row = CycleRow(spec["label"], spec["strategy"], spec["params"], cycle)
    data = row.measurements
    data.update(workload=shown_workload(workload), old_image_deleted=None)
    full_path = spec["next_image"] + ".full"
    incremental_path = spec["next_image"] + ".incremental"

    def fail(phase, reason):
        row.fail(reason, phase)
        return row.to_json()

    def delete_old(when):
        destroy_image(image)
        data["old_image_deleted"] = when

    history = list(spec["history"])
    current = workload
    pages = -(-base["bytes"] // binding.PAGE_SIZE)
    data["written_pages"] = binding.written_pages(current, pages)[0]
    try:
        run = binding.Run(image_path=image, image_seed=base["seed"], image_kind=base["kind"],
                          base_image_path=base["path"],
                          strategy=spec["strategy"], params=spec["params"] or None, op="mixed",
                          pattern=current["pattern"], threads=current["threads"],
                          overlap=current["overlap"], seed=current["seed"],
                          pin_threads=current["pin_threads"],
                          write_fraction=current["write_fraction"], history=history)
    except WpcError as error:
        return fail("create", error.reason)

    # incremental_unavailable: "no dirty set" or "old image deleted", with the reason in words.
    checkpoint = {"full": None, "incremental": None, "incremental_unavailable": None,
                  "incremental_reason": None, "kept": None, "incremental_equals_full": None}
    data["checkpoint"] = checkpoint
    mode = spec["delete_old"]
    with run:
        phase = "restore"
        try:
            run.restore()
            if mode == FORCED_DELETE or (mode == "when-detached" and run.detached()):
                delete_old("restore")
            phase = "touch"
            run.touch()
            phase = "fixup"
            run.fixup()
            data["fixup_pause_ns"] = run.fixup_pause_ns()
            if mode == "when-detached" and data["old_image_deleted"] is None:
                delete_old("fixup")
            phase = "checkpoint"
            checkpoint["full"] = run.checkpoint(full_path, incremental=False)
            if data["old_image_deleted"]:
                checkpoint["incremental_unavailable"] = "old image deleted"
                checkpoint["incremental_reason"] = (
                    f"image {cycle} was deleted at {data['old_image_deleted']} "
                    f"(--delete-old {mode}) and an incremental dump takes its clean pages from it")
            else:
                try:
                    checkpoint["incremental"] = run.checkpoint(incremental_path, incremental=True)
                except UnsupportedError as error:
                    checkpoint["incremental_unavailable"] = "no dirty set"
                    checkpoint["incremental_reason"] = error.reason
            phase = "steady"
            # The fastest of a few passes: the steady state, not whatever else the CPUs were doing.
            data["steady_passes_ns"] = [run.steady() for _ in range(STEADY_PASSES)]
            data["steady_ns"] = min(data["steady_passes_ns"])
            phase = "verify"
            run.verify()
        except WpcError as error:
            fail(phase, error.reason)
        data.update(result_fields(run.result))
    if row.status != "ok":
        return row.to_json()

    kept = incremental_path if checkpoint["incremental"] else full_path
    checkpoint["kept"] = "incremental" if checkpoint["incremental"] else "full"
    if spec.get("lose_write"):
        data["lost_write_page"] = _lose_one_write(current, pages, image, kept)

    model = history + [current]
    checks = {"full": binding.image_check(full_path, base["bytes"], base["seed"], base["kind"], model,
                                          base_path=base["path"])}
    if checkpoint["incremental"]:
        checks["incremental"] = binding.image_check(incremental_path, base["bytes"], base["seed"],
                                                    base["kind"], model, base_path=base["path"])
    data["image_check"] = checks
    for name in ("incremental", "full"):
        if name in checks and not checks[name]["verified"]:
            return fail("image-check", f"{name} dump of image {cycle + 1}: {checks[name]['reason']}")
    if checkpoint["incremental"]:
        difference = first_difference(full_path, incremental_path)
        checkpoint["incremental_equals_full"] = difference is None
        if difference is not None:
            return fail("image-check", f"the incremental dump of image {cycle + 1} differs from the full "
                        f"dump at byte {difference}")

    os.replace(kept, spec["next_image"])
    for leftover in (full_path, incremental_path):
        if os.path.exists(leftover):
            os.unlink(leftover)
    if data["old_image_deleted"] is None:
        delete_old("checkpoint")
    return row.to_json()
