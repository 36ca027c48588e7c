"""Class-name files packaged with the toolkit (``siglip2_dense/assets/class_names/<name>.txt``).

Two kinds, one class per line in label order, ``#`` starts a comment:

- plain names of each data set, as its mmsegmentation class defines them: ``voc``, ``pascal_context``,
  ``coco_stuff``, ``coco_object``, ``cityscapes`` (ADE20K's are in ``assets/ade20k_150.json``), and
  ``ade20k_full`` (ADE-847) and ``pascal_context_459`` (PC-459) as CAT-Seg's ``datasets/ade847.json`` and
  ``datasets/pc459.json`` list them (ADE-847's WordNet names carry synonyms after commas, as CAT-Seg prompts them);
- the names with synonyms (comma-separated on one line) that the published training-free
  open-vocabulary results used, from the SCLIP lineage's ``configs/cls_*.txt``: ``sclip_voc21``,
  ``sclip_voc20``, ``sclip_context60``, ``sclip_context59``, ``sclip_coco_object``,
  ``sclip_coco_stuff``, ``sclip_cityscapes``, ``sclip_ade20k``.

``siglip2_dense.text.prompts.read_label_file("class_names/sclip_voc21")`` reads the same files.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from siglip2_dense.errors import RequestError

CLASS_NAME_FILES = (
    "voc", "pascal_context", "coco_stuff", "coco_object", "cityscapes", "ade20k_full", "pascal_context_459",
    "sclip_voc21", "sclip_voc20", "sclip_context60", "sclip_context59", "sclip_coco_object",
    "sclip_coco_stuff", "sclip_cityscapes", "sclip_ade20k",
)  # fmt: skip


@cache
def packaged_class_names(name: str) -> tuple[str, ...]:
    """The lines of the packaged class-name file ``name`` (comments and blank lines dropped).

    A line with synonyms stays one string (``"person, person in shirt, ..."``).
    """
    if name not in CLASS_NAME_FILES:
        raise RequestError(f"unknown class-name file {name!r}; valid choices: {', '.join(CLASS_NAME_FILES)}")
    text = resources.files("siglip2_dense").joinpath("assets", "class_names", f"{name}.txt").read_text("utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line)
