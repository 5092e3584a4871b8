"""FLOPs (a multiply-add counts 2) of the models the speed comparisons run, counted on torchvision's
own implementation with ``torch.utils.flop_counter``: Mask R-CNN R50-FPN inference (1000 proposals,
100 detections) and, given a folder holding ``torchvision_shapes.py`` (torchvision's version of
the shapes recipe, ``build(num_classes)``), one training step of that recipe (forward and backward
at 192 px, 64 RoIs, two mask convs; batch 2). docs/benchmarks.md sets them against the
convolution rates of MindSpore and PyTorch.

/tmp/peer/bin/python dev/peer_flops.py [--height 800 --width 1216] [--peers DIR]

Needs torch and torchvision (the peer environment of docs/model_zoo.md).
"""
import argparse
import sys

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode


def counted(run):
    """(total GFLOP, {op: GFLOP}) of ``run()``."""
    with FlopCounterMode(display=False) as counter:
        run()
    per_op = {str(op): flops / 1e9 for op, flops in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() / 1e9, per_op


def inference(height, width):
    torch.manual_seed(0)
    # score threshold 0 so that the mask head runs on the full 100 detections, as mindseg's static graph does
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, box_score_thresh=0.0,
        min_size=height, max_size=width).eval()
    image = [torch.rand(3, height, width)]
    with torch.no_grad():
        return counted(lambda: model(image))


def shapes_step(peers):
    sys.path.insert(0, peers)
    import torchvision_shapes  # the peer's model of the shapes recipe
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
    torch.manual_seed(0)
    model = torchvision_shapes.build(6).train()
    size = 192  # config/shapes/mask_rcnn_shapes.yml
    model.transform.min_size, model.transform.max_size = (size,), size
    model.roi_heads.fg_bg_sampler.batch_size_per_image = 64
    model.roi_heads.mask_head = MaskRCNNHeads(64, (64, 64), 1)
    images = [torch.rand(3, size, size) for _ in range(2)]
    targets = []
    for _ in images:
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 30:120, 20:90] = 1
        masks[1, 40:150, 100:170] = 1
        targets.append({"boxes": torch.tensor([[20.0, 30.0, 90.0, 120.0], [100.0, 40.0, 170.0, 150.0]]),
                        "labels": torch.tensor([1, 2]), "masks": masks})
    return counted(lambda: sum(model(images, targets).values()).backward())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    parser.add_argument("--peers", default=None, help="folder holding torchvision_shapes.py")
    args = parser.parse_args(argv)
    total, per_op = inference(args.height, args.width)
    print(f"Mask R-CNN R50-FPN inference at {args.height}x{args.width}: {total:.0f} GFLOP")
    for op, flops in sorted(per_op.items(), key=lambda kv: -kv[1]):
        print(f"  {op}: {flops:.1f}")
    if args.peers:
        total, _ = shapes_step(args.peers)
        print(f"shapes training step (batch 2, 192 px, forward + backward): {total:.1f} GFLOP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
