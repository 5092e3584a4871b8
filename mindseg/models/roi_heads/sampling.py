"""Match proposals to gt and sample a fixed number of RoIs per image (detectron2's
``label_and_sample_proposals``). Shared by Mask R-CNN's RoI heads and CenterMask's mask branch.

Shape shorthand: B images, P proposals, G padded gt, S sampled RoIs per image, K classes.
"""
from dataclasses import dataclass

import mindspore as ms
import mindspore.ops as ops

from mindseg.models import box_ops, matcher
from mindseg.models.layers import step_random
from mindseg.models.layers.gather import gather_rows


@dataclass(frozen=True)
class SamplingSettings:
    """How proposals become RoIs: a proposal matched to a gt at IoU >= ``iou_threshold`` is fg
    (the gt's class), else background (class ``num_classes``); ``batch_size_per_image`` RoIs are
    drawn per image, up to ``positive_fraction`` of them fg; ``append_gt`` adds the gt boxes to the
    proposals first."""
    num_classes: int
    iou_threshold: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    append_gt: bool = True

    @property
    def num_fg_slots(self):
        """F: the sampled slots that can hold fg RoIs (they come first), the mask branch's RoIs."""
        return max(1, int(round(self.batch_size_per_image * self.positive_fraction)))


def label_and_sample_proposals(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, settings, key=None):
    """proposals (B, P, 4), proposal_valid (B, P); gt as in the batch contract (gt_valid should
    exclude crowd boxes); settings a :class:`SamplingSettings`; key: the step's ``StepRandom`` key
    (None: ``ops.rand_like``).

    Returns rois (B, S, 4), roi_valid (B, S) bool, roi_is_fg (B, S) bool, roi_gt_classes (B, S)
    int32 (K for background), roi_gt_idx (B, S) int32 (the matched gt, meaningful for fg only).
    Gradients do not flow into the rois.
    """
    proposals = ops.stop_gradient(proposals)
    if settings.append_gt:
        proposals = ops.concat((proposals, gt_boxes), 1)
        proposal_valid = ops.concat((proposal_valid, gt_valid), 1)
    iou = box_ops.pairwise_iou(gt_boxes, proposals)
    matched_idx, match_labels = matcher.match(iou, gt_valid, thresholds=(settings.iou_threshold, settings.iou_threshold),
                                              allow_low_quality_matches=False)
    match_labels = ops.where(proposal_valid, match_labels, ops.full_like(match_labels, -1))
    noise = None if key is None else step_random.uniform(match_labels.shape, key, stream=1)
    sampled_idx, roi_valid, roi_is_fg = matcher.sample_balanced(match_labels, settings.batch_size_per_image,
                                                                settings.positive_fraction, noise=noise)
    roi_is_fg = roi_is_fg & roi_valid
    rois = gather_rows(proposals, sampled_idx)
    roi_gt_idx = gather_rows(matched_idx.astype(ms.int32), sampled_idx)
    matched_classes = gather_rows(gt_labels.astype(ms.int32), roi_gt_idx)
    roi_gt_classes = ops.where(roi_is_fg, matched_classes, ops.full_like(matched_classes, settings.num_classes))
    return (ops.stop_gradient(rois), roi_valid, roi_is_fg, ops.stop_gradient(roi_gt_classes),
            ops.stop_gradient(roi_gt_idx))
