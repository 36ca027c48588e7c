"""Prompt text for SigLIP's text tower: canonicalisation, templates and label lists.

A *label* is what a user asks for: one class, optionally with comma-separated synonyms
(``"person, people"``). Every synonym is canonicalised as SigLIP was evaluated by big_vision
and open_clip (``canonicalize_text``), filled into each template, and the filled prompt is
canonicalised again (the template's own capital letter and full stop go).

Label rules (the ones :class:`~siglip2_dense.text.encoder.TextEncoder` and the segmenter enforce):

- an empty list of labels is a :class:`RequestError`;
- a label whose synonyms are all empty after canonicalisation (``""``, ``"  "``, ``"..."``) is a
  :class:`RequestError` naming its index;
- empty synonyms inside a label are dropped (``"person,"`` is ``"person"``), repeated synonyms
  inside one label are kept once;
- two labels with the same canonical synonyms (``"Cat"`` and ``"cat."``) are a
  :class:`RequestError` naming both, since a pixel could not say which of them it is;
- the same synonym may appear in different labels (ADE20K's "screen" does).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from siglip2_dense.errors import MissingFileError, RequestError
from siglip2_dense.files import read_text_file

SINGLE_TEMPLATE = "This is a photo of {}."
TEMPLATE_SETS = ("single", "imagenet80")
SYNONYM_SEPARATOR = ","
LABEL_SEPARATOR = ";"

_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WHITESPACE = re.compile(r"\s+")


def canonicalize_text(text: str) -> str:
    """big_vision's / open_clip's canonicalisation for SigLIP prompts.

    Underscores become spaces, ASCII punctuation is removed (``"t-shirt"`` -> ``"tshirt"``; other
    scripts' punctuation is kept), the text is lowercased, runs of whitespace collapse to one space,
    and the ends are stripped.
    """
    text = text.replace("_", " ").translate(_ASCII_PUNCTUATION).lower()
    return _WHITESPACE.sub(" ", text).strip()


def _packaged_text(name: str) -> str:
    return resources.files("siglip2_dense").joinpath("assets", name).read_text(encoding="utf-8")


@functools.cache
def _packaged_templates(name: str) -> tuple[str, ...]:
    lines = _packaged_text(name).splitlines()
    return tuple(line for line in (raw.strip() for raw in lines) if line)


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """The prompt templates of a named set, or the caller's own list.

    Args:
        templates: ``"single"`` (``"This is a photo of {}."``), ``"imagenet80"`` (the 80 CLIP /
            big_vision ImageNet templates, packaged with the toolkit) or a list of strings each
            holding one ``{}``.
    """
    if isinstance(templates, str):
        if templates == "single":
            return (SINGLE_TEMPLATE,)
        if templates == "imagenet80":
            return _packaged_templates("imagenet_templates.txt")
        raise RequestError(f"templates={templates!r}: expected one of {TEMPLATE_SETS} or a list of strings with '{{}}'")
    resolved = tuple(templates)
    if not resolved:
        raise RequestError("templates: got an empty list; expected at least one template with '{}'")
    for template in resolved:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise RequestError(f"template {template!r}: expected a string holding exactly one '{{}}'")
    return resolved


def fill_templates(text: str, templates: Sequence[str]) -> list[str]:
    """The canonical prompts of one (already canonical) text: one per template."""
    return [canonicalize_text(template.format(text)) for template in templates]


def split_synonyms(label: str) -> tuple[str, ...]:
    """A label's canonical synonyms in order, empty and repeated ones dropped."""
    synonyms: dict[str, None] = {}
    for part in label.split(SYNONYM_SEPARATOR):
        canonical = canonicalize_text(part)
        if canonical:
            synonyms[canonical] = None
    return tuple(synonyms)


def parse_labels(labels: Sequence[str]) -> list[tuple[str, ...]]:
    """Validate a label list and split each label into canonical synonyms.

    Returns:
        One tuple of synonyms per label, in the labels' order (see the module's rules).
    """
    if isinstance(labels, str):
        raise RequestError(
            f"labels={labels!r}: expected a list of labels, not one string; use [{labels!r}] for a single label"
        )
    labels = list(labels)
    if not labels:
        raise RequestError("labels: got an empty list; expected at least one label")
    parsed: list[tuple[str, ...]] = []
    first_seen: dict[tuple[str, ...], int] = {}
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise RequestError(f"labels[{index}] = {label!r}: expected a string")
        synonyms = split_synonyms(label)
        if not synonyms:
            raise RequestError(
                f"labels[{index}] = {label!r} is empty after canonicalisation (lowercase, punctuation and "
                "extra spaces removed); give it at least one word"
            )
        if synonyms in first_seen:
            other = first_seen[synonyms]
            raise RequestError(
                f"duplicate label: labels[{other}] = {labels[other]!r} and labels[{index}] = {label!r} are the "
                "same label after canonicalisation; remove one of them"
            )
        first_seen[synonyms] = index
        parsed.append(synonyms)
    return parsed


def parse_label_string(text: str) -> list[str]:
    """Labels from one command-line string: ``;`` separates labels, ``,`` synonyms of one label.

    ``"person, people; car; sky"`` -> ``["person, people", "car", "sky"]``. Empty pieces are dropped.
    """
    return [piece.strip() for piece in text.split(LABEL_SEPARATOR) if piece.strip()]


def read_label_file(path: str | Path) -> list[str]:
    """Labels from a text file: one label per line (synonyms comma-separated), ``#`` comments.

    ``path`` may also name a packaged vocabulary: ``"ade20k_150_synonyms"``.
    """
    candidate = Path(path).expanduser()
    if candidate.is_file():
        text = read_text_file(candidate, "label file")
    elif not candidate.suffix and resources.files("siglip2_dense").joinpath("assets", f"{path}.txt").is_file():
        text = _packaged_text(f"{path}.txt")
    else:
        raise MissingFileError(
            f"label file {str(path)!r} does not exist; expected a text file with one label per line or a "
            "packaged vocabulary name such as 'ade20k_150_synonyms'"
        )
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]
