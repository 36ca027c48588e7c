"""CLIP through the same open-vocabulary head: for reproducing the published training-free rows.

A transformers ``CLIPModel`` checkpoint (``openai/clip-vit-base-patch16``), loaded with
``CLIPModel.from_pretrained`` (safetensors, no remote code), becomes three parts the
:class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` drives like SigLIP's:

- :class:`CLIPBackbone`: pixels -> the *input* of the last encoder layer (class token + patch grid);
  windows are fed at their own size with interpolated position embeddings, as the lineage's ``clip``
  code does (``interpolate_pos_encoding``).
- :class:`CLIPOpenVocabHead`: the last layer as a variant of
  :mod:`siglip2_dense.heads.openvocab_attention` (the class token takes part, as in SCLIP's
  ``encode_image(return_all=True)``), then ``post_layernorm`` and ``visual_projection`` on every
  token, the class token dropped (``image_features[:, 1:]``), L2-normalised and scored by cosine
  against the text queries: ``[B, S, H, W]`` cosines, averaged over windows and upsampled as such.
  :meth:`CLIPOpenVocabHead.probabilities` then applies the lineage's ``softmax(logit_scale * cos)``
  over all S queries and the maximum over each class's synonyms (wangf3014/SCLIP
  ``clip_segmentor.py`` ``postprocess_result``, ``logit_scale=40`` there and in NACLIP / ProxyCLIP).
- :class:`CLIPTextEncoder`: per query, every template's text embedding L2-normalised, averaged and
  normalised again (``clip_segmentor.py``: ``feature.mean(dim=0); feature /= feature.norm()``), with
  the 80 ImageNet templates by default.

Import rule: this wing's own loader; it will join the shared checkpoint loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.backbone.preprocess import images_to_arrays
from siglip2_dense.errors import CheckpointError, RequestError
from siglip2_dense.heads.openvocab_attention import (
    PROXY_BETA,
    PROXY_GAMMA,
    VARIANTS,
    proxy_attention_logits,
    run_last_block,
)
from siglip2_dense.text.encoder import LabelEmbeddings, max_over_synonyms
from siglip2_dense.towers import (
    CLIP_MODEL_TYPES,
    load_image_processor,
    load_pretrained,
    load_tokenizer,
    locate_checkpoint,
    read_config,
)

LINEAGE_LOGIT_SCALE = 40.0  # wangf3014/SCLIP clip_segmentor.py, sinahmr/NACLIP naclip.py: logit_scale=40
CLIP_CONTEXT_LENGTH = 77  # CLIP's text context (clip.tokenize pads to 77)


def is_clip_checkpoint(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a CLIP checkpoint (its config says ``model_type: clip``).

    Raises:
        MissingFileError: as :func:`siglip2_dense.towers.locate_checkpoint` (a mistyped path).
    """
    if name_or_path.startswith("timm:"):
        return False
    try:
        return read_config(locate_checkpoint(name_or_path), supported=CLIP_MODEL_TYPES) is not None
    except CheckpointError:  # not a checkpoint, or another model_type: not CLIP
        return False


