"""Evaluate a trained dense model (or a SigLIP checkpoint zero-shot) on an experiment's validation split.

A trained model (a run's best/, any DenseModel.save_pretrained folder, or a step checkpoint)::

    siglip2-dense eval --config configs/ade20k_linear_siglip2-b16-naflex.yaml \\
        --checkpoint runs/ade20k_linear_siglip2-b16-naflex/best data.root=/data/ADEChallengeData2016
    siglip2-dense eval --config configs/nyu_bins_siglip2-b16-naflex.yaml \\
        --checkpoint runs/nyu_bins_siglip2-b16-naflex/best --show-dir pictures data.root=/data/nyu

Zero-shot ADE20K-150 with the synonym vocabulary (short side 512, sliding window 512 / 341)::

    siglip2-dense eval --config configs/zeroshot/ade20k_siglip2-b16-naflex.yaml data.root=/data/ADEChallengeData2016
    siglip2-dense eval --config configs/ade20k_linear_siglip2-b16-naflex.yaml \\
        --open-vocab google/siglip2-so400m-patch16-naflex data.root=/data/ADEChallengeData2016

One benchmark of the training-free open-vocabulary table (the same mIoU as eval-openvocab's column)::

    siglip2-dense eval --config configs/zeroshot/benchmarks/voc21_siglip2-b16-naflex.yaml \\
        data.root=/data/VOCdevkit/VOC2012

Several processes (the images are split; the metrics equal one process's; rank 0 writes)::

    torchrun --nproc_per_node 8 tools/eval.py --config ... --checkpoint ...

Writes metrics.json and metrics.txt (also printed) into --out (default <checkpoint>/eval_<split>,
or runs/<name>/eval_<split> zero-shot); --show-dir adds image | ground truth | prediction PNGs (titled with the file and its mIoU or abs_rel, with a legend or a colour bar in metres).
Overrides are dotted key=value pairs, as for tools/train.py (eval.mode=native, train.device=cuda).
"""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siglip2-dense eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/ and configs/zeroshot/)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="a DenseModel folder (a run's best/) or a step checkpoint folder")
    model.add_argument("--open-vocab", metavar="MODEL",
                       help="evaluate this full SigLIP / SigLIP2 checkpoint (hub id or folder) zero-shot")
    parser.add_argument("--out", help="metrics folder (default <checkpoint>/eval_<split>)")
    parser.add_argument("--show-dir", help="write image | ground truth | prediction pictures here")
    parser.add_argument("--head", type=int, default=None, help="step checkpoints of a head grid: which head")
    parser.add_argument("--colour-map", choices=("viridis", "turbo"), default="viridis", help="depth pictures")
    parser.add_argument("--text-cache-dir", default=None,
                        help="zero-shot text-embedding cache (default ~/.cache/siglip2_dense/text)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. data.root=/data/ade")
    return parser


def run(args: argparse.Namespace) -> int:
    from siglip2_dense.evaluation.run import load_eval_config, run_evaluation

    config = load_eval_config(args.config, args.overrides, args.checkpoint, args.open_vocab)
    result = run_evaluation(
        config, checkpoint=args.checkpoint, out=args.out, show_dir=args.show_dir, head=args.head,
        text_cache_dir=args.text_cache_dir, colour_map=args.colour_map, progress=not args.no_progress,
    )
    if result.is_main:
        print(result.table, end="")
        print(f"wrote {result.out_dir / 'metrics.json'} and metrics.txt"
              + (f"; pictures in {args.show_dir}" if args.show_dir else ""))
    return 0

