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
    # FLOPs grow with the patch count: 4x the patches, more than 4x the FLOPs (attention is quadratic)
    assert rows[2]["gflop_per_image"] > 4 * rows[0]["gflop_per_image"]
    assert "| tiny | 64 | sdpa |" in result["table"]


def test_no_gpu_skips_cleanly(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU path does not apply")
    assert gpu.main([]) == 0
    assert "no GPU available" in capsys.readouterr().out
