"""The GPU benchmark's logic, run on the CPU with a tiny tower (the GPU rows need a GPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu  # noqa: E402


def test_peak_lookup_prefers_the_most_specific_name():
    assert gpu.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu.peak_bf16_flops("NVIDIA H100 80GB HBM3 SXM") == 989e12
    assert gpu.peak_bf16_flops("NVIDIA H200") == 989e12
    assert gpu.peak_bf16_flops("Some Future Card") is None


def test_rows_on_cpu_tiny(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--tiny", "--batch", "2", "--iterations", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["patches"], r["attention"]) for r in rows] == [(16, "eager"), (16, "sdpa"), (64, "eager"), (64, "sdpa")]
    assert all(r["images_per_s"] > 0 and r["mfu"] is None for r in rows)
    # bf16/fp32 weights as stored: the tiny tower's parameters, the same for every row of one size
    assert len({r["weights_mib"] for r in rows}) == 1 and rows[0]["weights_mib"] > 0
    assert result["skipped"].startswith("4-bit rows skipped") and result["skipped"] in result["table"]
    # FLOPs grow with the patch count: 4x the patches, more than 4x the FLOPs (attention is quadratic)
    assert rows[2]["gflop_per_image"] > 4 * rows[0]["gflop_per_image"]
    assert "| tiny | 64 | sdpa |" in result["table"]


def test_weights_count_what_is_stored():
    module = torch.nn.Linear(4, 8)  # 32 + 8 float32 values
    module.register_buffer("scale", torch.zeros(10, dtype=torch.bfloat16))
    assert gpu.weights_mib(module) == (40 * 4 + 10 * 2) / 2**20


def test_no_gpu_skips_cleanly(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU path does not apply")
    assert gpu.main([]) == 0
    assert "no GPU available" in capsys.readouterr().out


def test_rows_the_flop_counter_cannot_see_use_the_model_flops():
    counted = gpu.measure_row("tiny", "sdpa", 16, 2, torch.device("cpu"), torch.float32, 1, peak=1e12)
    given = gpu.measure_row("tiny", "sdpa", 16, 2, torch.device("cpu"), torch.float32, 1, peak=1e12,
                            model_flops=4e9)
    assert counted.gflop_per_image != 2.0 and given.gflop_per_image == 2.0  # 4e9 FLOPs over a batch of 2
    elapsed = 2 / given.images_per_s
    assert given.mfu == pytest.approx(4e9 / elapsed / 1e12)
