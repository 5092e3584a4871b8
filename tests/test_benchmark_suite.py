"""benchmark.py --suite: its cases are valid benchmark.py commands on existing configs, the
recorded figures are read from the benchmarks page, a figure more than 10% slower or larger is
flagged, and recording replaces only this machine's rows. Nothing here is timed."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dev"))
sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402
import benchmark_suite as suite  # noqa: E402

PAGE = """# Benchmarks

## The suite

Run it before a change that could cost speed or memory.

| case | machine | date | batch | canvas | mode | median s | peak RSS MB |
|---|---|---|---|---|---|---|---|
| R50-FPN Mask R-CNN train | AMD family 25 model 1, 2 cores | 2026-12-01 | 2 | 800x1344 | graph | 18.000 | 13000 |
| R50-FPN Mask R-CNN train | Intel family 6 model 207, 2 cores | 2026-12-02 | 2 | 800x1344 | graph | 20.000 | 13500 |

## Inference

| a | b |
|---|---|
"""
AMD = "AMD family 25 model 1, 2 cores"


def result(median_s, peak_rss_mb, batch=2, height=800, width=1344, mode="graph"):
    return {"median_s": median_s, "peak_rss_mb": peak_rss_mb, "batch": batch, "height": height,
            "width": width, "mode": mode}


def test_every_case_is_a_benchmark_command_on_a_config_that_exists():
    for case, args in suite.CASES.items():
        parsed = benchmark.parse_args(args)
        assert (ROOT / parsed.config).is_file(), case
    coco_train = benchmark.parse_args(suite.CASES["V-39 CenterMask train"])
    assert (coco_train.task, coco_train.batch, coco_train.height, coco_train.width) == ("train", 2, 800, 1344)


def test_suite_flags_go_together():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--record"])  # --record without --suite
    with pytest.raises(SystemExit):
        benchmark.parse_args([])  # neither --config nor --suite
    assert benchmark.parse_args(["--suite", "--case", "infer"]).case == ["infer"]


def test_machine_id_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n")
    assert suite.machine_id(str(info), cores=2) == AMD


def test_recorded_rows_are_read_from_the_suite_section_only():
    rows = suite.read_recorded(PAGE)
    assert [(r["machine"], r["median s"], r["peak RSS MB"]) for r in rows] == [
        (AMD, 18.0, 13000.0), ("Intel family 6 model 207, 2 cores", 20.0, 13500.0)]
    assert suite.read_recorded("# no suite here\n") == []


def test_more_than_ten_percent_slower_or_larger_is_flagged():
    recorded = {row["machine"]: row for row in suite.read_recorded(PAGE)}[AMD]
    verdict, flagged = suite.compare(result(19.7, 14200), recorded)  # 1.094x and 1.092x: within
    assert not flagged and "time 1.09x, peak RSS 1.09x" in verdict
    verdict, flagged = suite.compare(result(19.81, 13000), recorded)  # 1.1006x slower
    assert flagged and "time 1.10x" in verdict and "peak RSS" not in verdict
    verdict, flagged = suite.compare(result(10.0, 14400), recorded)  # faster, but 1.108x larger
    assert flagged and "peak RSS 1.11x" in verdict
    verdict, flagged = suite.compare(result(40.0, 30000, batch=1), recorded)  # other settings
    assert not flagged and "not compared" in verdict
    assert suite.compare(result(1.0, 1.0), None) == ("nothing recorded for this machine", False)


def test_recording_replaces_only_this_machines_rows_of_the_measured_cases():
    text = suite.record(PAGE, {"R50-FPN Mask R-CNN train": result(17.5, 12000),
                               "V-39 CenterMask train": result(30.25, 15000)}, AMD, "2026-12-07")
    rows = suite.read_recorded(text)
    assert [(r["case"], r["machine"], r["date"], r["median s"]) for r in rows] == [
        ("R50-FPN Mask R-CNN train", AMD, "2026-12-07", 17.5),
        ("V-39 CenterMask train", AMD, "2026-12-07", 30.25),
        ("R50-FPN Mask R-CNN train", "Intel family 6 model 207, 2 cores", "2026-12-02", 20.0)]
    assert "Run it before a change" in text and text.count("## Inference") == 1
    assert suite.read_recorded(suite.record(text, {}, AMD, "2026-12-08")) == rows  # stable


def test_the_benchmarks_page_has_a_suite_table_of_known_cases():
    rows = suite.read_recorded((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    assert rows, "docs/benchmarks.md: no recorded suite figures"
    for row in rows:
        assert row["case"] in suite.CASES, row["case"]
        assert row["median s"] > 0 and row["peak RSS MB"] > 0
        assert row["machine"].endswith(" cores"), row["machine"]


def test_a_failed_case_is_reported_and_the_others_still_recorded(tmp_path, monkeypatch, capsys):
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)

    def run_case(args):
        if "centermask" in " ".join(args):
            raise RuntimeError("killed (SIGKILL; out of memory is the usual cause)")
        return result(17.5, 12000)
    monkeypatch.setattr(suite, "run_case", run_case)
    monkeypatch.setattr(suite, "machine_id", lambda: AMD)
    assert suite.run_suite(["train"], write=True, page=str(page)) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("V-39 CenterMask train") and "FAILED: killed" in line
               for line in out.splitlines())
    rows = {(r["case"], r["machine"]): r for r in suite.read_recorded(page.read_text())}
    assert rows[("R50-FPN Mask R-CNN train", AMD)]["median s"] == 17.5
    assert ("V-39 CenterMask train", AMD) not in rows
