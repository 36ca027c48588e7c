"""The training loop: iteration-based, as DINOv2 / DINOv3's linear-probe protocols, top to bottom.

One process::

    python tools/train.py --config configs/ade20k_linear_siglip2-b16-naflex.yaml

N processes on one machine (DDP; NCCL on GPUs, gloo on CPUs; ``train.batch_size`` stays the
global batch, each process takes ``batch_size / N``)::

    torchrun --nproc_per_node N tools/train.py --config configs/ade20k_linear_siglip2-b16-naflex.yaml

Per step: ``grad_accum_steps`` micro-batches -> backbone features (or cached ones) -> every head
-> outputs resized to the crop's pixels -> loss (cross-entropy averaged over the labelled pixels
of the whole global batch; depth: ``losses.depth_loss``) -> backward -> per-head gradient
clipping -> AdamW -> lr schedule. The heads' BatchNorm takes its statistics over the whole global
batch: over processes by SyncBN, over micro-batches by a first pass that pools them before the
forward (:mod:`.accumulation`), so N processes and accumulation give the 1-process gradient of the
linear and bins heads on a frozen backbone; where they cannot (BatchNorm after trained layers, a
tuned backbone, depth losses) one warning at start says so. Every
``val_every`` steps every head is validated (:mod:`.validation`), the best head so far is saved
as a ``DenseModel`` in ``<output_dir>/best`` (``train.reported_checkpoint: final``: the last step's model
in ``<output_dir>/final`` instead, as DINOv2 / DINOv3 report); every ``checkpoint_every`` steps a resumable
checkpoint is written (:mod:`.checkpoint`). Rank 0 writes ``config.yaml``, ``log.jsonl`` and the
checkpoints, and shows a progress bar.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.build import (
    build_backbone,
    build_dataset,
    build_eval_transform,
    build_head_grid,
    build_train_transform,
    grid_entries,
    resolve_training_device,
)
from siglip2_dense.config import ExperimentConfig, config_to_yaml, output_dir, save_config
from siglip2_dense.data.collate import collate_padded
from siglip2_dense.data.order import SeededViews, StepBatchSampler, data_position, derived_seed
from siglip2_dense.devices import autocast_factory
from siglip2_dense.distributed import (
    ProcessContext,
    all_reduce_sum,
    close_processes,
    gather_objects,
    init_processes,
    raise_if_lost_process,
)
from siglip2_dense.errors import ConfigError
from siglip2_dense.evaluation.grid_to_pixels import heads_output_scale, outputs_to_pixels
from siglip2_dense.evaluation.loop import TARGET_KEYS
from siglip2_dense.evaluation.protocols import check_eval_config
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.training.accumulation import (
    accumulation_caveats,
    collect_step_statistics,
    has_step_statistics,
    pool_step_statistics,
    release_step_statistics,
)
from siglip2_dense.training.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from siglip2_dense.training.feature_cache import build_feature_cache, collate_cached
from siglip2_dense.training.normalised_padding import zero_padded_pixels
from siglip2_dense.training.optim import HeadGroup, build_optimizer, build_scheduler, clip_gradients
from siglip2_dense.training.run_files import FINAL_DIR, JsonLinesLog, recover_best_model, save_best_model
from siglip2_dense.training.step_losses import head_losses, loss_normaliser
from siglip2_dense.training.sync_batch_norm import convert_to_sync_batch_norm
from siglip2_dense.training.validation import evaluate, main_metric

DROPOUT_STREAM = 3
logger = logging.getLogger(__name__)


def train(config: ExperimentConfig) -> dict[str, Any]:
    """Run ``config`` to ``train.iterations`` (resuming when asked); return the best head's record.

    Returns:
        ``{"best": {"metric", "value", "step", "head", "lr", "layers", "metrics"} or None,
        "last_metrics": [per-head metrics of the last validation], "output_dir": str, "step": int}``.
    """
    context = init_processes(resolve_training_device(config.train.device))
    try:
        return _train(config, context)
    except Exception as error:
        raise_if_lost_process(error, context)
        raise
    finally:
        close_processes(context)


def _train(config: ExperimentConfig, context: ProcessContext) -> dict[str, Any]:
    tc = config.train
    device = context.device
    out = output_dir(config)
    seed_everything(tc.seed)  # the same head initialisation in every process

    # --- model: the backbone and one head per (lr, layers) grid entry --------------------------
    backbone = build_backbone(config, device)
    check_eval_config(config, backbone)
    entries = grid_entries(config)
    if len(entries) > 1 and backbone.tuned:
        raise ConfigError("train.lr_grid / train.layer_grid train several heads on shared features: "
                          "they need a frozen backbone (model.tune_last_blocks=0, model.tune_attention=false)")
    grid = build_head_grid(config, backbone)
    heads = list(grid.heads)
    if context.distributed or tc.grad_accum_steps > 1:
        convert_to_sync_batch_norm(grid.heads)  # statistics over the whole step's batch (see .accumulation)
    pool_statistics = tc.grad_accum_steps > 1 and any(has_step_statistics(h) for h in grid.heads)
    torch.manual_seed(derived_seed(tc.seed, DROPOUT_STREAM, context.rank))  # dropout differs between processes

    # --- data: seeded views (or their cached features) in an order fixed by (seed, step) --------
    views = SeededViews(build_dataset(config, config.data.train_split), build_train_transform(config),
                        tc.seed, config.data.train_views)
    val_set = build_dataset(config, config.data.val_split, build_eval_transform(config))
    autocast = autocast_factory(tc.precision, device)
    per_process = tc.batch_size // context.world_size
    if tc.feature_cache:
        cache_root = Path(tc.feature_cache_dir) if tc.feature_cache_dir else out / "feature_cache"
        train_items = build_feature_cache(backbone, views, config, context, cache_root, autocast, per_process)
        collate: Callable = collate_cached
    else:
        train_items, collate = views, functools.partial(collate_views, target_key=TARGET_KEYS[config.task])

    # --- optimisation ----------------------------------------------------------------------------
    optimizer = build_optimizer([HeadGroup(list(h.named_parameters()), lr) for h, (lr, _) in zip(heads, entries)],
                                backbone if backbone.tuned else None, tc)
    scheduler = build_scheduler(optimizer, tc)
    clip_sets = [list(h.parameters()) + (list(backbone.parameters()) if backbone.tuned else []) for h in heads]

    # --- resume ----------------------------------------------------------------------------------
    start_step, best, rng_state, final = 0, None, None, None
    resume_from = resume_checkpoint(tc.resume, out)
    if resume_from is not None:
        state, rng_state = load_checkpoint(resume_from, grid, optimizer, scheduler, context.rank)
        check_resumable(state, config)
        start_step, best = int(state["step"]), state["best"]
    model = grid
    if context.distributed:
        # a tuned backbone has parameters no head reads (e.g. the MAP head when pooled is unused)
        model = DistributedDataParallel(grid, device_ids=[device] if device.type == "cuda" else None,
                                        find_unused_parameters=backbone.tuned)

    sampler = StepBatchSampler(len(train_items), tc.batch_size, tc.seed, start_step, tc.iterations,
                               context.rank, context.world_size, tc.grad_accum_steps)
    loader = DataLoader(train_items, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(tc.seed))
    batches = iter(loader)
    if rng_state is not None:
        restore_rng_state(rng_state)  # after everything that draws at start-up, as in the uninterrupted run

    log = JsonLinesLog(out / "log.jsonl", keep_up_to_step=start_step) if context.is_main else None
    if context.is_main:
        recover_best_model(out)
        save_config(config, out / "config.yaml")
        log.write({"event": "start", "name": config.name, "step": start_step, "world_size": context.world_size,
                   "resumed_from": str(resume_from) if resume_from else None, "heads": describe_entries(entries),
                   "protocol": config.protocol, "deviations": sorted(config.deviations)})
        caveats = accumulation_caveats(grid, config.task) if tc.grad_accum_steps > 1 else []
        if caveats:
            logger.warning("train.grad_accum_steps=%d is not exactly one step with the whole batch: %s",
                           tc.grad_accum_steps, "; ".join(caveats))
    progress = tqdm(total=tc.iterations, initial=start_step, disable=not context.is_main, desc=config.name,
                    dynamic_ncols=True)

    # --- the loop ------------------------------------------------------------------------------
    grid.train()
    window_loss, window_steps, window_seconds = torch.zeros(len(heads), dtype=torch.float64), 0, 0.0
    last_metrics: list[dict[str, Any]] = []
    for step in range(start_step, tc.iterations):
        step_start = time.perf_counter()
        micro_batches = [next(batches) for _ in range(tc.grad_accum_steps)]
        normaliser = loss_normaliser(config, micro_batches, context)
        step_loss = torch.zeros(len(heads), dtype=torch.float64)
        features: list[DenseFeatures | None] = [None] * len(micro_batches)
        try:
            if pool_statistics:
                features = pool_batch_norm_statistics(grid, micro_batches, config, device, autocast)
            for index, batch in enumerate(micro_batches):
                last = index == len(micro_batches) - 1
                sync = contextlib.nullcontext() if last or not context.distributed else model.no_sync()
                with sync:
                    with autocast():
                        outputs = forward_to_pixels(model, grid, batch, config, device, features[index])
                    losses = head_losses(grid.split(outputs), batch["target"].to(device), config, normaliser,
                                         context, step)
                    losses.sum().backward()
                step_loss += losses.detach().double().cpu()
        finally:
            release_step_statistics(grid)
        del features
        clip_gradients(clip_sets, tc.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1

        window_loss += all_reduce_sum(step_loss.to(device)).cpu() / context.world_size
        window_steps += 1
        window_seconds += time.perf_counter() - step_start
        progress.update(1)
        if done % tc.log_every == 0 or done == tc.iterations:
            losses_now = (window_loss / window_steps).tolist()
            epoch, position = data_position(step, len(train_items), tc.batch_size)
            if log is not None:
                log.write({"step": done, "loss": float(np.mean(losses_now)), "head_losses": losses_now,
                           "lr": optimizer.param_groups[0]["lr"], "images_per_s": window_steps * tc.batch_size / window_seconds,
                           "epoch": epoch, "batch_in_epoch": position})
            progress.set_postfix(loss=f"{np.mean(losses_now):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            window_loss, window_steps, window_seconds = torch.zeros(len(heads), dtype=torch.float64), 0, 0.0

        if (tc.val_every and done % tc.val_every == 0) or done == tc.iterations:
            val_start = time.perf_counter()
            last_metrics = evaluate(grid, val_set, config, device, context.rank, context.world_size, autocast)
            best = update_best(best, last_metrics, entries, done, config, grid, out, context)
            if done == tc.iterations and tc.reported_checkpoint == "final":
                final = save_final(last_metrics, entries, done, config, grid, out, context)
            if log is not None:
                log.write({"step": done, "metrics": [summarise(m) for m in last_metrics], "best": best,
                           "seconds": time.perf_counter() - val_start})
            grid.train()

        if (tc.checkpoint_every and done % tc.checkpoint_every == 0) or done == tc.iterations:
            rng_states = gather_objects(capture_rng_state())
            if context.is_main:
                epoch, position = data_position(done, len(train_items), tc.batch_size)
                trainer_state = {"epoch": epoch, "batch_in_epoch": position, "seed": tc.seed,
                                 "batch_size": tc.batch_size, "world_size": context.world_size, "best": best,
                                 "heads": describe_entries(entries)}
                save_checkpoint(out, done, grid, optimizer, scheduler, trainer_state, rng_states,
                                config_to_yaml(config), tc.keep_checkpoints)
    progress.close()
    return {"best": best, "final": final, "last_metrics": last_metrics, "output_dir": str(out),
            "step": tc.iterations}


# --- the pieces the loop calls, in the order it calls them -----------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe_entries(entries: list[tuple[float, list[int] | None]]) -> list[dict[str, Any]]:
    return [{"lr": lr, "layers": layers} for lr, layers in entries]


def collate_views(items: list[dict[str, Any]], target_key: str) -> dict[str, Any]:
    """Training crops (all ``crop_size``) -> ``{"images": B [H, W, 3] uint8 tensors, "target": [B, H, W(, 3)]}``,
    the target being the task's (``TARGET_KEYS``: an item may carry several, e.g. normals and depth)."""
    batch = collate_padded(items)
    out = {"images": list(batch["image"].permute(0, 2, 3, 1)), "target": batch[target_key]}
    if "valid_size" in batch:  # data.pad_after_normalise: the crops' real extent, zeroed after preprocess
        out["valid_size"] = torch.tensor([list(size) for size in batch["valid_size"]], dtype=torch.long)
    return out


