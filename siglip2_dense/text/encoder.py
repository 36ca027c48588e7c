"""SigLIP / SigLIP2 text tower: labels -> L2-normalised embeddings in the joint space.

Only the text tower of a full checkpoint is loaded, through the one tower loader
(:mod:`siglip2_dense.towers`: ``SiglipTextModel`` for ``model_type: siglip``, ``Siglip2TextModel``
for ``siglip2``; dispatch on the config, never on the name), with the checkpoint's tokenizer
(``AutoTokenizer``, as ``AutoProcessor`` reads it) and its ``logit_scale`` / ``logit_bias`` read
from the weight file. Prompts are canonicalised (:mod:`siglip2_dense.text.prompts`), tokenized with
``padding="max_length", max_length=64, truncation=True`` and run without an attention mask:
SigLIP's text tower was trained attending to padding and pools the last position, as
transformers' ``get_text_features`` does when given ``input_ids`` alone.

Embeddings are cached (:class:`~siglip2_dense.text.embedding_cache.EmbeddingCache`): the key is the
SHA-256 of the weight files' and tokenizer files' content hashes, the tower's dtype, the
templates, the maximum length and the canonical texts, so a label set is encoded once per
checkpoint.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siglip2_dense.devices import default_dtype, resolve_device
from siglip2_dense.errors import CheckpointError, RequestError
from siglip2_dense.int8 import check_quantize, quantize_linear_layers, quantized_as
from siglip2_dense.text.checkpoint_files import files_fingerprint, read_tensor, tokenizer_files, weight_files
from siglip2_dense.text.embedding_cache import EmbeddingCache, cache_key, default_cache_dir
from siglip2_dense.text.prompts import canonicalize_text, fill_templates, parse_labels, resolve_templates
from siglip2_dense.towers import load_tokenizer, load_tower, locate_checkpoint, read_config

__all__ = ["LabelEmbeddings", "TextEncoder", "max_over_synonyms"]

logger = logging.getLogger(__name__)

MAX_TEXT_LENGTH = 64
CACHE_FORMAT = 1
_PROGRESS_MIN_PROMPTS = 512
_LABEL_MEMO_ITEMS = 8


@dataclass(frozen=True)
class LabelEmbeddings:
    """The embeddings of a label list whose labels may carry synonyms.

    Attributes:
        labels: the K labels as given.
        synonyms: S canonical synonym texts, label by label (a text shared by two labels appears twice).
        embeddings: ``[S, D]`` float32, L2-normalised, one row per synonym.
        label_index: ``[S]`` long, the label each synonym belongs to (non-decreasing, 0..K-1).
    """

    labels: tuple[str, ...]
    synonyms: tuple[str, ...]
    embeddings: torch.Tensor
    label_index: torch.Tensor

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def max_over_synonyms(self, scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Per-synonym scores (size S along ``dim``) -> per-label scores (size K): the maximum."""
        return max_over_synonyms(scores, self.label_index, self.num_labels, dim)


def max_over_synonyms(scores: torch.Tensor, label_index: torch.Tensor, num_labels: int, dim: int = 1) -> torch.Tensor:
    """Reduce size S along ``dim`` to size ``num_labels`` by the maximum over each label's rows.

    ``label_index [S]`` long gives each row's label; every label must own at least one row.
    """
    if label_index.numel() == num_labels and bool((label_index == torch.arange(num_labels, device=label_index.device)).all()):
        return scores
    moved = scores.movedim(dim, -1)
    index = label_index.to(scores.device).expand(moved.shape)
    reduced = moved.new_full((*moved.shape[:-1], num_labels), float("-inf"))
    reduced = reduced.scatter_reduce(-1, index, moved, reduce="amax", include_self=False)
    return reduced.movedim(-1, dim)


