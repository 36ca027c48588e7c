"""The last block of a ViT rerun as a training-free open-vocabulary variant.

Works on any transformers encoder layer with ``layer_norm1``, ``self_attn`` (``q_proj``, ``k_proj``,
``v_proj``, ``out_proj``, ``num_heads``, ``scale``), ``layer_norm2`` and ``mlp``: SigLIP / SigLIP2's
``SiglipEncoderLayer`` and CLIP's ``CLIPEncoderLayer`` alike. Per head, with ``s = head_dim ** -0.5``
and ``x_n = layer_norm1(x)``, ``q, k, v`` its projections:

=============  ===============================================  =========================  ===========================
variant        attention weights                                block output               reference
=============  ===============================================  =========================  ===========================
``plain``      ``softmax(q k^T s)``                             ``x + a; + mlp(ln2(.))``   the block as trained
``value``      ``softmax(q k^T s)``                             ``x + a; + mlp(ln2(.))``   MaskCLIP value path (MAP
                                                                                           side: see ``openvocab.py``)
``sclip``      ``softmax(q q^T s) + softmax(k k^T s)``          ``x + a; + mlp(ln2(.))``   wangf3014/SCLIP
                                                                                           ``clip/model.py`` (CSA)
``naclip``     ``softmax(k k^T s + G)``                         ``a`` (reduced)            sinahmr/NACLIP
                                                                                           ``clip/model.py``
``clearclip``  ``softmax(q q^T s)``                             ``a`` (reduced)            mc-lan/ClearCLIP
                                                                                           ``open_clip/transformer.py``
``proxyclip``  ``softmax(P)`` from a second backbone, all heads ``a`` (reduced)            mc-lan/ProxyCLIP
                                                                                           ``open_clip/transformer.py``
=============  ===============================================  =========================  ===========================

where ``a = out_proj(weights @ v)``; "reduced" drops the residual and the MLP (NACLIP's
``arch='reduced'``, ClearCLIP's ``ignore_residual=True``, ProxyCLIP's ``custom_attn``).
``G[i, j] = exp(-|p_i - p_j|^2 / (2 std^2))`` over the patches' grid positions (NACLIP's
``gaussian_window`` + ``get_attention_addition``; zero for prefix tokens such as CLIP's class token,
``adjust_for_cls``). ProxyCLIP's ``P``: with ``f`` the proxy backbone's L2-normalised patch features,
``S = f f^T``, ``P = (S - beta * mean(S)) * gamma`` (mean over the image's pairs), entries ``< 0`` set
to ``-inf`` (``beta = 1.2``, ``gamma = 3.0``, its defaults in ``proxyclip_segmentor.py``). Where a row
has no entry ``>= 0`` (``beta * mean(S) > 1``: every pair alike) ProxyCLIP's softmax gives NaN; here the
patch keeps itself (weight 1 on the diagonal), which changes no other row.

Padding keys (``token_mask`` False) never receive weight; their outputs are meaningless.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siglip2_dense.errors import RequestError

VARIANTS = ("plain", "sclip", "naclip", "clearclip", "value", "proxyclip")
REDUCED_VARIANTS = ("naclip", "clearclip", "proxyclip")
PROXY_BETA = 1.2  # mc-lan/ProxyCLIP proxyclip_segmentor.py: beta=1.2
PROXY_GAMMA = 3.0  # mc-lan/ProxyCLIP proxyclip_segmentor.py: gamma=3.0


def gaussian_grid_prior(height: int, width: int, std: float, device: torch.device | None = None) -> Tensor:
    """``[H*W, H*W]``: ``exp(-squared grid distance / (2 std^2))`` between row-major grid cells."""
    rows = torch.arange(height, device=device, dtype=torch.float32).repeat_interleave(width)
    cols = torch.arange(width, device=device, dtype=torch.float32).repeat(height)
    squared = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    return torch.exp(-squared / (2.0 * std * std))


def proxy_attention_logits(
    proxy: Tensor, patch_mask: Tensor, beta: float = PROXY_BETA, gamma: float = PROXY_GAMMA
) -> Tensor:
    """ProxyCLIP's attention logits from a second backbone's patch features.

    Args:
        proxy: ``[B, N, C']`` proxy features of the ``N`` patches (any scale; normalised here).
        patch_mask: ``[B, N]`` bool, True for real patches (the mean and the keys use only those).

    Returns:
        ``[B, N, N]`` float32: ``(S - beta * mean(S)) * gamma`` with negatives and padding keys ``-inf``;
        a row left without a finite entry gets 0 on its diagonal.
    """
    features = F.normalize(proxy.float(), dim=-1)
    similarity = features @ features.transpose(1, 2)
    pair_mask = patch_mask[:, :, None] & patch_mask[:, None, :]
    pairs = pair_mask.sum(dim=(1, 2)).clamp(min=1)
    mean = (similarity * pair_mask).sum(dim=(1, 2)) / pairs
    logits = (similarity - beta * mean[:, None, None]) * gamma
    logits = logits.masked_fill((logits < 0) | ~patch_mask[:, None, :], float("-inf"))
    empty = torch.isinf(logits).all(dim=-1)  # [B, N]: rows with no finite entry
    eye = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    return logits.masked_fill(empty[:, :, None] & eye, 0.0)


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, N, C]`` -> ``[B, heads, N, C / heads]``."""
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, num_heads, channels // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """``[B, heads, N, d]`` -> ``[B, N, heads * d]``."""
    batch, num_heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, num_heads * head_dim)


