"""Padding a training crop *after* normalisation: the padded pixels enter the backbone as exactly 0.

mmsegmentation's ADE20K pipeline (DINOv2) runs ``Normalize`` and then ``Pad(size=crop, pad_val=0)``;
DINOv3 runs ``NormalizeImage`` and then ``PadTensor(img_pad_value=0)``
(dinov3/eval/segmentation/transforms.py:432-438). Our backbones take uint8 images and normalise
inside ``preprocess``, so a pixel value that normalises to 0 would have to be the mean itself
(SigLIP: 127.5, ImageNet: 123.675 / 116.28 / 103.53), which uint8 cannot hold. The exact way: the
training transform pads (with any value) and records each crop's real ``(height, width)``
(``valid_size``); after ``backbone.preprocess`` the normalised values outside it are set to 0.

That is exact where ``preprocess`` does not resample the crop: FixRes and timm towers in training
(no ``size``), and NaFlex when the patch budget keeps the crop at its size (the processor's resize to
the same size is the identity). A NaFlex budget that rescales the crop would blend padded and real
pixels, which no reference does: :class:`~siglip2_dense.errors.ConfigError` names the budget.
"""

from __future__ import annotations

import torch

from siglip2_dense.errors import ConfigError


def zero_padded_pixels(
    inputs: dict[str, torch.Tensor], valid_sizes: torch.Tensor, crop: tuple[int, int], patch_size: int,
    is_naflex: bool,
) -> dict[str, torch.Tensor]:
    """``inputs`` (``backbone.preprocess`` of crops ``crop = (H, W)`` pixels) with every normalised value outside
    each image's ``valid_sizes[b] = (h, w)`` (rows ``>= h`` or columns ``>= w``) set to 0.

    Args:
        inputs: NaFlex ``pixel_values [B, N, p*p*3]`` (patches row-major, each flattened as
            (row, column, channel), transformers' ``convert_image_to_patches``) + ``spatial_shapes [B, 2]``;
            FixRes / timm ``pixel_values [B, 3, H', W']`` (padded right / bottom to whole patches).
        valid_sizes: ``[B, 2]`` long, the real rows and columns of each crop.

    Raises:
        ConfigError: a NaFlex budget that resamples the crop (``model.max_num_patches``).
    """
    pixels = inputs["pixel_values"]
    sizes = valid_sizes.to(pixels.device).long()
    if not is_naflex:
        rows = torch.arange(pixels.shape[-2], device=pixels.device)
        cols = torch.arange(pixels.shape[-1], device=pixels.device)
        keep = (rows[None, :, None] < sizes[:, 0, None, None]) & (cols[None, None, :] < sizes[:, 1, None, None])
        return {**inputs, "pixel_values": pixels * keep[:, None].to(pixels.dtype)}
    shapes = inputs["spatial_shapes"].long()
    fed = (shapes * patch_size).tolist()
    if any(tuple(size) != tuple(crop) for size in fed):
        raise ConfigError(
            f"data.pad_after_normalise: the NaFlex patch budget resamples the {crop[0]}x{crop[1]} crop to "
            f"{fed[0][0]}x{fed[0][1]} pixels, which mixes padded and real pixels; set model.max_num_patches to "
            f"{(crop[0] // patch_size) * (crop[1] // patch_size)} (the crop at native scale) or pad_after_normalise=false"
        )
    height, width = crop
    rows = torch.arange(height, device=pixels.device)
    cols = torch.arange(width, device=pixels.device)
    channels = pixels.shape[-1] // (patch_size * patch_size)
    masked = pixels.clone()
    for b in range(pixels.shape[0]):
        keep = (rows[:, None] < sizes[b, 0]) & (cols[None, :] < sizes[b, 1])  # [H, W]
        grid_h, grid_w = height // patch_size, width // patch_size
        patches = keep.reshape(grid_h, patch_size, grid_w, patch_size).permute(0, 2, 1, 3)
        patches = patches.reshape(grid_h * grid_w, patch_size * patch_size, 1).expand(-1, -1, channels)
        masked[b, : grid_h * grid_w] = pixels[b, : grid_h * grid_w] * patches.reshape(grid_h * grid_w, -1).to(
            pixels.dtype)
    return {**inputs, "pixel_values": masked}
