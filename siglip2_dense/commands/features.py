"""Show what a backbone sees: the first three principal components of an image's patch features as RGB.

    siglip2-dense features street.jpg
    siglip2-dense features street.jpg --model google/siglip2-so400m-patch16-naflex \\
        --max-num-patches 1024 --layer -4 --out street_pca.png

Writes one PNG (default <image stem>_pca.png in the current folder): the image, then the PCA
colours of its patches (computed over the real patches, each component min-max scaled) at the
image's size. NaFlex checkpoints keep the image's aspect ratio within --max-num-patches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_MODEL = "google/siglip2-base-patch16-naflex"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siglip2-dense features", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path, help="an image file")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint, hub id or folder (default {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, default=None, help="output PNG (default <image stem>_pca.png)")
    parser.add_argument("--max-num-patches", type=int, default=None, help="NaFlex patch budget (default: the model's)")
    parser.add_argument("--layer", type=int, default=-1, help="block index, negative from the end (default -1)")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, ...")
    return parser


def run(args: argparse.Namespace) -> int:
    from siglip2_dense.backbone.feature_pca import feature_pca_picture
    from siglip2_dense.backbone.siglip import load_backbone
    from siglip2_dense.data.image_io import read_rgb, write_rgb

    out = args.out if args.out is not None else Path(f"{args.image.stem}_pca.png")
    image = read_rgb(args.image, apply_exif_orientation=True)
    backbone = load_backbone(args.model, layers=[args.layer], norm=True, device=args.device)
    picture = feature_pca_picture(backbone, image, max_num_patches=args.max_num_patches)
    write_rgb(out, picture)
    print(f"{args.image} ({image.shape[0]}x{image.shape[1]}, HxW) -> {out}")
    return 0

