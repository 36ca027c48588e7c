"""A user's own segmentation data: a folder of images, a folder of label PNGs, a file of class names.

::

    images_dir/  street_001.jpg, street_002.png, ...      (any common image format)
    masks_dir/   street_001.png, street_002.png, ...      (grey uint8 or palette PNG, value = class index)
    class_names_file                                       (one name per line; line k names class k)

An image and its mask are matched by file stem. Mask values must be class indices (0..K-1) or
``ignore_index``. A data set with splits (what ``data.dataset: folder`` reads, :func:`open_folder_split`)
is one root in either of two layouts::

    root/class_names.txt                     root/class_names.txt
    root/training/{images,masks}/            root/{images,masks}/
    root/validation/{images,masks}/          root/training.txt, root/validation.txt  (stems, one a line)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from siglip2_dense.data.image_io import IMAGE_SUFFIXES, check_same_size, read_label_map, read_rgb
from siglip2_dense.errors import DataError, MissingFileError, RequestError
from siglip2_dense.files import read_text_file


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Read class names, one per line (surrounding spaces and blank lines dropped)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class names file not found: {path} (expected one class name per line)")
    text = read_text_file(path, "class names file")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise DataError(f"class names file {path} is empty; expected one class name per line")
    return names


class FolderSegmentationDataset(Dataset):
    """Images and label maps matched by file stem.

    Args:
        images_dir: folder of images (``.jpg``, ``.png``, ...).
        masks_dir: folder of ``<stem>.png`` label maps, one per image.
        class_names_file: text file, one class name per line.
        ignore_index: the label value that means "no label" (kept as is, never a class).
        transform: optional callable applied to each item dict.
        stems: only these images (file stems, e.g. from a split file); None: every image in ``images_dir``.

    Items: ``{"image": [H, W, 3] uint8 RGB, "mask": [H, W] uint8, "path": str}`` (the image path).
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        masks_dir: str | os.PathLike,
        class_names_file: str | os.PathLike,
        ignore_index: int = 255,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        stems: list[str] | None = None,
    ) -> None:
        self.class_names = read_class_names(class_names_file)
        if not 0 <= ignore_index <= 255:
            raise RequestError(
                f"ignore_index={ignore_index} cannot be stored in a uint8 mask; expected 0..255"
            )
        if ignore_index < len(self.class_names):
            raise RequestError(
                f"ignore_index={ignore_index} is also a class index ({self.class_names[ignore_index]!r}); "
                f"expected a value >= {len(self.class_names)}, the number of classes"
            )
        self.ignore_index = ignore_index
        self.transform = transform
        self.pairs = _match_by_stem(Path(images_dir), Path(masks_dir))
        if stems is not None:
            by_stem = {image.stem: (image, mask) for image, mask in self.pairs}
            unknown = [stem for stem in stems if stem not in by_stem]
            if unknown:
                raise MissingFileError(f"no image named {unknown[0]!r} in {images_dir} ({len(unknown)} listed stems "
                                       f"have no image); expected an image file <stem>.<suffix> for each")
            self.pairs = [by_stem[stem] for stem in stems]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.pairs[index]
        image = read_rgb(image_path)
        mask = read_label_map(mask_path)
        check_same_size(image_path, image, mask_path, mask, "mask")
        invalid = (mask >= len(self.class_names)) & (mask != self.ignore_index)
        if invalid.any():
            raise DataError(
                f"mask {mask_path} holds label {int(mask[invalid][0])}; expected 0..{len(self.class_names) - 1} "
                f"(one per class name) or {self.ignore_index} (ignore)"
            )
        item = {"image": image, "mask": mask, "path": str(image_path)}
        return self.transform(item) if self.transform is not None else item


def _match_by_stem(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise MissingFileError(f"folder not found: {folder}")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    repeated = sorted(stem for stem, n in Counter(p.stem for p in images).items() if n > 1)
    if repeated:
        raise DataError(f"{images_dir} holds several images with stem {repeated[0]!r}; stems must be unique")
    pairs = []
    for image_path in images:
        mask_path = masks_dir / f"{image_path.stem}.png"
        if not mask_path.is_file():
            raise MissingFileError(f"image {image_path} has no mask: expected {mask_path}")
        pairs.append((image_path, mask_path))
    return pairs


def open_folder_split(
    root: str | os.PathLike, split: str, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> FolderSegmentationDataset:
    """Split ``split`` of a folder data set in either layout of the module docstring.

    Raises:
        MissingFileError: ``root`` has neither ``<split>/images`` nor ``images`` + ``<split>.txt``.
    """
    root = Path(root)
    names = root / "class_names.txt"
    if (root / split / "images").is_dir():
        return FolderSegmentationDataset(root / split / "images", root / split / "masks", names, transform=transform)
    split_file = root / f"{split}.txt"
    if (root / "images").is_dir() and split_file.is_file():
        stems = [line.strip() for line in read_text_file(split_file, "split file").splitlines() if line.strip()]
        if not stems:
            raise DataError(f"split file {split_file} is empty; expected one image stem per line")
        return FolderSegmentationDataset(root / "images", root / "masks", names, transform=transform, stems=stems)
    raise MissingFileError(
        f"folder data set {root} has no split {split!r}: expected {root / split}/images and {root / split}/masks, "
        f"or {root}/images, {root}/masks and the list {split_file} (one image stem per line); see the README's "
        "'Train on your own data'"
    )