class CLIPBackbone(nn.Module):
    """CLIP's vision tower up to the input of its last layer, as a FixRes dense backbone.

    ``preprocess`` resizes each image to ``size`` (bilinear; no-op at that size) and normalises with
    the checkpoint's mean / std; ``__call__`` returns ``DenseFeatures`` with ``maps[0] [B, C, h, w]``
    the patch tokens and ``pooled [B, C]`` the class token, both before the last layer.
    """

    is_naflex = False

    def __init__(self, model: nn.Module, image_processor: Any, name_or_path: str = "") -> None:
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection
        self.image_processor = image_processor
        self.patch_size = int(model.config.vision_config.patch_size)
        self.num_blocks = len(self.vision_model.encoder.layers)
        self.name_or_path = name_or_path
        self.register_buffer("mean", torch.tensor(image_processor.image_mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(image_processor.image_std).view(1, 3, 1, 1), False)

    def preprocess(self, images: Any, max_num_patches: int | None = None,
                   size: int | Sequence[int] | None = None) -> dict[str, Tensor]:
        """Images -> ``pixel_values [B, 3, H, W]`` (all at ``size``) and ``spatial_shapes [B, 2]``."""
        if max_num_patches is not None:
            raise RequestError("CLIP checkpoints take size=(H, W), not max_num_patches")
        arrays = images_to_arrays(images)
        target = None if size is None else ((size, size) if isinstance(size, int) else tuple(int(s) for s in size))
        tensors = []
        for array in arrays:
            t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255.0
            if target is not None and tuple(t.shape[-2:]) != target:
                t = F.interpolate(t, size=target, mode="bilinear", align_corners=False)
            tensors.append(t)
        if len({tuple(t.shape[-2:]) for t in tensors}) != 1:
            raise RequestError("CLIPBackbone.preprocess: give images of one size or size=(H, W)")
        pixels = (torch.cat(tensors) - self.mean.cpu()) / self.std.cpu()
        height, width = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        crop = pixels[..., : height * self.patch_size, : width * self.patch_size]
        param = self.mean
        return {"pixel_values": crop.to(param.device),
                "spatial_shapes": torch.tensor([[height, width]] * len(arrays), device=param.device)}

    def forward(self, pixel_values: Tensor, spatial_shapes: Tensor,
                pixel_attention_mask: Tensor | None = None) -> DenseFeatures:
        hidden = self.vision_model.embeddings(pixel_values, interpolate_pos_encoding=True)
        hidden = self.vision_model.pre_layrnorm(hidden)
        for layer in self.vision_model.encoder.layers[:-1]:
            hidden = layer(hidden, attention_mask=None)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        batch = hidden.shape[0]
        height, width = (int(v) for v in spatial_shapes[0].tolist())
        grid = hidden[:, 1:].transpose(1, 2).reshape(batch, -1, height, width)
        mask = torch.ones(batch, height, width, dtype=torch.bool, device=hidden.device)
        return DenseFeatures(maps=[grid], mask=mask, grid_sizes=spatial_shapes, pooled=hidden[:, 0])


class CLIPOpenVocabHead(nn.Module):
    """Per-query cosines on the patch grid from CLIP's last layer as ``variant`` (see the module docstring)."""

    map_mlp = None  # CLIP has no MAP head

    def __init__(self, backbone: CLIPBackbone, variant: str = "plain", gaussian_std: float = 5.0,
                 logit_scale: float = LINEAGE_LOGIT_SCALE, proxy_beta: float = PROXY_BETA,
                 proxy_gamma: float = PROXY_GAMMA) -> None:
        super().__init__()
        if variant not in VARIANTS or variant == "value":
            raise RequestError(f"variant={variant!r}: CLIP takes one of {tuple(v for v in VARIANTS if v != 'value')}")
        self.variant, self.gaussian_std, self.logit_scale = variant, float(gaussian_std), float(logit_scale)
        self.proxy_beta, self.proxy_gamma = float(proxy_beta), float(proxy_gamma)
        self._borrowed = (backbone,)

    def patch_embeddings(self, features: DenseFeatures, proxy_features: Tensor | None = None) -> Tensor:
        """``[B, D, H, W]`` per-patch embeddings in CLIP's joint space (not normalised)."""
        backbone = self._borrowed[0]
        grid_map = features.maps[0]
        batch, _, height, width = grid_map.shape
        tokens = torch.cat([features.pooled[:, None], grid_map.flatten(2).transpose(1, 2)], dim=1)
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        proxy_logits = None
        if self.variant == "proxyclip":
            if proxy_features is None:
                raise RequestError("variant='proxyclip' needs proxy_features [B, C', H, W] on the patch grid")
            proxy = proxy_features.flatten(2).transpose(1, 2).to(tokens.device)
            proxy_logits = proxy_attention_logits(proxy, token_mask[:, 1:], self.proxy_beta, self.proxy_gamma)
        out = run_last_block(backbone.vision_model.encoder.layers[-1], tokens, token_mask, (height, width),
                             self.variant, num_prefix=1, gaussian_std=self.gaussian_std, proxy_logits=proxy_logits)
        embedded = backbone.visual_projection(backbone.vision_model.post_layernorm(out))[:, 1:]
        return embedded.transpose(1, 2).reshape(batch, -1, height, width)

    def forward(self, features: DenseFeatures, text_embeddings: Tensor, label_index: Tensor | None = None,
                proxy_features: Tensor | None = None) -> Tensor:
        """``[B, S, H, W]`` cosines between every patch and every text query (``label_index`` is used later)."""
        image = F.normalize(self.patch_embeddings(features, proxy_features).float(), dim=1)
        text = F.normalize(text_embeddings.float().to(image.device), dim=-1)
        return torch.einsum("bdhw,sd->bshw", image, text)

    def probabilities(self, scores: Tensor, label_index: Tensor | None = None) -> Tensor:
        """``[S, ...]`` cosines -> ``[K, ...]``: softmax over queries of ``logit_scale * cos``, max over synonyms."""
        probabilities = torch.softmax(scores.float() * self.logit_scale, dim=0)
        if label_index is None:
            return probabilities
        return max_over_synonyms(probabilities, label_index.to(probabilities.device), int(label_index.max()) + 1, dim=0)


class CLIPTextEncoder:
    """CLIP text embeddings of labels with synonyms, the lineage's template ensemble (memoised)."""

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self._memo: dict[tuple, LabelEmbeddings] = {}

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """``[T, D]`` L2-normalised text features (``get_text_features``), context padded to 77."""
        device = self.model.logit_scale.device
        tokens = self.tokenizer(list(texts), padding="max_length", max_length=CLIP_CONTEXT_LENGTH, truncation=True,
                                return_tensors="pt")
        with torch.inference_mode():
            output = self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                  attention_mask=tokens["attention_mask"].to(device))
        features = output if isinstance(output, Tensor) else output.pooler_output
        return F.normalize(features.float(), dim=-1)

    def encode_labels(self, labels: Sequence[str], templates: str | Sequence[str] = "imagenet80") -> LabelEmbeddings:
        """One ensemble embedding per synonym: mean of the normalised template embeddings, normalised."""
        from siglip2_dense.text.prompts import parse_labels, resolve_templates

        key = (tuple(labels), tuple(resolve_templates(templates)))
        if key not in self._memo:
            synonyms = parse_labels(list(labels))
            texts = [s for group in synonyms for s in group]
            rows = [F.normalize(self.encode_texts([t.format(text) for t in key[1]]).mean(0), dim=0) for text in texts]
            index = torch.tensor([i for i, group in enumerate(synonyms) for _ in group])
            self._memo[key] = LabelEmbeddings(tuple(labels), tuple(texts), torch.stack(rows), index)
        return self._memo[key]


