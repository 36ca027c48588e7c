"""Every file the toolkit reads from a user or writes for one, in one place.

Reading: :func:`read_text_file` (label lists, class names, split lists) and :func:`read_json`.
Writing is atomic everywhere: a file is written to a temporary name beside its destination and
renamed into place (:func:`atomic_output`, :func:`write_bytes_atomic`, :func:`write_text_atomic`,
:func:`write_json`), and a folder is built under a temporary name and swapped in whole
(:func:`replace_directory`), so a crash never leaves half a file or half a folder behind. A folder
that must be checked for completeness carries a manifest of its files' sizes (:func:`write_manifest`,
:func:`manifest_is_complete`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from siglip2_dense.errors import DataError, MissingFileError

MANIFEST = "manifest.json"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# --- reading ---------------------------------------------------------------------------------


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``; ``what`` names the file in errors (e.g. ``"class names file"``).

    Raises:
        MissingFileError: no such file. DataError: the file is not UTF-8 text (a binary file, or
            another encoding), with the byte offset where decoding failed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{what} {path} is not UTF-8 text (byte {error.start} is {data[error.start:error.start + 1]!r}); "
            "save it as UTF-8 text, one entry per line"
        ) from None


def read_json(path: str | os.PathLike, error: type[Exception] = DataError, hint: str = "") -> Any:
    """The JSON value in ``path``; a missing, unreadable or malformed file raises ``error`` naming it.

    Args:
        error: the toolkit error to raise (e.g. ``CheckpointError`` for a checkpoint's files).
        hint: appended to the message: what the user can do about it.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as reason:
        raise error(f"cannot read {path}: {reason}{'; ' + hint if hint else ''}") from reason


# --- writing one file ------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def atomic_output(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, else removed.

    For writers that want a file name (safetensors, h5py, scipy.io.savemat) rather than bytes. The
    file gets the permissions a plain ``open`` would give (mkstemp makes 0600 files).

    Args:
        durable: flush the file to disk before the rename (weights, configs, metrics), so a power
            cut leaves the old file or the new one; pictures and synthetic data skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename."""
    with atomic_output(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (flushed to disk by default)."""
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike, value: Any, indent: int = 2, durable: bool = True) -> None:
    """Write ``value`` as JSON (one trailing newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(value, indent=indent) + "\n", durable=durable)


# --- writing a folder ------------------------------------------------------------------------


def fsync_tree(directory: Path) -> None:
    """Flush every file directly in ``directory``, then the folder itself."""
    for path in directory.iterdir():
        _fsync_file(path)
    _fsync_directory(directory)


def moved_aside(final: Path) -> Path:
    """Where :func:`replace_directory` keeps the older ``final`` while it swaps in the new one."""
    return final.with_name(f".{final.name}.old")


def restore_moved_aside(final: Path) -> None:
    """Undo an interrupted :func:`replace_directory`: put the older ``final`` back when a kill came
    between moving it aside and moving the new one in."""
    old = moved_aside(final)
    if not final.exists() and old.is_dir():
        os.replace(old, final)


def replace_directory(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` directory to ``final``, replacing an older one (moved aside, then deleted)."""
    old = moved_aside(final)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_directory(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_manifest(directory: Path, **fields: Any) -> None:
    """Write ``manifest.json`` listing every file in ``directory`` with its size, plus ``fields``.

    Written last, so a folder whose manifest matches its files (:func:`manifest_is_complete`) was
    finished.
    """
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.name != MANIFEST}
    write_json(directory / MANIFEST, {**fields, "files": files}, indent=1)


def manifest_is_complete(directory: Path) -> bool:
    """Whether ``directory`` has a manifest whose files are all there, with their sizes."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return all((directory / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
