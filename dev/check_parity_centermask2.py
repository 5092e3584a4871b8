"""Detection parity of converted centermask2 weights: centermask2 CenterMask vs mindseg on one image.

PYTHONPATH=$D2:$CM2 python dev/check_parity_centermask2.py --image IMG [--model NAME] [--seed S]
    [--canvas H W] [--config CFG] [--work_dir DIR]

Needs torch, detectron2 built from source and centermask2 (docs/model_zoo.md says how; CI cannot).
It builds the centermask2 model of ``--model`` (a configs/centermask/ name: CenterMask V-39 or R-50,
CenterMask-Lite V-19-slim-dw or MobileNetV2) with seeded random weights, perturbed frozen-BN
statistics and GroupNorm affines, and three confident FCOS classes, saves its state dict as a .pth
(a plain dict of tensors, as centermask2's released files are), converts it with
scripts/convert_weights.py onto the matching mindseg config, and runs both on the same
preprocessed image: mindseg's eval preprocessing, padded to the canvas, is fed to centermask2's
backbone, FCOS and CenterROIHeads directly; its boxes are then clipped and empty ones dropped, as
detectron2's ``detector_postprocess`` does at scale 1. Prints the matched-detection count, the max
box (px, resized image), FCOS score and MaskIoU-rescored segm score differences, the mean mask IoU
(masks pasted into the resized image) and the largest adaptive RoIAlign sample count centermask2
used. Target: every detection matched, boxes within 0.01 px, both scores within 1e-4, mask IoU
>= 0.99: PARITY OK, else PARITY FAILED (exit 2).
"""
import sys

import numpy as np

import parity_common as common

MODELS = {
    "centermask_V_39_eSE_FPN_ms_3x": "config/centermask/centermask_V_39_eSE_FPN_ms_3x.yml",
    "centermask_R_50_FPN_ms_3x": "config/centermask/centermask_R_50_FPN_ms_3x.yml",
    "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x": "config/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yml",
    "centermask_lite_Mv2_FPN_ms_4x": "config/centermask/centermask_lite_Mv2_FPN_ms_4x.yml",
}
NUM_CLASSES = 80


def _perturb_group_norms(model, generator):
    import torch
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                channels = module.weight.shape[0]
                module.weight.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.05 * torch.randn(channels, generator=generator))


def _box_sizes_and_ious(model, generator):
    """Boxes of about 2 strides to each side (the init's ReLU(N(0, 0.01) x) gives points), mask
    logits away from 0 and predicted mask IoUs around 0.8 (the init's are near 0), so that masks
    and both scores carry weight."""
    import torch
    with torch.no_grad():
        bbox_pred = model.proposal_generator.fcos_head.bbox_pred
        bbox_pred.weight.normal_(0.0, 0.03, generator=generator)
        bbox_pred.bias.fill_(2.0)
        model.roi_heads.mask_head.predictor.weight.normal_(0.0, 0.05, generator=generator)
        model.roi_heads.maskiou_head.maskiou.bias.fill_(0.8)


def source_side(model_name, seed, image_npy, size_npy, pth_path, out_path):
    """Build the seeded centermask2 model, save its state dict, run it on the saved image."""
    import torch
    import centermask  # registers the backbones, FCOS and CenterROIHeads
    from centermask.config import get_cfg
    from centermask.modeling.centermask.pooler import assign_boxes_to_levels_by_ratio
    from detectron2.structures import ImageList

    model, generator, image = common.seeded_source_model(get_cfg, centermask, "centermask", model_name, seed,
                                                         image_npy, extra_perturb=_perturb_group_norms)
    # FCOS logits are per-class sigmoids: the other classes go under the 0.05 threshold
    common.make_confident(model.proposal_generator.fcos_head.cls_logits, generator, NUM_CLASSES, low=-5.0)
    _box_sizes_and_ious(model, generator)
    torch.save({key: value.detach().clone() for key, value in model.state_dict().items()}, pth_path)

    height, width = (int(round(v)) for v in np.load(size_npy))
    with torch.no_grad():
        images = ImageList(image, [(height, width)])
        features = model.backbone(image)
        proposals, _ = model.proposal_generator(images, features, None)
        instances, _ = model.roi_heads(images, features, proposals, None)
    det = instances[0]
    samples = common.adaptive_samples(det.pred_boxes.tensor.numpy(), (8, 16, 32), 14,
                                      lambda _: assign_boxes_to_levels_by_ratio([det], 3, 5).numpy())
    boxes = det.pred_boxes.tensor.clone()  # detector_postprocess: clip, drop empty boxes
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).numpy()
    mask_scores = det.mask_scores if det.has("mask_scores") else det.scores
    common.save_outputs(out_path, boxes[keep], det.scores[keep], det.pred_classes[keep], det.pred_masks[keep, 0],
                        segm_scores=mask_scores[keep], adaptive_samples=np.int64(samples))


def main(argv=None):
    return common.model_zoo_check(__file__, __doc__, "centermask2", MODELS, "centermask_V_39_eSE_FPN_ms_3x", "pth", source_side, argv,
                                  NUM_CLASSES)

if __name__ == "__main__":
    sys.exit(main())
