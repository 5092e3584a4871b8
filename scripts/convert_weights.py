"""Convert a published PyTorch checkpoint into a mindseg .ckpt.

python scripts/convert_weights.py --source torchvision|detectron2|centermask2 --input FILE
    --output FILE.ckpt [--config CFG] [--num_classes K] [--allow_missing] [key=value ...]

--config is the mindseg config whose model receives the weights and whose switches match the
source's conventions (default: config/maskrcnn/mask_rcnn_resnet50_fpn_<source>.yml for torchvision
and detectron2; centermask2 needs one). Reading .pth needs torch (optional). Every unmapped source
key and missing mindseg parameter is listed; a shape mismatch stops the conversion. A model of 80
classes is written with COCO's class names and category ids, as the published weights were trained
on them, so that eval, export and infer need no dataset and fine-tuning (train.py --pre_trained)
keeps the rows of the classes a new dataset shares with COCO. See docs/model_zoo.md.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mindseg  # noqa: E402,F401  (before mindspore)
from mindseg.config import ConfigError, load_config  # noqa: E402
from mindseg.engine.checkpoint import META_KEY, model_meta  # noqa: E402
from mindseg.utils.weights.coco_classes import coco_class_info  # noqa: E402
from mindseg.utils.convert_weights import (DEFAULT_CONFIGS, SOURCES, WeightConversionError,  # noqa: E402
                                           convert_checkpoint)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--input", required=True, help=".pth (torchvision, centermask2) or .pkl (detectron2)")
    parser.add_argument("--output", required=True, help="the .ckpt to write")
    parser.add_argument("--config", default=None, help="mindseg config of the target model")
    parser.add_argument("--num_classes", type=int, default=80, help="foreground classes of the mindseg model")
    parser.add_argument("--allow_missing", action="store_true",
                        help="write the checkpoint even when some mindseg parameters have no source key")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args(argv)
    sys.unraisablehook = lambda unraisable: None  # Cell.__del__ noise at exit
    config = args.config or DEFAULT_CONFIGS.get(args.source)
    if config is None:
        parser.error(f"--config is needed for --source {args.source} (e.g. a config/centermask/*.yml)")
    if not os.path.isabs(config) and not os.path.exists(config):
        config = os.path.join(REPO, config)
    try:
        cfg = load_config(config, args.overrides)
        classes = coco_class_info(args.num_classes)
        meta = {META_KEY: json.dumps(model_meta(cfg, classes))} if classes else None
        report = convert_checkpoint(args.source, args.input, args.output, cfg, num_classes=args.num_classes,
                                    allow_missing=args.allow_missing, append_dict=meta)
    except (ConfigError, WeightConversionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    print(f"wrote {args.output} for {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
