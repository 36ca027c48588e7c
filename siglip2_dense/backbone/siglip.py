"""SigLIP / SigLIP2 vision towers as dense backbones.

``load_backbone`` finds and reads a checkpoint through the one tower loader
(:mod:`siglip2_dense.towers`), which dispatches on ``model_type``, never on the name: ``siglip``
(FixRes: Conv2d patch embedding, fixed square training size, any size through bicubic
position-embedding interpolation) or ``siglip2`` (NaFlex: patchified input at the image's own
aspect ratio). Only the vision tower is loaded, MAP head included, with the checkpoint's own
image processor. ``"timm:<name>"`` gives a timm ViT behind the same interface
(:mod:`siglip2_dense.backbone.timm_vit`).

The forward pass walks transformers' own modules (embeddings, encoder blocks, post layernorm,
MAP head) so every tap equals transformers' ``hidden_states[i + 1]`` for block ``i``, and it
stops after the deepest block asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from siglip2_dense.backbone.block_tuning import BlockTuning
from siglip2_dense.backbone.compile import compile_blocks
from siglip2_dense.backbone.features import DenseFeatures, grid_mask, tokens_to_grid
from siglip2_dense.backbone.layer_indices import resolve_layer_indices
from siglip2_dense.backbone.preprocess import fixres_inputs, images_to_arrays, naflex_inputs
from siglip2_dense.devices import default_dtype, resolve_device
from siglip2_dense.errors import CheckpointError, RequestError
from siglip2_dense.int8 import check_quantize, quantize_linear_layers
from siglip2_dense.towers import load_image_processor, load_tower, locate_checkpoint, read_config

__all__ = ["Backbone", "DenseFeatures", "load_backbone", "tokens_to_grid"]


def _masked_map_pool(head: nn.Module, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """SigLIP's MAP head over ``tokens [B, N, C]`` attending only where ``token_mask [B, N]``."""
    probe = head.probe.expand(tokens.shape[0], -1, -1)
    pooled = head.attention(probe, tokens, tokens, key_padding_mask=~token_mask)[0]
    pooled = pooled + head.mlp(head.layernorm(pooled))
    return pooled[:, 0]


# CAT-Seg's ``clip_finetune == "attention"`` (github.com/cvlab-kaist/CAT-Seg, cat_seg/cat_seg_model.py):
# in every block of the image encoder only the attention's q_proj and v_proj (weights and biases)
# train, plus the positional embedding ("position" in the name); everything else is frozen, and
# configs/config.yaml trains them at the base lr times CLIP_MULTIPLIER = 0.01.
ATTENTION_TUNED = ("self_attn.q_proj", "self_attn.v_proj")
"""The modules of every encoder block whose weight and bias train under ``tune_attention``
(with ``embeddings.position_embedding.weight``)."""


def check_tune_attention(tune_attention: bool, freeze: bool, tune_last_blocks: int) -> None:
    """Refuse ``tune_attention`` with another tuning choice (a RequestError naming both)."""
    if tune_attention and (not freeze or tune_last_blocks != 0):
        other = "freeze=False" if not freeze else f"tune_last_blocks={tune_last_blocks}"
        raise RequestError(f"tune_attention=True with {other}: tune_attention trains only the q / v projections "
                           "and the position embedding of every block; choose one of the two (tune_last_blocks=0, "
                           "freeze=True with tune_attention)")


def attention_parameters(vision_model: nn.Module) -> list[nn.Parameter]:
    """What ``tune_attention`` trains: q_proj and v_proj of every block, the position embedding."""
    parameters = [vision_model.embeddings.position_embedding.weight]
    for block in vision_model.encoder.layers:
        for name in ATTENTION_TUNED:
            parameters += list(block.get_submodule(name).parameters())
    return parameters


