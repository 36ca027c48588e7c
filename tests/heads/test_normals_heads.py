"""Normals heads: unit vectors on real cells, zero padding that never leaks, a hand-set linear head's known
answer, the raw concentration channel, rebuilding from the config, and the keyword vocabulary."""

from __future__ import annotations

import pytest
import torch

import siglip2_dense as sd
from siglip2_dense.backbone.features import DenseFeatures, grid_mask
from siglip2_dense.errors import RequestError
from siglip2_dense.heads import HEADS, DPTNormalsHead, LinearNormalsHead, build_head

CASES = {
    "linear_normals": dict(),
    "linear_normals-uncertain-pooled": dict(uncertainty=True, use_pooled=True, layers="last"),
    "dpt_normals": dict(readout="project"),
    "dpt_normals-uncertain": dict(uncertainty=True, use_batchnorm=True),
}


def make(case: str, in_channels: list[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(case.split("-")[0], in_channels=in_channels, **CASES[case])


def padded_features(grid_sizes, height, width, seed, padding_value=0.0, channels=8) -> DenseFeatures:
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(grid_sizes)
    mask = grid_mask(sizes, height, width)
    maps = [torch.where(mask[:, None], torch.randn(len(grid_sizes), channels, height, width, generator=generator),
                        padding_value * torch.randn(len(grid_sizes), channels, height, width, generator=generator))
            for _ in range(4)]
    return DenseFeatures(maps=maps, mask=mask, grid_sizes=sizes, pooled=torch.randn(len(grid_sizes), channels,
                                                                                    generator=generator))


def test_registered_under_their_names():
    assert HEADS["linear_normals"] is LinearNormalsHead and HEADS["dpt_normals"] is DPTNormalsHead


@pytest.mark.parametrize("case", list(CASES))
def test_unit_normals_on_real_cells_zero_on_padding_independent_of_the_batch(case):
    features = padded_features([[16, 12], [13, 9], [5, 11]], 16, 12, seed=1, padding_value=1e3)
    head = make(case, [8] * 4)
    head.train()
    with torch.no_grad():
        head(features)  # BatchNorm running statistics away from the identity
    head.eval()
    with torch.no_grad():
        out = head(features)
        alone = head(DenseFeatures(maps=[m[1:2, :, :13, :9] for m in features.maps], mask=features.mask[1:2, :13, :9],
                                   grid_sizes=features.grid_sizes[1:2], pooled=features.pooled[1:2]))
    channels = 4 if "uncertain" in case else 3
    assert out.shape == (3, channels, 16, 12)
    mask = features.mask
    lengths = out[:, :3].norm(dim=1)
    assert torch.allclose(lengths[mask], torch.ones(int(mask.sum())), atol=1e-5)
    assert out.permute(0, 2, 3, 1)[~mask].abs().max() == 0
    assert (alone[0] - out[1, :, :13, :9]).abs().max() <= 1e-5
    if channels == 4:  # the concentration logit is raw, not normalised
        assert out[:, 3][mask].std() > 0 and out[:, 3][mask].abs().max() != pytest.approx(1.0)


def test_hand_set_linear_head_returns_the_normalised_features():
    head = LinearNormalsHead([3], layers="last").eval()  # BatchNorm at its initial identity (mean 0, var 1)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(3)[:, :, None, None])
        head.classifier.bias.zero_()
    values = torch.tensor([[3.0, 0.0, -4.0], [0.0, 2.0, 0.0]]).T.reshape(1, 3, 1, 2)  # two cells
    features = DenseFeatures(maps=[values], mask=torch.ones(1, 1, 2, dtype=torch.bool),
                             grid_sizes=torch.tensor([[1, 2]]), pooled=None)
    with torch.no_grad():
        out = head(features)
    eps = head.norm.eps
    expected = torch.tensor([[0.6, 0.0, -0.8], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 2)
    assert torch.allclose(out, expected, atol=1e-4 + eps)


@pytest.mark.parametrize("case", list(CASES))
def test_config_rebuilds_an_identical_head_and_saves_with_the_model(case, tmp_path):
    head = make(case, [8] * 4)
    rebuilt = build_head(case.split("-")[0], **head.config)
    assert rebuilt.config == head.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}


def test_model_round_trip_with_a_normals_head(tiny_naflex_dir, tmp_path, rng):
    from conftest import random_image

    backbone = sd.load_backbone(str(tiny_naflex_dir), layers=1)
    model = sd.DenseModel(backbone, build_head("linear_normals", in_channels=backbone.out_channels)).eval()
    inputs = backbone.preprocess([random_image(rng, 24, 20)])
    with torch.no_grad():
        out = model(**inputs)
    model.save_pretrained(tmp_path / "model")
    loaded = sd.DenseModel.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        again = loaded(**inputs)
    assert out.shape[1] == 3 and torch.allclose(out, again, atol=1e-6)


def test_vocabulary_errors():
    with pytest.raises(RequestError, match="takes no keyword 'num_classes'"):
        build_head("linear_normals", in_channels=[8], num_classes=3)
    with pytest.raises(RequestError, match="takes no keyword 'min_depth'"):
        build_head("dpt_normals", in_channels=[8] * 4, min_depth=0.1)
    with pytest.raises(RequestError, match="exactly 4"):
        build_head("dpt_normals", in_channels=[8] * 3)
