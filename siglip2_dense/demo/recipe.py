"""The demo checkpoint's training recipe: every number that decides its weights (with the code).

Kept apart from :mod:`siglip2_dense.demo.training` (which imports torch) so that
``siglip2-dense train-demo --help`` lists the recipe's options without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoRecipe:
    """Everything that decides the trained weights (with the code)."""

    seed: int = 0
    steps: int = 3000
    pool_size: int = 16384
    scene_size: int = 128
    patch_size: int = 8
    vision_layers: int = 4
    batch_size: int = 96
    full_res_batch_size: int = 32
    full_res_every: int = 6
    captions_per_step: int = 32
    lr: float = 2e-3
    scalar_lr_multiplier: float = 10.0
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    caption_weight: float = 1.0
    prompt_weight: float = 1.0
    presence_weight: float = 1.0
    patch_weight: float = 2.0
    patch_balance_power: float = 0.5
    single_template_share: float = 0.5

    @property
    def max_num_patches(self) -> int:
        return (self.scene_size // self.patch_size) ** 2
