"""CenterMask and CenterMask-Lite (centermask2 conventions) as one Cell whose construct reads top
to bottom: backbone (C3-C5), FPN (P3-P7), FCOS head, FCOS losses (or detections at inference),
mask proposals, SAG-Mask, MaskIoU.

Shape shorthand: B images, G padded gt, M mask crop, L FCOS locations over P3-P7, P mask
proposals per image in training (FCOS detections + gt slots), F mask RoIs per image in training
(the fg slots of the sampler), K classes, D detections, r = 28 the mask resolution.

Inference returns the outputs of ``output_names`` (docs/contracts.md), ``mask_scores`` (B, D)
among them: the segm score (box score x predicted mask IoU of the predicted class, or the box
score without MaskIoU), which segm results take; box results keep the FCOS score.
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops

from mindseg.models import box_ops, mask_ops
from mindseg.models.backbones import build_backbone
from mindseg.models.fcos import FCOSHead, fcos_inference, fcos_losses
from mindseg.models.fcos_targets import compute_locations, fcos_targets, location_levels, per_location
from mindseg.models.layers import poolers
from mindseg.models.layers.gather import gather_rows
from mindseg.models.layers.reduce import data_parallel_mean
from mindseg.models.layers.step_random import StepRandom
from mindseg.models.necks.fpn import FPN, level_shapes
from mindseg.models.roi_heads.maskiou_head import MaskIoUHead, gt_mask_areas, mask_scores, maskiou_loss, \
    maskiou_targets
from mindseg.models.roi_heads.sag_mask import SAGMaskHead, sag_mask_loss, select_class_masks
from mindseg.models.roi_heads.sampling import label_and_sample_proposals

MASK_LEVELS = 3  # mask RoIs are pooled from P3..P5


class CenterMask(nn.Cell):
    """Training: ``net(image, image_size, gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks)`` returns
    the losses named by ``loss_names``. Inference: ``net(image, image_size)`` returns the outputs
    named by ``output_names``: boxes (B, D, 4), scores (B, D) (FCOS), classes (B, D) int32, valid
    (B, D) bool, mask_probs (B, D, r, r), mask_scores (B, D) (segm)."""

    loss_names = ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_maskiou")
    output_names = ("boxes", "scores", "classes", "valid", "mask_probs", "mask_scores")  # docs/contracts.md
    mask_threshold = 0.5

    def __init__(self, *, backbone, fpn, fcos_head, mask_pooler, mask_head, maskiou_head, num_classes, canvas,
                 fcos_target, fcos_loss, fcos_test, post_nms_topk_train, post_nms_topk_test, sampling, num_mask_rois,
                 maskiou_loss_weight=1.0, mask_resolution=28, seed=0):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.fcos_head = fcos_head
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.maskiou_head = maskiou_head
        self.num_classes = num_classes
        strides = fcos_target["strides"]
        shapes = level_shapes(canvas, strides)
        levels = location_levels(shapes)
        self.level_sizes = [h * w for h, w in shapes]
        self.locations = ms.Tensor(compute_locations(shapes, strides))
        self.location_levels = ms.Tensor(levels)
        self.location_strides = ms.Tensor(per_location(levels, strides))
        self.fcos_target = fcos_target
        self.fcos_loss = fcos_loss
        self.fcos_test = fcos_test
        self.clip_before_nms = fcos_test["clip"]
        self.post_nms_topk_train = post_nms_topk_train
        self.post_nms_topk_test = post_nms_topk_test
        self.sampling = sampling
        self.num_mask_rois = num_mask_rois
        self.maskiou_loss_weight = maskiou_loss_weight
        self.mask_resolution = mask_resolution
        # FCOS normalisers over the whole job, as centermask2; the mask and MaskIoU losses stay
        # per-device means, as there
        self.rank_mean = data_parallel_mean()
        self.step_random = StepRandom(seed)  # the sampler's random state, saved in checkpoints

    def construct(self, image, image_size, gt_boxes=None, gt_labels=None, gt_valid=None, gt_crowd=None,
                  gt_masks=None):
        features = self.fpn(self.backbone(image))
        cls_logits, pred_ltrb, ctr_logits = self.fcos_head(features)
        image_area = image_size[:, 0] * image_size[:, 1]
        if not self.training:
            return self.inference(features[:MASK_LEVELS], cls_logits, pred_ltrb, ctr_logits, image_size, image_area)
        gt_valid = ops.logical_and(gt_valid, ops.logical_not(gt_crowd))
        labels, reg_targets, ctr_targets = fcos_targets(self.locations, self.location_levels, gt_boxes, gt_labels,
                                                        gt_valid, num_classes=self.num_classes, **self.fcos_target)
        loss_cls, loss_loc, loss_ctr = fcos_losses(cls_logits, pred_ltrb, ctr_logits, labels, reg_targets,
                                                   ctr_targets, self.location_strides, self.num_classes,
                                                   reduce_mean=self.rank_mean, **self.fcos_loss)

        # mask proposals: FCOS detections as at test (top post_nms_topk_train) plus the gt boxes
        proposals, _, _, proposal_valid = fcos_inference(
            ops.stop_gradient(cls_logits), ops.stop_gradient(pred_ltrb), ops.stop_gradient(ctr_logits),
            self.locations, self.level_sizes, image_size, max_detections=self.post_nms_topk_train, **self.fcos_test)
        rois, _, roi_is_fg, roi_gt_classes, roi_gt_idx = label_and_sample_proposals(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, num_classes=self.num_classes,
            key=self.step_random(), **self.sampling)
        # the sampler puts fg RoIs first, so the first F slots hold every fg RoI; only they feed the losses
        fg_rois = rois[:, :self.num_mask_rois]
        fg_gt_idx = roi_gt_idx[:, :self.num_mask_rois]
        fg_classes = roi_gt_classes[:, :self.num_mask_rois].reshape(-1)
        fg = roi_is_fg[:, :self.num_mask_rois].reshape(-1)
        roi_features = self.mask_pooler(features[:MASK_LEVELS], fg_rois, image_area)
        mask_logits = self.mask_head(roi_features)
        mask_targets = mask_ops.mask_targets_from_crops(gt_masks, gt_boxes, fg_gt_idx, fg_rois,
                                                        size=self.mask_resolution)
        mask_targets = mask_targets.reshape(-1, self.mask_resolution, self.mask_resolution)
        loss_mask = sag_mask_loss(mask_logits, fg_classes, fg, mask_targets)

        if self.maskiou_head is None:
            return loss_cls, loss_loc, loss_ctr, loss_mask, ops.zeros((), ms.float32)
        class_logits = select_class_masks(mask_logits, ops.clip(fg_classes, 0, self.num_classes - 1))
        gt_areas = gather_rows(gt_mask_areas(gt_masks, gt_boxes), fg_gt_idx).reshape(-1)
        iou_targets = maskiou_targets(class_logits, mask_targets, fg_rois.reshape(-1, 4), gt_areas)
        pred_maskiou = self.maskiou_head(roi_features, ops.sigmoid(class_logits))
        loss_maskiou = maskiou_loss(pred_maskiou, fg_classes, iou_targets, fg, self.maskiou_loss_weight)
        return loss_cls, loss_loc, loss_ctr, loss_mask, loss_maskiou

    def inference(self, mask_features, cls_logits, pred_ltrb, ctr_logits, image_size, image_area):
        boxes, scores, classes, valid = fcos_inference(cls_logits, pred_ltrb, ctr_logits, self.locations,
                                                       self.level_sizes, image_size, max_detections=self.post_nms_topk_test,
                                                       **self.fcos_test)
        flat_classes = classes.reshape(-1)
        roi_features = self.mask_pooler(mask_features, boxes, image_area)
        mask_probs = ops.sigmoid(select_class_masks(self.mask_head(roi_features), flat_classes))
        if self.maskiou_head is None:
            segm_scores = scores
        else:
            pred_maskiou = self.maskiou_head(roi_features, mask_probs)
            segm_scores = mask_scores(pred_maskiou, flat_classes, scores.reshape(-1)).reshape(scores.shape)
        mask_probs = mask_probs.reshape(boxes.shape[:2] + mask_probs.shape[1:])
        if not self.clip_before_nms:
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
    mask_pooler = poolers.RoIPooler(center.mask_pooler_resolution, scales, roi.pooler_sampling_ratio,
                                    roi.pooler_aligned, poolers.centermask_level,
                                    adaptive_max_samples=roi.pooler_max_samples)
    mask_head = SAGMaskHead(in_channels=channels, num_classes=num_classes, conv_dims=center.mask_head_conv_dim,
                            num_convs=center.mask_head_num_conv)
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
    return CenterMask(
        backbone=backbone, fpn=fpn, fcos_head=fcos_head, mask_pooler=mask_pooler, mask_head=mask_head,
        maskiou_head=maskiou_head, num_classes=num_classes, canvas=tuple(data.canvas),
        fcos_target=dict(strides=tuple(fpn.strides), size_ranges=tuple(tuple(r) for r in fcos.size_ranges),
                         center_radius=fcos.center_radius),
        fcos_loss=dict(focal_alpha=fcos.focal_alpha, focal_gamma=fcos.focal_gamma),
        fcos_test=dict(score_thresh=fcos.score_thresh, pre_nms_topk=fcos.pre_nms_topk, nms_thresh=fcos.nms_thresh,
                       clip=fcos.clip_before_nms),
        post_nms_topk_train=fcos.post_nms_topk_train, post_nms_topk_test=fcos.post_nms_topk_test,
        sampling=dict(iou_threshold=roi.iou_threshold, batch_size_per_image=num_samples,
                      positive_fraction=num_fg / num_samples, append_gt=roi.proposal_append_gt),
        num_mask_rois=num_fg, maskiou_loss_weight=center.maskiou_loss_weight,
        mask_resolution=2 * center.mask_pooler_resolution, seed=cfg.seed)
