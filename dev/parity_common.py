"""What the check_parity_* scripts share: the command line, one preprocessed image for both
frameworks, the source side in a subprocess, conversion through scripts/convert_weights.py, the
mindseg run, detection matching and the PARITY OK / PARITY FAILED verdict.

The source side (torch) runs in a subprocess of the same interpreter, so torch and MindSpore never
share a process; this module imports neither at module level. Tolerances are those of the
parity target in docs/model_zoo.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOX_TOL_PX = 0.01
MASK_IOU_MIN = 0.99
# the 28 x 28 mask probabilities of matched detections; a random model's probabilities sit near
# the 0.5 threshold, where a 1e-3 difference flips pixels (torchvision: min mask IoU 0.57 at a
# probability difference of 0.0015), so the verdict takes either measure
MASK_PROB_TOL = 5e-3
SCORE_TOL = 1e-4


def build_parser(doc, default_config, canvas, side_args):
    """The scripts' shared options; ``side_args`` names the hidden source-side arguments."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=default_config, help="mindseg config (relative to the repo)")
    parser.add_argument("--canvas", type=int, nargs=2, default=list(canvas), help="padded H W (multiples of 64)")
    parser.add_argument("--work_dir", default=None,
                        help="where the weights, .ckpt and outputs go (default: a temp dir)")
    parser.add_argument("--source_side", nargs=len(side_args), metavar=tuple(side_args), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="mindseg config key=value overrides")
    return parser


def _repo_path(path):
    return path if os.path.isabs(path) or os.path.exists(path) else os.path.join(REPO, path)


def load_mindseg_config(args):
    """The mindseg config with the canvas override; imports mindseg (before mindspore)."""
    sys.path.insert(0, REPO)
    sys.unraisablehook = lambda unraisable: None
    import mindseg  # noqa: F401
    from mindseg.config import load_config
    return load_config(_repo_path(args.config), _overrides(args))


def _overrides(args):
    return [f"data.canvas=[{args.canvas[0]}, {args.canvas[1]}]"] + list(args.overrides)


def prepare_input(args, cfg, prefix):
    """mindseg's eval preprocessing of ``args.image``, padded to the canvas, saved for the source
    side. Returns (work dir, image (3, H, W) float32, size_hw (2,), image .npy, size .npy)."""
    from mindseg.dataset.sample import SampleSpec
    from mindseg.dataset.sample import preprocess_image
    work = args.work_dir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    data = cfg.data
    spec = SampleSpec(min_sizes=(data.test_min_size,), max_size=data.test_max_size, canvas=tuple(data.canvas),
                      flip_prob=0.0, mean=tuple(data.mean), std=tuple(data.std), channel_order=data.channel_order,
                      max_instances=1, mask_size=1)
    with open(args.image, "rb") as f:
        image, size_hw, _, _ = preprocess_image(f.read(), spec, name=args.image)
    image = np.asarray(image, np.float32)
    size_hw = np.asarray(size_hw, np.float32)
    image_npy, size_npy = os.path.join(work, "image.npy"), os.path.join(work, "size.npy")
    np.save(image_npy, image)
    np.save(size_npy, size_hw)
    return work, image, size_hw, image_npy, size_npy


def run_source_side(script, args, side_values):
    """Re-run ``script`` with ``--source_side`` in a subprocess (torch only there)."""
    command = [sys.executable, os.path.abspath(script), "--image", args.image, "--seed", str(args.seed),
               "--config", args.config, "--source_side", *[str(v) for v in side_values]]
    subprocess.run(command, check=True)


