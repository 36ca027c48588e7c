"""A store of text embeddings: an in-memory LRU in front of safetensors files on disk.

Layout: ``<directory>/<namespace>/<key>.safetensors``, one file per encoded label set, holding
the tensor ``"embeddings"`` ``[K, D]`` float32 and string metadata (the texts and templates, for
people who look inside). ``namespace`` groups the files of one checkpoint + tokenizer so they can
be deleted together; ``key`` is the SHA-256 of everything the embeddings depend on (see
:func:`cache_key`). Files are written to a temporary name in the same folder, then renamed, so
a reader never sees half a file; an unreadable file counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from siglip2_dense.files import atomic_output

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "SIGLIP2_DENSE_CACHE"
EMBEDDINGS_KEY = "embeddings"


def default_cache_dir() -> Path:
    """``$SIGLIP2_DENSE_CACHE/text`` if set, else ``~/.cache/siglip2_dense/text``."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root).expanduser() if root else Path("~/.cache/siglip2_dense").expanduser()
    return base / "text"


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 of ``parts`` as canonical JSON (sorted keys, no whitespace)."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Text embeddings by key, in memory (LRU) and on disk.

    Args:
        directory: where the files live; None keeps embeddings in memory only.
        memory_items: how many label sets the in-memory LRU holds.
    """

    def __init__(self, directory: str | Path | None, memory_items: int = 32) -> None:
        self.directory = None if directory is None else Path(directory).expanduser()
        self.memory_items = int(memory_items)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()

    def path(self, namespace: str, key: str) -> Path | None:
        """Where the file of ``key`` lives (None without a directory)."""
        return None if self.directory is None else self.directory / namespace / f"{key}.safetensors"

    def get(self, namespace: str, key: str) -> torch.Tensor | None:
        """The stored ``[K, D]`` float32 CPU tensor (a copy), or None on a miss."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key].clone()
        path = self.path(namespace, key)
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            embeddings = load_file(str(path))[EMBEDDINGS_KEY]
        except Exception as error:  # a truncated or foreign file is a miss, not a failure
            logger.warning("ignoring unreadable text-embedding cache file %s (%s)", path, error)
            return None
        self._remember(key, embeddings)
        return embeddings.clone()

    def put(self, namespace: str, key: str, embeddings: torch.Tensor, metadata: dict[str, str]) -> None:
        """Store ``embeddings [K, D]`` (kept as float32 on the CPU) under ``key``."""
        embeddings = embeddings.detach().to(device="cpu", dtype=torch.float32).contiguous()
        self._remember(key, embeddings)
        path = self.path(namespace, key)
        if path is None:
            return
        from safetensors.torch import save_file

        try:
            with atomic_output(path) as tmp:
                save_file({EMBEDDINGS_KEY: embeddings}, str(tmp), metadata=metadata)
        except OSError as error:  # a read-only or full disk costs speed, never the result
            logger.warning("could not write text-embedding cache file %s (%s)", path, error)

    def _remember(self, key: str, embeddings: torch.Tensor) -> None:
        if self.memory_items <= 0:
            return
        self._memory[key] = embeddings.clone()
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        """Forget the in-memory copies (the files stay)."""
        self._memory.clear()