def run_last_block(
    block: nn.Module,
    tokens: Tensor,
    token_mask: Tensor,
    grid: tuple[int, int],
    variant: str,
    num_prefix: int = 0,
    gaussian_std: float = 5.0,
    proxy_logits: Tensor | None = None,
) -> Tensor:
    """The encoder layer ``block`` run as ``variant`` (see the module docstring).

    Args:
        tokens: ``[B, T, C]``: ``num_prefix`` prefix tokens (CLIP's class token), then the ``H * W``
            row-major grid cells.
        token_mask: ``[B, T]`` bool, True for real tokens.
        grid: ``(H, W)``.
        proxy_logits: ``proxyclip`` only: ``[B, H*W, H*W]`` from :func:`proxy_attention_logits`.

    Returns:
        ``[B, T, C]`` (before any final layernorm). ``proxyclip`` leaves the prefix rows zero.
    """
    if variant not in VARIANTS:
        raise RequestError(f"variant={variant!r}: expected one of {VARIANTS}")
    attention = block.self_attn
    num_heads, scale = attention.num_heads, attention.scale
    hidden = block.layer_norm1(tokens)
    value = _heads(attention.v_proj(hidden), num_heads)
    if variant == "proxyclip":
        if proxy_logits is None:
            raise RequestError("variant='proxyclip' needs the proxy backbone's features (proxy_features=)")
        weights = torch.softmax(proxy_logits.to(value.dtype), dim=-1)[:, None]  # one map for every head
        mixed = weights @ value[:, :, num_prefix:]
        mixed = F.pad(mixed, (0, 0, num_prefix, 0))
        return attention.out_proj(_merge_heads(mixed))
    key_bias = torch.zeros(token_mask.shape, dtype=hidden.dtype, device=hidden.device)
    key_bias = key_bias.masked_fill(~token_mask, torch.finfo(hidden.dtype).min)[:, None, None, :]
    query = _heads(attention.q_proj(hidden), num_heads)
    key = _heads(attention.k_proj(hidden), num_heads)
    if variant in ("plain", "value"):
        mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=key_bias, scale=scale)
    elif variant == "sclip":
        mixed = F.scaled_dot_product_attention(query, query, value, attn_mask=key_bias, scale=scale)
        mixed = mixed + F.scaled_dot_product_attention(key, key, value, attn_mask=key_bias, scale=scale)
    elif variant == "clearclip":
        mixed = F.scaled_dot_product_attention(query, query, value, attn_mask=key_bias, scale=scale)
    else:  # naclip
        prior = gaussian_grid_prior(*grid, gaussian_std, device=hidden.device).to(hidden.dtype)
        prior = F.pad(prior, (num_prefix, 0, num_prefix, 0))
        mixed = F.scaled_dot_product_attention(key, key, value, attn_mask=key_bias + prior, scale=scale)
    attended = attention.out_proj(_merge_heads(mixed))
    if variant in REDUCED_VARIANTS:
        return attended
    out = tokens + attended
    return out + block.mlp(block.layer_norm2(out))
