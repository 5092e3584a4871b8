"""Detection parity of converted detectron2 weights: detectron2 Mask R-CNN vs mindseg on one image.

PYTHONPATH=$D2 python dev/check_parity_detectron2.py --image IMG [--model NAME] [--seed S]
    [--canvas H W] [--config CFG] [--work_dir DIR]

Needs torch and detectron2 built from source (docs/model_zoo.md says how; CI cannot). It builds the
detectron2 model of ``--model`` (mask_rcnn_R_50_FPN_3x or mask_rcnn_R_101_FPN_3x, from detectron2's
configs/COCO-InstanceSegmentation) with seeded random weights, perturbed frozen-BN statistics and
three confident classes (so that the 0.05 score threshold keeps detections), saves its weights as
the model zoo does (a pickle of ``{"model": {name: ndarray}}``), converts that .pkl with
scripts/convert_weights.py onto the matching mindseg config, and runs both on the same
preprocessed image: mindseg's eval preprocessing, padded to the canvas, is fed to detectron2's
backbone, RPN and RoI heads directly (its own resize / normalise / pad is bypassed). Prints the
matched-detection count, the max box (px, resized image) and score differences, the mean mask IoU
(masks pasted into the resized image), and the largest adaptive RoIAlign sample count detectron2
used, against the config's ``model.roi_heads.pooler_max_samples``. Target: every detection matched,
boxes within 0.01 px, scores within 1e-4, mask IoU >= 0.99: PARITY OK, else PARITY FAILED (exit 2).
"""
import pickle
import sys

import numpy as np

import parity_common as common

MODELS = {
    "mask_rcnn_R_50_FPN_3x": "config/maskrcnn/mask_rcnn_resnet50_fpn_detectron2.yml",
    "mask_rcnn_R_101_FPN_3x": "config/maskrcnn/mask_rcnn_resnet101_fpn_detectron2.yml",
}
NUM_CLASSES = 80


def source_side(model_name, seed, image_npy, size_npy, pkl_path, out_path):
    """Build the seeded detectron2 model, save it as a model-zoo .pkl, run it on the saved image."""
    import torch
    import detectron2
    from detectron2.config import get_cfg
    from detectron2.modeling.poolers import assign_boxes_to_levels
    from detectron2.structures import Boxes, ImageList

    model, generator, image = common.seeded_source_model(get_cfg, detectron2, "COCO-InstanceSegmentation",
                                                         model_name, seed, image_npy)
    # background is detectron2's last class row
    common.make_confident(model.roi_heads.box_predictor.cls_score, generator, NUM_CLASSES,
                          background=NUM_CLASSES, weight_std=0.2)
    state = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
    with open(pkl_path, "wb") as f:
        pickle.dump({"model": state, "__author__": "mindseg parity check"}, f)

    height, width = (int(round(v)) for v in np.load(size_npy))
    with torch.no_grad():
        images = ImageList(image, [(height, width)])
        features = model.backbone(image)
        proposals, _ = model.proposal_generator(images, features, None)
        instances, _ = model.roi_heads(images, features, proposals, None)
    det = instances[0]

    def levels(boxes):
        return assign_boxes_to_levels([Boxes(torch.from_numpy(boxes))], 2, 5, 224, 4).numpy()

    strides = (4, 8, 16, 32)
    samples = max(common.adaptive_samples(proposals[0].proposal_boxes.tensor.numpy(), strides, 7, levels),
                  common.adaptive_samples(det.pred_boxes.tensor.numpy(), strides, 14, levels))
    common.save_outputs(out_path, det.pred_boxes.tensor, det.scores, det.pred_classes, det.pred_masks[:, 0],
                        adaptive_samples=np.int64(samples))


def main(argv=None):
    return common.model_zoo_check(__file__, __doc__, "detectron2", MODELS, "mask_rcnn_R_50_FPN_3x", "pkl", source_side, argv,
                                  NUM_CLASSES)

if __name__ == "__main__":
    sys.exit(main())
