"""The head options the reference protocols need: DPT at its decoder's resolution (DINOv2's 16x regression,
8x bins), readout ``project``, and the bins head without BatchNorm, with the pooled token and 4x upsampling."""

from __future__ import annotations

import torch
from test_heads import crop, synthetic_features

from siglip2_dense.evaluation.grid_to_pixels import heads_output_scale, outputs_to_pixels
from siglip2_dense.heads import BinsDepthHead, DPTHead, build_head

CHANNELS = [8, 8, 8, 8]


def test_dpt_output_sizes_at_decoder_resolution():
    features = synthetic_features([[3, 5], [2, 4]], 3, 5, seed=0)
    regression = DPTHead(CHANNELS, task="depth", depth_output="regression", output_resolution="decoder",
                         readout="project").eval()
    bins = DPTHead(CHANNELS, task="depth", output_resolution="decoder").eval()
    patch = DPTHead(CHANNELS, task="depth").eval()
    with torch.no_grad():
        assert tuple(regression(features).shape) == (2, 1, 48, 80) and regression.output_scale == 16
        assert tuple(bins(features).shape) == (2, 1, 24, 40) and bins.output_scale == 8
        assert tuple(patch(features).shape) == (2, 1, 3, 5) and patch.output_scale == 1
        depth = regression(features)
    # DINOv2's relu(x) + min_depth: real cells at least 1e-3, the second image's padding zero
    assert float(depth[0].min()) >= 1e-3 and float(depth[1, :, 32:].abs().max()) == 0.0
    assert float(depth[1, :, :, 64:].abs().max()) == 0.0 and float(depth[1, :, :32, :64].min()) >= 1e-3
    # padding-safe: the second image alone gives its real cells
    with torch.no_grad():
        alone = regression(crop(features, 1))
    assert torch.allclose(alone[0], depth[1, :, :32, :64], atol=1e-5)


def test_readout_project_reads_the_pooled_embedding():
    features = synthetic_features([[3, 4]], 3, 4, seed=1)
    head = DPTHead(CHANNELS, task="depth", depth_output="regression", output_resolution="decoder",
                   readout="project").eval()
    torch.nn.init.constant_(head.classifier.bias, 1.0)  # keep relu(x) + min_depth off its floor
    changed = type(features)(features.maps, features.mask, features.grid_sizes, features.pooled + 1)
    with torch.no_grad():
        assert not torch.allclose(head(features), head(changed))


def test_dpt_config_round_trips_and_older_configs_build_the_same_modules():
    head = DPTHead(CHANNELS, task="depth", depth_output="regression", output_resolution="decoder")
    rebuilt = build_head("dpt", **head.config)
    assert rebuilt.config == head.config and rebuilt.output_scale == 16
    old = DPTHead(CHANNELS, task="depth")
    assert "depth_output" not in old.config and "output_resolution" not in old.config
    assert set(old.state_dict()) == set(build_head("dpt", **old.config).state_dict())


def test_outputs_to_pixels_with_a_decoder_scale_crops_each_image_cells():
    outputs = torch.zeros(1, 1, 32, 48)
    outputs[:, :, :16, :32] = 2.0  # a 1x2 grid at 16 cells per patch side inside a 2x3 canvas
    pixels = outputs_to_pixels(outputs, torch.tensor([[1, 2]]), (16, 32), 16, True, output_scale=16)
    assert tuple(pixels.shape) == (1, 1, 16, 32) and bool((pixels == 2.0).all())


def test_bins_head_dinov2_options():
    features = synthetic_features([[3, 5], [2, 4]], 3, 5, seed=2, channels=8)
    features = type(features)(features.maps[-1:], features.mask, features.grid_sizes, features.pooled)
    head = BinsDepthHead([8], use_batchnorm=False, use_pooled=True, feature_upsample=4).eval()
    assert head.norm is None and heads_output_scale([head]) == 4
    with torch.no_grad():
        depth = head(features)
        # the reference order: features (patch + pooled) upsampled 4x, then the 1x1 conv and the bins
        x, _ = head.batch_norm_input(crop(features, 0))
        up = torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
        reference = head.to_depth(head.classifier(up))
    assert tuple(depth.shape) == (2, 1, 12, 20)
    assert torch.allclose(depth[0], reference[0], atol=1e-5)
    assert float(depth[1, :, 8:].abs().max()) == 0.0 and float(depth[1, :, :, 16:].abs().max()) == 0.0
    default = BinsDepthHead([8])
    assert default.output_scale == 1 and default.norm is not None
