"""Per-template class embeddings, as CAT-Seg feeds its cost volume: ``[K, P, D]``.

CAT-Seg (github.com/cvlab-kaist/CAT-Seg ``cat_seg/modeling/transformer/cat_seg_predictor.py``,
``CATSegPredictor.class_embeddings``) embeds every (template, synonym) prompt, L2-normalises each, averages a
class's synonyms per template and normalises again; the templates stay apart (its cost volume has one
channel per template). :meth:`TextEncoder.encode_labels` averages over the templates instead (the
training-free heads' ensemble); this keeps them, through the same cached encoder (one cache entry per
template).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from siglip2_dense.text.encoder import LabelEmbeddings, TextEncoder
from siglip2_dense.text.prompts import parse_labels, read_label_file, resolve_templates


def label_list(labels: str | Sequence[str]) -> list[str]:
    """``labels`` as a list: a label file or packaged vocabulary name is read (one label per line)."""
    return read_label_file(labels) if isinstance(labels, str) else list(labels)


def template_embeddings(encoder: TextEncoder, labels: Sequence[str], templates: str | Sequence[str]) -> LabelEmbeddings:
    """Labels (synonyms comma-separated) -> :class:`LabelEmbeddings` whose ``embeddings`` are ``[K, P, D]``
    float32 (one row per label, ``P`` templates, each L2-normalised) and ``label_index = arange(K)``."""
    parsed = parse_labels(labels)
    synonyms = [synonym for group in parsed for synonym in group]
    owner = torch.tensor([k for k, group in enumerate(parsed) for _ in group], dtype=torch.long)
    per_template = []
    for template in resolve_templates(templates):
        rows = encoder.encode(synonyms, [template]).float().cpu()  # [S, D], normalised
        summed = torch.zeros(len(parsed), rows.shape[1]).index_add_(0, owner, rows)
        per_template.append(F.normalize(summed, dim=-1))  # the mean's direction
    return LabelEmbeddings(labels=tuple(labels), synonyms=tuple(", ".join(group) for group in parsed),
                           embeddings=torch.stack(per_template, dim=1), label_index=torch.arange(len(parsed)))


def checkpoint_template_embeddings(checkpoint: str, labels: Sequence[str], templates: str | Sequence[str],
                                   device: torch.device | str | None = None, cache_dir: str | None = None) -> torch.Tensor:
    """``[K, P, D]`` per-template embeddings of ``labels`` by ``checkpoint``'s text tower (float32, disk-cached)."""
    encoder = TextEncoder.from_pretrained(checkpoint, device=device, dtype=torch.float32, cache_dir=cache_dir)
    return template_embeddings(encoder, list(labels), templates).embeddings
