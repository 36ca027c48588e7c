"""Train a dense head (and optionally the backbone) from an experiment config.

One process (CPU or one GPU)::

    siglip2-dense train --config configs/ade20k_linear_siglip2-b16-naflex.yaml data.root=/data/ADEChallengeData2016
    siglip2-dense train --config configs/ade20k_linear_siglip2-b16-naflex.yaml train.lr=1e-4 data.root=/data/ade

Several processes on one machine (DDP; train.batch_size is the global batch, split over processes)::

    torchrun --nproc_per_node 8 -m siglip2_dense.cli train --config configs/ade20k_linear_siglip2-b16-naflex.yaml

Continue a run that stopped (the newest complete checkpoint in train.output_dir)::

    siglip2-dense train --config configs/ade20k_linear_siglip2-b16-naflex.yaml --resume

Overrides are dotted ``section.key=value`` pairs, parsed as YAML (``model.layers=[-4,-3,-2,-1]``).
The run's folder (train.output_dir, default runs/<name>) receives config.yaml, log.jsonl,
checkpoints/step_<N>/ and best/ (a DenseModel directory + metrics.json), or final/ instead of best/ with
train.reported_checkpoint=final (the last step's model, as DINOv2 / DINOv3 report). The data set and the run's
folder are checked before any model is loaded: a folder that already holds files is refused unless
--resume (continue it) or --overwrite (start a new run there; the earlier run's files are replaced).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siglip2-dense train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    again.add_argument("--overwrite", action="store_true",
                       help="start a new run even though train.output_dir already holds files")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=1e-4")
    return parser


def check_output_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse ``out`` when it is a file, or a folder with files in it and neither ``resume`` nor ``overwrite``.

    Raises:
        RequestError: what is in the way, and the two flags that say what to do with it.
    """
    from siglip2_dense.errors import RequestError

    if out.exists() and not out.is_dir():
        raise RequestError(f"train.output_dir {out} is a file; expected a folder (or a path that does not exist)")
    if resume or overwrite or not out.is_dir():
        return
    entries = sorted(entry.name for entry in out.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RequestError(
            f"train.output_dir {out} already holds a run ({shown}); pass --resume to continue it, --overwrite to "
            f"start a new run there (its files replace the earlier run's), or set train.output_dir=<new folder>"
        )


def check_data(config) -> None:
    """Open the training and validation splits (lists their files, reads nothing big); raise what is wrong."""
    from siglip2_dense.build import build_dataset

    for split in (config.data.train_split, config.data.val_split):
        build_dataset(config, split)


def run(args: argparse.Namespace) -> int:
    from siglip2_dense.config import load_config, output_dir

    overrides = list(args.overrides) + (["train.resume=auto"] if args.resume else [])
    config = load_config(args.config, overrides)
    resuming = args.resume or bool(config.train.resume)  # --resume, or train.resume=<auto | a checkpoint>
    check_output_folder(output_dir(config), resuming, args.overwrite)
    check_data(config)

    from siglip2_dense.training.engine import train

    result = train(config)
    reported = "final" if result.get("final") is not None else "best"
    if result[reported] is not None:
        print(json.dumps({reported: result[reported], "output_dir": result["output_dir"]}))
    return 0
