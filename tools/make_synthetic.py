"""Write a synthetic data set in a real on-disk format (see siglip2_dense/data/write_formats.py).

    python tools/make_synthetic.py --format ade20k --out /tmp/ade --num 64 --seed 0 --size 512x683
    python tools/make_synthetic.py --format nyu-bts --out /tmp/nyu --num 32 --size 480x640
    python tools/make_synthetic.py --format cocoobject --out /tmp/coco --num 16 --size 480x640

Then read it back with ADE20KDataset(<out>/ADEChallengeData2016, ...), NYUv2Dataset(<out>, layout="bts"
or "mat"), FolderSegmentationDataset(<out>/images, <out>/masks, <out>/class_names.txt),
PascalVOCDataset / PascalVOC20Dataset(<out>/VOCdevkit/VOC2012), PascalContextDataset /
PascalContext59Dataset(<out>/VOCdevkit/VOC2010), COCOStuffDataset / COCOObjectDataset(<out>/coco_stuff164k),
COCOObjectInstancesDataset(<out>/coco_stuff164k/images/val2017, <out>/coco_stuff164k/annotations/
instances_val2017.json) or CityscapesDataset(<out>/cityscapes).
"""

from __future__ import annotations

import argparse
import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.data.synthetic import parse_size
from siglip2_dense.data.write_formats import FORMATS, write_synthetic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--num", type=int, required=True, help="number of scenes (>= 2; every 4th from 1 is eval)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="HxW, e.g. 480x640 (default 64x64)")
    return parser


def run(args: argparse.Namespace) -> int:
    root = write_synthetic(args.format, args.out, args.num, args.seed, args.size)
    print(f"wrote {args.num} {args.format} scenes to {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
