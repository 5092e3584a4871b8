"""CenterMask and CenterMask-Lite (centermask2 conventions) as one Cell whose construct reads top
to bottom: backbone (C3-C5), FPN (P3-P7), FCOS head, FCOS losses (or detections at inference),
then the RoI heads on the mask proposals: SAG-Mask and MaskIoU.

Shape shorthand: B images, G padded gt, M mask crop, L FCOS locations over P3-P7, P mask
proposals per image in training (FCOS detections + gt slots), F mask RoIs per image in training
(the fg slots of the sampler), K classes, D detections, r = 28 the mask resolution.

Inference returns the outputs of ``output_names`` (docs/contracts.md), ``mask_scores`` (B, D)
among them: the segm score (box score x predicted mask IoU of the predicted class, or the box
score without MaskIoU), which segm results take; box results keep the FCOS score.
"""
import mindspore.nn as nn
import mindspore.ops as ops

from mindseg.models import box_ops
from mindseg.models.backbones import build_backbone
from mindseg.models.dense_heads.fcos import FCOS, FCOSHead, FCOSSettings, FCOSTrainSettings
from mindseg.models.dense_heads.fcos_targets import LocationMatcher
from mindseg.models.layers import poolers
from mindseg.models.layers.step_random import StepRandom
from mindseg.models.necks.fpn import FPN
from mindseg.models.roi_heads.maskiou_head import MaskIoUHead
from mindseg.models.roi_heads.mask_head import MaskHead
from mindseg.models.roi_heads.roi_heads import CenterMaskROIHeads
from mindseg.models.roi_heads.sampling import SamplingSettings

MASK_LEVELS = 3  # mask RoIs are pooled from P3..P5


class CenterMask(nn.Cell):
    """Training: ``net(image, image_size, gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks)`` returns
    the losses named by ``loss_names``. Inference: ``net(image, image_size)`` returns the outputs
    named by ``output_names``: boxes (B, D, 4), scores (B, D) (FCOS), classes (B, D) int32, valid
    (B, D) bool, mask_probs (B, D, r, r), mask_scores (B, D) (segm)."""

    loss_names = ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_maskiou")
    output_names = ("boxes", "scores", "classes", "valid", "mask_probs", "mask_scores")  # docs/contracts.md
    mask_threshold = 0.5

    def __init__(self, *, backbone, fpn, fcos_head, fcos, roi_heads, seed=0):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.fcos_head = fcos_head
        self.fcos = fcos
        self.roi_heads = roi_heads
        self.step_random = StepRandom(seed)  # the sampler's random state, saved in checkpoints

    def construct(self, image, image_size, gt_boxes=None, gt_labels=None, gt_valid=None, gt_crowd=None,
                  gt_masks=None):
        features = self.fpn(self.backbone(image))
        cls_logits, pred_ltrb, ctr_logits = self.fcos_head(features)
        image_area = image_size[:, 0] * image_size[:, 1]
        if not self.training:
            return self.inference(features[:MASK_LEVELS], cls_logits, pred_ltrb, ctr_logits, image_size, image_area)
        gt_valid = ops.logical_and(gt_valid, ops.logical_not(gt_crowd))
        loss_cls, loss_loc, loss_ctr = self.fcos.losses(cls_logits, pred_ltrb, ctr_logits, gt_boxes, gt_labels,
                                                        gt_valid)
        # mask proposals: FCOS detections as at test (top post_nms_topk_train) plus the gt boxes
        proposals, _, _, proposal_valid = self.fcos.detections(
            ops.stop_gradient(cls_logits), ops.stop_gradient(pred_ltrb), ops.stop_gradient(ctr_logits), image_size)
        loss_mask, loss_maskiou = self.roi_heads.losses(features[:MASK_LEVELS], proposals, proposal_valid,
                                                        (gt_boxes, gt_labels, gt_valid, gt_masks), self.step_random(),
                                                        image_area)
        return loss_cls, loss_loc, loss_ctr, loss_mask, loss_maskiou

    def inference(self, mask_features, cls_logits, pred_ltrb, ctr_logits, image_size, image_area):
        boxes, scores, classes, valid = self.fcos.detections(cls_logits, pred_ltrb, ctr_logits, image_size)
        mask_probs, segm_scores = self.roi_heads.inference(mask_features, boxes, scores, classes, image_area)
        if not self.fcos.test_settings.clip:
            # centermask2: the heads saw the unclipped boxes; clip now and drop the empty ones
            boxes = box_ops.clip_boxes(boxes, image_size)
            valid = ops.logical_and(valid, box_ops.nonempty(boxes))
        return boxes, scores, classes, valid, mask_probs, segm_scores


