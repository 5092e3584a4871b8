"""CenterMask with point representation (Wang et al., CVPR 2020; "the other CenterMask") as one
Cell whose construct reads top to bottom: DLA-34, DLA-Up to stride 4, five heads, then CenterNet
targets and the four losses (training) or peaks, boxes and assembled masks (inference).

Shape shorthand: B images, G padded gt, K classes, Ho Wo the stride-4 map, D detections, R the
mask grid over each box (``mask_resolution``), S the local shape size.

Unlike CenterMask (FCOS + SAG-Mask, ``centermask.py``) it has no boxes to pool from: a mask is the
object's local shape (S^2 values at its centre point) times its class's saliency map inside the
box, both on an R x R grid over the box: ``mask_probs`` is that product, which the host pastes
into the box and thresholds at ``mask_threshold`` (0.4, the paper's).
"""
from dataclasses import dataclass

import mindspore as ms
import mindspore.numpy as mnp
import mindspore.nn as nn
import mindspore.ops as ops

from mindseg.models import mask_ops
from mindseg.models.backbones import build_backbone, dla
from mindseg.models.backbones.resnet import NORMS
from mindseg.models.centermask_point import losses
from mindseg.models.centermask_point.heads import PointHeads
from mindseg.models.centermask_point.inference import point_inference
from mindseg.models.centermask_point.masks import assemble_masks
from mindseg.models.centermask_point.targets import centernet_targets
from mindseg.models.necks.dla_up import DLAUp

STRIDE = 4
DLA_LEVELS = (2, 3, 4, 5)  # the levels DLA-Up merges (strides 4..32)


@dataclass(frozen=True)
class PointSettings:
    """The point model's targets, losses and detections: K ``num_classes`` on the ``canvas``
    (H, W); CenterNet's Gaussian radius for ``min_overlap`` and its focal loss (``focal_alpha``,
    ``focal_beta``); the loss weights; masks on a ``mask_resolution`` grid over each box,
    thresholded at ``mask_threshold``; at test the best ``max_detections`` peaks above
    ``score_thresh``."""
    num_classes: int
    canvas: tuple
    min_overlap: float = 0.7
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    offset_weight: float = 1.0
    size_weight: float = 0.1
    mask_weight: float = 1.0
    mask_resolution: int = 28
    max_detections: int = 100
    score_thresh: float = 0.05
    mask_threshold: float = 0.4


class CenterMaskPoint(nn.Cell):
    """Training: ``net(image, image_size, gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks)`` returns
    the losses named by ``loss_names``. Inference: ``net(image, image_size)`` returns boxes (B, D, 4),
    scores (B, D), classes (B, D) int32, valid (B, D) bool, mask_probs (B, D, R, R) (``output_names``).
    settings a :class:`PointSettings`."""

    loss_names = ("loss_heatmap", "loss_offset", "loss_size", "loss_mask")
    output_names = ("boxes", "scores", "classes", "valid", "mask_probs")  # docs/contracts.md

    def __init__(self, *, backbone, neck, heads, settings):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.heads = heads
        self.settings = settings
        self.num_classes = settings.num_classes
        self.output_shape = (settings.canvas[0] // STRIDE, settings.canvas[1] // STRIDE)
        self.mask_threshold = settings.mask_threshold

    def construct(self, image, image_size, gt_boxes=None, gt_labels=None, gt_valid=None, gt_crowd=None,
                  gt_masks=None):
        settings = self.settings
        outputs = self.heads(self.neck(self.backbone(image)))
        if not self.training:
            return point_inference(outputs, image_size, stride=STRIDE, resolution=settings.mask_resolution,
                                   max_detections=settings.max_detections, score_thresh=settings.score_thresh)
        heatmap_logits, pred_offset, pred_size, shape_logits, saliency_logits = outputs
        gt_valid = ops.logical_and(gt_valid, ops.logical_not(gt_crowd))
        gt_heatmap, center_index, gt_offset, gt_size, obj_valid = centernet_targets(
            gt_boxes, gt_labels, gt_valid, num_classes=self.num_classes, output_shape=self.output_shape,
            stride=STRIDE, min_overlap=settings.min_overlap)
        normaliser = losses.num_objects(obj_valid)
        loss_heatmap = losses.heatmap_focal_loss(heatmap_logits, gt_heatmap, normaliser, settings.focal_alpha,
                                                 settings.focal_beta)
        loss_offset = losses.center_l1_loss(pred_offset, center_index, gt_offset, obj_valid, normaliser)
        loss_size = losses.center_l1_loss(pred_size, center_index, gt_size, obj_valid, normaliser)

        # each object's mask on the grid over its gt box, from the box-relative gt crops
        batch, num_gt = gt_boxes.shape[0], gt_boxes.shape[1]
        own = ops.broadcast_to(mnp.arange(num_gt, dtype=ms.int32).reshape(1, num_gt), (batch, num_gt))
        gt_box_masks = mask_ops.mask_targets_from_crops(gt_masks, gt_boxes, own, gt_boxes, size=settings.mask_resolution)
        shapes, saliency = assemble_masks(shape_logits, saliency_logits, center_index, gt_labels, gt_boxes,
                                          stride=STRIDE, resolution=settings.mask_resolution)
        loss_mask = losses.mask_bce_loss(shapes, saliency, gt_box_masks, obj_valid, normaliser)
        return (loss_heatmap, settings.offset_weight * loss_offset, settings.size_weight * loss_size,
                settings.mask_weight * loss_mask)


def build_centermask_point(cfg, num_classes):
    """The one place that reads the config for CenterMask (point representation)."""
    model, point = cfg.model, cfg.model.centermask_point
    canvas = tuple(cfg.data.canvas)
    if canvas[0] % 32 or canvas[1] % 32:
        raise ValueError(f"data.canvas: centermask_point needs multiples of 32, got {list(canvas)}")
    if model.backbone.name not in dla.DLA_SPECS:
        raise ValueError(f"model.backbone.name: centermask_point runs on {sorted(dla.DLA_SPECS)} "
                         f"(DLA-Up), got '{model.backbone.name}'")
    backbone = build_backbone(model.backbone, DLA_LEVELS)
    neck = DLAUp(backbone.out_channels, norm=NORMS[model.backbone.norm], deform=point.deform_conv)
    heads = PointHeads(in_channels=neck.out_channels, num_classes=num_classes, head_channels=point.head_channels,
                       shape_size=point.shape_size, heatmap_bias=point.heatmap_bias)
    settings = PointSettings(
        num_classes=num_classes, canvas=canvas, min_overlap=point.min_overlap, focal_alpha=point.focal_alpha,
        focal_beta=point.focal_beta, offset_weight=point.offset_loss_weight, size_weight=point.size_loss_weight,
        mask_weight=point.mask_loss_weight, mask_resolution=point.mask_resolution,
        max_detections=point.max_detections, score_thresh=point.score_thresh, mask_threshold=point.mask_threshold)
    return CenterMaskPoint(backbone=backbone, neck=neck, heads=heads, settings=settings)