def load_clip(name_or_path: str, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None) -> tuple[CLIPBackbone, CLIPTextEncoder]:
    """Load a ``CLIPModel`` checkpoint (safetensors) with its tokenizer and image processor, through the
    one tower loader (:mod:`siglip2_dense.towers`: the same name resolution, errors and weight checks)."""
    source = locate_checkpoint(name_or_path)
    config = read_config(source, supported=CLIP_MODEL_TYPES)
    model = load_pretrained(source, "CLIPModel", "CLIP model", dtype or torch.float32).eval()
    tokenizer = load_tokenizer(source)
    processor = load_image_processor(source, config)
    model = model.to(device or "cpu")
    return CLIPBackbone(model, processor, name_or_path).to(device or "cpu"), CLIPTextEncoder(model, tokenizer)


def clip_segmenter(name_or_path: str, variant: str = "plain", templates: str | Sequence[str] = "imagenet80",
                   device: str | torch.device | None = None, cache_dir: Any = None, inference: str = "slide",
                   crop: Sequence[int] = (224, 224), stride: Sequence[int] = (112, 112), pamr_iterations: int = 0,
                   proxy: str | None = None, gaussian_std: float = 5.0, background_threshold: float | None = None) -> Any:
    """An :class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` on a CLIP checkpoint.

    Native inference resizes to the checkpoint's crop size (224 for ViT-B/16). ``cache_dir`` is
    accepted for the SigLIP signature; CLIP embeddings are memoised in memory only.
    """
    from siglip2_dense.backbone.siglip import load_backbone
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    backbone, text = load_clip(name_or_path, device=device)
    head = CLIPOpenVocabHead(backbone, variant=variant, gaussian_std=gaussian_std)
    crop_size = backbone.image_processor.crop_size
    size = (int(crop_size["height"]), int(crop_size["width"]))
    proxy_backbone = None if proxy is None else load_backbone(proxy, layers=1, norm=True, device=device)
    return OpenVocabSegmenter(backbone, text, head, templates=templates, size=size, inference=inference, crop=crop,
                              stride=stride, pamr_iterations=pamr_iterations, proxy=proxy_backbone,
                              background_threshold=background_threshold)
