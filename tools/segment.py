"""Segment images into any list of labels with a SigLIP / SigLIP2 checkpoint, training-free.

    python tools/segment.py street.jpg --labels "person, people; car; sky; road"
    python tools/segment.py *.jpg --labels-file ade20k_150_synonyms --templates imagenet80 --out ade

For each image, writes ``<stem>_overlay.png`` (coloured overlay with a legend), ``<stem>_labels.png``
(label index per pixel) and ``<stem>.json`` (COCO-style RLE masks, one per label present) into
``--out``, and prints each label's share of the image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siglip2_dense.cli import run_tool

LABEL_HELP = (
    "labels to segment: ';' separates labels, ',' separates synonyms of one label, e.g. "
    "\"person, people; car; sky\" is three labels (a pixel scores the best of a label's synonyms). "
    "\"cat,dog\" is ONE label with two synonyms; write \"cat; dog\" for two"
)


def build_parser() -> argparse.ArgumentParser:
    from siglip2_dense.heads.openvocab import VARIANTS
    from siglip2_dense.openvocab.segmenter import DEFAULT_CHECKPOINT, INFERENCE_MODES
    from siglip2_dense.text.prompts import TEMPLATE_SETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help=LABEL_HELP)
    labels.add_argument(
        "--labels-file", help="a text file with one label per line (synonyms comma-separated), or a packaged "
        "vocabulary: ade20k_150_synonyms"
    )
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT, help=f"full checkpoint (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--out", type=Path, default=Path("segment_out"), help="output folder (default segment_out)")
    parser.add_argument("--variant", choices=VARIANTS, default="plain", help="last-block variant (default plain)")
    parser.add_argument(
        "--threshold", type=float, default=None,
        help="background threshold: pixels whose best probability is below it become 'background' "
        "(index = number of labels); default: none",
    )
    parser.add_argument("--templates", choices=TEMPLATE_SETS, default="single", help="prompt templates (default single)")
    parser.add_argument("--max-num-patches", type=int, default=None, help="NaFlex patch budget (default: the checkpoint's)")
    parser.add_argument("--inference", choices=INFERENCE_MODES, default="native", help="native (default) or slide")
    parser.add_argument("--crop", type=int, default=512, help="sliding-window size in pixels (default 512)")
    parser.add_argument("--stride", type=int, default=341, help="sliding-window step in pixels (default 341)")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--cache-dir", default=None, help="text-embedding cache (default ~/.cache/siglip2_dense/text)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: dynamic int8 linear layers in both towers (CPU; ~1.4-1.7x faster, see README Speed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the vision tower's blocks")
    return parser


def run(args: argparse.Namespace) -> int:
    from siglip2_dense.data.image_io import read_rgb
    from siglip2_dense.errors import MissingFileError
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter
    from siglip2_dense.text.prompts import parse_label_string, read_label_file

    labels = read_label_file(args.labels_file) if args.labels_file else parse_label_string(args.labels)
    if len(labels) == 1 and "," in labels[0]:
        print(f"note: one label with synonyms {labels[0]!r}; separate labels with ';'", file=sys.stderr)
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise MissingFileError(f"no such image file(s): {', '.join(missing)}")
    segmenter = OpenVocabSegmenter.from_pretrained(
        args.model, variant=args.variant, templates=args.templates, max_num_patches=args.max_num_patches,
        background_threshold=args.threshold, device=args.device, cache_dir=args.cache_dir,
        inference=args.inference, crop=(args.crop, args.crop), stride=(args.stride, args.stride),
        quantize=args.quantize, compile=args.compile,
    )
    embedded = segmenter.encode_labels(labels)
    for path in args.images:
        result = segmenter(read_rgb(path, apply_exif_orientation=True), embedded)
        written = result.save(args.out, stem=path.stem, file_name=path.name)
        print(f"{path} ({result.size[1]}x{result.size[0]}) -> {written['overlay'].parent}")
        for label, share in sorted(result.shares().items(), key=lambda item: -item[1]):
            if share > 0:
                print(f"  {100 * share:6.2f}%  {label}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
