"""Mask R-CNN (R-FPN, detectron2 conventions) as one Cell whose construct reads top to bottom:
backbone, FPN, RPN, RoI sampling, box head, mask head, losses (or detections at inference).

Shape shorthand: B images, G padded gt, M mask crop, P proposals, R sampled RoIs, F RoIs given
to the mask head in training (R * positive fraction: the fg slots), K classes, D detections.
"""
import mindspore.nn as nn
import mindspore.ops as ops

from mindseg.models.anchors import AnchorGenerator
from mindseg.models.backbones import build_backbone
from mindseg.models.box_ops import BoxCoder
from mindseg.models.layers import poolers
from mindseg.models.layers.step_random import StepRandom
from mindseg.models.layers.gather import gather_rows
from mindseg.models.necks.fpn import FPN
from mindseg.models.roi_heads.box_head import BoxHead, box_head_inference, box_head_losses
from mindseg.models.roi_heads.mask_head import MaskHead, fg_slots, mask_branch_inference, mask_branch_loss
from mindseg.models.roi_heads.sampling import label_and_sample_proposals
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

    def __init__(self, *, backbone, fpn, rpn, box_pooler, box_head, mask_pooler, mask_head, num_classes,
                 sampling, box_loss, box_inference, num_mask_rois, seed=0):
        super().__init__()
        # RoIs are pooled from the levels of the backbone's maps (P2..P5); the FPN's extra levels
        # (P6) only feed the RPN
        self.pooler_levels = len(backbone.strides)
        self.backbone = backbone
        self.fpn = fpn
        self.rpn = rpn
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.num_classes = num_classes
        self.sampling = sampling
        self.box_loss = box_loss
        self.box_inference = box_inference
        self.num_mask_rois = num_mask_rois
        self.step_random = StepRandom(seed)  # the samplers' random state, saved in checkpoints

    def construct(self, image, image_size, gt_boxes=None, gt_labels=None, gt_valid=None, gt_crowd=None,
                  gt_masks=None):
        features = self.fpn(self.backbone(image))
        if not self.training:
            return self.inference(features, image_size)
        gt_valid = ops.logical_and(gt_valid, ops.logical_not(gt_crowd))
        key = self.step_random()
        proposals, proposal_valid, loss_rpn_cls, loss_rpn_loc = self.rpn(features, image_size, gt_boxes, gt_valid,
                                                                         key)

        rois, roi_valid, roi_is_fg, roi_gt_classes, roi_gt_idx = label_and_sample_proposals(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, num_classes=self.num_classes, key=key,
            **self.sampling)
        roi_features = features[:self.pooler_levels]
        cls_logits, box_deltas = self.box_head(self.box_pooler(roi_features, rois))
        loss_cls, loss_box_reg = box_head_losses(cls_logits, box_deltas, rois, roi_valid, roi_gt_classes,
                                                 gather_rows(gt_boxes, roi_gt_idx), **self.box_loss)

        fg_rois, fg_gt_idx, fg_classes, fg = fg_slots(self.num_mask_rois, rois, roi_gt_idx, roi_gt_classes,
                                                      roi_is_fg)
        mask_logits = self.mask_head(self.mask_pooler(roi_features, fg_rois))
        loss_mask, _, _ = mask_branch_loss(mask_logits, fg_rois, fg_gt_idx, fg_classes, fg, gt_masks, gt_boxes)
        return loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg, loss_mask

    def inference(self, features, image_size):
        proposals, proposal_valid = self.rpn(features, image_size)
        roi_features = features[:self.pooler_levels]
        cls_logits, box_deltas = self.box_head(self.box_pooler(roi_features, proposals))
        boxes, scores, classes, valid = box_head_inference(cls_logits, box_deltas, proposals, proposal_valid,
                                                           image_size, **self.box_inference)
        mask_logits = self.mask_head(self.mask_pooler(roi_features, boxes))
        return boxes, scores, classes, valid, mask_branch_inference(mask_logits, classes)


