"""The toolkit's error vocabulary.

Every error the toolkit raises on purpose derives from :class:`Siglip2DenseError`, and each kind also
derives from the built-in exception a caller would naturally catch (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working. Messages name the file or value,
what was expected, and what to do.
"""

from __future__ import annotations


class Siglip2DenseError(Exception):
    """Base class of every error raised on purpose by siglip2-dense."""


class DataError(Siglip2DenseError, ValueError):
    """A data set, image, label map or depth map is not what the loader expects."""


class ConfigError(Siglip2DenseError, ValueError):
    """A configuration key or value is unknown or of the wrong type."""


class CheckpointError(Siglip2DenseError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


class RequestError(Siglip2DenseError, ValueError):
    """An API call got arguments it cannot honour (empty label list, bad layer index, ...)."""


class MissingFileError(Siglip2DenseError, FileNotFoundError):
    """A file or folder the caller named does not exist."""


class ProcessGroupError(Siglip2DenseError, RuntimeError):
    """Another process of a distributed (``torchrun``) run stopped or cannot be reached."""
