"""The benchmark suite behind ``python scripts/benchmark.py --suite [--record] [--case NAME ...]``.

It runs the measurements that guard mindseg's speed and memory (CASES), each in a process of its
own so that the peak RSS is that measurement's alone, prints each with its settings, and compares
it with the figure recorded for this machine in docs/benchmarks.md (section "The suite"). A time
or a peak RSS more than 10% above the recorded one is flagged, and the suite then exits 1. A
figure recorded with other settings (batch, canvas, mode) is not compared: the row says so.
``--record`` writes this run's figures into that table instead, for this machine, with the date.

Machines are told apart by their CPU (vendor, family, model) and core count: figures of one
machine never judge another's.
"""
import datetime
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
SECTION = "## The suite"
TOLERANCE = 0.10
HEADER = ("case", "machine", "date", "batch", "canvas", "mode", "median s", "peak RSS MB")

_COCO = ["--height", "800", "--width", "1344", "--batch", "2", "--iters", "3", "--warmup", "1"]
# case name -> benchmark.py arguments
CASES = {
    "shapes Mask R-CNN train": ["--config", "config/shapes/mask_rcnn_shapes.yml", "--task", "train",
                                "--iters", "10", "--warmup", "3"],
    "R50-FPN Mask R-CNN train": ["--config", "config/maskrcnn/mask_rcnn_resnet50_fpn_1x.yml",
                                 "--task", "train"] + _COCO,
    "V-39 CenterMask train": ["--config", "config/centermask/centermask_V_39_eSE_FPN_ms_3x.yml",
                              "--task", "train"] + _COCO,
    "R50-FPN Mask R-CNN infer": ["--config", "config/maskrcnn/mask_rcnn_resnet50_fpn_1x.yml",
                                 "--task", "infer", "--height", "800", "--width", "1216"],
    "V-39 CenterMask infer": ["--config", "config/centermask/centermask_V_39_eSE_FPN_ms_3x.yml",
                              "--task", "infer", "--height", "800", "--width", "1344"],
}


def machine_id(cpuinfo="/proc/cpuinfo", cores=None):
    """'AMD family 25 model 1, 2 cores': the CPU the figures belong to."""
    fields = {}
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(fields.get("vendor_id"),
                                                                   fields.get("vendor_id", "unknown CPU"))
    return (f"{vendor} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, "
            f"{cores or os.cpu_count()} cores")


def settings(result):
    """The settings a figure is only comparable under: batch, canvas, mode."""
    return str(result["batch"]), f"{result['height']}x{result['width']}", result["mode"]


def read_recorded(text):
    """The rows of the suite table in the benchmarks page's text: a list of dicts keyed by HEADER
    (numbers as floats)."""
    lines = text.splitlines()
    if SECTION not in lines:
        return []
    rows = []
    for line in lines[lines.index(SECTION) + 1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            continue
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) != len(HEADER) or cells[0] == HEADER[0] or set(cells[0]) <= set("-: "):
            continue
        row = dict(zip(HEADER, cells))
        row["median s"], row["peak RSS MB"] = float(row["median s"]), float(row["peak RSS MB"])
        rows.append(row)
    return rows


def compare(result, recorded, tolerance=TOLERANCE):
    """(verdict, flagged) of a measurement against its recorded row (None: nothing recorded).
    flagged is True when the time or the peak RSS exceeds the recorded figure by more than
    ``tolerance`` (a fraction)."""
    if recorded is None:
        return "nothing recorded for this machine", False
    if (recorded["batch"], recorded["canvas"], recorded["mode"]) != settings(result):
        return (f"recorded with batch {recorded['batch']}, {recorded['canvas']}, {recorded['mode']}:"
                " not compared"), False
    time_ratio = result["median_s"] / recorded["median s"]
    rss_ratio = result["peak_rss_mb"] / recorded["peak RSS MB"]
    worse = [f"{what} {ratio:.2f}x the recorded" for what, ratio in (("time", time_ratio),
                                                                     ("peak RSS", rss_ratio))
             if ratio > 1.0 + tolerance]
    if worse:
        return "SLOWER OR LARGER: " + ", ".join(worse) + f" ({recorded['date']})", True
    return f"time {time_ratio:.2f}x, peak RSS {rss_ratio:.2f}x the recorded ({recorded['date']})", False


