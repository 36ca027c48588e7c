"""Segment images into any list of labels with a SigLIP / SigLIP2 checkpoint, training-free.

    siglip2-dense segment street.jpg --labels "person, people; car; sky; road"
    siglip2-dense segment photos/ --recursive --labels-file ade20k_150_synonyms --templates imagenet80 --out ade
    siglip2-dense segment "shots/**/*.png" --labels "sky; tree" --batch-size 16 --out shots_out
    torchrun --nnodes 4 --nproc_per_node 8 ... -m siglip2_dense.cli segment photos/ --recursive --labels ...

Inputs are image files, folders (--recursive for sub-folders) and glob patterns. For each image,
writes ``<stem>_overlay.png`` (the image tinted by label, with a legend of every label and its share),
``<stem>_labels.png`` (a palette PNG: pixel value = label index, shown in the overlay's colours) and
``<stem>.json`` (COCO-style RLE masks) under ``--out``, keeping the image's path relative to the inputs'
common folder (``a/x.png`` -> ``<out>/a/x_overlay.png``), so names never collide. ``<out>/results.jsonl``
has one line per image (path, size as [H, W], every label's share, the files). A rerun skips images
whose outputs are complete, so a stopped run continues where it was. Under ``torchrun`` the images are
split between the processes (each done once); the first process writes results.jsonl at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siglip2_dense.text.prompts import TEMPLATE_SETS

# The segmenter's choices (siglip2_dense.heads.openvocab.VARIANTS, siglip2_dense.openvocab.segmenter's
# INFERENCE_MODES and DEFAULT_CHECKPOINT; a test checks they agree), here so that --help imports no torch.
# the last-block variants that need no second backbone (proxyclip does: use eval-openvocab --proxy)
VARIANTS = ("plain", "sclip", "naclip", "clearclip", "value")
INFERENCE_MODES = ("native", "slide")
DEFAULT_CHECKPOINT = "google/siglip2-base-patch16-naflex"

LABEL_HELP = (
    "labels to segment: ';' or a new line separates labels, ',' separates synonyms of one label, e.g. "
    "\"person, people; car; sky\" is three labels (a pixel scores the best of a label's synonyms). "
    "\"cat,dog\" is ONE label with two synonyms; write \"cat; dog\" for two"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siglip2-dense segment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--recursive", action="store_true", help="include the images of sub-folders (and ** in patterns)")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help=LABEL_HELP)
    labels.add_argument(
        "--labels-file", help="a text file with one label per line (synonyms comma-separated), or a packaged "
        "vocabulary: ade20k_150_synonyms"
    )
    parser.add_argument("--model", default=DEFAULT_CHECKPOINT, help=f"full checkpoint (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--out", type=Path, default=Path("segment_out"), help="output folder (default segment_out)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward in native mode (default 8)")
    parser.add_argument("--variant", choices=VARIANTS, default="plain", help="last-block variant (default plain)")
    parser.add_argument(
        "--threshold", type=float, default=None,
        help="background threshold: pixels whose best probability is below it become 'background' "
        "(index = number of labels); default: none",
    )
    parser.add_argument("--head", default=None,
                        help="a trained open-vocabulary head's folder (e.g. cost_aggregation, from tools/train.py) on "
                             "--model's towers; --variant and --templates then do not apply")
    parser.add_argument("--templates", choices=TEMPLATE_SETS, default="single", help="prompt templates (default single)")
    parser.add_argument("--max-num-patches", type=int, default=None, help="NaFlex patch budget (default: the checkpoint's)")
    parser.add_argument("--inference", choices=INFERENCE_MODES, default="native", help="native (default) or slide")
    parser.add_argument("--crop", type=int, default=512, help="sliding-window size in pixels (default 512)")
    parser.add_argument("--stride", type=int, default=341, help="sliding-window step in pixels (default 341)")
    parser.add_argument("--device", default=None, help="cpu (default), cuda (under torchrun: each process's GPU)")
    parser.add_argument("--cache-dir", default=None, help="text-embedding cache (default ~/.cache/siglip2_dense/text)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: dynamic int8 linear layers in both towers (CPU inference; see the README's Speed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the vision tower's blocks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="do not print each image's label shares")
    return parser


def parse_labels(args: argparse.Namespace) -> list[str]:
    """The labels of ``--labels`` (``;`` or new lines between labels) or ``--labels-file``."""
    from siglip2_dense.errors import RequestError
    from siglip2_dense.text.prompts import LABEL_SEPARATOR, parse_label_string, read_label_file

    if args.labels_file:
        labels = read_label_file(args.labels_file)
    else:
        labels = parse_label_string("\n".join(args.labels.splitlines()).replace("\n", LABEL_SEPARATOR))
    if not labels:
        raise RequestError("no labels given: --labels needs at least one, e.g. --labels \"sky; tree\"")
    if len(labels) == 1 and "," in labels[0]:
        print(f"note: one label with synonyms {labels[0]!r}; separate labels with ';'", file=sys.stderr)
    return labels


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from siglip2_dense.commands.image_collection import collect_images, is_done, shard, write_results
    from siglip2_dense.data.image_io import read_rgb
    from siglip2_dense.distributed import barrier, close_processes, init_processes
    from siglip2_dense.errors import RequestError
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    if args.batch_size < 1:
        raise RequestError(f"--batch-size {args.batch_size}: expected at least 1")
    labels = parse_labels(args)
    jobs = collect_images(args.images, args.recursive)
    context = init_processes(torch.device((args.device or "cpu").split(":")[0]))
    try:
        mine = shard(jobs, context.rank, context.world_size)
        todo = [job for job in mine if not is_done(job, args.out, labels)]
        if todo:
            segmenter = OpenVocabSegmenter.from_pretrained(
                args.model, variant=args.variant, templates=args.templates, max_num_patches=args.max_num_patches,
                background_threshold=args.threshold, device=context.device if args.device else None,
                cache_dir=args.cache_dir, inference=args.inference, crop=(args.crop, args.crop),
                stride=(args.stride, args.stride), batch_size=args.batch_size, quantize=args.quantize,
                compile=args.compile, head=args.head,
            )
            embedded = segmenter.encode_labels(labels)
            hidden = True if args.no_progress or not context.is_main else None  # None: a bar on terminals only
            bar = tqdm(total=len(todo), unit="image", disable=hidden,
                       desc=f"segment ({len(mine) - len(todo)} done before)" if len(todo) < len(mine) else "segment")
            for start in range(0, len(todo), args.batch_size):
                batch = todo[start:start + args.batch_size]
                arrays = [read_rgb(job.source, apply_exif_orientation=True) for job in batch]
                for job, result in zip(batch, segmenter.segment_batch(arrays, embedded)):
                    result.save(args.out / job.output.parent, stem=job.output.name, file_name=job.source.as_posix())
                    if not args.quiet:
                        _report(job, result, args.out, bar)
                    bar.update(1)
            bar.close()
        if context.distributed:
            barrier()  # every process's images are written before results.jsonl is built
        if context.is_main:
            path = write_results(jobs, args.out)
            skipped = "" if context.distributed or len(todo) == len(jobs) else f" ({len(jobs) - len(todo)} done before)"
            print(f"{len(jobs)} images{skipped} -> {args.out}; one line per image in {path}")
    finally:
        close_processes(context)
    return 0


def _report(job, result, out: Path, bar) -> None:
    """Print one image's size (HxW) and the shares of the labels it found, above the progress bar."""
    height, width = result.size
    lines = [f"{job.source} ({height}x{width}, HxW) -> {job.outputs(out)['overlay'].parent}"]
    lines += [f"  {100 * share:6.2f}%  {label}" for label, share in sorted(result.shares().items(), key=lambda x: -x[1])
              if share > 0]
    bar.write("\n".join(lines))
