"""What open-vocabulary segmentation returns for one image, and how it is shown and saved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from siglip2_dense.files import atomic_output, write_text_atomic

__all__ = ["OpenVocabResult", "label_colours"]

_LEGEND_ROWS = 24
_BACKGROUND_COLOUR = (0, 0, 0)


def label_colours(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 colours: ADE20K's palette for the first 150, golden-ratio hues after."""
    palette = json.loads(
        resources.files("siglip2_dense").joinpath("assets", "ade20k_150.json").read_text(encoding="utf-8")
    )["palette"]
    colours = [tuple(palette[k]) if k < len(palette) else _hue_colour(k) for k in range(count)]
    return np.asarray(colours, dtype=np.uint8).reshape(count, 3)


def _hue_colour(index: int) -> tuple[int, int, int]:
    import colorsys

    red, green, blue = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


@dataclass
class OpenVocabResult:
    """Open-vocabulary segmentation of one ``H x W`` image.

    Attributes:
        labels: the K labels as asked (synonyms included, e.g. ``"person, people"``).
        scores: ``[K, H, W]`` float32 sigmoid probabilities at the image's size (bilinear
            upsampling of the patch-grid probabilities, ``align_corners=False``).
        label_map: ``[H, W]`` long, the arg-max label index per pixel; ``K`` (one past the last
            label, :attr:`background_index`) where background thresholding applied.
        background_index: ``K`` when the segmenter had a ``background_threshold``, else None
            (no pixel is background).
        image: the ``(H, W, 3)`` uint8 image, kept for :meth:`overlay`.
    """

    labels: list[str]
    scores: torch.Tensor
    label_map: torch.Tensor
    background_index: int | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    def names(self) -> list[str]:
        """Display names, one per label index (a label's first synonym, as given), then
        :attr:`background_name` when there is a background index."""
        names = [label.split(",")[0].strip() or label for label in self.labels]
        return names + [self.background_name] if self.background_index is not None else names

    @property
    def background_name(self) -> str:
        """``"background"``, or ``"<background>"`` when a label is itself called "background"."""
        return "<background>" if "background" in self.labels else "background"

    def shares(self) -> dict[str, float]:
        """Fraction of the image's pixels given to each label (and :attr:`background_name`), keyed by label."""
        counts = torch.bincount(self.label_map.flatten(), minlength=len(self.labels) + 1).tolist()
        total = max(1, self.label_map.numel())
        keys = list(self.labels) + ([self.background_name] if self.background_index is not None else [])
        return {key: counts[k] / total for k, key in enumerate(keys)}

    # --- COCO -----------------------------------------------------------------------------------
    def to_coco_rle(self) -> list[dict[str, Any]]:
        """One COCO RLE per label, in label order: ``{"size": [H, W], "counts": str}``.

        ``pycocotools.mask.decode`` of entry ``k`` gives ``label_map == k``.
        """
        from pycocotools import mask as mask_utils

        label_map = self.label_map.cpu().numpy()
        encoded = []
        for k in range(len(self.labels)):
            rle = mask_utils.encode(np.asfortranarray((label_map == k).astype(np.uint8)))
            encoded.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})
        return encoded

    def to_coco_json(self, image_id: int = 0, file_name: str = "") -> dict[str, Any]:
        """A COCO-style dict: ``images``, ``categories`` (``id`` = label index) and one annotation
        per label present (RLE ``segmentation``, ``area``, ``bbox`` ``[x, y, w, h]``, ``score`` = the
        label's mean probability over its pixels)."""
        from pycocotools import mask as mask_utils

        height, width = self.size
        annotations = []
        for k, rle in enumerate(self.to_coco_rle()):
            coco_rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            area = int(mask_utils.area(coco_rle))
            if area == 0:
                continue
            region = self.label_map == k
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": k, "segmentation": rle,
                "area": area, "bbox": [float(v) for v in mask_utils.toBbox(coco_rle)], "iscrowd": 0,
                "score": float(self.scores[k][region].mean()),
            })
        return {
            "images": [{"id": image_id, "file_name": file_name, "height": height, "width": width}],
            "categories": [{"id": k, "name": label} for k, label in enumerate(self.labels)],
            "annotations": annotations,
            "background_index": self.background_index,
        }

    # --- pictures -------------------------------------------------------------------------------
    def colour_map(self) -> np.ndarray:
        """``(H, W, 3)`` uint8: each pixel in its label's colour, background black."""
        colours = np.concatenate([label_colours(len(self.labels)), np.zeros((1, 3), np.uint8)])
        return colours[self.label_map.cpu().numpy()]

    def label_map_image(self) -> Image.Image:
        """The label map as a PNG-ready image: mode ``L`` for up to 256 indices, else ``I;16``."""
        label_map = self.label_map.cpu().numpy()
        if len(self.labels) + 1 <= 256:
            return Image.fromarray(label_map.astype(np.uint8), mode="L")
        return Image.fromarray(label_map.astype(np.uint16), mode="I;16")

    def overlay(self, alpha: float = 0.5, image: np.ndarray | None = None) -> Image.Image:
        """The image tinted by label colours (background untinted) with a legend panel on the right.

        The legend lists the labels present, largest share first, with their share of the image.
        """
        base = self.image if image is None else image
        if base is None:
            base = np.zeros((*self.size, 3), dtype=np.uint8)
        base = np.asarray(base, dtype=np.uint8)
        tinted = base.astype(np.float32)
        label_map = self.label_map.cpu().numpy()
        foreground = label_map < len(self.labels)
        tinted[foreground] = (1 - alpha) * tinted[foreground] + alpha * self.colour_map()[foreground]
        picture = Image.fromarray(np.clip(tinted + 0.5, 0, 255).astype(np.uint8))
        return _with_legend(picture, self._legend_entries())

    def _legend_entries(self) -> list[tuple[str, tuple[int, int, int], float]]:
        colours = label_colours(len(self.labels))
        shares = list(self.shares().values())
        names = self.names()
        entries = []
        for k in sorted(range(len(shares)), key=lambda i: -shares[i]):
            if shares[k] > 0:
                colour = _BACKGROUND_COLOUR if k == len(self.labels) else tuple(int(c) for c in colours[k])
                entries.append((names[k], colour, shares[k]))
        return entries

    def save(self, directory: str | Path, stem: str = "segmentation", file_name: str = "") -> dict[str, Path]:
        """Write ``<stem>_overlay.png``, ``<stem>_labels.png`` (label indices) and ``<stem>.json``
        (COCO-style RLE masks) into ``directory``; returns the three paths by kind."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "overlay": directory / f"{stem}_overlay.png",
            "label_map": directory / f"{stem}_labels.png",
            "json": directory / f"{stem}.json",
        }
        for kind, picture in (("overlay", self.overlay()), ("label_map", self.label_map_image())):
            with atomic_output(paths[kind]) as tmp:
                picture.save(tmp, format="PNG")
        write_text_atomic(paths["json"], json.dumps(self.to_coco_json(file_name=file_name), indent=1,
                                                    ensure_ascii=False))
        return paths


def _with_legend(picture: Image.Image, entries: list[tuple[str, tuple[int, int, int], float]]) -> Image.Image:
    """``picture`` with a white panel on its right listing ``(name, colour, share)`` rows."""
    font = ImageFont.load_default()
    row = 16
    shown = entries[:_LEGEND_ROWS]
    lines = [_drawable(f"{name} {100 * share:.1f}%", font) for name, _, share in shown]
    if len(entries) > len(shown):
        lines.append(f"... {len(entries) - len(shown)} more")
    measure = ImageDraw.Draw(picture)
    text_width = max((int(measure.textlength(line, font=font)) for line in lines), default=0)
    panel_width = text_width + row + 16
    height = max(picture.height, row * len(lines) + 8)
    canvas = Image.new("RGB", (picture.width + panel_width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        top = 4 + i * row
        left = picture.width + 4
        if i < len(shown):
            draw.rectangle([left, top + 2, left + row - 6, top + row - 4], fill=shown[i][1], outline=(0, 0, 0))
        draw.text((left + row, top), line, fill=(0, 0, 0), font=font)
    return canvas


def _drawable(text: str, font: Any) -> str:
    """``text``, or its ASCII rendering when the font (PIL's bitmap fallback) cannot encode it."""
    try:
        font.getbbox(text)
    except UnicodeEncodeError:
        return text.encode("ascii", "replace").decode("ascii")
    return text
