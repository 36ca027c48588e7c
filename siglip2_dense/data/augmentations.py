"""The albumentations transforms the standard dense-prediction recipes need and albumentations lacks.

- :class:`RandomShortSideResize`: mmsegmentation's ``RandomResize(scale=(4s, s), ratio_range, keep_ratio=True)``.
- :class:`ShortSideResize`: the same with a fixed ratio of 1 (mmsegmentation's test-time ``Resize``).
- :class:`CatMaxRandomCrop`: mmsegmentation's ``RandomCrop(crop_size, cat_max_ratio)``.
- :class:`PhotoMetricDistortion`: mmsegmentation's ``PhotoMetricDistortion``, on RGB.
- :class:`DepthColorAugment`: BTS's ``augment_image`` / the toolbox's ``ColorAug`` (gamma, brightness, colour).
- :class:`FixedCrop`: the toolbox's ``NYUCrop`` (a fixed box, before the random steps).

Images are ``[H, W, 3]`` uint8 and are resized bilinearly; masks (``[H, W]`` uint8 labels, or ``[H, W]``
float32 depth passed as a mask target) are resized with ``cv2.INTER_NEAREST_EXACT`` -- nearest neighbour
with pixel-centre alignment, so labels stay on the pixels the bilinear image puts them and depth is
never interpolated across an edge. Randomness comes from the transform's ``random_generator``, so a
``Compose(seed=...)`` makes a pipeline reproducible.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from siglip2_dense.errors import RequestError

MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def rescaled_size(height: int, width: int, short_side: float, long_side: float) -> tuple[int, int]:
    """mmcv's ``rescale_size``: the largest ``(h, w)`` of the same aspect with short <= short_side, long <= long_side."""
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class _ResizeToSize(A.DualTransform):
    """Resize image (bilinear) and masks (nearest, pixel-centre aligned) to ``params["size"]``."""

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, (size[1], size[0]), interpolation=MASK_INTERPOLATION)


