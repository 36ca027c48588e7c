"""Write a synthetic data set in a real on-disk format (see siglip2_dense/data/write_formats.py).

    siglip2-dense make-synthetic --format ade20k --out /tmp/ade --num 64 --seed 0 --size 512x683
    siglip2-dense make-synthetic --format nyu-bts --out /tmp/nyu --num 32 --size 480x640
    siglip2-dense make-synthetic --format folder --out /tmp/mydata --num 64 --size 64x64

Then read it back with ADE20KDataset(<out>/ADEChallengeData2016, ...), NYUv2Dataset(<out>, layout="bts"
or "mat"), FolderSegmentationDataset(<out>/<split>/images, <out>/<split>/masks, <out>/class_names.txt)
(or configs/folder_linear_siglip2-b16-naflex.yaml with data.root=<out>), PascalVOCDataset /
PascalVOC20Dataset(<out>/VOCdevkit/VOC2012), PascalContextDataset / PascalContext59Dataset(<out>/VOCdevkit/
VOC2010), COCOStuffDataset / COCOObjectDataset(<out>/coco_stuff164k), COCOObjectInstancesDataset(<out>/
coco_stuff164k/images/val2017, <out>/coco_stuff164k/annotations/instances_val2017.json),
CityscapesDataset(<out>/cityscapes), ADE20KFullDataset(<out>/ADE20K_2021_17_01) or
PascalContext459Dataset(<out>/VOCdevkit/VOC2010).
"""

from __future__ import annotations

import argparse

# The writers' format names (siglip2_dense.data.write_formats.FORMATS, checked equal by a test), listed here
# so that --help does not import the data wing (and torch).
FORMATS = ("ade20k", "nyu-bts", "nyu-mat", "folder", "normals-folder", "navi", "voc", "context", "cocostuff",
           "cocoobject", "cityscapes", "ade847", "context459")


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (e.g. ``"480x640"``) -> ``(height, width)``; argparse reports a bad value."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"size {text!r} is not HxW (height x width), e.g. 480x640")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siglip2-dense make-synthetic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--num", type=int, required=True, help="number of scenes (>= 2; every 4th from 1 is eval)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="HxW, e.g. 480x640 (default 64x64)")
    return parser


def run(args: argparse.Namespace) -> int:
    from siglip2_dense.data.write_formats import write_synthetic

    root = write_synthetic(args.format, args.out, args.num, args.seed, args.size)
    print(f"wrote {args.num} {args.format} scenes ({args.size[0]}x{args.size[1]}, HxW) to {root}")
    return 0
