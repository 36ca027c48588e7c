"""compile=True: the compiled tower equals eager within 1e-5, and one graph serves repeated shapes."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

import siglip2_dense as sd
from siglip2_dense.errors import RequestError


@pytest.mark.slow  # inductor compiles two shapes of two blocks: about a minute on two shared cores
def test_compiled_backbone_equals_eager(tiny_naflex_dir, rng):
    eager = sd.load_backbone(str(tiny_naflex_dir), layers=[0, -1])
    compiled = sd.load_backbone(str(tiny_naflex_dir), layers=[0, -1], compile=True)
    batches = [[random_image(rng, 40, 60), random_image(rng, 24, 24)], [random_image(rng, 32, 48)] * 2]
    with torch.inference_mode():
        for images in batches + batches[:1]:  # the repeat reuses the first shape's graph
            inputs = eager.preprocess(images)
            want, got = eager(**inputs), compiled(**inputs)
            for a, b in zip(want.maps, got.maps):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got.pooled, want.pooled, rtol=1e-5, atol=1e-5)


def test_compile_takes_a_bool(tiny_naflex_dir):
    with pytest.raises(RequestError, match="compile='yes'"):
        sd.load_backbone(str(tiny_naflex_dir), compile="yes")
