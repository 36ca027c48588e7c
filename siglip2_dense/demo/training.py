"""Train the demo SigLIP2 model from scratch on the synthetic world; the loop reads top to bottom.

    python tools/train_demo_model.py --out assets/demo-siglip2 --seed 0

Recipe (:class:`DemoRecipe`): a pool of training scenes is rendered once at 128x128 (with a
half-size copy) and sampled with replacement, each image flipped left-right half the time. NaFlex
sequence lengths alternate: most steps see the half-size images (8x8 patches, cheap), every
``full_res_every``-th step the full-size ones (16x16 patches, the resolution of evaluation), so the
tower works at both, as SigLIP2's NaFlex variant trains over several sequence lengths. Each step
adds four sigmoid losses (:mod:`siglip2_dense.demo.losses`), all scored with the model's own
``logit_scale`` / ``logit_bias``:

- SigLIP's image-caption loss;
- the same pairwise loss between two template draws of the prompts (:mod:`siglip2_dense.demo.prompts`:
  the 17 class names, the colour words, the shape words), which separates the prompts from the
  first step (without it the text tower, pooling a pad token, maps "red circle"
  and "red square" to one point for hundreds of steps);
- a multi-positive loss of each image against every prompt present (what zero-shot classification
  asks of the pooled embedding);
- a per-patch loss through the MAP head's value path, exactly the embedding the training-free
  open-vocabulary head scores, against each prompt's share of the patch. This is the
  localisation-aware part: at this scale it takes the place of SigLIP2's LocCa decoder (which
  learns where a phrase is from region captions) by supervising the patch embeddings with the exact
  masks the synthetic world provides; self-distillation and masked prediction were left out, their
  teacher passes would double the cost of a step.

Prompts use the toolkit's single template half the time, otherwise one of the 80 ImageNet
templates. AdamW (weight decay 1e-4 on matrices), linear warm-up, cosine decay, gradient clipping;
SigLIP's ``logit_scale = log 10``, ``logit_bias = -10`` start, the two scalars at ten times the
learning rate so that they can move within a short run.

What the defaults were weighed against (seed 0, 30 minutes on 2 cores; held-out figures on 200
scenes; "probe" is a fast stand-in for the frozen linear probe: logistic regression on the last four
blocks' patch features of 600 scenes, upsampled and scored on 200 more, which gives 57.5 where
tools/train.py's probe gives 57.1). The defaults: zero-shot 92.5%, open-vocabulary mIoU 57.9,
probe 57.5. A 2-D sine-cosine start for the position table: 90.5 / 52.2 / 55.2. That plus every
second step at full resolution (2600 steps, to fit the time): 72.0 / 40.3 / 41.3. In 600-step
screens every variant tried (full resolution only, batch 48 for 1000 steps, lr 5e-3, the
sine-cosine start) probes at 16-20 mIoU with the colour right on 99% of object pixels and the
shape on 29-32% (chance 25%): shape is learned late, in the last two thirds of a run. Trading
half-size steps for full-size ones cost far more than its 13% fewer steps would explain.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from siglip2_dense.config import TrainConfig
from siglip2_dense.demo.data import (
    ScenePool,
    patchify,
    render_pool,
    training_scene_seed,
)
from siglip2_dense.demo.losses import class_balanced_weights, pairwise_sigmoid_loss, patch_loss, presence_loss
from siglip2_dense.demo.model import DEMO_ARCHITECTURE, build_demo_model
from siglip2_dense.demo.prompts import prompt_ids, prompt_presence, prompt_targets, tokenize
from siglip2_dense.demo.recipe import DemoRecipe
from siglip2_dense.demo.tokenizer import build_tokenizer, save_tokenizer
from siglip2_dense.files import replace_directory, write_json
from siglip2_dense.heads.openvocab import OpenVocabHead
from siglip2_dense.training.optim import build_scheduler, split_by_decay


def sample_batch(pool: ScenePool, caption_ids: torch.Tensor, full_res: bool, size: int, patch_size: int,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random batch (with replacement, half the images flipped left-right).

    Returns:
        ``pixel_values [B, n, p*p*3]``, ``pixel_attention_mask [B, n]``, ``spatial_shapes [B, 2]``,
        ``fractions [B, n, K]`` (row-major cells, the token order), ``presence [B, K]``,
        ``caption_ids [B, L]``, ``same_caption [B, B]``.
    """
    index = torch.randint(len(pool), (size,), generator=generator)
    images = (pool.images if full_res else pool.images_half)[index]
    fractions = (pool.fractions if full_res else pool.fractions_half)[index].float()
    flip = torch.rand(size, generator=generator) < 0.5
    images[flip] = images[flip].flip(-1)
    fractions[flip] = fractions[flip].flip(-1)
    grid = images.shape[-1] // patch_size
    ids = caption_ids[index]
    return {
        "pixel_values": patchify(images, patch_size),
        "pixel_attention_mask": torch.ones(size, grid * grid, dtype=torch.long),
        "spatial_shapes": torch.tensor([[grid, grid]] * size),
        "fractions": fractions.flatten(2).transpose(1, 2),
        "presence": pool.presence[index],
        "caption_ids": ids,
        "same_caption": (ids[:, None, :] == ids[None, :, :]).all(-1),
    }


