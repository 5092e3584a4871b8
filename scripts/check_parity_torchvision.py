"""Detection parity of converted torchvision weights: torchvision Mask R-CNN vs mindseg on one image.

python scripts/check_parity_torchvision.py --image IMG [--seed S] [--config CFG] [--work_dir DIR]

Needs torch and torchvision (run it by hand where they are installed; CI cannot). It builds a seeded
torchvision ``maskrcnn_resnet50_fpn`` (91 classes) with perturbed frozen-BN statistics and a few
classes made confident (so that the 0.05 score threshold keeps detections), saves its state dict
as .pth, converts it with ``convert_weights`` onto mindseg's torchvision config (90 classes, class
j = torchvision label j + 1), and runs both on the same preprocessed image: mindseg's eval
preprocessing, padded to the canvas, is fed to torchvision's backbone, RPN and RoI heads directly
(its own resize / normalise transform is bypassed). Prints the matched-detection count, the max box
difference (px, resized image) and the mean mask IoU (masks pasted into the resized image).
Target: every detection matched, boxes within 0.01 px, mask IoU >= 0.99.

The canvas defaults to a multiple of 64 (832 x 1344): torchvision derives each level's anchor
stride as ``canvas // feature size``, which at P6 of an 800-px canvas is 61, not 64 (docs/weights.md).
The torchvision side runs in a subprocess so that torch and MindSpore never share a process.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "config/maskrcnn/mask_rcnn_resnet50_fpn_torchvision.yml"
NUM_TV_CLASSES = 91


def torch_side(image_path, size_path, seed, pth_path, out_path):
    """Build the seeded torchvision model, save its state dict, run it on the saved image tensor."""
    import torch
    import torchvision
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(seed)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                               num_classes=NUM_TV_CLASSES)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                channels = module.weight.shape[0]
                module.weight.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.05 * torch.randn(channels, generator=generator))
                module.running_mean.copy_(0.05 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
        cls_score = model.roi_heads.box_predictor.cls_score
        cls_score.weight.normal_(0.0, 0.05, generator=generator)
        bias = torch.full((NUM_TV_CLASSES,), -2.0)
        bias[0] = 0.0
        confident = torch.randperm(NUM_TV_CLASSES - 1, generator=generator)[:3] + 1
        bias[confident] = 6.0
        cls_score.bias.copy_(bias)
    model.eval()
    torch.save(model.state_dict(), pth_path)

    image = torch.from_numpy(np.load(image_path))[None]
    height, width = (int(v) for v in np.load(size_path))
    with torch.no_grad():
        images = ImageList(image, [(height, width)])
        features = model.backbone(image)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
    det = detections[0]
    np.savez(out_path, boxes=det["boxes"].numpy(), scores=det["scores"].numpy(),
             labels=det["labels"].numpy(), masks=det["masks"][:, 0].numpy())


def _iou(box, boxes):
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def compare(reference, ours, height, width):
    """Greedy one-to-one matching in reference score order, same class, box IoU >= 0.5.
    Returns a dict of counts, max box / score difference and mean mask IoU over the matches."""
    from mindseg.models.mask_ops import paste_masks
    taken = np.zeros(len(ours["boxes"]), bool)
    box_diffs, score_diffs, mask_ious = [], [], []
    for i in np.argsort(-reference["scores"], kind="stable"):
        same = (ours["classes"] == reference["classes"][i]) & ~taken
        if not same.any():
            continue
        ious = np.where(same, _iou(reference["boxes"][i], ours["boxes"]), -1.0)
        j = int(np.argmax(ious))
        if ious[j] < 0.5:
            continue
        taken[j] = True
        box_diffs.append(np.abs(reference["boxes"][i] - ours["boxes"][j]).max())
        score_diffs.append(abs(reference["scores"][i] - ours["scores"][j]))
        ref_mask = paste_masks(reference["masks"][i:i + 1], reference["boxes"][i:i + 1], height, width)[0]
        our_mask = paste_masks(ours["masks"][j:j + 1], ours["boxes"][j:j + 1], height, width)[0]
        union = np.logical_or(ref_mask, our_mask).sum()
        mask_ious.append(1.0 if union == 0 else np.logical_and(ref_mask, our_mask).sum() / union)
    return {"torchvision_detections": int(len(reference["boxes"])), "mindseg_detections": int(len(ours["boxes"])),
            "matched": len(box_diffs), "max_box_diff_px": float(max(box_diffs, default=float("nan"))),
            "max_score_diff": float(max(score_diffs, default=float("nan"))),
            "mean_mask_iou": float(np.mean(mask_ious)) if mask_ious else float("nan")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=os.path.join(REPO, DEFAULT_CONFIG))
    parser.add_argument("--canvas", type=int, nargs=2, default=[832, 1344], help="padded H W (multiples of 64)")
    parser.add_argument("--work_dir", default=None, help="where the .pth, .ckpt and outputs go (default: a temp dir)")
    parser.add_argument("--torch_side", nargs=4, metavar=("IMAGE_NPY", "SIZE_NPY", "PTH", "OUT_NPZ"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_side:
        torch_side(args.torch_side[0], args.torch_side[1], args.seed, args.torch_side[2], args.torch_side[3])
        return 0

    sys.path.insert(0, REPO)
    sys.unraisablehook = lambda unraisable: None
    import mindseg  # noqa: F401  (before mindspore)
    import mindspore as ms
    from mindseg.config import load_config
    from mindseg.dataset.pipeline import SampleSpec
    from mindseg.engine.inference import preprocess_image
    from mindseg.models import build_model
    from mindseg.utils.convert_weights import convert_checkpoint

    work = args.work_dir or tempfile.mkdtemp(prefix="parity_tv_")
    os.makedirs(work, exist_ok=True)
    cfg = load_config(args.config, [f"data.canvas=[{args.canvas[0]}, {args.canvas[1]}]"])
    data = cfg.data
    spec = SampleSpec(min_sizes=(data.test_min_size,), max_size=data.test_max_size, canvas=tuple(data.canvas),
                      flip_prob=0.0, mean=tuple(data.mean), std=tuple(data.std), channel_order=data.channel_order,
                      max_instances=1, mask_size=1)
    with open(args.image, "rb") as f:
        image, size_hw, _, _ = preprocess_image(f.read(), spec, name=args.image)
    image_npy, size_npy = os.path.join(work, "image.npy"), os.path.join(work, "size.npy")
    np.save(image_npy, np.asarray(image, np.float32))
    np.save(size_npy, np.asarray(size_hw, np.float32))
    pth, ckpt, tv_out = (os.path.join(work, name) for name in ("torchvision.pth", "mindseg.ckpt", "torchvision.npz"))
    subprocess.run([sys.executable, os.path.abspath(__file__), "--image", args.image, "--seed", str(args.seed),
                    "--torch_side", image_npy, size_npy, pth, tv_out], check=True)

    report = convert_checkpoint("torchvision", pth, ckpt, cfg, num_classes=NUM_TV_CLASSES - 1)
    print("\n".join(report.lines()))
    net = build_model(cfg, num_classes=NUM_TV_CLASSES - 1)
    not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    if not_loaded:
        raise SystemExit(f"parameters not loaded: {not_loaded[:5]}")
    net.set_train(False)
    boxes, scores, classes, valid, mask_probs = (o.asnumpy() for o in net(
        ms.Tensor(np.asarray(image, np.float32)[None]), ms.Tensor(np.asarray(size_hw, np.float32)[None])))
    keep = valid[0]
    ours = {"boxes": boxes[0][keep], "scores": scores[0][keep], "classes": classes[0][keep],
            "masks": mask_probs[0][keep]}
    tv = np.load(tv_out)
    reference = {"boxes": tv["boxes"], "scores": tv["scores"], "classes": tv["labels"] - 1, "masks": tv["masks"]}
    height, width = (int(v) for v in size_hw)
    result = compare(reference, ours, height, width)
    result.update(seed=args.seed, image=args.image, canvas=list(args.canvas))
    print(json.dumps(result, indent=1))
    ok = (result["matched"] == result["torchvision_detections"] == result["mindseg_detections"]
          and result["max_box_diff_px"] <= 0.01 and result["mean_mask_iou"] >= 0.99)
    print("PARITY OK" if ok else "PARITY NOT REACHED")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