def convert(source, weights, ckpt, args, num_classes):
    """The user's command: ``scripts/convert_weights.py --source ... --input ... --output ...``."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import convert_weights
    rc = convert_weights.main(["--source", source, "--input", weights, "--output", ckpt,
                               "--config", _repo_path(args.config), "--num_classes", str(num_classes),
                               *_overrides(args)])
    if rc:
        raise SystemExit(f"convert_weights.py failed with status {rc}")


def run_mindseg(cfg, ckpt, num_classes, image, size_hw):
    """The converted model on the image: valid detections as {boxes, scores, classes, masks} and,
    where the model returns it (CenterMask), ``segm_scores``."""
    import mindspore as ms
    from mindseg.engine.checkpoint import load_train_state
    from mindseg.models import build_model
    from mindseg.models.outputs import named_outputs
    net = build_model(cfg, num_classes=num_classes)
    load_train_state(ckpt, net)  # refuses a checkpoint that lacks a weight of the network
    net.set_train(False)
    outputs = named_outputs(net.output_names, (o.asnumpy() for o in net(ms.Tensor(image[None]),
                                                                        ms.Tensor(size_hw[None]))))
    keep = outputs["valid"][0]
    ours = {name: outputs[name][0][keep] for name in ("boxes", "scores", "classes")}
    ours["masks"] = outputs["mask_probs"][0][keep]
    if "mask_scores" in outputs:
        ours["segm_scores"] = outputs["mask_scores"][0][keep]
    return ours


def _iou(box, boxes):
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def compare(reference, ours, height, width, source, limit=None):
    """Greedy one-to-one matching in reference score order, same class, box IoU >= 0.5.
    Returns counts, max box / score differences (and segm score where both have it) and the mean
    mask IoU of the matches, masks pasted into the resized image. When both sides hold ``limit``
    detections (the per-image cap), an unmatched one scored within SCORE_TOL of the other side's
    lowest score counts as at the limit (``*_at_limit``): either framework may cut it."""
    from mindseg.models.mask_ops import paste_masks
    taken = np.zeros(len(ours["boxes"]), bool)
    segm = "segm_scores" in reference and "segm_scores" in ours
    box_diffs, score_diffs, segm_diffs, mask_ious, prob_diffs = [], [], [], [], []
    matched_reference = np.zeros(len(reference["boxes"]), bool)
    for i in np.argsort(-reference["scores"], kind="stable"):
        same = (ours["classes"] == reference["classes"][i]) & ~taken
        if not same.any():
            continue
        ious = np.where(same, _iou(reference["boxes"][i], ours["boxes"]), -1.0)
        j = int(np.argmax(ious))
        if ious[j] < 0.5:
            continue
        taken[j] = True
        matched_reference[i] = True
        box_diffs.append(np.abs(reference["boxes"][i] - ours["boxes"][j]).max())
        score_diffs.append(abs(reference["scores"][i] - ours["scores"][j]))
        if segm:
            segm_diffs.append(abs(reference["segm_scores"][i] - ours["segm_scores"][j]))
        prob_diffs.append(float(np.abs(reference["masks"][i] - ours["masks"][j]).max()))
        ref_mask = paste_masks(reference["masks"][i:i + 1], reference["boxes"][i:i + 1], height, width)[0]
        our_mask = paste_masks(ours["masks"][j:j + 1], ours["boxes"][j:j + 1], height, width)[0]
        union = np.logical_or(ref_mask, our_mask).sum()
        mask_ious.append(1.0 if union == 0 else np.logical_and(ref_mask, our_mask).sum() / union)
    result = {f"{source}_detections": int(len(reference["boxes"])), "mindseg_detections": int(len(ours["boxes"])),
              "matched": len(box_diffs), "max_box_diff_px": float(max(box_diffs, default=float("nan"))),
              "max_score_diff": float(max(score_diffs, default=float("nan"))),
              "mean_mask_iou": float(np.mean(mask_ious)) if mask_ious else float("nan"),
              "min_mask_iou": float(np.min(mask_ious)) if mask_ious else float("nan"),
              "max_mask_prob_diff": float(max(prob_diffs, default=float("nan")))}
    if segm:
        result["max_segm_score_diff"] = float(max(segm_diffs, default=float("nan")))
    full = limit is not None and len(reference["scores"]) == len(ours["scores"]) == limit > 0
    unmatched_ours = ours["scores"][~taken]
    unmatched_reference = reference["scores"][~matched_reference]
    result[f"{source}_at_limit"] = int(full and (unmatched_reference <= ours["scores"].min() + SCORE_TOL).sum())
    result["mindseg_at_limit"] = int(full and (unmatched_ours <= reference["scores"].min() + SCORE_TOL).sum())
    return result


def float64_path(out_path):
    """Where the source side saves its float64 run beside the float32 one at ``out_path``."""
    return os.path.splitext(out_path)[0] + "_float64.npz"


def compare_with_exact(reference, exact, ours, height, width, source, limit=None):
    """mindseg against the source model run in float64 (``exact``), with the float32 source
    (``reference``) beside it.

    Two float32 implementations of one model differ by both their rounding errors (their sums run
    in different orders), and on an 832 x 1344 canvas the source's own float32 boxes are 0.009-0.023
    px from its float64 ones. ``verdict`` therefore allows the box tolerance plus that error, and
    needs the float32 source matched detection for detection as well."""
    result = compare(exact, ours, height, width, source, limit)
    own = compare(exact, reference, height, width, source, limit)  # the float32 source in mindseg's place
    beside = compare(reference, ours, height, width, source, limit)
    result.update({f"{source}_float32_detections": int(len(reference["boxes"])),
                   f"{source}_float32_matched_to_float64": own["matched"],
                   f"{source}_float32_max_box_diff_px": own["max_box_diff_px"],
                   f"matched_{source}_float32": beside["matched"],
                   f"{source}_float32_at_limit": beside[f"{source}_at_limit"],
                   f"mindseg_at_limit_{source}_float32": beside["mindseg_at_limit"],
                   f"max_box_diff_px_{source}_float32": beside["max_box_diff_px"]})
    return result


def verdict(result, source):
    """Print the result and PARITY OK / PARITY FAILED; returns the exit status (0 / 2). Every
    detection on both sides must be matched or at the limit (``compare``). With a float64 source
    run (``compare_with_exact``) the box tolerance grows by the source's own float32 error, and the
    float32 source must be matched within it too."""
    print(json.dumps(result, indent=1))
    score_keys = [k for k in ("max_score_diff", "max_segm_score_diff") if k in result]
    box_tol = BOX_TOL_PX + result.get(f"{source}_float32_max_box_diff_px", 0.0)
    ok = (result["matched"] > 0
          and result["matched"] + result[f"{source}_at_limit"] == result[f"{source}_detections"]
          and result["matched"] + result["mindseg_at_limit"] == result["mindseg_detections"]
          and result["max_box_diff_px"] <= box_tol
          and (result["mean_mask_iou"] >= MASK_IOU_MIN or result["max_mask_prob_diff"] <= MASK_PROB_TOL)
          and all(result[k] <= SCORE_TOL for k in score_keys))
    if f"max_box_diff_px_{source}_float32" in result:
        matched = result[f"matched_{source}_float32"]
        ok = (ok and matched + result[f"{source}_float32_at_limit"] == result[f"{source}_float32_detections"]
              and matched + result[f"mindseg_at_limit_{source}_float32"] == result["mindseg_detections"]
              and result[f"max_box_diff_px_{source}_float32"] <= box_tol)
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 2


# ------------------------------------------------------------------------ torch side (subprocess)

def perturb_norms(model, generator):
    """Move every BatchNorm / FrozenBatchNorm of ``model`` off the identity (weight and var in
    [0.9, 1.1], bias and mean ~ N(0, 0.05)), so that a mix-up of the four buffers shows."""
    import torch
    with torch.no_grad():
        for module in model.modules():
            if "BatchNorm" not in type(module).__name__:
                continue
            channels = module.weight.shape[0]
            module.weight.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))
            module.bias.copy_(0.05 * torch.randn(channels, generator=generator))
            module.running_mean.copy_(0.05 * torch.randn(channels, generator=generator))
            module.running_var.copy_(0.9 + 0.2 * torch.rand(channels, generator=generator))


def tame_input_scale(backbone):
    """Divide the first conv of ``backbone`` by 57.375 (the ImageNet pixel std in 0..255 units).
    detectron2 and centermask2 take pixels minus the mean with std 1, about 58x what a normalised
    input gives; trained weights absorb that in conv1, random ones would saturate every score."""
    import torch
    conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.div_(57.375)


def unit_pyramid(model, image):
    """Rescale each ``fpn_output{l}`` conv of a detectron2 FPN (weight and bias) so that its level
    has unit std on ``image``: the random backbone's features are ~20x that, and the RPN / FCOS
    heads' N(0, 0.01) init would then predict degenerate boxes."""
    import torch
    with torch.no_grad():
        features = model.backbone(image)
        for name, feature in features.items():
            conv = getattr(model.backbone, "fpn_output" + name[1:], None)
            if conv is not None:
                scale = float(feature.std())
                conv.weight.div_(scale)
                conv.bias.div_(scale)


