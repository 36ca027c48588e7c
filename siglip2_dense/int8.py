"""Dynamic int8 linear layers for CPU inference of a frozen tower (``quantize="int8"``).

Every ``nn.Linear`` of a tower's blocks and pooling head becomes PyTorch's own dynamically quantised
linear layer (``torch.ao.nn.quantized.dynamic.Linear``): the weights stored as int8 with one scale per
output channel, the activations quantised per batch at run time, the product accumulated in int32 by
fbgemm. The embeddings (the first layer, a twelfth of a block's work) and ``nn.MultiheadAttention``'s
fused input projection (not an ``nn.Linear``; one query token) stay float32.

Why PyTorch's and not torchao: on the AVX2 (no VNNI) CPUs this was measured on, a base block's MLP
([2048, 768] -> 3072 -> 768) ran 1.9x faster than float32 with PyTorch's dynamic layers and 0.76x
(slower) with torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` in eager mode; and PyTorch's
needs no extra package. ``torch.ao.quantization`` warns that it is deprecated; the warning is silenced
here, and a PyTorch without it gives a :class:`~siglip2_dense.errors.RequestError` naming the cause.

Shared by the vision tower (``load_backbone``) and the text tower (``TextEncoder``), which must not import each other.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from siglip2_dense.errors import RequestError

QUANTIZE_CHOICES = ("int8",)


def check_quantize(
    quantize: str | None, device: torch.device, dtype: torch.dtype, freeze: bool = True, quantization_config: object = None
) -> None:
    """Refuse a ``quantize`` request the CPU int8 path cannot honour, naming the value and the choices."""
    if quantize is None:
        return
    if quantization_config is not None:
        raise RequestError(f"quantize={quantize!r} and a quantization_config: choose one")
    if quantize not in QUANTIZE_CHOICES:
        raise RequestError(f"quantize={quantize!r}; expected None or one of {QUANTIZE_CHOICES}")
    if not freeze:
        raise RequestError(
            f"quantize={quantize!r} is for inference with a frozen tower; this one is tuned (freeze=False, "
            "tune_last_blocks > 0 or tune_attention): train in float32, quantise the trained model for inference"
        )
    if torch.device(device).type != "cpu":
        raise RequestError(
            f"quantize={quantize!r} runs on the CPU (fbgemm int8 kernels), not on {torch.device(device)}; "
            "on a GPU pass quantization_config=BitsAndBytesConfig(...) or use dtype=torch.bfloat16"
        )
    if dtype != torch.float32:
        raise RequestError(f"quantize={quantize!r} quantises float32 weights; got dtype={dtype}")


def quantizable_linear_names(tower: nn.Module) -> list[str]:
    """Qualified names of the tower's plain ``nn.Linear`` layers outside its embeddings."""
    return [
        name for name, module in tower.named_modules()
        if type(module) is nn.Linear and "embeddings" not in name.split(".")
    ]


def quantize_linear_layers(tower: nn.Module, quantize: str | None) -> nn.Module:
    """Swap ``tower``'s linear layers (see :func:`quantizable_linear_names`) for dynamic int8 ones, in place.

    ``quantize=None`` leaves the tower as it is. Returns ``tower`` (eval mode, no gradients).
    """
    if quantize is None:
        return tower
    if quantize not in QUANTIZE_CHOICES:
        raise RequestError(f"quantize={quantize!r}; expected None or one of {QUANTIZE_CHOICES}")
    if "fbgemm" not in torch.backends.quantized.supported_engines and "x86" not in torch.backends.quantized.supported_engines:
        raise RequestError(f"quantize={quantize!r} needs PyTorch's x86 int8 kernels (fbgemm); this build has "
                           f"{torch.backends.quantized.supported_engines}")
    names = quantizable_linear_names(tower)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", message=".*quantize_per.*")
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as error:  # a PyTorch that has removed eager-mode quantisation
            raise RequestError(f"quantize={quantize!r} needs torch.ao.quantization, which this PyTorch "
                               f"({torch.__version__}) lacks: {error}") from error
        tower.eval().requires_grad_(False)
        quantize_dynamic(tower, {name: per_channel_dynamic_qconfig for name in names}, dtype=torch.qint8, inplace=True)
    return tower


def tower_weight_bytes(tower: nn.Module) -> int:
    """Bytes of the tower's weights as they sit in memory: float parameters, plus each int8 layer's
    int8 weight, float32 per-channel scales, int32 zero points and float32 bias (fbgemm's packing)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    total = sum(p.numel() * p.element_size() for p in tower.parameters())
    for module in tower.modules():
        if isinstance(module, DynamicLinear):
            weight, bias = module._weight_bias()
            total += weight.numel()  # one byte each
            channels = weight.shape[0] if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) else 1
            total += channels * (4 + 4)
            total += 0 if bias is None else bias.numel() * 4
    return total


def quantized_as(tower: nn.Module) -> str | None:
    """``"int8"`` when any of the tower's layers is a dynamic int8 one, else None (caches key on it)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return "int8" if any(isinstance(module, DynamicLinear) for module in tower.modules()) else None