def resume_checkpoint(resume: str, out: Path) -> Path | None:
    """``train.resume``: "" -> None; "auto" -> the newest complete checkpoint (None if none); else that path."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(out)
    return Path(resume)


def check_resumable(state: dict[str, Any], config: ExperimentConfig) -> None:
    """The data order is a function of (seed, batch size): both must match the checkpoint's."""
    for key in ("seed", "batch_size"):
        if state[key] != getattr(config.train, key):
            raise ConfigError(f"cannot resume: the checkpoint has train.{key}={state[key]}, this run "
                              f"{getattr(config.train, key)}; the data order would differ")


def pool_batch_norm_statistics(
    grid: HeadGrid, micro_batches: list[dict[str, Any]], config: ExperimentConfig, device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> list[DenseFeatures | None]:
    """Pass 1 of an accumulated step: every micro-batch's features -> the heads' pooled BatchNorm statistics.

    Returns each micro-batch's features for the forward to reuse when the backbone is frozen (they
    hold no graph), or None each when it is tuned (the forward computes them again, with gradients).
    """
    kept: list[DenseFeatures | None] = []
    with torch.no_grad():
        for batch in micro_batches:
            with autocast():
                features = micro_batch_features(grid.backbone, batch, config, device)
                collect_step_statistics(grid, features)
            kept.append(None if grid.backbone.tuned else features)
    pool_step_statistics(grid)
    return kept


def micro_batch_features(
    backbone: torch.nn.Module, batch: dict[str, Any], config: ExperimentConfig, device: torch.device
) -> DenseFeatures:
    """A training micro-batch's backbone features: the cached ones moved to ``device``, or a backbone forward."""
    if "features" in batch:
        features = batch["features"]
        return DenseFeatures(maps=[m.to(device, non_blocking=True) for m in features.maps],
                             mask=features.mask.to(device), grid_sizes=features.grid_sizes.to(device),
                             pooled=features.pooled.to(device) if features.pooled is not None else None)
    return backbone(**preprocess_images(backbone, batch, config))


def preprocess_images(backbone: torch.nn.Module, batch: dict[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    kwargs = {"max_num_patches": config.model.max_num_patches} if backbone.is_naflex else {}
    inputs = backbone.preprocess(batch["images"], **kwargs)
    if "valid_size" in batch:
        crop = tuple(int(v) for v in batch["target"].shape[-2:])
        inputs = zero_padded_pixels(inputs, batch["valid_size"], crop, backbone.patch_size, backbone.is_naflex)
    return inputs


def forward_to_pixels(
    model: torch.nn.Module, grid: HeadGrid, batch: dict[str, Any], config: ExperimentConfig, device: torch.device,
    features: DenseFeatures | None = None,
) -> torch.Tensor:
    """A training micro-batch -> every head's outputs at the crop's pixels ``[B, G*K, H, W]`` (float32).

    ``features``: the micro-batch's backbone features when already computed (pass 1 of an
    accumulated step on a frozen backbone); otherwise the cached ones or a backbone forward.
    """
    backbone = grid.backbone
    crop = tuple(batch["target"].shape[-2:])
    if features is None and "features" in batch:
        features = micro_batch_features(backbone, batch, config, device)
    if features is not None:
        outputs = model(features=features)
        grid_sizes = features.grid_sizes
    else:
        inputs = preprocess_images(backbone, batch, config)
        outputs = model(**inputs)
        grid_sizes = inputs["spatial_shapes"]
    return outputs_to_pixels(outputs, grid_sizes, crop, backbone.patch_size, backbone.is_naflex,
                             heads_output_scale(grid.heads))


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of one head (per-class lists left out of the log)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def chosen_head(metrics: list[dict[str, Any]], task: str) -> int | None:
    """The index of the best head of one validation by the task's main metric (None: no finite value)."""
    name, higher = main_metric(task)
    values = [float(m[name]) for m in metrics]
    finite = [i for i, v in enumerate(values) if np.isfinite(v)]
    if not finite:
        return None
    return max(finite, key=lambda i: values[i]) if higher else min(finite, key=lambda i: values[i])


def save_final(
    metrics: list[dict[str, Any]], entries: list[tuple[float, list[int] | None]], step: int,
    config: ExperimentConfig, grid: HeadGrid, out: Path, context: ProcessContext,
) -> dict[str, Any]:
    """``train.reported_checkpoint: final``: rank 0 saves the model after the last step to ``<out>/final``
    (of a grid, the head best at this last validation); returns its record."""
    name, _ = main_metric(config.task)
    head = chosen_head(metrics, config.task)
    head = 0 if head is None else head
    record = {"metric": name, "value": float(metrics[head][name]), "step": step, "head": head,
              "lr": entries[head][0], "layers": entries[head][1], "metrics": summarise(metrics[head])}
    if context.is_main:
        save_best_model(out, grid, head, record, name=FINAL_DIR)
    return record


def update_best(
    best: dict[str, Any] | None, metrics: list[dict[str, Any]], entries: list[tuple[float, list[int] | None]],
    step: int, config: ExperimentConfig, grid: HeadGrid, out: Path, context: ProcessContext,
) -> dict[str, Any] | None:
    """Pick the best head of this validation; if it beats ``best``, rank 0 saves it to ``<out>/best``
    (with ``train.reported_checkpoint: final`` the record is kept for the log, no folder is written)."""
    name, higher = main_metric(config.task)
    head = chosen_head(metrics, config.task)
    if head is None:
        return best
    value = float(metrics[head][name])
    improved = best is None or (value > best["value"] if higher else value < best["value"])
    if not improved:
        return best
    record = {"metric": name, "value": value, "step": step, "head": head, "lr": entries[head][0],
              "layers": entries[head][1], "metrics": summarise(metrics[head])}
    if context.is_main and config.train.reported_checkpoint == "best":
        save_best_model(out, grid, head, record)
    return record


def read_log(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of a run's ``log.jsonl``."""
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)
