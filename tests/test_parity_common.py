"""The parity scripts' matching and verdict (dev/parity_common.py) on hand-made detections: a
converted model is judged against the source run in float64, and the float32 source must still be
matched within the tolerance plus its own rounding error."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dev"))
import parity_common as pc  # noqa: E402

HEIGHT, WIDTH = 64, 96


def detections(boxes, scores=(0.9, 0.8), classes=(3, 5)):
    masks = np.zeros((len(boxes), 28, 28), np.float32)
    masks[:, 4:24, 4:24] = 0.9  # a centred square in every box
    return {"boxes": np.asarray(boxes, np.float32), "scores": np.asarray(scores, np.float32),
            "classes": np.asarray(classes, np.int32), "masks": masks}


EXACT = detections([[10.0, 10.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0]])


def shifted(dx):
    """EXACT with the second box's x1 moved by dx px."""
    moved = {name: value.copy() for name, value in EXACT.items()}
    moved["boxes"][1, 2] += dx
    return moved


def test_compare_matches_by_class_and_reports_the_largest_box_difference():
    ours = shifted(0.004)
    ours["classes"] = ours["classes"][::-1].copy()  # same boxes, classes swapped: nothing matches
    assert pc.compare(EXACT, ours, HEIGHT, WIDTH, "src")["matched"] == 0
    result = pc.compare(EXACT, shifted(0.004), HEIGHT, WIDTH, "src")
    assert result["matched"] == 2
    assert abs(result["max_box_diff_px"] - 0.004) < 1e-5  # float32 box at 90 px: ulp 8e-6
    assert result["mean_mask_iou"] == 1.0


def test_verdict_against_the_float64_source():
    # source float32 run 0.009 px off the float64 one; mindseg 0.005 px off it: the two float32
    # runs differ by 0.014 px, more than 0.01, and that is both frameworks' rounding
    result = pc.compare_with_exact(shifted(0.009), EXACT, shifted(-0.005), HEIGHT, WIDTH, "src")
    assert abs(result["max_box_diff_px_src_float32"] - 0.014) < 1e-5
    assert abs(result["src_float32_max_box_diff_px"] - 0.009) < 1e-5
    assert pc.verdict(result, "src") == 0
    # without the float64 run the same 0.014 px fails the plain 0.01 px tolerance
    plain = pc.compare(shifted(0.009), shifted(-0.005), HEIGHT, WIDTH, "src")
    assert pc.verdict(plain, "src") == 2

    # the tolerance is 0.01 px plus the source's own error (0.001 here): 0.012 px from the float64
    # run fails, although it is within 0.011 px of the float32 source
    result = pc.compare_with_exact(shifted(0.001), EXACT, shifted(0.012), HEIGHT, WIDTH, "src")
    assert result["max_box_diff_px_src_float32"] < 0.0111  # float32 boxes at 90 px: ulp 8e-6
    assert pc.verdict(result, "src") == 2
    result = pc.compare_with_exact(shifted(0.001), EXACT, shifted(0.0105), HEIGHT, WIDTH, "src")
    assert pc.verdict(result, "src") == 0


def test_verdict_needs_every_float32_source_detection_matched():
    # float32 source lost a detection the float64 run has: mindseg's float64 match alone is not enough
    reference = {name: value[:1] for name, value in EXACT.items()}
    result = pc.compare_with_exact(reference, EXACT, shifted(0.001), HEIGHT, WIDTH, "src")
    assert result["matched"] == 2 and result["matched_src_float32"] == 1
    assert pc.verdict(result, "src") == 2

    # and one it has beyond them
    reference = {name: np.concatenate([value, value[:1]]) for name, value in EXACT.items()}
    reference["boxes"][2] = [0.0, 40.0, 8.0, 60.0]
    result = pc.compare_with_exact(reference, EXACT, shifted(0.001), HEIGHT, WIDTH, "src")
    assert result["matched_src_float32"] == 2 and result["src_float32_detections"] == 3
    assert pc.verdict(result, "src") == 2


def test_a_detection_cut_at_the_limit_is_not_a_miss():
    # both sides hold the cap of 2; their second detections differ, scored 5e-5 apart: each
    # framework cut the other's at 2
    ours = {name: value.copy() for name, value in EXACT.items()}
    ours["boxes"][1] = [0.0, 40.0, 8.0, 60.0]
    ours["scores"][1] = EXACT["scores"][1] + 5e-5
    result = pc.compare(EXACT, ours, HEIGHT, WIDTH, "src", limit=2)
    assert result["matched"] == 1 and result["src_at_limit"] == 1 and result["mindseg_at_limit"] == 1
    assert pc.verdict(result, "src") == 0
    # not at the cap, or scored apart: a miss
    assert pc.verdict(pc.compare(EXACT, ours, HEIGHT, WIDTH, "src", limit=3), "src") == 2
    assert pc.verdict(pc.compare(EXACT, ours, HEIGHT, WIDTH, "src"), "src") == 2
    # mindseg's second scored 1e-3 above the source's: the source would have kept it over its own
    ours["scores"][1] = EXACT["scores"][1] + 1e-3
    result = pc.compare(EXACT, ours, HEIGHT, WIDTH, "src", limit=2)
    assert result["src_at_limit"] == 1 and result["mindseg_at_limit"] == 0
    assert pc.verdict(result, "src") == 2
