"""Open-vocabulary segmentation: an image and any list of words -> a mask per word.

``image -> Backbone (up to the block before the last) -> OpenVocabHead (last block as the chosen
variant, MAP-head value path, SigLIP's sigmoid score against each label) -> probabilities on the
patch grid -> bilinear upsampling to the image -> arg-max label map``. Nothing is trained.

Two ways to cover an image:

- ``inference="native"`` (default): one forward per batch of ``batch_size`` images. NaFlex
  checkpoints keep each image's aspect ratio within ``max_num_patches``, and a list of images is cut
  into batches of similar patch grids (:func:`siglip2_dense.backbone.naflex_batching.batches_by_shape`), so
  little of each forward is padding; FixRes checkpoints resize to ``size`` (default: the checkpoint's
  own training size). Results come back in the order given.
- ``inference="slide"``: mmsegmentation's sliding window (``crop`` / ``stride`` in pixels, of the
  image as given) through :func:`siglip2_dense.inference.slide_window`; each window goes through
  the native path and the window probabilities are averaged where windows overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from siglip2_dense.backbone.naflex_batching import batches_by_shape, batches_in_order, naflex_grid_size
from siglip2_dense.backbone.preprocess import images_to_arrays
from siglip2_dense.errors import RequestError
from siglip2_dense.heads.openvocab import BACKBONE_KWARGS, OpenVocabHead, probabilities_to_label_map
from siglip2_dense.openvocab.result import OpenVocabResult
from siglip2_dense.text.encoder import LabelEmbeddings, TextEncoder, max_over_synonyms

__all__ = ["OpenVocabResult", "OpenVocabSegmenter"]

INFERENCE_MODES = ("native", "slide")
DEFAULT_CHECKPOINT = "google/siglip2-base-patch16-naflex"


class OpenVocabSegmenter:
    """Segment images into any labels, training-free, with a SigLIP / SigLIP2 checkpoint.

    Args:
        backbone: a :class:`~siglip2_dense.backbone.siglip.Backbone` loaded with ``layers=[-2], norm=False``.
        text_encoder: the same checkpoint's :class:`~siglip2_dense.text.encoder.TextEncoder`.
        head: an :class:`~siglip2_dense.heads.openvocab.OpenVocabHead` on ``backbone``.
        templates: ``"single"``, ``"imagenet80"`` or a list of templates with ``{}``.
        max_num_patches: NaFlex patch budget per image (or per window); None: the checkpoint's.
        size: FixRes input size ``(H, W)`` (or int); None: the checkpoint's training size.
        background_threshold: pixels whose best probability is below it get label index ``K``
            (:attr:`OpenVocabResult.background_index`); None: every pixel gets a label.
        inference: ``"native"`` or ``"slide"``; crop, stride: the sliding window in pixels.
        batch_size: images per forward in native mode.
    """

    def __init__(
        self,
        backbone: Any,
        text_encoder: TextEncoder,
        head: OpenVocabHead,
        templates: str | Sequence[str] = "single",
        max_num_patches: int | None = None,
        size: int | Sequence[int] | None = None,
        background_threshold: float | None = None,
        inference: str = "native",
        crop: Sequence[int] = (512, 512),
        stride: Sequence[int] = (341, 341),
        batch_size: int = 8,
    ) -> None:
        if inference not in INFERENCE_MODES:
            raise RequestError(f"inference={inference!r}: expected one of {INFERENCE_MODES}")
        if background_threshold is not None and not 0.0 <= background_threshold <= 1.0:
            raise RequestError(f"background_threshold={background_threshold}: expected a probability in [0, 1]")
        if backbone.is_naflex and size is not None:
            raise RequestError("size is for FixRes checkpoints; NaFlex checkpoints take max_num_patches")
        if not backbone.is_naflex and max_num_patches is not None:
            raise RequestError("max_num_patches is for NaFlex checkpoints; FixRes checkpoints take size")
        if batch_size < 1:
            raise RequestError(f"batch_size={batch_size}: expected at least one image per forward")
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.head = head
        self.templates = templates
        self.max_num_patches = max_num_patches
        self.size = size if backbone.is_naflex or size is not None else _processor_size(backbone.image_processor)
        self.background_threshold = background_threshold
        self.inference = inference
        self.crop = tuple(crop)
        self.stride = tuple(stride)
        self.batch_size = int(batch_size)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_CHECKPOINT,
        variant: str = "plain",
        templates: str | Sequence[str] = "single",
        max_num_patches: int | None = None,
        background_threshold: float | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | Path | None = None,
        inference: str = "native",
        crop: Sequence[int] = (512, 512),
        stride: Sequence[int] = (341, 341),
        size: int | Sequence[int] | None = None,
        gaussian_std: float = 5.0,
        batch_size: int = 8,
        quantize: str | None = None,
        compile: bool = False,
        quantization_config: Any = None,
    ) -> OpenVocabSegmenter:
        """Load both towers of a full SigLIP / SigLIP2 checkpoint and build the head.

        Args:
            variant: ``"plain"``, ``"sclip"`` or ``"naclip"`` (see :mod:`siglip2_dense.heads.openvocab`).
            cache_dir: the text-embedding cache folder (default ``~/.cache/siglip2_dense/text``).
            gaussian_std: NACLIP's neighbourhood width in patches.
            quantize: ``"int8"``: both towers with dynamic int8 linear layers, for CPU inference.
            compile: ``torch.compile`` the vision tower's blocks (see ``load_backbone``).
            quantization_config: a transformers quantisation config (bitsandbytes 4 / 8 bit) for both towers.
            Others: see the class.
        """
        from siglip2_dense.backbone.siglip import load_backbone

        backbone = load_backbone(name_or_path, dtype=dtype, device=device, quantize=quantize, compile=compile,
                                 quantization_config=quantization_config, **BACKBONE_KWARGS)
        text_encoder = TextEncoder.from_pretrained(name_or_path, device=device, dtype=dtype, cache_dir=cache_dir,
                                                   quantize=quantize, quantization_config=quantization_config)
        head = OpenVocabHead.from_backbone(
            backbone, text_encoder.logit_scale, text_encoder.logit_bias, variant=variant, gaussian_std=gaussian_std
        )
        return cls(
            backbone, text_encoder, head, templates=templates, max_num_patches=max_num_patches, size=size,
            background_threshold=background_threshold, inference=inference, crop=crop, stride=stride,
            batch_size=batch_size,
        )

    # --- labels -------------------------------------------------------------------------------
    def encode_labels(self, labels: Sequence[str] | LabelEmbeddings) -> LabelEmbeddings:
        """Text embeddings of ``labels`` with this segmenter's templates (cached)."""
        if isinstance(labels, LabelEmbeddings):
            return labels
        return self.text_encoder.encode_labels(labels, self.templates)

    # --- probabilities ------------------------------------------------------------------------
    def _features(self, arrays: list[np.ndarray]) -> Any:
        if self.backbone.is_naflex:
            inputs = self.backbone.preprocess(arrays, max_num_patches=self.max_num_patches)
        else:
            inputs = self.backbone.preprocess(arrays, size=self.size)
        return self.backbone(**inputs)

    def grid_probabilities(self, images: Any, labels: Sequence[str] | LabelEmbeddings) -> tuple[Tensor, Tensor]:
        """One forward for a batch: per-label probabilities on the padded patch grid.

        Returns:
            ``[B, K, Hmax, Wmax]`` float32 (zero outside each image's grid) and ``grid_sizes [B, 2]``.
        """
        embedded = self.encode_labels(labels)
        with torch.inference_mode():
            features = self._features(images_to_arrays(images))
            probabilities = self.head(features, embedded.embeddings, embedded.label_index)
        return probabilities, features.grid_sizes

    def image_probabilities(self, image: Any, labels: Sequence[str] | LabelEmbeddings) -> Tensor:
        """``[K, H, W]`` float32 probabilities at the image's own size (native or sliding window)."""
        array = images_to_arrays([image])[0]
        if self.inference == "native":
            return self._native_probabilities([array], self.encode_labels(labels))[0]
        return self._slide_probabilities(array, self.encode_labels(labels))

    def native_batches(self, arrays: Sequence[np.ndarray]) -> list[list[int]]:
        """Indices of ``arrays`` cut into the batches native mode runs: similar NaFlex grids together."""
        if not self.backbone.is_naflex:
            return batches_in_order(len(arrays), self.batch_size)
        budget = self.max_num_patches or self.backbone.image_processor.max_num_patches
        grids = [naflex_grid_size(a.shape[0], a.shape[1], self.backbone.patch_size, budget) for a in arrays]
        return batches_by_shape(grids, self.batch_size)

    def _native_probabilities(self, arrays: list[np.ndarray], embedded: LabelEmbeddings) -> list[Tensor]:
        upsampled: dict[int, Tensor] = {}
        for batch in self.native_batches(arrays):
            probabilities, grid_sizes = self.grid_probabilities([arrays[i] for i in batch], embedded)
            with torch.inference_mode():
                for row, (index, (height, width)) in enumerate(zip(batch, grid_sizes.tolist())):
                    own_grid = probabilities[row : row + 1, :, :height, :width]
                    upsampled[index] = _resize(own_grid, arrays[index].shape[:2])[0]
        return [upsampled[i] for i in range(len(arrays))]

    def _slide_probabilities(self, array: np.ndarray, embedded: LabelEmbeddings) -> Tensor:
        from siglip2_dense.inference import slide_window

        def window_probabilities(window: Tensor) -> Tensor:
            """``[1, 3, h, w]`` pixel values -> ``[1, K, gh, gw]`` probabilities on the window's grid."""
            pixels = window[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
            probabilities, grid_sizes = self.grid_probabilities([pixels], embedded)
            height, width = grid_sizes[0].tolist()
            return probabilities[:, :, :height, :width]

        image = torch.from_numpy(array).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            return slide_window(window_probabilities, image, crop=self.crop, stride=self.stride)[0].cpu().float()

    # --- results ------------------------------------------------------------------------------
    def segment_batch(self, images: Any, labels: Sequence[str] | LabelEmbeddings) -> list[OpenVocabResult]:
        """Segment several images into the same labels (native mode: ``batch_size`` images per forward)."""
        arrays = images_to_arrays(images)
        embedded = self.encode_labels(labels)
        if self.inference == "native":
            scores = self._native_probabilities(arrays, embedded)
        else:
            scores = [self._slide_probabilities(array, embedded) for array in arrays]
        return [self._result(array, score, embedded) for array, score in zip(arrays, scores)]

    def __call__(self, image: Any, labels: Sequence[str] | LabelEmbeddings) -> OpenVocabResult:
        """Segment one image: ``OpenVocabResult`` with ``label_map [H, W]`` and ``scores [K, H, W]``."""
        return self.segment_batch([image], labels)[0]

    def _result(self, array: np.ndarray, scores: Tensor, embedded: LabelEmbeddings) -> OpenVocabResult:
        scores = scores.cpu().float()
        label_map = probabilities_to_label_map(scores, self.background_threshold)
        return OpenVocabResult(
            labels=list(embedded.labels),
            scores=scores,
            label_map=label_map,
            background_index=None if self.background_threshold is None else embedded.num_labels,
            image=array,
        )

    # --- whole images -------------------------------------------------------------------------
    def classify(self, images: Any, labels: Sequence[str] | LabelEmbeddings) -> Tensor:
        """Zero-shot classification: ``[B, K]`` sigmoid probabilities of each label for each image.

        Uses the MAP-pooled image embedding (the tower's own, plain last block), as SigLIP does.
        Runs ``batch_size`` images per forward, grouped as :meth:`native_batches` groups them;
        rows come back in input order.
        """
        arrays = images_to_arrays(images)
        embedded = self.encode_labels(labels)
        logits = torch.empty(len(arrays), len(embedded.label_index))
        with torch.inference_mode():
            for batch in self.native_batches(arrays):
                pooled = self.head.pooled_embedding(self._features([arrays[i] for i in batch]))
                logits[batch] = self.head.similarity_logits(pooled, embedded.embeddings).float().cpu()
        logits = max_over_synonyms(logits, embedded.label_index, embedded.num_labels, dim=1)
        return torch.sigmoid(logits)


def _processor_size(processor: Any) -> tuple[int, int]:
    size = processor.size
    height, width = (size.get("height"), size.get("width")) if isinstance(size, dict) else (
        getattr(size, "height", None), getattr(size, "width", None))
    if height and width:
        return int(height), int(width)
    raise RequestError(f"cannot read the FixRes input size from the image processor's size {size!r}; pass size=")


def _resize(probabilities: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear, ``align_corners=False``: ``[B, K, h, w]`` -> ``[B, K, *size]``, float32 on the CPU."""
    return F.interpolate(probabilities.float(), size=tuple(int(s) for s in size), mode="bilinear",
                         align_corners=False).cpu()
