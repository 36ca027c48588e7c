"""Peak memory of evaluating the base NaFlex backbone at 1024 patches, batch 8.

A base-size NaFlex checkpoint (random weights) is written to a temporary folder, then a fresh
subprocess loads it through ``load_backbone`` as a user would and runs one forward. Resident
memory is sampled every 0.5 ms from ``/proc/self/statm``.

Figures:
- reported: (peak during the forward - resident after importing the toolkit and transformers'
  SigLIP2 modules) / (weights + one batch of the widest activations, ``B * N * (D + 4D)`` float32:
  the residual stream and the MLP's hidden). A transformers encoder layer holds more than that at
  its peak (the residual, the layer-norm output and the MLP's hidden before and after the GELU,
  up to ``B * N * 10D``), so the forward's transient alone is about twice the denominator's activations;
- the toolkit forward's transient peak / a bare transformers forward's on the same inputs
  (target <= 1.05: the dense interface keeps no extra copies).

Run: ``python benchmarks/memory.py``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import Figure, print_figures

WRITE_CHECKPOINT = r"""
import sys
sys.path.insert(0, {bench!r})
from backbone import base_naflex_backbone
bb = base_naflex_backbone()
bb.vision_model.save_pretrained({folder!r})
bb.image_processor.save_pretrained({folder!r})
"""

MEASURE = r"""
import json, sys
sys.path.insert(0, {bench!r})
import numpy as np
import torch
import siglip2_dense as sd
import transformers.models.siglip2.image_processing_siglip2, transformers.models.siglip2.modeling_siglip2  # noqa
from measure import settle, transient_peak
torch.set_num_threads(2)

base = settle()
bb = sd.load_backbone({folder!r})
weights = sum(p.numel() * p.element_size() for p in bb.parameters())
images = [np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8) for i in range(8)]
inputs = bb.preprocess(images, max_num_patches=1024)
with torch.inference_mode():  # first calls allocate kernel workspaces once: not part of a batch's cost
    bb(**inputs)
    bb.vision_model(**inputs)
toolkit_runs, bare_runs = [], []
for _ in range(3):  # interleaved, median of three: the allocator's state drifts from run to run
    with torch.inference_mode():
        toolkit_runs.append(transient_peak(lambda: bb(**inputs)))
        bare_runs.append(transient_peak(lambda: bb.vision_model(**inputs)))
median = lambda runs: sorted(runs, key=lambda r: r[1] - r[0])[len(runs) // 2]
before, peak = median(toolkit_runs)
bare_before, bare_peak = median(bare_runs)
batch, tokens = inputs["pixel_values"].shape[:2]
activations = batch * tokens * 5 * bb.embed_dim * 4
inputs_bytes = sum(v.numel() * v.element_size() for v in inputs.values() if torch.is_tensor(v))
print(json.dumps(dict(base=base, before=before, peak=peak, weights=weights, activations=activations, inputs=inputs_bytes,
                      tokens=tokens, toolkit_transient=peak - before, bare_transient=bare_peak - bare_before)))
"""


def run() -> list[Figure]:
    bench = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT.format(bench=bench, folder=folder)], check=True,
                       capture_output=True)
        # a fixed mmap threshold: every tensor over 64 KiB gets its own mapping, returned on free, so the
        # resident size follows the live tensors instead of glibc's heap (which made the figure drift)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
        out = subprocess.run([sys.executable, "-c", MEASURE.format(bench=bench, folder=folder)], capture_output=True, text=True,
                             check=True, env=env)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    used = m["peak"] - m["base"]
    mib = 2**20
    return [
        Figure("eval memory: (peak - imports) / (weights + one batch of activations)",
               used / (m["weights"] + m["activations"]), 1.5, higher_is_better=False, kind="report",
               detail=f"used {used / mib:.0f} MiB, weights {m['weights'] / mib:.0f} MiB, activations "
                      f"{m['activations'] / mib:.0f} MiB ({m['tokens']} tokens x 8); forward transient "
                      f"{m['toolkit_transient'] / mib:.0f} MiB, inputs {m['inputs'] / mib:.0f} MiB"),
        Figure("eval memory: toolkit forward transient / transformers forward transient",
               m["toolkit_transient"] / m["bare_transient"], 1.05, higher_is_better=False,
               detail=f"toolkit {m['toolkit_transient'] / mib:.0f} MiB, transformers {m['bare_transient'] / mib:.0f} MiB"),
    ]


if __name__ == "__main__":
    print_figures("memory", run())