def seeded_source_model(get_cfg, package, config_subdir, model_name, seed, image_npy, extra_perturb=None):
    """A detectron2-built source model from ``package``'s ``configs/<config_subdir>/<model_name>.yaml``
    on the CPU with random weights: seeded, norms perturbed (then ``extra_perturb(model, generator)``),
    input scale tamed and pyramid levels at unit std on the image. Returns (model, generator, image)."""
    import torch
    from detectron2.modeling import build_model
    torch.manual_seed(seed)
    cfg = get_cfg()
    root = os.path.dirname(os.path.dirname(os.path.abspath(package.__file__)))
    cfg.merge_from_file(os.path.join(root, "configs", config_subdir, model_name + ".yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(seed)
    perturb_norms(model, generator)
    if extra_perturb is not None:
        extra_perturb(model, generator)
    image = torch.from_numpy(np.load(image_npy))[None]
    tame_input_scale(model.backbone.bottom_up)
    unit_pyramid(model, image)
    return model, generator, image


def make_confident(layer, generator, num_classes, background=None, low=-2.0, high=6.0, weight_std=None):
    """Class logits of ``layer`` (Linear or Conv): bias ``low`` except three random classes at
    ``high`` (and ``background``, an index, at 0), so that the test score threshold keeps
    detections; ``weight_std`` redraws the weights to vary scores between RoIs. Returns the classes."""
    import torch
    with torch.no_grad():
        if weight_std is not None:
            layer.weight.normal_(0.0, weight_std, generator=generator)
        bias = torch.full((layer.bias.shape[0],), low)
        offset = 0
        if background == 0:
            offset = 1
        if background is not None:
            bias[background] = 0.0
        confident = torch.randperm(num_classes, generator=generator)[:3] + offset
        bias[confident] = high
        layer.bias.copy_(bias)
    return confident


def save_outputs(out_path, boxes, scores, classes, masks, **extra):
    """The source's detections as an .npz (classes already in mindseg's numbering)."""
    arrays = {"boxes": boxes, "scores": scores, "classes": classes, "masks": masks}
    arrays.update(extra)
    np.savez(out_path, **{k: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v)
                          for k, v in arrays.items()})


def adaptive_samples(boxes, strides, out, level_of):
    """Largest detectron2 adaptive RoIAlign sample count ceil(side / stride / out) over ``boxes``
    (N, 4) numpy, each on the level ``level_of(boxes)`` (index into ``strides``) assigns."""
    if len(boxes) == 0:
        return 0
    stride = np.asarray(strides, np.float64)[level_of(boxes)]
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return int(np.ceil(sides / stride / out).max())


def model_zoo_check(script, doc, source, models, default_model, weights_ext, source_side, argv=None,
                    num_classes=80):
    """``main`` of a parity script for a source with several models (detectron2, centermask2):
    ``source_side(model, seed, image_npy, size_npy, weights, out_npz)`` runs in the subprocess
    with torch; this process converts its weights and compares. Returns the exit status."""
    side_args = ("MODEL", "IMAGE_NPY", "SIZE_NPY", weights_ext.upper(), "OUT_NPZ")
    parser = build_parser(doc, None, (512, 768), side_args)
    parser.add_argument("--model", choices=sorted(models), default=default_model)
    args = parser.parse_args(argv)
    if args.source_side:
        name, image_npy, size_npy, weights, out = args.source_side
        source_side(name, args.seed, image_npy, size_npy, weights, out)
        return 0
    args.config = args.config or models[args.model]

    cfg = load_mindseg_config(args)
    work, image, size_hw, image_npy, size_npy = prepare_input(args, cfg, f"parity_{source}_")
    weights, ckpt, out = (os.path.join(work, name)
                          for name in (f"{args.model}.{weights_ext}", "mindseg.ckpt", f"{source}.npz"))
    run_source_side(script, args, (args.model, image_npy, size_npy, weights, out))
    convert(source, weights, ckpt, args, num_classes)
    ours = run_mindseg(cfg, ckpt, num_classes, image, size_hw)
    reference = dict(np.load(out))
    height, width = (int(v) for v in size_hw)
    result = compare(reference, ours, height, width, source)
    result.update(model=args.model, seed=args.seed, image=args.image, canvas=list(args.canvas),
                  **{f"{source}_adaptive_samples": int(reference["adaptive_samples"])},
                  mindseg_pooler_max_samples=int(cfg.model.roi_heads.pooler_max_samples))
    return verdict(result, source)