def training_losses(model: Any, head: OpenVocabHead, batch: dict[str, torch.Tensor], draw_ids: torch.Tensor,
                    recipe: DemoRecipe) -> dict[str, torch.Tensor]:
    """The four losses of one batch; ``draw_ids [2, P, L]`` are two template draws of the prompts.

    The caption loss takes the first ``recipe.captions_per_step`` images of the (random) batch: the
    text tower reads 32 tokens per caption, so a caption costs about half as much as an image.
    """
    vision = model.vision_model(
        pixel_values=batch["pixel_values"], pixel_attention_mask=batch["pixel_attention_mask"],
        spatial_shapes=batch["spatial_shapes"],
    )
    captions = batch["caption_ids"][: recipe.captions_per_step]
    same_caption = batch["same_caption"][: len(captions), : len(captions)]
    text = model.text_model(input_ids=torch.cat([captions, draw_ids.flatten(0, 1)])).pooler_output
    caption_embeddings = text[: len(captions)]
    prompt_embeddings = text[len(captions) :].reshape(*draw_ids.shape[:2], -1)  # [2, P, D]
    patch_embeddings = head.map_value_path(vision.last_hidden_state)
    scale, bias = model.logit_scale, model.logit_bias
    presence = prompt_presence(batch["presence"])
    targets = prompt_targets(batch["fractions"])
    weights = class_balanced_weights(batch["fractions"], recipe.patch_balance_power)
    draws = len(prompt_embeddings)
    losses = {
        "caption": pairwise_sigmoid_loss(vision.pooler_output[: len(captions)], caption_embeddings, same_caption,
                                         scale, bias),
        "prompts": pairwise_sigmoid_loss(prompt_embeddings[0], prompt_embeddings[1],
                                         torch.eye(prompt_embeddings.shape[1], dtype=torch.bool), scale, bias),
        "presence": sum(presence_loss(vision.pooler_output, p, presence, scale, bias) for p in prompt_embeddings) / draws,
        "patch": sum(patch_loss(patch_embeddings, p, targets, weights, scale, bias) for p in prompt_embeddings) / draws,
    }
    losses["total"] = (recipe.caption_weight * losses["caption"] + recipe.prompt_weight * losses["prompts"]
                       + recipe.presence_weight * losses["presence"] + recipe.patch_weight * losses["patch"])
    return losses