def build_centermask(cfg, num_classes):
    """The one place that reads the config for CenterMask / CenterMask-Lite."""
    model, data = cfg.model, cfg.data
    fcos, center, roi = model.fcos, model.centermask, model.roi_heads
    if model.fpn.top_block != "p6p7":
        raise ValueError(f"model.fpn.top_block: CenterMask needs 'p6p7' (P6, P7 by 3x3 s2 convs), "
                         f"got '{model.fpn.top_block}'")
    if list(center.pooler_levels) != [3, 5]:
        raise ValueError(f"model.centermask.pooler_levels: masks are pooled from P3..P5, got "
                         f"{center.pooler_levels}")
    backbone = build_backbone(model.backbone, out_levels=(3, 4, 5))
    channels = model.fpn.out_channels
    fpn = FPN(in_channels=backbone.out_channels, in_strides=backbone.strides, out_channels=channels,
              top_block="p6p7")
    if list(fcos.strides) != fpn.strides:
        raise ValueError(f"model.fcos.strides: CenterMask's FCOS runs on P3..P7 at strides {fpn.strides} "
                         f"(the backbone's C3..C5 and P6, P7), got {list(fcos.strides)}")
    fcos_head = FCOSHead(in_channels=channels, num_classes=num_classes, strides=fpn.strides,
                         num_convs=fcos.num_convs, prior_prob=fcos.prior_prob)
    scales = [1.0 / s for s in fpn.strides[:MASK_LEVELS]]
    mask_head = MaskHead(in_channels=channels, num_classes=num_classes, conv_dims=center.mask_head_conv_dim,
                         num_convs=center.mask_head_num_conv, spatial_attention=True)
    maskiou_head = None
    if center.maskiou_on:
        maskiou_head = MaskIoUHead(in_channels=channels, num_classes=num_classes, conv_dims=center.maskiou_conv_dim,
                                   num_convs=center.maskiou_num_conv, resolution=center.mask_pooler_resolution,
                                   fc_dim=center.maskiou_fc_dim)
    # centermask2 samples up to 512 RoIs from the 100 + G proposals; with static shapes the sample
    # is cut to the proposal count and the fg cap kept at round(512 * 0.25)
    num_proposals = fcos.post_nms_topk_train + (data.max_instances if roi.proposal_append_gt else 0)
    num_samples = min(roi.batch_size_per_image, num_proposals)
    num_fg = max(1, min(int(round(roi.batch_size_per_image * roi.positive_fraction)), num_samples))
    roi_heads = CenterMaskROIHeads(
        mask_pooler=poolers.RoIPooler(center.mask_pooler_resolution, scales, roi.pooler_sampling_ratio,
                                      roi.pooler_aligned, poolers.centermask_level,
                                      adaptive_max_samples=roi.pooler_max_samples),
        mask_head=mask_head, maskiou_head=maskiou_head,
        sampling=SamplingSettings(num_classes, roi.iou_threshold, num_samples, num_fg / num_samples,
                                  roi.proposal_append_gt),
        maskiou_loss_weight=center.maskiou_loss_weight)
    # the mask proposals in training are the detections as at test, more of them
    detect = dict(score_thresh=fcos.score_thresh, pre_nms_topk=fcos.pre_nms_topk, nms_thresh=fcos.nms_thresh,
                  clip=fcos.clip_before_nms)
    matcher = LocationMatcher(tuple(fcos.strides), num_classes, tuple(tuple(r) for r in fcos.size_ranges),
                              fcos.center_radius)
    detector = FCOS(canvas=tuple(data.canvas), location_matcher=matcher,
                    train=FCOSTrainSettings(post_nms_topk=fcos.post_nms_topk_train, **detect,
                                            focal_alpha=fcos.focal_alpha, focal_gamma=fcos.focal_gamma),
                    test=FCOSSettings(post_nms_topk=fcos.post_nms_topk_test, **detect))
    return CenterMask(backbone=backbone, fpn=fpn, fcos_head=fcos_head, fcos=detector, roi_heads=roi_heads,
                      seed=cfg.seed)
