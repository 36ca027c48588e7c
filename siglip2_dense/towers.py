"""One loader for both towers of a SigLIP / SigLIP2 checkpoint: where it is, what it is, its parts.

The vision side (:mod:`siglip2_dense.backbone`: vision tower + image processor) and the text side
(:mod:`siglip2_dense.text`: text tower + tokenizer) both load through this module, so a checkpoint
is found, read and checked one way, and every failure of transformers, huggingface_hub, safetensors
or the tokenizer reaches the caller as an error of :mod:`siglip2_dense.errors` naming the checkpoint.

1. :func:`locate_checkpoint` -> :class:`CheckpointSource`, where the files are:

   - a name that is plainly a path -- it starts with ``.``, ``~`` or ``/``, has more than one
     separator, or its first component is an existing folder (the typo ``assets/demo-siglip`` when
     ``assets/`` exists) -- must exist: otherwise :class:`MissingFileError` at once, naming the
     nearest existing folder; it is never tried as a hub id;
   - any other existing folder is a local checkpoint; the rest (``org/name``, ``name``) are hub ids;
   - a hub id is checked with one request and no retries (huggingface_hub alone retries a file it
     cannot reach five times, about 23 s, and transformers asks for several files). When the hub
     cannot be reached (``HF_HUB_OFFLINE=1``, no network, DNS failure, timeout, server error) the
     copy in the Hugging Face cache is used if there is one; if not, :class:`CheckpointError` says
     that the hub is unreachable and how to give a local folder instead.

2. :func:`read_config`: transformers' config; ``model_type`` must be one of :data:`SUPPORTED_MODEL_TYPES`.
3. :func:`load_tower`: the vision or the text tower; the class comes from ``model_type`` (never from
   the name); missing or mis-shaped weights raise :class:`CheckpointError` listing them.
4. :func:`load_image_processor` and :func:`load_tokenizer` read the checkpoint's own settings as
   ``AutoProcessor.from_pretrained`` does (see each function).

This module imports only :mod:`siglip2_dense.errors` of the toolkit (plus transformers,
huggingface_hub and safetensors), so the two towers share it without importing each other.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siglip2_dense.errors import CheckpointError, MissingFileError, RequestError

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model")
# CLIP checkpoints load whole (CLIPModel: both towers and their projections), for the open-vocabulary
# table's reference rows (siglip2_dense.openvocab.clip).
CLIP_MODEL_TYPES = ("clip",)
# transformers class of each tower, by the checkpoint's model_type (None: that tower is absent).
TOWER_CLASSES: dict[str, dict[str, str | None]] = {
    "siglip": {"vision": "SiglipVisionModel", "text": "SiglipTextModel"},
    "siglip_vision_model": {"vision": "SiglipVisionModel", "text": None},
    "siglip2": {"vision": "Siglip2VisionModel", "text": "Siglip2TextModel"},
    "siglip2_vision_model": {"vision": "Siglip2VisionModel", "text": None},
}
# The image-processor classes of each kind of tower (transformers 5: a torchvision and a PIL backend).
IMAGE_PROCESSOR_CLASSES = {
    "naflex": ("Siglip2ImageProcessor", "Siglip2ImageProcessorPil", "Siglip2ImageProcessorFast"),
    "fixres": ("SiglipImageProcessor", "SiglipImageProcessorPil", "SiglipImageProcessorFast"),
    "clip": ("CLIPImageProcessor", "CLIPImageProcessorPil", "CLIPImageProcessorFast"),
}
# Where image-processor settings live, in the order transformers' ImageProcessingMixin.get_image_processor_dict
# reads them: the nested "image_processor" of processor_config.json (transformers.utils.PROCESSOR_NAME, what
# ProcessorMixin.save_pretrained writes in transformers 5) wins over preprocessor_config.json
# (transformers.utils.IMAGE_PROCESSOR_NAME, what older checkpoints and ImageProcessor.save_pretrained write).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# Tokenizer files (the ones transformers' tokenizers save); a tokenizer needs at least one vocabulary file.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "merges.txt",
)
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json")
EXAMPLE_HUB_ID = "google/siglip2-base-patch16-naflex"
# One HEAD request decides whether the hub answers; HF_HUB_ETAG_TIMEOUT (huggingface_hub's own setting
# for such requests, default 10 s) overrides it.
HUB_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint's files are.

    Attributes:
        name_or_path: the name as the caller gave it (used in messages and records).
        location: what transformers reads: an absolute local folder, a hub id, or the folder of the
            hub id's copy in the Hugging Face cache when the hub cannot be reached.
        local_dir: the absolute folder when ``name_or_path`` names a local folder, else None (a hub id).
    """

    name_or_path: str
    location: str
    local_dir: str | None


