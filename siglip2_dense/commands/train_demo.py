"""Train the demo SigLIP2 checkpoint on the synthetic world, measure it, and record how.

    nohup siglip2-dense train-demo --out demo-siglip2-retrained --seed 0 > demo.log 2>&1 &

(29 minutes on 2 CPU cores; a new folder, so the shipped assets/demo-siglip2 stays as it is.)

Writes the checkpoint (config.json, model.safetensors, tokenizer files, preprocessor_config.json)
and ``training.json`` (recipe, seed, steps, training time, measured figures) into ``--out``.
During training, ``--evaluate-every`` measures zero-shot accuracy and open-vocabulary mIoU on
validation scenes (training seed range, past the pool, never trained on); the final figures are
measured on the held-out scenes (:func:`siglip2_dense.demo.data.held_out_scene_seed`), which
nothing in training sees. See :mod:`siglip2_dense.demo.training` for the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from siglip2_dense.demo.recipe import DemoRecipe

    parser = argparse.ArgumentParser(prog="siglip2-dense train-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-siglip2-retrained"),
                        help="checkpoint folder (default demo-siglip2-retrained)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--evaluate-every", type=int, default=0, help="validation figures every N steps (0: never)")
    parser.add_argument("--validation-scenes", type=int, default=100, help="scenes for --evaluate-every")
    parser.add_argument("--held-out-scenes", type=int, default=200, help="held-out scenes for the final figures")
    for field in dataclasses.fields(DemoRecipe):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default,
                            help=f"recipe: {field.name} (default {field.default})")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from siglip2_dense.demo.evaluation import evaluate_demo_checkpoint, held_out_scenes, validation_scenes
    from siglip2_dense.demo.recipe import DemoRecipe
    from siglip2_dense.demo.training import train_demo_model, write_training_record

    torch.set_num_threads(args.threads)
    recipe = DemoRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoRecipe)})
    cache_dir = tempfile.mkdtemp(prefix="demo-text-cache-")

    def log(record: dict) -> None:
        print(json.dumps(record), flush=True)

    validation = validation_scenes(recipe.seed, recipe.pool_size, args.validation_scenes, recipe.scene_size)

    def evaluate(checkpoint: Path, step: int) -> dict:
        return {"validation": evaluate_demo_checkpoint(checkpoint, validation, variants=("plain",), cache_dir=cache_dir)}

    record = train_demo_model(recipe, args.out, log=log, evaluate=evaluate if args.evaluate_every else None,
                              evaluate_every=args.evaluate_every)
    record["threads"] = args.threads
    held_out = held_out_scenes(args.held_out_scenes, recipe.scene_size)
    record["held_out"] = {"scenes": len(held_out), "size": recipe.scene_size,
                          **evaluate_demo_checkpoint(args.out, held_out, cache_dir=cache_dir)}
    log({"held_out": record["held_out"]})
    write_training_record(record, args.out)
    return 0

