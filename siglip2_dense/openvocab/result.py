"""What open-vocabulary segmentation returns for one image, and how it is shown and saved."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from siglip2_dense.files import atomic_output, write_text_atomic
from siglip2_dense.openvocab.label_colours import label_colours
from siglip2_dense.picture_text import beside, legend_panel, row_height

__all__ = ["OpenVocabResult", "label_colours"]

_BACKGROUND_COLOUR = (0, 0, 0)


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
    def colours(self) -> np.ndarray:
        """``[K + 1, 3]`` uint8: each label's colour (a label naming a colour gets it, see
        :mod:`~siglip2_dense.openvocab.label_colours`), then black for the background index."""
        return np.concatenate([label_colours(self.labels), np.zeros((1, 3), np.uint8)])

    def colour_map(self) -> np.ndarray:
        """``(H, W, 3)`` uint8: each pixel in its label's colour, background black."""
        return self.colours()[self.label_map.cpu().numpy()]

    def label_map_image(self) -> Image.Image:
        """The label map as a PNG-ready image whose pixel values are the label indices.

        Up to 256 indices (labels + background): a palette image (mode ``P``), so viewers show the
        overlay's colours while ``np.asarray(Image.open(path))`` still gives the indices; more: ``I;16``.
        """
        label_map = self.label_map.cpu().numpy()
        if len(self.labels) + 1 > 256:
            return Image.fromarray(label_map.astype(np.uint16), mode="I;16")
        image = Image.fromarray(label_map.astype(np.uint8), mode="L").convert("P")
        image.putpalette(self.colours().reshape(-1).tolist())
        return image

    def overlay(self, alpha: float = 0.5, image: np.ndarray | None = None) -> Image.Image:
        """The image tinted by label colours (background untinted) with a legend panel on the right.

        The legend lists every label asked for, largest share first, with its share of the image
        ("0.0% not found" for labels no pixel got) and the background when thresholding assigned one;
        its text is sized to the image's height (:mod:`siglip2_dense.picture_text`).
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
        return beside(picture, legend_panel(self.legend_entries(), row_height(picture.height)))

    def legend_entries(self) -> list[tuple[str, tuple[int, int, int]]]:
        """``(text, colour)`` per legend row: every label, largest share first, then the background."""
        colours = self.colours()
        shares = list(self.shares().values())
        names = self.names()
        entries = []
        for k in sorted(range(len(self.labels)), key=lambda i: -shares[i]):
            found = f"{100 * shares[k]:.1f}%" if shares[k] > 0 else "0.0% not found"
            entries.append((f"{names[k]}  {found}", tuple(int(c) for c in colours[k])))
        if self.background_index is not None:
            entries.append((f"{names[-1]}  {100 * shares[-1]:.1f}%", _BACKGROUND_COLOUR))
        return entries

    def save(self, directory: str | Path, stem: str = "segmentation", file_name: str = "") -> dict[str, Path]:
        """Write ``<stem>_overlay.png``, ``<stem>_labels.png`` (palette PNG of label indices) and ``<stem>.json``
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