# --- 1. where the checkpoint is -----------------------------------------------------------------


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is plainly a filesystem path rather than a hub id (see the module docstring)."""
    if os.path.isabs(name) or name.startswith((".", "~")):
        return True
    separators = name.count("/") + (name.count(os.sep) if os.sep != "/" else 0)
    if separators > 1:
        return True
    first = name.replace(os.sep, "/").split("/")[0]
    return separators == 1 and bool(first) and os.path.isdir(first)


def nearest_existing_folder(path: str) -> str:
    """The deepest folder among ``path``'s ancestors that exists (the current folder at worst)."""
    probe = Path(os.path.expanduser(path))
    while not probe.is_dir() and probe != probe.parent:
        probe = probe.parent
    return str(probe) if probe.is_dir() else os.curdir


def missing_folder_message(name: str) -> str:
    """One line for a checkpoint path that does not exist: the nearest folder that does, and close names in it."""
    nearest = nearest_existing_folder(name)
    full, base = Path(os.path.expanduser(name)), Path(nearest)
    rest = full.parts if base == Path(os.curdir) else full.parts[len(base.parts):]
    missing_part = rest[0] if rest else full.name
    where = repr(nearest) if os.path.isabs(nearest) else f"{nearest!r} ({os.path.abspath(nearest)})"
    try:
        folders = sorted(entry for entry in os.listdir(nearest) if os.path.isdir(os.path.join(nearest, entry)))
    except OSError:
        folders = []
    close = difflib.get_close_matches(missing_part, folders, n=3, cutoff=0.6)
    text = f"checkpoint folder {name!r} does not exist; the nearest existing folder is {where}"
    if close:
        text += "; did you mean " + " or ".join(repr(os.path.join(nearest, c)) for c in close) + "?"
    return text + f" (expected a local folder holding config.json or a hub id such as {EXAMPLE_HUB_ID!r})"


def locate_checkpoint(name_or_path: str | os.PathLike) -> CheckpointSource:
    """Find a checkpoint: a local folder, a reachable hub id, or a hub id's cached copy.

    Raises:
        MissingFileError: a path that does not exist; a hub id the hub does not know.
        CheckpointError: a file where a folder is expected, a folder without ``config.json``, an
            invalid hub id, a gated repository, or a hub that cannot be reached with no cached copy.
    """
    name = os.fspath(name_or_path)
    if not name.strip():
        raise MissingFileError(f"checkpoint name {name!r} is empty; expected a local folder or a hub id "
                               f"such as {EXAMPLE_HUB_ID!r}")
    path = os.path.expanduser(name)
    if os.path.exists(path) or looks_like_path(name):
        if not os.path.exists(path):
            raise MissingFileError(missing_folder_message(name))
        if not os.path.isdir(path):
            raise CheckpointError(f"checkpoint {name!r} is a file; expected the checkpoint's folder (the one "
                                  "holding config.json)")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise CheckpointError(f"checkpoint directory {path!r} has no config.json; expected a transformers "
                                  "checkpoint")
        local = os.path.abspath(path)
        return CheckpointSource(name, local, local)
    return CheckpointSource(name, locate_on_hub(name), None)


def locate_on_hub(repo_id: str) -> str:
    """``repo_id`` when the hub answers for it, else the folder of its cached copy (see the module docstring)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise CheckpointError(
            f"checkpoint {repo_id!r} is neither an existing folder nor a valid hub id ({one_line(error)}); "
            f"expected a local folder holding config.json or a hub id such as {EXAMPLE_HUB_ID!r}"
        ) from None
    cached = try_to_load_from_cache(repo_id, "config.json")
    cached_dir = os.path.dirname(cached) if isinstance(cached, str) else None
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    else:
        timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_PROBE_TIMEOUT_S)
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=timeout)
            return repo_id
        except GatedRepoError as error:
            raise CheckpointError(f"hub model {repo_id!r} is gated: accept its terms on the hub and log in "
                                  f"(hf auth login), or give a local folder ({one_line(error)})") from None
        except RepositoryNotFoundError:
            raise MissingFileError(
                f"there is no model {repo_id!r} on the hub (or it is private: log in with hf auth login); "
                "for a local checkpoint give its folder, e.g. ./" + repo_id
            ) from None
        except RemoteEntryNotFoundError:
            raise CheckpointError(f"hub model {repo_id!r} has no config.json; expected a transformers "
                                  "checkpoint") from None
        except HfHubHTTPError as error:  # the hub answered, but with a server error
            reason = one_line(error)
        except Exception as error:  # no answer at all: DNS failure, refused connection, timeout, proxy
            # (huggingface_hub's transport raises its HTTP client's own errors, not OSError)
            reason = f"{type(error).__name__}: {one_line(error)}"
    if cached_dir is not None:
        logger.warning("the model hub at %s is unreachable (%s); using the cached copy of %r in %s",
                       constants.ENDPOINT, reason, repo_id, cached_dir)
        return cached_dir
    raise CheckpointError(
        f"the model hub at {constants.ENDPOINT} is unreachable ({reason}) and {repo_id!r} is not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}); give a local folder instead: one holding config.json "
        f"and the weights, e.g. written by save_pretrained or by 'hf download {repo_id} --local-dir "
        f"./{repo_id.split('/')[-1]}' on a machine that reaches the hub"
    )


def one_line(error: BaseException) -> str:
    """An error's message with its line breaks and runs of spaces made single spaces."""
    return " ".join(str(error).split()) or type(error).__name__


