"""`wpcompare run --preset`: the list, every preset runnable at a small size, overrides, missing strategies."""
import json
import re

import pytest
from click.testing import CliRunner

from wpcompare import presets, published, results, strategies
from wpcompare.cli import main

SMALL = ["--size", "1M", "--repeat", "1", "--warmup", "0", "--no-bounds"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _table_names():
    return {strategy.name for strategy in strategies.measured_strategies()}


def test_list_names_every_preset_with_its_strategies():
    result = invoke("run", "--preset", "list")
    assert result.exit_code == 0, result.output
    blocks = result.stdout.strip().split("\n\n")
    assert len(blocks) == len(presets.PRESETS) == 4
    for preset, block in zip(presets.PRESETS.values(), blocks):
        assert block.startswith(f"{preset.name}: {preset.summary}")
        assert "-s " + " -s ".join(preset.strategies) in block
        absent = [name for name in dict.fromkeys(text.partition(":")[0] for text in preset.strategies)
                  if name not in _table_names()]
        if absent:
            assert block.splitlines()[-1] == "    not in this build (shown as skipped rows): " + ", ".join(absent)
        else:
            assert "not in this build" not in block


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_runs_at_a_small_size(name, tmp_path):
    target = tmp_path / "out.json"
    result = invoke("run", "--preset", name, *SMALL, "-o", str(target))
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    preset = presets.PRESETS[name]
    assert document["metadata"]["preset"]["name"] == name
    assert document["metadata"]["image"]["bytes"] == 1 << 20, "--size overrides the preset"
    ops = ["read", "write"] if preset.settings["op"] == "both" else [preset.settings["op"]]
    assert document["metadata"]["options"]["ops"] == ops
    resolved = presets.resolve(preset)
    expected = [item.text if isinstance(item, presets.Missing) else item.label for item in resolved]
    assert [(g["label"], g["op"]) for g in document["groups"]] == [(label, op) for label in expected for op in ops], \
        "every strategy of the preset has its rows, in the preset's order"
    for item, group in zip([item for item in resolved for _ in ops], document["groups"]):
        if isinstance(item, presets.Missing):
            assert group["status"] == "skipped"
            assert "is not in this build of wpcompare" in group["reason"]
            assert f"{group['label']} {group['op']}: skipped: strategy" in result.stdout
        else:
            # Present in the table: measured, or skipped by this machine with its own reason.
            assert group["status"] == "ok" or (group["status"] == "skipped" and group["reason"]), group
            assert "not in this build" not in (group["reason"] or "")
    assert [m["strategy"] for m in document["metadata"]["preset"]["missing"]] == \
        [item.text for item in resolved if isinstance(item, presets.Missing)]


def test_seed_sets_the_published_setup_and_prints_the_published_ratios(tmp_path):
    target = tmp_path / "seed.json"
    result = invoke("run", "--preset", "seed", *SMALL, "-o", str(target))
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    meta = document["metadata"]
    assert meta["image"]["kind"] == "random"
    assert meta["options"]["pattern"] == "seq" and meta["options"]["ops"] == ["read"]
    assert meta["preset"]["reference"]["url"].endswith("crac-dev/2023-May/000862.html")
    assert "published beside this run" in result.stdout
    lines = result.stdout.split("published beside this run")[1].splitlines()
    header = next(line for line in lines if line.startswith("row"))
    columns = re.split(r"\s{2,}", header.strip())
    assert columns == ["row", "page", "per page here", "x mmap here", "x mmap published", "app per page",
                       "app x mmap"]

    def cells(line):
        return dict(zip(columns, re.split(r"\s{2,}", line.strip())))

    mmap_line = cells(next(line for line in lines if line.startswith("mmap read")))
    assert (mmap_line["x mmap here"], mmap_line["x mmap published"], mmap_line["app x mmap"]) == ("1x", "1x", "1x")
    # uffd:chunk=4K is labelled "uffd" where 4K is the table's default, as asked where uffd is missing.
    uffd, huge = [item.text if isinstance(item, presets.Missing) else item.label
                  for item in presets.resolve(presets.PRESETS["seed"])[1:]]
    published = {cells(line)["row"]: cells(line)["x mmap published"] for line in lines
                 if line.split()[:2] in ([uffd, "read"], [huge, "read"])}
    assert published == {f"{uffd} read": "20x", f"{huge} read": "3x"}


def test_a_preset_lists_the_bounds_first_as_every_run_does():
    small_with_bounds = [option for option in SMALL if option != "--no-bounds"]
    result = invoke("run", "--preset", "seed", *small_with_bounds, "--format", "json")
    assert result.exit_code == 0, result.output
    labels = [group["label"] for group in json.loads(result.stdout)["groups"]]
    assert labels[:len(strategies.BOUNDS)] == list(strategies.BOUNDS)
    assert labels[len(strategies.BOUNDS)] == "mmap", "then the preset's rows, in its order"


def test_explicit_options_override_the_preset(tmp_path):
    target = tmp_path / "out.json"
    result = invoke("run", "--preset", "seed", "--size", "2M", "--op", "write", "--pattern", "random",
                    "--image-kind", "mixed", "-s", "read", "--repeat", "1", "--warmup", "0", "-o", str(target))
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    meta = document["metadata"]
    assert meta["image"]["bytes"] == 2 << 20 and meta["image"]["kind"] == "mixed"
    assert meta["options"]["ops"] == ["write"] and meta["options"]["pattern"] == "random"
    assert [group["label"] for group in document["groups"]] == list(strategies.BOUNDS) + ["read"], \
        "the bounds first, as in every run"


def test_preset_with_a_user_image_keeps_the_image(tmp_path):
    image = tmp_path / "mine.img"
    image.write_bytes(bytes(range(256)) * 64)
    result = invoke("run", "--preset", "seed", "--image", str(image), "--repeat", "1", "--warmup", "0",
                    "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metadata"]["image"]["bytes"] == 16384


def test_unknown_preset_is_one_line(tmp_path):
    target = tmp_path / "out.json"
    result = invoke("run", "--preset", "nosuch", "-o", str(target))
    assert result.exit_code == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "unknown preset 'nosuch'; valid: seed, write-cost, fixup, full" in error
    assert not target.exists()


def test_a_strategy_with_parameters_this_build_rejects_becomes_a_reasoned_row():
    preset = presets.Preset("probe", "test", ("mmap", "read:chunk=4K", "nosuch:x=1"))
    resolved = presets.resolve(preset)
    assert isinstance(resolved[0], strategies.StrategyChoice)
    assert isinstance(resolved[1], presets.Missing) and "does not accept" in resolved[1].reason
    assert isinstance(resolved[2], presets.Missing) and "'nosuch' is not in this build" in resolved[2].reason
    rows = presets.missing_rows(resolved[2], ["read", "write"], "random", 1, False, 1)
    (group_read, group_write) = results.summarize(rows)
    assert (group_read["label"], group_read["status"]) == ("nosuch:x=1", "skipped")
    assert group_write["op"] == "write"


def test_published_ratios_beside_constructed_results():
    def row(label, touch_ns, pages=100, status="ok", reason=None, latency="every"):
        # Instrumented runs: mean timed access of touch_ns / pages; measured runs: touch time.
        timed = {"count": pages, "sum_ns": touch_ns, "min_ns": 1, "max_ns": touch_ns, "buckets": []}
        return {"strategy": label.partition(":")[0], "params": "", "label": label, "op": "read",
                "pattern": "seq", "threads": 1, "overlap": False, "warmup": False, "status": status,
                "reason": reason, "touched_pages": pages, "latency": latency,
                "histograms": {"touch": timed if latency != "none" else {"count": 0, "buckets": []}},
                "phases": {phase: {"ns": touch_ns if phase == "touch" else 1, "minflt": 0, "majflt": 0, "vmas": 1}
                           for phase in ("restore", "touch", "fixup", "verify")} if status == "ok" else None}
    runs = [row("mmap", 10_000), row("mmap", 12_000), row("mmap", 11_000),
            row("mmap", 500, latency="none"), row("mmap", 400, latency="none"),
            row("uffd", 220_000), row("uffd", 200_000), row("uffd", 240_000),
            row("uffd", 20_000, latency="none"),
            row("uffd-huge", 0, status="skipped", reason="no free 2 MiB huge pages")]
    document = {"runs": runs, "groups": results.summarize(runs)}
    lines = {line["strategy"]: line for line in
             published.beside_reference(document, published.CRAC_DEV_MAY_2023)}
    assert lines["mmap"]["per_page_ns"] == 110 and lines["mmap"]["times_mmap"] == 1
    assert lines["uffd"]["per_page_ns"] == 2200 and lines["uffd"]["times_mmap"] == 20
    assert lines["uffd"]["published_times_mmap"] == 20
    # What the application takes, from the runs with no clock in the loop: 4.5 ns and 200 ns a page.
    assert lines["mmap"]["app_per_page_ns"] == 4.5 and lines["uffd"]["app_per_page_ns"] == 200
    assert round(lines["uffd"]["app_times_mmap"], 1) == 44.4
    assert lines["uffd-huge"]["status"] == "skipped: no free 2 MiB huge pages"
    assert lines["uffd-huge"]["times_mmap"] is None and lines["uffd-huge"]["published_times_mmap"] == 3
