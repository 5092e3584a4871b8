"""Elementwise and per-RoI losses shared by the heads: smooth L1 (RPN, box head) and the mask BCE
(Mask R-CNN's mask head and CenterMask's SAG-Mask)."""
import mindspore as ms
import mindspore.ops as ops


def smooth_l1(diff, beta):
    """Elementwise smooth L1; beta < 1e-5 is plain L1 (detectron2's convention)."""
    abs_diff = ops.abs(diff)
    if beta < 1e-5:
        return abs_diff
    return ops.where(abs_diff < beta, 0.5 * abs_diff * abs_diff / beta, abs_diff - 0.5 * beta)


def mask_bce_loss(class_logits, is_fg, mask_targets):
    """Mean per-pixel BCE over fg RoIs; exactly 0 without fg RoIs.

    class_logits (N, r, r): each RoI's gt-class channel, is_fg (N,) bool, mask_targets (N, r, r)
    float in {0, 1}.
    """
    per_pixel = ops.binary_cross_entropy_with_logits(class_logits, ops.stop_gradient(mask_targets),
                                                     reduction="none")
    per_roi = per_pixel.mean((1, 2))
    fg = is_fg.astype(ms.float32)
    return ops.where(is_fg, per_roi, 0.0).sum() / ops.maximum(fg.sum(), 1.0)
