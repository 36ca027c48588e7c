"""Train a dense head (and optionally the backbone) from an experiment config.

One process (CPU or one GPU)::

    python tools/train.py --config configs/ade20k_linear_siglip2-b16-naflex.yaml
    python tools/train.py --config configs/ade20k_linear_siglip2-b16-naflex.yaml train.lr=1e-4 data.root=/data/ade

Several processes on one machine (DDP; train.batch_size is the global batch, split over processes)::

    torchrun --nproc_per_node 8 tools/train.py --config configs/ade20k_linear_siglip2-b16-naflex.yaml

Continue a run that stopped (the newest complete checkpoint in train.output_dir)::

    python tools/train.py --config configs/ade20k_linear_siglip2-b16-naflex.yaml --resume

Overrides are dotted ``section.key=value`` pairs, parsed as YAML (``model.layers=[-4,-3,-2,-1]``).
The run's folder (train.output_dir, default runs/<name>) receives config.yaml, log.jsonl,
checkpoints/step_<N>/ and best/ (a DenseModel directory + metrics.json), or final/ instead of best/ with
train.reported_checkpoint=final (the last step's model, as DINOv2 / DINOv3 report).
"""

from __future__ import annotations

import argparse
import json
import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.config import load_config
from siglip2_dense.training.engine import train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=1e-4")
    return parser


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + (["train.resume=auto"] if args.resume else [])
    result = train(load_config(args.config, overrides))
    reported = "final" if result.get("final") is not None else "best"
    if result[reported] is not None:
        print(json.dumps({reported: result[reported], "output_dir": result["output_dir"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
