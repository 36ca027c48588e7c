"""Reading the small text files a user hands the toolkit: label lists, class names, split file lists."""

from __future__ import annotations

import os
from pathlib import Path

from siglip2_dense.errors import DataError, MissingFileError


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