def build_mask_rcnn(cfg, num_classes):
    """The one place that reads the config for Mask R-CNN."""
    model, data = cfg.model, cfg.data
    backbone = build_backbone(model.backbone, out_levels=(2, 3, 4, 5))
    channels = model.fpn.out_channels
    fpn = FPN(in_channels=backbone.out_channels, in_strides=backbone.strides, out_channels=channels,
              top_block=model.fpn.top_block)
    rpn_cfg, roi, anchor = model.rpn, model.roi_heads, model.anchor
    proposals = dict(nms_thresh=rpn_cfg.nms_thresh, min_box_size=rpn_cfg.min_box_size)
    rpn = RPN(in_channels=channels, canvas=tuple(data.canvas), strides=tuple(fpn.strides), conv_dims=rpn_cfg.conv_dims,
              anchor_generator=AnchorGenerator(tuple(anchor.sizes), tuple(anchor.aspect_ratios), anchor.offset,
                                               anchor.round),
              anchor_matcher=Matcher(tuple(rpn_cfg.iou_thresholds), rpn_cfg.allow_low_quality_matches),
              box_coder=BoxCoder(tuple(rpn_cfg.bbox_reg_weights), rpn_cfg.bbox_clip),
              train=RPNTrainSettings(rpn_cfg.pre_nms_topk_train, rpn_cfg.post_nms_topk_train, **proposals,
                                     batch_size_per_image=rpn_cfg.batch_size_per_image,
                                     positive_fraction=rpn_cfg.positive_fraction,
                                     smooth_l1_beta=rpn_cfg.smooth_l1_beta, loss_weight=rpn_cfg.loss_weight),
              test=RPNSettings(rpn_cfg.pre_nms_topk_test, rpn_cfg.post_nms_topk_test, **proposals))
    scales = [1.0 / s for s in backbone.strides]
    box_pooler = poolers.RoIPooler(roi.box_pooler_resolution, scales, roi.pooler_sampling_ratio,
                                   roi.pooler_aligned, poolers.fpn_level,
                                   adaptive_max_samples=roi.pooler_max_samples)
    mask_pooler = poolers.RoIPooler(roi.mask_pooler_resolution, scales, roi.pooler_sampling_ratio,
                                    roi.pooler_aligned, poolers.fpn_level,
                                    adaptive_max_samples=roi.pooler_max_samples)
    box_head = BoxHead(in_channels=channels, resolution=roi.box_pooler_resolution, fc_dim=roi.box_head_fc_dim,
                       num_classes=num_classes, num_conv=roi.box_head_num_conv, conv_dim=roi.box_head_conv_dim)
    mask_head = MaskHead(in_channels=channels, num_classes=num_classes, conv_dims=roi.mask_head_conv_dim,
                         num_convs=roi.mask_head_num_conv)
    return MaskRCNN(
        backbone=backbone, fpn=fpn, rpn=rpn, box_pooler=box_pooler, box_head=box_head,
        mask_pooler=mask_pooler, mask_head=mask_head, num_classes=num_classes,
        sampling=dict(iou_threshold=roi.iou_threshold, batch_size_per_image=roi.batch_size_per_image,
                      positive_fraction=roi.positive_fraction, append_gt=roi.proposal_append_gt),
        box_loss=dict(bbox_reg_weights=tuple(roi.bbox_reg_weights), smooth_l1_beta=roi.smooth_l1_beta),
        box_inference=dict(bbox_reg_weights=tuple(roi.bbox_reg_weights), scale_clamp=roi.bbox_clip,
                           score_thresh=roi.score_thresh_test, nms_thresh=roi.nms_thresh_test,
                           detections_per_image=roi.detections_per_image,
                           topk_candidates=roi.test_topk_candidates),
        num_mask_rois=max(1, int(round(roi.batch_size_per_image * roi.positive_fraction))), seed=cfg.seed)
