"""benchmarks/backbone.py's replay of a forward's linear layers: the same products, the same FLOPs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import backbone  # noqa: E402


def test_linear_layer_workload_replays_every_linear_call_with_its_flops():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.GELU(), torch.nn.Linear(10, 3))
    inputs = torch.randn(2, 5, 6)  # 10 rows through each layer
    fn, flops = backbone.linear_layer_workload(model, lambda: model(inputs))
    assert flops == 2 * 10 * (6 * 10 + 10 * 3)
    assert flops == backbone.counted_flops(lambda: model(inputs))  # nothing but linear layers here
    assert backbone.counted_flops(fn) == flops  # the replay runs exactly those products
    assert not any(module._forward_hooks for module in model.modules())  # the recording hooks are gone