class TextEncoder(nn.Module):
    """The text tower of a SigLIP / SigLIP2 checkpoint, with its tokenizer and an embedding cache.

    Args:
        text_model: transformers ``SiglipTextModel`` or ``Siglip2TextModel``.
        tokenizer: the checkpoint's tokenizer.
        logit_scale, logit_bias: the checkpoint's scalars (score = ``cos * exp(scale) + bias``).
        checkpoint_files: weight and tokenizer files whose content keys the disk cache; empty keeps
            the cache in memory only.
        cache_dir: the disk cache's folder (None: :func:`default_cache_dir`).
        batch_size: prompts per forward pass.
    """

    def __init__(
        self,
        text_model: nn.Module,
        tokenizer: Any,
        logit_scale: float | torch.Tensor,
        logit_bias: float | torch.Tensor,
        checkpoint_files: Sequence[Path] = (),
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.text_model = text_model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.register_buffer("logit_scale", torch.as_tensor(logit_scale, dtype=torch.float32).reshape(()).clone())
        self.register_buffer("logit_bias", torch.as_tensor(logit_bias, dtype=torch.float32).reshape(()).clone())
        self.max_length = min(MAX_TEXT_LENGTH, int(text_model.config.max_position_embeddings))
        self.batch_size = int(batch_size)
        self.checkpoint_files = list(checkpoint_files)
        disk_dir = (default_cache_dir() if cache_dir is None else cache_dir) if self.checkpoint_files else None
        self.cache = EmbeddingCache(disk_dir)
        self._fingerprint: str | None = None
        self.quantized = quantized_as(self.text_model)
        self._label_memo: OrderedDict[tuple[Any, ...], LabelEmbeddings] = OrderedDict()

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 64,
        quantize: str | None = None,
        quantization_config: Any = None,
    ) -> TextEncoder:
        """Load the text tower, tokenizer, ``logit_scale`` and ``logit_bias`` of a full checkpoint.

        Args:
            name_or_path: hub id or local directory of a full SigLIP / SigLIP2 checkpoint.
            device: where the tower runs (default CPU); dtype: default float32 on CPU, bf16 on CUDA.
            cache_dir: folder of the text-embedding cache (not the hub cache); default
                ``~/.cache/siglip2_dense/text`` (or ``$SIGLIP2_DENSE_CACHE/text``).
            quantize: ``"int8"``: dynamic int8 linear layers for CPU inference (:mod:`siglip2_dense.int8`);
                its embeddings are cached apart from float32 ones.
            quantization_config: a transformers quantisation config passed to ``from_pretrained``.

        Raises:
            MissingFileError, CheckpointError: as :func:`siglip2_dense.towers.locate_checkpoint` and
                :func:`~siglip2_dense.towers.load_tower` raise them; also a checkpoint without a text
                tower, a tokenizer, ``logit_scale`` or ``logit_bias``. RequestError: ``quantize`` off the
                CPU or with a dtype other than float32.
        """
        device = resolve_device(device)
        dtype = default_dtype(device) if dtype is None else dtype
        check_quantize(quantize, device, dtype, quantization_config=quantization_config)
        source = locate_checkpoint(name_or_path)
        text_model = load_tower(source, read_config(source), "text", dtype=dtype,
                                quantization_config=quantization_config)
        quantize_linear_layers(text_model, quantize)
        tokenizer = load_tokenizer(source)
        files = weight_files(source.location)
        scalars = {}
        for key in ("logit_scale", "logit_bias"):
            value = read_tensor(files, key)
            if value is None:
                raise CheckpointError(f"checkpoint {name_or_path!r} has no {key!r} tensor in {[f.name for f in files]}")
            scalars[key] = value.float()
        encoder = cls(
            text_model, tokenizer, scalars["logit_scale"], scalars["logit_bias"],
            checkpoint_files=files + tokenizer_files(source.location), cache_dir=cache_dir, batch_size=batch_size,
        )
        return encoder.to(device)

    # --- prompts -> embeddings -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def embed_dim(self) -> int:
        """D, the width of the joint space."""
        return int(self.text_model.head.out_features)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """``input_ids [N, max_length]``: padded to 64 tokens; longer prompts are cut to 64 (as SigLIP was
        trained), with a logged warning naming each one."""
        prompts = list(prompts)
        for prompt, ids in zip(prompts, self.tokenizer(prompts)["input_ids"]):
            if len(ids) > self.max_length:
                logger.warning("prompt %r is %d tokens long; the text tower reads its first %d, the rest is ignored",
                               prompt if len(prompt) <= 80 else prompt[:77] + "...", len(ids), self.max_length)
        encoded = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        return encoded["input_ids"]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids [N, L]`` -> L2-normalised prompt embeddings ``[N, D]`` float32."""
        pooled = self.text_model(input_ids=input_ids.to(self.device)).pooler_output
        return F.normalize(pooled.float(), dim=-1)

    def embed_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Encode prompts in batches (no cache): ``[N, D]`` float32, L2-normalised."""
        from tqdm.auto import tqdm

        prompts = list(prompts)
        quiet = len(prompts) < _PROGRESS_MIN_PROMPTS or not sys.stderr.isatty()
        chunks = []
        with torch.inference_mode(), tqdm(total=len(prompts), unit="prompt", desc="text", disable=quiet) as bar:
            for start in range(0, len(prompts), self.batch_size):
                batch = prompts[start : start + self.batch_size]
                chunks.append(self(self.tokenize(batch)))
                bar.update(len(batch))
        return torch.cat(chunks)

    def fingerprint(self) -> str:
        """Content hash of the checkpoint's weight and tokenizer files (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = files_fingerprint(self.checkpoint_files) if self.checkpoint_files else ""
        return self._fingerprint

    def encode(self, texts: Sequence[str], templates: str | Sequence[str] = "single") -> torch.Tensor:
        """Embed each text, averaged over the templates: ``[K, D]`` float32, L2-normalised.

        Each text is one class name (no synonym splitting: use :meth:`encode_labels` for that).
        Texts that are equal after canonicalisation share one row's value. Each prompt's
        embedding is normalised, the K x T prompts are averaged per text, and the mean is
        normalised again. Results come from the cache when this checkpoint, tokenizer, dtype and
        template set have encoded the same texts before.

        Raises:
            RequestError: empty list, or a text that is empty after canonicalisation.
        """
        if isinstance(texts, str):
            raise RequestError(f"texts={texts!r}: expected a list of strings")
        canonical = []
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not canonicalize_text(text):
                raise RequestError(f"texts[{index}] = {text!r}: expected a non-empty string")
            canonical.append(canonicalize_text(text))
        if not canonical:
            raise RequestError("texts: got an empty list; expected at least one text")
        unique = list(dict.fromkeys(canonical))
        template_list = resolve_templates(templates)
        embeddings = self._encode_unique(unique, template_list)
        if len(unique) != len(canonical):
            row_of = {text: row for row, text in enumerate(unique)}
            embeddings = embeddings[torch.tensor([row_of[text] for text in canonical])]
        return embeddings.to(self.device)

    def encode_labels(self, labels: Sequence[str], templates: str | Sequence[str] = "single") -> LabelEmbeddings:
        """Embed labels that may carry comma-separated synonyms (``"person, people"``).

        Labels are validated by :func:`~siglip2_dense.text.prompts.parse_labels` (empty list, empty
        label and duplicate labels raise :class:`RequestError`). The same label list asked again
        returns the same :class:`LabelEmbeddings` object from a small in-memory memo (treat it as
        read-only), so a loop over images pays a dictionary look-up for its text.
        """
        memo_key = None
        if not isinstance(labels, str) and all(isinstance(label, str) for label in labels):
            memo_key = (tuple(labels), templates if isinstance(templates, str) else tuple(templates), str(self.device))
            if memo_key in self._label_memo:
                self._label_memo.move_to_end(memo_key)
                return self._label_memo[memo_key]
        parsed = parse_labels(labels)
        synonyms = [synonym for group in parsed for synonym in group]
        label_index = torch.tensor([k for k, group in enumerate(parsed) for _ in group], dtype=torch.long)
        embedded = LabelEmbeddings(
            labels=tuple(labels),
            synonyms=tuple(synonyms),
            embeddings=self.encode(synonyms, templates),
            label_index=label_index,
        )
        if memo_key is not None:
            self._label_memo[memo_key] = embedded
            while len(self._label_memo) > _LABEL_MEMO_ITEMS:
                self._label_memo.popitem(last=False)
        return embedded

    def clear_memory(self) -> None:
        """Forget in-memory embeddings (label memo and LRU); the disk cache stays."""
        self._label_memo.clear()
        self.cache.clear_memory()

    def cache_location(self, texts: Sequence[str], templates: str | Sequence[str] = "single") -> tuple[str, str]:
        """``(namespace, key)`` of the cache entry for canonical ``texts`` (as :meth:`encode` dedups
        them) with ``templates``; the file is ``<cache_dir>/<namespace>/<key>.safetensors``."""
        fingerprint = self.fingerprint()
        dtype = str(next(self.text_model.parameters()).dtype)
        weights = {"dtype": dtype} if self.quantized is None else {"dtype": dtype, "quantized": self.quantized}
        namespace = cache_key({"checkpoint": fingerprint, **weights})[:16]
        key = cache_key({
            "format": CACHE_FORMAT, "checkpoint": fingerprint, **weights, "max_length": self.max_length,
            "templates": list(resolve_templates(templates)), "texts": list(texts),
        })
        return namespace, key

    def _encode_unique(self, texts: list[str], templates: tuple[str, ...]) -> torch.Tensor:
        namespace, key = self.cache_location(texts, templates)
        cached = self.cache.get(namespace, key)
        if cached is not None and cached.shape == (len(texts), self.embed_dim):
            return cached
        prompts = [prompt for text in texts for prompt in fill_templates(text, templates)]
        per_prompt = self.embed_prompts(prompts).reshape(len(texts), len(templates), -1)
        embeddings = F.normalize(per_prompt.mean(dim=1), dim=-1).cpu()
        metadata = {"texts": json.dumps(texts, ensure_ascii=False), "templates": json.dumps(list(templates))}
        self.cache.put(namespace, key, embeddings, metadata)
        return embeddings