def resolve_file(location: str, filename: str) -> Path | None:
    """``filename`` of a checkpoint (a local folder or a hub id), or None when it has none.

    Hub files are resolved in the Hugging Face cache through transformers' ``cached_file``,
    downloading only what is missing.
    """
    local = Path(os.path.expanduser(location))
    if local.is_dir():
        candidate = local / filename
        return candidate if candidate.is_file() else None
    from transformers.utils import cached_file

    try:
        resolved = cached_file(
            location,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        return None
    return Path(resolved) if resolved else None


# --- 2. what it is ------------------------------------------------------------------------------


def read_config(source: CheckpointSource, supported: tuple[str, ...] = SUPPORTED_MODEL_TYPES) -> Any:
    """The checkpoint's transformers config; its ``model_type`` must be one of ``supported``."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.location)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot read the config of checkpoint {source.name_or_path!r}: {error}. Expected a local directory "
            "or a reachable hub id"
        ) from error
    if config.model_type not in supported:
        raise CheckpointError(
            f"checkpoint {source.name_or_path!r} has model_type {config.model_type!r}; supported model types are "
            f"{', '.join(supported)}" + (" (or use 'timm:<model name>')" if supported == SUPPORTED_MODEL_TYPES else "")
        )
    return config


def is_naflex(config: Any) -> bool:
    """SigLIP2 NaFlex (``siglip2*``) rather than FixRes (``siglip*``), from the config."""
    return str(config.model_type).startswith("siglip2")


# --- 3. the towers ------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report while loading one tower of a two-tower checkpoint.

    The other tower's weights are reported as unexpected, which is the point; missing and
    mis-shaped keys are checked by :func:`load_tower` and raised as :class:`CheckpointError`.
    """
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def load_tower(
    source: CheckpointSource,
    config: Any,
    tower: str,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    quantization_config: Any = None,
) -> nn.Module:
    """The ``"vision"`` or ``"text"`` tower of the checkpoint, every weight read from it.

    ``quantization_config``: a transformers quantisation config (``BitsAndBytesConfig(load_in_4bit=True)``
    as the SigLIP2 model page shows), passed to ``from_pretrained`` as it is; a missing package it needs
    (bitsandbytes, accelerate) is a :class:`~siglip2_dense.errors.RequestError` naming it.

    Raises:
        CheckpointError: the checkpoint has no such tower, its files cannot be read (corrupt or
            truncated weights included), or weights are missing or shaped unlike the config.
    """
    if tower not in ("vision", "text"):
        raise ValueError(f"tower={tower!r}; expected 'vision' or 'text'")
    class_name = TOWER_CLASSES[config.model_type][tower]
    if class_name is None:
        raise CheckpointError(
            f"checkpoint {source.name_or_path!r} is a {config.model_type!r} (vision tower only) and has no {tower} "
            "tower; open-vocabulary use needs the full siglip / siglip2 checkpoint"
        )
    return load_pretrained(source, class_name, f"{tower} tower", dtype, attn_implementation, quantization_config)


def load_pretrained(
    source: CheckpointSource,
    class_name: str,
    what: str,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    quantization_config: Any = None,
) -> nn.Module:
    """transformers' ``<class_name>.from_pretrained`` on the checkpoint, every weight read from it.

    ``what`` names the part in messages (``"vision tower"``, ``"CLIP model"``); ``quantization_config``
    as :func:`load_tower` takes it.

    Raises:
        CheckpointError: the files cannot be read (corrupt or truncated weights included), or
            weights are missing or shaped unlike the config.
    """
    import transformers
    from safetensors import SafetensorError

    name = source.name_or_path
    kwargs: dict[str, Any] = {"dtype": dtype, "output_loading_info": True, "ignore_mismatched_sizes": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        with quiet_transformers():
            model, info = getattr(transformers, class_name).from_pretrained(source.location, **kwargs)
    except ImportError as error:
        raise RequestError(f"quantization_config={type(quantization_config).__name__} cannot load the {what} "
                           f"of {name!r}: {error}") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the {what} of {name!r}: {error}") from error
    except SafetensorError as error:
        raise CheckpointError(f"cannot load the {what} of {name!r}: its weight file is corrupt or "
                              f"truncated ({error}); download or save the checkpoint again") from error
    if info.get("missing_keys"):
        raise CheckpointError(f"checkpoint {name!r} lacks {what.replace(' ', '-')} weights: "
                              f"{sorted(info['missing_keys'])}")
    if info.get("mismatched_keys"):
        shapes = [f"{key}: checkpoint {tuple(saved)}, config {tuple(expected)}"
                  for key, saved, expected in sorted(info["mismatched_keys"])]
        raise CheckpointError(f"checkpoint {name!r} has {what.replace(' ', '-')} weights shaped unlike its config.json: "
                              + "; ".join(shapes))
    return model


# --- 4. how its inputs are prepared --------------------------------------------------------------


def load_image_processor(source: CheckpointSource, config: Any) -> Any:
    """The checkpoint's image processor, read as ``AutoImageProcessor.from_pretrained`` reads it.

    Settings come from ``processor_config.json`` (nested ``image_processor``, as transformers 5's
    ``Siglip2Processor.save_pretrained`` writes) or else ``preprocessor_config.json``, never from the
    model config; only when neither file exists does the processor take its documented defaults
    for the tower (NaFlex: ``patch_size`` and ``max_num_patches = vision_config.num_patches``;
    FixRes: a square ``vision_config.image_size``), with a logged warning.

    Raises:
        CheckpointError: a processor file that transformers cannot read, or one that names an image
            processor of another kind than the tower's.
    """
    import transformers

    naflex = is_naflex(config)
    vision_config = getattr(config, "vision_config", config)
    kind = "clip" if config.model_type in CLIP_MODEL_TYPES else "naflex" if naflex else "fixres"
    if not any(resolve_file(source.location, filename) is not None for filename in PROCESSOR_FILES):
        logger.warning("checkpoint %r has neither %s; using the %s image processor's defaults for its config",
                       source.name_or_path, " nor ".join(PROCESSOR_FILES), IMAGE_PROCESSOR_CLASSES[kind][0])
        if kind == "clip":
            size = vision_config.image_size
            return transformers.CLIPImageProcessor(size={"shortest_edge": size},
                                                   crop_size={"height": size, "width": size})
        if naflex:
            return transformers.Siglip2ImageProcessor(patch_size=vision_config.patch_size,
                                                      max_num_patches=vision_config.num_patches)
        return transformers.SiglipImageProcessor(size={"height": vision_config.image_size,
                                                       "width": vision_config.image_size})
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source.location)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"cannot read the image processor of {source.name_or_path!r}: {error}") from error
    expected = tuple(getattr(transformers, n) for n in IMAGE_PROCESSOR_CLASSES[kind] if hasattr(transformers, n))
    if not isinstance(processor, expected):
        raise CheckpointError(
            f"the image processor of {source.name_or_path!r} is a {type(processor).__name__}; a "
            f"{config.model_type!r} tower takes a {IMAGE_PROCESSOR_CLASSES[kind][0]} (see image_processor_type "
            f"in its {' or '.join(PROCESSOR_FILES)})"
        )
    return processor


def load_tokenizer(source: CheckpointSource) -> Any:
    """The checkpoint's tokenizer, read by ``AutoTokenizer`` as ``AutoProcessor`` reads it.

    A tokenizer has no documented default: a checkpoint without a vocabulary file (any of
    :data:`VOCABULARY_FILES`) is an error here, where transformers 5 would build an empty tokenizer
    that reads every label as ``<unk>``.

    Raises:
        CheckpointError: no vocabulary file, or tokenizer files that transformers cannot read.
    """
    from transformers import AutoTokenizer

    if not any(resolve_file(source.location, filename) is not None for filename in VOCABULARY_FILES):
        raise CheckpointError(
            f"checkpoint {source.name_or_path!r} has no tokenizer: none of {', '.join(VOCABULARY_FILES)}; "
            "save the tokenizer (or the whole processor) into the checkpoint folder with save_pretrained"
        )
    try:
        return AutoTokenizer.from_pretrained(source.location)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"cannot load the tokenizer of {source.name_or_path!r}: {error}") from error
