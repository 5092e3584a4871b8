"""IoU matching of predictions (anchors, proposals) to padded ground truth, and balanced sampling.

Shape shorthand: B images, G padded gt, N predictions, S sampled predictions per image.
Labels: 1 foreground, 0 background, -1 ignored. Both functions have static output shapes and
work in GRAPH and PYNATIVE mode.
"""
from dataclasses import dataclass

import mindspore as ms
import mindspore.numpy as mnp
import mindspore.ops as ops

FOREGROUND = 1
BACKGROUND = 0
IGNORE = -1


def match(iou, gt_valid, thresholds=(0.3, 0.7), allow_low_quality_matches=True):
    """Match each prediction to its best gt (detectron2 Matcher).

    iou (B, G, N), gt_valid (B, G) bool -> matched_idx (B, N) int32 (the argmax gt, first on
    ties), match_labels (B, N) int32: IoU < low -> 0, low <= IoU < high -> -1, >= high -> 1.
    With allow_low_quality_matches, for each valid gt the predictions with its highest IoU
    (ties included, only if that IoU > 0) become 1, keeping their argmax gt. Padded gts never
    match; an image without valid gt is all background.
    """
    low, high = thresholds
    if low > high:
        raise ValueError(f"mindseg/models/matcher.py: thresholds must be (low, high) with "
                         f"low <= high, got {tuple(thresholds)}")
    # padded gts get IoU -2 (iou - 3 * padded), below any real IoU
    padded = 1.0 - gt_valid.astype(ms.float32).expand_dims(-1)
    iou = iou.astype(ms.float32) - 3.0 * padded
    matched_iou, matched_idx = ops.max(iou, axis=1)
    matched_idx = matched_idx.astype(ms.int32)
    labels = ops.where(matched_iou >= high, ops.full_like(matched_idx, FOREGROUND),
                       ops.where(matched_iou >= low, ops.full_like(matched_idx, IGNORE),
                                 ops.full_like(matched_idx, BACKGROUND)))
    if allow_low_quality_matches:
        best_for_gt = iou.max(axis=2, keepdims=True)
        # gts whose best IoU is 0 (or padded) get a bar no IoU reaches
        bar = ops.where(best_for_gt > 0, best_for_gt, ops.full_like(best_for_gt, 2.0))
        is_best = (iou >= bar).any(axis=1)
        labels = ops.where(is_best, ops.full_like(labels, FOREGROUND), labels)
    return matched_idx, labels


@ms.jit_class
@dataclass(frozen=True)
class Matcher:
    """:func:`match` with its settings bound: ``Matcher(thresholds, allow_low_quality_matches)(iou,
    gt_valid)``; usable inside GRAPH-mode cells."""
    thresholds: tuple = (0.3, 0.7)
    allow_low_quality_matches: bool = True

    def __call__(self, iou, gt_valid):
        return match(iou, gt_valid, self.thresholds, self.allow_low_quality_matches)


def sample_balanced(match_labels, num_samples, positive_fraction, noise=None):
    """Draw S = num_samples predictions per image: up to round(S * positive_fraction) random
    foreground, the rest random background (detectron2's subsample_labels, fixed size).

    match_labels (B, N) int -> sampled_idx (B, S) int32, sampled_valid (B, S) bool (False for
    slots left empty when an image has too few candidates), sampled_is_fg (B, S) bool.
    Foreground slots come first. Ignored (-1) entries are never drawn.

    Randomness: ``noise`` (B, N) float in [0, 1) ranks the candidates (the highest are drawn);
    by default it is ``ops.rand_like``, which follows the global seed (``ms.set_seed``) and
    draws anew at every call, in both modes. The models pass counter-based noise
    (``layers.step_random``) so that a resumed run draws what the uninterrupted one drew.
    """
    batch, length = match_labels.shape
    num_fg_max = int(round(num_samples * positive_fraction))
    if num_samples > length:
        raise ValueError(f"mindseg/models/matcher.py: num_samples {num_samples} exceeds the "
                         f"{length} predictions per image")
    if noise is None:
        noise = ops.rand_like(match_labels.astype(ms.float32))
    noise = noise.astype(ms.float32)
    below = ops.full_like(noise, -1.0)
    fg_key = ops.where(match_labels == FOREGROUND, noise, below)
    bg_key = ops.where(match_labels == BACKGROUND, noise, below)
    slots = mnp.arange(num_samples, dtype=ms.int32).reshape(1, num_samples)
    if num_fg_max > 0:
        fg_val, fg_idx = ops.topk(fg_key, num_fg_max)
        fg_found = (fg_val >= 0).astype(ms.int32).sum(axis=1, keepdims=True)
        fg_idx = fg_idx.astype(ms.int32)
    else:
        fg_found = ops.zeros((batch, 1), ms.int32)
        fg_idx = ops.zeros((batch, 1), ms.int32)
    bg_val, bg_idx = ops.topk(bg_key, num_samples)
    bg_slot = ops.maximum(slots - fg_found, 0)
    bg_pick = ops.gather_elements(bg_idx.astype(ms.int32), 1, bg_slot)
    bg_ok = ops.gather_elements(bg_val, 1, bg_slot) >= 0
    fg_slot = ops.minimum(slots, fg_idx.shape[1] - 1)
    fg_pick = ops.gather_elements(fg_idx, 1, ops.broadcast_to(fg_slot, (batch, num_samples)))
    sampled_is_fg = ops.broadcast_to(slots < fg_found, (batch, num_samples))
    sampled_idx = ops.where(sampled_is_fg, fg_pick, bg_pick)
    sampled_valid = ops.logical_or(sampled_is_fg, bg_ok)
    return sampled_idx, sampled_valid, sampled_is_fg