class RandomShortSideResize(_ResizeToSize):
    """Rescale so the short side is ``short_side * r``, ``r ~ U(ratio_range)``, the long side at most ``long_side * r``.

    ``long_side`` defaults to ``4 * short_side`` (mmsegmentation's ``scale=(2048, 512)``). Aspect is kept.
    """

    def __init__(
        self,
        short_side: int = 512,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        long_side: int | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if short_side <= 0 or not 0 < ratio_range[0] <= ratio_range[1]:
            raise RequestError(
                f"short_side={short_side}, ratio_range={ratio_range}: need short_side > 0 and 0 < low <= high"
            )
        self.short_side = short_side
        self.ratio_range = tuple(ratio_range)
        self.long_side = long_side if long_side is not None else 4 * short_side

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.random_generator.uniform(*self.ratio_range)
        # mmseg turns the ratio into an integer target scale first
        size = rescaled_size(height, width, int(self.short_side * ratio), int(self.long_side * ratio))
        return {"size": size}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_side", "ratio_range", "long_side")


class ShortSideResize(RandomShortSideResize):
    """Rescale so the short side is ``short_side`` (long side at most ``long_side``), aspect kept."""

    def __init__(self, short_side: int = 512, long_side: int | None = None, p: float = 1.0) -> None:
        super().__init__(short_side, (1.0, 1.0), long_side, p=p)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_side", "long_side")


class CatMaxRandomCrop(A.DualTransform):
    """Random ``height x width`` crop that avoids crops dominated by one class.

    As mmsegmentation: draw a crop; up to ``max_tries`` times, if its most frequent class (``ignore_index``
    not counted) covers ``cat_max_ratio`` or more of the labelled pixels, or it holds a single class, draw
    again; the last crop drawn is kept. An image smaller than the crop is cropped to its own size along
    that side (pad afterwards, e.g. with ``PadIfNeeded``). ``cat_max_ratio >= 1`` disables the check.
    """

    def __init__(
        self,
        height: int,
        width: int,
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        max_tries: int = 10,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if height <= 0 or width <= 0:
            raise RequestError(f"crop size {height}x{width}: both sides must be positive")
        self.height, self.width = height, width
        self.cat_max_ratio, self.ignore_index, self.max_tries = cat_max_ratio, ignore_index, max_tries

    def _random_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        top = int(self.random_generator.integers(0, max(height - self.height, 0) + 1))
        left = int(self.random_generator.integers(0, max(width - self.width, 0) + 1))
        return top, min(top + self.height, height), left, min(left + self.width, width)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        box = self._random_box(height, width)
        labels = data.get("mask")
        if labels is not None and self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                counts = self._class_counts(labels[box[0] : box[1], box[2] : box[3]])
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = self._random_box(height, width)
        return {"box": box}

    def _class_counts(self, labels: np.ndarray) -> np.ndarray:
        """Pixel count of each label present, ``ignore_index`` left out (bincount: no sort for uint masks)."""
        if labels.dtype.kind == "u":
            counts = np.bincount(labels.ravel(), minlength=self.ignore_index + 1)
            counts[self.ignore_index] = 0
            return counts[counts > 0]
        values, counts = np.unique(labels, return_counts=True)
        return counts[values != self.ignore_index]

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return np.ascontiguousarray(img[box[0] : box[1], box[2] : box[3]])

    def apply_to_mask(self, mask: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return np.ascontiguousarray(mask[box[0] : box[1], box[2] : box[3]])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


def _affine_uint8(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


PHOTOMETRIC_FORMS = ("mmseg", "dinov3")


def dinov3_saturation_hue(img: np.ndarray, saturation: float | None, hue: float | None) -> np.ndarray:
    """DINOv3's saturation and hue steps on an ``[H, W, 3]`` uint8 RGB image: torchvision's
    ``adjust_saturation(img, factor)`` then ``adjust_hue(img, factor)`` on the uint8 tensor
    (facebookresearch/dinov3 dinov3/eval/segmentation/transforms.py:67-81)."""
    from torchvision.transforms import functional as tvf

    tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    if saturation is not None:
        tensor = tvf.adjust_saturation(tensor, float(saturation))
    if hue is not None:
        tensor = tvf.adjust_hue(tensor, float(hue))
    return tensor.permute(1, 2, 0).contiguous().numpy()


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmsegmentation's PhotoMetricDistortion on an ``[H, W, 3]`` uint8 RGB image.

    Each step with probability 1/2: brightness ``+ U(-32, 32)``; contrast ``* U(0.5, 1.5)`` (before the
    colour steps or after them, at random); saturation ``* U(0.5, 1.5)``; hue ``+ randint(-18, 18)`` in
    OpenCV's 0..179 hue units. Values are clipped to 0..255 after each step.

    ``form="dinov3"``: DINOv3's variant (dinov3/eval/segmentation/transforms.py:21-101): brightness and
    contrast as above; saturation by torchvision's ``adjust_saturation`` (a blend with the grey image)
    and hue by ``adjust_hue(U(-0.5, 0.5))`` (a rotation of the whole hue circle, ``hue_range``), not
    mmseg's +-18 of 180.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        p: float = 1.0,
        form: str = "mmseg",
        hue_range: tuple[float, float] = (-0.5, 0.5),
    ) -> None:
        super().__init__(p=p)
        if form not in PHOTOMETRIC_FORMS:
            raise RequestError(f"PhotoMetricDistortion: form={form!r}; expected one of {', '.join(PHOTOMETRIC_FORMS)}")
        self.form, self.hue_range = form, tuple(hue_range)
        self.brightness_delta, self.hue_delta = brightness_delta, hue_delta
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        return {
            "brightness": rng.uniform(-self.brightness_delta, self.brightness_delta)
            if rng.integers(2)
            else None,
            "contrast_first": bool(rng.integers(2)),
            "contrast": rng.uniform(*self.contrast_range) if rng.integers(2) else None,
            "saturation": rng.uniform(*self.saturation_range) if rng.integers(2) else None,
            "hue": self._draw_hue() if rng.integers(2) else None,
        }

    def _draw_hue(self) -> float:
        if self.form == "dinov3":
            return float(self.random_generator.uniform(*self.hue_range))  # transforms.py:77 U(hue_lower, hue_upper)
        return int(self.random_generator.integers(-self.hue_delta, self.hue_delta))

    def apply(
        self,
        img: np.ndarray,
        brightness: float | None,
        contrast_first: bool,
        contrast: float | None,
        saturation: float | None,
        hue: float | None,
        **params: Any,
    ) -> np.ndarray:
        if brightness is not None:
            img = _affine_uint8(img, beta=brightness)
        if contrast is not None and contrast_first:
            img = _affine_uint8(img, alpha=contrast)
        if self.form == "dinov3":
            img = dinov3_saturation_hue(img, saturation, hue)
        elif saturation is not None or hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            if saturation is not None:
                hsv[..., 1] = _affine_uint8(hsv[..., 1], alpha=saturation)
            if hue is not None:
                hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + hue) % 180).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if contrast is not None and not contrast_first:
            img = _affine_uint8(img, alpha=contrast)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta", "form", "hue_range")


COLOUR_SCALES = ("unit", "pixel")


class DepthColorAugment(A.ImageOnlyTransform):
    """The depth recipes' colour augmentation, on an ``[H, W, 3]`` uint8 image.

    ``x ** gamma``, ``gamma ~ U(0.9, 1.1)``; ``* U(0.75, 1.25)`` brightness; ``* U(0.9, 1.1)`` per channel;
    clip; drawn in that order (gamma, brightness, three colours), as the references draw them.

    ``scale="unit"`` (BTS ``augment_image``): on ``x / 255`` in [0, 1], clipped to [0, 1].
    ``scale="pixel"``: on the 0-255 values themselves, clipped to [0, 255], as DINOv2's NYU configs
    run it (Monocular-Depth-Estimation-Toolbox ``depth/datasets/pipelines/transforms.py``, ``ColorAug``:
    ``image_aug = image**gamma`` on the loaded 0-255 image, ``np.clip(image_aug, 0, 255)``) and DINOv3
    (``dinov3/eval/depth/transforms.py:65-69``); 128 becomes 128 ** 1.1 = 207 at gamma 1.1. Both
    round back to uint8 (the references keep floats; the difference is at most 0.5 of a grey level).
    """

    def __init__(
        self,
        gamma_range: tuple[float, float] = (0.9, 1.1),
        brightness_range: tuple[float, float] = (0.75, 1.25),
        colour_range: tuple[float, float] = (0.9, 1.1),
        p: float = 0.5,
        scale: str = "unit",
    ) -> None:
        super().__init__(p=p)
        if scale not in COLOUR_SCALES:
            raise RequestError(f"DepthColorAugment: scale={scale!r}; expected one of {', '.join(COLOUR_SCALES)}")
        self.gamma_range, self.brightness_range = tuple(gamma_range), tuple(brightness_range)
        self.colour_range = tuple(colour_range)
        self.scale = scale

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        return {
            "gamma": rng.uniform(*self.gamma_range),
            "gain": rng.uniform(*self.brightness_range) * rng.uniform(*self.colour_range, size=3),
        }

    def apply(self, img: np.ndarray, gamma: float, gain: np.ndarray, **params: Any) -> np.ndarray:
        if self.scale == "pixel":
            augmented = img.astype(np.float64) ** gamma * gain
            return np.round(np.clip(augmented, 0.0, 255.0)).astype(np.uint8)
        scaled = (img.astype(np.float32) / 255.0) ** gamma * gain.astype(np.float32)
        return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("gamma_range", "brightness_range", "colour_range", "scale")


class FixedCrop(A.DualTransform):
    """Keep rows ``top:bottom`` and columns ``left:right`` of the image and its targets (no randomness).

    NYUv2's ``(45, 472, 43, 608)`` is the toolbox's ``NYUCrop`` (``results["img"][45:472, 43:608, :]``),
    which DINOv2's NYU configs run first and DINOv3 runs as ``fixed_crop: 'NYU'``. An image smaller
    than ``bottom`` x ``right`` raises :class:`RequestError`.
    """

    def __init__(self, top: int, bottom: int, left: int, right: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.top, self.bottom, self.left, self.right = int(top), int(bottom), int(left), int(right)

    def _cut(self, array: np.ndarray) -> np.ndarray:
        height, width = array.shape[:2]
        if height < self.bottom or width < self.right:
            raise RequestError(
                f"fixed crop rows {self.top}:{self.bottom}, columns {self.left}:{self.right} needs an image of at "
                f"least {self.bottom}x{self.right}; got {height}x{width}"
            )
        return np.ascontiguousarray(array[self.top : self.bottom, self.left : self.right])

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return self._cut(img)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return self._cut(mask)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("top", "bottom", "left", "right")
