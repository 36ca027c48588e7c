"""The layers of :class:`~siglip2_dense.heads.cost_aggregation.CostAggregationHead`, as CAT-Seg builds them.

Transcribed from github.com/cvlab-kaist/CAT-Seg ``cat_seg/modeling/transformer/model.py`` (commit
b0e9438): ``WindowAttention`` / ``SwinTransformerBlock`` / ``SwinTransformerBlockWrapper`` (spatial
aggregation), ``LinearAttention`` / ``AttentionLayer`` / ``ClassTransformerLayer`` (class aggregation),
``DoubleConv`` / ``Up`` (the upsampling decoder). The formulas and sizes are CAT-Seg's; the code is
written for padded NaFlex grids, where CAT-Seg always has a full 24 x 24 grid. Where that changes
what is computed, it is said here and in the class:

- Shifted windows. Swin's cyclic shift with its region mask is the same as cutting the grid into
  windows whose boundaries sit at ``shift + k * window`` (the border windows partial). That is how
  the grid is cut here, from each image's top-left corner; cells outside the image (NaFlex padding,
  or the round-up to whole windows) are never keys. On a grid that is a whole number of windows
  (CAT-Seg's 24 x 24 with window 12) the result is Swin's, with masked keys at ``-inf`` instead of
  ``-100``. On other grids Swin attends to its zero padding; here it does not.
- Class aggregation's pooling and its way back: CAT-Seg averages 2 x 2 cells and returns with bilinear
  ``align_corners=True`` on the fixed grid; here the average is over real cells only and the way back
  is edge-clamped bilinear ``align_corners=False``
  (:func:`~siglip2_dense.heads.padded_grid.upsample2x`), whose sampling does not depend on the
  padded canvas.
- GroupNorm in the decoder takes its statistics over each image's real cells.

Shapes: ``B`` images, ``T`` classes, ``C`` channels, ``(H, W)`` the padded grid, ``mask [B, H, W]`` the
real cells; a cost volume is ``[B, T, C, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .padded_grid import grid_sizes_at, mask_like, upsample2x, zero_padding

MASKED = float("-inf")


def grid_sizes_of(mask: Tensor) -> Tensor:
    """``mask [B, H, W]`` (real cells top-left) -> ``[B, 2]`` long ``(h, w)`` of each image."""
    return torch.stack([mask.any(dim=2).sum(dim=1), mask.any(dim=1).sum(dim=1)], dim=1).long()


class WindowedSpatialBlock(nn.Module):
    """One Swin block over each class's cost slice, with appearance guidance in queries and keys.

    CAT-Seg ``SwinTransformerBlock``: ``x = x + proj(attn)``, ``x = x + mlp(norm2(x))``, where queries and
    keys are linear maps of ``[norm1(x), guidance]`` and values of ``norm1(x)`` alone; ``num_heads``
    heads of ``dim / num_heads``; MLP ratio 4 with GELU (timm ``Mlp``).

    Args:
        dim: cost channels ``C`` (CAT-Seg HIDDEN_DIMS 128).
        guidance_dim: appearance guidance channels (APPEARANCE_GUIDANCE_PROJ_DIM 128; 0: none).
        num_heads: NUM_HEADS 4.
        window: WINDOW_SIZES 12 (cells).
        shift: 0 for the first block of a pair, ``window // 2`` for the second.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window: int, shift: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be a multiple of num_heads={num_heads}")
        self.num_heads, self.window, self.shift = num_heads, int(window), int(shift)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, guidance: Tensor | None, mask: Tensor) -> Tensor:
        """``x [N, H, W, C]`` (``N = B * T``, image-major), ``guidance [N, H, W, G]`` or None,
        ``mask [N, H, W]`` -> ``[N, H, W, C]``, zero at padding."""
        count, height, width, channels = x.shape
        normed = self.norm1(x)
        query_key = normed if guidance is None else torch.cat([normed, guidance], dim=-1)
        lead = (self.window - self.shift) % self.window  # windows' boundaries at shift + k * window
        rows = -(-(height + lead) // self.window) * self.window
        cols = -(-(width + lead) // self.window) * self.window

        def windows(t: Tensor) -> Tensor:  # [N, H, W, D] -> [N * nW, window * window, D]
            t = F.pad(t, (0, 0, lead, cols - width - lead, lead, rows - height - lead))
            t = t.reshape(count, rows // self.window, self.window, cols // self.window, self.window, -1)
            return t.permute(0, 1, 3, 2, 4, 5).reshape(-1, self.window * self.window, t.shape[-1])

        def split_heads(t: Tensor) -> Tensor:  # [M, L, C] -> [M, heads, L, C / heads]
            return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

        q = split_heads(windows(self.q(query_key)))
        k = split_heads(windows(self.k(query_key)))
        v = split_heads(windows(self.v(normed)))
        keys = windows(mask[..., None].to(x.dtype))[..., 0] > 0  # [M, L]
        bias = torch.zeros(keys.shape, dtype=q.dtype, device=q.device).masked_fill(~keys, MASKED)
        # a window without a real key holds no real query: give it a finite row, its output is dropped
        bias = bias.masked_fill(~keys.any(dim=-1, keepdim=True), 0.0)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
        attended = attended.transpose(1, 2).reshape(-1, self.window * self.window, channels)
        attended = attended.reshape(count, rows // self.window, cols // self.window, self.window, self.window, channels)
        attended = attended.permute(0, 1, 3, 2, 4, 5).reshape(count, rows, cols, channels)
        attended = attended[:, lead : lead + height, lead : lead + width]
        x = x + self.proj(attended)
        x = x + self.mlp(self.norm2(x))
        return x * mask[..., None].to(x.dtype)


class SpatialAggregation(nn.Module):
    """CAT-Seg ``SwinTransformerBlockWrapper``: a window block and a shifted-window block, the appearance
    guidance layer-normed (``guidance_norm``) and shared by every class."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.block_1 = WindowedSpatialBlock(dim, guidance_dim, num_heads, window, shift=0)
        self.block_2 = WindowedSpatialBlock(dim, guidance_dim, num_heads, window, shift=window // 2)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, cost: Tensor, guidance: Tensor | None, mask: Tensor, class_chunk: int) -> Tensor:
        """``cost [B, T, C, H, W]``, ``guidance [B, G, H, W]`` -> ``[B, T, C, H, W]``; classes in chunks
        of ``class_chunk`` (each class's slice is independent of the others here)."""
        batch, classes, channels, height, width = cost.shape
        normed = None
        if guidance is not None and self.guidance_norm is not None:
            normed = self.guidance_norm(guidance.permute(0, 2, 3, 1))  # [B, H, W, G]
        outputs = []
        for start in range(0, classes, class_chunk):
            part = cost[:, start : start + class_chunk]
            count = part.shape[1]
            x = part.permute(0, 1, 3, 4, 2).reshape(batch * count, height, width, channels)
            cells = mask.repeat_interleave(count, dim=0)
            g = None if normed is None else normed.repeat_interleave(count, dim=0)
            x = self.block_2(self.block_1(x, g, cells), g, cells)
            outputs.append(x.reshape(batch, count, height, width, channels).permute(0, 1, 4, 2, 3))
        return torch.cat(outputs, dim=1)


def linear_attention(queries: Tensor, keys: Tensor, values: Tensor, eps: float = 1e-6) -> Tensor:
    """CAT-Seg ``LinearAttention`` ("Transformers are RNNs"): ``phi = elu + 1``,
    ``out_l = phi(q_l) . sum_s phi(k_s) v_s^T / (phi(q_l) . sum_s phi(k_s) + eps)``.

    ``[N, L, heads, D]`` each -> ``[N, L, heads, D]``. (CAT-Seg divides the values by the length and
    multiplies the result back, against fp16 overflow: the same value.)
    """
    q, k = F.elu(queries) + 1, F.elu(keys) + 1
    length = values.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", k, values / length)
    normaliser = 1.0 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, normaliser) * length


class ClassAggregation(nn.Module):
    """CAT-Seg ``ClassTransformerLayer``: attention across classes at every (pooled) cell.

    ``pooled = pool(x)``; classes padded to ``pad_len`` with a learned token (and learned guidance);
    ``pooled += linear_attention(q, k from [norm1(pooled), text guidance], v from norm1(pooled))``;
    ``pooled += MLP(norm2(pooled))`` (ratio 4, ReLU); back to the grid and ``x + up(pooled)``.
    Permutation-equivariant in the classes; any number of classes.

    Args:
        dim: HIDDEN_DIMS 128; guidance_dim: TEXT_GUIDANCE_PROJ_DIM 128 (0: none);
        num_heads: NUM_HEADS 4; pooling: POOLING_SIZES (1 or 2 here; CAT-Seg's ViT-L config: 2);
        pad_len: the class count padded to (``Aggregator``'s default 256; 0: no padding).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, pooling: int, pad_len: int) -> None:
        super().__init__()
        if pooling not in (1, 2):
            raise ValueError(f"pooling={pooling}: this head pools class aggregation by 1 or 2 cells")
        self.num_heads, self.pooling, self.pad_len = num_heads, pooling, int(pad_len)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.padding_token = nn.Parameter(torch.zeros(dim)) if pad_len > 0 else None
        self.padding_guidance = nn.Parameter(torch.zeros(guidance_dim)) if pad_len > 0 and guidance_dim > 0 else None

    def pool(self, x: Tensor, mask: Tensor) -> Tensor:
        """``[B, T, C, H, W]`` -> the mean of each ``pooling``-square of real cells ``[B, T, C, h', w']``."""
        if self.pooling == 1:
            return x
        batch, classes, channels, height, width = x.shape
        weights = mask.to(x.dtype)[:, None, None]
        flat = (x * weights).reshape(batch, classes * channels, height, width)
        sums = F.avg_pool2d(flat, self.pooling, ceil_mode=True)
        counts = F.avg_pool2d(weights[:, 0], self.pooling, ceil_mode=True)  # [B, 1, h', w']
        pooled = sums / counts.clamp(min=1e-12)
        return pooled.reshape(batch, classes, channels, *pooled.shape[-2:])

    def forward(self, x: Tensor, guidance: Tensor | None, mask: Tensor) -> Tensor:
        """``x [B, T, C, H, W]``, ``guidance [T, G]`` (shared by the batch) -> ``[B, T, C, H, W]``."""
        batch, classes, channels, height, width = x.shape
        pooled = self.pool(x, mask)
        ph, pw = pooled.shape[-2:]
        tokens = pooled.permute(0, 3, 4, 1, 2).reshape(batch * ph * pw, classes, channels)  # [B h' w', T, C]
        padding = max(self.pad_len - classes, 0) if self.padding_token is not None else 0
        if padding:
            tokens = torch.cat([tokens, self.padding_token.expand(tokens.shape[0], padding, channels)], dim=1)
        normed = self.norm1(tokens)
        query_key = normed
        if guidance is not None:
            if padding and self.padding_guidance is not None:
                guidance = torch.cat([guidance, self.padding_guidance.expand(padding, -1)], dim=0)
            query_key = torch.cat([normed, guidance.expand(tokens.shape[0], -1, -1)], dim=-1)

        def split_heads(t: Tensor) -> Tensor:
            return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1)

        attended = linear_attention(split_heads(self.q(query_key)), split_heads(self.k(query_key)),
                                    split_heads(self.v(normed)))
        tokens = tokens + attended.reshape(tokens.shape)
        tokens = tokens + self.mlp(self.norm2(tokens))
        tokens = tokens[:, :classes]
        pooled = tokens.reshape(batch, ph, pw, classes, channels).permute(0, 3, 4, 1, 2)
        if self.pooling == 2:
            sizes = grid_sizes_of(mask)
            flat = pooled.reshape(batch, classes * channels, ph, pw)
            up = upsample2x(flat, grid_sizes_at(sizes, 1, 2), sizes, (height, width))
            pooled = up.reshape(batch, classes, channels, height, width)
        return (x + pooled) * mask[:, None, None].to(x.dtype)


def masked_group_norm(norm: nn.GroupNorm, x: Tensor, mask: Tensor) -> Tensor:
    """``norm`` (GroupNorm) with its statistics over the real cells of ``x [N, C, H, W]`` (``mask [N, H, W]``)."""
    count, channels, height, width = x.shape
    groups = norm.num_groups
    grouped = x.reshape(count, groups, channels // groups, height * width)
    weights = mask.reshape(count, 1, 1, height * width).to(x.dtype)
    cells = (weights.sum(dim=-1, keepdim=True) * (channels // groups)).clamp(min=1)
    mean = (grouped * weights).sum(dim=(2, 3), keepdim=True) / cells
    variance = (((grouped - mean) ** 2) * weights).sum(dim=(2, 3), keepdim=True) / cells
    normed = ((grouped - mean) / torch.sqrt(variance + norm.eps)).reshape(count, channels, height, width)
    return (normed * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]) * mask[:, None].to(x.dtype)


class UpBlock(nn.Module):
    """CAT-Seg ``Up``: ``ConvTranspose2d(in, in - guidance, 2, stride 2)``, the guidance concatenated, then
    ``DoubleConv``: (3 x 3 conv without bias, GroupNorm(out / 16 groups), ReLU) twice.

    ``forward(x [N, in, H, W], guidance [B, g, 2H, 2W] or None, mask [N, 2H, 2W])`` with ``N = B * T``
    (image-major) -> ``[N, out, 2H, 2W]``, zero at padding.
    """

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, kernel_size=2, stride=2)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(out_channels // 16, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(out_channels // 16, out_channels)

    def forward(self, x: Tensor, guidance: Tensor | None, mask: Tensor) -> Tensor:
        x = zero_padding(self.up(x), mask)
        if guidance is not None:
            x = torch.cat([x, guidance.repeat_interleave(x.shape[0] // guidance.shape[0], dim=0)], dim=1)
        x = F.relu(masked_group_norm(self.norm1, self.conv1(x), mask))
        return F.relu(masked_group_norm(self.norm2, self.conv2(x), mask))


def masks_at(mask: Tensor, factor: int) -> Tensor:
    """The real cells of a grid ``factor`` times finer than ``mask [B, H, W]``: ``[B, fH, fW]``."""
    fine = torch.empty(mask.shape[0], 1, mask.shape[1] * factor, mask.shape[2] * factor, device=mask.device)
    return mask_like(fine, grid_sizes_at(grid_sizes_of(mask), factor))