def save_demo_checkpoint(model: Any, tokenizer: Any, recipe: DemoRecipe, out: str | Path) -> Path:
    """Write a hub-style checkpoint: config.json, model.safetensors, tokenizer files, preprocessor_config.json.

    The files are written into a temporary folder beside ``out`` that then replaces ``out`` whole, so
    a crash leaves the older checkpoint (or none), never a mix.
    """
    from transformers import Siglip2ImageProcessor

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes a private folder; a checkpoint is meant to be shared
    try:
        model.save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)
        Siglip2ImageProcessor(patch_size=recipe.patch_size,
                              max_num_patches=recipe.max_num_patches).save_pretrained(str(tmp))
        replace_directory(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def train_demo_model(
    recipe: DemoRecipe, out: str | Path, log: Callable[[dict], None] = print,
    evaluate: Callable[[Path, int], dict] | None = None, evaluate_every: int = 0,
) -> dict[str, Any]:
    """Train and save the checkpoint to ``out``.

    Returns:
        ``{"recipe", "seconds", "cpu_seconds", "steps", "logit_scale", "logit_bias", "final_losses",
        "evaluations"}``.

    ``seconds`` is the training's wall time (rendering, tokenizing and the steps, without the
    evaluations), ``cpu_seconds`` its CPU time summed over threads (what the run costs on a machine
    it does not share).

    ``evaluate(checkpoint_dir, step)`` (optional) runs on the saved checkpoint every
    ``evaluate_every`` steps and at the end; its results are logged and returned under ``"evaluations"``.
    """
    started, cpu_started = time.time(), time.process_time()
    tokenizer = build_tokenizer()
    architecture = {"vision": dict(DEMO_ARCHITECTURE["vision"], num_hidden_layers=recipe.vision_layers,
                                   patch_size=recipe.patch_size, num_patches=recipe.max_num_patches),
                    "text": DEMO_ARCHITECTURE["text"]}
    model = build_demo_model(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, recipe.seed,
                             architecture).train()
    head = OpenVocabHead(model.vision_model, 0.0, 0.0)
    generator = torch.Generator().manual_seed(recipe.seed)

    pool = render_pool([training_scene_seed(recipe.seed, i) for i in range(recipe.pool_size)], recipe.scene_size,
                       recipe.patch_size)
    caption_ids = tokenize(tokenizer, pool.captions)
    all_prompt_ids = prompt_ids(tokenizer)  # [81 templates, P, L]
    log({"event": "pool", "scenes": len(pool), "seconds": round(time.time() - started, 1)})

    config = TrainConfig(iterations=recipe.steps, lr=recipe.lr, weight_decay=recipe.weight_decay, schedule="cosine",
                         warmup_iterations=recipe.warmup_steps, min_lr_ratio=0.01, grad_clip=recipe.grad_clip)
    scalars = {"logit_scale", "logit_bias"}
    groups = split_by_decay([(n, p) for n, p in model.named_parameters() if n not in scalars], recipe.lr,
                            recipe.weight_decay, "towers")
    groups.append({"params": [model.logit_scale, model.logit_bias], "lr": recipe.lr * recipe.scalar_lr_multiplier,
                   "weight_decay": 0.0, "name": "logit_scale_bias"})
    optimizer = torch.optim.AdamW(groups)
    scheduler = build_scheduler(optimizer, config)
    evaluations, losses, evaluation_seconds, evaluation_cpu_seconds = [], {}, 0.0, 0.0
    for step in range(1, recipe.steps + 1):
        full_res = step % recipe.full_res_every == 0
        size = recipe.full_res_batch_size if full_res else recipe.batch_size
        batch = sample_batch(pool, caption_ids, full_res, size, recipe.patch_size, generator)
        single = torch.rand((), generator=generator) < recipe.single_template_share
        template = 0 if single else int(torch.randint(1, all_prompt_ids.shape[0], (), generator=generator))
        losses = training_losses(model, head, batch, all_prompt_ids[[0, template]], recipe)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        if step % 25 == 0 or step == recipe.steps:
            log({"step": step, "seconds": round(time.time() - started, 1), "lr": scheduler.get_last_lr()[0],
                 "logit_scale": round(model.logit_scale.item(), 3), "logit_bias": round(model.logit_bias.item(), 3),
                 **{k: round(v.item(), 4) for k, v in losses.items()}})
        if evaluate is not None and evaluate_every and step % evaluate_every == 0 and step != recipe.steps:
            evaluation_started, evaluation_cpu_started = time.time(), time.process_time()
            checkpoint = save_demo_checkpoint(model, tokenizer, recipe, Path(out))
            evaluations.append({"step": step, **evaluate(checkpoint, step)})
            log(evaluations[-1])
            evaluation_seconds += time.time() - evaluation_started
            evaluation_cpu_seconds += time.process_time() - evaluation_cpu_started
    seconds = time.time() - started - evaluation_seconds
    cpu_seconds = time.process_time() - cpu_started - evaluation_cpu_seconds
    checkpoint = save_demo_checkpoint(model.eval(), tokenizer, recipe, out)
    if evaluate is not None:
        evaluations.append({"step": recipe.steps, **evaluate(checkpoint, recipe.steps)})
        log(evaluations[-1])
    return {"recipe": asdict(recipe), "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
            "steps": recipe.steps,
            "logit_scale": model.logit_scale.item(), "logit_bias": model.logit_bias.item(),
            "final_losses": {k: round(v.item(), 4) for k, v in losses.items()}, "evaluations": evaluations}


def write_training_record(record: dict[str, Any], out: str | Path) -> Path:
    """``out/training.json``: the recipe, time and measured figures."""
    path = Path(out) / "training.json"
    write_json(path, record, indent=2)
    return path