def table_lines(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = [row[key] for key in HEADER]
        cells[HEADER.index("median s")] = f"{row['median s']:.3f}"
        cells[HEADER.index("peak RSS MB")] = f"{row['peak RSS MB']:.0f}"
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def record(text, results, machine, date):
    """The page's text with this machine's rows of the measured cases replaced by ``results``
    ({case: benchmark.py's JSON}); other machines' rows and other cases stay. The table goes at
    the end of the suite section (which must exist)."""
    lines = text.splitlines()
    if SECTION not in lines:
        raise ValueError(f"{PAGE}: no '{SECTION}' section to record into")
    start = lines.index(SECTION) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = [row for row in read_recorded(text) if not (row["machine"] == machine and row["case"] in results)]
    for case, result in results.items():
        batch, canvas, mode = settings(result)
        kept.append({"case": case, "machine": machine, "date": date, "batch": batch, "canvas": canvas,
                     "mode": mode, "median s": result["median_s"], "peak RSS MB": result["peak_rss_mb"]})
    order = list(CASES)
    kept.sort(key=lambda row: (row["machine"], order.index(row["case"]) if row["case"] in order else len(order)))
    section = [line for line in lines[start:end] if not line.startswith("|")]
    while section and not section[-1].strip():
        section.pop()
    new = lines[:start] + section + [""] + table_lines(kept) + [""] + lines[end:]
    return "\n".join(new).rstrip("\n") + "\n"


def run_case(args):
    """benchmark.py's JSON for one case, measured in a process of its own; RuntimeError with the
    reason when it fails."""
    command = [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py")] + args
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3")))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    if done.returncode in (-9, 137):
        raise RuntimeError("killed (SIGKILL; out of memory is the usual cause)")
    errors = [line for line in done.stderr.splitlines()
              if line.strip() and not line.startswith(("[WARNING]", "[INFO]"))]
    raise RuntimeError(f"exit status {done.returncode}: {(errors or ['no output'])[-1]}")


def run_suite(names=(), write=False, page=PAGE):
    """Run the cases whose names contain one of ``names`` (all when empty); compare with, or with
    ``write`` record into, the page. A case that fails is reported and the others still run.
    Returns the exit status: 1 when a case failed or, comparing, a figure is flagged."""
    chosen = [case for case in CASES if not names or any(n.lower() in case.lower() for n in names)]
    if not chosen:
        sys.exit(f"benchmark.py: --case matches none of: {', '.join(CASES)}")
    machine = machine_id()
    with open(page, encoding="utf-8") as f:
        text = f.read()
    recorded = {row["case"]: row for row in read_recorded(text) if row["machine"] == machine}
    print(f"benchmark suite on {machine}: {len(chosen)} case(s)", flush=True)
    results, failed = {}, False
    for case in chosen:
        try:
            result = run_case(CASES[case])
        except RuntimeError as error:
            failed = True
            print(f"{case:26s} FAILED: {error}", flush=True)
            continue
        results[case] = result
        batch, canvas, mode = settings(result)
        verdict, bad = compare(result, recorded.get(case))
        failed |= bad and not write
        print(f"{case:26s} batch {batch} {canvas:>9s} {mode:6s} {result['median_s']:8.3f} s "
              f"{result['peak_rss_mb']:7.0f} MB   {'recorded now' if write else verdict}", flush=True)
    if write and results:
        with open(page, "w", encoding="utf-8") as f:
            f.write(record(text, results, machine, datetime.date.today().isoformat()))
        print(f"recorded in {os.path.relpath(page, ROOT)}: {', '.join(results)}")
    return 1 if failed else 0
