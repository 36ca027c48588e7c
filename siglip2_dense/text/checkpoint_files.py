"""A checkpoint's files on disk: where they are, what they hold, and a fingerprint of each.

Works for local directories and hub ids alike (files are found by
:func:`siglip2_dense.towers.resolve_file`: hub files are resolved in the Hugging Face cache through
transformers' ``cached_file``, downloading only what is missing). A fingerprint is a
content hash: for a file in the Hugging Face cache it is the blob's own name (the hub names blobs
by the SHA-256 of LFS files and the git SHA-1 of small ones), otherwise the SHA-256 of its bytes,
computed once per process per (path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from siglip2_dense.errors import CheckpointError, MissingFileError
from siglip2_dense.towers import TOKENIZER_FILES, resolve_file

WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_BLOB_NAME = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_HASH_CHUNK = 8 * 1024 * 1024
_fingerprint_memo: dict[tuple[str, int, int], str] = {}


def weight_files(name_or_path: str) -> list[Path]:
    """The weight file(s) of a checkpoint: one file, or every shard of a sharded one."""
    for index_name in WEIGHT_INDEX_FILES:
        index_path = resolve_file(name_or_path, index_name)
        if index_path is None:
            continue
        try:
            shard_names = sorted(set(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"cannot read the shard list {index_path}: {error!r}; expected JSON with a "
                                  "'weight_map' of tensor name -> shard file") from error
        shards = [resolve_file(name_or_path, shard) for shard in shard_names]
        missing = [name for name, shard in zip(shard_names, shards) if shard is None]
        if missing:
            raise MissingFileError(f"checkpoint {name_or_path!r}: shards {missing} listed in {index_name} are missing")
        return [shard for shard in shards if shard is not None]
    for filename in WEIGHT_FILES:
        path = resolve_file(name_or_path, filename)
        if path is not None:
            return [path]
    raise MissingFileError(
        f"checkpoint {name_or_path!r} has no weights: expected one of {WEIGHT_FILES + WEIGHT_INDEX_FILES}"
    )


def tokenizer_files(name_or_path: str) -> list[Path]:
    """The tokenizer files a checkpoint holds (any of :data:`TOKENIZER_FILES`)."""
    found = [resolve_file(name_or_path, filename) for filename in TOKENIZER_FILES]
    return [path for path in found if path is not None]


def file_fingerprint(path: str | Path) -> str:
    """A content hash of one file (see the module docstring)."""
    real = os.path.realpath(path)
    if os.path.basename(os.path.dirname(real)) == "blobs" and _HUB_BLOB_NAME.match(os.path.basename(real)):
        return os.path.basename(real)
    stat = os.stat(real)
    memo_key = (real, stat.st_size, stat.st_mtime_ns)
    if memo_key not in _fingerprint_memo:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        _fingerprint_memo[memo_key] = digest.hexdigest()
    return _fingerprint_memo[memo_key]


def files_fingerprint(paths: Iterable[str | Path]) -> str:
    """One SHA-256 over the names and content hashes of several files."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(f"{path.name}\0{file_fingerprint(path)}\n".encode())
    return digest.hexdigest()


def read_tensor(files: list[Path], key: str) -> torch.Tensor | None:
    """The tensor stored under ``key`` in a checkpoint's weight files, or None when absent.

    safetensors files are read lazily (only that tensor); ``.bin`` files with
    ``torch.load(weights_only=True, mmap=True)``.
    """
    for path in files:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(path), framework="pt") as handle:
                    if key in handle.keys():
                        return handle.get_tensor(key)
            except (OSError, SafetensorError) as error:
                raise CheckpointError(f"cannot read {path}: {error}") from error
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:  # a truncated zip, a foreign pickle, an I/O error: torch raises them all
                raise CheckpointError(f"cannot read {path} as PyTorch weights: {error}") from error
            if key in state:
                return state[key]
    return None
