"""Write the synthetic shapes dataset in the COCO 2017 layout.

python scripts/make_synthetic_coco.py --out datasets/synthetic [--num-train 64] [--num-val 16]
                                      [--style distinct|outline]

The "distinct" style (default) gives each class its own outline, colour family and surface
pattern; "outline" paints every shape in a random hue, so only the outline names the class.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindseg.dataset.synthetic import STYLES, make_synthetic_coco  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256, help="long side in pixels")
    parser.add_argument("--style", choices=STYLES, default="distinct",
                        help="distinct: classes differ in outline, colour and pattern; "
                             "outline: only in outline (random hues)")
    args = parser.parse_args()
    info = make_synthetic_coco(args.out, num_train=args.num_train, num_val=args.num_val,
                               seed=args.seed, image_size=args.image_size, style=args.style)
    print(f"wrote {info['dataset_dir']} ({info['style']} style, {info['num_classes']} classes: "
          f"{', '.join(info['class_names'])}; category ids {info['category_ids']})")
    for split in ("train", "val"):
        print(f"  {split}: {info[f'num_{split}_images']} images "
              f"({info[f'num_{split}_empty_images']} without annotations), "
              f"{info[f'num_{split}_annotations']} annotations -> {info[f'{split}_json']}")


if __name__ == "__main__":
    main()
