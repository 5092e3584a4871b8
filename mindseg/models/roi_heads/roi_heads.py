"""The RoI heads the meta-architectures are composed from: proposals in, sampled RoIs, pooled
features, head outputs, losses (training) or detections and masks (inference).

- :class:`StandardROIHeads`: Mask R-CNN's (detectron2's ``StandardROIHeads``): box head on the
  sampled RoIs, mask head on their fg slots; at test the box head's detections feed the mask head.
- :class:`CenterMaskROIHeads`: CenterMask's: the proposals are already detections (FCOS's), so
  there is no box head; SAG-Mask on the fg slots and, optionally, MaskIoU rescoring the masks.

Shape shorthand: B images, G padded gt, M gt crop size, P proposals, R sampled RoIs, F fg slots
(R * positive fraction), K classes, D detections, r = 28 the mask resolution. ``gt`` is the tuple
(gt_boxes (B, G, 4), gt_labels (B, G), gt_valid (B, G) without crowd boxes, gt_masks (B, G, M, M)).
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops

from mindseg.models.layers.gather import gather_rows
from mindseg.models.roi_heads.box_head import box_head_inference, box_head_losses
from mindseg.models.roi_heads.mask_head import fg_slots, mask_branch_inference, mask_branch_loss
from mindseg.models.roi_heads.maskiou_head import gt_mask_areas, mask_scores, maskiou_loss, maskiou_targets
from mindseg.models.roi_heads.sampling import label_and_sample_proposals

__all__ = ["StandardROIHeads", "CenterMaskROIHeads"]


class StandardROIHeads(nn.Cell):
    """box_pooler / mask_pooler ``poolers.RoIPooler``, box_head a ``BoxHead``, mask_head a
    ``MaskHead``, sampling a ``SamplingSettings``, box_settings a ``BoxHeadSettings``."""

    def __init__(self, *, box_pooler, box_head, mask_pooler, mask_head, sampling, box_settings):
        super().__init__()
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.sampling = sampling
        self.box_settings = box_settings
        self.num_fg_slots = sampling.num_fg_slots

    def losses(self, features, proposals, proposal_valid, gt, key):
        """features: the pooled levels; proposals (B, P, 4), proposal_valid (B, P); key: the step's
        ``StepRandom`` key. Returns loss_cls, loss_box_reg, loss_mask."""
        gt_boxes, gt_labels, gt_valid, gt_masks = gt
        rois, roi_valid, roi_is_fg, roi_gt_classes, roi_gt_idx = label_and_sample_proposals(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, self.sampling, key)
        cls_logits, box_deltas = self.box_head(self.box_pooler(features, rois))
        loss_cls, loss_box_reg = box_head_losses(cls_logits, box_deltas, rois, roi_valid, roi_gt_classes,
                                                 gather_rows(gt_boxes, roi_gt_idx), self.box_settings)

        fg_rois, fg_gt_idx, fg_classes, fg = fg_slots(self.num_fg_slots, rois, roi_gt_idx, roi_gt_classes,
                                                      roi_is_fg)
        mask_logits = self.mask_head(self.mask_pooler(features, fg_rois))
        loss_mask, _, _ = mask_branch_loss(mask_logits, fg_rois, fg_gt_idx, fg_classes, fg, gt_masks, gt_boxes)
        return loss_cls, loss_box_reg, loss_mask

    def inference(self, features, proposals, proposal_valid, image_size):
        """Returns boxes (B, D, 4), scores (B, D), classes (B, D) int32, valid (B, D) bool,
        mask_probs (B, D, r, r)."""
        cls_logits, box_deltas = self.box_head(self.box_pooler(features, proposals))
        boxes, scores, classes, valid = box_head_inference(cls_logits, box_deltas, proposals, proposal_valid,
                                                           image_size, self.box_settings)
        mask_logits = self.mask_head(self.mask_pooler(features, boxes))
        return boxes, scores, classes, valid, mask_branch_inference(mask_logits, classes)


class CenterMaskROIHeads(nn.Cell):
    """mask_pooler a ``poolers.RoIPooler`` (CenterMask's level assignment, which reads the image
    area), mask_head a SAG-Mask ``MaskHead``, maskiou_head a ``MaskIoUHead`` or None (no
    rescoring, a zero loss), sampling a ``SamplingSettings``."""

    def __init__(self, *, mask_pooler, mask_head, maskiou_head, sampling, maskiou_loss_weight=1.0):
        super().__init__()
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.maskiou_head = maskiou_head
        self.sampling = sampling
        self.maskiou_loss_weight = maskiou_loss_weight
        self.num_fg_slots = sampling.num_fg_slots

    def losses(self, features, proposals, proposal_valid, gt, key, image_area):
        """features: the pooled levels; proposals (B, P, 4), proposal_valid (B, P) (detections
        as at test, without gradient); image_area (B,). Returns loss_mask, loss_maskiou."""
        gt_boxes, gt_labels, gt_valid, gt_masks = gt
        rois, _, roi_is_fg, roi_gt_classes, roi_gt_idx = label_and_sample_proposals(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, self.sampling, key)
        fg_rois, fg_gt_idx, fg_classes, fg = fg_slots(self.num_fg_slots, rois, roi_gt_idx, roi_gt_classes,
                                                      roi_is_fg)
        roi_features = self.mask_pooler(features, fg_rois, image_area)
        loss_mask, class_logits, mask_targets = mask_branch_loss(self.mask_head(roi_features), fg_rois, fg_gt_idx,
                                                                 fg_classes, fg, gt_masks, gt_boxes)
        if self.maskiou_head is None:
            return loss_mask, ops.zeros((), ms.float32)
        gt_areas = gather_rows(gt_mask_areas(gt_masks, gt_boxes), fg_gt_idx).reshape(-1)
        iou_targets = maskiou_targets(class_logits, mask_targets, fg_rois.reshape(-1, 4), gt_areas)
        pred_maskiou = self.maskiou_head(roi_features, ops.sigmoid(class_logits))
        return loss_mask, maskiou_loss(pred_maskiou, fg_classes, iou_targets, fg, self.maskiou_loss_weight)

    def inference(self, features, boxes, scores, classes, image_area):
        """The masks of detections boxes (B, D, 4), scores (B, D), classes (B, D) int32 ->
        mask_probs (B, D, r, r) and the segm scores (B, D): box score x predicted mask IoU, or the
        box score without MaskIoU."""
        roi_features = self.mask_pooler(features, boxes, image_area)
        mask_probs = mask_branch_inference(self.mask_head(roi_features), classes)
        if self.maskiou_head is None:
            return mask_probs, scores
        pred_maskiou = self.maskiou_head(roi_features, mask_probs.reshape((-1,) + mask_probs.shape[2:]))
        segm_scores = mask_scores(pred_maskiou, classes.reshape(-1), scores.reshape(-1)).reshape(scores.shape)
        return mask_probs, segm_scores
