"""The toolkit against the recipe users have today, end to end, on the same model and images.

The transformers documentation scores an image against labels with a processor and
``AutoModel`` per image: the text of every label goes through the text tower on every call.
``OpenVocabSegmenter`` encodes the labels once (cached), batches the images, and never runs
the text tower per image -- and returns a mask per label besides.

Model: SigLIP2 NaFlex at base width (768) with 4 blocks in each tower (random weights, float32;
both sides load the same checkpoint from disk; fewer blocks keep the run short and scale both
towers alike, so the ratio is the base model's). 20 images of ADE20K-like sizes, the 150 ADE20K
class names with "This is a photo of {}.".

The recipe's time per image hardly varies (150 prompts through the text tower dominate), so it
is timed on the first ``RECIPE_IMAGES`` of the 20 images and its images/s taken from those; the
toolkit's time covers all 20 images plus its one text encoding (cold cache).

Figure: toolkit images/s / recipe images/s, target >= 5.

Run: ``python benchmarks/vs_transformers_recipe.py``
"""

from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from measure import Figure, print_figures
from openvocab import BASE_TEXT, BASE_VISION, write_tokenizer

NUM_IMAGES = 20
RECIPE_IMAGES = 3
BATCH = 4
DEPTH = 4


def ade20k_names() -> list[str]:
    text = resources.files("siglip2_dense").joinpath("assets/ade20k_150.json").read_text()
    return list(json.loads(text)["classes"])


def write_checkpoint(folder: Path, words: list[str]) -> None:
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    torch.manual_seed(0)
    config = Siglip2Config(text_config=dict(BASE_TEXT, num_hidden_layers=DEPTH),
                           vision_config=dict(BASE_VISION, num_hidden_layers=DEPTH, num_channels=3))
    Siglip2Model(config).eval().save_pretrained(folder)
    Siglip2ImageProcessor(patch_size=16, max_num_patches=256).save_pretrained(folder)
    write_tokenizer(folder, words)


def recipe_seconds(folder: Path, images: list[np.ndarray], labels: list[str]) -> float:
    """The transformers documentation's zero-shot recipe, image by image."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    texts = [f"This is a photo of {label}." for label in labels]
    start = time.perf_counter()
    for image in images:
        inputs = processor(text=texts, images=image, padding="max_length", max_length=64, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        torch.sigmoid(outputs.logits_per_image)
    return time.perf_counter() - start


def toolkit_seconds(folder: Path, images: list[np.ndarray], labels: list[str], cache: Path) -> float:
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    segmenter = OpenVocabSegmenter.from_pretrained(str(folder), cache_dir=str(cache))
    start = time.perf_counter()
    for first in range(0, len(images), BATCH):
        segmenter.segment_batch(images[first : first + BATCH], labels)
    return time.perf_counter() - start


def run() -> list[Figure]:
    labels = ade20k_names()
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(256, 640)), int(rng.integers(256, 640))) for _ in range(NUM_IMAGES)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    words = sorted({w for label in labels for w in label.replace(",", " ").split()} | {"this", "is", "a", "photo", "of"})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        write_checkpoint(folder, words)
        toolkit = toolkit_seconds(folder, images, labels, Path(tmp) / "cache")
        recipe = recipe_seconds(folder, images[:RECIPE_IMAGES], labels)
    toolkit_rate, recipe_rate = NUM_IMAGES / toolkit, RECIPE_IMAGES / recipe
    return [Figure("open vocabulary: toolkit / transformers recipe images/s", toolkit_rate / recipe_rate, 5.0,
                   detail=f"toolkit {toolkit_rate:.2f} img/s (20 images, masks, text encoded once), "
                          f"recipe {recipe_rate:.3f} img/s (scores only)")]


if __name__ == "__main__":
    print_figures("toolkit vs transformers recipe", run())