class Backbone(BlockTuning):
    """A SigLIP (FixRes) or SigLIP2 (NaFlex) vision tower that returns :class:`DenseFeatures`.

    Args:
        vision_model: a transformers ``SiglipVisionModel`` or ``Siglip2VisionModel``.
        image_processor: the checkpoint's ``SiglipImageProcessor`` / ``Siglip2ImageProcessor``.
        layers: int ``n`` = the last ``n`` blocks; a list = block indices (negative allowed).
        norm: apply the final layernorm (``post_layernorm``) to every tap.
        freeze: True freezes the tower (no gradients, eval mode); False tunes all of it.
        tune_last_blocks: with ``freeze=True``, tune only the last N blocks (and the final
            layernorm and MAP head that follow them).
        tune_attention: tune only the query and value projections (weight and bias) of every
            block and the position embedding, as CAT-Seg fine-tunes CLIP (:data:`ATTENTION_TUNED`);
            needs ``freeze=True`` and ``tune_last_blocks=0``.
        name_or_path: the checkpoint this tower came from, as the caller named it.
        checkpoint_dir: the absolute local folder it was read from, None for a hub id;
            ``DenseModel.save_pretrained`` records it so the model loads from any working directory.
    """

    def __init__(
        self,
        vision_model: nn.Module,
        image_processor: Any,
        layers: int | Sequence[int] = 1,
        norm: bool = True,
        freeze: bool = True,
        tune_last_blocks: int = 0,
        name_or_path: str = "",
        checkpoint_dir: str | None = None,
        tune_attention: bool = False,
    ) -> None:
        super().__init__()
        check_tune_attention(tune_attention, freeze, tune_last_blocks)
        config = vision_model.config
        if config.model_type not in ("siglip_vision_model", "siglip2_vision_model"):
            raise CheckpointError(
                f"Backbone: vision model of type {config.model_type!r}; expected siglip_vision_model or "
                "siglip2_vision_model"
            )
        self.vision_model = vision_model
        self.image_processor = image_processor
        self.is_naflex = config.model_type == "siglip2_vision_model"
        self.patch_size = int(config.patch_size)
        self.embed_dim = int(config.hidden_size)
        self.num_blocks = len(vision_model.encoder.layers)
        self.layers = resolve_layer_indices(layers, self.num_blocks)
        self.out_channels = [self.embed_dim] * len(self.layers)
        self.norm = bool(norm)
        self.name_or_path = name_or_path
        self.checkpoint_dir = checkpoint_dir
        self.has_pooling_head = bool(getattr(vision_model, "use_head", False))
        tail = [vision_model.post_layernorm] + ([vision_model.head] if self.has_pooling_head else [])
        self.tune_attention = bool(tune_attention)
        self.configure_tuning(freeze, tune_last_blocks, tower=vision_model, stem=[vision_model.embeddings],
                              blocks=vision_model.encoder.layers, tail=tail,
                              tune_only=attention_parameters(vision_model) if self.tune_attention else None)

    # --- preprocessing --------------------------------------------------------------------
    def preprocess(
        self,
        images: Any,
        max_num_patches: int | None = None,
        size: int | Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Turn images into the keyword arguments of :meth:`forward`.

        Args:
            images: a list of ``(H, W[, C])`` arrays / tensors or PIL images (one image alone is
                accepted too); grayscale, RGBA, 16-bit and float images are converted to RGB uint8.
            max_num_patches: NaFlex only; the patch budget (default: the processor's).
            size: FixRes only; resize every image to ``size`` (int or ``(H, W)``) first.

        Returns:
            NaFlex: ``pixel_values [B, N, p*p*3]``, ``pixel_attention_mask [B, N]``,
            ``spatial_shapes [B, 2]``. FixRes: ``pixel_values [B, 3, H, W]`` (padded right and
            bottom to a multiple of the patch size), ``spatial_shapes [B, 2]``. On the
            backbone's device, in its dtype.
        """
        arrays = images_to_arrays(images)
        if self.is_naflex:
            if size is not None:
                raise RequestError(f"size={size}: NaFlex checkpoints resize by max_num_patches, not size")
            inputs = naflex_inputs(self.image_processor, arrays, max_num_patches)
        else:
            if max_num_patches is not None:
                raise RequestError(
                    f"max_num_patches={max_num_patches}: FixRes checkpoints take size=(H, W), not a patch budget"
                )
            inputs = fixres_inputs(self.image_processor, arrays, self.patch_size, size)
        param = next(self.vision_model.parameters())
        inputs["pixel_values"] = inputs["pixel_values"].to(device=param.device, dtype=param.dtype)
        return {k: v.to(param.device) for k, v in inputs.items()}

    # --- forward --------------------------------------------------------------------------
    def _embed(
        self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor, pixel_attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int] | None]:
        """Tokens ``[B, N, C]``, token validity ``[B, N]`` and (FixRes only) the full grid size."""
        vm = self.vision_model
        if self.is_naflex:
            if pixel_values.ndim != 3:
                raise RequestError(
                    f"pixel_values {tuple(pixel_values.shape)}: NaFlex expects [B, N, p*p*3] from preprocess()"
                )
            if pixel_attention_mask is None:
                raise RequestError("NaFlex forward needs pixel_attention_mask [B, N] from preprocess()")
            return vm.embeddings(pixel_values, spatial_shapes), pixel_attention_mask.bool(), None
        if pixel_values.ndim != 4:
            raise RequestError(f"pixel_values {tuple(pixel_values.shape)}: FixRes expects [B, 3, H, W]")
        height, width = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        token_mask = grid_mask(spatial_shapes, height, width).reshape(pixel_values.shape[0], -1)
        if bool(token_mask.all()):
            return vm.embeddings(pixel_values, interpolate_pos_encoding=True), token_mask, (height, width)
        return self._embed_padded_fixres(pixel_values, spatial_shapes), token_mask, (height, width)

    def _embed_padded_fixres(self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        """FixRes embeddings of a padded batch: positions interpolated to each image's own grid.

        transformers interpolates the position table to the whole (padded) input; an image in a
        batch with larger ones would then see other positions than alone. Here each image gets
        the table resized to its own ``(h, w)``, as if it ran alone; padded cells get none.
        """
        embeddings = self.vision_model.embeddings
        patches = embeddings.patch_embedding(pixel_values.to(embeddings.patch_embedding.weight.dtype))
        batch, channels, height, width = patches.shape
        positions = torch.zeros_like(patches)
        for h, w in {tuple(shape) for shape in spatial_shapes.tolist()}:
            table = embeddings.interpolate_pos_encoding(
                patches.new_empty(1, h * w, channels), h * self.patch_size, w * self.patch_size
            )
            rows = (spatial_shapes[:, 0] == h) & (spatial_shapes[:, 1] == w)
            positions[rows, :, :h, :w] = table.reshape(h, w, channels).permute(2, 0, 1).to(patches.dtype)
        return (patches + positions).flatten(2).transpose(1, 2)

    def _to_grid(
        self, tokens: torch.Tensor, spatial_shapes: torch.Tensor, fixres_grid: tuple[int, int] | None
    ) -> torch.Tensor:
        if fixres_grid is None:
            return tokens_to_grid(tokens, spatial_shapes)[0]
        batch, _, channels = tokens.shape
        grid = tokens.transpose(1, 2).reshape(batch, channels, *fixres_grid)
        real = grid_mask(spatial_shapes, *fixres_grid)
        return grid if bool(real.all()) else grid * real[:, None].to(grid.dtype)

    def forward(
        self,
        pixel_values: torch.Tensor,
        spatial_shapes: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
    ) -> DenseFeatures:
        """Dense features of a preprocessed batch (the output of :meth:`preprocess`).

        Frozen blocks run without building a graph when nothing upstream needs gradients; tuned
        blocks always do (under ``tune_attention`` every block and the embeddings are tuned). ``pooled`` is the MAP-head output when the last block is among those
        run (it is whenever ``layers`` includes it), else None.
        """
        from transformers.masking_utils import create_bidirectional_mask

        vm = self.vision_model
        spatial_shapes = spatial_shapes.to(pixel_values.device).long()
        needs_input_grad = pixel_values.requires_grad
        with torch.set_grad_enabled(torch.is_grad_enabled() and (self.first_tuned_block == 0 or needs_input_grad)):
            hidden, token_mask, fixres_grid = self._embed(pixel_values, spatial_shapes, pixel_attention_mask)
        attention_mask = create_bidirectional_mask(
            config=vm.config, inputs_embeds=hidden, attention_mask=token_mask.long()
        )
        last_needed = max(self.layers)
        taps: dict[int, torch.Tensor] = {}
        for index, block in enumerate(vm.encoder.layers[: last_needed + 1]):
            builds_graph = index >= self.first_tuned_block or needs_input_grad
            with torch.set_grad_enabled(torch.is_grad_enabled() and builds_graph):
                hidden = block(hidden, attention_mask)
            if index in self.layers:
                taps[index] = hidden
        final = None
        if last_needed == self.num_blocks - 1:
            final = vm.post_layernorm(hidden)
        maps = []
        for index in self.layers:
            tap = taps[index]
            if self.norm:
                tap = final if index == self.num_blocks - 1 else vm.post_layernorm(tap)
            maps.append(self._to_grid(tap, spatial_shapes, fixres_grid))
        pooled = None
        if final is not None and self.has_pooling_head:
            if self.is_naflex:
                pooled = vm.head(final, pixel_attention_mask)
            elif bool(token_mask.all()):
                pooled = vm.head(final)
            else:
                pooled = _masked_map_pool(vm.head, final, token_mask)
        height, width = maps[0].shape[-2:]
        mask = grid_mask(spatial_shapes, height, width)
        return DenseFeatures(maps=maps, mask=mask, grid_sizes=spatial_shapes, pooled=pooled)


def load_backbone(
    name_or_path: str,
    layers: int | Sequence[int] = 1,
    norm: bool = True,
    freeze: bool = True,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    tune_last_blocks: int = 0,
    pretrained: bool = True,
    quantize: str | None = None,
    compile: bool = False,
    quantization_config: Any = None,
    tune_attention: bool = False,
) -> nn.Module:
    """Load a SigLIP / SigLIP2 vision tower (or ``"timm:<name>"``) as a dense backbone.

    Args:
        name_or_path: hub id or local directory of a SigLIP / SigLIP2 checkpoint (full model or
            vision model), or ``"timm:<model name>"``.
        layers, norm, freeze, tune_last_blocks, tune_attention: see :class:`Backbone`
            (``tune_attention``: SigLIP / SigLIP2 towers only).
        dtype: parameter dtype; default float32 on CPU, bfloat16 on CUDA.
        attn_implementation: ``"eager"``, ``"sdpa"`` (default) or ``"flash_attention_2"``.
        device: where to put the tower (default: CPU).
        pretrained: timm only; False builds the architecture with random weights.
        quantize: ``"int8"``: dynamic int8 linear layers in the blocks and the MAP head for CPU
            inference of a frozen tower (:mod:`siglip2_dense.int8`; 1.4-1.9x faster than float32
            on AVX2 CPUs); None: float32 as saved.
        compile: True compiles each encoder block with ``torch.compile`` (inductor, one graph per input
            shape; :mod:`siglip2_dense.backbone.compile`), equal to eager within 1e-5.
        quantization_config: a transformers quantisation config passed through to ``from_pretrained``,
            e.g. ``BitsAndBytesConfig(load_in_4bit=True)`` for a GPU (needs bitsandbytes and accelerate).

    Returns:
        A :class:`Backbone` (or :class:`~siglip2_dense.backbone.timm_vit.TimmBackbone`).

    Raises:
        MissingFileError: a path that does not exist (named with the nearest folder that does), or a
            hub id the hub does not know. CheckpointError: not a SigLIP / SigLIP2 checkpoint, files
            that cannot be read, missing weights, or a hub that cannot be reached with no cached
            copy (see :func:`siglip2_dense.towers.locate_checkpoint`). RequestError: ``quantize`` on a
            tuned tower, off the CPU, with a dtype other than float32, or on a timm backbone;
            ``tune_attention`` with ``freeze=False`` or ``tune_last_blocks``, or on a timm backbone.
    """
    device = resolve_device(device)
    dtype = default_dtype(device) if dtype is None else dtype
    check_tune_attention(tune_attention, freeze, tune_last_blocks)
    check_quantize(quantize, device, dtype, freeze and tune_last_blocks == 0 and not tune_attention,
                   quantization_config)
    if name_or_path.startswith("timm:"):
        if tune_attention:
            raise RequestError(f"tune_attention applies to SigLIP / SigLIP2 towers (separate q_proj / v_proj), not "
                               f"{name_or_path!r}: timm ViT blocks have one fused qkv Linear")
        if quantize is not None or quantization_config is not None:
            raise RequestError(f"quantize / quantization_config are for SigLIP / SigLIP2 towers, not {name_or_path!r}")
        from siglip2_dense.backbone.timm_vit import TimmBackbone

        return TimmBackbone.create(
            name_or_path[len("timm:") :], layers=layers, norm=norm, freeze=freeze, pretrained=pretrained,
            tune_last_blocks=tune_last_blocks, dtype=dtype, device=device,
        )
    source = locate_checkpoint(name_or_path)
    config = read_config(source)
    model = load_tower(source, config, "vision", dtype=dtype, attn_implementation=attn_implementation or "sdpa",
                       quantization_config=quantization_config)
    quantize_linear_layers(model, quantize)
    processor = load_image_processor(source, config)
    backbone = Backbone(
        model, processor, layers=layers, norm=norm, freeze=freeze, tune_last_blocks=tune_last_blocks,
        name_or_path=name_or_path, checkpoint_dir=source.local_dir, tune_attention=tune_attention,
    ).to(device)
    compile_blocks(backbone.vision_model.encoder.layers, compile)
    return backbone
