"""Mask R-CNN (R-FPN, detectron2 conventions) as one Cell whose construct reads top to bottom:
backbone, FPN, RPN, RoI heads (sampling, box head, mask head), losses (or detections at inference).

Shape shorthand: B images, G padded gt, M mask crop, D detections.
"""
import mindspore.nn as nn
import mindspore.ops as ops

from mindseg.models.anchors import AnchorGenerator
from mindseg.models.backbones import build_backbone
from mindseg.models.box_ops import BoxCoder
from mindseg.models.layers import poolers
from mindseg.models.layers.step_random import StepRandom
from mindseg.models.necks.fpn import FPN
from mindseg.models.roi_heads.box_head import BoxHead, BoxHeadSettings
from mindseg.models.roi_heads.mask_head import MaskHead
from mindseg.models.roi_heads.roi_heads import StandardROIHeads
from mindseg.models.roi_heads.sampling import SamplingSettings
from mindseg.models.matcher import Matcher
from mindseg.models.dense_heads.rpn import RPN, RPNSettings, RPNTrainSettings


class MaskRCNN(nn.Cell):
    """Training: ``net(image, image_size, gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks)`` returns
    the losses named by ``loss_names``. Inference: ``net(image, image_size)`` returns the outputs
    named by ``output_names``: boxes (B, D, 4), scores (B, D), classes (B, D) int32, valid (B, D)
    bool, mask_probs (B, D, 28, 28)."""

    loss_names = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask")
    output_names = ("boxes", "scores", "classes", "valid", "mask_probs")  # docs/contracts.md
    mask_threshold = 0.5

    def __init__(self, *, backbone, fpn, rpn, roi_heads, seed=0):
        super().__init__()
        # RoIs are pooled from the levels of the backbone's maps (P2..P5); the FPN's extra levels
        # (P6) only feed the RPN
        self.pooler_levels = len(backbone.strides)
        self.backbone = backbone
        self.fpn = fpn
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.step_random = StepRandom(seed)  # the samplers' random state, saved in checkpoints

    def construct(self, image, image_size, gt_boxes=None, gt_labels=None, gt_valid=None, gt_crowd=None,
                  gt_masks=None):
        features = self.fpn(self.backbone(image))
        roi_features = features[:self.pooler_levels]
        if not self.training:
            proposals, proposal_valid = self.rpn(features, image_size)
            return self.roi_heads.inference(roi_features, proposals, proposal_valid, image_size)
        gt_valid = ops.logical_and(gt_valid, ops.logical_not(gt_crowd))
        key = self.step_random()
        proposals, proposal_valid, loss_rpn_cls, loss_rpn_loc = self.rpn(features, image_size, gt_boxes, gt_valid,
                                                                         key)
        loss_cls, loss_box_reg, loss_mask = self.roi_heads.losses(
            roi_features, proposals, proposal_valid, (gt_boxes, gt_labels, gt_valid, gt_masks), key)
        return loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg, loss_mask


def build_mask_rcnn(cfg, num_classes):
    """The one place that reads the config for Mask R-CNN."""
    model, data = cfg.model, cfg.data
    backbone = build_backbone(model.backbone, out_levels=(2, 3, 4, 5))
    channels = model.fpn.out_channels
    fpn = FPN(in_channels=backbone.out_channels, in_strides=backbone.strides, out_channels=channels,
              top_block=model.fpn.top_block)
    rpn_cfg, roi, anchor = model.rpn, model.roi_heads, model.anchor
    proposals = dict(nms_thresh=rpn_cfg.nms_thresh, min_box_size=rpn_cfg.min_box_size,
                     box_coder=BoxCoder(tuple(rpn_cfg.bbox_reg_weights), rpn_cfg.bbox_clip))
    rpn = RPN(in_channels=channels, canvas=tuple(data.canvas), strides=tuple(fpn.strides), conv_dims=rpn_cfg.conv_dims,
              anchor_generator=AnchorGenerator(tuple(anchor.sizes), tuple(anchor.aspect_ratios), anchor.offset,
                                               anchor.round),
              train=RPNTrainSettings(rpn_cfg.pre_nms_topk_train, rpn_cfg.post_nms_topk_train, **proposals,
                                     anchor_matcher=Matcher(tuple(rpn_cfg.iou_thresholds),
                                                            rpn_cfg.allow_low_quality_matches),
                                     batch_size_per_image=rpn_cfg.batch_size_per_image,
                                     positive_fraction=rpn_cfg.positive_fraction,
                                     smooth_l1_beta=rpn_cfg.smooth_l1_beta, loss_weight=rpn_cfg.loss_weight),
              test=RPNSettings(rpn_cfg.pre_nms_topk_test, rpn_cfg.post_nms_topk_test, **proposals))
    scales = [1.0 / s for s in backbone.strides]
    pooler = dict(scales=scales, sampling_ratio=roi.pooler_sampling_ratio, aligned=roi.pooler_aligned,
                  level_fn=poolers.fpn_level, adaptive_max_samples=roi.pooler_max_samples)
    roi_heads = StandardROIHeads(
        box_pooler=poolers.RoIPooler(roi.box_pooler_resolution, **pooler),
        box_head=BoxHead(in_channels=channels, resolution=roi.box_pooler_resolution, fc_dim=roi.box_head_fc_dim,
                         num_classes=num_classes, num_conv=roi.box_head_num_conv, conv_dim=roi.box_head_conv_dim),
        mask_pooler=poolers.RoIPooler(roi.mask_pooler_resolution, **pooler),
        mask_head=MaskHead(in_channels=channels, num_classes=num_classes, conv_dims=roi.mask_head_conv_dim,
                           num_convs=roi.mask_head_num_conv),
        sampling=SamplingSettings(num_classes, roi.iou_threshold, roi.batch_size_per_image, roi.positive_fraction,
                                  roi.proposal_append_gt),
        box_settings=BoxHeadSettings(BoxCoder(tuple(roi.bbox_reg_weights), roi.bbox_clip), roi.smooth_l1_beta,
                                     roi.score_thresh_test, roi.nms_thresh_test, roi.detections_per_image,
                                     roi.test_topk_candidates, roi.min_box_size_test))
    return MaskRCNN(backbone=backbone, fpn=fpn, rpn=rpn, roi_heads=roi_heads, seed=cfg.seed)
