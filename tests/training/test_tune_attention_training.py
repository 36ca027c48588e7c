"""``model.tune_attention`` through the config, the optimiser and the training loop (CAT-Seg's
attention-only fine-tuning: q / v projections of every block and the position embedding)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import siglip2_dense as sd
from siglip2_dense.config import TrainConfig, load_config, save_config
from siglip2_dense.errors import ConfigError
from siglip2_dense.training import engine
from siglip2_dense.training.optim import HeadGroup, build_optimizer

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"
TUNED = re.compile(r"vision_model\.(embeddings\.position_embedding\.weight"
                   r"|encoder\.layers\.\d+\.self_attn\.[qv]_proj\.(weight|bias))")


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    from siglip2_dense.data import write_synthetic

    return write_synthetic("ade20k", tmp_path_factory.mktemp("synthetic-ade"), num=8, seed=4, size=(48, 48))


def required(checkpoint="ckpt", root="data", out="out") -> list[str]:
    return [f"model.backbone={checkpoint}", f"data.root={root}", f"train.output_dir={out}"]


def tuned_names(backbone) -> set[str]:
    return {name for name, _ in backbone.named_parameters() if TUNED.fullmatch(name)}


def test_the_key_loads_from_yaml_and_is_in_the_saved_config(tmp_path):
    assert load_config(LINEAR, required()).model.tune_attention is False
    text = LINEAR.read_text().replace("  tune_last_blocks: 0\n", "  tune_last_blocks: 0\n  tune_attention: true\n")
    (tmp_path / "attention.yaml").write_text(text)
    config = load_config(tmp_path / "attention.yaml", required())
    assert config.model.tune_attention is True
    saved = save_config(config, tmp_path / "config.yaml")
    assert "tune_attention: true" in saved.read_text()
    assert load_config(saved) == config


@pytest.mark.parametrize("overrides, pattern", [
    (["model.tune_attention=true", "model.tune_last_blocks=2"], r"model\.tune_attention=true with model\.tune_last_blocks=2"),
    (["model.tune_attention=true", "model.tune_last_blocks=-1"], r"model\.tune_attention.*model\.tune_last_blocks=-1"),
    (["model.tune_attention=true", "model.backbone=timm:vit_tiny_patch16_224"],
     r"model\.tune_attention applies to SigLIP / SigLIP2 towers.*fused qkv"),
])
def test_refused_combinations_name_the_keys(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(LINEAR, required() + overrides)


def test_the_optimiser_puts_exactly_the_tuned_tensors_at_the_backbone_lr(tiny_fixres_dir):
    backbone = sd.load_backbone(str(tiny_fixres_dir), tune_attention=True)
    head = torch.nn.Conv2d(backbone.embed_dim, 3, 1)
    config = TrainConfig(lr=2e-4, backbone_lr_multiplier=0.01)
    optimizer = build_optimizer([HeadGroup(list(head.named_parameters()), 2e-4)], backbone, config)
    names = {id(p): n for n, p in backbone.named_parameters()}
    backbone_groups = [g for g in optimizer.param_groups if g["name"].startswith("backbone")]
    assert {names[id(p)] for g in backbone_groups for p in g["params"]} == tuned_names(backbone)
    assert all(g["lr"] == pytest.approx(2e-4 * 0.01) for g in backbone_groups)
    undecayed = next(g for g in backbone_groups if g["name"] == "backbone.no_decay")
    assert "vision_model.embeddings.position_embedding.weight" in {names[id(p)] for p in undecayed["params"]}
    assert all(g["lr"] == 2e-4 for g in optimizer.param_groups if g["name"].startswith("head"))


def test_two_training_steps_change_only_q_v_and_the_position_embedding(tiny_naflex_dir, ade_root, tmp_path,
                                                                       monkeypatch):
    built = []

    def keep(config, device=None):
        built.append(engine_build_backbone(config, device))
        return built[-1]

    engine_build_backbone = engine.build_backbone
    monkeypatch.setattr(engine, "build_backbone", keep)
    out = tmp_path / "run"
    config = load_config(LINEAR, required(tiny_naflex_dir, ade_root, out) + [
        "model.tune_attention=true", "model.layers=[0,-1]", "train.iterations=2", "train.batch_size=2",
        "train.warmup_iterations=0", "train.lr=1e-2", "train.backbone_lr_multiplier=0.1", "train.val_every=0",
        "train.checkpoint_every=2", "train.grad_clip=1.0"])
    engine.train(config)

    (backbone,) = built
    assert backbone.tune_attention
    before = sd.load_backbone(str(tiny_naflex_dir)).state_dict()
    after = backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == tuned_names(backbone)
    checkpoint = load_file(out / "checkpoints" / "step_00000002" / "model.safetensors")
    assert {k.removeprefix("backbone.") for k in checkpoint if k.startswith("backbone.")} == changed
    record = json.loads((out / "best" / "dense_model.json").read_text())["backbone"]
    assert record["tune_attention"] is True
    assert set(load_file(out / "best" / "backbone.safetensors")) == changed
    assert sd.DenseModel.from_pretrained(out / "best").backbone.tune_attention
