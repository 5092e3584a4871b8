"""A toy network and dataset that follow docs/contracts.md, for testing the engine without the
real models: ``PYTHONPATH=. python tests/toy.py output_dir=DIR [key=value ...]`` trains it (also
under msrun / mpirun) and writes each rank's final weights and the image ids it was fed."""
import argparse
import json
import os

import numpy as np

import mindseg  # noqa: F401  (before mindspore: oneDNN CPU kernels)

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn, ops

TOY_CANVAS = 32
TOY_MAX_INSTANCES = 4
TOY_MASK_CROP = 8
TOY_NUM_CLASSES = 3


class ToyNet(nn.Cell):
    """Conv + BN + FC that predicts, per image, class presence and the mean gt box.

    Takes the training inputs of the model contract and returns ``(loss_cls, loss_box)``."""

    loss_names = ("loss_cls", "loss_box")

    def __init__(self, num_classes=TOY_NUM_CLASSES, channels=8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, has_bias=False, weight_init="he_uniform")
        self.norm = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, has_bias=True, weight_init="he_uniform")
        self.cls_fc = nn.Dense(channels, num_classes, weight_init="normal")
        self.box_fc = nn.Dense(channels, 4, weight_init="normal")
        self.num_classes = num_classes

    def construct(self, image, image_size, gt_boxes, gt_labels, gt_valid, gt_crowd, gt_masks):
        feat = ops.relu(self.conv2(ops.relu(self.norm(self.conv(image)))))
        feat = feat.mean(axis=(2, 3))
        pred_cls_logits = self.cls_fc(feat)
        pred_box = self.box_fc(feat)
        valid = ops.logical_and(gt_valid, ops.logical_not(gt_crowd)).astype(ms.float32)
        onehot = ops.one_hot(gt_labels, self.num_classes, ms.Tensor(1.0), ms.Tensor(0.0))
        gt_present = (onehot * valid[..., None]).max(axis=1)
        loss_cls = ops.binary_cross_entropy_with_logits(
            pred_cls_logits, gt_present, ops.ones_like(gt_present), ops.ones_like(gt_present))
        num_valid = ops.maximum(valid.sum(axis=1, keepdims=True), 1.0)
        scale = ops.tile(image_size[:, ::-1], (1, 2))
        mask_fill = gt_masks.astype(ms.float32).mean(axis=(2, 3))
        gt_mean_box = (gt_boxes * (valid * mask_fill)[..., None]).sum(axis=1) / num_valid / scale
        loss_box = ops.abs(pred_box - gt_mean_box).mean()
        return loss_cls, loss_box


class ToySource:
    """``num_images`` deterministic random samples with the contract's columns (unbatched)."""

    columns = ("image", "image_size", "scale", "image_id", "gt_boxes", "gt_labels", "gt_valid",
               "gt_crowd", "gt_masks")

    def __init__(self, num_images=16, seed=0):
        self.num_images = num_images
        self.seed = seed

    def __len__(self):
        return self.num_images

    def __getitem__(self, index):
        rng = np.random.default_rng(self.seed * 100003 + index)
        image = rng.standard_normal((3, TOY_CANVAS, TOY_CANVAS)).astype(np.float32)
        num = int(rng.integers(1, TOY_MAX_INSTANCES + 1))
        xy0 = rng.uniform(0, TOY_CANVAS / 2, (TOY_MAX_INSTANCES, 2))
        wh = rng.uniform(2, TOY_CANVAS / 2, (TOY_MAX_INSTANCES, 2))
        boxes = np.concatenate([xy0, xy0 + wh], axis=1).astype(np.float32)
        valid = np.arange(TOY_MAX_INSTANCES) < num
        boxes[~valid] = 0
        labels = np.where(valid, rng.integers(0, TOY_NUM_CLASSES, TOY_MAX_INSTANCES), 0)
        masks = (rng.random((TOY_MAX_INSTANCES, TOY_MASK_CROP, TOY_MASK_CROP)) > 0.5).astype(np.uint8)
        image[:, :4, :4] += labels[0]
        return (image, np.array([TOY_CANVAS, TOY_CANVAS], np.float32), np.ones(2, np.float32),
                np.int32(index + 1), boxes, labels.astype(np.int32), valid, np.zeros_like(valid),
                masks)


def toy_dataset(batch_size=2, rank=0, world=1, num_images=16, shuffle=False, seed=0):
    """A batched, rank-sharded ``GeneratorDataset`` over :class:`ToySource`."""
    dataset = ds.GeneratorDataset(ToySource(num_images, seed), column_names=list(ToySource.columns),
                                  shuffle=shuffle, num_shards=world if world > 1 else None,
                                  shard_id=rank if world > 1 else None, num_parallel_workers=1)
    return dataset.batch(batch_size, drop_remainder=True)


def toy_config(overrides=()):
    """config/base.yml with the toy's sizes and ``key=value`` overrides applied."""
    from mindseg.config import load_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    toy = ["device_target=CPU", "data.batch_size=2", "train.base_lr=0.01",
           "train.reference_batch_size=2", "train.warmup_iters=2", "train.lr_steps=[6]",
           "train.max_steps=8", "train.ckpt_interval=4", "train.log_interval=2"]
    return load_config(os.path.join(root, "config", "base.yml"), toy + list(overrides))


def net_weights(net):
    """``{name: array}`` of every parameter (BN statistics included)."""
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def _fake_eval_hooks(args, cfg, runtime):
    """An EvalHook whose evaluation (rank 0 only) returns the next of ``--fake_eval``'s values."""
    if not args.fake_eval:
        return []
    from mindseg.engine.hooks import EvalHook
    values = iter(float(v) for v in args.fake_eval.split(","))

    def evaluate(net):
        value = next(values)
        return {"bbox": {"AP": value}, "segm": {"AP": value}}
    return [EvalHook(evaluate if runtime.is_main else None, args.eval_every, cfg.output_dir, patience=1,
                     runtime=runtime)]


def main(argv=None):
    from mindseg.engine.trainer import train
    from mindseg.runtime import init_runtime
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--per_rank_dir", action="store_true",
                        help="use output_dir/rank<r> per rank, to see which rank wrote what")
    parser.add_argument("--fake_eval", default="",
                        help="evaluate every --eval_every steps: rank 0's segm AP of each evaluation, "
                             "comma-separated (early stop after 1 evaluation without improvement)")
    parser.add_argument("--eval_every", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = toy_config(args.overrides)
    runtime = init_runtime(cfg)
    if args.per_rank_dir:
        cfg.output_dir = os.path.join(cfg.output_dir, f"rank{runtime.rank}")
    net = ToyNet()
    dataset = toy_dataset(cfg.data.batch_size, runtime.rank, runtime.world, args.num_images,
                          shuffle=args.shuffle, seed=cfg.seed)
    seen = [int(i) for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True)
            for i in batch["image_id"]]
    initial = net_weights(net)
    summary = train(cfg, net, dataset, runtime, hooks=_fake_eval_hooks(args, cfg, runtime))
    suffix = "" if args.per_rank_dir else f"_rank{runtime.rank}"
    os.makedirs(cfg.output_dir, exist_ok=True)
    np.savez(os.path.join(cfg.output_dir, f"initial_weights{suffix}.npz"), **initial)
    np.savez(os.path.join(cfg.output_dir, f"weights{suffix}.npz"), **net_weights(net))
    with open(os.path.join(cfg.output_dir, f"seen{suffix}.json"), "w") as f:
        json.dump({"image_ids": seen, "world": runtime.world, "summary": summary}, f)
    return summary


if __name__ == "__main__":
    main()
