"""quantization_config: transformers' quantisation configs pass through the one tower loader.

bitsandbytes is never a dependency: the 4-bit test runs where bitsandbytes (and accelerate, which
transformers' bitsandbytes loading needs) are installed, and is skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from conftest import random_image

import siglip2_dense as sd
from siglip2_dense.errors import RequestError

MISSING = [name for name in ("bitsandbytes", "accelerate") if importlib.util.find_spec(name) is None]


def test_quantize_and_quantization_config_together_are_refused(tiny_naflex_dir):
    from transformers import BitsAndBytesConfig

    with pytest.raises(RequestError, match="choose one"):
        sd.load_backbone(str(tiny_naflex_dir), quantize="int8", quantization_config=BitsAndBytesConfig(load_in_4bit=True))


@pytest.mark.skipif(not MISSING, reason="bitsandbytes and accelerate are both installed")
def test_missing_quantisation_package_is_a_request_error_naming_it(tiny_naflex_dir):
    from transformers import BitsAndBytesConfig

    with pytest.raises(RequestError) as raised:
        sd.load_backbone(str(tiny_naflex_dir), quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    assert "BitsAndBytesConfig" in str(raised.value) and any(name in str(raised.value) for name in MISSING)


@pytest.mark.skipif(bool(MISSING), reason=f"4-bit loading needs {' and '.join(MISSING)} (not installed)")
def test_4bit_backbone_loads_and_stays_close_to_float32(tiny_naflex_dir, rng):
    from transformers import BitsAndBytesConfig

    fp32 = sd.load_backbone(str(tiny_naflex_dir))
    four_bit = sd.load_backbone(str(tiny_naflex_dir), quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    inputs = fp32.preprocess([random_image(rng, 40, 60)])
    with torch.inference_mode():
        want, got = fp32(**inputs).maps[0], four_bit(**inputs).maps[0]
    assert F.cosine_similarity(want.flatten(1), got.float().flatten(1)).min() > 0.9
