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

Post-processing at the image's size (:meth:`OpenVocabSegmenter.postprocess`): PAMR
(:mod:`siglip2_dense.openvocab.pamr`, ``pamr_iterations > 0``), then the head's own conversion of
window scores to label probabilities (the identity for SigLIP's sigmoid scores; the CLIP head's
softmax over prompts). The ``proxyclip`` variant runs a second backbone (``proxy``, e.g. a timm
DINOv2 loaded as ``"timm:<name>"``) on each image or window at its own size, final layer after its
norm as ProxyCLIP takes it, and resamples that grid bilinearly to this checkpoint's patch grid.
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
from siglip2_dense.openvocab.pamr import PAMR_DILATIONS, pamr
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
        pamr_iterations, pamr_dilations: PAMR after upsampling (0 iterations: none).
        proxy: the proxy backbone of the ``proxyclip`` variant (``layers=1, norm=True``), else None.
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
        pamr_iterations: int = 0,
        pamr_dilations: Sequence[int] = PAMR_DILATIONS,
        proxy: Any = None,
    ) -> None:
        if (getattr(head, "variant", None) == "proxyclip") != (proxy is not None):
            raise RequestError("the proxyclip variant needs a proxy backbone (proxy=...), and only it takes one")
        if pamr_iterations < 0:
            raise RequestError(f"pamr_iterations={pamr_iterations}: expected 0 (off) or more")
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
        self.pamr_iterations = int(pamr_iterations)
        self.pamr_dilations = tuple(int(d) for d in pamr_dilations)
        self.proxy = proxy

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
        map_mlp: bool | None = None,
        pamr_iterations: int = 0,
        pamr_dilations: Sequence[int] = PAMR_DILATIONS,
        proxy: str | None = None,
        quantize: str | None = None,
        compile: bool = False,
        quantization_config: Any = None,
        head: str | Path | None = None,
    ) -> OpenVocabSegmenter:
        """Load both towers of a full SigLIP / SigLIP2 checkpoint and build the head.

        With ``head`` (a folder written by ``tools/train.py`` or ``DenseModel.save_pretrained`` holding a trained
        open-vocabulary head, e.g. ``cost_aggregation``): that head on ``name_or_path``'s vision tower (with the
        folder's tuned tower weights, if any) and text tower; labels are embedded with the head's own
        training templates (``templates``, ``variant``, ``map_mlp``, ``proxy``, ``quantize`` and ``compile``
        then do not apply).

        Args:
            variant: one of :data:`siglip2_dense.heads.openvocab.VARIANTS`.
            cache_dir: the text-embedding cache folder (default ``~/.cache/siglip2_dense/text``).
            gaussian_std: NACLIP's neighbourhood width in patches.
            map_mlp: keep the MAP head's MLP step (None: the variant's default).
            proxy: ``proxyclip``: the proxy backbone to load (``"timm:vit_base_patch14_reg4_dinov2"``, ...).
            quantize: ``"int8"``: both towers with dynamic int8 linear layers, for CPU inference.
            compile: ``torch.compile`` the vision tower's blocks (see ``load_backbone``).
            quantization_config: a transformers quantisation config (bitsandbytes 4 / 8 bit) for both towers.
            Others: see the class.
        """
        from siglip2_dense.backbone.siglip import load_backbone

        if head is not None:
            return cls.with_trained_head(
                name_or_path, head, max_num_patches=max_num_patches, background_threshold=background_threshold,
                device=device, dtype=dtype, cache_dir=cache_dir, inference=inference, crop=crop, stride=stride,
                size=size, batch_size=batch_size, pamr_iterations=pamr_iterations, pamr_dilations=pamr_dilations,
            )
        backbone = load_backbone(name_or_path, dtype=dtype, device=device, quantize=quantize, compile=compile,
                                 quantization_config=quantization_config, **BACKBONE_KWARGS)
        text_encoder = TextEncoder.from_pretrained(name_or_path, device=device, dtype=dtype, cache_dir=cache_dir,
                                                   quantize=quantize, quantization_config=quantization_config)
        head = OpenVocabHead.from_backbone(
            backbone, text_encoder.logit_scale, text_encoder.logit_bias, variant=variant, gaussian_std=gaussian_std,
            map_mlp=map_mlp,
        )
        proxy_backbone = None
        if proxy is not None:
            proxy_backbone = load_backbone(proxy, layers=1, norm=True, dtype=dtype, device=device)
        return cls(
            backbone, text_encoder, head, templates=templates, max_num_patches=max_num_patches, size=size,
            background_threshold=background_threshold, inference=inference, crop=crop, stride=stride,
            batch_size=batch_size, pamr_iterations=pamr_iterations, pamr_dilations=pamr_dilations,
            proxy=proxy_backbone,
        )

    @classmethod
    def with_trained_head(
        cls, name_or_path: str, head: str | Path, device: str | torch.device | None = None,
        dtype: torch.dtype | None = None, cache_dir: str | Path | None = None, **options: Any,
    ) -> OpenVocabSegmenter:
        """A segmenter on a trained open-vocabulary head saved in folder ``head`` (see :meth:`from_pretrained`).

        Raises:
            RequestError: the folder's head is not scored against text (a linear or depth head).
        """
        from siglip2_dense.model import DenseModel
        from siglip2_dense.openvocab.trained_head import TrainedVocabularyHead

        model = DenseModel.from_pretrained(head, device=device, dtype=dtype, backbone=name_or_path)
        if not hasattr(model.head, "set_vocabulary"):
            raise RequestError(f"head={str(head)!r} holds a {type(model.head).__name__}, which is not scored against "
                               "text; expected a trained open-vocabulary head such as cost_aggregation")
        text_encoder = TextEncoder.from_pretrained(name_or_path, device=device, dtype=dtype, cache_dir=cache_dir)
        return cls(model.backbone, text_encoder, TrainedVocabularyHead(model.head).eval(),
                   templates=model.head.templates, **options)

    # --- labels -------------------------------------------------------------------------------
    def encode_labels(self, labels: Sequence[str] | LabelEmbeddings) -> LabelEmbeddings:
        """Text embeddings of ``labels`` with this segmenter's templates (cached); a trained head embeds
        them its own way (per template)."""
        if isinstance(labels, LabelEmbeddings):
            return labels
        if hasattr(self.head, "encode_labels"):
            return self.head.encode_labels(self.text_encoder, labels)
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
            ``[B, K, Hmax, Wmax]`` float32 (zero outside each image's grid) and ``grid_sizes [B, 2]``; a head
            predicting ``s`` cells per patch side (a trained head's ``output_scale``) gives ``s`` times both.
        """
        embedded = self.encode_labels(labels)
        arrays = images_to_arrays(images)
        with torch.inference_mode():
            features = self._features(arrays)
            extra = {}
            if self.proxy is not None:
                extra["proxy_features"] = self.proxy_features(arrays, features.grid_sizes, tuple(features.mask.shape[1:]))
            probabilities = self.head(features, embedded.embeddings, embedded.label_index, **extra)
        return probabilities, features.grid_sizes * int(getattr(self.head, "output_scale", 1))

    def proxy_features(self, arrays: Sequence[np.ndarray], grid_sizes: Tensor, padded: tuple[int, int]) -> Tensor:
        """The proxy backbone's final features of each image, resampled (bilinear) to that image's
        patch grid here: ``[B, C', Hmax, Wmax]``, zero outside each grid. One proxy forward per image."""
        maps = []
        for array, (height, width) in zip(arrays, grid_sizes.tolist()):
            own = self.proxy(**self.proxy.preprocess([array]))
            ph, pw = own.grid_sizes[0].tolist()
            resampled = F.interpolate(own.maps[0][:, :, :ph, :pw].float(), size=(height, width), mode="bilinear",
                                      align_corners=False)
            maps.append(F.pad(resampled[0], (0, padded[1] - width, 0, padded[0] - height)))
        return torch.stack(maps)

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

    def postprocess(self, scores: Tensor, image: np.ndarray, label_index: Tensor) -> Tensor:
        """Window scores at the image's size -> label probabilities: PAMR (when on), then the head's
        conversion. ``scores [S, H, W]``, ``image [H, W, 3]`` uint8 -> ``[K, H, W]`` float32."""
        scores = scores.float()
        if self.pamr_iterations:
            pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
            scores = pamr(pixels.to(scores.device), scores[None], self.pamr_iterations, self.pamr_dilations)[0]
        return self.head.probabilities(scores, label_index)

    def _result(self, array: np.ndarray, scores: Tensor, embedded: LabelEmbeddings) -> OpenVocabResult:
        scores = self.postprocess(scores.cpu(), array, embedded.label_index)
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
        if not hasattr(self.head, "pooled_embedding"):
            raise RequestError("classify scores the MAP-pooled image embedding of the training-free head; this "
                               "segmenter holds a trained head: use OpenVocabSegmenter.from_pretrained without head=")
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
